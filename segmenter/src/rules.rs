//! The spend rule and tier table together, and the decision they make for one event.

use rust_decimal::Decimal;
use schemas::{Cause, SegmentUpdate, ShopifyTopic, TierRef, UpdateKind, SEGMENT_SCHEMA_VERSION};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::changelog::OrderRecord;
use crate::ledger::{CustomerKey, Ledger, Summary};
use crate::normalize::{Event, NormalizedOrder};
use schemas::TierTable;

/// `[spend]`: which orders count. Defaults: paid and partially paid/refunded orders count;
/// pending and authorized (not yet paid), refunded and voided orders do not; test and
/// cancelled orders never count (test orders can be let in for development stores).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    #[serde(deserialize_with = "service_runtime::config::de::string_list")]
    pub counted_financial_statuses: Vec<String>,
    #[serde(deserialize_with = "service_runtime::config::de::from_str_or_native")]
    pub count_test_orders: bool,
    /// An order amount above this (shop currency) is not believed: the record is quarantined
    /// (`amount_out_of_range`) instead of counted. Guards the sums against absurd or hostile
    /// values; a real order of this size would be worth a look anyway.
    #[serde(with = "rust_decimal::serde::str")]
    pub max_order_amount: Decimal,
    /// An order version whose `updated_at` is this far after the record's receive time (the
    /// ingest's `tierflow-received-at`, else the Kafka timestamp) is quarantined
    /// (`event_time_in_future`): it would otherwise outrank every later real version. Both
    /// times come from the record, so replays decide the same.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: std::time::Duration,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            counted_financial_statuses: vec![
                "paid".into(),
                "partially_paid".into(),
                "partially_refunded".into(),
            ],
            count_test_orders: false,
            max_order_amount: Decimal::from(1_000_000_000_000u64),
            max_clock_skew: std::time::Duration::from_secs(3600),
        }
    }
}

impl SpendConfig {
    pub fn counts(&self, o: &NormalizedOrder) -> bool {
        !o.cancelled
            && (self.count_test_orders || !o.test)
            && o.financial_status
                .as_deref()
                .is_some_and(|s| self.counted_financial_statuses.iter().any(|c| c == s))
    }
}

/// Everything that decides a customer's tier, with its version hash.
#[derive(Debug, Clone)]
pub struct Rules {
    pub tiers: TierTable,
    pub spend: SpendConfig,
    version: String,
}

impl Rules {
    pub fn new(tiers: TierTable, spend: SpendConfig) -> Self {
        let mut statuses = spend.counted_financial_statuses.clone();
        statuses.sort();
        let mut h = Sha256::new();
        h.update(b"tierflow-rule-v1\n");
        h.update(tiers.canonical().as_bytes());
        h.update(
            format!(
                "\nstatuses={}\ntest={}",
                statuses.join(","),
                spend.count_test_orders
            )
            .as_bytes(),
        );
        let version = h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Rules {
            tiers,
            spend,
            version,
        }
    }

    /// Short hash of the tier table and spend settings.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Where a record came from, as far as decisions need to know.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta<'a> {
    pub shop: &'a str,
    pub topic: ShopifyTopic,
    pub webhook_id: Option<&'a str>,
    /// When the event happened, for events without their own timestamp (redactions): the
    /// webhook's `X-Shopify-Triggered-At`, else the record's timestamp. RFC 3339.
    pub event_time: &'a str,
    /// When the ingest received the record (microseconds since the epoch), if known: the
    /// yardstick for "too far in the future". Taken from the record, never the wall clock.
    pub received_at_us: Option<i64>,
}

/// A record the rules refuse to decide; it is quarantined with `reason` and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Undecidable {
    /// Short, stable code for the quarantine header and metric label.
    pub reason: &'static str,
    pub detail: String,
}

/// A changelog write: one order's stored version, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogWrite {
    Put(OrderRecord),
    Delete {
        key: String,
    },
    /// The marker of an order deleted in Shopify (never tombstoned: compaction keeps it).
    OrderDeleted {
        shop: String,
        order_id: u64,
    },
}

/// What one event changes.
#[derive(Debug, Default)]
pub struct Decision {
    pub updates: Vec<SegmentUpdate>,
    pub changelog: Vec<ChangelogWrite>,
    /// Metric label: `applied`, `unchanged`, `duplicate`, `redacted`, `order_deleted`
    /// (a deletion, or a version of a deleted order), or a skip reason.
    pub outcome: &'static str,
}

