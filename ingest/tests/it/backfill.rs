//! `ingest backfill` against the Shopify simulator (checked against Shopify's published
//! schema) and a Kafka broker: the queries it sends are valid for the pinned API version, a
//! backfilled order normalises exactly as its webhook does, every order of a shop lands once
//! per run with the backfill's headers, a killed run resumes from its checkpoint, and each
//! failure Shopify documents is handled as documented.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ingest::backfill::{self, BackfillArgs};
use rand::{Rng, SeedableRng};
use rdkafka::Message as _;
use schemas::{headers as h, ShopifyTopic};
use shopify_sim::{AccessToken, Faults, SimConfig, SimCustomer, SimHandle, SimOrder};

use crate::common::*;

const TOKEN: &str = "shpat_test";

/// `customers` customers with 1–4 orders each, plus guest orders: paid, pending, refunded,
/// partially refunded, cancelled, test; some created years ago.
fn shop_orders(customers: u64, seed: u64) -> Vec<SimOrder> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let statuses = [
        "PAID",
        "PAID",
        "PENDING",
        "REFUNDED",
        "PARTIALLY_REFUNDED",
        "AUTHORIZED",
    ];
    let now = Utc::now();
    let mut out = Vec::new();
    let mut id = 5_000_000_000u64;
    for c in 0..customers {
        let customer = SimCustomer {
            id: 7_000_000_000 + c,
            email: Some(format!("c{c}@example.com")),
            tags: if c % 3 == 0 {
                vec!["vip".into(), "wholesale".into()]
            } else {
                vec![]
            },
            marketing_state: Some(["SUBSCRIBED", "NOT_SUBSCRIBED"][(c % 2) as usize].into()),
        };
        for _ in 0..rng.random_range(1..=4) {
            id += 1;
            let created = now - chrono::Duration::days(rng.random_range(0..2000));
            out.push(order(
                id,
                Some(customer.clone()),
                created,
                &mut rng,
                &statuses,
            ));
        }
        if c % 10 == 0 {
            id += 1;
            let created = now - chrono::Duration::days(rng.random_range(0..2000));
            out.push(order(id, None, created, &mut rng, &statuses));
        }
    }
    out
}

fn order(
    id: u64,
    customer: Option<SimCustomer>,
    created: chrono::DateTime<Utc>,
    rng: &mut impl Rng,
    statuses: &[&str],
) -> SimOrder {
    let created = Utc.timestamp_opt(created.timestamp(), 0).unwrap();
    SimOrder {
        id,
        name: format!("#{}", id - 5_000_000_000 + 1000),
        email: customer.as_ref().and_then(|c| c.email.clone()),
        customer,
        created_at: created,
        updated_at: created + chrono::Duration::seconds(rng.random_range(0..86_400)),
        cancelled_at: rng
            .random_ratio(1, 12)
            .then_some(created + chrono::Duration::hours(1)),
        test: rng.random_ratio(1, 25),
        financial_status: statuses[rng.random_range(0..statuses.len())].into(),
        total: format!(
            "{}.{:02}",
            rng.random_range(0..900),
            rng.random_range(0..100)
        ),
        currency: "USD".into(),
    }
}

async fn sim(orders: Vec<SimOrder>, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::new(SHOP, TOKEN);
    config.bulk_duration = Duration::from_millis(150);
    tweak(&mut config);
    let sim = SimHandle::start(config).await.unwrap();
    sim.upsert_orders(orders);
    sim
}

fn settings_for(sim: &SimHandle, bootstrap: &str) -> ingest::config::Settings {
    let mut s = settings(bootstrap);
    s.shopify.shops.insert(
        SHOP.into(),
        ingest::config::ShopSecrets {
            admin_access_token: Some(TOKEN.to_owned().into()),
            admin_api_url: Some(sim.base_url()),
            ..Default::default()
        },
    );
    s
}

