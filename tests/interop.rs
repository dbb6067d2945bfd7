//! Interoperability with JWT implementations we did not write: the example
//! upstreams under examples/upstreams (Python with PyJWT, Node.js with jose,
//! Go with golang-jwt) behind the real proxy verify the session header
//! (HS256, and EdDSA through the JWKS) and write back.
//!
//! Python is required under `CI=true` (`.ci/run` installs PyJWT); Node.js and
//! Go run where their toolchain and library are present, and are skipped
//! loudly otherwise.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/upstreams");

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(test: &str, why: &str, required_in_ci: bool) -> Option<Command> {
    if required_in_ci && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true: it cannot be skipped");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    None
}

/// The command that starts the example upstream in `lang`, or `None` (said loudly) when it cannot run here.
fn app_command(lang: &str, test: &str) -> Option<Command> {
    let dir = Path::new(EXAMPLES).join(lang);
    match lang {
        "python" => {
            if !succeeds(Command::new("python3").args(["-c", "import jwt, cryptography"])) {
                return skip(
                    test,
                    "python3 with PyJWT is missing (pip install -r examples/upstreams/python/requirements.txt)",
                    true,
                );
            }
            let mut c = Command::new("python3");
            c.arg(dir.join("app.py"));
            Some(c)
        }
        "node" => {
            if !succeeds(Command::new("node").arg("--version"))
                || !dir.join("node_modules/jose").exists()
            {
                return skip(
                    test,
                    "node or examples/upstreams/node/node_modules is missing (npm install there)",
                    false,
                );
            }
            let mut c = Command::new("node");
            c.arg(dir.join("app.mjs"));
            Some(c)
        }
        "go" => {
            // Debian's golang-jwt package, seen under its module path.
            let lib = Path::new("/usr/share/gocode/src/github.com/golang-jwt/jwt");
            if !succeeds(Command::new("go").arg("version")) || !lib.exists() {
                return skip(
                    test,
                    "go or golang-github-golang-jwt-jwt-dev is missing",
                    false,
                );
            }
            let gopath = common::redis::temp_dir("gopath");
            std::fs::create_dir_all(gopath.join("src/github.com/golang-jwt/jwt")).unwrap();
            std::os::unix::fs::symlink(lib, gopath.join("src/github.com/golang-jwt/jwt/v4"))
                .unwrap();
            let bin: PathBuf = gopath.join("upstream");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg("main.go")
                .current_dir(&dir)
                .env("GO111MODULE", "off")
                .env("GOPATH", &gopath)
                .env("GOCACHE", gopath.join("cache"))
                .status()
                .unwrap();
            assert!(built.success(), "the Go example does not build");
            Some(Command::new(bin))
        }
        other => unreachable!("no example in {other}"),
    }
}

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(mut cmd: Command, addr: SocketAddr, env: &[(&str, String)]) -> App {
    cmd.arg(addr.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let app = App(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the example app did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app
}

async fn walk_through(gw: &Gateway, alg: &str) {
    let c = TestClient::new();
    let body = |r: &Reply| -> Value {
        serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}: {}", r.status, r.text()))
    };

    let anon = c.get(&gw.url("/whoami"), &[]).await;
    assert_eq!(anon.status, 200, "{}", anon.text());
    assert_eq!(
        body(&anon),
        json!({"verified": true, "alg": alg, "sid": null, "session": {}})
    );

    let login = c.get(&gw.url("/login?user=ann"), &[]).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login
        .cookie("sessionid")
        .expect("the app's update created a session");
    // The app sees the count before its own update is applied.
    for seen in [Value::Null, json!(1)] {
        let r = c.get(&gw.url("/count"), &[("cookie", &cookie)]).await;
        assert_eq!(body(&r)["session"]["count"], seen);
    }
    let me = body(&c.get(&gw.url("/whoami"), &[("cookie", &cookie)]).await);
    assert_eq!(me["session"], json!({"user_id": "ann", "count": 2}));
    assert!(me["sid"].as_str().is_some_and(|s| !s.is_empty()));

    let out = c.get(&gw.url("/logout"), &[("cookie", &cookie)]).await;
    assert!(out.set_cookie("sessionid").unwrap().contains("Max-Age=0"));
    assert_eq!(
        body(&c.get(&gw.url("/whoami"), &[("cookie", &cookie)]).await)["session"],
        json!({})
    );
}

async fn hs256(lang: &str, test: &str) {
    let Some(cmd) = app_command(lang, test) else {
        return;
    };
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _app = start(
        cmd,
        addr,
        &[("UPSTREAM_JWT_SECRET", JWT_SECRET.to_string())],
    )
    .await;
    let routes = format!(
        "  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: signed, secret: \"{JWT_SECRET}\"}}}}"
    );
    let gw = gateway(&config("", &routes), addr).await;
    walk_through(&gw, "HS256").await;
}

async fn eddsa(lang: &str, test: &str) {
    let Some(cmd) = app_command(lang, test) else {
        return;
    };
    let dir = common::redis::temp_dir("interop");
    let (private, _, _) = sessiongate::keys::ed25519::generate();
    let key = dir.join("signing.pem");
    std::fs::write(&key, private).unwrap();
    // The gateway needs the app's address, and the app the gateway's JWKS URL.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        "  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: signed, private_key: \"{}\"}}}}",
        key.display()
    );
    let gw = gateway(&config("", &routes), addr).await;
    let _app = start(
        cmd,
        addr,
        &[(
            "SESSIONGATE_JWKS_URL",
            gw.admin_url("/.well-known/jwks.json"),
        )],
    )
    .await;
    walk_through(&gw, "EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_upstream_verifies_hs256_and_writes_back() {
    hs256("python", "python_upstream_verifies_hs256_and_writes_back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_upstream_verifies_eddsa_through_the_jwks() {
    eddsa("python", "python_upstream_verifies_eddsa_through_the_jwks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_node_example),
    ignore = "needs node and examples/upstreams/node/node_modules (npm install there)"
)]
async fn node_upstream_verifies_hs256_and_writes_back() {
    hs256("node", "node_upstream_verifies_hs256_and_writes_back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_node_example),
    ignore = "needs node and examples/upstreams/node/node_modules (npm install there)"
)]
async fn node_upstream_verifies_eddsa_through_the_jwks() {
    eddsa("node", "node_upstream_verifies_eddsa_through_the_jwks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_go_example),
    ignore = "needs go and Debian's golang-github-golang-jwt-jwt-dev"
)]
async fn go_upstream_verifies_hs256_and_writes_back() {
    hs256("go", "go_upstream_verifies_hs256_and_writes_back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_go_example),
    ignore = "needs go and Debian's golang-github-golang-jwt-jwt-dev"
)]
async fn go_upstream_verifies_eddsa_through_the_jwks() {
    eddsa("go", "go_upstream_verifies_eddsa_through_the_jwks").await;
}
