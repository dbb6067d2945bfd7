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
