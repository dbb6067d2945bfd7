//! Session stores. Every store is a `SessionStore`, the cookie store
//! included, and one shared conformance suite (tests/store_conformance.rs)
//! runs against each. The stores that keep sessions on the server implement
//! the id-based `ServerStore`, which makes them a `SessionStore` whose
//! tickets are session ids.
//!
//! The write path is one atomic operation per response (`save`): the store
//! applies the upstream's change to its own current copy, so concurrent
//! requests that change different keys never lose each other's change, and a
//! session deleted meanwhile is never brought back.

pub mod cached;
pub mod cookie;
pub mod embedded;
mod index;
pub mod memcached;
pub mod memory;
mod open;
pub mod redis;
pub mod sql;
mod stripes;
mod subjects;
pub mod table;

use crate::record::UpdateError;
use crate::record::{Change, Policy, SessionRecord, UnixMillis};
use crate::record::{IndexEntry, Listed, SessionId, subject_of};
pub use index::{INDEX_GRACE_MS, INDEX_PRUNE_AT, Revoked, Standing, standing};
pub use open::{OpenError, open, open_embedded};
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store operation timed out")]
    Timeout,
    #[error("store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored session is corrupt")]
    Corrupt(#[source] serde_json::Error),
    /// The store's code panicked: a bug, or a corrupt file that the storage
    /// engine does not survive. The request fails; the process goes on.
    #[error("the session store failed unexpectedly: {0}")]
    Panicked(String),
}

impl StoreError {
    /// The text of a caught panic's payload.
    pub fn panicked(payload: Box<dyn std::any::Any + Send>) -> StoreError {
        let text = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(p) => match p.downcast::<&'static str>() {
                Ok(s) => s.to_string(),
                Err(_) => "a panic without a message".to_string(),
            },
        };
        StoreError::Panicked(text)
    }
}

/// What the client holds for a session: the session's id (the cookie
/// carries it, signed), or, for the cookie store, the session itself,
/// sealed, as the values of its numbered cookies (index = chunk number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ticket {
    Id(SessionId),
    Sealed(Vec<String>),
}

/// What a store's session cookie carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// A session id, signed by the cookie codec.
    Id,
    /// The sealed session, in up to five numbered cookies.
    Session,
}

/// The outcome of creating a session.
#[derive(Debug)]
pub enum Created {
    Stored(Ticket),
    /// Too large for where it would live (the cookie store's cookies).
    Refused(UpdateError),
}

/// A save of an existing session.
#[derive(Debug, Clone)]
pub struct SaveOp<'a> {
    pub change: Change<'a>,
    /// `cycle`: move the session to this new id (with its new sid), deleting the old one.
    pub cycle_to: Option<(SessionId, String)>,
    pub now_ms: UnixMillis,
    /// The lifetimes and size bound the saved session gets: the config of
    /// the request that saves it, so that a reload applies from the next
    /// request on.
    pub policy: Policy,
    /// With `session.subject_key` and a cycle: the subject the new id was
    /// indexed under. A store whose result has another subject writes
    /// nothing and answers `Reindex`, so that no session is ever stored
    /// under an id its subject's index lacks.
    pub expect: Option<Expect<'a>>,
    /// The session the change was made against, as the request read it. A
    /// store that can check in one step that the session still holds it may
    /// store `record::apply(base, change)` instead of merging on its side.
    pub base: Option<&'a SessionRecord>,
}

/// The subject a save's result must have (see `SaveOp::expect`).
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub key: &'a str,
    pub subject: Option<&'a str>,
}

impl SaveOp<'_> {
    /// The subject the result has when it is not the one expected.
    pub fn unexpected(&self, result: &SessionRecord) -> Option<Option<String>> {
        let expect = self.expect?;
        let actual = subject_of(&result.data, expect.key);
        (actual.as_deref() != expect.subject).then_some(actual)
    }
}

#[derive(Debug)]
pub enum SaveOutcome<K = SessionId> {
    Saved {
        /// Where the session now is: the same id or ticket, or a new one after a cycle.
        id: K,
        record: Arc<SessionRecord>,
    },
    /// The data became empty and the session was deleted.
    Emptied,
    /// The session no longer exists (flushed, cycled or expired meanwhile): nothing was written.
    Gone,
    /// The change was refused (too large); nothing was written.
    Refused(UpdateError),
    /// The result's subject is not the one expected (`SaveOp::expect`):
    /// nothing was written; this is the subject it would have.
    Reindex(Option<String>),
}

