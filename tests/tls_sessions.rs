//! TLS session resumption on the listeners: stateless tickets, so a client
//! resumes however many other clients have connected since, and one ticket
//! per handshake.

mod common;

use common::tls::TestCa;
use common::*;
use rustls::HandshakeKind;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::client::{Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::{ClientConfig, NamedGroup};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// rustls's own client cache, counting the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// A client with a session store of its own, trusting `ca_pem`.
fn client(ca_pem: &Path) -> (Arc<ClientConfig>, Arc<CountingStore>) {
    sessiongate::install_crypto_provider();
    let store = Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(8),
        tickets: AtomicUsize::new(0),
    });
    let mut config = ClientConfig::builder()
        .with_root_certificates(sessiongate::keys::root_store(Some(ca_pem)).unwrap())
        .with_no_client_auth();
    config.resumption = Resumption::store(store.clone());
    (Arc::new(config), store)
}

/// One request on a new connection, read to the end (which takes in the
/// tickets sent after the handshake); how the handshake went.
async fn one_request(addr: SocketAddr, config: &Arc<ClientConfig>) -> HandshakeKind {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    tls.get_ref().1.handshake_kind().expect("handshake done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_hundreds_of_other_clients() {
    let d = common::redis::temp_dir("tls-resume");
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], &d, "gw");
    let yaml = format!(
        "listen: [{{addr: \"127.0.0.1:0\", tls: {{cert: \"{}\", key: \"{}\"}}}}]\n\
         secrets: [\"{SECRET}\"]\nsession: {{store: {{kind: memory}}}}\n\
         upstreams: {{app: {{url: \"http://{{upstream}}\"}}}}\nroutes:\n{JSON_ROUTE}\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    let up = upstream().await;
    let gw = gateway(&yaml, up.addr).await;

    let (first, first_store) = client(&leaf.ca);
    assert_eq!(one_request(gw.addr, &first).await, HandshakeKind::Full);
    assert_eq!(
        first_store.tickets.load(Ordering::SeqCst),
        1,
        "one ticket per handshake"
    );
    // More clients than a stateful cache of 256 sessions outlives.
    for _ in 0..300 {
        let (other, _) = client(&leaf.ca);
        one_request(gw.addr, &other).await;
    }
    assert_eq!(one_request(gw.addr, &first).await, HandshakeKind::Resumed);
}