/// Apply `event` to `ledger` under `rules`. An undecidable event changes nothing.
pub fn decide(
    rules: &Rules,
    ledger: &mut Ledger,
    event: &Event,
    meta: &RecordMeta<'_>,
) -> Result<Decision, Undecidable> {
    Ok(match event {
        Event::Skip(reason) => Decision {
            outcome: reason,
            ..Decision::default()
        },
        Event::Order(order) => {
            check_order(&rules.spend, order, meta)?;
            decide_order(rules, ledger, order, meta)?
        }
        Event::RedactCustomer { customer_id } => {
            let key = ledger.key(meta.shop, *customer_id);
            let mut d = Decision {
                outcome: "redacted",
                ..Decision::default()
            };
            redact(rules, ledger, key, meta, &mut d);
            d
        }
        Event::DeleteOrder { order_id } => delete_order(rules, ledger, *order_id, meta),
        Event::RedactShop => {
            let mut d = Decision {
                outcome: "redacted",
                ..Decision::default()
            };
            for key in ledger.customers_of(meta.shop) {
                redact(rules, ledger, key, meta, &mut d);
            }
            d
        }
    })
}

/// The sanity bounds an order version must meet before it may change a ledger.
fn check_order(
    spend: &SpendConfig,
    order: &NormalizedOrder,
    meta: &RecordMeta<'_>,
) -> Result<(), Undecidable> {
    if order.amount.is_sign_negative() && !order.amount.is_zero() {
        return Err(Undecidable {
            reason: "negative_amount",
            detail: format!("order amount {} is negative", order.amount),
        });
    }
    if order.amount > spend.max_order_amount {
        return Err(Undecidable {
            reason: "amount_out_of_range",
            detail: format!(
                "order amount {} exceeds spend.max_order_amount {}",
                order.amount, spend.max_order_amount
            ),
        });
    }
    let skew_us = i64::try_from(spend.max_clock_skew.as_micros()).unwrap_or(i64::MAX);
    if let Some(received) = meta.received_at_us {
        if order.updated_at_us > received.saturating_add(skew_us) {
            return Err(Undecidable {
                reason: "event_time_in_future",
                detail: format!(
                    "updated_at {} is more than {} after the record was received",
                    order.updated_at,
                    humantime::format_duration(spend.max_clock_skew)
                ),
            });
        }
    }
    Ok(())
}

fn decide_order(
    rules: &Rules,
    ledger: &mut Ledger,
    order: &NormalizedOrder,
    meta: &RecordMeta<'_>,
) -> Result<Decision, Undecidable> {
    if ledger.is_deleted(meta.shop, order.order_id) {
        let mut d = Decision {
            outcome: "order_deleted",
            ..Decision::default()
        };
        if ledger.find(meta.shop, order.customer_id).is_none() {
            // The deletion came first (Shopify does not promise order) and this customer is
            // new here: they exist, at zero, exactly as if the version had come before the
            // deletion and been taken out again. Without this the final state would depend
            // on arrival order.
            let zero = Summary::zero(order.email.clone(), order.currency.clone());
            d.updates.push(update(
                rules,
                UpdateKind::Segment,
                meta,
                order.customer_id,
                &zero,
                Some(rules.tiers.tier_for(Decimal::ZERO).clone()),
                None,
                Some(order.order_id),
                &order.updated_at,
            ));
        }
        return Ok(d);
    }
    let key = ledger.key(meta.shop, order.customer_id);
    let before = ledger.summary(key);
    let counted = rules.spend.counts(order);
    let applied = ledger.apply(key, order, counted).map_err(|e| Undecidable {
        reason: "total_out_of_range",
        detail: e.to_string(),
    })?;
    let Some(record) = applied else {
        return Ok(Decision {
            outcome: "duplicate",
            ..Decision::default()
        });
    };
    let after = ledger.summary(key).expect("just applied");
    let previous_tier = before
        .as_ref()
        .map(|b| rules.tiers.tier_for(b.total_spent).clone());
    let tier = rules.tiers.tier_for(after.total_spent).clone();
    let changed = match &before {
        None => true,
        Some(b) => {
            b.total_spent != after.total_spent
                || b.orders_count != after.orders_count
                || b.facts != after.facts
                || previous_tier.as_ref() != Some(&tier)
        }
    };
    let mut d = Decision {
        changelog: vec![ChangelogWrite::Put(record)],
        outcome: if changed { "applied" } else { "unchanged" },
        ..Decision::default()
    };
    if changed {
        d.updates.push(update(
            rules,
            UpdateKind::Segment,
            meta,
            order.customer_id,
            &after,
            Some(tier),
            previous_tier,
            Some(order.order_id),
            &order.updated_at,
        ));
    }
    Ok(d)
}

