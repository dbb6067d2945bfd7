//! The CSRF phase of a route with `csrf:` (SPEC section 8.7), Django's
//! `CsrfViewMiddleware` at the gateway: an unsafe request must come from
//! the site's own origin (or a trusted one) and carry the token of the
//! session it acts in, in the header or in its form; otherwise 403 with
//! Django's reason, and the upstream is never reached. A form read to find
//! the token is sent on byte for byte.

use super::ProxyBody;
use crate::config::CsrfConfig;
use crate::http1::{ConnInfo, RequestBody};
use crate::session::csrf::{CsrfKeys, CsrfSecret, TokenFormat, read_token};
use crate::session::{After, Loaded};
use crate::upstream::forward;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

/// The token the request is judged by and the upstream is given, and
/// whether the client's cookie already holds it.
pub(super) struct CsrfState {
    pub secret: CsrfSecret,
    cookie_current: bool,
}

/// Why a request was refused: Django's reasons, word for word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rejection {
    BadOrigin(String),
    NoReferer,
    MalformedReferer,
    InsecureReferer,
    BadReferer(String),
    NoCookie,
    Missing,
    Format {
        from: TokenSource,
        format: TokenFormat,
    },
    Incorrect {
        from: TokenSource,
    },
    /// A form too large to be read for its token, without the header.
    FormTooLarge,
}

/// Where the token was found; Django names it in its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenSource {
    Post,
    Header(String),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Post => f.write_str("POST"),
            TokenSource::Header(name) => write!(f, "the '{name}' HTTP header"),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::BadOrigin(o) => {
                write!(f, "Origin checking failed - {o} does not match any trusted origins.")
            }
            Rejection::NoReferer => f.write_str("Referer checking failed - no Referer."),
            Rejection::MalformedReferer => {
                f.write_str("Referer checking failed - Referer is malformed.")
            }
            Rejection::InsecureReferer => {
                f.write_str("Referer checking failed - Referer is insecure while host is secure.")
            }
            Rejection::BadReferer(r) => {
                write!(f, "Referer checking failed - {r} does not match any trusted origins.")
            }
            Rejection::NoCookie => f.write_str("CSRF cookie not set."),
            Rejection::Missing => f.write_str("CSRF token missing."),
            Rejection::Format { from, format } => match format {
                TokenFormat::Length => write!(f, "CSRF token from {from} has incorrect length."),
                TokenFormat::Characters => {
                    write!(f, "CSRF token from {from} has invalid characters.")
                }
            },
            Rejection::Incorrect { from } => write!(f, "CSRF token from {from} incorrect."),
            Rejection::FormTooLarge => f.write_str(
                "CSRF token missing. (the form is larger than limits.max_form_bytes: send the token in the header)",
            ),
        }
    }
}

/// Django's header display name: `X-CSRFToken` reads as `X-Csrftoken`.
fn header_display(name: &http::HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The request's scheme and host, as the client addressed it.
pub(super) struct Addressed<'a> {
    pub secure: bool,
    pub host: &'a str,
}

