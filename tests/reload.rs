//! SIGHUP reloads the config file (SPEC section 8.5), tested on the real
//! binary: what changes takes effect for the next request, a request in
//! flight finishes under the config it started with, a bad file or a store
//! change keeps the running config, listeners come and go, and reloads
//! under steady HTTP/1.1 keep-alive and HTTP/2 traffic drop nothing.

mod common;

use bytes::Bytes;
use common::process::*;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const OLD_SECRET: &str = "reload-old-secret-0123456789abcdef-0123";
const NEW_SECRET: &str = "reload-new-secret-0123456789abcdef-0123";

/// The parts of a config a test changes between reloads.
struct Setup<'a> {
    listen: &'a [SocketAddr],
    admin: SocketAddr,
    upstream: SocketAddr,
    secrets: &'a [&'a str],
    store: &'a str,
    cookie: &'a str,
    routes: &'a str,
}

impl<'a> Setup<'a> {
    /// One route to the upstream, the memory store, the old secret.
    fn new(listen: &'a [SocketAddr], admin: SocketAddr, upstream: SocketAddr) -> Self {
        Setup {
            listen,
            admin,
            upstream,
            secrets: &[OLD_SECRET],
            store: "{kind: memory}",
            cookie: "",
            routes: "",
        }
    }
}

fn write(path: &Path, s: &Setup) {
    let listen: Vec<String> = s
        .listen
        .iter()
        .map(|a| format!("{{addr: \"{a}\"}}"))
        .collect();
    let secrets: Vec<String> = s.secrets.iter().map(|x| format!("\"{x}\"")).collect();
    let yaml = format!(
        r#"
listen: [{listen}]
admin: {{addr: "{admin}"}}
secrets: [{secrets}]
session:
  cookie: {{secure: false{cookie}}}
  store: {store}
upstreams:
  app: {{url: "http://{upstream}"}}
routes:
{routes}
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}
"#,
        listen = listen.join(", "),
        admin = s.admin,
        secrets = secrets.join(", "),
        cookie = s.cookie,
        store = s.store,
        upstream = s.upstream,
        routes = s.routes,
    );
    // Written beside and renamed, as config management tools do, so that a
    // reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(tag: &str, s: &Setup) -> (Running, PathBuf) {
    let dir = temp_dir(tag);
    let path = dir.join("sessiongate.yaml");
    write(&path, s);
    (Running::start(&path, s.admin, &dir, &[]), path)
}

async fn metrics(admin: SocketAddr) -> String {
    TestClient::new()
        .get(&format!("http://{admin}/metrics"), &[])
        .await
        .text()
}

/// A sample's value, whole (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Sends SIGHUP and waits for the `total`-th reload, which must succeed.
async fn reload_ok(proc: &Running, admin: SocketAddr, total: u64) {
    let successes = reloaded(proc, admin, total).await;
    assert_eq!(successes, total, "a reload failed:\n{}", proc.log());
}

