//! CSRF protection at the gateway (SPEC section 8.7), end to end, in the
//! manner of Django's own suite (tests/csrf_tests/tests.py): the cookie a
//! visitor gets without a session, tokens from the header and from url-
//! encoded and multipart forms (masked and bare, too short, bad characters,
//! wrong), Origin and (over HTTPS) Referer against the request's own origin
//! and trusted ones, tokens bound to their session and rotated on cycle and
//! flush, exempt paths, `require` before CSRF, HTTP/2, and form bodies sent
//! on byte for byte.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use sessiongate::session::csrf::{CsrfSecret, read_token};

const ROUTES: &str = r#"
  - match: {path_prefix: /staff/}
    upstream: app
    forward: {mode: json}
    require: [user_id]
    csrf: {enabled: true}
  - match: {path_prefix: /api/}
    upstream: app
    forward: {mode: signed, secret: "upstream-jwt-secret-0123456789abcdef-012"}
    csrf: {enabled: true}
  - match: {path_prefix: /}
    upstream: app
    forward: {mode: json}
    csrf: {trusted_origins: ["https://*.trusted.example", "http://partner.example:8000"], exempt: [/hooks/]}
"#;

fn yaml(extra: &str) -> String {
    config("", ROUTES) + "trusted_proxies: [127.0.0.1/32]\n" + extra
}

/// The CSRF secret a response's `Set-Cookie: csrftoken=...` carries.
fn csrf_cookie(r: &Reply) -> Option<String> {
    let set = r.set_cookie("csrftoken")?;
    assert!(!set.contains("HttpOnly"), "JavaScript reads it: {set}");
    Some(set.split(';').next()?.split_once('=')?.1.to_string())
}

struct Post<'a> {
    path: &'a str,
    cookies: Vec<String>,
    headers: Vec<(&'a str, String)>,
    content_type: Option<&'a str>,
    body: Bytes,
}

impl<'a> Post<'a> {
    fn to(path: &'a str) -> Self {
        Post {
            path,
            cookies: Vec::new(),
            headers: Vec::new(),
            content_type: None,
            body: Bytes::new(),
        }
    }
    fn cookie(mut self, c: &str) -> Self {
        self.cookies.push(c.to_string());
        self
    }
    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    fn form(mut self, body: &str) -> Self {
        self.content_type = Some("application/x-www-form-urlencoded");
        self.body = Bytes::from(body.to_string());
        self
    }
    async fn send(self, gw: &Gateway, client: &TestClient) -> Reply {
        let mut b = Request::post(gw.url(self.path));
        if !self.cookies.is_empty() {
            b = b.header("cookie", self.cookies.join("; "));
        }
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(ct) = self.content_type {
            b = b.header("content-type", ct);
        }
        client.send(b.body(Full::new(self.body)).unwrap()).await
    }
}

fn refused_with(r: &Reply, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), format!("CSRF verification failed: {reason}\n"));
}

