//! sessiongate on Redis, end to end: several instances sharing one Redis
//! (standalone, Cluster, Sentinel), and Redis dying under traffic.

mod common;

use common::redis::{Cluster, RedisServer, Sentinel, available};
use common::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn standalone(url: &str) -> String {
    format!("{{kind: redis, url: \"{url}\", key_prefix: \"e2e:\", timeout: 1s}}")
}

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
    assert_eq!(
        write(&c, &b, Some(&cookie), r#"{"via":"b"}"#).await.status,
        200
    );
    assert_eq!(
        c.get(&a.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({"user_id": 1, "via": "b"})
    );

    // 2 x 40 concurrent writes of different keys through both instances.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let r = TestClient::new()
                .get(
                    &url,
                    &hdrs(&[
                        ("cookie", cookie),
                        reply("X-Session-Update", &format!("{{\"k{i}\":{i}}}")),
                    ]),
                )
                .await;
            assert_eq!(r.status, 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = c.get(&b.url("/"), &[("cookie", &cookie)]).await.session();
    assert_eq!(s.as_object().unwrap().len(), 82, "{s}");

    // A logout through one instance is seen by the other.
    let out = c
        .get(
            &b.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "flush"),
            ]),
        )
        .await;
    assert!(out.set_cookie("sessionid").unwrap().contains("Max-Age=0"));
    assert_eq!(
        c.get(&a.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({})
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_instances_share_sessions_on_standalone_redis() {
    if !available("two_instances_share_sessions_on_standalone_redis") {
        return;
    }
    let server = RedisServer::start();
    two_instances_share_sessions(&standalone(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_instances_share_sessions_on_redis_cluster() {
    if !available("two_instances_share_sessions_on_redis_cluster") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let store = format!(
        "{{kind: redis, cluster: {}, timeout: 2s}}",
        cluster.yaml_nodes()
    );
    two_instances_share_sessions(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_instances_share_sessions_through_sentinel() {
    if !available("two_instances_share_sessions_through_sentinel") {
        return;
    }
    let sentinel = tokio::task::spawn_blocking(Sentinel::start).await.unwrap();
    let store = format!(
        "{{kind: redis, sentinel: {{master: mymaster, nodes: [\"{}\"]}}, timeout: 2s}}",
        sentinel.sentinel.url()
    );
    two_instances_share_sessions(&store).await;
    let stats = sentinel.master.cli(&["info", "commandstats"]);
    assert!(
        stats.contains("cmdstat_evalsha"),
        "sessions were written to the master the sentinel named:\n{stats}"
    );
}

async fn metric(c: &TestClient, gw: &Gateway, needle: &str) -> Option<u64> {
    let text = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_outage_fails_closed_and_recovers_without_losing_writes() {
    if !available("redis_outage_fails_closed_and_recovers_without_losing_writes") {
        return;
    }
    let mut server = RedisServer::start_durable();
    let up = upstream().await;
    let gw = gateway(
        &store_yaml(&standalone(&server.url()), "fail_closed"),
        up.addr,
    )
    .await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"n":0}"#)
        .await
        .cookie("sessionid")
        .unwrap();

    // Traffic before, during and after the outage; remember what was answered 200.
    let traffic = {
        let url = gw.url("/");
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let c = TestClient::new();
            let mut acknowledged = Vec::new();
            let mut statuses = Vec::new();
            for i in 0..60 {
                let r = c
                    .get(
                        &url,
                        &hdrs(&[
                            ("cookie", cookie.clone()),
                            reply("X-Session-Update", &format!("{{\"w{i}\":{i}}}")),
                        ]),
                    )
                    .await;
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
    server.kill();

    let hits = up.hits.load(Ordering::SeqCst);
    let down = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(
        down.status, 503,
        "a session that cannot be read is not forwarded"
    );
    assert_eq!(c.get(&gw.admin_url("/readyz"), &[]).await.status, 503);
    let anon = c.get(&gw.url("/"), &[]).await;
    assert_eq!(anon.status, 200, "a request without a cookie needs no read");
    let failed_write = write(&c, &gw, None, r#"{"new":true}"#).await;
    assert_eq!(
        failed_write.status, 502,
        "a write that fails after the upstream answered"
    );
    assert!(failed_write.text().contains("session"));
    assert!(failed_write.headers.get("set-cookie").is_none());
    assert!(
        metric(
            &c,
            &gw,
            "sessiongate_session_events_total{event=\"store_write_failed\"}"
        )
        .await
        .unwrap()
            >= 1
    );
    assert!(
        metric(&c, &gw, "sessiongate_store_errors_total{op=\"load\"}")
            .await
            .unwrap()
            >= 1
    );
    assert!(
        up.hits.load(Ordering::SeqCst) <= hits + 3,
        "only the cookie-less requests reached the upstream"
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    server.restart();
    let (acknowledged, statuses) = traffic.await.unwrap();
    assert!(statuses.contains(&503), "the outage was seen: {statuses:?}");
    assert_eq!(
        *statuses.last().unwrap(),
        200,
        "recovered by itself: {statuses:?}"
    );
    assert_eq!(c.get(&gw.admin_url("/readyz"), &[]).await.status, 200);
    let session = c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session();
    for i in &acknowledged {
        assert_eq!(
            session[format!("w{i}")],
            json!(i),
            "acknowledged write {i} missing: {session}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_outage_fails_open_with_an_empty_session_and_writes_nothing() {
    if !available("redis_outage_fails_open_with_an_empty_session_and_writes_nothing") {
        return;
    }
    let mut server = RedisServer::start_durable();
    let up = upstream().await;
    let gw = gateway(
        &store_yaml(&standalone(&server.url()), "fail_open"),
        up.addr,
    )
    .await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"user_id":1}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    server.kill();

    let r = write(&c, &gw, Some(&cookie), r#"{"while_down":true}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.session(),
        Value::Object(Default::default()),
        "forwarded with an empty session"
    );
    assert!(r.headers.get("set-cookie").is_none(), "nothing written");
    let fresh = write(&c, &gw, None, r#"{"new":1}"#).await;
    assert_eq!(
        fresh.status, 200,
        "a failed write is dropped under fail_open"
    );
    assert!(fresh.headers.get("set-cookie").is_none());
    assert!(
        metric(
            &c,
            &gw,
            "sessiongate_session_events_total{event=\"dropped\"}"
        )
        .await
        .unwrap()
            >= 2
    );

    server.restart();
    let mut session = Value::Null;
    for _ in 0..50 {
        let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
        session = r.session();
        if session != json!({}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        session,
        json!({"user_id": 1}),
        "the session is back, without the write made while down"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn sentinel_failover_is_followed_without_a_restart() {
    if !available("sentinel_failover_is_followed_without_a_restart") {
        return;
    }
    let mut setup = tokio::task::spawn_blocking(Sentinel::start).await.unwrap();
    let store = format!(
        "{{kind: redis, sentinel: {{master: mymaster, nodes: [\"{}\"]}}, timeout: 1s}}",
        setup.sentinel.url()
    );
    let up = upstream().await;
    let gw = gateway(&store_yaml(&store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = write(&c, &gw, None, r#"{"user_id":7}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    // WAIT would only vouch for this redis-cli connection's own writes (none):
    // the replica itself must hold the session before the master dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while setup.replica.cli(&["dbsize"]).trim() == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    setup.master.kill();
    let replica_port = setup.replica.port.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let named = setup
            .sentinel
            .cli(&["sentinel", "get-master-addr-by-name", "mymaster"]);
        if named.contains(&replica_port) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sentinel did not fail over: {named}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The session that reached the replica is served by it once promoted.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
        if r.status == 200 && r.session() == json!({"user_id": 7}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the promoted replica never served the session: {} {}\nreplica keys: {}\nreplication: {}\nreplica log: {}\nsentinel log: {}",
            r.status,
            r.text(),
            setup.replica.cli(&["keys", "*"]),
            setup.replica.cli(&["info", "replication"]),
            setup.replica.log(),
            setup.sentinel.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut last = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let r = write(&c, &gw, Some(&cookie), r#"{"after":true}"#).await;
        last = r.status;
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, 200, "writes go to the promoted replica");
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({"user_id": 7, "after": true})
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn sentinel_master_with_a_password() {
    if !available("sentinel_master_with_a_password") {
        return;
    }
    const PASSWORD: &str = "master-password-0123456789";
    let setup = tokio::task::spawn_blocking(|| Sentinel::start_with_password(Some(PASSWORD)))
        .await
        .unwrap();
    let store = |password: &str| {
        format!(
            "{{kind: redis, sentinel: {{master: mymaster, nodes: [\"{}\"]{password}}}, timeout: 1s}}",
            setup.sentinel.url()
        )
    };
    let up = upstream().await;
    let c = TestClient::new();
    let gw = gateway(
        &store_yaml(
            &store(&format!(", password: \"{PASSWORD}\"")),
            "fail_closed",
        ),
        up.addr,
    )
    .await;
    let cookie = write(&c, &gw, None, r#"{"user_id":1}"#)
        .await
        .cookie("sessionid")
        .unwrap();
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({"user_id": 1})
    );
    assert!(setup.master.cli(&["dbsize"]).trim() != "0");
    gw.stop().await;

    // Without the password the master refuses: the write fails after the upstream answered.
    let gw = gateway(&store_yaml(&store(""), "fail_closed"), up.addr).await;
    assert_eq!(write(&c, &gw, None, r#"{"user_id":2}"#).await.status, 502);
    gw.stop().await;
}
