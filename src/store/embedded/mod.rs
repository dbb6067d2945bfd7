//! The embedded store: one local redb file that survives restarts and crashes.
//!
//! redb is ACID with one writer at a time. All writes go to one writer
//! thread, which applies every pending operation in one transaction and
//! commits once (group commit): each session's changes apply in order, so
//! merges are atomic, and a write is acknowledged only after its commit is
//! durable on disk. Reads are served from a write-through cache of recent
//! sessions, or else by a point lookup on the request's own task.

mod file;
mod index;
mod rows;
mod writer;

use super::table::{Lookup, SessionTable};
use super::{OpenError, Revoked, SaveOp, SaveOutcome, ServerStore, Standing, StoreError};
use crate::record::{ID_BYTES, IndexEntry, Listed, SessionId};
use crate::record::{SessionRecord, UnixMillis};
use file::StoreFile;
use index::IndexOp;
use redb::{Database, ReadableDatabase, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::WriteOp;

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
/// Most expired sessions one sweep transaction deletes: about half a
/// millisecond of work, which is what a write queued behind it waits
/// (benches/sweep.rs: p99 write latency during a sweep of a million).
const SWEEP_BATCH: usize = 100;
/// Every this many sweep transactions, one is made durable.
const SWEEP_DURABLE_EVERY: u64 = 64;

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
        .map_err(|e| crate::limited!(crate::logging::LogClass::store, warn, error = %crate::logging::Chain(&e), "unreadable session record treated as no session"))
        .ok()
}

/// The writer's operation for a save.
fn save_op(
    id: &SessionId,
    op: &SaveOp<'_>,
    reply: oneshot::Sender<Result<SaveOutcome, StoreError>>,
) -> WriteOp {
    WriteOp::Save {
        id: *id,
        patches: op.change.patches.to_vec(),
        expiry_s: op.change.expiry_s,
        cycle_to: op.cycle_to.clone(),
        now_ms: op.now_ms,
        policy: op.policy,
        expect: op
            .expect
            .map(|e| (e.key.to_string(), e.subject.map(str::to_string))),
        reply,
    }
}

/// The reply of a write the writer dropped.
fn lost() -> StoreError {
    StoreError::Backend("the write was lost: the embedded store's writer failed".into())
}

fn encode(record: &SessionRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a session record always serializes")
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
    file: Arc<StoreFile>,
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

    /// Sessions evicted past `max_sessions` since the store was opened.
    pub fn evicted(&self) -> u64 {
        self.file.evicted()
    }

    /// Opens the store with the default bound on sessions.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_bounded(path, crate::config::DEFAULT_EMBEDDED_MAX_SESSIONS)
    }

    /// Opens the store; past `max_sessions`, creating a session evicts the
    /// one whose deadline is nearest.
    pub fn open_bounded(path: &Path, max_sessions: usize) -> Result<Self, OpenError> {
        let bounds = writer::Bounds { max_sessions };
        let file = Arc::new(StoreFile::open(path)?);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer_file = file.clone();
        let cache = Arc::new(ReadCache::new());
        let writer_cache = cache.clone();
        let replier = writer::replier();
        let thread = std::thread::Builder::new()
            .name("sessiongate-embedded-writer".into())
            .spawn(move || writer::writer_loop(writer_file, writer_cache, rx, bounds, replier))
            .map_err(|e| OpenError::Io("writer thread".into(), e))?;
        Ok(EmbeddedStore {
            file,
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
        let writer = self.writer.as_ref().ok_or_else(lost)?;
        writer.send(op).await.map_err(|_| lost())?;
        rx.await.map_err(|_| lost())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.file.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
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
            let db = self.file.db()?;
            let txn = db.begin_read().map_err(backend)?;
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
        self.submit(save_op(id, op, tx), rx).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(WriteOp::Delete { id: *id, reply: tx }, rx)
            .await
    }

    /// In transactions of at most `SWEEP_BATCH` deletions, each queued
    /// behind the writes waiting meanwhile: a million expired sessions in
    /// one transaction stalled every write for seconds.
    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        let mut total = 0;
        for round in 1.. {
            let (tx, rx) = oneshot::channel();
            let durable = round % SWEEP_DURABLE_EVERY == 0;
            let op = WriteOp::ClearExpired {
                now_ms,
                limit: SWEEP_BATCH,
                durable,
                reply: tx,
            };
            let n = self.submit(op, rx).await?;
            total += n;
            if n < SWEEP_BATCH as u64 {
                break;
            }
        }
        // What the last rounds deleted is made durable.
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::ClearExpired {
            now_ms,
            limit: 0,
            durable: true,
            reply: tx,
        };
        self.submit(op, rx).await?;
        Ok(total)
    }

    /// Readiness covers the write path: while writes fail, an empty write
    /// transaction is tried, so that readiness returns by itself once they
    /// succeed again (after a full disk has space again).
    async fn ping(&self) -> Result<(), StoreError> {
        if self.file.writes_failing() {
            let (tx, rx) = oneshot::channel();
            let _ = self.submit(WriteOp::Probe { reply: tx }, rx).await;
        }
        self.file.health()?;
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            txn.open_table(SESSIONS).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.index_op(IndexOp::Add {
            subject: subject.to_string(),
            entry: entry.clone(),
            now_ms,
        })
        .await
    }

    async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        let entries = {
            let subject = subject.to_string();
            self.read(move |db| index::entries(db, &subject)).await?
        };
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (id, sid, at, record) in entries {
            match super::standing(&id, &sid, at, record.as_ref(), key, subject, now_ms) {
                Standing::Live(l) => live.push(l),
                Standing::Pending => {}
                Standing::Stale { gone } => stale.push((id, sid, gone)),
            }
        }
        if !stale.is_empty() {
            self.index_op(IndexOp::Drop {
                subject: subject.to_string(),
                stale,
                before_ms: now_ms.saturating_sub(super::INDEX_GRACE_MS) + 1,
            })
            .await?;
        }
        Ok(live)
    }

    async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        let found = {
            let sid = sid.to_string();
            self.read(move |db| index::sid(db, &sid)).await?
        };
        let Some(id) = found else {
            return Ok(None);
        };
        let record = ServerStore::load(self, &id, now_ms).await?;
        Ok(record.is_some_and(|r| r.sid == sid).then_some(id))
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        let code = self
            .index_op(IndexOp::Revoke {
                id: *id,
                key: key.to_string(),
                subject: subject.to_string(),
                now_ms,
            })
            .await?;
        Ok(index::revoked(code))
    }

    /// One transaction: the entry and the session commit together.
    async fn create_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        record: &SessionRecord,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let create = WriteOp::Create {
            id: entry.id,
            record: record.clone(),
            reply: tx,
        };
        let n = self.index_then(subject, entry, now_ms, create).await;
        rx.await.map_err(|_| lost())??;
        n
    }

    /// One transaction: the entry and the save commit together.
    async fn save_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> Result<(u64, SaveOutcome), StoreError> {
        let (tx, rx) = oneshot::channel();
        let n = self
            .index_then(subject, entry, op.now_ms, save_op(id, op, tx))
            .await;
        let out = rx.await.map_err(|_| lost())??;
        Ok((n?, out))
    }

    /// redb keeps each table's length in its header: no scan.
    fn live_sessions(&self) -> Option<u64> {
        let db = self.file.db().ok()?;
        let txn = db.begin_read().ok()?;
        let table = txn.open_table(SESSIONS).ok()?;
        redb::ReadableTableMetadata::len(&table).ok()
    }
}

