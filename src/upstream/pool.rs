//! Keep-alive HTTP/1.1 connections to one upstream, driven by the request
//! that uses them.
//!
//! A pooled connection has no task of its own: the request's task polls it
//! while waiting for the response head, and the response body polls it while
//! the body streams. When the exchange is complete the connection goes back
//! to the pool. A proxied request therefore costs no task switch and no
//! channel hop on the upstream side, which a connection task would add.
//! An idle connection is not watched; one the upstream closed meanwhile is
//! noticed (and dropped) when it is next taken, and a request that a reused
//! connection could not send is retried once on a new connection.
//!
//! Requests without a body (most of them) take connections of their own,
//! spoken to by the codec in `h1`; requests with a body, whose upload hyper
//! streams, and upgrades take hyper's.

use super::stream::UpstreamStream;
use crate::config::UpstreamConfig;
use crate::http1::Added;
use crate::http1::{self as h1, BodyError, ChunkedDecoder, Decoded, Framing, ResponseError};
use crate::proxy::RequestBody;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an idle connection to an upstream is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream; more are closed when they come back.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Bound on the TCP connect (and TLS handshake) to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Io = TokioIo<UpstreamStream>;

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
    Http(#[source] hyper::Error),
    #[error("HTTP/1.1 exchange with the upstream failed")]
    Exchange(#[source] ResponseError),
    /// The upstream's timeout passed before the response head arrived.
    #[error("no response head from the upstream in time")]
    TimedOut,
}

/// What the pool needs of a connection, whichever codec speaks on it.
trait Pooled {
    /// Whether an idle connection can take a new request; asked without
    /// waiting, as the pool hands it out.
    fn reusable(&mut self) -> bool;
}

struct Conn {
    sender: http1::SendRequest<RequestBody>,
    driver: http1::Connection<Io, RequestBody>,
}

impl Pooled for Conn {
    /// Polls the connection once without a task to wake: a connection the
    /// upstream closed, or one still busy with an exchange, cannot be reused.
    fn reusable(&mut self) -> bool {
        let driven = poll_fn(|cx| Pin::new(&mut self.driver).poll(cx));
        poll_once_pending(driven) && self.sender.is_ready()
    }
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

/// Read buffer growth: one typical response in one read.
const READ_RESERVE_BYTES: usize = 8 * 1024;
/// A pooled connection keeps buffers up to this size; one a large head grew
/// is replaced, so that idle connections do not pin a large head's memory.
const MAX_POOLED_BUFFER_BYTES: usize = 16 * 1024;

/// A connection spoken to by the `h1` codec.
struct PlainConn {
    io: UpstreamStream,
    /// Bytes read and not yet parsed.
    buf: BytesMut,
    /// The request head being written; kept for its allocation.
    head: Vec<u8>,
    /// Bounds each exchange (see `crate::deadline::within`).
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Pooled for PlainConn {
    /// An idle connection must be open and silent: a read that does not
    /// wait finds nothing (tokio answers from its readiness state, without
    /// a system call, unless the socket became readable).
    fn reusable(&mut self) -> bool {
        self.buf.is_empty() && poll_once_pending(poll_fn(|cx| self.poll_fill(cx)))
    }
}

fn poll_fill(
    io: &mut UpstreamStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_RESERVE_BYTES / 8 {
        buf.reserve(READ_RESERVE_BYTES);
    }
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

impl PlainConn {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.buf, cx)
    }

    /// [`PlainConn::exchange`] within `deadline`; `None` when it passed.
    async fn exchange_by(
        &mut self,
        parts: &http::request::Parts,
        added: &Added,
        deadline: tokio::time::Instant,
    ) -> Option<Result<h1::ResponseHead, (ResponseError, Silence)>> {
        let PlainConn {
            io,
            buf,
            head,
            timer,
        } = self;
        let exchange = PlainConn::exchange(io, buf, head, parts, added);
        crate::deadline::within(exchange, timer.as_mut(), deadline).await
    }

    /// Writes a request without a body and reads up to its final response
    /// head. On failure, says whether the upstream can have seen nothing of
    /// the request but an incomplete head, or answered nothing at all.
    async fn exchange(
        io: &mut UpstreamStream,
        buf: &mut BytesMut,
        head: &mut Vec<u8>,
        parts: &http::request::Parts,
        added: &Added,
    ) -> Result<h1::ResponseHead, (ResponseError, Silence)> {
        head.clear();
        h1::encode_request_head(parts, added, head);
        let written = async {
            io.write_all(head).await?;
            io.flush().await
        };
        if let Err(e) = written.await {
            return Err((e.into(), Silence::NotSent));
        }
        let mut interim = false;
        loop {
            match h1::parse_response_head(buf, &parts.method) {
                Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err((ResponseError::UnaskedUpgrade, Silence::Answered));
                }
                // 100 Continue, 103 Early Hints: the final response follows.
                Ok(Some(head)) if head.status.is_informational() => interim = true,
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {
                    let silence = if interim || !buf.is_empty() {
                        Silence::Answered
                    } else {
                        Silence::NoAnswer
                    };
                    match poll_fn(|cx| poll_fill(io, buf, cx)).await {
                        Ok(0) => return Err((ResponseError::Incomplete, silence)),
                        Ok(_) => {}
                        Err(e) => return Err((e.into(), silence)),
                    }
                }
                Err(e) => return Err((e, Silence::Answered)),
            }
        }
    }
}

/// How much of a failed exchange reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// The head was not fully written: the upstream cannot have acted on it.
    NotSent,
    /// Sent, and the connection ended without a byte of answer: what an
    /// idle connection the upstream had just closed looks like.
    NoAnswer,
    Answered,
}

