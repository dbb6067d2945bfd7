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
//! next command; a command is sent again only when none of its bytes were
//! written, so a write is never applied twice.

use super::resp;
use crate::config::Secret;
use ::redis::aio::ConnectionLike;
use ::redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot, watch};

/// Read buffer of a socket: a few session reads' replies.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The most a socket buffers of a reply not yet whole: far above any
/// session or index listing, so only a broken server reaches it.
const MAX_PENDING_REPLY_BYTES: usize = 64 * 1024 * 1024;
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
    pub password: Option<Secret>,
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
            password: login.password().map(|p| Secret::new(p.as_bytes())),
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
    /// Bounds an attempt to connect, and how long the oldest command may
    /// wait for its reply before the socket is taken for stuck.
    timeout: Duration,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    link: Option<Arc<Link>>,
    /// The attempt to connect under way, if any: one at a time, run as a
    /// task of its own, so that a caller giving up cannot abandon it
    /// half-way (a socket logged in and never used or closed).
    attempt: Option<watch::Receiver<bool>>,
    /// When and why the last attempt failed.
    failed: Option<(Instant, String)>,
}

impl Slot {
    fn open_link(&self) -> Option<Arc<Link>> {
        self.link.as_ref().filter(|l| l.is_open()).cloned()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(link) = self.slot.get_mut().ok().and_then(|s| s.link.take()) {
            link.close("the store was closed");
        }
    }
}

/// One socket: the bytes not yet written and the commands awaiting replies,
/// in the order they were written.
struct Link {
    state: Mutex<LinkState>,
    wake_writer: Notify,
    stuck_after: Duration,
}

struct LinkState {
    out: Vec<u8>,
    waiting: VecDeque<Waiter>,
    closed: Option<&'static str>,
}

struct Waiter {
    since: Instant,
    reply: oneshot::Sender<RedisResult<Value>>,
}

fn closed_error(why: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        why,
    ))
}

/// Why a command was not written to a socket: it may be sent on another.
struct NotSent(&'static str);

impl Link {
    fn new(stuck_after: Duration) -> Link {
        Link {
            state: Mutex::new(LinkState {
                out: Vec::new(),
                waiting: VecDeque::new(),
                closed: None,
            }),
            wake_writer: Notify::new(),
            stuck_after,
        }
    }

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
            s.out = Vec::new();
            std::mem::take(&mut s.waiting)
        };
        for w in waiting {
            let _ = w.reply.send(Err(closed_error(why)));
        }
        self.wake_writer.notify_one();
    }

    /// Queues a command's bytes; its reply arrives on the receiver. A
    /// socket whose oldest command has waited past `stuck_after` (a Redis
    /// that stopped answering, a connection dropped without a word) is
    /// closed instead: its commands' callers have given up, and without
    /// this the queue would grow with every request until TCP gave up.
    fn send(&self, cmd: &Cmd) -> Result<oneshot::Receiver<RedisResult<Value>>, NotSent> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        {
            let mut s = self.state.lock().expect("link lock");
            if let Some(why) = s.closed {
                return Err(NotSent(why));
            }
            let stuck = s
                .waiting
                .front()
                .is_some_and(|w| now.saturating_duration_since(w.since) > self.stuck_after);
            if !stuck {
                cmd.write_packed_command(&mut s.out);
                s.waiting.push_back(Waiter {
                    since: now,
                    reply: tx,
                });
            }
            drop(s);
            if stuck {
                self.close("Redis did not answer in time");
                return Err(NotSent("Redis did not answer in time"));
            }
        }
        self.wake_writer.notify_one();
        Ok(rx)
    }

    /// Hands a reply to the command it answers; false when none awaits one.
    fn deliver(&self, v: Value) -> bool {
        let w = self.state.lock().expect("link lock").waiting.pop_front();
        match w {
            // Its caller may have given up (a timeout): the reply is dropped.
            Some(w) => {
                let _ = w.reply.send(Ok(v));
                true
            }
            None => false,
        }
    }
}

/// Held by each of a socket's two tasks: however the task ends (a panic,
/// or its runtime shutting down while the store lives on), the socket is
/// closed, so that commands fail and the next one opens a new socket
/// instead of waiting for replies no task will read.
struct CloseOnExit(Arc<Link>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close("the connection's task ended");
    }
}

async fn write_loop(link: Arc<Link>, mut socket: OwnedWriteHalf) {
    let _close = CloseOnExit(link.clone());
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
    let _close = CloseOnExit(link.clone());
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
                Err(resp::Malformed(why)) => return link.close(why),
            }
        }
        buf.drain(..pos);
        if buf.len() > MAX_PENDING_REPLY_BYTES {
            return link.close("Redis sent a reply larger than any the store asks for");
        }
        if buf.is_empty() && buf.capacity() > 4 * READ_BUFFER_BYTES {
            // Not kept at the size of the largest reply ever read.
            buf = Vec::with_capacity(READ_BUFFER_BYTES);
        }
        if !link.is_open() {
            return;
        }
    }
}

