//! Sessions held in memory: the memory store's shards and the embedded
//! store's cache share the table, its eviction rule and its read path.
//!
//! A read in a large table is a chain of cache misses, so the table is laid
//! out for short chains: each slot holds the id and, beside the record's
//! pointer, the addresses of the record's data text and sid. A lookup then
//! misses on the table's control bytes and on the slot, and then on the
//! record, its text and its sid all at once (prefetched together), where a
//! linked least-recently-used list adds a node between slot and record and
//! relinks neighbours on reads.
//!
//! Eviction past the bound is second chance (CLOCK), the usual approximation
//! of least recently used: a hand sweeps the slots; a session read or
//! written since the hand last passed keeps its place once more, the first
//! one that was not is evicted.

use crate::session::id::SessionId;
use crate::session::record::{SessionRecord, UnixMillis};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::Arc;

struct Slot {
    id: SessionId,
    record: Arc<SessionRecord>,
    /// Where the record's data text and sid live (immutable while the
    /// record does): only ever used as prefetch hints, never dereferenced.
    hints: [usize; 2],
    /// Used since the hand last passed.
    referenced: bool,
}

impl Slot {
    fn new(id: SessionId, record: Arc<SessionRecord>) -> Self {
        let hints = [
            record.data.as_str().as_ptr() as usize,
            record.sid.as_ptr() as usize,
        ];
        Slot {
            id,
            record,
            hints,
            referenced: true,
        }
    }
}

pub struct SessionTable {
    slots: HashTable<Slot>,
    /// Keyed per table: ids are random, but a client sees its own and could
    /// otherwise keep only those that crowd one corner of the table.
    hasher: DefaultHashBuilder,
    bound: usize,
    hand: usize,
}

pub enum Lookup {
    Live(Arc<SessionRecord>),
    Expired,
    Missing,
}

