//! `listen[].proxy_protocol` (SPEC section 8.4): the address a PROXY
//! header (v1 or v2) carries becomes the peer's, judged by
//! `trusted_proxies`; a connection without a valid header is closed. Over
//! IPv4 and IPv6 loopback, plain and TLS.

mod common;

use common::tls::TestCa;
use common::*;
use ppp::v2;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy on `bind`, with one PROXY-protocol listener.
async fn start(bind: &str, upstream: SocketAddr, extra_listen: &str, trusted: &str) -> Gateway {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = format!(
        r#"
listen: [{{addr: "{addr}", proxy_protocol: true{extra_listen}}}]
secrets: ["{SECRET}"]
trusted_proxies: {trusted}
session: {{cookie: {{secure: false}}, store: {{kind: memory}}}}
limits: {{header_read_timeout: 2s}}
upstreams: {{app: {{url: "http://{{upstream}}", timeout: 5s}}}}
routes:
{JSON_ROUTE}
"#
    );
    gateway_on(listener, &yaml, upstream).await
}

/// Sends one request and reads the upstream's echo of its headers.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, extra: &str) -> serde_json::Value {
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("no echo in {text:?}"))
}

fn header(echo: &serde_json::Value, name: &str) -> String {
    echo["headers"][name][0].as_str().unwrap_or("").to_string()
}

fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(0x21, v2::Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carried_address_is_the_peer_v1_and_v2() {
    let up = upstream().await;
    let gw = start("127.0.0.1:0", up.addr, "", "[203.0.113.0/24]").await;

    // v1 from a trusted balancer: its X-Forwarded-Proto is believed.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n")
        .await
        .unwrap();
    let echo = exchange(s, "X-Forwarded-Proto: https\r\n").await;
    assert_eq!(header(&echo, "x-forwarded-for"), "203.0.113.7");
    assert_eq!(header(&echo, "x-forwarded-proto"), "https");

    // v2 naming a client outside the trusted range: its claims are replaced.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let src: SocketAddr = "198.51.100.4:4000".parse().unwrap();
    s.write_all(&v2_header(src, gw.addr)).await.unwrap();
    let echo = exchange(s, "X-Forwarded-Proto: https\r\n").await;
    assert_eq!(header(&echo, "x-forwarded-for"), "198.51.100.4");
    assert_eq!(header(&echo, "x-forwarded-proto"), "http");

    // Without a header, or with a bad one, the connection is closed unanswered.
    for first in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4\r\n",
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut out = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("closed in time");
        assert!(n.is_err() || out.is_empty(), "answered: {out:?}");
    }
    gw.stop().await;
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carried_address_is_the_peer_over_ipv6() {
    if TcpListener::bind("[::1]:0").await.is_err() {
        assert!(std::env::var("CI").is_err(), "IPv6 loopback is unavailable");
        eprintln!("SKIPPED the_carried_address_is_the_peer_over_ipv6: no IPv6 loopback");
        return;
    }
    let up = upstream().await;
    let gw = start("[::1]:0", up.addr, "", "[\"2001:db8::/32\"]").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n")
        .await
        .unwrap();
    let echo = exchange(
        s,
        "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n",
    )
    .await;
    assert_eq!(header(&echo, "x-forwarded-for"), "192.0.2.1, 2001:db8::7");
    assert_eq!(
        header(&echo, "x-forwarded-proto"),
        "https",
        "2001:db8::7 is trusted"
    );
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let src: SocketAddr = "[2001:db9::5]:4000".parse().unwrap();
    s.write_all(&v2_header(src, gw.addr)).await.unwrap();
    let echo = exchange(s, "").await;
    assert_eq!(header(&echo, "x-forwarded-for"), "2001:db9::5");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_before_the_tls_handshake() {
    let up = upstream().await;
    let d = common::redis::temp_dir("pp-tls");
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], &d, "pp");
    let tls = format!(
        ", tls: {{cert: \"{}\", key: \"{}\"}}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let mut binds = vec!["127.0.0.1:0"];
    if TcpListener::bind("[::1]:0").await.is_ok() {
        binds.push("[::1]:0");
    } else {
        assert!(std::env::var("CI").is_err(), "IPv6 loopback is unavailable");
        eprintln!("SKIPPED the TLS case over IPv6: no IPv6 loopback");
    }
    for bind in binds {
        let gw = start(bind, up.addr, &tls, "[]").await;
        sessiongate::install_crypto_provider();
        let roots = sessiongate::keys::root_store(Some(&leaf.ca)).unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        for preface in [
            b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\n".to_vec(),
            v2_header(
                "203.0.113.10:1".parse().unwrap(),
                "10.0.0.1:443".parse().unwrap(),
            ),
        ] {
            let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
            tcp.write_all(&preface).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.expect("handshake");
            let echo = exchange(tls, "").await;
            let want = if preface.starts_with(b"PROXY") {
                "203.0.113.9"
            } else {
                "203.0.113.10"
            };
            assert_eq!(header(&echo, "x-forwarded-for"), want);
            assert_eq!(header(&echo, "x-forwarded-proto"), "https");
        }
        // A TLS hello without the header first is closed.
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                .await
                .expect("closed in time")
                .is_err()
        );
        gw.stop().await;
    }
}

#[test]
fn check_accepts_the_setting_on_every_listener() {
    let yaml = format!(
        "listen: [{{addr: 127.0.0.1:8080, proxy_protocol: true}}, {{addr: 127.0.0.1:8081, proxy_protocol: maybe}}]\nsecrets: [\"{SECRET}\"]\nupstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\nroutes: [{{upstream: app, forward: {{mode: none}}}}]\n"
    );
    let err = sessiongate::config::from_yaml(&yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen[1].proxy_protocol"), "{err}");
}
