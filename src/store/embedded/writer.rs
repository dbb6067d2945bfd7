//! The embedded store's single writer: every pending operation applied in
//! one transaction and committed once (group commit), a failed transaction
//! answered as a whole, the file reopened after an I/O error, and a panic
//! contained to the batch it happened in.

use super::file::StoreFile;
use super::index::IndexOp;
use super::rows::{Expiry, Sessions, delete, get, overwrite, put, remove};
use super::{EXPIRY, MAX_BATCH, SESSIONS};
use super::{ReadCache, Written, backend, expiry_key};
use redb::TableDefinition;

/// Where a readiness probe writes: one value, overwritten by each probe.
const PROBE: TableDefinition<u8, &[u8]> = TableDefinition::new("probe");
/// The probe's size: about what a batch of a few sessions needs, so that a
/// probe succeeds when writes would.
const PROBE_BYTES: usize = 16 * 1024;
use crate::record::{
    Applied, Change, ID_BYTES, Policy, SessionId, SessionRecord, UnixMillis, apply,
};
use crate::store::{SaveOutcome, StoreError};
use redb::{Database, ReadableTable, ReadableTableMetadata};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub(super) enum WriteOp {
    Create {
        id: SessionId,
        record: SessionRecord,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Save {
        id: SessionId,
        patches: Vec<Map<String, Value>>,
        expiry_s: Option<u64>,
        cycle_to: Option<(SessionId, String)>,
        now_ms: UnixMillis,
        policy: Policy,
        /// `SaveOp::expect`: (subject key, the subject the result must have).
        expect: Option<(String, Option<String>)>,
        reply: oneshot::Sender<Result<SaveOutcome, StoreError>>,
    },
    Delete {
        id: SessionId,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Deletes up to `limit` expired sessions. A transaction of sweeps
    /// alone skips the fsync unless `durable`: losing it in a crash only
    /// means sweeping again, and a later durable commit persists it.
    ClearExpired {
        now_ms: UnixMillis,
        limit: usize,
        durable: bool,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Writes a probe value, to learn whether writes work.
    Probe {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Changes the index of subjects, or revokes a session through it;
    /// then, in the same transaction, `then` (the session write an index
    /// entry was added for: both commit or neither does).
    Index {
        op: IndexOp,
        then: Option<Box<WriteOp>>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// What bounds the writer's transactions.
#[derive(Clone, Copy)]
pub(super) struct Bounds {
    /// Past this many sessions, creating one evicts the nearest deadline.
    pub max_sessions: usize,
}

/// A committed batch's replies, with the commit's outcome.
type Replies = (Vec<Pending>, Result<(), String>);

/// Answers each caller of a batch.
pub(super) fn reply_all((replies, outcome): Replies) {
    for reply in replies {
        reply(outcome.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

/// Where the writer hands a batch's replies: to one task on the runtime the
/// store was opened in, which wakes the callers from there. Replying from
/// the writer thread, each caller's wake was a system call (the runtime's
/// eventfd written once per reply, 25 to a batch at 64 writers); handed
/// over, a batch costs one. Without a runtime (command-line tools) the
/// writer replies itself.
pub(super) fn replier() -> Option<tokio::sync::mpsc::UnboundedSender<Replies>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Replies>();
    runtime.spawn(async move {
        while let Some(batch) = rx.recv().await {
            reply_all(batch);
        }
    });
    Some(tx)
}

pub(super) fn writer_loop(
    file: Arc<StoreFile>,
    cache: Arc<ReadCache>,
    mut rx: mpsc::Receiver<WriteOp>,
    bounds: Bounds,
    replier: Option<tokio::sync::mpsc::UnboundedSender<Replies>>,
) {
    // A runtime shutting down has no task left to reply: the writer does.
    let deliver = |batch: Replies| match &replier {
        Some(tx) => {
            if let Err(unsent) = tx.send(batch) {
                reply_all(unsent.0);
            }
        }
        None => reply_all(batch),
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        drain(&mut rx, &mut batch);
        // More than one write queued means writers are arriving faster than
        // commits: the core is given up once before committing, so that the
        // requests the runtime has in hand can join this commit instead of
        // paying for the next. A lone write commits at once; on a core of
        // its own, the yield returns at once.
        if batch.len() > 1 && batch.len() < MAX_BATCH {
            std::thread::yield_now();
            drain(&mut rx, &mut batch);
        }
        // A panic (redb's, on a corrupt page) loses this batch, whose callers
        // hear that their write failed, and not the writer: later batches
        // are still tried, and readiness reports the fault.
        // Sweeps go in a transaction of their own, after the writes that
        // queued with them: a write then waits for at most one bounded
        // sweep, never shares its commit with one.
        let (sweeps, writes): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|op| matches!(op, WriteOp::ClearExpired { .. }));
        for batch in [writes, sweeps] {
            if batch.is_empty() {
                continue;
            }
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_batch(&file, &cache, batch, &bounds, &deliver)
            }));
            if let Err(payload) = run {
                file.record_panic(&StoreError::panicked(payload));
            }
        }
    }
}

/// Takes what is queued, up to a batch.
fn drain(rx: &mut mpsc::Receiver<WriteOp>, batch: &mut Vec<WriteOp>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

fn run_batch(
    file: &StoreFile,
    cache: &ReadCache,
    batch: Vec<WriteOp>,
    bounds: &Bounds,
    deliver: &dyn Fn(Replies),
) {
    let failed = match file.for_writer() {
        Ok(db) => apply_batch(
            &db,
            cache,
            batch,
            bounds,
            |outcome, evicted| {
                file.record(outcome);
                file.note_evicted(evicted);
            },
            deliver,
        ),
        Err(e) => {
            let message = format!("the store's file is not open: {e}");
            file.record(Err(&message));
            fail_all(batch, &message);
            true
        }
    };
    if failed {
        file.after_failure();
    }
}

fn fail_all(batch: Vec<WriteOp>, message: &str) {
    for op in batch {
        reply_slot(op)(Err(message));
    }
}

/// A reply waiting for the transaction's outcome: sent as computed when the
/// commit is durable, or as the commit's error.
type Pending = Box<dyn FnOnce(Result<(), &str>) + Send>;

fn pending<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Pending {
    Box::new(move |commit: Result<(), &str>| {
        let _ = reply.send(match commit {
            Ok(()) => result,
            Err(message) => Err(StoreError::Backend(message.to_string().into())),
        });
    })
}

/// Applies a batch in one transaction. A storage error in any operation
/// aborts the whole transaction, so no half-applied change is ever committed.
/// Applies a batch in one transaction and says whether it failed;
/// `on_outcome` hears the outcome before any caller does.
pub(super) fn apply_batch(
    db: &Database,
    cache: &ReadCache,
    batch: Vec<WriteOp>,
    bounds: &Bounds,
    on_outcome: impl FnOnce(Result<(), &str>, u64),
    deliver: &dyn Fn(Replies),
) -> bool {
    fn touches(op: &WriteOp, out: &mut Vec<SessionId>) {
        match op {
            WriteOp::Create { id, .. } | WriteOp::Delete { id, .. } => out.push(*id),
            WriteOp::Save { id, cycle_to, .. } => {
                out.push(*id);
                out.extend(cycle_to.as_ref().map(|(n, _)| *n));
            }
            WriteOp::Index { op, then, .. } => {
                out.extend(op.touches());
                if let Some(then) = then {
                    touches(then, out);
                }
            }
            WriteOp::ClearExpired { .. } | WriteOp::Probe { .. } => {}
        }
    }
    let mut touched = Vec::with_capacity(batch.len());
    for op in &batch {
        touches(op, &mut touched);
    }
    apply_batch_inner(
        db,
        batch,
        bounds,
        |written, outcome, evicted| {
            cache.update(&touched, written);
            on_outcome(outcome, evicted);
        },
        deliver,
    )
}

/// `before_replies` runs after the outcome is settled and before any caller
/// hears of it, with what the batch wrote if it committed.
fn apply_batch_inner(
    db: &Database,
    batch: Vec<WriteOp>,
    bounds: &Bounds,
    before_replies: impl FnOnce(Vec<Written>, Result<(), &str>, u64),
    deliver: &dyn Fn(Replies),
) -> bool {
    let creates = batch.iter().any(|op| matches!(op, WriteOp::Create { .. }));
    let mut evicted = 0;
    let sweeps_only = batch
        .iter()
        .all(|op| matches!(op, WriteOp::ClearExpired { durable: false, .. }));
    let txn = match db.begin_write() {
        Ok(mut t) => {
            if sweeps_only {
                // Refused only for a transaction that made savepoints.
                let _ = t.set_durability(redb::Durability::None);
            }
            t
        }
        Err(e) => {
            let message = format!("cannot begin a write transaction: {e}");
            return fail_settled(batch, &message, before_replies);
        }
    };
    let mut replies = Vec::with_capacity(batch.len());
    let mut written = Vec::with_capacity(batch.len());
    let mut storage_error = None;
    {
        let tables = txn
            .open_table(SESSIONS)
            .and_then(|s| Ok((s, txn.open_table(EXPIRY)?)));
        let (mut sessions, mut expiry) = match tables {
            Ok(t) => t,
            Err(e) => {
                let message = format!("cannot open tables: {e}");
                return fail_settled(batch, &message, before_replies);
            }
        };
        if batch.iter().any(|op| matches!(op, WriteOp::Probe { .. })) {
            // A write of real size: an empty transaction commits even on a
            // full disk, since it only rewrites pages the file already has.
            let probed = txn
                .open_table(PROBE)
                .and_then(|mut t| Ok(t.insert(0, [0u8; PROBE_BYTES].as_slice()).map(|_| ())?));
            if let Err(e) = probed {
                storage_error = Some(format!("probe: {e}"));
            }
        }
        for op in batch {
            let (reply, error) = match op {
                WriteOp::Index { op, then, reply } => {
                    let result =
                        super::index::apply(&txn, &mut sessions, &mut expiry, op, &mut written);
                    let mut error = result.as_ref().err().map(ToString::to_string);
                    let indexed = pending(reply, result);
                    match then {
                        None => (indexed, error),
                        Some(then) => {
                            let (written_reply, e) =
                                apply_one(&mut sessions, &mut expiry, *then, &mut written);
                            error = error.or(e);
                            let both: Pending = Box::new(move |commit| {
                                indexed(commit);
                                written_reply(commit);
                            });
                            (both, error)
                        }
                    }
                }
                op => apply_one(&mut sessions, &mut expiry, op, &mut written),
            };
            replies.push(reply);
            if let Some(e) = error {
                storage_error.get_or_insert(e);
            }
        }
        if creates && storage_error.is_none() {
            match evict_past(
                &mut sessions,
                &mut expiry,
                bounds.max_sessions,
                &mut written,
            ) {
                Ok(n) => evicted = n,
                Err(e) => storage_error = Some(e.to_string()),
            }
        }
    }
    let outcome = match storage_error {
        Some(e) => {
            drop(txn);
            Err(format!("write aborted: {e}"))
        }
        None => txn.commit().map_err(|e| format!("commit failed: {e}")),
    };
    if outcome.is_err() {
        written.clear();
        evicted = 0;
    }
    before_replies(
        written,
        outcome.as_ref().map(|_| ()).map_err(String::as_str),
        evicted,
    );
    let failed = outcome.is_err();
    deliver((replies, outcome));
    failed
}

/// A batch that failed before any of it ran.
fn fail_settled(
    batch: Vec<WriteOp>,
    message: &str,
    before_replies: impl FnOnce(Vec<Written>, Result<(), &str>, u64),
) -> bool {
    before_replies(Vec::new(), Err(message), 0);
    fail_all(batch, message);
    true
}

/// The reply of an operation that never ran.
fn reply_slot(op: WriteOp) -> Pending {
    fn never<T>() -> Result<T, StoreError> {
        Err(StoreError::Backend("not applied".into()))
    }
    match op {
        WriteOp::Create { reply, .. } => pending(reply, never()),
        WriteOp::Delete { reply, .. } => pending(reply, never()),
        WriteOp::Save { reply, .. } => pending(reply, never()),
        WriteOp::ClearExpired { reply, .. } => pending(reply, never()),
        WriteOp::Probe { reply } => pending(reply, never()),
        WriteOp::Index { reply, then, .. } => {
            let indexed = pending(reply, never());
            match then {
                None => indexed,
                Some(then) => {
                    let written = reply_slot(*then);
                    Box::new(move |commit| {
                        indexed(commit);
                        written(commit);
                    })
                }
            }
        }
    }
}

/// Applies one operation; returns its reply and the storage error, if any,
/// that must abort the transaction, and notes what it left in `written`.
fn apply_one(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    op: WriteOp,
    written: &mut Vec<Written>,
) -> (Pending, Option<String>) {
    fn done<T: Send + 'static>(
        reply: oneshot::Sender<Result<T, StoreError>>,
        result: Result<T, StoreError>,
    ) -> (Pending, Option<String>) {
        let error = result.as_ref().err().map(ToString::to_string);
        (pending(reply, result), error)
    }
    match op {
        WriteOp::Create { id, record, reply } => {
            let result = put(sessions, expiry, &id, &record);
            written.push((id, Some(Arc::new(record))));
            done(reply, result)
        }
        WriteOp::Delete { id, reply } => {
            written.push((id, None));
            done(reply, remove(sessions, expiry, &id).map(|r| r.is_some()))
        }
        WriteOp::ClearExpired {
            now_ms,
            limit,
            reply,
            ..
        } => done(
            reply,
            clear_expired(sessions, expiry, now_ms, limit, written),
        ),
        WriteOp::Probe { reply } => done(reply, Ok(())),
        WriteOp::Index { reply, .. } => done(
            reply,
            Err(StoreError::Backend(
                "index operation outside a transaction".into(),
            )),
        ),
        WriteOp::Save {
            id,
            patches,
            expiry_s,
            cycle_to,
            now_ms,
            policy,
            expect,
            reply,
        } => {
            let change = Change {
                patches: &patches,
                expiry_s,
            };
            let op = crate::store::SaveOp {
                change,
                cycle_to,
                now_ms,
                policy,
                expect: expect.as_ref().map(|(key, subject)| crate::store::Expect {
                    key,
                    subject: subject.as_deref(),
                }),
                base: None,
            };
            let result = save(sessions, expiry, &id, &op);
            written.push((id, None));
            if let Ok(SaveOutcome::Saved { id, record }) = &result {
                written.push((*id, Some(record.clone())));
            }
            done(reply, result)
        }
    }
}

fn save(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
    op: &crate::store::SaveOp<'_>,
) -> Result<SaveOutcome, StoreError> {
    let now_ms = op.now_ms;
    // Read, not removed: a refused or re-indexed write writes nothing.
    let Some(current) = get(sessions, id)?.filter(|c| c.is_live(now_ms)) else {
        // An expired or unreadable row goes now rather than at the sweep.
        remove(sessions, expiry, id)?;
        return Ok(SaveOutcome::Gone);
    };
    let old_expires_ms = current.expires_ms;
    match apply(current, &op.change, &op.policy, now_ms) {
        Ok(Applied::Saved(mut record)) => {
            if let Some(actual) = op.unexpected(&record) {
                return Ok(SaveOutcome::Reindex(actual));
            }
            let new_id = match &op.cycle_to {
                Some((new_id, sid)) => {
                    record.sid = sid.clone();
                    delete(sessions, expiry, id, old_expires_ms)?;
                    put(sessions, expiry, new_id, &record)?;
                    *new_id
                }
                None => {
                    overwrite(sessions, expiry, id, old_expires_ms, &record)?;
                    *id
                }
            };
            Ok(SaveOutcome::Saved {
                id: new_id,
                record: Arc::new(record),
            })
        }
        Ok(Applied::Emptied) => {
            delete(sessions, expiry, id, old_expires_ms)?;
            Ok(SaveOutcome::Emptied)
        }
        Err(e) => Ok(SaveOutcome::Refused(e)),
    }
}

fn clear_expired(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    now_ms: UnixMillis,
    limit: usize,
    written: &mut Vec<Written>,
) -> Result<u64, StoreError> {
    // Deadlines are stored big-endian, so every key below this one is past.
    let upper = expiry_key(
        now_ms.saturating_add(1),
        &SessionId::from_bytes([0; ID_BYTES]),
    );
    let mut dead = Vec::new();
    for entry in expiry
        .range::<&[u8]>(..upper.as_slice())
        .map_err(backend)?
        .take(limit)
    {
        let (k, _) = entry.map_err(backend)?;
        dead.push(k.value().to_vec());
    }
    remove_by_deadline(sessions, expiry, &dead, written)
}

/// Deletes the sessions named by their expiry keys.
fn remove_by_deadline(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    keys: &[Vec<u8>],
    written: &mut Vec<Written>,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for k in keys {
        expiry.remove(k.as_slice()).map_err(backend)?;
        // An expiry key left by an unreadable record names no session.
        if sessions.remove(&k[8..]).map_err(backend)?.is_some() {
            removed += 1;
        }
        if let Ok(id) = <[u8; ID_BYTES]>::try_from(&k[8..]) {
            written.push((SessionId::from_bytes(id), None));
        }
    }
    Ok(removed)
}

/// Past `max` sessions, the ones with the nearest deadlines go: expired
/// ones first, then those saved least recently (every save renews the
/// deadline). The count is O(1) in redb (kept in the tree's header).
fn evict_past(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    max: usize,
    written: &mut Vec<Written>,
) -> Result<u64, StoreError> {
    let count = sessions.len().map_err(backend)?;
    let Some(excess) = count.checked_sub(max as u64).filter(|&e| e > 0) else {
        return Ok(0);
    };
    // Never a session this batch has just written (a short `expiry=N` may
    // give it the nearest deadline): its caller is told it was stored.
    let fresh: std::collections::HashSet<SessionId> = written
        .iter()
        .filter(|(_, r)| r.is_some())
        .map(|(id, _)| *id)
        .collect();
    let mut victims = Vec::new();
    for entry in expiry.iter().map_err(backend)? {
        if victims.len() as u64 >= excess {
            break;
        }
        let (k, _) = entry.map_err(backend)?;
        let key = k.value();
        let is_fresh = <[u8; ID_BYTES]>::try_from(&key[8..])
            .is_ok_and(|id| fresh.contains(&SessionId::from_bytes(id)));
        if !is_fresh {
            victims.push(key.to_vec());
        }
    }
    remove_by_deadline(sessions, expiry, &victims, written)
}
