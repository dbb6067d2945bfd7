//! The cookie store end to end: the session lives in the browser, sealed.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn yaml(extra: &str, secrets: &str) -> String {
    format!(
        "secrets: {secrets}\nsession:\n  cookie: {{secure: false}}\n  store: {{kind: cookie}}\n{extra}upstreams:\n  app: {{url: \"http://{{upstream}}\"}}\nroutes:\n{JSON_ROUTE}\n"
    )
}

fn default_secrets() -> String {
    format!("[\"{SECRET}\"]")
}

/// Every `name=value` the response sets (not removals), in order.
fn cookies_set(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap().to_string())
        .collect()
}

fn removals(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| v.contains("Max-Age=0"))
        .map(|v| v.split('=').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_session_lives_in_a_sealed_cookie() {
    let up = upstream().await;
    let gw = gateway(&yaml("", &default_secrets()), up.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply(
                "X-Session-Update",
                r#"{"user_id":42,"name":"ann-plaintext-marker"}"#,
            )]),
        )
        .await;
    let set = cookies_set(&r);
    assert_eq!(set.len(), 1);
    assert!(
        !set[0].contains("plaintext-marker") && !set[0].contains("user_id"),
        "the data is encrypted: {}",
        set[0]
    );
    let cookie = format!("{}; theme=dark", set[0]);
    let read = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(
        read.session(),
        json!({"user_id": 42, "name": "ann-plaintext-marker"})
    );
    assert!(
        read.echo().header("x-session-sid").is_some(),
        "a sid exists in every store"
    );
    assert_eq!(read.echo().header("cookie").as_deref(), Some("theme=dark"));
    assert!(
        read.headers.get("set-cookie").is_none(),
        "a read sends no cookie"
    );

    // Tampering makes it no session.
    let mut bytes = set[0].clone().into_bytes();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &tampered)])
            .await
            .session(),
        json!({})
    );
}

#[tokio::test]
async fn large_sessions_are_split_into_numbered_cookies_and_refused_past_five() {
    let up = upstream().await;
    let gw = gateway(&yaml("  max_bytes: 100000\n", &default_secrets()), up.addr).await;
    let c = TestClient::new();
    let big = json!({"blob": "y".repeat(9000)}).to_string();
    let r = c
        .get(&gw.url("/"), &hdrs(&[reply("X-Session-Update", &big)]))
        .await;
    let set = cookies_set(&r);
    assert_eq!(set.len(), 3, "{set:?}");
    assert!(
        set[0].starts_with("sessionid=")
            && set[1].starts_with("sessionid.1=")
            && set[2].starts_with("sessionid.2=")
    );
    assert!(set.iter().all(|s| s.len() <= 4096));
    let cookie = format!("{}; other=1", set.join("; "));
    let read = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(read.session()["blob"].as_str().unwrap().len(), 9000);
    assert_eq!(
        read.echo().header("cookie").as_deref(),
        Some("other=1"),
        "chunks are never forwarded"
    );

    // Shrinking expires the chunks no longer needed.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Update", r#"{"blob":null,"small":1}"#),
            ]),
        )
        .await;
    assert_eq!(cookies_set(&r).len(), 1);
    assert_eq!(removals(&r), vec!["sessionid.1", "sessionid.2"]);

    // Past five cookies: refused, nothing set.
    let huge = json!({"blob": "z".repeat(30000)}).to_string();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[("cookie", cookie.clone()), reply("X-Session-Update", &huge)]),
        )
        .await;
    assert_eq!(r.status, 502);
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn flush_and_cycle_on_the_cookie_store() {
    let up = upstream().await;
    let gw = gateway(&yaml("", &default_secrets()), up.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"cart":[1]}"#)]),
        )
        .await;
    let old = cookies_set(&r).remove(0);
    let old_sid = c
        .get(&gw.url("/"), &[("cookie", &old)])
        .await
        .echo()
        .header("x-session-sid")
        .unwrap();

    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", old.clone()),
                reply("X-Session-Action", "cycle"),
                reply("X-Session-Update", r#"{"user_id":1}"#),
            ]),
        )
        .await;
    let new = cookies_set(&r).remove(0);
    let after = c.get(&gw.url("/"), &[("cookie", &new)]).await;
    assert_eq!(after.session(), json!({"cart": [1], "user_id": 1}));
    assert_ne!(
        after.echo().header("x-session-sid").unwrap(),
        old_sid,
        "cycle gives a new sid"
    );

    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[("cookie", new.clone()), reply("X-Session-Action", "flush")]),
        )
        .await;
    assert_eq!(removals(&r), vec!["sessionid"]);
    // By nature, a copy of the old cookie stays valid until its sealed deadline.
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &new)]).await.session(),
        json!({"cart": [1], "user_id": 1})
    );
}

