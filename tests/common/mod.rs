//! Test servers on ephemeral ports: a real upstream that echoes what it
//! received and answers as the test asks, and the proxy itself.
#![allow(dead_code)]

pub mod db;
pub mod gate;
pub mod memcached;
pub mod process;
pub mod raw;
pub mod redis;
pub mod tls;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A test whose tool or service is missing: under CI=true that fails it;
/// otherwise it says so loudly and the test returns (build.rs marks such
/// tests ignored where the tool is not installed at all).
pub fn skip_or_fail(test: &str, missing: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{missing}, and CI=true: {test} cannot be skipped");
    }
    eprintln!("\n*** SKIPPED {test}: {missing} ***\n");
    false
}

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const JWT_SECRET: &str = "upstream-jwt-secret-0123456789abcdef-012";

/// Control headers the test sends; the upstream obeys them. They do not start
/// with the internal prefix, so the proxy forwards them.
pub const REPLY_HEADER: &str = "x-test-reply-header";
pub const REPLY_STATUS: &str = "x-test-reply-status";
pub const REPLY_DELAY_MS: &str = "x-test-reply-delay-ms";

pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

/// What the upstream received, as it echoes it in its response body.
#[derive(Debug, Clone)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub headers: Map<String, Value>,
    /// The SHA-256 of the body the upstream received, hex.
    pub body_sha256: String,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v[0].as_str())
            .map(str::to_string)
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn upstream_handler(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut headers = Map::new();
    for (k, v) in req.headers() {
        let entry = headers
            .entry(k.as_str().to_string())
            .or_insert_with(|| Value::Array(vec![]));
        entry.as_array_mut().unwrap().push(Value::String(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let delay = req
        .headers()
        .get(REPLY_DELAY_MS)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let status = req
        .headers()
        .get(REPLY_STATUS)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .unwrap_or(200);
    let replies: Vec<(String, String)> = req
        .headers()
        .get_all(REPLY_HEADER)
        .iter()
        .filter_map(|v| {
            let (k, v) = v.to_str().ok()?.split_once(": ")?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let digest: String = <sha2::Sha256 as sha2::Digest>::digest(&body_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = json!({"method": method, "path": path, "headers": headers,
        "body_len": body_bytes.len(), "body_sha256": digest});
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in replies {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

/// A real HTTP upstream on 127.0.0.1:0 (HTTP/1.1 and h2c).
pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = oneshot::channel::<()>();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => r.unwrap(),
                _ = &mut rx => return,
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(upstream_handler(req, h).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        _stop: tx,
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), sessiongate::RunError>>>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// Starts the proxy with YAML in which `{upstream}` stands for the upstream's address.
pub async fn gateway(yaml: &str, upstream: SocketAddr) -> Gateway {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    gateway_on(proxy, yaml, upstream).await
}

/// `gateway` on a listener the test bound (IPv6, or one whose address the
/// YAML names); the config's first `listen` entry describes it.
pub async fn gateway_on(proxy: TcpListener, yaml: &str, upstream: SocketAddr) -> Gateway {
    let yaml = yaml.replace("{upstream}", &upstream.to_string());
    let config = sessiongate::config::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = sessiongate::Listeners {
        proxy: vec![proxy],
        admin: Some(admin),
    };
    let task = tokio::spawn(sessiongate::run(config, listeners, async move {
        let _ = rx.await;
    }));
    Gateway {
        addr,
        admin: admin_addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The usual config: memory store, one upstream, routes given by the test.
pub fn config(session_extra: &str, routes: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {{kind: memory, max_sessions: 10000}}
{session_extra}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 2s}}
routes:
{routes}
"#
    )
}

pub const JSON_ROUTE: &str = "  - {match: {path_prefix: /}, upstream: app, forward: {mode: json}}";

/// One json-mode route in front of the test upstream, on the given store.
pub fn store_yaml(store: &str, on_store_error: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {store}
  on_store_error: {on_store_error}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 5s}}
routes:
{JSON_ROUTE}
"#
    )
}

/// A request whose answer carries `update` as the session's change.
pub async fn write(c: &TestClient, gw: &Gateway, cookie: Option<&str>, update: &str) -> Reply {
    let mut h = vec![reply("X-Session-Update", update)];
    if let Some(cookie) = cookie {
        h.push(("cookie", cookie.to_string()));
    }
    c.get(&gw.url("/"), &hdrs(&h)).await
}

/// The admin token of the tests that manage sessions.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef-0123456789";

/// A config with session management on: the admin token and `user_id`
/// as the subject key, one JSON route.
pub fn managed_yaml(store: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
admin: {{token: "{ADMIN_TOKEN}"}}
session:
  cookie: {{secure: false}}
  store: {store}
  subject_key: user_id
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 5s}}
routes:
{JSON_ROUTE}
"#
    )
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn echo(&self) -> Echo {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not an echo ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        });
        Echo {
            method: v["method"].as_str().unwrap().to_string(),
            path: v["path"].as_str().unwrap().to_string(),
            headers: v["headers"].as_object().unwrap().clone(),
            body_sha256: v["body_sha256"].as_str().unwrap_or_default().to_string(),
        }
    }
    /// The session the upstream received in json mode.
    pub fn session(&self) -> Value {
        serde_json::from_str(
            &self
                .echo()
                .header("x-session-data")
                .expect("no X-Session-Data"),
        )
        .unwrap()
    }
    /// The `name=value` of the session cookie set by this response, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with(&format!("{name}=")))
    }
    /// The cookie to send back: `name=value`, from a Set-Cookie that did not expire it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let sc = self.set_cookie(name)?;
        if sc.contains("Max-Age=0") {
            return None;
        }
        Some(sc.split(';').next().unwrap().to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Every request over HTTP/2 with prior knowledge (h2c).
    pub fn http2() -> Self {
        TestClient {
            // Like browsers, accept response heads larger than hyper's 16 KiB default.
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_max_header_list_size(256 * 1024)
                .build_http(),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// GET with extra headers (`(name, value)`), e.g. a cookie and reply instructions.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap()).await
    }
}

/// A header asking the upstream to answer with `name: value`.
pub fn reply(name: &str, value: &str) -> (&'static str, String) {
    (REPLY_HEADER, format!("{name}: {value}"))
}

/// Builds the header list for `TestClient::get` from owned pairs.
pub fn hdrs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Everything the peer sends until it closes, or `None` if it has not closed `within`.
pub async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// The value of one series in a Prometheus text exposition (`series` is
/// the name with its labels, as written), or `None` when it is absent.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.trim().parse().expect("a metric's value is a number"))
    })
}
