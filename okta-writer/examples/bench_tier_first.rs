//! Tier changes first, measured: a flash sale's backlog under a tight `updateUser` bucket, in
//! arrival order and with `tier_changes_first`, alternating in the same run.
//!
//! Per round and mode: a fresh mock cluster and simulator (`updateUser` LIMIT per 1 s window;
//! the writer's share is half), SPEND + TIERS known customers (their first update applied and
//! cached before measuring), then one burst: SPEND spend-only updates with a tier change for
//! another customer after every SPEND/TIERS of them (the order a flash sale's webhooks
//! interleave them). Latency is from the burst's production to the Okta call that shows the
//! change: `assignUserToGroup` for a tier change, `updateUser` for a spend-only update.
//!
//! `cargo run --release -p okta-writer --example bench_tier_first [-- ROUNDS]` (default 3)

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use okta_sim::{Bucket, SimConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMIT: u32 = 60;
const SPEND: u64 = 300;
const TIERS: u64 = 30;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&v, 0.5)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One measured run: (tier-change latencies, spend-only latencies, drain time), in ms.
async fn run(tier_changes_first: bool) -> (Vec<f64>, Vec<f64>, f64) {
    let broker = Broker::embedded(3);
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(
        SimConfig {
            window: Duration::from_secs(1),
            limits: BTreeMap::from([(Bucket::UsersUpdate, LIMIT)]),
            log_capacity: 1_000_000,
            ..SimConfig::default()
        },
        SPEND + TIERS,
    )
    .await;
    let mut s = settings(&bootstrap, &sim.base_url(), "bench-tier-first");
    s.okta.max_concurrency = 32;
    s.okta_writer.max_customers_in_flight = 64;
    s.okta_writer.tier_changes_first = tier_changes_first;
    let writer = start(s, &bootstrap).await;

    // Known customers: first update applied, user id and state cached.
    let warm: Vec<_> = (0..SPEND + TIERS)
        .map(|c| update(c, 20_000, 1, None))
        .collect();
    produce(&bootstrap, &warm).await;
    wait_all(&sim, &warm).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.shared.clear_requests();

    let every = SPEND / TIERS;
    let mut burst = Vec::new();
    for c in 0..SPEND {
        burst.push(update(c, 20_100, 2, Some("Active")));
        if (c + 1) % every == 0 {
            burst.push(update(SPEND + c / every, 60_000, 2, Some("Active")));
        }
    }
    let produced = now_ms();
    produce(&bootstrap, &burst).await;
    let drained = wait_all(&sim, &burst).await;
    writer.stop().await;

    let login_of: HashMap<String, String> = sim.shared.logins_by_id();
    let tier_logins: Vec<String> = (SPEND..SPEND + TIERS).map(email).collect();
    let mut first_seen: HashMap<(String, &str), u64> = HashMap::new();
    for r in sim.shared.requests() {
        let wanted = match r.operation.as_str() {
            "assignUserToGroup" if r.status == 204 => "tier",
            "updateUser" if r.status == 200 => "spend",
            _ => continue,
        };
        let Some(login) = r
            .uri
            .split(['/', '?'])
            .find(|s| s.starts_with("00u"))
            .and_then(|id| login_of.get(id))
        else {
            continue;
        };
        first_seen
            .entry((login.clone(), wanted))
            .and_modify(|t| *t = (*t).min(r.at_ms))
            .or_insert(r.at_ms);
    }
    let latency = |login: &String, kind| {
        first_seen
            .get(&(login.clone(), kind))
            .map(|t| t.saturating_sub(produced) as f64)
    };
    let mut tier: Vec<f64> = tier_logins
        .iter()
        .filter_map(|l| latency(l, "tier"))
        .collect();
    let mut spend: Vec<f64> = (0..SPEND)
        .map(email)
        .filter_map(|l| latency(&l, "spend"))
        .collect();
    assert_eq!(tier.len() as u64, TIERS, "every tier change was seen");
    assert_eq!(
        spend.len() as u64,
        SPEND,
        "every spend-only update was seen"
    );
    tier.sort_by(|a, b| a.partial_cmp(b).unwrap());
    spend.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (tier, spend, drained.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!(
        "updateUser {LIMIT}/s (writer's share {}/s); burst of {SPEND} spend-only updates with {TIERS} tier changes interleaved",
        LIMIT / 2
    );
    // mode → per round: (tier p50, tier p99, spend p50, spend p99, drained s)
    let mut results: BTreeMap<&str, Vec<[f64; 5]>> = BTreeMap::new();
    for round in 0..rounds {
        // Alternate which mode goes first, so drift in the machine's speed hits both.
        let modes = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for first in modes {
            let (tier, spend, drained) = run(first).await;
            let name = if first { "tier_first" } else { "arrival" };
            let row = [
                percentile(&tier, 0.5),
                percentile(&tier, 0.99),
                percentile(&spend, 0.5),
                percentile(&spend, 0.99),
                drained,
            ];
            println!(
                "round {round} {name:<10}: tier change p50 {:>6.0} ms p99 {:>6.0} ms | spend-only p50 {:>6.0} ms p99 {:>6.0} ms | drained {:.1} s",
                row[0], row[1], row[2], row[3], row[4]
            );
            results.entry(name).or_default().push(row);
        }
    }
    let med = |mode: &str, i: usize| median(results[mode].iter().map(|r| r[i]).collect());
    for mode in ["arrival", "tier_first"] {
        println!(
            "median {mode:<10}: tier change p50 {:>6.0} ms p99 {:>6.0} ms | spend-only p50 {:>6.0} ms p99 {:>6.0} ms | drained {:.1} s",
            med(mode, 0), med(mode, 1), med(mode, 2), med(mode, 3), med(mode, 4)
        );
    }
    println!(
        "tier change latency, arrival / tier_first: p50 {:.1}x, p99 {:.1}x; spend-only p50 {:.2}x",
        med("arrival", 0) / med("tier_first", 0),
        med("arrival", 1) / med("tier_first", 1),
        med("arrival", 2) / med("tier_first", 2),
    );
}
