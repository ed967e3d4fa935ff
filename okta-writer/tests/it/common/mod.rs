//! Harness: the broker from `testkit` (`TIERFLOW_TEST_BROKER`: the mock cluster by default, or
//! Apache Kafka), the Okta simulator
//! over HTTP, segment updates shaped exactly as the segmenter writes them, and the writer run
//! in-process or as its binary.

#![allow(dead_code, unused_imports)]

use std::time::{Duration, Instant};

use okta_sim::{SimConfig, SimHandle};
use okta_writer::config::Settings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use schemas::{headers as h, Cause, SegmentUpdate, TierRef, UpdateKind};
use service_runtime::config::TopicsConfig;
pub use testkit::{metric_sum, wait_for, Broker};

pub const SHOP: &str = "writer-test.myshopify.com";
pub const TIERS: [&str; 4] = ["Potential", "New", "Active", "VIP"];

pub fn group(tier: &str) -> String {
    format!("Shopify {tier}")
}

pub fn email(customer: u64) -> String {
    format!("c{customer}@example.com")
}

/// The broker `TIERFLOW_TEST_BROKER` selects, every pipeline topic with 3 partitions.
pub fn broker() -> Broker {
    Broker::from_env(3)
}

/// A simulator with the four tier groups and users c0..c{n-1}@example.com, each in `Potential`.
pub async fn sim(config: SimConfig, users: u64) -> SimHandle {
    let groups: Vec<String> = TIERS.iter().map(|t| group(t)).collect();
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut seed = okta_sim::seed(&group_refs, &[]);
    for c in 0..users {
        seed.users.push(okta_sim::SeedUser {
            login: email(c),
            email: Some(email(c)),
            groups: vec![group("Potential")],
            ..Default::default()
        });
    }
    SimHandle::start(config, &seed).await.unwrap()
}

/// A seed for group rules: the four tier groups, a `shopify_tier` string attribute, and users
/// c0..c{n-1} in no tier group (rules only manage memberships they make).
pub fn seed_for_rules(users: u64) -> okta_sim::Seed {
    let groups: Vec<String> = TIERS.iter().map(|t| group(t)).collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut seed = okta_sim::seed(&refs, &[]);
    seed.attributes
        .insert("shopify_tier".into(), okta_sim::AttrType::String);
    for c in 0..users {
        seed.users.push(okta_sim::SeedUser {
            login: email(c),
            email: Some(email(c)),
            ..Default::default()
        });
    }
    seed
}

pub fn settings(bootstrap: &str, okta: &str, group_id: &str) -> Settings {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut s =
        Settings::load(Some(&path), std::iter::empty(), Some(bootstrap.to_owned())).unwrap();
    s.okta.base_url = Some(okta.to_owned());
    s.okta.stores = [(SHOP.to_owned(), Default::default())].into();
    s.okta.retry_initial_interval = Duration::from_millis(10);
    s.okta.retry_max_interval = Duration::from_millis(200);
    s.okta.retry_max_elapsed = Duration::from_secs(60);
    s.okta.credentials_pause = Duration::from_millis(300);
    s.okta.credentials_pause_max = Duration::from_secs(1);
    s.okta.request_timeout = Duration::from_secs(5);
    s.okta_writer.admin_listen = "127.0.0.1:0".parse().unwrap();
    s.okta_writer.group_id = group_id.to_owned();
    s.okta_writer.shutdown_timeout = Duration::from_secs(5);
    s.kafka.client.insert(
        "session.timeout.ms".into(),
        toml::Value::String("6000".into()),
    );
    s
}

/// The tier of a total under the template table.
pub fn tier_of(cents: i64) -> &'static str {
    match cents {
        c if c < 100 => "Potential",
        c if c < 10_100 => "New",
        c if c < 50_100 => "Active",
        _ => "VIP",
    }
}

/// A segment update of `customer` to `cents` spent over `orders` orders, from `previous`.
pub fn update(customer: u64, cents: i64, orders: u64, previous: Option<&str>) -> SegmentUpdate {
    let tier = tier_of(cents);
    let tref = |t: &str| TierRef {
        name: t.to_owned(),
        okta_group: group(t),
    };
    let mut u = SegmentUpdate {
        schema_version: schemas::SEGMENT_SCHEMA_VERSION,
        event_id: String::new(),
        kind: UpdateKind::Segment,
        shop: SHOP.into(),
        customer_id: customer,
        email: Some(email(customer)),
        total_spent: Decimal::new(cents, 2),
        orders_count: orders,
        currency: Some("USD".into()),
        tier: Some(tref(tier)),
        previous_tier: previous.map(tref),
        tier_changed: previous != Some(tier),
        rule_version: "test".into(),
        cause: Cause {
            order_id: Some(orders),
            webhook_id: None,
            shopify_topic: "orders/paid".into(),
        },
        decided_at: "2026-11-20T10:00:00Z".into(),
        facts: Default::default(),
    };
    u.event_id = u.compute_event_id();
    u
}