fn args(state_dir: &std::path::Path, execute: bool) -> BackfillArgs {
    BackfillArgs {
        shop: SHOP.into(),
        since: None,
        execute,
        state_dir: state_dir.to_owned(),
        poll_interval: Duration::from_millis(20),
        accept_recent_only: false,
        chunk: 200,
        progress: false,
        tiers_wait: None,
    }
}

/// Order ids in the orders topic, with how many records each has.
fn order_ids_in(bootstrap: &str) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for m in testkit::topic::read_all(bootstrap, ORDERS) {
        assert_eq!(
            header(&m, h::ORIGIN).as_deref(),
            Some("backfill"),
            "every record here is the backfill's"
        );
        assert_eq!(
            header(&m, h::SHOPIFY_TOPIC).as_deref(),
            Some("orders/updated")
        );
        let body: serde_json::Value =
            serde_json::from_slice(rdkafka::Message::payload(&m).unwrap()).unwrap();
        *out.entry(body["id"].as_u64().unwrap()).or_default() += 1;
    }
    out
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    testkit::topic::header(m, name)
}

#[test]
fn every_query_the_client_sends_is_valid_for_the_pinned_schema() {
    assert_eq!(
        ingest::config::ADMIN_API_VERSION,
        shopify_sim::schema::API_VERSION,
        "the client and the vendored schema pin the same Admin API version"
    );
    for q in [
        ingest::admin_api::SCOPES_QUERY.to_owned(),
        ingest::admin_api::RUN_BULK_MUTATION.to_owned(),
        ingest::admin_api::BULK_STATUS_QUERY.to_owned(),
        ingest::admin_api::CANCEL_BULK_MUTATION.to_owned(),
        ingest::admin_api::bulk_orders_query(None),
        ingest::admin_api::bulk_orders_query(Some(
            "updated_at:>='2024-01-01T00:00:00Z' AND updated_at:<='2024-02-01T00:00:00Z'",
        )),
        ingest::admin_api::orders_page_query(),
        ingest::admin_api::ORDERS_COUNT_QUERY.to_owned(),
        ingest::admin_api::ORDER_EXISTS_QUERY.to_owned(),
        ingest::admin_api::SUBSCRIPTIONS_QUERY.to_owned(),
    ] {
        shopify_sim::graphql::validate(&q).unwrap_or_else(|e| panic!("{q}\n{e}"));
    }
    // The check can fail.
    assert!(shopify_sim::graphql::validate(
        "{ orders(first: 1) { edges { node { totalSpent } } } }"
    )
    .is_err());
}

