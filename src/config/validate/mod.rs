//! Raw config -> typed config. Every rule is checked and every problem is
//! collected with its YAML path, so one `check` run reports them all.

mod csrf;
mod routes;
mod session;
mod store;
mod telemetry;

use super::raw::*;
use super::*;
use routes::{routes, upstreams};
use serde::de::DeserializeOwned;
use serde_json::Value;
use session::session;

#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Unknown keys reported from one section at most; past this, the section
/// is probably not the one the key names.
const MAX_UNKNOWN_KEYS: usize = 32;

/// Deserializes one section, recording a shape error (unknown field, wrong type)
/// with the full path to where it happened. serde stops at the first unknown
/// key; each is recorded and taken out and the section read again, so that
/// one typo does not hide the next.
fn section<T: DeserializeOwned>(mut value: Value, path: &str, issues: &mut Issues) -> Option<T> {
    for _ in 0..=MAX_UNKNOWN_KEYS {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let inner = e.path().to_string();
        let full = match (path.is_empty(), inner.as_str()) {
            (_, ".") => path.to_string(),
            (true, p) => p.to_string(),
            (false, p) if p.starts_with('[') => format!("{path}{p}"),
            (false, p) => format!("{path}.{p}"),
        };
        let segments: Vec<_> = e.path().iter().cloned().collect();
        let message = e.into_inner().to_string();
        let unknown = message.starts_with("unknown field");
        issues.push(full, redact_values(&message));
        if !unknown || !remove_at(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// Removes the key `path` ends with from `value`; whether it was there.
fn remove_at(value: &mut Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        at = match (segment, at) {
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            // An enum's variant is written as the single key of a mapping.
            (Segment::Enum { variant }, Value::Object(m)) => match m.get_mut(variant) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, Value::Object(m)) => m.remove(key).is_some(),
        _ => false,
    }
}

/// Five cookies of 4096 bytes, with HTTP/2's 32 bytes of overhead each, and room for the rest.
const COOKIE_STORE_MIN_HEADER_BYTES: usize = 24 * 1024;

/// serde quotes the offending value in type errors; it may be a secret or a
/// URL with a password, so the quoted text is replaced.
fn redact_values(message: &str) -> String {
    for marker in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(start) = message.find(marker) {
            let from = start + marker.len();
            if let Some(len) = message[from..].find("\", expected") {
                return format!("{}…{}", &message[..from], &message[from + len..]);
            }
        }
    }
    message.to_string()
}

fn duration(
    raw: &Option<RawDuration>,
    path: &str,
    default: Duration,
    issues: &mut Issues,
) -> Duration {
    match raw {
        None => default,
        Some(RawDuration::Secs(s)) => Duration::from_secs(*s),
        Some(RawDuration::Text(t)) => match duration::parse(t) {
            Ok(d) => d,
            Err(e) => {
                issues.push(path, e);
                default
            }
        },
    }
}

fn socket_addr(text: &str, path: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(
                path,
                format!("invalid address {text:?}: expected IP:PORT, e.g. 0.0.0.0:8080"),
            );
            None
        }
    }
}

fn header_name(text: &str, path: &str, issues: &mut Issues) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            issues.push(path, format!("invalid header name {text:?}"));
            None
        }
    }
}

