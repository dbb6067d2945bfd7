//! The request's host: one, valid, and read the same way by the router and
//! the upstream (RFC 9112 section 3.2, RFC 3986 section 3.2.2).

/// Why a Host (or an absolute target's authority) was refused; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("an HTTP/1.1 request without a Host header")]
    Missing,
    #[error("more than one Host header")]
    Repeated,
    #[error("an invalid Host")]
    Invalid,
    #[error("Host disagrees with the request's authority")]
    Disagrees,
}

/// Longest host accepted (a DNS name is at most 253 bytes; a port and
/// brackets fit in the rest).
const MAX_HOST_BYTES: usize = 300;

/// Checks `uri-host [ ":" port ]`: a DNS name or IPv4 address (letters,
/// digits, `-`, `.`, `_`, `~`; no empty label), or a bracketed IPv6
/// literal, and an optional port of 1 to 5 digits. Stricter than RFC
/// 3986's reg-name, as nginx is: no userinfo, percent escapes, sub-delims
/// or paths, which no real host holds and a backend might read otherwise.
pub fn check(value: &[u8]) -> Result<(), HostError> {
    if value.is_empty() || value.len() > MAX_HOST_BYTES {
        return Err(HostError::Invalid);
    }
    let rest = if value[0] == b'[' {
        let end = value
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Invalid)?;
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal.contains(&b':')
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return Err(HostError::Invalid);
        }
        &value[end + 1..]
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let name = &value[..end];
        let mut previous = b'.';
        for &b in name {
            match b {
                b'.' if previous == b'.' => return Err(HostError::Invalid),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
                _ => return Err(HostError::Invalid),
            }
            previous = b;
        }
        if name.is_empty() {
            return Err(HostError::Invalid);
        }
        &value[end..]
    };
    match rest {
        [] => Ok(()),
        [b':', port @ ..]
            if (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit) =>
        {
            Ok(())
        }
        _ => Err(HostError::Invalid),
    }
}

/// The host of a checked `Host` value as routes match it: without its
/// port, brackets or a trailing dot (`example.com.` is `example.com`).
pub fn name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let name = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_hosts_are_accepted() {
        for ok in [
            "example.com",
            "Example.COM:8080",
            "a-b.c_d.example.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "[2001:db8::1]",
            "[::ffff:127.0.0.1]:80",
            "localhost",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn hosts_a_backend_could_read_otherwise_are_refused() {
        for bad in [
            "",
            "a b",
            "u@h",
            "h:80:80",
            "x/../admin",
            "a, b",
            "a,b",
            "h:",
            "h:port",
            ":80",
            "[::1",
            "[]",
            "[v1.x]",
            "[::1]x",
            "h\\admin",
            "a..b",
            ".a",
            "h:123456",
            "%61",
            "a;b",
            "a\tb",
            "é.example",
        ] {
            assert_eq!(check(bad.as_bytes()), Err(HostError::Invalid), "{bad:?}");
        }
        assert_eq!(check(&[b'a'; 400]), Err(HostError::Invalid));
    }

    #[test]
    fn routes_see_the_name_without_port_or_trailing_dot() {
        assert_eq!(name("Example.com:8080"), "Example.com");
        assert_eq!(name("example.com."), "example.com");
        assert_eq!(name("example.com.:80"), "example.com");
        assert_eq!(name("[::1]:8080"), "::1");
        assert_eq!(name("[::1]"), "::1");
    }
}
