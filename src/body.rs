//! The request body as it travels from a client connection to an upstream:
//! glue between the server side and the client side, below both.

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request's body: none (most requests), or one streamed from the client.
///
/// Request trailers are dropped, as nginx drops them: nothing in them is
/// filtered like the head is, so a trailer could carry a forged session
/// header past the anti-spoofing rules.
pub enum RequestBody {
    Empty,
    /// Read by hyper's server (HTTP/2, and HTTP/1 bodies for now).
    Hyper(Incoming),
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
            RequestBody::Hyper(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError(Box::new(e))))),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
