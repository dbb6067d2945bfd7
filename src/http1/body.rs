//! Bodies on the wire: the decoders both directions read with, and the
//! request body a server connection streams to the proxy.

use super::common::{Framing, poll_fill_body};
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Most trailer bytes accepted after the last chunk; trailers are dropped.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the chunked body is malformed")]
    BadChunk,
    #[error("the connection closed before the body was complete")]
    Incomplete,
    #[error("reading the body failed")]
    Io(#[from] std::io::Error),
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece: read more.
    NeedMore,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Decodes `Transfer-Encoding: chunked` from a buffer that reads append to.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::BadChunk);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        self.trailer_bytes += line.len();
                        if self.trailer_bytes > MAX_TRAILER_BYTES {
                            return Err(BodyError::BadChunk);
                        }
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without the CRLF) off the buffer.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BodyError> {
    let Some(end) = buf.iter().take(max + 2).position(|&b| b == b'\n') else {
        return if buf.len() > max + 1 {
            Err(BodyError::BadChunk)
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(BodyError::BadChunk);
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BodyError::BadChunk);
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    if let Some(i) = ext
        && rest[i] != b';'
    {
        return Err(BodyError::BadChunk);
    }
    if rest.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err(BodyError::BadChunk);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| BodyError::BadChunk)?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::BadChunk)
}

/// What is left of a body being read, and how it ends.
#[derive(Debug)]
pub enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the connection closes (responses only).
    UntilClose,
}

impl Decoder {
    /// The decoder for a framing; `None` for no body.
    pub fn new(framing: Framing) -> Option<Self> {
        match framing {
            Framing::Empty => None,
            Framing::Length(n) => Some(Decoder::Length(n)),
            Framing::Chunked => Some(Decoder::Chunked(ChunkedDecoder::default())),
            Framing::UntilClose => Some(Decoder::UntilClose),
        }
    }

    /// The next piece of the body from what `buf` holds; what follows the
    /// body stays in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        match self {
            Decoder::Length(0) => Ok(Decoded::End),
            Decoder::Length(_) | Decoder::UntilClose if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Length(left) => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Ok(Decoded::Data(buf.split_to(take as usize).freeze()))
            }
            Decoder::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
            Decoder::Chunked(chunked) => chunked.decode(buf),
        }
    }

    /// What the end of the connection means here: the body's end, or a
    /// body cut short.
    pub fn at_eof(&self) -> Result<(), BodyError> {
        match self {
            Decoder::UntilClose | Decoder::Length(0) => Ok(()),
            _ => Err(BodyError::Incomplete),
        }
    }

    /// Whether nothing of the body is left to read.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Length(0))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self {
            Decoder::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

/// A request's body: none (most requests), one streamed from an HTTP/1
/// connection by the server loop, or one read by hyper's HTTP/2 server.
///
/// Request trailers are dropped, as nginx drops them: nothing in them is
/// filtered like the head is, so a trailer could carry a forged session
/// header past the anti-spoofing rules.
pub enum RequestBody {
    Empty,
    Http1(Incoming),
    Http2(hyper::body::Incoming),
    /// A body read whole (a form read for its CSRF token), sent on as read.
    Buffered(Option<Bytes>),
}

/// The client's body failed to decode (a malformed chunk, a connection
/// closed early): the client's fault, answered 400, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body failed")]
pub struct ClientBodyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            RequestBody::Http1(body) => body.poll_data(cx),
            RequestBody::Http2(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => Poll::Ready(None),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError(Box::new(e))))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Http1(body) => body.is_end_stream(),
            RequestBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Http1(body) => body.hint,
            RequestBody::Http2(body) => body.size_hint(),
        }
    }
}

