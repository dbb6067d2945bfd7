//! `tracing`: where spans go over OTLP/HTTP, under which service name, and
//! what share of new traces is recorded.

use super::Issues;
use crate::config::raw::RawTracing;
use crate::config::{DEFAULT_SERVICE_NAME, TracingConfig};

/// The OTLP/HTTP path of traces, added to an endpoint given without a path
/// (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
const TRACES_PATH: &str = "/v1/traces";

pub(super) fn tracing(raw: RawTracing, issues: &mut Issues) -> Option<TracingConfig> {
    let before = issues.0.len();
    let traces_url = match raw.otlp_endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") => {
            issues.push(
                "tracing.otlp_endpoint",
                "https is not supported: export to an OpenTelemetry Collector on the same host or pod over http",
            );
            String::new()
        }
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {
            match uri.path() {
                "" | "/" => format!(
                    "http://{}{TRACES_PATH}",
                    uri.authority().map(|a| a.as_str()).unwrap_or_default()
                ),
                _ => raw.otlp_endpoint.clone(),
            }
        }
        _ => {
            issues.push(
                "tracing.otlp_endpoint",
                "must be an http:// URL, e.g. http://127.0.0.1:4318",
            );
            String::new()
        }
    };
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        issues.push("tracing.sample_ratio", "must be between 0 and 1");
    }
    let service_name = raw
        .service_name
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    if service_name.is_empty() {
        issues.push("tracing.service_name", "must not be empty");
    }
    (issues.0.len() == before).then_some(TracingConfig {
        traces_url,
        service_name,
        sample_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoint: &str, ratio: Option<f64>) -> Result<TracingConfig, Vec<String>> {
        let mut issues = Issues::default();
        let raw = RawTracing {
            otlp_endpoint: endpoint.into(),
            service_name: None,
            sample_ratio: ratio,
        };
        tracing(raw, &mut issues).ok_or_else(|| issues.0.iter().map(|i| i.to_string()).collect())
    }

    #[test]
    fn an_endpoint_without_a_path_gets_the_traces_path() {
        let c = parse("http://127.0.0.1:4318", None).unwrap();
        assert_eq!(c.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.sample_ratio, 1.0);
        assert_eq!(c.service_name, "sessiongate");
        let c = parse("http://otel.example/custom/traces", Some(0.25)).unwrap();
        assert_eq!(c.traces_url, "http://otel.example/custom/traces");
    }

    #[test]
    fn bad_endpoints_and_ratios_are_refused() {
        assert!(parse("127.0.0.1:4318", None).unwrap_err()[0].starts_with("tracing.otlp_endpoint"));
        assert!(parse("grpc://x:4317", None).is_err());
        assert!(parse("https://x:4318", None).is_err());
        assert!(
            parse("http://x:4318", Some(1.5)).unwrap_err()[0].starts_with("tracing.sample_ratio")
        );
    }
}
