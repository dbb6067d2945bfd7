//! Header hygiene between client, proxy and upstream: hop-by-hop headers
//! (RFC 9110 section 7.6.1), `X-Forwarded-*`, and the internal-prefix filter.

use crate::config::InternalHeaders;
use crate::config::TrustedProxies;
pub use crate::http1::{Added, KEEP_ALIVE, holds, lists_token};
use crate::http1::{HOP_BY_HOP, is_connection_option};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, header};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (a comparison of standard names is a tag
    // compare) is far cheaper than eight hashed removals, and most requests
    // carry no hop-by-hop header at all. Many responses carry only
    // `Connection: keep-alive`: that removes one header and parses nothing.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !is_connection_option(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes every request header a client could use to forge what the
/// upstream is told: the internal prefix, the names routes fill from the
/// session (`session_filled`), and, unless `allow_underscores`, every name
/// with a `_`. WSGI, CGI, PHP and Rack turn `-` into `_`, so `X_User_Id`
/// reaches such an app as the `X-User-Id` the proxy sets; with underscores
/// allowed, a name that reads as a protected one that way still goes.
/// Allocates only when something goes.
pub fn remove_spoofable(
    headers: &mut HeaderMap,
    names: &InternalHeaders,
    session_filled: &[HeaderName],
    allow_underscores: bool,
) {
    let doomed = |name: &HeaderName| {
        if names.is_internal(name) || session_filled.contains(name) {
            return true;
        }
        if !name.as_str().contains('_') {
            return false;
        }
        if !allow_underscores {
            return true;
        }
        let dashed = name.as_str().replace('_', "-");
        dashed.starts_with(&names.prefix_lower)
            || session_filled.iter().any(|n| n.as_str() == dashed)
    };
    if !headers.keys().any(doomed) {
        return;
    }
    let gone: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in gone {
        headers.remove(name);
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` entry that is not one (the
/// leftmost when every one is), so that no untrusted hop's own claims count.
pub fn client_address(
    headers: &HeaderMap,
    peer: &HeaderValue,
    peer_ip: &std::net::IpAddr,
    trusted: &TrustedProxies,
) -> HeaderValue {
    if trusted.is_empty() || !trusted.contains(peer_ip) {
        return peer.clone();
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        client = Some(*hop);
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            _ => break,
        }
    }
    client
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or_else(|| peer.clone())
}

/// Sets `X-Forwarded-For` (appended), `X-Forwarded-Proto` and
/// `X-Forwarded-Host`, taking the client's copies out of `headers`; a
/// trusted proxy's `X-Forwarded-Proto` and `X-Forwarded-Host` are kept.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    added: &mut Added,
    client_ip: &HeaderValue,
    peer_trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let forwarded_for = if holds(headers, &X_FORWARDED_FOR) {
        // Several X-Forwarded-For headers are one list (RFC 9110 section 5.3).
        let mut hops: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        hops.push(client_ip.to_str().expect("an IP address is ASCII"));
        let joined = HeaderValue::try_from(hops.join(", ")).expect("ASCII");
        headers.remove(&X_FORWARDED_FOR);
        joined
    } else {
        client_ip.clone()
    };
    added.set(X_FORWARDED_FOR.clone(), forwarded_for);
    let mut kept = [false; 2];
    for (i, name) in [&X_FORWARDED_PROTO, &X_FORWARDED_HOST]
        .into_iter()
        .enumerate()
    {
        if holds(headers, name) {
            if peer_trusted {
                kept[i] = true;
            } else {
                headers.remove(name);
            }
        }
    }
    if !kept[0] {
        added.set(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if let (false, Some(h)) = (kept[1], host) {
        added.set(X_FORWARDED_HOST.clone(), h.clone());
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade`
/// plus `Upgrade: <protocol>`), or a 101 response agrees to.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    // Almost no request or response has an Upgrade header: one lookup.
    if !holds(headers, &header::UPGRADE) {
        return None;
    }
    let protocol = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}

pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Appends `Cookie` to `Vary` unless it is already there.
pub fn add_vary_cookie(headers: &mut HeaderMap) {
    let cookie = HeaderValue::from_static("Cookie");
    match headers.entry(header::VARY) {
        Entry::Occupied(mut e) => {
            let present = e
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("cookie") || t.trim() == "*");
            if !present {
                e.append(cookie);
            }
        }
        Entry::Vacant(e) => {
            e.insert(cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_finds_standard_and_custom_names_alike() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append(&X_REQUEST_ID, HeaderValue::from_static("1"));
        h.append(&X_REQUEST_ID, HeaderValue::from_static("2"));
        assert!(holds(&h, &header::HOST));
        assert!(holds(&h, &HeaderName::from_bytes(b"X-Request-ID").unwrap()));
        assert!(!holds(&h, &header::COOKIE));
        assert!(!holds(&h, &X_FORWARDED_HOST));
        assert!(!holds(&HeaderMap::new(), &header::HOST));
    }

    fn internal() -> InternalHeaders {
        let name = |n: &'static str| HeaderName::from_static(n);
        InternalHeaders {
            prefix_lower: "x-session".into(),
            update: name("x-session-update"),
            action: name("x-session-action"),
            token: name("x-session-token"),
            data: name("x-session-data"),
            sid: name("x-session-sid"),
            csrf: name("x-session-csrf"),
        }
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn spoofable_request_headers_are_removed() {
        let filled = [HeaderName::from_static("x-user-id")];
        let build = || {
            let mut h = HeaderMap::new();
            for n in [
                "x-session-data",
                "X-Session_Sid",
                "x_session_data",
                "x-user-id",
                "x_user_id",
                "my_header",
                "x-kept",
            ] {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            h
        };
        let mut h = build();
        remove_spoofable(&mut h, &internal(), &filled, false);
        assert_eq!(names(&h), ["x-kept"]);
        let mut h = build();
        remove_spoofable(&mut h, &internal(), &filled, true);
        let mut kept = names(&h);
        kept.sort_unstable();
        assert_eq!(kept, ["my_header", "x-kept"]);
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn keep_alive_response_loses_only_its_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 2);
    }

    #[test]
    fn connection_close_and_upgrade_tokens_name_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, upgrade, , TE"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    fn forwarded(h: HeaderMap, host: Option<&HeaderValue>) -> HeaderMap {
        let mut h = h;
        let mut added = Added::default();
        set_forwarded(
            &mut h,
            &mut added,
            &HeaderValue::from_static("127.0.0.1"),
            false,
            "http",
            host,
        );
        // What the client sent under these names is gone from its map.
        assert!(!h.keys().any(|k| k.as_str().starts_with("x-forwarded-")));
        added.append_to(&mut h);
        h
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("forged"));
        let h = forwarded(h, Some(&HeaderValue::from_static("example.com:8080")));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h.get_all(&X_FORWARDED_PROTO).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_HOST], "example.com:8080");
    }

    #[test]
    fn forwarded_host_is_dropped_without_a_host() {
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_HOST,
            HeaderValue::from_static("forged.example"),
        );
        let h = forwarded(h, None);
        assert!(!h.contains_key(&X_FORWARDED_HOST));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
    }

    #[test]
    fn added_headers_replace_as_insert_does() {
        let mut added = Added::default();
        added.set(X_REQUEST_ID.clone(), HeaderValue::from_static("a"));
        added.set(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        added.set(X_REQUEST_ID.clone(), HeaderValue::from_static("b"));
        let got: Vec<_> = added.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("x-request-id", "b".parse().unwrap()),
                ("x-forwarded-proto", "http".parse().unwrap())
            ]
        );
    }

    #[test]
    fn vary_cookie_is_added_once() {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_cookie(&mut h);
        add_vary_cookie(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, vec!["Accept-Encoding", "Cookie"]);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let trusted = TrustedProxies(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        let peer = HeaderValue::from_static("127.0.0.1");
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let with = |xff: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in xff {
                h.append(&X_FORWARDED_FOR, HeaderValue::from_static(v));
            }
            client_address(&h, &peer, &local, &trusted)
        };
        // A client's own claim to the left of the real client is ignored.
        assert_eq!(with(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]), "1.2.3.4");
        assert_eq!(with(&["6.6.6.6", "1.2.3.4", "10.1.1.1"]), "1.2.3.4");
        assert_eq!(with(&["2001:db8::1, fd00::2"]), "2001:db8::1");
        assert_eq!(
            with(&["10.0.0.1, 10.0.0.2"]),
            "10.0.0.1",
            "all trusted: the leftmost"
        );
        assert_eq!(with(&[]), "127.0.0.1", "no header: the peer");
        // From an untrusted peer, the header says nothing.
        let outside: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        let p = HeaderValue::from_static("192.0.2.9");
        assert_eq!(client_address(&h, &p, &outside, &trusted), "192.0.2.9");
    }
}
