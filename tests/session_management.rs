//! Session management end to end (SPEC section 8.2): the real proxy in
//! front of a real upstream, the admin endpoints over HTTP, on every
//! server-side store; the cookie store's 501s.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const COOKIE: &str = "sessionid";
const TOKEN: &str = "admin-token-0123456789abcdef-0123456789";

fn yaml(store: &str, extra: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
admin: {{token: "{TOKEN}"}}
session:
  cookie: {{secure: false}}
  store: {store}
  subject_key: user_id
{extra}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 5s}}
routes:
{JSON_ROUTE}
"#
    )
}

/// An admin request with the token.
async fn admin(c: &TestClient, gw: &Gateway, method: &str, path: &str) -> Reply {
    admin_as(c, gw, method, path, Some(TOKEN)).await
}

async fn admin_as(
    c: &TestClient,
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Reply {
    let mut b = Request::builder().method(method).uri(gw.admin_url(path));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    c.send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Logs in (a session holding `data`); returns the cookie and the session's sid.
async fn login(c: &TestClient, gw: &Gateway, data: Value) -> (String, String) {
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", &data.to_string())]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.cookie(COOKIE).expect("session cookie set");
    let sid = whoami(c, gw, &cookie).await.1.expect("a sid");
    // Creation times are kept in milliseconds; two logins within one
    // would leave "the oldest" to the sid tie-break, and the
    // max_per_subject assertions would depend on the draw.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    (cookie, sid)
}

/// The session a cookie reaches, and its sid.
async fn whoami(c: &TestClient, gw: &Gateway, cookie: &str) -> (Value, Option<String>) {
    let r = c.get(&gw.url("/"), &[("cookie", cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (r.session(), r.echo().header("x-session-sid"))
}

async fn listed(c: &TestClient, gw: &Gateway, subject: &str) -> Vec<Value> {
    let r = admin(c, gw, "GET", &format!("/sessions?subject={subject}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["sessions"].as_array().unwrap().clone()
}

fn sids_of(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["sid"].as_str().unwrap().to_string())
        .collect()
}

async fn metric(c: &TestClient, gw: &Gateway, line_start: &str) -> Option<f64> {
    let r = c.get(&gw.admin_url("/metrics"), &[]).await;
    r.text()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every behaviour of section 8.2 on one store.
async fn behaviours(store: &str, counts_sessions: bool) {
    let up = upstream().await;
    let gw = gateway(&yaml(store, ""), up.addr).await;
    let c = TestClient::new();

    // The endpoints want the token.
    for token in [None, Some("wrong-token-0123456789abcdef-0123456789")] {
        let r = admin_as(&c, &gw, "GET", "/sessions?subject=alice", token).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let r = admin(&c, &gw, "GET", "/sessions").await;
    assert_eq!(r.status, 400, "no subject: {}", r.text());
    let r = admin_as(&c, &gw, "GET", "/healthz", None).await;
    assert_eq!(r.status, 200, "health stays open");

    // Listing: newest first, sids only.
    let (a1, s1) = login(&c, &gw, json!({"user_id": "alice"})).await;
    let (a2, s2) = login(&c, &gw, json!({"user_id": "alice", "cart": [1]})).await;
    let (a3, s3) = login(&c, &gw, json!({"user_id": "alice"})).await;
    let (b1, sb1) = login(&c, &gw, json!({"user_id": "bob"})).await;
    let (n1, sn1) = login(&c, &gw, json!({"user_id": 42})).await;
    let list = listed(&c, &gw, "alice").await;
    let mut all = sids_of(&list);
    assert_eq!(all.len(), 3, "{list:?}");
    all.sort();
    let mut want = vec![s1.clone(), s2.clone(), s3.clone()];
    want.sort();
    assert_eq!(all, want);
    let created: Vec<u64> = list
        .iter()
        .map(|s| s["created"].as_u64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    for s in &list {
        assert!(s["expires"].as_u64().unwrap() > s["created"].as_u64().unwrap());
    }
    let text = admin(&c, &gw, "GET", "/sessions?subject=alice")
        .await
        .text();
    for cookie in [&a1, &a2, &a3] {
        let value = cookie.split_once('=').unwrap().1;
        let id = value.split('.').next().unwrap();
        assert!(!text.contains(id), "a session id leaked: {text}");
    }
    assert_eq!(
        sids_of(&listed(&c, &gw, "42").await),
        std::slice::from_ref(&sn1)
    );

    // A session whose subject changes moves.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", a2.clone()),
                reply("X-Session-Update", r#"{"user_id":"bob"}"#),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(listed(&c, &gw, "alice").await.len(), 2);
    let mut bobs = sids_of(&listed(&c, &gw, "bob").await);
    bobs.sort();
    let mut want = vec![s2.clone(), sb1.clone()];
    want.sort();
    assert_eq!(bobs, want);

    // One session by sid.
    let r = admin(&c, &gw, "DELETE", &format!("/sessions/{s1}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(whoami(&c, &gw, &a1).await, (json!({}), None));
    let r = admin(&c, &gw, "DELETE", &format!("/sessions/{s1}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(whoami(&c, &gw, &a3).await.0["user_id"], "alice");

    // revoke-others keeps this session and revokes the subject's others.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", b1.clone()),
                reply("X-Session-Action", "revoke-others"),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        whoami(&c, &gw, &a2).await.0,
        json!({}),
        "bob's other session"
    );
    assert_eq!(whoami(&c, &gw, &b1).await.0["user_id"], "bob");
    assert_eq!(
        sids_of(&listed(&c, &gw, "bob").await),
        std::slice::from_ref(&sb1)
    );

    // A subject's every session.
    let (a4, _) = login(&c, &gw, json!({"user_id": "alice"})).await;
    let r = admin(&c, &gw, "DELETE", "/sessions?subject=alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"revoked": 2})
    );
    for cookie in [&a3, &a4] {
        assert_eq!(whoami(&c, &gw, cookie).await, (json!({}), None));
    }
    assert!(listed(&c, &gw, "alice").await.is_empty());
    assert_eq!(whoami(&c, &gw, &b1).await.0["user_id"], "bob");
    assert_eq!(whoami(&c, &gw, &n1).await.0["user_id"], 42);

    // A cycle keeps the session listed, under its new sid.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[("cookie", n1.clone()), reply("X-Session-Action", "cycle")]),
        )
        .await;
    let n2 = r.cookie(COOKIE).expect("cycled cookie");
    let sn2 = whoami(&c, &gw, &n2).await.1.unwrap();
    assert_ne!(sn2, sn1);
    assert_eq!(sids_of(&listed(&c, &gw, "42").await), [sn2]);
    assert_eq!(
        serde_json::from_slice::<Value>(
            &admin(&c, &gw, "DELETE", "/sessions?subject=42").await.body
        )
        .unwrap(),
        json!({"revoked": 1})
    );
    assert_eq!(whoami(&c, &gw, &n2).await.0, json!({}));

    // Metrics.
    let revoked = metric(
        &c,
        &gw,
        "sessiongate_session_events_total{event=\"revoked\"}",
    )
    .await;
    assert_eq!(
        revoked,
        Some(5.0),
        "1 by sid, 1 by revoke-others, 2 + 1 by subject"
    );
    let live = metric(&c, &gw, "sessiongate_sessions ").await;
    if counts_sessions {
        assert_eq!(live, Some(1.0), "bob's last session");
    } else {
        assert_eq!(live, None, "no gauge where the store does not count");
    }
    gw.stop().await;

    // max_per_subject: the oldest go.
    let gw = gateway(&yaml(store, "  max_per_subject: 2"), up.addr).await;
    let (c1, _) = login(&c, &gw, json!({"user_id": "carol"})).await;
    let (c2, _) = login(&c, &gw, json!({"user_id": "carol"})).await;
    let (c3, sc3) = login(&c, &gw, json!({"user_id": "carol"})).await;
    assert_eq!(
        whoami(&c, &gw, &c1).await.0,
        json!({}),
        "the oldest is revoked"
    );
    assert_eq!(whoami(&c, &gw, &c2).await.0["user_id"], "carol");
    assert_eq!(whoami(&c, &gw, &c3).await.0["user_id"], "carol");
    // Becoming carol by an update counts too; the session just written stays.
    let (d1, sd1) = login(&c, &gw, json!({"user_id": "dave"})).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", d1.clone()),
                reply("X-Session-Update", r#"{"user_id":"carol"}"#),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut carols = sids_of(&listed(&c, &gw, "carol").await);
    carols.sort();
    let mut want = vec![sc3, sd1];
    want.sort();
    assert_eq!(carols, want);
    assert_eq!(whoami(&c, &gw, &c2).await.0, json!({}));
    gw.stop().await;

    // Without a token the endpoints do not exist.
    let gw = gateway(
        &yaml(store, "").replace(&format!("admin: {{token: \"{TOKEN}\"}}"), ""),
        up.addr,
    )
    .await;
    let r = admin(&c, &gw, "GET", "/sessions?subject=bob").await;
    assert_eq!(r.status, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_on_the_memory_store() {
    behaviours("{kind: memory}", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_on_the_embedded_store() {
    let dir = common::redis::temp_dir("manage-embedded");
    let store = format!("{{kind: embedded, path: {}}}", dir.join("s.db").display());
    behaviours(&store, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn management_on_redis_standalone() {
    if !common::redis::available("management_on_redis_standalone") {
        return;
    }
    let server = common::redis::RedisServer::start();
    behaviours(
        &format!("{{kind: redis, url: \"{}\"}}", server.url()),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn management_on_redis_sentinel() {
    if !common::redis::available("management_on_redis_sentinel") {
        return;
    }
    let sentinel = tokio::task::spawn_blocking(common::redis::Sentinel::start)
        .await
        .unwrap();
    let store = format!(
        "{{kind: redis, sentinel: {{master: mymaster, nodes: [\"{}\"]}}, timeout: 2s}}",
        sentinel.sentinel.url()
    );
    behaviours(&store, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn management_on_redis_cluster() {
    if !common::redis::available("management_on_redis_cluster") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(common::redis::Cluster::start)
        .await
        .unwrap();
    behaviours(
        &format!("{{kind: redis, cluster: {}}}", cluster.yaml_nodes()),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_store_answers_501() {
    let up = upstream().await;
    let gw = gateway(&yaml("{kind: cookie}", ""), up.addr).await;
    let c = TestClient::new();
    for (method, path) in [
        ("GET", "/sessions?subject=alice"),
        ("DELETE", "/sessions?subject=alice"),
        ("DELETE", "/sessions/some-sid"),
    ] {
        let r = admin(&c, &gw, method, path).await;
        assert_eq!(r.status, 501, "{method} {path}");
        assert!(r.text().contains("cookie store"), "{}", r.text());
    }
    let (cookie, _) = login(&c, &gw, json!({"user_id": "alice"})).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "revoke-others"),
            ]),
        )
        .await;
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(r.set_cookie(COOKIE).is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn management_on_postgres() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "manage") {
        behaviours(&t.store_yaml(), false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn management_on_mysql() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Mysql, "manage") {
        behaviours(&t.store_yaml(), false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn management_on_memcached() {
    if !common::memcached::available("management_on_memcached") {
        return;
    }
    let (a, b) = (
        common::memcached::Memcached::start(),
        common::memcached::Memcached::start(),
    );
    let store = format!("{{kind: memcached, servers: [{}, {}]}}", a.addr(), b.addr());
    behaviours(&store, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn management_on_cached_over_postgres() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "manage_cached") {
        let store = format!("{{kind: cached, durable: {}}}", t.store_yaml());
        behaviours(&store, false).await;
    }
}
