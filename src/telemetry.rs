//! OpenTelemetry (SPEC section 8.6): the `tracing` spans of requests, store
//! operations and upstream exchanges exported over OTLP/HTTP, a client's
//! W3C `traceparent` continued, and the upstream told which span called it.
//! Off by default; when off, nothing here runs and `traceparent` passes
//! through as any header.

use crate::config::TracingConfig;
use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long finished spans wait to be sent in one batch.
const EXPORT_INTERVAL: Duration = Duration::from_millis(1000);
/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The exporter's HTTP client, run on the proxy's runtime: the SDK exports
/// from a thread of its own, where hyper's client finds no reactor.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

/// The layer that turns sessiongate's spans into OpenTelemetry spans;
/// called from inside the runtime.
pub fn layer<S>(cfg: &TracingConfig) -> Result<impl Layer<S> + Send + Sync, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let client = OnRuntime {
        client: opentelemetry_http::hyper::HyperClient::with_default_connector(
            EXPORT_TIMEOUT,
            None,
        ),
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing starts inside the runtime".to_string())?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(cfg.traces_url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_INTERVAL)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("sessiongate");
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        // sessiongate's spans at every level, and its events that the log
        // would write (they become span events). A filter that refused
        // the access log's `enabled!` check would leave tracing-subscriber's
        // per-layer filter state set for the next span: the request's.
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("sessiongate")
                && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
        })))
}

/// Whether spans are exported (set once, at start).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Continues the client's trace, if its `traceparent` names one.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// What the request span says once the response is known.
pub fn finish_request(span: &tracing::Span, route: &str, status: u16) {
    span.record("http.route", route);
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of an upstream exchange, named in the upstream request's
/// `traceparent` as its caller.
pub fn upstream_span(authority: &str, headers: &mut HeaderMap) -> tracing::Span {
    let span = tracing::debug_span!(
        target: "sessiongate::upstream",
        "upstream",
        otel.kind = "client",
        server.address = authority,
        http.response.status_code = tracing::field::Empty,
    );
    name_caller(&span, headers);
    span
}

/// Names `span` as the caller in the request to the upstream (`traceparent`
/// and `tracestate`, replacing the client's).
pub fn name_caller(span: &tracing::Span, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Sends the spans not yet exported; at shutdown, off the runtime's threads
/// (the export runs on the runtime).
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}
