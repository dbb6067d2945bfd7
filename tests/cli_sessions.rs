//! `sessiongate sessions list|revoke`: the real binary against a running
//! instance's admin API.

mod common;

use common::*;
use serde_json::{Value, json};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");
const TOKEN: &str = "admin-token-0123456789abcdef-0123456789";
const COOKIE: &str = "sessionid";

fn yaml(admin_addr: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
admin: {{addr: "{admin_addr}", token: "{TOKEN}"}}
session:
  cookie: {{secure: false}}
  store: {{kind: memory}}
  subject_key: user_id
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 5s}}
routes:
{JSON_ROUTE}
"#
    )
}

/// Runs the CLI off the runtime's threads.
async fn cli(args: Vec<String>, token: Option<&str>) -> Output {
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut c = Command::new(BIN);
        c.args(&args).env_remove("SESSIONGATE_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("SESSIONGATE_ADMIN_TOKEN", t);
        }
        c.output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn login(c: &TestClient, gw: &Gateway, user: &str) -> (String, String) {
    let r = c
        .get(
            &gw.url("/"),
            &hdrs(&[reply(
                "X-Session-Update",
                &json!({ "user_id": user }).to_string(),
            )]),
        )
        .await;
    let cookie = r.cookie(COOKIE).unwrap();
    let r = c.get(&gw.url("/"), &[("cookie", &cookie)]).await;
    // Creation times are kept in milliseconds: two logins within one
    // would list in the order of their sids, not newest first.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    (cookie, r.echo().header("x-session-sid").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_revokes_through_the_admin_api() {
    let up = upstream().await;
    let gw = gateway(&yaml("127.0.0.1:9"), up.addr).await;
    let c = TestClient::new();
    let (a1, s1) = login(&c, &gw, "alice smith").await;
    let (_a2, s2) = login(&c, &gw, "alice smith").await;
    let (b1, sb) = login(&c, &gw, "bob").await;
    let admin = format!("http://{}", gw.admin);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["sessions".to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--admin".to_string(), admin.clone()]);
        v
    };

    // A table for people: both sessions, newest first, and a count.
    let o = cli(args(&["list", "--subject", "alice smith"]), Some(TOKEN)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("SID"), "{out}");
    let first = out.find(&s2).expect("s2 listed");
    let second = out.find(&s1).expect("s1 listed");
    assert!(first < second, "newest first:\n{out}");
    assert!(out.ends_with("2 live sessions of alice smith\n"), "{out}");

    // JSON for scripts, as the API gives it.
    let o = cli(args(&["list", "--subject", "bob", "--json"]), Some(TOKEN)).await;
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["sessions"][0]["sid"], sb);

    // A token that cannot be a header value: exit 1, no panic, not echoed.
    let o = cli(args(&["list", "--subject", "bob"]), Some("bad\u{1}token")).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be sent"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("bad"), "{}", stderr(&o));

    // A wrong token: exit 1 and a clear message.
    let o = cli(args(&["list", "--subject", "bob"]), Some("nope")).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // Revoke one by sid, then the rest of the subject.
    let o = cli(args(&["revoke", "--sid", &s1]), Some(TOKEN)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("revoked 1 session (sid {s1})\n"));
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &a1)]).await.session(),
        json!({})
    );
    let o = cli(args(&["revoke", "--sid", &s1]), Some(TOKEN)).await;
    assert_eq!(o.status.code(), Some(1), "an unknown sid is an error");
    assert!(stderr(&o).contains("no live session"), "{}", stderr(&o));
    let o = cli(args(&["revoke", "--subject", "alice smith"]), Some(TOKEN)).await;
    assert_eq!(stdout(&o), "revoked 1 session of alice smith\n");

    // From the config alone: the admin address and the token.
    let dir = common::redis::temp_dir("cli-sessions");
    let path = dir.join("sessiongate.yaml");
    std::fs::write(
        &path,
        yaml(&gw.admin.to_string()).replace("{upstream}", &up.addr.to_string()),
    )
    .unwrap();
    let o = cli(
        vec![
            "--config".into(),
            path.display().to_string(),
            "sessions".into(),
            "revoke".into(),
            "--subject".into(),
            "bob".into(),
            "--json".into(),
        ],
        None,
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        json!({"revoked": 1})
    );
    assert_eq!(
        c.get(&gw.url("/"), &[("cookie", &b1)]).await.session(),
        json!({})
    );

    // Without a config, --admin and the variable are both needed.
    let o = cli(
        vec![
            "--config".into(),
            "/nonexistent.yaml".into(),
            "sessions".into(),
            "list".into(),
            "--subject".into(),
            "bob".into(),
            "--admin".into(),
            admin.clone(),
        ],
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("SESSIONGATE_ADMIN_TOKEN"),
        "{}",
        stderr(&o)
    );
    gw.stop().await;
}

fn check(yaml: &str) -> Output {
    let dir = common::redis::temp_dir("check-manage");
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn check_judges_the_management_settings() {
    let base = |admin: &str, session: &str| {
        format!(
            "secrets: [\"{SECRET}\"]\nadmin: {admin}\nsession: {session}\nupstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\nroutes: [{{upstream: app, forward: {{mode: none}}}}]\n"
        )
    };
    let o = check(&base(
        "{token: short-admin-token}",
        "{subject_key: \"\", max_per_subject: 0}",
    ));
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "admin.token: secret is 17 bytes long",
        "session.subject_key: must name a top-level key",
        "session.max_per_subject: must be at least 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("short-admin-token"),
        "a secret was echoed:\n{text}"
    );
    let o = check(&base("{addr: \"127.0.0.1:9090\"}", "{max_per_subject: 3}"));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("session.max_per_subject: needs session.subject_key")
    );
    // Allowed, but it cannot do what it says: a warning, and ok.
    let o = check(&base(
        &format!("{{token: \"{TOKEN}\"}}"),
        "{store: {kind: cookie}, subject_key: user_id}",
    ));
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(stdout(&o), "ok\n");
    assert!(
        stderr(&o).contains("warning: session.subject_key: the cookie store"),
        "{}",
        stderr(&o)
    );
}
