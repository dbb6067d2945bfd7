//! Configuration: YAML is read into `raw` structs (unknown fields refused),
//! then `validate` checks every rule and builds the typed `Config` below,
//! reporting every problem with its YAML path.

pub mod duration;
mod explain;
pub mod raw;
pub mod secret;
mod validate;

use http::HeaderName;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use explain::explain;
pub use secret::Secret;
pub use validate::from_value;

/// Default config path of the CLI.
pub const DEFAULT_CONFIG_PATH: &str = "config/sessiongate.yaml";
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";
pub const DEFAULT_COOKIE_NAME: &str = "sessionid";
/// Django's SESSION_COOKIE_AGE: two weeks.
pub const DEFAULT_TTL_SECS: u64 = 14 * 86_400;
pub const DEFAULT_MAX_BYTES: usize = 65_536;
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;
pub const DEFAULT_EMBEDDED_PATH: &str = "data/sessions.db";
/// Ten million sessions: about 4 GiB of file at ~420 bytes each; an
/// anonymous flood of 20k new sessions a second reaches it in minutes
/// rather than filling a disk in hours.
pub const DEFAULT_EMBEDDED_MAX_SESSIONS: usize = 10_000_000;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "sessiongate:";
pub const DEFAULT_REDIS_TIMEOUT_SECS: u64 = 2;
pub const DEFAULT_SQL_TABLE: &str = "sessiongate_sessions";
pub const DEFAULT_SQL_POOL_SIZE: u32 = 16;
pub const DEFAULT_STORE_TIMEOUT_SECS: u64 = 2;
pub const DEFAULT_MEMCACHED_KEY_PREFIX: &str = "sessiongate:";
pub const DEFAULT_MEMCACHED_POOL_SIZE: u32 = 4;
pub const DEFAULT_CACHED_MAX_SESSIONS: usize = 100_000;
/// More replicas than any deployment runs per master.
pub const MAX_REPLICAS_ACK: u64 = 16;
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 60;
pub const DEFAULT_ISSUER: &str = "sessiongate";
pub const DEFAULT_HEADER_PREFIX: &str = "X-Session";
pub const DEFAULT_DENY_STATUS: u16 = 401;
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections the kernel queues per listener before they are accepted:
/// enough for a burst of a thousand (the kernel caps it at `somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;

#[derive(Debug)]
pub struct Config {
    pub listen: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    /// The first signs; every one verifies.
    pub secrets: Vec<Secret>,
    pub session: SessionConfig,
    pub headers: InternalHeaders,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub log: LogConfig,
    pub limits: Limits,
    /// How paths that backends read differently are routed (or refused).
    pub paths: PathPolicy,
    /// Whether request headers with `_` in their names are forwarded
    /// (nginx's `underscores_in_headers`); by default they are dropped.
    pub underscores_in_headers: bool,
    /// `trusted_proxies`: the peers whose `X-Forwarded-*` are believed.
    pub trusted_proxies: TrustedProxies,
    /// `auth_endpoint.path`: where the subrequests of a front proxy's
    /// `auth_request` / ForwardAuth / ext_authz are answered.
    pub auth_endpoint: Option<String>,
    /// What is allowed but probably not meant: `check` prints these, the
    /// proxy logs them at start.
    pub warnings: Vec<String>,
    /// The file the config was read from, which SIGHUP reads again.
    pub source: Option<std::path::PathBuf>,
    /// `tracing`: spans exported over OTLP; `None` (the default) is off.
    pub tracing: Option<TracingConfig>,
}

/// `tracing` (SPEC section 8.6).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL: the configured endpoint with `/v1/traces`
    /// added when it names no path.
    pub traces_url: String,
    pub service_name: String,
    /// The share of new traces recorded, in [0, 1]; a trace the client's
    /// `traceparent` marks as sampled (or not) is followed as marked.
    pub sample_ratio: f64,
}

pub const DEFAULT_SERVICE_NAME: &str = "sessiongate";

