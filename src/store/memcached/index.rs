//! The index of subjects on memcached: one item per subject holding its
//! entries (id, sid, written at), changed by compare-and-swap, and one per
//! sid naming its id. Entries are written before their sessions and judged
//! against them when read, as on every store (`store::standing`).

use super::servers::{Mode, Wrote};
use super::{Item, MAX_CAS_ROUNDS, MemcachedStore, too_busy};
use crate::record::{IndexEntry, Listed, SessionId, UnixMillis, subject_of};
use crate::store::{Standing, StoreError, standing};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};

/// How long an index item outlives its last write: past the longest
/// lifetime a session can be given.
const INDEX_TTL_S: u64 = 400 * 86_400;

type Entry = (String, String, UnixMillis);

fn parse(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

impl MemcachedStore {
    /// Subjects are any text; keys may not hold spaces or be long.
    fn subject_key(&self, subject: &str) -> String {
        let digest = Sha256::digest(subject.as_bytes());
        format!("{}u:{}", self.prefix, URL_SAFE_NO_PAD.encode(digest))
    }

    fn sid_key(&self, sid: &str) -> String {
        format!("{}i:{sid}", self.prefix)
    }

    pub(super) async fn sid_id(&self, sid: &str) -> Result<Option<SessionId>, StoreError> {
        Ok(self
            .servers
            .get(&self.sid_key(sid))
            .await?
            .and_then(|(bytes, _)| SessionId::decode(std::str::from_utf8(&bytes).ok()?)))
    }

    pub(super) async fn add_entry(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        let until = now_ms / 1000 + INDEX_TTL_S;
        let id = entry.id.encode();
        self.servers
            .set(&self.sid_key(&entry.sid), id.as_bytes(), until, Mode::Set)
            .await?;
        let key = self.subject_key(subject);
        for _ in 0..MAX_CAS_ROUNDS {
            let (mut entries, mode) = match self.servers.get(&key).await? {
                Some((bytes, cas)) => (parse(&bytes)?, Mode::Cas(cas)),
                None => (Vec::new(), Mode::Add),
            };
            entries.retain(|(i, ..)| *i != id);
            entries.push((id.clone(), entry.sid.clone(), now_ms));
            let bytes = serde_json::to_vec(&entries).expect("entries serialize");
            if self.servers.set(&key, &bytes, until, mode).await? == Wrote::Done {
                return Ok(entries.len() as u64);
            }
        }
        Err(too_busy())
    }

    /// The subject's live sessions; stale entries are dropped on the way
    /// (when the index did not change meanwhile: otherwise next time).
    pub(super) async fn judge(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        let index_key = self.subject_key(subject);
        let Some((bytes, cas)) = self.servers.get(&index_key).await? else {
            return Ok(Vec::new());
        };
        let entries = parse(&bytes)?;
        let total = entries.len();
        let ids: Vec<Option<SessionId>> =
            entries.iter().map(|(i, ..)| SessionId::decode(i)).collect();
        // Read together: a subject with many entries costs one round trip's wait.
        let items = join_all(ids.iter().map(|id| async move {
            match id {
                Some(id) => self.read(id, now_ms).await.map(|r| r.map(|(item, _)| item)),
                None => Ok(None),
            }
        }))
        .await;
        let mut live = Vec::new();
        let mut kept = Vec::with_capacity(entries.len());
        for (((id_text, sid, written), id), item) in entries.into_iter().zip(ids).zip(items) {
            let Some(id) = id else {
                continue;
            };
            let record = match item? {
                Some(Item::Session(r)) => Some(r),
                Some(Item::Moved(to)) => {
                    // Cycled while this list was being read: where it went.
                    if let Some(l) = self.follow(to, key, subject, now_ms).await? {
                        live.push(l);
                    }
                    None
                }
                None => None,
            };
            match standing(&id, &sid, written, record.as_ref(), key, subject, now_ms) {
                Standing::Live(l) => {
                    live.push(l);
                    kept.push((id_text, sid, written));
                }
                Standing::Pending => kept.push((id_text, sid, written)),
                Standing::Stale { .. } => {}
            }
        }
        live.sort_by_key(|l| *l.id.as_bytes());
        live.dedup_by_key(|l| *l.id.as_bytes());
        if kept.len() != total {
            let until = now_ms / 1000 + INDEX_TTL_S;
            let bytes = serde_json::to_vec(&kept).expect("entries serialize");
            // Lost to a concurrent addition: the stale ones go next time.
            let _ = self
                .servers
                .set(&index_key, &bytes, until, Mode::Cas(cas))
                .await?;
        }
        Ok(live)
    }

    /// The live session of `subject` that cycles moved a session to,
    /// following their tombstones from `to`.
    async fn follow(
        &self,
        mut to: SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<Listed>, StoreError> {
        for _ in 0..16 {
            match self.read(&to, now_ms).await? {
                Some((Item::Moved(next), _)) => to = next,
                Some((Item::Session(r), _)) => {
                    let mine = subject_of(&r.data, key).as_deref() == Some(subject);
                    return Ok(mine.then_some(Listed {
                        id: to,
                        sid: r.sid,
                        created_ms: r.created_ms,
                        expires_ms: r.expires_ms,
                    }));
                }
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
