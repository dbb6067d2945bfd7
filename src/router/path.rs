//! The path as the router reads it (SPEC section 8.1).
//!
//! Backends disagree about paths: Tomcat and Spring drop `;params` from
//! each segment, IIS and Windows backends read `\` as `/`, some servers
//! decode `%2F`. A route's `require` is only as good as the agreement
//! between the router's reading and the backend's, so under the default
//! policy every form that a backend could read differently is refused, and
//! each relaxation routes the way the backend that needs it reads the path.
//! Then percent escapes are decoded, `.` and `..` segments resolved and
//! repeated slashes merged, as nginx matches locations.

use crate::config::PathPolicy;
use std::borrow::Cow;

/// Why a path was refused; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path holds a ';' (read as a path parameter by some backends)")]
    Semicolon,
    #[error("the path holds a backslash, raw or as %5C")]
    Backslash,
    #[error("the path holds an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path holds a control character, raw or encoded")]
    Control,
    #[error("the path holds an invalid percent escape")]
    BadEscape,
    #[error("the path's decoded bytes are not UTF-8")]
    NotUtf8,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the request target is not a path")]
    NotAPath,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `raw` needs more than a look: anything to decode, refuse,
/// strip or resolve. Most paths need nothing and are routed as they are.
fn is_plain(raw: &[u8]) -> bool {
    let mut previous = 0u8;
    for &b in raw {
        match b {
            b'%' | b';' | b'\\' => return false,
            0..=0x1f | 0x7f => return false,
            b'/' | b'.' if previous == b'/' => return false,
            // Not ASCII: checked as UTF-8 for control characters (C1).
            0x80.. => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

/// The path routes are matched against: refused as `policy` says,
/// decoded, dot segments resolved, repeated slashes merged. `raw` is the
/// request target's path, without its query (which is never judged).
pub fn read<'a>(raw: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAPath);
    }
    if is_plain(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b';' if policy.strip_semicolon => {
                // Tomcat's reading: the parameter runs to the next `/`.
                while i < bytes.len() && bytes[i] != b'/' {
                    i += 1;
                }
            }
            b';' => return Err(PathError::Semicolon),
            b'\\' if policy.backslash_is_slash => decoded.push(b'/'),
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i), bytes.get(i + 1)) else {
                    return Err(PathError::BadEscape);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                match h << 4 | l {
                    // Kept encoded, and `%` with it, so that a `%` in the
                    // read path always starts an escape.
                    b'/' if policy.keep_encoded_slash => decoded.extend_from_slice(b"%2F"),
                    b'%' if policy.keep_encoded_slash => decoded.extend_from_slice(b"%25"),
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' if policy.backslash_is_slash => decoded.push(b'/'),
                    b'\\' => return Err(PathError::Backslash),
                    // A decoding backend that strips parameters afterwards
                    // would read `%3B` as one; Tomcat's reading keeps it.
                    b';' if !policy.strip_semicolon => return Err(PathError::Semicolon),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    c => decoded.push(c),
                }
            }
            c => decoded.push(c),
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    // C1 controls (U+0080 to U+009F), raw or encoded, are control characters too.
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    resolve(&decoded).map(Cow::Owned)
}

