//! The in-process store: bounded, least recently used evicted past the bound,
//! lost on restart. Sharded so that requests on different sessions rarely
//! contend; a change is applied under its shard's lock, which makes merges
//! atomic per session.

use super::subjects::SubjectIndex;
use super::table::{Lookup, SessionTable};
use super::{INDEX_GRACE_MS, Revoked, SaveOp, SaveOutcome, ServerStore, Standing, StoreError};
use crate::record::{Applied, SessionRecord, UnixMillis, apply};
use crate::record::{IndexEntry, Listed, SessionId, subject_of};
use std::sync::{Arc, Mutex, MutexGuard};

const MAX_SHARDS: usize = 64;
/// Below this many sessions a single shard keeps the bound exact.
const MIN_SESSIONS_PER_SHARD: usize = 1024;

type Shard = SessionTable;

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    subjects: SubjectIndex,
}

impl MemoryStore {
    pub fn new(max_sessions: usize) -> Self {
        let max_sessions = max_sessions.max(1);
        let shards = (max_sessions / MIN_SESSIONS_PER_SHARD).clamp(1, MAX_SHARDS);
        // Rounding down keeps the total at or under the configured bound.
        let per_shard = (max_sessions / shards).max(1);
        MemoryStore {
            shards: (0..shards)
                .map(|_| Mutex::new(SessionTable::new(per_shard)))
                .collect(),
            subjects: SubjectIndex::default(),
        }
    }

    fn shard_index(&self, id: &SessionId) -> usize {
        id.spread() % self.shards.len()
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        self.lock_at(self.shard_index(id))
    }

    fn lock_at(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a half-applied change
        // (changes are computed before insertion), so poisoning is ignored.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the stale entries of one subject's index; returns its live sessions.
    /// One instant's view: the index stays locked (no entry can be added)
    /// while every shard its entries live in is locked, in index order as a
    /// cycle locks its two, so that a session moving from one id to another
    /// is never missed under both.
    fn judge(&self, key: &str, subject: &str, now_ms: UnixMillis) -> Vec<Listed> {
        let (live, stale) = self.subjects.with_entries(subject, |entries| {
            let mut at: Vec<usize> = entries
                .iter()
                .map(|(id, ..)| self.shard_index(id))
                .collect();
            at.sort_unstable();
            at.dedup();
            let shards: Vec<(usize, MutexGuard<'_, Shard>)> =
                at.iter().map(|&i| (i, self.lock_at(i))).collect();
            let mut live = Vec::new();
            let mut stale = Vec::new();
            for (id, sid, written) in entries {
                let i = self.shard_index(id);
                let shard = &shards
                    .iter()
                    .find(|(j, _)| *j == i)
                    .expect("locked above")
                    .1;
                let record = shard.peek(id).cloned();
                match super::standing(id, sid, *written, record.as_deref(), key, subject, now_ms) {
                    Standing::Live(l) => live.push(l),
                    Standing::Pending => {}
                    Standing::Stale { gone } => stale.push((*id, sid.clone(), gone)),
                }
            }
            (live, stale)
        });
        let before = now_ms.saturating_sub(INDEX_GRACE_MS) + 1;
        self.subjects.drop_entries(subject, &stale, before);
        live
    }

    /// Starts fetching where the session under `id` would be (see
    /// `SessionTable::prefetch`); skipped when the shard is busy.
    pub fn prefetch(&self, id: &SessionId) {
        if let Ok(shard) = self.shards[self.shard_index(id)].try_lock() {
            shard.prefetch(id);
        }
    }

    /// Sessions evicted past `max_sessions` since the store was made.
    pub fn evicted(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).evicted())
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ServerStore for MemoryStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let mut shard = self.shard(id);
        match shard.read(id, now_ms) {
            Lookup::Live(record) => Ok(Some(record)),
            Lookup::Expired => {
                shard.pop(id);
                Ok(None)
            }
            Lookup::Missing => Ok(None),
        }
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        self.shard(id).put(*id, Arc::new(record.clone()));
        Ok(())
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        // A cycle holds both shards (in index order), so that no reader ever
        // finds the session under neither id, nor under both.
        let (at, to) = (
            self.shard_index(id),
            op.cycle_to.as_ref().map(|(n, _)| self.shard_index(n)),
        );
        let (mut shard, mut other) = match to {
            Some(t) if t < at => {
                let other = self.lock_at(t);
                (self.lock_at(at), Some(other))
            }
            Some(t) if t > at => {
                let shard = self.lock_at(at);
                (shard, Some(self.lock_at(t)))
            }
            _ => (self.lock_at(at), None),
        };
        let current = match shard.peek(id) {
            Some(r) if r.is_live(op.now_ms) => SessionRecord::clone(r),
            Some(_) => {
                shard.pop(id);
                return Ok(SaveOutcome::Gone);
            }
            None => return Ok(SaveOutcome::Gone),
        };
        let mut record = match apply(current, &op.change, &op.policy, op.now_ms) {
            Ok(Applied::Saved(r)) => r,
            Ok(Applied::Emptied) => {
                shard.pop(id);
                return Ok(SaveOutcome::Emptied);
            }
            Err(e) => return Ok(SaveOutcome::Refused(e)),
        };
        if let Some(actual) = op.unexpected(&record) {
            return Ok(SaveOutcome::Reindex(actual));
        }
        match &op.cycle_to {
            None => {
                let record = Arc::new(record);
                shard.put(*id, record.clone());
                Ok(SaveOutcome::Saved { id: *id, record })
            }
            Some((new_id, new_sid)) => {
                shard.pop(id);
                record.sid = new_sid.clone();
                let record = Arc::new(record);
                other
                    .as_mut()
                    .unwrap_or(&mut shard)
                    .put(*new_id, record.clone());
                Ok(SaveOutcome::Saved {
                    id: *new_id,
                    record,
                })
            }
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.shard(id).pop(id).is_some())
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        let mut removed = 0;
        for shard in self.shards.iter() {
            removed += {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard.remove_expired(now_ms)
            };
            // A sweep of a large store takes a while: requests run between shards.
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        Ok(self.subjects.add(subject, entry, now_ms))
    }

    async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        Ok(self.judge(key, subject, now_ms))
    }

