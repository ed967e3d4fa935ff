//! Restore end to end from Apache Kafka: a changelog holding CUSTOMERS customers (ORDERS
//! orders each; JSON records as the segmenter writes them, ~250 B) on one Kafka KRaft node
//! (scripts/kafka.py, via testkit), rebuilt by the segmenter's own `changelog::restore_partitions` (what a
//! new partition owner runs), beside a plain consumer reading the same records without
//! decoding them (the fetch floor), in the same run.
//!
//! `cargo run --release -p segmenter --example bench_restore [-- CUSTOMERS [ORDERS]]`
//! (default 1000000 1). `BENCH_BROKERS=host:port` uses a running broker whose changelog topic
//! exists and is empty; `BENCH_PARTITIONS` (default 12) sets the partitions otherwise.

mod common;

use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use segmenter::changelog::OrderRecord;
use service_runtime::config::TopicsConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-restore")
        .set("enable.auto.commit", "false");
    c
}

fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    customers: u64,
    orders: u64,
) -> (u64, f64, f64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for (c, r) in common::changelog(customers, orders) {
        let key = OrderRecord::key(&r.shop, r.customer_id, r.order_id);
        let value = serde_json::to_vec(&r).expect("serialises");
        bytes += value.len() as u64;
        // A customer's orders share a partition, as the segmenter writes them (the
        // changelog partition is the customer's orders partition).
        let mut record = BaseRecord::<str, [u8]>::to(topic)
            .partition((c % partitions as u64) as i32)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert_eq!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "{e}"
                    );
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        records += 1;
    }
    producer.flush(Duration::from_secs(300)).expect("flushed");
    (
        records,
        bytes as f64 / records as f64,
        records as f64 / started.elapsed().as_secs_f64(),
    )
}

/// Read every record of `topic` with no decoding: the fetch floor.
fn plain_read(bootstrap: &str, topic: &str, partitions: i32) -> (u64, f64) {
    let consumer: BaseConsumer = client(bootstrap).create().expect("consumer");
    let ranges =
        service_runtime::kafka::current_ranges(&consumer, topic, 0..partitions).expect("ranges");
    let started = Instant::now();
    let n = service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(60),
        None,
        |_| Ok(()),
    )
    .expect("read");
    (n, started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let customers: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let orders: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let partitions: i32 = std::env::var("BENCH_PARTITIONS")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(12);
    let topic = TopicsConfig::default().ledger_changelog;
    let (bootstrap, _broker) = match std::env::var("BENCH_BROKERS") {
        Ok(b) => (b, None),
        Err(_) => {
            let broker = testkit::Broker::kafka(1, partitions);
            (broker.bootstrap_servers(), Some(broker))
        }
    };
    let (records, mean, produced) = produce(&bootstrap, &topic, partitions, customers, orders);
    println!(
        "changelog: {records} records ({mean:.0} B mean JSON, lz4 batches), {customers} customers, {partitions} partitions, Apache Kafka at {bootstrap}; produced at {produced:.0} records/s"
    );
    let (read, plain_s) = plain_read(&bootstrap, &topic, partitions);
    assert_eq!(read, records);
    let all: Vec<i32> = (0..partitions).collect();
    let started = Instant::now();
    let (ledgers, restored) =
        segmenter::changelog::restore_partitions(&client(&bootstrap), &topic, &all)?;
    let restore_s = started.elapsed().as_secs_f64();
    let held: usize = ledgers
        .values()
        .map(segmenter::ledger::Ledger::customers)
        .sum();
    assert_eq!(held as u64, customers);
    println!(
        "plain consumer (fetch only):        {plain_s:7.2} s  {:>9.0} records/s",
        read as f64 / plain_s
    );
    println!(
        "segmenter restore (fetch + decode + apply): {restore_s:7.2} s  {:>9.0} records/s  ({:.2} s per million customers)",
        restored as f64 / restore_s,
        restore_s / (customers as f64 / 1e6)
    );
    println!("restore / plain consumer: {:.2}", plain_s / restore_s);
    Ok(())
}
