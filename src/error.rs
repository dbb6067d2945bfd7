//! The proxy's errors and the one mapping from each to an HTTP status.

use crate::record::UpdateError;
use crate::store::StoreError;
use http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("bad request path")]
    BadPath(#[source] crate::router::PathError),
    #[error("bad request host")]
    BadHost(#[source] crate::router::HostError),
    #[error("the client's request body is malformed")]
    BadRequestBody(#[source] crate::http1::ClientBodyError),
    #[error("method not allowed: a reverse proxy serves no CONNECT")]
    MethodNotAllowed,
    #[error("upstream unreachable")]
    UpstreamUnreachable(#[source] crate::upstream::UpstreamError),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("session store unavailable")]
    StoreRead(#[source] StoreError),
    #[error("session could not be saved")]
    StoreWrite(#[source] StoreError),
    #[error("upstream's session update refused")]
    UpdateRefused(#[source] UpdateError),
    #[error("upstream switched protocols without a matching upgrade")]
    BadUpgrade,
    #[error("too many upgraded connections")]
    TooManyUpgrades,
    /// `revoke-others` where sessions have no subjects on the server (the
    /// cookie store, or no `session.subject_key`).
    #[error("session management is not available")]
    NotManaged(#[source] crate::session::ManageError),
}

impl ProxyError {
    /// Every variant is named: a new error cannot silently get a wrong status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BadPath(_) => StatusCode::BAD_REQUEST,
            ProxyError::BadHost(_) => StatusCode::BAD_REQUEST,
            ProxyError::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::StoreRead(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::StoreWrite(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpdateRefused(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BadUpgrade => StatusCode::BAD_GATEWAY,
            ProxyError::TooManyUpgrades => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NotManaged(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The class its log line is rate-limited under.
    pub fn log_class(&self) -> crate::logging::LogClass {
        use crate::logging::LogClass;
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::BadPath(_)
            | ProxyError::BadHost(_)
            | ProxyError::BadRequestBody(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::TooManyUpgrades => LogClass::refused,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpdateRefused(_)
            | ProxyError::BadUpgrade
            | ProxyError::NotManaged(_) => LogClass::upstream,
            ProxyError::StoreRead(_) | ProxyError::StoreWrite(_) => LogClass::store,
        }
    }

    /// The short body the client sees; details stay in the log.
    pub fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route for this request\n",
            ProxyError::BadRequest(_) => "bad request\n",
            ProxyError::BadPath(_) => "bad request: this path is refused\n",
            ProxyError::BadHost(_) => "bad request: invalid or missing Host\n",
            ProxyError::BadRequestBody(_) => "bad request: malformed body\n",
            ProxyError::MethodNotAllowed => "method not allowed\n",
            ProxyError::UpstreamUnreachable(_) => "upstream unreachable\n",
            ProxyError::UpstreamTimeout(_) => "upstream timed out\n",
            ProxyError::StoreRead(_) => "session store unavailable\n",
            ProxyError::StoreWrite(_) => "session could not be saved: session store unavailable\n",
            ProxyError::UpdateRefused(_) => "upstream sent an invalid session update\n",
            ProxyError::BadUpgrade => "upstream sent an invalid upgrade\n",
            ProxyError::TooManyUpgrades => "too many upgraded connections\n",
            ProxyError::NotManaged(_) => {
                "the upstream asked for revoke-others, but this gateway's store keeps no \
                 sessions per subject on the server (the cookie store, or no session.subject_key)\n"
            }
        }
    }
}

impl From<crate::session::SessionError> for ProxyError {
    fn from(e: crate::session::SessionError) -> Self {
        use crate::session::SessionError as S;
        match e {
            S::StoreRead(e) => ProxyError::StoreRead(e),
            S::StoreWrite(e) => ProxyError::StoreWrite(e),
            S::UpdateRefused(e) => ProxyError::UpdateRefused(e),
            S::NotManaged(e) => ProxyError::NotManaged(e),
        }
    }
}

impl From<crate::upstream::UpstreamError> for ProxyError {
    fn from(e: crate::upstream::UpstreamError) -> Self {
        use crate::upstream::UpstreamError as U;
        match e {
            U::TimedOut(after) => ProxyError::UpstreamTimeout(after),
            U::ClientBody(body) => ProxyError::BadRequestBody(body),
            U::BadTarget => ProxyError::BadRequest("request path cannot be forwarded"),
            e @ (U::Connect { .. } | U::ConnectTimeout(_) | U::Tls { .. } | U::Exchange(_)) => {
                ProxyError::UpstreamUnreachable(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::Chain;

    /// Each cause once: a message that embedded its source would print it
    /// twice in a chain ("X: X").
    #[test]
    fn a_chain_names_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = ProxyError::StoreRead(StoreError::Backend(Box::new(io)));
        let text = Chain(&e).to_string();
        assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = ProxyError::UpdateRefused(UpdateError::InvalidJson(json));
        let text = Chain(&e).to_string();
        assert_eq!(text.matches("EOF").count(), 1, "{text}");
        let open = crate::store::OpenError::Io("data/x.db".into(), std::io::Error::other("denied"));
        assert_eq!(Chain(&open).to_string(), "cannot open data/x.db: denied");
    }

    #[test]
    fn each_error_maps_to_its_status() {
        let cases: Vec<(ProxyError, u16)> = vec![
            (ProxyError::NoRoute, 404),
            (ProxyError::BadRequest("x"), 400),
            (
                ProxyError::BadPath(crate::router::PathError::Semicolon),
                400,
            ),
            (ProxyError::BadHost(crate::router::HostError::Missing), 400),
            (ProxyError::MethodNotAllowed, 405),
            (ProxyError::UpstreamTimeout(Duration::from_secs(1)), 504),
            (ProxyError::StoreRead(StoreError::Timeout), 503),
            (ProxyError::StoreWrite(StoreError::Timeout), 502),
            (ProxyError::UpdateRefused(UpdateError::NotObject), 502),
            (ProxyError::BadUpgrade, 502),
            (ProxyError::TooManyUpgrades, 503),
            (
                ProxyError::NotManaged(crate::session::ManageError::CookieStore),
                501,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert!(err.public_message().ends_with('\n'));
        }
    }
}
