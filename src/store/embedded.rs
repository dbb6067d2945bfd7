//! The embedded store: one local redb file that survives restarts and crashes.
//!
//! redb is ACID with one writer at a time. All writes go to one writer
//! thread, which applies every pending operation in one transaction and
//! commits once (group commit): each session's changes apply in order, so
//! merges are atomic, and a write is acknowledged only after its commit is
//! durable on disk. Reads are served from a write-through cache of recent
//! sessions, or else by a point lookup on the request's own task.

use super::table::{Lookup, SessionTable};
use super::{OpenError, SaveOp, SaveOutcome, ServerStore, StoreError};
use crate::record::{Applied, Change, Policy, SessionRecord, UnixMillis, apply};
use crate::record::{ID_BYTES, SessionId};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// (deadline, id) -> (): lets the sweep find expired sessions without reading them all.
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");
/// Sessions kept in memory in front of the file (about 270 bytes each for a
/// few short keys). The running proxy holds the file's lock, so every write
/// goes through this process and updates the cache: reads of up to this many
/// sessions never reach the file.
const READ_CACHE_ENTRIES: usize = 1_000_000;
/// Operations queued for the writer; senders wait when it is full.
const WRITE_QUEUE: usize = 4096;
/// Most operations applied in one transaction.
const MAX_BATCH: usize = 512;

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

