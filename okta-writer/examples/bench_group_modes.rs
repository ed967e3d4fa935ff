//! Okta calls per customer change in each `group_assignment` mode, measured in the same run:
//! `calls` (the writer adds and removes memberships) and `rules` (the writer writes the tier
//! attribute; Okta's group rules, made by `okta-writer rules`, move the user).
//!
//! Per mode: the embedded mock broker, `okta-sim` unthrottled (rules evaluated 200 ms after a
//! profile change), CUSTOMERS users in no tier group, and the writer in-process. Three phases,
//! each one update per customer, waited for until Okta (attributes and groups) matches:
//! first contact (a tier), a spend-only change, a tier change. Calls are the simulator's
//! request log per update.
//!
//! `cargo run --release -p okta-writer --example bench_group_modes [-- CUSTOMERS]` (default 1000)

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use okta_sim::SimConfig;
use okta_writer::config::GroupAssignment;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Calls per update in the three phases.
async fn run(mode: GroupAssignment, customers: u64) -> [f64; 3] {
    let broker = Broker::embedded(3);
    let bootstrap = broker.bootstrap_servers();
    let seed = seed_for_rules(customers);
    let sim = okta_sim::SimHandle::start(
        SimConfig {
            rule_delay: Duration::from_millis(200),
            log_capacity: 10_000_000,
            max_concurrency: 200,
            ..SimConfig::unthrottled()
        },
        &seed,
    )
    .await
    .unwrap();
    let mut s = settings(&bootstrap, &sim.base_url(), "bench-modes");
    s.okta.max_concurrency = 32;
    s.okta.rate_limit_share = 1.0;
    s.okta_writer.max_customers_in_flight = 128;
    s.okta.group_assignment = mode;
    // The same attributes in both modes, so only the membership calls differ.
    s.okta.profile_attributes = toml::from_str(
        "shopify_total_spent = \"total_spent\"\nshopify_orders_count = \"orders_count\"\nshopify_tier = \"tier\"",
    )
    .unwrap();
    if mode == GroupAssignment::Rules {
        let applier = okta_writer::applier(&s, okta_writer::metrics::Metrics::unregistered())
            .await
            .unwrap();
        okta_writer::rules::sync(&applier.client, &applier.stores, true)
            .await
            .unwrap();
    }
    sim.shared.clear_requests();
    let writer = start(s, &bootstrap).await;
    let mut out = [0.0; 3];
    let phases = [
        (5_000, 1, None),
        (6_000, 2, Some("New")),
        (20_000, 3, Some("New")),
    ];
    for (i, (cents, orders, previous)) in phases.into_iter().enumerate() {
        let batch: Vec<_> = (0..customers)
            .map(|c| update(c, cents, orders, previous))
            .collect();
        produce(&bootstrap, &batch).await;
        wait_all(&sim, &batch).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        out[i] = sim.shared.requests().len() as f64 / customers as f64;
        sim.shared.clear_requests();
    }
    writer.stop().await;
    out
}

#[tokio::main]
async fn main() {
    let customers: u64 = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().expect("CUSTOMERS is a number"));
    let calls = run(GroupAssignment::Calls, customers).await;
    let rules = run(GroupAssignment::Rules, customers).await;
    println!("| change ({customers} customers) | group_assignment = calls | rules |");
    println!("|---|---|---|");
    for (i, what) in [
        "first contact (lookup, profile, tier)",
        "spend-only change, user id cached",
        "tier change, user id cached",
    ]
    .iter()
    .enumerate()
    {
        println!("| {what} | {:.2} | {:.2} |", calls[i], rules[i]);
    }
}
