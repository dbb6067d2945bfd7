//! The index of subjects, at the store level: one suite that every
//! server-side store passes (memory, embedded, Redis standalone and
//! Cluster). The clock is the `now` argument.

use serde_json::{Value, json};
use sessiongate::record::{Change, IndexEntry, Policy, SessionData, SessionId, SessionRecord};
use sessiongate::store::{Expect, INDEX_GRACE_MS, Revoked, SaveOp, SaveOutcome, ServerStore};
use std::time::Duration;

mod common;

const KEY: &str = "user_id";
/// A day: long enough for the grace period of the index to pass within it.
const POLICY: Policy = Policy {
    ttl_s: 86_400,
    absolute_ttl_s: None,
    expire_at_browser_close: false,
    max_bytes: 65_536,
};

fn record(data: Value, sid: &str, now: u64) -> SessionRecord {
    let mut r = SessionRecord::new(sid.to_string(), now);
    r.data = SessionData::from_map(data.as_object().unwrap());
    r.expires_ms = now + POLICY.ttl_s * 1000;
    r
}

/// Creates a session as the pipeline does: indexed first, then written.
async fn login<S: ServerStore>(s: &S, subject: Value, sid: &str, now: u64) -> SessionId {
    let id = SessionId::generate();
    let r = record(json!({ KEY: subject, "k": 1 }), sid, now);
    let subject = match &r.data.fields().get(KEY).unwrap().get() {
        t if t.starts_with('"') => serde_json::from_str::<String>(t).unwrap(),
        t => t.to_string(),
    };
    let entry = IndexEntry {
        id,
        sid: sid.to_string(),
        created_ms: now,
    };
    s.create_indexed(&subject, &entry, &r, now).await.unwrap();
    id
}

fn sids(listed: &[sessiongate::record::Listed]) -> Vec<String> {
    let mut v: Vec<String> = listed.iter().map(|l| l.sid.clone()).collect();
    v.sort();
    v
}

fn save_op<'a>(
    patches: &'a [serde_json::Map<String, Value>],
    cycle_to: Option<(SessionId, String)>,
    expect: Option<Expect<'a>>,
    now: u64,
) -> SaveOp<'a> {
    SaveOp {
        change: Change {
            patches,
            expiry_s: None,
        },
        cycle_to,
        now_ms: now,
        policy: POLICY,
        expect,
        base: None,
    }
}

/// Ids at both ends of the key space, and subjects that share a prefix,
/// each in its own subject's index and no other.
async fn edges<S: ServerStore>(s: &S, t0: u64) {
    for (subject, first, sid) in [
        ("edge", 0x00u8, "sid-edge-00"),
        ("edge", 0xFF, "sid-edge-ff"),
        ("edge2", 0xFF, "sid-edge2-ff"),
        ("edg", 0xFF, "sid-edg-ff"),
    ] {
        let mut bytes = [first; 16];
        bytes[15] = sid.len() as u8;
        let id = SessionId::from_bytes(bytes);
        let r = record(json!({ KEY: subject }), sid, t0);
        let entry = IndexEntry {
            id,
            sid: sid.to_string(),
            created_ms: t0,
        };
        s.create_indexed(subject, &entry, &r, t0).await.unwrap();
    }
    assert_eq!(
        sids(&s.indexed(KEY, "edge", t0 + 1).await.unwrap()),
        ["sid-edge-00", "sid-edge-ff"]
    );
    assert_eq!(
        sids(&s.indexed(KEY, "edge2", t0 + 1).await.unwrap()),
        ["sid-edge2-ff"]
    );
    assert_eq!(
        sids(&s.indexed(KEY, "edg", t0 + 1).await.unwrap()),
        ["sid-edg-ff"]
    );
}

