//! The auth endpoint (SPEC section 8.3) with requests shaped exactly as
//! nginx `auth_request`, Traefik `ForwardAuth` and Envoy `ext_authz` send
//! them: routed and enforced as proxied requests are, the session headers
//! returned on 200, trusted peers only, the upstream never reached.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use std::sync::atomic::Ordering;

fn yaml(trusted: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
trusted_proxies: {trusted}
auth_endpoint: {{path: /_sessiongate/auth}}
session: {{cookie: {{secure: false}}, store: {{kind: memory}}}}
upstreams: {{app: {{url: "http://{{upstream}}", timeout: 5s}}}}
routes:
  - {{match: {{path_prefix: /api/}}, upstream: app, forward: {{mode: json, headers: {{X-User-Id: user_id}}}}, require: [user_id]}}
  - {{match: {{path_prefix: /app/}}, upstream: app, forward: {{mode: json}}, require: [user_id], on_deny: {{redirect: "/login?next={{uri}}"}}}}
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}
"#
    )
}

/// A subrequest's method, path and extra headers.
type Subrequest<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

async fn ask(
    c: &TestClient,
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    c.send(b.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_traefik_and_envoy_subrequests_are_answered_as_the_route_would() {
    let up = upstream().await;
    let gw = gateway(&yaml("[127.0.0.0/8]"), up.addr).await;
    let c = TestClient::new();
    // Log in through a route sessiongate proxies itself.
    let r = c
        .get(
            &gw.url("/login"),
            &hdrs(&[reply("X-Session-Update", r#"{"user_id":5}"#)]),
        )
        .await;
    let cookie = r.cookie("sessionid").unwrap();
    let hits = up.hits.load(Ordering::SeqCst);

    let allowed: Vec<Subrequest> = vec![
        // nginx: auth_request with X-Original-URI / X-Original-Method.
        (
            "GET",
            "/_sessiongate/auth",
            vec![
                ("x-original-uri", "/api/orders?id=3"),
                ("x-original-method", "POST"),
            ],
        ),
        // Traefik: ForwardAuth with X-Forwarded-Uri / -Method / -Host.
        (
            "GET",
            "/_sessiongate/auth",
            vec![
                ("x-forwarded-uri", "/api/orders"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-host", "shop.example"),
            ],
        ),
        // Envoy: ext_authz (HTTP service) with the original path below the endpoint.
        ("POST", "/_sessiongate/auth/api/orders?id=3", vec![]),
    ];
    for (method, path, extra) in &allowed {
        let mut h = extra.clone();
        h.push(("cookie", cookie.as_str()));
        let r = ask(&c, &gw, method, path, &h).await;
        assert_eq!(r.status, 200, "{method} {path} {extra:?}: {}", r.text());
        assert!(r.body.is_empty());
        let data: serde_json::Value =
            serde_json::from_str(r.headers["x-session-data"].to_str().unwrap()).unwrap();
        assert_eq!(data, json!({"user_id": 5}));
        assert_eq!(r.headers["x-user-id"], "5");
        assert_eq!(r.headers["cache-control"], "no-store");
        // Without the session: denied as the route denies.
        let r = ask(&c, &gw, method, path, extra).await;
        assert_eq!(r.status, 401, "{method} {path} {extra:?}");
    }
    // A redirect on_deny is a 302 with the original URI (Traefik and Envoy pass it on).
    let r = ask(
        &c,
        &gw,
        "GET",
        "/_sessiongate/auth",
        &[("x-forwarded-uri", "/app/page?x=1")],
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "/login?next=%2Fapp%2Fpage%3Fx%3D1");
    // A route without `require` is allowed with no session.
    let r = ask(
        &c,
        &gw,
        "GET",
        "/_sessiongate/auth",
        &[("x-original-uri", "/public")],
    )
    .await;
    assert_eq!(r.status, 200);
    // Paths a backend could read differently cannot slip through (SPEC 8.1).
    for confused in [
        "/api;x/orders",
        "/api/..%2Fadmin",
        "/api\\orders",
        "https://evil/api/x",
    ] {
        let h = [("x-original-uri", confused), ("cookie", cookie.as_str())];
        let r = ask(&c, &gw, "GET", "/_sessiongate/auth", &h).await;
        assert_eq!(r.status, 400, "{confused}: {}", r.text());
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "no subrequest reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_peers_get_an_answer() {
    let up = upstream().await;
    let gw = gateway(&yaml("[10.0.0.0/8]"), up.addr).await;
    let c = TestClient::new();
    let r = ask(
        &c,
        &gw,
        "GET",
        "/_sessiongate/auth",
        &[("x-original-uri", "/public")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("x-session-data").is_none());
    // Other paths are proxied as ever.
    let r = c.get(&gw.url("/public"), &[]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}
