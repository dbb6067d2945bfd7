//! `kind: cached`: the conformance suite over each durable store, reads
//! served from the local cache, and two instances that never serve each
//! other's stale copies: a write, flush, cycle or revocation on one,
//! followed at once by a read on the other, a thousand times.

#![recursion_limit = "256"]

mod common;

include!("suite/conformance.rs");

use common::*;
use sessiongate::config::{CachedConfig, SqlDialect, StoreConfig};
use sessiongate::store::cached::CachedStore;
use std::time::{Duration, Instant};

/// Opens a cached store and waits for its invalidation channel (until
/// then every read goes to the durable store).
async fn open(durable: StoreConfig) -> CachedStore {
    let cfg = CachedConfig {
        max_sessions: 10_000,
        durable: Box::new(durable),
    };
    let store = CachedStore::open(&cfg).await.unwrap();
    if store.durable_kind() == "embedded" {
        // Over the embedded file the local cache stays off (see cached.rs).
        return store;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.cache().enabled() {
        assert!(Instant::now() < deadline, "the cache never came on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}

fn redis_store(url: &str, prefix: &str) -> StoreConfig {
    StoreConfig::Redis(sessiongate::config::RedisConfig {
        topology: sessiongate::config::RedisTopology::Standalone {
            url: url.to_string(),
        },
        key_prefix: prefix.to_string(),
        timeout: Duration::from_secs(5),
        ca_pem: None,
        replicas_ack: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn cached_over_postgres_conformance() {
    if !common::db::available(SqlDialect::Postgres, "cached_over_postgres_conformance") {
        return;
    }
    let mut tables = Vec::new();
    whole_suite(
        || {
            let table = common::db::table("cached");
            tables.push(table.clone());
            let cfg = common::db::config(SqlDialect::Postgres, common::db::POSTGRES_URL, &table);
            async move { open(StoreConfig::Sql(cfg)).await }
        },
        false,
    )
    .await;
    // Two instances' caches over one table: merges through both, none lost.
    let table = common::db::table("cached_across");
    tables.push(table.clone());
    let cfg = common::db::config(SqlDialect::Postgres, common::db::POSTGRES_URL, &table);
    concurrent_merges_across(
        open(StoreConfig::Sql(cfg.clone())).await,
        open(StoreConfig::Sql(cfg)).await,
        200,
    )
    .await;
    common::db::drop_tables(SqlDialect::Postgres, &tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn cached_over_redis_conformance() {
    if !common::redis::available("cached_over_redis_conformance") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let url = server.url();
    let mut n = 0;
    whole_suite(
        || {
            n += 1;
            let cfg = redis_store(&url, &format!("cached{n}:"));
            async move { open(cfg).await }
        },
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_over_embedded_conformance() {
    whole_suite(
        || {
            let dir = common::redis::temp_dir("cached-embedded");
            async move {
                open(StoreConfig::Embedded {
                    path: dir.join("s.db"),
                    max_sessions: 100_000,
                })
                .await
            }
        },
        false,
    )
    .await;
}

/// A second read is the cache's: a row changed with the table's trigger
/// off (no notification) is not seen; any write with it on (through a
/// cached store, or by anyone else) is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn reads_are_served_from_the_cache() {
    use sessiongate::record::{SessionData, SessionId, SessionRecord};
    use sessiongate::store::ServerStore;
    let Some(t) = common::db::Table::on(SqlDialect::Postgres, "hits") else {
        return;
    };
    let (table, cfg) = (&t.name, t.config());
    let (a, b) = (
        open(StoreConfig::Sql(cfg.clone())).await,
        open(StoreConfig::Sql(cfg)).await,
    );
    let now = sessiongate::record::now_ms();
    let id = SessionId::generate();
    let mut r = SessionRecord::new("sid-hits".into(), now);
    r.data = SessionData::from_map(json!({"v": 1}).as_object().unwrap());
    r.expires_ms = now + 100_000;
    ServerStore::create(&a, &id, &r).await.unwrap();
    assert_eq!(b.cache().len(), 0);
    let data = |r: Option<Arc<SessionRecord>>| Value::Object(r.unwrap().data.to_map());
    assert_eq!(
        data(ServerStore::load(&b, &id, now).await.unwrap()),
        json!({"v": 1})
    );
    assert_eq!(b.cache().len(), 1, "the miss filled the cache");
    // Behind its back: the cache answers.
    let psql = |sql: &str| {
        common::process::succeeded(&mut common::db::client(
            SqlDialect::Postgres,
            &[sql.to_string()],
        ));
    };
    psql(&format!(
        "BEGIN; ALTER TABLE {table} DISABLE TRIGGER {table}_changed; \
         UPDATE {table} SET data = '{{\"v\": 99}}'; \
         ALTER TABLE {table} ENABLE TRIGGER {table}_changed; COMMIT"
    ));
    assert_eq!(
        data(ServerStore::load(&b, &id, now).await.unwrap()),
        json!({"v": 1})
    );
    assert!(b.cache().hits() >= 1);
    // Another writer of the table (the trigger on): seen.
    psql(&format!("UPDATE {table} SET data = '{{\"v\": 98}}'"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while data(ServerStore::load(&b, &id, now).await.unwrap()) != json!({"v": 98}) {
        assert!(Instant::now() < deadline, "a plain UPDATE was never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A write through `a` notifies `b`.
    let patch = [json!({"v": 2}).as_object().unwrap().clone()];
    let op = SaveOp {
        change: Change {
            patches: &patch,
            expiry_s: None,
        },
        cycle_to: None,
        now_ms: now,
        policy: POLICY,
        expect: None,
        base: None,
    };
    ServerStore::save(&a, &id, &op).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = data(ServerStore::load(&b, &id, now).await.unwrap());
        if v == json!({"v": 2}) {
            break;
        }
        assert!(Instant::now() < deadline, "never invalidated: {v}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_ready(c: &TestClient, gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(&gw.admin_url("/readyz"), &[]).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two instances on one durable store. Each round reads the session on
/// `b` (so `b` caches it), changes it on `a`, and reads it on `b` at once:
/// `b` must see the change. A write, then a flush, a cycle and a
/// revocation in turn; a thousand rounds, no stale read.
async fn coherence(store: &str) {
    let up = upstream().await;
    let a = gateway(&managed_yaml(store), up.addr).await;
    let b = gateway(&managed_yaml(store), up.addr).await;
    let c = TestClient::new();
    wait_ready(&c, &a).await;
    wait_ready(&c, &b).await;
    // The caches come on once their channels are up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let login = |i: usize| {
        let url = a.url("/");
        let c = &c;
        async move {
            let h = [reply(
                "X-Session-Update",
                &json!({"user_id": format!("u{i}"), "n": 0}).to_string(),
            )];
            c.get(&url, &hdrs(&h)).await.cookie("sessionid").unwrap()
        }
    };
    let mut stale = Vec::new();
    let mut cookie = login(0).await;
    for i in 1..=1000usize {
        let before = c.get(&b.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(before.status, 200);
        match i % 4 {
            0 => {
                // A revocation of the subject through `a`'s admin.
                let subject = before.session()["user_id"].as_str().unwrap().to_string();
                let r = c
                    .send(
                        http::Request::delete(a.admin_url(&format!("/sessions?subject={subject}")))
                            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .unwrap(),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                let after = c.get(&b.url("/"), &[("cookie", &cookie)]).await.session();
                if after != json!({}) {
                    stale.push((i, "revoke", after));
                }
                cookie = login(i).await;
            }
            1 => {
                let h = [
                    ("cookie", cookie.clone()),
                    reply("X-Session-Update", &json!({ "n": i }).to_string()),
                ];
                assert_eq!(c.get(&a.url("/"), &hdrs(&h)).await.status, 200);
                let after = c.get(&b.url("/"), &[("cookie", &cookie)]).await.session();
                if after["n"] != json!(i) {
                    stale.push((i, "write", after));
                }
            }
            2 => {
                let h = [
                    ("cookie", cookie.clone()),
                    reply("X-Session-Action", "cycle"),
                ];
                let r = c.get(&a.url("/"), &hdrs(&h)).await;
                let old = std::mem::replace(&mut cookie, r.cookie("sessionid").unwrap());
                let after = c.get(&b.url("/"), &[("cookie", &old)]).await.session();
                if after != json!({}) {
                    stale.push((i, "cycle", after));
                }
            }
            _ => {
                let h = [
                    ("cookie", cookie.clone()),
                    reply("X-Session-Action", "flush"),
                ];
                assert_eq!(c.get(&a.url("/"), &hdrs(&h)).await.status, 200);
                let after = c.get(&b.url("/"), &[("cookie", &cookie)]).await.session();
                if after != json!({}) {
                    stale.push((i, "flush", after));
                }
                cookie = login(i).await;
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale reads: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    // And `b` did serve from its cache: the read before each cycle finds
    // the copy the read after the write before it cached (250 rounds; the
    // other reads before a change are of sessions `b` has not read yet).
    let metrics = c.get(&b.admin_url("/metrics"), &[]).await.text();
    let hits = metric_value(&metrics, "sessiongate_session_cache_hits")
        .unwrap_or_else(|| panic!("no cache hits metric:\n{metrics}"));
    assert!(hits >= 250.0, "{hits} reads from b's cache");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn two_instances_over_postgres_never_serve_stale() {
    if let Some(t) = common::db::Table::on(SqlDialect::Postgres, "coherent") {
        coherence(&format!("{{kind: cached, durable: {}}}", t.store_yaml())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn two_instances_over_redis_never_serve_stale() {
    if !common::redis::available("cached_coherence_redis") {
        return;
    }
    let server = common::redis::RedisServer::start();
    coherence(&format!(
        "{{kind: cached, durable: {{kind: redis, url: \"{}\"}}}}",
        server.url()
    ))
    .await;
}