    async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        let Some(id) = self.subjects.sid(sid) else {
            return Ok(None);
        };
        let found = self
            .shard(&id)
            .peek(&id)
            .is_some_and(|r| r.is_live(now_ms) && r.sid == sid);
        Ok(found.then_some(id))
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        let mut shard = self.shard(id);
        let mine = match shard.peek(id) {
            Some(r) if r.is_live(now_ms) => subject_of(&r.data, key).as_deref() == Some(subject),
            _ => return Ok(Revoked::Gone),
        };
        if !mine {
            return Ok(Revoked::Other);
        }
        shard.pop(id);
        Ok(Revoked::Deleted)
    }

    fn live_sessions(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl MemoryStore {
    /// Drops the stale entries of every subject's index (the sweep's part:
    /// evicted and expired sessions leave theirs behind).
    pub fn sweep_index(&self, key: &str, now_ms: UnixMillis) {
        for subject in self.subjects.subjects() {
            self.judge(key, &subject, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionData;

    fn record(now: UnixMillis) -> SessionRecord {
        let mut r = SessionRecord::new("sid".into(), now);
        r.data = SessionData::from_map(serde_json::json!({"k": 1}).as_object().unwrap());
        r.expires_ms = now + 600_000;
        r
    }

    #[tokio::test]
    async fn an_unread_session_is_evicted_before_read_ones_past_the_bound() {
        let store = MemoryStore::new(3);
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        for id in &ids {
            store.create(id, &record(0)).await.unwrap();
        }
        // The fourth took the place of one of the first three. Of the two
        // left, one is read; the fourth is new, which counts as used: a fifth
        // can only take the other.
        assert_eq!(store.len(), 3);
        let kept: Vec<&SessionId> = ids[..3]
            .iter()
            .filter(|id| store.shard(id).peek(id).is_some())
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(store.load(kept[0], 1).await.unwrap().is_some());
        store
            .create(&SessionId::generate(), &record(1))
            .await
            .unwrap();
        assert_eq!(store.len(), 3);
        assert!(store.load(kept[0], 1).await.unwrap().is_some());
        assert!(store.load(&ids[3], 1).await.unwrap().is_some());
        assert!(store.load(kept[1], 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sweep_removes_expired() {
        let store = MemoryStore::new(100);
        store
            .create(&SessionId::generate(), &record(0))
            .await
            .unwrap();
        store
            .create(&SessionId::generate(), &record(100_000))
            .await
            .unwrap();
        assert_eq!(store.clear_expired(650_000).await.unwrap(), 1);
        assert_eq!(store.len(), 1);
    }
}
