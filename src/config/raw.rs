//! The config file as written: serde structs that refuse unknown fields.
//! Nothing here is checked beyond its shape; `validate` builds the typed config.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A duration as written: an integer of seconds or a string such as `2w`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Secs(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub addr: String,
    #[serde(default)]
    pub tls: Option<RawTlsSpec>,
    #[serde(default)]
    pub proxy_protocol: Option<bool>,
}

/// One certificate and key, or several chosen by SNI (the first is the default).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTlsSpec {
    One(RawTls),
    Many(Vec<RawTls>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: String,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthEndpoint {
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub addr: Option<String>,
    /// A secret spec (literal, env: or file:); resolved by validation.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    #[serde(default)]
    pub cookie: RawCookie,
    #[serde(default)]
    pub ttl: Option<RawDuration>,
    #[serde(default)]
    pub absolute_ttl: Option<RawDuration>,
    #[serde(default)]
    pub expire_at_browser_close: Option<bool>,
    #[serde(default)]
    pub save_every_request: Option<bool>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub store: Option<RawStore>,
    #[serde(default)]
    pub on_store_error: Option<RawOnStoreError>,
    #[serde(default)]
    pub subject_key: Option<String>,
    #[serde(default)]
    pub max_per_subject: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCookie {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub http_only: Option<bool>,
    #[serde(default)]
    pub same_site: Option<RawSameSite>,
}

/// Django's `SESSION_COOKIE_SAMESITE` spells them `"Lax"`, `"Strict"`, `"None"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSameSite {
    #[serde(alias = "Strict")]
    Strict,
    #[serde(alias = "Lax")]
    Lax,
    #[serde(alias = "None")]
    None,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnStoreError {
    FailClosed,
    FailOpen,
}

/// The store: the options of a kind sit flat beside `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawStore {
    Memory {
        #[serde(default)]
        max_sessions: Option<u64>,
    },
    Embedded {
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        max_sessions: Option<u64>,
    },
    Redis {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        cluster: Option<Vec<String>>,
        #[serde(default)]
        sentinel: Option<Box<RawSentinel>>,
        #[serde(default)]
        key_prefix: Option<String>,
        #[serde(default)]
        timeout: Option<RawDuration>,
        /// PEM file of the CA that signed the server's certificate, for `rediss://`.
        #[serde(default)]
        ca: Option<String>,
        /// Replicas that must have each write (Redis `WAIT`) before it is acknowledged.
        #[serde(default)]
        replicas_ack: Option<u64>,
    },
    Cookie {},
    Postgres(RawSql),
    Mysql(RawSql),
    Memcached(RawMemcached),
    Cached(RawCached),
}

/// `kind: postgres` and `kind: mysql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    /// A secret (literal, env:NAME or file:PATH): it carries the password.
    /// Kept as a raw value so that a wrongly typed one is never echoed.
    #[serde(default)]
    pub url: Option<Value>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub pool: Option<RawPool>,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    #[serde(default)]
    pub size: Option<u64>,
    /// How long a request waits for a connection (connecting included).
    #[serde(default)]
    pub timeout: Option<RawDuration>,
}

/// `kind: memcached`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemcached {
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    /// Connections per server.
    #[serde(default)]
    pub pool: Option<RawPool>,
}

/// `kind: cached`: a local cache in front of a durable store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCached {
    #[serde(default)]
    pub cache: Option<RawCache>,
    pub durable: Box<RawStore>,
}

/// The local cache of `kind: cached` (only `memory` exists).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawCache {
    Memory {
        #[serde(default)]
        max_sessions: Option<u64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: String,
    pub nodes: Vec<String>,
    /// Credentials and database of the master (the sentinels' own go in their URLs).
    #[serde(default)]
    pub username: Option<String>,
    /// Kept as a raw value so that a wrongly typed secret is never echoed by serde.
    #[serde(default)]
    pub password: Option<Value>,
    #[serde(default)]
    pub db: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The label of the route in metrics and logs; defaults to host + path prefix.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: Option<bool>,
    #[serde(default)]
    pub forward: RawForward,
    #[serde(default)]
    pub require: Option<Vec<String>>,
    #[serde(default)]
    pub on_deny: Option<RawOnDeny>,
    #[serde(default)]
    pub csrf: Option<RawCsrf>,
}

/// `csrf:` of a route (SPEC section 8.7), Django's CSRF_* settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsrf {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub trusted_origins: Option<Vec<String>>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub form_field: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub exempt: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    #[serde(default)]
    pub mode: Option<RawForwardMode>,
    #[serde(default)]
    pub header: Option<String>,
    /// Kept as a raw value so that a wrongly typed secret is never echoed by serde.
    #[serde(default)]
    pub secret: Option<Value>,
    /// One path, or a list: the first signs, the others (private or public
    /// key files) are only published, so upstreams accept them during a rotation.
    #[serde(default)]
    pub private_key: Option<RawPaths>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub token_ttl: Option<RawDuration>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// The top-level keys this route's upstream may set or remove.
    #[serde(default)]
    pub writable_keys: Option<Vec<String>>,
    /// The actions this route's upstream may take.
    #[serde(default)]
    pub actions: Option<Vec<RawAction>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawAction {
    Flush,
    Cycle,
    Expiry,
    RevokeOthers,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPaths {
    One(String),
    Many(Vec<String>),
}

impl RawPaths {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            RawPaths::One(p) => vec![p.clone()],
            RawPaths::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawForwardMode {
    Signed,
    Json,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDeny {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub redirect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub format: Option<RawLogFormat>,
    /// `on`, `off`, or `{sample: 0.1}`; YAML 1.1's booleans are accepted too.
    #[serde(default)]
    pub access: Option<RawAccess>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAccess {
    Bool(bool),
    Word(String),
    Sample(RawSample),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSample {
    pub sample: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub header_read_timeout: Option<RawDuration>,
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default)]
    pub listen_backlog: Option<u64>,
    #[serde(default)]
    pub max_header_bytes: Option<u64>,
    #[serde(default)]
    pub max_headers: Option<u64>,
    #[serde(default)]
    pub drain_timeout: Option<RawDuration>,
    #[serde(default)]
    pub max_form_bytes: Option<u64>,
}

/// `paths:`: how the router reads paths that backends read differently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRules {
    #[serde(default)]
    pub semicolon: Option<RawSemicolon>,
    #[serde(default)]
    pub backslash: Option<RawBackslash>,
    #[serde(default)]
    pub encoded_slash: Option<RawEncodedSlash>,
    #[serde(default)]
    pub case_insensitive: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSemicolon {
    Reject,
    Strip,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawBackslash {
    Reject,
    Slash,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEncodedSlash {
    Reject,
    Keep,
}

/// The top-level keys, each deserialized on its own so that one bad section
/// does not hide the errors of the others.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "secrets",
    "session",
    "internal_header_prefix",
    "upstreams",
    "routes",
    "log",
    "limits",
    "paths",
    "underscores_in_headers",
    "trusted_proxies",
    "auth_endpoint",
    "tracing",
];