/// Sends SIGHUP and waits until `total` reloads are counted; the successes.
async fn reloaded(proc: &Running, admin: SocketAddr, total: u64) -> u64 {
    proc.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(admin).await;
        let done = metric(&m, "sessiongate_config_reloads_total{result=\"success\"}")
            + metric(&m, "sessiongate_config_reloads_total{result=\"error\"}");
        if done >= total {
            return metric(&m, "sessiongate_config_reloads_total{result=\"success\"}");
        }
        assert!(Instant::now() < deadline, "reload {total} not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_routes_secrets_cookies_and_listeners_to_the_next_request() {
    let up = upstream().await;
    let (l1, l2, admin) = (free_addr(), free_addr(), free_addr());
    let l1s = [l1];
    let mut s = Setup::new(&l1s, admin, up.addr);
    let (proc, path) = start("reload-applies", &s);
    let c = TestClient::new();
    let login = [reply("x-session-update", r#"{"user_id": 7}"#)];
    let r = c.get(&format!("http://{l1}/"), &hdrs(&login)).await;
    let old_cookie = r.cookie("sessionid").unwrap();
    assert!(r.set_cookie("sessionid").unwrap().contains("SameSite=Lax"));
    assert!(std::net::TcpStream::connect(l2).is_err());

    // A secret rotated in, a cookie attribute, a route that requires a key
    // the session lacks, and a second listener.
    let listen = [l1, l2];
    s.listen = &listen;
    s.secrets = &[NEW_SECRET, OLD_SECRET];
    s.cookie = ", same_site: Strict";
    s.routes = "  - {match: {path_prefix: /staff}, upstream: app, forward: {mode: json}, require: [is_staff], on_deny: {status: 403}}";
    write(&path, &s);
    reload_ok(&proc, admin, 1).await;

    let cookie = [("cookie", old_cookie.as_str())];
    let r = c.get(&format!("http://{l2}/"), &cookie).await;
    assert_eq!(r.status, 200, "the new listener serves");
    assert_eq!(
        r.session()["user_id"],
        7,
        "a cookie signed with the old secret still verifies"
    );
    let r = c.get(&format!("http://{l1}/staff/x"), &cookie).await;
    assert_eq!(r.status, 403, "the new route's require applies");
    let cycled = [
        ("cookie", old_cookie.as_str()),
        (REPLY_HEADER, "x-session-action: cycle"),
    ];
    let r = c.get(&format!("http://{l1}/"), &cycled).await;
    let set = r.set_cookie("sessionid").unwrap();
    assert!(set.contains("SameSite=Strict"), "{set}");
    let new_cookie = r.cookie("sessionid").unwrap();

    // The old secret retired: cookies it signed are no session; the new
    // one's still are. The second listener goes away.
    let only = [l1];
    s.listen = &only;
    s.secrets = &[NEW_SECRET];
    write(&path, &s);
    reload_ok(&proc, admin, 2).await;
    let r = c
        .get(&format!("http://{l1}/"), &[("cookie", old_cookie.as_str())])
        .await;
    assert_eq!(r.session(), serde_json::json!({}));
    let r = c
        .get(&format!("http://{l1}/"), &[("cookie", new_cookie.as_str())])
        .await;
    assert_eq!(r.session()["user_id"], 7, "the store kept the sessions");
    assert!(std::net::TcpStream::connect(l2).is_err(), "l2 closed");
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "sessiongate_config_reloads_total{result=\"success\"}"),
        2
    );
    assert!(
        metric(
            &m,
            "sessiongate_config_last_reload_success_timestamp_seconds"
        ) > 1_700_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_under_the_config_it_started_with() {
    let up = upstream().await;
    let (l1, admin) = (free_addr(), free_addr());
    let l1s = [l1];
    let writable = "  - {match: {path_prefix: /w}, upstream: app, forward: {mode: json, writable_keys: [cart]}}";
    let mut s = Setup {
        routes: writable,
        ..Setup::new(&l1s, admin, up.addr)
    };
    let (proc, path) = start("reload-in-flight", &s);
    let url = format!("http://{l1}/w");
    let slow = tokio::spawn(async move {
        let h = [
            reply("x-session-update", r#"{"cart": [1]}"#),
            (REPLY_DELAY_MS, "700".to_string()),
        ];
        TestClient::new().get(&url, &hdrs(&h)).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.routes =
        "  - {match: {path_prefix: /w}, upstream: app, forward: {mode: json, writable_keys: []}}";
    write(&path, &s);
    reload_ok(&proc, admin, 1).await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the old config let it write: {}", r.text());
    assert!(r.cookie("sessionid").is_some());
    let h = [reply("x-session-update", r#"{"cart": [2]}"#)];
    let r = TestClient::new()
        .get(&format!("http://{l1}/w"), &hdrs(&h))
        .await;
    assert_eq!(r.status, 502, "the next request is under the new config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_or_a_store_change_keeps_the_running_config() {
    let up = upstream().await;
    let (l1, admin) = (free_addr(), free_addr());
    let l1s = [l1];
    let s = Setup::new(&l1s, admin, up.addr);
    let (proc, path) = start("reload-refused", &s);
    let c = TestClient::new();
    let login = [reply("x-session-update", r#"{"user_id": 1}"#)];
    let cookie = c
        .get(&format!("http://{l1}/"), &hdrs(&login))
        .await
        .cookie("sessionid")
        .unwrap();

    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good.replace("secure: false", "secure: false, secrue: true, tll: 5")
        + "upstreams_typo: {}\n";
    std::fs::write(&path, &bad).unwrap();
    reloaded(&proc, admin, 1).await;
    let other = Setup {
        store: "{kind: embedded, path: sessions.db}",
        ..s
    };
    write(&path, &other);
    reloaded(&proc, admin, 2).await;

    let r = c
        .get(&format!("http://{l1}/"), &[("cookie", cookie.as_str())])
        .await;
    assert_eq!(r.session()["user_id"], 1, "still serving, same store");
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "sessiongate_config_reloads_total{result=\"error\"}"),
        2
    );
    assert_eq!(
        metric(&m, "sessiongate_config_reloads_total{result=\"success\"}"),
        0
    );
    let log = proc.log();
    for problem in ["secrue", "tll", "upstreams_typo", "session.store changed"] {
        assert!(log.contains(problem), "{problem} not logged:\n{log}");
    }
    assert!(!log.contains(OLD_SECRET), "a secret reached the log");
}

/// One connection, many requests: an error or a closed connection counts.
async fn keep_alive_worker(
    addr: SocketAddr,
    http2: bool,
    cookie: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(stream);
    let request = || {
        Request::get("/")
            .header("host", "localhost")
            .header("cookie", cookie.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let check = |r: Result<http::Response<hyper::body::Incoming>, hyper::Error>| async {
        match r {
            Ok(resp) if resp.status() == 200 => {
                let body = resp.into_body().collect().await;
                if body.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
            _ => {}
        }
        errors.fetch_add(1, Ordering::Relaxed);
        false
    };
    if http2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            if !check(send.send_request(request()).await).await {
                return;
            }
        }
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            if !check(send.send_request(request()).await).await {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_keep_alive_and_http2_traffic_drop_nothing() {
    let up = upstream().await;
    let (l1, l2, admin) = (free_addr(), free_addr(), free_addr());
    let l1s = [l1];
    let mut s = Setup::new(&l1s, admin, up.addr);
    let (proc, path) = start("reload-load", &s);
    let login = [reply("x-session-update", r#"{"user_id": 3}"#)];
    let cookie = TestClient::new()
        .get(&format!("http://{l1}/"), &hdrs(&login))
        .await
        .cookie("sessionid")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..6 {
        workers.push(tokio::spawn(keep_alive_worker(
            l1,
            i % 3 == 2,
            cookie.clone(),
            stop.clone(),
            ok.clone(),
            errors.clone(),
        )));
    }
    let both = [l1, l2];
    let only = [l1];
    let route = "  - {match: {path_prefix: /v2}, upstream: app, forward: {mode: signed, secret: \"jwt-secret-0123456789abcdef-0123456789ab\"}}";
    for n in 1..=20u64 {
        // Every other reload adds a route and a listener, the next removes them.
        if n % 2 == 1 {
            s.listen = &both;
            s.routes = route;
        } else {
            s.listen = &only;
            s.routes = "";
        }
        write(&path, &s);
        let before = ok.load(Ordering::Relaxed);
        reload_ok(&proc, admin, n).await;
        // Traffic flowed across the reload.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ok.load(Ordering::Relaxed) < before + 50 {
            assert!(Instant::now() < deadline, "traffic stalled at reload {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let m = metrics(admin).await;
    let served = ok.load(Ordering::Relaxed);
    eprintln!(
        "20 reloads under 4 HTTP/1.1 keep-alive and 2 HTTP/2 connections: {served} requests, {} errors",
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        metric(&m, "sessiongate_config_reloads_total{result=\"success\"}"),
        20,
        "{}",
        proc.log()
    );
}
