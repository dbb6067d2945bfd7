//! Request heads, as the server loop reads them: one parser for every
//! HTTP/1 request, which also judges the framing of its body before anyone
//! reads it, so that no request whose framing two readers could disagree on
//! reaches hyper, the proxy or an upstream.

use super::body::RequestBody;
use super::common::{Framing, lists_token};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use std::mem::MaybeUninit;
use std::time::Duration;

/// The header count up to which the parse needs no heap (hyper's default limit).
const STACK_HEADERS: usize = 100;
/// Longest request target accepted (hyper's limit).
pub const MAX_URI_BYTES: usize = u16::MAX as usize - 1;
/// HTTP/2's connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Allocations a connection reuses from one request to the next. Not the
/// last response's header map, as hyper does: a response's map has room for
/// what the proxy adds to it, and kept for the next request it was 12 MB of
/// the heap with 10,000 connections; a request's map is sized to its head.
#[derive(Default)]
pub struct Spare {
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

/// A request head taken off the buffer, and what the loop must know of it.
// Boxed: on its way from here to the upstream the request passes through a
// chain of futures (this loop, `handle`, routing, `forward`), and unboxed,
// its 256 bytes were copied at about fifteen steps; one allocation is cheaper.
pub struct Head {
    /// The request, with an empty body: the loop gives it one when `body` says so.
    pub request: Box<Request<RequestBody>>,
    pub body: Framing,
    /// Whether the connection ends after this request (`Connection: close`,
    /// or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// `Expect: 100-continue`: the client waits for a `100` before its body.
    pub expect_continue: bool,
}

/// One parse of the buffer's start.
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    Request(Head),
    /// A head no reader may guess at: answered with this status (400, 414,
    /// 431, 501), and the connection closed, since where the next request
    /// starts is unknown.
    Reject(StatusCode),
    /// HTTP/2's preface (h2c with prior knowledge): hyper's HTTP/2 server
    /// takes the connection, with every byte read so far.
    Http2,
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

/// A `Content-Length` value: 1 to 19 digits, nothing else (no sign, no
/// list, no spaces), which no reader can take two ways.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Parses the request head at the start of `buf`. A complete, acceptable
/// head is taken off the buffer; every other outcome leaves the buffer as
/// it was.
pub fn parse(buf: &mut BytesMut, limits: &HeadLimits, spare: &mut Spare) -> Parsed {
    let n = buf.len().min(H2_PREFACE.len());
    if n > 0 && buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Parsed::Http2
        } else {
            Parsed::Partial
        };
    }
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
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Parsed::Reject(StatusCode::BAD_REQUEST),
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let Ok(method) = Method::from_bytes(req.method.unwrap_or_default().as_bytes()) else {
        return Parsed::Reject(StatusCode::BAD_REQUEST);
    };
    let path = req.path.unwrap_or_default();
    if path.len() > MAX_URI_BYTES {
        return Parsed::Reject(StatusCode::URI_TOO_LONG);
    }
    // Offsets, so that the head's bytes can be shared by the header values
    // once the buffer no longer borrows into the parse.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let path_range = offset(path.as_bytes())..offset(path.as_bytes()) + path.len();
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    let mut length: Option<&[u8]> = None;
    let mut codings = Codings::default();
    let fields = &mut spare.fields;
    fields.clear();
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Reject(StatusCode::BAD_REQUEST);
        };
        match name {
            header::TRANSFER_ENCODING => codings.add(h.value),
            header::CONTENT_LENGTH => {
                if content_length(h.value).is_none() {
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
            }
            header::EXPECT if version == Version::HTTP_11 => {
                expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
            header::CONNECTION if lists_token(h.value, b"close") => close = true,
            header::CONNECTION
                if version == Version::HTTP_10 && lists_token(h.value, b"keep-alive") =>
            {
                close = false;
            }
            _ => {}
        }
        let start = offset(h.value);
        fields.push((name, start..start + h.value.len()));
    }
    let body = match codings.framing() {
        Coded::No => match length.and_then(content_length) {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        },
        // HTTP/1.0 knows no transfer codings (RFC 9112 section 6.1).
        _ if version == Version::HTTP_10 => return Parsed::Reject(StatusCode::BAD_REQUEST),
        // RFC 9112 section 6.1: a length beside chunked is a smuggling
        // attempt or a broken client; nginx refuses it too.
        _ if length.is_some() => return Parsed::Reject(StatusCode::BAD_REQUEST),
        Coded::Chunked => Framing::Chunked,
        Coded::Unsupported => return Parsed::Reject(StatusCode::NOT_IMPLEMENTED),
        Coded::Invalid => return Parsed::Reject(StatusCode::BAD_REQUEST),
    };
    let head = buf.split_to(len).freeze();
    let uri = match http::Uri::from_maybe_shared(head.slice(path_range)) {
        Ok(uri) => uri,
        Err(_) => {
            let mut whole = BytesMut::from(head);
            whole.unsplit(std::mem::take(buf));
            *buf = whole;
            return Parsed::Reject(StatusCode::BAD_REQUEST);
        }
    };
    // No room for what the proxy adds: that goes beside the map
    // (`http1::Added`), and a map as large as needed is what 10,000
    // requests in flight hold (room for 8 more was 9 MB of them).
    let mut headers = HeaderMap::with_capacity(fields.len());
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
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Parsed::Request(Head {
        request,
        body,
        close,
        expect_continue: expect_continue && body != Framing::Empty,
    })
}

