//! Least privilege per upstream (SPEC section 8.9): a route's upstream
//! writes only its `writable_keys` and takes only its `actions`; anything
//! else refuses the whole write-back before the store is touched. Over
//! HTTP/1.1 and HTTP/2, on the memory and Redis stores, beside
//! `forward.keys` and `require`.

mod common;

use common::redis::{RedisServer, available};
use common::*;
use serde_json::{Value, json};

/// The core app at `/` writes anything; the shop at `/shop/` sees only
/// `cart`, may write only `cart`, may only set the expiry, and requires a login.
fn yaml(store: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {store}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 5s}}
routes:
  - match: {{path_prefix: /shop/}}
    upstream: app
    forward: {{mode: json, keys: [cart], writable_keys: [cart], actions: [expiry]}}
    require: [user_id]
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}
"#
    )
}

async fn answer(
    c: &TestClient,
    gw: &Gateway,
    path: &str,
    cookie: &str,
    pairs: &[(&str, &str)],
) -> Reply {
    let mut h: Vec<(&'static str, String)> = pairs.iter().map(|(n, v)| reply(n, v)).collect();
    h.push(("cookie", cookie.to_string()));
    c.get(&gw.url(path), &hdrs(&h)).await
}

async fn session(c: &TestClient, gw: &Gateway, cookie: &str) -> Value {
    c.get(&gw.url("/me"), &[("cookie", cookie)]).await.session()
}

fn refused_count(metrics: &str) -> u64 {
    metric_value(
        metrics,
        "sessiongate_session_events_total{event=\"refused\"}",
    )
    .map_or(0, |v| v as u64)
}

async fn scoped_writes(store: &str, c: TestClient) {
    let up = upstream().await;
    let gw = gateway(&yaml(store), up.addr).await;
    let login = c
        .get(
            &gw.url("/login"),
            &hdrs(&[reply("X-Session-Update", r#"{"user_id":1,"role":"user"}"#)]),
        )
        .await;
    let cookie = login.cookie("sessionid").unwrap();

    // The shop sees only its key, and may write it.
    let r = answer(
        &c,
        &gw,
        "/shop/cart",
        &cookie,
        &[("X-Session-Update", r#"{"cart":[1]}"#)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.session(),
        json!({}),
        "the shop saw nothing but cart (none yet)"
    );
    let r = c.get(&gw.url("/shop/cart"), &[("cookie", &cookie)]).await;
    assert_eq!(r.session(), json!({"cart": [1]}));

    // Writing another key, setting or removing it, alone or beside an
    // allowed one, is refused whole: nothing lands.
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    for update in [
        r#"{"user_id":2}"#,
        r#"{"role":null}"#,
        r#"{"cart":[2],"role":"admin"}"#,
        r#"{"role":{"nested":true}}"#,
    ] {
        let r = answer(&c, &gw, "/shop/x", &cookie, &[("X-Session-Update", update)]).await;
        assert_eq!(r.status, 502, "{update}");
    }
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), hits + 4);
    // Two updates in one response, the second out of scope: neither lands.
    let r = answer(
        &c,
        &gw,
        "/shop/x",
        &cookie,
        &[
            ("X-Session-Update", r#"{"cart":[3]}"#),
            ("X-Session-Update", r#"{"role":"admin"}"#),
        ],
    )
    .await;
    assert_eq!(r.status, 502);
    for action in ["flush", "cycle"] {
        let r = answer(&c, &gw, "/shop/x", &cookie, &[("X-Session-Action", action)]).await;
        assert_eq!(r.status, 502, "{action}");
    }
    assert_eq!(
        session(&c, &gw, &cookie).await,
        json!({"user_id": 1, "role": "user", "cart": [1]}),
        "no refused write changed anything"
    );
    // The allowed action works.
    let r = answer(
        &c,
        &gw,
        "/shop/x",
        &cookie,
        &[("X-Session-Action", "expiry=600")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie("sessionid").unwrap().contains("Max-Age=600"));

    // The core app may do anything, the shop's limits do not reach it.
    let r = answer(
        &c,
        &gw,
        "/",
        &cookie,
        &[("X-Session-Update", r#"{"role":"admin"}"#)],
    )
    .await;
    assert_eq!(r.status, 200);
    // `require` still reads the whole session, and applies first.
    let r = c.get(&gw.url("/shop/x"), &[]).await;
    assert_eq!(r.status, 401);

    let metrics = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    assert_eq!(refused_count(&metrics), 7, "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_writes_only_its_keys_and_actions_on_memory() {
    scoped_writes("{kind: memory}", TestClient::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_writes_only_its_keys_and_actions_over_http2() {
    scoped_writes("{kind: memory}", TestClient::http2()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn each_route_writes_only_its_keys_and_actions_on_redis() {
    if !available("each_route_writes_only_its_keys_and_actions_on_redis") {
        return;
    }
    let server = RedisServer::start();
    let store = format!(
        "{{kind: redis, url: \"{}\", key_prefix: \"scope:\"}}",
        server.url()
    );
    scoped_writes(&store, TestClient::new()).await;
    // Nothing but the one session was ever written: no partial patch.
    let keys = server.cli(&["--scan", "--pattern", "scope:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
}
