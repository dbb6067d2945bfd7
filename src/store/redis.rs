//! The Redis store: standalone (`redis://`, `rediss://` over rustls),
//! Sentinel and Cluster, shared by many sessiongate instances.
//!
//! Every write is one Lua script run atomically on the server (merge patches
//! included), so concurrent changes through any number of instances never
//! lose each other. Expiry is Redis's own (`PEXPIREAT`). A session is one hash
//! under `{prefix}{<id>}`: the braces are a Cluster hash tag, so everything a
//! script touches is in one slot.

mod connection;
mod index;
mod puts;
mod reply;
pub(crate) mod resp;
mod topology;

use puts::{Link, Put, PutJob, Puts};
use reply::{record, saved_fields, subject_of_text, unexpected, with_data};
use topology::{Conn, Topology, backend, replicated};

use super::{OpenError, Revoked, SaveOp, SaveOutcome, ServerStore, StoreError};
use crate::config::RedisConfig;
use crate::record::{Applied, UpdateError, apply_to};
use crate::record::{ID_B64_LEN, SessionId};
use crate::record::{IndexEntry, Listed, value_texts};
use crate::record::{SessionRecord, UnixMillis};
use ::redis::{RedisError, Script};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SAVE_SCRIPT: &str = concat!(
    include_str!("redis/deadline.lua"),
    include_str!("redis/merge.lua"),
    include_str!("redis/save.lua")
);
const PUT_SCRIPT: &str = concat!(
    include_str!("redis/deadline.lua"),
    include_str!("redis/put.lua")
);
const CREATE_SCRIPT: &str = concat!(
    include_str!("redis/deadline.lua"),
    include_str!("redis/create.lua")
);
const DELETE_SCRIPT: &str = concat!(
    include_str!("redis/deadline.lua"),
    include_str!("redis/delete.lua")
);
const REVOKE_SCRIPT: &str = concat!(
    include_str!("redis/deadline.lua"),
    include_str!("redis/merge.lua"),
    include_str!("redis/revoke.lua")
);
const UNINDEX_SCRIPT: &str = include_str!("redis/unindex.lua");

/// Adds an entry to a subject's index and says how many it holds.
/// KEYS[1]: the index; ARGV: written at (ms), the entry.
const INDEX_SCRIPT: &str =
    "redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) return redis.call('ZCARD', KEYS[1])";
/// Ends a Cluster cycle that failed: the old session loses the mark of the
/// cycle named by ARGV[1] and gets its own deadline back.
const RELEASE_SCRIPT: &str = "if redis.call('HGET', KEYS[1], 'mt') == ARGV[1] then \
     redis.call('HDEL', KEYS[1], 'm', 'mt') \
     local e = redis.call('HGET', KEYS[1], 'e') \
     if e then redis.call('PEXPIREAT', KEYS[1], e) end \
     return 1 end return 0";
/// Ends a Cluster cycle whose new session exists: the old one is deleted if
/// it is still the one the cycle named by ARGV[1] marked (a logout may have
/// deleted it meanwhile), leaving a tombstone that names the new id (ARGV[2],
/// '' for none) for ARGV[3] ms.
const FINISH_SCRIPT: &str = "if redis.call('HGET', KEYS[1], 'mt') == ARGV[1] then \
     redis.call('DEL', KEYS[1]) \
     if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'mv', ARGV[2]) \
     redis.call('PEXPIRE', KEYS[1], ARGV[3]) end \
     return 1 end return 0";
pub struct RedisStore {
    topology: Arc<Topology>,
    prefix: String,
    timeout: Duration,
    /// `replicas_ack`: replicas that must hold a write before it is acknowledged.
    replicas: u32,
    save_script: Script,
    /// The common writes, several to a call.
    puts: Puts,
    create_script: Script,
    delete_script: Script,
    release_script: Script,
    finish_script: Script,
    revoke_script: Script,
    unindex_script: Script,
    index_script: Script,
}

