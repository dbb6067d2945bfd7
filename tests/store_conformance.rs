//! One conformance suite that every store must pass. Each store is created
//! with a policy; the clock is the `now` argument, so expiry is tested
//! without sleeping.

use serde_json::{Map, Value, json};
use sessiongate::record::SessionData;
use sessiongate::record::SessionId;
use sessiongate::record::UpdateError;
use sessiongate::record::{Change, Policy, SessionRecord};
use sessiongate::store::{SaveOp, SaveOutcome, SessionStore};
use std::sync::Arc;
use std::time::Duration;

mod common;

use std::sync::LazyLock;

/// The suite's clock starts at the real time, because Redis expires keys by
/// its own clock; the checks then move `now` forward by hand.
static T0_CELL: LazyLock<u64> = LazyLock::new(sessiongate::record::now_ms);

const POLICY: Policy = Policy {
    ttl_s: 100,
    absolute_ttl_s: None,
    expire_at_browser_close: false,
    max_bytes: 65_536,
};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn new_record(data: Value, now: u64, policy: &Policy) -> SessionRecord {
    let mut r = SessionRecord::new(format!("sid-{now}"), now);
    r.data = SessionData::from_map(&obj(data));
    r.expires_ms = now + policy.ttl_s * 1000;
    if let Some(abs) = policy.absolute_ttl_s {
        r.expires_ms = r.expires_ms.min(now + abs * 1000);
    }
    r
}

async fn save<S: SessionStore>(s: &S, id: &SessionId, patch: Value, now: u64) -> SaveOutcome {
    let patches = [obj(patch)];
    let op = SaveOp {
        change: Change {
            patches: &patches,
            expiry_s: None,
        },
        cycle_to: None,
        now_ms: now,
    };
    s.save(id, &op).await.unwrap()
}

async fn data<S: SessionStore>(s: &S, id: &SessionId, now: u64) -> Option<Value> {
    s.load(id, now)
        .await
        .unwrap()
        .map(|r| Value::Object(r.data.to_map()))
}

pub async fn creates_and_loads<S: SessionStore>(s: S) {
    let id = SessionId::generate();
    assert_eq!(data(&s, &id, *T0_CELL).await, None);
    let rec = new_record(json!({"user_id": 1, "name": "ann"}), *T0_CELL, &POLICY);
    s.create(&id, &rec).await.unwrap();
    let loaded = s.load(&id, *T0_CELL + 1).await.unwrap().unwrap();
    assert_eq!(*loaded, rec);
}

pub async fn merges_patches(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(
        &id,
        &new_record(
            json!({"a": 1, "prefs": {"x": 1, "y": 2}, "gone": 0}),
            *T0_CELL,
            &POLICY,
        ),
    )
    .await
    .unwrap();
    let out = save(
        &s,
        &id,
        json!({"a": 2, "prefs": {"y": null, "z": {"deep": true}}, "gone": null}),
        *T0_CELL + 10,
    )
    .await;
    let SaveOutcome::Saved { id: same, record } = out else {
        panic!("{out:?}")
    };
    assert_eq!(same, id);
    assert_eq!(
        record.expires_ms,
        *T0_CELL + 10 + 100_000,
        "a save renews the deadline"
    );
    assert_eq!(
        data(&s, &id, *T0_CELL + 20).await.unwrap(),
        json!({"a": 2, "prefs": {"x": 1, "z": {"deep": true}}})
    );
}

/// Every write is seen by the next read, also when the session was just read
/// (a store that caches reads must not serve the old copy).
pub async fn reads_follow_writes(s: impl SessionStore) {
    let t = *T0_CELL;
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"v": 0}), t, &POLICY))
        .await
        .unwrap();
    for v in 1..=3 {
        assert_eq!(data(&s, &id, t + v).await.unwrap()["v"], json!(v - 1));
        assert!(matches!(
            save(&s, &id, json!({"v": v}), t + v).await,
            SaveOutcome::Saved { .. }
        ));
        assert_eq!(data(&s, &id, t + v).await.unwrap()["v"], json!(v));
    }
    let new_id = SessionId::generate();
    let op = SaveOp {
        change: Change::default(),
        cycle_to: Some((new_id, "n".into())),
        now_ms: t + 10,
    };
    assert!(matches!(
        s.save(&id, &op).await.unwrap(),
        SaveOutcome::Saved { .. }
    ));
    assert_eq!(
        data(&s, &id, t + 11).await,
        None,
        "the cycled-away id is not served from a cache"
    );
    assert_eq!(data(&s, &new_id, t + 11).await.unwrap()["v"], json!(3));
    assert!(s.delete(&new_id).await.unwrap());
    assert_eq!(
        data(&s, &new_id, t + 12).await,
        None,
        "a deleted session is not served from a cache"
    );
}