/// The same order read from a webhook and from a bulk result must normalise identically, or
/// the version rule would see two versions of one state (and facts could flip).
#[tokio::test]
async fn a_backfilled_order_normalises_exactly_as_its_webhook() {
    let orders = shop_orders(60, 3);
    let sim = sim(orders.clone(), |_| {}).await;
    let s = settings_for(&sim, "unused:9092");
    let client = ingest::admin_api::AdminClient::new(s.admin_api(SHOP).unwrap()).unwrap();
    let data = client
        .graphql(
            &format!(
                "{{ orders(first: 250) {{ edges {{ node {{ {} }} }} }} }}",
                ingest::admin_api::ORDER_FIELDS
            ),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    let nodes = data["orders"]["edges"].as_array().unwrap();
    assert_eq!(nodes.len(), orders.len());
    for edge in nodes {
        let node = &edge["node"];
        let id: u64 = node["legacyResourceId"].as_str().unwrap().parse().unwrap();
        let o = orders.iter().find(|o| o.id == id).unwrap();
        let from_backfill = backfill::rest_body(node).unwrap();
        let from_webhook = o.webhook_body().into_bytes();
        let topic = ShopifyTopic::OrdersUpdated;
        assert_eq!(
            schemas::record_key(SHOP, topic, &from_backfill).unwrap(),
            schemas::record_key(SHOP, topic, &from_webhook).unwrap()
        );
        assert_eq!(
            segmenter::normalize::normalize(topic, &from_backfill).unwrap(),
            segmenter::normalize::normalize(topic, &from_webhook).unwrap(),
            "order {id}"
        );
    }
}

#[tokio::test]
async fn a_dry_run_reports_and_an_execute_publishes_every_order_once() {
    let broker = testkit::Broker::embedded(PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let orders = shop_orders(700, 1);
    let sim = sim(orders.clone(), |_| {}).await;
    let s = settings_for(&sim, &bootstrap);
    let dir = tempfile::tempdir().unwrap();

    let dry = backfill::run(&s, None, &args(dir.path(), false))
        .await
        .unwrap();
    assert_eq!(dry.orders, orders.len() as u64);
    assert_eq!(dry.published, 0);
    assert_eq!(dry.customers, 700);
    assert_eq!(
        dry.guest_orders,
        orders.iter().filter(|o| o.customer.is_none()).count() as u64
    );
    assert_eq!(
        dry.test_orders,
        orders.iter().filter(|o| o.test).count() as u64
    );
    assert_eq!(
        testkit::topic::count(&bootstrap, ORDERS),
        0,
        "a dry run writes nothing"
    );
    let report = backfill::report(&dry, false);
    assert!(report.contains("nothing published"), "{report}");

    // --execute right after reuses the dry run's operation. No segmenter runs here: the tier
    // report gives up waiting and says so (the backfill itself succeeded).
    let mut execute = args(dir.path(), true);
    execute.tiers_wait = Some(Duration::from_secs(2));
    let done = backfill::run(&s, Some(&bootstrap), &execute).await.unwrap();
    let tiers = done.tiers.clone().expect("a tier report");
    assert_eq!(
        tiers.before,
        BTreeMap::from([(ingest::tier_moves::NONE.to_owned(), 700)])
    );
    assert_eq!(tiers.moves, None);
    let why = tiers.after_missing.clone().unwrap();
    assert!(why.contains("records behind"), "{why}");
    assert!(backfill::report(&done, true).contains("no tiers after"));
    assert_eq!(done.operation_id, dry.operation_id);
    assert_eq!(done.published, orders.len() as u64);
    let ids = order_ids_in(&bootstrap);
    let want: BTreeSet<u64> = orders.iter().map(|o| o.id).collect();
    assert_eq!(ids.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(ids.values().all(|n| *n == 1), "each order once");
    drop(broker);
}

#[tokio::test]
async fn a_killed_backfill_resumes_from_its_checkpoint_without_loss() {
    let broker = testkit::Broker::embedded(PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let orders = shop_orders(3000, 2);
    let sim = sim(orders.clone(), |_| {}).await;
    let s = settings_for(&sim, &bootstrap);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), true);
    a.chunk = 50;
    // A slower broker (20 ms a round trip) gives the kill time to land mid-stream.
    broker
        .mock()
        .broker_round_trip_time(-1, Duration::from_millis(20))
        .unwrap();

    // Killed (the task dropped at an await point, no cleanup) once some chunks are in.
    let checkpoint = dir.path().join(format!("backfill-{SHOP}.json"));
    let run = {
        let (s, a, b) = (s.clone(), a.clone(), bootstrap.clone());
        tokio::spawn(async move { backfill::run(&s, Some(&b), &a).await })
    };
    let done_at_kill = loop {
        if let Ok(text) = std::fs::read(&checkpoint) {
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
            let done = v["lines_done"].as_u64().unwrap_or(0);
            if done >= 1000 {
                break done;
            }
        }
        assert!(
            !run.is_finished(),
            "the backfill ended before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert!((done_at_kill as usize) < orders.len());

    let resumed = backfill::run(&s, Some(&bootstrap), &a).await.unwrap();
    assert!(resumed.resumed_after >= done_at_kill, "{resumed:?}");
    assert_eq!(resumed.resumed_after + resumed.orders, orders.len() as u64);
    let ids = order_ids_in(&bootstrap);
    let want: BTreeSet<u64> = orders.iter().map(|o| o.id).collect();
    assert_eq!(
        ids.keys().copied().collect::<BTreeSet<_>>(),
        want,
        "nothing lost"
    );
    // What was sent but not yet checkpointed at the kill is published again (the version rule
    // absorbs it): at most a checkpoint interval plus the records in flight.
    let twice = ids.values().filter(|n| **n > 1).count();
    assert!(
        twice <= a.chunk + backfill::MAX_IN_FLIGHT,
        "{twice} orders published twice"
    );
    drop(broker);
}

#[tokio::test]
async fn shopify_failures_are_handled_as_documented() {
    let orders = shop_orders(40, 4);
    let dir = tempfile::tempdir().unwrap();

    // Throttled by cost, then 429s and a 502: waited out and retried, the run completes.
    // The bulk mutation costs 10 points: after the scope query (2) a 10.5-point bucket must
    // wait for it.
    let sim1 = sim(orders.clone(), |c| {
        c.cost_bucket = 10.5;
        c.cost_restore_per_second = 5.0;
    })
    .await;
    sim1.set_faults(Faults {
        too_many_requests: 2,
        server_errors: 1,
        ..Faults::default()
    });
    let s = settings_for(&sim1, "unused:9092");
    let r = backfill::run(&s, None, &args(dir.path(), false))
        .await
        .unwrap();
    assert_eq!(r.orders, orders.len() as u64);
    assert!(
        sim1.requests("throttled") > 0,
        "the small bucket throttled some requests"
    );
    assert_eq!(sim1.requests("too_many_requests"), 2);
    assert_eq!(sim1.requests("server_error"), 1);

    // A failed operation is reported with its code and forgotten.
    let sim2 = sim(orders.clone(), |_| {}).await;
    sim2.set_faults(Faults {
        fail_next_bulk: Some("TIMEOUT".into()),
        partial_lines: 5,
        ..Faults::default()
    });
    let s = settings_for(&sim2, "unused:9092");
    let d2 = tempfile::tempdir().unwrap();
    let e = backfill::run(&s, None, &args(d2.path(), false))
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("TIMEOUT") && e.contains("--since"), "{e}");
    // The next run starts a new operation, which completes.
    let r = backfill::run(&s, None, &args(d2.path(), false))
        .await
        .unwrap();
    assert_eq!(r.orders, orders.len() as u64);

    // Canceled by someone else.
    sim2.set_faults(Faults {
        cancel_next_bulk: true,
        ..Faults::default()
    });
    let e = backfill::run(&s, None, &args(tempfile::tempdir().unwrap().path(), false))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("canceled"), "{e:#}");

    // Another bulk query of the app is running: Shopify allows one at a time.
    let sim3 = sim(orders.clone(), |c| {
        c.bulk_duration = Duration::from_secs(30)
    })
    .await;
    let s3 = settings_for(&sim3, "unused:9092");
    let client = ingest::admin_api::AdminClient::new(s3.admin_api(SHOP).unwrap()).unwrap();
    let data = client
        .graphql(
            ingest::admin_api::RUN_BULK_MUTATION,
            serde_json::json!({"query": ingest::admin_api::bulk_orders_query(None)}),
        )
        .await
        .unwrap();
    assert!(data["bulkOperationRunQuery"]["bulkOperation"]["id"].is_string());
    let e = backfill::run(&s3, None, &args(tempfile::tempdir().unwrap().path(), false))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("OPERATION_IN_PROGRESS"), "{e:#}");

    // A result URL that has expired: a new operation replaces it once, then the run fails.
    let sim4 = sim(orders.clone(), |c| c.bulk_url_ttl = Duration::ZERO).await;
    let s4 = settings_for(&sim4, "unused:9092");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let e = backfill::run(&s4, None, &args(tempfile::tempdir().unwrap().path(), false))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("expired twice"), "{e:#}");
    assert_eq!(sim4.requests("bulk_download_expired"), 2);

    // A token Shopify does not know: refused with the fix named, never retried.
    let mut bad = settings_for(&sim4, "unused:9092");
    bad.shopify.shops.get_mut(SHOP).unwrap().admin_access_token =
        Some("shpat_revoked".to_owned().into());
    let e = backfill::run(
        &bad,
        None,
        &args(tempfile::tempdir().unwrap().path(), false),
    )
    .await
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("refused the access token") && e.contains("admin_access_token"),
        "{e}"
    );
    assert_eq!(sim4.requests("unauthorized"), 1);
}