/// Whether the bytes from `from` on (with the three before, which may
/// start the blank line) hold a blank line, where a head ends.
pub fn may_end_head(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(3)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
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

    fn head(text: &str) -> (Head, BytesMut) {
        match parse_text(text) {
            (Parsed::Request(head), rest) => (head, rest),
            (Parsed::Partial, _) => panic!("partial: {text:?}"),
            (Parsed::Http2, _) => panic!("HTTP/2: {text:?}"),
            (Parsed::Reject(status), _) => panic!("refused with {status}: {text:?}"),
        }
    }

    fn refused(text: &str) -> u16 {
        let (parsed, rest) = parse_text(text);
        assert_eq!(
            rest,
            text.as_bytes(),
            "a refusal leaves the buffer as it was"
        );
        match parsed {
            Parsed::Reject(status) => status.as_u16(),
            _ => panic!("not refused: {text:?}"),
        }
    }

    #[test]
    fn a_get_is_taken_off_the_buffer_and_a_pipelined_one_stays() {
        let (h, rest) = head(
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nCookie: x=1\r\ncookie: y=2\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        let req = h.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/a/b");
        assert_eq!(req.uri().query(), Some("c=d"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.com");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["x=1", "y=2"]);
        assert!(!h.close);
        assert_eq!(h.body, Framing::Empty);
        assert_eq!(rest, "GET /next HTTP/1.1\r\n".as_bytes());
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        let (parsed, rest) = parse_text("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn connection_close_is_seen_among_other_tokens() {
        assert!(
            head("GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n")
                .0
                .close
        );
        assert!(
            !head("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
                .0
                .close
        );
        assert!(!head("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").0.close);
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n");
        assert!(h.close);
        assert_eq!(h.request.version(), Version::HTTP_10);
        assert!(
            !head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .close
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0.body,
            Framing::Empty
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 00\r\n\r\n").0.body,
            Framing::Empty
        );
        let (h, rest) = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(h.body, Framing::Length(5));
        assert_eq!(
            rest,
            "hello".as_bytes(),
            "the body is left for the loop to read"
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .0
                .body,
            Framing::Chunked
        );
        let (h, _) = head("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        let (h, _) = head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue, "no body, nothing to wait for");
    }

    #[test]
    fn the_http2_preface_is_handed_over() {
        assert!(matches!(
            parse_text("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").0,
            Parsed::Http2
        ));
        assert!(matches!(
            parse_text("PRI * HTTP/2.0\r\n").0,
            Parsed::Partial
        ));
        assert!(matches!(
            parse_text("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nxyz").0,
            Parsed::Http2
        ));
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
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
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
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
            ("G@T / HTTP/1.1\r\n\r\n", 400),
            ("GET http://[::1 HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.2\r\n\r\n", 400),
        ] {
            assert_eq!(refused(text), status, "{text:?}");
        }
    }

    #[test]
    fn a_repeated_length_is_forwarded_once() {
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            h.request
                .headers()
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .count(),
            1
        );
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        let long = "a".repeat(LIMITS.max_bytes);
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nX: {long}\r\n\r\n")),
            431
        );
        // Incomplete, but already as large as a head may be.
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\nX: {long}")), 431);
        let few = HeadLimits {
            max_headers: 2,
            ..LIMITS
        };
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        assert!(matches!(
            parse(&mut buf, &few, &mut Spare::default()),
            Parsed::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
        let more = HeadLimits {
            max_headers: 150,
            ..LIMITS
        };
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        match parse(&mut buf, &more, &mut Spare::default()) {
            Parsed::Request(h) => assert_eq!(h.request.headers().len(), 101),
            _ => panic!("101 headers are within a limit of 150"),
        }
        let target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES));
        let big = HeadLimits {
            max_bytes: 128 * 1024,
            ..LIMITS
        };
        let mut buf = BytesMut::from(target.as_str());
        assert!(matches!(
            parse(&mut buf, &big, &mut Spare::default()),
            Parsed::Reject(StatusCode::URI_TOO_LONG)
        ));
    }

    /// xorshift: deterministic bytes for the property test below.
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
                Parsed::Request(h) => {
                    let taken = bytes.len() - buf.len();
                    assert_eq!(&bytes[taken..], &buf[..]);
                    assert!(bytes[..taken].ends_with(b"\n"));
                    let lengths = h.request.headers().get_all(header::CONTENT_LENGTH);
                    assert!(lengths.iter().count() <= 1);
                    if h.request.headers().contains_key(header::TRANSFER_ENCODING) {
                        assert_eq!(h.body, Framing::Chunked);
                    }
                }
                Parsed::Partial | Parsed::Http2 | Parsed::Reject(_) => {
                    assert_eq!(&buf[..], &bytes[..])
                }
            }
        }
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
