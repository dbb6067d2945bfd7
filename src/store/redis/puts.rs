//! The common writes (put.lua) of one moment, sent to Redis as one script
//! call. Redis runs scripts one at a time, on one core that every instance
//! shares, so what a write costs there bounds the writes of the whole
//! fleet. Of the 80,000 instructions a lone put costs Redis, about 31,000
//! are the call's (EVALSHA and its arguments, the clock); sixteen writes in
//! one call cost 50,000 each (callgrind, `bench/redis_script.py`).
//!
//! One call is in flight at a time: the writes that arrive meanwhile make
//! the next one, so a lone write goes at once and writes under load share
//! a call. Each write keeps its own outcome, deadline and timeout. Cluster
//! puts each session in a slot of its own, and a script's keys must share
//! one: there, each write is a call of its own.

use super::reply::unexpected;
use super::topology::{Topology, backend, replicated};
use crate::record::SessionRecord;
use crate::store::StoreError;
use ::redis::Script;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Writes in one call, at most: a call holds Redis for its whole run.
const MAX_PUTS: usize = 64;
/// The sessions' data in one call, at most (bytes): past it, the call
/// ends with the write that crossed it.
const MAX_CALL_BYTES: usize = 1024 * 1024;

/// What put.lua did with a write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Put {
    Saved,
    Gone,
    /// The session is no longer what was read: the save script merges.
    Changed,
}

/// One common write: the session as it was read, and the result to store.
pub(super) struct PutJob {
    pub key: String,
    pub now_ms: u64,
    /// Past it (Redis's clock), Redis refuses the write: by then its
    /// caller has been told it failed.
    pub deadline_ms: u64,
    /// The session as read: its data, created time and `expiry=N`.
    pub read: (String, u64, Option<u64>),
    pub result: Arc<SessionRecord>,
    /// When its caller stops waiting.
    pub until: Instant,
}

type Queued = (PutJob, oneshot::Sender<Result<Put, StoreError>>);

/// What a call needs, shared with the task that sends them.
pub(super) struct Link {
    pub topology: Arc<Topology>,
    pub script: Script,
    pub timeout: Duration,
    pub replicas: u32,
}

pub(super) struct Puts {
    link: Arc<Link>,
    /// The queue of the task that sends the calls; started by the first
    /// write, and again by a write that finds it gone (its runtime ended).
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
}

impl Puts {
    pub fn new(link: Link) -> Puts {
        Puts {
            link: Arc::new(link),
            queue: Mutex::new(None),
        }
    }

    /// Stores `job.result` if the session still holds `job.read`.
    pub async fn put(&self, job: PutJob) -> Result<Put, StoreError> {
        let until = job.until;
        let (tx, rx) = oneshot::channel();
        if matches!(*self.link.topology, Topology::Cluster(_)) {
            send(&self.link, vec![(job, tx)]).await;
        } else {
            self.enqueue((job, tx));
        }
        match tokio::time::timeout_at(until, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StoreError::Backend(
                "the task sending writes to Redis stopped".into(),
            )),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    fn enqueue(&self, queued: Queued) {
        // Nothing is left half-done under the lock.
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = match queue.as_ref() {
            Some(q) => match q.send(queued) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => queued,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A new receiver holds it: the send cannot fail.
        let _ = tx.send(queued);
        tokio::spawn(sender(self.link.clone(), rx));
        *queue = Some(tx);
    }
}

/// Sends the queued writes, one call at a time, until the store is gone.
async fn sender(link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.read.0.len() + first.0.result.data.as_str().len();
        let mut batch = vec![first];
        while batch.len() < MAX_PUTS && bytes < MAX_CALL_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.0.read.0.len() + next.0.result.data.as_str().len();
            batch.push(next);
        }
        send(&link, batch).await;
    }
}

