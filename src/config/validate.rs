//! Raw config -> typed config. Every rule is checked and every problem is
//! collected with its YAML path, so one `check` run reports them all.

use super::raw::*;
use super::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// Deserializes one section, recording a shape error (unknown field, wrong type)
/// with the full path to where it happened.
fn section<T: DeserializeOwned>(value: Value, path: &str, issues: &mut Issues) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = match (path.is_empty(), inner.as_str()) {
                (_, ".") => path.to_string(),
                (true, p) => p.to_string(),
                (false, p) if p.starts_with('[') => format!("{path}{p}"),
                (false, p) => format!("{path}.{p}"),
            };
            issues.push(full, redact_values(&e.into_inner().to_string()));
            None
        }
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
            })
        }
        _ => Err(ConfigError { issues: issues.0 }),
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
            Some(ListenerConfig { addr, tls })
        })
        .collect()
}

fn admin(value: Option<Value>, issues: &mut Issues) -> Option<AdminConfig> {
    let raw = match value {
        None => RawAdmin::default(),
        Some(v) => section::<RawAdmin>(v, "admin", issues)?,
    };
    let text = raw.addr.as_deref().unwrap_or(DEFAULT_ADMIN_ADDR);
    socket_addr(text, "admin.addr", issues).map(|addr| AdminConfig { addr })
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
    }
}

fn session(raw: RawSession, issues: &mut Issues) -> SessionConfig {
    let c = raw.cookie;
    let name = c.name.unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        issues.push(
            "session.cookie.name",
            format!("invalid cookie name {name:?}"),
        );
    }
    let path = c.path.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        issues.push(
            "session.cookie.path",
            "must start with / and contain no ; or control characters",
        );
    }
    if let Some(d) = &c.domain
        && (d.is_empty()
            || d.bytes()
                .any(|b| b == b';' || b.is_ascii_whitespace() || b.is_ascii_control()))
    {
        issues.push(
            "session.cookie.domain",
            format!("invalid cookie domain {d:?}"),
        );
    }
    let secure = c.secure.unwrap_or(true);
    let same_site = match c.same_site {
        Some(RawSameSite::Strict) => SameSite::Strict,
        Some(RawSameSite::None) => SameSite::None,
        Some(RawSameSite::Lax) | None => SameSite::Lax,
    };
    if same_site == SameSite::None && !secure {
        issues.push(
            "session.cookie.same_site",
            "`none` requires `secure: true` (browsers reject SameSite=None cookies without Secure)",
        );
    }
    // Browsers match these prefixes case-insensitively.
    let lower_name = name.to_ascii_lowercase();
    if lower_name.starts_with("__host-") {
        if c.domain.is_some() {
            issues.push(
                "session.cookie.domain",
                "a __Host- cookie must not set a domain",
            );
        }
        if path != "/" {
            issues.push("session.cookie.path", "a __Host- cookie must have path /");
        }
        if !secure {
            issues.push("session.cookie.secure", "a __Host- cookie must be secure");
        }
    }
    if lower_name.starts_with("__secure-") && !secure {
        issues.push("session.cookie.secure", "a __Secure- cookie must be secure");
    }
    let ttl = duration(
        &raw.ttl,
        "session.ttl",
        Duration::from_secs(DEFAULT_TTL_SECS),
        issues,
    );
    let max_lifetime = Duration::from_secs(crate::record::MAX_LIFETIME_S);
    if ttl < Duration::from_secs(1) || ttl > max_lifetime {
        issues.push("session.ttl", "must be between 1 second and 10 years");
    }
    let absolute_ttl = raw
        .absolute_ttl
        .as_ref()
        .map(|_| duration(&raw.absolute_ttl, "session.absolute_ttl", ttl, issues));
    if absolute_ttl.is_some_and(|a| a < Duration::from_secs(1) || a > max_lifetime) {
        issues.push(
            "session.absolute_ttl",
            "must be between 1 second and 10 years",
        );
    }
    let max_bytes = raw.max_bytes.map_or(DEFAULT_MAX_BYTES, |b| b as usize);
    if max_bytes < 2 {
        issues.push("session.max_bytes", "must be at least 2 (the size of `{}`)");
    }
    let store = match raw.store {
        None => StoreConfig::Embedded {
            path: PathBuf::from(DEFAULT_EMBEDDED_PATH),
        },
        Some(s) => store(s, issues),
    };
    let expire_at_browser_close = raw.expire_at_browser_close.unwrap_or(false);
    SessionConfig {
        cookie: CookieConfig {
            name,
            domain: c.domain,
            path,
            secure,
            http_only: c.http_only.unwrap_or(true),
            same_site,
        },
        policy: crate::record::Policy {
            ttl_s: ttl.as_secs(),
            absolute_ttl_s: absolute_ttl.map(|d| d.as_secs()),
            expire_at_browser_close,
            max_bytes,
        },
        ttl,
        absolute_ttl,
        expire_at_browser_close,
        save_every_request: raw.save_every_request.unwrap_or(false),
        max_bytes,
        store,
        on_store_error: match raw.on_store_error {
            Some(RawOnStoreError::FailOpen) => OnStoreError::FailOpen,
            Some(RawOnStoreError::FailClosed) | None => OnStoreError::FailClosed,
        },
    }
}

