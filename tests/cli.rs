//! The real binary: `check`, `keygen`, `clear-sessions`, `demo`, signals,
//! restarts and crashes on the embedded store, and the access log.

mod common;

use common::process::*;
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The files the example configs name (certificates, keys), made here.
fn example_files(root: &Path) {
    let ca = common::tls::TestCa::new();
    let tls = root.join("config/tls");
    std::fs::create_dir_all(&tls).unwrap();
    for name in ["app", "api"] {
        let leaf = ca.leaf(&[&format!("{name}.example.com")], &tls, name);
        std::fs::rename(leaf.cert, tls.join(format!("{name}.cert.pem"))).unwrap();
        std::fs::rename(leaf.key, tls.join(format!("{name}.key.pem"))).unwrap();
    }
    std::fs::write(tls.join("upstream-ca.pem"), ca.pem()).unwrap();
    std::fs::create_dir_all(root.join("config/keys")).unwrap();
    succeeded(
        sessiongate(&["keygen", "--ed25519", "--out", "config/keys/signing"]).current_dir(root),
    );
}

#[test]
fn example_configs_pass_check() {
    let root = temp_dir("examples");
    example_files(&root);
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = sessiongate(&["check", "--config", path.to_str().unwrap()])
            .current_dir(&root)
            .env(
                "SESSIONGATE_SECRET",
                "example-secret-0123456789abcdef-0123456789",
            )
            .env(
                "SESSIONGATE_PREVIOUS_SECRET",
                "example-previous-0123456789abcdef-012345",
            )
            .env(
                "UPSTREAM_JWT_SECRET",
                "example-upstream-secret-0123456789abcdef",
            )
            .env(
                "ADMIN_JWT_SECRET",
                "example-admin-secret-0123456789abcdef-01",
            )
            .env("API_JWT_SECRET", "example-api-secret-0123456789abcdef-0123")
            .env("UPSTREAM_URL", "http://app:3000")
            .env(
                "DATABASE_URL",
                "postgres://sessiongate:example-password@db.internal/app",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} example configs");
}

#[test]
fn check_reports_every_problem_with_its_path_and_never_a_secret() {
    let dir = temp_dir("check");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        r#"
secrets: ["hunter2-short-secret", "env:SESSIONGATE_SURELY_UNSET_VAR", "file:/nonexistent/secret"]
session:
  cookie: {name: __Host-sid, domain: example.com, path: /app, secure: false, same_site: none}
  ttl: 3 fortnights
upstreams:
  app: {url: "http://127.0.0.1:3000"}
routes:
  - {match: {path_prefix: /}, upstream: app, forward: {mode: json}}
  - {match: {path_prefix: /b}, upstream: billing, forward: {mode: signed, secret: "tiny-jwt-secret"}}
  - {match: {path_prefix: /c}, upstream: app, forward: {mode: json}, colour: blue}
"#,
    )
    .unwrap();
    let out = sessiongate(&["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "secrets[0]: secret is 20 bytes long",
        "secrets[1]: environment variable SESSIONGATE_SURELY_UNSET_VAR is not set",
        "secrets[2]: cannot read secret file /nonexistent/secret",
        "session.cookie.same_site: `none` requires `secure: true`",
        "session.cookie.domain: a __Host- cookie must not set a domain",
        "session.cookie.path: a __Host- cookie must have path /",
        "session.cookie.secure: a __Host- cookie must be secure",
        "session.ttl: invalid duration",
        "routes[1].upstream: unknown upstream \"billing\"",
        "routes[1].forward.secret: secret is 15 bytes long",
        "routes[2].colour: unknown field `colour`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("hunter2") && !text.contains("tiny-jwt"),
        "a secret was echoed:\n{text}"
    );
}

