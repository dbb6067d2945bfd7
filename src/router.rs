//! Host and path -> route. Routes are tried in file order; the first match wins.

use crate::config::RouteConfig;
use std::borrow::Cow;

/// The path routes are matched against, as nginx matches locations: percent
/// escapes decoded, `.` and `..` segments resolved, repeated slashes merged,
/// so `/%61pi/x`, `//api/x` and `/x/../api/x` all meet the `/api/` route and
/// its `require`. `None` for a path that climbs above the root.
pub fn normalize(raw: &str) -> Option<Cow<'_, str>> {
    if !(raw.contains('%') || raw.contains("//") || raw.contains("/.")) {
        return Some(Cow::Borrowed(raw));
    }
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop()?;
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
    Some(Cow::Owned(path))
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

pub fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_ESCAPES).to_string()
}

/// The host of a `Host` header or authority, without its port.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

pub fn matches(route: &RouteConfig, host: Option<&str>, path: &str) -> bool {
    if !path.starts_with(&route.path_prefix) {
        return false;
    }
    match (&route.host, host) {
        (None, _) => true,
        (Some(want), Some(have)) => host_without_port(have).eq_ignore_ascii_case(want),
        (Some(_), None) => false,
    }
}

/// The path the upstream sees when the route strips its prefix; always starts with `/`.
pub fn strip(prefix: &str, path: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored_in_hosts() {
        assert_eq!(host_without_port("Example.com:8080"), "Example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("[::1]"), "::1");
    }

    #[test]
    fn paths_are_normalized_like_nginx() {
        assert_eq!(normalize("/api/users").unwrap(), "/api/users");
        assert_eq!(normalize("/%61pi/users").unwrap(), "/api/users");
        assert_eq!(normalize("//api//users").unwrap(), "/api/users");
        assert_eq!(normalize("/x/../api/./users/").unwrap(), "/api/users/");
        assert_eq!(normalize("/a/%2e%2e/api").unwrap(), "/api");
        assert_eq!(normalize("/a/..").unwrap(), "/");
        assert!(normalize("/../etc/passwd").is_none());
        assert!(normalize("/a/%2e%2e/%2e%2e/x").is_none());
        assert_eq!(encode_path("/a b/%/?"), "/a%20b/%25/%3F");
    }

    #[test]
    fn strip_keeps_a_leading_slash() {
        assert_eq!(strip("/api/", "/api/users"), "/users");
        assert_eq!(strip("/api", "/api/users"), "/users");
        assert_eq!(strip("/api/", "/api/"), "/");
        assert_eq!(strip("/", "/x"), "/x");
    }
}
