//! The HTTP/1.1 client codec for the exchange most proxied requests are: a
//! request without a body. Its head is written in one piece and the
//! response is parsed here, into the same `http` types hyper produces,
//! without hyper's client machinery (a request channel, a response channel
//! and a body channel per exchange), which costs more per request than the
//! parse itself. Requests with a body and upgrades still go through hyper.
//!
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and
//! 304; `Transfer-Encoding` ending in chunked; then `Content-Length`; else
//! the body runs until the upstream closes.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::common::{Added, Framing, KEEP_ALIVE, is_connection_option, lists_token};

/// Largest response head accepted from an upstream (nginx's default
/// `proxy_buffer_size` is 4 KiB; hyper's client allows more).
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most headers accepted in one response head, as hyper's client.
pub const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the upstream sent a malformed response head")]
    Parse(#[from] httparse::Error),
    #[error("the upstream's response head is larger than {MAX_RESPONSE_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the upstream's response has an invalid {0} header")]
    BadHeader(&'static str),
    #[error("the upstream switched protocols without being asked to")]
    UnaskedUpgrade,
    #[error("the upstream closed the connection before the response was complete")]
    Incomplete,
    #[error("reading from the upstream failed")]
    Io(#[from] std::io::Error),
}

/// Writes the head of a request without a body: the client's headers, then
/// the ones the proxy adds.
pub fn encode_request_head(parts: &http::request::Parts, added: &Added, out: &mut Vec<u8>) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Exact: the buffer is allocated once per request (see `Wire::out`).
    let fields: usize = parts
        .headers
        .iter()
        .chain(added.iter())
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    // "METHOD TARGET HTTP/1.1\r\n", the fields, "\r\n".
    out.reserve(parts.method.as_str().len() + 1 + target.len() + 11 + fields + 2);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in parts.headers.iter().chain(added.iter()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head at the front of `buf` and removes it from there;
/// `None` while the head is incomplete. Header values share the buffer's
/// memory rather than being copied.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ResponseError> {
    // Uninitialized: filling a hundred empty headers on every parse cost
    // more than parsing the few a response has.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let len = match parsed? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_RESPONSE_HEAD_BYTES => {
            return Err(ResponseError::HeadTooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_RESPONSE_HEAD_BYTES {
        return Err(ResponseError::HeadTooLarge);
    }
    let status = StatusCode::from_u16(response.code.unwrap_or(0))
        .map_err(|_| ResponseError::BadHeader("status"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Where each name and value sits, so that the head can be frozen and
    // the values sliced from it once `response` no longer borrows it.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_HEADERS];
    let count = response.headers.len();
    for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = (
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    // Room for what the proxy adds on the way back (`Vary`, `X-Request-Id`,
    // `Set-Cookie`), so that the map does not grow then.
    let mut map = HeaderMap::with_capacity(count + 4);
    // What framing and keep-alive depend on is noted on the way through,
    // so that deciding them takes no lookups in the map.
    let mut close = false;
    let mut transfer_coded = false;
    let mut length = Ok(None);
    let mut lengths = 0u32;
    let mut length_kept = false;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| ResponseError::BadHeader("name"))?;
        let value = &head[vs as usize..ve as usize];
        // What concerns only this connection is consumed here: the proxy
        // would strip it anyway, at the cost of a search and removals.
        if name == KEEP_ALIVE {
            continue;
        }
        if name == header::CONNECTION {
            match connection_options(value) {
                Some(closes) => {
                    close |= closes;
                    continue;
                }
                None => close |= lists_token(value, b"close"),
            }
        } else if name == header::TRANSFER_ENCODING {
            transfer_coded = true;
        } else if name == header::CONTENT_LENGTH {
            length = length.and_then(|known| content_length(known, value));
            // One plain value is kept as it is; a list or a repeat is
            // replaced below by the one length it means.
            lengths += 1;
            if lengths > 1 || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                continue;
            }
            length_kept = true;
        }
        // SAFETY: as for a request head (`server::h1::parse`), httparse
        // accepts in a field value only the bytes a `HeaderValue` may hold
        // (HTAB, space, visible ASCII, obs-text), and this parser's default
        // configuration refuses obsolete line folding; debug builds check it again.
        let value = unsafe {
            HeaderValue::from_maybe_shared_unchecked(head.slice(vs as usize..ve as usize))
        };
        map.append(name, value);
    }
    // No client ever sees a length that is invalid, repeated or a list:
    // a bodiless answer (HEAD, 304) loses an invalid one, others fail below.
    if lengths > 1 || (lengths == 1 && !length_kept) {
        if length_kept {
            map.remove(header::CONTENT_LENGTH);
        }
        if let Ok(Some(n)) = length {
            map.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let (framing, closes) = framing(&mut map, status, method, transfer_coded, length)?;
    let keep_alive =
        version == Version::HTTP_11 && !closes && !close && framing != Framing::UntilClose;
    Ok(Some(ResponseHead {
        status,
        version,
        headers: map,
        framing,
        keep_alive,
    }))
}

/// The body's framing, and whether it leaves the connection unusable.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    method: &Method,
    transfer_coded: bool,
    length: Result<Option<u64>, ResponseError>,
) -> Result<(Framing, bool), ResponseError> {
    if transfer_coded {
        // Transfer-Encoding overrides Content-Length, which must then go:
        // passing both on would let the next hop frame the body its own way.
        headers.remove(header::CONTENT_LENGTH);
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, false));
    }
    if transfer_coded {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => (Framing::Chunked, false),
            _ => (Framing::UntilClose, true),
        });
    }
    Ok(match length? {
        Some(0) => (Framing::Empty, false),
        Some(n) => (Framing::Length(n), false),
        None => (Framing::UntilClose, true),
    })
}

