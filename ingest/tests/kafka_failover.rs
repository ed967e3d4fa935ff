//! The ingest on a three-node Apache Kafka cluster (replication factor 3,
//! `min.insync.replicas=2`, `acks=all`), while signed webhooks flow with Shopify-like retries
//! (anything but 2xx is sent again): the leader of the orders partitions is killed with
//! `kill -9`. Every webhook that was answered 2xx must be in the orders topic — the claim the
//! mock cluster could never test, since it has no replicas to fail over to.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use service_runtime::kafka::LocalKafka;

const WEBHOOKS: usize = 1500;
const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_2xx_survives_a_killed_partition_leader() {
    let kafka = LocalKafka::start(3).unwrap();
    let admin = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .clone();
    let specs = service_runtime::topics::pipeline_topics(
        &service_runtime::config::TopicsConfig::default(),
        service_runtime::topics::Layout {
            partitions: PARTITIONS,
            replication: 3,
            min_insync_replicas: 2,
        },
    );
    let made = tokio::task::spawn_blocking(move || {
        service_runtime::topics::ensure(&admin, &specs, true, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(made.len(), 5, "{made:?}");

    let s = settings(&kafka.bootstrap);
    let app = ingest::Application::build(&s, &kafka.bootstrap)
        .await
        .unwrap();
    let url = format!("http://{}/webhooks/shopify", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, next, acked, refused) = (
                client.clone(),
                url.clone(),
                next.clone(),
                acked.clone(),
                refused.clone(),
            );
            tokio::spawn(async move {
                let mut delivered = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= WEBHOOKS {
                        return delivered;
                    }
                    let body = format!(
                        r#"{{"id":{},"updated_at":"2026-11-20T10:00:00Z","customer":{{"id":{}}},"current_total_price":"1.00"}}"#,
                        10_000 + n,
                        n % 97
                    );
                    let id = format!("failover-{n}");
                    let w = signed("orders/create", &id, body.as_bytes());
                    // Shopify's way: anything but 2xx is retried (here quickly, for 60 s).
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match post(&client, &url, &w).send().await {
                            Ok(r) if r.status().is_success() => break,
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                assert!(Instant::now() < deadline, "{id} never accepted");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    acked.fetch_add(1, Ordering::Relaxed);
                    delivered.push(id);
                    // About 800 webhooks/s in all: the kill lands mid-stream.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    // Once a tenth is in, kill -9 the node leading partition 0 of the orders topic.
    while acked.load(Ordering::Relaxed) < WEBHOOKS / 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bootstrap = kafka.bootstrap.clone();
    let leader = tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let md = rdkafka::consumer::Consumer::fetch_metadata(
            &consumer,
            Some(ORDERS),
            Duration::from_secs(10),
        )
        .unwrap();
        md.topics()[0].partitions()[0].leader()
    })
    .await
    .unwrap();
    let killed = std::process::Command::new(LocalKafka::script())
        .args(["kill", "--dir", &kafka.dir, "--node", &leader.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let at_kill = acked.load(Ordering::Relaxed);

    let mut delivered = BTreeSet::new();
    for s in senders {
        delivered.extend(s.await.unwrap());
    }
    assert_eq!(delivered.len(), WEBHOOKS);
    assert!(
        at_kill < WEBHOOKS,
        "the kill landed after the last delivery: nothing was tested"
    );

    let bootstrap = kafka.bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, ORDERS, WEBHOOKS, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let stored: BTreeSet<String> = records
        .iter()
        .map(|m| headers_of(m)[schemas::headers::SHOPIFY_WEBHOOK_ID].clone())
        .collect();
    let lost: Vec<_> = delivered.difference(&stored).collect();
    println!(
        "killed node {leader} after {at_kill} of {WEBHOOKS} acknowledged; {} refused answers retried; {} records read ({} duplicates)",
        refused.load(Ordering::Relaxed),
        records.len(),
        records.len() - stored.len()
    );
    assert!(
        lost.is_empty(),
        "answered 2xx but not in the topic: {lost:?}"
    );

    let _ = stop_tx.send(());
    served.await.unwrap().unwrap();
}
