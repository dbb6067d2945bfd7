//! One conformance suite that every store must pass. The lifetimes and
//! size bound come with each save (a reload changes them between requests);
//! the clock is the `now` argument, so expiry is tested without sleeping.

#![recursion_limit = "256"]

mod common;

include!("suite/conformance.rs");

use std::time::Duration;

/// Runs every check against a store made by `$make()`.
macro_rules! conformance {
    ($name:ident, $make:expr, native_expiry = $native:expr) => {
        mod $name {
            use super::*;

            async fn make() -> impl SessionStore {
                ($make)().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn creates_and_loads() {
                super::creates_and_loads(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn merges_patches() {
                super::merges_patches(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deletes() {
                super::deletes(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reads_follow_writes() {
                super::reads_follow_writes(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cycles_to_a_new_id() {
                super::cycles_to_a_new_id(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expires_after_ttl() {
                super::expires_after_ttl(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn renewal_keeps_a_session_alive() {
                super::renewal_keeps_a_session_alive(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn absolute_ttl_caps_renewal() {
                let p = Policy {
                    absolute_ttl_s: Some(150),
                    ..POLICY
                };
                super::absolute_ttl_caps_renewal(make().await, p).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn write_after_flush_never_resurrects() {
                super::write_after_flush_never_resurrects(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn emptied_session_is_deleted() {
                super::emptied_session_is_deleted(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_values_up_to_max_bytes() {
                let p = Policy {
                    max_bytes: 4096,
                    ..POLICY
                };
                super::large_values_up_to_max_bytes(make().await, p).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_merges_32() {
                super::concurrent_merges_lose_nothing(make().await, 32).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_merges_500() {
                super::concurrent_merges_lose_nothing(make().await, 500).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clears_expired() {
                super::clears_expired(make().await, $native).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_renewed_session_is_swept_by_its_new_deadline() {
                super::a_renewed_session_is_swept_by_its_new_deadline(make().await, $native).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn json_survives_the_merge() {
                super::json_survives_the_server_side_merge(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_save_against_a_stale_read_loses_nothing() {
                super::a_save_against_a_stale_read_loses_nothing(make().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_saved_expiry_outlives_the_ttl_and_later_saves() {
                super::a_saved_expiry_outlives_the_ttl_and_later_saves(make().await).await
            }
        }
    };
}

conformance!(
    memory,
    || async move { sessiongate::store::memory::MemoryStore::new(100_000) },
    native_expiry = false
);

conformance!(
    cookie,
    || async move {
        let secret = sessiongate::config::Secret::new("conformance-secret-0123456789abcdef");
        sessiongate::store::cookie::CookieStore::new(&[secret], "sessionid")
    },
    native_expiry = true
);

conformance!(
    embedded,
    || async move {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-conformance-{}",
            SessionId::generate().encode()
        ));
        sessiongate::store::embedded::EmbeddedStore::open(&dir.join("sessions.db")).unwrap()
    },
    native_expiry = false
);

/// Redis: the whole suite against one server, each check with its own key prefix.
async fn redis_suite(base: &str, make: impl Fn(String) -> sessiongate::config::RedisConfig) {
    use sessiongate::store::redis::RedisStore;
    let mut n = 0;
    whole_suite(
        || {
            n += 1;
            let cfg = make(format!("{base}{n}:"));
            async move { RedisStore::open(&cfg).await.unwrap() }
        },
        true,
    )
    .await;
}

/// A Redis of the test's own that requires `password` (redis-cli gives it).
fn redis_requiring(password: &str) -> common::redis::RedisServer {
    let mut server = common::redis::RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        password,
    ]);
    server.auth = Some(password.into());
    server
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
        replicas_ack: 0,
    }
}

/// A store on `server` (standalone) whose keys start with `prefix`.
fn standalone_config(
    server: &common::redis::RedisServer,
    prefix: &str,
) -> sessiongate::config::RedisConfig {
    redis_config(
        sessiongate::config::RedisTopology::Standalone { url: server.url() },
        prefix.into(),
    )
}

async fn standalone_store(
    server: &common::redis::RedisServer,
    prefix: &str,
) -> sessiongate::store::redis::RedisStore {
    sessiongate::store::redis::RedisStore::open(&standalone_config(server, prefix))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_standalone_conformance() {
    if !common::redis::available("redis_standalone_conformance") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let url = server.url();
    redis_suite("sg-test:", |prefix| {
        redis_config(
            sessiongate::config::RedisTopology::Standalone { url: url.clone() },
            prefix,
        )
    })
    .await;
}

/// A save that says what it read stores its own merge when Redis still
/// holds that data (its keys come out sorted), and is merged by the Lua
/// script when another write came in between (new keys come last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_stores_a_senders_merge_only_over_the_data_it_read() {
    if !common::redis::available("redis_stores_a_senders_merge_only_over_the_data_it_read") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let s = standalone_store(&server, "merge:").await;
    let t0 = *T0_CELL;
    let t = create(&s, &new_record(json!({"b": 1}), t0, &POLICY)).await;
    let Ticket::Id(id) = &t else { unreachable!() };
    let stored = || server.cli(&["hget", &format!("merge:{{{}}}", id.encode()), "d"]);

    let read = s.load(&t, t0).await.unwrap().unwrap();
    let out = save_against(&s, &t, json!({"a": 2}), t0 + 1, POLICY, Some(&*read)).await;
    assert_eq!(saved(out).1.data.as_str(), r#"{"a":2,"b":1}"#);
    assert_eq!(stored().trim(), r#"{"a":2,"b":1}"#);

    let out = save_against(&s, &t, json!({"0": 3}), t0 + 2, POLICY, Some(&*read)).await;
    assert_eq!(saved(out).1.data.as_str(), r#"{"a":2,"b":1,"0":3}"#);
    assert_eq!(stored().trim(), r#"{"a":2,"b":1,"0":3}"#);
}

/// The common writes that arrive together go to Redis as one script call,
/// and each keeps its own outcome: stored, gone (deleted meanwhile),
/// merged by the save script (changed meanwhile), or failed alone (its key
/// turned into another type).
#[tokio::test]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_writes_made_together_share_one_call_and_keep_their_own_outcomes() {
    if !common::redis::available(
        "redis_writes_made_together_share_one_call_and_keep_their_own_outcomes",
    ) {
        return;
    }
    let server = common::redis::RedisServer::start();
    let s = standalone_store(&server, "batch:").await;
    let t0 = *T0_CELL;
    let key = |t: &Ticket| {
        let Ticket::Id(id) = t else { unreachable!() };
        format!("batch:{{{}}}", id.encode())
    };
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(create(&s, &new_record(json!({"n": n}), t0, &POLICY)).await);
    }
    // Both scripts loaded, so that the call counts below are the writes'.
    let warm = create(&s, &new_record(json!({"w": 0}), t0, &POLICY)).await;
    let stale = s.load(&warm, t0).await.unwrap().unwrap();
    saved(save(&s, &warm, json!({"w": 1}), t0 + 1).await);
    saved(save_against(&s, &warm, json!({"w": 2}), t0 + 2, POLICY, Some(&*stale)).await);

    let mut read = Vec::new();
    for t in &tickets {
        read.push(s.load(t, t0).await.unwrap().unwrap());
    }
    s.delete(&tickets[1]).await.unwrap();
    saved(save(&s, &tickets[2], json!({"other": true}), t0 + 1).await);
    server.cli(&["del", &key(&tickets[3])]);
    server.cli(&["set", &key(&tickets[3]), "not a hash"]);
    assert!(server.cli(&["config", "resetstat"]).contains("OK"));

    let patches = [obj(json!({"batched": 1}))];
    let ops: Vec<SaveOp> = read
        .iter()
        .map(|r| SaveOp {
            change: Change {
                patches: &patches,
                expiry_s: None,
            },
            cycle_to: None,
            now_ms: t0 + 2,
            policy: POLICY,
            expect: None,
            base: Some(&**r),
        })
        .collect();
    // One runtime thread: every save queues before the sender runs.
    let outcomes =
        futures_util::future::join_all(tickets.iter().zip(&ops).map(|(t, op)| s.save(t, op))).await;
    let mut outcomes = outcomes.into_iter();
    let mut next = || outcomes.next().unwrap();
    assert_eq!(
        saved(next().unwrap()).1.data.as_str(),
        r#"{"batched":1,"n":0}"#
    );
    assert!(matches!(next().unwrap(), SaveOutcome::Gone));
    assert_eq!(
        saved(next().unwrap()).1.data.as_str(),
        r#"{"n":2,"other":true,"batched":1}"#,
        "merged over the write made since it was read"
    );
    let failed = next().unwrap_err();
    assert!(
        format!("{failed:?}").contains("wrongtype"),
        "its own error: {failed:?}"
    );
    saved(next().unwrap());
    assert_eq!(
        data(&s, &tickets[4], t0 + 3).await,
        Some(json!({"n": 4, "batched": 1}))
    );
    let stats = server.cli(&["info", "commandstats"]);
    let evalsha = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .expect("EVALSHA was called");
    assert!(
        evalsha.starts_with("cmdstat_evalsha:calls=2,"),
        "one call for the five writes, one merge: {evalsha}"
    );
}

/// A Redis that lost its scripts (restarted, or `SCRIPT FLUSH`) is sent
/// the common write's script again, and the write is stored.
#[tokio::test]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_writes_load_their_script_again_after_a_script_flush() {
    if !common::redis::available("redis_writes_load_their_script_again_after_a_script_flush") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let s = standalone_store(&server, "flushed:").await;
    let t0 = *T0_CELL;
    let t = create(&s, &new_record(json!({"n": 0}), t0, &POLICY)).await;
    saved(save(&s, &t, json!({"n": 1}), t0 + 1).await);
    assert!(server.cli(&["script", "flush"]).contains("OK"));
    assert!(server.cli(&["config", "resetstat"]).contains("OK"));
    saved(save(&s, &t, json!({"n": 2}), t0 + 2).await);
    assert_eq!(data(&s, &t, t0 + 3).await, Some(json!({"n": 2})));
    let errors = server.cli(&["info", "errorstats"]);
    assert!(
        errors.contains("errorstat_NOSCRIPT:count=1"),
        "the write after the flush found no script, once: {errors}"
    );
}

/// A store opened on one runtime goes on writing on another once the first
/// is gone (a command-line tool's runtime, a test's): the task that sends
/// the common writes starts again on the runtime in use.
#[test]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
fn redis_writes_go_on_after_the_runtime_that_sent_them_ends() {
    if !common::redis::available("redis_writes_go_on_after_the_runtime_that_sent_them_ends") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let config = standalone_config(&server, "runtimes:");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let t0 = *T0_CELL;
    let first = runtime();
    let (s, t) = first.block_on(async {
        let s = sessiongate::store::redis::RedisStore::open(&config)
            .await
            .unwrap();
        let t = create(&s, &new_record(json!({"n": 0}), t0, &POLICY)).await;
        saved(save(&s, &t, json!({"n": 1}), t0 + 1).await);
        (s, t)
    });
    drop(first);
    runtime().block_on(async {
        saved(save(&s, &t, json!({"n": 2}), t0 + 2).await);
        assert_eq!(data(&s, &t, t0 + 3).await, Some(json!({"n": 2})));
    });
}

/// A `redis://` URL's password and database are the direct connection's
/// login: the whole suite passes through them, the sessions land in that
/// database, and a wrong password is a store error, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_with_a_password_and_a_database_conformance() {
    if !common::redis::available("redis_with_a_password_and_a_database_conformance") {
        return;
    }
    let server = redis_requiring("conformance-pw");
    let url = format!("redis://:conformance-pw@127.0.0.1:{}/3", server.port);
    redis_suite("sg-db3:", |prefix| {
        redis_config(
            sessiongate::config::RedisTopology::Standalone { url: url.clone() },
            prefix,
        )
    })
    .await;
    assert_eq!(server.cli(&["-n", "0", "dbsize"]).trim(), "0");
    assert_ne!(server.cli(&["-n", "3", "dbsize"]).trim(), "0");

    let wrong = format!("redis://:not-the-pw@127.0.0.1:{}/3", server.port);
    let s = sessiongate::store::redis::RedisStore::open(&redis_config(
        sessiongate::config::RedisTopology::Standalone { url: wrong },
        "x:".into(),
    ))
    .await
    .unwrap();
    let t = Ticket::Id(SessionId::generate());
    let err = tokio::time::timeout(Duration::from_secs(10), s.load(&t, *T0_CELL))
        .await
        .expect("answers within the timeout")
        .unwrap_err();
    assert!(
        matches!(err, sessiongate::store::StoreError::Backend(_)),
        "{err:?}"
    );
}

/// A Redis that cannot be reached is a store error at once, each request
/// not trying to connect again for a moment; once it is up, the next
/// requests reach it within that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_that_comes_up_later_is_reached_within_a_moment() {
    if !common::redis::available("redis_that_comes_up_later_is_reached_within_a_moment") {
        return;
    }
    let port = common::redis::free_port();
    let s = sessiongate::store::redis::RedisStore::open(&redis_config(
        sessiongate::config::RedisTopology::Standalone {
            url: format!("redis://127.0.0.1:{port}"),
        },
        "later:".into(),
    ))
    .await
    .unwrap();
    let t = Ticket::Id(SessionId::generate());
    for i in 0..3 {
        let started = std::time::Instant::now();
        let err = s.load(&t, *T0_CELL).await.unwrap_err();
        assert!(
            matches!(err, sessiongate::store::StoreError::Backend(_)),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // Right after a failed attempt, no new one is made.
        assert_eq!(
            format!("{err:?}").contains("a moment ago"),
            i > 0,
            "{err:?}"
        );
    }
    let _server = common::redis::RedisServer::start_on(
        port,
        common::redis::temp_dir("later"),
        &["--save", "", "--appendonly", "no"],
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(s.load(&t, *T0_CELL).await.unwrap().is_none());
    let created = create(&s, &new_record(json!({"up": true}), *T0_CELL, &POLICY)).await;
    assert!(s.load(&created, *T0_CELL).await.unwrap().is_some());
}

/// Requests that give up while Redis does not answer the login (a server
/// stopped, its kernel still accepting connections) leave no connection
/// behind: an attempt to connect runs on its own, one at a time, and one
/// that times out closes its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_that_stalls_during_login_keeps_no_connection_of_requests_that_gave_up() {
    if !common::redis::available(
        "redis_that_stalls_during_login_keeps_no_connection_of_requests_that_gave_up",
    ) {
        return;
    }
    let server = redis_requiring("stall-pw");
    let mut cfg = redis_config(
        sessiongate::config::RedisTopology::Standalone {
            url: format!("redis://:stall-pw@127.0.0.1:{}", server.port),
        },
        "stall:".into(),
    );
    cfg.timeout = Duration::from_millis(300);
    let s = sessiongate::store::redis::RedisStore::open(&cfg)
        .await
        .unwrap();
    let t = Ticket::Id(SessionId::generate());
    server.pause();
    for _ in 0..5 {
        let err = s.load(&t, *T0_CELL).await.unwrap_err();
        // The attempt and the load share the timeout: either may end first.
        assert!(
            matches!(
                err,
                sessiongate::store::StoreError::Timeout
                    | sessiongate::store::StoreError::Backend(_)
            ),
            "{err:?}"
        );
        // Past the pause after a failed attempt: each load tries again.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    server.resume();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clients = server.cli(&["client", "list"]);
    assert_eq!(
        clients.lines().filter(|l| l.contains("cmd=client")).count(),
        1,
        "{clients}"
    );
    assert_eq!(
        clients.lines().count(),
        1,
        "redis-cli's own only: {clients}"
    );
    assert!(s.load(&t, *T0_CELL).await.unwrap().is_none());
}

/// Many requests share the connection, some giving up half-way (their
/// timeout fires after the command was written): every reply still
/// reaches the request that asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_replies_reach_their_own_request_when_others_give_up() {
    if !common::redis::available("redis_replies_reach_their_own_request_when_others_give_up") {
        return;
    }
    let server = common::redis::RedisServer::start();
    let s = std::sync::Arc::new(
        sessiongate::store::redis::RedisStore::open(&redis_config(
            sessiongate::config::RedisTopology::Standalone { url: server.url() },
            "mux:".into(),
        ))
        .await
        .unwrap(),
    );
    let t0 = *T0_CELL;
    let mut tickets = Vec::new();
    for n in 0..50 {
        tickets.push((
            n,
            create(&*s, &new_record(json!({ "n": n }), t0, &POLICY)).await,
        ));
    }
    let mut tasks = Vec::new();
    for round in 0..20u64 {
        for (n, t) in &tickets {
            let (s, t, n) = (s.clone(), t.clone(), *n);
            tasks.push(tokio::spawn(async move {
                // Every third request gives up almost at once.
                if (round + n) % 3 == 0 {
                    let quick = Duration::from_micros(50);
                    let Ok(r) = tokio::time::timeout(quick, s.load(&t, t0)).await else {
                        return None;
                    };
                    let r = r.unwrap().unwrap();
                    return Some(r.data.to_map().get("n") == Some(&json!(n)));
                }
                let r = s.load(&t, t0).await.unwrap().unwrap();
                Some(r.data.to_map().get("n") == Some(&json!(n)))
            }));
        }
    }
    let mut gave_up = 0;
    for task in tasks {
        match task.await.unwrap() {
            Some(own) => assert!(own, "a reply reached another request"),
            None => gave_up += 1,
        }
    }
    assert!(gave_up > 0, "no request gave up: the test tested nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn redis_cluster_conformance() {
    if !common::redis::available("redis_cluster_conformance") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(common::redis::Cluster::start)
        .await
        .unwrap();
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    redis_suite("sg-test:", |prefix| {
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
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
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
    redis_suite("sg-tls:", |prefix| sessiongate::config::RedisConfig {
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
    let store = sessiongate::store::redis::RedisStore::open(&cfg)
        .await
        .unwrap();
    assert!(
        store.ping().await.is_err(),
        "an untrusted certificate must not be accepted"
    );
}
