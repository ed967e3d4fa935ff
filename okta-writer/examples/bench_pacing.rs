//! Pacing, measured: `burst` (a window's share spent as fast as requests come) against `spread`
//! (released evenly over the window), for a tier change arriving mid-window while a backlog
//! drains; and the writer's drain forecast against the drain it then measures.
//!
//! Per round and mode: a fresh mock broker and simulator whose `updateUser` bucket allows LIMIT
//! per WINDOW (the writer's share is half, less the 5% margin), SPEND + TIERS customers warmed
//! (first update applied, user id cached), then SPEND spend-only updates at once and, while they
//! drain, one tier change every GAP (so they land at every point of the windows). Tier-change
//! latency is from its production to the simulator seeing its `assignUserToGroup`. The forecast
//! is `tierflow_okta_writer_drain_forecast_seconds{bucket="users_update"}` read 1 s after the
//! backlog was produced; the measured drain is from that moment until Okta holds every update.
//!
//! `cargo run --release -p okta-writer --example bench_pacing [-- ROUNDS]` (default 2)

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use okta_sim::{Bucket, SimConfig};
use okta_writer::limiter::Pacing;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WINDOW: Duration = Duration::from_secs(2);
const LIMIT: u32 = 40;
const SPEND: u64 = 150;
const TIERS: u64 = 15;
const GAP: Duration = Duration::from_millis(900);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&v, 0.5)
}

/// (tier-change latencies in ms, sorted; forecast s; measured drain s).
async fn run(pacing: Pacing) -> (Vec<f64>, f64, f64) {
    let broker = Broker::embedded(3);
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(
        SimConfig {
            window: WINDOW,
            limits: BTreeMap::from([(Bucket::UsersUpdate, LIMIT)]),
            log_capacity: 1_000_000,
            ..SimConfig::default()
        },
        SPEND + TIERS,
    )
    .await;
    let mut s = settings(&bootstrap, &sim.base_url(), "bench-pacing");
    s.okta.pacing = pacing;
    s.okta.max_concurrency = 32;
    s.okta_writer.max_customers_in_flight = 64;
    let writer = start(s, &bootstrap).await;
    let warm: Vec<_> = (0..SPEND + TIERS)
        .map(|c| update(c, 20_000, 1, None))
        .collect();
    produce(&bootstrap, &warm).await;
    wait_all(&sim, &warm).await;
    tokio::time::sleep(WINDOW).await;
    sim.shared.clear_requests();

    let backlog: Vec<_> = (0..SPEND)
        .map(|c| update(c, 20_100, 2, Some("Active")))
        .collect();
    produce(&bootstrap, &backlog).await;
    let producing = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            let mut produced = Vec::new();
            for i in 0..TIERS {
                tokio::time::sleep(GAP).await;
                let u = update(SPEND + i, 60_000, 2, Some("Active"));
                produced.push((email(SPEND + i), now_ms()));
                produce(&bootstrap, &[u]).await;
            }
            produced
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let forecast = writer
        .metric("tierflow_okta_writer_drain_forecast_seconds{bucket=\"users_update\"}")
        .await;
    let measuring = Instant::now();
    let produced = producing.await.unwrap();
    let finals: Vec<_> = backlog
        .iter()
        .cloned()
        .chain((0..TIERS).map(|i| update(SPEND + i, 60_000, 2, Some("Active"))))
        .collect();
    wait_all(&sim, &finals).await;
    let drained = measuring.elapsed().as_secs_f64();
    writer.stop().await;

    let login_of: HashMap<String, String> = sim.shared.logins_by_id();
    let mut assigned: HashMap<String, u64> = HashMap::new();
    for r in sim.shared.requests() {
        if r.operation != "assignUserToGroup" || r.status != 204 {
            continue;
        }
        if let Some(login) = r
            .uri
            .split(['/', '?'])
            .find(|s| s.starts_with("00u"))
            .and_then(|id| login_of.get(id))
        {
            assigned.entry(login.clone()).or_insert(r.at_ms);
        }
    }
    let mut latency: Vec<f64> = produced
        .iter()
        .map(|(login, at)| assigned[login].saturating_sub(*at) as f64)
        .collect();
    latency.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (latency, forecast, drained)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    println!(
        "updateUser {LIMIT} per {WINDOW:?} window (writer's share {}); {SPEND} spend-only updates at once, a tier change every {GAP:?} while they drain",
        (f64::from(LIMIT) * 0.5 * 0.95).floor()
    );
    let mut results: BTreeMap<&str, Vec<[f64; 4]>> = BTreeMap::new();
    for round in 0..rounds {
        let modes = if round % 2 == 0 {
            [Pacing::Burst, Pacing::Spread]
        } else {
            [Pacing::Spread, Pacing::Burst]
        };
        for pacing in modes {
            let (latency, forecast, drained) = run(pacing).await;
            let name = match pacing {
                Pacing::Burst => "burst",
                Pacing::Spread => "spread",
            };
            let row = [
                percentile(&latency, 0.5),
                percentile(&latency, 0.99),
                forecast,
                drained,
            ];
            println!(
                "round {round} {name:<6}: tier change p50 {:>5.0} ms p99 {:>5.0} ms | forecast {:>5.1} s, drained in {:>5.1} s",
                row[0], row[1], row[2], row[3]
            );
            results.entry(name).or_default().push(row);
        }
    }
    let med = |mode: &str, i: usize| median(results[mode].iter().map(|r| r[i]).collect());
    println!("| pacing | tier change p50 | p99 | forecast | measured drain |");
    println!("|---|---|---|---|---|");
    for mode in ["burst", "spread"] {
        println!(
            "| {mode} | {:.0} ms | {:.0} ms | {:.1} s | {:.1} s |",
            med(mode, 0),
            med(mode, 1),
            med(mode, 2),
            med(mode, 3)
        );
    }
    println!(
        "tier change latency, burst / spread: p50 {:.1}x, p99 {:.1}x",
        med("burst", 0) / med("spread", 0),
        med("burst", 1) / med("spread", 1)
    );
}
