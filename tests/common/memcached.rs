//! memcached servers of a test's own, on ephemeral ports.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn available(test: &str) -> bool {
    let found = Command::new("memcached")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found
        || super::skip_or_fail(
            test,
            "memcached is not installed (apt-get install memcached)",
        )
}

pub struct Memcached {
    pub port: u16,
    child: Option<Child>,
}

impl Memcached {
    pub fn start() -> Memcached {
        let mut m = Memcached {
            port: super::redis::free_port(),
            child: None,
        };
        m.up();
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again: empty, as memcached always starts).
    pub fn up(&mut self) {
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-U", "0", "-m", "64", "-u", "root"])
            .args(["-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Items the server holds now (`stats`: curr_items).
    pub fn items(&self) -> u64 {
        use std::io::{Read, Write};
        let mut conn = TcpStream::connect(self.addr()).unwrap();
        conn.write_all(b"stats\r\nquit\r\n").unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .and_then(|n| n.trim().parse().ok())
            .expect("curr_items in stats")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}
