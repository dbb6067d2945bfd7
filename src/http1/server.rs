//! sessiongate's HTTP/1 server loop: every HTTP/1.0 and HTTP/1.1 request
//! on a connection, plain or TLS, is read here and its response written
//! here, without hyper's connection state machine (its dispatcher, buffers
//! and body channels cost more per request than the parse itself). Request
//! bodies stream to the handler as it reads them; an upgrade (WebSocket)
//! becomes a tunnel to the connection the handler's `101` carries. HTTP/2's
//! preface hands the connection to hyper's HTTP/2 server.
//!
//! The loop knows nothing of what serves the requests: it takes a
//! [`Handler`].

use super::body::{Fed, Feeder, RequestBody};
use super::common::{
    Framing, Prefixed, READ_RESERVE_BYTES, fill, lists_token, poll_fill, poll_fill_body,
};
use super::request::{self, Head, HeadLimits, Parsed, Spare, may_end_head};
use super::response::{Answering, reject, write_response};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Body;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// How long a lingering close reads what a client still sends, at most,
/// and how long it waits for each read (nginx's `lingering_time` and
/// `lingering_timeout`, shorter).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);
const LINGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A connection keeps buffers up to this size between requests.
const MAX_KEPT_BUFFER_BYTES: usize = 64 * 1024;

/// What the accept loop knows of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address as an `X-Forwarded-For` entry, formatted once
    /// per connection rather than once per request.
    pub client_ip: HeaderValue,
    /// The peer's address, judged by `trusted_proxies`.
    pub peer: std::net::IpAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, proto: &'static str) -> Self {
        let peer = remote.ip().to_canonical();
        ConnInfo {
            client_ip: HeaderValue::try_from(peer.to_string()).expect("an IP address is ASCII"),
            peer,
            proto,
        }
    }
}

/// What serves the requests of a connection. Boxed in and out: a request
/// passes through a chain of futures, and unboxed, its bytes were copied at
/// every step.
pub trait Handler: Send + Sync + 'static {
    type Body: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send>
        + Body<Data = Bytes>
        + Send
        + 'static;

    fn call(
        self: &Arc<Self>,
        request: Box<Request<RequestBody>>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Box<Response<Self::Body>>> + Send;
}

/// Any stream an upgraded connection's other side may be.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The other side of a connection that switched protocols: a handler puts
/// it in the extensions of its `101` response, and the loop joins the
/// client's connection to it until either side closes. `guard` lives as
/// long as the tunnel (a permit that bounds how many there are). Extensions
/// must be `Clone`, hence the shared slot.
#[derive(Clone)]
pub struct Upgraded(Arc<Mutex<Option<Switched>>>);

/// The other side's stream, and the guard the tunnel holds.
type Switched = (Box<dyn Io>, Box<dyn Send>);

impl Upgraded {
    pub fn new(io: impl Io + 'static, guard: impl Send + 'static) -> Self {
        Upgraded(Arc::new(Mutex::new(Some((Box::new(io), Box::new(guard))))))
    }