/// Builds the typed config from a parsed YAML document.
pub fn from_value(value: Value) -> Result<Config, ConfigError> {
    let mut issues = Issues::default();
    let mut doc = match value {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        _ => {
            return Err(ConfigError::single(
                "",
                "the config must be a mapping of keys to values",
            ));
        }
    };
    for key in doc.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            issues.push(
                key.clone(),
                format!(
                    "unknown field `{key}`, expected one of {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            );
        }
    }
    let mut take = |key: &str| doc.remove(key).filter(|v| !v.is_null());

    let listen = listeners(take("listen"), &mut issues);
    let admin = admin(take("admin"), &mut issues);
    let secrets = secrets(take("secrets"), &mut issues);
    let headers = internal_headers(take("internal_header_prefix"), &mut issues);
    let session = take("session")
        .map_or_else(
            || Some(RawSession::default()),
            |v| section::<RawSession>(v, "session", &mut issues),
        )
        .map(|raw| session(raw, &mut issues));
    let upstreams = upstreams(take("upstreams"), &mut issues);
    let routes = routes(take("routes"), &upstreams, &headers, &mut issues);
    let log = take("log")
        .map_or_else(
            || Some(RawLog::default()),
            |v| section::<RawLog>(v, "log", &mut issues),
        )
        .map(|raw| LogConfig {
            format: match raw.format {
                Some(RawLogFormat::Json) => LogFormat::Json,
                Some(RawLogFormat::Pretty) | None => LogFormat::Pretty,
            },
            access: access_log(raw.access, &mut issues),
        });
    let limits = take("limits")
        .map_or_else(
            || Some(RawLimits::default()),
            |v| section::<RawLimits>(v, "limits", &mut issues),
        )
        .map(|raw| limits(raw, &mut issues));

    let paths = take("paths")
        .map_or_else(
            || Some(RawPathRules::default()),
            |v| section::<RawPathRules>(v, "paths", &mut issues),
        )
        .map(path_policy);
    let trusted_proxies = trusted_proxies(take("trusted_proxies"), &mut issues);
    let tracing = take("tracing")
        .and_then(|v| section::<RawTracing>(v, "tracing", &mut issues))
        .and_then(|raw| telemetry::tracing(raw, &mut issues));
    let auth_endpoint = take("auth_endpoint")
        .and_then(|v| section::<RawAuthEndpoint>(v, "auth_endpoint", &mut issues))
        .and_then(|raw| {
            let ok = raw.path.starts_with('/')
                && raw.path.len() > 1
                && !raw.path.ends_with('/')
                && raw
                    .path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"?#;\\%".contains(&b));
            if !ok {
                issues.push(
                    "auth_endpoint.path",
                    "must be a path like /_sessiongate/auth (no query, no trailing /)",
                );
            }
            ok.then_some(raw.path)
        });
    let underscores_in_headers = match take("underscores_in_headers") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            issues.push("underscores_in_headers", "must be true or false");
            false
        }
    };

    if let (Some(session), Some(limits)) = (&session, &limits)
        && matches!(session.store, StoreConfig::Cookie)
        && limits.max_header_bytes < COOKIE_STORE_MIN_HEADER_BYTES
    {
        issues.push(
            "limits.max_header_bytes",
            format!("the cookie store's five cookies need at least {COOKIE_STORE_MIN_HEADER_BYTES} bytes of request head"),
        );
    }
    let mut warnings = Vec::new();
    if auth_endpoint.is_some() && trusted_proxies.is_empty() {
        warnings.push(
            "auth_endpoint: no trusted_proxies are set, so every subrequest is answered 403 \
             (list the front proxy's address)"
                .to_string(),
        );
    }
    if let Some(session) = &session {
        if session.max_per_subject.is_some() && session.subject_key.is_none() {
            issues.push(
                "session.max_per_subject",
                "needs session.subject_key (whose sessions to count)",
            );
        }
        if matches!(session.store, StoreConfig::Cookie)
            && (session.subject_key.is_some() || session.max_per_subject.is_some())
        {
            warnings.push(
                "session.subject_key: the cookie store keeps nothing on the server, so sessions \
                 cannot be listed, revoked or counted per subject (the endpoints answer 501)"
                    .to_string(),
            );
        }
        if admin.as_ref().is_some_and(|a| a.token.is_some()) && session.subject_key.is_none() {
            warnings.push(
                "admin.token: without session.subject_key no session is indexed, so the \
                 management endpoints find none"
                    .to_string(),
            );
        }
    }
    match (session, log, limits, paths) {
        (Some(session), Some(log), Some(limits), Some(paths)) if issues.0.is_empty() => {
            Ok(Config {
                listen,
                admin,
                secrets,
                session,
                headers,
                upstreams,
                routes,
                log,
                limits,
                paths,
                underscores_in_headers,
                trusted_proxies,
                auth_endpoint,
                warnings,
                source: None,
                tracing,
            })
        }
        _ => Err(ConfigError { issues: issues.0 }),
    }
}