fn store(raw: RawStore, issues: &mut Issues) -> StoreConfig {
    match raw {
        RawStore::Memory { max_sessions } => {
            let max_sessions = max_sessions.map_or(DEFAULT_MAX_SESSIONS, |m| m as usize);
            if max_sessions == 0 {
                issues.push("session.store.max_sessions", "must be at least 1");
            }
            StoreConfig::Memory { max_sessions }
        }
        RawStore::Embedded { path } => StoreConfig::Embedded {
            path: PathBuf::from(path.unwrap_or_else(|| DEFAULT_EMBEDDED_PATH.to_string())),
        },
        RawStore::Redis {
            url,
            cluster,
            sentinel,
            key_prefix,
            timeout,
            ca,
        } => {
            let redis_url = |u: &str, path: &str, issues: &mut Issues| {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    issues.push(
                        path,
                        format!(
                            "invalid Redis URL {:?}: expected redis:// or rediss://",
                            redact_url(u)
                        ),
                    );
                }
            };
            let topology = match (url, cluster, sentinel) {
                (Some(url), None, None) => {
                    redis_url(&url, "session.store.url", issues);
                    RedisTopology::Standalone { url }
                }
                (None, Some(nodes), None) => {
                    if nodes.is_empty() {
                        issues.push("session.store.cluster", "needs at least one node");
                    }
                    for (i, n) in nodes.iter().enumerate() {
                        redis_url(n, &format!("session.store.cluster[{i}]"), issues);
                    }
                    RedisTopology::Cluster { nodes }
                }
                (None, None, Some(s)) => {
                    if s.nodes.is_empty() {
                        issues.push(
                            "session.store.sentinel.nodes",
                            "needs at least one sentinel",
                        );
                    }
                    for (i, n) in s.nodes.iter().enumerate() {
                        redis_url(n, &format!("session.store.sentinel.nodes[{i}]"), issues);
                    }
                    let password = s.password.as_ref().and_then(|p| {
                        let Value::String(spec) = p else {
                            issues.push(
                                "session.store.sentinel.password",
                                "must be a string: a literal, env:NAME or file:PATH",
                            );
                            return None;
                        };
                        secret::resolve(spec)
                            .map_err(|e| issues.push("session.store.sentinel.password", e))
                            .ok()
                    });
                    RedisTopology::Sentinel {
                        master: s.master,
                        nodes: s.nodes,
                        username: s.username,
                        password,
                        db: s.db.unwrap_or(0),
                    }
                }
                (None, None, None) => {
                    issues.push(
                        "session.store",
                        "a redis store needs one of `url`, `cluster` or `sentinel`",
                    );
                    RedisTopology::Standalone { url: String::new() }
                }
                _ => {
                    issues.push(
                        "session.store",
                        "give only one of `url`, `cluster` or `sentinel`",
                    );
                    RedisTopology::Standalone { url: String::new() }
                }
            };
            let key_prefix = key_prefix.unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
            if key_prefix.contains(['{', '}']) {
                issues.push(
                    "session.store.key_prefix",
                    "must not contain { or }: they would change the Cluster hash slot",
                );
            }
            let ca_pem = ca.as_ref().and_then(|path| match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    issues.push("session.store.ca", format!("cannot read {path}: {e}"));
                    None
                }
            });
            StoreConfig::Redis(RedisConfig {
                topology,
                key_prefix,
                ca_pem,
                timeout: duration(
                    &timeout,
                    "session.store.timeout",
                    Duration::from_secs(DEFAULT_REDIS_TIMEOUT_SECS),
                    issues,
                ),
            })
        }
        RawStore::Cookie {} => StoreConfig::Cookie,
    }
}

