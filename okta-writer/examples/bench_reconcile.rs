//! The reconciler's cost: Okta calls and time per run over CUSTOMERS customers (default
//! 10,000), on a clean org, and with 1% of them edited by hand (a quarter each moved to another
//! tier, put in a second tier, taken out of every tier, or their total overwritten).
//!
//! Setup: the embedded mock cluster, the simulator unthrottled (calls are counted, not paced),
//! the live writer applies every customer's update first and stops (committing), then
//! `reconcile` runs: dry on the clean org, dry on the drifted org, `--execute`, and dry again.
//!
//! `cargo run --release -p okta-writer --example bench_reconcile [-- CUSTOMERS]`

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use okta_sim::SimConfig;
use okta_writer::reconcile::{self, Options};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cents(c: u64) -> i64 {
    // Spread over the four tiers.
    [50, 5_000, 30_000, 90_000][(c % 4) as usize] + (c % 97) as i64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let customers: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("CUSTOMERS is a number"));
    let broker = Broker::embedded(6);
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::unthrottled(), customers).await;
    let mut s = settings(&bootstrap, &sim.base_url(), "bench-reconcile");
    s.okta.max_concurrency = 32;
    s.okta_writer.max_customers_in_flight = 64;
    // The live writer's limiter never holds back against the unthrottled simulator.
    s.okta.rate_limit_share = 1.0;
    let writer = start(s.clone(), &bootstrap).await;
    let finals: Vec<_> = (0..customers)
        .map(|c| update(c, cents(c), 1, Some("Potential")))
        .collect();
    for chunk in finals.chunks(2_000) {
        produce(&bootstrap, chunk).await;
    }
    let applied_in = wait_all(&sim, &finals).await;
    writer.stop().await;
    eprintln!("{customers} customers applied by the live writer in {applied_in:?}");

    let metrics = okta_writer::metrics::Metrics::unregistered();
    s.okta.rate_limit_share = 0.1;
    let applier = okta_writer::applier(&s, metrics.clone()).await.unwrap();
    let run = |execute: bool| {
        let (s, b, a, m) = (&s, &bootstrap, &applier, &metrics);
        async move {
            let started = Instant::now();
            let r = reconcile::run(
                s,
                b,
                a,
                m,
                Options {
                    execute,
                    remove_unknown: false,
                },
            )
            .await
            .unwrap();
            (r, started.elapsed())
        }
    };
    let report = |what: &str, (r, took): &(reconcile::Report, Duration)| {
        let found: u64 = r.found.values().sum();
        let healed: u64 = r.healed.values().sum();
        println!(
            "| {what} | {} | {found} | {healed} | {} | {:.1} | {:.2} s |",
            r.customers,
            r.calls,
            r.calls as f64 * 10_000.0 / r.customers.max(1) as f64,
            took.as_secs_f64()
        );
    };
    println!("| run | customers | drift found | healed | Okta calls | calls per 10,000 customers | time |");
    println!("|---|---|---|---|---|---|---|");
    report("clean org, dry run", &run(false).await);

    // 1% drift, four kinds.
    let drifted = customers / 100;
    {
        let mut store = sim.shared.store.lock().unwrap();
        let gid = |store: &okta_sim::store::Store, t: &str| {
            store.group_by_name(&group(t)).unwrap().id.clone()
        };
        let groups: Vec<String> = TIERS.iter().map(|t| gid(&store, t)).collect();
        for i in 0..drifted {
            let c = i * 97 % customers;
            let uid = store.user(&email(c)).unwrap().id.clone();
            let own = groups[(c % 4) as usize].clone();
            let other = groups[((c + 1) % 4) as usize].clone();
            match i % 4 {
                0 => {
                    store.set_membership(&own, &uid, false).unwrap();
                    store.set_membership(&other, &uid, true).unwrap();
                }
                1 => store.set_membership(&other, &uid, true).unwrap(),
                2 => store.set_membership(&own, &uid, false).unwrap(),
                _ => {
                    let mut patch = serde_json::Map::new();
                    patch.insert("shopify_total_spent".into(), serde_json::json!(1.0));
                    store.update_profile(&email(c), &patch).unwrap();
                }
            }
        }
    }
    report("1% drifted, dry run", &run(false).await);
    report("1% drifted, --execute", &run(true).await);
    let after = run(false).await;
    report("after healing, dry run", &after);
    assert!(
        after.0.found.values().all(|n| *n == 0),
        "{}",
        after.0.render()
    );
}
