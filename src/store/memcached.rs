//! memcached: Django's cache engine. Sessions spread over the servers by
//! rendezvous hashing (`memcached/servers.rs`); expiry is memcached's own
//! (each item is written with its absolute deadline), checked again on read.
//!
//! A merge reads the item with its CAS, applies the change with the same
//! `apply` as every store and writes it back only if the CAS still holds,
//! retrying from the read otherwise: concurrent merges never lose each
//! other's keys, and a flush (a delete) makes a retry find nothing, so a
//! session is never brought back. A cycle adds the new id, then replaces
//! the old item, CAS-checked, with a tombstone naming the new one (the
//! index follows it; loads and saves see no session there); if the old one
//! changed meanwhile the new one is deleted and the whole cycle retried.
//!
//! memcached is a cache: a server that dies takes its sessions with it, and
//! under memory pressure it evicts items, index entries included.

mod index;
mod servers;

use super::{Revoked, SaveOp, SaveOutcome, ServerStore, StoreError};
use crate::config::MemcachedConfig;
use crate::record::{Applied, IndexEntry, Listed, SessionId, SessionRecord, UnixMillis};
use crate::record::{apply, subject_of};
use servers::{Mode, Servers, Wrote};
use std::sync::Arc;

/// Rounds of read, apply, compare-and-swap before a merge gives up: far
/// more than 500 concurrent writers to one session need.
const MAX_CAS_ROUNDS: usize = 10_000;
/// How long a cycle's tombstone names the new id.
const TOMBSTONE_S: u64 = 60;
/// Marks a tombstone; a session's JSON starts with `{`.
const TOMBSTONE: u8 = b'>';

pub struct MemcachedStore {
    servers: Servers,
    prefix: String,
    writes: super::stripes::Stripes,
}

/// What an item under a session key holds.
enum Item {
    Session(SessionRecord),
    /// Cycled to this id.
    Moved(SessionId),
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e)
}

fn decode(bytes: &[u8]) -> Result<Item, StoreError> {
    if let Some(rest) = bytes.strip_prefix(&[TOMBSTONE]) {
        let id = std::str::from_utf8(rest)
            .ok()
            .and_then(SessionId::decode)
            .ok_or_else(|| StoreError::Backend("a tombstone with a bad id".into()))?;
        return Ok(Item::Moved(id));
    }
    serde_json::from_slice(bytes)
        .map(Item::Session)
        .map_err(corrupt)
}

fn encode(record: &SessionRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a session record serializes")
}

/// memcached's expiry: whole seconds since the epoch (rounded up, so the
/// item outlives its deadline by less than a second; reads check it).
fn expires_s(ms: UnixMillis) -> u64 {
    ms.div_ceil(1000)
}

fn too_busy() -> StoreError {
    StoreError::Backend("a session kept changing under a merge: gave up".into())
}

impl MemcachedStore {
    pub fn new(cfg: &MemcachedConfig) -> MemcachedStore {
        MemcachedStore {
            servers: Servers::new(cfg),
            prefix: cfg.key_prefix.clone(),
            writes: Default::default(),
        }
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{}s:{}", self.prefix, id.encode())
    }

