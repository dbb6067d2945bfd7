//! A real nginx in front, with `auth_request` to sessiongate's auth
//! endpoint, and the Python example upstream behind it verifying the token
//! it received through nginx with PyJWT. Logins and logouts go through a
//! route sessiongate proxies itself. The nginx config is the README's.

mod common;

use common::SECRET;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JWT: &str = "nginx-test-jwt-secret-0123456789abcdef-01";

fn succeeds(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tools are here; under CI=true their absence fails the test.
fn tools(test: &str) -> bool {
    let nginx = succeeds(Command::new("nginx").arg("-v"));
    let pyjwt = succeeds(Command::new("python3").args(["-c", "import jwt"]));
    if nginx && pyjwt {
        return true;
    }
    let why = "nginx (nginx-light) or python3 with PyJWT is missing";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true: it cannot be skipped");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    false
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The README's nginx config, with this test's addresses.
fn nginx_conf(dir: &Path, listen: SocketAddr, gate: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen {listen};
    # Pages that need a session: nginx asks sessiongate, then passes the
    # signed session it answered with to the app.
    location /private/ {{
      auth_request /_sessiongate_auth;
      auth_request_set $session_token $upstream_http_x_session_token;
      proxy_set_header X-Session-Token $session_token;
      proxy_pass http://{app};
    }}
    location = /_sessiongate_auth {{
      internal;
      proxy_pass http://{gate}/_sessiongate/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
    # Logins and logouts write the session: sessiongate proxies them itself.
    location / {{
      proxy_pass http://{gate};
    }}
  }}
}}
"#
    )
}

fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n{cookie}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let set_cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: sessionid="))
        .map(|l| {
            l["set-cookie: ".len()..]
                .split(';')
                .next()
                .unwrap()
                .to_string()
        });
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, set_cookie)
}

#[test]
#[cfg_attr(not(tool_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn nginx_auth_request_in_front_of_a_pyjwt_upstream() {
    if !tools("nginx_auth_request_in_front_of_a_pyjwt_upstream") {
        return;
    }
    let dir = common::redis::temp_dir("nginx-auth");
    let (front, gate, admin, app) = (free_addr(), free_addr(), free_addr(), free_addr());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/upstreams/python/app.py");
    let py = Command::new("python3")
        .arg(&examples)
        .arg(app.port().to_string())
        .env("UPSTREAM_JWT_SECRET", JWT)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Killed(vec![py]);
    let cfg = dir.join("sessiongate.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
listen: [{{addr: "{gate}"}}]
admin: {{addr: "{admin}"}}
secrets: ["{SECRET}"]
trusted_proxies: [127.0.0.1/32]
auth_endpoint: {{path: /_sessiongate/auth}}
session: {{cookie: {{secure: false}}, store: {{kind: memory}}}}
upstreams: {{app: {{url: "http://{app}"}}}}
routes:
  - {{match: {{path_prefix: /private/}}, upstream: app, forward: {{secret: "{JWT}"}}, require: [user_id]}}
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{secret: "{JWT}"}}}}
"#
        ),
    )
    .unwrap();
    let gw = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    running.0.push(gw);
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, front, gate, app)).unwrap();
    let nginx = Command::new("nginx")
        .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .spawn()
        .unwrap();
    running.0.push(nginx);
    for addr in [app, gate, front] {
        wait_for(addr);
    }

    // No session: nginx refuses before the app is reached.
    let (status, body, _) = get(front, "/private/orders", None);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("verified"), "{body}");

    // Log in through sessiongate (the app sets user_id and cycles).
    let (status, body, cookie) = get(front, "/login?user=alice", None);
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("the login's cookie passes through nginx");

    // With the session: the app verifies, with PyJWT, the token nginx passed.
    let (status, body, _) = get(front, "/private/orders", Some(&cookie));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["alg"], "HS256");
    assert_eq!(v["session"]["user_id"], "alice");

    // Paths a backend reads differently cannot slip through nginx either.
    for confused in [
        "/private/orders;x",
        "/private/%2e%2e%2Fadmin",
        "/private/a%5Cb",
    ] {
        let (status, body, _) = get(front, confused, Some(&cookie));
        assert_ne!(status, 200, "{confused}: {body}");
        assert!(!body.contains("verified"), "{confused}: {body}");
    }

    // Log out through sessiongate: the same cookie is refused again.
    let (status, _, _) = get(front, "/logout", Some(&cookie));
    assert_eq!(status, 200);
    let (status, _, _) = get(front, "/private/orders", Some(&cookie));
    assert_eq!(status, 401);
}
