//! One request through the gateway: route, load the session, enforce,
//! forward with the session header, apply the upstream's write-back.

use crate::config::{Config, ForwardConfig, InternalHeaders, RouteConfig};
use crate::error::ProxyError;
use crate::future::pinned_in_place;
use crate::http1::{ConnInfo, RequestBody};
use crate::metrics::Metrics;
use crate::record::now_ms;
use crate::router::{self, HostError};
use crate::session::cookie::{CookieCodec, is_chunk_name};
use crate::session::{Backend, Loaded, Sessions};
use crate::upstream::Upstreams;
use crate::upstream::forward::{self, X_REQUEST_ID};
use crate::upstream::identity::{Forwarding, IdentityError};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

mod answers;
mod auth;
mod csrf;
mod request_id;
mod session_headers;

use answers::{deny, refusal};
use request_id::request_id;

pub type ProxyBody = Either<crate::upstream::UpstreamBody, Full<Bytes>>;

struct Route {
    cfg: RouteConfig,
    forwarding: Forwarding,
    metrics: crate::metrics::RouteRecorder,
}

/// A request id as text, for the log span.
struct RequestIdDisplay<'a>(&'a HeaderValue);

impl std::fmt::Display for RequestIdDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_str().unwrap_or("-"))
    }
}

/// What can keep the proxy from starting: a signing key it cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(#[from] IdentityError);

pub struct Proxy {
    routes: Vec<Route>,
    router: router::Router,
    /// `underscores_in_headers`: forward request headers with `_` in their names.
    underscores_allowed: bool,
    /// `log.access`.
    access: crate::config::AccessLog,
    /// `trusted_proxies`.
    trusted: crate::config::TrustedProxies,
    /// `auth_endpoint.path`.
    auth_path: Option<String>,
    /// Permits of upgraded (tunnelled) connections, `limits.max_connections` of them.
    tunnels: Arc<tokio::sync::Semaphore>,
    unrouted: crate::metrics::RouteRecorder,
    /// Every header any route fills from the session outside the internal
    /// prefix: a client may send none of them, whichever route it takes.
    session_filled: Vec<http::HeaderName>,
    upstreams: Upstreams,
    pub sessions: Arc<Sessions>,
    headers: InternalHeaders,
    /// Spans are exported (`tracing:`): the client's trace is continued and
    /// the upstream is told which span called it.
    traced: bool,
    /// What CSRF secrets of sessions are derived with (routes with `csrf:`).
    csrf_keys: crate::session::csrf::CsrfKeys,
    /// `limits.max_form_bytes`.
    max_form_bytes: usize,
}

/// Headers the proxy sets on every request: `X-Forwarded-For`, `-Proto`,
/// `-Host`, `X-Request-Id` and the session's header (and, as JSON, its sid).
const PROXY_SET_HEADERS: usize = 6;
const NO_ROUTE_LABEL: &str = "none";