fn access_log(raw: Option<RawAccess>, issues: &mut Issues) -> AccessLog {
    match raw {
        None | Some(RawAccess::Bool(true)) => AccessLog::On,
        Some(RawAccess::Bool(false)) => AccessLog::Off,
        Some(RawAccess::Word(w)) if w == "on" => AccessLog::On,
        Some(RawAccess::Word(w)) if w == "off" => AccessLog::Off,
        Some(RawAccess::Sample(RawSample { sample })) if sample > 0.0 && sample <= 1.0 => {
            if sample == 1.0 {
                AccessLog::On
            } else {
                AccessLog::Sample(sample)
            }
        }
        Some(RawAccess::Sample(_)) => {
            issues.push("log.access.sample", "must be a share above 0 and at most 1");
            AccessLog::On
        }
        Some(RawAccess::Word(_)) => {
            issues.push("log.access", "expected on, off, or {sample: SHARE}");
            AccessLog::On
        }
    }
}

fn path_policy(raw: RawPathRules) -> PathPolicy {
    PathPolicy {
        strip_semicolon: matches!(raw.semicolon, Some(RawSemicolon::Strip)),
        backslash_is_slash: matches!(raw.backslash, Some(RawBackslash::Slash)),
        keep_encoded_slash: matches!(raw.encoded_slash, Some(RawEncodedSlash::Keep)),
        case_insensitive: raw.case_insensitive.unwrap_or(false),
    }
}

fn listeners(value: Option<Value>, issues: &mut Issues) -> Vec<ListenerConfig> {
    let Some(value) = value else {
        return vec![ListenerConfig {
            addr: DEFAULT_LISTEN_ADDR.parse().expect("default address parses"),
            tls: None,
            proxy_protocol: false,
        }];
    };
    let Some(raw) = section::<Vec<RawListener>>(value, "listen", issues) else {
        return Vec::new();
    };
    if raw.is_empty() {
        issues.push("listen", "at least one listener is required");
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let addr = socket_addr(&l.addr, &format!("listen[{i}].addr"), issues)?;
            let tls = l.tls.map(|spec| {
                let list = match spec {
                    RawTlsSpec::One(t) => vec![t],
                    RawTlsSpec::Many(v) => v,
                };
                list.into_iter()
                    .map(|t| crate::keys::TlsFiles {
                        cert: PathBuf::from(t.cert),
                        key: PathBuf::from(t.key),
                    })
                    .collect::<Vec<_>>()
            });
            let tls = match tls {
                None => None,
                Some(files) if files.is_empty() => {
                    issues.push(format!("listen[{i}].tls"), "needs at least one certificate");
                    None
                }
                Some(files) => match crate::keys::CertStore::load(files) {
                    Ok(store) => Some(std::sync::Arc::new(store)),
                    Err(e) => {
                        issues.push(format!("listen[{i}].tls"), e.to_string());
                        None
                    }
                },
            };
            Some(ListenerConfig {
                addr,
                tls,
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            })
        })
        .collect()
}

fn admin(value: Option<Value>, issues: &mut Issues) -> Option<AdminConfig> {
    let raw = match value {
        None => RawAdmin::default(),
        Some(v) => section::<RawAdmin>(v, "admin", issues)?,
    };
    let text = raw.addr.as_deref().unwrap_or(DEFAULT_ADMIN_ADDR);
    let token = raw
        .token
        .and_then(|spec| secret_value(&Value::String(spec), "admin.token", issues));
    socket_addr(text, "admin.addr", issues).map(|addr| AdminConfig { addr, token })
}