/// The token state for a request: its session's secret, or without a
/// session the visitor's cookie (a new random one when it holds none).
pub(super) fn state(
    cfg: &CsrfConfig,
    keys: &CsrfKeys,
    headers: &HeaderMap,
    loaded: &Loaded,
) -> CsrfState {
    let cookie =
        crate::session::cookie::request_cookie(headers, &cfg.cookie).and_then(CsrfSecret::parse);
    match &loaded.record {
        Some(record) => {
            let secret = keys.for_session(&record.sid);
            CsrfState {
                cookie_current: cookie.is_some_and(|c| c.matches(&secret)),
                secret,
            }
        }
        None => match cookie {
            Some(secret) => CsrfState {
                secret,
                cookie_current: true,
            },
            None => CsrfState {
                secret: CsrfSecret::random(),
                cookie_current: false,
            },
        },
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Django's `is_same_domain`: `pattern` is a host, or `.example.com` for
/// it and every subdomain.
fn is_same_domain(host: &str, pattern: &str) -> bool {
    let (host, pattern) = (host.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    match pattern.strip_prefix('.') {
        Some(domain) => host == domain || host.ends_with(&pattern),
        None => host == pattern,
    }
}

/// `Origin` against the request's own origin and the trusted ones.
fn origin_ok(origin: &str, cfg: &CsrfConfig, at: &Addressed) -> bool {
    let origin = origin.to_ascii_lowercase();
    let own = format!("{}://{}", if at.secure { "https" } else { "http" }, at.host);
    if origin == own.to_ascii_lowercase() {
        return true;
    }
    if cfg
        .trusted_origins
        .iter()
        .any(|t| !t.contains('*') && *t == origin)
    {
        return true;
    }
    let Some((scheme, netloc)) = origin.split_once("://") else {
        return false;
    };
    cfg.trusted_origins.iter().any(|t| {
        t.split_once("://").is_some_and(|(ts, th)| {
            ts == scheme && th.starts_with("*.") && is_same_domain(netloc, &th[1..])
        })
    })
}

/// Over HTTPS without `Origin`: `Referer` must be HTTPS and from the
/// request's host or a trusted origin's.
fn referer_ok(
    referer: Option<&HeaderValue>,
    cfg: &CsrfConfig,
    at: &Addressed,
) -> Result<(), Rejection> {
    let referer = referer.ok_or(Rejection::NoReferer)?;
    let text = referer.to_str().map_err(|_| Rejection::MalformedReferer)?;
    let uri: http::Uri = text.parse().map_err(|_| Rejection::MalformedReferer)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Rejection::MalformedReferer);
    };
    if scheme != "https" {
        return Err(Rejection::InsecureReferer);
    }
    let netloc = authority.as_str();
    let trusted = cfg.trusted_origins.iter().any(|t| {
        t.split_once("://")
            .is_some_and(|(_, host)| is_same_domain(netloc, host.trim_start_matches('*')))
    });
    if trusted || is_same_domain(netloc, at.host) {
        Ok(())
    } else {
        Err(Rejection::BadReferer(text.to_string()))
    }
}

enum FormKind {
    UrlEncoded,
    Multipart(String),
}

fn form_kind(headers: &HeaderMap) -> Option<FormKind> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Some(FormKind::UrlEncoded),
        "multipart/form-data" => multer::parse_boundary(ct).ok().map(FormKind::Multipart),
        _ => None,
    }
}

/// Reads the whole body when it fits in `max` bytes; `None` past that
/// (what was read is kept: the request is refused, not forwarded).
async fn read_form(
    body: &mut RequestBody,
    max: usize,
) -> Result<Option<Bytes>, crate::http1::ClientBodyError> {
    if hyper::body::Body::size_hint(body).lower() > max as u64 {
        return Ok(None);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > max {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

async fn form_field(form: &Bytes, kind: &FormKind, field: &str) -> Option<String> {
    match kind {
        FormKind::UrlEncoded => form_urlencoded::parse(form)
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.into_owned()),
        FormKind::Multipart(boundary) => {
            let data = form.clone();
            let stream =
                futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(data) });
            let mut multipart = multer::Multipart::new(stream, boundary.as_str());
            while let Ok(Some(part)) = multipart.next_field().await {
                if part.name() == Some(field) {
                    return part.text().await.ok();
                }
            }
            None
        }
    }
}

/// What the phase decided.
pub(super) enum Checked {
    Pass,
    Refused(Rejection),
}