/// Without `read_all_orders` Shopify silently shows 60 days of orders: detected and refused,
/// or (when told) backfilled knowingly.
#[tokio::test]
async fn a_token_without_read_all_orders_is_detected_not_trusted() {
    let orders = shop_orders(200, 5);
    let sim = sim(orders.clone(), |c| {
        c.tokens = vec![AccessToken {
            token: TOKEN.into(),
            scopes: vec!["read_orders".into()],
        }]
    })
    .await;
    let s = settings_for(&sim, "unused:9092");
    let dir = tempfile::tempdir().unwrap();
    let e = backfill::run(&s, None, &args(dir.path(), false))
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("read_all_orders") && e.contains("60 days"),
        "{e}"
    );
    let mut a = args(dir.path(), false);
    a.accept_recent_only = true;
    let r = backfill::run(&s, None, &a).await.unwrap();
    let recent = orders
        .iter()
        .filter(|o| o.created_at > Utc::now() - chrono::Duration::days(60))
        .count() as u64;
    assert_eq!(r.orders, recent);
    assert!(recent < orders.len() as u64);
}

#[test]
fn admin_api_settings_are_checked_with_the_fix_named() {
    let mut s = settings("b:9092");
    let e = s.admin_api(SHOP).unwrap_err().to_string();
    assert!(e.contains("admin_access_token"), "{e}");
    s.shopify.shops.insert(
        SHOP.into(),
        ingest::config::ShopSecrets {
            admin_access_token: Some("shpat_x".to_owned().into()),
            admin_api_url: Some("http://shop.example.com".into()),
            ..Default::default()
        },
    );
    let e = s.admin_api(SHOP).unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
    let shop = s.shopify.shops.get_mut(SHOP).unwrap();
    shop.admin_api_url = None;
    shop.admin_api_version = Some("2024-01".into());
    let e = s.admin_api(SHOP).unwrap_err().to_string();
    assert!(e.contains("2026-10"), "{e}");
    s.shopify.shops.get_mut(SHOP).unwrap().admin_api_version = None;
    let api = s.admin_api(SHOP).unwrap();
    assert_eq!(
        api.graphql_url.as_str(),
        format!("https://{SHOP}/admin/api/2026-10/graphql.json")
    );
    // The token is never printed.
    assert!(!format!("{api:?}").contains("shpat_x"));
    s.validate().unwrap();
}

