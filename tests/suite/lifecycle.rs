// The session suite, part two: actions, expiry, concurrency and enforcement.
// Included after suite/sessions.rs, whose helpers it uses.

#[tokio::test]
async fn flush_deletes_the_session_and_expires_the_cookie() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"user_id": 1})).await;
    let r = c
        .get(
            &gw.url("/logout"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "flush"),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    let sc = r.set_cookie(COOKIE).unwrap();
    assert!(sc.contains("Max-Age=0"), "{sc}");
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({}));
}

#[tokio::test]
async fn cycle_issues_a_new_id_with_the_same_data() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let old = create(&c, &gw, json!({"cart": [1]})).await;
    let old_sid = c
        .get(&gw.url("/"), &[("cookie", &old)])
        .await
        .echo()
        .header("x-session-sid")
        .unwrap();
    let r = c
        .get(
            &gw.url("/login"),
            &hdrs(&[
                ("cookie", old.clone()),
                reply("X-Session-Action", "cycle"),
                reply("X-Session-Update", r#"{"user_id":5}"#),
            ]),
        )
        .await;
    let new = r.cookie(COOKIE).expect("new cookie");
    assert_ne!(new, old);
    let after = c.get(&gw.url("/"), &[("cookie", &new)]).await;
    assert_eq!(after.session(), json!({"cart": [1], "user_id": 5}));
    assert_ne!(after.echo().header("x-session-sid").unwrap(), old_sid);
    assert_eq!(
        session_of(&c, &gw, &old).await,
        json!({}),
        "the old id is dead"
    );
}

#[tokio::test]
async fn expiry_action_sets_the_lifetime_and_persists() {
    let (_up, gw, c) = setup("  ttl: 1h\n", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "expiry=0"),
            ]),
        )
        .await;
    let sc = r.set_cookie(COOKIE).unwrap();
    assert!(
        !sc.contains("Max-Age") && !sc.contains("Expires"),
        "browser-session cookie: {sc}"
    );
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Update", r#"{"b":2}"#),
            ]),
        )
        .await;
    assert!(
        !r.set_cookie(COOKIE).unwrap().contains("Max-Age"),
        "expiry=0 persists across saves"
    );
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "expiry=600"),
            ]),
        )
        .await;
    assert!(r.set_cookie(COOKIE).unwrap().contains("Max-Age=600"));
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Update", r#"{"c":3}"#),
            ]),
        )
        .await;
    assert!(
        r.set_cookie(COOKIE).unwrap().contains("Max-Age=600"),
        "expiry=600 persists across saves"
    );
}

#[tokio::test]
async fn invalid_updates_are_refused_and_nothing_is_written() {
    let (_up, gw, c) = setup("  max_bytes: 200\n", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    let big = json!({"blob": "x".repeat(300)}).to_string();
    let cases: Vec<Vec<(&'static str, String)>> = vec![
        vec![reply("X-Session-Update", "{not json")],
        vec![reply("X-Session-Update", "[1,2]")],
        vec![reply("X-Session-Update", "\"str\"")],
        vec![
            reply("X-Session-Update", r#"{"b":1}"#),
            reply("X-Session-Update", "oops"),
        ],
        vec![
            reply("X-Session-Update", r#"{"b":1}"#),
            reply("X-Session-Action", "logout"),
        ],
        vec![reply("X-Session-Action", "expiry=soon")],
        vec![reply("X-Session-Update", &big)],
    ];
    for case in cases {
        let mut h = case.clone();
        h.push(("cookie", cookie.clone()));
        let r = c.get(&gw.url("/"), &hdrs(&h)).await;
        assert_eq!(r.status, 502, "{case:?}");
        assert!(r.headers.get("set-cookie").is_none());
        assert_eq!(
            session_of(&c, &gw, &cookie).await,
            json!({"a": 1}),
            "{case:?}"
        );
    }
    // Without a session, a refused update creates nothing.
    let r = c
        .get(&gw.url("/"), &hdrs(&[reply("X-Session-Update", &big)]))
        .await;
    assert_eq!(r.status, 502);
    assert!(r.headers.get("set-cookie").is_none());
    let metrics = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("sessiongate_session_events_total{event=\"refused\"} 8"),
        "{metrics}"
    );
}

#[tokio::test]
async fn server_errors_change_nothing() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                (REPLY_STATUS, "503".into()),
                reply("X-Session-Update", "not even json"),
                reply("X-Session-Action", "flush"),
            ]),
        )
        .await;
    assert_eq!(r.status, 503);
    assert!(r.headers.get("set-cookie").is_none());
    assert!(
        r.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-session"))
    );
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({"a": 1}));
}

