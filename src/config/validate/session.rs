//! `session:`: the cookie, lifetimes, limits and the store.

use super::*;
use crate::config::raw::*;
use serde_json::Value;

pub(super) fn session(raw: RawSession, issues: &mut Issues) -> SessionConfig {
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
            max_sessions: DEFAULT_EMBEDDED_MAX_SESSIONS,
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
        subject_key: match raw.subject_key {
            Some(k) if k.is_empty() => {
                issues.push("session.subject_key", "must name a top-level key");
                None
            }
            k => k,
        },
        max_per_subject: match raw.max_per_subject {
            Some(0) => {
                issues.push("session.max_per_subject", "must be at least 1");
                None
            }
            Some(n) => Some(n as usize),
            None => None,
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
        RawStore::Embedded { path, max_sessions } => {
            let max_sessions = max_sessions.map_or(DEFAULT_EMBEDDED_MAX_SESSIONS, |m| m as usize);
            if max_sessions == 0 {
                issues.push("session.store.max_sessions", "must be at least 1");
            }
            StoreConfig::Embedded {
                path: PathBuf::from(path.unwrap_or_else(|| DEFAULT_EMBEDDED_PATH.to_string())),
                max_sessions,
            }
        }
        RawStore::Redis {
            url,
            cluster,
            sentinel,
            key_prefix,
            timeout,
            ca,
            replicas_ack,
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
            let replicas_ack = replicas_ack.unwrap_or(0);
            if replicas_ack > MAX_REPLICAS_ACK {
                issues.push(
                    "session.store.replicas_ack",
                    format!("at most {MAX_REPLICAS_ACK}"),
                );
            }
            StoreConfig::Redis(RedisConfig {
                topology,
                key_prefix,
                ca_pem,
                replicas_ack: replicas_ack.min(MAX_REPLICAS_ACK) as u32,
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