/// A reconcile sweep reads the window page by page and publishes each order with
/// `tierflow-origin: reconcile`; the watermark moves only after a complete sweep, and the
/// next sweep starts there (minus the overlap).
#[tokio::test]
async fn reconcile_sweeps_a_window_and_moves_the_watermark_only_when_complete() {
    use ingest::reconcile::{sweep, ReconcileArgs};
    let broker = testkit::Broker::embedded(PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    // 600 orders updated over the last 600 hours.
    let now = Utc::now();
    let mut orders = shop_orders(300, 6);
    orders.truncate(600);
    for (i, o) in orders.iter_mut().enumerate() {
        o.created_at = now - chrono::Duration::days(30);
        o.updated_at = Utc
            .timestamp_opt((now - chrono::Duration::hours(i as i64 + 1)).timestamp(), 0)
            .unwrap();
    }
    // A page of 250 orders costs ~1,000 points: a Plus shop's restore rate keeps this quick.
    let sim = sim(orders.clone(), |c| c.cost_restore_per_second = 1000.0).await;
    let s = settings_for(&sim, &bootstrap);
    let dir = tempfile::tempdir().unwrap();
    let since = (now - chrono::Duration::hours(300)).to_rfc3339();
    let args = ReconcileArgs {
        shop: SHOP.into(),
        since: None,
        overlap: Duration::from_secs(600),
        execute: true,
        state_dir: dir.path().to_owned(),
        check_subscriptions: true,
        bulk_above: 1000,
        poll_interval: Duration::from_millis(20),
    };
    // Subscribed to every accepted topic but orders/delete (compliance topics are declared in
    // the app's configuration, not subscribed).
    sim.shared.lock().subscriptions = s
        .ingest
        .topics
        .iter()
        .filter(|t| **t != ShopifyTopic::OrdersDelete)
        .map(|t| {
            (
                ingest::reconcile::subscription_topic(*t),
                "https://tierflow.example/webhooks/shopify".into(),
            )
        })
        .filter(|(t, _)| {
            !t.starts_with("CUSTOMERS_REDACT")
                && !t.starts_with("CUSTOMERS_DATA")
                && t != "SHOP_REDACT"
        })
        .collect();
    let client = ingest::admin_api::AdminClient::new(s.admin_api(SHOP).unwrap())
        .unwrap()
        .with_retry_base(Duration::from_millis(1));
    let e = sweep(&s, Some(&bootstrap), &args, &client)
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("--since"),
        "the first sweep needs a start"
    );

    let first = ReconcileArgs {
        since: Some(since),
        ..args.clone()
    };
    let swept = sweep(&s, Some(&bootstrap), &first, &client).await.unwrap();
    assert_eq!(swept.orders.orders, 300, "{swept:?}");
    assert_eq!(swept.pages, 2);
    assert_eq!(swept.missing_subscriptions, ["orders/delete"]);
    let report = ingest::reconcile::report(&swept, true);
    assert!(
        report.contains("NO WEBHOOK SUBSCRIPTION for orders/delete"),
        "{report}"
    );
    assert_eq!(swept.orders.published, 300);
    let records = testkit::topic::read_all(&bootstrap, ORDERS);
    assert_eq!(records.len(), 300);
    assert!(records
        .iter()
        .all(|m| header(m, h::ORIGIN).as_deref() == Some("reconcile")));

    // A sweep that fails half-way (Shopify keeps answering 502) leaves the watermark.
    let watermark = std::fs::read(dir.path().join(format!("reconcile-{SHOP}.json"))).unwrap();
    sim.upsert_orders(orders.iter().take(3).map(|o| SimOrder {
        updated_at: Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap(),
        ..o.clone()
    }));
    sim.set_faults(Faults {
        server_errors: 100,
        ..Faults::default()
    });
    assert!(sweep(&s, Some(&bootstrap), &args, &client).await.is_err());
    assert_eq!(
        std::fs::read(dir.path().join(format!("reconcile-{SHOP}.json"))).unwrap(),
        watermark
    );
    // Once Shopify answers again, the next sweep covers the window from the watermark (minus
    // ten minutes of overlap): the three orders updated since.
    sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let swept = sweep(&s, Some(&bootstrap), &args, &client).await.unwrap();
    assert_eq!(swept.orders.orders, 3, "{swept:?}");
    drop(broker);
}

