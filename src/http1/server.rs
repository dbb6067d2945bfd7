//! sessiongate's own HTTP/1.1 server loop for the requests most traffic is
//! made of: HTTP/1.1, no body, no upgrade. Such a request is parsed here into
//! the `http` types the proxy takes and its response written back, without
//! hyper's connection state machine (its dispatcher, buffers and body
//! channels cost more per request than the parse itself).
//!
//! Anything else hands the connection, with every byte already read, to
//! hyper for the rest of its life: a request with a body or `Expect`, an
//! upgrade or CONNECT, HTTP/1.0, HTTP/2's preface, a head too large or one
//! that does not parse. hyper's rules and error answers (400, 431) then apply
//! unchanged, so this loop only ever decides the unambiguous cases: a request
//! it serves has no body by every reading (no `Transfer-Encoding`, no
//! `Content-Length` but `0`), so no framing disagreement can smuggle a second
//! request past the proxy.

use super::common::{Prefixed, READ_RESERVE_BYTES, chunk_size_hex, fill, lists_token};
use crate::proxy::{ConnInfo, Proxy, ProxyBody, RequestBody};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Body;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// The header count up to which the parse needs no heap (hyper's default limit).
const STACK_HEADERS: usize = 100;
/// Body data up to this size is copied behind the head, so that a small
/// response leaves in one write; larger data is written from where it lies.
const COALESCE_BYTES: usize = 16 * 1024;
/// A connection keeps buffers up to this size between requests.
const MAX_KEPT_BUFFER_BYTES: usize = 64 * 1024;
/// Longest request target served here (hyper's limit; longer ones go to hyper).
const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// Room in a request's header map for what the proxy adds before
/// forwarding it (`X-Forwarded-*`, `X-Request-Id`, `Host`, the session
/// header), so that the map never grows while the request is in flight.
const PROXY_ADDED_HEADERS: usize = 8;
/// A recycled header map larger than this is dropped instead.
const MAX_SPARE_HEADERS: usize = 128;

/// Allocations a connection reuses from one request to the next.
#[derive(Default)]
pub struct Spare {
    /// The last response's header map, emptied: the next request's headers
    /// go into it (hyper recycles its maps the same way).
    headers: HeaderMap,
    fields: Vec<(HeaderName, std::ops::Range<usize>)>,
}

/// What the loop enforces of a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// For a whole head, counted from when the connection starts waiting for it.
    pub read_timeout: Duration,
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// How a connection left this loop.
pub enum Served<T> {
    /// Closed, or failed: nothing more to do.
    Done,
    /// hyper takes over: the stream, with the bytes read but not served.
    Handoff(Prefixed<T>),
}

/// One parsed request head.
// Boxed: on its way from here to the upstream the request passes through a
// chain of futures (this loop, `handle`, routing, `forward`), and unboxed,
// its 256 bytes were copied at about fifteen steps; one allocation is cheaper.
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A request this loop serves, its head taken off the buffer; `close`
    /// when the client asked to close the connection after it.
    Plain {
        request: Box<Request<RequestBody>>,
        close: bool,
    },
    /// Anything else: hyper decides.
    Handoff,
    /// Framing no reader may guess at: answered with this status, and the
    /// connection closed, since where the next request starts is unknown.
    Reject(StatusCode),
}

/// What the `Transfer-Encoding` lines of a request say, taken together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Codings {
    /// Whether any `Transfer-Encoding` line was seen.
    present: bool,
    chunked: u8,
    /// Codings other than `chunked`.
    others: bool,
    /// Whether the last coding so far is `chunked`.
    ends_chunked: bool,
}

/// How a request with `Transfer-Encoding` is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coded {
    /// No `Transfer-Encoding`.
    No,
    /// Exactly `chunked`: the body is framed by it.
    Chunked,
    /// Ends in `chunked` after other codings (`gzip, chunked`): passing the
    /// body on would lose them, so it is refused with 501 (RFC 9112 6.1).
    Unsupported,
    /// Not ending in `chunked`, or `chunked` twice: 400.
    Invalid,
}

impl Codings {
    /// Adds one header line's codings (a list, case-insensitive).
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            self.ends_chunked = token.eq_ignore_ascii_case(b"chunked");
            if self.ends_chunked {
                self.chunked = self.chunked.saturating_add(1);
            } else {
                self.others = true;
            }
        }
    }

    fn framing(&self) -> Coded {
        match *self {
            Codings { present: false, .. } => Coded::No,
            Codings {
                ends_chunked: true,
                chunked: 1,
                others,
                ..
            } => {
                if others {
                    Coded::Unsupported
                } else {
                    Coded::Chunked
                }
            }
            _ => Coded::Invalid,
        }
    }
}