impl RedisStore {
    /// Connects lazily where the client allows it: a Redis that is down at
    /// start makes requests fail (per `on_store_error`) until it is back.
    pub async fn open(cfg: &RedisConfig) -> Result<Self, OpenError> {
        crate::install_crypto_provider();
        let topology = Arc::new(Topology::open(cfg).await?);
        Ok(RedisStore {
            puts: Puts::new(Link {
                topology: topology.clone(),
                script: Script::new(PUT_SCRIPT),
                timeout: cfg.timeout,
                replicas: cfg.replicas_ack,
            }),
            topology,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            replicas: cfg.replicas_ack,
            save_script: Script::new(SAVE_SCRIPT),
            create_script: Script::new(CREATE_SCRIPT),
            delete_script: Script::new(DELETE_SCRIPT),
            release_script: Script::new(RELEASE_SCRIPT),
            finish_script: Script::new(FINISH_SCRIPT),
            revoke_script: Script::new(REVOKE_SCRIPT),
            unindex_script: Script::new(UNINDEX_SCRIPT),
            index_script: Script::new(INDEX_SCRIPT),
        })
    }

    fn key(&self, id: &SessionId) -> String {
        // Built by hand: `format!` was 1,000 instructions of every command.
        let mut key = String::with_capacity(self.prefix.len() + ID_B64_LEN + 2);
        key.push_str(&self.prefix);
        key.push('{');
        id.encode_into(&mut key);
        key.push('}');
        key
    }

    /// A subject's index: a sorted set of "<id> <sid>" scored by the time
    /// each entry was written. Its own hash tag: in a Cluster it lives in
    /// another slot than its sessions.
    fn subject_key(&self, subject: &str) -> String {
        format!("{}u:{{{}}}", self.prefix, subject)
    }

    /// An indexed sid's id.
    fn sid_key(&self, sid: &str) -> String {
        format!("{}i:{{{}}}", self.prefix, sid)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.topology.conn(self.timeout).await
    }

    /// The latest moment, in Unix milliseconds, at which a write sent now
    /// may still be applied: past it, `run` has told the client it failed.
    /// The scripts compare it with Redis's own clock (`TIME`), so clocks
    /// must agree to well within the timeout (they must anyway, for
    /// `PEXPIREAT`).
    fn deadline(&self) -> UnixMillis {
        crate::record::now_ms() + self.timeout.as_millis() as u64
    }

    async fn replicated(&self, c: &mut Conn, key: &str) -> Result<(), RedisError> {
        replicated(c, key, self.replicas, self.timeout).await
    }

    /// How long a Cluster cycle keeps the old session marked as moving: the
    /// two steps that follow the mark, each bounded by the timeout.
    fn mark_ms(&self) -> u64 {
        // The rest of the save (its WAIT), the creation and the deletion,
        // each bounded by the timeout, and a margin.
        4 * self.timeout.as_millis() as u64
    }

    /// How long a cycled session's old id names its new one, for the
    /// revocations that read the old id just before the cycle: far longer
    /// than a revocation's reads take.
    fn tombstone_ms(&self) -> u64 {
        (60 * 1000).max(self.mark_ms())
    }

