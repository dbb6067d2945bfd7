//! `upstreams:` and `routes:`, with each route's forwarding (and its signing keys).

use super::*;
use crate::config::raw::*;
use serde_json::Value;

pub(super) fn upstreams(value: Option<Value>, issues: &mut Issues) -> Vec<UpstreamConfig> {
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
        // `env:NAME`, as secrets take it: a container's config names the
        // upstream by an environment variable.
        let url = match raw.url.strip_prefix("env:") {
            None => raw.url.clone(),
            Some(name) => match std::env::var(name) {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    issues.push(
                        format!("{path}.url"),
                        format!("environment variable {name} is not set (it names the upstream's URL, e.g. http://app:3000)"),
                    );
                    continue;
                }
            },
        };
        let uri: http::Uri = match url.parse() {
            Ok(u) => u,
            Err(_) => {
                issues.push(format!("{path}.url"), format!("invalid URL {url:?}"));
                continue;
            }
        };
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            issues.push(
                format!("{path}.url"),
                format!(
                    "{:?} needs a scheme and a host, e.g. http://127.0.0.1:3000",
                    url
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

pub(super) fn routes(
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
        csrf: raw
            .csrf
            .and_then(|c| super::csrf::csrf(c, &format!("{path}.csrf"), issues)),
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
    let writes = match raw.actions {
        None => WriteScope {
            keys: raw.writable_keys,
            ..WriteScope::default()
        },
        Some(actions) => WriteScope {
            keys: raw.writable_keys,
            flush: actions.contains(&RawAction::Flush),
            cycle: actions.contains(&RawAction::Cycle),
            expiry: actions.contains(&RawAction::Expiry),
            revoke_others: actions.contains(&RawAction::RevokeOthers),
        },
    };
    ok.then_some(ForwardConfig {
        mode,
        header,
        headers: copied,
        keys: raw.keys,
        writes,
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
