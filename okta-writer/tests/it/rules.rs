//! `group_assignment = "rules"` on the Okta simulator: `okta-writer rules` makes one rule per
//! tier (a dry run first, then idempotent), the writer writes the tier attribute only, and
//! Okta's rules (evaluated asynchronously, polled for) move users: a tier change is one call
//! instead of three. A user removed by hand is excluded by the rule, and the command says so.

use std::time::Duration;

use crate::common::*;
use okta_sim::SimConfig;
use okta_writer::config::GroupAssignment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_rules_move_users_on_one_call_per_tier_change() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let seed = seed_for_rules(3);
    let sim = okta_sim::SimHandle::start(
        SimConfig {
            rule_delay: Duration::from_millis(200),
            ..SimConfig::default()
        },
        &seed,
    )
    .await
    .unwrap();
    let mut settings = settings(&bootstrap, &sim.base_url(), "w-rules");
    settings.okta.group_assignment = GroupAssignment::Rules;
    settings.okta.profile_attributes = toml::from_str(
        "shopify_total_spent = \"total_spent\"\nshopify_orders_count = \"orders_count\"\nshopify_tier = \"tier\"",
    )
    .unwrap();

    let applier = okta_writer::applier(&settings, okta_writer::metrics::Metrics::unregistered())
        .await
        .unwrap();
    let rules = |execute| okta_writer::rules::sync(&applier.client, &applier.stores, execute);
    let dry = rules(false).await.unwrap();
    assert_eq!(dry.matches("create ").count(), 4, "{dry}");
    assert!(sim.shared.store.lock().unwrap().rules.rules.is_empty());
    rules(true).await.unwrap();
    let again = rules(false).await.unwrap();
    assert_eq!(again.matches("ok ").count(), 4, "{again}");
    assert!(again.contains("0 of 4 rules to change"), "{again}");

    let writer = start(settings.clone(), &bootstrap).await;
    let shared = sim.shared.clone();
    let in_tier = |c: u64, t: &str| {
        let want = ["Everyone".to_owned(), group(t)];
        let shared = shared.clone();
        move || shared.groups_of(&email(c)) == want
    };
    let first = update(0, 5_000, 1, None);
    produce(&bootstrap, &[first, update(1, 20_000, 1, None)]).await;
    wait_for("c0 New by rule", Duration::from_secs(30), in_tier(0, "New")).await;
    wait_for(
        "c1 Active by rule",
        Duration::from_secs(30),
        in_tier(1, "Active"),
    )
    .await;

    // A tier change for a known customer: one call, the profile with the tier attribute.
    sim.shared.clear_requests();
    produce(&bootstrap, &[update(0, 70_000, 2, Some("New"))]).await;
    wait_for("c0 VIP by rule", Duration::from_secs(30), in_tier(0, "VIP")).await;
    let calls: Vec<String> = sim
        .shared
        .requests()
        .iter()
        .map(|r| r.operation.clone())
        .collect();
    assert_eq!(calls, ["updateUser"], "one call per tier change");
    assert_eq!(
        sim.shared.profile(&email(0)).unwrap()["shopify_tier"],
        "VIP"
    );

    // Removed by hand: the rule excludes the user, and the command reports it.
    {
        let mut store = sim.shared.store.lock().unwrap();
        let uid = store.user(&email(1)).unwrap().id.clone();
        let gid = store.group_by_name(&group("Active")).unwrap().id.clone();
        store.set_membership(&gid, &uid, false).unwrap();
    }
    let report = rules(false).await.unwrap();
    assert!(report.contains("1 users excluded"), "{report}");

    // A redaction clears the tier attribute; the rule takes the user out.
    let mut redact = update(0, 0, 0, Some("VIP"));
    redact.kind = schemas::UpdateKind::Redact;
    redact.tier = None;
    redact.currency = None;
    redact.event_id = redact.compute_event_id();
    produce(&bootstrap, &[redact]).await;
    wait_for("c0 out by rule", Duration::from_secs(30), || {
        sim.shared.groups_of(&email(0)) == ["Everyone"]
    })
    .await;
    writer.stop().await;
}
