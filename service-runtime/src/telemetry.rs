//! Logs and traces, set up once per process.
//!
//! Logs go to stderr through `tracing`, as text or JSON (`[telemetry] log_format`), filtered by
//! `RUST_LOG` (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are also exported over OTLP/HTTP and the
//! W3C trace context of the current span is what [`trace_context`] returns; otherwise
//! [`trace_context`] starts a fresh, unsampled trace per call so records still carry a
//! `traceparent` that later stages can continue.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn otel_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing OpenTelemetry spans failed: {e}");
            }
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Install the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the OTLP span exporter: {e}"))?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service).build())
                .build(),
        )
    } else {
        None
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard { provider })
}

/// W3C trace context to put on an outgoing record: `(traceparent, tracestate)`.
///
/// With OpenTelemetry on, the context of `span`; otherwise (or if `span` has no valid context) a
/// new root trace id and span id with the sampled flag off.
pub fn trace_context(span: &tracing::Span) -> (String, Option<String>) {
    trace_context_after(span, None)
}

/// Make `span` a child of the remote context in `traceparent`/`tracestate` (a record's
/// headers), so a consumer's processing joins the producer's trace. A no-op without
/// OpenTelemetry or without a valid `traceparent`.
pub fn set_remote_parent(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) {
    let Some(tp) = traceparent else { return };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), tp.to_owned());
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_owned(), ts.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Like [`trace_context`], but without OpenTelemetry a valid incoming `traceparent` keeps its
/// trace id (with a new span id), so the whole pipeline shares one trace id either way.
pub fn trace_context_after(
    span: &tracing::Span,
    incoming: Option<&str>,
) -> (String, Option<String>) {
    let cx = span.context();
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    if let Some(tp) = fields.remove("traceparent") {
        return (tp, fields.remove("tracestate").filter(|s| !s.is_empty()));
    }
    match incoming.and_then(parse_traceparent) {
        Some((trace_id, flags)) => {
            let span_id: u64 = rand::rng().random_range(1..=u64::MAX);
            (format!("00-{trace_id}-{span_id:016x}-{flags}"), None)
        }
        None => (fresh_traceparent(), None),
    }
}

/// `(trace id, flags)` of a well-formed version-00 `traceparent`.
fn parse_traceparent(tp: &str) -> Option<(&str, &str)> {
    let mut parts = tp.split('-');
    let (v, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (v == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace != "0".repeat(32))
    .then_some((trace, flags))
}

fn fresh_traceparent() -> String {
    let mut rng = rand::rng();
    // All-zero ids are invalid per W3C Trace Context; the odds are 2^-128, but be exact.
    let trace_id: u128 = rng.random_range(1..=u128::MAX);
    let span_id: u64 = rng.random_range(1..=u64::MAX);
    format!("00-{trace_id:032x}-{span_id:016x}-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_otel_each_record_gets_a_valid_fresh_traceparent() {
        let (a, state) = trace_context(&tracing::Span::none());
        let (b, _) = trace_context(&tracing::Span::none());
        assert_ne!(a, b);
        assert!(state.is_none());
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "00")
        );
        assert!(parts[1]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn without_otel_the_incoming_trace_id_is_kept() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (tp, _) = trace_context_after(&tracing::Span::none(), Some(incoming));
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        assert_ne!(tp, incoming, "a new span id");
        let (tp, _) = trace_context_after(&tracing::Span::none(), Some("garbage"));
        assert!(!tp.contains("garbage") && tp.len() == 55);
    }

    #[test]
    fn with_otel_the_record_context_is_the_exported_span() {
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (traceparent, _) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("publish");
            let tp = trace_context(&span);
            drop(span);
            tp
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let sc = &spans[0].span_context;
        assert_eq!(
            traceparent,
            format!("00-{}-{}-01", sc.trace_id(), sc.span_id()),
            "the record carries the exported span's context, sampled"
        );
    }
}
