//! Session stores. Every store implements `SessionStore`, and one shared
//! conformance suite (tests/store_conformance.rs) runs against each.
//!
//! The write path is one atomic operation per response (`save`): the store
//! applies the upstream's change to its own current copy, so concurrent
//! requests that change different keys never lose each other's change, and a
//! session deleted meanwhile is never brought back.

pub mod cookie;
pub mod embedded;
pub mod memory;
pub mod redis;
pub mod table;

use crate::record::SessionId;
use crate::record::UpdateError;
use crate::record::{Change, SessionRecord, UnixMillis};
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store operation timed out")]
    Timeout,
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored session is corrupt: {0}")]
    Corrupt(#[source] serde_json::Error),
}

/// A save of an existing session.
#[derive(Debug, Clone)]
pub struct SaveOp<'a> {
    pub change: Change<'a>,
    /// `cycle`: move the session to this new id (with its new sid), deleting the old one.
    pub cycle_to: Option<(SessionId, String)>,
    pub now_ms: UnixMillis,
}

#[derive(Debug)]
pub enum SaveOutcome {
    Saved {
        id: SessionId,
        record: Arc<SessionRecord>,
    },
    /// The data became empty and the session was deleted.
    Emptied,
    /// The session no longer exists (flushed, cycled or expired meanwhile): nothing was written.
    Gone,
    /// The change was refused (too large); nothing was written.
    Refused(UpdateError),
}

pub trait SessionStore: Send + Sync + 'static {
    /// The live session under `id`, or `None` when absent or expired.
    fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send;

    /// Stores a new session under a fresh id.
    fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a change to the current copy of a live session, atomically.
    fn save(
        &self,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;

    /// Deletes a session; `true` when there was one to delete.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes expired sessions and says how many; 0 where expiry is native.
    fn clear_expired(
        &self,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store. An enum rather than a trait object: the trait's
/// futures stay unboxed on the hot path.
pub enum Store {
    Memory(memory::MemoryStore),
    Embedded(embedded::EmbeddedStore),
    Redis(self::redis::RedisStore),
}

impl Store {
    /// A hint that the session under `id` is about to be loaded: the stores
    /// that hold sessions in memory start fetching its slot, so that the
    /// load finds it in the cache. It never waits: a busy table is skipped.
    pub fn prefetch(&self, id: &SessionId) {
        match self {
            Store::Memory(s) => s.prefetch(id),
            Store::Embedded(s) => s.prefetch(id),
            Store::Redis(_) => {}
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }
}

/// Redis futures are deep; boxing them keeps the request future's type
/// shallow enough for the compiler's layout limits.
fn boxed<'a, T>(
    f: impl Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

impl SessionStore for Store {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        match self {
            Store::Memory(s) => s.load(id, now_ms).await,
            Store::Embedded(s) => s.load(id, now_ms).await,
            Store::Redis(s) => boxed(s.load(id, now_ms)).await,
        }
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.create(id, record).await,
            Store::Embedded(s) => s.create(id, record).await,
            Store::Redis(s) => boxed(s.create(id, record)).await,
        }
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        match self {
            Store::Memory(s) => s.save(id, op).await,
            Store::Embedded(s) => s.save(id, op).await,
            Store::Redis(s) => boxed(s.save(id, op)).await,
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => s.delete(id).await,
            Store::Embedded(s) => s.delete(id).await,
            Store::Redis(s) => boxed(s.delete(id)).await,
        }
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        match self {
            Store::Memory(s) => s.clear_expired(now_ms).await,
            Store::Embedded(s) => s.clear_expired(now_ms).await,
            Store::Redis(s) => boxed(s.clear_expired(now_ms)).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.ping().await,
            Store::Embedded(s) => s.ping().await,
            Store::Redis(s) => boxed(s.ping()).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{0} is in use by another process (a running sessiongate sweeps expired sessions itself)"
    )]
    Locked(String),
    #[error("cannot open {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot open {0}: {1}")]
    Backend(String, #[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where sessions live: a server-side store, or the cookie itself.
pub enum Backend {
    Server(Store),
    Sealed(cookie::CookieStore),
}

/// Opens the configured store.
pub async fn open(
    cfg: &crate::config::SessionConfig,
    secrets: &[crate::config::Secret],
) -> Result<Backend, OpenError> {
    use crate::config::StoreConfig;
    let policy = cfg.policy;
    let store = match &cfg.store {
        StoreConfig::Memory { max_sessions } => {
            Store::Memory(memory::MemoryStore::new(*max_sessions, policy))
        }
        StoreConfig::Embedded { path } => {
            let path = path.clone();
            // Opening may recover a file after a crash: blocking work, kept off the runtime.
            let store =
                tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&path, policy))
                    .await
                    .map_err(|e| OpenError::Backend("embedded store".into(), Box::new(e)))??;
            Store::Embedded(store)
        }
        StoreConfig::Redis(r) => Store::Redis(self::redis::RedisStore::open(r, policy).await?),
        StoreConfig::Cookie => {
            return Ok(Backend::Sealed(cookie::CookieStore::new(
                secrets,
                &cfg.cookie.name,
            )));
        }
    };
    Ok(Backend::Server(store))
}
