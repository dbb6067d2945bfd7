//! OpenTelemetry (SPEC section 8.6) against a real OTLP/HTTP receiver: a
//! server started here that decodes what the binary exports with the
//! `opentelemetry-proto` messages. The spans, their parent links and
//! attributes, the `traceparent` the upstream receives, sampling, and the
//! untouched `traceparent` when tracing is off.

mod common;

use bytes::Bytes;
use common::process::*;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the receiver was sent: each span with its service name.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn receiver() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for resource in export.resource_spans {
                            let service = resource
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|a| a.key == "service.name")
                                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                                    AnyValue::StringValue(s) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    store.lock().unwrap().push((service.clone(), span));
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the binary with `tracing` set until `drive` is done, then stops it
/// with SIGTERM, which sends every span not yet exported.
async fn traced<F, Fut>(tag: &str, sample_ratio: f64, drive: F) -> Vec<(String, Span)>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (collector, received) = receiver().await;
    let up = upstream().await;
    let dir = temp_dir(tag);
    let (listen, admin) = (free_addr(), free_addr());
    let extra = format!(
        "tracing: {{otlp_endpoint: \"http://{collector}\", service_name: sg-test, sample_ratio: {sample_ratio}}}"
    );
    let cfg = write_config(&dir, listen, admin, up.addr, "{kind: memory}", &extra);
    let proc = Running::start(&cfg, admin, &dir, &[]);
    drive(listen).await;
    proc.signal("-TERM");
    let (status, log) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("exporting traces over OTLP"), "{log}");
    received.lock().unwrap().clone()
}

/// What the client saw of the traced request.
#[derive(Clone, Default)]
struct Seen {
    cookie: String,
    sid: String,
    upstream_traceparent: Option<String>,
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_clients_trace_and_name_the_upstream_call() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen_by_drive = seen.clone();
    let spans = traced("otlp-spans", 1.0, |listen| async move {
        let c = TestClient::new();
        let login = [reply("x-session-update", r#"{"user_id": 42}"#)];
        let cookie = c
            .get(&format!("http://{listen}/"), &hdrs(&login))
            .await
            .cookie("sessionid")
            .unwrap();
        let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
        let r = c
            .get(
                &format!("http://{listen}/page"),
                &[
                    ("cookie", cookie.as_str()),
                    ("traceparent", traceparent.as_str()),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        let echo = r.echo();
        *seen_by_drive.lock().unwrap() = Seen {
            sid: echo.header("x-session-sid").unwrap(),
            upstream_traceparent: echo.header("traceparent"),
            cookie,
        };
    })
    .await;
    let Seen {
        cookie,
        sid,
        upstream_traceparent,
    } = seen.lock().unwrap().clone();

    assert!(spans.iter().all(|(service, _)| service == "sg-test"));
    let in_trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == TRACE)
        .collect();
    let request = in_trace
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| {
            panic!(
                "no server span in the client's trace: {:?}",
                spans
                    .iter()
                    .map(|(_, s)| (&s.name, s.kind, hex(&s.trace_id), hex(&s.parent_span_id)))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(request.name, "GET");
    assert_eq!(
        hex(&request.parent_span_id),
        CLIENT_SPAN,
        "continues the client's span"
    );
    assert_eq!(attribute(request, "http.route").as_deref(), Some("/"));
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(request, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(attribute(request, "url.path").as_deref(), Some("/page"));
    assert_eq!(
        attribute(request, "session.sid").as_deref(),
        Some(sid.as_str())
    );

    let store = in_trace
        .iter()
        .find(|s| s.name == "store")
        .expect("a store span");
    assert_eq!(store.parent_span_id, request.span_id);
    assert_eq!(attribute(store, "op").as_deref(), Some("load"));
    let upstream = in_trace
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an upstream span");
    assert_eq!(upstream.name, "upstream");
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert!(attribute(upstream, "server.address").is_some());
    assert_eq!(
        upstream_traceparent,
        Some(format!("00-{TRACE}-{}-01", hex(&upstream.span_id))),
        "the upstream is told the upstream span called it"
    );

    // The session's id (the cookie's value) is in no span.
    let id = cookie.split_once('=').unwrap().1.split(':').next().unwrap();
    for (_, span) in &spans {
        for a in &span.attributes {
            assert!(!format!("{:?}", a.value).contains(id), "{a:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_sample_ratio_exports_nothing_yet_still_passes_a_traceparent() {
    let upstream_traceparent: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = upstream_traceparent.clone();
    let spans = traced("otlp-unsampled", 0.0, |listen| async move {
        let r = TestClient::new()
            .get(&format!("http://{listen}/"), &[])
            .await;
        *seen.lock().unwrap() = r.echo().header("traceparent");
    })
    .await;
    assert!(spans.is_empty(), "{spans:#?}");
    let tp = upstream_traceparent.lock().unwrap().clone().unwrap();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-00"),
        "not sampled: {tp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_traceparent_passes_through_untouched() {
    let up = upstream().await;
    let gw = gateway(&config("", JSON_ROUTE), up.addr).await;
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = TestClient::new()
        .get(
            &gw.url("/"),
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    let echo = r.echo();
    assert_eq!(echo.header("traceparent"), Some(traceparent));
    assert_eq!(echo.header("tracestate").as_deref(), Some("vendor=abc"));
    gw.stop().await;
}
