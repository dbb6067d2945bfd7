//! `session:`: the cookie, lifetimes, limits and the store.

use super::store::store;
use super::*;
use crate::config::raw::*;

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
        Some(s) => store(s, "session.store", issues),
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