impl<K> SaveOutcome<K> {
    pub fn map_id<L>(self, f: impl FnOnce(K) -> L) -> SaveOutcome<L> {
        match self {
            SaveOutcome::Saved { id, record } => SaveOutcome::Saved { id: f(id), record },
            SaveOutcome::Emptied => SaveOutcome::Emptied,
            SaveOutcome::Gone => SaveOutcome::Gone,
            SaveOutcome::Refused(e) => SaveOutcome::Refused(e),
            SaveOutcome::Reindex(s) => SaveOutcome::Reindex(s),
        }
    }
}

/// A store that keeps sessions on the server, by id.
pub trait ServerStore: Send + Sync + 'static {
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

    /// Adds an entry to `subject`'s index, before the session it names is
    /// written; says how many entries the index holds.
    fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The live sessions whose subject under `key` is `subject`, found
    /// through its index; stale entries are dropped on the way.
    fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Listed>, StoreError>> + Send;

    /// The id of the live session whose sid is `sid`, if it has a subject.
    fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<Option<SessionId>, StoreError>> + Send;

    /// Deletes the session under `id` if its subject under `key` is still
    /// `subject`, atomically.
    fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<Revoked, StoreError>> + Send;

    /// Live sessions (expired ones not yet swept included), where the
    /// store can count them without a scan.
    fn live_sessions(&self) -> Option<u64>;

    /// `index` then `create`: the entry first, so that the index never
    /// misses the session. Says how many entries the subject has. A store
    /// that can make both one step (one transaction) does.
    fn create_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        record: &SessionRecord,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move {
            let n = self.index(subject, entry, now_ms).await?;
            ServerStore::create(self, &entry.id, record).await?;
            Ok(n)
        }
    }

    /// `index` then `save` (of the session under `id`; `entry` names where
    /// the result will be), as `create_indexed`.
    fn save_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> impl Future<Output = Result<(u64, SaveOutcome), StoreError>> + Send {
        async move {
            let n = self.index(subject, entry, op.now_ms).await?;
            Ok((n, ServerStore::save(self, id, op).await?))
        }
    }
}

