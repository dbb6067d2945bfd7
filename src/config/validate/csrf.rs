//! A route's `csrf:`: Django's CSRF settings, checked.

use super::{Issues, header_name};
use crate::config::raw::RawCsrf;
use crate::config::{
    CsrfConfig, DEFAULT_CSRF_COOKIE, DEFAULT_CSRF_FORM_FIELD, DEFAULT_CSRF_HEADER,
};

pub(super) fn csrf(raw: RawCsrf, path: &str, issues: &mut Issues) -> Option<CsrfConfig> {
    if raw.enabled == Some(false) {
        return None;
    }
    let before = issues.0.len();
    let mut trusted_origins = Vec::new();
    for (i, origin) in raw
        .trusted_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        // Django 4's rule: a scheme is required; a wildcard only leads the host.
        let ok = origin.split_once("://").is_some_and(|(scheme, host)| {
            !scheme.is_empty()
                && !host.is_empty()
                && !host.contains('/')
                && !host.strip_prefix("*.").unwrap_or(host).contains('*')
        });
        if ok {
            trusted_origins.push(origin.to_ascii_lowercase());
        } else {
            issues.push(
                format!("{path}.trusted_origins[{i}]"),
                "must be scheme://host[:port], the host optionally starting with *. (e.g. https://*.example.com)",
            );
        }
    }
    let header = header_name(
        raw.header.as_deref().unwrap_or(DEFAULT_CSRF_HEADER),
        &format!("{path}.header"),
        issues,
    );
    let form_field = raw
        .form_field
        .unwrap_or_else(|| DEFAULT_CSRF_FORM_FIELD.to_string());
    if form_field.is_empty() {
        issues.push(format!("{path}.form_field"), "must not be empty");
    }
    let cookie = raw
        .cookie
        .unwrap_or_else(|| DEFAULT_CSRF_COOKIE.to_string());
    if cookie.is_empty()
        || !cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        issues.push(
            format!("{path}.cookie"),
            "must be a cookie name of letters, digits, '-', '_' and '.'",
        );
    }
    let exempt = raw.exempt.unwrap_or_default();
    for (i, prefix) in exempt.iter().enumerate() {
        if !prefix.starts_with('/') {
            issues.push(format!("{path}.exempt[{i}]"), "must start with /");
        }
    }
    (issues.0.len() == before).then(|| CsrfConfig {
        trusted_origins,
        header: header.expect("checked above"),
        form_field,
        cookie,
        exempt,
    })
}