/// Every behaviour of the index, against one store. `tombstones`: a
/// cycle leaves one naming the new id; `entries`: the index keeps entries
/// apart from the sessions (all but the SQL stores, whose index is a column
/// of the session's own row, written with it).
async fn suite<S: ServerStore>(s: S, t0: u64, tombstones: bool, entries: bool) {
    edges(&s, t0).await;
    // Listing: strings and numbers are subjects; each session once.
    let a1 = login(&s, json!("alice"), "sid-a1", t0).await;
    let a2 = login(&s, json!("alice"), "sid-a2", t0 + 1).await;
    let n7 = login(&s, json!(7), "sid-n7", t0 + 2).await;
    let listed = s.indexed(KEY, "alice", t0 + 10).await.unwrap();
    assert_eq!(sids(&listed), ["sid-a1", "sid-a2"]);
    let one = listed.iter().find(|l| l.sid == "sid-a1").unwrap();
    assert_eq!(one.id, a1);
    assert_eq!(one.created_ms, t0);
    assert_eq!(one.expires_ms, t0 + POLICY.ttl_s * 1000);
    assert_eq!(
        sids(&s.indexed(KEY, "7", t0 + 10).await.unwrap()),
        ["sid-n7"]
    );

    // A session whose subject changes moves to the other subject.
    let patch = [json!({ KEY: "bob" }).as_object().unwrap().clone()];
    let entry = IndexEntry {
        id: a2,
        sid: "sid-a2".into(),
        created_ms: t0 + 1,
    };
    let op = save_op(&patch, None, None, t0 + 20);
    let (_, out) = s.save_indexed("bob", &entry, &a2, &op).await.unwrap();
    assert!(matches!(out, SaveOutcome::Saved { .. }));
    assert_eq!(
        sids(&s.indexed(KEY, "alice", t0 + 30).await.unwrap()),
        ["sid-a1"]
    );
    assert_eq!(
        sids(&s.indexed(KEY, "bob", t0 + 30).await.unwrap()),
        ["sid-a2"]
    );

    // A revocation deletes only a session that still has the subject.
    assert_eq!(
        s.revoke(&a2, KEY, "alice", t0 + 40).await.unwrap(),
        Revoked::Other
    );
    assert!(s.load(&a2, t0 + 40).await.unwrap().is_some());
    assert_eq!(
        s.revoke(&n7, KEY, "7", t0 + 40).await.unwrap(),
        Revoked::Deleted
    );
    assert!(s.load(&n7, t0 + 40).await.unwrap().is_none());
    assert_eq!(
        s.revoke(&n7, KEY, "7", t0 + 40).await.unwrap(),
        Revoked::Gone
    );

    // A save on a revoked session resurrects nothing.
    let p = [json!({"k": 2}).as_object().unwrap().clone()];
    assert!(matches!(
        s.save(&n7, &save_op(&p, None, None, t0 + 50))
            .await
            .unwrap(),
        SaveOutcome::Gone
    ));

    // sids: found while the session lives, not after.
    assert_eq!(s.find_sid("sid-a1", t0 + 50).await.unwrap(), Some(a1));
    assert_eq!(s.find_sid("sid-n7", t0 + 50).await.unwrap(), None);
    assert_eq!(s.find_sid("no-such-sid", t0 + 50).await.unwrap(), None);

    // A cycle whose result has another subject than the one its new id was
    // indexed under writes nothing and says which subject it has.
    let new = SessionId::generate();
    let none: [serde_json::Map<String, Value>; 0] = [];
    let wrong = Expect {
        key: KEY,
        subject: Some("mallory"),
    };
    match s
        .save(
            &a1,
            &save_op(&none, Some((new, "sid-a1b".into())), Some(wrong), t0 + 60),
        )
        .await
        .unwrap()
    {
        SaveOutcome::Reindex(actual) => assert_eq!(actual.as_deref(), Some("alice")),
        other => panic!("expected Reindex, got {other:?}"),
    }
    assert!(s.load(&a1, t0 + 60).await.unwrap().is_some());
    assert!(s.load(&new, t0 + 60).await.unwrap().is_none());
    let right = Expect {
        key: KEY,
        subject: Some("alice"),
    };
    let entry = IndexEntry {
        id: new,
        sid: "sid-a1b".into(),
        created_ms: t0,
    };
    let op = save_op(&none, Some((new, "sid-a1b".into())), Some(right), t0 + 61);
    let (_, out) = s.save_indexed("alice", &entry, &a1, &op).await.unwrap();
    assert!(matches!(out, SaveOutcome::Saved { .. }));
    assert_eq!(
        sids(&s.indexed(KEY, "alice", t0 + 70).await.unwrap()),
        ["sid-a1b"]
    );
    assert_eq!(s.find_sid("sid-a1b", t0 + 70).await.unwrap(), Some(new));
    // A revocation that read the old id just before the cycle learns where
    // the session went (Redis's tombstone), or that it is gone from there;
    // the old id is no session, and deleting it deletes nothing.
    let r = s.revoke(&a1, KEY, "alice", t0 + 71).await.unwrap();
    let want = if tombstones {
        Revoked::Moved(new)
    } else {
        Revoked::Gone
    };
    assert_eq!(r, want);
    assert!(s.load(&a1, t0 + 71).await.unwrap().is_none());
    assert!(!s.delete(&a1).await.unwrap());
    assert!(s.load(&new, t0 + 71).await.unwrap().is_some());
    if !entries {
        assert_eq!(s.find_sid("sid-a1", t0 + 71).await.unwrap(), None);
        assert_eq!(s.find_sid("sid-a2", t0 + 71).await.unwrap(), Some(a2));
        return;
    }

    // Young entries of missing sessions are kept (a write may be under way);
    // past the grace period they are dropped.
    let later = t0 + INDEX_GRACE_MS + 100;
    let fresh = IndexEntry {
        id: SessionId::generate(),
        sid: "sid-pending".into(),
        created_ms: later,
    };
    let before = s.index("alice", &fresh, later).await.unwrap();
    assert_eq!(before, 4, "a1, a2 (now bob's), a1b and the pending one");
    assert_eq!(
        sids(&s.indexed(KEY, "alice", later).await.unwrap()),
        ["sid-a1b"]
    );
    let after = s.index("alice", &fresh, later).await.unwrap();
    assert_eq!(
        after, 2,
        "the stale a1 and a2 entries were dropped; a1b and pending stay"
    );
    assert_eq!(s.find_sid("sid-a1", later).await.unwrap(), None);
    // a2 left alice's index for bob's: its sid still finds it.
    assert_eq!(s.find_sid("sid-a2", later).await.unwrap(), Some(a2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_keeps_the_index() {
    let s = sessiongate::store::memory::MemoryStore::new(1000);
    suite(s, 1_000_000, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_index() {
    let dir = common::redis::temp_dir("index-embedded");
    let s = sessiongate::store::embedded::EmbeddedStore::open(&dir.join("s.db")).unwrap();
    assert_eq!(s.live_sessions(), Some(0));
    suite(s, 1_000_000, false, true).await;
    // The index survives a restart with the sessions.
    let s = sessiongate::store::embedded::EmbeddedStore::open(&dir.join("s.db")).unwrap();
    let later = 1_000_000 + INDEX_GRACE_MS + 200;
    assert_eq!(
        sids(&s.indexed(KEY, "alice", later).await.unwrap()),
        ["sid-a1b"]
    );
    assert_eq!(
        s.live_sessions(),
        Some(6),
        "a1b (alice), a2 (bob) and the four edges"
    );
}

fn redis_cfg(topology: sessiongate::config::RedisTopology) -> sessiongate::config::RedisConfig {
    sessiongate::config::RedisConfig {
        topology,
        key_prefix: "sg-index:".into(),
        timeout: Duration::from_secs(5),
        ca_pem: None,
        replicas_ack: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_standalone_keeps_the_index() {
    if !common::redis::available("redis_standalone_keeps_the_index") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let cfg = redis_cfg(sessiongate::config::RedisTopology::Standalone { url: server.url() });
    let s = sessiongate::store::redis::RedisStore::open(&cfg)
        .await
        .unwrap();
    suite(s, sessiongate::record::now_ms(), true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_cluster_keeps_the_index() {
    if !common::redis::available("redis_cluster_keeps_the_index") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(common::redis::Cluster::start)
        .await
        .unwrap();
    let nodes = cluster.nodes.iter().map(|n| n.url()).collect();
    let cfg = redis_cfg(sessiongate::config::RedisTopology::Cluster { nodes });
    let s = sessiongate::store::redis::RedisStore::open(&cfg)
        .await
        .unwrap();
    suite(s, sessiongate::record::now_ms(), true, true).await;
}

async fn sql_keeps_the_index(dialect: sessiongate::config::SqlDialect) {
    if let Some(t) = common::db::Table::on(dialect, "index") {
        let s = sessiongate::store::sql::SqlStore::open(&t.config())
            .await
            .unwrap();
        suite(s, sessiongate::record::now_ms(), false, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn postgres_keeps_the_index() {
    sql_keeps_the_index(sessiongate::config::SqlDialect::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn mysql_keeps_the_index() {
    sql_keeps_the_index(sessiongate::config::SqlDialect::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn memcached_keeps_the_index() {
    if !common::memcached::available("memcached_keeps_the_index") {
        return;
    }
    let (a, b) = (
        common::memcached::Memcached::start(),
        common::memcached::Memcached::start(),
    );
    let cfg = sessiongate::config::MemcachedConfig {
        servers: vec![a.addr(), b.addr()],
        key_prefix: "sg-index:".into(),
        timeout: Duration::from_secs(5),
        pool_size: 4,
    };
    let s = sessiongate::store::memcached::MemcachedStore::new(&cfg);
    suite(s, sessiongate::record::now_ms(), true, true).await;
}