#[tokio::test]
async fn emptied_session_is_deleted_and_cookie_expired() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Update", r#"{"a":null}"#),
            ]),
        )
        .await;
    assert!(r.set_cookie(COOKIE).unwrap().contains("Max-Age=0"));
    // Writing to it again now creates a new session, not the old one.
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Update", r#"{"b":1}"#),
            ]),
        )
        .await;
    assert_ne!(r.cookie(COOKIE).unwrap(), cookie);
}

#[tokio::test]
async fn empty_update_without_session_creates_nothing() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    for update in ["{}", r#"{"absent":null}"#] {
        let r = c
            .get(
                &gw.url("/"),
                &hdrs(&[
                    reply("X-Session-Update", update),
                    reply("X-Session-Action", "expiry=60"),
                ]),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get("set-cookie").is_none(), "{update}");
    }
}

#[tokio::test]
async fn a_write_never_resurrects_a_flushed_session() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"user_id": 1})).await;
    let slow = in_flight(&gw, "/slow", &cookie, vec![reply("X-Session-Update", r#"{"late":true}"#)]).await;
    let logout = c
        .get(
            &gw.url("/logout"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "flush"),
            ]),
        )
        .await;
    assert!(logout.set_cookie(COOKIE).unwrap().contains("Max-Age=0"));
    let late = slow.await.unwrap();
    assert_eq!(late.status, 200, "the upstream's answer passes through");
    assert!(
        late.headers.get("set-cookie").is_none(),
        "no cookie for a dropped write"
    );
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({}));
    let metrics = c.get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("sessiongate_session_events_total{event=\"dropped\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_write_never_logs_out_a_concurrent_login() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"cart": 1})).await;
    let slow = in_flight(&gw, "/slow", &cookie, vec![reply("X-Session-Update", r#"{"late":1}"#)]).await;
    let login = c
        .get(
            &gw.url("/login"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "cycle"),
                reply("X-Session-Update", r#"{"user_id":2}"#),
            ]),
        )
        .await;
    let new = login.cookie(COOKIE).unwrap();
    let late = slow.await.unwrap();
    assert_eq!(late.status, 200);
    assert!(late.headers.get("set-cookie").is_none());
    assert_eq!(
        session_of(&c, &gw, &new).await,
        json!({"cart": 1, "user_id": 2})
    );
}

#[tokio::test]
async fn concurrent_merges_on_one_session_lose_nothing() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"start": true})).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let url = gw.url("/");
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let update = format!("{{\"k{i}\":{i}}}");
            let r = client()
                .get(
                    &url,
                    &hdrs(&[
                        ("cookie", cookie),
                        (REPLY_DELAY_MS, "20".into()),
                        reply("X-Session-Update", &update),
                    ]),
                )
                .await;
            assert_eq!(r.status, 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = session_of(&c, &gw, &cookie).await;
    let obj = s.as_object().unwrap();
    assert_eq!(obj.len(), 33, "{s}");
    for i in 0..32 {
        assert_eq!(obj[&format!("k{i}")], json!(i));
    }
}

#[tokio::test]
async fn session_expires_after_ttl_without_saves() {
    let (_up, gw, c) = setup("  ttl: 1s\n", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({"a": 1}));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({}));
}

#[tokio::test]
async fn absolute_ttl_ends_an_active_session() {
    let (_up, gw, c) = setup("  ttl: 10s\n  absolute_ttl: 2s\n", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"n": 0})).await;
    for n in 1..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = c
            .get(
                &gw.url("/"),
                &hdrs(&[
                    ("cookie", cookie.clone()),
                    reply("X-Session-Update", &format!("{{\"n\":{n}}}")),
                ]),
            )
            .await;
        let sc = r.set_cookie(COOKIE).unwrap();
        let max_age: u64 = sc
            .split("Max-Age=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            max_age <= 2,
            "Max-Age is capped by what absolute_ttl leaves: {sc}"
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(session_of(&c, &gw, &cookie).await, json!({}));
}

