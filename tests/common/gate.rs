//! The gateway and the recording upstream the HTTP conformance tests share.

use super::SECRET;
use super::raw::*;
use std::net::SocketAddr;

/// `/admin/` and host `admin.example.com` need `user_id`; everything else is open.
pub fn yaml(extra: &str) -> String {
    format!(
        r#"
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {{kind: memory}}
upstreams:
  app: {{url: "http://{{upstream}}", timeout: 2s}}
{extra}
routes:
  - {{match: {{path_prefix: /admin/}}, upstream: app, forward: {{mode: json}}, require: [user_id]}}
  - {{match: {{host: admin.example.com}}, upstream: app, forward: {{mode: json}}, require: [user_id]}}
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json, headers: {{X-User-Id: user_id}}}}}}
"#
    )
}

/// `/login` logs in as user 7; the framing paths answer with the framing
/// they are named for; everything else answers `ok`.
pub fn answers(method: &str, target: &str) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or(target);
    let r: &[u8] = match path {
        "/login" => {
            b"HTTP/1.1 200 OK\r\nX-Session-Update: {\"user_id\":7}\r\nContent-Length: 2\r\n\r\nin"
        }
        "/cl-te" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        }
        "/te-cl" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        }
        "/cl-word" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "/cl-word" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
        "/cl-list" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
        "/cl-list" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        "/cl-twice" if method == "HEAD" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"
        }
        "/cl-twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        "/switch" => {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        }
        _ if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    };
    r.to_vec()
}

pub struct Setup {
    pub up: Recorder,
    pub addr: SocketAddr,
    _gw: super::Gateway,
}

pub async fn setup(extra: &str) -> Setup {
    let up = recording_upstream(answers).await;
    let gw = super::gateway(&yaml(extra), up.addr).await;
    Setup {
        addr: gw.addr,
        up,
        _gw: gw,
    }
}

impl Setup {
    pub async fn send(&self, bytes: &[u8]) -> RawResponse {
        exchange(self.addr, bytes).await
    }

    pub async fn get(&self, target: &str, extra: &str) -> RawResponse {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: app.example.com\r\n{extra}Connection: close\r\n\r\n"
        );
        self.send(req.as_bytes()).await
    }

    /// A session cookie holding `user_id: 7`.
    pub async fn login(&self) -> String {
        let r = self.get("/login", "").await;
        assert_eq!(r.status, 200);
        r.cookie("sessionid").expect("a session cookie")
    }
}