/// A history of `n` rising updates for `customer`; returns them and the final (cents, orders).
pub fn history(customer: u64, n: u64, step_cents: i64) -> Vec<SegmentUpdate> {
    let mut prev: Option<&str> = None;
    (1..=n)
        .map(|i| {
            let cents = step_cents * i as i64;
            let u = update(customer, cents, i, prev);
            prev = Some(tier_of(cents));
            u
        })
        .collect()
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .create()
        .unwrap()
}

pub fn key(u: &SegmentUpdate) -> String {
    format!("{}/{}", u.shop, u.customer_id)
}

/// Produce updates to the segments topic, keyed by customer, with the segmenter's headers.
pub async fn produce(bootstrap: &str, updates: &[SegmentUpdate]) {
    let p = producer(bootstrap);
    let futures: Vec<_> = updates
        .iter()
        .map(|u| {
            let value = serde_json::to_vec(u).unwrap();
            let key = key(u);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: h::EVENT_ID,
                    value: Some(u.event_id.as_bytes()),
                })
                .insert(Header {
                    key: h::TRACEPARENT,
                    value: Some(
                        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".as_slice(),
                    ),
                });
            p.send_result(
                FutureRecord::to("customer.segments")
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
            )
            .unwrap()
        })
        .collect();
    for f in futures {
        f.await.unwrap().unwrap();
    }
}

pub use testkit::Running;

/// The writer built and running in-process.
pub async fn start(settings: Settings, bootstrap: &str) -> Running {
    let app = okta_writer::Application::build(&settings, bootstrap)
        .await
        .expect("the writer starts");
    Running::spawn(app.admin_addr(), |stop| app.run_until(stop))
}

/// Whether `customer`'s Okta state is exactly `u`'s: the two attributes, and of the tier groups
/// only `u`'s tier (plus Everyone).
pub fn okta_matches(sim: &SimHandle, u: &SegmentUpdate) -> bool {
    let Some(profile) = sim.shared.profile(&email(u.customer_id)) else {
        return false;
    };
    let spent = profile.get("shopify_total_spent").and_then(|v| v.as_f64());
    let count = profile.get("shopify_orders_count").and_then(|v| v.as_u64());
    let want_spent: f64 = u.total_spent.to_string().parse().unwrap();
    let mut want_groups = vec![
        "Everyone".to_owned(),
        u.tier.as_ref().unwrap().okta_group.clone(),
    ];
    want_groups.sort();
    spent == Some(want_spent)
        && count == Some(u.orders_count)
        && sim.shared.groups_of(&email(u.customer_id)) == want_groups
}

/// Read the dead-letter topic (blocking reader on a blocking thread).
pub async fn dead_letters(settings: &Settings, bootstrap: &str) -> okta_writer::dlq::DeadLetters {
    let (s, b) = (settings.clone(), bootstrap.to_owned());
    tokio::task::spawn_blocking(move || okta_writer::dlq::read(&s, &b))
        .await
        .unwrap()
        .unwrap()
}

/// Wait until the dead-letter topic holds at least `n` entries; returns what it holds.
pub async fn wait_dead_letters(
    settings: &Settings,
    bootstrap: &str,
    n: usize,
) -> okta_writer::dlq::DeadLetters {
    let started = Instant::now();
    loop {
        let dl = dead_letters(settings, bootstrap).await;
        if dl.entries.len() >= n {
            return dl;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} dead letters after 30 s, want {n}",
            dl.entries.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `p` quantile (0..=1) of sorted values, nearest rank (benchmarks).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Wait until Okta holds every one of `finals` exactly; how long it took (benchmarks).
pub async fn wait_all(sim: &SimHandle, finals: &[SegmentUpdate]) -> Duration {
    let started = Instant::now();
    wait_for("all updates applied", Duration::from_secs(600), || {
        finals.iter().all(|u| okta_matches(sim, u))
    })
    .await;
    started.elapsed()
}
