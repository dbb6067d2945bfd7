//! One keep-alive connection to an upstream and one exchange on it: the
//! request head, its body if it has one, and the response head.
//!
//! A request body is sent while the connection is also read: an upstream
//! that answers before taking the whole body (a 413, a redirect) is heard at
//! once instead of both sides waiting on full buffers, and the rest of the
//! body is then not sent (the connection is not reused).

use super::stream::UpstreamStream;
use crate::http1::{
    self, Added, Framing, ResponseError, ResponseHead, chunk_size_hex, poll_fill_body,
    poll_fill_from,
};
use crate::http1::{ClientBodyError, RequestBody};
use bytes::{Buf, BytesMut};
use http::StatusCode;
use hyper::body::Body;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Body data up to this size joins what is already waiting to be written, so
/// that a small body leaves in one write with its head; beyond it the
/// buffer is written first.
const COALESCE_BYTES: usize = 16 * 1024;
/// The least a partly read response head's buffer is topped up by (nginx's
/// `proxy_buffer_size`, one page).
const UPSTREAM_BUFFER_BYTES: usize = 4 * 1024;

/// Reads from the upstream into `buf`: an answer's first bytes into a
/// buffer of their size (see [`http1::poll_fill`]), a response body in large
/// reads into a buffer allocated once the socket is readable. A connection
/// gives its buffers up between exchanges: a request waiting for its
/// response holds none (4 KiB each was 31 MB of the heap with 10,000
/// requests in flight).
fn poll_fill_upstream(
    io: &mut UpstreamStream,
    buf: &mut BytesMut,
    body: bool,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if !body {
        return poll_fill_from(io, buf, UPSTREAM_BUFFER_BYTES, cx);
    }
    if buf.capacity() == 0 {
        std::task::ready!(io.poll_read_ready(cx))?;
    }
    poll_fill_body(io, buf, cx)
}

/// A pooled connection: the socket with its buffers, and its timer.
pub(super) struct Conn {
    pub wire: Wire,
    /// Bounds each exchange (see `crate::deadline::within`).
    pub timer: Pin<Box<tokio::time::Sleep>>,
}

pub(super) struct Wire {
    pub io: UpstreamStream,
    /// Bytes read and not yet parsed.
    pub buf: BytesMut,
    /// What is being written; empty between exchanges.
    pub out: Vec<u8>,
}

/// Where a connection goes when its exchange is complete (its pool).
pub(super) trait Home: Send + Sync {
    /// Takes the connection back if `keep_alive` and it can carry another exchange.
    fn put_back(&self, conn: Box<Conn>, keep_alive: bool, now: std::time::Instant);
}

/// How much of a failed exchange reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Silence {
    /// The head was not fully written and no body was taken: the upstream
    /// cannot have acted on the request, which can be sent again.
    NotSent,
    /// Sent, and the connection ended without a byte of answer: what an
    /// idle connection the upstream had just closed looks like.
    NoAnswer,
    Answered,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum Failed {
    Upstream(ResponseError, Silence),
    /// The client's body could not be read: the client's fault.
    ClientBody(ClientBodyError),
}

/// A response head, and whether the connection can carry another exchange
/// once its body is read (not when the upstream answered before the whole
/// request body was sent).
pub(super) struct Answer {
    pub head: ResponseHead,
    pub reusable: bool,
}

impl Wire {
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        poll_fill_upstream(&mut self.io, &mut self.buf, false, cx)
    }

    /// [`Wire::poll_fill`] for the response body.
    pub fn poll_fill_body(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        poll_fill_upstream(&mut self.io, &mut self.buf, true, cx)
    }

    /// Writes a request and reads up to its final response head (or a 101,
    /// when `upgrade` asked for one).
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        added: &Added,
        body: &mut RequestBody,
        framing: Framing,
        upgrade: bool,
    ) -> Result<Answer, Failed> {
        self.out.clear();
        http1::encode_request_head(parts, added, &mut self.out);
        let mut reusable = true;
        if framing == Framing::Empty {
            let written = async {
                self.io.write_all(&self.out).await?;
                self.io.flush().await
            };
            if let Err(e) = written.await {
                return Err(Failed::Upstream(e.into(), Silence::NotSent));
            }
        } else {
            match self.send_body(body, framing).await {
                Sent::Whole => {}
                Sent::Answered => reusable = false,
                Sent::Failed(e) => return Err(e),
            }
        }
        // Not held while the response is awaited (see `poll_fill_upstream`).
        self.out = Vec::new();
        let mut interim = false;
        loop {
            match http1::parse_response_head(&mut self.buf, &parts.method) {
                Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    if !upgrade {
                        return Err(Failed::Upstream(
                            ResponseError::UnaskedUpgrade,
                            Silence::Answered,
                        ));
                    }
                    return Ok(Answer {
                        head,
                        reusable: false,
                    });
                }
                // 100 Continue, 103 Early Hints: the final response follows.
                Ok(Some(head)) if head.status.is_informational() => interim = true,
                Ok(Some(head)) => return Ok(Answer { head, reusable }),
                Ok(None) => {
                    let silence = if interim || !self.buf.is_empty() {
                        Silence::Answered
                    } else {
                        Silence::NoAnswer
                    };
                    match poll_fn(|cx| self.poll_fill(cx)).await {
                        Ok(0) => return Err(Failed::Upstream(ResponseError::Incomplete, silence)),
                        Ok(_) => {}
                        Err(e) => return Err(Failed::Upstream(e.into(), silence)),
                    }
                }
                Err(e) => return Err(Failed::Upstream(e, Silence::Answered)),
            }
        }
    }

    /// Writes the head in `out` and the body after it, framed as `framing`
    /// says, reading the connection meanwhile.
    async fn send_body(&mut self, body: &mut RequestBody, framing: Framing) -> Sent {
        let Wire { io, buf, out } = self;
        let mut sending = Sending {
            written: 0,
            body_taken: false,
            body_done: false,
            length_left: match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            chunked: framing == Framing::Chunked,
        };
        poll_fn(|cx| sending.poll(cx, io, buf, out, body)).await
    }
}