/// A window with more orders than `bulk_above` is read with one bulk operation (no pages);
/// while another bulk query of the app holds the shop's one slot (a backfill), the sweep
/// pages instead of failing; a bulk operation that fails leaves the watermark.
#[tokio::test]
async fn reconcile_reads_a_large_window_with_a_bulk_operation() {
    use ingest::reconcile::{sweep, ReconcileArgs};
    let broker = testkit::Broker::embedded(PARTITIONS);
    let bootstrap = broker.bootstrap_servers();
    let now = Utc::now();
    let mut orders = shop_orders(300, 8);
    orders.truncate(400);
    for (i, o) in orders.iter_mut().enumerate() {
        o.created_at = now - chrono::Duration::days(30);
        o.updated_at = Utc
            .timestamp_opt(
                (now - chrono::Duration::minutes(i as i64 + 1)).timestamp(),
                0,
            )
            .unwrap();
    }
    let sim = sim(orders.clone(), |c| c.cost_restore_per_second = 1000.0).await;
    let s = settings_for(&sim, &bootstrap);
    let dir = tempfile::tempdir().unwrap();
    let args = ReconcileArgs {
        shop: SHOP.into(),
        since: Some((now - chrono::Duration::days(1)).to_rfc3339()),
        overlap: Duration::from_secs(600),
        execute: true,
        state_dir: dir.path().to_owned(),
        check_subscriptions: false,
        bulk_above: 100,
        poll_interval: Duration::from_millis(20),
    };
    let client = ingest::admin_api::AdminClient::new(s.admin_api(SHOP).unwrap())
        .unwrap()
        .with_retry_base(Duration::from_millis(1));

    // A failed operation fails the sweep and leaves no watermark.
    sim.set_faults(Faults {
        fail_next_bulk: Some("INTERNAL_SERVER_ERROR".into()),
        ..Faults::default()
    });
    let e = sweep(&s, Some(&bootstrap), &args, &client)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("INTERNAL_SERVER_ERROR"), "{e:#}");
    assert!(!dir.path().join(format!("reconcile-{SHOP}.json")).exists());
    assert!(testkit::topic::read_all(&bootstrap, ORDERS).is_empty());

    let swept = sweep(&s, Some(&bootstrap), &args, &client).await.unwrap();
    assert_eq!(swept.orders.orders, 400, "{swept:?}");
    assert_eq!(swept.orders.published, 400);
    assert_eq!(swept.pages, 0);
    assert!(swept.bulk_operation.is_some());
    assert_eq!(
        sim.shared.lock().bulk.len(),
        2,
        "the failed operation and its successor"
    );
    let records = testkit::topic::read_all(&bootstrap, ORDERS);
    let ids: BTreeSet<u64> = records
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!((records.len(), ids.len()), (400, 400));
    assert!(records
        .iter()
        .all(|m| header(m, h::ORIGIN).as_deref() == Some("reconcile")));

    // Another bulk operation running: the same window (from the same start) is paged.
    let slow = sim_slow_bulk(orders).await;
    let s = settings_for(&slow, &bootstrap);
    let client = ingest::admin_api::AdminClient::new(s.admin_api(SHOP).unwrap()).unwrap();
    client
        .graphql(
            ingest::admin_api::RUN_BULK_MUTATION,
            serde_json::json!({"query": ingest::admin_api::bulk_orders_query(None)}),
        )
        .await
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    let paged = sweep(
        &s,
        Some(&bootstrap),
        &ReconcileArgs {
            state_dir: other.path().to_owned(),
            ..args
        },
        &client,
    )
    .await
    .unwrap();
    assert_eq!((paged.orders.orders, paged.pages), (400, 2), "{paged:?}");
    assert!(paged.bulk_operation.is_none());
    drop(broker);
}

