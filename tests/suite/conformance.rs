// The store conformance checks, included by tests/store_conformance.rs
// and tests/store_conformance_db.rs: every store passes the same ones.

use serde_json::{Map, Value, json};
use sessiongate::record::SessionData;
use sessiongate::record::SessionId;
use sessiongate::record::UpdateError;
use sessiongate::record::{Change, Policy, SessionRecord};
use sessiongate::store::{Carries, Created, SaveOp, SaveOutcome, SessionStore, Ticket};
use std::sync::Arc;



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

async fn save<S: SessionStore>(s: &S, t: &Ticket, patch: Value, now: u64) -> SaveOutcome<Ticket> {
    save_under(s, t, patch, now, POLICY).await
}

/// A save under `policy`: the lifetimes and size bound come with each save.
/// As the proxy does, the session is read first and the save says what it
/// read (`SaveOp::base`).
async fn save_under<S: SessionStore>(
    s: &S,
    t: &Ticket,
    patch: Value,
    now: u64,
    policy: Policy,
) -> SaveOutcome<Ticket> {
    let read = s.load(t, now).await.unwrap();
    save_against(s, t, patch, now, policy, read.as_deref()).await
}

/// A save made against `base`, which may no longer be the session as it is.
async fn save_against<S: SessionStore>(
    s: &S,
    t: &Ticket,
    patch: Value,
    now: u64,
    policy: Policy,
    base: Option<&SessionRecord>,
) -> SaveOutcome<Ticket> {
    let patches = [obj(patch)];
    let op = SaveOp {
        change: Change {
            patches: &patches,
            expiry_s: None,
        },
        cycle_to: None,
        now_ms: now,
        policy,
        expect: None,
        base,
    };
    s.save(t, &op).await.unwrap()
}

/// A save that sets `expiry=N` (Django's `set_expiry`), made against `base`.
async fn save_expiry<S: SessionStore>(
    s: &S,
    t: &Ticket,
    patches: &[Map<String, Value>],
    expiry_s: u64,
    now: u64,
    base: &SessionRecord,
) -> SaveOutcome<Ticket> {
    let op = SaveOp {
        change: Change {
            patches,
            expiry_s: Some(expiry_s),
        },
        cycle_to: None,
        now_ms: now,
        policy: POLICY,
        expect: None,
        base: Some(base),
    };
    s.save(t, &op).await.unwrap()
}

async fn data<S: SessionStore>(s: &S, t: &Ticket, now: u64) -> Option<Value> {
    s.load(t, now)
        .await
        .unwrap()
        .map(|r| Value::Object(r.data.to_map()))
}

/// Stores a new session; its ticket.
async fn create<S: SessionStore>(s: &S, record: &SessionRecord) -> Ticket {
    match s.create(&SessionId::generate(), record).await.unwrap() {
        Created::Stored(t) => t,
        Created::Refused(e) => panic!("refused: {e}"),
    }
}

/// The ticket a save leaves, which later reads use (the cookie store's
/// ticket is the session itself, so it changes with every save).
fn saved(out: SaveOutcome<Ticket>) -> (Ticket, std::sync::Arc<SessionRecord>) {
    match out {
        SaveOutcome::Saved { id, record } => (id, record),
        other => panic!("not saved: {other:?}"),
    }
}

pub async fn creates_and_loads<S: SessionStore>(s: S) {
    assert_eq!(
        data(&s, &Ticket::Id(SessionId::generate()), *T0_CELL).await,
        None
    );
    let rec = new_record(json!({"user_id": 1, "name": "ann"}), *T0_CELL, &POLICY);
    let t = create(&s, &rec).await;
    let loaded = s.load(&t, *T0_CELL + 1).await.unwrap().unwrap();
    assert_eq!(*loaded, rec);
}

pub async fn merges_patches(s: impl SessionStore) {
    let t = create(
        &s,
        &new_record(
            json!({"a": 1, "prefs": {"x": 1, "y": 2}, "gone": 0}),
            *T0_CELL,
            &POLICY,
        ),
    )
    .await;
    let out = save(
        &s,
        &t,
        json!({"a": 2, "prefs": {"y": null, "z": {"deep": true}}, "gone": null}),
        *T0_CELL + 10,
    )
    .await;
    let (t2, record) = saved(out);
    if s.revocable() {
        assert_eq!(t2, t, "a save keeps the id");
    }
    assert_eq!(
        record.expires_ms,
        *T0_CELL + 10 + 100_000,
        "a save renews the deadline"
    );
    assert_eq!(
        data(&s, &t2, *T0_CELL + 20).await.unwrap(),
        json!({"a": 2, "prefs": {"x": 1, "z": {"deep": true}}})
    );
}