    fn take(&self) -> Option<Switched> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How a connection left this loop.
pub enum Served<T> {
    /// Closed, or failed: nothing more to do.
    Done,
    /// HTTP/2 with prior knowledge: hyper's HTTP/2 server takes over the
    /// stream, with the bytes read so far in front.
    Http2(Prefixed<T>),
    /// Switched protocols: the connection is no longer HTTP, and becomes a
    /// tunnel (see [`Tunnel::run`]) that counts against its own bound, not
    /// the connections'.
    Tunnel(Tunnel<T>),
}

/// A client connection and the upstream connection it switched protocols to.
pub struct Tunnel<T> {
    client: Prefixed<T>,
    upstream: Box<dyn Io>,
    guard: Box<dyn Send>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Tunnel<T> {
    /// Copies bytes both ways until either side closes.
    pub async fn run(mut self) {
        match tokio::io::copy_bidirectional(&mut self.client, &mut self.upstream).await {
            Ok((up, down)) => tracing::debug!(
                bytes_up = up,
                bytes_down = down,
                "upgraded connection closed"
            ),
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
        }
        drop(self.guard);
    }
}

/// Serves requests on `io` until the client closes, the connection turns
/// out to be HTTP/2, or shutdown begins (an idle connection is then closed;
/// a request being read or served is answered first).
pub async fn serve<T, H>(
    mut io: T,
    handler: &Arc<H>,
    conn: &ConnInfo,
    limits: HeadLimits,
    stop: &mut watch::Receiver<bool>,
) -> Served<T>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut spare = Spare::default();
    // Asked without waiting before each answer: once shutdown has begun,
    // every answer says `Connection: close` and the connection ends.
    let shutdown = stop.clone();
    // One wait for shutdown and one timer per connection, polled by every
    // wait for a head (see `crate::deadline::within`).
    let mut stopping = std::pin::pin!(stop.changed());
    let mut timer = std::pin::pin!(tokio::time::sleep(limits.read_timeout));
    loop {
        let waiting = Waiting {
            limits: &limits,
            stopping: stopping.as_mut(),
            timer: timer.as_mut(),
        };
        let head = match waiting.next_request(&mut io, &mut buf, &mut spare).await {
            Next::Request(head) => head,
            Next::Http2 => return Served::Http2(Prefixed::new(buf.freeze(), io)),
            Next::Reject(status) => {
                crate::limited!(
                    crate::logging::LogClass::malformed_request,
                    warn,
                    client = %conn.client_ip.to_str().unwrap_or("-"),
                    status = status.as_u16(),
                    "request head refused"
                );
                let _ = reject(&mut io, &mut out, status).await;
                return Served::Done;
            }
            Next::TimedOut => {
                crate::limited!(
                    crate::logging::LogClass::head_timeout,
                    warn,
                    client = %conn.client_ip.to_str().unwrap_or("-"),
                    "no whole request head within header_read_timeout; connection closed"
                );
                return Served::Done;
            }
            Next::Closed => return Served::Done,
        };
        let Head {
            mut request,
            body,
            close,
            expect_continue,
        } = head;
        let answering = Answering {
            head_only: request.method() == Method::HEAD,
            http10: request.version() == Version::HTTP_10,
            close,
        };
        let mut feeder = None;
        if body != Framing::Empty {
            let (incoming, f) = Feeder::new(body, expect_continue);
            *request.body_mut() = RequestBody::Http1(incoming);
            feeder = Some(f);
        }
        let handled = || handler.call(request, conn);
        let Some((response, fed)) = respond(&mut io, &mut buf, handled, feeder).await else {
            return Served::Done;
        };
        // The handler ends the connection after refusing a malformed request.
        let refused = response.status().is_client_error()
            && response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| lists_token(v.as_bytes(), b"close"));
        let upgraded = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
            .then(|| {
                response
                    .extensions()
                    .get::<Upgraded>()
                    .and_then(Upgraded::take)
            })
            .flatten();
        let close = answering.close
            || refused
            || fed == Some(Fed::Abandoned)
            || shutdown.has_changed().unwrap_or(true);
        let answering = Answering {
            close: close && upgraded.is_none(),
            ..answering
        };
        let written = write_response(&mut io, &mut out, response, answering);
        let close = match written.await {
            Ok(close) => close,
            Err(e) => {
                tracing::debug!(error = %e, "writing a response failed; connection closed");
                return Served::Done;
            }
        };
        if let Some((upstream, guard)) = upgraded {
            return Served::Tunnel(Tunnel {
                client: Prefixed::new(buf.freeze(), io),
                upstream,
                guard,
            });
        }
        if close {
            let _ = io.shutdown().await;
            if fed == Some(Fed::Abandoned) {
                linger(&mut io).await;
            }
            return Served::Done;
        }
        if out.capacity() > MAX_KEPT_BUFFER_BYTES {
            out = Vec::new();
        }
        if buf.is_empty() && buf.capacity() > MAX_KEPT_BUFFER_BYTES {
            buf = BytesMut::new();
        }
    }
}