/// A simulator whose bulk operations run for a minute.
async fn sim_slow_bulk(orders: Vec<SimOrder>) -> SimHandle {
    sim(orders, |c| {
        c.cost_restore_per_second = 1000.0;
        c.bulk_duration = Duration::from_secs(60);
    })
    .await
}

/// `backfill --cancel`: a backfill stopped while its operation still runs at Shopify holds
/// the app's one bulk slot; cancel frees it and makes the checkpoint forget the operation.
#[tokio::test]
async fn cancel_frees_the_shops_bulk_slot_and_forgets_the_operation() {
    let sim = sim_slow_bulk(shop_orders(20, 9)).await;
    let s = settings_for(&sim, "unused:9092");
    let dir = tempfile::tempdir().unwrap();
    let e = backfill::cancel(&s, SHOP, dir.path()).await.unwrap_err();
    assert!(format!("{e:#}").contains("no backfill checkpoint"), "{e:#}");
    // The run is stopped while Shopify still runs its operation.
    let stopped = tokio::time::timeout(
        Duration::from_secs(1),
        backfill::run(&s, None, &args(dir.path(), false)),
    )
    .await;
    assert!(stopped.is_err(), "the operation takes a minute");
    let client = ingest::admin_api::AdminClient::new(s.admin_api(SHOP).unwrap()).unwrap();
    let run = |client: ingest::admin_api::AdminClient| async move {
        client
            .graphql(
                ingest::admin_api::RUN_BULK_MUTATION,
                serde_json::json!({"query": ingest::admin_api::bulk_orders_query(None)}),
            )
            .await
            .unwrap()["bulkOperationRunQuery"]["userErrors"]
            .clone()
    };
    let refused = run(client.clone()).await;
    assert_eq!(refused[0]["code"], "OPERATION_IN_PROGRESS", "{refused}");

    let done = backfill::cancel(&s, SHOP, dir.path()).await.unwrap();
    assert!(done.contains("CANCEL"), "{done}");
    assert_eq!(run(client).await, serde_json::json!([]), "the slot is free");
    let e = backfill::cancel(&s, SHOP, dir.path()).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("holds no bulk operation"),
        "{e:#}"
    );
}