impl SessionTable {
    /// At most `bound` sessions (at least one), allocated as they arrive.
    pub fn new(bound: usize) -> Self {
        SessionTable {
            slots: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            bound: bound.max(1),
            hand: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn hash(&self, id: &SessionId) -> u64 {
        self.hasher.hash_one(id.as_bytes())
    }

    /// The live session under `id`, marked as used.
    pub fn read(&mut self, id: &SessionId, now_ms: UnixMillis) -> Lookup {
        let hash = self.hash(id);
        let Some(slot) = self.slots.find_mut(hash, |s| s.id == *id) else {
            return Lookup::Missing;
        };
        prefetch(Arc::as_ptr(&slot.record) as usize);
        prefetch(slot.hints[0]);
        prefetch(slot.hints[1]);
        if !slot.record.is_live(now_ms) {
            return Lookup::Expired;
        }
        // Written only when it changes: a read of a hot session leaves its
        // slot's cache line clean.
        if !slot.referenced {
            slot.referenced = true;
        }
        Lookup::Live(slot.record.clone())
    }

    /// The session under `id`, live or not, without marking it used.
    pub fn peek(&self, id: &SessionId) -> Option<&Arc<SessionRecord>> {
        self.slots
            .find(self.hash(id), |s| s.id == *id)
            .map(|s| &s.record)
    }

    /// Stores `record` under `id`, replacing what was there; evicts one
    /// session when that takes the table past its bound.
    pub fn put(&mut self, id: SessionId, record: Arc<SessionRecord>) {
        let hash = self.hash(&id);
        let hasher = &self.hasher;
        match self
            .slots
            .entry(hash, |s| s.id == id, |s| hasher.hash_one(s.id.as_bytes()))
        {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                *e.get_mut() = Slot::new(id, record);
                return;
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(Slot::new(id, record));
            }
        }
        if self.slots.len() > self.bound {
            self.evict_one(&id);
        }
    }

    pub fn pop(&mut self, id: &SessionId) -> Option<Arc<SessionRecord>> {
        match self.slots.find_entry(self.hash(id), |s| s.id == *id) {
            Ok(e) => Some(e.remove().0.record),
            Err(_) => None,
        }
    }

    /// Removes every session that is no longer live; says how many.
    pub fn remove_expired(&mut self, now_ms: UnixMillis) -> u64 {
        let before = self.slots.len();
        self.slots.retain(|s| s.record.is_live(now_ms));
        (before - self.slots.len()) as u64
    }

    /// Second chance: clears the mark of each used session the hand passes
    /// and evicts the first unmarked one, never `keep` (the session just
    /// stored). Ends within two sweeps: the first clears every mark.
    fn evict_one(&mut self, keep: &SessionId) {
        let buckets = self.slots.num_buckets();
        for _ in 0..2 * buckets {
            self.hand = (self.hand + 1) % buckets;
            let Some(slot) = self.slots.get_bucket_mut(self.hand) else {
                continue;
            };
            if slot.id == *keep {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            if let Ok(e) = self.slots.get_bucket_entry(self.hand) {
                e.remove();
            }
            return;
        }
    }
}

/// Starts bringing a cache line in. A store of a million sessions misses the
/// cache on every level of a read; issued together, the misses overlap
/// instead of being taken one after the other.
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint to the cache: it never faults, even on
        // an invalid address, and neither reads nor writes memory as far as
        // the program can observe.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(now: UnixMillis) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new("sid".into(), now);
        r.expires_ms = now + 600_000;
        Arc::new(r)
    }

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n).map(|_| SessionId::generate()).collect()
    }

    #[test]
    fn a_session_used_since_the_hand_passed_outlives_an_unused_one() {
        let ids = ids(8);
        let mut t = SessionTable::new(8);
        for id in &ids {
            t.put(*id, live(0));
        }
        // The first eviction clears every mark (all are new) and evicts one.
        let extra = SessionId::generate();
        t.put(extra, live(0));
        assert_eq!(t.len(), 8);
        // Mark every survivor but one as used: that one goes next.
        let survivors: Vec<SessionId> = ids
            .iter()
            .copied()
            .filter(|id| t.peek(id).is_some())
            .collect();
        assert_eq!(survivors.len(), 7);
        let idle = survivors[3];
        for id in survivors.iter().filter(|id| **id != idle) {
            assert!(matches!(t.read(id, 1), Lookup::Live(_)));
        }
        // `extra` was stored after the sweep that cleared the marks: it is
        // marked too, so the unread session is the only candidate.
        t.put(SessionId::generate(), live(0));
        assert_eq!(t.len(), 8);
        assert!(t.peek(&idle).is_none());
        assert!(t.peek(&extra).is_some());
        for id in survivors.iter().filter(|id| **id != idle) {
            assert!(t.peek(id).is_some());
        }
    }

    #[test]
    fn the_session_just_stored_is_never_the_one_evicted() {
        let mut t = SessionTable::new(1);
        let (a, b) = (SessionId::generate(), SessionId::generate());
        t.put(a, live(0));
        t.put(b, live(0));
        assert_eq!(t.len(), 1);
        assert!(t.peek(&b).is_some());
        assert!(t.peek(&a).is_none());
    }

    #[test]
    fn the_bound_holds_under_churn() {
        let mut t = SessionTable::new(100);
        let mut all = Vec::new();
        for round in 0..50 {
            for id in ids(40) {
                t.put(id, live(0));
                all.push(id);
            }
            // Some are read, some deleted, as a live store would see.
            for id in all.iter().rev().take(30) {
                let _ = t.read(id, 1);
            }
            if round % 3 == 0 {
                for id in all.iter().rev().take(5) {
                    t.pop(id);
                }
            }
            assert!(t.len() <= 100);
        }
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn replacing_a_session_keeps_one_entry_and_the_new_record() {
        let mut t = SessionTable::new(4);
        let id = SessionId::generate();
        t.put(id, live(0));
        let newer = live(5);
        t.put(id, newer.clone());
        assert_eq!(t.len(), 1);
        assert!(Arc::ptr_eq(t.peek(&id).unwrap(), &newer));
        assert!(Arc::ptr_eq(&t.pop(&id).unwrap(), &newer));
        assert!(t.is_empty());
    }

    #[test]
    fn expired_and_missing_are_told_apart() {
        let id = SessionId::generate();
        let mut t = SessionTable::new(1);
        assert!(matches!(t.read(&id, 0), Lookup::Missing));
        t.put(id, live(0));
        assert!(matches!(t.read(&id, 600_000), Lookup::Expired));
        assert_eq!(t.remove_expired(600_000), 1);
        assert!(t.is_empty());
    }
}
