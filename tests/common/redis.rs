//! Real `redis-server` processes on ephemeral ports, started and killed by
//! the tests: standalone, TLS, a 3-master Cluster and a Sentinel setup.
//! The machine's own Redis on 6379 is never used.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether redis-server can be run here. Under `CI=true` a missing Redis is
/// a failure; elsewhere the test says loudly that it is skipped.
pub fn available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("redis-server is not installed, and CI=true: {test} cannot be skipped");
    }
    eprintln!(
        "\n*** SKIPPED {test}: redis-server is not installed (apt-get install redis-server redis-tools) ***\n"
    );
    false
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
/// Never the same port twice in one test process: the kernel may hand a
/// just-released port to the next bind, and tests run in parallel.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        let clashes = given
            .iter()
            .any(|&g| g == port || g + 10_000 == port || g == port + 10_000);
        if port < 55_000 && !clashes && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sessiongate-redis-{tag}-{}",
        sessiongate::record::SessionId::generate().encode()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct RedisServer {
    pub port: u16,
    /// The password redis-cli logs in with, if the server requires one.
    pub auth: Option<String>,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server that fsyncs every write to its AOF, so a kill loses nothing acknowledged.
    pub fn start_durable() -> RedisServer {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        Self::start_on(port, temp_dir("node"), extra)
    }

    pub fn start_on(port: u16, dir: PathBuf, extra: &[&str]) -> RedisServer {
        // redis-server wants a config file, if any, as its first argument.
        let (conf, extra) = match extra.split_first() {
            Some((first, rest)) if first.ends_with(".conf") => (Some(first.to_string()), rest),
            _ => (None, extra),
        };
        let mut args: Vec<String> = conf.into_iter().collect();
        args.extend::<Vec<String>>(vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            "redis.log".into(),
        ]);
        if extra.contains(&"--tls-port") {
            args.extend(["--port".into(), "0".into()]);
        } else {
            args.extend(["--port".into(), port.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = RedisServer {
            port,
            auth: None,
            dir,
            args,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = self.port;
        self.wait_until(deadline, "start", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // The port opens before the data is loaded (an AOF, or the empty one
        // a durable server creates and syncs at start): until then commands
        // fail with LOADING, which a slow disk can stretch past a test's
        // store timeout. A TLS port cannot be asked in plain text.
        if !self.args.iter().any(|a| a == "--tls-port") {
            self.wait_until(deadline, "finish loading", || answers_ping(port));
        }
    }

    fn wait_until(&self, deadline: Instant, what: &str, ready: impl Fn() -> bool) {
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not {what}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL: the server dies without a chance to save anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server stalls, holding its connections, as a Redis
    /// stuck in a long command or a swap storm does.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: the stalled server goes on with what queued meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Starts again on the same port and directory (an AOF is reloaded).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs the commands (one per line) through one redis-cli connection.
    pub fn cli_stdin(&self, commands: &str) -> String {
        use std::io::Write;
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.auth {
            cmd.args(["-a", pw, "--no-auth-warning"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.auth {
            cmd.args(["-a", pw, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Cluster made with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(3, 0, &["--appendonly", "no"])
    }

    /// Three masters with a replica each, every node fsyncing each write to
    /// its AOF, as a cluster that must survive a failover is run.
    pub fn start_replicated() -> Cluster {
        Self::start_with(6, 1, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    fn start_with(count: usize, replicas: usize, persistence: &[&str]) -> Cluster {
        let cluster = Self::create(count, replicas, persistence);
        // A replica that never finished its first sync cannot be promoted.
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &cluster.nodes {
            loop {
                let info = n.cli(&["info", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica never synced: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Each master counts its replica (for WAIT) once the replica acked.
        for m in cluster.masters() {
            while replicas > 0 && cluster.nodes[m].cli(&["wait", "1", "200"]).trim() != "1" {
                assert!(
                    Instant::now() < deadline,
                    "a master never saw its replica ack"
                );
            }
        }
        cluster
    }

    fn create(count: usize, replicas: usize, persistence: &[&str]) -> Cluster {
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                let mut args = vec![
                    "--save",
                    "",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ];
                args.extend(persistence);
                RedisServer::start_with(&args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if nodes.iter().all(|n| {
                let info = n.cli(&["cluster", "info"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
            }) {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Cluster { nodes }
    }

    /// The nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .cli(&["role"])
                    .lines()
                    .next()
                    .is_some_and(|l| l.trim() == "master")
            })
            .collect()
    }

    pub fn yaml_nodes(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}

/// A master (with one replica) watched by one sentinel, under the name `mymaster`.
pub struct Sentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl Sentinel {
    pub fn start() -> Sentinel {
        Self::start_with_password(None)
    }

    /// With a password, the master and replica require it and the sentinel knows it.
    pub fn start_with_password(password: Option<&str>) -> Sentinel {
        let auth: Vec<&str> =
            password.map_or(vec![], |p| vec!["--requirepass", p, "--masterauth", p]);
        // No delay before the replica's first sync.
        let mut master_args = vec![
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ];
        master_args.extend(&auth);
        let mut master = RedisServer::start_with(&master_args);
        master.auth = password.map(str::to_string);
        let master_port = master.port.to_string();
        let mut replica_args = vec![
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master_port,
        ];
        replica_args.extend(&auth);
        let mut replica = RedisServer::start_with(&replica_args);
        replica.auth = password.map(str::to_string);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica
            .cli(&["info", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        // A write acknowledged by the replica (WAIT, on the connection that
        // wrote) shows the master counts it, as `replicas_ack` needs.
        while master
            .cli_stdin("SET sessiongate-probe 1\nWAIT 1 200\n")
            .lines()
            .last()
            != Some("1")
        {
            assert!(
                Instant::now() < deadline,
                "the replica never acknowledged a write"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        master.cli(&["del", "sessiongate-probe"]);
        let port = free_port();
        let dir = temp_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n{}",
                master.port,
                password.map_or(String::new(), |p| format!("sentinel auth-pass mymaster {p}\n"))
            ),
        )
        .unwrap();
        let sentinel =
            RedisServer::start_on(port, dir.clone(), &[conf.to_str().unwrap(), "--sentinel"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sentinel
            .cli(&["sentinel", "get-master-addr-by-name", "mymaster"])
            .contains(&master.port.to_string())
        {
            assert!(
                Instant::now() < deadline,
                "sentinel does not know the master"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sentinel {
            master,
            replica,
            sentinel,
        }
    }
}

/// Whether the server on `port` takes commands: PING answers PONG, or NOAUTH
/// where a password is set, but not LOADING.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    if conn.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match conn.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