/// A visitor without a session: its secret, as the cookie holds it.
async fn anonymous_secret(gw: &Gateway, c: &TestClient) -> String {
    let r = c.get(&gw.url("/form"), &[]).await;
    assert_eq!(r.status, 200);
    csrf_cookie(&r).expect("a CSRF cookie for a visitor without one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_gets_a_token_without_a_session() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let r = c.get(&gw.url("/form"), &[]).await;
    let secret = csrf_cookie(&r).unwrap();
    assert_eq!(secret.len(), 32);
    assert!(r.set_cookie("sessionid").is_none(), "no session is created");
    let masked = r.echo().header("x-session-csrf").unwrap();
    assert_eq!(masked.len(), 64, "masked for the page");
    assert_eq!(
        read_token(masked.as_bytes()).unwrap(),
        CsrfSecret::parse(secret.as_bytes()).unwrap()
    );
    // A client that holds it is not sent it again; the masks differ per response.
    let cookie = format!("csrftoken={secret}");
    let again = c
        .get(&gw.url("/form"), &[("cookie", cookie.as_str())])
        .await;
    assert!(again.set_cookie("csrftoken").is_none());
    let masked2 = again.echo().header("x-session-csrf").unwrap();
    assert_ne!(masked2, masked, "BREACH: a fresh mask per response");
    assert_eq!(
        read_token(masked2.as_bytes()),
        read_token(masked.as_bytes())
    );
    let m = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(m.contains("sessiongate_sessions 0"), "{m}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_need_the_cookie_and_a_correct_token() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let secret = anonymous_secret(&gw, &c).await;
    let cookie = format!("csrftoken={secret}");
    let hits = || up.hits.load(std::sync::atomic::Ordering::SeqCst);
    let before = hits();

    // test_no_csrf_cookie, test_csrf_cookie_bad_or_missing_token.
    refused_with(
        &Post::to("/form").send(&gw, &c).await,
        "CSRF cookie not set.",
    );
    refused_with(
        &Post::to("/form").cookie(&cookie).send(&gw, &c).await,
        "CSRF token missing.",
    );
    let header = "'X-Csrftoken' HTTP header";
    for (token, reason) in [
        (
            "a".repeat(16),
            format!("CSRF token from the {header} has incorrect length."),
        ),
        (
            "*".repeat(64),
            format!("CSRF token from the {header} has invalid characters."),
        ),
        (
            "a".repeat(64),
            format!("CSRF token from the {header} incorrect."),
        ),
    ] {
        let r = Post::to("/form")
            .cookie(&cookie)
            .header("x-csrftoken", &token)
            .send(&gw, &c)
            .await;
        refused_with(&r, &reason);
    }
    for (token, reason) in [
        ("a".repeat(16), "CSRF token from POST has incorrect length."),
        (
            "*".repeat(64),
            "CSRF token from POST has invalid characters.",
        ),
        ("a".repeat(64), "CSRF token from POST incorrect."),
    ] {
        let r = Post::to("/form")
            .cookie(&cookie)
            .form(&format!("name=ann&csrfmiddlewaretoken={token}"))
            .send(&gw, &c)
            .await;
        refused_with(&r, reason);
    }
    assert_eq!(hits(), before, "no refused request reached the upstream");

    // The bare secret and any masking of it pass, in the header or the form.
    let masked = CsrfSecret::parse(secret.as_bytes()).unwrap().masked();
    for token in [secret.as_str(), masked.as_str()] {
        let r = Post::to("/form")
            .cookie(&cookie)
            .header("x-csrftoken", token)
            .send(&gw, &c)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let form = format!("name=ann&csrfmiddlewaretoken={masked}&note=a%20b");
    let r = Post::to("/form")
        .cookie(&cookie)
        .form(&form)
        .send(&gw, &c)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    assert_eq!(
        echo.header("content-length").unwrap(),
        form.len().to_string()
    );
    assert_eq!(
        echo.body_sha256,
        hex_sha256(form.as_bytes()),
        "the form arrives byte for byte"
    );
    // Safe methods and exempt paths are never checked; PUT needs the header.
    assert_eq!(c.get(&gw.url("/form"), &[]).await.status, 200);
    assert_eq!(Post::to("/hooks/stripe").send(&gw, &c).await.status, 200);
    let put = Request::put(gw.url("/form"))
        .header("cookie", cookie.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "csrfmiddlewaretoken={masked}"
        ))))
        .unwrap();
    refused_with(&c.send(put).await, "CSRF token missing.");
    gw.stop().await;
}