impl Proxy {
    pub fn new(
        config: &Config,
        backend: Backend,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SetupError> {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                Ok(Route {
                    forwarding: Forwarding::new(&r.forward)?,
                    metrics: metrics.route(&r.label),
                    cfg: r.clone(),
                })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        let sessions = Arc::new(
            Sessions::new(
                backend,
                config.headers.clone(),
                CookieCodec::new(config.session.cookie.clone(), &config.secrets),
                config.session.policy,
                config.session.on_store_error,
                config.session.save_every_request,
                metrics.clone(),
            )
            .with_subjects(
                config.session.subject_key.clone(),
                config.session.max_per_subject,
            ),
        );
        let mut session_filled: Vec<http::HeaderName> = Vec::new();
        for r in &config.routes {
            let names = r
                .forward
                .headers
                .iter()
                .map(|(n, _)| n)
                .chain(r.forward.header.as_ref());
            for name in names {
                if !config.headers.is_internal(name) && !session_filled.contains(name) {
                    session_filled.push(name.clone());
                }
            }
        }
        Ok(Proxy {
            tunnels: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            unrouted: metrics.route(NO_ROUTE_LABEL),
            router: router::Router::new(&config.routes, config.paths),
            underscores_allowed: config.underscores_in_headers,
            access: config.log.access,
            trusted: config.trusted_proxies.clone(),
            auth_path: config.auth_endpoint.clone(),
            routes,
            session_filled,
            upstreams: Upstreams::new(config.upstreams.clone(), config.limits.max_connections),
            sessions,
            headers: config.headers.clone(),
            traced: crate::telemetry::enabled(),
            csrf_keys: crate::session::csrf::CsrfKeys::new(&config.secrets),
            max_form_bytes: config.limits.max_form_bytes,
        })
    }

    /// The upstream connections idle in the pools; the app closes the old ones.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Whether this request gets an access-log line (`log.access`).
    fn access_logged(&self) -> bool {
        match self.access {
            crate::config::AccessLog::On => true,
            crate::config::AccessLog::Off => false,
            crate::config::AccessLog::Sample(share) => request_id::sampled(share),
        }
    }

    /// Never fails: every error becomes a response. Boxed, as the request
    /// is: the response too passes through a chain of futures, and its
    /// bytes were copied at each step.
    pub async fn handle(
        self: Arc<Self>,
        req: Box<Request<RequestBody>>,
        conn: ConnInfo,
    ) -> Box<Response<ProxyBody>> {
        let start = Instant::now();
        let request_id = request_id(req.headers());
        // What the access log needs is copied only when this request is logged.
        let access = (self.access_logged()
            && tracing::enabled!(target: "sessiongate::access", tracing::Level::INFO))
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let client =
            forward::client_address(req.headers(), &conn.client_ip, &conn.peer, &self.trusted);
        // The fields left empty are the exporter's (`tracing:`), filled
        // only when it runs.
        let span = tracing::info_span!(
            "request",
            request_id = %RequestIdDisplay(&request_id),
            client_ip = client.to_str().unwrap_or("-"),
            otel.kind = "server",
            otel.name = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            http.request.method = tracing::field::Empty,
            url.path = tracing::field::Empty,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            session.sid = tracing::field::Empty,
        );
        if self.traced {
            crate::telemetry::continue_trace(&span, req.headers());
            // The route is not known yet, and the exporter takes the name
            // before the span is first entered: the method alone, as the
            // HTTP conventions name a server span without a route.
            span.record("otel.name", req.method().as_str());
            span.record("http.request.method", req.method().as_str());
            span.record("url.path", req.uri().path());
        }
        // Boxed: the request's state is then built once, in place, instead of
        // being copied through every layer that awaits it.
        let forwarding = pinned_in_place(|| self.route_and_forward(req, conn, &request_id, start));
        let (route, mut resp) = if span.is_disabled() {
            forwarding.await
        } else {
            forwarding.instrument(span.clone()).await
        };
        resp.headers_mut()
            .entry(&X_REQUEST_ID)
            .or_insert(request_id);
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        let recorder = route.map_or(&self.unrouted, |i| &self.routes[i].metrics);
        recorder.record(status, elapsed);
        let label = route.map_or(NO_ROUTE_LABEL, |i| self.routes[i].cfg.label.as_str());
        if self.traced {
            crate::telemetry::finish_request(&span, label, status);
        }
        if let Some((method, path)) = access {
            span.in_scope(|| {
                tracing::info!(
                    target: "sessiongate::access",
                    method = %method,
                    path = %path,
                    status,
                    // Whole microseconds: `0.129`, not `0.12937300000000002`.
                    duration_ms = elapsed.as_micros() as f64 / 1000.0,
                    route = label,
                    client_ip = client.to_str().unwrap_or("-"),
                    "request"
                )
            });
        }
        resp
    }

    async fn route_and_forward(
        &self,
        req: Box<Request<RequestBody>>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        start: Instant,
    ) -> (Option<usize>, Box<Response<ProxyBody>>) {
        let version = req.version();
        if let Some(auth) = &self.auth_path
            && auth::is_auth_path(auth, req.uri().path())
        {
            return self.authorize(req, &conn).await;
        }
        let (index, target) = match self.route(&req) {
            Ok(routed) => routed,
            Err(e) => {
                log_failure(&e, NO_ROUTE_LABEL);
                return (None, Box::new(refusal(&e, version)));
            }
        };
        let resp = match self
            .forward(&self.routes[index], req, conn, target, request_id, start)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                log_failure(&e, &self.routes[index].cfg.label);
                Box::new(refusal(&e, version))
            }
        };
        (Some(index), resp)
    }

    /// The route phase: the request target and Host checked, the path read
    /// as `paths:` says, the first matching route found.
    fn route(&self, req: &Request<RequestBody>) -> Result<(usize, Target), ProxyError> {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        let (host, host_in_place) = request_host(req).map_err(ProxyError::BadHost)?;
        let path = match self.router.read_path(req.uri().path()) {
            Ok(path) => path,
            // `OPTIONS *` asks about the server, not a resource: no route serves it.
            Err(router::PathError::NotAPath)
                if req.method() == http::Method::OPTIONS && req.uri().path() == "*" =>
            {
                return Err(ProxyError::NoRoute);
            }
            Err(e) => return Err(ProxyError::BadPath(e)),
        };
        let host_text = host.as_ref().and_then(|h| h.to_str().ok());
        let index = self
            .router
            .find(host_text, &path)
            .ok_or(ProxyError::NoRoute)?;
        // Like nginx, the path is passed on as the client wrote it, unless
        // the route rewrites it.
        let rewritten = self.routes[index]
            .cfg
            .strip_prefix
            .then(|| self.router.strip(index, &path));
        Ok((
            index,
            Target {
                host,
                host_in_place,
                rewritten,
            },
        ))
    }

    /// The phases after routing: load the session, enforce the route's
    /// `require`, build the upstream request, send it, and apply the
    /// upstream's write-back to the response.
    async fn forward(
        &self,
        route: &Route,
        req: Box<Request<RequestBody>>,
        conn: ConnInfo,
        target: Target,
        request_id: &HeaderValue,
        start: Instant,
    ) -> Result<Box<Response<ProxyBody>>, ProxyError> {
        let now = now_ms();
        let (mut parts, mut body) = (*req).into_parts();
        let (loaded, forwarded_cookie) = self.sessions.load_request(&parts.headers, now).await?;
        if self.traced
            && let Some(record) = &loaded.record
        {
            // The session's public sid, never its id (which is the cookie).
            tracing::Span::current().record("session.sid", record.sid.as_str());
        }
        if let Some(denied) = enforce(&route.cfg, &loaded, &parts) {
            return Ok(denied);
        }
        // Deny first, then CSRF: a request without the session a route
        // requires is refused as such.
        // Boxed: the phase may read a form, and its state would otherwise
        // widen every request's future, CSRF route or not.
        let csrf = match &route.cfg.csrf {
            Some(cfg) => {
                match Box::pin(self.csrf_phase(route, cfg, &parts, &mut body, &loaded, &conn))
                    .await?
                {
                    Ok(state) => Some(state),
                    Err(refused) => return Ok(refused),
                }
            }
            None => None,
        };
        let masked = csrf.as_ref().map(|s| s.secret.masked());
        let outgoing = self.upstream_request(
            route,
            &mut parts,
            &conn,
            target,
            forwarded_cookie,
            (&loaded, masked.as_deref()),
            request_id,
            now,
        )?;
        let framing = crate::upstream::frame_request(&mut parts.headers, &body);
        let span = self.traced.then(|| {
            let authority = &self.upstreams.get(route.cfg.upstream).authority;
            crate::telemetry::upstream_span(authority.as_str(), &mut parts.headers)
        });
        let exchange = self.upstreams.send(
            route.cfg.upstream,
            &parts,
            &outgoing.added,
            &mut body,
            framing,
            outgoing.tunnel.is_some(),
            start,
        );
        let resp = match span {
            Some(span) => {
                let resp = exchange.instrument(span.clone()).await?;
                span.record("http.response.status_code", resp.status().as_u16());
                resp
            }
            None => exchange.await?,
        };
        self.respond(route, resp, loaded, outgoing.tunnel, csrf)
            .await
    }

    /// The build phase: the client's head made into the upstream's, in
    /// place. Headers a client could forge and hop-by-hop headers go, the
    /// session's cookies leave the `Cookie` header, exactly one `Host` is
    /// set, and the proxy's own headers (`X-Forwarded-*`, `X-Request-Id`,
    /// the session header) are set beside the map.
    #[allow(clippy::too_many_arguments)]
    fn upstream_request(
        &self,
        route: &Route,
        parts: &mut http::request::Parts,
        conn: &ConnInfo,
        target: Target,
        forwarded_cookie: Option<Option<HeaderValue>>,
        (loaded, csrf): (&Loaded, Option<&str>),
        request_id: &HeaderValue,
        now: u64,
    ) -> Result<Outgoing, ProxyError> {
        let cfg = &route.cfg;
        // An HTTP/1.1 Upgrade (WebSocket and others) keeps its Upgrade and
        // Connection headers. Not h2c: after its 101 the tunnel would carry
        // requests no rule ever sees.
        let upgrade = forward::upgrade_protocol(&parts.headers).filter(|protocol| {
            parts.version == http::Version::HTTP_11
                && !forward::lists_token(protocol.as_bytes(), b"h2c")
        });
        // A tunnel holds a permit of its own, so that upgraded connections
        // stay bounded.
        let tunnel = match &upgrade {
            Some(_) => Some(
                self.tunnels
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ProxyError::TooManyUpgrades)?,
            ),
            None => None,
        };
        let h = &mut parts.headers;
        forward::remove_spoofable(
            h,
            &self.headers,
            &self.session_filled,
            self.underscores_allowed,
        );
        forward::remove_hop_by_hop(h);
        if let Some(protocol) = upgrade {
            forward::set_upgrade(h, protocol);
        }
        match forwarded_cookie {
            None => {}
            Some(None) => {
                h.remove(header::COOKIE);
            }
            Some(Some(v)) => {
                h.insert(header::COOKIE, v);
            }
        }
        let mut added =
            forward::Added::with_capacity(PROXY_SET_HEADERS + cfg.forward.headers.len());
        let Target {
            host,
            host_in_place,
            rewritten,
        } = target;
        let peer_trusted = !self.trusted.is_empty() && self.trusted.contains(&conn.peer);
        forward::set_forwarded(
            h,
            &mut added,
            &conn.client_ip,
            peer_trusted,
            conn.proto,
            host.as_ref(),
        );
        // Exactly one Host, the one the request was routed on.
        if !host_in_place {
            let host = host.unwrap_or_else(|| {
                let authority = &self.upstreams.get(cfg.upstream).authority;
                HeaderValue::from_str(authority.as_str()).expect("an authority is a header value")
            });
            h.insert(header::HOST, host);
        }
        // A client's X-Request-Id was read (and kept when well formed) already.
        if forward::holds(h, &X_REQUEST_ID) {
            h.remove(&X_REQUEST_ID);
        }
        added.set(X_REQUEST_ID.clone(), request_id.clone());
        self.session_headers(route, loaded, csrf, &mut added, now);
        let path = rewritten.unwrap_or_else(|| parts.uri.path().to_string());
        parts.uri = self.upstreams.uri(cfg.upstream, &path, parts.uri.query())?;
        parts.version = http::Version::HTTP_11;
        Ok(Outgoing { added, tunnel })
    }

    /// The response phase: the upstream's session headers read and
    /// stripped, hop-by-hop headers removed, an upgrade handed to the server
    /// loop, `Vary: Cookie` added, and the write-back applied to the store
    /// and the cookie.
    async fn respond(
        &self,
        route: &Route,
        resp: http::Response<crate::upstream::UpstreamBody>,
        loaded: Loaded,
        tunnel: Option<tokio::sync::OwnedSemaphorePermit>,
        csrf: Option<csrf::CsrfState>,
    ) -> Result<Box<Response<ProxyBody>>, ProxyError> {
        let cfg = &route.cfg;
        let (mut rparts, rbody) = resp.into_parts();
        let outcome =
            self.sessions
                .take_writeback(&mut rparts.headers, rparts.status, &cfg.forward.writes);
        let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS;
        // A 101 names the protocol in `Upgrade` (its `Connection: upgrade`
        // is consumed with the other connection options by the codec).
        let upstream_protocol = switching
            .then(|| rparts.headers.get(header::UPGRADE).cloned())
            .flatten();
        forward::remove_hop_by_hop(&mut rparts.headers);
        if switching {
            let upstream = rparts
                .extensions
                .remove::<crate::upstream::UpstreamUpgrade>()
                .and_then(|u| u.take());
            match (tunnel, upstream, upstream_protocol) {
                (Some(permit), Some(upstream), Some(protocol)) => {
                    forward::set_upgrade(&mut rparts.headers, protocol);
                    // The server loop joins the client's connection to it.
                    rparts
                        .extensions
                        .insert(crate::http1::Upgraded::new(upstream, permit));
                }
                _ => return Err(ProxyError::BadUpgrade),
            }
        }
        strip_upstream_session_cookies(&mut rparts.headers, self.sessions.codec.name());
        if forwards_session(&cfg.forward) || !cfg.require.is_empty() {
            forward::add_vary_cookie(&mut rparts.headers);
        }
        let mut after = crate::session::After::Unchanged;
        if let Some(wb) = outcome? {
            // A write's store futures are large, and most responses write
            // nothing: `write_back_detached` boxes them, so that every
            // request does not carry their space.
            let written = self
                .sessions
                .write_back_detached(loaded, wb, now_ms())
                .await?;
            for set_cookie in written.cookies {
                rparts.headers.append(header::SET_COOKIE, set_cookie);
            }
            after = written.after;
        }
        if let (Some(state), Some(c)) = (&csrf, &cfg.csrf) {
            rparts.headers.extend(
                self.csrf_cookie(c, state, &after)
                    .map(|v| (header::SET_COOKIE, v)),
            );
        }
        Ok(Box::new(Response::from_parts(rparts, Either::Left(rbody))))
    }
}

