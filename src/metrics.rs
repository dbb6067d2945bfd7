//! Prometheus metrics, served by the admin listener.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

/// The store operations, in the order of their pre-resolved handles.
const STORE_OPS: [StoreOp; 8] = [
    StoreOp::load,
    StoreOp::create,
    StoreOp::save,
    StoreOp::delete,
    StoreOp::clear_expired,
    StoreOp::ping,
    StoreOp::index,
    StoreOp::revoke,
];
/// Statuses above this share the last slot of a route's cache.
const MAX_STATUS: usize = 599;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SessionEvent {
    created,
    cycled,
    flushed,
    expired,
    refused,
    dropped,
    store_write_failed,
    /// Removed past the store's `max_sessions` (memory, embedded).
    evicted,
    /// Revoked: by the management endpoints, `revoke-others` or `max_per_subject`.
    revoked,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: SessionEvent,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StoreOp {
    load,
    create,
    save,
    delete,
    clear_expired,
    ping,
    /// Writing or reading the index of subjects.
    index,
    /// A revocation (by subject or sid, `revoke-others`, `max_per_subject`).
    revoke,
}

/// How a reload of the config ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: StoreOp,
}

fn latency_histogram() -> Histogram {
    // 100 us .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// A route's request metrics, resolved once: recording a request takes no
/// lock and no allocation (the per-status counters are made on first use).
pub struct RouteRecorder {
    route: String,
    duration: Histogram,
    requests: Family<RequestLabels, Counter>,
    by_status: Box<[OnceLock<Counter>]>,
}

impl RouteRecorder {
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let slot = &self.by_status[(status as usize).min(MAX_STATUS)];
        slot.get_or_init(|| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    status,
                })
                .clone()
        })
        .inc();
    }
}

pub struct Metrics {
    registry: Registry,
    store_ops: [(Histogram, Counter); 8],
    /// Live sessions, where the store counts them (set at each scrape).
    sessions: Gauge,
    /// Reads a `cached` store served from its local cache (set at each scrape).
    cache_hits: Gauge,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    events: Family<EventLabels, Counter>,
    /// The store's eviction total when the events last heard of it.
    evicted_seen: std::sync::atomic::AtomicU64,
    reloads: Family<ReloadLabels, Counter>,
    /// When the running config was loaded (at start, then by each reload).
    last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sessiongate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let events = Family::<EventLabels, Counter>::default();
        let store_duration = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let store_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, by route",
            request_duration.clone(),
        );
        registry.register("session_events", "Session lifecycle events", events.clone());
        let sessions = Gauge::default();
        registry.register(
            "store_operation_duration_seconds",
            "Latency of session store operations",
            store_duration.clone(),
        );
        registry.register(
            "store_errors",
            "Failed session store operations",
            store_errors.clone(),
        );
        registry.register(
            "log_suppressed",
            "Log lines a client could trigger that were suppressed by the rate limit, by class",
            crate::logging::SUPPRESSED.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of the config file on SIGHUP, by result",
            reloads.clone(),
        );
        let last_reload_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running config was loaded, in seconds since the Unix epoch",
            last_reload_success.clone(),
        );
        let store_ops = STORE_OPS.map(|op| {
            let labels = OpLabels { op };
            (
                store_duration.get_or_create(&labels).clone(),
                store_errors.get_or_create(&labels).clone(),
            )
        });
        Metrics {
            registry,
            store_ops,
            sessions,
            cache_hits: Gauge::default(),
            requests,
            request_duration,
            events,
            evicted_seen: std::sync::atomic::AtomicU64::new(0),
            reloads,
            last_reload_success,
        }
    }

    /// A reload ended; a successful one (or the first load, with `None`)
    /// also sets the time the running config was loaded.
    pub fn config_loaded(&self, result: Option<ReloadResult>, now_ms: u64) {
        if let Some(result) = result {
            self.reloads.get_or_create(&ReloadLabels { result }).inc();
        }
        if result != Some(ReloadResult::error) {
            self.last_reload_success.set(now_ms as f64 / 1000.0);
        }
    }

    /// The recorder of one route's requests.
    pub fn route(&self, route: &str) -> RouteRecorder {
        RouteRecorder {
            route: route.to_string(),
            duration: self
                .request_duration
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                })
                .clone(),
            requests: self.requests.clone(),
            by_status: (0..=MAX_STATUS).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn event(&self, event: SessionEvent) {
        self.event_n(event, 1);
    }

    pub fn event_n(&self, event: SessionEvent, n: u64) {
        self.events.get_or_create(&EventLabels { event }).inc_by(n);
    }

    pub fn store_op(&self, op: StoreOp, elapsed: Duration, ok: bool) {
        let (duration, errors) = &self.store_ops[op as usize];
        duration.observe(elapsed.as_secs_f64());
        if !ok {
            errors.inc();
        }
    }

    /// Registers the live-sessions gauge: only for a store that counts them,
    /// so that no scrape ever reads a made-up zero.
    pub fn count_sessions(&mut self) {
        self.registry.register(
            "sessions",
            "Live sessions in the store (memory and embedded stores)",
            self.sessions.clone(),
        );
    }

    pub fn count_cache_hits(&mut self) {
        self.registry.register(
            "session_cache_hits",
            "Session reads served from the local cache of a cached store, since it started",
            self.cache_hits.clone(),
        );
    }

    pub fn set_cache_hits(&self, n: u64) {
        self.cache_hits.set(n.min(i64::MAX as u64) as i64);
    }

    pub fn set_sessions(&self, n: u64) {
        self.sessions.set(n.min(i64::MAX as u64) as i64);
    }

    /// The Prometheus text exposition (OpenMetrics flavour).
    /// Brings the `evicted` events up to the store's own total, which the
    /// stores keep themselves (their eviction happens under their locks).
    pub fn sync_evicted(&self, total: u64) {
        let seen = self
            .evicted_seen
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        if total > seen {
            self.event_n(SessionEvent::evicted, total - seen);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_spec() {
        let m = Metrics::new();
        m.request("/api/", 200, Duration::from_millis(3));
        m.event(SessionEvent::created);
        m.store_op(StoreOp::load, Duration::from_micros(50), false);
        m.config_loaded(None, 1_000_000);
        m.config_loaded(Some(ReloadResult::error), 2_000_000);
        m.config_loaded(Some(ReloadResult::success), 3_000_500);
        let text = m.encode();
        for needle in [
            "sessiongate_requests_total{route=\"/api/\",status=\"200\"} 1",
            "sessiongate_request_duration_seconds_bucket{",
            "sessiongate_session_events_total{event=\"created\"} 1",
            "sessiongate_store_operation_duration_seconds_count{op=\"load\"} 1",
            "sessiongate_store_errors_total{op=\"load\"} 1",
            "sessiongate_config_reloads_total{result=\"error\"} 1",
            "sessiongate_config_reloads_total{result=\"success\"} 1",
            "sessiongate_config_last_reload_success_timestamp_seconds 3000.5",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