/// Makes one call of `batch` and answers each of its writes.
async fn send(link: &Link, mut batch: Vec<Queued>) {
    // A write whose caller stopped waiting is not sent: it has been told
    // the write failed.
    batch.retain(|(_, tx)| !tx.is_closed());
    let Some(until) = batch.iter().map(|(job, _)| job.until).max() else {
        return;
    };
    let replies = match tokio::time::timeout_at(until, call(link, &batch)).await {
        Ok(Ok(replies)) if replies.len() == batch.len() => replies,
        Ok(Ok(replies)) => {
            for (_, tx) in batch {
                let _ = tx.send(Err(unexpected("save", &replies)));
            }
            return;
        }
        Ok(Err(e)) => return fail(link, batch, e).await,
        Err(_) => return fail(link, batch, StoreError::Timeout).await,
    };
    for ((_, tx), reply) in batch.into_iter().zip(replies) {
        let outcome = match reply.as_str() {
            "saved" => Ok(Put::Saved),
            "gone" => Ok(Put::Gone),
            "changed" => Ok(Put::Changed),
            other => {
                let parts: Vec<String> = other.split(' ').map(str::to_string).collect();
                Err(unexpected("save", &parts))
            }
        };
        let _ = tx.send(outcome);
    }
}

async fn call(link: &Link, batch: &[Queued]) -> Result<Vec<String>, StoreError> {
    let mut c = link.topology.conn(link.timeout).await?;
    // EVALSHA built here, sized once, rather than through redis-rs's
    // ScriptInvocation, which keeps each argument in a buffer of its own
    // and then copies them all into the command: nine allocations and a
    // copy of the data a write, on the proxy's core that bounds Redis
    // writes (callgrind, one client: 77,000-77,800 -> 75,740 instructions
    // a write). NOSCRIPT is answered as redis-rs does: load, send again.
    let data: usize = batch
        .iter()
        .map(|(job, _)| job.key.len() + job.read.0.len() + job.result.data.as_str().len())
        .sum();
    // Sized once: each write's numbers take under 100 bytes.
    let mut cmd = ::redis::Cmd::with_capacity(3 + 9 * batch.len(), 64 + data + 100 * batch.len());
    cmd.arg("EVALSHA")
        .arg(link.script.get_hash())
        .arg(batch.len());
    for (job, _) in batch {
        cmd.arg(&job.key);
    }
    let expiry = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
    for (job, _) in batch {
        let ((data, created_ms, expiry_s), result) = (&job.read, &*job.result);
        cmd.arg(job.now_ms)
            .arg(job.deadline_ms)
            .arg(data.as_str())
            .arg(created_ms)
            .arg(expiry(*expiry_s))
            .arg(if result.expiry_s == *expiry_s {
                String::new()
            } else {
                expiry(result.expiry_s)
            })
            .arg(result.expires_ms)
            .arg(result.data.as_str());
    }
    let replies: Vec<String> = match cmd.query_async(&mut c).await {
        // A Redis that restarted, or was flushed of its scripts.
        Err(e) if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) => {
            link.script.load_async(&mut c).await.map_err(backend)?;
            cmd.query_async(&mut c).await
        }
        other => other,
    }
    .map_err(backend)?;
    // One WAIT covers every write of the call (made before it on this
    // connection); on Cluster the call is one write.
    replicated(&mut c, &batch[0].0.key, link.replicas, link.timeout)
        .await
        .map_err(backend)?;
    Ok(replies)
}

/// Answers every write of a failed call with its error.
async fn fail(link: &Link, batch: Vec<Queued>, error: StoreError) {
    link.topology.failed().await;
    let shared = Arc::new(error);
    for (_, tx) in batch {
        let _ = tx.send(Err(match &*shared {
            StoreError::Timeout => StoreError::Timeout,
            _ => StoreError::Backend(Box::new(SharedError(shared.clone()))),
        }));
    }
}

/// One failure of a call, reported to each of its writes.
#[derive(Debug)]
struct SharedError(Arc<StoreError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a call of several writes failed")
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