enum Sent {
    Whole,
    /// The upstream answered (a whole response head is buffered) before the
    /// body was all sent.
    Answered,
    Failed(Failed),
}

struct Sending {
    /// How much of `out` is written.
    written: usize,
    body_taken: bool,
    body_done: bool,
    /// Bytes a `Content-Length` body has still to send.
    length_left: Option<u64>,
    chunked: bool,
}

impl Sending {
    fn failed(&self, e: std::io::Error, buf: &BytesMut) -> Sent {
        let silence = match (self.body_taken, buf.is_empty()) {
            (false, _) => Silence::NotSent,
            (true, true) => Silence::NoAnswer,
            (true, false) => Silence::Answered,
        };
        Sent::Failed(Failed::Upstream(e.into(), silence))
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut UpstreamStream,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        body: &mut RequestBody,
    ) -> Poll<Sent> {
        loop {
            // An answer that comes early is heard at once.
            match poll_fill_upstream(io, buf, false, cx) {
                Poll::Ready(Ok(0)) => {
                    let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                    return Poll::Ready(self.failed(e, buf));
                }
                Poll::Ready(Ok(_)) => {
                    if answered(buf) {
                        return Poll::Ready(Sent::Answered);
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(self.failed(e, buf)),
                Poll::Pending => {}
            }
            if self.written < out.len() {
                match Pin::new(&mut *io).poll_write(cx, &out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                        return Poll::Ready(self.failed(e, buf));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        if self.written == out.len() {
                            out.clear();
                            self.written = 0;
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.failed(e, buf)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.body_done {
                return match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Sent::Whole),
                    Poll::Ready(Err(e)) => Poll::Ready(self.failed(e, buf)),
                    Poll::Pending => Poll::Pending,
                };
            }
            // Whatever the body has ready joins the buffer, up to a size.
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => continue,
                Poll::Ready(frame) => frame,
            };
            self.body_taken = true;
            match frame {
                None => {
                    if self.length_left.is_some_and(|n| n > 0) {
                        let e = ClientBodyError("the body ended before its length".into());
                        return Poll::Ready(Sent::Failed(Failed::ClientBody(e)));
                    }
                    if self.chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.body_done = true;
                }
                Some(Err(e)) => return Poll::Ready(Sent::Failed(Failed::ClientBody(e))),
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut self.length_left {
                        if data.len() as u64 > *left {
                            let e = ClientBodyError("the body is longer than its length".into());
                            return Poll::Ready(Sent::Failed(Failed::ClientBody(e)));
                        }
                        *left -= data.len() as u64;
                    }
                    if self.chunked {
                        let mut hex = [0u8; 16];
                        out.extend_from_slice(chunk_size_hex(data.len(), &mut hex));
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(&data);
                    data.advance(data.len());
                    if self.chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() < COALESCE_BYTES {
                        continue;
                    }
                }
            }
        }
    }
}

/// Whether `buf` holds a whole final response head (interim ones, such as
/// `100 Continue`, do not end the sending).
fn answered(buf: &BytesMut) -> bool {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; http1::MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(len)) => match response.code {
                Some(100..=199) if response.code != Some(101) => at += len,
                _ => return true,
            },
            // A malformed answer ends the sending too; reading it reports it.
            Err(_) => return true,
            Ok(httparse::Status::Partial) => return false,
        }
    }
}
