//! The upstream side: a pooled keep-alive client, per-upstream timeouts, and
//! the mapping of client failures onto 502 and 504.

pub mod ed25519;
pub mod forward;
pub mod identity;

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::time::Duration;

/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type UpstreamClient = Client<HttpsConnector<HttpConnector>, Incoming>;

pub struct Upstreams {
    /// One pooled client per upstream: each may trust its own CA.
    clients: Vec<UpstreamClient>,
    list: Vec<UpstreamConfig>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the CA file {path}: {reason}")]
pub struct CaError {
    pub path: String,
    pub reason: String,
}

/// The roots an https upstream is checked against: its `ca` file, or the webpki roots.
pub fn root_store(ca: Option<&std::path::Path>) -> Result<rustls::RootCertStore, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let err = |reason: String| CaError {
                path: path.display().to_string(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
        }
    }
    Ok(roots)
}

fn client(u: &UpstreamConfig) -> Result<UpstreamClient, CaError> {
    crate::install_crypto_provider();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_root_certificates(root_store(u.ca.as_deref())?)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

impl Upstreams {
    pub fn new(list: Vec<UpstreamConfig>) -> Result<Self, CaError> {
        let clients = list.iter().map(client).collect::<Result<_, _>>()?;
        Ok(Upstreams { clients, list })
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
        match tokio::time::timeout(u.timeout, self.clients[index].request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnreachable(e)),
            Err(_) => Err(ProxyError::UpstreamTimeout(u.timeout)),
        }
    }
}