#[tokio::test]
async fn save_every_request_renews_without_creating() {
    let (_up, gw, c) = setup("  ttl: 2s\n  save_every_request: true\n", JSON_ROUTE).await;
    let anon = c.get(&gw.url("/"), &[]).await;
    assert!(
        anon.headers.get("set-cookie").is_none(),
        "never creates a session"
    );
    let cookie = create(&c, &gw, json!({"a": 1})).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(
            r.session(),
            json!({"a": 1}),
            "rolling expiry keeps it alive"
        );
        assert!(r.set_cookie(COOKIE).unwrap().contains("Max-Age=2"));
    }
}

#[tokio::test]
async fn expire_at_browser_close_sends_a_session_cookie() {
    let (_up, gw, c) = setup("  expire_at_browser_close: true\n", JSON_ROUTE).await;
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply("X-Session-Update", r#"{"a":1}"#)]),
        )
        .await;
    let sc = r.set_cookie(COOKIE).unwrap();
    assert!(!sc.contains("Max-Age") && !sc.contains("Expires"), "{sc}");
    let cookie = r.cookie(COOKIE).unwrap();
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[("cookie", cookie), reply("X-Session-Action", "expiry=60")]),
        )
        .await;
    assert!(
        r.set_cookie(COOKIE).unwrap().contains("Max-Age=60"),
        "set_expiry overrides the global setting"
    );
}

#[tokio::test]
async fn require_denies_without_the_key() {
    let routes = r#"  - {match: {path_prefix: /api/}, upstream: app, forward: {mode: json}, require: [user_id]}
  - {match: {path_prefix: /admin/}, upstream: app, forward: {mode: json}, require: [user_id, is_admin], on_deny: {redirect: "/login?next={uri}"}}
  - {match: {path_prefix: /}, upstream: app, forward: {mode: json}}"#;
    let (up, gw, c) = setup("", routes).await;
    let text = c.get(&gw.url("/api/x"), &[]).await;
    assert_eq!(text.status, 401);
    assert!(!text.text().is_empty());
    assert_eq!(text.headers["vary"], "Cookie");
    let json = c
        .get(&gw.url("/api/x"), &[("accept", "application/json")])
        .await;
    assert_eq!(json.status, 401);
    assert_eq!(json.headers["content-type"], "application/json");
    serde_json::from_slice::<Value>(&json.body).unwrap();
    let redirect = c.get(&gw.url("/admin/users?page=2&q=a%20b"), &[]).await;
    assert_eq!(redirect.status, 302);
    assert_eq!(
        redirect.headers["location"],
        "/login?next=%2Fadmin%2Fusers%3Fpage%3D2%26q%3Da%2520b"
    );
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "denied requests are not forwarded"
    );

    let cookie = create(&c, &gw, json!({"user_id": 3})).await;
    assert_eq!(
        c.get(&gw.url("/api/x"), &[("cookie", &cookie)])
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&gw.url("/admin/x"), &[("cookie", &cookie)])
            .await
            .status,
        302,
        "lacks is_admin"
    );
}

#[tokio::test]
async fn secret_rotation_keeps_old_cookies_until_the_old_secret_is_removed() {
    const OLD: &str = "old-secret-0123456789abcdef-0123456789ab";
    const NEW: &str = "new-secret-0123456789abcdef-0123456789ab";
    let up = upstream().await;
    let db = std::env::temp_dir().join(format!(
        "sessiongate-rotation-{}.db",
        sessiongate::record::SessionId::generate().encode()
    ));
    let yaml = |secrets: &str| {
        format!(
            "secrets: {secrets}\nsession: {{cookie: {{secure: false}}, store: {{kind: embedded, path: \"{}\"}}}}\nupstreams: {{app: {{url: \"http://{{upstream}}\"}}}}\nroutes:\n{JSON_ROUTE}\n",
            db.display()
        )
    };
    let c = client();

    let gw = gateway(&yaml(&format!("[\"{OLD}\"]")), up.addr).await;
    let old_cookie = create(&c, &gw, json!({"user_id": 1})).await;
    gw.stop().await;

    let gw = gateway(&yaml(&format!("[\"{NEW}\", \"{OLD}\"]")), up.addr).await;
    assert_eq!(
        session_of(&c, &gw, &old_cookie).await,
        json!({"user_id": 1}),
        "old cookies verify during rotation"
    );
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[
                ("cookie", old_cookie.clone()),
                reply("X-Session-Update", r#"{"seen":true}"#),
            ]),
        )
        .await;
    let new_cookie = r.cookie(COOKIE).unwrap();
    assert_ne!(
        new_cookie, old_cookie,
        "a save re-signs the cookie with the first secret"
    );
    gw.stop().await;

    let gw = gateway(&yaml(&format!("[\"{NEW}\"]")), up.addr).await;
    assert_eq!(
        session_of(&c, &gw, &new_cookie).await,
        json!({"user_id": 1, "seen": true})
    );
    assert_eq!(
        session_of(&c, &gw, &old_cookie).await,
        json!({}),
        "the retired secret verifies nothing"
    );
    gw.stop().await;
}

