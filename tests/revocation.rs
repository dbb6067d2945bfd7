//! Revocation means gone, everywhere (SPEC section 8.2): a subject's
//! sessions revoked while they are being written to and cycled through
//! every instance sharing the store. No request that starts after the
//! revocation answered sees one of them, no cookie ever issued for one
//! reaches it afterwards on any instance, and no write in flight brings one
//! back.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COOKIE: &str = "sessionid";
const TOKEN: &str = ADMIN_TOKEN;
const WRITERS: usize = 8;

async fn login(c: &TestClient, gw: &Gateway, user: &str) -> String {
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply(
                "X-Session-Update",
                &json!({ "user_id": user }).to_string(),
            )]),
        )
        .await;
    assert_eq!(r.status, 200);
    r.cookie(COOKIE).unwrap()
}

async fn user_of(c: &TestClient, gw: &Gateway, cookie: &str) -> Value {
    let r = c.get(&gw.url("/"), &[("cookie", cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.session()["user_id"].clone()
}

/// One request of the traffic: when it started, and the user it saw.
struct Seen {
    started: Instant,
    user: Value,
}

async fn revocation_under_traffic(store: &str, instances: usize) {
    let up = upstream().await;
    let mut gws = Vec::new();
    for _ in 0..instances {
        gws.push(Arc::new(gateway(&managed_yaml(store), up.addr).await));
    }
    let c = Arc::new(TestClient::new());
    let mut alice = Vec::new();
    for i in 0..WRITERS {
        alice.push(login(&c, &gws[i % instances], "alice").await);
    }
    let bob = login(&c, &gws[0], "bob").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let issued = Arc::new(Mutex::new(alice.clone()));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let mut tasks = Vec::new();
    for (w, cookie) in alice.iter().cloned().enumerate() {
        let (gws, c, stop, issued, seen) = (
            gws.clone(),
            c.clone(),
            stop.clone(),
            issued.clone(),
            seen.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut cookie = cookie;
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                let gw = &gws[(w + k) % gws.len()];
                // Writes and cycles, some slow enough to be in flight
                // across the revocation.
                let write = if k.is_multiple_of(3) {
                    reply("X-Session-Action", "cycle")
                } else {
                    reply(
                        "X-Session-Update",
                        &json!({ format!("k{w}"): k }).to_string(),
                    )
                };
                let delay = (REPLY_DELAY_MS, ((k * 7 + w * 13) % 40).to_string());
                let started = Instant::now();
                let r = c
                    .get(
                        &gw.url("/"),
                        &hdrs(&[("cookie", cookie.clone()), write, delay]),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                seen.lock().unwrap().push(Seen {
                    started,
                    user: r.session()["user_id"].clone(),
                });
                if let Some(next) = r.cookie(COOKIE) {
                    issued.lock().unwrap().push(next.clone());
                    cookie = next;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c
        .send(
            http::Request::delete(gws[instances - 1].admin_url("/sessions?subject=alice"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    let revoked_at = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = serde_json::from_slice::<Value>(&r.body).unwrap()["revoked"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let before = seen.iter().filter(|s| s.started < revoked_at).count();
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started >= revoked_at).collect();
    assert!(
        before > WRITERS && after.len() > WRITERS,
        "{before} before, {} after",
        after.len()
    );
    assert!(
        seen.iter()
            .any(|s| s.started < revoked_at && s.user == "alice"),
        "the traffic reached alice's sessions before the revocation"
    );
    for s in &after {
        assert_eq!(s.user, Value::Null, "a revoked session was served");
    }
    let issued = issued.lock().unwrap().clone();
    for cookie in &issued {
        for gw in &gws {
            assert_eq!(
                user_of(&c, gw, cookie).await,
                Value::Null,
                "a revoked session came back"
            );
        }
    }
    for gw in &gws {
        assert_eq!(user_of(&c, gw, &bob).await, "bob");
    }
    assert!(
        revoked >= WRITERS as u64,
        "revoked {revoked} of {WRITERS} sessions"
    );
    eprintln!(
        "{} requests, {before} before the revocation, {} after; {revoked} revoked; {} cookies checked on {instances} instance(s)",
        seen.len(),
        after.len(),
        issued.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_under_traffic_on_the_memory_store() {
    revocation_under_traffic("{kind: memory}", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_under_traffic_on_the_embedded_store() {
    let dir = common::redis::temp_dir("revoke-embedded");
    let store = format!("{{kind: embedded, path: {}}}", dir.join("s.db").display());
    revocation_under_traffic(&store, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn revocation_under_traffic_on_two_instances_sharing_redis() {
    if !common::redis::available("revocation_under_traffic_on_two_instances_sharing_redis") {
        return;
    }
    let server = common::redis::RedisServer::start();
    revocation_under_traffic(&format!("{{kind: redis, url: \"{}\"}}", server.url()), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn revocation_under_traffic_on_two_instances_sharing_a_redis_cluster() {
    if !common::redis::available(
        "revocation_under_traffic_on_two_instances_sharing_a_redis_cluster",
    ) {
        return;
    }
    let cluster = tokio::task::spawn_blocking(common::redis::Cluster::start)
        .await
        .unwrap();
    revocation_under_traffic(
        &format!("{{kind: redis, cluster: {}}}", cluster.yaml_nodes()),
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn revocation_under_traffic_on_two_instances_sharing_postgres() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "revoke") {
        revocation_under_traffic(&t.store_yaml(), 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn revocation_under_traffic_on_two_instances_sharing_mysql() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Mysql, "revoke") {
        revocation_under_traffic(&t.store_yaml(), 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn revocation_under_traffic_on_two_instances_sharing_memcached() {
    if !common::memcached::available("revocation_on_memcached") {
        return;
    }
    let (a, b) = (
        common::memcached::Memcached::start(),
        common::memcached::Memcached::start(),
    );
    let store = format!("{{kind: memcached, servers: [{}, {}]}}", a.addr(), b.addr());
    revocation_under_traffic(&store, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn revocation_under_traffic_on_two_instances_caching_over_redis() {
    if !common::redis::available("revocation_on_cached_redis") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let store = format!(
        "{{kind: cached, durable: {{kind: redis, url: \"{}\"}}}}",
        server.url()
    );
    revocation_under_traffic(&store, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn revocation_under_traffic_on_two_instances_caching_over_postgres() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "revoke_cached") {
        let store = format!("{{kind: cached, durable: {}}}", t.store_yaml());
        revocation_under_traffic(&store, 2).await;
    }
}