fn hex_sha256(bytes: &[u8]) -> String {
    <sha2::Sha256 as sha2::Digest>::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_referer_as_django_checks_them() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let secret = anonymous_secret(&gw, &c).await;
    let cookie = format!("csrftoken={secret}");
    let post = || {
        Post::to("/form")
            .cookie(&cookie)
            .header("x-csrftoken", &secret)
    };
    let own = format!("http://{}", gw.addr);
    // test_bad_origin_*, test_good_origin_*.
    let r = post()
        .header("origin", "https://evil.example")
        .send(&gw, &c)
        .await;
    refused_with(
        &r,
        "Origin checking failed - https://evil.example does not match any trusted origins.",
    );
    refused_with(
        &post().header("origin", "null").send(&gw, &c).await,
        "Origin checking failed - null does not match any trusted origins.",
    );
    for ok in [
        own.as_str(),
        "http://partner.example:8000",
        "https://shop.trusted.example",
    ] {
        let r = post().header("origin", ok).send(&gw, &c).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
    }
    refused_with(
        &post()
            .header("origin", "http://partner.example:8001")
            .send(&gw, &c)
            .await,
        "Origin checking failed - http://partner.example:8001 does not match any trusted origins.",
    );
    // Over HTTPS (a trusted proxy's X-Forwarded-Proto), without Origin, the
    // Referer decides: test_https_*_referer.
    let https = || {
        post()
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "www.example.com")
    };
    refused_with(
        &https().send(&gw, &c).await,
        "Referer checking failed - no Referer.",
    );
    refused_with(
        &https()
            .header("referer", "http://www.example.com/")
            .send(&gw, &c)
            .await,
        "Referer checking failed - Referer is insecure while host is secure.",
    );
    refused_with(
        &https().header("referer", "https://").send(&gw, &c).await,
        "Referer checking failed - Referer is malformed.",
    );
    refused_with(
        &https()
            .header("referer", "https://evil.example/page")
            .send(&gw, &c)
            .await,
        "Referer checking failed - https://evil.example/page does not match any trusted origins.",
    );
    for ok in [
        "https://www.example.com/form/",
        "https://a.trusted.example/x",
    ] {
        let r = https().header("referer", ok).send(&gw, &c).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
    }
    let r = https()
        .header("origin", "https://www.example.com")
        .send(&gw, &c)
        .await;
    assert_eq!(r.status, 200, "Origin, when sent, is checked instead");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_the_session_and_rotate_with_it() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let anon = anonymous_secret(&gw, &c).await;
    let anon_cookie = format!("csrftoken={anon}");
    // Log in: the upstream creates the session and cycles it; the response
    // carries the session's own token.
    let login = Post::to("/login")
        .cookie(&anon_cookie)
        .header("x-csrftoken", &anon)
        .header(REPLY_HEADER, r#"x-session-update: {"user_id": 1}"#)
        .send(&gw, &c)
        .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let session_a = login.cookie("sessionid").unwrap();
    let token_a = csrf_cookie(&login).expect("rotated at login");
    assert_ne!(token_a, anon);
    let as_a = |t: &str| {
        Post::to("/form")
            .cookie(&session_a)
            .cookie(&format!("csrftoken={t}"))
            .header("x-csrftoken", t)
    };
    assert_eq!(as_a(&token_a).send(&gw, &c).await.status, 200);
    refused_with(
        &as_a(&anon).send(&gw, &c).await,
        "CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
    );
    // The upstream's session header carries it masked (json and signed).
    let echo = c
        .get(&gw.url("/form"), &[("cookie", session_a.as_str())])
        .await
        .echo();
    let masked = echo.header("x-session-csrf").unwrap();
    assert_eq!(
        read_token(masked.as_bytes()).unwrap(),
        CsrfSecret::parse(token_a.as_bytes()).unwrap()
    );
    let api = c
        .get(&gw.url("/api/me"), &[("cookie", session_a.as_str())])
        .await
        .echo();
    let jwt = api.header("x-session-token").unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        read_token(claims["csrf"].as_str().unwrap().as_bytes()).unwrap(),
        CsrfSecret::parse(token_a.as_bytes()).unwrap()
    );

    // Another session's token never validates in this one.
    let other = Post::to("/login")
        .cookie(&anon_cookie)
        .header("x-csrftoken", &anon)
        .header(REPLY_HEADER, r#"x-session-update: {"user_id": 2}"#)
        .send(&gw, &c)
        .await;
    let token_b = csrf_cookie(&other).unwrap();
    refused_with(
        &as_a(&token_b).send(&gw, &c).await,
        "CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
    );

    // A cycle rotates it: the old token stops working.
    let cycled = as_a(&token_a)
        .header(REPLY_HEADER, "x-session-action: cycle")
        .send(&gw, &c)
        .await;
    let session_a2 = cycled.cookie("sessionid").unwrap();
    let token_a2 = csrf_cookie(&cycled).expect("rotated with the session");
    assert_ne!(token_a2, token_a);
    let stale = Post::to("/form")
        .cookie(&session_a2)
        .header("x-csrftoken", &token_a)
        .send(&gw, &c)
        .await;
    refused_with(
        &stale,
        "CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
    );
    // A flush (logout) leaves a fresh anonymous token.
    let out = Post::to("/logout")
        .cookie(&session_a2)
        .header("x-csrftoken", &token_a2)
        .header(REPLY_HEADER, "x-session-action: flush")
        .send(&gw, &c)
        .await;
    let after_logout = csrf_cookie(&out).unwrap();
    assert_ne!(after_logout, token_a2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_is_enforced_before_csrf() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let r = Post::to("/staff/x").send(&gw, &c).await;
    assert_eq!(r.status, 401, "no session: denied, not a CSRF failure");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_checks_over_http2() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::http2();
    let secret = anonymous_secret(&gw, &c).await;
    let cookie = format!("csrftoken={secret}");
    refused_with(
        &Post::to("/form").cookie(&cookie).send(&gw, &c).await,
        "CSRF token missing.",
    );
    let form = format!("csrfmiddlewaretoken={secret}&x=1");
    let r = Post::to("/form")
        .cookie(&cookie)
        .form(&form)
        .send(&gw, &c)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().body_sha256, hex_sha256(form.as_bytes()));
    gw.stop().await;
}