/// What every store is, whether it keeps sessions on the server or in the
/// client's cookie: the session pipeline speaks only this.
pub trait SessionStore: Send + Sync + 'static {
    /// What the session cookie carries for this store.
    fn carries(&self) -> Carries;

    /// Whether deleting a session (a flush, a cycle, a revocation) ends it
    /// for every copy of its cookie. Not so for the cookie store: a copy of
    /// an old cookie stays valid until its own sealed deadline.
    fn revocable(&self) -> bool;

    /// The live session a ticket names, or `None` when absent, expired,
    /// forged, or not this store's kind of ticket.
    fn load(
        &self,
        ticket: &Ticket,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send;

    /// Stores a new session, under `id` where the store keeps sessions by id.
    fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Applies a change to the current copy of a live session, atomically
    /// where the store is shared.
    fn save(
        &self,
        ticket: &Ticket,
        op: &SaveOp<'_>,
    ) -> impl Future<Output = Result<SaveOutcome<Ticket>, StoreError>> + Send;

    /// Deletes a session; `true` when there was one to delete.
    fn delete(&self, ticket: &Ticket) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes expired sessions and says how many; 0 where expiry is native.
    fn clear_expired(
        &self,
        now_ms: UnixMillis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<S: ServerStore> SessionStore for S {
    fn carries(&self) -> Carries {
        Carries::Id
    }

    fn revocable(&self) -> bool {
        true
    }

    async fn load(
        &self,
        ticket: &Ticket,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        match ticket {
            Ticket::Id(id) => ServerStore::load(self, id, now_ms).await,
            Ticket::Sealed(_) => Ok(None),
        }
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<Created, StoreError> {
        ServerStore::create(self, id, record).await?;
        Ok(Created::Stored(Ticket::Id(*id)))
    }

    async fn save(
        &self,
        ticket: &Ticket,
        op: &SaveOp<'_>,
    ) -> Result<SaveOutcome<Ticket>, StoreError> {
        match ticket {
            Ticket::Id(id) => Ok(ServerStore::save(self, id, op).await?.map_id(Ticket::Id)),
            Ticket::Sealed(_) => Ok(SaveOutcome::Gone),
        }
    }

    async fn delete(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        match ticket {
            Ticket::Id(id) => ServerStore::delete(self, id).await,
            Ticket::Sealed(_) => Ok(false),
        }
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        ServerStore::clear_expired(self, now_ms).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        ServerStore::ping(self).await
    }
}

/// The configured store. An enum rather than a trait object: the trait's
/// futures stay unboxed on the hot path.
pub enum Store {
    Memory(memory::MemoryStore),
    Embedded(embedded::EmbeddedStore),
    /// Boxed: its scripts and connection handles make it several times the
    /// size of the others.
    Redis(Box<self::redis::RedisStore>),
    Cookie(cookie::CookieStore),
    Sql(Box<sql::SqlStore>),
    Memcached(Box<memcached::MemcachedStore>),
    Cached(Box<cached::CachedStore>),
}

impl Store {
    /// A hint that the session under `id` is about to be loaded: the stores
    /// that hold sessions in memory start fetching its slot, so that the
    /// load finds it in the cache. It never waits: a busy table is skipped.
    pub fn prefetch(&self, id: &SessionId) {
        match self {
            Store::Memory(s) => s.prefetch(id),
            Store::Embedded(s) => s.prefetch(id),
            Store::Redis(_)
            | Store::Cookie(_)
            | Store::Sql(_)
            | Store::Memcached(_)
            | Store::Cached(_) => {}
        }
    }

    /// Sessions evicted past the store's bound since it was opened.
    pub fn evicted(&self) -> u64 {
        match self {
            Store::Memory(s) => s.evicted(),
            Store::Embedded(s) => s.evicted(),
            Store::Redis(_)
            | Store::Cookie(_)
            | Store::Sql(_)
            | Store::Memcached(_)
            | Store::Cached(_) => 0,
        }
    }

    /// Whether sessions live on the server, where they can be listed and
    /// revoked (not so in the cookie store).
    pub fn manages(&self) -> bool {
        !matches!(self, Store::Cookie(_))
    }

    /// See `ServerStore::index`; nothing on the cookie store.
    pub async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Memory(s) => s.index(subject, entry, now_ms).await,
            Store::Embedded(s) => s.index(subject, entry, now_ms).await,
            Store::Redis(s) => boxed(s.index(subject, entry, now_ms)).await,
            Store::Sql(s) => boxed(s.index(subject, entry, now_ms)).await,
            Store::Memcached(s) => boxed(s.index(subject, entry, now_ms)).await,
            Store::Cached(s) => boxed(s.index(subject, entry, now_ms)).await,
            Store::Cookie(_) => Ok(0),
        }
    }

    /// See `ServerStore::create_indexed`; a plain create on the cookie store.
    pub async fn create_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        record: &SessionRecord,
        now_ms: UnixMillis,
    ) -> Result<(u64, Created), StoreError> {
        let n = match self {
            Store::Memory(s) => s.create_indexed(subject, entry, record, now_ms).await?,
            Store::Embedded(s) => s.create_indexed(subject, entry, record, now_ms).await?,
            Store::Redis(s) => boxed(s.create_indexed(subject, entry, record, now_ms)).await?,
            Store::Sql(s) => boxed(s.create_indexed(subject, entry, record, now_ms)).await?,
            Store::Memcached(s) => boxed(s.create_indexed(subject, entry, record, now_ms)).await?,
            Store::Cached(s) => boxed(s.create_indexed(subject, entry, record, now_ms)).await?,
            Store::Cookie(s) => return Ok((0, s.create(&entry.id, record).await?)),
        };
        Ok((n, Created::Stored(Ticket::Id(entry.id))))
    }

    /// See `ServerStore::save_indexed`; a plain save on the cookie store.
    pub async fn save_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        ticket: &Ticket,
        op: &SaveOp<'_>,
    ) -> Result<(u64, SaveOutcome<Ticket>), StoreError> {
        let Ticket::Id(id) = ticket else {
            return Ok((0, SessionStore::save(self, ticket, op).await?));
        };
        let (n, out) = match self {
            Store::Memory(s) => s.save_indexed(subject, entry, id, op).await?,
            Store::Embedded(s) => s.save_indexed(subject, entry, id, op).await?,
            Store::Redis(s) => boxed(s.save_indexed(subject, entry, id, op)).await?,
            Store::Sql(s) => boxed(s.save_indexed(subject, entry, id, op)).await?,
            Store::Memcached(s) => boxed(s.save_indexed(subject, entry, id, op)).await?,
            Store::Cached(s) => boxed(s.save_indexed(subject, entry, id, op)).await?,
            Store::Cookie(s) => return Ok((0, s.save(ticket, op).await?)),
        };
        Ok((n, out.map_id(Ticket::Id)))
    }

    /// See `ServerStore::indexed`; nothing on the cookie store.
    pub async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        match self {
            Store::Memory(s) => s.indexed(key, subject, now_ms).await,
            Store::Embedded(s) => s.indexed(key, subject, now_ms).await,
            Store::Redis(s) => boxed(s.indexed(key, subject, now_ms)).await,
            Store::Sql(s) => boxed(s.indexed(key, subject, now_ms)).await,
            Store::Memcached(s) => boxed(s.indexed(key, subject, now_ms)).await,
            Store::Cached(s) => boxed(s.indexed(key, subject, now_ms)).await,
            Store::Cookie(_) => Ok(Vec::new()),
        }
    }

    /// See `ServerStore::find_sid`; nothing on the cookie store.
    pub async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        match self {
            Store::Memory(s) => s.find_sid(sid, now_ms).await,
            Store::Embedded(s) => s.find_sid(sid, now_ms).await,
            Store::Redis(s) => boxed(s.find_sid(sid, now_ms)).await,
            Store::Sql(s) => boxed(s.find_sid(sid, now_ms)).await,
            Store::Memcached(s) => boxed(s.find_sid(sid, now_ms)).await,
            Store::Cached(s) => boxed(s.find_sid(sid, now_ms)).await,
            Store::Cookie(_) => Ok(None),
        }
    }

    /// See `ServerStore::revoke`; nothing on the cookie store.
    pub async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        match self {
            Store::Memory(s) => s.revoke(id, key, subject, now_ms).await,
            Store::Embedded(s) => s.revoke(id, key, subject, now_ms).await,
            Store::Redis(s) => boxed(s.revoke(id, key, subject, now_ms)).await,
            Store::Sql(s) => boxed(s.revoke(id, key, subject, now_ms)).await,
            Store::Memcached(s) => boxed(s.revoke(id, key, subject, now_ms)).await,
            Store::Cached(s) => boxed(s.revoke(id, key, subject, now_ms)).await,
            Store::Cookie(_) => Ok(Revoked::Gone),
        }
    }

    /// Reads served from a `cached` store's local cache since it opened.
    pub fn cache_hits(&self) -> Option<u64> {
        match self {
            Store::Cached(s) => Some(s.cache().hits()),
            _ => None,
        }
    }

    /// See `ServerStore::live_sessions`.
    pub fn live_sessions(&self) -> Option<u64> {
        match self {
            Store::Memory(s) => s.live_sessions(),
            Store::Embedded(s) => s.live_sessions(),
            Store::Redis(s) => s.live_sessions(),
            Store::Sql(s) => s.live_sessions(),
            Store::Memcached(s) => s.live_sessions(),
            Store::Cached(s) => s.live_sessions(),
            Store::Cookie(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
            Store::Sql(s) => s.kind(),
            Store::Memcached(_) => "memcached",
            Store::Cached(_) => "cached",
            Store::Cookie(_) => "cookie",
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
    fn carries(&self) -> Carries {
        match self {
            Store::Memory(s) => s.carries(),
            Store::Embedded(s) => s.carries(),
            Store::Redis(s) => s.carries(),
            Store::Sql(s) => s.carries(),
            Store::Memcached(s) => s.carries(),
            Store::Cached(s) => s.carries(),
            Store::Cookie(s) => s.carries(),
        }
    }

    fn revocable(&self) -> bool {
        match self {
            Store::Memory(s) => s.revocable(),
            Store::Embedded(s) => s.revocable(),
            Store::Redis(s) => s.revocable(),
            Store::Sql(s) => s.revocable(),
            Store::Memcached(s) => s.revocable(),
            Store::Cached(s) => s.revocable(),
            Store::Cookie(s) => s.revocable(),
        }
    }

    async fn load(
        &self,
        ticket: &Ticket,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        match self {
            Store::Memory(s) => SessionStore::load(s, ticket, now_ms).await,
            Store::Embedded(s) => SessionStore::load(s, ticket, now_ms).await,
            Store::Redis(s) => boxed(SessionStore::load(&**s, ticket, now_ms)).await,
            Store::Sql(s) => boxed(SessionStore::load(&**s, ticket, now_ms)).await,
            Store::Memcached(s) => boxed(SessionStore::load(&**s, ticket, now_ms)).await,
            Store::Cached(s) => boxed(SessionStore::load(&**s, ticket, now_ms)).await,
            Store::Cookie(s) => s.load(ticket, now_ms).await,
        }
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<Created, StoreError> {
        match self {
            Store::Memory(s) => SessionStore::create(s, id, record).await,
            Store::Embedded(s) => SessionStore::create(s, id, record).await,
            Store::Redis(s) => boxed(SessionStore::create(&**s, id, record)).await,
            Store::Sql(s) => boxed(SessionStore::create(&**s, id, record)).await,
            Store::Memcached(s) => boxed(SessionStore::create(&**s, id, record)).await,
            Store::Cached(s) => boxed(SessionStore::create(&**s, id, record)).await,
            Store::Cookie(s) => s.create(id, record).await,
        }
    }

    async fn save(
        &self,
        ticket: &Ticket,
        op: &SaveOp<'_>,
    ) -> Result<SaveOutcome<Ticket>, StoreError> {
        match self {
            Store::Memory(s) => SessionStore::save(s, ticket, op).await,
            Store::Embedded(s) => SessionStore::save(s, ticket, op).await,
            Store::Redis(s) => boxed(SessionStore::save(&**s, ticket, op)).await,
            Store::Sql(s) => boxed(SessionStore::save(&**s, ticket, op)).await,
            Store::Memcached(s) => boxed(SessionStore::save(&**s, ticket, op)).await,
            Store::Cached(s) => boxed(SessionStore::save(&**s, ticket, op)).await,
            Store::Cookie(s) => s.save(ticket, op).await,
        }
    }

    async fn delete(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => SessionStore::delete(s, ticket).await,
            Store::Embedded(s) => SessionStore::delete(s, ticket).await,
            Store::Redis(s) => boxed(SessionStore::delete(&**s, ticket)).await,
            Store::Sql(s) => boxed(SessionStore::delete(&**s, ticket)).await,
            Store::Memcached(s) => boxed(SessionStore::delete(&**s, ticket)).await,
            Store::Cached(s) => boxed(SessionStore::delete(&**s, ticket)).await,
            Store::Cookie(s) => s.delete(ticket).await,
        }
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        match self {
            Store::Memory(s) => SessionStore::clear_expired(s, now_ms).await,
            Store::Embedded(s) => SessionStore::clear_expired(s, now_ms).await,
            Store::Redis(s) => boxed(SessionStore::clear_expired(&**s, now_ms)).await,
            Store::Sql(s) => boxed(SessionStore::clear_expired(&**s, now_ms)).await,
            Store::Memcached(s) => boxed(SessionStore::clear_expired(&**s, now_ms)).await,
            Store::Cached(s) => boxed(SessionStore::clear_expired(&**s, now_ms)).await,
            Store::Cookie(s) => s.clear_expired(now_ms).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => SessionStore::ping(s).await,
            Store::Embedded(s) => SessionStore::ping(s).await,
            Store::Redis(s) => boxed(SessionStore::ping(&**s)).await,
            Store::Sql(s) => boxed(SessionStore::ping(&**s)).await,
            Store::Memcached(s) => boxed(SessionStore::ping(&**s)).await,
            Store::Cached(s) => boxed(SessionStore::ping(&**s)).await,
            Store::Cookie(s) => s.ping().await,
        }
    }
}
