//! The segmenter against a real Kafka-protocol broker (librdkafka's mock cluster): consume,
//! emit, commit; crash and restart; rebalance; quarantine; redaction.

use std::time::Duration;

use crate::common::*;
use rdkafka::Message;
use rust_decimal::Decimal;
use schemas::{headers as h, UpdateKind};

#[tokio::test]
async fn consumes_emits_and_commits_an_exact_final_state() {
    let (_broker, bootstrap, versions, _) = seeded(60, 1).await;
    let running = start(settings(&bootstrap, "g-basic"), &bootstrap).await;
    let want = reference(&versions);
    let emitted = wait_for_state(&bootstrap, &want, Duration::from_secs(60)).await;
    for u in &emitted {
        assert_eq!(u.event_id, u.compute_event_id());
        assert_eq!(u.shop, SHOP);
    }
    let metrics = running.metrics().await;
    assert!(
        metrics.contains("tierflow_segmenter_records_total{outcome=\"duplicate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tierflow_segmenter_customers 60"),
        "{metrics}"
    );
    // Lag comes from librdkafka's statistics (every 5 s): caught up means 0 on every partition.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = running.metrics().await;
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("kafka_consumergroup_lag{")
                    && l.contains("consumergroup=\"g-basic\"")
                    && l.contains("topic=\"shopify.orders\"")
            })
            .collect();
        if lags.len() == PARTITIONS as usize && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag per partition not reported as 0: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    running.stop().await;

    // Everything consumed was committed: a restart has nothing to redo and emits nothing.
    let before = emitted.len();
    let running = start(settings(&bootstrap, "g-basic"), &bootstrap).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.stop().await;
    let after = tokio::task::spawn_blocking(move || updates(&bootstrap))
        .await
        .unwrap()
        .len();
    assert_eq!(
        before, after,
        "a restart after a clean stop re-emits nothing"
    );
}

#[tokio::test]
async fn segment_records_carry_key_trace_and_source() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let v = Version {
        order_id: 5,
        customer: 42,
        cents: 4550,
        second: 1,
        cancelled: false,
        test: false,
        status: "paid",
    };
    produce(&bootstrap, &[v.input("wh-1")]).await;
    let running = start(settings(&bootstrap, "g-headers"), &bootstrap).await;
    let want = [(42u64, ("45.50".parse().unwrap(), 1u64))]
        .into_iter()
        .collect();
    wait_for_state(&bootstrap, &want, Duration::from_secs(30)).await;
    running.stop().await;
    let records = read_all(&bootstrap, "customer.segments");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        std::str::from_utf8(r.key().unwrap()).unwrap(),
        format!("{SHOP}/42")
    );
    let tp = header(r, h::TRACEPARENT).unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the ingest's trace continues: {tp}"
    );
    assert_eq!(
        header(r, h::SOURCE_TOPIC).as_deref(),
        Some("shopify.orders")
    );
    let u: schemas::SegmentUpdate = serde_json::from_slice(r.payload().unwrap()).unwrap();
    assert_eq!(header(r, h::EVENT_ID).as_deref(), Some(u.event_id.as_str()));
    assert_eq!(u.tier.unwrap().name, "New");
    assert_eq!(u.cause.webhook_id.as_deref(), Some("wh-1"));
    assert_eq!(
        u.decided_at, "2026-11-20T10:00:01Z",
        "event time from the input, not the clock"
    );
}

#[tokio::test]
async fn poison_records_are_quarantined_without_blocking_the_partition() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let key = format!("{SHOP}/7");
    let bad = Input {
        topic: "orders/updated",
        key: key.clone(),
        body: b"{\"id\":1,\"customer\":{\"id\":7}}".to_vec(),
        webhook_id: "bad".into(),
    };
    let good = Version {
        order_id: 2,
        customer: 7,
        cents: 60_000,
        second: 2,
        cancelled: false,
        test: false,
        status: "paid",
    };
    produce(&bootstrap, &[bad, good.input("good")]).await;
    let running = start(settings(&bootstrap, "g-poison"), &bootstrap).await;
    let want = [(7u64, ("600.00".parse().unwrap(), 1u64))]
        .into_iter()
        .collect();
    wait_for_state(&bootstrap, &want, Duration::from_secs(30)).await;
    running.stop().await;
    let q = read_all(&bootstrap, "shopify.orders.quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(
        header(&q[0], h::QUARANTINE_REASON).as_deref(),
        Some("missing_field")
    );
    assert_eq!(
        header(&q[0], h::QUARANTINED_BY).as_deref(),
        Some("segmenter")
    );
    assert_eq!(header(&q[0], h::SHOPIFY_WEBHOOK_ID).as_deref(), Some("bad"));
    assert!(header(&q[0], h::SOURCE_OFFSET).is_some());
    assert_eq!(
        q[0].payload().unwrap(),
        b"{\"id\":1,\"customer\":{\"id\":7}}"
    );
}