/// `trusted_proxies`: CIDR ranges, or single addresses, IPv4 or IPv6.
fn trusted_proxies(value: Option<Value>, issues: &mut Issues) -> TrustedProxies {
    let Some(value) = value else {
        return TrustedProxies::default();
    };
    let Value::Array(items) = value else {
        issues.push(
            "trusted_proxies",
            "must be a list of CIDR ranges, e.g. [10.0.0.0/8, \"fd00::/8\"]",
        );
        return TrustedProxies::default();
    };
    let mut nets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("trusted_proxies[{i}]");
        let parsed = item.as_str().and_then(|text| {
            text.parse::<ipnet::IpNet>().ok().or_else(|| {
                text.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            })
        });
        match parsed {
            // 10.1.2.3/8 names the range 10.0.0.0/8, as nginx's set_real_ip_from reads it.
            Some(net) => nets.push(net.trunc()),
            None => issues.push(
                path,
                "not an IP address or CIDR range (e.g. 10.0.0.0/8, 192.168.1.10, fd00::/8)",
            ),
        }
    }
    TrustedProxies(nets)
}

fn secrets(value: Option<Value>, issues: &mut Issues) -> Vec<Secret> {
    let Some(value) = value else {
        issues.push(
            "secrets",
            "at least one secret is required (`sessiongate keygen` makes one)",
        );
        return Vec::new();
    };
    let Value::Array(items) = value else {
        issues.push("secrets", "must be a list of secrets");
        return Vec::new();
    };
    if items.is_empty() {
        issues.push(
            "secrets",
            "at least one secret is required (`sessiongate keygen` makes one)",
        );
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| secret_value(item, &format!("secrets[{i}]"), issues))
        .collect()
}

/// A secret given as a YAML value; the value itself never appears in an error.
fn secret_value(item: &Value, path: &str, issues: &mut Issues) -> Option<Secret> {
    let Value::String(spec) = item else {
        issues.push(
            path,
            "must be a string: a literal secret, env:NAME or file:PATH",
        );
        return None;
    };
    secret::resolve_checked(spec)
        .map_err(|e| issues.push(path, e))
        .ok()
}

fn internal_headers(value: Option<Value>, issues: &mut Issues) -> InternalHeaders {
    let prefix = match value {
        None => DEFAULT_HEADER_PREFIX.to_string(),
        Some(Value::String(s)) if !s.is_empty() && HeaderName::from_bytes(s.as_bytes()).is_ok() => {
            s
        }
        Some(_) => {
            issues.push(
                "internal_header_prefix",
                "must be a non-empty header name prefix, e.g. X-Session",
            );
            DEFAULT_HEADER_PREFIX.to_string()
        }
    };
    let name = |suffix: &str| {
        HeaderName::from_bytes(format!("{prefix}-{suffix}").as_bytes()).expect("prefix was checked")
    };
    InternalHeaders {
        prefix_lower: prefix.to_ascii_lowercase(),
        update: name("Update"),
        action: name("Action"),
        token: name("Token"),
        data: name("Data"),
        sid: name("Sid"),
        csrf: name("Csrf"),
    }
}

fn limits(raw: RawLimits, issues: &mut Issues) -> Limits {
    let count = |v: Option<u64>, path: &str, default: usize, issues: &mut Issues| match v {
        None => default,
        Some(0) => {
            issues.push(path, "must be at least 1");
            default
        }
        Some(n) => n as usize,
    };
    Limits {
        header_read_timeout: duration(
            &raw.header_read_timeout,
            "limits.header_read_timeout",
            Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            issues,
        ),
        max_connections: count(
            raw.max_connections,
            "limits.max_connections",
            DEFAULT_MAX_CONNECTIONS,
            issues,
        ),
        listen_backlog: count(
            raw.listen_backlog,
            "limits.listen_backlog",
            DEFAULT_LISTEN_BACKLOG as usize,
            issues,
        )
        .min(u32::MAX as usize) as u32,
        max_header_bytes: count(
            raw.max_header_bytes,
            "limits.max_header_bytes",
            DEFAULT_MAX_HEADER_BYTES,
            issues,
        ),
        max_headers: count(
            raw.max_headers,
            "limits.max_headers",
            DEFAULT_MAX_HEADERS,
            issues,
        ),
        drain_timeout: duration(
            &raw.drain_timeout,
            "limits.drain_timeout",
            Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
            issues,
        ),
        max_form_bytes: count(
            raw.max_form_bytes,
            "limits.max_form_bytes",
            DEFAULT_MAX_FORM_BYTES,
            issues,
        ),
    }
}
