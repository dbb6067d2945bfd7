//! Sessions held in memory: the memory store's shards and the embedded
//! store's cache share the table, its eviction rule and its read path.
//!
//! A read in a large table is a chain of cache misses, so the table is laid
//! out for short chains. It is open addressing with linear probing: a
//! session's slot is at (or just after) the position its hash names, so the
//! slot's address is known from the id alone and its fetch can start before
//! the lookup (`prefetch`, issued while the cookie's MAC is checked). Each
//! slot holds the id and, beside the record's pointer, the addresses of the
//! record's data text and sid, so the lookup then misses on the record, its
//! text and its sid all at once (prefetched together). A table with separate
//! control bytes adds a miss in front of the slot's, and a linked
//! least-recently-used list one between slot and record.
//!
//! Eviction past the bound is second chance (CLOCK), the usual approximation
//! of least recently used: a hand sweeps the slots; a session read or
//! written since the hand last passed keeps its place once more, the first
//! one that was not is evicted.

use crate::record::SessionId;
use crate::record::{SessionRecord, UnixMillis};
use foldhash::fast::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Slots allocated when the first session arrives (none before).
const MIN_SLOTS: usize = 8;

struct Slot {
    id: SessionId,
    /// `None`: the slot is free, and ends every probe that reaches it.
    record: Option<Arc<SessionRecord>>,
    /// Where the record's data text and sid live (immutable while the
    /// record does): only ever used as prefetch hints, never dereferenced.
    hints: [usize; 2],
    /// Used since the hand last passed.
    referenced: bool,
}

impl Default for Slot {
    /// A free slot (its id is never compared: the record says it is free).
    fn default() -> Self {
        Slot {
            id: SessionId::from_bytes([0; crate::record::ID_BYTES]),
            record: None,
            hints: [0; 2],
            referenced: false,
        }
    }
}

impl Slot {
    fn new(id: SessionId, record: Arc<SessionRecord>) -> Self {
        let hints = [
            record.data.as_str().as_ptr() as usize,
            record.sid.as_ptr() as usize,
        ];
        Slot {
            id,
            record: Some(record),
            hints,
            referenced: true,
        }
    }
}

