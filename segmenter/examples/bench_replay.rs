//! Replay throughput from Kafka: the segmenter consuming a backlog of realistic ~7 KB order
//! webhooks from the embedded mock broker, against a plain consumer reading the same backlog
//! (the broker/fetch ceiling), in one process.
//!
//! `cargo run --release -p segmenter --example bench_replay [-- RECORDS]`
//!
//! The mock broker keeps only ~5 MiB per partition, so the topics get 96 partitions to hold
//! the backlog. `BENCH_BROKERS=host:port` runs against a standalone broker instead (e.g.
//! Tansu); its topics `shopify.orders`, `shopify.orders.quarantine`, `customer.segments` and
//! `segmenter.ledger.changelog` must exist with `BENCH_PARTITIONS` partitions (default 96) and
//! be empty. `BENCH_PHASE=produce` only fills the topic and `BENCH_PHASE=replay` only reads
//! it, so a harness can warm the broker in between (bench/replay.py does).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::headers as h;
use service_runtime::config::TopicsConfig;
use service_runtime::kafka::EmbeddedBroker;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn partitions() -> i32 {
    std::env::var("BENCH_PARTITIONS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(96)
}
const SHOP: &str = "bench.myshopify.com";

async fn produce(bootstrap: &str, records: usize) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set(
            "linger.ms",
            std::env::var("BENCH_LINGER_MS").unwrap_or_else(|_| "5".into()),
        )
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::new();
    for (i, spec) in loadgen::payload::OrderStream::new(3, 50_000)
        .take(records)
        .enumerate()
    {
        let body = loadgen::payload::order_body(&spec, SHOP);
        let key = match spec.customer_id {
            Some(c) => format!("{SHOP}/{c}"),
            None => format!("{SHOP}/order/{}", spec.order_id),
        };
        let id = format!("bench-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::SHOPIFY_TOPIC,
                value: Some("orders/updated"),
            })
            .insert(Header {
                key: h::SHOPIFY_SHOP_DOMAIN,
                value: Some(SHOP),
            })
            .insert(Header {
                key: h::SHOPIFY_WEBHOOK_ID,
                value: Some(id.as_str()),
            });
        pending.push(
            producer
                .send_result(
                    FutureRecord::to("shopify.orders")
                        .key(&key)
                        .payload(&body)
                        .headers(headers),
                )
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
        if pending.len() >= 5_000 {
            for p in pending.drain(..) {
                p.await.expect("delivered").expect("produced");
            }
        }
    }
    for p in pending {
        p.await.expect("delivered").expect("produced");
    }
    records as f64 / started.elapsed().as_secs_f64()
}

fn plain_consume(bootstrap: &str, records: usize) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-plain")
        .set(
            "fetch.wait.max.ms",
            std::env::var("BENCH_FETCH_WAIT_MS").unwrap_or_else(|_| "500".into()),
        )
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions() {
        tpl.add_partition_offset("shopify.orders", p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut seen = 0;
    let mut started = None;
    while seen < records {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            m.expect("message");
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    records as f64 / started.expect("some records").elapsed().as_secs_f64()
}

/// One client for every poll: `reqwest::get` builds a client (and loads its TLS roots) per
/// call, which cost ~7% of the CPU the segmenter was being measured on.
async fn records_total(client: &reqwest::Client, admin: std::net::SocketAddr) -> f64 {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("metrics");
    text.text()
        .await
        .expect("metrics body")
        .lines()
        .filter(|l| l.starts_with("tierflow_segmenter_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    let topics = TopicsConfig::default();
    let (bootstrap, _broker, kind) = match std::env::var("BENCH_BROKERS") {
        Ok(b) => (b, None, "standalone broker"),
        Err(_) => {
            let broker = EmbeddedBroker::start_pipeline(&topics, partitions())?;
            (
                broker.bootstrap_servers(),
                Some(broker),
                "embedded mock broker",
            )
        }
    };
    // `BENCH_PHASE=produce` only fills the topic; `BENCH_PHASE=replay` only reads a topic
    // filled before (bench/replay.py warms the broker in between); unset, both.
    let phase = std::env::var("BENCH_PHASE").unwrap_or_default();
    let produced = if phase == "replay" {
        None
    } else {
        Some(produce(&bootstrap, records).await)
    };
    if phase == "produce" {
        println!(
            "produce (idempotent):                {:>9.0} records/s",
            produced.unwrap_or_default()
        );
        return Ok(());
    }
    let b = bootstrap.clone();
    let plain = tokio::task::spawn_blocking(move || plain_consume(&b, records)).await?;

    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut settings = segmenter::config::Settings::load(
        Some(&config),
        std::iter::empty(),
        Some(bootstrap.clone()),
    )?;
    settings.segmenter.admin_listen = "127.0.0.1:0".parse()?;
    settings.segmenter.group_id = "bench-segmenter".into();
    if let Ok(ms) = std::env::var("BENCH_FETCH_WAIT_MS") {
        settings
            .kafka
            .client
            .insert("fetch.wait.max.ms".into(), toml::Value::String(ms));
    }
    if let Ok(n) = std::env::var("BENCH_BATCH") {
        settings.segmenter.batch_size = n.parse()?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = segmenter::Application::build(&settings, &bootstrap).await?;
    let admin = app.admin_addr();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    // Time from the first decided record to the last (the group join is not replay work).
    let mut first: Option<(Instant, f64)> = None;
    let client = reqwest::Client::new();
    let (done_at, done) = loop {
        let n = records_total(&client, admin).await;
        if n > 0.0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= records as f64 {
            break (Instant::now(), n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (t0, n0) = first.expect("progress was seen");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let m = reqwest::get(format!("http://{admin}/metrics"))
            .await?
            .text()
            .await?;
        for l in m.lines().filter(|l| {
            l.starts_with("tierflow_segmenter_restore")
                || l.contains("batch_duration_seconds_sum")
                || l.contains("batch_duration_seconds_count")
        }) {
            eprintln!("{l}");
        }
        eprintln!(
            "first progress {n0} records; took {:?}",
            done_at.duration_since(t0)
        );
    }
    let replay = (done - n0) / done_at.duration_since(t0).as_secs_f64();
    let _ = stop_tx.send(());
    task.await??;
    println!(
        "backlog: {records} orders/* records, ~7 KB each, {} partitions, {kind} ({bootstrap})",
        partitions()
    );
    if let Some(produced) = produced {
        println!("produce (idempotent):                {produced:>9.0} records/s");
    }
    println!(
        "plain consumer, no processing:       {plain:>9.0} records/s  (the broker/fetch ceiling)"
    );
    println!(
        "segmenter replay (decide + produce updates + changelog + commit): {replay:>9.0} records/s"
    );
    println!("segmenter / plain consumer: {:.2}", replay / plain);
    Ok(())
}
