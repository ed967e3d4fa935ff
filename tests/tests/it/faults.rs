//! The whole pipeline under faults: a broker outage while webhooks arrive (on the mock cluster
//! the broker is taken down; on Apache Kafka every node is `kill -9`ed and restarted on its
//! data), and a misbehaving Okta (5xx, 429s, latency). In both the final Okta state equals the independent reference,
//! and transient faults dead-letter nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use testkit::Broker;
use tests::*;
use tierflow::pipeline::Pipeline;

async fn start(bootstrap: &str, sim: okta_sim::SimConfig) -> Pipeline {
    // Retry Okta quickly in tests; ack webhooks within 2 s so an outage shows as 503s fast.
    let pipeline = start_pipeline(bootstrap, |s| {
        s.for_writer.okta.retry_initial_interval = Duration::from_millis(20);
        s.for_writer.okta.retry_max_interval = Duration::from_millis(500);
        s.for_ingest.ingest.produce_timeout = Duration::from_secs(2);
    })
    .await;
    pipeline.sim.set_faults(sim.faults);
    pipeline
}

async fn dead_letters(p: &Pipeline) -> f64 {
    metric_sum(
        p.endpoints.writer_admin,
        "tierflow_okta_writer_dead_letters_total",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_under_load_loses_nothing_that_was_acknowledged() {
    let _heavy = testkit::heavy().await;
    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let pipeline = start(&bootstrap, okta_sim::SimConfig::default()).await;
    let history = history(300, 21);
    for u in okta_users(&customers(&history)) {
        pipeline.sim.add_user(&u).unwrap();
    }
    let want = reference(&history);
    let mut deliveries = deliveries(&history, 21);
    let addr = pipeline.endpoints.webhooks;
    // The outage hits a running pipeline: a tenth of the webhooks go first, and the outage
    // waits until Okta has seen the writer (a service *starting* while every broker is down
    // exits after its 10 s metadata check, for its supervisor to restart — found on Apache
    // Kafka, where this test once killed the brokers during the writer's startup).
    let rest = deliveries.split_off(deliveries.len() / 10);
    deliver_like_shopify(addr, &deliveries, 8).await;
    let sim = pipeline.sim.clone();
    testkit::wait_for(
        "the writer's first Okta call",
        Duration::from_secs(60),
        || !sim.requests().is_empty(),
    )
    .await;
    let sender = tokio::spawn(async move { deliver_like_shopify(addr, &rest, 8).await });
    // Take the broker down for 4 s while webhooks arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sender.is_finished(),
        "the outage must come while webhooks arrive"
    );
    match broker.apache_kafka() {
        None => broker.mock().broker_down(1).unwrap(),
        Some(kafka) => kafka.kill("all").unwrap(),
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    match broker.apache_kafka() {
        None => broker.mock().broker_up(1).unwrap(),
        // Waits until the node lists itself again (~5-10 s): webhooks keep being refused.
        Some(kafka) => tokio::task::block_in_place(|| kafka.restart("all")).unwrap(),
    }
    let refused = sender.await.unwrap();
    assert!(
        refused > 0,
        "the ingest must have refused webhooks while the broker was down"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    if let Some(name) = pipeline.failed() {
        let e = pipeline.stop().await;
        panic!("{name} stopped during the outage: {e:?}");
    }
    // A deadline, not a speed check (it passes in ~30 s here): after every node of Apache
    // Kafka is killed and restarted, the groups' recovery (session timeouts, rebalances, the
    // segmenter's batch backoff up to 30 s) can take minutes on a loaded two-core CI machine;
    // 120 s was missed once with 54 customers still behind.
    eventually(Duration::from_secs(300), || okta_mismatches(&sim, &want)).await;
    assert_eq!(dead_letters(&pipeline).await, 0.0);
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn okta_5xx_429_and_latency_delay_but_do_not_change_the_result() {
    let _heavy = testkit::heavy().await;
    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let pipeline = start(
        &bootstrap,
        okta_sim::SimConfig {
            faults: okta_sim::Faults {
                error_rate: 0.2,
                conflict_rate: 0.1,
                latency: Duration::from_millis(15),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let history = history(80, 31);
    for u in okta_users(&customers(&history)) {
        pipeline.sim.add_user(&u).unwrap();
    }
    let want = reference(&history);
    deliver(pipeline.endpoints.webhooks, &deliveries(&history, 31)).await;
    // Faults for a while, then Okta recovers; everything must land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let served: BTreeMap<u16, usize> =
        pipeline
            .sim
            .requests()
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.status).or_default() += 1;
                m
            });
    assert!(
        served.keys().any(|s| *s >= 500),
        "faults were injected: {served:?}"
    );
    pipeline.sim.set_faults(okta_sim::Faults::default());
    let sim = pipeline.sim.clone();
    eventually(Duration::from_secs(120), || okta_mismatches(&sim, &want)).await;
    assert_eq!(
        dead_letters(&pipeline).await,
        0.0,
        "transient faults dead-letter nothing"
    );
    pipeline.stop().await.unwrap();
}
