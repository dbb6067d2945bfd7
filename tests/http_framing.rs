//! Framing as exact bytes, both ways: lengths and codings a client or an
//! upstream could make two readers disagree on, and the smuggling classics:
//! nothing a client sends becomes a second request upstream.

mod common;

use common::gate::*;
use common::raw::*;
use std::time::Duration;

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
