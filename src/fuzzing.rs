//! The properties the fuzz targets in `fuzz/` check, one function per
//! parser, each taking the fuzzer's bytes and panicking when a property
//! fails. They live in the library so that the inputs a fuzzer ever found
//! anything with run again as tests (`tests/fuzz_regressions.rs`). Not a
//! stable API.

use crate::config::{PathPolicy, Secret};
use crate::http1::request::{self as server_h1, HeadLimits, Parsed, Spare};
use crate::http1::{self as upstream_h1, ChunkedDecoder, Decoded, Framing};
use crate::record::SessionId;
use crate::router::{self, Router};
use crate::session::cookie::{CookieCodec, split_request_cookies};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, header};
use std::time::Duration;

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

/// Request heads, pipelined: a request taken has exactly the bytes of one
/// whole head taken off the buffer, one framing for its body by every
/// reading, and that framing agrees with its headers; every other outcome
/// leaves the buffer untouched.
pub fn request_head(data: &[u8]) {
    let limits = HeadLimits {
        read_timeout: Duration::from_secs(30),
        max_bytes: 64 + usize::from(byte(data, 0)) * 32,
        max_headers: 1 + usize::from(byte(data, 1)) % 120,
    };
    let mut buf = BytesMut::from(data.get(2..).unwrap_or_default());
    let mut spare = Spare::default();
    loop {
        let before = buf.clone();
        match server_h1::parse(&mut buf, &limits, &mut spare) {
            Parsed::Request(head) => {
                let request = head.request;
                let taken = before.len() - buf.len();
                assert!(taken > 0 && taken <= limits.max_bytes);
                assert_eq!(&before[taken..], &buf[..]);
                assert!(before[..taken].ends_with(b"\n"));
                let h = request.headers();
                let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
                assert!(lengths.len() <= 1);
                let coded = h.contains_key(header::TRANSFER_ENCODING);
                match head.body {
                    Framing::Empty => assert!(!coded),
                    Framing::Length(n) => {
                        assert!(!coded && n > 0);
                        assert_eq!(lengths[0].to_str().unwrap().parse::<u64>().unwrap(), n);
                    }
                    Framing::Chunked => {
                        assert!(coded && lengths.is_empty());
                        assert_eq!(request.version(), http::Version::HTTP_11);
                    }
                    Framing::UntilClose => panic!("a request body never runs to the close"),
                }
                assert!(h.len() <= limits.max_headers);
                for host in h.get_all(header::HOST) {
                    if router::host::check(host.as_bytes()).is_ok() {
                        let _ = router::host::name(host.to_str().expect("a checked host is ASCII"));
                    }
                }
                if request.uri().path().starts_with('/') {
                    path(request.uri().path(), byte(data, 0));
                }
                // The body, if any, is the loop's to read: stop here.
                if head.body != Framing::Empty {
                    return;
                }
            }
            Parsed::Partial | Parsed::Http2 | Parsed::Reject(_) => {
                assert_eq!(before, buf, "a head not taken is left whole");
                return;
            }
        }
    }
}

/// Upstream response heads: a client never gets a length that is invalid,
/// repeated, a list, or beside `Transfer-Encoding`, and the framing agrees
/// with the length passed on.
pub fn response_head(data: &[u8]) {
    let method = if byte(data, 0) & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut buf = BytesMut::from(data.get(1..).unwrap_or_default());
    let before = buf.clone();
    match upstream_h1::parse_response_head(&mut buf, &method) {
        Ok(Some(head)) => {
            let taken = before.len() - buf.len();
            assert!(before[..taken].ends_with(b"\n"));
            let lengths: Vec<&HeaderValue> = head
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .collect();
            assert!(lengths.len() <= 1, "{lengths:?}");
            if let Some(l) = lengths.first() {
                assert!(!l.is_empty() && l.as_bytes().iter().all(u8::is_ascii_digit));
                assert!(!head.headers.contains_key(header::TRANSFER_ENCODING));
                if let Framing::Length(n) = head.framing {
                    assert_eq!(l.to_str().unwrap().parse::<u64>().unwrap(), n);
                }
            }
            if method == Method::HEAD {
                assert_eq!(head.framing, Framing::Empty);
            }
            if head.framing == Framing::UntilClose {
                assert!(!head.keep_alive);
            }
        }
        Ok(None) => assert_eq!(before, buf),
        Err(_) => {}
    }
}

