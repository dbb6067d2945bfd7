//! Responses as the server loop writes them: the status line, the
//! headers, and the body in a framing of the loop's own.

use super::common::chunk_size_hex;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Body;
use std::io::IoSlice;
use std::task::Poll;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Body data up to this size is copied behind the head, so that a small
/// response leaves in one write; larger data is written from where it lies.
const COALESCE_BYTES: usize = 16 * 1024;

/// How a response body is delimited on the wire.
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
    /// Until the connection closes: a body of unknown length for an
    /// HTTP/1.0 client, which knows no chunked coding.
    UntilClose,
}

/// How a response is written: for which request, and whether the
/// connection ends after it.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    pub head_only: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    pub close: bool,
}

/// Writes a response, head and body. Returns whether the connection must
/// end after it (it did not say so itself, but its body runs until the
/// connection closes).
pub async fn write_response<T, B>(
    io: &mut T,
    out: &mut Vec<u8>,
    response: Box<Response<B>>,
    answering: Answering,
) -> std::io::Result<bool>
where
    T: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Answering {
        head_only,
        http10,
        mut close,
    } = answering;
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
        None if http10 => Framing::UntilClose,
        None => Framing::Chunked,
    };
    close |= framing == Framing::UntilClose;
    out.clear();
    let connection = match (close, http10) {
        (true, _) => Some(&b"close"[..]),
        // An HTTP/1.0 client keeps the connection only when told to.
        (false, true) => Some(&b"keep-alive"[..]),
        (false, false) => None,
    };
    encode_head(status, &parts.headers, framing, head_only, connection, out);
    // Not held while the body is written.
    drop(parts.headers);
    if matches!(framing, Framing::None | Framing::HeadOf(_)) {
        io.write_all(out).await?;
        return Ok(close);
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
            Some(Err(e)) => return Err(std::io::Error::other(e.into())),
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
    Ok(close)
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
    connection: Option<&[u8]>,
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
        Framing::None | Framing::UntilClose => {}
    }
    if let Some(option) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(option);
        out.extend_from_slice(b"\r\n");
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

/// Answers a head whose framing cannot be trusted, and ends the connection.
pub async fn reject<T>(io: &mut T, out: &mut Vec<u8>, status: StatusCode) -> std::io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let body: &[u8] = match status {
        StatusCode::NOT_IMPLEMENTED => b"transfer coding not implemented\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => b"request header fields too large\n",
        StatusCode::URI_TOO_LONG => b"request target too long\n",
        _ => b"bad request\n",
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
        Some(b"close"),
        out,
    );
    out.extend_from_slice(body);
    io.write_all(out).await?;
    io.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn head(
        status: StatusCode,
        headers: &[(&str, &str)],
        framing: Framing,
        head_only: bool,
        close: bool,
    ) -> String {
        let connection = close.then_some(&b"close"[..]);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        encode_head(status, &map, framing, head_only, connection, &mut out);
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
}
