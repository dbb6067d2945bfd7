//! The request path an attacker sees, as exact bytes: a raw-socket client in
//! front of the proxy and a raw-socket upstream behind it that records what
//! arrives. Paths a backend reads differently, Host, header and trailer
//! spoofing, framing normalisation both ways, and the smuggling classics,
//! over HTTP/1.1 and (where they apply) HTTP/2.

mod common;

use bytes::Bytes;
use common::raw::*;
use common::{SECRET, gateway};
use std::net::SocketAddr;
use std::time::Duration;

/// `/admin/` and host `admin.example.com` need `user_id`; everything else is open.
fn yaml(extra: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {{kind: memory}}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 2s}}
{extra}
routes:
  - {{match: {{path_prefix: /admin/}}, upstream: app, forward: {{mode: json}}, require: [user_id]}}
  - {{match: {{host: admin.example.com}}, upstream: app, forward: {{mode: json}}, require: [user_id]}}
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json, headers: {{X-User-Id: user_id}}}}}}
"#
    )
}

/// `/login` logs in as user 7; the framing paths answer with the framing
/// they are named for; everything else answers `ok`.
fn answers(method: &str, target: &str) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or(target);
    let r: &[u8] = match path {
        "/login" => {
            b"HTTP/1.1 200 OK\r\nX-Session-Update: {\"user_id\":7}\r\nContent-Length: 2\r\n\r\nin"
        }
        "/cl-te" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        }
        "/te-cl" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        }
        "/cl-word" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "/cl-word" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
        "/cl-list" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
        "/cl-list" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        "/cl-twice" if method == "HEAD" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"
        }
        "/cl-twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        "/switch" => {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        }
        _ if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    };
    r.to_vec()
}

struct Setup {
    up: Recorder,
    addr: SocketAddr,
    _gw: common::Gateway,
}

async fn setup(extra: &str) -> Setup {
    let up = recording_upstream(answers).await;
    let gw = gateway(&yaml(extra), up.addr).await;
    Setup {
        addr: gw.addr,
        up,
        _gw: gw,
    }
}

impl Setup {
    async fn send(&self, bytes: &[u8]) -> RawResponse {
        exchange(self.addr, bytes).await
    }

    async fn get(&self, target: &str, extra: &str) -> RawResponse {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: app.example.com\r\n{extra}Connection: close\r\n\r\n"
        );
        self.send(req.as_bytes()).await
    }

    /// A session cookie holding `user_id: 7`.
    async fn login(&self) -> String {
        let r = self.get("/login", "").await;
        assert_eq!(r.status, 200);
        r.cookie("sessionid").expect("a session cookie")
    }
}