/// Parses the request head at the start of `buf`. Only a complete head of a
/// request without a body is taken off the buffer; everything else leaves
/// it untouched for hyper.
pub fn parse(buf: &mut BytesMut, limits: &HeadLimits, spare: &mut Spare) -> Parsed {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, slots)
    {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_bytes => return Parsed::Partial,
        _ => return Parsed::Handoff,
    };
    if req.version != Some(1) {
        return Parsed::Handoff;
    }
    let Ok(method) = Method::from_bytes(req.method.unwrap_or_default().as_bytes()) else {
        return Parsed::Handoff;
    };
    let path = req.path.unwrap_or_default();
    if method == Method::CONNECT || path.len() > MAX_URI_BYTES {
        return Parsed::Handoff;
    }
    // Offsets, so that the head's bytes can be shared by the header values
    // once the buffer no longer borrows into the parse.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let path_range = offset(path.as_bytes())..offset(path.as_bytes()) + path.len();
    let mut close = false;
    // Whether hyper takes the request (a body, an upgrade, `Expect`); its
    // framing is judged here first either way, so that no request whose
    // framing two readers could disagree on reaches anyone.
    let mut handoff = false;
    let mut length: Option<&[u8]> = None;
    let mut codings = Codings::default();
    let fields = &mut spare.fields;
    fields.clear();
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Handoff;
        };
        match name {
            header::TRANSFER_ENCODING => {
                codings.add(h.value);
                handoff = true;
            }
            header::CONTENT_LENGTH => {
                if h.value.is_empty() || !h.value.iter().all(u8::is_ascii_digit) {
                    return Parsed::Reject(StatusCode::BAD_REQUEST);
                }
                match length {
                    Some(first) if first != h.value => {
                        return Parsed::Reject(StatusCode::BAD_REQUEST);
                    }
                    // The same length again: forwarded once.
                    Some(_) => continue,
                    None => length = Some(h.value),
                }
                handoff |= h.value != b"0";
            }
            header::EXPECT | header::UPGRADE => handoff = true,
            header::CONNECTION if lists_token(h.value, b"close") => close = true,
            _ => {}
        }
        let start = offset(h.value);
        fields.push((name, start..start + h.value.len()));
    }
    match codings.framing() {
        Coded::No => {}
        // RFC 9112 section 6.1: a length beside chunked is a smuggling
        // attempt or a broken client; nginx refuses it too.
        _ if length.is_some() => return Parsed::Reject(StatusCode::BAD_REQUEST),
        Coded::Chunked => {}
        Coded::Unsupported => return Parsed::Reject(StatusCode::NOT_IMPLEMENTED),
        Coded::Invalid => return Parsed::Reject(StatusCode::BAD_REQUEST),
    }
    if handoff {
        return Parsed::Handoff;
    }
    let head = buf.split_to(len).freeze();
    let uri = match http::Uri::from_maybe_shared(head.slice(path_range)) {
        Ok(uri) => uri,
        Err(_) => {
            // Put the head back for hyper, which answers 400.
            let mut whole = BytesMut::from(head);
            whole.unsplit(std::mem::take(buf));
            *buf = whole;
            return Parsed::Handoff;
        }
    };
    let mut headers = std::mem::take(&mut spare.headers);
    headers.reserve(fields.len() + PROXY_ADDED_HEADERS);
    for (name, range) in fields.drain(..) {
        // SAFETY: httparse accepts in a field value only the bytes a
        // `HeaderValue` may hold (HTAB, space, visible ASCII, obs-text), as
        // hyper relies on too; debug builds check it again.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(range)) };
        headers.append(name, value);
    }
    let mut request = Box::new(Request::new(RequestBody::Empty));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Plain { request, close }
}

