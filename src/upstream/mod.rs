//! The upstream side: a pooled keep-alive client, per-upstream timeouts, and
//! the mapping of client failures onto 502 and 504.

pub mod forward;
pub mod identity;

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Upstreams {
    client: Client<HttpConnector, Incoming>,
    list: Vec<UpstreamConfig>,
}

impl Upstreams {
    pub fn new(list: Vec<UpstreamConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstreams { client, list }
    }

    pub fn get(&self, index: usize) -> &UpstreamConfig {
        &self.list[index]
    }

    /// The URI on the upstream for a request path (already stripped) and query.
    pub fn uri(
        &self,
        index: usize,
        path: &str,
        query: Option<&str>,
    ) -> Result<http::Uri, ProxyError> {
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
        http::Uri::builder()
            .scheme(u.scheme.clone())
            .authority(u.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::BadRequest("request path cannot be forwarded"))
    }

    /// Sends a request; the timeout covers connecting and receiving the response head.
    pub async fn send(
        &self,
        index: usize,
        req: http::Request<Incoming>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let u = &self.list[index];
        match tokio::time::timeout(u.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnreachable(e)),
            Err(_) => Err(ProxyError::UpstreamTimeout(u.timeout)),
        }
    }
}