    /// The live session under `id` and its CAS.
    async fn read(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<(Item, u64)>, StoreError> {
        self.read_key(&self.key(id), now_ms).await
    }

    async fn read_key(
        &self,
        key: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<(Item, u64)>, StoreError> {
        let Some((bytes, cas)) = self.servers.get(key).await? else {
            return Ok(None);
        };
        match decode(&bytes)? {
            Item::Session(r) if !r.is_live(now_ms) => Ok(None),
            item => Ok(Some((item, cas))),
        }
    }

    /// One round of a save: `None` when the item changed under it.
    async fn save_round(
        &self,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> Result<Option<SaveOutcome>, StoreError> {
        let key = self.key(id);
        let (current, cas) = match self.read_key(&key, op.now_ms).await? {
            Some((Item::Session(r), cas)) => (r, cas),
            Some((Item::Moved(_), _)) | None => return Ok(Some(SaveOutcome::Gone)),
        };
        let mut record = match apply(current, &op.change, &op.policy, op.now_ms) {
            Ok(Applied::Saved(r)) => r,
            Ok(Applied::Emptied) => {
                return Ok(match self.servers.delete(&key, Some(cas)).await? {
                    Wrote::Done => Some(SaveOutcome::Emptied),
                    Wrote::Missing => Some(SaveOutcome::Gone),
                    Wrote::Changed | Wrote::Exists => None,
                });
            }
            Err(e) => return Ok(Some(SaveOutcome::Refused(e))),
        };
        if let Some(actual) = op.unexpected(&record) {
            return Ok(Some(SaveOutcome::Reindex(actual)));
        }
        let exp = expires_s(record.expires_ms);
        match &op.cycle_to {
            None => {
                let bytes = encode(&record);
                Ok(
                    match self.servers.set(&key, &bytes, exp, Mode::Cas(cas)).await? {
                        Wrote::Done => Some(SaveOutcome::Saved {
                            id: *id,
                            record: Arc::new(record),
                        }),
                        Wrote::Missing => Some(SaveOutcome::Gone),
                        Wrote::Changed | Wrote::Exists => None,
                    },
                )
            }
            Some((new_id, new_sid)) => {
                record.sid = new_sid.clone();
                let new_key = self.key(new_id);
                match self
                    .servers
                    .set(&new_key, &encode(&record), exp, Mode::Add)
                    .await?
                {
                    Wrote::Done => {}
                    _ => {
                        return Err(StoreError::Backend(
                            "a cycle's new session id is taken".into(),
                        ));
                    }
                }
                let mut tomb = vec![TOMBSTONE];
                tomb.extend_from_slice(new_id.encode().as_bytes());
                let until = expires_s(op.now_ms) + TOMBSTONE_S;
                let moved = self.servers.set(&key, &tomb, until, Mode::Cas(cas)).await;
                match moved {
                    Ok(Wrote::Done) => Ok(Some(SaveOutcome::Saved {
                        id: *new_id,
                        record: Arc::new(record),
                    })),
                    other => {
                        // The old one changed, went, or the answer was lost:
                        // the new one must not outlive it.
                        self.servers.delete(&new_key, None).await?;
                        match other? {
                            Wrote::Missing => Ok(Some(SaveOutcome::Gone)),
                            _ => Ok(None),
                        }
                    }
                }
            }
        }
    }
}

impl ServerStore for MemcachedStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(match self.read(id, now_ms).await? {
            Some((Item::Session(r), _)) => Some(Arc::new(r)),
            _ => None,
        })
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let exp = expires_s(record.expires_ms);
        match self
            .servers
            .set(&self.key(id), &encode(record), exp, Mode::Add)
            .await?
        {
            Wrote::Done => Ok(()),
            _ => Err(StoreError::Backend("a new session id is taken".into())),
        }
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        let _queued = self.writes.lock(id).await;
        for _ in 0..MAX_CAS_ROUNDS {
            if let Some(out) = self.save_round(id, op).await? {
                return Ok(out);
            }
        }
        Err(too_busy())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.key(id);
        for _ in 0..MAX_CAS_ROUNDS {
            let Some((bytes, cas)) = self.servers.get(&key).await? else {
                return Ok(false);
            };
            if let Item::Moved(_) = decode(&bytes)? {
                return Ok(false);
            }
            match self.servers.delete(&key, Some(cas)).await? {
                Wrote::Done => return Ok(true),
                Wrote::Missing => return Ok(false),
                Wrote::Changed | Wrote::Exists => {}
            }
        }
        Err(too_busy())
    }

    /// memcached expires items by itself.
    async fn clear_expired(&self, _now_ms: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.servers.ping().await
    }

    async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.add_entry(subject, entry, now_ms).await
    }

    async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        self.judge(key, subject, now_ms).await
    }

    async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        // A sid comes from a URL: one memcached could not hold as a key is
        // no sid of ours.
        if sid.len() > 128 || sid.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Ok(None);
        }
        let Some(id) = self.sid_id(sid).await? else {
            return Ok(None);
        };
        Ok(match self.read(&id, now_ms).await? {
            Some((Item::Session(r), _)) if r.sid == sid => Some(id),
            _ => None,
        })
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        for _ in 0..MAX_CAS_ROUNDS {
            let (record, cas) = match self.read(id, now_ms).await? {
                None => return Ok(Revoked::Gone),
                Some((Item::Moved(to), _)) => return Ok(Revoked::Moved(to)),
                Some((Item::Session(r), cas)) => (r, cas),
            };
            if subject_of(&record.data, key).as_deref() != Some(subject) {
                return Ok(Revoked::Other);
            }
            match self.servers.delete(&self.key(id), Some(cas)).await? {
                Wrote::Done => return Ok(Revoked::Deleted),
                Wrote::Missing => return Ok(Revoked::Gone),
                Wrote::Changed | Wrote::Exists => {}
            }
        }
        Err(too_busy())
    }

    /// memcached cannot count its items by prefix.
    fn live_sessions(&self) -> Option<u64> {
        None
    }
}