/// Everything a chunked decoder does with a wire, whole or fed in pieces.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body, then the bytes after it.
    Ended(Vec<u8>, Vec<u8>),
    /// The body so far, waiting for more.
    Waiting(Vec<u8>),
    Failed,
}

fn decode(wire: &[u8], step: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty());
                body.extend_from_slice(&d);
            }
            Ok(Decoded::End) => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&wire[fed..]);
                return Outcome::Ended(body, rest);
            }
            Ok(Decoded::NeedMore) if fed == wire.len() => return Outcome::Waiting(body),
            Ok(Decoded::NeedMore) => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
            Err(_) => return Outcome::Failed,
        }
    }
}

/// The upstream chunked decoder: the same body, the same end and the same
/// verdict however the wire is split across reads, and never more body
/// than wire.
pub fn chunked(data: &[u8]) {
    let step = 1 + usize::from(byte(data, 0)) % 16;
    let wire = data.get(1..).unwrap_or_default();
    let whole = decode(wire, wire.len().max(1));
    let pieces = decode(wire, step);
    assert_eq!(whole, pieces, "step {step}");
    if let Outcome::Ended(body, _) | Outcome::Waiting(body) = &whole {
        assert!(body.len() <= wire.len());
    }
}

fn codec(secret: &str) -> CookieCodec {
    let cfg = crate::config::CookieConfig {
        name: "sessionid".into(),
        domain: None,
        path: "/".into(),
        secure: true,
        http_only: true,
        same_site: crate::config::SameSite::Lax,
    };
    CookieCodec::new(cfg, &[Secret::new(secret.as_bytes())])
}

/// The session cookie: no value the fuzzer makes verifies (a forgery would
/// need the secret), a value the codec made always does and only under its
/// own secret, and the session cookie never stays in what goes upstream.
pub fn cookie(data: &[u8]) {
    let ours = codec("fuzz-secret-0123456789abcdef-0123456789");
    let theirs = codec("another-secret-0123456789abcdef-01234567");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((id, mac)) = CookieCodec::parse(text) {
            assert!(!ours.verify(&id, &mac), "a forged cookie verified");
            // Only the canonical text of an id parses: a save renews a
            // verified cookie with the value as sent (`encode_signed`).
            let (id_text, _) = text.split_once('.').expect("a parsed value has a dot");
            assert_eq!(id_text, id.encode(), "a non-canonical id parsed");
            assert_eq!(CookieCodec::encode_signed(&mac), text);
        }
        assert!(ours.decode(text).is_none());
    }
    let mut id = [0u8; 16];
    for (i, b) in data.iter().take(16).enumerate() {
        id[i] = *b;
    }
    let id = SessionId::from_bytes(id);
    let value = ours.encode(&id);
    assert_eq!(ours.decode(&value), Some(id));
    assert_eq!(theirs.decode(&value), None);

    let mut headers = HeaderMap::new();
    for part in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(header::COOKIE, v);
        }
    }
    let cookies = split_request_cookies(&headers, ours.name());
    if let Some(Some(forwarded)) = &cookies.forwarded {
        for pair in forwarded.as_bytes().split(|b| *b == b';') {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            assert_ne!(name.trim_ascii(), b"sessionid");
        }
    }
    if cookies.forwarded.is_none() {
        assert!(cookies.session_values.is_empty() && cookies.chunks.is_empty());
    }
}

/// One path under the policy the byte picks, with its properties.
fn path(raw: &str, policy_bits: u8) {
    let policy = PathPolicy {
        strip_semicolon: policy_bits & 1 != 0,
        backslash_is_slash: policy_bits & 2 != 0,
        keep_encoded_slash: policy_bits & 4 != 0,
        case_insensitive: policy_bits & 8 != 0,
    };
    let Ok(read) = router::path::read(raw, &policy) else {
        return;
    };
    assert!(read.starts_with('/'), "{read:?}");
    assert!(!read.contains("//"), "{read:?}");
    for seg in read.split('/') {
        assert!(seg != "." && seg != "..", "{read:?}");
    }
    assert!(!read.chars().any(char::is_control), "{read:?}");
    if !policy.backslash_is_slash {
        assert!(!read.contains('\\'), "{read:?}");
    }
    if !policy.strip_semicolon {
        assert!(!read.contains(';'), "{read:?}");
    }
    if !policy.keep_encoded_slash {
        // A read path is read again as it stands: nothing left to resolve.
        let again = read.replace('%', "%25").replace(';', "%3B");
        assert_eq!(router::path::read(&again, &policy).as_deref(), Ok(&*read));
    }
    let router = Router::new(&fuzz_routes(), policy);
    if let Some(i) = router.find(Some("admin.example.com"), &read) {
        let stripped = router.strip(i, &read);
        assert!(stripped.starts_with('/'));
        assert!(
            http::Uri::try_from(stripped.as_str()).is_ok(),
            "{stripped:?}"
        );
    }
}

