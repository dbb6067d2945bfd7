//! The connection to a standalone Redis over plain TCP: every request's
//! commands share one socket, written in the order they are sent and
//! answered in that order (Redis answers a connection's commands in turn).
//!
//! Instead of redis-rs's multiplexed connection for this one case: a
//! session read through it cost 22,700 instructions more than a
//! memory-store read (callgrind, `bench/instructions.sh --store redis`),
//! 13,900 of them in redis-rs's connection (its channel to a driver task,
//! its sink and `combine` parser). Commands are still built by redis-rs
//! (`Cmd`, `Script`) and replies read as its `Value`; TLS, Sentinel and
//! Cluster keep redis-rs's connections.
//!
//! A broken socket fails the commands waiting on it and is replaced by the
//! next command; nothing is retried, so a write is never applied twice.

use super::resp;
use ::redis::aio::ConnectionLike;
use ::redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};

/// Read buffer of a socket: a few session reads' replies.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// After a failed attempt to connect, commands fail at once for this long
/// instead of each trying again: a Redis that is down is not sent a
/// connection attempt per request, and one that is back is used within it.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Where a standalone Redis is and how to log in.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl Target {
    /// The target of a `redis://` URL; `None` for the addresses that keep
    /// redis-rs's connection (TLS, Unix sockets).
    pub fn of(info: &::redis::ConnectionInfo) -> Option<Target> {
        let ::redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let login = info.redis_settings();
        Some(Target {
            host: host.clone(),
            port: *port,
            username: login.username().map(str::to_owned),
            password: login.password().map(str::to_owned),
            db: login.db(),
        })
    }
}

/// A handle on the connection; clones share it.
#[derive(Clone)]
pub struct Direct {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Link>>>,
    /// One connection attempt at a time (the others wait for its socket),
    /// and when and why the last one failed.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(link) = self.current.get_mut().ok().and_then(Option::take) {
            link.close("the store was closed");
        }
    }
}

/// One socket: the bytes not yet written and the commands awaiting replies,
/// in the order they were written.
struct Link {
    state: Mutex<LinkState>,
    wake_writer: Notify,
}

struct LinkState {
    out: Vec<u8>,
    waiting: VecDeque<Waiter>,
    closed: Option<&'static str>,
}

struct Waiter {
    /// Replies to read past before keeping any (a pipeline's offset).
    skip: usize,
    keep: usize,
    got: Vec<Value>,
    reply: oneshot::Sender<RedisResult<Vec<Value>>>,
}

fn closed_error(why: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        why,
    ))
}

impl Link {
    fn is_open(&self) -> bool {
        self.state.lock().expect("link lock").closed.is_none()
    }

    /// Fails every command waiting on the socket and stops its writer.
    fn close(&self, why: &'static str) {
        let waiting = {
            let mut s = self.state.lock().expect("link lock");
            if s.closed.is_none() {
                s.closed = Some(why);
            }
            std::mem::take(&mut s.waiting)
        };
        for w in waiting {
            let _ = w.reply.send(Err(closed_error(why)));
        }
        self.wake_writer.notify_one();
    }

    /// Queues a command's bytes; its replies arrive on the receiver.
    fn send(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        skip: usize,
        keep: usize,
    ) -> RedisResult<oneshot::Receiver<RedisResult<Vec<Value>>>> {
        let (tx, rx) = oneshot::channel();
        if skip + keep == 0 {
            // Nothing to wait for: no reply would ever complete it.
            let _ = tx.send(Ok(Vec::new()));
            return Ok(rx);
        }
        {
            let mut s = self.state.lock().expect("link lock");
            if let Some(why) = s.closed {
                return Err(closed_error(why));
            }
            write(&mut s.out);
            s.waiting.push_back(Waiter {
                skip,
                keep,
                got: Vec::with_capacity(keep),
                reply: tx,
            });
        }
        self.wake_writer.notify_one();
        Ok(rx)
    }

    /// Hands a reply to the command it answers; false when none awaits one.
    fn deliver(&self, v: Value) -> bool {
        let mut s = self.state.lock().expect("link lock");
        let Some(front) = s.waiting.front_mut() else {
            return false;
        };
        if front.skip > 0 {
            front.skip -= 1;
        } else {
            front.got.push(v);
        }
        if front.skip == 0 && front.got.len() == front.keep {
            let w = s.waiting.pop_front().expect("a front");
            drop(s);
            // Its caller may have given up (a timeout): the reply is dropped.
            let _ = w.reply.send(Ok(w.got));
        }
        true
    }
}