/// `orders/delete`: every partition remembers the deletion (the body names no customer, so
/// the record is fanned out to all of them); the one whose customer had the order takes it out
/// of their total and emits their new state.
fn delete_order(
    rules: &Rules,
    ledger: &mut Ledger,
    order_id: u64,
    meta: &RecordMeta<'_>,
) -> Decision {
    let mut d = Decision {
        outcome: "order_deleted",
        ..Decision::default()
    };
    if ledger.is_deleted(meta.shop, order_id) {
        // A redelivered deletion: the marker and any removal are already written.
        return d;
    }
    let holder = ledger.delete_order(meta.shop, order_id);
    d.changelog.push(ChangelogWrite::OrderDeleted {
        shop: meta.shop.to_owned(),
        order_id,
    });
    let Some((key, before)) = holder else {
        return d;
    };
    d.changelog.push(ChangelogWrite::Delete {
        key: OrderRecord::key(meta.shop, key.customer_id, order_id),
    });
    // A customer left without orders is forgotten by the ledger; their state is zero.
    let after = ledger
        .summary(key)
        .unwrap_or_else(|| Summary::zero(before.email.clone(), before.currency.clone()));
    let previous_tier = Some(rules.tiers.tier_for(before.total_spent).clone());
    let tier = rules.tiers.tier_for(after.total_spent).clone();
    d.updates.push(update(
        rules,
        UpdateKind::Segment,
        meta,
        key.customer_id,
        &after,
        Some(tier),
        previous_tier,
        Some(order_id),
        meta.event_time,
    ));
    d
}

fn redact(
    rules: &Rules,
    ledger: &mut Ledger,
    key: CustomerKey,
    meta: &RecordMeta<'_>,
    d: &mut Decision,
) {
    let before = ledger.summary(key);
    let shop = ledger.shop_of(key).to_owned();
    for order_id in ledger.remove(key) {
        d.changelog.push(ChangelogWrite::Delete {
            key: OrderRecord::key(&shop, key.customer_id, order_id),
        });
    }
    let cleared = Summary::zero(before.as_ref().and_then(|b| b.email.clone()), None);
    let previous_tier = before
        .as_ref()
        .map(|b| rules.tiers.tier_for(b.total_spent).clone());
    d.updates.push(update(
        rules,
        UpdateKind::Redact,
        meta,
        key.customer_id,
        &cleared,
        None,
        previous_tier,
        None,
        meta.event_time,
    ));
}

#[allow(clippy::too_many_arguments)]
fn update(
    rules: &Rules,
    kind: UpdateKind,
    meta: &RecordMeta<'_>,
    customer_id: u64,
    s: &Summary,
    tier: Option<TierRef>,
    previous_tier: Option<TierRef>,
    order_id: Option<u64>,
    decided_at: &str,
) -> SegmentUpdate {
    let tier_changed = tier != previous_tier;
    let mut u = SegmentUpdate {
        schema_version: SEGMENT_SCHEMA_VERSION,
        event_id: String::new(),
        kind,
        shop: meta.shop.to_owned(),
        customer_id,
        email: s.email.clone(),
        total_spent: s.total_spent,
        orders_count: s.orders_count,
        currency: s.currency.clone(),
        tier,
        previous_tier,
        tier_changed,
        rule_version: rules.version().to_owned(),
        cause: Cause {
            order_id,
            webhook_id: meta.webhook_id.map(str::to_owned),
            shopify_topic: meta.topic.as_str().to_owned(),
        },
        decided_at: decided_at.to_owned(),
        facts: s.facts.clone(),
    };
    u.event_id = u.compute_event_id();
    u
}