/// Hides a password in a URL before it goes into an error message.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn upstreams(value: Option<Value>, issues: &mut Issues) -> Vec<UpstreamConfig> {
    let Some(value) = value else {
        issues.push("upstreams", "at least one upstream is required");
        return Vec::new();
    };
    let Value::Object(map) = value else {
        issues.push("upstreams", "must be a mapping of names to upstreams");
        return Vec::new();
    };
    if map.is_empty() {
        issues.push("upstreams", "at least one upstream is required");
    }
    let mut out = Vec::new();
    for (name, v) in map {
        let path = format!("upstreams.{name}");
        let Some(raw) = section::<RawUpstream>(v, &path, issues) else {
            continue;
        };
        let uri: http::Uri = match raw.url.parse() {
            Ok(u) => u,
            Err(_) => {
                issues.push(format!("{path}.url"), format!("invalid URL {:?}", raw.url));
                continue;
            }
        };
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            issues.push(
                format!("{path}.url"),
                format!(
                    "{:?} needs a scheme and a host, e.g. http://127.0.0.1:3000",
                    raw.url
                ),
            );
            continue;
        };
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            issues.push(
                format!("{path}.url"),
                format!("unsupported scheme {scheme}: use http:// or https://"),
            );
        }
        if raw.ca.is_some() && scheme != http::uri::Scheme::HTTPS {
            issues.push(format!("{path}.ca"), "only applies to https:// upstreams");
        }
        let roots = if scheme == http::uri::Scheme::HTTPS {
            match crate::keys::root_store(raw.ca.as_deref().map(std::path::Path::new)) {
                Ok(roots) => Some(std::sync::Arc::new(roots)),
                Err(e) => {
                    issues.push(format!("{path}.ca"), e.to_string());
                    None
                }
            }
        } else {
            None
        };
        if uri.query().is_some() {
            issues.push(format!("{path}.url"), "must not have a query string");
        }
        let timeout = duration(
            &raw.timeout,
            &format!("{path}.timeout"),
            Duration::from_secs(DEFAULT_UPSTREAM_TIMEOUT_SECS),
            issues,
        );
        out.push(UpstreamConfig {
            name,
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            timeout,
            roots,
        });
    }
    out
}

fn routes(
    value: Option<Value>,
    upstreams: &[UpstreamConfig],
    headers: &InternalHeaders,
    issues: &mut Issues,
) -> Vec<RouteConfig> {
    let Some(value) = value else {
        issues.push("routes", "at least one route is required");
        return Vec::new();
    };
    let Value::Array(items) = value else {
        issues.push("routes", "must be a list of routes");
        return Vec::new();
    };
    if items.is_empty() {
        issues.push("routes", "at least one route is required");
    }
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let path = format!("routes[{i}]");
            let raw = section::<RawRoute>(v, &path, issues)?;
            route(raw, &path, upstreams, headers, issues)
        })
        .collect()
}

fn route(
    raw: RawRoute,
    path: &str,
    upstreams: &[UpstreamConfig],
    headers: &InternalHeaders,
    issues: &mut Issues,
) -> Option<RouteConfig> {
    let upstream = upstreams.iter().position(|u| u.name == raw.upstream);
    if upstream.is_none() {
        issues.push(
            format!("{path}.upstream"),
            format!("unknown upstream \"{}\"", raw.upstream),
        );
    }
    let path_prefix = raw.matcher.path_prefix.unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        issues.push(format!("{path}.match.path_prefix"), "must start with /");
    }
    let host = raw.matcher.host.map(|h| h.to_ascii_lowercase());
    let label = raw
        .name
        .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or(""), path_prefix));
    let forward = forward(
        raw.forward,
        path,
        upstream.map(|u| upstreams[u].name.as_str()),
        headers,
        issues,
    );
    let on_deny = match raw.on_deny {
        None => OnDeny::Status(http::StatusCode::UNAUTHORIZED),
        Some(RawOnDeny {
            status: Some(_),
            redirect: Some(_),
        }) => {
            issues.push(
                format!("{path}.on_deny"),
                "give either `status` or `redirect`, not both",
            );
            OnDeny::Status(http::StatusCode::UNAUTHORIZED)
        }
        Some(RawOnDeny {
            redirect: Some(target),
            ..
        }) => {
            if http::HeaderValue::from_str(&target).is_err() {
                issues.push(
                    format!("{path}.on_deny.redirect"),
                    "is not a valid Location header value",
                );
            }
            OnDeny::Redirect(target)
        }
        Some(RawOnDeny { status, .. }) => {
            let code = status.unwrap_or(DEFAULT_DENY_STATUS);
            match http::StatusCode::from_u16(code) {
                Ok(s) if (400..500).contains(&code) => OnDeny::Status(s),
                _ => {
                    issues.push(
                        format!("{path}.on_deny.status"),
                        format!("{code} is not a 4xx status"),
                    );
                    OnDeny::Status(http::StatusCode::UNAUTHORIZED)
                }
            }
        }
    };
    Some(RouteConfig {
        label,
        host,
        path_prefix,
        upstream: upstream?,
        strip_prefix: raw.strip_prefix.unwrap_or(false),
        forward: forward?,
        require: raw.require.unwrap_or_default(),
        on_deny,
    })
}