/// Asserts that `target` gets 400 and reaches no upstream, with a session too.
async fn refused(s: &Setup, target: &str, cookie: &str) {
    s.up.clear();
    let r = s.get(target, &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(r.status, 400, "{target}: {}", r.head);
    assert_eq!(s.up.count(), 0, "{target} reached the upstream");
}

/// The paths that Tomcat, Spring, IIS or a decoding backend read as `/admin/x`
/// while a plain reading routes them to `/`.
const CONFUSABLE_PATHS: &[&str] = &[
    "/admin;jsessionid=1/x",
    "/public/..;/admin/x",
    "/admin;/x",
    "/admin\\x",
    "/public\\..\\admin/x",
    "/admin%5cx",
    "/admin%5Cx",
    "/admin%2Fx",
    "/admin%2fx",
    "/public%2f..%2fadmin/x",
    "/admin/x%00",
    "/admin/%01x",
    "/admin/x%7F",
    "/admin/x%0d%0a",
    "/admin/x%C2%9B",
    "/a%zz",
    "/a%4",
    "/a%",
    "/%C0%AE%C0%AE/admin/x",
    "/%c0%af",
    "/a%FF",
    "/a%e2%82",
];

#[tokio::test]
async fn paths_a_backend_reads_differently_are_400_by_default() {
    let s = setup("").await;
    let cookie = s.login().await;
    for target in CONFUSABLE_PATHS {
        refused(&s, target, &cookie).await;
    }
    // Without a session too: nothing reaches the open route either.
    for target in CONFUSABLE_PATHS {
        s.up.clear();
        let r = s.get(target, "").await;
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(s.up.count(), 0, "{target}");
    }
}

#[tokio::test]
async fn clean_paths_and_any_query_pass_unchanged() {
    let s = setup("").await;
    for target in [
        "/public/x",
        "/public/a%20b",
        "/caf%C3%A9",
        "/public?a=;b=%2F&c=%zz&d=%5C&e=%00",
        "/public/x?next=/admin;x",
    ] {
        s.up.clear();
        let r = s.get(target, "").await;
        assert_eq!(r.status, 200, "{target}: {}", r.head);
        assert_eq!(s.up.last().target, target, "forwarded as sent");
    }
    // Dot segments are resolved for routing, so they cannot climb past a
    // route's `require`: `/public/../admin/x` is `/admin/x`.
    for target in ["/public/../admin/x", "/public/%2e%2e/admin/x", "//admin/x"] {
        s.up.clear();
        let r = s.get(target, "").await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(s.up.count(), 0);
    }
}

#[tokio::test]
async fn semicolon_strip_routes_as_tomcat_reads_and_forwards_as_sent() {
    let s = setup("paths: {semicolon: strip}").await;
    let cookie = s.login().await;
    for target in ["/admin;jsessionid=1/x", "/public/..;/admin/x", "/admin;/x"] {
        s.up.clear();
        let r = s.get(target, "").await;
        assert_eq!(r.status, 401, "{target} without a session");
        assert_eq!(s.up.count(), 0);
        let r = s.get(target, &format!("Cookie: {cookie}\r\n")).await;
        assert_eq!(r.status, 200, "{target} with a session");
        let got = s.up.last();
        assert_eq!(got.target, target);
        assert_eq!(got.one("x-session-data"), Some(r#"{"user_id":7}"#));
    }
    // The other confusions are still refused.
    refused(&s, "/admin\\x", &cookie).await;
    refused(&s, "/admin%2Fx", &cookie).await;
}

#[tokio::test]
async fn backslash_slash_routes_as_iis_reads() {
    let s = setup("paths: {backslash: slash}").await;
    for target in [
        "/admin\\x",
        "/public\\..\\admin/x",
        "/admin%5cx",
        "/public%5C..%5Cadmin/x",
    ] {
        s.up.clear();
        let r = s.get(target, "").await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(s.up.count(), 0);
    }
    let cookie = s.login().await;
    refused(&s, "/admin;x/y", &cookie).await;
}

#[tokio::test]
async fn encoded_slash_keep_leaves_it_inside_its_segment() {
    let s = setup("paths: {encoded_slash: keep}").await;
    // A backend that keeps %2F reads one segment `admin%2Fx`, not `/admin/`.
    let r = s.get("/admin%2Fx", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.up.last().target, "/admin%2Fx");
    // And `%2F..%2F` cannot climb: `..%2F` is not a dot segment.
    let r = s.get("/admin/x%2F..%2F..%2Fy", "").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn case_insensitive_matches_prefixes_as_iis_does() {
    let s = setup("paths: {case_insensitive: true}").await;
    for target in ["/ADMIN/x", "/Admin/x", "/aDmIn/x"] {
        let r = s.get(target, "").await;
        assert_eq!(r.status, 401, "{target}");
    }
    let cookie = s.login().await;
    let r = s.get("/ADMIN/x", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.up.last().target, "/ADMIN/x");
    // By default a case-sensitive backend reads /ADMIN/ as another path.
    let plain = setup("").await;
    assert_eq!(plain.get("/ADMIN/x", "").await.status, 200);
}

#[tokio::test]
async fn an_invalid_paths_setting_is_named_by_check() {
    let err = sessiongate::config::from_yaml(
        &yaml("paths: {semicolon: allow, backslash: yes, bogus: 1}")
            .replace("{upstream}", "127.0.0.1:1"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("paths"), "{err}");
}

// ---- Host ----

#[tokio::test]
async fn a_missing_repeated_or_invalid_host_is_400() {
    let s = setup("").await;
    let bad_hosts: &[&[u8]] = &[
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: app.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: app.example.com\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: u@h\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h:80:80\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x/../admin\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a, b\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h:port\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\\admin\r\nConnection: close\r\n\r\n",
        // With a body, the request goes the other way through the server.
        b"POST /x HTTP/1.1\r\nHost: app.example.com\r\nHost: admin.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    ];
    for req in bad_hosts {
        s.up.clear();
        let r = s.send(req).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(req));
        assert_eq!(s.up.count(), 0, "{}", String::from_utf8_lossy(req));
    }
    for good in [
        "app.example.com:8080",
        "[::1]:80",
        "127.0.0.1",
        "APP.example.com",
    ] {
        let req = format!("GET /x HTTP/1.1\r\nHost: {good}\r\nConnection: close\r\n\r\n");
        let r = s.send(req.as_bytes()).await;
        assert_eq!(r.status, 200, "{good}");
        assert_eq!(s.up.last().one("host"), Some(good));
    }
    // HTTP/1.0 may omit it.
    let r = s.send(b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn routing_and_the_upstream_see_the_one_host() {
    let s = setup("").await;
    // A trailing dot names the same host.
    let r = s
        .send(b"GET /x HTTP/1.1\r\nHost: admin.example.com.\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 401);
    // An absolute-form target's authority wins over Host (RFC 9112 3.2.2).
    s.up.clear();
    let r = s
        .send(b"GET http://admin.example.com/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(s.up.count(), 0);
    let r = s
        .send(b"GET http://app.example.com/x?q=1 HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    assert_eq!(got.one("host"), Some("app.example.com"));
    assert_eq!(got.one("x-forwarded-host"), Some("app.example.com"));
    assert_eq!(got.target, "/x?q=1");
}

#[tokio::test]
async fn authority_and_asterisk_targets_are_400_outside_connect_and_options() {
    let s = setup("").await;
    for req in [
        &b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"[..],
        b"GET * HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        b"POST * HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    ] {
        let r = s.send(req).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(req));
    }
    let r = s
        .send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 405);
    let r = s
        .send(b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await;
    assert_ne!(r.status, 400);
    assert_eq!(s.up.count(), 0);
}

// ---- Spoofing past the head ----

#[tokio::test]
async fn request_trailers_never_reach_the_upstream() {
    let s = setup("").await;
    let r = s
        .send(
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Session-Data, X-User-Id\r\nTE: trailers\r\nConnection: close\r\n\r\n\
              2\r\nhi\r\n0\r\nX-Session-Data: {\"user_id\":1}\r\nX-User-Id: 1\r\nX-Other: 1\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    assert_eq!(got.body, b"hi");
    assert!(
        got.trailers.is_empty(),
        "trailers forwarded: {:?}",
        got.trailers
    );
    assert!(!got.text().contains("user_id\":1"), "{}", got.text());
}

#[tokio::test]
async fn underscored_header_names_are_dropped() {
    let s = setup("").await;
    let r = s
        .get(
            "/x",
            "X_Session_Data: {\"user_id\":1}\r\nX_User_Id: 1\r\nX-Session_Sid: s\r\nMy_Header: 1\r\nX-Kept: 1\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    for (name, _) in &got.headers {
        assert!(!name.contains('_'), "{name} reached the upstream");
    }
    assert_eq!(got.one("x-kept"), Some("1"));
    assert_eq!(got.one("x-session-data"), Some("{}"));
    assert!(got.all("x-user-id").is_empty());
}

#[tokio::test]
async fn underscores_allowed_still_cannot_spoof_session_headers() {
    let s = setup("underscores_in_headers: true").await;
    let r = s
        .get(
            "/x",
            "X_Session_Data: {\"user_id\":1}\r\nX_User_Id: 1\r\nMy_Header: 1\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    assert_eq!(got.one("my_header"), Some("1"));
    assert!(got.all("x_session_data").is_empty());
    assert!(got.all("x_user_id").is_empty());
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_passed_on() {
    let s = setup("").await;
    let r = s
        .send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    assert!(got.all("upgrade").is_empty(), "{}", got.text());
    assert!(got.all("http2-settings").is_empty(), "{}", got.text());
    // An upstream that switches anyway is refused: nothing to tunnel to.
    let r = s
        .send(b"GET /switch HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        .await;
    assert_eq!(r.status, 502);
}

// ---- Framing ----

#[tokio::test]
async fn an_upstream_response_with_length_and_chunked_loses_its_length() {
    let s = setup("").await;
    for path in ["/cl-te", "/te-cl"] {
        for req in [
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            ),
        ] {
            let r = s.send(req.as_bytes()).await;
            assert_eq!(r.status, 200, "{req}");
            assert_eq!(r.text(), "hello", "{req}: {}", r.head);
            let lengths = r.all("content-length");
            assert!(lengths.is_empty() || lengths == ["5"], "{req}: {}", r.head);
        }
    }
}

#[tokio::test]
async fn an_invalid_or_repeated_upstream_length_never_reaches_a_client() {
    let s = setup("").await;
    for method in ["GET", "HEAD", "POST"] {
        let body = if method == "POST" {
            "Content-Length: 1\r\n\r\nx"
        } else {
            "\r\n"
        };
        for path in ["/cl-list", "/cl-twice"] {
            let req = format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{body}");
            let r = s.send(req.as_bytes()).await;
            assert_eq!(r.status, 200, "{req}");
            let lengths = r.all("content-length");
            assert!(lengths.len() <= 1, "{req}: {}", r.head);
            for l in lengths {
                assert_eq!(l, "2", "{req}: {}", r.head);
            }
            if method != "HEAD" {
                assert_eq!(r.text(), "ok");
            }
        }
        let req = format!("{method} /cl-word HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{body}");
        let r = s.send(req.as_bytes()).await;
        assert!(
            !r.head.to_ascii_lowercase().contains("content-length: abc"),
            "{req}: {}",
            r.head
        );
        if method != "HEAD" {
            assert_eq!(r.status, 502, "{req}");
        }
    }
}

#[tokio::test]
async fn a_request_with_two_zero_lengths_is_forwarded_with_one() {
    let s = setup("").await;
    for method in ["POST", "GET"] {
        let req = format!(
            "{method} /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let r = s.send(req.as_bytes()).await;
        assert_eq!(r.status, 200);
        let got = s.up.last();
        assert!(got.all("content-length").len() <= 1, "{}", got.text());
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400() {
    let s = setup("").await;
    for body in [
        &b"zz\r\nhi\r\n0\r\n\r\n"[..],
        b"2\r\nhiXX0\r\n\r\n",
        b"fffffffffffffffff\r\nhi\r\n0\r\n\r\n",
        b"-2\r\nhi\r\n0\r\n\r\n",
    ] {
        let mut req =
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        req.extend_from_slice(body);
        let r = s.send(&req).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
    }
}

#[tokio::test]
async fn a_transfer_coding_the_proxy_cannot_carry_is_501() {
    let s = setup("").await;
    for te in ["gzip, chunked", "deflate,chunked", "x-custom, chunked"] {
        s.up.clear();
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        );
        let r = s.send(req.as_bytes()).await;
        assert_eq!(r.status, 501, "{te}");
        assert_eq!(s.up.count(), 0, "{te}");
    }
}

#[tokio::test]
async fn a_get_with_a_body_is_forwarded_with_it() {
    let s = setup("").await;
    for req in [
        &b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"[..],
        b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ] {
        let r = s.send(req).await;
        assert_eq!(r.status, 200);
        assert_eq!(s.up.last().body, b"hello", "{}", s.up.last().text());
    }
}

// ---- Smuggling classics: nothing the client sends becomes a second request upstream ----

/// Sends `req` and then asserts that no request for `/smuggled` reached the
/// upstream, and that whatever reached it was framed by exactly one header.
async fn not_smuggled(s: &Setup, req: &[u8]) -> Vec<u16> {
    s.up.clear();
    let mut c = RawClient::connect(s.addr).await;
    c.send(req).await;
    let mut statuses = Vec::new();
    while let Some(r) = c.response(false).await {
        statuses.push(r.status);
        if r.one("connection") == Some("close") {
            break;
        }
        if statuses.len() > 3 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for got in s.up.requests() {
        assert!(
            !got.target.contains("smuggled"),
            "smuggled past the proxy: {}",
            String::from_utf8_lossy(req)
        );
        let framing = got.all("content-length").len() + got.all("transfer-encoding").len();
        assert!(framing <= 1, "{}", got.text());
    }
    statuses
}

#[tokio::test]
async fn smuggling_classics_are_refused_or_normalised() {
    let s = setup("").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: Vec<(String, &[u16])> = vec![
        // CL.TE and TE.CL.
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        // Conflicting, signed and hexadecimal lengths.
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde{smuggled}"
            ),
            &[400],
        ),
        (
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde{smuggled}"),
            &[400],
        ),
        (
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd{smuggled}"),
            &[400],
        ),
        (
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -4\r\n\r\nabcd{smuggled}"),
            &[400],
        ),
        (
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd{smuggled}"),
            &[400],
        ),
        // `chunked` spelt in ways some servers accept and others do not.
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400, 501],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400, 501],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400, 501],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400, 501],
        ),
        // Chunk size overflow: 2^64 + 3 must not wrap to 3.
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        // Obsolete line folding.
        (
            format!("GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n{smuggled}"),
            &[400],
        ),
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
    ];
    for (req, allowed) in &cases {
        let statuses = not_smuggled(&s, req.as_bytes()).await;
        assert!(
            !statuses.is_empty() && allowed.contains(&statuses[0]),
            "{statuses:?} for {req:?}"
        );
        assert_eq!(statuses.len(), 1, "a second answer for {req:?}");
    }
}

#[tokio::test]
async fn bare_line_feeds_are_read_as_line_ends_and_forwarded_as_crlf() {
    let s = setup("").await;
    let r = s
        .send(b"POST /x HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nConnection: close\n\n2\r\nhi\r\n0\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    let got = s.up.last();
    assert_eq!(got.body, b"hi");
    assert!(
        !got.text().replace("\r\n", "").contains('\n'),
        "{}",
        got.text()
    );
    // A bare LF inside chunked framing is refused, never re-read as a boundary.
    let statuses = not_smuggled(
        &s,
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\n0\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s != 200 || statuses.len() == 1),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn pipelined_requests_each_carry_their_own_session() {
    let s = setup("").await;
    let cookie = s.login().await;
    s.up.clear();
    let mut c = RawClient::connect(s.addr).await;
    c.send(
        format!(
            "GET /admin/1 HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\n\r\n\
             GET /admin/2 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /admin/3 HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nContent-Length: 2\r\n\r\nhi\
             GET /admin/4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let mut statuses = Vec::new();
    while let Some(r) = c.response(false).await {
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 401, 200, 401]);
    let got = s.up.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].target, "/admin/1");
    assert_eq!(got[1].target, "/admin/3");
    for g in got {
        assert_eq!(g.one("x-session-data"), Some(r#"{"user_id":7}"#));
    }
}

// ---- HTTP/2 ----

async fn h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

/// One HTTP/2 request: its status, or `None` when the stream was reset.
async fn h2_request(
    send: &mut h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    body: Option<(&'static [u8], Option<http::HeaderMap>)>,
) -> Option<u16> {
    let end = body.is_none();
    let (resp, mut stream) = send.send_request(req, end).ok()?;
    if let Some((data, trailers)) = body {
        match trailers {
            Some(t) => {
                stream.send_data(Bytes::from_static(data), false).ok()?;
                stream.send_trailers(t).ok()?;
            }
            None => stream.send_data(Bytes::from_static(data), true).ok()?,
        }
    }
    let resp = resp.await.ok()?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        if chunk.is_err() {
            break;
        }
    }
    Some(status)
}

fn h2_get(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn http2_paths_get_the_same_400() {
    let s = setup("").await;
    let mut send = h2(s.addr).await;
    for target in CONFUSABLE_PATHS {
        s.up.clear();
        let status = h2_request(&mut send, h2_get(s.addr, target), None).await;
        assert!(
            status.is_none() || status == Some(400),
            "{target}: {status:?}"
        );
        assert_eq!(s.up.count(), 0, "{target} reached the upstream over HTTP/2");
    }
    assert_eq!(
        h2_request(&mut send, h2_get(s.addr, "/public/x?a=;%zz"), None).await,
        Some(200)
    );
}

#[tokio::test]
async fn http2_trailers_and_underscored_names_never_reach_the_upstream() {
    let s = setup("").await;
    let mut send = h2(s.addr).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-session-data", r#"{"user_id":1}"#.parse().unwrap());
    trailers.insert("x-user-id", "1".parse().unwrap());
    let req = http::Request::post(format!("http://{}/x", s.addr))
        .header("x_user_id", "1")
        .body(())
        .unwrap();
    let status = h2_request(&mut send, req, Some((b"hi", Some(trailers)))).await;
    assert_eq!(status, Some(200));
    let got = s.up.last();
    assert_eq!(got.body, b"hi");
    assert!(got.trailers.is_empty(), "{:?}", got.trailers);
    assert!(got.all("x_user_id").is_empty());
    assert!(!got.text().contains("user_id\":1"));
}

#[tokio::test]
async fn http2_host_must_agree_with_the_authority() {
    let s = setup("").await;
    let mut send = h2(s.addr).await;
    let req = http::Request::get("http://app.example.com/x")
        .header("host", "admin.example.com")
        .body(())
        .unwrap();
    let status = h2_request(&mut send, req, None).await;
    assert!(status.is_none() || status == Some(400), "{status:?}");
    assert_eq!(s.up.count(), 0);
    let req = http::Request::get("http://admin.example.com/x")
        .body(())
        .unwrap();
    assert_eq!(h2_request(&mut send, req, None).await, Some(401));
    let req = http::Request::get("http://app.example.com/x")
        .body(())
        .unwrap();
    assert_eq!(h2_request(&mut send, req, None).await, Some(200));
    assert_eq!(s.up.last().one("host"), Some("app.example.com"));
}
