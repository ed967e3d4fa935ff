//! The Okta profile attributes the writer keeps: `[okta.profile_attributes]`, a table of Okta
//! attribute name → the field of the segment update it holds. Adding an attribute is one row
//! there (and, for a value the update does not carry yet, one [`ProfileField`] variant here).
//!
//! Each attribute must exist in the Okta user profile schema with the type its field writes
//! (Okta answers 400 `E0000001` otherwise, and the update is dead-lettered `okta_rejected`).
//! A redaction (`customers/redact`) sets every attribute to null.

use std::collections::BTreeMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use schemas::{SegmentUpdate, UpdateKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A value of the segment update that can be written to a profile attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileField {
    /// The counted orders' total in the shop currency; an Okta `number`, rounded to cents.
    TotalSpent,
    /// The counted orders; an Okta `integer`.
    OrdersCount,
    /// ISO 4217 code of `total_spent`; an Okta `string` (null before a counted order).
    Currency,
    /// The tier's name (not its group); an Okta `string`.
    Tier,
    /// The last counted order's id (decimal; Shopify ids exceed an Okta integer); `string`.
    LastOrderId,
    /// The last counted order's name (e.g. `#1001`); `string`.
    LastOrderName,
    /// `created_at` of the first counted order, RFC 3339 UTC; `string`.
    FirstOrderAt,
    /// `created_at` of the last counted order, RFC 3339 UTC; `string`.
    LastOrderAt,
    /// Email marketing consent state (`subscribed`, `not_subscribed`, ...); `string`.
    EmailMarketingConsent,
    /// The customer's Shopify tags (comma-separated); `string`.
    Tags,
}

impl ProfileField {
    /// The Okta user schema type an attribute holding this field must have.
    pub fn okta_type(self) -> &'static str {
        match self {
            ProfileField::TotalSpent => "number",
            ProfileField::OrdersCount => "integer",
            ProfileField::Currency
            | ProfileField::Tier
            | ProfileField::LastOrderId
            | ProfileField::LastOrderName
            | ProfileField::FirstOrderAt
            | ProfileField::LastOrderAt
            | ProfileField::EmailMarketingConsent
            | ProfileField::Tags => "string",
        }
    }

    fn value(self, u: &SegmentUpdate) -> Value {
        match self {
            ProfileField::TotalSpent => money(u.total_spent),
            ProfileField::OrdersCount => json!(u.orders_count),
            ProfileField::Currency => json!(u.currency),
            ProfileField::Tier => json!(u.tier.as_ref().map(|t| &t.name)),
            ProfileField::LastOrderId => json!(u.facts.last_order_id.map(|id| id.to_string())),
            ProfileField::LastOrderName => json!(u.facts.last_order_name),
            ProfileField::FirstOrderAt => json!(u.facts.first_order_at),
            ProfileField::LastOrderAt => json!(u.facts.last_order_at),
            ProfileField::EmailMarketingConsent => json!(u.facts.email_marketing_consent),
            ProfileField::Tags => json!(u.facts.tags),
        }
    }
}

