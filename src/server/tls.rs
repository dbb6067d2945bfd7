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
    // Stateless tickets (encrypted with a key that rotates every 6 hours),
    // as nginx and Go issue them by default: any number of clients resume
    // without a cache on the server. rustls's default is a stateful cache
    // of 256 sessions, each ticket usable once, which most clients of a
    // busy proxy outrun. The key's randomness failing is not expected on
    // any supported platform; the stateful cache remains then.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    // One ticket per handshake, as Go's servers send: a client resumes one
    // connection with it (rustls and OpenSSL send two by default; each is
    // a record the client decrypts and a session it stores).
    config.send_tls13_tickets = 1;
    Arc::new(config)
}
