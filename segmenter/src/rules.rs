//! The spend rule and tier table together, and the decision they make for one event.

use rust_decimal::Decimal;
use schemas::{Cause, SegmentUpdate, ShopifyTopic, TierRef, UpdateKind, SEGMENT_SCHEMA_VERSION};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ledger::{CustomerKey, Ledger, OrderRecord, Summary};
use crate::normalize::{Event, NormalizedOrder};
use crate::tiers::TierTable;

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
}

/// A changelog write: one order's stored version, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogWrite {
    Put(OrderRecord),
    Delete { key: String },
}

/// What one event changes.
#[derive(Debug, Default)]
pub struct Decision {
    pub updates: Vec<SegmentUpdate>,
    pub changelog: Vec<ChangelogWrite>,
    /// Metric label: `applied`, `unchanged`, `duplicate`, `redacted`, or a skip reason.
    pub outcome: &'static str,
}

/// Apply `event` to `ledger` under `rules`.
pub fn decide(
    rules: &Rules,
    ledger: &mut Ledger,
    event: &Event,
    meta: &RecordMeta<'_>,
) -> Decision {
    match event {
        Event::Skip(reason) => Decision {
            outcome: reason,
            ..Decision::default()
        },
        Event::Order(order) => decide_order(rules, ledger, order, meta),
        Event::RedactCustomer { customer_id } => {
            let key = ledger.key(meta.shop, *customer_id);
            let mut d = Decision {
                outcome: "redacted",
                ..Decision::default()
            };
            redact(rules, ledger, key, meta, &mut d);
            d
        }
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
    }
}

fn decide_order(
    rules: &Rules,
    ledger: &mut Ledger,
    order: &NormalizedOrder,
    meta: &RecordMeta<'_>,
) -> Decision {
    let key = ledger.key(meta.shop, order.customer_id);
    let before = ledger.summary(key);
    let counted = rules.spend.counts(order);
    let Some(record) = ledger.apply(key, order, counted) else {
        return Decision {
            outcome: "duplicate",
            ..Decision::default()
        };
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
    let cleared = Summary {
        total_spent: Decimal::ZERO,
        orders_count: 0,
        email: before.as_ref().and_then(|b| b.email.clone()),
        currency: None,
    };
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
    };
    u.event_id = u.compute_event_id();
    u
}