/// Every write is seen by the next read, also when the session was just read
/// (a store that caches reads must not serve the old copy).
pub async fn reads_follow_writes(s: impl SessionStore) {
    let t0 = *T0_CELL;
    let mut t = create(&s, &new_record(json!({"v": 0}), t0, &POLICY)).await;
    for v in 1..=3 {
        assert_eq!(data(&s, &t, t0 + v).await.unwrap()["v"], json!(v - 1));
        t = saved(save(&s, &t, json!({"v": v}), t0 + v).await).0;
        assert_eq!(data(&s, &t, t0 + v).await.unwrap()["v"], json!(v));
    }
    let op = SaveOp {
        change: Change::default(),
        cycle_to: Some((SessionId::generate(), "n".into())),
        now_ms: t0 + 10,
        policy: POLICY,
        expect: None,
        base: None,
    };
    let (new_t, _) = saved(s.save(&t, &op).await.unwrap());
    if s.revocable() {
        assert_eq!(
            data(&s, &t, t0 + 11).await,
            None,
            "the cycled-away id is not served from a cache"
        );
    }
    assert_eq!(data(&s, &new_t, t0 + 11).await.unwrap()["v"], json!(3));
    assert!(s.delete(&new_t).await.unwrap());
    if s.revocable() {
        assert_eq!(
            data(&s, &new_t, t0 + 12).await,
            None,
            "a deleted session is not served from a cache"
        );
    }
}

/// A store that cannot revoke says so, and a copy of the old ticket stays
/// valid: the README documents it for the cookie store.
pub async fn deletes(s: impl SessionStore) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    assert!(s.delete(&t).await.unwrap(), "there was a session to delete");
    if s.revocable() {
        assert_eq!(data(&s, &t, *T0_CELL).await, None);
        assert!(!s.delete(&t).await.unwrap(), "nothing left to delete");
    } else {
        assert!(
            data(&s, &t, *T0_CELL).await.is_some(),
            "not revocable: a copy of the old cookie stays valid until its deadline"
        );
    }
}

pub async fn cycles_to_a_new_id(s: impl SessionStore) {
    let t = create(&s, &new_record(json!({"cart": [1]}), *T0_CELL, &POLICY)).await;
    let new_id = SessionId::generate();
    let patches = [obj(json!({"user_id": 9}))];
    let op = SaveOp {
        change: Change {
            patches: &patches,
            expiry_s: None,
        },
        cycle_to: Some((new_id, "new-sid".into())),
        now_ms: *T0_CELL + 5,
        policy: POLICY,
        expect: None,
        base: None,
    };
    let (got, record) = saved(s.save(&t, &op).await.unwrap());
    assert_ne!(got, t);
    if s.carries() == Carries::Id {
        assert_eq!(got, Ticket::Id(new_id));
    }
    assert_eq!(record.sid, "new-sid");
    if s.revocable() {
        assert_eq!(data(&s, &t, *T0_CELL + 6).await, None, "old id is gone");
    }
    assert_eq!(
        data(&s, &got, *T0_CELL + 6).await.unwrap(),
        json!({"cart": [1], "user_id": 9})
    );
}

pub async fn expires_after_ttl(s: impl SessionStore) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    assert!(data(&s, &t, *T0_CELL + 99_999).await.is_some());
    assert_eq!(data(&s, &t, *T0_CELL + 100_000).await, None);
    assert!(
        matches!(
            save(&s, &t, json!({"b": 1}), *T0_CELL + 100_001).await,
            SaveOutcome::Gone
        ),
        "expired is never saved"
    );
}

