//! Every Redis write is all-or-nothing, and what the client is told is what
//! happened: a cycle under Redis OOM keeps the old session, a write that a
//! stalled Redis runs after the client was told it failed is refused, and a
//! client that hangs up mid-write does not cut the write in two.

mod common;

use common::redis::{Cluster, RedisServer, available};
use common::*;
use serde_json::{Value, json};
use sessiongate::session::cookie::CookieCodec;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const PREFIX: &str = "atomic:";

fn standalone(server: &RedisServer, timeout: &str) -> String {
    format!(
        "{{kind: redis, url: \"{}\", key_prefix: \"{PREFIX}\", timeout: {timeout}}}",
        server.url()
    )
}

fn cluster_store(cluster: &Cluster) -> String {
    format!(
        "{{kind: redis, cluster: {}, key_prefix: \"{PREFIX}\", timeout: 2s}}",
        cluster.yaml_nodes()
    )
}

/// The Redis key of the session a `name=value` cookie names.
fn key_of(cookie: &str) -> String {
    let value = cookie.split_once('=').unwrap().1;
    let id = CookieCodec::parse(value).expect("a session cookie").0;
    format!("{PREFIX}{{{}}}", id.encode())
}

async fn send(
    c: &TestClient,
    gw: &Gateway,
    cookie: Option<&str>,
    replies: &[(&str, &str)],
) -> Reply {
    let mut h: Vec<(&'static str, String)> = replies.iter().map(|(k, v)| reply(k, v)).collect();
    if let Some(cookie) = cookie {
        h.push(("cookie", cookie.to_string()));
    }
    c.get(&gw.url("/"), &hdrs(&h)).await
}

async fn login(c: &TestClient, gw: &Gateway) -> String {
    let r = send(
        c,
        gw,
        None,
        &[("X-Session-Update", r#"{"user_id":1,"cart":[1]}"#)],
    )
    .await;
    assert_eq!(r.status, 200);
    r.cookie("sessionid").unwrap()
}

async fn session_of(c: &TestClient, gw: &Gateway, cookie: &str) -> Value {
    let r = c.get(&gw.url("/"), &[("cookie", cookie)]).await;
    assert_eq!(r.status, 200);
    r.session()
}

/// Redis past `maxmemory` (with the default `noeviction`) refuses writes
/// and still deletes: a cycle must not delete the old session and then
/// fail to write the new one.
async fn cycle_under_oom_keeps_the_old_session(store: &str, nodes: &[&RedisServer]) {
    let up = upstream().await;
    let gw = gateway(&store_yaml(store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = login(&c, &gw).await;
    for n in nodes {
        assert!(n.cli(&["config", "set", "maxmemory", "1"]).contains("OK"));
    }
    let cycle = [
        ("X-Session-Action", "cycle"),
        ("X-Session-Update", r#"{"user_id":2}"#),
    ];
    let r = send(&c, &gw, Some(&cookie), &cycle).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.set_cookie("sessionid"), None);
    // Reads still work under OOM: the old session is whole.
    assert_eq!(
        session_of(&c, &gw, &cookie).await,
        json!({"user_id": 1, "cart": [1]})
    );
    for n in nodes {
        assert!(n.cli(&["config", "set", "maxmemory", "0"]).contains("OK"));
    }
    let r = send(&c, &gw, Some(&cookie), &cycle).await;
    assert_eq!(r.status, 200);
    let new = r.cookie("sessionid").unwrap();
    assert_eq!(
        session_of(&c, &gw, &new).await,
        json!({"user_id": 2, "cart": [1]})
    );
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({}), "old id dead");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_cycle_during_redis_oom_keeps_the_old_session() {
    if !available("a_cycle_during_redis_oom_keeps_the_old_session") {
        return;
    }
    let server = RedisServer::start();
    cycle_under_oom_keeps_the_old_session(&standalone(&server, "1s"), &[&server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_cycle_during_redis_cluster_oom_keeps_the_old_session() {
    if !available("a_cycle_during_redis_cluster_oom_keeps_the_old_session") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
    cycle_under_oom_keeps_the_old_session(&cluster_store(&cluster), &nodes).await;
}

/// A stalled Redis runs the scripts queued on its connections once it
/// goes on, long after sessiongate answered 502 for them: each refuses by
/// Redis's own clock, so a write the client was told failed never lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_write_answered_502_by_the_timeout_is_never_applied_later() {
    if !available("a_write_answered_502_by_the_timeout_is_never_applied_later") {
        return;
    }
    let server = RedisServer::start();
    let up = upstream().await;
    let gw = gateway(
        &store_yaml(&standalone(&server, "300ms"), "fail_closed"),
        up.addr,
    )
    .await;
    let c = TestClient::new();
    let cookie = login(&c, &gw).await;

    // The session is read before Redis stalls; the upstream answers (and
    // the write-back starts) while it is stalled.
    let update = {
        let (c, url, cookie) = (TestClient::new(), gw.url("/"), cookie.clone());
        tokio::spawn(async move {
            let h = [
                ("cookie", cookie),
                (REPLY_DELAY_MS, "400".to_string()),
                reply("X-Session-Update", r#"{"late":true}"#),
            ];
            c.get(&url, &hdrs(&h)).await.status
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.pause();
    let create = send(&c, &gw, None, &[("X-Session-Update", r#"{"orphan":true}"#)]).await;
    assert_eq!(update.await.unwrap(), 502, "the update timed out");
    assert_eq!(create.status, 502, "the create timed out");
    server.resume();
    // Redis runs what queued; the scripts refuse it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        session_of(&c, &gw, &cookie).await,
        json!({"user_id": 1, "cart": [1]}),
        "the 502'd update did not land"
    );
    assert_eq!(server.cli(&["dbsize"]).trim(), "1", "no orphan session");
    gw.stop().await;
}

/// Cluster puts a cycled session in another slot, so a cycle is steps;
/// a client that hangs up while they run must not leave the session half
/// moved (marked, never copied, then expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_client_that_hangs_up_mid_cycle_does_not_cut_the_cycle() {
    if !available("a_client_that_hangs_up_mid_cycle_does_not_cut_the_cycle") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let up = upstream().await;
    let gw = gateway(
        &store_yaml(&cluster_store(&cluster), "fail_closed"),
        up.addr,
    )
    .await;
    let c = TestClient::new();
    let cookie = login(&c, &gw).await;
    let old_key = key_of(&cookie);

    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /login HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\n{REPLY_DELAY_MS}: 300\r\n\
         {REPLY_HEADER}: X-Session-Action: cycle\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // Redis stalls before the upstream answers, so the write-back is under
    // way, waiting on its first step, when the client hangs up.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for n in &cluster.nodes {
        n.pause();
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in &cluster.nodes {
        n.resume();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let exists = |key: &str| -> bool {
        cluster.nodes[0]
            .cli(&["-c", "exists", key])
            .trim()
            .ends_with('1')
    };
    assert!(!exists(&old_key), "the cycle finished: the old id is gone");
    let keys: usize = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["dbsize"]).trim().parse::<usize>().unwrap())
        .sum();
    assert_eq!(keys, 1, "the session lives on under its new id");
    gw.stop().await;
}

/// With `replicas_ack`, a write is acknowledged only once that many
/// replicas hold it (Redis `WAIT`), so a failover cannot lose it; a replica
/// that does not confirm in time makes the write fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn with_replicas_ack_a_write_no_replica_confirms_is_refused() {
    if !available("with_replicas_ack_a_write_no_replica_confirms_is_refused") {
        return;
    }
    let setup = tokio::task::spawn_blocking(common::redis::Sentinel::start)
        .await
        .unwrap();
    let store = format!(
        "{{kind: redis, url: \"{}\", key_prefix: \"{PREFIX}\", timeout: 500ms, replicas_ack: 1}}",
        setup.master.url()
    );
    let up = upstream().await;
    let gw = gateway(&store_yaml(&store, "fail_closed"), up.addr).await;
    let c = TestClient::new();
    let cookie = login(&c, &gw).await;
    setup.replica.pause();
    let r = send(
        &c,
        &gw,
        Some(&cookie),
        &[("X-Session-Update", r#"{"b":1}"#)],
    )
    .await;
    assert_eq!(r.status, 502, "no replica confirmed the write");
    setup.replica.resume();
    let r = send(
        &c,
        &gw,
        Some(&cookie),
        &[("X-Session-Update", r#"{"c":1}"#)],
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}