async fn write_loop(link: Arc<Link>, mut socket: OwnedWriteHalf) {
    let mut spare = Vec::new();
    loop {
        link.wake_writer.notified().await;
        loop {
            let out = {
                let mut s = link.state.lock().expect("link lock");
                if s.closed.is_some() {
                    return;
                }
                if s.out.is_empty() {
                    break;
                }
                std::mem::replace(&mut s.out, std::mem::take(&mut spare))
            };
            if socket.write_all(&out).await.is_err() {
                link.close("writing to Redis failed");
                return;
            }
            spare = out;
            spare.clear();
        }
    }
}

async fn read_loop(link: Arc<Link>, mut socket: OwnedReadHalf) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    loop {
        match socket.read_buf(&mut buf).await {
            Ok(0) => return link.close("Redis closed the connection"),
            Ok(_) => {}
            Err(_) => return link.close("reading from Redis failed"),
        }
        let mut pos = 0;
        loop {
            match resp::parse(&buf[pos..]) {
                Ok(Some((v, used))) => {
                    pos += used;
                    if !link.deliver(v) {
                        return link.close("Redis sent a reply nothing asked for");
                    }
                }
                Ok(None) => break,
                Err(_) => return link.close("Redis sent a malformed reply"),
            }
        }
        buf.drain(..pos);
        if !link.is_open() {
            return;
        }
    }
}

impl Direct {
    pub fn new(target: Target, connect_timeout: Duration) -> Direct {
        Direct {
            shared: Arc::new(Shared {
                target,
                connect_timeout,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn open_link(&self) -> Option<Arc<Link>> {
        let current = self.shared.current.lock().expect("link slot lock");
        current.as_ref().filter(|l| l.is_open()).cloned()
    }

    async fn link(&self) -> RedisResult<Arc<Link>> {
        if let Some(link) = self.open_link() {
            return Ok(link);
        }
        let mut failed = self.shared.connecting.lock().await;
        if let Some(link) = self.open_link() {
            return Ok(link);
        }
        if let Some((at, why)) = failed.as_ref().filter(|(at, _)| at.elapsed() < RETRY_AFTER) {
            let ago = format!("{} ms ago: {why}", at.elapsed().as_millis());
            return Err(RedisError::from((
                ErrorKind::Io,
                "connecting to Redis failed a moment ago",
                ago,
            )));
        }
        let link = match tokio::time::timeout(self.shared.connect_timeout, self.connect()).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                *failed = Some((Instant::now(), e.to_string()));
                return Err(e);
            }
            Err(_) => {
                *failed = Some((Instant::now(), "timed out".into()));
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "connecting to Redis timed out",
                )));
            }
        };
        *failed = None;
        *self.shared.current.lock().expect("link slot lock") = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> RedisResult<Arc<Link>> {
        let t = &self.shared.target;
        let socket = TcpStream::connect((t.host.as_str(), t.port)).await?;
        socket.set_nodelay(true)?;
        let (read, write) = socket.into_split();
        let link = Arc::new(Link {
            state: Mutex::new(LinkState {
                out: Vec::new(),
                waiting: VecDeque::new(),
                closed: None,
            }),
            wake_writer: Notify::new(),
        });
        tokio::spawn(read_loop(link.clone(), read));
        tokio::spawn(write_loop(link.clone(), write));
        let login = async {
            if let Some(password) = &t.password {
                let mut auth = ::redis::cmd("AUTH");
                if let Some(user) = &t.username {
                    auth.arg(user);
                }
                auth.arg(password);
                one(&link, &auth).await?.extract_error()?;
            }
            if t.db != 0 {
                one(&link, ::redis::cmd("SELECT").arg(t.db))
                    .await?
                    .extract_error()?;
            }
            Ok::<_, RedisError>(())
        };
        if let Err(e) = login.await {
            link.close("logging in to Redis failed");
            return Err(e);
        }
        Ok(link)
    }
}

async fn one(link: &Link, cmd: &Cmd) -> RedisResult<Value> {
    let rx = link.send(|out| cmd.write_packed_command(out), 0, 1)?;
    let mut replies = rx
        .await
        .map_err(|_| closed_error("the connection to Redis ended"))??;
    Ok(replies.pop().unwrap_or(Value::Nil))
}

impl ConnectionLike for Direct {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { one(&*self.link().await?, cmd).await })
    }

    /// Plain pipelines: `offset` replies are read past, the next `count`
    /// kept. (The store sends no `MULTI` transactions, whose queued
    /// commands' errors redis-rs reads differently.)
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let link = self.link().await?;
            let rx = link.send(
                |out| out.extend_from_slice(&pipeline.get_packed_pipeline()),
                offset,
                count,
            )?;
            rx.await
                .map_err(|_| closed_error("the connection to Redis ended"))?
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.target.db
    }
}