/// Folds one `Content-Length` value into the length the earlier ones gave:
/// a list of equal lengths is one length (RFC 9110 section 8.6), anything
/// else is an error.
fn content_length(known: Option<u64>, value: &[u8]) -> Result<Option<u64>, ResponseError> {
    let bad = || ResponseError::BadHeader("Content-Length");
    let mut length = known;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        // At most 19 digits: no overflow.
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    Ok(length)
}

/// For a `Connection` value that names no end-to-end header (only `close`,
/// `keep-alive` and headers the proxy strips anyway), whether it says
/// close; `None` when it names headers the proxy must find and remove.
fn connection_options(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in std::str::from_utf8(value).ok()?.split(',') {
        let token = token.trim();
        if !is_connection_option(token) {
            return None;
        }
        close |= token.eq_ignore_ascii_case("close");
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], method: Method) -> Result<Option<ResponseHead>, ResponseError> {
        parse_response_head(&mut BytesMut::from(raw), &method)
    }

    #[test]
    fn a_value_is_kept_only_with_bytes_a_header_value_may_hold() {
        // Test builds check every unchecked HeaderValue again, so a byte
        // httparse let through that a HeaderValue may not hold would panic here.
        for b in 0..=255u8 {
            let raw = [b"HTTP/1.1 200 OK\r\nx-v: a".as_slice(), &[b], b"b\r\n\r\n"].concat();
            let allowed = b == b'\t' || (b >= 0x20 && b != 0x7f);
            match parse(&raw, Method::GET) {
                Ok(Some(head)) => {
                    assert!(allowed, "byte {b:#04x} was kept");
                    assert_eq!(head.headers["x-v"].as_bytes(), &[b'a', b, b'b']);
                }
                Ok(None) => panic!("byte {b:#04x}: a whole head read as partial"),
                Err(_) => assert!(!allowed, "byte {b:#04x} was refused"),
            }
        }
        // Obsolete line folding is refused, not joined into a value.
        assert!(parse(b"HTTP/1.1 200 OK\r\nx-v: a\r\n b\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn request_head_is_origin_form_with_every_header() {
        let req = http::Request::builder()
            .method("GET")
            .uri("/a/b?x=1")
            .header("host", "app")
            .header("x-forwarded-for", "10.0.0.1")
            .header("cookie", "a=1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut added = Added::default();
        added.set(
            http::HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("r-1"),
        );
        let mut out = Vec::new();
        encode_request_head(&parts, &added, &mut out);
        assert_eq!(
            out,
            b"GET /a/b?x=1 HTTP/1.1\r\nhost: app\r\nx-forwarded-for: 10.0.0.1\r\ncookie: a=1\r\nx-request-id: r-1\r\n\r\n"
        );
        // One allocation of the exact size: the buffer is made per request.
        assert_eq!(out.capacity(), out.len());
    }

    #[test]
    fn response_head_is_parsed_and_removed_from_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok\nNEXT"[..],
        );
        let head = parse_response_head(&mut buf, &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(&buf[..], b"ok\nNEXT");
    }

    #[test]
    fn incomplete_head_asks_for_more_and_leaves_the_buffer() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(
            parse_response_head(&mut buf, &Method::GET)
                .unwrap()
                .is_none()
        );
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |raw: &[u8], method: Method| parse(raw, method).unwrap().unwrap().framing;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing(head, Method::HEAD), Framing::Empty);
        assert_eq!(framing(head, Method::GET), Framing::Length(5));
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            Framing::Empty
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET
            ),
            Framing::Empty
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET),
            Framing::Empty
        );
        let chunked = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(!chunked.headers.contains_key(header::CONTENT_LENGTH));
        let until_close = parse(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        let gzip_only = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(gzip_only.framing, Framing::UntilClose);
    }

    #[test]
    fn connection_close_and_http_1_0_end_keep_alive() {
        let close = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!close.keep_alive);
        assert!(!close.headers.contains_key(header::CONNECTION));
        let old = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(old.version, Version::HTTP_10);
        assert!(!old.keep_alive);
    }

    #[test]
    fn connection_options_are_consumed_and_named_headers_left_to_strip() {
        let kept = parse(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(kept.keep_alive);
        let names: Vec<_> = kept.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-length"]);
        // Naming only headers the proxy strips anyway is consumed too.
        let hop_only = parse(
            b"HTTP/1.1 200 OK\r\nConnection: TE, Close\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!hop_only.keep_alive);
        assert!(!hop_only.headers.contains_key(header::CONNECTION));
        let named = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!named.keep_alive);
        assert_eq!(named.headers[header::CONNECTION], "close, X-Hop");
        assert_eq!(named.headers["x-hop"], "1");
    }

    /// Found by the response_head fuzz target: an empty length on an
    /// answer to HEAD was passed on as it was.
    #[test]
    fn a_bodiless_answer_keeps_only_a_valid_length() {
        for (raw, kept) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"[..], None),
            (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", None),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
                Some("2"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                Some("2"),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", Some("7")),
        ] {
            let head = parse(raw, Method::HEAD).unwrap().unwrap();
            let lengths: Vec<_> = head
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .collect();
            assert_eq!(
                lengths.first().map(|v| v.to_str().unwrap()),
                kept,
                "{raw:?}"
            );
            assert!(lengths.len() <= 1);
        }
    }

    #[test]
    fn conflicting_or_invalid_content_lengths_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\u{a0}\r\n\r\n".as_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, Method::GET), Err(ResponseError::BadHeader(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let same = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(same.framing, Framing::Length(3));
        let largest = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(largest.framing, Framing::Length(9_999_999_999_999_999_999));
        // Transfer-Encoding wins, and the Content-Length it overrides is not judged.
        let coded = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(coded.framing, Framing::Chunked);
        assert!(!coded.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn malformed_and_oversized_heads_are_errors() {
        assert!(matches!(
            parse(b"HTTP/1.1 2000 OK\r\n\r\n", Method::GET),
            Err(ResponseError::Parse(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", Method::GET),
            Err(ResponseError::Parse(_))
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&many, Method::GET),
            Err(ResponseError::Parse(httparse::Error::TooManyHeaders))
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD_BYTES + 10, b'a');
        assert!(matches!(
            parse(&huge, Method::GET),
            Err(ResponseError::HeadTooLarge)
        ));
    }
}