/// AUTH and SELECT, answered before the socket is shared: an attempt given
/// up during its login leaves nothing behind but a closed socket.
async fn login(socket: &mut TcpStream, t: &Target) -> RedisResult<()> {
    let mut out = Vec::new();
    let mut asked = 0;
    if let Some(password) = &t.password {
        let mut auth = ::redis::cmd("AUTH");
        if let Some(user) = &t.username {
            auth.arg(user);
        }
        auth.arg(password.expose());
        auth.write_packed_command(&mut out);
        asked += 1;
    }
    if t.db != 0 {
        ::redis::cmd("SELECT")
            .arg(t.db)
            .write_packed_command(&mut out);
        asked += 1;
    }
    if asked == 0 {
        return Ok(());
    }
    socket.write_all(&out).await?;
    let mut buf = Vec::with_capacity(256);
    while asked > 0 {
        if socket.read_buf(&mut buf).await? == 0 {
            return Err(closed_error("Redis closed the connection while logging in"));
        }
        let mut pos = 0;
        while let Some((v, used)) =
            resp::parse(&buf[pos..]).map_err(|resp::Malformed(why)| closed_error(why))?
        {
            pos += used;
            v.extract_error()?;
            asked -= 1;
        }
        buf.drain(..pos);
    }
    Ok(())
}

async fn connect(t: &Target, stuck_after: Duration) -> RedisResult<Arc<Link>> {
    let mut socket = TcpStream::connect((t.host.as_str(), t.port)).await?;
    socket.set_nodelay(true)?;
    login(&mut socket, t).await?;
    let (read, write) = socket.into_split();
    let link = Arc::new(Link::new(stuck_after));
    tokio::spawn(read_loop(link.clone(), read));
    tokio::spawn(write_loop(link.clone(), write));
    Ok(link)
}

/// One attempt to connect, bounded by the store's timeout; its outcome is
/// left in the slot for every caller waiting on it.
async fn attempt(shared: Arc<Shared>, done: watch::Sender<bool>) {
    let outcome =
        match tokio::time::timeout(shared.timeout, connect(&shared.target, shared.timeout)).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
    {
        let mut slot = shared.slot.lock().expect("slot lock");
        slot.attempt = None;
        match outcome {
            Ok(link) => {
                slot.link = Some(link);
                slot.failed = None;
            }
            Err(why) => slot.failed = Some((Instant::now(), why)),
        }
    }
    let _ = done.send(true);
}

fn connect_error(what: &'static str, why: String) -> RedisError {
    RedisError::from((ErrorKind::Io, what, why))
}

impl Direct {
    pub fn new(target: Target, timeout: Duration) -> Direct {
        Direct {
            shared: Arc::new(Shared {
                target,
                timeout,
                slot: Mutex::new(Slot::default()),
            }),
        }
    }

    async fn link(&self) -> RedisResult<Arc<Link>> {
        let mut ended = {
            let mut slot = self.shared.slot.lock().expect("slot lock");
            // Not asked whether it is still open (a lock more per command):
            // `send` finds out, and `one` then drops it from the slot.
            if let Some(link) = &slot.link {
                return Ok(link.clone());
            }
            if let Some((at, why)) = slot
                .failed
                .as_ref()
                .filter(|(at, _)| at.elapsed() < RETRY_AFTER)
            {
                return Err(connect_error(
                    "connecting to Redis failed a moment ago",
                    format!("{} ms ago: {why}", at.elapsed().as_millis()),
                ));
            }
            match &slot.attempt {
                // (An attempt whose task ended without a word, a panic,
                // is not waited on: another is made.)
                Some(ended) if ended.has_changed().is_ok() => ended.clone(),
                _ => {
                    let (done, ended) = watch::channel(false);
                    slot.attempt = Some(ended.clone());
                    tokio::spawn(attempt(self.shared.clone(), done));
                    ended
                }
            }
        };
        // Ends within the store's timeout: the attempt is bounded by it.
        let _ = ended.wait_for(|done| *done).await;
        let slot = self.shared.slot.lock().expect("slot lock");
        match (slot.open_link(), &slot.failed) {
            (Some(link), _) => Ok(link),
            (None, Some((_, why))) => Err(connect_error("connecting to Redis failed", why.clone())),
            (None, None) => Err(closed_error("the connection to Redis ended")),
        }
    }

    /// Drops a closed socket from the slot, unless another replaced it.
    fn forget(&self, closed: &Arc<Link>) {
        let mut slot = self.shared.slot.lock().expect("slot lock");
        if slot.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, closed)) {
            slot.link = None;
        }
    }

    async fn one(&self, cmd: &Cmd) -> RedisResult<Value> {
        if cmd.is_no_response() {
            // No reply would come to take its place in the order of replies.
            return Err(RedisError::from((
                ErrorKind::Client,
                "commands without a reply are not sent on this connection",
            )));
        }
        // A socket found closed or stuck wrote none of the command: it is
        // sent once more, on a new socket.
        let mut tries = 2;
        let rx = loop {
            tries -= 1;
            let link = self.link().await?;
            match link.send(cmd) {
                Ok(rx) => break rx,
                Err(NotSent(why)) => {
                    self.forget(&link);
                    if tries == 0 {
                        return Err(closed_error(why));
                    }
                }
            }
        };
        rx.await
            .map_err(|_| closed_error("the connection to Redis ended"))?
    }
}

