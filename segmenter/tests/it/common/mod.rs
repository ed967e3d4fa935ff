//! Harness: the broker from `testkit` (`TIERFLOW_TEST_BROKER`: the mock cluster by default, or
//! Apache Kafka), input records shaped exactly as the ingest writes them, and readers for the
//! segmenter's outputs.

#![allow(dead_code, unused_imports)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use rust_decimal::Decimal;
use schemas::{headers as h, SegmentUpdate};
use segmenter::config::Settings;
use service_runtime::config::TopicsConfig;
pub use testkit::topic::{header, read_all};
use testkit::Broker;

pub const SHOP: &str = "seg-test.myshopify.com";
pub const PARTITIONS: i32 = 6;

/// The broker `TIERFLOW_TEST_BROKER` selects, with every pipeline topic.
pub fn broker() -> Broker {
    Broker::from_env(PARTITIONS)
}

/// The mock cluster, for tests that fail requests on cue.
pub fn mock_broker() -> Broker {
    Broker::embedded(PARTITIONS)
}

pub fn settings(bootstrap: &str, group: &str) -> Settings {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut s = Settings::load(Some(&dir), std::iter::empty(), Some(bootstrap.to_owned())).unwrap();
    s.segmenter.admin_listen = "127.0.0.1:0".parse().unwrap();
    s.segmenter.group_id = group.to_owned();
    s.segmenter.batch_wait = Duration::from_millis(2);
    s.kafka.client.insert(
        "session.timeout.ms".into(),
        toml::Value::String("6000".into()),
    );
    s
}

pub use testkit::Running;

/// The segmenter built and running in-process.
pub async fn start(settings: Settings, bootstrap: &str) -> Running {
    let app = segmenter::Application::build(&settings, bootstrap)
        .await
        .expect("the segmenter starts");
    Running::spawn(app.admin_addr(), |stop| app.run_until(stop))
}

/// What the segmenter tests ask of a running segmenter beyond [`Running`].
pub trait SegmenterRunning {
    /// The `/metrics` page once `records` input records have been counted, or as it is when
    /// `within` has passed (the caller's assertions then say what is missing).
    async fn metrics_after(&self, records: u64, within: Duration) -> String;
}

impl SegmenterRunning for Running {
    async fn metrics_after(&self, records: u64, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics().await;
            if metric_sum(&m, "tierflow_segmenter_records_total") >= records
                || Instant::now() > deadline
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An input record as the ingest writes it.
#[derive(Debug, Clone)]
pub struct Input {
    pub topic: &'static str,
    pub key: String,
    pub body: Vec<u8>,
    pub webhook_id: String,
}

/// One version of an order of `customer`.
#[derive(Debug, Clone)]
pub struct Version {
    pub order_id: u64,
    pub customer: u64,
    pub cents: i64,
    pub second: u32,
    pub cancelled: bool,
    pub test: bool,
    pub status: &'static str,
}

impl Version {
    pub fn input(&self, webhook_id: &str) -> Input {
        let body = format!(
            r#"{{"id":{},"updated_at":"2026-11-20T10:{:02}:{:02}Z","created_at":"2026-11-20T10:00:00Z","email":"c{}@example.com","test":{},"cancelled_at":{},"financial_status":"{}","current_total_price":"{}","current_total_price_set":{{"shop_money":{{"amount":"{}","currency_code":"USD"}},"presentment_money":{{"amount":"{}","currency_code":"USD"}}}},"note":"a\/b","customer":{{"id":{},"email":"c{}@example.com"}}}}"#,
            self.order_id,
            self.second / 60,
            self.second % 60,
            self.customer,
            self.test,
            if self.cancelled {
                "\"2026-11-21T00:00:00Z\""
            } else {
                "null"
            },
            self.status,
            money(self.cents),
            money(self.cents),
            money(self.cents),
            self.customer,
            self.customer,
        );
        Input {
            topic: "orders/updated",
            key: format!("{SHOP}/{}", self.customer),
            body: body.into_bytes(),
            webhook_id: webhook_id.to_owned(),
        }
    }
}

pub fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The spend rule computed independently: per order the latest version; counted if paid or
/// partially refunded, not cancelled, not test. Versions must have distinct seconds per order.
pub fn reference(versions: &[Version]) -> BTreeMap<u64, (Decimal, u64)> {
    let mut newest: HashMap<u64, &Version> = HashMap::new();
    for v in versions {
        match newest.get(&v.order_id) {
            Some(n) if n.second >= v.second => {}
            _ => {
                newest.insert(v.order_id, v);
            }
        }
    }
    let mut out: BTreeMap<u64, (Decimal, u64)> = BTreeMap::new();
    for v in newest.values() {
        let e = out.entry(v.customer).or_insert((Decimal::ZERO, 0));
        let counted = !v.cancelled && !v.test && matches!(v.status, "paid" | "partially_refunded");
        if counted {
            e.0 += Decimal::new(v.cents, 2);
            e.1 += 1;
        }
    }
    out
}

pub async fn produce(bootstrap: &str, inputs: &[Input]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for i in inputs {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::SHOPIFY_TOPIC,
                value: Some(i.topic),
            })
            .insert(Header {
                key: h::SHOPIFY_SHOP_DOMAIN,
                value: Some(SHOP),
            })
            .insert(Header {
                key: h::SHOPIFY_WEBHOOK_ID,
                value: Some(i.webhook_id.as_str()),
            })
            .insert(Header {
                key: h::SHOPIFY_API_VERSION,
                value: Some("2025-07"),
            })
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            });
        let record = FutureRecord::to("shopify.orders")
            .key(i.key.as_str())
            .payload(i.body.as_slice())
            .headers(headers);
        pending.push(producer.send(record, Duration::from_secs(10)));
    }
    for p in pending {
        p.await.unwrap();
    }
}