pub async fn deletes(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    assert!(
        s.delete(&id).await.unwrap(),
        "there was a session to delete"
    );
    assert_eq!(data(&s, &id, *T0_CELL).await, None);
    assert!(!s.delete(&id).await.unwrap(), "nothing left to delete");
}

pub async fn cycles_to_a_new_id(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"cart": [1]}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    let new_id = SessionId::generate();
    let patches = [obj(json!({"user_id": 9}))];
    let op = SaveOp {
        change: Change {
            patches: &patches,
            expiry_s: None,
        },
        cycle_to: Some((new_id, "new-sid".into())),
        now_ms: *T0_CELL + 5,
    };
    let SaveOutcome::Saved { id: got, record } = s.save(&id, &op).await.unwrap() else {
        panic!()
    };
    assert_eq!(got, new_id);
    assert_eq!(record.sid, "new-sid");
    assert_eq!(data(&s, &id, *T0_CELL + 6).await, None, "old id is gone");
    assert_eq!(
        data(&s, &new_id, *T0_CELL + 6).await.unwrap(),
        json!({"cart": [1], "user_id": 9})
    );
}

pub async fn expires_after_ttl(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    assert!(data(&s, &id, *T0_CELL + 99_999).await.is_some());
    assert_eq!(data(&s, &id, *T0_CELL + 100_000).await, None);
    assert!(
        matches!(
            save(&s, &id, json!({"b": 1}), *T0_CELL + 100_001).await,
            SaveOutcome::Gone
        ),
        "expired is never saved"
    );
}

pub async fn renewal_keeps_a_session_alive(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    let op = SaveOp {
        change: Change::default(),
        cycle_to: None,
        now_ms: *T0_CELL + 90_000,
    };
    assert!(matches!(
        s.save(&id, &op).await.unwrap(),
        SaveOutcome::Saved { .. }
    ));
    assert!(
        data(&s, &id, *T0_CELL + 150_000).await.is_some(),
        "save_every_request renewal extends the deadline"
    );
    assert_eq!(data(&s, &id, *T0_CELL + 190_000).await, None);
}

pub async fn absolute_ttl_caps_renewal<S: SessionStore>(s: S, policy: Policy) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &policy))
        .await
        .unwrap();
    for step in 1..=4 {
        let now = *T0_CELL + step * 40_000;
        let out = save(&s, &id, json!({"n": step}), now).await;
        if now < *T0_CELL + 150_000 {
            let SaveOutcome::Saved { record, .. } = out else {
                panic!("{out:?}")
            };
            assert!(record.expires_ms <= *T0_CELL + 150_000);
        } else {
            assert!(matches!(out, SaveOutcome::Gone));
        }
    }
    assert_eq!(data(&s, &id, *T0_CELL + 150_000).await, None);
}

pub async fn write_after_flush_never_resurrects(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    s.delete(&id).await.unwrap();
    assert!(matches!(
        save(&s, &id, json!({"late": true}), *T0_CELL + 1).await,
        SaveOutcome::Gone
    ));
    assert_eq!(data(&s, &id, *T0_CELL + 2).await, None);
}

pub async fn emptied_session_is_deleted(s: impl SessionStore) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    assert!(matches!(
        save(&s, &id, json!({"a": null}), *T0_CELL + 1).await,
        SaveOutcome::Emptied
    ));
    assert_eq!(data(&s, &id, *T0_CELL + 2).await, None);
}

pub async fn large_values_up_to_max_bytes<S: SessionStore>(s: S, policy: Policy) {
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"a": 1}), *T0_CELL, &policy))
        .await
        .unwrap();
    // {"a":1,"big":"..."}: 16 bytes of framing around the string.
    let fits = "x".repeat(policy.max_bytes - 16);
    let SaveOutcome::Saved { .. } = save(&s, &id, json!({"big": fits}), *T0_CELL + 1).await else {
        panic!("max_bytes exactly must fit")
    };
    assert_eq!(
        data(&s, &id, *T0_CELL + 2).await.unwrap()["big"]
            .as_str()
            .unwrap()
            .len(),
        policy.max_bytes - 16
    );
    let over = save(&s, &id, json!({"big": format!("{fits}y")}), *T0_CELL + 3).await;
    assert!(
        matches!(over, SaveOutcome::Refused(UpdateError::TooLarge { .. })),
        "{over:?}"
    );
    assert_eq!(
        data(&s, &id, *T0_CELL + 4).await.unwrap()["big"]
            .as_str()
            .unwrap()
            .len(),
        policy.max_bytes - 16,
        "refused write changed nothing"
    );
}

