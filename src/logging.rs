//! Logs go to stderr through `tracing`. `RUST_LOG` filters; without it,
//! sessiongate logs at `info` and its dependencies only their errors (their
//! warnings are per connection: rustls warns about every handshake that
//! presents an IP address as SNI).
//!
//! No client may make sessiongate write a line per request or connection:
//! every line a client can trigger goes through [`allow`], which lets a
//! few lines of each class through per interval, counts the rest in
//! `sessiongate_log_suppressed_total{class}`, and then says how many it
//! suppressed in one line. The access log (`log.access`) is apart from
//! this: one line per request, on, off or sampled.

use crate::config::LogFormat;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::EnvFilter;

/// When `RUST_LOG` is not set: sessiongate's own `info`, and only errors
/// from the crates below it.
pub const DEFAULT_FILTER: &str = "info,rustls=error,tokio_rustls=error,h2=error,hyper=error,hyper_util=error,redis=error,redb=error";

/// Lines of one class let through per interval.
pub const BURST: u64 = 5;
/// The interval, in seconds.
pub const WINDOW_S: u64 = 10;

/// The kinds of line a client (or a misbehaving upstream) can trigger.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LogClass {
    /// A TLS handshake that failed.
    tls_handshake,
    /// An HTTP/1 head the codec refused (400, 414, 431, 501).
    malformed_request,
    /// A connection closed for sending no whole head in time (slowloris).
    head_timeout,
    /// An HTTP/2 connection that ended in a protocol error.
    http2,
    /// A request refused by the proxy (400, 405, 503 for tunnels).
    refused,
    /// An upstream that failed, timed out or misbehaved.
    upstream,
    /// A session store that failed.
    store,
    /// An accept that failed (out of file descriptors).
    accept,
}

const CLASSES: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: LogClass,
}

/// Process-wide, like the log itself; every registry registers this one family.
pub static SUPPRESSED: LazyLock<Family<ClassLabels, Counter>> = LazyLock::new(Family::default);

struct Window {
    /// The interval this count belongs to (Unix seconds / `WINDOW_S`).
    index: AtomicU64,
    logged: AtomicU64,
    suppressed: AtomicU64,
}

static WINDOWS: [Window; CLASSES] = [const {
    Window {
        index: AtomicU64::new(0),
        logged: AtomicU64::new(0),
        suppressed: AtomicU64::new(0),
    }
}; CLASSES];

fn window_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / WINDOW_S)
}

/// Starts a new interval for `class` if its last one has passed, and says
/// how much was suppressed in it.
fn roll(class: LogClass, now: u64) {
    let w = &WINDOWS[class as usize];
    let seen = w.index.load(Ordering::Relaxed);
    if seen != now
        && w.index
            .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        w.logged.store(0, Ordering::Relaxed);
        let suppressed = w.suppressed.swap(0, Ordering::Relaxed);
        if suppressed > 0 {
            tracing::warn!(
                class = ?class,
                suppressed,
                "suppressed {suppressed} similar messages in the last {WINDOW_S} s"
            );
        }
    }
}

/// Whether a line of `class` may be written now. Past [`BURST`] lines in
/// an interval it is counted instead, and the next interval starts with a
/// line saying how many were.
pub fn allow(class: LogClass) -> bool {
    roll(class, window_now());
    let w = &WINDOWS[class as usize];
    if w.logged.fetch_add(1, Ordering::Relaxed) < BURST {
        return true;
    }
    w.suppressed.fetch_add(1, Ordering::Relaxed);
    SUPPRESSED.get_or_create(&ClassLabels { class }).inc();
    false
}

/// Writes the summaries of intervals that have passed: called every
/// interval, so that a burst that stopped is still reported.
pub fn flush_summaries() {
    let now = window_now();
    for class in [
        LogClass::tls_handshake,
        LogClass::malformed_request,
        LogClass::head_timeout,
        LogClass::http2,
        LogClass::refused,
        LogClass::upstream,
        LogClass::store,
        LogClass::accept,
    ] {
        roll(class, now);
    }
}

/// An error with its whole chain of causes, for logs: "client error
/// (Connect): invalid peer certificate: UnknownIssuer" says what to fix.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A line a client can trigger, through [`allow`]:
/// `limited!(LogClass::refused, warn, error = %e, "request refused")`.
#[macro_export]
macro_rules! limited {
    ($class:expr, $level:ident, $($arg:tt)+) => {
        if $crate::logging::allow($class) {
            tracing::$level!(class = ?$class, $($arg)+);
        }
    };
}

/// Installs the log subscriber, with the OpenTelemetry exporter when
/// `tracing` is configured; called from inside the runtime.
pub fn init(format: LogFormat, tracing: Option<&crate::config::TracingConfig>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if let Some(cfg) = tracing {
        return init_exporting(format, filter, cfg);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests, or `demo` after a failed start) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The log lines as `init` writes them, under their filter, beside the
/// exporter, which takes the spans below the log level too (store
/// operations and upstream exchanges are `debug` spans, free when nothing
/// takes them).
fn init_exporting(format: LogFormat, filter: EnvFilter, cfg: &crate::config::TracingConfig) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    match crate::telemetry::layer(cfg) {
        Ok(otel) => {
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter))
                .with(otel)
                .try_init();
            tracing::info!(endpoint = %cfg.traces_url, sample_ratio = cfg.sample_ratio, "exporting traces over OTLP");
        }
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter))
                .try_init();
            tracing::error!(error = %e, "traces are not exported");
        }
    }
}
