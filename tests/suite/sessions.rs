// Session behaviour end to end: the proxy (`run` on 127.0.0.1:0) in front of
// a real upstream, on the memory store. Included by tests/sessions.rs
// (HTTP/1.1) and tests/sessions_h2.rs (HTTP/2), so both protocols run it.

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const COOKIE: &str = "sessionid";

fn client() -> TestClient {
    if HTTP2 { TestClient::http2() } else { TestClient::new() }
}

async fn setup(session_extra: &str, routes: &str) -> (Upstream, Gateway, TestClient) {
    let up = upstream().await;
    let gw = gateway(&config(session_extra, routes), up.addr).await;
    (up, gw, client())
}

/// Creates a session holding `data` and returns its cookie (`name=value`).
async fn create(c: &TestClient, gw: &Gateway, data: Value) -> String {
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", &data.to_string())]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.cookie(COOKIE).expect("session cookie set")
}

/// Starts a request on `cookie` whose upstream answers `replies` after 600 ms,
/// and returns once it is in flight.
async fn in_flight(
    gw: &Gateway,
    path: &str,
    cookie: &str,
    replies: Vec<(&'static str, String)>,
) -> tokio::task::JoinHandle<Reply> {
    let url = gw.url(path);
    let mut headers = replies;
    headers.push(("cookie", cookie.to_string()));
    headers.push((REPLY_DELAY_MS, "600".into()));
    let task = tokio::spawn(async move { client().get(&url, &hdrs(&headers)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    task
}

async fn session_of(c: &TestClient, gw: &Gateway, cookie: &str) -> Value {
    c.get(&gw.url("/"), &[("cookie", cookie)]).await.session()
}

#[tokio::test]
async fn request_without_session_creates_nothing() {
    let (up, gw, c) = setup("", JSON_ROUTE).await;
    let r = c.get(&gw.url("/hello?x=1"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("set-cookie").is_none());
    assert_eq!(r.session(), json!({}));
    assert_eq!(r.echo().header("x-session-sid"), None);
    assert_eq!(r.echo().path, "/hello?x=1");
    assert_eq!(r.headers["vary"], "Cookie");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_write_creates_session_seen_by_next_request() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"user_id": 42, "name": "ann"})).await;
    let r = c
        .get(
            &gw.url("/"),
            &[("cookie", &format!("theme=dark; {cookie}; lang=en"))],
        )
        .await;
    assert_eq!(r.session(), json!({"user_id": 42, "name": "ann"}));
    let sid = r
        .echo()
        .header("x-session-sid")
        .expect("sid sent in json mode");
    assert!(
        !sid.is_empty() && !cookie.contains(&sid),
        "sid must not be the id"
    );
    // The session cookie never reaches the upstream; the others do.
    assert_eq!(
        r.echo().header("cookie").as_deref(),
        Some("theme=dark; lang=en")
    );
    assert!(
        r.headers.get("set-cookie").is_none(),
        "a read sends no Set-Cookie"
    );
}

#[tokio::test]
async fn set_cookie_carries_configured_attributes() {
    let extra = "  ttl: 1h\n";
    let up = upstream().await;
    let yaml = config(extra, JSON_ROUTE).replace(
        "cookie: {secure: false}",
        "cookie: {secure: true, domain: example.test, path: /, same_site: strict}",
    );
    let gw = gateway(&yaml, up.addr).await;
    let c = client();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"a":1}"#)]),
        )
        .await;
    let sc = r.set_cookie(COOKIE).unwrap();
    for part in [
        "Path=/",
        "Domain=example.test",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=3600",
        "Expires=",
    ] {
        assert!(sc.contains(part), "{sc} lacks {part}");
    }
}

#[tokio::test]
async fn several_updates_apply_in_order_as_merge_patches() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(
        &c,
        &gw,
        json!({"a": 1, "prefs": {"theme": "dark", "lang": "en"}, "drop": true}),
    )
    .await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply(
                    "X-Session-Update",
                    r#"{"a":2,"prefs":{"lang":null,"size":3},"drop":null}"#,
                ),
                reply("X-Session-Update", r#"{"a":3,"list":[1,2]}"#),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie(COOKIE).is_some(), "a save re-sends the cookie");
    assert_eq!(
        session_of(&c, &gw, &cookie).await,
        json!({"a": 3, "prefs": {"theme": "dark", "size": 3}, "list": [1, 2]})
    );
}

#[tokio::test]
async fn tampered_cookie_is_no_session() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"user_id": 1})).await;
    let (name, value) = cookie.split_once('=').unwrap();
    let mut bytes = value.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'a' { b'b' } else { b'a' };
    let tampered = format!("{name}={}", String::from_utf8(bytes).unwrap());
    for bad in [
        tampered.as_str(),
        "sessionid=garbage",
        "sessionid=",
        "sessionid=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
        "sessionid=%%%;;;==",
    ] {
        let r = c.get(&gw.url("/"), &[("cookie", bad)]).await;
        assert_eq!(r.status, 200, "{bad}");
        assert_eq!(r.session(), json!({}), "{bad}");
        assert!(r.headers.get("set-cookie").is_none());
    }
}

#[tokio::test]
async fn client_cannot_choose_its_session_id() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                (
                    "cookie",
                    "sessionid=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA".into(),
                ),
                reply("X-Session-Update", r#"{"a":1}"#),
            ]),
        )
        .await;
    let cookie = r.cookie(COOKIE).unwrap();
    assert!(
        !cookie.contains("AAAAAAAAAAAAAAAAAAAAAA"),
        "a new id is issued, never the client's"
    );
}

