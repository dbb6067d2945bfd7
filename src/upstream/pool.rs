//! Keep-alive HTTP/1.1 connections to one upstream, driven by the request
//! that uses them, all spoken to by sessiongate's own codec (`crate::http1`).
//!
//! A pooled connection has no task of its own: the request's task polls it
//! while it sends the request and waits for the response head, and the
//! response body polls it while the body streams. When the exchange is
//! complete the connection goes back to the pool. A proxied request
//! therefore costs no task switch and no channel hop on the upstream side,
//! which a connection task would add. An idle connection is not watched;
//! one the upstream closed meanwhile is noticed (and dropped) when it is
//! next taken, and a request that a reused connection could not send is
//! retried once on a new connection.

use super::conn::{Answer, Conn, Failed, Home, Silence, Wire};
use super::response::{UpstreamBody, UpstreamUpgrade};
use super::stream::UpstreamStream;
use crate::config::UpstreamConfig;
use crate::http1::{Added, Decoder, Framing, Prefixed, ResponseError};
use crate::http1::{ClientBodyError, RequestBody};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Response, header};
use hyper::body::Body;
use rustls_pki_types::ServerName;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

/// How long an idle connection to an upstream is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the TCP connect (and TLS handshake) to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/1.1 exchange with the upstream failed")]
    Exchange(#[source] ResponseError),
    /// The upstream's timeout passed before the response head arrived.
    #[error("the upstream did not answer within {0:?}")]
    TimedOut(Duration),
    /// The request's path and query make no valid request target.
    #[error("the request path cannot be forwarded")]
    BadTarget,
    /// The client's request body could not be read: the client's fault.
    #[error("the client's request body could not be read")]
    ClientBody(#[source] ClientBodyError),
}

/// Polls once, without a task to wake, whether `f` would wait. Unconstrained:
/// with the task's cooperative budget spent, tokio answers "pending" without
/// looking at the socket, and a closed connection would pass for an idle one.
fn poll_once_pending(f: impl Future) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::pin!(tokio::task::unconstrained(f))
        .poll(&mut cx)
        .is_pending()
}

impl Conn {
    /// An idle connection must be open and silent: a read that does not
    /// wait finds nothing (tokio answers from its readiness state, without
    /// a system call, unless the socket became readable).
    fn reusable(&mut self) -> bool {
        if !self.wire.buf.is_empty() {
            return false;
        }
        match &mut self.wire.io {
            // Readiness first, then a read of one byte: an idle connection
            // keeps no buffer to read into.
            UpstreamStream::Plain(s) => {
                poll_once_pending(poll_fn(|cx| s.poll_read_ready(cx)))
                    || matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            UpstreamStream::Tls(_) => poll_once_pending(poll_fn(|cx| self.wire.poll_fill(cx))),
        }
    }
}

/// How a request's body goes on the wire, with the headers that say so. A
/// body keeps the framing it came with: a length when it has one, else
/// chunked (also for a GET, which must never lose its body). The client's
/// `Trailer` announcement goes, since request trailers are dropped. A
/// request without a body keeps its headers as they are.
pub fn frame_request(headers: &mut HeaderMap, body: &RequestBody) -> Framing {
    if body.is_end_stream() {
        return Framing::Empty;
    }
    headers.remove(header::TRAILER);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    match body.size_hint().exact() {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        None => {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Framing::Chunked
        }
    }
}

/// Idle connections with the time each came back, oldest first: taken from
/// the back, expired from the front. Boxed because a connection moves
/// between the pool, the request and its response body on every request: a
/// pointer, not the whole connection.
type IdleList = Mutex<Vec<(Instant, Box<Conn>)>>;

struct Connector {
    /// Host for DNS and the TLS server name (IPv6 literals without brackets).
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let handshake = async {
            let tcp = connect.await.map_err(|source| UpstreamError::Connect {
                addr: self.addr(),
                source,
            })?;
            // Requests are small writes that must leave at once.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                // Boxed: the handshake's state is large (1.4 KB of every
                // connect, plain or not, when inline), and rare.
                Some((connector, name)) => Box::pin(connector.connect(name.clone(), tcp))
                    .await
                    .map(|s| UpstreamStream::Tls(Box::new(s)))
                    .map_err(|source| UpstreamError::Tls {
                        addr: self.addr(),
                        source,
                    }),
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(stream) => stream,
            Err(_) => Err(UpstreamError::ConnectTimeout(self.addr())),
        }
    }
}

