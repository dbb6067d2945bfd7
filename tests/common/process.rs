//! The real binary as a child process: started on a config file, waited
//! for until ready, signalled, and its log read.

use super::SECRET;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

/// Runs `cmd` to its end, failing the test (with what it printed) unless
/// it succeeded.
pub fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sessiongate(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sessiongate-proc-{tag}-{}",
        sessiongate::record::SessionId::generate().encode()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free address, never one this process handed out before: an
/// unguarded bind to port 0 gave the same port twice in a row, and nginx
/// then proxied to itself in place of sessiongate.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::redis::free_port()))
}

pub fn write_config(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    store: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join("sessiongate.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
listen: [{{addr: "{listen}"}}]
admin: {{addr: "{admin}"}}
secrets: ["{SECRET}"]
session:
  cookie: {{secure: false}}
  store: {store}
upstreams:
  app: {{url: "http://{upstream}"}}
routes:
  - {{match: {{path_prefix: /}}, upstream: app, forward: {{mode: json}}}}
{extra}
"#
        ),
    )
    .unwrap();
    path
}

pub struct Running {
    child: Child,
    admin: SocketAddr,
    stderr: PathBuf,
}

impl Running {
    pub fn start(cfg: &Path, admin: SocketAddr, dir: &Path, env: &[(&str, &str)]) -> Running {
        let stderr = dir.join(format!(
            "stderr-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let mut cmd = sessiongate(&["--config", cfg.to_str().unwrap()]);
        cmd.current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let r = Running {
            child,
            admin,
            stderr,
        };
        r.wait_ready();
        r
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(self.admin) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sessiongate did not become ready: {}", self.log());
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "sessiongate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sessiongate demo` on free addresses in `dir`, stopped when dropped.
pub struct Demo {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Demo {
    /// Starts it and waits until its proxy listener accepts.
    pub async fn start(dir: &Path) -> Demo {
        let (listen, admin) = (free_addr(), free_addr());
        let log = dir.join("demo.log");
        let child = sessiongate(&[
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .current_dir(dir)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let demo = Demo {
            child,
            listen,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "demo did not start: {}",
                std::fs::read_to_string(&demo.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
