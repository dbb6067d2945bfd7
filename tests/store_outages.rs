//! The stores that live in another server (PostgreSQL, MariaDB, memcached),
//! end to end: two instances sharing one, and the server killed under
//! traffic and started again, with sessiongate recovering by itself.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Two instances on one store: a write through either is read through the
/// other, and 80 concurrent writes of different keys through both all land.
async fn two_instances_share_sessions(store: &str) {
    let up = upstream().await;
    let a = gateway(&store_yaml(store, "fail_closed"), up.addr).await;
    let b = gateway(&store_yaml(store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = write(&c, &a, None, r#"{"user_id":1}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    assert_eq!(
        c.get(&b.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({"user_id": 1})
    );
    let mut tasks = Vec::new();
    for i in 0..80 {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let h = [
                ("cookie", cookie),
                reply("X-Session-Update", &format!("{{\"k{i}\":{i}}}")),
            ];
            TestClient::new().get(&url, &hdrs(&h)).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let session = c.get(&a.url("/"), &[("cookie", &cookie)]).await.session();
    for i in 0..80 {
        assert_eq!(session[format!("k{i}")], json!(i), "{session}");
    }
    // A flush on one is seen by the other.
    let r = c
        .get(
            &b.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "flush"),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        c.get(&a.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({})
    );
    a.stop().await;
    b.stop().await;
}

/// The store's server killed under traffic: reads answer 503, writes 502
/// and nothing is acknowledged that was not written; once it is back,
/// sessiongate serves again without a restart and every acknowledged
/// write is there.
async fn outage_fails_closed_and_recovers(
    store: &str,
    kill: impl FnOnce() + Send + 'static,
    restart: impl FnOnce() + Send + 'static,
) {
    let up = upstream().await;
    let gw = gateway(&store_yaml(store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"n":0}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    let traffic = {
        let url = gw.url("/");
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let c = TestClient::new();
            let (mut acknowledged, mut statuses) = (Vec::new(), Vec::new());
            for i in 0..60 {
                let h = [
                    ("cookie", cookie.clone()),
                    reply("X-Session-Update", &format!("{{\"w{i}\":{i}}}")),
                ];
                let r = c.get(&url, &hdrs(&h)).await;
                if r.status == 200 {
                    acknowledged.push(i);
                }
                statuses.push(r.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acknowledged, statuses)
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    tokio::task::spawn_blocking(kill).await.unwrap();

    let down = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(down.status, 503, "a session that cannot be read");
    assert_eq!(c.get(&gw.admin_url("/readyz"), &[]).await.status, 503);
    assert_eq!(c.get(&gw.url("/"), &[]).await.status, 200, "no cookie");
    let failed = write(&c, &gw, None, r#"{"new":true}"#).await;
    assert_eq!(failed.status, 502, "a write that cannot be stored");
    assert!(failed.headers.get("set-cookie").is_none());

    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(restart).await.unwrap();
    let (acknowledged, statuses) = traffic.await.unwrap();
    assert!(statuses.contains(&503), "the outage was seen: {statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 200, "recovered: {statuses:?}");
    assert_eq!(c.get(&gw.admin_url("/readyz"), &[]).await.status, 200);
    let session = c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session();
    for i in &acknowledged {
        assert_eq!(session[format!("w{i}")], json!(i), "lost w{i}: {session}");
    }
    gw.stop().await;
}

/// `fail_open`: with the server gone the request goes on with an empty
/// session and nothing is written.
async fn outage_fails_open(store: &str, kill: impl FnOnce() + Send + 'static) {
    let up = upstream().await;
    let gw = gateway(&store_yaml(store, "fail_open"), up.addr).await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"user_id":1}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    tokio::task::spawn_blocking(kill).await.unwrap();
    let r = write(&c, &gw, Some(&cookie), r#"{"while_down":true}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.session(), Value::Object(Default::default()));
    assert!(r.headers.get("set-cookie").is_none(), "nothing written");
    gw.stop().await;
}

fn sql_store(kind: &str, url: &str) -> String {
    format!("{{kind: {kind}, url: \"{url}\", timeout: 1s, pool: {{size: 4, timeout: 1s}}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn two_instances_share_postgres() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "share") {
        two_instances_share_sessions(&t.store_yaml()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn two_instances_share_mysql() {
    use sessiongate::config::SqlDialect;
    if let Some(t) = common::db::Table::on(SqlDialect::Mysql, "share") {
        two_instances_share_sessions(&t.store_yaml()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn postgres_killed_under_traffic_fails_closed_and_recovers() {
    if !common::db::can_run_postgres("postgres_killed_under_traffic") {
        return;
    }
    let pg = std::sync::Arc::new(common::db::OwnPostgres::start());
    let store = sql_store("postgres", &pg.url());
    let (a, b) = (pg.clone(), pg.clone());
    outage_fails_closed_and_recovers(&store, move || a.kill(), move || b.up()).await;
    let a = pg.clone();
    outage_fails_open(&store, move || a.kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn mariadb_killed_under_traffic_fails_closed_and_recovers() {
    if !common::db::can_run_mariadb("mariadb_killed_under_traffic") {
        return;
    }
    let db = std::sync::Arc::new(std::sync::Mutex::new(common::db::OwnMariadb::start()));
    let store = sql_store("mysql", &db.lock().unwrap().url());
    let (a, b) = (db.clone(), db.clone());
    outage_fails_closed_and_recovers(
        &store,
        move || a.lock().unwrap().kill(),
        move || b.lock().unwrap().up(),
    )
    .await;
    let a = db.clone();
    outage_fails_open(&store, move || a.lock().unwrap().kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn two_instances_share_memcached() {
    if !common::memcached::available("two_instances_share_memcached") {
        return;
    }
    let (a, b) = (
        common::memcached::Memcached::start(),
        common::memcached::Memcached::start(),
    );
    two_instances_share_sessions(&format!(
        "{{kind: memcached, servers: [{}, {}]}}",
        a.addr(),
        b.addr()
    ))
    .await;
}

/// One of two memcached servers killed under traffic: the sessions on the
/// other keep every acknowledged write; those on the dead one fail
/// (`fail_closed`: 503, or 502 for a write caught by the kill between its
/// read and its save; never a 500, never another session) until it is
/// back, empty: then they read as no session. Every instance keeps sending
/// a key to its own server, so none serves a session another revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn one_of_two_memcached_servers_killed_under_traffic() {
    use std::sync::{Arc, Mutex};
    if !common::memcached::available("one_of_two_memcached_servers_killed") {
        return;
    }
    let a = common::memcached::Memcached::start();
    let b = Arc::new(Mutex::new(common::memcached::Memcached::start()));
    let b_addr = b.lock().unwrap().addr();
    let store = format!(
        "{{kind: memcached, servers: [{}, {b_addr}], timeout: 1s}}",
        a.addr()
    );
    let up = upstream().await;
    let gw = gateway(&store_yaml(&store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let mut cookies = Vec::new();
    for i in 0..16 {
        let r = write(&c, &gw, None, &format!("{{\"user\":{i}}}")).await;
        cookies.push(r.cookie("sessionid").unwrap());
    }
    // Every session written to, before, during and after the kill.
    let traffic = {
        let (url, cookies) = (gw.url("/"), cookies.clone());
        tokio::spawn(async move {
            let c = TestClient::new();
            let mut log = Vec::new();
            for round in 0..12 {
                for (i, cookie) in cookies.iter().enumerate() {
                    let h = [
                        ("cookie", cookie.clone()),
                        reply("X-Session-Update", &format!("{{\"r{round}\":{round}}}")),
                    ];
                    let r = c.get(&url, &hdrs(&h)).await;
                    log.push((i, round, r.status));
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killer = b.clone();
    tokio::task::spawn_blocking(move || killer.lock().unwrap().kill())
        .await
        .unwrap();
    let log = traffic.await.unwrap();
    // 503 for a read of the dead server's sessions; 502 for a write whose
    // read came just before the kill and whose save came after it.
    for (i, round, status) in &log {
        assert!(
            [200, 502, 503].contains(status),
            "session {i} round {round}: {status}"
        );
    }
    // While it is down: each session is served with every acknowledged
    // write, or refused.
    let (mut kept, mut refused) = (Vec::new(), 0);
    for (i, cookie) in cookies.iter().enumerate() {
        let now = c.get(&gw.url("/"), &[("cookie", cookie)]).await;
        match now.status {
            200 => {
                let session = now.session();
                assert_eq!(session["user"], json!(i), "{session}");
                for (_, round, status) in log.iter().filter(|(j, ..)| *j == i) {
                    // The survivor's sessions never saw the outage.
                    assert_eq!(*status, 200, "session {i} round {round}");
                    assert_eq!(session[format!("r{round}")], json!(round), "{session}");
                }
                kept.push(i);
            }
            503 => refused += 1,
            other => panic!("session {i}: {other}"),
        }
    }
    assert!(
        !kept.is_empty() && refused > 0,
        "{} kept, {refused} refused",
        kept.len()
    );
    assert_eq!(
        c.get(&gw.admin_url("/readyz"), &[]).await.status,
        200,
        "one server answers"
    );
    // New sessions: on the survivor they work; on the dead one, 502.
    let mut created = 0;
    for i in 0..16 {
        let r = write(&c, &gw, None, &format!("{{\"new\":{i}}}")).await;
        assert!([200, 502].contains(&r.status), "{}", r.status);
        created += usize::from(r.status == 200);
    }
    assert!(created > 0 && created < 16, "{created} of 16 created");
    let restarter = b.clone();
    tokio::task::spawn_blocking(move || restarter.lock().unwrap().up())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Back, empty: its sessions are gone, the survivor's are all there.
    for (i, cookie) in cookies.iter().enumerate() {
        let now = c.get(&gw.url("/"), &[("cookie", cookie)]).await;
        assert_eq!(now.status, 200);
        let session = now.session();
        if kept.contains(&i) {
            assert_eq!(session["user"], json!(i), "{session}");
        } else {
            assert_eq!(session, json!({}), "a lost session reads as none");
        }
    }
    for i in 0..16 {
        let r = write(&c, &gw, None, &format!("{{\"later\":{i}}}")).await;
        assert_eq!(r.status, 200);
        let cookie = r.cookie("sessionid").unwrap();
        assert_eq!(
            c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session(),
            json!({ "later": i })
        );
    }
    assert!(
        b.lock().unwrap().items() > 0,
        "the server that came back is used again"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn cached_over_postgres_killed_under_traffic_fails_closed_and_recovers() {
    if !common::db::can_run_postgres("cached_over_postgres_killed") {
        return;
    }
    let pg = std::sync::Arc::new(common::db::OwnPostgres::start());
    let store = format!(
        "{{kind: cached, durable: {}}}",
        sql_store("postgres", &pg.url())
    );
    let (a, b) = (pg.clone(), pg.clone());
    outage_fails_closed_and_recovers(&store, move || a.kill(), move || b.up()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn cached_over_redis_killed_under_traffic_fails_closed_and_recovers() {
    use std::sync::{Arc, Mutex};
    if !common::redis::available("cached_over_redis_killed") {
        return;
    }
    let server = Arc::new(Mutex::new(common::redis::RedisServer::start_durable()));
    let url = server.lock().unwrap().url();
    let store = format!("{{kind: cached, durable: {{kind: redis, url: \"{url}\", timeout: 1s}}}}");
    let (a, b) = (server.clone(), server.clone());
    outage_fails_closed_and_recovers(
        &store,
        move || a.lock().unwrap().kill(),
        move || b.lock().unwrap().restart(),
    )
    .await;
}

/// Redis stalls (SIGSTOP) with a session in the local cache: a read of it
/// waits for the barrier's round trip, which the channel's timeout ends;
/// the read then finds the cache off and answers 503 within about two
/// timeouts, and reads are served again once Redis goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn cached_over_redis_stalled_answers_within_the_timeout() {
    if !common::redis::available("cached_over_redis_stalled") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let store = format!(
        "{{kind: cached, durable: {{kind: redis, url: \"{}\", timeout: 500ms}}}}",
        server.url()
    );
    let up = upstream().await;
    let gw = gateway(&store_yaml(&store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"n":1}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    // Wait for the cache to come on, then read the session into it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let hits = || {
        let c = TestClient::new();
        let url = gw.admin_url("/metrics");
        async move {
            let body = c.get(&url, &[]).await.text();
            metric_value(&body, "sessiongate_session_cache_hits").unwrap_or(0.0)
        }
    };
    while hits().await == 0.0 {
        assert!(std::time::Instant::now() < deadline, "no cache hit");
        let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(r.session(), json!({"n": 1}));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.pause();
    let started = std::time::Instant::now();
    let stalled = tokio::time::timeout(
        Duration::from_secs(5),
        c.get(&gw.url("/"), &[("cookie", &cookie)]),
    )
    .await
    .expect("a read waited on a stalled channel with no end");
    let took = started.elapsed();
    assert_eq!(stalled.status, 503, "the session cannot be checked");
    assert!(took < Duration::from_millis(2500), "answered in {took:?}");

    server.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
        if r.status == 200 {
            assert_eq!(r.session(), json!({"n": 1}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not back: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}