fn forward(
    raw: RawForward,
    route_path: &str,
    audience: Option<&str>,
    headers: &InternalHeaders,
    issues: &mut Issues,
) -> Option<ForwardConfig> {
    let path = format!("{route_path}.forward");
    let mode_raw = raw.mode.unwrap_or(RawForwardMode::Signed);
    let mut ok = true;
    let mode = match mode_raw {
        RawForwardMode::Json => ForwardMode::Json,
        RawForwardMode::None => ForwardMode::None,
        RawForwardMode::Signed => {
            let key = match (&raw.secret, &raw.private_key) {
                (Some(s), None) => {
                    secret_value(s, &format!("{path}.secret"), issues).map(SigningKey::Hs256)
                }
                (None, Some(paths)) => {
                    ed25519_keys(&paths.to_vec(), &format!("{path}.private_key"), issues)
                }
                (Some(_), Some(_)) => {
                    issues.push(
                        path.clone(),
                        "give either `secret` (HS256) or `private_key` (EdDSA), not both",
                    );
                    None
                }
                (None, None) => {
                    issues.push(
                        path.clone(),
                        "mode `signed` needs `secret` (HS256) or `private_key` (EdDSA); or set `mode: json` or `mode: none`",
                    );
                    None
                }
            };
            let token_ttl = duration(
                &raw.token_ttl,
                &format!("{path}.token_ttl"),
                Duration::from_secs(DEFAULT_TOKEN_TTL_SECS),
                issues,
            );
            if token_ttl < Duration::from_secs(1) {
                issues.push(format!("{path}.token_ttl"), "must be at least 1 second");
            }
            match key {
                Some(key) => ForwardMode::Signed(Box::new(SigningConfig {
                    key,
                    issuer: raw
                        .issuer
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ISSUER.to_string()),
                    token_ttl,
                    audience: audience.unwrap_or_default().to_string(),
                })),
                None => {
                    ok = false;
                    ForwardMode::None
                }
            }
        }
    };
    if mode_raw != RawForwardMode::Signed {
        for (field, set) in [
            ("secret", raw.secret.is_some()),
            ("private_key", raw.private_key.is_some()),
            ("issuer", raw.issuer.is_some()),
            ("token_ttl", raw.token_ttl.is_some()),
        ] {
            if set {
                issues.push(format!("{path}.{field}"), "only applies to `mode: signed`");
            }
        }
    }
    let header = match (&mode, raw.header) {
        (ForwardMode::None, Some(_)) => {
            issues.push(format!("{path}.header"), "does not apply to `mode: none`");
            None
        }
        (ForwardMode::None, None) => None,
        (_, Some(h)) => header_name(&h, &format!("{path}.header"), issues),
        (ForwardMode::Json, None) => Some(headers.data.clone()),
        (ForwardMode::Signed(_), None) => Some(headers.token.clone()),
    };
    let copied = raw
        .headers
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(h, key)| {
            Some((
                header_name(&h, &format!("{path}.headers.{h}"), issues)?,
                key,
            ))
        })
        .collect();
    ok.then_some(ForwardConfig {
        mode,
        header,
        headers: copied,
        keys: raw.keys,
    })
}

/// `forward.private_key`: the first file signs; every file is published.
fn ed25519_keys(paths: &[String], path: &str, issues: &mut Issues) -> Option<SigningKey> {
    use crate::keys::ed25519;
    let Some(first) = paths.first() else {
        issues.push(path, "needs at least one key file");
        return None;
    };
    let list_path = |i: usize| {
        if paths.len() > 1 {
            format!("{path}[{i}]")
        } else {
            path.to_string()
        }
    };
    let signing = ed25519::load_private(std::path::Path::new(first))
        .map_err(|e| issues.push(list_path(0), e))
        .ok();
    let mut published: Vec<ed25519::Jwk> = signing.iter().map(|s| s.jwk.clone()).collect();
    for (i, p) in paths.iter().enumerate().skip(1) {
        match ed25519::load_public(std::path::Path::new(p)) {
            Ok(jwk) if !published.contains(&jwk) => published.push(jwk),
            Ok(_) => {}
            Err(e) => issues.push(list_path(i), e),
        }
    }
    Some(SigningKey::EdDsa {
        signing: signing?,
        published,
    })
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
    }
}