#[test]
fn check_never_echoes_values_in_type_errors() {
    let dir = temp_dir("check-redact");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "secrets: [\"{SECRET}\"]\nsession: {{store: {{kind: redis, cluster: \"redis://:hunter3-password@10.0.0.1\"}}}}\nupstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\nroutes: [{{upstream: app, forward: {{mode: none}}}}]\n"
        ),
    )
    .unwrap();
    let out = sessiongate(&["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("session.store: invalid type: string"),
        "{text}"
    );
    assert!(!text.contains("hunter3"), "{text}");
}

/// serde stops at a section's first unknown key; check does not, and takes
/// Django's capitalisation of SameSite.
#[test]
fn check_reports_every_unknown_key_of_a_section_on_stderr() {
    let dir = temp_dir("check-typos");
    let path = dir.join("typos.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
secrets: ["{SECRET}"]
session:
  tll: 2w
  cookie: {{secrue: true, same_site: Strict, htp_only: true}}
upstreams:
  app: {{url: "http://127.0.0.1:3000", timout: 5s}}
routes:
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}
"#
        ),
    )
    .unwrap();
    let out = sessiongate(&["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "the report is on stderr"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "session.tll: unknown field `tll`",
        "session.cookie.secrue: unknown field `secrue`",
        "session.cookie.htp_only: unknown field `htp_only`",
        "upstreams.app.timout: unknown field `timout`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("unknown variant"),
        "`Strict` is accepted:\n{text}"
    );

    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("tll: 2w", "ttl: 2w")
        .replace("secrue: true", "secure: true")
        .replace("htp_only", "http_only")
        .replace(", timout: 5s", "");
    std::fs::write(&path, fixed).unwrap();
    let out = succeeded(&mut sessiongate(&[
        "check",
        "--config",
        path.to_str().unwrap(),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn keygen_prints_fresh_strong_secrets() {
    let a = sessiongate(&["keygen"]).output().unwrap();
    let b = sessiongate(&["keygen"]).output().unwrap();
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(a.trim().len(), 43);
    assert!(
        a.trim()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
}

#[test]
fn clear_sessions_on_memory_prints_zero_and_explains() {
    let dir = temp_dir("clear-mem");
    let cfg = write_config(
        &dir,
        free_addr(),
        free_addr(),
        free_addr(),
        "{kind: memory}",
        "",
    );
    let out = sessiongate(&["clear-sessions", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory store lives inside"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = upstream().await;
    let dir = temp_dir("sigterm");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, up.addr, "{kind: memory}", "");
    // One worker thread: the single-threaded scheduler drains like the other.
    let proc = Running::start(&cfg, admin, &dir, &[("TOKIO_WORKER_THREADS", "1")]);
    // A reload signal never kills the proxy, TLS or not.
    proc.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    proc.wait_ready();
    let url = format!("http://{listen}/slow");
    let in_flight = tokio::spawn(async move {
        TestClient::new()
            .get(&url, &[(REPLY_DELAY_MS, "800")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    proc.signal("-TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    let (status, log) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(std::net::TcpStream::connect(listen).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sessions_survive_restart_and_sigkill() {
    let up = upstream().await;
    let dir = temp_dir("restart");
    let (listen, admin) = (free_addr(), free_addr());
    let store = "{kind: embedded, path: data/sessions.db}";
    let cfg = write_config(&dir, listen, admin, up.addr, store, "");
    let c = TestClient::new();
    let url = format!("http://{listen}/");

    let proc = Running::start(&cfg, admin, &dir, &[]);
    let first = c
        .get(&url, &hdrs(&[reply("X-Session-Update", r#"{"n":0}"#)]))
        .await
        .cookie("sessionid")
        .unwrap();
    proc.signal("-TERM");
    tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();

    // Restarted on one worker thread (tokio's single-threaded scheduler).
    let proc = Running::start(&cfg, admin, &dir, &[("TOKIO_WORKER_THREADS", "1")]);
    assert_eq!(
        c.get(&url, &[("cookie", &first)]).await.session(),
        json!({"n": 0}),
        "survives a clean restart"
    );
    // Acknowledged writes, then SIGKILL: none may be lost.
    let mut cookies = Vec::new();
    for i in 0..40 {
        let r = c
            .get(
                &url,
                &hdrs(&[reply("X-Session-Update", &format!("{{\"i\":{i}}}"))]),
            )
            .await;
        assert_eq!(r.status, 200);
        cookies.push(r.cookie("sessionid").unwrap());
    }
    let r = c
        .get(
            &url,
            &hdrs(&[
                ("cookie", first.clone()),
                reply("X-Session-Update", r#"{"n":1}"#),
            ]),
        )
        .await;
    assert_eq!(r.status, 200);
    proc.signal("-KILL");
    tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();

    let _proc = Running::start(&cfg, admin, &dir, &[]);
    assert_eq!(
        c.get(&url, &[("cookie", &first)]).await.session(),
        json!({"n": 1})
    );
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            c.get(&url, &[("cookie", cookie)]).await.session(),
            json!({"i": i}),
            "write {i} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_sessions_counts_expired_and_refuses_a_file_in_use() {
    let up = upstream().await;
    let dir = temp_dir("clear-embedded");
    let (listen, admin) = (free_addr(), free_addr());
    let store = "{kind: embedded, path: data/sessions.db}";
    let written = write_config(&dir, listen, admin, up.addr, store, "");
    let cfg = std::fs::read_to_string(written)
        .unwrap()
        .replace("session:\n", "session:\n  ttl: 1s\n");
    let cfg_path = dir.join("short.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();

    let proc = Running::start(&cfg_path, admin, &dir, &[]);
    let c = TestClient::new();
    for i in 0..3 {
        c.get(
            &format!("http://{listen}/"),
            &hdrs(&[reply("X-Session-Update", &format!("{{\"i\":{i}}}"))]),
        )
        .await;
    }
    let busy = sessiongate(&["clear-sessions", "--config", cfg_path.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("sweeps expired sessions itself"));
    proc.signal("-TERM");
    tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = succeeded(
        sessiongate(&["clear-sessions", "--config", cfg_path.to_str().unwrap()]).current_dir(&dir),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let again = sessiongate(&["clear-sessions", "--config", cfg_path.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request_and_no_secrets() {
    let up = upstream().await;
    let dir = temp_dir("log");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(
        &dir,
        listen,
        admin,
        up.addr,
        "{kind: memory}",
        "log: {format: json}",
    );
    let proc = Running::start(&cfg, admin, &dir, &[("RUST_LOG", "info")]);
    let c = TestClient::new();
    let r = c
        .get(
            &format!("http://{listen}/"),
            &hdrs(&[reply("X-Session-Update", r#"{"user":"secret-user-data"}"#)]),
        )
        .await;
    let cookie = r.cookie("sessionid").unwrap();
    c.get(
        &format!("http://{listen}/page?token=querysecret"),
        &[("cookie", &cookie), ("x-request-id", "rid-42")],
    )
    .await;
    proc.signal("-TERM");
    let (_, log) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sessiongate::access")
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    let line = &access[1];
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/page");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/");
    assert_eq!(line["span"]["request_id"], "rid-42");
    assert!(line["duration_ms"].as_f64().is_some());
    let value = cookie.split_once('=').unwrap().1;
    for secret in [value, "secret-user-data", "querysecret", SECRET] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_a_session_working() {
    let dir = temp_dir("demo");
    let demo = Demo::start(&dir).await;
    let listen = demo.listen;
    let c = TestClient::new();
    let home = c.get(&format!("http://{listen}/"), &[]).await;
    assert_eq!(home.status, 200);
    assert!(home.text().contains("sessiongate demo"));
    let denied = c.get(&format!("http://{listen}/private"), &[]).await;
    assert_eq!(denied.status, 302);
    // The page embeds the CSRF token; the cookie holds its secret.
    let csrf_cookie = home.cookie("csrftoken").expect("a CSRF cookie");
    let text = home.text();
    let token = text
        .split("name=csrfmiddlewaretoken value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form embeds the token")
        .to_string();
    let post_login = |with_token: bool| {
        let body = if with_token {
            format!("name=ann&csrfmiddlewaretoken={token}")
        } else {
            "name=ann".to_string()
        };
        http::Request::post(format!("http://{listen}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", csrf_cookie.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    assert_eq!(c.send(post_login(false)).await.status, 403);
    let login = c.send(post_login(true)).await;
    assert_eq!(login.status, 303);
    let cookie = login
        .cookie("demo_session")
        .expect("login sets the session cookie");
    let page = c
        .get(&format!("http://{listen}/private"), &[("cookie", &cookie)])
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("ann"));
    assert!(
        dir.join("data/demo-sessions.db").exists(),
        "the demo runs on the embedded store"
    );
    drop(demo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_without_dropping_connections() {
    use rustls_pki_types::pem::PemObject;
    let up = upstream().await;
    let dir = temp_dir("sighup");
    let ca = common::tls::TestCa::new();
    let first = ca.leaf(&["localhost"], &dir, "first");
    let second = ca.leaf(&["localhost"], &dir, "second");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = dir.join("tls.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [{{addr: \"{listen}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]\nadmin: {{addr: \"{admin}\"}}\nsecrets: [\"{SECRET}\"]\nsession: {{store: {{kind: memory}}}}\nupstreams: {{app: {{url: \"http://{}\"}}}}\nroutes:\n{JSON_ROUTE}\n",
            cert.display(),
            key.display(),
            up.addr
        ),
    )
    .unwrap();
    let proc = Running::start(&cfg, admin, &dir, &[]);

    sessiongate::install_crypto_provider();
    let roots = sessiongate::keys::root_store(Some(&first.ca)).unwrap();
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Full<bytes::Bytes>,
        >(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
        tokio::spawn(conn);
        (presented, sender)
    };
    let der = |p: &Path| {
        rustls_pki_types::CertificateDer::from_pem_file(p)
            .unwrap()
            .to_vec()
    };
    let request = || {
        http::Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    let (presented, mut old_conn) = connect().await;
    assert_eq!(presented, der(&first.cert));
    assert_eq!(
        old_conn.send_request(request()).await.unwrap().status(),
        200
    );

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    proc.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (presented, _) = connect().await;
        if presented == der(&second.cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        old_conn.send_request(request()).await.unwrap().status(),
        200,
        "an established connection survives the reload"
    );
    proc.signal("-TERM");
    let (status, _) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A reload signal sent while the process is still starting does not end
/// it (SIGHUP's default action would).
#[test]
fn sighup_in_the_first_milliseconds_does_not_kill_the_process() {
    let dir = temp_dir("early-hup");
    let cfg = write_config(
        &dir,
        free_addr(),
        free_addr(),
        free_addr(),
        "{kind: memory}",
        "",
    );
    for _ in 0..5 {
        let mut child = sessiongate(&["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        // The dynamic loader runs before any of the program's code can
        // change a signal's disposition, so the signals start once the
        // program's first instruction has run: SIGHUP must be ignored from
        // then on, before the reload handler (caught) is installed.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Once SIGHUP is ignored (the first instruction) or caught (the
        // reload handler), the program runs; a poller descheduled past the
        // first sees only the second, so either starts the flood.
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let hup_set = |field: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(field))
                    .is_some_and(|m| u64::from_str_radix(m.trim(), 16).unwrap() & 1 == 1)
            };
            if hup_set("SigIgn:") || hup_set("SigCgt:") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never started");
        }
        for _ in 0..100 {
            let _ = Command::new("kill").args(["-HUP", &pid]).status();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process died of an early SIGHUP"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