/// After answering a request whose body was not read, the client may still
/// be sending it: closing at once would make the kernel reset the
/// connection, and the client could lose the answer. As nginx's lingering
/// close, what it sends is read and dropped for a while first.
async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut scratch = BytesMut::with_capacity(READ_RESERVE_BYTES);
    loop {
        scratch.clear();
        let wait = until.min(tokio::time::Instant::now() + LINGER_TIMEOUT);
        let read = poll_fn(|cx| poll_fill_body(io, &mut scratch, cx));
        match tokio::time::timeout_at(wait, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// The handler's answer, with how the request's body was fed (when it had
/// one), or `None` when the client closed its connection first: the
/// request is then dropped, as hyper's server drops it, instead of holding
/// the connection until the upstream answers. While the handler works, the
/// loop feeds it the request's body as it asks for it; once there is no
/// body (left) to feed, it watches for a hang-up, and bytes the client
/// sends meanwhile are kept for the next request and no longer watched.
/// The handler's future is made here, in this future's state, rather than
/// made by the caller and copied in.
async fn respond<T, F, B>(
    io: &mut T,
    buf: &mut BytesMut,
    handle: impl FnOnce() -> F,
    mut feeder: Option<Feeder>,
) -> Option<(Box<Response<B>>, Option<Fed>)>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Box<Response<B>>>,
{
    let mut handled = std::pin::pin!(handle());
    let mut fed = None;
    let mut watching = feeder.is_none() && buf.is_empty();
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(response) = handled.as_mut().poll(cx) {
                return Poll::Ready(Step::Answered(response));
            }
            if let Some(f) = feeder.as_mut() {
                return f.poll_feed(cx, io, buf).map(Step::Fed);
            }
            if watching {
                return poll_fill(io, buf, cx).map(Step::Read);
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Answered(response) => {
                // A body the handler did not take to its end.
                let fed = fed.or(feeder.map(|_| Fed::Abandoned));
                return Some((response, fed));
            }
            Step::Fed(done) => {
                fed = Some(done);
                feeder = None;
                watching = done == Fed::Whole && buf.is_empty();
            }
            Step::Read(Ok(0) | Err(_)) => return None,
            Step::Read(Ok(_)) => watching = false,
        }
    }
}

enum Step<R> {
    Answered(R),
    Fed(Fed),
    Read(std::io::Result<usize>),
}

enum Next {
    Request(Head),
    Http2,
    Reject(StatusCode),
    /// Part of a head arrived, not all of it, within the head timeout.
    TimedOut,
    Closed,
}

/// What a wait for the next request head watches besides the socket.
struct Waiting<'a, S> {
    limits: &'a HeadLimits,
    stopping: Pin<&'a mut S>,
    timer: Pin<&'a mut tokio::time::Sleep>,
}

impl<S: Future> Waiting<'_, S> {
    /// Reads until a whole head is buffered, within the head timeout, which
    /// also bounds how long a kept-alive connection may idle (as hyper's
    /// does). Shutdown closes the connection only while nothing of a next
    /// request has arrived.
    async fn next_request<T>(mut self, io: &mut T, buf: &mut BytesMut, spare: &mut Spare) -> Next
    where
        T: AsyncRead + Unpin,
    {
        let limits = self.limits;
        // A pipelined request may be whole already.
        if !buf.is_empty() {
            match request::parse(buf, limits, spare) {
                Parsed::Request(head) => return Next::Request(head),
                Parsed::Http2 => return Next::Http2,
                Parsed::Reject(status) => return Next::Reject(status),
                Parsed::Partial => {}
            }
        }
        // One select (not `deadline::within` around another): this wait is
        // on every request's path.
        let deadline = crate::deadline::after(limits.read_timeout);
        loop {
            let before = buf.len();
            tokio::select! {
                biased;
                read = fill(io, buf) => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    // A head trickling in is parsed again only once its end
                    // may have arrived, not on every read.
                    Ok(_) if before > 0
                        && buf.len() < limits.max_bytes
                        && !may_end_head(buf, before)
                        && !buf.starts_with(b"PRI") => {}
                    Ok(_) => match request::parse(buf, limits, spare) {
                        Parsed::Partial => {}
                        Parsed::Request(head) => return Next::Request(head),
                        Parsed::Http2 => return Next::Http2,
                        Parsed::Reject(status) => return Next::Reject(status),
                    },
                },
                () = self.timer.as_mut() => if crate::deadline::passed(self.timer.as_mut(), deadline) {
                    // An idle keep-alive connection ends quietly; a head
                    // that trickles in and stops is worth a (limited) line.
                    return if buf.is_empty() { Next::Closed } else { Next::TimedOut };
                },
                _ = self.stopping.as_mut(), if buf.is_empty() => return Next::Closed,
            }
        }
    }
}
