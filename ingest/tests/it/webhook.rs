//! The ingest over real HTTP against a real Kafka-protocol broker (librdkafka's mock cluster).

use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::Message;
use schemas::headers as h;

#[tokio::test]
async fn valid_webhook_lands_with_exact_bytes_key_and_headers() {
    let mut app = spawn_app(|_| {}).await;
    let (webhook, spec) = order_webhook("wh-valid-1", Some(115_310_627_314_723_954));
    let response = app.send(&webhook).await;
    assert_eq!(response.status(), 200);

    let records = app.read(ORDERS, 1, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        r.payload().unwrap(),
        &webhook.body[..],
        "value is the raw body, byte for byte"
    );
    assert!(std::str::from_utf8(r.payload().unwrap())
        .unwrap()
        .contains("\\/"));
    assert_eq!(key_of(r), format!("{SHOP}/{}", spec.customer_id.unwrap()));
    let hs = headers(r);
    assert_eq!(hs[h::SHOPIFY_TOPIC], "orders/create");
    assert_eq!(hs[h::SHOPIFY_SHOP_DOMAIN], SHOP);
    assert_eq!(hs[h::SHOPIFY_WEBHOOK_ID], "wh-valid-1");
    assert_eq!(hs[h::SHOPIFY_EVENT_ID], "evt-wh-valid-1");
    assert_eq!(hs[h::SHOPIFY_TRIGGERED_AT], "2026-11-22T04:00:00.000Z");
    assert_eq!(hs[h::SHOPIFY_API_VERSION], loadgen::API_VERSION);
    assert!(
        hs[h::RECEIVED_AT].ends_with('Z') && hs[h::RECEIVED_AT].len() == 24,
        "{}",
        hs[h::RECEIVED_AT]
    );
    assert!(hs[h::TRACEPARENT].starts_with("00-") && hs[h::TRACEPARENT].len() == 55);
    assert!(
        !hs.contains_key(h::SHOPIFY_HMAC_SHA256),
        "the signature is not copied"
    );
    assert!(!hs.contains_key(h::QUARANTINE_REASON));
    assert_eq!(app.count(QUARANTINE), 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn guest_orders_are_keyed_by_order_and_optional_headers_may_be_absent() {
    let mut app = spawn_app(|_| {}).await;
    let (mut webhook, spec) = order_webhook("wh-guest", None);
    webhook.event_id = None;
    webhook.triggered_at = None;
    assert_eq!(app.send(&webhook).await.status(), 200);
    let records = app.read(ORDERS, 1, Duration::from_secs(10)).await;
    assert_eq!(
        key_of(&records[0]),
        format!("{SHOP}/order/{}", spec.order_id)
    );
    let hs = headers(&records[0]);
    assert!(!hs.contains_key(h::SHOPIFY_EVENT_ID) && !hs.contains_key(h::SHOPIFY_TRIGGERED_AT));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn refused_requests_publish_nothing() {
    let mut app = spawn_app(|_| {}).await;
    let (good, _) = order_webhook("wh-refused", Some(1));
    let mut cases: Vec<(&str, loadgen::Webhook, u16)> = Vec::new();

    let mut w = good.clone();
    w.hmac = loadgen::sign(b"some-other-secret", &w.body);
    cases.push(("wrong secret", w, 401));
    let mut w = good.clone();
    w.hmac = "not-base64!".into();
    cases.push(("malformed signature", w, 401));
    let mut w = good.clone();
    w.body = format!("{} ", std::str::from_utf8(&good.body).unwrap()).into();
    cases.push(("body changed after signing", w, 401));
    let mut w = good.clone();
    w.shop = "Not A Shop!".into();
    cases.push(("bad shop domain", w, 400));
    for (name, w, status) in cases {
        assert_eq!(app.send(&w).await.status(), status, "{name}");
    }

    // Each required header missing in turn.
    for missing in [
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-API-Version",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Hmac-Sha256",
    ] {
        let mut req = app.client.post(app.url()).body(good.body.clone());
        for (k, v) in good.headers() {
            if k != missing {
                req = req.header(k, v);
            }
        }
        let status = req.send().await.unwrap().status().as_u16();
        let want = if missing == "X-Shopify-Hmac-Sha256" {
            401
        } else {
            400
        };
        assert_eq!(status, want, "without {missing}");
    }

    // 405 for other methods.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = app
            .client
            .request(method.clone(), app.url())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
    }

    // 413 from Content-Length, before the body is read.
    let big = vec![b'x'; 2 * 1024 * 1024 + 1];
    let mut w = good.clone();
    w.hmac = loadgen::sign(SECRET.as_bytes(), &big);
    w.body = big.clone().into();
    assert_eq!(app.send(&w).await.status(), 413);
    // 413 from a chunked body with no Content-Length, once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b'y'; 64 * 1024])).collect();
    let mut req = app
        .client
        .post(app.url())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    for (k, v) in w.headers() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 413);

    assert_eq!(app.count(ORDERS), 0);
    assert_eq!(app.count(QUARANTINE), 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"tierflow_ingest_signature_failures_total{reason="mismatch",shop="other"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tierflow_ingest_requests_total{outcome="too_large",shopify_topic="orders/create"} 2"#
        ),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn signed_but_unusable_bodies_are_quarantined_with_a_reason() {
    let mut app = spawn_app(|_| {}).await;
    let cases: [(&str, &[u8], &str); 6] = [
        ("orders/create", b"this is not json", "invalid_json"),
        // The signed bytes of an order re-sent under an (unsigned) compliance topic header.
        (
            "shop/redact",
            br#"{"id":1,"admin_graphql_api_id":"gid://shopify/Order/1","updated_at":"2026-11-20T10:00:00Z","customer":{"id":2}}"#,
            "shape_mismatch",
        ),
        (
            "customers/redact",
            br#"{"id":1,"admin_graphql_api_id":"gid://shopify/Order/1","updated_at":"2026-11-20T10:00:00Z","customer":{"id":2}}"#,
            "shape_mismatch",
        ),
        // Signed for another shop than the (unsigned) header claims.
        (
            "customers/redact",
            br#"{"shop_domain":"someone-else.myshopify.com","customer":{"id":1}}"#,
            "shop_mismatch",
        ),
        (
            "orders/updated",
            br#"{"customer":{"id":1}}"#,
            "missing_key_field",
        ),
        ("refunds/create", br#"{"id":5}"#, "missing_key_field"),
    ];
    for (i, (topic, body, _)) in cases.iter().enumerate() {
        let w = signed(topic, &format!("wh-q-{i}"), body);
        assert_eq!(app.send(&w).await.status(), 200, "{topic}");
    }
    let records = app
        .read(QUARANTINE, cases.len(), Duration::from_secs(10))
        .await;
    assert_eq!(records.len(), cases.len());
    for (i, (topic, body, reason)) in cases.iter().enumerate() {
        let r = records
            .iter()
            .find(|r| headers(r)[h::SHOPIFY_WEBHOOK_ID] == format!("wh-q-{i}"))
            .unwrap();
        assert_eq!(r.payload().unwrap(), *body);
        assert_eq!(key_of(r), SHOP);
        let hs = headers(r);
        assert_eq!(hs[h::QUARANTINE_REASON], *reason);
        assert_eq!(hs[h::SHOPIFY_TOPIC], *topic);
    }
    assert_eq!(app.count(ORDERS), 0);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .contains(r#"tierflow_ingest_quarantined_records_total{reason="missing_key_field"} 2"#),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn topics_outside_the_configured_list_get_200_and_are_only_counted() {
    let mut app = spawn_app(|s| {
        s.ingest.topics = vec![schemas::ShopifyTopic::OrdersCreate];
    })
    .await;
    let (mut w, _) = order_webhook("wh-ignored", Some(9));
    w.topic = "orders/updated".into();
    assert_eq!(app.send(&w).await.status(), 200);
    w.topic = "products/create".into();
    assert_eq!(app.send(&w).await.status(), 200);
    assert_eq!(app.count(ORDERS), 0);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"tierflow_ingest_requests_total{outcome="ignored_topic",shopify_topic="orders/updated"} 1"#), "{metrics}");
    assert!(
        metrics.contains(
            r#"tierflow_ingest_requests_total{outcome="ignored_topic",shopify_topic="unknown"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn broker_down_gives_503_within_the_deadline_then_recovers() {
    let mut app = spawn_app(|_| {}).await;
    let (w, _) = order_webhook("wh-before", Some(3));
    assert_eq!(app.send(&w).await.status(), 200);

    app.broker.mock().broker_down(1).unwrap();
    let (w, _) = order_webhook("wh-during", Some(3));
    let started = Instant::now();
    let response = app.send(&w).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(
        took < Duration::from_secs(5),
        "Shopify's deadline is 5 s; took {took:?}"
    );

    app.broker.mock().broker_up(1).unwrap();
    // librdkafka reconnects with backoff; a retry (as Shopify would make) succeeds.
    let (w, _) = order_webhook("wh-after", Some(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.send(&w).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "no recovery after broker_up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"tierflow_ingest_requests_total{outcome="unavailable""#),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_2xx_under_a_burst_with_the_broker_stopped_midway_is_in_the_topic() {
    let mut app = spawn_app(|_| {}).await;
    let total = 600usize;
    let concurrency = 24usize;
    let url = app.url();
    let client = app.client.clone();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<(String, u16)>(total);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, done_tx) =
            (client.clone(), url.clone(), next.clone(), done_tx.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let id = format!("wh-burst-{i}");
                let (w, _) = order_webhook(&id, Some(1_000 + i as u64 % 50));
                let status = post(&client, &url, &w)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                done_tx.send((id, status)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    drop(done_tx);
    let mut answered = Vec::new();
    let mut stopped = false;
    while let Some((id, status)) = done_rx.recv().await {
        answered.push((id, status));
        if answered.len() == total / 4 && !stopped {
            stopped = true;
            app.broker.mock().broker_down(1).unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            app.broker.mock().broker_up(1).unwrap();
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let ok: Vec<&String> = answered
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id)
        .collect();
    let unavailable = answered.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!(answered.len(), total);
    assert_eq!(
        ok.len() + unavailable,
        total,
        "only 200 and 503 are expected"
    );
    assert!(unavailable > 0, "the outage should have produced 503s");
    assert!(
        ok.len() > total / 4,
        "most requests succeed around the outage"
    );

    let records = app.read(ORDERS, ok.len(), Duration::from_secs(30)).await;
    let stored: std::collections::HashSet<String> = records
        .iter()
        .map(|r| headers(r)[h::SHOPIFY_WEBHOOK_ID].clone())
        .collect();
    let lost: Vec<&&String> = ok
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged webhooks missing: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "burst: {} x 200, {unavailable} x 503, {} records stored",
        ok.len(),
        records.len()
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_metrics_listeners() {
    let mut app = spawn_app(|_| {}).await;
    let get = |url: String| {
        let c = app.client.clone();
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(
        get(format!("http://{}/healthz", app.addr)).await.status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(format!("http://{}/readyz", app.addr)).await.status() != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Admin endpoints stay off the public listener.
    assert_eq!(
        get(format!("http://{}/metrics", app.addr)).await.status(),
        404
    );
    let metrics = app.metrics().await;
    for name in [
        "tierflow_ingest_in_flight_records",
        "tierflow_ingest_broker_metadata_age_seconds",
        "tierflow_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_flushes() {
    let mut app = spawn_app(|_| {}).await;
    // Warm up (metadata, producer id) at full speed, then slow the broker so requests are still
    // awaiting their ack when shutdown begins.
    let (w, _) = order_webhook("wh-warmup", Some(77));
    assert_eq!(app.send(&w).await.status(), 200);
    app.broker
        .mock()
        .broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..8 {
        let (w, _) = order_webhook(&format!("wh-shutdown-{i}"), Some(77));
        pending.push(tokio::spawn(post(&app.client, &app.url(), &w).send()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (stopped, responses) = tokio::join!(app.stop(), futures::future::join_all(pending));
    stopped.expect("clean shutdown");
    let ok = responses
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(r)) if r.status() == 200))
        .count();
    assert_eq!(
        ok, 8,
        "requests in flight at shutdown are answered, not dropped"
    );
    assert_eq!(app.count(ORDERS), 9);
}

/// A signed body the broker cannot hold is answered 200 (a retry could never succeed) and
/// kept in quarantine with its metadata, length and digest, cut to what fits; compressible
/// bodies up to `max_body_bytes` are stored whole.
#[tokio::test]
async fn bodies_the_broker_cannot_hold_are_quarantined_not_retried_forever() {
    // The producer's own limit stands in for a broker's smaller max.message.bytes here (the
    // mock cluster does not enforce one); the path after the refusal is the same.
    let mut app = spawn_app(|s| {
        s.kafka.client.insert(
            "message.max.bytes".into(),
            toml::Value::String("1100000".into()),
        );
    })
    .await;
    // 1.5 MB that does not compress.
    let big = incompressible_order(77, 1_500_000);
    let w = signed("orders/create", "wh-big", big.as_bytes());
    assert_eq!(app.send(&w).await.status(), 200);
    let records = app.read(QUARANTINE, 1, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 1);
    let hs = headers(&records[0]);
    assert_eq!(hs[h::QUARANTINE_REASON], "too_large_for_broker");
    assert_eq!(hs[h::SHOPIFY_WEBHOOK_ID], "wh-big");
    assert_eq!(hs[h::BODY_BYTES], big.len().to_string());
    assert_eq!(hs[h::BODY_SHA256], h::sha256_hex(big.as_bytes()));
    assert_eq!(hs[h::BODY_TRUNCATED], "true");
    let kept = records[0].payload().unwrap();
    assert!(kept.len() < 1_100_000 && big.as_bytes().starts_with(kept));
    assert_eq!(app.count(ORDERS), 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"tierflow_ingest_quarantined_records_total{reason="too_large_for_broker"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await.unwrap();

    // With the defaults, a 1.8 MB order of ordinary JSON (over librdkafka's default 1,000,000
    // record limit and Kafka's default 1 MiB batch limit) is compressed and stored whole.
    let mut app = spawn_app(|_| {}).await;
    let large = large_order(78, 30_000);
    assert!(
        (1_500_000..2_000_000).contains(&large.len()),
        "{}",
        large.len()
    );
    let w = signed("orders/create", "wh-large", large.as_bytes());
    assert_eq!(app.send(&w).await.status(), 200);
    let records = app.read(ORDERS, 1, Duration::from_secs(10)).await;
    assert_eq!(records[0].payload().unwrap(), large.as_bytes());
    assert_eq!(app.count(QUARANTINE), 0);
    app.stop().await.unwrap();
}

/// A config that could accept bodies the broker can never store is refused at startup, with
/// the fix named.
#[tokio::test]
async fn a_config_that_cannot_store_what_it_accepts_is_refused() {
    let broker =
        service_runtime::kafka::EmbeddedBroker::start(&[ORDERS, QUARANTINE], PARTITIONS).unwrap();
    let mut s = settings(&broker.bootstrap_servers());
    s.kafka.client.insert(
        "compression.type".into(),
        toml::Value::String("none".into()),
    );
    s.validate().unwrap();
    let e = ingest::Application::build(&s, &broker.bootstrap_servers())
        .await
        .expect_err("2 MiB bodies, no compression, a 1 MiB topic");
    let text = format!("{e:#}");
    assert!(
        text.contains("max.message.bytes") && text.contains("compression.type"),
        "{text}"
    );
    // With the default compression the same body limit starts: lz4 batches are what the
    // broker's limit applies to.
    s.kafka.client.remove("compression.type");
    ingest::Application::build(&s, &broker.bootstrap_servers())
        .await
        .expect("lz4 lets 2 MiB bodies through a 1 MiB topic limit");
}
