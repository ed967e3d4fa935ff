//! Record size limits on Apache Kafka (a single KRaft node from `scripts/kafka.py`), where the
//! broker, unlike librdkafka's mock cluster, enforces a topic's `max.message.bytes` on the
//! compressed batch and answers DescribeConfigs:
//!
//! - the ingest reads the topics' real limits at startup and refuses a config that could accept
//!   bodies the topic can never hold, naming the limit;
//! - a body that compresses below the limit is stored whole even though it is larger than it;
//! - a body the broker refuses is answered 200 and quarantined (`too_large_for_broker`) with its
//!   length and digest, cut to what the quarantine topic takes, never answered 503.

use std::time::Duration;

use crate::common::*;
use rdkafka::Message;
use schemas::headers as h;

async fn create_topics(bootstrap: &str, orders_max: &str, quarantine_max: &str) {
    for (topic, max) in [(ORDERS, orders_max), (QUARANTINE, quarantine_max)] {
        testkit::broker::create_topic(bootstrap, topic, PARTITIONS, &[("max.message.bytes", max)])
            .await;
    }
}

#[tokio::test]
async fn the_brokers_own_limits_are_read_and_held() {
    let broker = testkit::Broker::kafka_without_topics(1);
    let kafka = broker.apache_kafka().unwrap();
    // Both topics smaller than a large order: only compression lets one in.
    create_topics(&kafka.bootstrap, "300000", "400000").await;

    // Compression off: 1 MiB bodies can never fit a 300 kB topic. Refused, limit named.
    let mut s = settings(&kafka.bootstrap);
    s.kafka.client.insert(
        "compression.type".into(),
        toml::Value::String("none".into()),
    );
    s.ingest.max_body_bytes = 1024 * 1024;
    let e = ingest::Application::build(&s, &kafka.bootstrap)
        .await
        .expect_err("a 300 kB topic cannot hold 1 MiB uncompressed bodies");
    let text = format!("{e:#}");
    assert!(text.contains("300000"), "{text}");

    // Defaults (lz4): starts, and serves. A long linger makes records sent together share a
    // batch, as they may under load.
    let mut s = settings(&kafka.bootstrap);
    s.kafka
        .client
        .insert("linger.ms".into(), toml::Value::String("300".into()));
    s.validate().unwrap();
    let app = ingest::Application::build(&s, &kafka.bootstrap)
        .await
        .unwrap();
    let url = format!("http://{}/webhooks/shopify", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();

    // 900 kB of ordinary JSON: three times the topic's limit, stored whole (compressed).
    let large = large_order(78, 15_000);
    assert!(large.len() > 800_000, "{}", large.len());
    let w = signed("orders/create", "wh-large", large.as_bytes());
    let r = post(&client, &url, &w).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // 900 kB that does not compress: the broker refuses it; 200, quarantined, cut to fit.
    let big = incompressible_order(77, 900_000);
    let w = signed("orders/create", "wh-big", big.as_bytes());
    // Sent together with ordinary orders to the same partition (same customer key), so they
    // may share its batch: the broker refuses the whole batch, and the small ones must still
    // land in the orders topic, not in quarantine.
    let small: Vec<_> = (0..20)
        .map(|i| {
            let body = format!(
                r#"{{"id":{},"updated_at":"2026-11-20T10:00:00Z","customer":{{"id":5}},"current_total_price":"1.00"}}"#,
                1000 + i
            );
            signed("orders/create", &format!("wh-small-{i}"), body.as_bytes())
        })
        .collect();
    let sends = futures::future::join_all(
        std::iter::once(&w)
            .chain(small.iter())
            .map(|w| post(&client, &url, w).send()),
    )
    .await;
    for r in sends {
        assert_eq!(
            r.unwrap().status(),
            200,
            "never 503 for a body no retry can store, nor for its neighbours"
        );
    }

    let bootstrap = kafka.bootstrap.clone();
    let orders = tokio::task::spawn_blocking(move || {
        read_at_least(&bootstrap, ORDERS, 21, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(orders.len(), 21, "the large order and all 20 small ones");
    let large_record = orders
        .iter()
        .find(|m| headers(m)[h::SHOPIFY_WEBHOOK_ID] == "wh-large")
        .unwrap();
    assert_eq!(large_record.payload().unwrap(), large.as_bytes());
    let bootstrap = kafka.bootstrap.clone();
    let quarantined = tokio::task::spawn_blocking(move || {
        read_at_least(&bootstrap, QUARANTINE, 1, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(quarantined.len(), 1);
    let hs = headers(&quarantined[0]);
    assert_eq!(hs[h::QUARANTINE_REASON], "too_large_for_broker");
    assert_eq!(hs[h::BODY_BYTES], big.len().to_string());
    assert_eq!(hs[h::BODY_SHA256], h::sha256_hex(big.as_bytes()));
    assert_eq!(hs[h::BODY_TRUNCATED], "true");
    let kept = quarantined[0].payload().unwrap();
    assert!(kept.len() < 400_000 && big.as_bytes().starts_with(kept));

    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}