/// Checks an unsafe request; a form read for its token replaces `body`
/// with the bytes read, sent on unchanged.
#[allow(clippy::too_many_arguments)]
pub(super) async fn check(
    cfg: &CsrfConfig,
    keys: &CsrfKeys,
    state: &CsrfState,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    loaded: &Loaded,
    at: &Addressed<'_>,
    max_form_bytes: usize,
) -> Result<Checked, crate::http1::ClientBodyError> {
    if is_safe(&parts.method)
        || cfg
            .exempt
            .iter()
            .any(|p| parts.uri.path().starts_with(p.as_str()))
    {
        return Ok(Checked::Pass);
    }
    let h = &parts.headers;
    if let Some(origin) = h.get(header::ORIGIN) {
        let text = String::from_utf8_lossy(origin.as_bytes());
        if !origin_ok(&text, cfg, at) {
            return Ok(Checked::Refused(Rejection::BadOrigin(text.into_owned())));
        }
    } else if at.secure
        && let Err(r) = referer_ok(h.get(header::REFERER), cfg, at)
    {
        return Ok(Checked::Refused(r));
    }
    let session_sid = loaded.record.as_ref().map(|r| r.sid.as_str());
    if session_sid.is_none() && !state.cookie_current {
        return Ok(Checked::Refused(Rejection::NoCookie));
    }
    // The header first: a request that carries it needs no body read.
    let (token, from) = match h.get(&cfg.header) {
        Some(v) => (
            v.as_bytes().to_vec(),
            TokenSource::Header(header_display(&cfg.header)),
        ),
        None => {
            let kind = (parts.method == Method::POST)
                .then(|| form_kind(h))
                .flatten();
            let Some(kind) = kind else {
                return Ok(Checked::Refused(Rejection::Missing));
            };
            let Some(form) = read_form(body, max_form_bytes).await? else {
                return Ok(Checked::Refused(Rejection::FormTooLarge));
            };
            let field = form_field(&form, &kind, &cfg.form_field).await;
            *body = RequestBody::Buffered(Some(form));
            match field {
                Some(v) if !v.is_empty() => (v.into_bytes(), TokenSource::Post),
                _ => return Ok(Checked::Refused(Rejection::Missing)),
            }
        }
    };
    let presented = match read_token(&token) {
        Ok(secret) => secret,
        Err(format) => return Ok(Checked::Refused(Rejection::Format { from, format })),
    };
    let ok = match session_sid {
        // The state holds the first key's secret already; the others are
        // derived only for a token from before a rotation.
        Some(sid) => presented.matches(&state.secret) || keys.is_sessions(sid, &presented),
        None => presented.matches(&state.secret),
    };
    Ok(if ok {
        Checked::Pass
    } else {
        Checked::Refused(Rejection::Incorrect { from })
    })
}

