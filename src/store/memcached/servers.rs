//! The memcached servers: a small pool of connections to each, keys spread
//! over them by rendezvous hashing, and a server that fails left out for a
//! moment (its keys go to the others) and emptied before it is used again.
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

/// How long a server that failed is left out before it is tried again.
pub const RETRY_AFTER_MS: u64 = 1_000;

struct Server {
    addr: String,
    /// `tcp://host:port`, as the client takes it.
    dsn: String,
    conns: Box<[Mutex<Option<Client>>]>,
    next: AtomicUsize,
    /// 0 when in use; otherwise when it may be tried again (ms since the epoch).
    down_until: AtomicU64,
    /// Held while a returning server is emptied.
    readmit: Mutex<()>,
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
                    readmit: Mutex::new(()),
                })
                .collect(),
            timeout: cfg.timeout,
        }
    }

    /// The server a key lives on: the highest score among the servers in use.
    fn route(&self, key: &str, now_ms: u64) -> Result<&Server, StoreError> {
        self.servers
            .iter()
            .filter(|s| {
                let until = s.down_until.load(Ordering::Relaxed);
                until == 0 || now_ms >= until
            })
            .max_by_key(|s| score(&s.addr, key))
            .ok_or_else(|| StoreError::Backend("every memcached server is down".into()))
    }

    /// Runs `f` on a connection to the server of `key`. A failure (refused,
    /// reset, past the deadline) leaves that server out for a moment.
    async fn on<T>(
        &self,
        key: &str,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let now = crate::record::now_ms();
        let server = self.route(key, now)?;
        match tokio::time::timeout(self.timeout, self.run(server, f)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                server.leave_out();
                Err(e)
            }
            Err(_) => {
                server.leave_out();
                Err(StoreError::Timeout)
            }
        }
    }

    async fn run<T>(
        &self,
        server: &Server,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        if server.down_until.load(Ordering::Relaxed) != 0 {
            server.readmit().await?;
        }
        let i = server.next.fetch_add(1, Ordering::Relaxed) % server.conns.len();
        let mut slot = server.conns[i].lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(
                Client::new(&server.dsn)
                    .await
                    .map_err(|e| failed(&server.addr, e))?,
            );
        }
        let client = slot.as_mut().expect("connected above");
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                *slot = None;
                Err(failed(&server.addr, e))
            }
        }
    }

    /// The item under `key` and its CAS.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.on(key, async |c| {
            let v = c.meta_get(key, false, None, Some(&["v", "c"])).await?;
            Ok(v.and_then(|v| Some((v.data?, v.cas?))))
        })
        .await
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
        self.on(key, async |c| {
            match c.meta_set(key, value, false, None, Some(&flags)).await {
                Ok(_) => Ok(Wrote::Done),
                Err(Error::Protocol(Status::Exists)) => Ok(Wrote::Changed),
                Err(Error::Protocol(Status::NotFound)) => Ok(Wrote::Missing),
                Err(Error::Protocol(Status::NotStored)) => Ok(Wrote::Exists),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Deletes `key`, only if unchanged when a CAS is given.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<Wrote, StoreError> {
        let flag = cas.map(|c| format!("C{c}"));
        let flags: Vec<&str> = flag.iter().map(String::as_str).collect();
        self.on(key, async |c| {
            match c.meta_delete(key, false, None, Some(&flags)).await {
                Ok(_) => Ok(Wrote::Done),
                Err(Error::Protocol(Status::Exists)) => Ok(Wrote::Changed),
                Err(Error::Protocol(Status::NotFound)) => Ok(Wrote::Missing),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Whether every server in use answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let now = crate::record::now_ms();
        let mut up = 0;
        for server in self.servers.iter() {
            let until = server.down_until.load(Ordering::Relaxed);
            if until != 0 && now < until {
                continue;
            }
            let r = tokio::time::timeout(
                self.timeout,
                self.run(server, async |c| c.version().await.map(drop)),
            )
            .await;
            match r {
                Ok(Ok(())) => up += 1,
                Ok(Err(_)) | Err(_) => server.leave_out(),
            }
        }
        if up == 0 {
            return Err(StoreError::Backend("no memcached server answers".into()));
        }
        Ok(())
    }
}

impl Server {
    fn leave_out(&self) {
        let until = crate::record::now_ms() + RETRY_AFTER_MS;
        if self.down_until.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!(
                server = %self.addr,
                "memcached server failed: its keys go to the other servers for now"
            );
        }
    }

    /// A server back after failing is emptied before it is used: while it
    /// was out its keys lived elsewhere, and what it still holds (if it was
    /// only out of reach) may be sessions since flushed or revoked there.
    async fn readmit(&self) -> Result<(), StoreError> {
        let _one = self.readmit.lock().await;
        if self.down_until.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut client = Client::new(&self.dsn)
            .await
            .map_err(|e| failed(&self.addr, e))?;
        client
            .flush_all()
            .await
            .map_err(|e| failed(&self.addr, e))?;
        for slot in self.conns.iter() {
            *slot.lock().await = None;
        }
        self.down_until.store(0, Ordering::Relaxed);
        tracing::info!(server = %self.addr, "memcached server back in use, emptied");
        Ok(())
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