fn expiry_key(expires_ms: UnixMillis, id: &SessionId) -> [u8; 8 + ID_BYTES] {
    let mut k = [0u8; 8 + ID_BYTES];
    k[..8].copy_from_slice(&expires_ms.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn decode(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

/// A record that cannot be read is no session, never an error on every request.
fn readable(decoded: Result<SessionRecord, StoreError>) -> Option<SessionRecord> {
    decoded
        .map_err(|e| crate::limited!(crate::logging::LogClass::store, warn, error = %crate::error::Chain(&e), "unreadable session record treated as no session"))
        .ok()
}

fn encode(record: &SessionRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a session record always serializes")
}

enum WriteOp {
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
        reply: oneshot::Sender<Result<SaveOutcome, StoreError>>,
    },
    Delete {
        id: SessionId,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    ClearExpired {
        now_ms: UnixMillis,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// Recently read and written sessions. A write invalidates the ids it touched, bumps the
/// generation and, once committed, puts what it wrote, all under the lock
/// and before it is acknowledged; a read that raced with a write (the
/// generation moved) does not fill the cache, so a stale copy is never put
/// back.
struct ReadCache {
    inner: std::sync::Mutex<(u64, SessionTable)>,
}

/// What a committed write left under an id: the record, or nothing. Listed
/// in the batch's order, so that an id the batch saves and then deletes ends
/// up out of the cache, not with the record of its earlier save.
type Written = (SessionId, Option<Arc<SessionRecord>>);

impl ReadCache {
    fn new() -> Self {
        ReadCache {
            inner: std::sync::Mutex::new((0, SessionTable::new(READ_CACHE_ENTRIES))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, SessionTable)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &SessionId, now_ms: UnixMillis) -> Result<Arc<SessionRecord>, u64> {
        let mut g = self.lock();
        match g.1.read(id, now_ms) {
            Lookup::Live(record) => Ok(record),
            Lookup::Expired | Lookup::Missing => Err(g.0),
        }
    }

    /// Starts fetching where the cached session would be; skipped when the
    /// cache is busy.
    fn prefetch(&self, id: &SessionId) {
        if let Ok(g) = self.inner.try_lock() {
            g.1.prefetch(id);
        }
    }

    /// Fills the cache from a read, unless a write moved the generation since.
    fn fill(&self, id: &SessionId, record: &Arc<SessionRecord>, generation: u64) {
        let mut g = self.lock();
        if g.0 == generation {
            g.1.put(*id, record.clone());
        }
    }

    fn update(&self, touched: &[SessionId], written: Vec<Written>) {
        let mut g = self.lock();
        g.0 += 1;
        for id in touched {
            g.1.pop(id);
        }
        for (id, record) in written {
            match record {
                Some(r) => {
                    g.1.put(id, r);
                }
                None => {
                    g.1.pop(&id);
                }
            }
        }
    }
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    cache: Arc<ReadCache>,
    writer: Option<mpsc::Sender<WriteOp>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Closing the store finishes the writer's last commit and releases the
/// file lock before the drop returns, so the file can be reopened at once.
impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EmbeddedStore {
    pub fn prefetch(&self, id: &SessionId) {
        self.cache.prefetch(id);
    }

    pub fn open(path: &Path, policy: Policy) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Io(dir.display().to_string(), e))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                OpenError::Locked(path.display().to_string())
            }
            other => OpenError::Backend(
                path.display().to_string(),
                Box::new(redb::Error::from(other)),
            ),
        })?;
        let setup = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(SESSIONS)?;
            txn.open_table(EXPIRY)?;
            txn.commit()?;
            Ok(())
        };
        setup().map_err(|e| OpenError::Backend(path.display().to_string(), Box::new(e)))?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer_db = db.clone();
        let cache = Arc::new(ReadCache::new());
        let writer_cache = cache.clone();
        let thread = std::thread::Builder::new()
            .name("sessiongate-embedded-writer".into())
            .spawn(move || writer_loop(writer_db, writer_cache, rx, policy))
            .map_err(|e| OpenError::Io("writer thread".into(), e))?;
        Ok(EmbeddedStore {
            db,
            cache,
            writer: Some(tx),
            thread: Some(thread),
        })
    }

    async fn submit<T>(
        &self,
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Backend("the embedded store's writer has stopped".into());
        let writer = self.writer.as_ref().ok_or_else(gone)?;
        writer.send(op).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

fn writer_loop(
    db: Arc<Database>,
    cache: Arc<ReadCache>,
    mut rx: mpsc::Receiver<WriteOp>,
    policy: Policy,
) {
    let db = &*db;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        apply_batch(db, &cache, batch, &policy);
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
fn apply_batch(db: &Database, cache: &ReadCache, batch: Vec<WriteOp>, policy: &Policy) {
    let touched: Vec<SessionId> = batch
        .iter()
        .flat_map(|op| match op {
            WriteOp::Create { id, .. } | WriteOp::Delete { id, .. } => [Some(*id), None],
            WriteOp::Save { id, cycle_to, .. } => [Some(*id), cycle_to.as_ref().map(|(n, _)| *n)],
            WriteOp::ClearExpired { .. } => [None, None],
        })
        .flatten()
        .collect();
    apply_batch_inner(db, batch, policy, |written| cache.update(&touched, written));
}

/// `before_replies` runs after the outcome is settled and before any caller
/// hears of it, with what the batch wrote if it committed.
fn apply_batch_inner(
    db: &Database,
    batch: Vec<WriteOp>,
    policy: &Policy,
    before_replies: impl FnOnce(Vec<Written>),
) {
    let fail_all = |batch: Vec<WriteOp>, message: &str| {
        for op in batch {
            reply_slot(op)(Err(message));
        }
    };
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail_all(batch, &format!("cannot begin a write transaction: {e}")),
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
            Err(e) => return fail_all(batch, &format!("cannot open tables: {e}")),
        };
        for op in batch {
            let (reply, error) = apply_one(&mut sessions, &mut expiry, op, policy, &mut written);
            replies.push(reply);
            if let Some(e) = error {
                storage_error.get_or_insert(e);
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
    }
    before_replies(written);
    for reply in replies {
        reply(outcome.as_ref().map(|_| ()).map_err(String::as_str));
    }
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
    }
}

type Sessions<'t> = Table<'t, &'static [u8], &'static [u8]>;
type Expiry<'t> = Table<'t, &'static [u8], ()>;

fn put(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    sessions
        .insert(id.as_bytes().as_slice(), encode(record).as_slice())
        .map_err(backend)?;
    expiry
        .insert(expiry_key(record.expires_ms, id).as_slice(), ())
        .map_err(backend)?;
    Ok(())
}

fn remove(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    let old = match sessions.remove(id.as_bytes().as_slice()).map_err(backend)? {
        Some(v) => readable(decode(v.value())),
        None => None,
    };
    if let Some(r) = &old {
        expiry
            .remove(expiry_key(r.expires_ms, id).as_slice())
            .map_err(backend)?;
    }
    Ok(old)
}

/// Applies one operation; returns its reply and the storage error, if any,
/// that must abort the transaction, and notes what it left in `written`.
fn apply_one(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    op: WriteOp,
    policy: &Policy,
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
        WriteOp::ClearExpired { now_ms, reply } => {
            done(reply, clear_expired(sessions, expiry, now_ms, written))
        }
        WriteOp::Save {
            id,
            patches,
            expiry_s,
            cycle_to,
            now_ms,
            reply,
        } => {
            let change = Change {
                patches: &patches,
                expiry_s,
            };
            let result = save(sessions, expiry, &id, &change, cycle_to, now_ms, policy);
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
    change: &Change<'_>,
    cycle_to: Option<(SessionId, String)>,
    now_ms: UnixMillis,
    policy: &Policy,
) -> Result<SaveOutcome, StoreError> {
    let Some(current) = remove(sessions, expiry, id)? else {
        return Ok(SaveOutcome::Gone);
    };
    if !current.is_live(now_ms) {
        return Ok(SaveOutcome::Gone);
    }
    match apply(current.clone(), change, policy, now_ms) {
        Ok(Applied::Saved(mut record)) => {
            let new_id = match cycle_to {
                Some((new_id, sid)) => {
                    record.sid = sid;
                    new_id
                }
                None => *id,
            };
            put(sessions, expiry, &new_id, &record)?;
            Ok(SaveOutcome::Saved {
                id: new_id,
                record: Arc::new(record),
            })
        }
        Ok(Applied::Emptied) => Ok(SaveOutcome::Emptied),
        Err(e) => {
            // Refused: put back exactly what was there.
            put(sessions, expiry, id, &current)?;
            Ok(SaveOutcome::Refused(e))
        }
    }
}

fn clear_expired(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    now_ms: UnixMillis,
    written: &mut Vec<Written>,
) -> Result<u64, StoreError> {
    // Deadlines are stored big-endian, so every key below this one is past.
    let upper = expiry_key(
        now_ms.saturating_add(1),
        &SessionId::from_bytes([0; ID_BYTES]),
    );
    let mut dead = Vec::new();
    for entry in expiry.range::<&[u8]>(..upper.as_slice()).map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        dead.push(k.value().to_vec());
    }
    for k in &dead {
        expiry.remove(k.as_slice()).map_err(backend)?;
        sessions.remove(&k[8..]).map_err(backend)?;
        if let Ok(id) = <[u8; ID_BYTES]>::try_from(&k[8..]) {
            written.push((SessionId::from_bytes(id), None));
        }
    }
    Ok(dead.len() as u64)
}

impl ServerStore for EmbeddedStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let generation = match self.cache.get(id, now_ms) {
            Ok(r) => return Ok(Some(r)),
            Err(generation) => generation,
        };
        // A point read runs on the request's own task: it is a B-tree lookup
        // in redb's page cache (a few microseconds, a pread of one page when
        // cold), where a hop to the blocking pool and back costs tens of
        // microseconds of thread wake-ups (measured by benches/store_scale.rs).
        let found = {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(SESSIONS).map_err(backend)?;
            match table.get(id.as_bytes().as_slice()).map_err(backend)? {
                Some(v) => readable(decode(v.value()))
                    .filter(|r| r.is_live(now_ms))
                    .map(Arc::new),
                None => None,
            }
        };
        if let Some(r) = &found {
            self.cache.fill(id, r, generation);
        }
        Ok(found)
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            WriteOp::Create {
                id: *id,
                record: record.clone(),
                reply: tx,
            },
            rx,
        )
        .await
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            WriteOp::Save {
                id: *id,
                patches: op.change.patches.to_vec(),
                expiry_s: op.change.expiry_s,
                cycle_to: op.cycle_to.clone(),
                now_ms: op.now_ms,
                reply: tx,
            },
            rx,
        )
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(WriteOp::Delete { id: *id, reply: tx }, rx)
            .await
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(WriteOp::ClearExpired { now_ms, reply: tx }, rx)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            txn.open_table(SESSIONS).map_err(backend)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionData;
    use crate::store::SaveOp;

    const POLICY: Policy = Policy {
        ttl_s: 600,
        absolute_ttl_s: None,
        expire_at_browser_close: false,
        max_bytes: 4096,
    };

    fn cached(store: &EmbeddedStore, id: &SessionId) -> Option<SessionData> {
        store.cache.lock().1.peek(id).map(|r| r.data.clone())
    }

    fn object(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn a_batch_that_saves_then_deletes_leaves_nothing_cached() {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-embedded-{}",
            SessionId::generate().encode()
        ));
        let store = EmbeddedStore::open(&dir.join("sessions.db"), POLICY).unwrap();
        let now = crate::record::now_ms();
        let id = SessionId::generate();
        let mut record = SessionRecord::new("sid-a".into(), now);
        record.data = SessionData::from_map(&object(serde_json::json!({"a": 1})));
        record.expires_ms = now + 600_000;
        store.create(&id, &record).await.unwrap();
        // One transaction, as the writer makes of operations queued together.
        let batch = vec![
            WriteOp::Save {
                id,
                patches: vec![object(serde_json::json!({"b": 2}))],
                expiry_s: None,
                cycle_to: None,
                now_ms: now,
                reply: oneshot::channel().0,
            },
            WriteOp::Delete {
                id,
                reply: oneshot::channel().0,
            },
        ];
        apply_batch(&store.db, &store.cache, batch, &POLICY);
        assert_eq!(cached(&store, &id), None);
        assert!(store.load(&id, now).await.unwrap().is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn committed_writes_fill_the_cache_and_agree_with_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-embedded-{}",
            SessionId::generate().encode()
        ));
        let path = dir.join("sessions.db");
        let now = crate::record::now_ms();
        let (old, new, gone) = (
            SessionId::generate(),
            SessionId::generate(),
            SessionId::generate(),
        );
        {
            let store = EmbeddedStore::open(&path, POLICY).unwrap();
            let mut record = SessionRecord::new("sid-a".into(), now);
            record.data = SessionData::from_map(&object(serde_json::json!({"a": 1})));
            record.expires_ms = now + 600_000;
            store.create(&old, &record).await.unwrap();
            store.create(&gone, &record).await.unwrap();
            assert_eq!(cached(&store, &old), Some(record.data.clone()));

            let patches = [object(serde_json::json!({"b": 2}))];
            let op = SaveOp {
                change: Change {
                    patches: &patches,
                    expiry_s: None,
                },
                cycle_to: Some((new, "sid-b".into())),
                now_ms: now,
            };
            assert!(matches!(
                store.save(&old, &op).await.unwrap(),
                SaveOutcome::Saved { .. }
            ));
            assert_eq!(cached(&store, &old), None);
            let merged = SessionData::from_map(&object(serde_json::json!({"a": 1, "b": 2})));
            assert_eq!(cached(&store, &new), Some(merged.clone()));

            assert!(store.delete(&gone).await.unwrap());
            assert_eq!(cached(&store, &gone), None);
        }
        // What the cache served is what the file holds.
        let store = EmbeddedStore::open(&path, POLICY).unwrap();
        assert_eq!(cached(&store, &new), None);
        let loaded = store.load(&new, now).await.unwrap().unwrap();
        assert_eq!(
            loaded.data,
            SessionData::from_map(&object(serde_json::json!({"a": 1, "b": 2})))
        );
        assert_eq!(loaded.sid, "sid-b");
        assert!(store.load(&old, now).await.unwrap().is_none());
        assert!(store.load(&gone, now).await.unwrap().is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
