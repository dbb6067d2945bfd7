//! What both directions of HTTP/1.1 share: how a body is framed, the
//! hop-by-hop headers, token lists, and growing a read buffer.

use bytes::Bytes;
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Read buffer growth while a body streams: large reads, few system calls.
pub const READ_RESERVE_BYTES: usize = 8 * 1024;
/// The least a head read tops a partly read head's buffer up by. Small
/// because a request's head keeps its buffer until the request ends: with
/// 8 KiB, 10,000 requests in flight held 80 MB of buffers (nginx reads
/// heads into 1 KiB, `client_header_buffer_size`). A larger head grows it.
pub const HEAD_BUFFER_BYTES: usize = 1024;

/// How a message's body is delimited on the wire (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Headers that describe one connection, never forwarded.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // Only ever meant for an h2c upgrade, which is not passed on.
    HeaderName::from_static("http2-settings"),
];

/// A `Connection` token that names no end-to-end header: `close`, or a
/// hop-by-hop header removed anyway.
pub fn is_connection_option(token: &str) -> bool {
    token.is_empty()
        || token.eq_ignore_ascii_case("close")
        || HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_str()))
}

/// Whether a comma-separated header value lists `token` (case-insensitive),
/// as `Connection: keep-alive, close` lists `close`.
pub fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The headers the proxy sets on a request (`X-Forwarded-*`,
/// `X-Request-Id`, the session's), kept beside the client's map rather than
/// inserted into it: the upstream codec writes them after the client's
/// headers, which spares a hashed insert and its removal per header on
/// every request; a request that goes through hyper appends them to its map.
/// The client's own copies of these names must be gone from the map.
#[derive(Debug, Default)]
pub struct Added(Vec<(HeaderName, HeaderValue)>);

impl Added {
    pub fn with_capacity(n: usize) -> Self {
        Added(Vec::with_capacity(n))
    }

    /// Sets `name`, replacing what was set under it before, as
    /// [`HeaderMap::insert`] does.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn append_to(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            headers.insert(name, value);
        }
    }
}

/// Whether `headers` holds `name`, found by a pass over the names rather
/// than a hashed lookup: a message carries a dozen headers or so, comparing
/// two standard names compares two tags, and most of the names the proxy
/// asks about are absent, which a lookup pays for in full.
pub fn holds(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|k| k == name)
}

/// Reads more into `buf` (a head, or whatever follows one), topping it up
/// when nearly full by its own size: a small buffer stays small while heads
/// fit, a large one reads large. An empty buffer becomes a copy of exactly
/// what was read (see `poll_fill_exact`).
pub fn poll_fill<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    poll_fill_from(io, buf, HEAD_BUFFER_BYTES, cx)
}

/// Reads into a buffer on the stack, and makes `buf` a copy of exactly what
/// came. A connection waiting for its next head, a request watched for a
/// hang-up and an upstream connection awaiting its answer then hold no
/// buffer, and a parsed head (which shares its buffer) holds only its own
/// bytes: with 10,000 requests in flight, 1 KiB head buffers, buffers
/// allocated to watch for hang-ups and 4 KiB upstream buffers for answers of
/// a few hundred bytes were 26 MB of a 87 MB heap. The copy is of the bytes
/// read, a head's few hundred; a body streams through [`poll_fill_body`].
fn poll_fill_exact<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    debug_assert!(buf.is_empty());
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_RESERVE_BYTES];
    let mut read = ReadBuf::uninit(&mut scratch);
    std::task::ready!(Pin::new(io).poll_read(cx, &mut read))?;
    let got = read.filled();
    if !got.is_empty() {
        *buf = BytesMut::from(got);
    }
    Poll::Ready(Ok(got.len()))
}

/// [`poll_fill`] for a buffer topped up by at least `least` bytes.
pub fn poll_fill_from<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    least: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() {
        return poll_fill_exact(io, buf, cx);
    }
    let by = buf.capacity().clamp(least, READ_RESERVE_BYTES);
    poll_fill_by(io, buf, by, cx)
}

/// [`poll_fill`] for a body: tops up by [`READ_RESERVE_BYTES`], so that a
/// large body streams in large reads whatever size its head's buffer was.
pub fn poll_fill_body<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    poll_fill_by(io, buf, READ_RESERVE_BYTES, cx)
}

fn poll_fill_by<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    by: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < by / 8 {
        buf.reserve(by);
    }
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

/// [`poll_fill`] as a future.
pub async fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, buf, cx)).await
}

/// A chunk-size line's number, in lower-case hex.
pub fn chunk_size_hex(n: usize, hex: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = hex.len();
    let mut n = n;
    loop {
        i -= 1;
        hex[i] = DIGITS[n & 15];
        n >>= 4;
        if n == 0 {
            return &hex[i..];
        }
    }
}

/// A stream with bytes already read from it in front: what hyper reads
/// after a hand-off.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, io: T) -> Self {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        let mut hex = [0u8; 16];
        assert_eq!(chunk_size_hex(0, &mut hex), b"0");
        assert_eq!(chunk_size_hex(255, &mut hex), b"ff");
        assert_eq!(chunk_size_hex(16 * 1024 + 1, &mut hex), b"4001");
        assert_eq!(chunk_size_hex(usize::MAX, &mut hex), b"ffffffffffffffff");
    }

    #[tokio::test]
    async fn an_empty_buffer_keeps_exactly_what_was_read() {
        let (mut near, mut far) = tokio::io::duplex(64);
        near.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(fill(&mut far, &mut buf).await.unwrap(), 16);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        assert_eq!(buf.capacity(), 16);
        // The rest of a head joins what the buffer holds.
        near.write_all(b"Host: h\r\n\r\n").await.unwrap();
        fill(&mut far, &mut buf).await.unwrap();
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        // Once taken, the next read starts from nothing again.
        let _head = buf.split().freeze();
        near.write_all(b"GET /2").await.unwrap();
        fill(&mut far, &mut buf).await.unwrap();
        assert_eq!((&buf[..], buf.capacity()), (&b"GET /2"[..], 6));
    }

    #[test]
    fn waiting_for_bytes_holds_no_buffer() {
        let (_near, mut far) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(poll_fill(&mut far, &mut buf, &mut cx).is_pending());
        assert_eq!(buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_handed_off_stream_reads_its_prefix_first() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut io = Prefixed::new(Bytes::from_static(b"abc"), far);
        near.write_all(b"def").await.unwrap();
        drop(near);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcdef");
    }
}
