//! Host and path -> route. Routes are tried in file order; the first match wins.

use crate::config::RouteConfig;

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
    fn strip_keeps_a_leading_slash() {
        assert_eq!(strip("/api/", "/api/users"), "/users");
        assert_eq!(strip("/api", "/api/users"), "/users");
        assert_eq!(strip("/api/", "/api/"), "/");
        assert_eq!(strip("/", "/x"), "/x");
    }
}
