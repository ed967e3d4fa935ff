//! Segmenter benchmarks, in-process (no Kafka):
//!
//! - `throughput`: normalise + decide on raw ~7 KB Shopify order bodies, one thread.
//! - `memory`: state size for N customers with M orders each (peak RSS of this process).
//!
//! `cargo run --release -p segmenter --example bench_ledger -- throughput`
//! `cargo run --release -p segmenter --example bench_ledger -- memory`

mod common;

use std::time::Instant;

use rust_decimal::Decimal;
use schemas::ShopifyTopic;
use schemas::TierTable;
use segmenter::ledger::Ledger;
use segmenter::normalize::{normalize, NormalizedOrder};
use segmenter::rules::{decide, RecordMeta, Rules, SpendConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn throughput() {
    let bodies: Vec<Vec<u8>> = loadgen::payload::OrderStream::new(1, 50_000)
        .take(20_000)
        .map(|spec| loadgen::payload::order_body(&spec, "bench.myshopify.com"))
        .collect();
    let mean = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    let rules = Rules::new(TierTable::template(), SpendConfig::default());
    let meta = RecordMeta {
        shop: "bench.myshopify.com",
        topic: ShopifyTopic::OrdersUpdated,
        webhook_id: Some("wh"),
        event_time: "",
        received_at_us: None,
    };
    let mut rates = Vec::new();
    for _ in 0..7 {
        // A fresh ledger per pass: every event is a new order version, never a cheap duplicate.
        let mut ledger = Ledger::new();
        let started = Instant::now();
        let mut updates = 0usize;
        for body in &bodies {
            let event = normalize(ShopifyTopic::OrdersUpdated, body).expect("valid body");
            updates += decide(&rules, &mut ledger, &event, &meta)
                .expect("decidable")
                .updates
                .len();
        }
        let secs = started.elapsed().as_secs_f64();
        rates.push(bodies.len() as f64 / secs);
        std::hint::black_box(updates);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "normalise+decide: {} events/pass x {} passes, {mean} B mean body: median {:.0} events/s (min {:.0}, max {:.0}) on one thread",
        bodies.len(),
        rates.len(),
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

fn memory(customers: u64, per_customer: u64) {
    let rules = Rules::new(TierTable::template(), SpendConfig::default());
    let before = rss_mb("VmRSS:");
    let mut ledger = Ledger::new();
    let started = Instant::now();
    let mut order_id = 820_982_911_946_154_508u64;
    for c in 0..customers {
        let customer_id = 115_310_627_314_723_954 + c;
        let key = ledger.key("bench.myshopify.com", customer_id);
        for i in 0..per_customer {
            order_id += 1;
            let o = NormalizedOrder {
                order_id,
                customer_id,
                email: Some(format!("customer-{customer_id}@example.com")),
                updated_at_us: 1_795_000_000_000_000 + i as i64,
                updated_at: String::new(),
                amount: Decimal::new(4550 + (order_id % 10_000) as i64, 2),
                currency: Some("USD".into()),
                cancelled: false,
                test: false,
                financial_status: Some("paid".into()),
                // What orders/* bodies carry: every order a name and creation time, and
                // (from the customer object) tags on every fourth customer and a consent state.
                facts: segmenter::normalize::OrderFacts {
                    name: Some(format!("#{}", 1000 + order_id % 1_000_000)),
                    created_at_us: Some(1_735_689_600_000_000 + i as i64 * 86_400_000_000),
                    tags: (c % 4 == 0).then(|| "vip, newsletter".to_owned()),
                    email_marketing_consent: Some("subscribed".into()),
                },
            };
            let counted = rules.spend.counts(&o);
            ledger.apply(key, &o, counted).expect("in range");
        }
    }
    let took = started.elapsed();
    let after = rss_mb("VmRSS:");
    println!(
        "state: {} customers, {} orders in {:.1}s; RSS {:.0} MB -> {:.0} MB (peak {:.0} MB), {:.0} B/order",
        ledger.customers(),
        ledger.orders(),
        took.as_secs_f64(),
        before,
        after,
        rss_mb("VmHWM:"),
        (after - before) * 1024.0 * 1024.0 / ledger.orders() as f64
    );
    std::hint::black_box(&ledger);
}

/// Decode and apply changelog records as a restore does (the Kafka fetch is measured apart).
fn restore(customers: u64, per_customer: u64) {
    use segmenter::changelog::OrderRecord;
    let encoded: Vec<Vec<u8>> = common::changelog(customers, per_customer)
        .map(|(_, r)| serde_json::to_vec(&r).expect("serialises"))
        .collect();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut ledger = Ledger::new();
    for e in &encoded {
        ledger
            .restore(&serde_json::from_slice::<OrderRecord>(e).expect("decodes"))
            .expect("in range");
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "restore: {} changelog records ({:.0} B mean) -> {} customers in {took:.2}s: {:.0} records/s, {:.2}s per million customers (decode + apply, one thread)",
        encoded.len(),
        bytes as f64 / encoded.len() as f64,
        ledger.customers(),
        encoded.len() as f64 / took,
        took / (customers as f64 / 1e6)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("throughput") => throughput(),
        Some("memory") => {
            let customers = args
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            let per = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
            memory(customers, per);
        }
        Some("restore") => {
            let customers = args
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            let per = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
            restore(customers, per);
        }
        _ => {
            eprintln!("usage: bench_ledger throughput | memory [CUSTOMERS] [ORDERS] | restore [CUSTOMERS] [ORDERS]");
            std::process::exit(2);
        }
    }
}
