//! No client can make sessiongate write a line per connection: hundreds of
//! hostile connections of each kind (IP-address SNI, TLS garbage, malformed
//! and oversized heads, HTTP/2 protocol errors, slowloris) grow the log by a
//! bounded number of lines, while `sessiongate_log_suppressed_total` counts
//! what it did not write. The real binary, its stderr read as JSON lines.

mod common;

use common::tls::TestCa;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Running {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn start(dir: &Path, plain: SocketAddr, tls: SocketAddr, admin: SocketAddr) -> Running {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], dir, "leaf");
    let upstream = free_addr();
    let cfg = dir.join("sessiongate.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
listen:
  - addr: {plain}
  - addr: {tls}
    tls: {{cert: {}, key: {}}}
admin: {{addr: {admin}}}
secrets: ["{}"]
log: {{format: json}}
session: {{store: {{kind: memory}}, cookie: {{secure: false}}}}
limits: {{header_read_timeout: 1s, max_header_bytes: 8192}}
upstreams: {{app: {{url: "http://{upstream}"}}}}
routes: [{{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}]
"#,
            leaf.cert.display(),
            leaf.key.display(),
            common::SECRET,
        ),
    )
    .unwrap();
    let stderr = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "sessiongate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running { child, stderr }
}

/// A TLS 1.3 ClientHello naming `host` in its SNI, as wrk and many bots
/// send an IP address there (rustls warns about every one).
fn client_hello(host: &str) -> Vec<u8> {
    let name = host.as_bytes();
    let mut sni = vec![0u8];
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend(sni);
    let mut ext = vec![0, 0];
    ext.extend((list.len() as u16).to_be_bytes());
    ext.extend(list);
    ext.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    ext.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
    ext.extend([0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    ext.extend([0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend([9u8; 32]);
    let mut body = vec![0x03, 0x03];
    body.extend([1u8; 32]);
    body.push(0);
    body.extend([0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// Connects, sends `bytes`, reads briefly, closes.
fn hit(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

fn suppressed(metrics: &str, class: &str) -> u64 {
    let key = format!("sessiongate_log_suppressed_total{{class=\"{class}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn metrics(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn hostile_connections_write_a_bounded_number_of_lines() {
    let dir = common::redis::temp_dir("logs");
    let (plain, tls, admin) = (free_addr(), free_addr(), free_addr());
    let gw = start(&dir, plain, tls, admin);
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.lines().len();

    const N: usize = 150;
    let hello = client_hello("127.0.0.1");
    let oversized = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    // A SETTINGS frame 5 bytes long: a frame size error (RFC 9113 section 6.5).
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend([0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
    for _ in 0..N {
        hit(tls, &hello);
        hit(tls, b"\x00garbage, not TLS\r\n\r\n");
        hit(plain, b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n");
        hit(plain, oversized.as_bytes());
        hit(plain, &h2);
    }
    // Slowloris: heads that never end, all at once, past the 1 s head timeout.
    let slow: Vec<TcpStream> = (0..N)
        .map(|_| {
            let mut s = TcpStream::connect(plain).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));

    let lines = gw.lines();
    let grown: Vec<&Value> = lines[before..]
        .iter()
        .filter(|l| l["target"] != "sessiongate::access")
        .collect();
    let text: Vec<String> = grown.iter().map(|l| l.to_string()).collect();
    assert!(
        !lines.iter().any(|l| l.to_string().contains("Illegal SNI")),
        "a dependency's per-connection warning reached the log"
    );
    // Per class: at most BURST lines per 10 s interval (the run may straddle
    // two) and their summaries.
    assert!(
        grown.len() <= 6 * 12,
        "{} lines:\n{}",
        grown.len(),
        text.join("\n")
    );
    let m = metrics(admin);
    let logged = |class: &str| {
        grown
            .iter()
            .filter(|l| l["class"] == class && l.get("suppressed").is_none())
            .count() as u64
    };
    // Every event of a class was either written or counted.
    for (class, events) in [
        ("tls_handshake", 2 * N as u64),
        ("malformed_request", 2 * N as u64),
        ("head_timeout", N as u64),
    ] {
        assert_eq!(
            logged(class) + suppressed(&m, class),
            events,
            "{class}:\n{}",
            text.join("\n")
        );
        assert!(logged(class) <= 10, "{class}: {} lines", logged(class));
    }
    assert!(
        logged("http2") + suppressed(&m, "http2") >= N as u64 / 2,
        "HTTP/2 protocol errors are counted:\n{}",
        text.join("\n")
    );
}

fn access_lines(access: &str, requests: usize) -> usize {
    let dir = common::redis::temp_dir("access");
    let (addr, admin, upstream) = (free_addr(), free_addr(), free_addr());
    let cfg = dir.join("sessiongate.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
listen: [{{addr: {addr}}}]
admin: {{addr: {admin}}}
secrets: ["{}"]
log: {{format: json, access: {access}}}
session: {{store: {{kind: memory}}}}
upstreams: {{app: {{url: "http://{upstream}"}}}}
routes: [{{match: {{path_prefix: /}}, upstream: app, forward: {{mode: none}}}}]
"#,
            common::SECRET
        ),
    )
    .unwrap();
    let stderr = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let gw = Running { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "sessiongate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..requests {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        // The upstream is down: a short 502 each time.
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\n\n" || w == b"e\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    gw.lines()
        .iter()
        .filter(|l| l["target"] == "sessiongate::access")
        .count()
}

#[test]
fn the_access_log_is_on_off_or_sampled() {
    assert_eq!(access_lines("on", 50), 50);
    assert_eq!(access_lines("off", 50), 0);
    let sampled = access_lines("{sample: 0.25}", 400);
    assert!((50..=150).contains(&sampled), "{sampled} of 400 at 0.25");
}
