//! Benchmark: `ingest backfill` from a completed bulk operation's JSONL to acknowledged records
//! (status poll, download, parse, REST rendering, key, publish, checkpoints),
//! beside a plain producer sending the same records (same bodies, keys, producer settings,
//! 512 in flight) in the same run. Rounds alternate the two; medians are printed.
//!
//! `cargo run --release -p ingest --example bench_backfill -- [ORDERS] [ROUNDS]`
//! (defaults 50,000 and 3). The broker is `TIERFLOW_TEST_BROKER` (`kafka` starts one Apache
//! Kafka node with scripts/kafka.py; default: librdkafka's mock cluster).

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::ShopifyTopic;
use shopify_sim::{SimConfig, SimCustomer, SimHandle, SimOrder};

const SHOP: &str = "bench.myshopify.com";
const TOKEN: &str = "shpat_bench";

fn orders(n: u64) -> Vec<SimOrder> {
    let base = chrono::Utc::now() - chrono::Duration::days(400);
    (0..n)
        .map(|i| SimOrder {
            id: 1_000_000 + i,
            name: format!("#{}", 1000 + i),
            email: Some(format!("c{}@example.com", i / 3)),
            customer: Some(SimCustomer {
                id: 5_000_000 + i / 3,
                email: Some(format!("c{}@example.com", i / 3)),
                tags: vec!["vip".into()],
                marketing_state: Some("SUBSCRIBED".into()),
            }),
            created_at: base + chrono::Duration::minutes(i as i64),
            updated_at: base + chrono::Duration::minutes(i as i64 + 5),
            cancelled_at: None,
            test: false,
            financial_status: "PAID".into(),
            total: format!("{}.{:02}", i % 500, i % 100),
            currency: "USD".into(),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    let n: u64 = argv.next().map_or(Ok(50_000), |a| a.parse())?;
    let rounds: usize = argv.next().map_or(Ok(3), |a| a.parse())?;
    let broker = testkit::Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let mut config = SimConfig::new(SHOP, TOKEN);
    config.bulk_duration = Duration::from_millis(100);
    config.cost_bucket = 1e9;
    let sim = SimHandle::start(config).await?;
    let shop = orders(n);
    sim.upsert_orders(shop.clone());

    let mut settings = ingest::config::Settings::default();
    settings.kafka.brokers = Some(bootstrap.clone());
    settings.shopify.shops.insert(
        SHOP.into(),
        ingest::config::ShopSecrets {
            admin_access_token: Some(secrecy::SecretString::from(TOKEN)),
            admin_api_url: Some(sim.base_url()),
            ..Default::default()
        },
    );
    // The plain producer: the backfill's producer settings, the same records.
    let defaults = ingest::publisher::defaults(
        Duration::from_secs(30),
        ingest::backfill::MAX_IN_FLIGHT,
        2 * 1024 * 1024,
    );
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let producer: FutureProducer =
        service_runtime::kafka::acked_producer_config(&settings.kafka, &bootstrap, &defaults)?
            .create()?;
    let records: Vec<(String, Vec<u8>)> = shop
        .iter()
        .map(|o| {
            let body = o.webhook_body().into_bytes();
            let key = schemas::record_key(SHOP, ShopifyTopic::OrdersUpdated, &body)
                .expect("a keyable order")
                .to_string();
            (key, body)
        })
        .collect();

    let (mut backfill, mut plain) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = tempfile::tempdir()?;
        let args = ingest::backfill::BackfillArgs {
            shop: SHOP.into(),
            since: None,
            execute: true,
            state_dir: dir.path().to_owned(),
            poll_interval: Duration::from_millis(20),
            accept_recent_only: false,
            chunk: 2000,
            progress: false,
            tiers_wait: None,
        };
        // The simulator renders the operation's result when it is created (its speed is not
        // Shopify's): a dry run first makes it, untimed; the timed run reuses it and does
        // what the backfill does (status, download, parse, render, publish, checkpoint).
        ingest::backfill::run(
            &settings,
            None,
            &ingest::backfill::BackfillArgs {
                execute: false,
                ..args.clone()
            },
        )
        .await?;
        let started = Instant::now();
        let summary = ingest::backfill::run(&settings, Some(&bootstrap), &args).await?;
        let b = summary.published as f64 / started.elapsed().as_secs_f64();
        anyhow::ensure!(summary.published == n, "published {}", summary.published);

        let started = Instant::now();
        let acked = futures::stream::iter(records.iter().map(|(key, body)| {
            producer.send(
                FutureRecord::to("shopify.orders").key(key).payload(body),
                Duration::from_secs(30),
            )
        }))
        .buffer_unordered(512)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
        let p = acked as f64 / started.elapsed().as_secs_f64();
        anyhow::ensure!(acked as u64 == n, "plain producer acked {acked}");
        println!("round {round}: backfill {b:.0} orders/s, plain producer {p:.0} records/s");
        backfill.push(b);
        plain.push(p);
    }
    let (b, p) = (median(backfill.clone()), median(plain.clone()));
    let ratios: Vec<String> = backfill
        .iter()
        .zip(&plain)
        .map(|(b, p)| format!("{:.2}", b / p))
        .collect();
    println!(
        "{:?}, {n} orders: backfill median {b:.0}/s, plain producer median {p:.0}/s, ratio {:.2} (per round {})",
        broker.kind(),
        b / p,
        ratios.join(", ")
    );
    Ok(())
}