/// Every segment update in the topic, in partition order.
pub fn updates(bootstrap: &str) -> Vec<SegmentUpdate> {
    read_all(bootstrap, "customer.segments")
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect()
}

/// The last update per customer (updates of one customer share a partition, in order).
pub fn final_state(updates: &[SegmentUpdate]) -> BTreeMap<u64, (Decimal, u64)> {
    let mut out = BTreeMap::new();
    for u in updates {
        out.insert(u.customer_id, (u.total_spent, u.orders_count));
    }
    out
}

/// Poll the segments topic until its final state equals `want` (or fail after `within`).
pub async fn wait_for_state(
    bootstrap: &str,
    want: &BTreeMap<u64, (Decimal, u64)>,
    within: Duration,
) -> Vec<SegmentUpdate> {
    let deadline = Instant::now() + within;
    loop {
        let b = bootstrap.to_owned();
        let us = tokio::task::spawn_blocking(move || updates(&b))
            .await
            .unwrap();
        let got = final_state(&us);
        if &got == want {
            return us;
        }
        if Instant::now() > deadline {
            let diff: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(k) != Some(v))
                .take(5)
                .map(|(k, v)| format!("customer {k}: want {v:?} got {:?}", got.get(k)))
                .collect();
            panic!(
                "state not reached in {within:?}; {} customers differ, e.g. {diff:?}",
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A mixed history: `customers` customers, a few orders each, several versions per order with
/// distinct seconds, refunds, cancellations and test orders; returned in a shuffled order with
/// duplicates.
pub fn history(customers: u64, seed: u64) -> (Vec<Version>, Vec<Input>) {
    use rand::{seq::SliceRandom, Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut versions = Vec::new();
    let mut order_id = 820_982_911_946_154_508u64;
    for c in 0..customers {
        let customer = 115_310_627_314_723_954 + c;
        for _ in 0..rng.random_range(1..=3) {
            order_id += 1;
            let mut second = rng.random_range(0..100);
            for _ in 0..rng.random_range(1..=3) {
                second += rng.random_range(1..50);
                versions.push(Version {
                    order_id,
                    customer,
                    cents: rng.random_range(0..40_000),
                    second,
                    cancelled: rng.random_ratio(1, 10),
                    test: rng.random_ratio(1, 20),
                    status: ["paid", "paid", "partially_refunded", "pending", "refunded"]
                        [rng.random_range(0..5)],
                });
            }
        }
    }
    let mut inputs: Vec<Input> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| v.input(&format!("wh-{seed}-{i}")))
        .collect();
    let dups: Vec<Input> = inputs
        .iter()
        .filter(|_| rng.random_ratio(1, 5))
        .cloned()
        .collect();
    inputs.extend(dups);
    inputs.shuffle(&mut rng);
    (versions, inputs)
}

/// A fresh broker (`TIERFLOW_TEST_BROKER`) with a produced `history(customers, seed)`:
/// (broker, bootstrap, versions, inputs). Keep the broker alive for the whole test.
pub async fn seeded(customers: u64, seed: u64) -> (Broker, String, Vec<Version>, Vec<Input>) {
    seeded_on(broker(), customers, seed).await
}

/// [`seeded`] on a given broker (e.g. [`mock_broker`] for fault injection).
pub async fn seeded_on(
    broker: Broker,
    customers: u64,
    seed: u64,
) -> (Broker, String, Vec<Version>, Vec<Input>) {
    let bootstrap = broker.bootstrap_servers();
    let (versions, inputs) = history(customers, seed);
    produce(&bootstrap, &inputs).await;
    (broker, bootstrap, versions, inputs)
}

/// The sum of every series of a metric whose line starts with `prefix` (name, and optionally
/// the first labels), from a `/metrics` text.
pub fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    testkit::metric_sum(metrics, prefix) as u64
}
