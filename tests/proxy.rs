//! Proxying end to end: routing, header hygiene, errors, streaming, h2c,
//! the admin listener and graceful shutdown.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[tokio::test]
async fn unmatched_request_is_404() {
    let up = upstream().await;
    let gw = gateway(
        &config(
            "",
            "  - {match: {path_prefix: /api/}, upstream: app, forward: {mode: json}}",
        ),
        up.addr,
    )
    .await;
    let c = TestClient::new();
    let r = c.get(&gw.url("/other"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(!r.text().is_empty());
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn routes_match_host_and_prefix_in_file_order() {
    let up_a = upstream().await;
    let up_b = upstream().await;
    let yaml = format!(
        r#"
secrets: ["{SECRET}"]
session: {{cookie: {{secure: false}}, store: {{kind: memory}}}}
upstreams:
  a: {{url: "http://{}/base"}}
  b: {{url: "http://{}"}}
routes:
  - {{match: {{path_prefix: /api/, host: API.example.test}}, upstream: b, strip_prefix: true, forward: {{mode: none}}}}
  - {{match: {{path_prefix: /api/}}, upstream: a, strip_prefix: true, forward: {{mode: none}}}}
  - {{match: {{path_prefix: /}}, upstream: b, forward: {{mode: none}}}}
"#,
        up_a.addr, up_b.addr
    );
    let gw = gateway(&yaml, up_a.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/api/users?id=3"),
            &[("host", "api.example.test:8080")],
        )
        .await;
    assert_eq!(r.echo().path, "/users?id=3");
    assert_eq!(up_b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let r = c
        .get(&gw.url("/api/users?id=3"), &[("host", "www.example.test")])
        .await;
    assert_eq!(
        r.echo().path,
        "/base/users?id=3",
        "upstream base path is kept"
    );
    assert_eq!(up_a.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let r = c.get(&gw.url("/api"), &[]).await;
    assert_eq!(
        r.echo().path,
        "/api",
        "path_prefix is a plain string prefix"
    );
    assert_eq!(up_b.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("connection", "keep-alive, x-private-hop".into()),
                ("x-private-hop", "1".into()),
                ("keep-alive", "timeout=5".into()),
                ("proxy-authorization", "Basic Zm9vOmJhcg==".into()),
                ("x-end-to-end", "kept".into()),
                reply("x-upstream-hop", "1"),
                reply("connection", "x-upstream-hop"),
                reply("keep-alive", "timeout=9"),
            ]),
        )
        .await;
    let echo = r.echo();
    for h in ["x-private-hop", "keep-alive", "proxy-authorization"] {
        assert_eq!(echo.header(h), None, "{h} forwarded");
    }
    assert_eq!(echo.header("x-end-to-end").as_deref(), Some("kept"));
    assert!(r.headers.get("x-upstream-hop").is_none());
    assert!(r.headers.get("keep-alive").is_none());
}

#[tokio::test]
async fn forwarded_headers_and_request_id() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/"),
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("host", "shop.example.test:8443"),
                ("x-request-id", "abc-123"),
            ],
        )
        .await;
    let echo = r.echo();
    assert_eq!(
        echo.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        echo.header("x-forwarded-host").as_deref(),
        Some("shop.example.test:8443")
    );
    assert_eq!(echo.header("x-request-id").as_deref(), Some("abc-123"));
    assert_eq!(r.headers["x-request-id"], "abc-123");

    let r = c.get(&gw.url("/"), &[]).await;
    let generated = r.echo().header("x-request-id").unwrap();
    assert_eq!(generated.len(), 32);
    assert_eq!(r.headers["x-request-id"], generated.as_str());
    let r2 = c
        .get(&gw.url("/"), &[("x-request-id", "bad id with spaces")])
        .await;
    assert_ne!(
        r2.echo().header("x-request-id").unwrap(),
        "bad id with spaces"
    );
}

