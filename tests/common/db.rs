//! The databases the SQL stores are tested against: the machine's own
//! PostgreSQL and MariaDB services for the conformance suite, and servers
//! of the test's own (in a temporary directory, on an ephemeral port) for
//! the tests that kill them.

use sessiongate::config::{Secret, SqlConfig, SqlDialect};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's PostgreSQL service (trust auth).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The machine's MariaDB service (root, no password).
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn answers(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// Whether the database service answers; under CI=true a missing one fails.
pub fn available(dialect: SqlDialect, test: &str) -> bool {
    let (addr, what) = match dialect {
        SqlDialect::Postgres => ("127.0.0.1:5432", "PostgreSQL"),
        SqlDialect::Mysql => ("127.0.0.1:3306", "MariaDB"),
    };
    answers(addr) || super::skip_or_fail(test, &format!("{what} does not answer on {addr}"))
}

/// A table name no other test uses.
pub fn table(tag: &str) -> String {
    let id = sessiongate::record::SessionId::generate();
    let hex: String = id.as_bytes()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sg_{tag}_{hex}")
}

pub fn config(dialect: SqlDialect, url: &str, table: &str) -> SqlConfig {
    SqlConfig {
        dialect,
        url: Secret::new(url.as_bytes()),
        table: table.to_string(),
        pool_size: 16,
        pool_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        ca: None,
    }
}

/// The database's own client, running `statements` in turn on the test
/// database, answers unadorned (no headers, no alignment).
pub fn client(dialect: SqlDialect, statements: &[String]) -> Command {
    let mut c = match dialect {
        SqlDialect::Postgres => {
            let mut c = Command::new("psql");
            c.args(["-qAt", "-h", "127.0.0.1", "-U", "postgres", "-d", "test"]);
            c
        }
        SqlDialect::Mysql => {
            let mut c = Command::new("mysql");
            c.args(["-N", "-h", "127.0.0.1", "-uroot", "test"]);
            c
        }
    };
    let flag = match dialect {
        SqlDialect::Postgres => "-c",
        SqlDialect::Mysql => "-e",
    };
    for sql in statements {
        c.args([flag, sql]);
    }
    c
}

/// Drops the tables a test made, and on PostgreSQL the function a cached
/// store's trigger on each calls.
pub fn drop_tables(dialect: SqlDialect, tables: &[String]) {
    if tables.is_empty() {
        return;
    }
    let mut statements = vec![format!("DROP TABLE IF EXISTS {}", tables.join(", "))];
    if dialect == SqlDialect::Postgres {
        statements.extend(
            tables
                .iter()
                .map(|t| format!("DROP FUNCTION IF EXISTS {t}_notify()")),
        );
    }
    let _ = client(dialect, &statements).stdout(Stdio::null()).status();
}

pub fn free_port() -> u16 {
    super::redis::free_port()
}

fn postgres_bin(tool: &str) -> PathBuf {
    let dirs = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL's binaries");
    let mut found: Vec<PathBuf> = dirs
        .filter_map(|d| d.ok())
        .map(|d| d.path().join("bin").join(tool))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("{tool} not found"))
}

/// Whether this machine can run a PostgreSQL of a test's own.
pub fn can_run_postgres(test: &str) -> bool {
    let found = Path::new("/usr/lib/postgresql").is_dir()
        && std::fs::read_dir("/usr/lib/postgresql")
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("bin/initdb").exists())));
    found || super::skip_or_fail(test, "PostgreSQL's initdb is not installed")
}