/// Serves requests on `io` until the client closes, a request needs hyper,
/// or shutdown begins (an idle connection is then closed; a request being
/// read or served is answered first).
pub async fn serve<T>(
    mut io: T,
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    limits: HeadLimits,
    stop: &mut watch::Receiver<bool>,
) -> Served<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_RESERVE_BYTES);
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
        let (request, close) = match waiting.next_request(&mut io, &mut buf, &mut spare).await {
            Next::Request(request, close) => (request, close),
            Next::Handoff => return Served::Handoff(Prefixed::new(buf.freeze(), io)),
            Next::Reject(status) => {
                let _ = reject(&mut io, &mut out, status).await;
                return Served::Done;
            }
            Next::Closed => return Served::Done,
        };
        let head_only = request.method() == Method::HEAD;
        let handled = || proxy.clone().handle(request, conn.clone());
        let Some(response) = unless_hung_up(&mut io, &mut buf, handled).await else {
            return Served::Done;
        };
        // The proxy ends the connection after refusing a malformed request.
        let refused = response.status().is_client_error()
            && response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| lists_token(v.as_bytes(), b"close"));
        let close = close || refused || shutdown.has_changed().unwrap_or(true);
        let written = write_response(&mut io, &mut out, response, head_only, close, &mut spare);
        if let Err(e) = written.await {
            tracing::debug!(error = %e, "writing a response failed; connection closed");
            return Served::Done;
        }
        if close {
            let _ = io.shutdown().await;
            return Served::Done;
        }
        if out.capacity() > MAX_KEPT_BUFFER_BYTES {
            out = Vec::new();
        }
        if buf.is_empty() && buf.capacity() > MAX_KEPT_BUFFER_BYTES {
            buf = BytesMut::with_capacity(READ_RESERVE_BYTES);
        }
    }
}

/// Answers a head whose framing cannot be trusted, and ends the connection.
async fn reject<T>(io: &mut T, out: &mut Vec<u8>, status: StatusCode) -> std::io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let body: &[u8] = match status {
        StatusCode::NOT_IMPLEMENTED => b"transfer coding not implemented\n",
        _ => b"bad request: malformed framing\n",
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    out.clear();
    encode_head(
        status,
        &headers,
        Framing::Length(body.len() as u64),
        false,
        true,
        out,
    );
    out.extend_from_slice(body);
    io.write_all(out).await?;
    io.shutdown().await
}

/// The proxy's answer, or `None` when the client closed its connection
/// first: the request is then dropped, as hyper's server drops it, instead
/// of holding the connection until the upstream answers. Bytes the client
/// sends meanwhile are kept for the next request, and no longer watched.
/// The proxy's future is made here, in this future's state, rather than
/// made by the caller and copied in.
async fn unless_hung_up<T, F>(
    io: &mut T,
    buf: &mut BytesMut,
    handle: impl FnOnce() -> F,
) -> Option<Box<Response<ProxyBody>>>
where
    T: AsyncRead + Unpin,
    F: Future<Output = Box<Response<ProxyBody>>>,
{
    let mut handled = std::pin::pin!(handle());
    let mut watching = buf.is_empty();
    loop {
        tokio::select! {
            biased;
            response = &mut handled => return Some(response),
            read = fill(io, buf), if watching => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => watching = false,
            },
        }
    }
}

enum Next {
    Request(Box<Request<RequestBody>>, bool),
    Handoff,
    Reject(StatusCode),
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
            match parse(buf, limits, spare) {
                Parsed::Plain { request, close } => return Next::Request(request, close),
                Parsed::Handoff => return Next::Handoff,
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
                        && !may_end_head(buf, before) => {}
                    Ok(_) => match parse(buf, limits, spare) {
                        Parsed::Partial => {}
                        Parsed::Plain { request, close } => return Next::Request(request, close),
                        Parsed::Handoff => return Next::Handoff,
                        Parsed::Reject(status) => return Next::Reject(status),
                    },
                },
                () = self.timer.as_mut() => if crate::deadline::passed(self.timer.as_mut(), deadline) {
                    return Next::Closed;
                },
                _ = self.stopping.as_mut(), if buf.is_empty() => return Next::Closed,
            }
        }
    }
}

/// Whether the bytes from `from` on (with the three before, which may
/// start the blank line) hold a blank line, where a head ends.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(3)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304).
    None,
    /// An answer to HEAD for a body of this length that the response's
    /// headers do not state (the proxy's own answers): no body follows, the
    /// length is stated.
    HeadOf(u64),
    Length(u64),
    Chunked,
}