/// Where the server loop and the body meet. The loop reads the connection
/// only when the body asks for more and has taken what it was given: the
/// body is never buffered whole, and a slow upstream slows the client.
#[derive(Default)]
struct Slot {
    data: Option<Bytes>,
    /// Set once, when the body ends or fails.
    end: Option<Result<(), BodyError>>,
    wants: bool,
    /// The body, waiting for data.
    reader: Option<Waker>,
    /// The loop, waiting for the body to ask.
    feeder: Option<Waker>,
    /// The body was dropped: nobody will ask again.
    dropped: bool,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP/1 request body, fed by the server loop that read its head.
pub struct Incoming {
    slot: Arc<Mutex<Slot>>,
    hint: SizeHint,
    finished: bool,
}

impl Incoming {
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut slot = lock(&self.slot);
        if let Some(data) = slot.data.take() {
            let left = self
                .hint
                .exact()
                .map(|n| n.saturating_sub(data.len() as u64));
            if let Some(n) = left {
                self.hint.set_exact(n);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match slot.end.take() {
            Some(Ok(())) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.finished = true;
                Poll::Ready(Some(Err(ClientBodyError(Box::new(e)))))
            }
            None => {
                slot.wants = true;
                slot.reader = Some(cx.waker().clone());
                if let Some(feeder) = slot.feeder.take() {
                    feeder.wake();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.hint.exact() == Some(0)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.dropped = true;
        if let Some(feeder) = slot.feeder.take() {
            feeder.wake();
        }
    }
}

/// How feeding a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The whole body was read: the connection can carry the next request.
    Whole,
    /// The body was dropped before its end, or failed: what follows it on
    /// the connection cannot be found, so the connection ends.
    Abandoned,
}

/// The server loop's side of an [`Incoming`].
pub struct Feeder {
    slot: Arc<Mutex<Slot>>,
    decoder: Decoder,
    /// `100 Continue`, owed to a client that asked for it before its body,
    /// and how much of it is written.
    continue_owed: Option<usize>,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Feeder {
    /// A body framed as `framing` (not `Empty`), and the loop's side of it.
    pub fn new(framing: Framing, expect_continue: bool) -> (Incoming, Feeder) {
        let decoder = Decoder::new(framing).expect("a body to feed");
        let slot = Arc::new(Mutex::new(Slot::default()));
        (
            Incoming {
                slot: slot.clone(),
                hint: decoder.size_hint(),
                finished: false,
            },
            Feeder {
                slot,
                decoder,
                continue_owed: expect_continue.then_some(0),
            },
        )
    }

    fn end(&mut self, end: Result<(), BodyError>) -> Poll<Fed> {
        let fed = if end.is_ok() {
            Fed::Whole
        } else {
            Fed::Abandoned
        };
        let mut slot = lock(&self.slot);
        slot.end = Some(end);
        if let Some(reader) = slot.reader.take() {
            reader.wake();
        }
        Poll::Ready(fed)
    }

    /// Reads the body from `buf` and `io` as the body asks for it, until it
    /// ends, fails or is dropped.
    pub fn poll_feed<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        buf: &mut BytesMut,
    ) -> Poll<Fed> {
        loop {
            {
                let mut slot = lock(&self.slot);
                if slot.dropped {
                    return Poll::Ready(Fed::Abandoned);
                }
                if !slot.wants || slot.data.is_some() {
                    slot.feeder = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            if let Some(written) = self.continue_owed {
                match Pin::new(&mut *io).poll_write(cx, &CONTINUE[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return self.end(Err(BodyError::Incomplete));
                    }
                    Poll::Ready(Ok(n)) if written + n == CONTINUE.len() => {
                        self.continue_owed = None;
                    }
                    Poll::Ready(Ok(n)) => self.continue_owed = Some(written + n),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            match self.decoder.decode(buf) {
                Ok(Decoded::Data(data)) => {
                    let mut slot = lock(&self.slot);
                    slot.data = Some(data);
                    slot.wants = false;
                    // A body whose length is all read has ended: its reader
                    // may rightly never ask again.
                    let whole = self.decoder.is_done();
                    if whole {
                        slot.end = Some(Ok(()));
                    }
                    if let Some(reader) = slot.reader.take() {
                        reader.wake();
                    }
                    if whole {
                        return Poll::Ready(Fed::Whole);
                    }
                }
                Ok(Decoded::End) => return self.end(Ok(())),
                Ok(Decoded::NeedMore) => match poll_fill_body(io, buf, cx) {
                    Poll::Ready(Ok(0)) => {
                        let end = self.decoder.at_eof();
                        return self.end(end);
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return self.end(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) => return self.end(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded body, and what was left after it (buffered and unread).
    fn decode_all(mut input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, [&buf[..], input].concat())),
                Decoded::NeedMore => {
                    if input.is_empty() {
                        return Err(BodyError::Incomplete);
                    }
                    let n = step.min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_body_decodes_whatever_the_read_sizes() {
        let wire = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) = decode_all(wire, step).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
            // What follows the body belongs to the next response.
            assert_eq!(rest, b"NEXT", "step {step}");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX0\r\n\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"4 x\r\nWiki\r\n",
            b"4;\x01\r\nWiki\r\n",
        ] {
            assert!(
                matches!(decode_all(wire, 64), Err(BodyError::BadChunk)),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = vec![b'1'; MAX_CHUNK_LINE_BYTES + 10];
        assert!(matches!(
            decode_all(&long_line, 64),
            Err(BodyError::BadChunk)
        ));
    }

    #[test]
    fn a_truncated_chunked_body_is_incomplete() {
        assert!(matches!(
            decode_all(b"4\r\nWi", 64),
            Err(BodyError::Incomplete)
        ));
    }
}