pub async fn renewal_keeps_a_session_alive(s: impl SessionStore) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    let op = SaveOp {
        change: Change::default(),
        cycle_to: None,
        now_ms: *T0_CELL + 90_000,
        policy: POLICY,
        expect: None,
        base: None,
    };
    let (t, _) = saved(s.save(&t, &op).await.unwrap());
    assert!(
        data(&s, &t, *T0_CELL + 150_000).await.is_some(),
        "save_every_request renewal extends the deadline"
    );
    assert_eq!(data(&s, &t, *T0_CELL + 190_000).await, None);
}

pub async fn absolute_ttl_caps_renewal<S: SessionStore>(s: S, policy: Policy) {
    let mut t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &policy)).await;
    for step in 1..=4 {
        let now = *T0_CELL + step * 40_000;
        let out = save_under(&s, &t, json!({"n": step}), now, policy).await;
        if now < *T0_CELL + 150_000 {
            let (next, record) = saved(out);
            assert!(record.expires_ms <= *T0_CELL + 150_000);
            t = next;
        } else {
            assert!(matches!(out, SaveOutcome::Gone));
        }
    }
    assert_eq!(data(&s, &t, *T0_CELL + 150_000).await, None);
}

pub async fn write_after_flush_never_resurrects(s: impl SessionStore) {
    if !s.revocable() {
        // Not applicable: a store that holds nothing on the server cannot
        // know that a copy of a cookie was flushed (see `deletes`).
        return;
    }
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    s.delete(&t).await.unwrap();
    assert!(matches!(
        save(&s, &t, json!({"late": true}), *T0_CELL + 1).await,
        SaveOutcome::Gone
    ));
    assert_eq!(data(&s, &t, *T0_CELL + 2).await, None);
}

pub async fn emptied_session_is_deleted(s: impl SessionStore) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    assert!(matches!(
        save(&s, &t, json!({"a": null}), *T0_CELL + 1).await,
        SaveOutcome::Emptied
    ));
    if s.revocable() {
        assert_eq!(data(&s, &t, *T0_CELL + 2).await, None);
    }
}

pub async fn large_values_up_to_max_bytes<S: SessionStore>(s: S, policy: Policy) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &policy)).await;
    // {"a":1,"big":"..."}: 16 bytes of framing around the string.
    let fits = "x".repeat(policy.max_bytes - 16);
    let (t, _) = saved(save_under(&s, &t, json!({"big": fits}), *T0_CELL + 1, policy).await);
    assert_eq!(
        data(&s, &t, *T0_CELL + 2).await.unwrap()["big"]
            .as_str()
            .unwrap()
            .len(),
        policy.max_bytes - 16
    );
    let over = save_under(
        &s,
        &t,
        json!({"big": format!("{fits}y")}),
        *T0_CELL + 3,
        policy,
    )
    .await;
    assert!(
        matches!(over, SaveOutcome::Refused(UpdateError::TooLarge { .. })),
        "{over:?}"
    );
    assert_eq!(
        data(&s, &t, *T0_CELL + 4).await.unwrap()["big"]
            .as_str()
            .unwrap()
            .len(),
        policy.max_bytes - 16,
        "refused write changed nothing"
    );
}

