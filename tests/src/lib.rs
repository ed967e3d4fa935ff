//! Harness for the end-to-end tests: a history of Shopify orders with every complication the
//! spend rule has to handle, the signed webhooks that deliver it (duplicated and reordered),
//! and the Okta state it must produce, computed here independently of the segmenter.

pub use testkit::eventually;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

pub const SHOP: &str = "e2e.myshopify.com";
pub const SECRET: &str = "dev-secret";

/// One version of one order, as a webhook body carries it.
#[derive(Debug, Clone)]
pub struct OrderVersion {
    pub order_id: u64,
    /// `None` for a guest checkout.
    pub customer: Option<u64>,
    pub cents: i64,
    pub second: u32,
    pub status: &'static str,
    pub cancelled: bool,
    pub test: bool,
    /// `orders/delete` of this order (its body is the id alone): the order never counts,
    /// whichever of its versions come before or after.
    pub deleted: bool,
}

pub fn email(customer: u64) -> String {
    format!("e2e-{customer}@example.com")
}

impl OrderVersion {
    /// The webhook body. Negative `cents` render an amount the segmenter cannot read (`"-"`),
    /// which it must quarantine.
    pub fn body(&self) -> String {
        if self.deleted {
            return format!(r#"{{"id":{}}}"#, self.order_id);
        }
        let money = if self.cents < 0 {
            "-".to_owned()
        } else {
            format!("{}.{:02}", self.cents / 100, self.cents % 100)
        };
        let customer = match self.customer {
            Some(c) => format!(r#"{{"id":{c},"email":"{}"}}"#, email(c)),
            None => "null".into(),
        };
        format!(
            r#"{{"id":{},"updated_at":"2026-11-20T1{}:{:02}:{:02}Z","created_at":"2026-11-20T09:00:00Z","email":"{}","test":{},"cancelled_at":{},"financial_status":"{}","currency":"USD","current_total_price":"{money}","current_total_price_set":{{"shop_money":{{"amount":"{money}","currency_code":"USD"}},"presentment_money":{{"amount":"{money}","currency_code":"USD"}}}},"customer":{customer}}}"#,
            self.order_id,
            self.second / 3600,
            self.second / 60 % 60,
            self.second % 60,
            self.customer.map(email).unwrap_or_default(),
            self.test,
            if self.cancelled {
                "\"2026-11-21T00:00:00Z\""
            } else {
                "null"
            },
            self.status,
        )
    }

    pub fn topic(&self) -> &'static str {
        if self.deleted {
            "orders/delete"
        } else if self.cancelled {
            "orders/cancelled"
        } else if self.status == "paid" {
            "orders/paid"
        } else {
            "orders/updated"
        }
    }
}

/// The template's scenarios (tier boundaries, refunds moving a customer down, cancellations)
/// plus `random_customers` customers with random histories; ids start at 1.
pub fn history(random_customers: u64, seed: u64) -> Vec<OrderVersion> {
    let v = |order_id, customer, cents, second, status| OrderVersion {
        order_id,
        customer: Some(customer),
        cents,
        second,
        status,
        cancelled: false,
        test: false,
        deleted: false,
    };
    let mut out = vec![
        // 1: one $0 order → Potential.
        v(1001, 1, 0, 10, "paid"),
        // 2: $100.50 is New (half-open tiers: [1, 101)).
        v(1002, 2, 10_050, 10, "paid"),
        // 3: $101 → Active.
        v(1003, 3, 10_100, 10, "paid"),
        // 4: VIP at $600, then a partial refund to $450 → Active.
        v(1004, 4, 60_000, 10, "paid"),
        v(1004, 4, 45_000, 20, "partially_refunded"),
        // 5: two orders, one cancelled → only the other counts.
        v(1005, 5, 30_000, 10, "paid"),
        v(1006, 5, 40_000, 10, "paid"),
        OrderVersion {
            cancelled: true,
            ..v(1006, 5, 40_000, 30, "paid")
        },
        // 6: pending at checkout does not count until paid.
        v(1007, 6, 20_000, 10, "pending"),
        v(1007, 6, 20_000, 40, "paid"),
        // 7: a test order never counts; a fully refunded one neither.
        OrderVersion {
            test: true,
            ..v(1008, 7, 90_000, 10, "paid")
        },
        v(1009, 7, 5_000, 10, "paid"),
        v(1009, 7, 0, 50, "refunded"),
    ];
    // A guest order: no customer, nothing in Okta.
    out.push(OrderVersion {
        customer: None,
        ..v(1010, 0, 12_345, 10, "paid")
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order_id = 10_000;
    for c in 0..random_customers {
        let customer = 100 + c;
        for _ in 0..rng.random_range(1..4) {
            order_id += 1;
            let mut second = rng.random_range(0..600);
            for _ in 0..rng.random_range(1..4) {
                second += rng.random_range(1..600);
                out.push(OrderVersion {
                    order_id,
                    customer: Some(customer),
                    cents: rng.random_range(0..40_000),
                    second,
                    status: [
                        "paid",
                        "paid",
                        "partially_refunded",
                        "pending",
                        "refunded",
                        "partially_paid",
                    ][rng.random_range(0..6)],
                    cancelled: rng.random_ratio(1, 12),
                    test: rng.random_ratio(1, 25),
                    deleted: false,
                });
            }
            // Some orders are deleted in Shopify; the deletion is shuffled with the versions,
            // so it may arrive before them.
            if rng.random_ratio(1, 15) {
                let last = out.last().expect("just pushed").clone();
                out.push(OrderVersion {
                    deleted: true,
                    ..last
                });
            }
        }
    }
    out
}

/// Every customer id in `history`.
pub fn customers(history: &[OrderVersion]) -> Vec<u64> {
    let mut c: Vec<u64> = history.iter().filter_map(|v| v.customer).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// Per customer: (total spent, orders counted), from the newest version of each order.
pub fn reference(history: &[OrderVersion]) -> BTreeMap<u64, (Decimal, u64)> {
    let deleted: std::collections::BTreeSet<u64> = history
        .iter()
        .filter(|v| v.deleted)
        .map(|v| v.order_id)
        .collect();
    let mut newest: BTreeMap<u64, &OrderVersion> = BTreeMap::new();
    for v in history.iter().filter(|v| !v.deleted) {
        let e = newest.entry(v.order_id).or_insert(v);
        if v.second > e.second {
            *e = v;
        }
    }
    let mut out: BTreeMap<u64, (Decimal, u64)> = BTreeMap::new();
    for v in newest.values() {
        let Some(c) = v.customer else { continue };
        if v.cents < 0 {
            continue; // quarantined by the segmenter: never counts
        }
        let e = out.entry(c).or_default();
        if deleted.contains(&v.order_id) {
            continue; // the customer is known (at zero if this was all), the order gone
        }
        let counted = !v.cancelled
            && !v.test
            && matches!(v.status, "paid" | "partially_paid" | "partially_refunded");
        if counted {
            e.0 += Decimal::new(v.cents, 2);
            e.1 += 1;
        }
    }
    out
}

/// The template's tier of a total (dev.toml's table).
pub fn tier(total: Decimal) -> &'static str {
    if total < Decimal::from(1) {
        "Shopify Potential"
    } else if total < Decimal::from(101) {
        "Shopify New"
    } else if total < Decimal::from(501) {
        "Shopify Active"
    } else {
        "Shopify VIP"
    }
}

/// The signed deliveries of `history`: each version once, some twice (Shopify retries), all
/// shuffled (Shopify does not guarantee order).
pub fn deliveries(history: &[OrderVersion], seed: u64) -> Vec<loadgen::Webhook> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, v) in history.iter().enumerate() {
        let w = loadgen::Webhook::signed(
            v.topic(),
            SHOP,
            &format!("e2e-{seed}-{i}"),
            SECRET.as_bytes(),
            v.body(),
        );
        if rng.random_ratio(1, 5) {
            out.push(w.clone());
        }
        out.push(w);
    }
    out.shuffle(&mut rng);
    out
}

/// POST every webhook to the ingest; returns how many got a 2xx.
pub async fn deliver(
    webhooks_addr: std::net::SocketAddr,
    deliveries: &[loadgen::Webhook],
) -> usize {
    let http = reqwest::Client::new();
    let mut ok = 0;
    for w in deliveries {
        let mut req = http
            .post(format!("http://{webhooks_addr}/webhooks/shopify"))
            .body(w.body.clone());
        for (k, v) in w.headers() {
            req = req.header(k, v);
        }
        let status = req.send().await.expect("the ingest answers").status();
        assert!(status.is_success(), "webhook {} got {status}", w.webhook_id);
        ok += 1;
    }
    ok
}

/// Whether Okta (the simulator) holds exactly `want` for every customer.
pub fn okta_mismatches(
    sim: &okta_sim::Shared,
    want: &BTreeMap<u64, (Decimal, u64)>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (c, (total, count)) in want {
        let login = email(*c);
        let profile = sim.profile(&login).unwrap_or_default();
        let spent = profile.get("shopify_total_spent").and_then(|v| v.as_f64());
        let orders = profile.get("shopify_orders_count").and_then(|v| v.as_u64());
        let want_spent: f64 = total.round_dp(2).to_string().parse().unwrap();
        let groups = sim.groups_of(&login);
        let want_groups = {
            let mut g = vec!["Everyone".to_owned(), tier(*total).to_owned()];
            g.sort();
            g
        };
        if spent != Some(want_spent) || orders != Some(*count) || groups != want_groups {
            bad.push(format!("customer {c}: okta has {spent:?}/{orders:?}/{groups:?}, want {want_spent}/{count}/{want_groups:?}"));
        }
    }
    bad
}

/// The simulator's seed users for `customers`.
pub fn okta_users(customers: &[u64]) -> Vec<okta_sim::SeedUser> {
    customers
        .iter()
        .map(|c| okta_sim::SeedUser {
            login: email(*c),
            email: Some(email(*c)),
            ..Default::default()
        })
        .collect()
}

/// POST every webhook like Shopify does: `connections` at a time, and a webhook not answered
/// 2xx is retried (after a short pause here; Shopify backs off longer) until it is. Returns the
/// number of non-2xx answers seen (503s while the broker is down).
pub async fn deliver_like_shopify(
    webhooks_addr: std::net::SocketAddr,
    deliveries: &[loadgen::Webhook],
    connections: usize,
) -> usize {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(deliveries.to_vec()));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (queue, failures) = (queue.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            loop {
                let Some(w) = queue.lock().unwrap().pop() else {
                    return;
                };
                let started = Instant::now();
                loop {
                    let mut req = http
                        .post(format!("http://{webhooks_addr}/webhooks/shopify"))
                        .body(w.body.clone());
                    for (k, v) in w.headers() {
                        req = req.header(k, v);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => break,
                        _ => {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            assert!(
                                started.elapsed() < Duration::from_secs(90),
                                "webhook {} never accepted",
                                w.webhook_id
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    failures.load(std::sync::atomic::Ordering::Relaxed)
}

/// The sum of every series of metric `name` on a service's admin listener (`/metrics`).
pub async fn metric_sum(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("the admin listener answers")
        .text()
        .await
        .expect("a metrics page");
    tierflow::status::parse_metrics(&text)
        .iter()
        .filter(|l| l.name == name)
        .map(|l| l.value)
        .sum()
}

/// The whole pipeline in this process on `bootstrap` (config/dev.toml, every listener on an
/// ephemeral port, the Okta simulator unthrottled and without users); `tune` adjusts the
/// settings first.
pub async fn start_pipeline(
    bootstrap: &str,
    tune: impl FnOnce(&mut tierflow::pipeline::PipelineSettings),
) -> tierflow::pipeline::Pipeline {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut settings = tierflow::pipeline::PipelineSettings::load(
        Some(&config),
        Vec::new(),
        Some(bootstrap.to_owned()),
    )
    .unwrap();
    settings.for_writer.okta.stores = [(SHOP.to_owned(), Default::default())].into();
    tune(&mut settings);
    let options = tierflow::pipeline::DevOptions {
        users: 0,
        ephemeral_ports: true,
        okta_unthrottled: true,
        ..Default::default()
    };
    tierflow::pipeline::Pipeline::start(settings, bootstrap, &options)
        .await
        .unwrap()
}
