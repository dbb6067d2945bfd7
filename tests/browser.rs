//! CSRF in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver), against `sessiongate demo`. A same-origin form post with
//! the token the page embeds works; a page on another origin that posts to
//! the demo is refused, and the session is left as it was.

mod common;

use bytes::Bytes;
use common::process::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A WebDriver session on a chromedriver of its own.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Drop for Browser {
    /// chromedriver and the Chromium it started share a process group of
    /// their own: all of it goes, also when the test failed half-way.
    fn drop(&mut self) {
        // SAFETY: a signal to a process group this test created.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start(dir: &std::path::Path) -> Browser {
        let port = free_addr().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver)");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = dir.join("profile");
        // The flags keep Chromium off the network it cannot reach here.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ]}
        }}});
        let v = b.call(http::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        b
    }

    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self
            .client
            .request(req)
            .await
            .expect("chromedriver answers");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["value"].get("error").is_none(), "WebDriver error: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call(http::Method::POST, &path, Some(json!({"url": url})))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call(
            http::Method::POST,
            &path,
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Ends the session: chromedriver closes the browser.
    async fn quit(&self) {
        let path = format!("/session/{}", self.session);
        self.call(http::Method::DELETE, &path, None).await;
    }

    /// Waits until the page's text contains `needle`; the text.
    async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self
                .script("return document.body ? document.body.innerText : ''")
                .await;
            let text = text.as_str().unwrap_or_default().to_string();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never said {needle:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A page on another origin that posts a form to the demo as it loads.
async fn attacker(target: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let html = format!(
        "<!doctype html><form id=f method=post action=\"http://{target}/visit\">\
         <input name=x value=1></form><script>document.getElementById('f').submit()</script>"
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let html = html.clone();
                    async move {
                        let mut r = http::Response::new(Full::new(Bytes::from(html)));
                        r.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("text/html"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_chromium),
    ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_same_origin_form_posts_and_a_cross_origin_one_is_refused() {
    let dir = temp_dir("browser");
    let demo = Demo::start(&dir).await;
    let listen = demo.listen;
    let evil = attacker(listen).await;
    let browser = Browser::start(&dir).await;

    // Same origin: the demo's own form, with the token it embeds.
    browser.go(&format!("http://{listen}/")).await;
    browser.wait_for_text("sessiongate demo").await;
    browser
        .script("document.getElementById('visit').submit(); return true")
        .await;
    browser.wait_for_text("\"visits\": 1").await;

    // Another origin posts to the demo: refused before the app, by Origin.
    browser.go(&format!("http://{evil}/")).await;
    let refused = browser
        .wait_for_text("CSRF verification failed: Origin checking failed")
        .await;
    assert!(refused.contains(&format!("http://{evil}")), "{refused}");

    // The session still counts one visit.
    browser.go(&format!("http://{listen}/")).await;
    let home = browser.wait_for_text("\"visits\": 1").await;
    assert!(!home.contains("\"visits\": 2"), "{home}");

    browser.quit().await;
    drop(demo);
}