pub async fn concurrent_merges_lose_nothing<S: SessionStore>(s: S, n: usize) {
    let s = Arc::new(s);
    let id = SessionId::generate();
    s.create(&id, &new_record(json!({"start": true}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let out = save(&*s, &id, json!({format!("k{i}"): i}), *T0_CELL + 1).await;
            assert!(matches!(out, SaveOutcome::Saved { .. }), "{out:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = data(&*s, &id, *T0_CELL + 2).await.unwrap();
    let m = d.as_object().unwrap();
    assert_eq!(m.len(), n + 1);
    for i in 0..n {
        assert_eq!(m[&format!("k{i}")], json!(i));
    }
}

pub async fn clears_expired(s: impl SessionStore, native_expiry: bool) {
    let live = SessionId::generate();
    let dead = SessionId::generate();
    s.create(&dead, &new_record(json!({"a": 1}), *T0_CELL, &POLICY))
        .await
        .unwrap();
    s.create(
        &live,
        &new_record(json!({"a": 1}), *T0_CELL + 50_000, &POLICY),
    )
    .await
    .unwrap();
    let n = s.clear_expired(*T0_CELL + 120_000).await.unwrap();
    if !native_expiry {
        assert_eq!(n, 1);
    }
    assert!(data(&s, &live, *T0_CELL + 120_000).await.is_some());
    assert_eq!(data(&s, &dead, *T0_CELL + 120_000).await, None);
}

/// Runs every check against a store made by `$make(policy)`.
macro_rules! conformance {
    ($name:ident, $make:expr, native_expiry = $native:expr) => {
        mod $name {
            use super::*;

            async fn make(policy: Policy) -> impl SessionStore {
                ($make)(policy).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn creates_and_loads() {
                super::creates_and_loads(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn merges_patches() {
                super::merges_patches(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deletes() {
                super::deletes(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reads_follow_writes() {
                super::reads_follow_writes(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cycles_to_a_new_id() {
                super::cycles_to_a_new_id(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expires_after_ttl() {
                super::expires_after_ttl(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn renewal_keeps_a_session_alive() {
                super::renewal_keeps_a_session_alive(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn absolute_ttl_caps_renewal() {
                let p = Policy {
                    absolute_ttl_s: Some(150),
                    ..POLICY
                };
                super::absolute_ttl_caps_renewal(make(p).await, p).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn write_after_flush_never_resurrects() {
                super::write_after_flush_never_resurrects(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn emptied_session_is_deleted() {
                super::emptied_session_is_deleted(make(POLICY).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_values_up_to_max_bytes() {
                let p = Policy {
                    max_bytes: 4096,
                    ..POLICY
                };
                super::large_values_up_to_max_bytes(make(p).await, p).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_merges_32() {
                super::concurrent_merges_lose_nothing(make(POLICY).await, 32).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_merges_500() {
                super::concurrent_merges_lose_nothing(make(POLICY).await, 500).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clears_expired() {
                super::clears_expired(make(POLICY).await, $native).await
            }
        }
    };
}

conformance!(
    memory,
    |policy| async move { sessiongate::store::memory::MemoryStore::new(100_000, policy) },
    native_expiry = false
);

conformance!(
    embedded,
    |policy| async move {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-conformance-{}",
            SessionId::generate().encode()
        ));
        sessiongate::store::embedded::EmbeddedStore::open(&dir.join("sessions.db"), policy).unwrap()
    },
    native_expiry = false
);

/// Redis: the whole suite against one server, each check with its own key prefix.
async fn redis_suite(
    base: &str,
    make: impl Fn(Policy, String) -> sessiongate::config::RedisConfig,
) {
    use sessiongate::store::redis::RedisStore;
    let mut n = 0;
    let mut store = |policy: Policy| {
        n += 1;
        let cfg = make(policy, format!("{base}{n}:"));
        async move { RedisStore::open(&cfg, policy).await.unwrap() }
    };
    let abs = Policy {
        absolute_ttl_s: Some(150),
        ..POLICY
    };
    let small = Policy {
        max_bytes: 4096,
        ..POLICY
    };
    creates_and_loads(store(POLICY).await).await;
    merges_patches(store(POLICY).await).await;
    deletes(store(POLICY).await).await;
    reads_follow_writes(store(POLICY).await).await;
    cycles_to_a_new_id(store(POLICY).await).await;
    expires_after_ttl(store(POLICY).await).await;
    renewal_keeps_a_session_alive(store(POLICY).await).await;
    absolute_ttl_caps_renewal(store(abs).await, abs).await;
    write_after_flush_never_resurrects(store(POLICY).await).await;
    emptied_session_is_deleted(store(POLICY).await).await;
    large_values_up_to_max_bytes(store(small).await, small).await;
    concurrent_merges_lose_nothing(store(POLICY).await, 32).await;
    concurrent_merges_lose_nothing(store(POLICY).await, 500).await;
    clears_expired(store(POLICY).await, true).await;
    json_survives_the_server_side_merge(store(POLICY).await).await;
}

/// The server-side merge keeps JSON exactly: empty arrays and objects,
/// big integers, floats, escapes and unicode.
pub async fn json_survives_the_server_side_merge(s: impl SessionStore) {
    let id = SessionId::generate();
    let start = json!({"empty_list": [], "empty_obj": {}, "big": 9007199254740993u64, "float": 2.718281828459045e-3,
        "s": "quote \" backslash \\ tab \t é 🦀", "nested": {"list": [[], {}, [1, {"a": null}]], "keep": true}});
    s.create(&id, &new_record(start.clone(), *T0_CELL, &POLICY))
        .await
        .unwrap();
    let out = save(
        &s,
        &id,
        json!({"nested": {"keep": null, "new": {"x": []}}, "neg": -1.5e-7}),
        *T0_CELL + 1,
    )
    .await;
    assert!(matches!(out, SaveOutcome::Saved { .. }), "{out:?}");
    let mut expected = start;
    json_patch::merge(
        &mut expected,
        &json!({"nested": {"keep": null, "new": {"x": []}}, "neg": -1.5e-7}),
    );
    assert_eq!(data(&s, &id, *T0_CELL + 2).await.unwrap(), expected);
}

fn redis_config(
    topology: sessiongate::config::RedisTopology,
    prefix: String,
) -> sessiongate::config::RedisConfig {
    sessiongate::config::RedisConfig {
        topology,
        key_prefix: prefix,
        timeout: Duration::from_secs(5),
        ca_pem: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_standalone_conformance() {
    if !common::redis::available("redis_standalone_conformance") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let url = server.url();
    redis_suite("sg-test:", |_, prefix| {
        redis_config(
            sessiongate::config::RedisTopology::Standalone { url: url.clone() },
            prefix,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conformance() {
    if !common::redis::available("redis_cluster_conformance") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(common::redis::Cluster::start)
        .await
        .unwrap();
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    redis_suite("sg-test:", |_, prefix| {
        redis_config(
            sessiongate::config::RedisTopology::Cluster {
                nodes: nodes.clone(),
            },
            prefix,
        )
    })
    .await;
    // The sessions really are spread over the masters.
    let keys: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["dbsize"]).trim().parse().unwrap())
        .collect();
    assert!(
        keys.iter().filter(|&&k| k > 0).count() >= 2,
        "keys per node: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_conformance() {
    if !common::redis::available("redis_tls_conformance") {
        return;
    }
    let dir = common::redis::temp_dir("tls");
    let ca = common::tls::TestCa::new();
    let files = ca.leaf(&["127.0.0.1", "localhost"], &dir, "redis");
    let port = common::redis::free_port();
    let _server = common::redis::RedisServer::start_on(
        port,
        dir.clone(),
        &[
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            files.cert.to_str().unwrap(),
            "--tls-key-file",
            files.key.to_str().unwrap(),
            "--tls-ca-cert-file",
            files.ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ca_path = files.ca.clone();
    redis_suite("sg-tls:", |_, prefix| sessiongate::config::RedisConfig {
        ca_pem: Some(std::fs::read(&ca_path).unwrap()),
        ..redis_config(
            sessiongate::config::RedisTopology::Standalone { url: url.clone() },
            prefix,
        )
    })
    .await;

    // A server certificate from another CA is refused.
    let other = common::tls::TestCa::new().leaf(&["127.0.0.1"], &dir, "other");
    let cfg = sessiongate::config::RedisConfig {
        ca_pem: Some(std::fs::read(&other.ca).unwrap()),
        ..redis_config(
            sessiongate::config::RedisTopology::Standalone { url },
            "x:".into(),
        )
    };
    let store = sessiongate::store::redis::RedisStore::open(&cfg, POLICY)
        .await
        .unwrap();
    assert!(
        store.ping().await.is_err(),
        "an untrusted certificate must not be accepted"
    );
}