#[tokio::test]
async fn signed_header_verifies_with_a_standard_jwt_library() {
    let routes = format!(
        "  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: signed, secret: \"{JWT_SECRET}\", issuer: gate, token_ttl: 90s}}}}"
    );
    let (_up, gw, c) = setup("", &routes).await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["app"]);
    validation.set_issuer(&["gate"]);
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());

    let anon = c
        .get(&gw.url("/"), &[])
        .await
        .echo()
        .header("x-session-token")
        .expect("token even without session");
    let claims = jsonwebtoken::decode::<Value>(&anon, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["session"], json!({}));
    assert!(claims.get("sid").is_none());

    let cookie = create(&c, &gw, json!({"user_id": 7, "roles": ["admin"]})).await;
    let token = c
        .get(&gw.url("/"), &[("cookie", &cookie)])
        .await
        .echo()
        .header("x-session-token")
        .unwrap();
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["session"], json!({"user_id": 7, "roles": ["admin"]}));
    assert_eq!(claims["iss"], "gate");
    assert_eq!(claims["aud"], "app");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        90
    );
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()));

    let wrong = jsonwebtoken::DecodingKey::from_secret(b"some-other-secret-some-other-secret!!");
    assert!(jsonwebtoken::decode::<Value>(&token, &wrong, &validation).is_err());
}

#[tokio::test]
async fn json_header_is_ascii_only() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    // Upstreams send ASCII headers; the JSON escapes carry the non-ASCII text.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply(
                "X-Session-Update",
                r#"{"name":"Zo\u00eb \ud83e\udd80"}"#,
            )]),
        )
        .await;
    let cookie = r.cookie(COOKIE).unwrap();
    let raw = c
        .get(&gw.url("/"), &[("cookie", &cookie)])
        .await
        .echo()
        .header("x-session-data")
        .unwrap();
    assert!(raw.is_ascii(), "{raw}");
    assert!(raw.contains("\\u00eb"), "{raw}");
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        json!({"name": "Zoë 🦀"})
    );
}

#[tokio::test]
async fn mode_none_forwards_nothing_but_write_back_works() {
    let routes = "  - {match: {path_prefix: /}, upstream: app, forward: {mode: none}}";
    let (_up, gw, c) = setup("", routes).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    let echo = r.echo();
    assert!(
        echo.headers.keys().all(|k| !k.starts_with("x-session")),
        "{:?}",
        echo.headers
    );
    assert!(
        r.headers.get("vary").is_none(),
        "a route that forwards nothing does not vary on Cookie"
    );
}

#[tokio::test]
async fn forward_headers_copy_keys_and_cannot_be_spoofed() {
    let routes = "  - {match: {path_prefix: /}, upstream: app, forward: {mode: json, headers: {X-User-Id: user_id, X-Roles: roles, X-Missing: nope}}}";
    let (_up, gw, c) = setup("", routes).await;
    let spoof = [("x-user-id", "1"), ("x-missing", "evil")];
    let anon = c.get(&gw.url("/"), &spoof).await.echo();
    assert_eq!(anon.header("x-user-id"), None);
    assert_eq!(anon.header("x-missing"), None);
    let cookie = create(&c, &gw, json!({"user_id": "u-9", "roles": ["a", "b"]})).await;
    let echo = c
        .get(
            &gw.url("/"),
            &[("cookie", cookie.as_str()), ("x-user-id", "1")],
        )
        .await
        .echo();
    assert_eq!(echo.header_all("x-user-id"), vec!["u-9"]);
    assert_eq!(echo.header("x-roles").as_deref(), Some(r#"["a","b"]"#));
    assert_eq!(echo.header("x-missing"), None);
}

#[tokio::test]
async fn forward_keys_limit_what_the_upstream_sees_but_not_what_it_writes() {
    let routes = "  - {match: {path_prefix: /private}, upstream: app, forward: {mode: json, keys: [user_id]}, require: [secret_flag]}
  - {match: {path_prefix: /open}, upstream: app, forward: {mode: json, keys: [user_id]}}";
    let (_up, gw, c) = setup("", routes).await;
    let r = c
        .get(
            &gw.url("/open"),
            &hdrs(&[reply(
                "X-Session-Update",
                r#"{"user_id":1,"secret_flag":true,"other":2}"#,
            )]),
        )
        .await;
    let cookie = r.cookie(COOKIE).unwrap();
    let open = c.get(&gw.url("/open"), &[("cookie", &cookie)]).await;
    assert_eq!(open.session(), json!({"user_id": 1}));
    let private = c.get(&gw.url("/private"), &[("cookie", &cookie)]).await;
    assert_eq!(
        private.status, 200,
        "require sees keys hidden from the upstream"
    );
    assert_eq!(private.session(), json!({"user_id": 1}));
}

#[tokio::test]
async fn client_internal_headers_are_stripped() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let echo = c
        .get(
            &gw.url("/"),
            &[
                ("X-Session-Data", r#"{"admin":true}"#),
                ("x-session-sid", "forged"),
                ("X-SESSION-Whatever", "1"),
                ("X-Session-Update", r#"{"admin":true}"#),
            ],
        )
        .await
        .echo();
    assert_eq!(echo.header_all("x-session-data"), vec!["{}"]);
    assert_eq!(echo.header("x-session-sid"), None);
    assert_eq!(echo.header("x-session-whatever"), None);
    assert_eq!(echo.header("x-session-update"), None);
}

#[tokio::test]
async fn upstream_internal_headers_never_reach_the_client() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                reply("X-Session-Debug", "secret stuff"),
                reply("X-Session-Update", r#"{"a":1}"#),
            ]),
        )
        .await;
    assert!(
        r.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-session")),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn upstream_cannot_set_the_gateway_cookie() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                reply("Set-Cookie", "sessionid=forged; Path=/"),
                reply("Set-Cookie", "theme=dark"),
            ]),
        )
        .await;
    let all: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(all, vec!["theme=dark"]);
}
