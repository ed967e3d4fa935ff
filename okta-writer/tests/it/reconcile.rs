//! `okta-writer reconcile` on the mock cluster and the Okta simulator: hand edits of every kind
//! are found on a dry run (which changes nothing), healed with `--execute`, unknown members are
//! left alone unless asked, a customer with an update the live writer has not applied yet is
//! left to it, and a clean org costs one call per tier group.

use crate::common::*;
use okta_sim::SimConfig;
use okta_writer::reconcile::{self, Drift, Options};

fn found(r: &reconcile::Report, d: Drift) -> u64 {
    r.found.get(&d).copied().unwrap_or(0)
}

fn healed(r: &reconcile::Report, d: Drift) -> u64 {
    r.healed.get(&d).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_found_then_healed_and_unknown_members_only_on_request() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    // Users c0..c9, all in Potential; customers 0..5 get updates.
    let sim = sim(SimConfig::default(), 10).await;
    let settings = settings(&bootstrap, &sim.base_url(), "w-reconcile");
    let writer = start(settings.clone(), &bootstrap).await;
    let finals: Vec<_> = (0..6)
        .map(|c| {
            update(
                c,
                [60_000, 20_000, 5_000, 30_000, 70_000, 2_000][c as usize],
                3,
                Some("Potential"),
            )
        })
        .collect();
    produce(&bootstrap, &finals).await;
    wait_all(&sim, &finals).await;
    writer.stop().await; // commits what it applied

    // Hand edits, as an admin would make them.
    {
        let mut store = sim.shared.store.lock().unwrap();
        let uid =
            |store: &okta_sim::store::Store, c: u64| store.user(&email(c)).unwrap().id.clone();
        let gid = |store: &okta_sim::store::Store, t: &str| {
            store.group_by_name(&group(t)).unwrap().id.clone()
        };
        // c0 (VIP) moved to Active.
        let (u, vip, active) = (uid(&store, 0), gid(&store, "VIP"), gid(&store, "Active"));
        store.set_membership(&vip, &u, false).unwrap();
        store.set_membership(&active, &u, true).unwrap();
        // c1 (Active) also put in VIP.
        let u = uid(&store, 1);
        store.set_membership(&vip, &u, true).unwrap();
        // c2 (New) taken out of every tier group.
        let (u, new) = (uid(&store, 2), gid(&store, "New"));
        store.set_membership(&new, &u, false).unwrap();
        // c3's total overwritten by another tool.
        let mut patch = serde_json::Map::new();
        patch.insert("shopify_total_spent".into(), serde_json::json!(1.0));
        store.update_profile(&email(3), &patch).unwrap();
    }
    let metrics = okta_writer::metrics::Metrics::unregistered();
    let applier = okta_writer::applier(&settings, metrics.clone())
        .await
        .unwrap();
    let run = |options: Options| {
        let (settings, bootstrap, applier, metrics) = (&settings, &bootstrap, &applier, &metrics);
        async move {
            reconcile::run(settings, bootstrap, applier, metrics, options)
                .await
                .unwrap()
        }
    };

    let dry = run(Options::default()).await;
    assert_eq!(dry.customers, 6);
    for (d, n) in [
        (Drift::WrongGroup, 1),
        (Drift::TwoGroups, 1),
        (Drift::NotInGroup, 1),
        (Drift::Attributes, 1),
        // c6..c9: seeded into Potential, never customers.
        (Drift::UnknownMember, 4),
    ] {
        assert_eq!(found(&dry, d), n, "{d:?}: {}", dry.render());
    }
    assert!(dry.healed.is_empty());
    assert_eq!(
        dry.calls,
        4,
        "one members page per tier group: {}",
        dry.render()
    );
    assert!(!okta_matches(&sim, &finals[0]), "a dry run changes nothing");

    let healing = run(Options {
        execute: true,
        remove_unknown: false,
    })
    .await;
    for d in [
        Drift::WrongGroup,
        Drift::TwoGroups,
        Drift::NotInGroup,
        Drift::Attributes,
    ] {
        assert_eq!(healed(&healing, d), 1, "{d:?}: {}", healing.render());
    }
    assert_eq!(healed(&healing, Drift::UnknownMember), 0);
    assert_eq!(healing.failed, 0, "{}", healing.render());
    for u in &finals {
        assert!(
            okta_matches(&sim, u),
            "customer {} not healed",
            u.customer_id
        );
    }
    assert_eq!(
        sim.shared.groups_of(&email(7)),
        ["Everyone", &group("Potential")]
    );

    let removing = run(Options {
        execute: true,
        remove_unknown: true,
    })
    .await;
    assert_eq!(
        healed(&removing, Drift::UnknownMember),
        4,
        "{}",
        removing.render()
    );
    assert_eq!(sim.shared.groups_of(&email(7)), ["Everyone"]);

    let clean = run(Options {
        execute: true,
        remove_unknown: true,
    })
    .await;
    assert!(clean.found.values().all(|n| *n == 0), "{}", clean.render());
    assert_eq!(clean.calls, 4, "{}", clean.render());

    // A newer update the live writer has not applied (it is stopped): left to it.
    let newer = update(4, 80_000, 4, Some("VIP"));
    produce(&bootstrap, std::slice::from_ref(&newer)).await;
    let waiting = run(Options {
        execute: true,
        remove_unknown: false,
    })
    .await;
    assert_eq!(
        found(&waiting, Drift::Attributes),
        1,
        "{}",
        waiting.render()
    );
    assert_eq!(waiting.in_flight, 1, "{}", waiting.render());
    assert!(waiting.healed.is_empty(), "{}", waiting.render());
}