/// Idle connections with the time each came back, oldest first: taken from
/// the back, expired from the front. Boxed because a connection moves
/// between the pool, the request and its response body on every request: a
/// pointer, not the whole connection.
type IdleList<C> = Mutex<Vec<(Instant, Box<C>)>>;

/// Whether a request can go over the `h1` codec's connections: no body to
/// stream and no protocol switch. Everything else goes through hyper's client.
pub fn is_plain(method: &Method, body: &RequestBody, upgrade: bool) -> bool {
    !upgrade && body.is_end_stream() && method != Method::CONNECT
}

/// An idle connection that can take a request, if one is left.
fn take_idle<C: Pooled>(list: &IdleList<C>, now: Instant) -> Option<Box<C>> {
    let (expired, mut candidate): (Vec<_>, _) = {
        let mut idle = list.lock().unwrap_or_else(|e| e.into_inner());
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
        candidate = list.lock().unwrap_or_else(|e| e.into_inner()).pop();
    }
}

fn put_idle<C: Pooled>(list: &IdleList<C>, conn: Box<C>, max_idle: usize, now: Instant) {
    let mut idle = list.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < max_idle {
        idle.push((now, conn));
    }
}

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
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
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

pub struct Pool {
    /// For requests with a body and upgrades: hyper's.
    idle: IdleList<Conn>,
    /// For requests without a body: the `h1` codec's.
    plain_idle: IdleList<PlainConn>,
    max_idle: usize,
    connector: Connector,
}

