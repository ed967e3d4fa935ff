//! The pipeline as three processes (the real `ingest`, `segmenter` and `okta-writer` binaries)
//! while each is `kill -9`ed at random points and started again, under a stream of webhooks
//! delivered the way Shopify does (retried until answered 2xx). Afterwards the Okta
//! simulator's state equals the independent reference, every acknowledged webhook is in the
//! orders topic, and nothing was dead-lettered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::broker::{free_port, Kind, TestBroker};
use e2e::services::{Process, Service, Wiring};
use e2e::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message};
use service_runtime::config::TopicsConfig;
use service_runtime::kafka::{current_ranges, read_ranges};

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
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "e2e-kills-audit")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let ranges = current_ranges(&consumer, topic, 0..PARTITIONS).unwrap();
    let mut ids = BTreeSet::new();
    read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(30),
        None,
        |m| {
            if let Some(h) = m.headers() {
                for h in h.iter() {
                    if h.key == schemas::headers::SHOPIFY_WEBHOOK_ID {
                        ids.insert(String::from_utf8_lossy(h.value.unwrap_or_default()).into());
                    }
                }
            }
            Ok(())
        },
    )
    .unwrap();
    ids
}

fn records_in(bootstrap: &str, topic: &str) -> u64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    current_ranges(&consumer, topic, 0..PARTITIONS)
        .unwrap()
        .iter()
        .map(|r| r.len)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_killed_at_random_points_and_restarted_the_final_state_is_exact() {
    let seed = 41;
    let broker = TestBroker::start(PARTITIONS);
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
    };
    let mut processes: Vec<Process> = Service::ALL
        .iter()
        .map(|s| Process::start(*s, &wiring))
        .collect();

    // Tansu 0.6.0's group coordinator strands partitions when a restarted consumer joins
    // while its killed predecessor is still a member: the group forms with an empty
    // assignment and no rebalance follows when the dead member expires (2 of 3 runs here;
    // the segmenter group's stored state showed one member, `assignments: {}`, offsets stuck).
    // So on Tansu a killed consumer stays down past its session timeout (6 s) and rejoins an
    // empty group; the mock cluster gets the overlapping restarts. The ingest is not a group
    // member and restarts at once on both.
    let consumer_down_at_least = match broker.kind() {
        Kind::Tansu => Duration::from_secs(7),
        Kind::Embedded => Duration::ZERO,
    };
    // Shopify's side: 10 webhooks per tick (250 ms; 600 ms on Tansu so the kills, slower
    // there, still land while webhooks arrive), each retried until it gets a 2xx (connection
    // refused while the ingest is dead, 503 while it cannot reach the broker).
    let tick = match broker.kind() {
        Kind::Tansu => Duration::from_millis(600),
        Kind::Embedded => Duration::from_millis(250),
    };
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

    // Each service is killed three times, in a random order, at random moments, and restarted
    // after a random pause; the kills continue after the last webhook while the consumers
    // drain.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut plan: Vec<usize> = (0..3).flat_map(|_| 0..processes.len()).collect();
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
        let mut down = Duration::from_millis(rng.random_range(0..1000));
        if processes[i].service != Service::Ingest {
            down += consumer_down_at_least;
        }
        tokio::time::sleep(down).await;
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
        records_in(&bootstrap, &topics.okta_dlq),
        0,
        "kills are transient faults: nothing may be dead-lettered"
    );
    eprintln!(
        "{} webhooks, {} refused deliveries, 9 kills ({during_delivery} during delivery), \
         exact {:.1} s after the last kill",
        deliveries.len(),
        refused,
        settled.as_secs_f64()
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(&log_dir);
}