impl super::Proxy {
    /// The scheme and host the client addressed: a trusted proxy's
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`, or the connection's and
    /// the `Host` header.
    fn addressed(&self, parts: &http::request::Parts, conn: &ConnInfo) -> (bool, String) {
        let trusted = !self.trusted.is_empty() && self.trusted.contains(&conn.peer);
        let forwarded = |name: &http::HeaderName| {
            trusted
                .then(|| parts.headers.get(name)?.to_str().ok())
                .flatten()
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        };
        let secure = match forwarded(&forward::X_FORWARDED_PROTO) {
            Some(proto) => proto.eq_ignore_ascii_case("https"),
            None => conn.proto == "https",
        };
        let host = forwarded(&forward::X_FORWARDED_HOST)
            .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string();
        (secure, host)
    }

    /// The `Set-Cookie` of the token the response leaves the client with,
    /// when it does not hold it already.
    pub(super) fn csrf_cookie(
        &self,
        cfg: &CsrfConfig,
        state: &CsrfState,
        after: &After,
    ) -> Option<HeaderValue> {
        let secret = cookie_after(&self.csrf_keys, state, after)?;
        Some(self.sessions.codec.script_readable(
            &cfg.cookie,
            secret.as_str(),
            crate::session::csrf::COOKIE_AGE_S,
            crate::record::now_ms(),
        ))
    }

    /// The CSRF phase of a route with `csrf:`: the request's token state,
    /// or the 403 that refuses it.
    pub(super) async fn csrf_phase(
        &self,
        route: &super::Route,
        cfg: &CsrfConfig,
        parts: &http::request::Parts,
        body: &mut RequestBody,
        loaded: &Loaded,
        conn: &ConnInfo,
    ) -> Result<Result<CsrfState, Box<Response<ProxyBody>>>, crate::error::ProxyError> {
        let state = state(cfg, &self.csrf_keys, &parts.headers, loaded);
        let (secure, host) = self.addressed(parts, conn);
        let at = Addressed {
            secure,
            host: &host,
        };
        let checked = check(
            cfg,
            &self.csrf_keys,
            &state,
            parts,
            body,
            loaded,
            &at,
            self.max_form_bytes,
        )
        .await
        .map_err(crate::error::ProxyError::BadRequestBody)?;
        Ok(match checked {
            Checked::Pass => Ok(state),
            Checked::Refused(reason) => {
                crate::limited!(crate::logging::LogClass::refused, info, route = %route.cfg.label, reason = %reason, "request refused: CSRF verification failed");
                Err(Box::new(refused(&reason)))
            }
        })
    }
}

/// The 403 of a refused request.
pub(super) fn refused(reason: &Rejection) -> Response<ProxyBody> {
    let body = format!("CSRF verification failed: {reason}\n");
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
        Bytes::from(body),
    )));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The cookie to set after the response: the secret of the session the
/// response leaves, when the client does not hold it already. A session
/// that ended leaves a new random secret (Django rotates it at logout too).
fn cookie_after(keys: &CsrfKeys, state: &CsrfState, after: &After) -> Option<CsrfSecret> {
    match after {
        After::Unchanged => (!state.cookie_current).then_some(state.secret),
        After::Now(sid) => {
            let secret = keys.for_session(sid);
            (!(state.cookie_current && state.secret.matches(&secret))).then_some(secret)
        }
        After::Ended => Some(CsrfSecret::random()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(trusted: &[&str]) -> CsrfConfig {
        CsrfConfig {
            trusted_origins: trusted.iter().map(|s| s.to_string()).collect(),
            header: http::HeaderName::from_static("x-csrftoken"),
            form_field: "csrfmiddlewaretoken".into(),
            cookie: "csrftoken".into(),
            exempt: vec![],
        }
    }

    #[test]
    fn origins_as_django_reads_them() {
        // Django's test_origin_* cases, in short.
        let at = Addressed {
            secure: true,
            host: "www.example.com",
        };
        let c = cfg(&["https://dashboard.example.com", "https://*.trusted.org"]);
        assert!(origin_ok("https://www.example.com", &c, &at));
        assert!(
            !origin_ok("http://www.example.com", &c, &at),
            "scheme matters"
        );
        assert!(
            !origin_ok("https://www.example.com:8443", &c, &at),
            "port matters"
        );
        assert!(origin_ok("https://dashboard.example.com", &c, &at));
        assert!(!origin_ok("https://evil.example.com", &c, &at));
        assert!(origin_ok("https://a.trusted.org", &c, &at));
        assert!(
            origin_ok("https://trusted.org", &c, &at),
            "the bare domain too"
        );
        assert!(
            !origin_ok("http://a.trusted.org", &c, &at),
            "scheme of the wildcard"
        );
        assert!(!origin_ok("https://nottrusted.org", &c, &at));
        assert!(!origin_ok("null", &c, &at));
    }

    #[test]
    fn referers_as_django_reads_them() {
        let at = Addressed {
            secure: true,
            host: "www.example.com",
        };
        let c = cfg(&["https://*.trusted.org"]);
        let r = |v: &str| referer_ok(Some(&HeaderValue::from_str(v).unwrap()), &c, &at);
        assert_eq!(referer_ok(None, &c, &at), Err(Rejection::NoReferer));
        assert_eq!(r("https://www.example.com/form/"), Ok(()));
        assert_eq!(
            r("http://www.example.com/"),
            Err(Rejection::InsecureReferer)
        );
        assert_eq!(r("//www.example.com/"), Err(Rejection::MalformedReferer));
        assert_eq!(r("https://a.trusted.org/x"), Ok(()));
        assert_eq!(
            r("https://evil.com/"),
            Err(Rejection::BadReferer("https://evil.com/".into()))
        );
    }

    #[test]
    fn reasons_read_as_djangos() {
        let header = TokenSource::Header(header_display(&http::HeaderName::from_static(
            "x-csrftoken",
        )));
        assert_eq!(
            Rejection::Format {
                from: header.clone(),
                format: TokenFormat::Length
            }
            .to_string(),
            "CSRF token from the 'X-Csrftoken' HTTP header has incorrect length."
        );
        assert_eq!(
            Rejection::Incorrect {
                from: TokenSource::Post
            }
            .to_string(),
            "CSRF token from POST incorrect."
        );
        assert_eq!(Rejection::Missing.to_string(), "CSRF token missing.");
    }
}