#[tokio::test]
async fn sealed_deadlines_are_enforced() {
    let up = upstream().await;
    let gw = gateway(&yaml("  ttl: 1s\n", &default_secrets()), up.addr).await;
    let c = TestClient::new();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"a":1}"#)]),
        )
        .await;
    let cookie = cookies_set(&r).remove(0);
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session(),
        json!({"a": 1})
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &cookie)]).await.session(),
        Value::Object(Default::default())
    );
}

#[tokio::test]
async fn cookie_store_secrets_rotate() {
    const OLD: &str = "old-secret-0123456789abcdef-0123456789ab";
    const NEW: &str = "new-secret-0123456789abcdef-0123456789ab";
    let up = upstream().await;
    let c = TestClient::new();
    let gw = gateway(&yaml("", &format!("[\"{OLD}\"]")), up.addr).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"a":1}"#)]),
        )
        .await;
    let old_cookie = cookies_set(&r).remove(0);
    gw.stop().await;
    let gw = gateway(&yaml("", &format!("[\"{NEW}\", \"{OLD}\"]")), up.addr).await;
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &old_cookie)])
            .await
            .session(),
        json!({"a": 1})
    );
    gw.stop().await;
    let gw = gateway(&yaml("", &format!("[\"{NEW}\"]")), up.addr).await;
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &old_cookie)])
            .await
            .session(),
        json!({})
    );
}

#[tokio::test]
async fn five_chunk_sessions_work_over_http2() {
    const SIZE: usize = 14_000;
    let up = upstream().await;
    let gw = gateway(&yaml("  max_bytes: 100000\n", &default_secrets()), up.addr).await;
    let c = TestClient::http2();
    let big = json!({"blob": "q".repeat(SIZE)}).to_string();
    let r = c
        .get(&gw.url("/"), &hdrs(&[reply("X-Session-Update", &big)]))
        .await;
    let set = cookies_set(&r);
    assert_eq!(set.len(), 5, "{}", set.len());
    let read = c.get(&gw.url("/"), &[("cookie", &set.join("; "))]).await;
    assert_eq!(read.status, 200, "HTTP/2 takes the five cookies");
    assert_eq!(read.session()["blob"].as_str().unwrap().len(), SIZE);
}

#[tokio::test]
async fn stale_chunks_from_an_earlier_write_are_ignored() {
    let up = upstream().await;
    let gw = gateway(&yaml("  max_bytes: 100000\n", &default_secrets()), up.addr).await;
    let c = TestClient::new();
    let big = json!({"blob": "y".repeat(9000)}).to_string();
    let large = cookies_set(
        &c.get(&gw.url("/"), &hdrs(&[reply("X-Session-Update", &big)]))
            .await,
    );
    assert_eq!(large.len(), 3);
    // A concurrent request, sent before the large write, writes a small session last:
    // the browser ends up with the new main cookie and the old chunks.
    let small = cookies_set(
        &c.get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"small":1}"#)]),
        )
        .await,
    );
    assert_eq!(small.len(), 1);
    let mixed = format!("{}; {}; {}", small[0], large[1], large[2]);
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &mixed)]).await.session(),
        json!({"small": 1})
    );
}
