//! Test harness: an ingest on random ports in front of a broker from `testkit` (librdkafka's
//! mock cluster unless a test asks for Apache Kafka), plus helpers to send signed webhooks.
//! Reading the topics back is `testkit::topic`'s.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use ingest::config::Settings;
use ingest::Application;
use loadgen::Webhook;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use secrecy::SecretString;
pub use testkit::topic::{count, headers, read_at_least};
use testkit::Broker;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "shpss_test_secret";
pub const SHOP: &str = "tierflow-test.myshopify.com";
pub const ORDERS: &str = "shopify.orders";
pub const QUARANTINE: &str = "shopify.orders.quarantine";
pub const PARTITIONS: i32 = 6;

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub broker: Broker,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(bootstrap: &str) -> Settings {
    let mut s = Settings::default();
    s.kafka.brokers = Some(bootstrap.to_owned());
    s.shopify.webhook_secrets = vec![SecretString::from(SECRET)];
    s.ingest.listen = "127.0.0.1:0".parse().unwrap();
    s.ingest.admin_listen = "127.0.0.1:0".parse().unwrap();
    s.ingest.produce_timeout = Duration::from_millis(1500);
    s
}

pub async fn spawn_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let broker = Broker::embedded(PARTITIONS);
    let mut s = settings(&broker.bootstrap_servers());
    tweak(&mut s);
    s.validate().unwrap();
    let app = Application::build(&s, &broker.bootstrap_servers())
        .await
        .unwrap();
    let (addr, admin) = (app.local_addr(), app.admin_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        admin,
        broker,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}/webhooks/shopify", self.addr)
    }

    pub async fn send(&self, webhook: &Webhook) -> reqwest::Response {
        post(&self.client, &self.url(), webhook)
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stop gracefully and return what `run_until` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap()
    }

    /// Records in `topic` (all partitions), by high watermark.
    pub fn count(&self, topic: &str) -> i64 {
        count(&self.broker.bootstrap_servers(), topic)
    }

    /// Read every record of `topic` until `expect` are seen or `within` passes.
    pub async fn read(&self, topic: &str, expect: usize, within: Duration) -> Vec<OwnedMessage> {
        let bootstrap = self.broker.bootstrap_servers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_at_least(&bootstrap, &topic, expect, within))
            .await
            .unwrap()
    }
}

/// The request Shopify would make to deliver `webhook` to `url`.
pub fn post(client: &reqwest::Client, url: &str, webhook: &Webhook) -> reqwest::RequestBuilder {
    let mut req = client.post(url).body(webhook.body.clone());
    for (k, v) in webhook.headers() {
        req = req.header(k, v);
    }
    req
}

pub fn key_of(m: &OwnedMessage) -> String {
    String::from_utf8(m.key().unwrap().to_vec()).unwrap()
}

/// A realistic signed `orders/create` for customer `customer` (None: a guest).
pub fn order_webhook(
    webhook_id: &str,
    customer: Option<u64>,
) -> (Webhook, loadgen::payload::OrderSpec) {
    let mut rng = rand::rng();
    let spec = loadgen::payload::OrderSpec::random(&mut rng, 820_982_911_946_154_508, customer);
    let body = loadgen::payload::order_body(&spec, SHOP);
    (
        Webhook::signed("orders/create", SHOP, webhook_id, SECRET.as_bytes(), body),
        spec,
    )
}

/// A signed webhook of any topic with any body.
pub fn signed(topic: &str, webhook_id: &str, body: &[u8]) -> Webhook {
    Webhook::signed(topic, SHOP, webhook_id, SECRET.as_bytes(), body.to_vec())
}

/// An order body of ordinary JSON with `items` line items (~60 B each): large, and it
/// compresses several-fold, as real webhook JSON does.
pub fn large_order(order_id: u64, items: usize) -> String {
    let items: String = (0..items)
        .map(|i| format!(r#"{{"id":{i},"title":"Widget {i}","price":"1.00","quantity":1}},"#))
        .collect();
    format!(
        r#"{{"id":{order_id},"updated_at":"2026-11-20T10:00:00Z","customer":{{"id":6}},"line_items":[{}]}}"#,
        items.trim_end_matches(',')
    )
}

/// An order body carrying `len` bytes of random hex: it does not compress.
pub fn incompressible_order(order_id: u64, len: usize) -> String {
    let hex: String = (0..len / 2 + 1)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    format!(
        r#"{{"id":{order_id},"updated_at":"2026-11-20T10:00:00Z","customer":{{"id":5}},"note":"{}"}}"#,
        &hex[..len]
    )
}
