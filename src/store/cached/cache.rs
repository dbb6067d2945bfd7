//! The local cache of a `cached` store: sharded tables of sessions, least
//! recently used evicted past the bound, and per shard a generation that
//! every invalidation moves on. A read that missed fills the cache only if
//! its shard's generation did not move while it read the durable store,
//! checked under the shard's lock: a session invalidated meanwhile is never
//! cached in its old state.

use crate::record::{SessionId, SessionRecord, UnixMillis};
use crate::store::table::{Lookup, SessionTable};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 64;

struct Shard {
    table: SessionTable,
    generation: u64,
}

pub struct LocalCache {
    shards: Box<[Mutex<Shard>]>,
    /// Off while the invalidations cannot be trusted to arrive (the channel
    /// that carries them is down): every read goes to the durable store.
    enabled: AtomicBool,
    hits: AtomicU64,
}

/// What a fill must show: the shard's generation when the read began.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl LocalCache {
    pub fn new(max_sessions: usize, enabled: bool) -> LocalCache {
        let per_shard = (max_sessions / SHARDS).max(1);
        LocalCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: SessionTable::new(per_shard),
                        generation: 0,
                    })
                })
                .collect(),
            enabled: AtomicBool::new(enabled),
            hits: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        let i = id.spread() % SHARDS;
        // Nothing is left half-done under the lock: poisoning is ignored.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Counts a read answered from the cache.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The cached live session, or the ticket a fill after a miss needs.
    pub fn get(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Arc<SessionRecord>, Option<Ticket>> {
        if !self.enabled() {
            return Err(None);
        }
        let mut shard = self.shard(id);
        match shard.table.read(id, now_ms) {
            Lookup::Live(r) => Ok(r),
            Lookup::Expired => {
                shard.table.pop(id);
                Err(Some(Ticket(shard.generation)))
            }
            Lookup::Missing => Err(Some(Ticket(shard.generation))),
        }
    }

    /// The ticket for a write that fills the cache with its result.
    pub fn ticket(&self, id: &SessionId) -> Option<Ticket> {
        self.enabled().then(|| Ticket(self.shard(id).generation))
    }

    /// Caches what the durable store answered, unless an invalidation of
    /// the shard came in since `ticket`.
    pub fn fill(&self, id: &SessionId, ticket: Ticket, record: Arc<SessionRecord>) {
        let mut shard = self.shard(id);
        if shard.generation == ticket.0 && self.enabled() {
            shard.table.put(*id, record);
        }
    }

    pub fn invalidate(&self, id: &SessionId) {
        let mut shard = self.shard(id);
        shard.generation += 1;
        shard.table.pop(id);
    }

    /// Forgets everything; the cache is then used again only if `enabled`.
    pub fn reset(&self, enabled: bool) {
        if !enabled {
            self.enabled.store(false, Ordering::Release);
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.generation += 1;
            shard.table = SessionTable::new(shard.table.bound());
        }
        if enabled {
            self.enabled.store(true, Ordering::Release);
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read barrier on the invalidation channel. A cached copy is served
/// only after a round trip on that channel that began after the read did
/// (`SELECT 1` on PostgreSQL's listening connection, `PING` on Redis's
/// tracking one): the server sends every invalidation of a write it
/// committed earlier on that connection before the answer, so a write
/// acknowledged to anyone before this read began has been applied to the
/// cache by then. One round trip serves every read waiting for it.
pub struct Barrier {
    requested: AtomicU64,
    done: tokio::sync::watch::Sender<u64>,
    wake: tokio::sync::Notify,
}

impl Default for Barrier {
    fn default() -> Self {
        Barrier {
            requested: AtomicU64::new(0),
            done: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Barrier {
    /// Waits for a round trip begun after this call; `false` when none
    /// completed within `timeout`.
    pub async fn pass(&self, timeout: std::time::Duration) -> bool {
        let mut done = self.done.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        matches!(
            tokio::time::timeout(timeout, done.wait_for(|d| *d >= ticket)).await,
            Ok(Ok(_))
        )
    }

    /// For the channel's task: waits until a reader asks, then says which
    /// requests the round trip it then makes covers.
    pub async fn asked(&self) -> u64 {
        self.wake.notified().await;
        self.requested.load(Ordering::Acquire)
    }

    /// For the channel's task: the round trip covering `upto` completed
    /// and the invalidations it flushed were applied.
    pub fn passed(&self, upto: u64) {
        self.done.send_if_modified(|d| {
            let moved = upto > *d;
            *d = (*d).max(upto);
            moved
        });
    }

    /// Lets every waiting reader go on (to find the cache off).
    pub fn release(&self) {
        self.passed(self.requested.load(Ordering::Acquire));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Arc<SessionRecord> {
        let mut r = SessionRecord::new("sid".into(), 0);
        r.expires_ms = 1_000;
        Arc::new(r)
    }

    #[test]
    fn a_fill_after_an_invalidation_is_dropped() {
        let cache = LocalCache::new(100, true);
        let id = SessionId::generate();
        let Err(Some(ticket)) = cache.get(&id, 1) else {
            panic!("a miss gives a ticket")
        };
        cache.invalidate(&id);
        cache.fill(&id, ticket, record());
        assert!(cache.get(&id, 1).is_err(), "the stale read was not cached");
        let Err(Some(ticket)) = cache.get(&id, 1) else {
            panic!()
        };
        cache.fill(&id, ticket, record());
        assert!(cache.get(&id, 1).is_ok());
    }

    #[test]
    fn a_disabled_cache_answers_nothing_and_keeps_nothing() {
        let cache = LocalCache::new(100, true);
        let id = SessionId::generate();
        let Err(Some(ticket)) = cache.get(&id, 1) else {
            panic!()
        };
        cache.reset(false);
        cache.fill(&id, ticket, record());
        assert!(matches!(cache.get(&id, 1), Err(None)));
        cache.reset(true);
        assert!(matches!(cache.get(&id, 1), Err(Some(_))));
    }
}
