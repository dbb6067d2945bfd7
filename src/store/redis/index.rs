//! The Redis store's index of subjects. A subject's index is a sorted set
//! (`{prefix}u:{subject}`) and each indexed sid a string naming its id
//! (`{prefix}i:{sid}`), each under its own hash tag: in a Cluster they live
//! in other slots than the sessions, so no script can cover both. Entries
//! are written before their sessions (the index never misses one) and
//! judged against the sessions when read; a revocation deletes a session
//! only if its subject, checked by the same script, is still the one named.

use super::{RedisStore, unexpected};
use crate::record::{IndexEntry, Listed, SessionId, UnixMillis, value_texts};
use crate::store::{INDEX_GRACE_MS, Revoked, ServerStore, Standing, StoreError, standing};
use futures_util::future::join_all;

/// An entry's member in the sorted set.
fn member(id: &SessionId, sid: &str) -> String {
    format!("{} {sid}", id.encode())
}

fn parse_member(m: &str) -> Option<(SessionId, &str)> {
    let (id, sid) = m.split_once(' ')?;
    Some((SessionId::decode(id)?, sid))
}

impl RedisStore {
    pub(super) async fn add_entry(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        let (index_key, sid_key) = (self.subject_key(subject), self.sid_key(&entry.sid));
        let m = member(&entry.id, &entry.sid);
        let id = entry.id.encode();
        let script = &self.index_script;
        self.run(|c| async move {
            let (mut a, mut b) = (c.clone(), c);
            let mut add = script.key(&index_key);
            add.arg(now_ms).arg(&m);
            let mut set = ::redis::cmd("SET");
            set.arg(&sid_key).arg(&id);
            // Two slots in a Cluster: sent together, one round trip's wait.
            let (count, ()) = tokio::try_join!(
                add.invoke_async::<u64>(&mut a),
                set.query_async::<()>(&mut b),
            )?;
            Ok(count)
        })
        .await
    }

    pub(super) async fn judge(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        let index_key = self.subject_key(subject);
        let members: Vec<(String, f64)> = {
            let k = &index_key;
            self.run(|mut c| async move {
                ::redis::cmd("ZRANGE")
                    .arg(k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?
        };
        let entries: Vec<(SessionId, &str, u64, &str)> = members
            .iter()
            .filter_map(|(m, at)| {
                parse_member(m).map(|(id, sid)| (id, sid, *at as u64, m.as_str()))
            })
            .collect();
        let records = join_all(
            entries
                .iter()
                .map(|(id, ..)| ServerStore::load(self, id, now_ms)),
        )
        .await;
        let mut live: Vec<Listed> = Vec::new();
        let mut stale = Vec::new();
        for ((id, sid, at, m), record) in entries.iter().zip(records) {
            let record = record?;
            if record.is_none()
                && let Some(l) = self.follow(id, key, subject, now_ms).await?
            {
                // Cycled while this list was being read: where it went.
                live.push(l);
            }
            match standing(id, sid, *at, record.as_deref(), key, subject, now_ms) {
                Standing::Live(l) => live.push(l),
                Standing::Pending => {}
                Standing::Stale { gone } => stale.push((*m, gone)),
            }
        }
        live.sort_by_key(|l| *l.id.as_bytes());
        live.dedup_by_key(|l| *l.id.as_bytes());
        if !stale.is_empty() {
            self.drop_entries(&index_key, &stale, now_ms).await?;
        }
        Ok(live)
    }

    /// The live session of `subject` that a cycle moved the session under
    /// `id` to, following the tombstones cycles leave.
    async fn follow(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<Listed>, StoreError> {
        let mut at = *id;
        for _ in 0..16 {
            let k = self.key(&at);
            let next: Option<String> = self
                .run(|mut c| async move {
                    ::redis::cmd("HGET")
                        .arg(&k)
                        .arg("mv")
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let Some(next) = next.as_deref().and_then(SessionId::decode) else {
                return Ok(None);
            };
            if let Some(r) = ServerStore::load(self, &next, now_ms).await? {
                let mine = crate::record::subject_of(&r.data, key).as_deref() == Some(subject);
                return Ok(mine.then(|| Listed {
                    id: next,
                    sid: r.sid.clone(),
                    created_ms: r.created_ms,
                    expires_ms: r.expires_ms,
                }));
            }
            at = next;
        }
        Ok(None)
    }

    /// Drops stale entries, and the sid keys of those dropped whose
    /// sessions are gone (a session that changed hands keeps its sid key).
    async fn drop_entries(
        &self,
        index_key: &str,
        stale: &[(&str, bool)],
        now_ms: UnixMillis,
    ) -> Result<(), StoreError> {
        let before = now_ms.saturating_sub(INDEX_GRACE_MS) + 1;
        let script = &self.unindex_script;
        let dropped: Vec<String> = self
            .run(|mut c| async move {
                let mut inv = script.key(index_key);
                inv.arg(before);
                for (m, _) in stale {
                    inv.arg(*m);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        let gone = |m: &str| stale.iter().any(|(s, g)| *s == m && *g);
        for m in dropped.iter().filter(|m| gone(m)) {
            if let Some((_, sid)) = parse_member(m) {
                let k = self.sid_key(sid);
                self.run(|mut c| async move {
                    ::redis::cmd("DEL").arg(&k).query_async::<()>(&mut c).await
                })
                .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn lookup_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        let k = self.sid_key(sid);
        let id: Option<String> = self
            .run(|mut c| async move { ::redis::cmd("GET").arg(&k).query_async(&mut c).await })
            .await?;
        let Some(id) = id.as_deref().and_then(SessionId::decode) else {
            return Ok(None);
        };
        let record = ServerStore::load(self, &id, now_ms).await?;
        Ok(record.is_some_and(|r| r.sid == sid).then_some(id))
    }

    pub(super) async fn revoke_if(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        let session_key = self.key(id);
        let script = &self.revoke_script;
        let key_text = serde_json::to_string(key).expect("a string serializes");
        let texts = value_texts(subject);
        let reply: Vec<String> = {
            let (sk, kt, texts) = (&session_key, &key_text, &texts);
            self.run(|mut c| async move {
                let reply: Vec<String> = script
                    .key(sk)
                    .arg(self.deadline())
                    .arg(now_ms)
                    .arg(kt)
                    .arg(texts)
                    .invoke_async(&mut c)
                    .await?;
                self.replicated(&mut c, sk).await?;
                Ok(reply)
            })
            .await?
        };
        match reply.first().map(String::as_str) {
            Some("moved") => match reply.get(1).and_then(|m| SessionId::decode(m)) {
                Some(new) => Ok(Revoked::Moved(new)),
                None => Err(unexpected("revoke", &reply)),
            },
            Some("deleted") => Ok(Revoked::Deleted),
            Some("gone") => Ok(Revoked::Gone),
            Some("other") => Ok(Revoked::Other),
            _ => Err(unexpected("revoke", &reply)),
        }
    }
}