/// `trusted_proxies` (SPEC section 8.4): address ranges of the load
/// balancers and proxies in front, whose `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are kept and whose `X-Forwarded-For` entries are
/// skipped when finding the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `paths:` (SPEC section 8.1). The defaults refuse every path a backend
/// could read differently from the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Route as if every `;...` up to the next `/` were absent (Tomcat, Spring).
    pub strip_semicolon: bool,
    /// Route as if `\` and `%5C` were `/` (IIS, Windows backends).
    pub backslash_is_slash: bool,
    /// Keep `%2F` inside its segment when routing, instead of refusing it.
    pub keep_encoded_slash: bool,
    /// `path_prefix` matches case-insensitively (IIS).
    pub case_insensitive: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Certificates chosen by SNI (the first is the default), loaded once
    /// by validation; SIGHUP reloads them from their files.
    pub tls: Option<std::sync::Arc<crate::keys::CertStore>>,
    /// `proxy_protocol`: every connection starts with a PROXY protocol
    /// header (v1 or v2), whose source address becomes the peer's.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// `admin.token`: turns on the session management endpoints, each
    /// requiring it as a bearer token.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie: CookieConfig,
    /// The lifetime and size rules every store and the pipeline apply.
    pub policy: crate::record::Policy,
    pub ttl: Duration,
    pub absolute_ttl: Option<Duration>,
    pub expire_at_browser_close: bool,
    pub save_every_request: bool,
    pub max_bytes: usize,
    pub store: StoreConfig,
    pub on_store_error: OnStoreError,
    /// `subject_key`: the top-level key that says whose a session is.
    pub subject_key: Option<String>,
    /// `max_per_subject`: past this many live sessions of a subject, its
    /// oldest are revoked.
    pub max_per_subject: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    pub name: String,
    pub domain: Option<String>,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Memory { max_sessions: usize },
    Embedded { path: PathBuf, max_sessions: usize },
    Redis(RedisConfig),
    Cookie,
    Sql(SqlConfig),
    Memcached(MemcachedConfig),
    Cached(CachedConfig),
}

/// `kind: postgres` or `kind: mysql` (MariaDB and MySQL).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlConfig {
    pub dialect: SqlDialect,
    /// The connection URL: it may carry a password.
    pub url: Secret,
    pub table: String,
    pub pool_size: u32,
    /// How long a request waits for a connection, connecting included.
    pub pool_timeout: Duration,
    /// The deadline of one store operation.
    pub timeout: Duration,
    /// The PEM of the CA that signed the server's certificate: TLS is then
    /// required and the server's name checked.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    Postgres,
    Mysql,
}

/// `kind: memcached`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemcachedConfig {
    /// `host:port` of each server; keys spread over them by rendezvous hashing.
    pub servers: Vec<String>,
    pub key_prefix: String,
    pub timeout: Duration,
    /// Connections per server.
    pub pool_size: u32,
}

/// `kind: cached`: Django's `cached_db`.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedConfig {
    /// Sessions the local cache holds, least recently used evicted.
    pub max_sessions: usize,
    pub durable: Box<StoreConfig>,
}

