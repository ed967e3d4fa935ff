//! The pipeline as five processes (the real binaries: one `ingest`, two `segmenter`s and two
//! `okta-writer`s sharing their groups) while each is `kill -9`ed at random points and started
//! again at once — so a restarted consumer joins while its killed predecessor is still a
//! member, and its group rebalances around the survivor — under a stream of webhooks delivered
//! the way Shopify does (retried until answered 2xx). Afterwards the Okta simulator's state
//! equals the independent reference, every acknowledged webhook is in the orders topic, and
//! nothing was dead-lettered. scripts/test.sh runs it on Apache Kafka
//! (`TIERFLOW_TEST_BROKER=kafka`) as well as on the mock cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use service_runtime::config::TopicsConfig;
use testkit::process::{Process, Service, Wiring};
use testkit::{free_port, Broker};
use tests::*;

const PARTITIONS: i32 = 6;

/// The simulator with the tier groups and a user for each customer, without rate limits (the
/// writer's pacing is tested on its own).
async fn okta(customers: &[u64]) -> okta_sim::SimHandle {
    let groups = [
        "Shopify Potential",
        "Shopify New",
        "Shopify Active",
        "Shopify VIP",
    ];
    let mut seed = okta_sim::seed(&groups, &[]);
    seed.users = okta_users(customers);
    okta_sim::SimHandle::start(okta_sim::SimConfig::unthrottled(), &seed)
        .await
        .unwrap()
}

/// Every `x-shopify-webhook-id` in a topic, read from its beginning to its current end.
fn webhook_ids_in(bootstrap: &str, topic: &str) -> BTreeSet<String> {
    testkit::topic::read_all(bootstrap, topic)
        .iter()
        .filter_map(|m| testkit::topic::header(m, schemas::headers::SHOPIFY_WEBHOOK_ID))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_killed_at_random_points_and_restarted_the_final_state_is_exact() {
    let _heavy = testkit::heavy().await;
    let seed = 41;
    let broker = Broker::from_env(PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let history = history(200, seed);
    let want = reference(&history);
    let sim = okta(&customers(&history)).await;
    let deliveries = deliveries(&history, seed);
    let log_dir = std::env::temp_dir().join(format!("tierflow-e2e-kills-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let wiring = Wiring {
        bootstrap: bootstrap.clone(),
        okta_base_url: sim.base_url(),
        webhooks: free_port(),
        log_dir: log_dir.clone(),
        shop: SHOP.to_owned(),
    };
    let mut processes: Vec<Process> = [
        (Service::Ingest, 0),
        (Service::Segmenter, 0),
        (Service::Segmenter, 1),
        (Service::OktaWriter, 0),
        (Service::OktaWriter, 1),
    ]
    .iter()
    .map(|(s, i)| Process::start_instance(*s, &wiring, *i))
    .collect();

    // Shopify's side: 10 webhooks per 250 ms tick, each retried until it gets a 2xx
    // (connection refused while the ingest is dead, 503 while it cannot reach the broker).
    let tick = Duration::from_millis(250);
    let addr = wiring.webhooks;
    let stream = deliveries.clone();
    let sender = tokio::spawn(async move {
        let mut refused = 0;
        for chunk in stream.chunks(10) {
            refused += deliver_like_shopify(addr, chunk, 4).await;
            tokio::time::sleep(tick).await;
        }
        refused
    });

    // Each process is killed twice, in a random order, at random moments, and restarted after
    // a random pause (often none: the new member joins before the old one's session expires);
    // the kills continue after the last webhook while the consumers drain.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut plan: Vec<usize> = (0..2).flat_map(|_| 0..processes.len()).collect();
    plan.shuffle(&mut rng);
    let mut during_delivery = 0;
    for i in plan {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        for p in processes.iter_mut() {
            p.assert_running();
        }
        processes[i].kill();
        if !sender.is_finished() {
            during_delivery += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        processes[i].spawn();
    }
    let refused = sender.await.unwrap();
    assert!(
        during_delivery >= 5,
        "only {during_delivery} kills landed while webhooks were arriving"
    );
    assert!(
        refused > 0,
        "killing the ingest must have refused some deliveries"
    );

    let started = Instant::now();
    let shared = sim.shared.clone();
    eventually(Duration::from_secs(180), || okta_mismatches(&shared, &want)).await;
    let settled = started.elapsed();
    for p in processes.iter_mut() {
        p.assert_running();
    }

    // Nothing acknowledged is lost: every webhook (each was eventually answered 2xx) is in
    // the orders topic.
    let topics = TopicsConfig::default();
    let sent: BTreeSet<String> = deliveries.iter().map(|w| w.webhook_id.clone()).collect();
    let stored = webhook_ids_in(&bootstrap, &topics.orders);
    let missing: Vec<&String> = sent.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in Kafka: {missing:?}"
    );
    assert_eq!(
        testkit::topic::count(&bootstrap, &topics.okta_dlq),
        0,
        "kills are transient faults: nothing may be dead-lettered"
    );
    eprintln!(
        "{:?}: {} webhooks, {} refused deliveries, 10 kills ({during_delivery} during delivery), \
         exact {:.1} s after the last kill",
        broker.kind(),
        deliveries.len(),
        refused,
        settled.as_secs_f64()
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(&log_dir);
}
