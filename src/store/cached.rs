//! `kind: cached`: Django's `cached_db`. A local in-memory cache in front of
//! a durable store (PostgreSQL, Redis or the embedded file): reads are
//! served from the cache, a miss (or a cold start) reads the durable store
//! and fills the cache, and every write goes through to the durable store
//! before the response, then drops the local copy.
//!
//! Other instances learn of a write from the durable store itself
//! (`cached/listen.rs`): PostgreSQL's `NOTIFY`, sent by a trigger on the
//! table in each writing transaction (whoever writes), Redis's client-side caching invalidations (`CLIENT
//! TRACKING ... BCAST`). While that channel is down the cache is emptied
//! and bypassed, so a missed invalidation can never leave a stale copy.
//! Over the embedded file, which caches its own reads, the local cache is
//! off. MySQL has no such channel and is refused as a durable store.

mod barrier;
mod cache;
mod listen;

use super::embedded::EmbeddedStore;
use super::redis::RedisStore;
use super::sql::SqlStore;
use super::{OpenError, Revoked, SaveOp, SaveOutcome, ServerStore, StoreError};
use crate::config::{CachedConfig, StoreConfig};
use crate::record::{IndexEntry, Listed, SessionId, SessionRecord, UnixMillis};
pub use barrier::Barrier;
pub use cache::LocalCache;
use std::sync::Arc;

/// The store a `cached` store writes through to.
pub enum Durable {
    Sql(Box<SqlStore>),
    Redis(Box<RedisStore>),
    Embedded(EmbeddedStore),
}

/// Calls the same method on whichever durable store this is.
macro_rules! durable {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Durable::Sql($s) => Box::pin($call).await,
            Durable::Redis($s) => Box::pin($call).await,
            Durable::Embedded($s) => $call.await,
        }
    };
}

pub struct CachedStore {
    cache: Arc<LocalCache>,
    durable: Durable,
    /// The task that applies other instances' invalidations.
    listener: Option<tokio::task::JoinHandle<()>>,
    /// Where other instances write too: a cached copy waits for a round
    /// trip on the invalidation channel before it is served.
    barrier: Option<Arc<Barrier>>,
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

impl CachedStore {
    pub async fn open(cfg: &CachedConfig) -> Result<CachedStore, OpenError> {
        match &*cfg.durable {
            StoreConfig::Sql(sql) => {
                let channel = listen::channel(&sql.table);
                let store = SqlStore::open(sql).await?;
                store
                    .notify_changes(&channel)
                    .await
                    .map_err(|e| OpenError::Backend("cached store".into(), Box::new(e)))?;
                let cache = Arc::new(LocalCache::new(cfg.max_sessions, false));
                let barrier = Arc::new(Barrier::default());
                let listener =
                    listen::postgres(sql, channel, cache.clone(), barrier.clone()).await?;
                Ok(CachedStore {
                    cache,
                    durable: Durable::Sql(Box::new(store)),
                    listener: Some(listener),
                    barrier: Some(barrier),
                })
            }
            StoreConfig::Redis(r) => {
                let store = RedisStore::open(r).await?;
                let cache = Arc::new(LocalCache::new(cfg.max_sessions, false));
                let barrier = Arc::new(Barrier::default());
                let listener = listen::redis(r, cache.clone(), barrier.clone()).await?;
                Ok(CachedStore {
                    cache,
                    durable: Durable::Redis(Box::new(store)),
                    listener: Some(listener),
                    barrier: Some(barrier),
                })
            }
            StoreConfig::Embedded { path, max_sessions } => {
                let store = super::open_embedded(path, *max_sessions).await?;
                // The embedded store keeps a write-through cache of its
                // own, updated by its single writer as each write commits
                // (so never stale, and never left stale by a write cut
                // short): a second one in front of it would only add a
                // way to go stale. The local cache stays off.
                Ok(CachedStore {
                    cache: Arc::new(LocalCache::new(1, false)),
                    durable: Durable::Embedded(store),
                    listener: None,
                    barrier: None,
                })
            }
            other => Err(OpenError::Backend(
                "cached store".into(),
                format!("a {} store cannot be its durable store", other.kind()).into(),
            )),
        }
    }

    /// The local cache, for the tests that look into it.
    pub fn cache(&self) -> &LocalCache {
        &self.cache
    }

    pub fn durable_kind(&self) -> &'static str {
        match &self.durable {
            Durable::Sql(s) => s.kind(),
            Durable::Redis(_) => "redis",
            Durable::Embedded(_) => "embedded",
        }
    }

    /// Drops the local copies a write changed (the durable store tells
    /// the other instances).
    fn written(&self, id: &SessionId, op: &SaveOp<'_>) {
        self.cache.invalidate(id);
        if let Some((new_id, _)) = &op.cycle_to {
            self.cache.invalidate(new_id);
        }
    }
}

impl ServerStore for CachedStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let ticket = match (self.cache.get(id, now_ms), &self.barrier) {
            (Ok(record), None) => {
                self.cache.hit();
                return Ok(Some(record));
            }
            (Ok(_), Some(barrier)) => {
                barrier.pass().await;
                // The round trip applied any invalidation owed (or the
                // channel is down and the cache off): look again.
                match self.cache.get(id, now_ms) {
                    Ok(record) => {
                        self.cache.hit();
                        return Ok(Some(record));
                    }
                    Err(ticket) => ticket,
                }
            }
            (Err(ticket), _) => ticket,
        };
        let loaded = durable!(&self.durable, s => s.load(id, now_ms))?;
        if let (Some(ticket), Some(record)) = (ticket, &loaded) {
            self.cache.fill(id, ticket, record.clone());
        }
        Ok(loaded)
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let ticket = self.cache.ticket(id);
        durable!(&self.durable, s => s.create(id, record))?;
        if let Some(ticket) = ticket {
            self.cache.fill(id, ticket, Arc::new(record.clone()));
        }
        Ok(())
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        let out = durable!(&self.durable, s => s.save(id, op));
        self.written(id, op);
        out
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let out = durable!(&self.durable, s => s.delete(id));
        self.cache.invalidate(id);
        out
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        durable!(&self.durable, s => s.clear_expired(now_ms))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        durable!(&self.durable, s => s.ping())
    }

    async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        durable!(&self.durable, s => s.index(subject, entry, now_ms))
    }

    async fn create_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        record: &SessionRecord,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        let ticket = self.cache.ticket(&entry.id);
        let n = durable!(&self.durable, s => s.create_indexed(subject, entry, record, now_ms))?;
        if let Some(ticket) = ticket {
            self.cache.fill(&entry.id, ticket, Arc::new(record.clone()));
        }
        Ok(n)
    }

    async fn save_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> Result<(u64, SaveOutcome), StoreError> {
        let out = durable!(&self.durable, s => s.save_indexed(subject, entry, id, op));
        self.written(id, op);
        out
    }

    async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        durable!(&self.durable, s => s.indexed(key, subject, now_ms))
    }

    async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        durable!(&self.durable, s => s.find_sid(sid, now_ms))
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        let out = durable!(&self.durable, s => s.revoke(id, key, subject, now_ms));
        self.cache.invalidate(id);
        out
    }

    fn live_sessions(&self) -> Option<u64> {
        match &self.durable {
            Durable::Sql(s) => s.live_sessions(),
            Durable::Redis(s) => s.live_sessions(),
            Durable::Embedded(s) => s.live_sessions(),
        }
    }
}