#[tokio::test]
async fn redactions_clear_customers_and_shops_across_partitions() {
    let (_broker, bootstrap, versions, _) = seeded(20, 3).await;
    let running = start(settings(&bootstrap, "g-redact"), &bootstrap).await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(60)).await;

    let first = versions[0].customer;
    let redact = Input {
        topic: "customers/redact",
        key: format!("{SHOP}/{first}"),
        body: format!(r#"{{"shop_id":1,"shop_domain":"{SHOP}","customer":{{"id":{first},"email":"x@y"}},"orders_to_redact":[]}}"#).into_bytes(),
        webhook_id: "redact-1".into(),
    };
    produce(&bootstrap, &[redact]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let us = tokio::task::spawn_blocking({
        let b = bootstrap.clone();
        move || updates(&b)
    })
    .await
    .unwrap();
    let last = us.iter().rev().find(|u| u.customer_id == first).unwrap();
    assert_eq!(last.kind, UpdateKind::Redact);
    assert!(last.tier.is_none() && last.previous_tier.is_some());

    // shop/redact arrives in one partition; every partition's customers are cleared.
    let shop_redact = Input {
        topic: "shop/redact",
        key: SHOP.into(),
        body: format!(r#"{{"shop_id":1,"shop_domain":"{SHOP}"}}"#).into_bytes(),
        webhook_id: "redact-shop".into(),
    };
    produce(&bootstrap, &[shop_redact]).await;
    let customers: std::collections::BTreeSet<u64> = versions.iter().map(|v| v.customer).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let b = bootstrap.clone();
        let us = tokio::task::spawn_blocking(move || updates(&b))
            .await
            .unwrap();
        let redacted: std::collections::BTreeSet<u64> = customers
            .iter()
            .copied()
            .filter(|c| {
                us.iter()
                    .rev()
                    .find(|u| u.customer_id == *c)
                    .is_some_and(|u| u.kind == UpdateKind::Redact)
            })
            .collect();
        if redacted == customers {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} customers redacted",
            redacted.len(),
            customers.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The state gauge is refreshed once the batch's changelog writes are acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running
        .metrics()
        .await
        .contains("tierflow_segmenter_customers 0")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            running.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn a_rebalance_between_two_instances_keeps_every_customer_exact() {
    let broker = mock_broker();
    let bootstrap = broker.bootstrap_servers();
    let (versions, inputs) = history(80, 5);
    let (first_half, second_half) = inputs.split_at(inputs.len() / 2);
    produce(&bootstrap, first_half).await;
    let a = start(settings(&bootstrap, "g-rebalance"), &bootstrap).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let b = start(settings(&bootstrap, "g-rebalance"), &bootstrap).await;
    produce(&bootstrap, second_half).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A leaves: B takes everything, restoring A's partitions from the changelog.
    a.stop().await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(90)).await;
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("tierflow_segmenter_restored_records_total"),
        "{metrics}"
    );
    b.stop().await;
}

/// A batch whose produces fail is redone from its offsets; its records are counted once, when
/// the batch finally succeeds, not once per attempt.
#[tokio::test]
async fn a_failed_batch_is_counted_once_when_it_finally_succeeds() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, bootstrap, versions, inputs) = seeded_on(mock_broker(), 30, 11).await;
    // The first produce requests fail permanently (not retried by librdkafka): the first
    // batches fail and are retried.
    broker.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    let running = start(settings(&bootstrap, "g-count-once"), &bootstrap).await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(60)).await;
    let m = running
        .metrics_after(inputs.len() as u64, Duration::from_secs(30))
        .await;
    let records = metric_sum(&m, "tierflow_segmenter_records_total");
    let failures = metric_sum(&m, "tierflow_segmenter_batch_failures_total");
    assert!(failures >= 1, "the injected errors failed no batch");
    assert_eq!(
        records,
        inputs.len() as u64,
        "each input record counted exactly once despite {failures} failed batch(es)"
    );
    running.stop().await;
}

