//! An upstream's response body, read from its pooled connection as the
//! client takes it; the connection goes back to the pool as soon as the
//! body's last byte is in. And the upstream's side of an upgraded
//! connection.

use super::conn::{Conn, Home};
use super::stream::UpstreamStream;
use crate::http1::{BodyError, Decoded, Decoder, Prefixed};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The upstream's side of a connection it switched protocols on (a `101`),
/// with any bytes it sent after the head: in the response's extensions
/// (which must be `Clone`, hence the shared slot).
#[derive(Clone)]
pub struct UpstreamUpgrade(Arc<std::sync::Mutex<Option<Prefixed<UpstreamStream>>>>);

impl UpstreamUpgrade {
    pub(super) fn new(io: Prefixed<UpstreamStream>) -> Self {
        UpstreamUpgrade(Arc::new(std::sync::Mutex::new(Some(io))))
    }

    /// The connection; `None` once taken.
    pub fn take(&self) -> Option<Prefixed<UpstreamStream>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An upstream response body.
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    Streaming(Streaming),
    /// A body read together with its head (or none at all): its connection
    /// is back in the pool before the response is even sent on.
    Full(Option<Bytes>),
}

impl UpstreamBody {
    pub(super) fn full(data: Option<Bytes>) -> Self {
        UpstreamBody {
            inner: Inner::Full(data),
        }
    }

    pub(super) fn streaming(
        conn: Box<Conn>,
        rest: Decoder,
        keep_alive: bool,
        pool: Arc<dyn Home>,
    ) -> Self {
        UpstreamBody {
            inner: Inner::Streaming(Streaming {
                conn: Some(conn),
                rest,
                keep_alive,
                pool,
            }),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().inner {
            Inner::Streaming(b) => b.poll_frame(cx),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Streaming(b) => b.rest.is_done(),
            Inner::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Streaming(b) => b.rest.size_hint(),
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

struct Streaming {
    /// Gone once the body has ended; a body dropped before its end takes
    /// the connection with it, since the rest of the body would be unread.
    conn: Option<Box<Conn>>,
    rest: Decoder,
    keep_alive: bool,
    pool: Arc<dyn Home>,
}

impl Streaming {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn, self.keep_alive, Instant::now());
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
            let step = match self.rest.decode(&mut conn.wire.buf) {
                Ok(step) => step,
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            match step {
                Decoded::Data(data) => {
                    // The connection goes back as soon as the last byte is in.
                    if self.rest.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match conn.wire.poll_fill_body(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        self.conn = None;
                        return Poll::Ready(self.rest.at_eof().err().map(Err));
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
