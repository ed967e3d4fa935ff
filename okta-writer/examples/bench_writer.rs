//! The Okta writer's costs and speed against okta-sim, with the embedded mock broker, in one
//! process:
//!
//! 1. Okta calls per applied update: first contact, spend-only change, tier change (user id
//!    cached), and a stream of several events per customer, next to the replaced template's
//!    per-event cost (one search, one update, two group calls: measured by replaying the same
//!    stream that way against a second simulator at the same time).
//! 2. End-to-end apply latency with no throttling: updates produced at a steady rate; latency
//!    is from the record's timestamp to the customer's last Okta call arriving at the simulator.
//! 3. Budget utilisation under a backlog: `updateUser` limited to L per 1 s window; requests per
//!    full window against the writer's share.
//!
//! `cargo run --release -p okta-writer --example bench_writer [-- CUSTOMERS]` (default 2000)

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use okta_sim::{Bucket, SimConfig};
use schemas::SegmentUpdate;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn quiet(mut s: okta_writer::config::Settings) -> okta_writer::config::Settings {
    s.okta.max_concurrency = 32;
    s.okta_writer.max_customers_in_flight = 128;
    if let Ok(ms) = std::env::var("BENCH_FETCH_WAIT_MS") {
        s.kafka
            .client
            .insert("fetch.wait.max.ms".into(), toml::Value::String(ms));
    }
    s
}

fn unthrottled() -> SimConfig {
    SimConfig {
        max_concurrency: 200,
        log_capacity: 10_000_000,
        ..SimConfig::unthrottled()
    }
}

/// Calls made since the last clear, per applied update.
fn calls_per(sim: &okta_sim::SimHandle, updates: usize) -> f64 {
    let n = sim.shared.requests().len();
    sim.shared.clear_requests();
    n as f64 / updates as f64
}

