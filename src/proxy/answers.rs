//! The answers the proxy gives itself: errors, and `on_deny`.

use super::ProxyBody;
use crate::config::{OnDeny, RouteConfig};
use crate::error::ProxyError;
use crate::upstream::forward;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

pub(super) fn text_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    text_response(e.status(), e.public_message())
}

/// The answer to a request that failed. A malformed HTTP/1 request also
/// ends its connection, as nginx ends it: whatever follows it on the
/// connection was sent by a client that frames requests its own way.
pub(super) fn refusal(e: &ProxyError, version: http::Version) -> Response<ProxyBody> {
    let mut resp = error_response(e);
    if resp.status() == StatusCode::BAD_REQUEST && version <= http::Version::HTTP_11 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("+json"))
}

/// The `on_deny` answer for a request whose session lacks a required key.
pub(super) fn deny(cfg: &RouteConfig, parts: &http::request::Parts) -> Response<ProxyBody> {
    let mut resp = match &cfg.on_deny {
        OnDeny::Status(status) if accepts_json(&parts.headers) => {
            let body = format!(
                "{{\"error\":\"session required\",\"status\":{}}}",
                status.as_u16()
            );
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
            *r.status_mut() = *status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        OnDeny::Status(status) => text_response(*status, "session required\n"),
        OnDeny::Redirect(target) => {
            let original = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let encoded =
                percent_encoding::utf8_percent_encode(original, URI_COMPONENT).to_string();
            let location = target.replace("{uri}", &encoded);
            let mut r = text_response(StatusCode::FOUND, "session required\n");
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::try_from(location)
                    .expect("redirect target validated at startup; encoded part is ASCII"),
            );
            r
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    forward::add_vary_cookie(resp.headers_mut());
    resp
}

/// Everything but RFC 3986 unreserved characters is encoded, like JavaScript's encodeURIComponent.
const URI_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
