//! The memcached servers: a small pool of connections to each, and keys
//! spread over them by rendezvous hashing. A key always goes to the same
//! server, on every instance: a server that is down fails the requests on
//! its keys (`on_store_error`) rather than sending them elsewhere, where an
//! instance that still reached it and one that did not would disagree about
//! where a session lives (a revocation acknowledged by one while the other
//! still serves the session). A server that failed is not tried again for
//! a moment, so its requests fail at once instead of each waiting out the
//! timeout.
//!
//! Rendezvous (highest random weight) hashing is consistent hashing in a
//! dozen lines: a key goes to the server with the highest hash of
//! (server, key), so adding or losing one server moves only the keys that
//! were, or will be, on it. The hash is SHA-256 (already in the tree) so
//! that every instance and every version routes alike; two hashes per
//! operation cost well under a microsecond next to the round trip.

use super::super::StoreError;
use crate::config::MemcachedConfig;
use async_memcached::{Client, Error, MetaProtocol, Status};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long a server that failed is not tried again.
pub const RETRY_AFTER_MS: u64 = 1_000;

struct Server {
    addr: String,
    /// `tcp://host:port`, as the client takes it.
    dsn: String,
    conns: Box<[Mutex<Option<Client>>]>,
    next: AtomicUsize,
    /// 0 when in use; otherwise when it may be tried again (ms since the epoch).
    down_until: AtomicU64,
}

pub struct Servers {
    servers: Box<[Server]>,
    timeout: Duration,
}

/// What a conditional write or delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    Done,
    /// The item changed since it was read (its CAS moved on).
    Changed,
    /// No such item.
    Missing,
    /// `add`: the key exists already.
    Exists,
}

/// How a set writes.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Whatever is there.
    Set,
    /// Only if absent.
    Add,
    /// Only if unchanged since the read that gave this CAS.
    Cas(u64),
}

fn failed(addr: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("memcached {addr}: {e}").into())
}

impl Servers {
    pub fn new(cfg: &MemcachedConfig) -> Servers {
        Servers {
            servers: cfg
                .servers
                .iter()
                .map(|addr| Server {
                    addr: addr.clone(),
                    dsn: format!("tcp://{addr}"),
                    conns: (0..cfg.pool_size.max(1))
                        .map(|_| Mutex::new(None))
                        .collect(),
                    next: AtomicUsize::new(0),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            timeout: cfg.timeout,
        }
    }

    /// The server a key lives on: the highest score of all, up or down.
    fn route(&self, key: &str, now_ms: u64) -> Result<&Server, StoreError> {
        let server = self
            .servers
            .iter()
            .max_by_key(|s| score(&s.addr, key))
            .expect("at least one server (checked by the config)");
        let until = server.down_until.load(Ordering::Relaxed);
        if until != 0 && now_ms < until {
            return Err(failed(&server.addr, "down (failed a moment ago)"));
        }
        Ok(server)
    }

    /// Runs `op` on a connection to the server of `key`. A connection that
    /// fails (refused, reset, past the deadline) marks the server down for
    /// a moment; an answer that is an error (a key or item memcached
    /// refuses) does not.
    async fn on(&self, key: &str, op: Op<'_>) -> Result<Reply, StoreError> {
        let now = crate::record::now_ms();
        let server = self.route(key, now)?;
        match tokio::time::timeout(self.timeout, self.run(server, &op)).await {
            Ok(Ok(v)) => {
                server.down_until.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err((e, connection))) => {
                if connection {
                    server.mark_down();
                }
                Err(e)
            }
            Err(_) => {
                server.mark_down();
                Err(StoreError::Timeout)
            }
        }
    }

    /// `op` on one of the server's connections; an error says whether the
    /// connection failed (rather than memcached refusing the request).
    /// A pooled connection that fails (the server restarted since it was
    /// opened) is replaced and the request tried once more on a new one.
    async fn run(&self, server: &Server, op: &Op<'_>) -> Result<Reply, (StoreError, bool)> {
        // A free connection if there is one; otherwise wait, in turn, for
        // one: a request does not queue behind a slow one while others idle.
        let n = server.conns.len();
        let start = server.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|k| server.conns[(start + k) % n].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => server.conns[start % n].lock().await,
        };
        let mut reused = true;
        loop {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                reused = false;
                *slot = Some(
                    Client::new(&server.dsn)
                        .await
                        .map_err(|e| (failed(&server.addr, e), true))?,
                );
            }
            let client = slot.as_mut().expect("connected above");
            match op.exec(client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let connection = matches!(
                        e,
                        Error::Io(_) | Error::Connect(_) | Error::ConnectionClosed
                    );
                    if connection || client.is_closed() {
                        *slot = None;
                    }
                    if !(connection && reused) {
                        return Err((failed(&server.addr, e), connection));
                    }
                }
            }
        }
    }

    /// The item under `key` and its CAS.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self.on(key, Op::Get(key)).await? {
            Reply::Item(item) => Ok(item),
            _ => unreachable!("a get answers an item"),
        }
    }

    /// Writes `value` under `key` until `expires_s` (seconds since the epoch).
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_s: u64,
        mode: Mode,
    ) -> Result<Wrote, StoreError> {
        let ttl = format!("T{expires_s}");
        let cas;
        let flags: [&str; 2] = match mode {
            Mode::Set => [&ttl, "MS"],
            Mode::Add => [&ttl, "ME"],
            Mode::Cas(c) => {
                cas = format!("C{c}");
                [&ttl, &cas]
            }
        };
        match self
            .on(
                key,
                Op::Set {
                    key,
                    value,
                    flags: &flags,
                },
            )
            .await?
        {
            Reply::Wrote(w) => Ok(w),
            _ => unreachable!("a set answers what it wrote"),
        }
    }

    /// Deletes `key`, only if unchanged when a CAS is given.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<Wrote, StoreError> {
        let flag = cas.map(|c| format!("C{c}"));
        let flags: Vec<&str> = flag.iter().map(String::as_str).collect();
        match self.on(key, Op::Delete { key, flags: &flags }).await? {
            Reply::Wrote(w) => Ok(w),
            _ => unreachable!("a delete answers what it did"),
        }
    }

    /// Whether a server answers: with one down, the sessions on the
    /// others are still served (a readiness probe failing would take every
    /// instance out of its load balancer for a part of the sessions).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut up = 0;
        for server in self.servers.iter() {
            let r = tokio::time::timeout(self.timeout, self.run(server, &Op::Version)).await;
            match r {
                Ok(Ok(_)) => {
                    server.down_until.store(0, Ordering::Relaxed);
                    up += 1
                }
                Ok(Err((_, true))) | Err(_) => server.mark_down(),
                Ok(Err((_, false))) => {}
            }
        }
        if up == 0 {
            return Err(StoreError::Backend("no memcached server answers".into()));
        }
        Ok(())
    }
}