/// The template's way: per event, search the user, update the profile, add to the tier's group,
/// remove from the previous one. Returns the calls made.
async fn template_calls(
    base: &str,
    updates: &[SegmentUpdate],
    groups: &HashMap<String, String>,
) -> usize {
    let http = reqwest::Client::new();
    let mut calls = 0;
    for u in updates {
        let email = u.email.clone().unwrap();
        let found: serde_json::Value = http
            .get(format!("{base}/api/v1/users"))
            .query(&[("search", format!("profile.email eq \"{email}\""))])
            .header("authorization", "SSWS sim-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = found[0]["id"].as_str().unwrap().to_owned();
        let spent: f64 = u.total_spent.to_string().parse().unwrap();
        http.post(format!("{base}/api/v1/users/{id}"))
            .header("authorization", "SSWS sim-token")
            .json(&serde_json::json!({"profile": {"shopify_total_spent": spent, "shopify_orders_count": u.orders_count}}))
            .send()
            .await
            .unwrap();
        let new = &groups[&u.tier.as_ref().unwrap().okta_group];
        http.put(format!("{base}/api/v1/groups/{new}/users/{id}"))
            .header("authorization", "SSWS sim-token")
            .send()
            .await
            .unwrap();
        calls += 3;
        if let Some(prev) = &u.previous_tier {
            let old = &groups[&prev.okta_group];
            http.delete(format!("{base}/api/v1/groups/{old}/users/{id}"))
                .header("authorization", "SSWS sim-token")
                .send()
                .await
                .unwrap();
            calls += 1;
        }
    }
    calls
}

#[tokio::main]
async fn main() {
    let customers: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();

    // 1. Calls per update.
    let sim = sim(unthrottled(), customers).await;
    let writer = start(
        quiet(settings(&bootstrap, &sim.base_url(), "bench-calls")),
        &bootstrap,
    )
    .await;
    let first: Vec<_> = (0..customers)
        .map(|c| update(c, 5_000, 1, Some("Potential")))
        .collect();
    produce(&bootstrap, &first).await;
    let took = wait_all(&sim, &first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cold = calls_per(&sim, first.len());
    println!("first contact (tier change):  {cold:.2} calls/update  ({customers} customers in {:.2} s, {:.0} updates/s)", took.as_secs_f64(), customers as f64 / took.as_secs_f64());
    let spend: Vec<_> = (0..customers)
        .map(|c| update(c, 6_000, 2, Some("New")))
        .collect();
    produce(&bootstrap, &spend).await;
    let took = wait_all(&sim, &spend).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "spend-only, cached user:      {:.2} calls/update  ({:.0} updates/s)",
        calls_per(&sim, spend.len()),
        customers as f64 / took.as_secs_f64()
    );
    let tier: Vec<_> = (0..customers)
        .map(|c| update(c, 20_000, 3, Some("New")))
        .collect();
    produce(&bootstrap, &tier).await;
    let took = wait_all(&sim, &tier).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "tier change, cached user:     {:.2} calls/update  ({:.0} updates/s)",
        calls_per(&sim, tier.len()),
        customers as f64 / took.as_secs_f64()
    );
    // A flash-sale stream: 5 orders per customer arriving together.
    let mut stream = Vec::new();
    let mut finals = Vec::new();
    for c in 0..customers {
        let mut prev = "Active";
        for i in 0..5 {
            let cents = 20_000 + 10_000 * i;
            stream.push(update(c, cents, 4 + i as u64, Some(prev)));
            prev = tier_of(cents);
        }
        finals.push(stream.last().unwrap().clone());
    }
    produce(&bootstrap, &stream).await;
    wait_all(&sim, &finals).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ours = calls_per(&sim, stream.len());
    // The template over the same stream, on its own simulator.
    let baseline = common::sim(unthrottled(), customers).await;
    let groups: HashMap<String, String> = {
        let store = baseline.shared.store.lock().unwrap();
        store
            .groups
            .values()
            .map(|g| (g.name.clone(), g.id.clone()))
            .collect()
    };
    let template =
        template_calls(&baseline.base_url(), &stream, &groups).await as f64 / stream.len() as f64;
    println!("5 events/customer stream:     {ours:.2} calls/event (template: {template:.2}; ratio {:.1}x fewer)", template / ours);
    writer.stop().await;

    // 2. Latency with no throttling: warm customers, one tier change each at a steady rate.
    let rate = 200.0;
    let n = customers.min(2000);
    let lat_sim = common::sim(unthrottled(), n).await;
    let writer = start(
        quiet(settings(&bootstrap, &lat_sim.base_url(), "bench-latency")),
        &bootstrap,
    )
    .await;
    let warm: Vec<_> = (0..n)
        .map(|c| update(c + 1_000_000, 100, 1, Some("Potential")))
        .collect();
    // Customers 1_000_000.. map to logins c1000000..; create them first.
    for c in 0..n {
        lat_sim
            .shared
            .add_user(&okta_sim::SeedUser {
                login: email(c + 1_000_000),
                email: Some(email(c + 1_000_000)),
                groups: vec![group("Potential")],
                ..Default::default()
            })
            .unwrap();
    }
    produce(&bootstrap, &warm).await;
    wait_all(&lat_sim, &warm).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lat_sim.shared.clear_requests();
    let mut produced_at: HashMap<String, u128> = HashMap::new();
    let ids: HashMap<String, String> = lat_sim.shared.logins_by_id();
    // The floor: a plain consumer (own group, same fetch settings) on the same records.
    let floor = {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::Message;
        let mut cfg = rdkafka::ClientConfig::new();
        cfg.set("bootstrap.servers", &bootstrap)
            .set("group.id", "bench-floor")
            .set("auto.offset.reset", "latest");
        if let Ok(ms) = std::env::var("BENCH_FETCH_WAIT_MS") {
            cfg.set("fetch.wait.max.ms", ms);
        }
        let consumer: StreamConsumer = cfg.create().unwrap();
        consumer.subscribe(&["customer.segments"]).unwrap();
        // Join the group before the measured records are produced.
        let _ = tokio::time::timeout(Duration::from_secs(8), consumer.recv()).await;
        let n = n as usize;
        tokio::spawn(async move {
            let mut seen: HashMap<String, u128> = HashMap::new();
            while seen.len() < n {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                if let Some(k) = m.key() {
                    let customer: u64 = String::from_utf8_lossy(k)
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    seen.entry(email(customer)).or_insert(at);
                }
            }
            seen
        })
    };
    let p = producer(&bootstrap);
    let started = Instant::now();
    let mut changes = Vec::new();
    for (i, c) in (0..n).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let u = update(c + 1_000_000, 15_000, 2, Some("New"));
        let value = serde_json::to_vec(&u).unwrap();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        produced_at.insert(email(u.customer_id), now_ms);
        p.send(
            rdkafka::producer::FutureRecord::to("customer.segments")
                .key(&key(&u))
                .payload(&value),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        changes.push(u);
    }
    wait_all(&lat_sim, &changes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last_call: HashMap<String, u64> = HashMap::new();
    for r in lat_sim.shared.requests() {
        let id = r
            .uri
            .split('/')
            .find(|s| s.starts_with("00u"))
            .map(|s| s.split('?').next().unwrap().to_owned());
        if let Some(login) = id.and_then(|i| ids.get(&i)) {
            let e = last_call.entry(login.clone()).or_default();
            *e = (*e).max(r.at_ms);
        }
    }
    let mut lat: Vec<f64> = last_call
        .iter()
        .filter_map(|(login, at)| Some(*at as f64 - *produced_at.get(login)? as f64))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let floor = floor.await.unwrap();
    let mut floor_lat: Vec<f64> = floor
        .iter()
        .filter_map(|(login, at)| Some(*at as f64 - *produced_at.get(login)? as f64))
        .collect();
    floor_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "kafka floor (plain consumer, same records): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&floor_lat, 0.5),
        percentile(&floor_lat, 0.99)
    );
    println!(
        "apply latency, {n} tier changes at {rate}/s, no throttling: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (batch_wait 20 ms included)",
        percentile(&lat, 0.5), percentile(&lat, 0.9), percentile(&lat, 0.99), lat.last().unwrap()
    );
    writer.stop().await;

    // 3. Budget utilisation: updateUser limited to 100 per 1 s window, 600 customers backlog.
    let limit = 100u32;
    let util_sim = common::sim(
        SimConfig {
            window: Duration::from_secs(1),
            limits: BTreeMap::from([(Bucket::UsersUpdate, limit)]),
            log_capacity: 10_000_000,
            ..SimConfig::default()
        },
        0,
    )
    .await;
    let m = 600u64;
    for c in 0..m {
        util_sim
            .shared
            .add_user(&okta_sim::SeedUser {
                login: email(c + 2_000_000),
                email: Some(email(c + 2_000_000)),
                groups: vec![group("Potential")],
                ..Default::default()
            })
            .unwrap();
    }
    let backlog: Vec<_> = (0..m).map(|c| update(c + 2_000_000, 50, 1, None)).collect();
    produce(&bootstrap, &backlog).await;
    let writer = start(
        quiet(settings(&bootstrap, &util_sim.base_url(), "bench-util")),
        &bootstrap,
    )
    .await;
    let took = wait_all(&util_sim, &backlog).await;
    writer.stop().await;
    let log = util_sim.shared.requests();
    let mut per_window: BTreeMap<u64, u32> = BTreeMap::new();
    let mut throttled = 0;
    for r in log.iter().filter(|r| r.operation == "updateUser") {
        *per_window.entry(r.at_ms / 1000).or_default() += 1;
        throttled += usize::from(r.status == 429);
    }
    let counts: Vec<u32> = per_window.values().copied().collect();
    let full = &counts[1..counts.len().saturating_sub(1)];
    let share = f64::from(limit) * 0.5;
    let mut utils: Vec<f64> = full.iter().map(|c| f64::from(*c) / share).collect();
    utils.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "backlog of {m} under updateUser {limit}/s (share 50% = {share}/s, margin 5%): drained in {:.1} s; per full window median {:.0}% of the share (min {:.0}%, max {:.0}%); 429s: {throttled}",
        took.as_secs_f64(),
        100.0 * percentile(&utils, 0.5),
        100.0 * utils.first().copied().unwrap_or(0.0),
        100.0 * utils.last().copied().unwrap_or(0.0),
    );
}