impl Home for Pool {
    /// A connection whose exchange is complete; kept if it can carry another.
    fn put_back(&self, mut conn: Box<Conn>, keep_alive: bool, now: Instant) {
        // Bytes beyond the response would be read as the next one's.
        if !keep_alive || !conn.wire.buf.is_empty() {
            return;
        }
        // Allocated again when the next response is readable.
        conn.wire.buf = BytesMut::new();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((now, conn));
        }
    }
}

pub struct Pool {
    idle: IdleList,
    max_idle: usize,
    connector: Connector,
}

impl Pool {
    /// `max_idle`: idle connections kept; more are closed when they come
    /// back. The proxy keeps as many as it admits client connections
    /// (`limits.max_connections`): with fewer, a burst of concurrent
    /// requests closes the connections it opened as they come back and the
    /// next burst opens them again. At 10,000 clients on a 2-core EPYC a
    /// bound of 256 left connect()'s search for a free port past the
    /// TIME_WAIT sockets (`__inet_hash_connect`) at a third of the
    /// proxy's CPU, and 5,981 reads/s against 40,038 with the bound raised.
    pub fn new(
        u: &UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        max_idle: usize,
    ) -> Pool {
        let https = u.scheme == http::uri::Scheme::HTTPS;
        let host = u
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (true, Some(config)) => ServerName::try_from(host.clone())
                .ok()
                .map(|name| (tokio_rustls::TlsConnector::from(config), name)),
            _ => None,
        };
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            connector: Connector { host, port, tls },
        }
    }

    /// Closes the idle connections that have waited past the idle timeout
    /// (`now` is passed in so that tests control the clock); says how many.
    /// Run in the background, so that an upstream that sees no traffic is
    /// not held open for ever.
    pub fn close_idle(&self, now: Instant) -> usize {
        let expired: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let n = idle
                .iter()
                .take_while(|(since, _)| now.duration_since(*since) > POOL_IDLE_TIMEOUT)
                .count();
            idle.drain(..n).collect()
        };
        // Closing sockets (and sending TLS close_notify) outside the lock.
        expired.len()
    }

    /// How many connections wait in the pool.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// An idle connection that can take a request, if one is left.
    fn take_idle(&self, now: Instant) -> Option<Box<Conn>> {
        let (expired, mut candidate): (Vec<_>, _) = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let n = idle
                .iter()
                .take_while(|(since, _)| now.duration_since(*since) > POOL_IDLE_TIMEOUT)
                .count();
            (idle.drain(..n).collect(), idle.pop())
        };
        // Closing sockets, and checking the one taken (which may read it, and
        // decrypt TLS), happen outside the lock.
        drop(expired);
        loop {
            let (_, mut conn) = candidate?;
            if conn.reusable() {
                return Some(conn);
            }
            candidate = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        }
    }

    /// Sends a request (origin-form URI, Host set, its body framed by
    /// [`frame_request`]) and returns the response once its head has
    /// arrived, within `timeout` of `now`. The head is borrowed: the caller's copy
    /// is the only one. `now` is when the request arrived: the pool's idle
    /// clock need not be read again for a request that takes a pooled
    /// connection and gives it back within its timeout (a connection then
    /// counts as idle a little longer). An `upgrade` request may get a `101`,
    /// with the upstream's side of the connection in its extensions.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        added: &Added,
        body: &mut RequestBody,
        framing: Framing,
        upgrade: bool,
        now: Instant,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let deadline = crate::deadline::after_from(now.into(), timeout);
        let mut reused = true;
        loop {
            // A retry goes to a new connection, never to another idle one.
            let idle = reused.then(|| self.take_idle(now));
            let mut conn = match idle.flatten() {
                Some(conn) => conn,
                None => {
                    reused = false;
                    // Connecting is rare, and its state (a TLS handshake) large.
                    let connect = tokio::time::timeout_at(deadline, self.connector.connect());
                    Box::new(Conn {
                        wire: Wire {
                            io: Box::pin(connect)
                                .await
                                .map_err(|_| UpstreamError::TimedOut(timeout))??,
                            buf: BytesMut::new(),
                            out: Vec::new(),
                        },
                        timer: Box::pin(tokio::time::sleep_until(deadline)),
                    })
                }
            };
            let Conn { wire, timer } = &mut *conn;
            let exchange = wire.exchange(parts, added, body, framing, upgrade);
            let answer = match crate::deadline::within(exchange, timer.as_mut(), deadline).await {
                None => return Err(UpstreamError::TimedOut(timeout)),
                Some(Ok(answer)) => answer,
                Some(Err(Failed::ClientBody(e))) => return Err(UpstreamError::ClientBody(e)),
                // A reused connection the upstream closed while it idled: send
                // once more on a new one, unless the request may have been
                // acted on and is not safe to repeat.
                Some(Err(Failed::Upstream(e, silence)))
                    if reused
                        && (silence == Silence::NotSent
                            || (silence == Silence::NoAnswer
                                && framing == Framing::Empty
                                && parts.method.is_idempotent())) =>
                {
                    tracing::debug!(error = %e, "reused upstream connection was closed; retrying on a new one");
                    reused = false;
                    continue;
                }
                Some(Err(Failed::Upstream(e, _))) => return Err(UpstreamError::Exchange(e)),
            };
            return Ok(self.respond(conn, answer, now));
        }
    }

    /// The response to a request whose head has arrived on `conn`.
    fn respond(
        self: &Arc<Self>,
        mut conn: Box<Conn>,
        answer: Answer,
        now: Instant,
    ) -> Response<UpstreamBody> {
        let Answer { head, reusable } = answer;
        let keep_alive = head.keep_alive && reusable;
        let mut upgraded = None;
        let body = if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let Wire { io, buf, .. } = conn.wire;
            upgraded = Some(UpstreamUpgrade::new(Prefixed::new(buf.freeze(), io)));
            UpstreamBody::full(None)
        } else {
            match head.framing {
                Framing::Empty => {
                    self.put_back(conn, keep_alive, now);
                    UpstreamBody::full(None)
                }
                Framing::Length(n) if conn.wire.buf.len() as u64 >= n => {
                    let data = conn.wire.buf.split_to(n as usize).freeze();
                    self.put_back(conn, keep_alive, now);
                    UpstreamBody::full(Some(data))
                }
                framing => {
                    let rest = Decoder::new(framing).unwrap_or(Decoder::UntilClose);
                    UpstreamBody::streaming(conn, rest, keep_alive, self.clone() as Arc<dyn Home>)
                }
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(u) = upgraded {
            resp.extensions_mut().insert(u);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(pool: &Arc<Pool>, now: Instant) -> Response<UpstreamBody> {
        let (parts, ()) = http::Request::get("/")
            .header("host", "a")
            .body(())
            .unwrap()
            .into_parts();
        pool.send(
            &parts,
            &Added::default(),
            &mut RequestBody::Empty,
            Framing::Empty,
            false,
            now,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    fn pool_for(addr: std::net::SocketAddr) -> Arc<Pool> {
        let yaml = format!(
            "secrets: [\"{}\"]\nupstreams: {{app: {{url: \"http://{addr}\"}}}}\nroutes: [{{match: {{path_prefix: /}}, upstream: app, forward: {{mode: none}}}}]",
            "s".repeat(32)
        );
        let cfg = crate::config::from_yaml(&yaml).unwrap();
        Arc::new(Pool::new(
            &cfg.upstreams[0],
            None,
            cfg.limits.max_connections,
        ))
    }

    /// A connection waiting in the pool keeps no buffer (a request waiting
    /// for its answer holds none either: that is what bounds memory with
    /// thousands in flight), still carries the next request, and is not
    /// taken once the upstream has closed it.
    #[tokio::test]
    async fn idle_connections_hold_no_buffers_and_closed_ones_are_not_taken() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for _ in 0..2 {
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            let _ = close_rx.await;
            drop(s);
            let _ = closed_tx.send(());
        });
        let pool = pool_for(addr);
        let now = Instant::now();
        let body = get(&pool, now).await.into_body();
        drop(body);
        {
            let idle = pool.idle.lock().unwrap();
            assert_eq!(idle.len(), 1);
            assert_eq!(idle[0].1.wire.buf.capacity(), 0);
            assert_eq!(idle[0].1.wire.out.capacity(), 0);
        }
        // The same connection serves again (the upstream accepts only one).
        assert_eq!(get(&pool, now).await.status(), http::StatusCode::OK);
        assert_eq!(pool.idle_count(), 1);
        close_tx.send(()).unwrap();
        closed_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take_idle(now).is_none(),
            "a closed connection was taken"
        );
    }

    /// An idle connection is closed by `close_idle` once past the idle
    /// timeout, and the upstream sees it close.
    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            // The next read ends when the pool closes the connection.
            let n = s.read(&mut buf).await.unwrap_or(0);
            let _ = closed_tx.send(n);
        });
        let pool = pool_for(addr);
        let start = Instant::now();
        drop(get(&pool, start).await);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(pool.close_idle(start + Duration::from_secs(30)), 0);
        assert_eq!(
            pool.close_idle(start + POOL_IDLE_TIMEOUT + Duration::from_secs(1)),
            1
        );
        assert_eq!(pool.idle_count(), 0);
        let read = tokio::time::timeout(Duration::from_secs(5), closed_rx)
            .await
            .expect("the upstream saw the close")
            .unwrap();
        assert_eq!(read, 0);
    }
}
