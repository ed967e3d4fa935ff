//! One webhook, one trace: the ingest's publish span, the segmenter's processing span and the
//! writer's application span with its Okta calls share a trace id, each the child of the one
//! before, with OpenTelemetry messaging attributes. Exported to an in-memory exporter.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use testkit::Broker;
use tests::*;
use tracing_subscriber::layer::SubscriberExt;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_webhook_is_one_trace_across_the_three_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("e2e")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let pipeline = start_pipeline(&bootstrap, |_| {}).await;
    let order = OrderVersion {
        order_id: 4242,
        customer: Some(42),
        cents: 25_000,
        second: 5,
        status: "paid",
        cancelled: false,
        test: false,
        deleted: false,
    };
    for u in okta_users(&[42]) {
        pipeline.sim.add_user(&u).unwrap();
    }
    deliver(
        pipeline.endpoints.webhooks,
        &deliveries(std::slice::from_ref(&order), 99),
    )
    .await;
    let want = reference(std::slice::from_ref(&order));
    let sim = pipeline.sim.clone();
    eventually(Duration::from_secs(60), || okta_mismatches(&sim, &want)).await;
    pipeline.stop().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let publish = spans
        .iter()
        .find(|s| {
            s.name.starts_with("publish")
                && attr(s, "shopify.topic").as_deref() == Some("orders/paid")
        })
        .expect("the ingest's publish span");
    let trace = publish.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let by_id: HashMap<_, _> = in_trace
        .iter()
        .map(|s| (s.span_context.span_id(), *s))
        .collect();
    let decide = in_trace
        .iter()
        .find(|s| {
            attr(s, "messaging.destination.name").as_deref() == Some("shopify.orders")
                && attr(s, "messaging.operation.type").as_deref() == Some("process")
        })
        .expect("the segmenter's span in the webhook's trace");
    assert_eq!(
        decide.parent_span_id,
        publish.span_context.span_id(),
        "the segmenter continues the ingest's span"
    );
    assert_eq!(attr(decide, "messaging.system").as_deref(), Some("kafka"));
    assert_eq!(
        attr(decide, "messaging.consumer.group.name").as_deref(),
        Some("tierflow-segmenter")
    );
    let apply = in_trace
        .iter()
        .find(|s| attr(s, "messaging.destination.name").as_deref() == Some("customer.segments"))
        .expect("the writer's span in the webhook's trace");
    assert_eq!(
        apply.parent_span_id,
        decide.span_context.span_id(),
        "the writer continues the segmenter's span"
    );
    assert_eq!(by_id.len(), in_trace.len());
    assert_eq!(
        attr(apply, "messaging.consumer.group.name").as_deref(),
        Some("tierflow-okta-writer")
    );
    assert!(
        attr(apply, "messaging.kafka.offset").is_some()
            && attr(apply, "messaging.destination.partition.id").is_some()
    );
    let okta: Vec<&&SpanData> = in_trace
        .iter()
        .filter(|s| attr(s, "okta.operation").is_some())
        .collect();
    assert!(
        okta.iter().any(
            |s| attr(s, "okta.operation").as_deref() == Some("updateUser")
                && attr(s, "http.response.status_code").as_deref() == Some("200")
        ),
        "the profile update is in the trace"
    );
    assert!(
        okta.iter()
            .all(|s| s.parent_span_id == apply.span_context.span_id()),
        "Okta calls are children of the application"
    );
}