async fn write_response<T>(
    io: &mut T,
    out: &mut Vec<u8>,
    response: Box<Response<ProxyBody>>,
    head_only: bool,
    close: bool,
    spare: &mut Spare,
) -> std::io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let (parts, body) = (*response).into_parts();
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match body.size_hint().exact() {
        _ if bodiless => Framing::None,
        Some(n) if head_only && n > 0 && !parts.headers.contains_key(header::CONTENT_LENGTH) => {
            Framing::HeadOf(n)
        }
        _ if head_only => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    out.clear();
    encode_head(status, &parts.headers, framing, head_only, close, out);
    let mut headers = parts.headers;
    if headers.capacity() <= MAX_SPARE_HEADERS {
        headers.clear();
        spare.headers = headers;
    }
    if matches!(framing, Framing::None | Framing::HeadOf(_)) {
        return io.write_all(out).await;
    }
    let mut body = std::pin::pin!(body);
    let mut sent = 0u64;
    while !body.is_end_stream() {
        // Whatever the body has ready joins the head; before waiting for
        // more, what is buffered goes out (a slow stream must not hold it).
        let next = match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await
        {
            Poll::Ready(next) => next,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match next {
            None => break,
            Some(Err(e)) => return Err(std::io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if let Framing::Length(n) = framing
            && sent > n
        {
            return Err(std::io::Error::other(
                "response body longer than its length",
            ));
        }
        if framing == Framing::Chunked {
            let mut hex = [0u8; 16];
            out.extend_from_slice(chunk_size_hex(data.len(), &mut hex));
            out.extend_from_slice(b"\r\n");
        }
        if data.len() <= COALESCE_BYTES {
            out.extend_from_slice(&data);
        } else {
            write_all_vectored(io, out, &data).await?;
            out.clear();
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        // A fast body is written as it comes, not gathered whole.
        if out.len() >= COALESCE_BYTES {
            io.write_all(out).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Length(n) if sent != n => {
            return Err(std::io::Error::other(
                "response body shorter than its length",
            ));
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    Ok(())
}

/// Writes `first` then `second`, in one system call when the stream allows.
async fn write_all_vectored<T>(io: &mut T, first: &[u8], second: &[u8]) -> std::io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let (mut a, mut b) = (first, second);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    io.write_all(b).await
}

/// The status line and headers. The body's framing is this loop's to
/// write: the response's own `Content-Length` (except answering HEAD, where
/// it describes what a GET would get), `Transfer-Encoding` and `Connection`
/// are not copied.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    head_only: bool,
    close: bool,
    out: &mut Vec<u8>,
) {
    out.reserve(64 + headers.len() * 48);
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut dated = false;
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH if !head_only => continue,
            header::TRANSFER_ENCODING | header::CONNECTION => continue,
            header::DATE => dated = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) | Framing::HeadOf(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        extend_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value, formatted once per second.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((u64::MAX, [0; 29])) };
}

fn extend_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if let Ok(bytes) = <[u8; 29]>::try_from(formatted.as_bytes()) {
                *text = bytes;
                *at = secs;
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        read_timeout: Duration::from_secs(30),
        max_bytes: 8192,
        max_headers: 100,
    };

    fn parse_text(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text);
        let parsed = parse(&mut buf, &LIMITS, &mut Spare::default());
        (parsed, buf)
    }

    fn plain(text: &str) -> (Request<RequestBody>, bool, BytesMut) {
        match parse_text(text) {
            (Parsed::Plain { request, close }, rest) => (*request, close, rest),
            (Parsed::Partial, _) => panic!("partial: {text:?}"),
            (Parsed::Handoff, _) => panic!("handed off: {text:?}"),
            (Parsed::Reject(status), _) => panic!("refused with {status}: {text:?}"),
        }
    }

    fn handed_off(text: &str) {
        let (parsed, rest) = parse_text(text);
        assert!(
            matches!(parsed, Parsed::Handoff),
            "not handed off: {text:?}"
        );
        assert_eq!(
            rest,
            text.as_bytes(),
            "a hand-off keeps every byte for hyper"
        );
    }

    #[test]
    fn a_get_is_taken_off_the_buffer_and_a_pipelined_one_stays() {
        let (req, close, rest) = plain(
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nCookie: x=1\r\ncookie: y=2\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/a/b");
        assert_eq!(req.uri().query(), Some("c=d"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.com");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["x=1", "y=2"]);
        assert!(!close);
        assert_eq!(rest, "GET /next HTTP/1.1\r\n".as_bytes());
        assert!(req.body().is_end_stream());
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        let (parsed, rest) = parse_text("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn connection_close_is_seen_among_other_tokens() {
        assert!(plain("GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n").1);
        assert!(!plain("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").1);
        assert!(!plain("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").1);
    }

    #[test]
    fn a_zero_content_length_is_no_body() {
        let (req, _, rest) = plain("POST /form HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(req.method(), Method::POST);
        assert!(rest.is_empty());
    }

    #[test]
    fn anything_with_a_body_an_upgrade_or_another_version_goes_to_hyper() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET http://[::1 HTTP/1.1\r\n\r\n",
        ] {
            handed_off(text);
        }
    }

    #[test]
    fn framing_no_reader_may_guess_at_is_refused() {
        for (text, status) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
        ] {
            let (parsed, rest) = parse_text(text);
            match parsed {
                Parsed::Reject(s) => assert_eq!(s.as_u16(), status, "{text:?}"),
                _ => panic!("not refused: {text:?}"),
            }
            assert_eq!(rest, text.as_bytes());
        }
    }

    #[test]
    fn a_repeated_zero_length_is_forwarded_once() {
        let (req, _, _) =
            plain("POST / HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            req.headers().get_all(header::CONTENT_LENGTH).iter().count(),
            1
        );
    }

    #[test]
    fn heads_over_the_limits_go_to_hyper() {
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        handed_off(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
        let long = "a".repeat(LIMITS.max_bytes);
        handed_off(&format!("GET / HTTP/1.1\r\nX: {long}\r\n\r\n"));
        // Incomplete, but already as large as a head may be.
        handed_off(&format!("GET / HTTP/1.1\r\nX: {long}"));
        let few = HeadLimits {
            max_headers: 2,
            ..LIMITS
        };
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        assert!(matches!(
            parse(&mut buf, &few, &mut Spare::default()),
            Parsed::Handoff
        ));
        let more = HeadLimits {
            max_headers: 150,
            ..LIMITS
        };
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        match parse(&mut buf, &more, &mut Spare::default()) {
            Parsed::Plain { request, .. } => assert_eq!(request.headers().len(), 101),
            _ => panic!("101 headers are within a limit of 150"),
        }
    }

    /// xorshift: deterministic bytes for the property tests below.
    fn noise(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn mangled_heads_never_panic_and_only_whole_heads_are_taken() {
        let base = b"GET /p?q HTTP/1.1\r\nHost: h\r\nCookie: s=1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let alphabet = b"\r\n :\x00\x7f\xffGET/HTTP1.0chunkedTransfer-Encoding";
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let mut spare = Spare::default();
        for _ in 0..20_000 {
            let mut bytes = base.to_vec();
            for _ in 0..(noise(&mut seed) % 4 + 1) {
                let at = (noise(&mut seed) as usize) % bytes.len();
                let b = alphabet[(noise(&mut seed) as usize) % alphabet.len()];
                match noise(&mut seed) % 3 {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let cut = (noise(&mut seed) as usize) % (bytes.len() + 1);
            bytes.truncate(cut);
            let mut buf = BytesMut::from(&bytes[..]);
            match parse(&mut buf, &LIMITS, &mut spare) {
                Parsed::Plain { request, .. } => {
                    let taken = bytes.len() - buf.len();
                    assert_eq!(&bytes[taken..], &buf[..]);
                    assert!(bytes[..taken].ends_with(b"\n"));
                    assert!(request.headers().get(header::TRANSFER_ENCODING).is_none());
                    for v in request.headers().get_all(header::CONTENT_LENGTH) {
                        assert_eq!(v, "0");
                    }
                }
                Parsed::Partial | Parsed::Handoff | Parsed::Reject(_) => {
                    assert_eq!(&buf[..], &bytes[..])
                }
            }
        }
    }

    fn head(
        status: StatusCode,
        headers: &[(&str, &str)],
        framing: Framing,
        head_only: bool,
        close: bool,
    ) -> String {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        encode_head(status, &map, framing, head_only, close, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_response_head_carries_its_own_framing_only() {
        let h = head(
            StatusCode::OK,
            &[
                ("content-length", "99"),
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive"),
                ("x-a", "1"),
            ],
            Framing::Length(2),
            false,
            false,
        );
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\ndate: "),
            "{h}"
        );
        assert!(h.ends_with(" GMT\r\n\r\n"), "{h}");
        assert_eq!(h.matches("content-length").count(), 1);
        let h = head(
            StatusCode::BAD_GATEWAY,
            &[("date", "x")],
            Framing::Chunked,
            false,
            true,
        );
        assert_eq!(
            h,
            "HTTP/1.1 502 Bad Gateway\r\ndate: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn head_and_bodiless_answers_keep_no_framing_of_their_own() {
        let h = head(
            StatusCode::OK,
            &[("content-length", "1234"), ("date", "d")],
            Framing::None,
            true,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ndate: d\r\n\r\n"
        );
        let h = head(
            StatusCode::NOT_MODIFIED,
            &[("content-length", "1234"), ("date", "d")],
            Framing::None,
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 304 Not Modified\r\ndate: d\r\n\r\n");
        let h = head(
            StatusCode::from_u16(599).unwrap(),
            &[("date", "d")],
            Framing::Length(0),
            false,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 599 <none>\r\ndate: d\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for from in 1..head.len() {
            assert!(may_end_head(head, from), "split at {from}");
        }
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\n", 20));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: b", 20));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\n\r", 15));
    }
}