/// Runs a command as the `postgres` user when this process is root
/// (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL of the test's own, in a temporary directory: stopped,
/// started again and killed at will.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    /// Server settings beyond the defaults (`-c name=value ...`).
    settings: String,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        Self::start_with(|_| String::new())
    }

    /// A server that requires nothing but accepts TLS with a certificate
    /// for 127.0.0.1 signed by `ca`; the CA's PEM file.
    pub fn start_tls(ca: &super::tls::TestCa) -> (OwnPostgres, PathBuf) {
        let mut ca_file = PathBuf::new();
        let pg = Self::start_with(|dir| {
            let files = ca.leaf(&["127.0.0.1", "localhost"], dir, "pg");
            ca_file = files.ca.clone();
            for path in [&files.cert, &files.key] {
                let _ = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(path)
                    .status();
            }
            let _ = Command::new("chmod").arg("600").arg(&files.key).status();
            format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                files.cert.display(),
                files.key.display()
            )
        });
        (pg, ca_file)
    }

    fn start_with(settings: impl FnOnce(&Path) -> String) -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-pg-{}",
            sessiongate::record::SessionId::generate().encode()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.join("data");
        super::process::succeeded(
            as_postgres(&postgres_bin("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        let settings = settings(&dir);
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            settings,
        };
        pg.up();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let status = as_postgres(&postgres_bin("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.data())
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start");
        wait_for(self.port);
    }

    /// Kills the server outright (SIGKILL to the postmaster and its children).
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            // The backends go with their postmaster; wait for the port to close.
            let deadline = Instant::now() + Duration::from_secs(10);
            while answers(&format!("127.0.0.1:{}", self.port)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", "--"])
                .arg(format!("-D {}", self.data().display()))
                .status();
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&postgres_bin("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this machine can run a MariaDB of a test's own.
pub fn can_run_mariadb(test: &str) -> bool {
    let found = Path::new("/usr/sbin/mariadbd").exists()
        && Command::new("mariadb-install-db")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    found || super::skip_or_fail(test, "mariadbd is not installed")
}

/// A MariaDB of the test's own, in a temporary directory.
pub struct OwnMariadb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Server options beyond the defaults.
    extra: Vec<String>,
}

impl OwnMariadb {
    pub fn start() -> OwnMariadb {
        Self::start_with(|_| Vec::new())
    }

    /// A server that accepts TLS with a certificate for 127.0.0.1 signed by
    /// `ca`; the CA's PEM file.
    pub fn start_tls(ca: &super::tls::TestCa) -> (OwnMariadb, PathBuf) {
        let mut ca_file = PathBuf::new();
        let db = Self::start_with(|dir| {
            let files = ca.leaf(&["127.0.0.1", "localhost"], dir, "mariadb");
            ca_file = files.ca.clone();
            vec![
                format!("--ssl-cert={}", files.cert.display()),
                format!("--ssl-key={}", files.key.display()),
                format!("--ssl-ca={}", files.ca.display()),
            ]
        });
        (db, ca_file)
    }

    fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> OwnMariadb {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-mariadb-{}",
            sessiongate::record::SessionId::generate().encode()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        super::process::succeeded(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", dir.join("data").display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .arg("--skip-test-db"),
        );
        let extra = extra(&dir);
        let mut db = OwnMariadb {
            port: free_port(),
            dir,
            child: None,
            extra,
        };
        db.up();
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    pub fn up(&mut self) {
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--user=root"])
            .args(["--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnMariadb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&format!("127.0.0.1:{port}")) {
        assert!(Instant::now() < deadline, "no server on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows in a table, read by the database's own client.
pub fn rows(dialect: SqlDialect, table: &str) -> u64 {
    let out = client(dialect, &[format!("SELECT COUNT(*) FROM {table}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A table of the test's own on the machine's database service, dropped
/// when the test ends, passing or not.
pub struct Table {
    pub dialect: SqlDialect,
    pub name: String,
}

impl Table {
    /// `None` (the test then returns) when the service does not answer,
    /// which fails the test under CI=true.
    pub fn on(dialect: SqlDialect, tag: &str) -> Option<Table> {
        available(dialect, tag).then(|| Table {
            dialect,
            name: table(tag),
        })
    }

    pub fn url(&self) -> &'static str {
        match self.dialect {
            SqlDialect::Postgres => POSTGRES_URL,
            SqlDialect::Mysql => MYSQL_URL,
        }
    }

    /// The `session.store` YAML of this table.
    pub fn store_yaml(&self) -> String {
        let kind = match self.dialect {
            SqlDialect::Postgres => "postgres",
            SqlDialect::Mysql => "mysql",
        };
        format!(
            "{{kind: {kind}, url: \"{}\", table: {}}}",
            self.url(),
            self.name
        )
    }

    pub fn config(&self) -> SqlConfig {
        config(self.dialect, self.url(), &self.name)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        drop_tables(self.dialect, std::slice::from_ref(&self.name));
    }
}
