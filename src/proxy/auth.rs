//! The auth endpoint (SPEC section 8.3): the subrequest of nginx
//! `auth_request`, Traefik `ForwardAuth` and Envoy `ext_authz` (HTTP
//! service). The original request is rebuilt from the front proxy's
//! headers, routed and enforced as a proxied request would be, and, when
//! allowed, answered 200 with the route's session headers for the front
//! proxy to copy upstream. Only trusted peers are answered: the answer
//! carries the signed session, which must never reach a browser.

use super::answers::{deny, text_response};
use super::{Proxy, ProxyBody, enforce};
use crate::error::ProxyError;
use crate::http1::{ConnInfo, RequestBody};
use crate::record::now_ms;
use crate::upstream::forward;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};

static X_ORIGINAL_URI: http::HeaderName = http::HeaderName::from_static("x-original-uri");
static X_ORIGINAL_METHOD: http::HeaderName = http::HeaderName::from_static("x-original-method");
static X_FORWARDED_URI: http::HeaderName = http::HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_METHOD: http::HeaderName = http::HeaderName::from_static("x-forwarded-method");

/// Whether a request path is the auth endpoint's (itself, or below it as
/// Envoy appends the original path).
pub(super) fn is_auth_path(auth: &str, path: &str) -> bool {
    path.strip_prefix(auth)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn text(headers: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The original method and target: nginx's headers, else Traefik's, else
/// (Envoy) the subrequest's own method and its path below the endpoint.
fn original(auth: &str, req: &Request<RequestBody>) -> Result<(Method, Uri), ProxyError> {
    let h = req.headers();
    let (method, target) = if let Some(uri) = text(h, &X_ORIGINAL_URI) {
        (text(h, &X_ORIGINAL_METHOD), uri)
    } else if let Some(uri) = text(h, &X_FORWARDED_URI) {
        (text(h, &X_FORWARDED_METHOD), uri)
    } else {
        let below = req.uri().path().strip_prefix(auth).unwrap_or("");
        let path = if below.is_empty() { "/" } else { below };
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        (Some(req.method().to_string()), format!("{path}{query}"))
    };
    let bad = || ProxyError::BadRequest("the auth subrequest names no valid original request");
    let method = match method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| bad())?,
        None => Method::GET,
    };
    // Origin form only: a front proxy sends the path and query it received.
    if !target.starts_with('/') {
        return Err(bad());
    }
    Ok((method, target.parse::<Uri>().map_err(|_| bad())?))
}

impl Proxy {
    /// Answers an auth subrequest; `None` when the request is not one.
    pub(super) async fn authorize(
        &self,
        req: Box<Request<RequestBody>>,
        conn: &ConnInfo,
    ) -> (Option<usize>, Box<Response<ProxyBody>>) {
        let auth = self
            .auth_path
            .as_deref()
            .expect("only called with an auth path");
        if self.trusted.is_empty() || !self.trusted.contains(&conn.peer) {
            return (
                None,
                Box::new(text_response(
                    StatusCode::FORBIDDEN,
                    "the auth endpoint answers trusted proxies only\n",
                )),
            );
        }
        let version = req.version();
        let (method, uri) = match original(auth, &req) {
            Ok(o) => o,
            Err(e) => return (None, Box::new(super::answers::refusal(&e, version))),
        };
        let (mut parts, body) = (*req).into_parts();
        // Traefik names the original host; nginx and Envoy pass it as Host.
        if let Some(host) = parts.headers.get("x-forwarded-host").cloned()
            && parts.headers.get(&X_FORWARDED_URI).is_some()
        {
            parts.headers.insert(header::HOST, host);
        }
        parts.method = method;
        parts.uri = uri;
        let original = Request::from_parts(parts, body);
        let (index, _) = match self.route(&original) {
            Ok(routed) => routed,
            Err(e) => {
                super::log_failure(&e, super::NO_ROUTE_LABEL);
                return (None, Box::new(super::answers::refusal(&e, version)));
            }
        };
        let route = &self.routes[index];
        let (parts, _) = original.into_parts();
        let now = now_ms();
        let loaded = match self.sessions.load_request(&parts.headers, now).await {
            Ok((loaded, _)) => loaded,
            Err(e) => {
                let e = ProxyError::from(e);
                super::log_failure(&e, &route.cfg.label);
                return (Some(index), Box::new(super::answers::refusal(&e, version)));
            }
        };
        if enforce(&route.cfg, &loaded, &parts).is_some() {
            return (Some(index), Box::new(deny(&route.cfg, &parts)));
        }
        let mut added = forward::Added::with_capacity(2 + route.cfg.forward.headers.len());
        self.session_headers(route, &loaded, None, &mut added, now);
        let mut resp = text_response(StatusCode::OK, "");
        resp.headers_mut().remove(header::CONTENT_TYPE);
        added.append_to(resp.headers_mut());
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        (Some(index), Box::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_and_paths_below_it_are_its_own() {
        assert!(is_auth_path("/_auth", "/_auth"));
        assert!(is_auth_path("/_auth", "/_auth/api/x"));
        assert!(!is_auth_path("/_auth", "/_authx"));
        assert!(!is_auth_path("/_auth", "/api"));
    }
}
