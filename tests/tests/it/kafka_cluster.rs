//! The whole pipeline on a three-node Apache Kafka cluster (replication factor 3,
//! `min.insync.replicas=2`, the ingest's `acks=all`) while a history of orders arrives with
//! Shopify-like retries: the leader of the orders partitions is `kill -9`ed and brought back,
//! then a leader hangs (SIGSTOP) for three times the ingest's `produce_timeout`, then every
//! node is killed and restarted. Every webhook answered 2xx must be in the orders topic, the
//! hang must show as refusals Shopify retries, and the Okta state must equal the independent
//! reference — no lost and no doubled effect — with nothing dead-lettered.

use std::collections::BTreeSet;
use std::time::Duration;

use service_runtime::config::TopicsConfig;
use testkit::Broker;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_hang_and_full_restart_under_load_leave_okta_exact() {
    let _heavy = testkit::heavy().await;
    let broker = Broker::kafka(3, 6);
    let kafka = broker.apache_kafka().unwrap();
    let bootstrap = broker.bootstrap_servers();
    let produce_timeout = Duration::from_secs(2);
    let pipeline = start_pipeline(&bootstrap, |s| {
        s.for_writer.okta.retry_initial_interval = Duration::from_millis(20);
        s.for_writer.okta.retry_max_interval = Duration::from_millis(500);
        s.for_ingest.ingest.produce_timeout = produce_timeout;
    })
    .await;
    let history = history(400, 51);
    for u in okta_users(&customers(&history)) {
        pipeline.sim.add_user(&u).unwrap();
    }
    let want = reference(&history);
    let deliveries = deliveries(&history, 51);
    let addr = pipeline.endpoints.webhooks;
    let stream = deliveries.clone();
    // 20 webhooks per 100 ms tick over 4 connections, each retried until answered 2xx.
    let sender = tokio::spawn(async move {
        let mut refused = 0;
        for chunk in stream.chunks(20) {
            refused += deliver_like_shopify(addr, chunk, 4).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        refused
    });
    let orders = TopicsConfig::default().orders;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = tokio::task::block_in_place(|| broker.leader_of(&orders, 0));
    kafka.kill(&killed.to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| kafka.restart(&killed.to_string())).unwrap();

    let hung = tokio::task::block_in_place(|| broker.leader_of(&orders, 0));
    kafka.pause(&hung.to_string()).unwrap();
    tokio::time::sleep(produce_timeout * 3).await;
    kafka.resume(&hung.to_string()).unwrap();

    assert!(
        !sender.is_finished(),
        "the faults must land while webhooks arrive"
    );
    kafka.kill("all").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| kafka.restart("all")).unwrap();
    let refused = sender.await.unwrap();
    assert!(
        refused > 0,
        "the hang and the full outage must refuse webhooks"
    );

    let sim = pipeline.sim.clone();
    eventually(Duration::from_secs(180), || {
        // A service that stopped would otherwise show only as mismatches after 180 s.
        if let Some(name) = pipeline.failed() {
            panic!("{name} stopped during the faults");
        }
        okta_mismatches(&sim, &want)
    })
    .await;
    let stored: BTreeSet<String> = tokio::task::block_in_place(|| {
        testkit::topic::read_all(&bootstrap, &orders)
            .iter()
            .filter_map(|m| testkit::topic::header(m, schemas::headers::SHOPIFY_WEBHOOK_ID))
            .collect()
    });
    let sent: BTreeSet<String> = deliveries.iter().map(|w| w.webhook_id.clone()).collect();
    let lost: Vec<_> = sent.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 2xx but not in Kafka: {lost:?}");
    assert_eq!(
        metric_sum(
            pipeline.endpoints.writer_admin,
            "tierflow_okta_writer_dead_letters_total"
        )
        .await,
        0.0
    );
    eprintln!(
        "{} webhooks, {refused} refusals retried; killed node {killed}, hung node {hung}, then all three restarted",
        deliveries.len()
    );
    pipeline.stop().await.unwrap();
}