/// Resolves `.` and `..` segments and merges repeated slashes; a trailing
/// slash (or a trailing `.` or `..` segment) stays a trailing slash.
fn resolve(decoded: &str) -> Result<String, PathError> {
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            s => segments.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

/// Characters a decoded path must escape again before it goes into a URI.
const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

const KEPT_ESCAPES: &percent_encoding::AsciiSet = &PATH_ESCAPES.remove(b'%');

/// A read path back as a URI path. With `encoded_slash: keep` the read
/// path's `%2F` and `%25` were never decoded, so its `%` stays as it is.
pub fn encode(path: &str, policy: &PathPolicy) -> String {
    let escapes = if policy.keep_encoded_slash {
        KEPT_ESCAPES
    } else {
        PATH_ESCAPES
    };
    percent_encoding::utf8_percent_encode(path, escapes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: PathPolicy = PathPolicy {
        strip_semicolon: false,
        backslash_is_slash: false,
        keep_encoded_slash: false,
        case_insensitive: false,
    };

    fn read_strict(raw: &str) -> Result<String, PathError> {
        read(raw, &STRICT).map(Cow::into_owned)
    }

    #[test]
    fn paths_are_normalized_like_nginx() {
        assert_eq!(read_strict("/api/users").unwrap(), "/api/users");
        assert!(matches!(read("/api/users", &STRICT), Ok(Cow::Borrowed(_))));
        assert_eq!(read_strict("/%61pi/users").unwrap(), "/api/users");
        assert_eq!(read_strict("//api//users").unwrap(), "/api/users");
        assert_eq!(read_strict("/x/../api/./users/").unwrap(), "/api/users/");
        assert_eq!(read_strict("/a/%2e%2e/api").unwrap(), "/api");
        assert_eq!(read_strict("/a/..").unwrap(), "/");
        assert_eq!(read_strict("/caf%C3%A9").unwrap(), "/café");
        assert_eq!(read_strict("/café").unwrap(), "/café");
        assert_eq!(read_strict("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(read_strict("/a/%2e%2e/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(encode("/a b/%/?", &STRICT), "/a%20b/%25/%3F");
    }

    #[test]
    fn every_confusable_form_is_refused_by_default() {
        for (raw, err) in [
            ("/admin;jsessionid=1/x", PathError::Semicolon),
            ("/public/..;/admin/x", PathError::Semicolon),
            ("/admin%3Bx/y", PathError::Semicolon),
            ("/admin\\x", PathError::Backslash),
            ("/admin%5cx", PathError::Backslash),
            ("/admin%5Cx", PathError::Backslash),
            ("/admin%2Fx", PathError::EncodedSlash),
            ("/admin%2fx", PathError::EncodedSlash),
            ("/a%00", PathError::Control),
            ("/a%1f", PathError::Control),
            ("/a%7F", PathError::Control),
            ("/a\x01", PathError::Control),
            ("/a/b\u{9b}", PathError::Control),
            ("/a%C2%85", PathError::Control),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a%%41", PathError::BadEscape),
            ("/%C0%AF", PathError::NotUtf8),
            ("/%c0%ae%c0%ae/x", PathError::NotUtf8),
            ("/a%FF", PathError::NotUtf8),
            ("/a%e2%82", PathError::NotUtf8),
            ("/%ED%A0%80", PathError::NotUtf8),
            ("*", PathError::NotAPath),
            ("", PathError::NotAPath),
        ] {
            assert_eq!(read_strict(raw), Err(err), "{raw:?}");
        }
    }

    #[test]
    fn semicolon_strip_reads_as_tomcat() {
        let p = PathPolicy {
            strip_semicolon: true,
            ..STRICT
        };
        assert_eq!(read("/admin;jsessionid=1/x", &p).unwrap(), "/admin/x");
        assert_eq!(read("/public/..;/admin/x", &p).unwrap(), "/admin/x");
        assert_eq!(read("/a;b;c", &p).unwrap(), "/a");
        assert_eq!(read("/a%3Bb", &p).unwrap(), "/a;b");
        assert_eq!(read("/..;/x", &p), Err(PathError::AboveRoot));
        assert_eq!(read("/a\\b", &p), Err(PathError::Backslash));
    }

    #[test]
    fn backslash_slash_reads_as_iis() {
        let p = PathPolicy {
            backslash_is_slash: true,
            ..STRICT
        };
        assert_eq!(read("/admin\\x", &p).unwrap(), "/admin/x");
        assert_eq!(read("/public\\..\\admin/x", &p).unwrap(), "/admin/x");
        assert_eq!(read("/public%5C..%5cadmin/x", &p).unwrap(), "/admin/x");
        assert_eq!(read("/a;b", &p), Err(PathError::Semicolon));
    }

    #[test]
    fn a_kept_encoded_slash_stays_inside_its_segment() {
        let p = PathPolicy {
            keep_encoded_slash: true,
            ..STRICT
        };
        assert_eq!(read("/admin%2Fx", &p).unwrap(), "/admin%2Fx");
        assert_eq!(
            read("/a/b%2f..%2f..%2fc", &p).unwrap(),
            "/a/b%2F..%2F..%2Fc"
        );
        assert_eq!(encode("/a/b%2Fc d", &p), "/a/b%2Fc%20d");
        assert_eq!(read("/a%25", &p).unwrap(), "/a%25");
        assert_eq!(read("/a%252F", &p).unwrap(), "/a%252F");
        assert_eq!(
            encode(&read("/a%252F/b%2Fc", &p).unwrap(), &p),
            "/a%252F/b%2Fc"
        );
    }
}