/// The broker refuses a whole produce request as too large (it judges batches): the records
/// in it are sent again alone, go through, and nothing is lost, quarantined or retried as a
/// batch. (A record the broker refuses on its own is tested on Apache Kafka,
/// `tests/kafka_rejected.rs`: the mock cannot refuse one record and accept its neighbour.)
#[tokio::test]
async fn records_refused_with_their_batch_are_sent_again_alone() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, bootstrap, versions, inputs) = seeded_on(mock_broker(), 30, 13).await;
    broker.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let running = start(settings(&bootstrap, "g-rejected"), &bootstrap).await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(60)).await;
    let m = running
        .metrics_after(inputs.len() as u64, Duration::from_secs(60))
        .await;
    assert_eq!(
        metric_sum(&m, "tierflow_segmenter_records_total"),
        inputs.len() as u64
    );
    assert_eq!(metric_sum(&m, "tierflow_segmenter_batch_failures_total"), 0);
    assert_eq!(
        metric_sum(
            &m,
            "tierflow_segmenter_quarantined_records_total{reason=\"produce_rejected\"}",
        ),
        0,
        "refused only as part of a batch: nothing is the record's own fault"
    );
    running.stop().await;
}

/// `orders/delete` names only the order, so it lands in the partition of `<shop>/order/<id>`
/// while the order lives in its customer's: the segmenter fans it out and the owner takes the
/// order out of the total. A later version of a deleted order never brings it back, neither
/// before nor after a restart (the marker is restored from the changelog).
#[tokio::test]
async fn deleted_orders_leave_the_totals_for_good_across_partitions_and_restarts() {
    let (_broker, bootstrap, versions, _) = seeded(20, 5).await;
    let running = start(settings(&bootstrap, "g-delete"), &bootstrap).await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(60)).await;

    // Every third order is deleted; the reference keeps every customer, at zero if need be.
    let mut orders: Vec<u64> = versions.iter().map(|v| v.order_id).collect();
    orders.dedup();
    let deleted: std::collections::BTreeSet<u64> = orders.iter().copied().step_by(3).collect();
    let kept: Vec<Version> = versions
        .iter()
        .filter(|v| !deleted.contains(&v.order_id))
        .cloned()
        .collect();
    let mut want = reference(&kept);
    for c in reference(&versions).keys() {
        want.entry(*c).or_insert((Decimal::ZERO, 0));
    }
    let deletion = |id: u64, n: usize| Input {
        topic: "orders/delete",
        key: format!("{SHOP}/order/{id}"),
        body: format!(r#"{{"id":{id}}}"#).into_bytes(),
        webhook_id: format!("delete-{id}-{n}"),
    };
    // Each deletion delivered twice (Shopify retries).
    let deletions: Vec<Input> = deleted
        .iter()
        .flat_map(|id| [deletion(*id, 0), deletion(*id, 1)])
        .collect();
    produce(&bootstrap, &deletions).await;
    wait_for_state(&bootstrap, &want, Duration::from_secs(60)).await;

    // A newer version of each deleted order, before and after a restart, changes nothing; a
    // marker customer's new order shows that those records were decided.
    let late = |n: u32| -> Vec<Input> {
        versions
            .iter()
            .filter(|v| deleted.contains(&v.order_id))
            .map(|v| {
                Version {
                    second: 3000 + n,
                    status: "paid",
                    cancelled: false,
                    test: false,
                    ..v.clone()
                }
                .input(&format!("late-{}-{n}", v.order_id))
            })
            .collect()
    };
    let marker = |order_id: u64, cents: i64| Version {
        order_id,
        customer: 42,
        cents,
        second: 1,
        cancelled: false,
        test: false,
        status: "paid",
    };
    produce(&bootstrap, &late(0)).await;
    produce(&bootstrap, &[marker(1, 100).input("marker-1")]).await;
    want.insert(42, (Decimal::new(100, 2), 1));
    wait_for_state(&bootstrap, &want, Duration::from_secs(60)).await;
    running.stop().await;

    let running = start(settings(&bootstrap, "g-delete"), &bootstrap).await;
    produce(&bootstrap, &late(1)).await;
    produce(&bootstrap, &[marker(2, 200).input("marker-2")]).await;
    want.insert(42, (Decimal::new(300, 2), 2));
    wait_for_state(&bootstrap, &want, Duration::from_secs(60)).await;
    running.stop().await;
}
