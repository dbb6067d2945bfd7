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