    /// Releases the old session of a Cluster cycle that failed (best effort:
    /// otherwise it expires when its mark ends).
    async fn release(&self, old_key: &str, token: &str) {
        let release = &self.release_script;
        let released = self
            .run(|mut c| async move {
                release
                    .key(old_key)
                    .arg(token)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(r) = released {
            crate::limited!(
                crate::logging::LogClass::store,
                warn,
                error = %crate::logging::Chain(&r),
                "a failed session cycle could not release the old session; it expires when its mark ends"
            );
        }
    }

    /// The rest of a Cluster cycle: the new session is created, then the old
    /// one deleted if this cycle's mark is still on it. Should the creation
    /// fail, the old session is released unchanged; should the old one be
    /// gone meanwhile (a logout), the new one is deleted too and the cycle is
    /// `false` (gone); should the deletion fail, the old session expires by
    /// itself when its mark ends.
    async fn finish_move(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &SessionRecord,
        tombstone: bool,
    ) -> Result<bool, StoreError> {
        let (old_key, token) = (self.key(old), record.sid.as_str());
        if let Err(e) = ServerStore::create(self, new, record).await {
            self.release(&old_key, token).await;
            return Err(e);
        }
        let finish = &self.finish_script;
        let moved_to = if tombstone {
            new.encode()
        } else {
            String::new()
        };
        let tombstone_ms = self.tombstone_ms();
        let finished = self
            .run(|mut c| async move {
                finish
                    .key(&old_key)
                    .arg(token)
                    .arg(&moved_to)
                    .arg(tombstone_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match finished {
            Ok(0) => {
                ServerStore::delete(self, new).await?;
                Ok(false)
            }
            Ok(_) => Ok(true),
            // With subjects, a revocation may have deleted the old session
            // while the answer was lost: the new one cannot be trusted to
            // be unrevoked, so it goes, and the cycle fails.
            Err(e) if tombstone => {
                let _ = ServerStore::delete(self, new).await;
                Err(e)
            }
            Err(e) => {
                crate::limited!(
                    crate::logging::LogClass::store,
                    warn,
                    error = %crate::logging::Chain(&e),
                    "a cycled session's old id could not be deleted; it expires when its mark ends"
                );
                Ok(true)
            }
        }
    }

    /// Runs one store operation under the command timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_until(Instant::now() + self.timeout, f).await
    }

    /// `run` within what is left until `until`: a write sent a second
    /// time shares the first one's timeout.
    async fn run_until<T, F, Fut>(&self, until: Instant, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = self.conn().await?;
        let result = match tokio::time::timeout_at(until, f(conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => Err(backend(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        self.topology.failed().await;
        result
    }
}

impl ServerStore for RedisStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let key = self.key(id);
        let fields: Vec<Option<String>> = self
            .run(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&["d", "sid", "c", "e", "x"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if fields.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let r = record(fields)?;
        Ok(r.is_live(now_ms).then(|| Arc::new(r)))
    }

    async fn create(&self, id: &SessionId, r: &SessionRecord) -> Result<(), StoreError> {
        let key = self.key(id);
        let data = r.data.as_str();
        let expiry = r.expiry_s.map(|x| x.to_string()).unwrap_or_default();
        let script = &self.create_script;
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let reply: Vec<String> = script
                    .key(&key)
                    .arg(data)
                    .arg(&r.sid)
                    .arg(r.created_ms)
                    .arg(r.expires_ms)
                    .arg(expiry)
                    .arg(self.deadline())
                    .invoke_async(&mut c)
                    .await?;
                self.replicated(&mut c, &key).await?;
                Ok(reply)
            })
            .await?;
        match reply.first().map(String::as_str) {
            Some("created") => Ok(()),
            _ => Err(unexpected("create", &reply)),
        }
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        let key = self.key(id);
        let script = &self.save_script;
        let policy = op.policy;
        let (until, deadline) = (Instant::now() + self.timeout, self.deadline());
        // With the session the request read, the merge and the new deadline
        // are worked out here. The common write (no cycle, no subject) puts
        // that result if the session is still what was read; when it is
        // not, or the write is another kind, the save script merges in Lua,
        // within the same timeout.
        let mut base = op.base.filter(|_| op.expect.is_none());
        if let (None, Some(read)) = (&op.cycle_to, base)
            && let Ok(Applied::Saved(result)) = apply_to(read, &op.change, &policy, op.now_ms)
        {
            let result = Arc::new(result);
            let job = PutJob {
                key: key.clone(),
                now_ms: op.now_ms,
                deadline_ms: deadline,
                read: (
                    read.data.as_str().to_owned(),
                    read.created_ms,
                    read.expiry_s,
                ),
                result: result.clone(),
                until,
            };
            match self.puts.put(job).await? {
                Put::Saved => {
                    return Ok(SaveOutcome::Saved {
                        id: *id,
                        record: result,
                    });
                }
                Put::Gone => return Ok(SaveOutcome::Gone),
                Put::Changed => base = None,
            }
        }
        // A cycle on one server is one script over both keys. Cluster puts
        // the new id in another slot: the old session is marked as moving
        // (read-only, and expiring by itself when the mark ends) until the
        // new one exists, then deleted.
        let cluster = matches!(*self.topology, Topology::Cluster(_));
        let (mode, new_key, new_sid) = match &op.cycle_to {
            None => ("none", None, ""),
            Some((_, sid)) if cluster => ("mark", None, sid.as_str()),
            Some((new_id, sid)) => ("move", Some(self.key(new_id)), sid.as_str()),
        };
        let mark_ms = self.mark_ms();
        // A cycle of a session that is still what was read stores the merge
        // done here (save.lua compares the data read).
        let merged = base.map(|b| b.data.merged(op.change.patches));
        let base_text = base.map_or("", |b| b.data.as_str());
        let merged_text = merged.as_ref().map_or("", |m| m.as_str());
        let key = &key;
        let new_key = &new_key;
        let reply = self
            .run_until(until, move |mut c| async move {
                let mut inv = script.key(key);
                if let Some(k) = new_key {
                    inv.key(k);
                }
                inv.arg(op.now_ms)
                    .arg(policy.ttl_s)
                    .arg(policy.absolute_ttl_s.map_or(-1, |a| a as i64))
                    .arg(policy.max_bytes)
                    .arg(
                        op.change
                            .expiry_s
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                    )
                    .arg(deadline)
                    .arg(base_text)
                    .arg(merged_text)
                    .arg(mode)
                    .arg(new_sid)
                    .arg(mark_ms);
                // A cycle of a session with subjects leaves a tombstone
                // (see save.lua); `expect` is set exactly for those.
                match (&op.cycle_to, op.expect) {
                    (Some((new_id, _)), Some(_)) => inv.arg(new_id.encode()),
                    _ => inv.arg(""),
                }
                .arg(self.tombstone_ms());
                match op.expect {
                    None => {
                        inv.arg("").arg(0);
                    }
                    Some(e) => {
                        let texts = e.subject.map(value_texts).unwrap_or_default();
                        inv.arg(serde_json::to_string(e.key).expect("a string serializes"))
                            .arg(texts.len())
                            .arg(texts);
                    }
                }
                for patch in op.change.patches {
                    // Canonical compact JSON: the script compares keys as written.
                    inv.arg(serde_json::to_string(patch).expect("a JSON map always serializes"));
                }
                let reply: Vec<String> = inv.invoke_async(&mut c).await?;
                self.replicated(&mut c, key).await?;
                Ok(reply)
            })
            .await;
        if mode == "mark" && reply.is_err() {
            // The mark may have been set although the answer was lost.
            self.release(key, new_sid).await;
        }
        let reply = reply?;
        match reply.first().map(String::as_str) {
            Some("gone") => Ok(SaveOutcome::Gone),
            Some("emptied") => Ok(SaveOutcome::Emptied),
            Some("reindex") => Ok(SaveOutcome::Reindex(
                reply.get(1).and_then(|raw| subject_of_text(raw)),
            )),
            Some("too_large") => Ok(SaveOutcome::Refused(UpdateError::TooLarge {
                size: reply.get(1).and_then(|s| s.parse().ok()).unwrap_or(0),
                max: op.policy.max_bytes,
            })),
            Some("saved") => {
                let mut fields = saved_fields(&reply)?;
                let mut record = match (fields.first(), merged) {
                    // Not echoed: the script stored the merge sent to it.
                    (Some(Some(echo)), Some(data)) if echo.is_empty() => with_data(data, &fields)?,
                    _ => record(std::mem::take(&mut fields))?,
                };
                let id = match (&op.cycle_to, mode) {
                    (Some((new_id, _)), "mark") => {
                        record.sid = new_sid.to_string();
                        if !self
                            .finish_move(id, new_id, &record, op.expect.is_some())
                            .await?
                        {
                            return Ok(SaveOutcome::Gone);
                        }
                        *new_id
                    }
                    (Some((new_id, _)), _) => *new_id,
                    (None, _) => *id,
                };
                Ok(SaveOutcome::Saved {
                    id,
                    record: Arc::new(record),
                })
            }
            _ => Err(unexpected("save", &reply)),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let key = self.key(id);
        let script = &self.delete_script;
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let reply: Vec<String> = script
                    .key(&key)
                    .arg(self.deadline())
                    .invoke_async(&mut c)
                    .await?;
                self.replicated(&mut c, &key).await?;
                Ok(reply)
            })
            .await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("deleted"), Some(n)) => Ok(n != "0"),
            _ => Err(unexpected("delete", &reply)),
        }
    }

    /// Redis expires sessions itself.
    async fn clear_expired(&self, _now_ms: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { ::redis::cmd("PING").query_async::<String>(&mut c).await })
            .await?;
        Ok(())
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
        self.lookup_sid(sid, now_ms).await
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        self.revoke_if(id, key, subject, now_ms).await
    }

    /// Not counted: Redis expires sessions by itself, so a counter kept
    /// beside them would drift, and `DBSIZE` counts other keys too.
    fn live_sessions(&self) -> Option<u64> {
        None
    }
}