impl EmbeddedStore {
    /// Adds an index entry and applies `then` in the same transaction.
    async fn index_then(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
        then: WriteOp,
    ) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op = IndexOp::Add {
            subject: subject.to_string(),
            entry: entry.clone(),
            now_ms,
        };
        self.submit(
            WriteOp::Index {
                op,
                then: Some(Box::new(then)),
                reply: tx,
            },
            rx,
        )
        .await
    }

    async fn index_op(&self, op: IndexOp) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            WriteOp::Index {
                op,
                then: None,
                reply: tx,
            },
            rx,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Change, SessionData};
    use crate::store::SaveOp;
    use serde_json::{Map, Value};

    const POLICY: crate::record::Policy = crate::record::Policy {
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
        let store = EmbeddedStore::open(&dir.join("sessions.db")).unwrap();
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
                policy: POLICY,
                expect: None,
                reply: oneshot::channel().0,
            },
            WriteOp::Delete {
                id,
                reply: oneshot::channel().0,
            },
        ];
        let db = store.file.db().unwrap();
        let bounds = writer::Bounds { max_sessions: 100 };
        writer::apply_batch(
            &db,
            &store.cache,
            batch,
            &bounds,
            |_, _| {},
            &writer::reply_all,
        );
        assert_eq!(cached(&store, &id), None);
        assert!(store.load(&id, now).await.unwrap().is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Replies reach callers whether the store was opened outside any
    /// runtime (the writer answers itself), or in one that has since shut
    /// down, taking the task that answered for the writer with it.
    #[test]
    fn writes_are_answered_without_the_runtime_the_store_was_opened_in() {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-embedded-{}",
            SessionId::generate().encode()
        ));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let now = crate::record::now_ms();
        let mut record = SessionRecord::new("sid-a".into(), now);
        record.expires_ms = now + 600_000;
        let outside = EmbeddedStore::open(&dir.join("outside.db")).unwrap();
        let gone = runtime().block_on(async { EmbeddedStore::open(&dir.join("gone.db")).unwrap() });
        for store in [&outside, &gone] {
            let id = SessionId::generate();
            let answered = runtime().block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    store.create(&id, &record),
                )
                .await
            });
            assert!(matches!(answered, Ok(Ok(()))), "no answer from the writer");
            assert!(runtime().block_on(store.load(&id, now)).unwrap().is_some());
        }
        drop((outside, gone));
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
            let store = EmbeddedStore::open(&path).unwrap();
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
                policy: POLICY,
                expect: None,
                base: None,
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
        let store = EmbeddedStore::open(&path).unwrap();
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
