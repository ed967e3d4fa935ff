//! The writer against a real Kafka protocol peer (librdkafka's mock cluster) and the Okta
//! simulator over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use okta_sim::{AttrType, Bucket, Faults, SimConfig};
use schemas::headers::dlq;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_update_lands_exactly_despite_5xx_and_tight_limits() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(
        SimConfig {
            faults: Faults {
                error_rate: 0.2,
                conflict_rate: 0.05,
                ..Faults::default()
            },
            window: Duration::from_secs(1),
            limits: BTreeMap::from([
                (Bucket::UsersGet, 60),
                (Bucket::UsersUpdate, 40),
                (Bucket::Groups, 60),
            ]),
            max_concurrency: 6,
            ..SimConfig::default()
        },
        30,
    )
    .await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-exact");
    let mut updates = Vec::new();
    let mut finals = Vec::new();
    for c in 0..30 {
        let h = history(c, 1 + c % 4, 9_000 + 7 * c as i64);
        finals.push(h.last().unwrap().clone());
        updates.extend(h);
    }
    produce(&bootstrap, &updates).await;
    let writer = start(settings.clone(), &bootstrap).await;
    wait_for(
        "every customer's final state in Okta",
        Duration::from_secs(90),
        || finals.iter().all(|u| okta_matches(&sim, u)),
    )
    .await;
    let metrics = writer.metrics().await;
    assert!(
        metric_sum(&metrics, "tierflow_okta_retries_total") > 0.0,
        "the 5xx share must have caused retries"
    );
    assert_eq!(
        metric_sum(&metrics, "tierflow_okta_writer_dead_letters_total"),
        0.0
    );
    writer.stop().await;
    assert!(
        dead_letters(&settings, &bootstrap).await.entries.is_empty(),
        "no dead letters"
    );
    let served_5xx = sim
        .shared
        .requests()
        .iter()
        .filter(|r| r.status >= 500)
        .count();
    assert!(served_5xx > 10, "only {served_5xx} injected 5xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_dead_lettered_with_context_and_redrive_applies_them_once_fixed() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 3).await;
    // Customer 7 has no Okta user (404 on lookup); the org's schema types shopify_orders_count
    // as a string, so every profile update is a 400 validation error until fixed.
    sim.shared
        .declare_attribute("shopify_orders_count", AttrType::String);
    let settings = settings(&bootstrap, &sim.base_url(), "w-dlq");
    let missing = update(7, 2_500, 1, None);
    let invalid = update(1, 12_000, 2, Some("Potential"));
    produce(&bootstrap, &[missing.clone(), invalid.clone()]).await;
    let writer = start(settings.clone(), &bootstrap).await;
    let dl = wait_dead_letters(&settings, &bootstrap, 2).await;
    assert_eq!(dl.entries.len(), 2, "{dl:?}");
    let by_key = |k: &str| dl.entries.iter().find(|e| e.key_str() == k).unwrap();
    let e = by_key(&key(&missing));
    assert_eq!(e.reason(), "missing_user");
    assert_eq!(e.header(dlq::HTTP_STATUS), Some("404"));
    assert_eq!(e.header(dlq::OKTA_ERROR_CODE), Some("E0000007"));
    assert_eq!(e.header(dlq::OPERATION), Some("getUser"));
    assert_eq!(
        e.value.as_deref(),
        Some(serde_json::to_vec(&missing).unwrap().as_slice())
    );
    let e = by_key(&key(&invalid));
    assert_eq!(e.reason(), "okta_rejected");
    assert_eq!(e.header(dlq::HTTP_STATUS), Some("400"));
    assert_eq!(e.header(dlq::OKTA_ERROR_CODE), Some("E0000001"));
    assert_eq!(e.header(dlq::OPERATION), Some("updateUser"));
    assert!(e
        .header(dlq::OKTA_ERROR_ID)
        .is_some_and(|v| v.starts_with("oae")));
    assert!(e
        .header(dlq::OKTA_REQUEST_ID)
        .is_some_and(|v| v.len() == 20));
    assert!(
        e.header(dlq::EXCEPTION_MESSAGE)
            .is_some_and(|m| m.contains("shopify_orders_count")),
        "{:?}",
        e.header(dlq::EXCEPTION_MESSAGE)
    );
    assert_eq!(e.header(dlq::EXCEPTION_CLASS), Some("okta.okta_rejected"));
    assert_eq!(e.header(dlq::TOPIC), Some("customer.segments"));
    assert!(e.header(dlq::PARTITION).is_some() && e.header(dlq::OFFSET).is_some());
    assert_eq!(e.header(dlq::ATTEMPTS), Some("1"), "a 400 is not retried");
    assert!(e.header(dlq::FIRST_FAILURE_AT).is_some() && e.header(dlq::LAST_FAILURE_AT).is_some());
    assert_eq!(
        e.header(schemas::headers::EVENT_ID),
        Some(invalid.event_id.as_str()),
        "original headers kept"
    );
    writer.stop().await;

    // The list summarises both as open.
    let (s, b) = (settings.clone(), bootstrap.clone());
    let listing = tokio::task::spawn_blocking(move || {
        okta_writer::dlq::list(&s, &b, &Default::default(), 10)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        listing.contains("2 open")
            && listing.contains("missing_user")
            && listing.contains("okta_rejected"),
        "{listing}"
    );

    // A dry run changes nothing.
    let applier = okta_writer::applier(&settings, okta_writer::metrics::Metrics::unregistered())
        .await
        .unwrap();
    let dry = okta_writer::dlq::redrive(
        &settings,
        &bootstrap,
        &applier,
        &Default::default(),
        false,
        100.0,
    )
    .await
    .unwrap();
    assert!(
        dry.iter().all(|r| r.outcome == "would_redrive") && dry.len() == 2,
        "{dry:?}"
    );
    let report = okta_writer::dlq::redrive_report(&dry, false);
    assert!(
        report.ends_with("dry run (add --execute to apply): 2 entries: 2 would_redrive\n"),
        "{report}"
    );
    assert!(!okta_matches(&sim, &invalid));

    // Fix the causes, then redrive.
    sim.shared
        .declare_attribute("shopify_orders_count", AttrType::Integer);
    sim.shared
        .add_user(&okta_sim::SeedUser {
            login: email(7),
            email: Some(email(7)),
            ..Default::default()
        })
        .unwrap();
    let done = okta_writer::dlq::redrive(
        &settings,
        &bootstrap,
        &applier,
        &Default::default(),
        true,
        100.0,
    )
    .await
    .unwrap();
    assert!(
        done.iter().all(|r| r.outcome == "applied") && done.len() == 2,
        "{done:?}"
    );
    let report = okta_writer::dlq::redrive_report(&done, true);
    assert!(report.ends_with("\n2 entries: 2 applied\n"), "{report}");
    assert!(okta_matches(&sim, &invalid) && okta_matches(&sim, &missing));
    let after = dead_letters(&settings, &bootstrap).await;
    assert_eq!(after.open().count(), 0, "redriven entries are resolved");
    // A second redrive finds nothing to do.
    let again = okta_writer::dlq::redrive(
        &settings,
        &bootstrap,
        &applier,
        &Default::default(),
        true,
        100.0,
    )
    .await
    .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_leaves_entries_superseded_by_a_later_update() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 0).await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-superseded");
    let old = update(3, 60_000, 5, Some("Active"));
    produce(&bootstrap, &[old]).await;
    let writer = start(settings.clone(), &bootstrap).await;
    let dl = wait_dead_letters(&settings, &bootstrap, 1).await;
    assert_eq!(dl.entries.len(), 1);
    // The user appears, and a newer update (a refund) is applied normally.
    sim.shared
        .add_user(&okta_sim::SeedUser {
            login: email(3),
            email: Some(email(3)),
            ..Default::default()
        })
        .unwrap();
    let newer = update(3, 40_000, 5, Some("VIP"));
    produce(&bootstrap, std::slice::from_ref(&newer)).await;
    wait_for("the newer update", Duration::from_secs(30), || {
        okta_matches(&sim, &newer)
    })
    .await;
    writer.stop().await;
    let applier = okta_writer::applier(&settings, okta_writer::metrics::Metrics::unregistered())
        .await
        .unwrap();
    let r = okta_writer::dlq::redrive(
        &settings,
        &bootstrap,
        &applier,
        &Default::default(),
        true,
        100.0,
    )
    .await
    .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, "superseded", "{r:?}");
    assert!(
        okta_matches(&sim, &newer),
        "the old entry must not overwrite the newer state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_updates_for_one_customer_costs_at_most_3_calls() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 1).await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-burst");
    let writer = start(settings.clone(), &bootstrap).await;
    // First contact (lookup, profile, groups read, membership) warms the cache.
    let first = update(0, 500, 1, None);
    produce(&bootstrap, std::slice::from_ref(&first)).await;
    wait_for("the first update", Duration::from_secs(30), || {
        okta_matches(&sim, &first)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.shared.clear_requests();
    let mut burst = Vec::new();
    let mut prev = "New";
    for i in 2..=101u64 {
        let cents = 500 + 700 * i as i64;
        burst.push(update(0, cents, i, Some(prev)));
        prev = tier_of(cents);
    }
    produce(&bootstrap, &burst).await;
    let last = burst.last().unwrap().clone();
    wait_for("the burst's last state", Duration::from_secs(30), || {
        okta_matches(&sim, &last)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = sim.shared.requests();
    assert!(
        calls.len() <= 3,
        "{} calls: {:?}",
        calls.len(),
        calls
            .iter()
            .map(|c| (&c.method, &c.uri))
            .collect::<Vec<_>>()
    );
    assert!(
        writer
            .metric("tierflow_okta_writer_updates_total{outcome=\"coalesced\"}")
            .await
            >= 90.0
    );
    // A spend-only change (same tier) is one call.
    sim.shared.clear_requests();
    let spend_only = update(0, 500 + 700 * 101 + 1, 102, Some(tier_of(500 + 700 * 101)));
    produce(&bootstrap, std::slice::from_ref(&spend_only)).await;
    wait_for("the spend-only update", Duration::from_secs(30), || {
        okta_matches(&sim, &spend_only)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.shared.requests().len(), 1);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_storm_pauses_without_dead_letters_and_resumes() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 20).await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-401");
    let writer = start(settings.clone(), &bootstrap).await;
    let warm = update(0, 300, 1, None);
    produce(&bootstrap, std::slice::from_ref(&warm)).await;
    wait_for("a first update", Duration::from_secs(30), || {
        okta_matches(&sim, &warm)
    })
    .await;
    // The token is revoked: every call is 401.
    sim.shared.set_api_tokens(vec!["rotated".into()]);
    let updates: Vec<_> = (1..20)
        .map(|c| update(c, 20_000 + c as i64, 2, Some("Potential")))
        .collect();
    produce(&bootstrap, &updates).await;
    let started = std::time::Instant::now();
    loop {
        if writer
            .metric("tierflow_okta_writer_credentials_paused")
            .await
            == 1.0
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While paused only one probe at a time goes out, with a growing pause in between
    // (300 ms doubling to 1 s here): a handful of calls in 2 s, not one per waiting update.
    let unauthorized = || {
        sim.shared
            .requests()
            .iter()
            .filter(|r| r.status == 401)
            .count()
    };
    let at_pause = unauthorized();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = unauthorized() - at_pause;
    assert!((1..=6).contains(&during), "{during} calls in 2 s of pause");
    assert_eq!(
        writer
            .metric("tierflow_okta_writer_dead_letters_total")
            .await,
        0.0
    );
    // Credentials fixed: everything lands.
    sim.shared.set_api_tokens(vec!["sim-token".into()]);
    wait_for(
        "all updates after the storm",
        Duration::from_secs(30),
        || updates.iter().all(|u| okta_matches(&sim, u)),
    )
    .await;
    assert_eq!(
        writer
            .metric("tierflow_okta_writer_credentials_paused")
            .await,
        0.0
    );
    writer.stop().await;
    assert!(dead_letters(&settings, &bootstrap).await.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_within_the_bucket_using_most_of_the_share() {
    const LIMIT: u32 = 40;
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    // Only the profile-update bucket is tight; users start in their target tier, so each
    // customer costs getUser + updateUser + listUserGroups.
    let sim = sim(
        SimConfig {
            window: Duration::from_secs(1),
            limits: BTreeMap::from([(Bucket::UsersUpdate, LIMIT)]),
            ..SimConfig::default()
        },
        100,
    )
    .await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-pacing");
    let updates: Vec<_> = (0..100).map(|c| update(c, 50, 1, None)).collect();
    produce(&bootstrap, &updates).await;
    let writer = start(settings.clone(), &bootstrap).await;
    wait_for("the backlog", Duration::from_secs(60), || {
        updates.iter().all(|u| okta_matches(&sim, u))
    })
    .await;
    writer.stop().await;
    let log = sim.shared.requests();
    let profile: Vec<_> = log.iter().filter(|r| r.operation == "updateUser").collect();
    assert_eq!(
        profile.iter().filter(|r| r.status == 429).count(),
        0,
        "no 429 once the bucket's headers are known"
    );
    let mut per_window: BTreeMap<u64, u32> = BTreeMap::new();
    for r in &profile {
        *per_window.entry(r.at_ms / 1000).or_default() += 1;
    }
    let share = LIMIT / 2;
    assert!(
        per_window.values().all(|n| *n <= share),
        "over the 50% share: {per_window:?}"
    );
    // Full windows are those strictly between the first and the last.
    let counts: Vec<u32> = per_window.values().copied().collect();
    let full = &counts[1..counts.len() - 1];
    assert!(full.len() >= 2, "{per_window:?}");
    let used: u32 = full.iter().sum();
    let utilisation = f64::from(used) / f64::from(share * full.len() as u32);
    eprintln!("updateUser per 1 s window (limit {LIMIT}, share {share}): {per_window:?}; utilisation of full windows {utilisation:.3}");
    assert!(
        utilisation >= 0.9,
        "used {utilisation:.2} of the budget: {per_window:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_clears_the_attributes_and_every_tier_group() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 2).await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-redact");
    let writer = start(settings.clone(), &bootstrap).await;
    let vip = update(1, 90_000, 9, Some("Potential"));
    produce(&bootstrap, std::slice::from_ref(&vip)).await;
    wait_for("the VIP update", Duration::from_secs(30), || {
        okta_matches(&sim, &vip)
    })
    .await;
    // Drift: someone also put the customer in Active by hand.
    {
        let mut store = sim.shared.store.lock().unwrap();
        let uid = store.user(&email(1)).unwrap().id.clone();
        let gid = store.group_by_name(&group("Active")).unwrap().id.clone();
        store.set_membership(&gid, &uid, true).unwrap();
    }
    let mut redact = update(1, 0, 0, Some("VIP"));
    redact.kind = schemas::UpdateKind::Redact;
    redact.tier = None;
    redact.currency = None;
    redact.event_id = redact.compute_event_id();
    // And a customer the segmenter never knew an email for: skipped, not dead-lettered.
    let mut unknown = redact.clone();
    unknown.customer_id = 77;
    unknown.email = None;
    produce(&bootstrap, &[redact, unknown]).await;
    wait_for("the redaction", Duration::from_secs(30), || {
        sim.shared.groups_of(&email(1)) == ["Everyone"]
            && sim.shared.profile(&email(1)).is_some_and(|p| {
                p["shopify_total_spent"].is_null() && p["shopify_orders_count"].is_null()
            })
    })
    .await;
    let started = std::time::Instant::now();
    while writer
        .metric("tierflow_okta_writer_skipped_total{reason=\"redact_user_not_found\"}")
        .await
        < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the unknown customer's redaction was not skipped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.stop().await;
    assert!(dead_letters(&settings, &bootstrap).await.entries.is_empty());
}

#[tokio::test]
async fn tier_groups_must_exist_once_and_be_okta_groups() {
    use okta_sim::SeedGroup;
    let check = |extra: Vec<SeedGroup>, drop: &'static str| async move {
        let mut seed = okta_sim::seed(&[], &[]);
        for t in TIERS {
            if group(t) != drop {
                seed.groups.push(SeedGroup {
                    name: group(t),
                    group_type: "OKTA_GROUP".into(),
                    description: None,
                });
            }
        }
        seed.groups.extend(extra);
        let sim = okta_sim::SimHandle::start(SimConfig::default(), &seed)
            .await
            .unwrap();
        let s = settings("127.0.0.1:1", &sim.base_url(), "w-groups");
        okta_writer::applier(&s, okta_writer::metrics::Metrics::unregistered())
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    check(vec![], "").await.unwrap();
    let e = check(vec![], "Shopify New").await.unwrap_err();
    assert!(
        e.contains("`Shopify New`") && e.contains("does not exist"),
        "{e}"
    );
    // Same name twice: the simulator refuses duplicate names in a seed, so add it afterwards.
    let mut seed = okta_sim::seed(
        &TIERS
            .map(group)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    seed.groups.truncate(4);
    let sim = okta_sim::SimHandle::start(SimConfig::default(), &seed)
        .await
        .unwrap();
    sim.shared
        .store
        .lock()
        .unwrap()
        .add_group("Shopify VIP", "OKTA_GROUP", None);
    let s = settings("127.0.0.1:1", &sim.base_url(), "w-groups");
    let e = format!(
        "{:#}",
        okta_writer::applier(&s, okta_writer::metrics::Metrics::unregistered())
            .await
            .unwrap_err()
    );
    assert!(e.contains("2 Okta groups are named `Shopify VIP`"), "{e}");
    let e = check(
        vec![SeedGroup {
            name: group("Active"),
            group_type: "APP_GROUP".into(),
            description: None,
        }],
        "Shopify Active",
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("APP_GROUP") && e.contains("`Shopify Active`"),
        "{e}"
    );
}

/// Issue 13's reproduction: shop A's customer spends 600 (VIP), shop B's customer with the
/// same email spends 50 (New), shop A's spends 10 more. With one set of attributes and groups
/// Okta showed 610 and the user in New (A's cached VIP skipped the group call). Each store now
/// owns its attributes and tier groups: A's are the plain names, B's have suffixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_sharing_one_okta_user_never_overwrite_each_other() {
    const SHOP_B: &str = "b-shop.myshopify.com";
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 1).await;
    sim.shared
        .declare_attribute("shopify_total_spent_b", okta_sim::AttrType::Number);
    sim.shared
        .declare_attribute("shopify_orders_count_b", okta_sim::AttrType::Integer);
    {
        let mut store = sim.shared.store.lock().unwrap();
        for t in TIERS {
            store.add_group(&format!("{} (B)", group(t)), "OKTA_GROUP", None);
        }
    }
    let mut settings = settings(&bootstrap, &sim.base_url(), "w-two-stores");
    settings.okta.stores.insert(
        SHOP_B.to_owned(),
        okta_writer::stores::StoreConfig {
            attribute_suffix: "_b".into(),
            group_suffix: " (B)".into(),
        },
    );
    let writer = start(settings.clone(), &bootstrap).await;

    let in_b = |mut u: schemas::SegmentUpdate, customer: u64| {
        u.shop = SHOP_B.to_owned();
        u.customer_id = customer;
        u.event_id = u.compute_event_id();
        u
    };
    // Customer 0 of shop A and customer 9 of shop B are one person: c0@example.com.
    let a_vip = update(0, 60_000, 1, Some("Potential"));
    produce(&bootstrap, std::slice::from_ref(&a_vip)).await;
    wait_for("A's VIP", Duration::from_secs(30), || {
        okta_matches(&sim, &a_vip)
    })
    .await;
    let b_new = in_b(update(0, 5_000, 1, Some("Potential")), 9);
    produce(&bootstrap, &[b_new]).await;
    let a_more = update(0, 61_000, 2, Some("VIP"));
    produce(&bootstrap, std::slice::from_ref(&a_more)).await;
    // And a shop no store declares: dead-lettered, never written.
    let stranger = {
        let mut u = update(0, 1_000, 1, Some("Potential"));
        u.shop = "someone-else.myshopify.com".into();
        u.event_id = u.compute_event_id();
        u
    };
    produce(&bootstrap, &[stranger]).await;
    let want_groups = ["Everyone".to_owned(), group("New") + " (B)", group("VIP")];
    wait_for(
        "both stores' state side by side",
        Duration::from_secs(30),
        || {
            let Some(p) = sim.shared.profile(&email(0)) else {
                return false;
            };
            p["shopify_total_spent"] == serde_json::json!(610.0)
                && p["shopify_orders_count"] == serde_json::json!(2)
                && p["shopify_total_spent_b"] == serde_json::json!(50.0)
                && p["shopify_orders_count_b"] == serde_json::json!(1)
                && sim.shared.groups_of(&email(0)) == want_groups
        },
    )
    .await;
    let dl = wait_dead_letters(&settings, &bootstrap, 1).await;
    assert_eq!(dl.entries.len(), 1);
    assert_eq!(dl.entries[0].reason(), "unknown_store");
    writer.stop().await;
}