impl Pool {
    pub fn new(u: &UpstreamConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
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
            plain_idle: Mutex::new(Vec::new()),
            max_idle: DEFAULT_MAX_IDLE_PER_UPSTREAM,
            connector: Connector { host, port, tls },
        }
    }

    fn put_back(&self, mut conn: Box<Conn>) {
        if conn.reusable() {
            put_idle(&self.idle, conn, self.max_idle, Instant::now());
        }
    }

    async fn open(&self) -> Result<Box<Conn>, UpstreamError> {
        let io = TokioIo::new(self.connector.connect().await?);
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Http)?;
        Ok(Box::new(Conn { sender, driver }))
    }

    /// Sends a request [`is_plain`] refuses (a body to stream, or an
    /// upgrade) through hyper's client, and returns the response once its
    /// head has arrived (origin-form URI, Host set). An upgrade request gets a
    /// connection of its own, driven by a task until the upgrade hands its
    /// socket over.
    pub async fn send_with_hyper(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut reused = true;
        loop {
            // A retry goes to a new connection, never to another idle one.
            let idle = reused.then(|| take_idle(&self.idle, Instant::now()));
            let mut conn = match idle.flatten() {
                Some(conn) => conn,
                None => {
                    reused = false;
                    Box::pin(self.open()).await?
                }
            };
            if upgrade {
                let response = conn.sender.send_request(req);
                let Conn { sender, driver, .. } = *conn;
                tokio::spawn(async move {
                    if let Err(e) = driver.with_upgrades().await {
                        tracing::debug!(error = %e, "upstream connection for an upgrade failed");
                    }
                    drop(sender);
                });
                let resp = response.await.map_err(UpstreamError::Http)?;
                return Ok(resp.map(|body| UpstreamBody::hyper(body, None, self)));
            }
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            let mut closed = false;
            let outcome = poll_fn(|cx| {
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !closed {
                    if let Poll::Ready(end) = Pin::new(&mut conn.driver).poll(cx) {
                        closed = true;
                        if let Err(e) = end {
                            tracing::debug!(error = %e, "upstream connection failed");
                        }
                    }
                    // The poll above may have read the whole response.
                    return response.as_mut().poll(cx);
                }
                Poll::Pending
            })
            .await;
            match outcome {
                Ok(resp) => {
                    let conn = (!closed).then_some(conn);
                    return Ok(resp.map(|body| UpstreamBody::hyper(body, conn, self)));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: an idle connection the upstream closed
                    // just as it was taken. Safe to send again, once.
                    Some(again) if reused => {
                        tracing::debug!(error = %e.error(), "reused upstream connection was closed; retrying on a new one");
                        req = again;
                        reused = false;
                    }
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// A request without a body, over a connection of the `h1` codec. The
    /// head is borrowed: the caller's copy is the only one. `now` is when the
    /// request arrived: the pool's idle clock need not be read again for a
    /// request that takes a pooled connection and gives it back within its
    /// timeout (a connection then counts as idle a little longer).
    pub async fn send_plain(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        added: &Added,
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut reused = true;
        loop {
            // A retry goes to a new connection, never to another idle one.
            let idle = reused.then(|| take_idle(&self.plain_idle, now));
            let mut conn = match idle.flatten() {
                Some(conn) => conn,
                None => {
                    reused = false;
                    // Connecting is rare, and its state (a TLS handshake) large.
                    let connect = tokio::time::timeout_at(deadline, self.connector.connect());
                    Box::new(PlainConn {
                        io: Box::pin(connect)
                            .await
                            .map_err(|_| UpstreamError::TimedOut)??,
                        buf: BytesMut::with_capacity(READ_RESERVE_BYTES),
                        head: Vec::new(),
                        timer: Box::pin(tokio::time::sleep_until(deadline)),
                    })
                }
            };
            let head = match conn.exchange_by(parts, added, deadline).await {
                None => return Err(UpstreamError::TimedOut),
                Some(Ok(head)) => head,
                // A reused connection the upstream closed while it idled: send
                // once more on a new one, unless the request may have been
                // acted on and is not safe to repeat.
                Some(Err((e, silence)))
                    if reused
                        && (silence == Silence::NotSent
                            || (silence == Silence::NoAnswer && parts.method.is_idempotent())) =>
                {
                    tracing::debug!(error = %e, "reused upstream connection was closed; retrying on a new one");
                    reused = false;
                    continue;
                }
                Some(Err((e, _))) => return Err(UpstreamError::Exchange(e)),
            };
            let body = match head.framing {
                Framing::Empty => {
                    self.put_back_plain(conn, head.keep_alive, now);
                    Inner::Full(None)
                }
                Framing::Length(n) if conn.buf.len() as u64 >= n => {
                    let data = conn.buf.split_to(n as usize).freeze();
                    self.put_back_plain(conn, head.keep_alive, now);
                    Inner::Full(Some(data))
                }
                framing => Inner::Plain(PlainBody {
                    conn: Some(conn),
                    rest: match framing {
                        Framing::Length(n) => Rest::Length(n),
                        Framing::Chunked => Rest::Chunked(ChunkedDecoder::default()),
                        Framing::UntilClose | Framing::Empty => Rest::UntilClose,
                    },
                    keep_alive: head.keep_alive,
                    pool: self.clone(),
                }),
            };
            let mut resp = Response::new(UpstreamBody { inner: body });
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            return Ok(resp);
        }
    }

    /// A connection whose exchange is complete; kept if it can carry another.
    fn put_back_plain(&self, mut conn: Box<PlainConn>, keep_alive: bool, now: Instant) {
        // Bytes beyond the response would be read as the next one's.
        if !keep_alive || !conn.buf.is_empty() {
            return;
        }
        if conn.buf.capacity() > MAX_POOLED_BUFFER_BYTES {
            conn.buf = BytesMut::with_capacity(READ_RESERVE_BYTES);
        }
        if conn.head.capacity() > MAX_POOLED_BUFFER_BYTES {
            conn.head = Vec::new();
        }
        put_idle(&self.plain_idle, conn, self.max_idle, now);
    }
}

/// An upstream response body. A hyper body also drives its connection while
/// it streams; either kind returns its connection to the pool when the
/// exchange is complete (or is dropped with the exchange complete).
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    Hyper(HyperBody),
    Plain(PlainBody),
    /// A body read together with its head (or none at all): its connection
    /// is back in the pool before the response is even sent on.
    Full(Option<Bytes>),
}

impl UpstreamBody {
    fn hyper(body: Incoming, conn: Option<Box<Conn>>, pool: &Arc<Pool>) -> Self {
        UpstreamBody {
            inner: Inner::Hyper(HyperBody {
                body,
                conn,
                pool: pool.clone(),
            }),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Hyper(b) => b.poll_frame(cx).map_err(Into::into),
            Inner::Plain(b) => b.poll_frame(cx).map_err(Into::into),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(b) => b.body.is_end_stream(),
            Inner::Plain(b) => matches!(b.rest, Rest::Length(0)),
            Inner::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.body.size_hint(),
            Inner::Plain(b) => match b.rest {
                Rest::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

struct HyperBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl HyperBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(conn) = &mut self.conn
            && let Poll::Ready(end) = Pin::new(&mut conn.driver).poll(cx)
        {
            if let Err(e) = end {
                tracing::debug!(error = %e, "upstream connection failed during the body");
            }
            self.conn = None;
        }
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.release();
        }
        frame
    }
}

impl Drop for HyperBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// What is left of a body read by the `h1` codec.
enum Rest {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

struct PlainBody {
    /// Gone once the body has ended; a body dropped before its end takes
    /// the connection with it, since the rest of the body would be unread.
    conn: Option<Box<PlainConn>>,
    rest: Rest,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl PlainBody {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .put_back_plain(conn, self.keep_alive, Instant::now());
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match &mut self.rest {
                Rest::Length(0) => Decoded::End,
                Rest::Length(_) | Rest::UntilClose if conn.buf.is_empty() => Decoded::NeedMore,
                Rest::Length(left) => {
                    let take = (*left).min(conn.buf.len() as u64);
                    *left -= take;
                    Decoded::Data(conn.buf.split_to(take as usize).freeze())
                }
                Rest::UntilClose => Decoded::Data(conn.buf.split().freeze()),
                Rest::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(step) => step,
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            };
            match step {
                Decoded::Data(data) => {
                    // The connection goes back as soon as the last byte is in.
                    if matches!(self.rest, Rest::Length(0)) {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match conn.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        self.conn = None;
                        return Poll::Ready(match self.rest {
                            Rest::UntilClose => None,
                            _ => Some(Err(BodyError::Incomplete)),
                        });
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
            }
        }
    }
}