impl ConnectionLike for Direct {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.one(cmd))
    }

    /// The store sends no pipelines; were one sent, its replies (and a
    /// transaction's queued errors) would need reading as redis-rs does.
    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a Pipeline,
        _offset: usize,
        _count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async {
            Err(RedisError::from((
                ErrorKind::Client,
                "pipelines are not sent on this connection",
            )))
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.target.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn target(port: u16) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            db: 0,
        }
    }

    /// A server whose first connection reads and never answers (a Redis
    /// stopped, or a connection dropped on the way without a word), and
    /// whose later connections answer each command with `+PONG`.
    async fn first_connection_silent() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(read) = socket.read(&mut buf).await {
                        if read == 0 {
                            return;
                        }
                        if n > 0 {
                            let pongs = buf[..read].iter().filter(|&&b| b == b'*').count();
                            let reply = b"+PONG\r\n".repeat(pongs);
                            if socket.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn a_socket_that_stopped_answering_is_replaced_and_the_command_sent_on_the_new_one() {
        let (port, accepted) = first_connection_silent().await;
        let mut c = Direct::new(target(port), Duration::from_millis(200));
        let ping = ::redis::cmd("PING");
        let waited = tokio::time::timeout(Duration::from_millis(50), c.req_packed_command(&ping));
        assert!(waited.await.is_err(), "the silent socket answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), c.req_packed_command(&ping))
            .await
            .expect("answered within the timeout")
            .unwrap();
        assert_eq!(reply, Value::SimpleString("PONG".into()));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_socket_answering_slowly_but_within_the_limit_is_kept() {
        let (port, accepted) = first_connection_silent().await;
        let mut c = Direct::new(target(port), Duration::from_secs(30));
        let ping = ::redis::cmd("PING");
        let waited = tokio::time::timeout(Duration::from_millis(50), c.req_packed_command(&ping));
        assert!(waited.await.is_err());
        // The oldest command has waited less than the limit: the socket is
        // kept and the command waits behind it.
        let again = tokio::time::timeout(Duration::from_millis(50), c.req_packed_command(&ping));
        assert!(again.await.is_err());
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Replies larger than the read buffer, arriving a few bytes at a time,
    /// each reach their own command whole.
    #[tokio::test]
    async fn replies_arriving_in_pieces_reach_their_commands_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let big = "x".repeat(5 * READ_BUFFER_BYTES);
        let replies = format!("${}\r\n{big}\r\n+OK\r\n:7\r\n", big.len()).into_bytes();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            // A first command opens the socket; the next three are then
            // written in the order they are sent.
            let mut ping = [0u8; 14];
            socket.read_exact(&mut ping).await.unwrap();
            assert_eq!(&ping, b"*1\r\n$4\r\nPING\r\n");
            socket.write_all(b"+PONG\r\n").await.unwrap();
            let mut asked = 0;
            while asked < 3 {
                let read = socket.read(&mut buf).await.unwrap();
                asked += buf[..read].iter().filter(|&&b| b == b'*').count();
            }
            for (i, piece) in replies.chunks(7_001).enumerate() {
                socket.write_all(piece).await.unwrap();
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            // Held open: the client ends the exchange.
            let _ = socket.read(&mut buf).await;
        });
        let mut c = Direct::new(target(port), Duration::from_secs(5));
        let opened = c.req_packed_command(&::redis::cmd("PING")).await;
        assert_eq!(opened.unwrap(), Value::SimpleString("PONG".into()));
        let (mut a, mut b, mut d) = (c.clone(), c.clone(), c);
        let (get, set, incr) = (
            ::redis::cmd("GET"),
            ::redis::cmd("SET"),
            ::redis::cmd("INCR"),
        );
        let (first, second, third) = tokio::join!(
            a.req_packed_command(&get),
            b.req_packed_command(&set),
            d.req_packed_command(&incr),
        );
        assert!(
            first.unwrap() == Value::BulkString(big.into_bytes()),
            "the large reply differs"
        );
        assert_eq!(second.unwrap(), Value::Okay);
        assert_eq!(third.unwrap(), Value::Int(7));
    }

    #[tokio::test]
    async fn pipelines_and_commands_without_replies_are_refused() {
        let (port, _) = first_connection_silent().await;
        let mut c = Direct::new(target(port), Duration::from_secs(1));
        let mut pipe = ::redis::pipe();
        pipe.cmd("PING");
        assert!(c.req_packed_commands(&pipe, 0, 1).await.is_err());
        let mut quiet = ::redis::cmd("PING");
        quiet.set_no_response(true);
        assert!(c.req_packed_command(&quiet).await.is_err());
    }
}
