//! The admin listener: health, readiness, metrics and the JWKS, and, with
//! `admin.token`, the session management endpoints. It never serves proxied
//! traffic, and the proxy listeners never serve these paths.

mod sessions;

use crate::http1::RequestBody;
use crate::metrics::Metrics;
use crate::session::Sessions;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::sync::Arc;

pub struct Admin {
    /// Readiness is the session store's.
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    /// The JWKS document, when a route signs with EdDSA.
    jwks: Option<Bytes>,
    /// `admin.token`, when the management endpoints are on.
    token: Option<sessions::Token>,
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The JWKS of every route that signs with EdDSA, or `None` when none does.
pub fn jwks(config: &crate::config::Config) -> Option<Bytes> {
    use crate::config::{ForwardMode, SigningKey};
    let mut keys: Vec<&crate::keys::ed25519::Jwk> = Vec::new();
    for route in &config.routes {
        if let ForwardMode::Signed(s) = &route.forward.mode
            && let SigningKey::EdDsa { published, .. } = &s.key
        {
            for jwk in published {
                if !keys.iter().any(|k| k.kid == jwk.kid) {
                    keys.push(jwk);
                }
            }
        }
    }
    (!keys.is_empty()).then(|| Bytes::from(serde_json::json!({ "keys": keys }).to_string()))
}

impl Admin {
    pub fn new(
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        jwks: Option<Bytes>,
        token: Option<crate::config::Secret>,
    ) -> Self {
        Admin {
            sessions,
            metrics,
            jwks,
            token: token.as_ref().map(sessions::Token::new),
        }
    }

    /// 200 when the store answers; its error (a write outage included,
    /// where the store knows of one) otherwise.
    async fn ready(&self) -> Response<Full<Bytes>> {
        match self.sessions.ping().await {
            Ok(()) => respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
            Err(e) => {
                let text = crate::logging::Chain(&e).to_string();
                tracing::warn!(error = %text, "readiness check: session store unavailable");
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("session store unavailable: {text}\n"),
                )
            }
        }
    }

    pub async fn handle(&self, req: &Request<RequestBody>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/sessions" || path.starts_with("/sessions/") {
            return self.manage(req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n",
            );
        }
        match req.uri().path() {
            "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => match self.sessions.fault() {
                Some(fault) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("session store faulted, restart needed: {fault}\n"),
                ),
                None => self.ready().await,
            },
            "/metrics" => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                {
                    self.metrics
                        .sync_evicted(self.sessions.backend.store.evicted());
                    if let Some(n) = self.sessions.backend.store.live_sessions() {
                        self.metrics.set_sessions(n);
                    }
                    if let Some(n) = self.sessions.backend.store.cache_hits() {
                        self.metrics.set_cache_hits(n);
                    }
                    self.metrics.encode()
                },
            ),
            "/.well-known/jwks.json" => match &self.jwks {
                Some(doc) => respond(StatusCode::OK, "application/json", doc.clone()),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "no route signs with EdDSA\n",
                ),
            },
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            ),
        }
    }
}
