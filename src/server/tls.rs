//! TLS listeners: rustls, ALPN h2 and http/1.1, TLS 1.2 and 1.3 only, with
//! the listener's certificates (`crate::keys::CertStore`).

use crate::keys::CertStore;
use std::sync::Arc;

/// A server config offering h2 and http/1.1, TLS 1.2 and 1.3 only.
pub fn server_config(certs: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    crate::install_crypto_provider();
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
