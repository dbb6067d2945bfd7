//! The session management endpoints (SPEC section 8.2), on the admin
//! listener behind `admin.token`:
//! `GET /sessions?subject=S`, `DELETE /sessions?subject=S`,
//! `DELETE /sessions/<sid>`. The sid is the only handle that leaves the
//! process: never a session id or a cookie value.

use super::{Admin, respond};
use crate::http1::RequestBody;
use crate::mac::{HmacKey, hmac_key};
use crate::record::now_ms;
use crate::session::ManageError;
use bytes::Bytes;
use hmac::Mac;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

/// `admin.token`, kept as a MAC under a key of this process: a presented
/// token is compared by its MAC, in constant time and whatever its length.
pub(super) struct Token {
    key: HmacKey,
    tag: Vec<u8>,
}

impl Token {
    pub(super) fn new(secret: &crate::config::Secret) -> Self {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the operating system's random number generator failed");
        let key = hmac_key(&k);
        let tag = key
            .clone()
            .chain_update(secret.expose())
            .finalize()
            .into_bytes()
            .to_vec();
        Token { key, tag }
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        self.key
            .clone()
            .chain_update(presented)
            .verify_slice(&self.tag)
            .is_ok()
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", format!("{body}\n"))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

fn manage_error(e: &ManageError) -> Response<Full<Bytes>> {
    match e {
        ManageError::CookieStore | ManageError::NoSubjectKey => {
            error(StatusCode::NOT_IMPLEMENTED, &e.to_string())
        }
        ManageError::Store(_) => {
            tracing::warn!(error = %crate::logging::Chain(e), "session management: store unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
}

/// A query parameter, decoded as a form field (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn seconds(ms: u64) -> u64 {
    ms / 1000
}

impl Admin {
    pub(super) async fn manage(&self, req: &Request<RequestBody>) -> Response<Full<Bytes>> {
        let Some(token) = &self.token else {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found (session management is off: set admin.token)\n",
            );
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|t| token.accepts(t)) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "a bearer token (admin.token) is required",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let path = req.uri().path();
        let now = now_ms();
        if let Some(sid) = path.strip_prefix("/sessions/") {
            if req.method() != Method::DELETE {
                return error(StatusCode::METHOD_NOT_ALLOWED, "use DELETE /sessions/<sid>");
            }
            let sid = percent_encoding::percent_decode_str(sid).decode_utf8_lossy();
            return match self.sessions.revoke_sid(&sid, now).await {
                Ok(true) => {
                    tracing::info!(sid = %sid, "session revoked by sid");
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Ok(false) => error(StatusCode::NOT_FOUND, "no live session has this sid"),
                Err(e) => manage_error(&e),
            };
        }
        let Some(subject) = req
            .uri()
            .query()
            .and_then(|q| query_param(q, "subject"))
            .filter(|s| !s.is_empty())
        else {
            return error(StatusCode::BAD_REQUEST, "the subject parameter is required");
        };
        match *req.method() {
            Method::GET | Method::HEAD => match self.sessions.list_subject(&subject, now).await {
                Ok(live) => {
                    let sessions: Vec<serde_json::Value> = live
                        .iter()
                        .map(|l| {
                            serde_json::json!({
                                "sid": l.sid,
                                "created": seconds(l.created_ms),
                                "expires": seconds(l.expires_ms),
                            })
                        })
                        .collect();
                    json(StatusCode::OK, serde_json::json!({ "sessions": sessions }))
                }
                Err(e) => manage_error(&e),
            },
            Method::DELETE => match self.sessions.revoke_subject(&subject, None, now).await {
                Ok(n) => {
                    tracing::info!(subject = %subject, revoked = n, "sessions of a subject revoked");
                    json(StatusCode::OK, serde_json::json!({ "revoked": n }))
                }
                Err(e) => manage_error(&e),
            },
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET or DELETE /sessions?subject=S",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_accepted_exactly() {
        let t = Token::new(&crate::config::Secret::new("a".repeat(40)));
        assert!(t.accepts("a".repeat(40).as_bytes()));
        assert!(!t.accepts("a".repeat(39).as_bytes()));
        assert!(!t.accepts("a".repeat(41).as_bytes()));
        assert!(!t.accepts(b""));
    }

    #[test]
    fn the_subject_is_decoded_as_a_form_field() {
        assert_eq!(
            query_param("subject=a%2Bb+c", "subject").as_deref(),
            Some("a+b c")
        );
        assert_eq!(
            query_param("x=1&subject=7", "subject").as_deref(),
            Some("7")
        );
        assert_eq!(query_param("subjects=7", "subject"), None);
    }
}