/// The topic header is unsigned: a signed `{"id": N}` deletion body of another resource
/// re-sent as `orders/delete` must not delete order N. For a shop with Admin API access the
/// ingest asks whether the order is gone: an order Shopify still has is refused (422, nothing
/// published), a gone one is published, and an Admin API that fails publishes unchecked
/// rather than have Shopify retry until it drops the subscription.
#[tokio::test]
async fn an_orders_delete_of_an_order_shopify_still_has_is_refused() {
    let orders = shop_orders(20, 10);
    let sim = sim(orders.clone(), |_| {}).await;
    let base_url = sim.base_url();
    let app = spawn_app(|s| {
        s.shopify.shops.insert(
            SHOP.into(),
            ingest::config::ShopSecrets {
                admin_access_token: Some(TOKEN.to_owned().into()),
                admin_api_url: Some(base_url),
                ..Default::default()
            },
        );
    })
    .await;
    let delete = |id: u64, n: u32| {
        signed(
            "orders/delete",
            &format!("delete-{n}"),
            format!(r#"{{"id":{id}}}"#).as_bytes(),
        )
    };
    let live = app.send(&delete(orders[0].id, 1)).await;
    assert_eq!(live.status(), 422);
    assert!(live.text().await.unwrap().contains("exists"));
    assert_eq!(app.count(ORDERS), 0);

    let gone = app.send(&delete(987_654_321, 2)).await;
    assert_eq!(gone.status(), 200);
    let records = app.read(ORDERS, 1, Duration::from_secs(10)).await;
    assert_eq!(key_of(&records[0]), format!("{SHOP}/order/987654321"));

    // Shopify's Admin API failing: published unchecked, within Shopify's deadline.
    sim.set_faults(Faults {
        server_errors: 1000,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let failed = app.send(&delete(orders[1].id, 3)).await;
    assert_eq!(failed.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    app.read(ORDERS, 2, Duration::from_secs(10)).await;

    let metrics = app.metrics().await;
    for result in ["refused", "confirmed", "failed"] {
        assert!(
            metrics.contains(&format!(
                "tierflow_ingest_deletion_checks_total{{result=\"{result}\"}} 1"
            )),
            "{result}: {metrics}"
        );
    }
    assert!(metrics.contains("outcome=\"not_deleted\""), "{metrics}");
}