pub async fn concurrent_merges_lose_nothing<S: SessionStore>(s: S, n: usize) {
    if !s.revocable() {
        // Not applicable: concurrent writes to one cookie are
        // last-writer-wins by nature (each response carries a whole session).
        return;
    }
    let s = Arc::new(s);
    let t = create(&*s, &new_record(json!({"start": true}), *T0_CELL, &POLICY)).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let out = save(&*s, &t, json!({format!("k{i}"): i}), *T0_CELL + 1).await;
            assert!(matches!(out, SaveOutcome::Saved { .. }), "{out:?}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let d = data(&*s, &t, *T0_CELL + 2).await.unwrap();
    let m = d.as_object().unwrap();
    assert_eq!(m.len(), n + 1);
    for i in 0..n {
        assert_eq!(m[&format!("k{i}")], json!(i));
    }
}

/// Two store objects on one shared store (two instances): `n` concurrent
/// merges split between them, no key lost. Within one process writes to a
/// session may queue; across instances they meet at the server.
pub async fn concurrent_merges_across<S: SessionStore>(a: S, b: S, n: usize) {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let t = create(&*a, &new_record(json!({"start": true}), *T0_CELL, &POLICY)).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let out = save(&*s, &t, json!({format!("k{i}"): i}), *T0_CELL + 1).await;
            assert!(matches!(out, SaveOutcome::Saved { .. }), "{out:?}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for s in [&a, &b] {
        let d = data(&**s, &t, *T0_CELL + 2).await.unwrap();
        let m = d.as_object().unwrap();
        assert_eq!(m.len(), n + 1, "{d}");
    }
}

pub async fn clears_expired(s: impl SessionStore, native_expiry: bool) {
    let dead = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    let live = create(&s, &new_record(json!({"a": 1}), *T0_CELL + 50_000, &POLICY)).await;
    let n = s.clear_expired(*T0_CELL + 120_000).await.unwrap();
    if !native_expiry {
        assert_eq!(n, 1);
    }
    assert!(data(&s, &live, *T0_CELL + 120_000).await.is_some());
    assert_eq!(data(&s, &dead, *T0_CELL + 120_000).await, None);
}

/// A renewal moves the session's deadline: a sweep between the old and
/// the new one keeps it, a sweep past the new one takes it.
pub async fn a_renewed_session_is_swept_by_its_new_deadline(
    s: impl SessionStore,
    native_expiry: bool,
) {
    let t = create(&s, &new_record(json!({"a": 1}), *T0_CELL, &POLICY)).await;
    let (t, _) = saved(save(&s, &t, json!({"b": 2}), *T0_CELL + 90_000).await);
    let n = s.clear_expired(*T0_CELL + 120_000).await.unwrap();
    if !native_expiry {
        assert_eq!(n, 0, "nothing is past its deadline yet");
    }
    assert_eq!(
        data(&s, &t, *T0_CELL + 120_000).await,
        Some(json!({"a": 1, "b": 2}))
    );
    let n = s.clear_expired(*T0_CELL + 200_000).await.unwrap();
    if !native_expiry {
        assert_eq!(n, 1);
        assert_eq!(data(&s, &t, *T0_CELL + 100_000).await, None, "swept");
    }
}

/// The merge keeps JSON exactly: empty arrays and objects, big integers,
/// floats, escapes and unicode; both where the store merges (a save that
/// does not say what it read) and where the save brings its merge.
pub async fn json_survives_the_server_side_merge(s: impl SessionStore) {
    let start = json!({"empty_list": [], "empty_obj": {}, "big": 9007199254740993u64, "float": 2.718281828459045e-3,
        "s": "quote \" backslash \\ tab \t é 🦀", "nested": {"list": [[], {}, [1, {"a": null}]], "keep": true}});
    let patch = json!({"nested": {"keep": null, "new": {"x": []}}, "neg": -1.5e-7});
    let mut expected = start.clone();
    json_patch::merge(&mut expected, &patch);
    for read_first in [false, true] {
        let t = create(&s, &new_record(start.clone(), *T0_CELL, &POLICY)).await;
        let read = s.load(&t, *T0_CELL).await.unwrap().unwrap();
        let base = read_first.then_some(&*read);
        let out = save_against(&s, &t, patch.clone(), *T0_CELL + 1, POLICY, base).await;
        let (t, _) = saved(out);
        assert_eq!(data(&s, &t, *T0_CELL + 2).await.unwrap(), expected);
    }
}

/// A save made against data another write has since changed still merges
/// into the session as it is: nothing that write did is lost.
pub async fn a_save_against_a_stale_read_loses_nothing(s: impl SessionStore) {
    if !s.revocable() {
        // Not applicable: a cookie holds the whole session, last writer wins.
        return;
    }
    let t0 = *T0_CELL;
    let t = create(&s, &new_record(json!({"a": 1, "o": {"x": 1}}), t0, &POLICY)).await;
    let stale = s.load(&t, t0).await.unwrap().unwrap();
    let (t, _) = saved(save(&s, &t, json!({"b": 2, "o": {"y": 2}}), t0 + 1).await);
    let out = save_against(&s, &t, json!({"c": 3, "o": {"x": null}}), t0 + 2, POLICY, Some(&*stale)).await;
    let (t, record) = saved(out);
    let expected = json!({"a": 1, "b": 2, "c": 3, "o": {"y": 2}});
    assert_eq!(Value::Object(record.data.to_map()), expected);
    assert_eq!(data(&s, &t, t0 + 3).await.unwrap(), expected);
}

/// `expiry=N` (Django's `set_expiry`) replaces the TTL for that save and
/// every later one that does not name another: the session outlives the
/// configured TTL, then ends N seconds after its last save.
pub async fn a_saved_expiry_outlives_the_ttl_and_later_saves(s: impl SessionStore) {
    let t0 = *T0_CELL;
    let t = create(&s, &new_record(json!({"a": 1}), t0, &POLICY)).await;
    let read = s.load(&t, t0).await.unwrap().unwrap();
    let patches = [obj(json!({"b": 2}))];
    let (t, record) = saved(save_expiry(&s, &t, &patches, 1_000, t0 + 1, &read).await);
    assert_eq!(record.expiry_s, Some(1_000));
    assert_eq!(record.expires_ms, t0 + 1 + 1_000_000);
    assert!(
        data(&s, &t, t0 + 500_000).await.is_some(),
        "past the TTL (100 s), inside the expiry"
    );
    let (t, record) = saved(save(&s, &t, json!({"c": 3}), t0 + 500_000).await);
    assert_eq!(record.expiry_s, Some(1_000), "a later save keeps the expiry");
    assert_eq!(record.expires_ms, t0 + 1_500_000);
    assert_eq!(
        data(&s, &t, t0 + 1_499_999).await.unwrap(),
        json!({"a": 1, "b": 2, "c": 3})
    );
    assert_eq!(data(&s, &t, t0 + 1_500_000).await, None);
}

/// A save made against a read taken before another write set the
/// session's expiry keeps that expiry: the lifetime the stale read implies
/// (the TTL) is not what the session gets.
pub async fn a_save_against_a_stale_expiry_keeps_the_newer(s: impl SessionStore) {
    if !s.revocable() {
        // Not applicable: a cookie holds the whole session, last writer wins.
        return;
    }
    let t0 = *T0_CELL;
    let t = create(&s, &new_record(json!({"a": 1}), t0, &POLICY)).await;
    let stale = s.load(&t, t0).await.unwrap().unwrap();
    let (t, record) = saved(save_expiry(&s, &t, &[], 1_000, t0 + 1, &stale).await);
    assert_eq!(record.expiry_s, Some(1_000));
    // Same data as the stale read; only the expiry moved on.
    let out = save_against(&s, &t, json!({"b": 2}), t0 + 2, POLICY, Some(&*stale)).await;
    let (t, record) = saved(out);
    assert_eq!(record.expiry_s, Some(1_000), "the newer expiry is kept");
    assert_eq!(record.expires_ms, t0 + 2 + 1_000_000);
    assert_eq!(
        data(&s, &t, t0 + 500_000).await.unwrap(),
        json!({"a": 1, "b": 2}),
        "alive past the TTL (100 s), inside the expiry"
    );
}

/// Every check in turn, each against a fresh store from `make`.
pub async fn whole_suite<S, F>(mut make: impl FnMut() -> F, native_expiry: bool)
where
    S: SessionStore,
    F: std::future::Future<Output = S>,
{
    let abs = Policy {
        absolute_ttl_s: Some(150),
        ..POLICY
    };
    let small = Policy {
        max_bytes: 4096,
        ..POLICY
    };
    creates_and_loads(make().await).await;
    merges_patches(make().await).await;
    deletes(make().await).await;
    reads_follow_writes(make().await).await;
    cycles_to_a_new_id(make().await).await;
    expires_after_ttl(make().await).await;
    renewal_keeps_a_session_alive(make().await).await;
    absolute_ttl_caps_renewal(make().await, abs).await;
    write_after_flush_never_resurrects(make().await).await;
    emptied_session_is_deleted(make().await).await;
    large_values_up_to_max_bytes(make().await, small).await;
    concurrent_merges_lose_nothing(make().await, 32).await;
    concurrent_merges_lose_nothing(make().await, 500).await;
    clears_expired(make().await, native_expiry).await;
    a_renewed_session_is_swept_by_its_new_deadline(make().await, native_expiry).await;
    json_survives_the_server_side_merge(make().await).await;
    a_save_against_a_stale_read_loses_nothing(make().await).await;
    a_saved_expiry_outlives_the_ttl_and_later_saves(make().await).await;
    a_save_against_a_stale_expiry_keeps_the_newer(make().await).await;
}
