//! The README's table of Django equivalents, row by row, through the real
//! proxy: what an app moving its sessions out of Django answers instead of
//! calling `request.session`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_django_session_call_has_its_header() {
    let up = upstream().await;
    let gw = gateway(&config("  ttl: 1h", JSON_ROUTE), up.addr).await;
    let c = TestClient::new();
    let url = gw.url("/");
    let with = |cookie: &str, reply_header: Option<(&str, &str)>| {
        let mut h = vec![("cookie", cookie.to_string())];
        if let Some((name, value)) = reply_header {
            h.push((REPLY_HEADER, format!("{name}: {value}")));
        }
        h
    };

    // request.session["cart"] = [1] and request.session.set_test_cookie()
    let r = c
        .get(
            &url,
            &hdrs(&[reply(
                "x-session-update",
                r#"{"cart": [1], "testcookie": "worked"}"#,
            )]),
        )
        .await;
    let cookie = r.cookie("sessionid").unwrap();
    assert!(r.set_cookie("sessionid").unwrap().contains("Max-Age=3600"));
    // request.session["cart"] and request.session.test_cookie_worked()
    let read = c.get(&url, &hdrs(&with(&cookie, None))).await;
    assert_eq!(read.session(), json!({"cart": [1], "testcookie": "worked"}));
    // request.session.delete_test_cookie() and del request.session["cart"]
    let r = c
        .get(
            &url,
            &hdrs(&with(
                &cookie,
                Some((
                    "x-session-update",
                    r#"{"testcookie": null, "cart": null, "n": 1}"#,
                )),
            )),
        )
        .await;
    assert_eq!(r.status, 200);
    let read = c.get(&url, &hdrs(&with(&cookie, None))).await;
    assert_eq!(read.session(), json!({"n": 1}));

    // request.session.set_expiry(0): a browser-session cookie; set_expiry(300).
    let r = c
        .get(
            &url,
            &hdrs(&with(&cookie, Some(("x-session-action", "expiry=0")))),
        )
        .await;
    let set = r.set_cookie("sessionid").unwrap();
    assert!(!set.contains("Max-Age"), "a browser-session cookie: {set}");
    let r = c
        .get(
            &url,
            &hdrs(&with(&cookie, Some(("x-session-action", "expiry=300")))),
        )
        .await;
    assert!(r.set_cookie("sessionid").unwrap().contains("Max-Age=300"));

    // request.session.cycle_key(): same data, new id, the old id gone.
    let r = c
        .get(
            &url,
            &hdrs(&with(&cookie, Some(("x-session-action", "cycle")))),
        )
        .await;
    let cycled = r.cookie("sessionid").unwrap();
    assert_ne!(cycled, cookie);
    assert_eq!(
        c.get(&url, &hdrs(&with(&cycled, None))).await.session(),
        json!({"n": 1})
    );
    assert_eq!(
        c.get(&url, &hdrs(&with(&cookie, None))).await.session(),
        json!({}),
        "the old id no longer names a session"
    );

    // request.session.flush(): the session deleted, the cookie expired.
    let r = c
        .get(
            &url,
            &hdrs(&with(&cycled, Some(("x-session-action", "flush")))),
        )
        .await;
    assert!(r.set_cookie("sessionid").unwrap().contains("Max-Age=0"));
    assert_eq!(
        c.get(&url, &hdrs(&with(&cycled, None))).await.session(),
        json!({})
    );
    gw.stop().await;
}
