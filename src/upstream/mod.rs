//! The upstream side: pooled keep-alive connections, per-upstream timeouts,
//! and the mapping of client failures onto 502 and 504.

mod conn;
pub mod forward;
pub mod identity;
pub mod pool;
mod recent_tokens;
mod response;
mod stream;

use crate::config::UpstreamConfig;
use crate::http1::RequestBody;
use crate::http1::{Added, Framing};
use pool::Pool;
pub use pool::{UpstreamError, frame_request};
pub use response::{UpstreamBody, UpstreamUpgrade};
use std::sync::Arc;

pub struct Upstreams {
    /// One pool per upstream: each may trust its own CA.
    pools: Vec<Arc<Pool>>,
    list: Vec<UpstreamConfig>,
}

/// TLS settings for an https upstream: HTTP/1.1 by ALPN, TLS 1.2 or 1.3.
fn tls_config(u: &UpstreamConfig) -> Option<Arc<rustls::ClientConfig>> {
    let roots = u.roots.clone()?;
    crate::install_crypto_provider();
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(tls))
}

impl Upstreams {
    /// `max_idle`: idle connections kept per upstream (`Pool::new`).
    pub fn new(list: Vec<UpstreamConfig>, max_idle: usize) -> Self {
        let pools = list
            .iter()
            .map(|u| Arc::new(Pool::new(u, tls_config(u), max_idle)))
            .collect();
        Upstreams { pools, list }
    }

    /// Closes every pool's connections idle past the idle timeout; how many.
    pub fn close_idle(&self, now: std::time::Instant) -> usize {
        self.pools.iter().map(|p| p.close_idle(now)).sum()
    }

    /// Connections idle in the pools.
    pub fn idle_count(&self) -> usize {
        self.pools.iter().map(|p| p.idle_count()).sum()
    }

    pub fn get(&self, index: usize) -> &UpstreamConfig {
        &self.list[index]
    }

    /// The request target on the upstream (origin form) for a request path
    /// (already stripped) and query.
    pub fn uri(
        &self,
        index: usize,
        path: &str,
        query: Option<&str>,
    ) -> Result<http::Uri, UpstreamError> {
        let u = &self.list[index];
        let mut pq = String::with_capacity(
            u.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&u.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        http::Uri::try_from(pq).map_err(|_| UpstreamError::BadTarget)
    }

    /// Sends a request to upstream `index` within its timeout, which covers
    /// connecting, sending the request and receiving the response head,
    /// counted from `now`, when the request arrived.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        index: usize,
        parts: &http::request::Parts,
        added: &Added,
        body: &mut RequestBody,
        framing: Framing,
        upgrade: bool,
        now: std::time::Instant,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let timeout = self.list[index].timeout;
        self.pools[index]
            .send(parts, added, body, framing, upgrade, now, timeout)
            .await
    }
}
