//! Behind a load balancer (SPEC section 8.4): `X-Forwarded-*` from trusted
//! peers kept, from every other peer replaced; the client's address in the
//! access log is the rightmost hop that is not trusted. IPv4 and IPv6.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn yaml(trusted: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
trusted_proxies: {trusted}
session: {{cookie: {{secure: false}}, store: {{kind: memory}}}}
upstreams: {{app: {{url: "http://{{upstream}}", timeout: 5s}}}}
routes:
{JSON_ROUTE}
"#
    )
}

/// The X-Forwarded-* the upstream received for a request with these headers.
async fn forwarded(gw_url: &str, headers: &[(&str, &str)]) -> (String, String, String) {
    let r = TestClient::new().get(gw_url, headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.echo();
    let get = |n: &str| e.header_all(n).join(" | ");
    (
        get("x-forwarded-for"),
        get("x-forwarded-proto"),
        get("x-forwarded-host"),
    )
}

const CLAIMS: &[(&str, &str)] = &[
    ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "shop.example"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_keeps_its_forwarded_headers() {
    let up = upstream().await;
    let gw = gateway(&yaml("[127.0.0.0/8]"), up.addr).await;
    let (xff, proto, host) = forwarded(&gw.url("/"), CLAIMS).await;
    assert_eq!(xff, "6.6.6.6, 1.2.3.4, 127.0.0.1");
    assert_eq!(proto, "https");
    assert_eq!(host, "shop.example");
    // Without claims, sessiongate's own.
    let (xff, proto, host) = forwarded(&gw.url("/"), &[]).await;
    assert_eq!(xff, "127.0.0.1");
    assert_eq!(proto, "http");
    assert_eq!(host, gw.addr.to_string());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_claim_https_or_a_host() {
    let up = upstream().await;
    for trusted in ["[]", "[10.0.0.0/8, \"fd00::/8\"]"] {
        let gw = gateway(&yaml(trusted), up.addr).await;
        let (xff, proto, host) = forwarded(&gw.url("/"), CLAIMS).await;
        assert_eq!(xff, "6.6.6.6, 1.2.3.4, 127.0.0.1", "appended, as always");
        assert_eq!(proto, "http", "{trusted}");
        assert_eq!(host, gw.addr.to_string(), "{trusted}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_ranges_work_over_ipv6() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        assert!(
            std::env::var("CI").is_err(),
            "IPv6 loopback is unavailable on this machine"
        );
        eprintln!("SKIPPED trusted_ranges_work_over_ipv6: no IPv6 loopback");
        return;
    };
    let up = upstream().await;
    for (trusted, proto) in [
        ("[\"::1/128\"]", "https"),
        ("[\"fd00::/8\", 127.0.0.1]", "http"),
    ] {
        let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let gw = gateway_on(listener, &yaml(trusted), up.addr).await;
        let (xff, got_proto, _) = forwarded(&gw.url("/"), CLAIMS).await;
        assert_eq!(xff, "6.6.6.6, 1.2.3.4, ::1");
        assert_eq!(got_proto, proto, "{trusted}");
        gw.stop().await;
    }
    drop(listener);
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The access log's client_ip, from the real binary's JSON lines.
#[test]
fn the_access_log_names_the_client_behind_trusted_proxies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(upstream());
    let dir = common::redis::temp_dir("client-ip");
    let (addr, admin) = (free_addr(), free_addr());
    let cfg = dir.join("sessiongate.yaml");
    let yaml = yaml("[127.0.0.0/8, 10.0.0.0/8]").replace("{upstream}", &up.addr.to_string());
    std::fs::write(
        &cfg,
        format!("listen: [{{addr: \"{addr}\"}}]\nadmin: {{addr: \"{admin}\"}}\nlog: {{format: json}}\n{yaml}"),
    )
    .unwrap();
    let stderr = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "sessiongate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = TcpStream::connect(addr).unwrap();
    for xff in ["6.6.6.6, 1.2.3.4, 10.0.0.9", "", "10.0.0.1"] {
        let extra = if xff.is_empty() {
            String::new()
        } else {
            format!("X-Forwarded-For: {xff}\r\n")
        };
        write!(s, "GET /x HTTP/1.1\r\nHost: a\r\n{extra}\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !got.windows(9).any(|w| w == b"body_len\"") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&stderr).unwrap();
    let clients: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "sessiongate::access")
        .map(|l| l["client_ip"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(clients, ["1.2.3.4", "127.0.0.1", "10.0.0.1"], "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("sessiongate::access"))
            .all(|l| l.contains("\"span\":{") && l.contains("client_ip")),
        "the request's span carries client_ip too:\n{text}"
    );
}

#[test]
fn check_refuses_malformed_ranges() {
    let dir = common::redis::temp_dir("cidr");
    let path = dir.join("c.yaml");
    std::fs::write(
        &path,
        yaml("[10.0.0.0/8, 10.0.0.0/33, \"fd00::/129\", not-an-ip, 7]")
            .replace("{upstream}", "127.0.0.1:1"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    for i in 1..=4 {
        assert!(
            text.contains(&format!(
                "trusted_proxies[{i}]: not an IP address or CIDR range"
            )),
            "{i}: {text}"
        );
    }
    assert!(!text.contains("trusted_proxies[0]"), "{text}");
}