impl StoreConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Memory { .. } => "memory",
            StoreConfig::Embedded { .. } => "embedded",
            StoreConfig::Redis(_) => "redis",
            StoreConfig::Cookie => "cookie",
            StoreConfig::Sql(c) => match c.dialect {
                SqlDialect::Postgres => "postgres",
                SqlDialect::Mysql => "mysql",
            },
            StoreConfig::Memcached(_) => "memcached",
            StoreConfig::Cached(_) => "cached",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub key_prefix: String,
    pub timeout: Duration,
    /// The PEM of the CA that signed the server's certificate, for `rediss://`.
    pub ca_pem: Option<Vec<u8>>,
    /// Replicas that must hold each write before it is acknowledged (0: none).
    pub replicas_ack: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedisTopology {
    Standalone {
        url: String,
    },
    Cluster {
        nodes: Vec<String>,
    },
    Sentinel {
        master: String,
        nodes: Vec<String>,
        /// How to log in to the master the sentinels name.
        username: Option<String>,
        password: Option<Secret>,
        db: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    FailClosed,
    FailOpen,
}

/// The names of the internal headers, all derived from `internal_header_prefix`.
#[derive(Debug, Clone)]
pub struct InternalHeaders {
    /// Lower-case prefix, for case-insensitive matching against `HeaderName`s.
    pub prefix_lower: String,
    pub update: HeaderName,
    pub action: HeaderName,
    pub token: HeaderName,
    pub data: HeaderName,
    pub sid: HeaderName,
    /// The CSRF token, masked, on routes with `csrf:` (json mode).
    pub csrf: HeaderName,
}

impl InternalHeaders {
    pub fn is_internal(&self, name: &HeaderName) -> bool {
        name.as_str().starts_with(&self.prefix_lower)
    }

    /// Removes every header under the internal prefix, so that neither a
    /// client nor an upstream can forge one; allocates only when there is one.
    pub fn remove_from(&self, headers: &mut http::HeaderMap) {
        if !headers.keys().any(|k| self.is_internal(k)) {
            return;
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.is_internal(k))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path the upstream is mounted at, without a trailing slash ("" for the root).
    pub base_path: String,
    pub timeout: Duration,
    /// For an https upstream: the roots its certificate is checked against
    /// (its `ca` file, or the webpki roots), loaded once by validation.
    pub roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub label: String,
    /// Lower-case host to match, without port.
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: usize,
    pub strip_prefix: bool,
    pub forward: ForwardConfig,
    pub require: Vec<String>,
    pub on_deny: OnDeny,
    /// `csrf:`, when enabled.
    pub csrf: Option<CsrfConfig>,
}

/// A route's CSRF protection (SPEC section 8.7), as Django's
/// `CsrfViewMiddleware` with its `CSRF_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfConfig {
    /// `CSRF_TRUSTED_ORIGINS`: `scheme://host[:port]`, or with a leading
    /// `*.` in the host for every subdomain.
    pub trusted_origins: Vec<String>,
    /// `CSRF_HEADER_NAME`, default `X-CSRFToken`.
    pub header: HeaderName,
    /// The form field, default `csrfmiddlewaretoken`.
    pub form_field: String,
    /// `CSRF_COOKIE_NAME`, default `csrftoken`.
    pub cookie: String,
    /// Path prefixes whose requests are not checked (`@csrf_exempt`).
    pub exempt: Vec<String>,
}

pub const DEFAULT_CSRF_HEADER: &str = "x-csrftoken";
pub const DEFAULT_CSRF_FORM_FIELD: &str = "csrfmiddlewaretoken";
pub const DEFAULT_CSRF_COOKIE: &str = "csrftoken";
/// How much of a form body is read to find the CSRF token: 1 MiB.
pub const DEFAULT_MAX_FORM_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub mode: ForwardMode,
    /// The header that carries the session (token or JSON), absent for `none`.
    pub header: Option<HeaderName>,
    /// Top-level session keys copied into plain headers.
    pub headers: Vec<(HeaderName, String)>,
    /// Allow-list of top-level keys the upstream sees.
    pub keys: Option<Vec<String>>,
    /// What the upstream may write back (`writable_keys`, `actions`).
    pub writes: WriteScope,
}

/// What a route's upstream may change in the session (SPEC section 8.9):
/// the top-level keys it may set or remove (`None`: every key), and the
/// actions it may take. Anything else refuses its whole write-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteScope {
    pub keys: Option<Vec<String>>,
    pub flush: bool,
    pub cycle: bool,
    pub expiry: bool,
    pub revoke_others: bool,
}

impl Default for WriteScope {
    /// Every key, every action.
    fn default() -> Self {
        WriteScope {
            keys: None,
            flush: true,
            cycle: true,
            expiry: true,
            revoke_others: true,
        }
    }
}

#[derive(Debug, Clone)]
pub enum ForwardMode {
    Signed(Box<SigningConfig>),
    Json,
    None,
}

#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub key: SigningKey,
    pub issuer: String,
    pub token_ttl: Duration,
    /// The `aud` claim: the upstream's name.
    pub audience: String,
}

#[derive(Debug, Clone)]
pub enum SigningKey {
    Hs256(Secret),
    /// The first key signs; every listed key is published in the JWKS.
    EdDsa {
        signing: crate::keys::ed25519::SigningKeyPair,
        published: Vec<crate::keys::ed25519::Jwk>,
    },
}

#[derive(Debug, Clone)]
pub enum OnDeny {
    Status(http::StatusCode),
    /// The target, with `{uri}` replaced by the percent-encoded original path and query.
    Redirect(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub access: AccessLog,
}

/// `log.access`: one line per request, none, or a sampled share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AccessLog {
    On,
    Off,
    /// The share of requests logged, in (0, 1).
    Sample(f64),
}

/// Protections against slow and hostile clients, and the shutdown drain.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// The kernel's queue of connections not yet accepted, per listener
    /// (nginx's `backlog=`).
    pub listen_backlog: u32,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub drain_timeout: Duration,
    /// The most of a form body read for its CSRF token (`max_form_bytes`).
    pub max_form_bytes: usize,
}

/// One problem in the config, with the YAML path it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            issues: vec![ConfigIssue {
                path: path.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single("", format!("cannot read {}: {e}", path.display())))?;
    let mut config = from_yaml(&text)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses and validates YAML text.
pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
    // Only the first line of a YAML error: the rest quotes the source line, which may hold a literal secret.
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        let first = message
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        ConfigError::single("", format!("invalid YAML: {first}"))
    })?;
    from_value(value)
}
