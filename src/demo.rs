//! `sessiongate demo`: the proxy in front of a small bundled app, so a
//! newcomer sees a session work in a browser. The app knows nothing of
//! cookies: it reads the session from `X-Session-Data` and changes it with
//! `X-Session-Update` and `X-Session-Action`, as any upstream would.

use crate::app::{Listeners, run};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::net::TcpListener;

/// The demo's config: the same YAML a user would write.
pub fn config_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    app: SocketAddr,
    secret: &str,
    store: &str,
) -> String {
    format!(
        r#"
listen:
  - addr: {listen}
admin:
  addr: {admin}
secrets:
  - "{secret}"
session:
  cookie:
    name: demo_session
    secure: false          # the demo is plain http on loopback
  ttl: 1h
  store: {store}
upstreams:
  app:
    url: http://{app}
routes:
  - match: {{path_prefix: /private}}
    upstream: app
    forward: {{mode: json}}
    require: [user]
    on_deny: {{redirect: "/?next={{uri}}"}}
    csrf: {{enabled: true}}
  - match: {{path_prefix: /}}
    upstream: app
    forward: {{mode: json}}
    csrf: {{enabled: true}}
"#
    )
}

pub const DEMO_SECRET_PATH: &str = "data/demo-secret";
pub const DEMO_STORE_PATH: &str = "data/demo-sessions.db";

/// The demo's secret: read from `path`, or made and written there (mode 0600) on first run.
fn demo_secret(path: &std::path::Path) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if s.len() >= crate::config::secret::MIN_SECRET_BYTES {
            return Ok(s);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = crate::config::secret::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(path)?, secret.as_bytes())?;
    Ok(secret)
}

pub async fn run_demo(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    crate::logging::init(crate::config::LogFormat::Pretty, None);
    let shutdown = crate::server::shutdown_signal();
    let app = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sessiongate demo: cannot start the demo app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app_addr = app.local_addr().expect("bound socket has an address");
    tokio::spawn(serve_app(app));
    // The secret and the sessions persist in data/, so a restarted demo keeps its sessions.
    let secret = match demo_secret(std::path::Path::new(DEMO_SECRET_PATH)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sessiongate demo: cannot keep the demo secret in {DEMO_SECRET_PATH}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = format!("{{kind: embedded, path: {DEMO_STORE_PATH}}}");
    let yaml = config_yaml(listen, admin, app_addr, &secret, &store);
    let config = match crate::config::from_yaml(&yaml) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiongate demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sessiongate demo: {}", crate::logging::Chain(&e));
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sessiongate demo: open http://{listen}/ in a browser (metrics at http://{admin}/metrics); Ctrl-C stops"
    );
    match run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiongate demo: {}", crate::logging::Chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Serves the demo app on a listener until the process ends.
pub async fn serve_app(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req| async move {
                Ok::<_, std::convert::Infallible>(app(req).await)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn session_of(req: &Request<Incoming>) -> Map<String, Value> {
    req.headers()
        .get("x-session-data")
        .and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn redirect_home(update: Option<Value>, action: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Some(u) = update {
        let json = crate::upstream::identity::to_ascii_json(&u);
        h.insert(
            "x-session-update",
            HeaderValue::try_from(json).expect("ASCII JSON is a valid header value"),
        );
    }
    if let Some(a) = action {
        h.insert("x-session-action", HeaderValue::from_static(a));
    }
    r
}

async fn app(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let session = session_of(&req);
    // The gateway checks CSRF; the app only embeds the token it is given.
    let token = req
        .headers()
        .get("x-session-csrf")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/login") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let name = form_field(&body, "name")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "guest".into());
            // Cycle on login: a new session id against fixation.
            redirect_home(Some(json!({"user": name})), Some("cycle"))
        }
        (Method::POST, "/visit") => {
            let n = session.get("visits").and_then(Value::as_u64).unwrap_or(0);
            redirect_home(Some(json!({"visits": n + 1})), None)
        }
        (Method::POST, "/logout") => redirect_home(None, Some("flush")),
        (Method::GET, "/private") => page(
            "Private page",
            &session,
            &token,
            "<p>Only signed-in users reach this page: the gateway enforces <code>require: [user]</code>.</p>",
        ),
        (Method::GET, "/") => page("sessiongate demo", &session, &token, ""),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

fn form_field(body: &[u8], field: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == field).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .chars()
                .take(64)
                .collect()
        })
    })
}

fn page(
    title: &str,
    session: &Map<String, Value>,
    token: &str,
    extra: &str,
) -> Response<Full<Bytes>> {
    let user = session.get("user").and_then(Value::as_str);
    let pretty = serde_json::to_string_pretty(session).unwrap_or_default();
    let csrf = format!(
        "<input type=hidden name=csrfmiddlewaretoken value=\"{}\">",
        escape(token)
    );
    let account = match user {
        Some(u) => format!(
            "<p>Signed in as <b>{}</b>.</p><form method=post action=/logout>{csrf}<button>Log out (flush)</button></form>",
            escape(u)
        ),
        None => format!(
            "<form method=post action=/login>{csrf}<input name=name placeholder=name> <button>Log in (cycle)</button></form>"
        ),
    };
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\">\
         <h1>{title}</h1>{extra}{account}\
         <form method=post action=/visit id=visit>{csrf}<button>Count a visit (merge patch)</button></form>\
         <p><a href=/>home</a> &middot; <a href=/private>private page</a></p>\
         <h2>The session this app received</h2><pre>{}</pre>\
         <p>The app never sees the cookie: sessiongate sends the session as <code>X-Session-Data</code> \
         and applies the app's <code>X-Session-Update</code> and <code>X-Session-Action</code> headers; \
         it checks every form's CSRF token too (<code>csrf:</code>), which the app embeds from \
         <code>X-Session-Csrf</code>.</p>",
        escape(&pretty)
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