/// One request to a server: tried again as a whole on a new connection.
enum Op<'a> {
    Get(&'a str),
    Set {
        key: &'a str,
        value: &'a [u8],
        flags: &'a [&'a str],
    },
    Delete {
        key: &'a str,
        flags: &'a [&'a str],
    },
    Version,
}

enum Reply {
    Item(Option<(Vec<u8>, u64)>),
    Wrote(Wrote),
    Answered,
}

impl Op<'_> {
    async fn exec(&self, c: &mut Client) -> Result<Reply, Error> {
        let wrote = |r: Result<Option<_>, Error>| match r {
            Ok(_) => Ok(Reply::Wrote(Wrote::Done)),
            Err(Error::Protocol(Status::Exists)) => Ok(Reply::Wrote(Wrote::Changed)),
            Err(Error::Protocol(Status::NotFound)) => Ok(Reply::Wrote(Wrote::Missing)),
            Err(Error::Protocol(Status::NotStored)) => Ok(Reply::Wrote(Wrote::Exists)),
            Err(e) => Err(e),
        };
        match *self {
            Op::Get(key) => {
                let v = c.meta_get(key, false, None, Some(&["v", "c"])).await?;
                Ok(Reply::Item(v.and_then(|v| Some((v.data?, v.cas?)))))
            }
            Op::Set { key, value, flags } => {
                wrote(c.meta_set(key, value, false, None, Some(flags)).await)
            }
            Op::Delete { key, flags } => wrote(c.meta_delete(key, false, None, Some(flags)).await),
            Op::Version => c.version().await.map(|_| Reply::Answered),
        }
    }
}

impl Server {
    fn mark_down(&self) {
        let until = crate::record::now_ms() + RETRY_AFTER_MS;
        if self.down_until.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!(
                server = %self.addr,
                "memcached server failed: the sessions on it cannot be read or written until it is back"
            );
        }
    }
}

fn score(server: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_a_server_moves_only_its_keys() {
        let three = ["a:1", "b:1", "c:1"];
        let two = ["a:1", "b:1"];
        let place = |servers: &[&str], key: &str| -> String {
            servers
                .iter()
                .max_by_key(|s| score(s, key))
                .unwrap()
                .to_string()
        };
        let (mut moved, mut on_c) = (0, 0);
        for i in 0..3000 {
            let key = format!("k{i}");
            let before = place(&three, &key);
            let after = place(&two, &key);
            if before == "c:1" {
                on_c += 1;
            } else if before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys on the servers that stayed do not move");
        // About a third of the keys were on each server.
        assert!((800..1200).contains(&on_c), "{on_c}");
    }
}
