//! A record the broker refuses for itself, on Apache Kafka (one KRaft node from
//! `scripts/kafka.py`): the segment updates topic takes records of at most 300 bytes, so every
//! update is too large on its own. Each is sent again alone, refused again, and replaced by a
//! body-less `produce_rejected` marker in quarantine; no batch fails or repeats, and every
//! input record is counted once. (The mock cluster cannot refuse one record and accept
//! another, so this runs on Kafka.)

use std::time::Duration;

use crate::common::*;
use rdkafka::Message;
use schemas::headers as h;

#[tokio::test]
async fn a_record_the_broker_refuses_on_its_own_becomes_a_marker() {
    let kafka = testkit::Broker::kafka_without_topics(1);
    let b = kafka.bootstrap_servers();
    testkit::broker::create_topic(
        &b,
        "customer.segments",
        PARTITIONS,
        &[("max.message.bytes", "300"), ("cleanup.policy", "compact")],
    )
    .await;
    testkit::broker::ensure_pipeline_topics(&b, 1, PARTITIONS).await;

    let (_versions, inputs) = history(10, 21);
    produce(&b, &inputs).await;
    let running = start(settings(&b, "g-kafka-rejected"), &b).await;
    let m = running
        .metrics_after(inputs.len() as u64, Duration::from_secs(60))
        .await;
    assert_eq!(
        metric_sum(&m, "tierflow_segmenter_records_total"),
        inputs.len() as u64,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "tierflow_segmenter_batch_failures_total"), 0);
    let rejected = metric_sum(
        &m,
        "tierflow_segmenter_quarantined_records_total{reason=\"produce_rejected\"}",
    );
    assert!(rejected >= 1, "{m}");
    let updates = metric_sum(&m, "tierflow_segmenter_updates_total");
    assert_eq!(rejected, updates, "every update is too large for the topic");

    let b2 = b.clone();
    let markers: Vec<_> =
        tokio::task::spawn_blocking(move || read_all(&b2, "shopify.orders.quarantine"))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| header(r, h::QUARANTINE_REASON).as_deref() == Some("produce_rejected"))
            .collect();
    assert_eq!(markers.len() as u64, rejected);
    for r in &markers {
        assert!(r.payload().is_none(), "a marker carries no body");
        assert!(header(r, h::QUARANTINE_DETAIL).is_some());
        assert!(
            header(r, h::SOURCE_OFFSET).is_some(),
            "it says where the input is"
        );
    }
    let b3 = b.clone();
    let segments = tokio::task::spawn_blocking(move || read_all(&b3, "customer.segments"))
        .await
        .unwrap();
    assert!(segments.is_empty());
    running.stop().await;
}