#[tokio::test]
async fn a_request_with_a_body_gets_the_same_headers_and_no_forged_ones() {
    // Bodies go to the upstream through hyper's client, bodiless requests
    // through sessiongate's own codec: the headers the proxy sets must be
    // the same both ways, once each.
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let c = TestClient::new();
    for method in ["GET", "POST"] {
        let r = c
            .send(
                Request::builder()
                    .method(method)
                    .uri(gw.url("/upload"))
                    .header("host", "shop.example.test")
                    .header("x-forwarded-for", "203.0.113.7")
                    .header("x-forwarded-proto", "forged")
                    .header("x-forwarded-host", "forged.example")
                    .header("x-request-id", "abc-123")
                    .header("x-session-data", r#"{"admin":true}"#)
                    .body(Full::new(Bytes::from_static(if method == "POST" {
                        b"abc"
                    } else {
                        b""
                    })))
                    .unwrap(),
            )
            .await;
        let echo = r.echo();
        assert_eq!(
            echo.header_all("x-forwarded-for"),
            ["203.0.113.7, 127.0.0.1"],
            "{method}"
        );
        assert_eq!(echo.header_all("x-forwarded-proto"), ["http"], "{method}");
        assert_eq!(
            echo.header_all("x-forwarded-host"),
            ["shop.example.test"],
            "{method}"
        );
        assert_eq!(echo.header_all("x-request-id"), ["abc-123"], "{method}");
        assert_eq!(echo.header_all("x-session-data"), ["{}"], "{method}");
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let gw = gateway(&config("", JSON_ROUTE), closed).await;
    let r = TestClient::new().get(&gw.url("/"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "upstream unreachable\n");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = upstream().await;
    let gw = gateway(
        &config("", JSON_ROUTE).replace("timeout: 2s", "timeout: 1s"),
        up.addr,
    )
    .await;
    let start = Instant::now();
    let r = TestClient::new()
        .get(&gw.url("/"), &[(REPLY_DELAY_MS, "3000")])
        .await;
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn each_request_on_a_kept_upstream_connection_gets_the_whole_timeout() {
    let up = upstream().await;
    let gw = gateway(
        &config("", JSON_ROUTE).replace("timeout: 2s", "timeout: 600ms"),
        up.addr,
    )
    .await;
    let client = TestClient::new();
    assert_eq!(client.get(&gw.url("/first"), &[]).await.status, 200);
    // The first request's deadline passes while its connection idles in
    // the pool; the next request on it still has its full 600 ms.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = client
        .get(&gw.url("/second"), &[(REPLY_DELAY_MS, "350")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 2);
    let start = Instant::now();
    let r = client
        .get(&gw.url("/third"), &[(REPLY_DELAY_MS, "1500")])
        .await;
    assert_eq!(r.status, 504);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_millis(1200),
        "timed out after {waited:?}"
    );
}

/// An upstream whose response body arrives in chunks, 200 ms apart.
async fn trickling_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let (mut tx, body) =
                        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
                    tokio::spawn(async move {
                        for i in 0..5 {
                            if tx
                                .send_data(Bytes::from(format!("chunk{i};")))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    });
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn response_bodies_stream_through() {
    let up = trickling_upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let resp = client
        .request(
            Request::get(gw.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = start.elapsed();
    assert_eq!(&first[..], b"chunk0;");
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            rest.extend_from_slice(&d);
        }
    }
    assert_eq!(rest, b"chunk1;chunk2;chunk3;chunk4;");
    assert!(
        first_at < Duration::from_millis(500),
        "first chunk after {first_at:?}: the body was buffered"
    );
    assert!(start.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn large_request_bodies_pass_through() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let body = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let r = TestClient::new()
        .send(
            Request::post(gw.url("/upload"))
                .body(Full::new(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["body_len"], json!(8 * 1024 * 1024));
    assert_eq!(v["method"], "POST");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(gw.url("/h2"))
        .header("x-test-reply-header", r#"X-Session-Update: {"via":"h2"}"#)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let req = Request::get(gw.url("/h2"))
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-session-data"][0], r#"{"via":"h2"}"#);
    assert_eq!(echo["headers"]["x-forwarded-host"][0], gw.addr.to_string());
}

#[tokio::test]
async fn admin_endpoints_answer_and_stay_off_the_proxy() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let c = TestClient::new();
    c.get(
        &gw.url("/x"),
        &hdrs(&[reply("X-Session-Update", r#"{"a":1}"#)]),
    )
    .await;
    assert_eq!(c.get(&gw.admin_url("/healthz"), &[]).await.status, 200);
    assert_eq!(c.get(&gw.admin_url("/readyz"), &[]).await.status, 200);
    assert_eq!(
        c.get(&gw.admin_url("/.well-known/jwks.json"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        c.get(&gw.admin_url("/x"), &[]).await.status,
        404,
        "the admin listener serves no proxied traffic"
    );
    let metrics = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    for needle in [
        r#"sessiongate_requests_total{route="/",status="200"} 1"#,
        r#"sessiongate_request_duration_seconds_count{route="/"} 1"#,
        r#"sessiongate_session_events_total{event="created"} 1"#,
        r#"sessiongate_store_operation_duration_seconds_count{op="create"} 1"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    // On the proxy listener, admin paths are ordinary paths for the upstream.
    let r = c.get(&gw.url("/metrics"), &[]).await;
    assert_eq!(r.echo().path, "/metrics");
    let r = c.get(&gw.url("/healthz"), &[]).await;
    assert_eq!(r.echo().path, "/healthz");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        TestClient::new()
            .get(&url, &[(REPLY_DELAY_MS, "700")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = gw.addr;
    let start = Instant::now();
    gw.stop().await;
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "run returned before the request finished"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

/// How a raw upstream treats a connection after answering a request.
#[derive(Clone, Copy)]
enum AfterReply {
    KeepOpen,
    /// Closes without saying so (no `Connection: close`), like a server
    /// whose keep-alive timeout is shorter than the proxy's.
    CloseSilently,
    /// Answers with `Connection: close` and closes.
    AnnounceClose,
}

/// An HTTP/1.1 upstream written against the socket, counting connections.
/// `/empty` answers 204, everything else 200 with a two-byte body.
async fn raw_upstream(after: AfterReply) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let head_only = head.starts_with("HEAD ");
                    let mut reply = if head.starts_with("GET /empty") {
                        "HTTP/1.1 204 No Content\r\n".to_string()
                    } else {
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_string()
                    };
                    if let AfterReply::AnnounceClose = after {
                        reply.push_str("connection: close\r\n");
                    }
                    reply.push_str("\r\n");
                    if !head_only && !head.starts_with("GET /empty") {
                        reply.push_str("ok");
                    }
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if !matches!(after, AfterReply::KeepOpen) {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (up, accepted) = raw_upstream(AfterReply::KeepOpen).await;
    let gw = gateway(&config("", JSON_ROUTE), up).await;
    let client = TestClient::new();
    for i in 0..30 {
        // Bodies, empty 204s and HEADs all leave the connection reusable.
        let (path, method, status) = match i % 3 {
            0 => ("/x", http::Method::GET, 200),
            1 => ("/empty", http::Method::GET, 204),
            _ => ("/x", http::Method::HEAD, 200),
        };
        let r = client
            .send(
                Request::builder()
                    .method(method)
                    .uri(gw.url(path))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, status, "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_closing_connections_loses_no_request() {
    for after in [AfterReply::CloseSilently, AfterReply::AnnounceClose] {
        let (up, accepted) = raw_upstream(after).await;
        let gw = gateway(&config("", JSON_ROUTE), up).await;
        let client = TestClient::new();
        for i in 0..10 {
            let r = client.get(&gw.url("/x"), &[]).await;
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.text(), "ok");
            // Gives a silent close time to arrive before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }
}

#[tokio::test]
async fn concurrent_requests_share_a_bounded_set_of_upstream_connections() {
    let (up, accepted) = raw_upstream(AfterReply::KeepOpen).await;
    let gw = gateway(&config("", JSON_ROUTE), up).await;
    let client = Arc::new(TestClient::new());
    for _ in 0..5 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (client, url) = (client.clone(), gw.url("/x"));
            batch.spawn(async move { client.get(&url, &[]).await.status });
        }
        while let Some(status) = batch.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
    }
    // Never more connections than requests in flight at once: later batches reuse them.
    let n = accepted.load(Ordering::SeqCst);
    assert!((1..=16).contains(&n), "{n} upstream connections");
}