pub struct SessionTable {
    /// A power of two long (or empty), never more than three quarters full:
    /// a probe then ends within a few slots, most often in the first.
    slots: Box<[Slot]>,
    len: usize,
    /// Keyed per table: ids are random, but a client sees its own and could
    /// otherwise keep only those that crowd one corner of the table.
    hasher: RandomState,
    bound: usize,
    hand: usize,
    /// Sessions evicted past the bound, ever.
    evicted: u64,
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
            slots: Box::default(),
            len: 0,
            hasher: RandomState::default(),
            bound: bound.max(1),
            hand: 0,
            evicted: 0,
        }
    }

    pub fn bound(&self) -> usize {
        self.bound
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Sessions evicted past the bound since the table was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, id: &SessionId) -> usize {
        self.hasher.hash_one(id.as_bytes()) as usize & (self.slots.len() - 1)
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & (self.slots.len() - 1)
    }

    /// Where `id` is stored, or the free slot that ends its probe.
    fn probe(&self, id: &SessionId) -> Result<usize, usize> {
        let mut i = self.home(id);
        loop {
            let slot = &self.slots[i];
            match &slot.record {
                None => return Err(i),
                Some(_) if slot.id == *id => return Ok(i),
                Some(_) => i = self.next(i),
            }
        }
    }

    fn find(&self, id: &SessionId) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.probe(id).ok()
    }

    /// Starts fetching the slots where `id` would be, so that a `read` soon
    /// after finds them in the cache: the slot and the one after it (two
    /// cache lines), where most probes end.
    pub fn prefetch(&self, id: &SessionId) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[self.home(id)] as *const Slot as usize;
        prefetch(slot);
        prefetch(slot + 64);
    }

    /// The live session under `id`, marked as used.
    pub fn read(&mut self, id: &SessionId, now_ms: UnixMillis) -> Lookup {
        let Some(i) = self.find(id) else {
            return Lookup::Missing;
        };
        let slot = &mut self.slots[i];
        let Some(record) = &slot.record else {
            unreachable!("find returns occupied slots")
        };
        prefetch(Arc::as_ptr(record) as usize);
        prefetch(slot.hints[0]);
        prefetch(slot.hints[1]);
        if !record.is_live(now_ms) {
            return Lookup::Expired;
        }
        let record = record.clone();
        // Written only when it changes: a read of a hot session leaves its
        // slot's cache line clean.
        if !slot.referenced {
            slot.referenced = true;
        }
        Lookup::Live(record)
    }

    /// The session under `id`, live or not, without marking it used.
    pub fn peek(&self, id: &SessionId) -> Option<&Arc<SessionRecord>> {
        self.find(id).and_then(|i| self.slots[i].record.as_ref())
    }

    /// Stores `record` under `id`, replacing what was there; evicts one
    /// session when that takes the table past its bound.
    pub fn put(&mut self, id: SessionId, record: Arc<SessionRecord>) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.probe(&id) {
            Ok(i) => {
                self.slots[i] = Slot::new(id, record);
                return;
            }
            Err(free) => {
                self.slots[free] = Slot::new(id, record);
                self.len += 1;
            }
        }
        if self.len > self.bound {
            self.evict_one(&id);
        }
    }

    pub fn pop(&mut self, id: &SessionId) -> Option<Arc<SessionRecord>> {
        let i = self.find(id)?;
        self.remove_at(i)
    }

    /// Removes every session that is no longer live; says how many.
    pub fn remove_expired(&mut self, now_ms: UnixMillis) -> u64 {
        let mut removed = 0;
        for i in 0..self.slots.len() {
            // Removal moves a later session of the probe into `i`: it is
            // checked in turn. One moved from the start of the table into
            // its end was checked already, and is checked again.
            while self.slots[i]
                .record
                .as_ref()
                .is_some_and(|r| !r.is_live(now_ms))
            {
                self.remove_at(i);
                removed += 1;
            }
        }
        removed
    }

    /// Empties slot `i` and closes the gap (backward shift): every later
    /// session of the probe that may live earlier moves up, so no probe
    /// meets a free slot before its session, and no marker of a removal is
    /// left behind to lengthen later probes.
    fn remove_at(&mut self, i: usize) -> Option<Arc<SessionRecord>> {
        let removed = std::mem::take(&mut self.slots[i]).record;
        self.len -= 1;
        let mask = self.slots.len() - 1;
        let (mut hole, mut j) = (i, i);
        loop {
            j = self.next(j);
            if self.slots[j].record.is_none() {
                break;
            }
            let home = self.home(&self.slots[j].id);
            // The session at `j` may move into the hole when the hole lies
            // on its probe, from its home up to `j`.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
        removed
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(Slot::default).take(size).collect(),
        );
        for slot in old.into_iter().filter(|s| s.record.is_some()) {
            let Err(free) = self.probe(&slot.id) else {
                unreachable!("ids are unique in the table")
            };
            self.slots[free] = slot;
        }
        self.hand %= size;
    }

    /// Second chance: clears the mark of each used session the hand passes
    /// and evicts the first unmarked one, never `keep` (the session just
    /// stored). Ends within two sweeps: the first clears every mark.
    fn evict_one(&mut self, keep: &SessionId) {
        let size = self.slots.len();
        for _ in 0..2 * size {
            self.hand = (self.hand + 1) % size;
            let slot = &mut self.slots[self.hand];
            if slot.record.is_none() || slot.id == *keep {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            // The session the removal moves into this slot is passed over
            // until the hand's next sweep: an approximation, like the rest.
            self.remove_at(self.hand);
            self.evicted += 1;
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

    /// Against a model, through growth, removals that shift probes back
    /// (wrapping round the table's end) and evictions: every session the
    /// model holds is found, and no other.
    #[test]
    fn every_stored_session_is_found_after_removals_and_growth() {
        let mut t = SessionTable::new(usize::MAX);
        let mut model = std::collections::HashMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pool = ids(3000);
        for step in 0..40_000 {
            let id = pool[next() as usize % pool.len()];
            match next() % 3 {
                0 | 1 => {
                    let r = live(step);
                    t.put(id, r.clone());
                    model.insert(id, r);
                }
                _ => {
                    let popped = t.pop(&id);
                    let expected = model.remove(&id);
                    assert_eq!(popped.is_some(), expected.is_some());
                    if let (Some(p), Some(e)) = (popped, expected) {
                        assert!(Arc::ptr_eq(&p, &e));
                    }
                }
            }
            assert_eq!(t.len(), model.len());
        }
        for id in &pool {
            match (t.peek(id), model.get(id)) {
                (Some(got), Some(want)) => assert!(Arc::ptr_eq(got, want)),
                (None, None) => {}
                _ => panic!("the table and the model disagree"),
            }
        }
    }

    #[test]
    fn removing_the_expired_keeps_every_live_session_reachable() {
        let mut t = SessionTable::new(usize::MAX);
        let all = ids(5000);
        for (n, id) in all.iter().enumerate() {
            let mut r = SessionRecord::new("sid".into(), 0);
            // Every third session expires at 1,000; the rest live on.
            r.expires_ms = if n % 3 == 0 { 1_000 } else { 1_000_000 };
            t.put(*id, Arc::new(r));
        }
        assert_eq!(t.remove_expired(2_000), 1667);
        assert_eq!(t.len(), 5000 - 1667);
        for (n, id) in all.iter().enumerate() {
            assert_eq!(t.peek(id).is_some(), n % 3 != 0);
        }
    }

    #[test]
    fn a_prefetch_changes_nothing() {
        let mut t = SessionTable::new(4);
        let id = SessionId::generate();
        t.prefetch(&id);
        t.put(id, live(0));
        t.prefetch(&id);
        t.prefetch(&SessionId::generate());
        assert!(matches!(t.read(&id, 1), Lookup::Live(_)));
        assert_eq!(t.len(), 1);
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
