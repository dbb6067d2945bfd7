//! The request path an attacker sees, as exact bytes: a raw-socket client in
//! front of the proxy and a raw-socket upstream behind it that records what
//! arrives. Paths a backend reads differently, Host, and header and trailer
//! spoofing, over HTTP/1.1 and HTTP/2. Framing and smuggling are in
//! `http_framing.rs`.

mod common;

use bytes::Bytes;
use common::gate::*;
use std::net::SocketAddr;

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