#[tokio::test]
async fn require_cannot_be_bypassed_with_path_tricks() {
    let routes = "  - {match: {path_prefix: /api/}, upstream: app, forward: {mode: json}, require: [user_id]}\n  - {match: {path_prefix: /}, upstream: app, forward: {mode: json}}";
    let (up, gw, c) = setup("", routes).await;
    for tricky in [
        "/%61pi/users",
        "//api/users",
        "/x/../api/users",
        "/api/./users",
    ] {
        assert_eq!(
            c.get(&gw.url(tricky), &[]).await.status,
            401,
            "{tricky} bypassed require"
        );
    }
    // An encoded slash is refused outright (SPEC section 8.1).
    for refused in ["/../api/users", "/%2Fapi/users"] {
        assert_eq!(c.get(&gw.url(refused), &[]).await.status, 400, "{refused}");
    }
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let cookie = create(&c, &gw, json!({"user_id": 1})).await;
    let r = c.get(&gw.url("/%61pi/users"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echo().path,
        "/%61pi/users",
        "the path is forwarded as the client wrote it"
    );
}

#[tokio::test]
async fn non_ascii_cookie_header_never_leaks_the_session_id() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"user_id": 1})).await;
    let header = format!("name=José; {cookie}");
    let r = c.get(&gw.url("/"), &[("cookie", &header)]).await;
    assert_eq!(r.session(), json!({"user_id": 1}));
    let forwarded = r.echo().header("cookie").unwrap();
    assert!(!forwarded.contains("sessionid"), "{forwarded}");
    assert!(forwarded.starts_with("name=Jos"), "{forwarded}");
}

#[tokio::test]
async fn headers_filled_by_any_route_cannot_be_spoofed_through_another() {
    let routes = "  - {match: {path_prefix: /a/}, upstream: app, forward: {mode: json, header: X-App-Session, headers: {X-User-Id: user_id}}}\n  - {match: {path_prefix: /}, upstream: app, forward: {mode: none}}";
    let (_up, gw, c) = setup("", routes).await;
    let echo = c
        .get(
            &gw.url("/b"),
            &[("x-user-id", "1"), ("x-app-session", r#"{"admin":true}"#)],
        )
        .await
        .echo();
    assert_eq!(echo.header("x-user-id"), None);
    assert_eq!(echo.header("x-app-session"), None);
}

#[tokio::test]
async fn a_slow_logout_does_not_log_out_a_concurrent_login() {
    let (_up, gw, c) = setup("", JSON_ROUTE).await;
    let cookie = create(&c, &gw, json!({"cart": 1})).await;
    let slow = in_flight(&gw, "/logout", &cookie, vec![reply("X-Session-Action", "flush"), reply("X-Session-Update", r#"{"x":1}"#)]).await;
    let login = c
        .get(
            &gw.url("/login"),
            &hdrs(&[
                ("cookie", cookie.clone()),
                reply("X-Session-Action", "cycle"),
                reply("X-Session-Update", r#"{"user_id":2}"#),
            ]),
        )
        .await;
    let new = login.cookie(COOKIE).unwrap();
    let late = slow.await.unwrap();
    assert_eq!(late.status, 200);
    assert!(
        late.headers.get("set-cookie").is_none(),
        "the login's cookie is left alone"
    );
    assert_eq!(
        session_of(&c, &gw, &new).await,
        json!({"cart": 1, "user_id": 2})
    );
}