/// Money as Okta's number attribute wants it: a JSON number rounded to cents.
fn money(d: Decimal) -> Value {
    d.round_dp(2)
        .to_f64()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The base attributes of Okta's default user profile (`UserProfile` in the management API
/// spec; the contract test checks this list against the vendored spec). The writer never
/// writes them: a row like `email = "tier"` would overwrite every customer's email.
pub const OKTA_BASE_ATTRIBUTES: [&str; 31] = [
    "city",
    "costCenter",
    "countryCode",
    "department",
    "displayName",
    "division",
    "email",
    "employeeNumber",
    "firstName",
    "honorificPrefix",
    "honorificSuffix",
    "lastName",
    "locale",
    "login",
    "manager",
    "managerId",
    "middleName",
    "mobilePhone",
    "nickName",
    "organization",
    "postalAddress",
    "preferredLanguage",
    "primaryPhone",
    "profileUrl",
    "secondEmail",
    "state",
    "streetAddress",
    "timezone",
    "title",
    "userType",
    "zipCode",
];

/// The attributes written, by Okta attribute name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ProfileAttributes(BTreeMap<String, ProfileField>);

impl Default for ProfileAttributes {
    /// `shopify_total_spent` and `shopify_orders_count`.
    fn default() -> Self {
        ProfileAttributes(BTreeMap::from([
            ("shopify_total_spent".to_owned(), ProfileField::TotalSpent),
            ("shopify_orders_count".to_owned(), ProfileField::OrdersCount),
        ]))
    }
}

impl ProfileAttributes {
    /// Why the table cannot be used, if it cannot: it is empty, an attribute name is not one
    /// Okta allows (letters, digits, `_`; not starting with a digit), or it names a base
    /// profile attribute (see [`OKTA_BASE_ATTRIBUTES`]).
    pub fn problem(&self) -> Option<String> {
        if self.0.is_empty() {
            return Some(
                "must name at least one attribute, e.g. shopify_total_spent = \"total_spent\""
                    .into(),
            );
        }
        self.0.keys().find_map(|name| {
            let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !valid {
                return Some(format!("`{name}` is not an Okta profile attribute name (letters, digits, _; not starting with a digit)"));
            }
            OKTA_BASE_ATTRIBUTES.contains(&name.as_str()).then(|| {
                format!("`{name}` is a base attribute of Okta's user profile, which the writer never overwrites; name a custom attribute (e.g. shopify_{name})")
            })
        })
    }

    /// The same table with `suffix` appended to every attribute name (a store's own
    /// attributes, [`crate::stores`]).
    pub fn with_suffix(&self, suffix: &str) -> ProfileAttributes {
        ProfileAttributes(
            self.0
                .iter()
                .map(|(name, field)| (format!("{name}{suffix}"), *field))
                .collect(),
        )
    }

    /// The Okta attribute names written.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The one attribute holding the tier's name (group rules match on it), if exactly one does.
    pub fn tier_attribute(&self) -> Option<&str> {
        let mut tiers = self.rows().filter(|(_, f)| *f == ProfileField::Tier);
        match (tiers.next(), tiers.next()) {
            (Some((name, _)), None) => Some(name),
            _ => None,
        }
    }

    /// The rows: Okta attribute name and the field it holds.
    pub fn rows(&self) -> impl Iterator<Item = (&str, ProfileField)> {
        self.0.iter().map(|(n, f)| (n.as_str(), *f))
    }

    /// The `profile` of a partial update that makes Okta hold `u`.
    pub fn patch(&self, u: &SegmentUpdate) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, field)| {
                let value = match u.kind {
                    UpdateKind::Segment => field.value(u),
                    UpdateKind::Redact => Value::Null,
                };
                (name.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kind: &str) -> SegmentUpdate {
        serde_json::from_value(json!({
            "schema_version": 1, "event_id": "e", "kind": kind,
            "shop": "a.myshopify.com", "customer_id": "1", "email": null,
            "total_spent": "1234.567", "orders_count": 3, "currency": "EUR",
            "tier": {"name": "VIP", "okta_group": "Shopify VIP"}, "previous_tier": null,
            "tier_changed": true, "rule_version": "r",
            "cause": {"order_id": null, "webhook_id": null, "shopify_topic": "orders/create"},
            "decided_at": "2026-11-20T15:15:31Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_default_table_writes_spend_and_count() {
        let patch = ProfileAttributes::default().patch(&update("segment"));
        assert_eq!(
            Value::Object(patch),
            json!({"shopify_total_spent": 1234.57, "shopify_orders_count": 3})
        );
    }

    #[test]
    fn a_configured_row_adds_an_attribute_and_redaction_clears_all() {
        let table: ProfileAttributes = toml::from_str(
            "spent = \"total_spent\"\nshop_currency = \"currency\"\nshopify_tier = \"tier\"",
        )
        .unwrap();
        assert_eq!(table.problem(), None);
        assert_eq!(
            Value::Object(table.patch(&update("segment"))),
            json!({"spent": 1234.57, "shop_currency": "EUR", "shopify_tier": "VIP"})
        );
        assert_eq!(
            Value::Object(table.patch(&update("redact"))),
            json!({"spent": null, "shop_currency": null, "shopify_tier": null})
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(toml::from_str::<ProfileAttributes>("a = \"lifetime_value\"").is_err());
        let empty: ProfileAttributes = toml::from_str("").unwrap();
        assert!(empty.problem().is_some());
        let bad: ProfileAttributes = toml::from_str("\"1st\" = \"tier\"").unwrap();
        assert!(bad.problem().unwrap().contains("`1st`"));
        let bad: ProfileAttributes = toml::from_str("\"a.b\" = \"tier\"").unwrap();
        assert!(bad.problem().is_some());
        let base: ProfileAttributes = toml::from_str("email = \"tier\"").unwrap();
        assert!(base.problem().unwrap().contains("base attribute"));
    }

    #[test]
    fn the_customer_facts_are_rows_too_written_as_strings() {
        let table: ProfileAttributes = toml::from_str(
            "last_id = \"last_order_id\"\nlast_name = \"last_order_name\"\n\
             first_at = \"first_order_at\"\nlast_at = \"last_order_at\"\n\
             consent = \"email_marketing_consent\"\ntags = \"tags\"",
        )
        .unwrap();
        let mut u = update("segment");
        assert_eq!(
            Value::Object(table.patch(&u)),
            json!({"last_id": null, "last_name": null, "first_at": null, "last_at": null, "consent": null, "tags": null}),
            "unknown facts are null"
        );
        u.facts = schemas::CustomerFacts {
            last_order_id: Some(820_982_911_946_154_508),
            last_order_name: Some("#1001".into()),
            first_order_at: Some("2025-01-02T03:04:05Z".into()),
            last_order_at: Some("2026-11-20T15:15:31Z".into()),
            email_marketing_consent: Some("subscribed".into()),
            tags: Some("vip, newsletter".into()),
        };
        assert_eq!(
            Value::Object(table.patch(&u)),
            json!({"last_id": "820982911946154508", "last_name": "#1001",
                   "first_at": "2025-01-02T03:04:05Z", "last_at": "2026-11-20T15:15:31Z",
                   "consent": "subscribed", "tags": "vip, newsletter"})
        );
        assert!(table.rows().all(|(_, f)| f.okta_type() == "string"));
    }

    #[test]
    fn a_suffix_renames_every_attribute() {
        let table = ProfileAttributes::default().with_suffix("_eu");
        assert_eq!(
            table.names().collect::<Vec<_>>(),
            ["shopify_orders_count_eu", "shopify_total_spent_eu"]
        );
        assert_eq!(table.problem(), None);
    }
}
