//! Sessions held in memory in least-recently-used order: the memory store's
//! shards and the embedded store's cache share the entry, the growth rule
//! and the read path.

use crate::session::id::SessionId;
use crate::session::record::{SessionRecord, UnixMillis};
use ::lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// A read moves its session to the front of the eviction order at most once
/// per this interval: relinking the list on every read costs cache misses on
/// neighbouring entries, which dominate a read in a large store. Eviction is
/// then least recently used to the minute.
pub const REORDER_AFTER_MS: UnixMillis = 60_000;

pub struct Entry {
    pub record: Arc<SessionRecord>,
    /// When a read last moved the entry to the front.
    reordered_ms: UnixMillis,
}

impl Entry {
    pub fn new(record: Arc<SessionRecord>, now_ms: UnixMillis) -> Self {
        Entry {
            record,
            reordered_ms: now_ms,
        }
    }
}

pub type Sessions = LruCache<SessionId, Entry>;

/// Bounded by `cap`, allocated as sessions arrive: `LruCache::new` would
/// allocate the hash table for the whole bound up front, tens of megabytes
/// for a bound of a million.
pub fn growing(cap: NonZeroUsize) -> Sessions {
    let mut sessions = LruCache::unbounded();
    sessions.resize(cap);
    sessions
}

pub enum Lookup {
    Live(Arc<SessionRecord>),
    Expired,
    Missing,
}

pub fn read(sessions: &mut Sessions, id: &SessionId, now_ms: UnixMillis) -> Lookup {
    let (record, reorder) = match sessions.peek_mut(id) {
        Some(e) if e.record.is_live(now_ms) => {
            e.record.prefetch();
            let reorder = now_ms.saturating_sub(e.reordered_ms) >= REORDER_AFTER_MS;
            if reorder {
                e.reordered_ms = now_ms;
            }
            (e.record.clone(), reorder)
        }
        Some(_) => return Lookup::Expired,
        None => return Lookup::Missing,
    };
    if reorder {
        sessions.promote(id);
    }
    Lookup::Live(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(now: UnixMillis) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new("sid".into(), now);
        r.expires_ms = now + 600_000;
        Arc::new(r)
    }

    #[test]
    fn a_read_reorders_at_most_once_a_minute() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let mut s = growing(NonZeroUsize::new(2).unwrap());
        s.put(a, Entry::new(live(0), 0));
        s.put(b, Entry::new(live(0), 0));
        // Within the minute a read of `a` leaves it least recently used.
        assert!(matches!(read(&mut s, &a, 59_999), Lookup::Live(_)));
        assert_eq!(s.peek_lru().map(|(k, _)| *k), Some(a));
        // Past it the read moves `a` to the front.
        assert!(matches!(read(&mut s, &a, 60_000), Lookup::Live(_)));
        assert_eq!(s.peek_lru().map(|(k, _)| *k), Some(b));
    }

    #[test]
    fn expired_and_missing_are_told_apart() {
        let id = SessionId::generate();
        let mut s = growing(NonZeroUsize::new(1).unwrap());
        assert!(matches!(read(&mut s, &id, 0), Lookup::Missing));
        s.put(id, Entry::new(live(0), 0));
        assert!(matches!(read(&mut s, &id, 600_000), Lookup::Expired));
        assert_eq!(s.cap().get(), 1);
    }
}