fn forwards_session(f: &ForwardConfig) -> bool {
    f.header.is_some() || !f.headers.is_empty()
}

/// A failed request's line, through the log's rate limit: a client can
/// make every request fail.
fn log_failure(e: &ProxyError, route: &str) {
    let class = e.log_class();
    match e.status().as_u16() {
        500.. => {
            crate::limited!(class, error, route, error = %crate::logging::Chain(e), "request failed")
        }
        _ => {
            crate::limited!(class, warn, route, error = %crate::logging::Chain(e), "request refused")
        }
    }
}

/// What the build phase sets up besides the head: the proxy's headers,
/// and an upgrade's tunnel permit.
struct Outgoing {
    added: forward::Added,
    tunnel: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The enforce phase: the `on_deny` answer when the session lacks a key the
/// route requires.
fn enforce(
    cfg: &RouteConfig,
    loaded: &Loaded,
    parts: &http::request::Parts,
) -> Option<Box<Response<ProxyBody>>> {
    if cfg.require.is_empty() {
        return None;
    }
    let fields = loaded.data().fields();
    cfg.require
        .iter()
        .any(|k| !fields.contains(k))
        .then(|| Box::new(deny(cfg, parts)))
}

/// What routing decided about a request, for the phases after it.
struct Target {
    /// The one Host the request is routed on and forwarded with.
    host: Option<HeaderValue>,
    /// Whether that Host is already the request's only `Host` header.
    host_in_place: bool,
    /// The path for the upstream when the route strips its prefix.
    rewritten: Option<String>,
}

/// The request's one host: its `Host` header, or the target's authority,
/// which wins over `Host` for an absolute-form HTTP/1.1 target (RFC 9112
/// section 3.2.2) and must agree with any `Host` over HTTP/2 (RFC 9113
/// section 8.3.1). HTTP/1.1 requires exactly one `Host`, valid, even beside
/// an absolute target (RFC 9112 section 3.2). Also says whether the value
/// is already the request's only `Host` header.
fn request_host(req: &Request<RequestBody>) -> Result<(Option<HeaderValue>, bool), HostError> {
    let mut values = req.headers().get_all(header::HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    if let Some(h) = header {
        router::host::check(h.as_bytes())?;
    }
    let authority = req.uri().authority();
    if let Some(a) = authority {
        router::host::check(a.as_str().as_bytes())?;
    }
    let http1 = req.version() <= http::Version::HTTP_11;
    if http1 && header.is_none() && req.version() == http::Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    match (header, authority) {
        (Some(h), None) => Ok((Some(h.clone()), true)),
        (None, None) => Ok((None, false)),
        (Some(h), Some(a))
            if !http1 && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) =>
        {
            Err(HostError::Disagrees)
        }
        (_, Some(a)) => Ok((
            Some(HeaderValue::from_str(a.as_str()).map_err(|_| HostError::Invalid)?),
            false,
        )),
    }
}

/// An upstream must not set the gateway's own session cookie.
fn strip_upstream_session_cookies(headers: &mut HeaderMap, name: &str) {
    if !forward::holds(headers, &header::SET_COOKIE) {
        return;
    }
    let owned_by_gateway = |v: &HeaderValue| {
        let text = String::from_utf8_lossy(v.as_bytes());
        let cookie_name = text.split(['=', ';']).next().unwrap_or("").trim();
        cookie_name == name || is_chunk_name(cookie_name, name)
    };
    if !headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(owned_by_gateway)
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !owned_by_gateway(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
    crate::limited!(
        crate::logging::LogClass::upstream,
        warn,
        "upstream tried to set the gateway's session cookie; removed"
    );
}
