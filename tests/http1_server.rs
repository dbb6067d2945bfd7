//! The client side of HTTP/1.1 on the wire: the server's own loop for plain
//! requests, its hand-off to hyper for the rest, keep-alive, pipelining and
//! closing.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of a header line in a response head, by its lower-case name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// Reads one response framed by `Content-Length`; returns its head and body.
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = header(&head, "content-length")
                .expect("a content-length")
                .parse()
                .unwrap();
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_a_hand_off() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // The second request has a body: hyper takes the connection from there.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
          GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let all = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("the connection closes after the third answer");
    assert_eq!(all.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{all}");
    let one = all.find(r#""path":"/one""#).expect("first answered");
    let two = all.find(r#""path":"/two""#).expect("second answered");
    let three = all.find(r#""path":"/three""#).expect("third answered");
    assert!(one < two && two < three, "{all}");
    assert!(all.contains(r#""body_len":2"#), "{all}");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn one_connection_serves_many_requests_with_the_session() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let login = format!(
        "GET /login HTTP/1.1\r\nHost: a\r\n{REPLY_HEADER}: x-session-update: {{\"user\":\"ada\"}}\r\n\r\n"
    );
    s.write_all(login.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    let cookie = header(&head, "set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    for i in 0..20 {
        let req = format!("GET /r{i} HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(header(&head, "date").is_some(), "{head}");
        assert_eq!(header(&head, "connection"), None, "{head}");
        assert!(body.contains(&format!(r#""path":"/r{i}""#)), "{body}");
        assert!(
            body.contains("ada"),
            "the session reaches the upstream: {body}"
        );
    }
}

#[tokio::test]
async fn a_client_asking_to_close_is_answered_then_closed() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /bye HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the answer");
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.ends_with('}'), "the whole body, then the close: {all}");
}

#[tokio::test]
async fn malformed_heads_get_400_and_http_1_0_is_served_then_closed() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    for (head, want) in [
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "HTTP/1.1 400 "),
        ("G@T / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
        // A server answers in its own version (RFC 9110 section 2.5), as nginx does.
        ("GET /old HTTP/1.0\r\nHost: a\r\n\r\n", "HTTP/1.1 200 "),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(5))
            .await
            .expect("closed after the answer");
        assert!(got.starts_with(want), "{head:?} -> {got}");
    }
}

#[tokio::test]
async fn head_answers_keep_the_length_and_send_no_body() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the answers");
    let (first, rest) = all.split_once("\r\n\r\n").unwrap();
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{all}");
    assert!(first.contains("content-length: "), "{all}");
    // Straight after HEAD's head comes the next answer, not a body.
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{all}");
    assert!(rest.contains(r#""path":"/g""#), "{all}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut s).await;
    let start = Instant::now();
    gw.stop().await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown waited for an idle connection: {:?}",
        start.elapsed()
    );
    let rest = read_to_close(&mut s, Duration::from_secs(2)).await;
    assert_eq!(rest.as_deref(), Some(""), "the idle connection is closed");
}

#[tokio::test]
async fn shutdown_answers_a_busy_connection_with_close_then_ends_it() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let slow = format!("GET /slow HTTP/1.1\r\nHost: a\r\n{REPLY_DELAY_MS}: 400\r\n\r\n");
    s.write_all(slow.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(gw.stop());
    let all = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("the connection ends after its answer");
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.contains(r#""path":"/slow""#), "{all}");
    stopped.await.unwrap();
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_its_connection_at_once() {
    let up = upstream().await;
    let gw = gateway(
        &format!("{}limits: {{max_connections: 1}}\n", config("", JSON_ROUTE)),
        up.addr,
    )
    .await;
    let mut gone = TcpStream::connect(gw.addr).await.unwrap();
    let slow = format!("GET /slow HTTP/1.1\r\nHost: a\r\n{REPLY_DELAY_MS}: 1800\r\n\r\n");
    gone.write_all(slow.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gone);
    // The only connection slot is free again long before the upstream
    // would have answered the abandoned request.
    let start = Instant::now();
    let mut next = TcpStream::connect(gw.addr).await.unwrap();
    next.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut next, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "waited {:?} for the abandoned request",
        start.elapsed()
    );
}

#[tokio::test]
async fn head_of_the_gateways_own_answer_states_its_length() {
    let up = upstream().await;
    let routes = "  - {match: {path_prefix: /app}, upstream: app, forward: {mode: json}}";
    let gw = gateway(&config("", routes), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"HEAD /elsewhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let (head, rest) = all.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{all}");
    let stated = "no route for this request\n".len().to_string();
    assert_eq!(
        header(head, "content-length"),
        Some(stated.as_str()),
        "{all}"
    );
    assert_eq!(rest, "", "no body follows a HEAD answer");
}

#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_served() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for b in b"GET /trickle HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains(r#""path":"/trickle""#), "{all}");
}

#[tokio::test]
async fn a_client_expecting_100_continue_gets_it_before_sending_its_body() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
        .await
        .expect("a 100 Continue before the body")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(r#""body_len":5"#), "{body}");
    // Refused before the body is read: no 100, and the connection ends.
    let routes =
        "  - {match: {path_prefix: /}, upstream: app, forward: {mode: json}, require: [user_id]}";
    let gw = gateway(&config("", routes), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let all = read_to_close(&mut s, Duration::from_secs(15))
        .await
        .expect("closed after the refusal");
    assert!(all.starts_with("HTTP/1.1 401"), "{all}");
}

#[tokio::test]
async fn an_http_1_0_client_that_asks_keeps_its_connection() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "connection"), Some("keep-alive"), "{head}");
    }
}