fn fuzz_routes() -> Vec<crate::config::RouteConfig> {
    thread_local! {
        static ROUTES: Vec<crate::config::RouteConfig> = crate::config::from_yaml(
            "secrets: [\"fuzz-secret-0123456789abcdef-0123456789\"]\n\
             upstreams: {app: {url: \"http://127.0.0.1:1\"}}\n\
             routes:\n\
             - {match: {path_prefix: /admin/}, upstream: app, strip_prefix: true, forward: {mode: none}}\n\
             - {match: {host: admin.example.com, path_prefix: /a}, upstream: app, strip_prefix: true, forward: {mode: none}}\n\
             - {match: {path_prefix: /}, upstream: app, forward: {mode: none}}\n",
        )
        .expect("the fuzz routes are valid")
        .routes;
    }
    ROUTES.with(Clone::clone)
}

/// The path reader and the router under every policy, and the host checker.
pub fn path_and_route(data: &[u8]) {
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    if let Ok(raw) = std::str::from_utf8(rest) {
        path(raw, bits);
        // Whatever the http crate accepts as a target (what hyper and h2 hand over).
        if let Ok(uri) = http::Uri::try_from(raw) {
            path(uri.path(), bits);
        }
    }
    if router::host::check(rest).is_ok() {
        let text = std::str::from_utf8(rest).expect("a checked host is ASCII");
        let name = router::host::name(text);
        assert!(!name.is_empty() || text.starts_with('['));
        assert!(!name.contains(['/', '@', ' ', ',', '\\']));
    }
}

/// The config loader: any text gives a config or a list of problems, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        match crate::config::from_yaml(text) {
            Ok(config) => assert!(!config.routes.is_empty() && !config.secrets.is_empty()),
            Err(e) => assert!(!e.issues.is_empty()),
        }
    }
}

/// The merge patch as every store but Redis applies it (and as the Redis
/// store applies it when the session is unchanged since it was read): parsed
/// updates merged into the data's text, or `None` when any part is not a
/// JSON object. The fuzz target compares it with the `json-patch` crate and
/// with the Redis store's Lua merge.
pub fn merge_patch(
    data: &str,
    patches: &[&str],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let data = crate::record::SessionData::from_text(data.to_string()).ok()?;
    let patches = patches
        .iter()
        .map(|p| crate::record::parse_update(p.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(data.merged(&patches).to_map())
}

/// PROXY protocol headers (v1 and v2), read from a stream: reading never
/// panics and never takes a byte past the header's end, and the bytes it
/// took, read again as a whole header, name the same source.
pub fn proxy_header(data: &[u8]) {
    use crate::server::proxy_protocol::{read_header, source};
    use futures_util::FutureExt;
    let mut stream = std::io::Cursor::new(data);
    let read = read_header(&mut stream)
        .now_or_never()
        .expect("a byte slice never makes a read wait");
    let taken = stream.position() as usize;
    assert!(taken <= data.len());
    if let Ok(found) = read {
        let header = &data[..taken];
        assert!(
            header.starts_with(b"PROXY") && header.ends_with(b"\r\n")
                || header.starts_with(b"\r\n\r\n\0"),
            "{header:?}"
        );
        assert_eq!(source(header).ok(), Some(found), "{header:?}");
    }
}

/// Redis replies, as the direct connection reads them off its socket: a
/// reply parsed is the one redis-rs's own parser reads from exactly the
/// bytes taken, and a buffer cut short of a reply is incomplete, never an
/// error or another reply.
pub fn resp_reply(data: &[u8]) {
    use crate::store::redis::resp::parse;
    let Ok(Some((value, taken))) = parse(data) else {
        return;
    };
    assert!(taken > 0 && taken <= data.len());
    assert_eq!(
        redis::parse_redis_value(&data[..taken]).ok(),
        Some(value),
        "{:?}",
        String::from_utf8_lossy(&data[..taken])
    );
    // redis-rs reads past what follows a reply: one byte less must be too
    // little for it, or the bytes taken held more than the reply.
    assert!(redis::parse_redis_value(&data[..taken - 1]).is_err());
    for cut in 0..taken {
        assert_eq!(parse(&data[..cut]), Ok(None), "cut at {cut}");
    }
}