fn multipart(boundary: &str, token: Option<&str>, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(token) = token {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrfmiddlewaretoken\"\r\n\r\n{token}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_multipart_upload_arrives_intact_and_an_oversized_form_needs_the_header() {
    let up = upstream().await;
    let gw = gateway(&yaml(""), up.addr).await;
    let c = TestClient::new();
    let secret = anonymous_secret(&gw, &c).await;
    let cookie = format!("csrftoken={secret}");
    let file: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let boundary = "----sessiongate7MA4YWxkTrZu0gW";
    let ct = format!("multipart/form-data; boundary={boundary}");
    for http2 in [false, true] {
        let client = if http2 {
            TestClient::http2()
        } else {
            TestClient::new()
        };
        let body = multipart(boundary, Some(&secret), &file);
        let req = Request::post(gw.url("/upload"))
            .header("cookie", cookie.as_str())
            .header("content-type", ct.as_str())
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let r = client.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.echo();
        assert_eq!(
            echo.body_sha256,
            hex_sha256(&body),
            "byte for byte (h2: {http2})"
        );
        assert_eq!(
            echo.header("content-length").unwrap(),
            body.len().to_string()
        );
    }
    // Without the token in it, the multipart form is refused.
    let req = Request::post(gw.url("/upload"))
        .header("cookie", cookie.as_str())
        .header("content-type", ct.as_str())
        .body(Full::new(Bytes::from(multipart(boundary, None, b"x"))))
        .unwrap();
    refused_with(&c.send(req).await, "CSRF token missing.");
    gw.stop().await;

    // Past limits.max_form_bytes the form is not read: refused without the
    // header, streamed through with it.
    let up = upstream().await;
    let gw = gateway(&yaml("limits: {max_form_bytes: 65536}\n"), up.addr).await;
    let secret = anonymous_secret(&gw, &c).await;
    let cookie = format!("csrftoken={secret}");
    let body = multipart(boundary, Some(&secret), &file[..100_000]);
    let send = |with_header: bool| {
        let mut b = Request::post(gw.url("/upload"))
            .header("cookie", cookie.as_str())
            .header("content-type", ct.as_str());
        if with_header {
            b = b.header("x-csrftoken", secret.as_str());
        }
        c.send(b.body(Full::new(Bytes::from(body.clone()))).unwrap())
    };
    let r = send(false).await;
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("larger than limits.max_form_bytes"),
        "{}",
        r.text()
    );
    let r = send(true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().body_sha256, hex_sha256(&body));
    gw.stop().await;
}
