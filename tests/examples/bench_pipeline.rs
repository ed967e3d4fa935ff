//! End-to-end latency and throughput of the whole pipeline, in one process: the broker
//! (`TIERFLOW_TEST_BROKER`, default the embedded mock), ingest, segmenter, Okta writer, and the Okta simulator unthrottled.
//!
//! Signed `orders/paid` webhooks, one per customer (so each webhook maps to exactly one Okta
//! profile update), are due at RATE per second for SECONDS over 32 connections; each is sent at
//! its due time or, when its connection still waits for an earlier answer, as soon as that
//! answer arrives (so a slow ingest lowers the achieved rate, reported as accepted/s).
//! Latency is from the ingest's 2xx (accept) to the simulator receiving that customer's
//! `updateUser` (applied in Okta). After the run, the writer's remaining lag says whether the
//! rate was sustained.
//!
//! `cargo run --release -p tests --example bench_pipeline [-- RATE SECONDS]` (default 1000 60);
//! `BENCH_CLIENT=k=v,k=v` sets librdkafka properties on every service's clients;
//! `BENCH_RUNS=N` repeats it N times (default 3), each on a fresh broker and pipeline, and
//! prints the medians with their ranges.
//! `TIERFLOW_TEST_BROKER=kafka` runs against an Apache Kafka node it starts (topics made as
//! production makes them; see `testkit::broker`); `BENCH_BROKERS=host:port` against any broker
//! whose topics exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One run's figures (latencies in ms).
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Webhooks answered 2xx per second of the send phase: below the offered rate when the
    /// ingest's answers slow the 32 connections down (each waits for its previous answer).
    accepted_per_s: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    refused: u64,
    applied: usize,
    accepted: usize,
    drain_s: f64,
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=warn` shows the services' logs (off by default: they would cost CPU).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let rate: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut results = Vec::new();
    for i in 1..=runs {
        let r = run(rate, seconds).await;
        println!("run {i}/{runs}: {r:?}");
        results.push(r);
    }
    let median = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (lo, hi) = (v[0], v[v.len() - 1]);
        // Whole milliseconds and counts; seconds (the drain time) to a tenth.
        let digits = usize::from(hi < 100.0 && v.iter().any(|x| x.fract() != 0.0));
        format!("{:.digits$} [{lo:.digits$}-{hi:.digits$}]", v[v.len() / 2])
    };
    println!(
        "{rate}/s for {seconds} s, {runs} runs, medians [range]: accepted {}/s; p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; not 2xx {}; applied {} of {}; drained {} s after sending",
        median(|r| r.accepted_per_s),
        median(|r| r.p50),
        median(|r| r.p90),
        median(|r| r.p99),
        median(|r| r.max),
        median(|r| r.refused as f64),
        median(|r| r.applied as f64),
        median(|r| r.accepted as f64),
        median(|r| r.drain_s),
    );
}

async fn run(rate: f64, seconds: u64) -> Run {
    let n = (rate * seconds as f64) as u64;
    let (_broker, bootstrap) = match std::env::var("BENCH_BROKERS") {
        Ok(b) => (None, b),
        Err(_) => {
            let b = testkit::Broker::from_env(6);
            let s = b.bootstrap_servers();
            (Some(b), s)
        }
    };
    let pipeline = start_pipeline(&bootstrap, |s| {
        s.for_writer.okta.max_concurrency = 64;
        s.for_writer.okta_writer.max_customers_in_flight = 256;
        if let Ok(ms) = std::env::var("BENCH_FETCH_WAIT_MS") {
            for client in [
                &mut s.for_segmenter.kafka.client,
                &mut s.for_writer.kafka.client,
            ] {
                client.insert("fetch.wait.max.ms".into(), toml::Value::String(ms.clone()));
            }
        }
        // `BENCH_CLIENT=linger.ms=20,...`: librdkafka properties for every service's clients.
        for pair in std::env::var("BENCH_CLIENT").unwrap_or_default().split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                for client in [
                    &mut s.for_ingest.kafka.client,
                    &mut s.for_segmenter.kafka.client,
                    &mut s.for_writer.kafka.client,
                ] {
                    client.insert(k.trim().into(), toml::Value::String(v.trim().into()));
                }
            }
        }
    })
    .await;
    // Keep every request in the simulator's log (latency is read from it).
    pipeline.sim.config.lock().unwrap().log_capacity = 50_000_000;
    let first_customer = 1_000_000u64;
    for c in 0..n {
        pipeline
            .sim
            .add_user(&okta_sim::SeedUser {
                login: email(first_customer + c),
                email: Some(email(first_customer + c)),
                ..Default::default()
            })
            .unwrap();
    }
    // Let both consumer groups join (the mock broker takes ~3 s) before measuring.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let webhooks: Vec<loadgen::Webhook> = (0..n)
        .map(|i| {
            let v = OrderVersion {
                order_id: 50_000_000 + i,
                customer: Some(first_customer + i),
                cents: 5_000 + (i % 90_000) as i64,
                second: 10,
                status: "paid",
                cancelled: false,
                test: false,
                deleted: false,
            };
            loadgen::Webhook::signed(
                v.topic(),
                SHOP,
                &format!("bench-{i}"),
                SECRET.as_bytes(),
                v.body(),
            )
        })
        .collect();
    let webhooks = Arc::new(webhooks);
    let accepted: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let connections = 32u64;
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let (webhooks, accepted) = (webhooks.clone(), accepted.clone());
        let addr = pipeline.endpoints.webhooks;
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = conn;
            let mut refused = 0u64;
            while i < n {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let w = &webhooks[i as usize];
                let mut req = http
                    .post(format!("http://{addr}/webhooks/shopify"))
                    .body(w.body.clone());
                for (k, v) in w.headers() {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        accepted
                            .lock()
                            .unwrap()
                            .insert(email(first_customer + i), now_ms());
                    }
                    _ => refused += 1,
                }
                i += connections;
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let send_took = started.elapsed();
    // Writer lag right after the send phase: ~0 if the rate was sustained end to end.
    let lag_at_end = metric_sum(
        pipeline.endpoints.writer_admin,
        "kafka_consumergroup_lag_sum",
    )
    .await;
    let drain_started = Instant::now();
    let ids: HashMap<String, String> = pipeline.sim.logins_by_id();
    let accepted = accepted.lock().unwrap().clone();
    let mut applied: HashMap<String, u64> = HashMap::new();
    while applied.len() < accepted.len() && drain_started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for r in pipeline.sim.requests() {
            if r.operation == "updateUser" && r.status == 200 {
                let id = r.uri.rsplit('/').next().unwrap_or_default().to_owned();
                if let Some(login) = ids.get(&id) {
                    applied.entry(login.clone()).or_insert(r.at_ms);
                }
            }
        }
    }
    let drain = drain_started.elapsed();
    let mut lat: Vec<f64> = accepted
        .iter()
        .filter_map(|(login, at)| Some(applied.get(login)?.saturating_sub(*at) as f64))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{rate}/s for {seconds} s ({n} webhooks, sent in {:.1} s; {refused} not 2xx): accept -> applied in Okta p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {} applied; writer lag at end of sending {lag_at_end:.0} (metric refreshes every 5 s), drained {:.1} s later",
        send_took.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0),
        applied.len(),
        accepted.len(),
        drain.as_secs_f64()
    );
    pipeline.stop().await.unwrap();
    Run {
        accepted_per_s: accepted.len() as f64 / send_took.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p90: pct(&lat, 0.9),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or(0.0),
        refused,
        applied: applied.len(),
        accepted: accepted.len(),
        drain_s: drain.as_secs_f64(),
    }
}
