//! From a raw webhook body to the few facts the spend rule needs.
//!
//! Order bodies (`orders/create|updated|cancelled|paid|edited`) become a [`NormalizedOrder`];
//! `orders/delete` becomes a deletion; compliance bodies become redactions; everything else is
//! skipped with a reason. The amount is
//! `current_total_price_set.shop_money.amount` (it reflects refunds and order edits, unlike
//! `total_price`), parsed as an exact decimal; `current_total_price` is the fallback for
//! bodies without the `*_set` bags (API versions before 2019-10). Ids are read as `u64`.

use rust_decimal::Decimal;
use schemas::{BodyFields, ShopifyId, ShopifyTopic, TopicScope};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// An order version: what one `orders/*` body says about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedOrder {
    pub order_id: u64,
    pub customer_id: u64,
    pub email: Option<String>,
    /// `updated_at` in microseconds since the Unix epoch.
    pub updated_at_us: i64,
    /// `updated_at` exactly as Shopify wrote it (carried into `decided_at`).
    pub updated_at: String,
    pub amount: Decimal,
    pub currency: Option<String>,
    pub cancelled: bool,
    pub test: bool,
    pub financial_status: Option<String>,
    /// What the version says beyond spend (name, creation, the customer's tags and consent).
    pub facts: OrderFacts,
}

/// An order version's facts for marketers ([`schemas::CustomerFacts`] is what the customer's
/// orders add up to). Stored with the order in the ledger and the changelog.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct OrderFacts {
    /// `name` (e.g. `#1001`).
    #[serde(default)]
    pub name: Option<String>,
    /// `created_at` in microseconds since the Unix epoch (absent or unparseable: unknown).
    #[serde(default)]
    pub created_at_us: Option<i64>,
    /// `customer.tags`.
    #[serde(default)]
    pub tags: Option<String>,
    /// `customer.email_marketing_consent.state`.
    #[serde(default)]
    pub email_marketing_consent: Option<String>,
}

/// What a record means to the segmenter.
// One event lives per record being decided (a batch holds at most `batch_size`), never in
// the ledger: boxing the order would buy nothing but an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Order(NormalizedOrder),
    /// `customers/redact`: erase this customer.
    RedactCustomer {
        customer_id: u64,
    },
    /// `shop/redact`: erase every customer of the shop.
    RedactShop,
    /// `orders/delete`: the order is gone for good (its body names no customer).
    DeleteOrder {
        order_id: u64,
    },
    /// Nothing to do, for a stable reason (a metric label).
    Skip(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not a JSON object: {0}")]
    InvalidJson(String),
    #[error("body has no usable `{0}`")]
    Missing(&'static str),
    #[error("`{field}` is not valid: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// Refused by the record contract the ingest applies (shape, shop, key fields): only a
    /// record written before that check, or by another producer, gets here.
    #[error(transparent)]
    Contract(schemas::KeyError),
}

impl NormalizeError {
    /// Short, stable reason for the quarantine header and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            NormalizeError::InvalidJson(_) => "invalid_json",
            NormalizeError::Missing(_) => "missing_field",
            NormalizeError::Invalid { .. } => "invalid_field",
            NormalizeError::Contract(e) => e.reason(),
        }
    }
}

#[derive(Deserialize)]
struct OrderBody {
    id: Option<ShopifyId>,
    customer: Option<CustomerBody>,
    email: Option<String>,
    contact_email: Option<String>,
    updated_at: Option<String>,
    current_total_price_set: Option<MoneySet>,
    current_total_price: Option<String>,
    currency: Option<String>,
    cancelled_at: Option<IgnoredOrNull>,
    #[serde(default)]
    test: bool,
    financial_status: Option<String>,
    name: Option<String>,
    created_at: Option<String>,
}

/// `cancelled_at`: present and non-null means cancelled; the value itself does not matter.
#[derive(Deserialize)]
#[serde(untagged)]
enum IgnoredOrNull {
    Any(IgnoredAny),
}

#[derive(Deserialize)]
struct CustomerBody {
    id: Option<ShopifyId>,
    email: Option<String>,
    tags: Option<String>,
    email_marketing_consent: Option<ConsentBody>,
}

#[derive(Deserialize)]
struct ConsentBody {
    state: Option<String>,
}

#[derive(Deserialize)]
struct MoneySet {
    shop_money: Option<Money>,
}

#[derive(Deserialize)]
struct Money {
    amount: Option<String>,
    currency_code: Option<String>,
}

#[derive(Deserialize)]
struct DeleteBody {
    id: Option<ShopifyId>,
}

#[derive(Deserialize)]
struct RedactBody {
    customer: Option<CustomerBody>,
}

/// What a record of `shop` and `topic` means: the record contract first (the body must have
/// the documented shape of its topic and name the shop, since neither header is signed),
/// then [`normalize`]. The body is scanned once for both.
pub fn interpret(shop: &str, topic: ShopifyTopic, body: &[u8]) -> Result<Event, NormalizeError> {
    let fields = scan(body)?;
    schemas::record_key_of(shop, topic, &fields).map_err(NormalizeError::Contract)?;
    normalize_fields(topic, &fields)
}

/// Normalise one verified body of `topic` (as the ingest wrote it).
pub fn normalize(topic: ShopifyTopic, body: &[u8]) -> Result<Event, NormalizeError> {
    normalize_fields(topic, &scan(body)?)
}

fn scan(body: &[u8]) -> Result<BodyFields<'_>, NormalizeError> {
    BodyFields::parse(body).map_err(|e| NormalizeError::InvalidJson(e.to_string()))
}

fn read<'a, T: Deserialize<'a>>(body: &BodyFields<'a>) -> Result<T, NormalizeError> {
    body.read()
        .map_err(|e| NormalizeError::InvalidJson(e.to_string()))
}

fn normalize_fields(topic: ShopifyTopic, body: &BodyFields<'_>) -> Result<Event, NormalizeError> {
    match topic.scope() {
        TopicScope::Order => normalize_order(body),
        TopicScope::CustomerCompliance if topic == ShopifyTopic::CustomersRedact => {
            let b: RedactBody = read(body)?;
            let id = b
                .customer
                .and_then(|c| c.id)
                .ok_or(NormalizeError::Missing("customer.id"))?;
            Ok(Event::RedactCustomer { customer_id: id.0 })
        }
        TopicScope::Shop => Ok(Event::RedactShop),
        TopicScope::OrderDeletion => {
            let b: DeleteBody = read(body)?;
            let id = b.id.ok_or(NormalizeError::Missing("id"))?;
            Ok(Event::DeleteOrder { order_id: id.0 })
        }
        // Refund bodies carry no customer; Shopify follows a refund with `orders/updated`
        // carrying the new `current_total_price`, which is what the ledger uses.
        TopicScope::Refund => Ok(Event::Skip("refund_via_orders_updated")),
        TopicScope::Customer | TopicScope::CustomerCompliance => Ok(Event::Skip("not_an_order")),
    }
}

fn normalize_order(body: &BodyFields<'_>) -> Result<Event, NormalizeError> {
    let b: OrderBody = read(body)?;
    let order_id = b.id.ok_or(NormalizeError::Missing("id"))?.0;
    let Some(customer) = b.customer else {
        return Ok(Event::Skip("guest_order"));
    };
    let customer_id = customer.id.ok_or(NormalizeError::Missing("customer.id"))?.0;
    let updated_at = b.updated_at.ok_or(NormalizeError::Missing("updated_at"))?;
    let updated_at_us = chrono::DateTime::parse_from_rfc3339(&updated_at)
        .map_err(|e| NormalizeError::Invalid {
            field: "updated_at",
            detail: e.to_string(),
        })?
        .timestamp_micros();
    let shop_money = b.current_total_price_set.and_then(|s| s.shop_money);
    let (amount_text, set_currency) = match shop_money {
        Some(Money {
            amount: Some(a),
            currency_code,
        }) => (a, currency_code),
        _ => (
            b.current_total_price.ok_or(NormalizeError::Missing(
                "current_total_price_set.shop_money.amount",
            ))?,
            None,
        ),
    };
    let amount = parse_money(&amount_text)?;
    Ok(Event::Order(NormalizedOrder {
        order_id,
        customer_id,
        email: customer
            .email
            .or(b.email)
            .or(b.contact_email)
            .filter(|e| !e.is_empty()),
        updated_at_us,
        updated_at,
        amount,
        currency: set_currency.or(b.currency),
        cancelled: b.cancelled_at.is_some(),
        test: b.test,
        financial_status: b.financial_status,
        facts: OrderFacts {
            name: b.name.filter(|n| !n.is_empty()),
            // A marketing fact, not the spend rule's: unreadable means unknown, not quarantine.
            created_at_us: b
                .created_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros()),
            tags: customer.tags,
            email_marketing_consent: customer.email_marketing_consent.and_then(|c| c.state),
        },
    }))
}

/// Shopify money: a plain decimal string (`"45.50"`), never a float, never an exponent.
fn parse_money(text: &str) -> Result<Decimal, NormalizeError> {
    let well_formed = !text.is_empty()
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && text
            .strip_prefix('-')
            .unwrap_or(text)
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.');
    let invalid = || NormalizeError::Invalid {
        field: "current_total_price_set.shop_money.amount",
        detail: format!("`{text}` is not a decimal amount"),
    };
    if !well_formed {
        return Err(invalid());
    }
    text.parse::<Decimal>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"id":820982911946154508,"email":"top@example.com","updated_at":"2026-11-20T10:15:31-05:00",
            "current_total_price":"50.00","current_total_price_set":{{"shop_money":{{"amount":"45.50","currency_code":"USD"}},
            "presentment_money":{{"amount":"41.00","currency_code":"EUR"}}}},"financial_status":"paid",
            "customer":{{"id":115310627314723954,"email":"c@example.com"}}{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn order_fields_are_exact() {
        let Event::Order(o) = normalize(ShopifyTopic::OrdersCreate, &order("")).unwrap() else {
            panic!("not an order")
        };
        assert_eq!(o.order_id, 820_982_911_946_154_508);
        assert_eq!(o.customer_id, 115_310_627_314_723_954);
        assert_eq!(
            o.amount,
            "45.50".parse().unwrap(),
            "shop money, not presentment, not total_price"
        );
        assert_eq!(o.currency.as_deref(), Some("USD"));
        assert_eq!(o.email.as_deref(), Some("c@example.com"));
        assert_eq!(o.updated_at_us, 1_795_187_731_000_000);
        assert!(!o.cancelled && !o.test);
        assert_eq!(o.financial_status.as_deref(), Some("paid"));
    }

    #[test]
    fn cancelled_test_and_guest_orders() {
        let Event::Order(o) = normalize(
            ShopifyTopic::OrdersCancelled,
            &order(r#","cancelled_at":"2026-11-21T00:00:00Z","test":true"#),
        )
        .unwrap() else {
            panic!()
        };
        assert!(o.cancelled && o.test);
        let Event::Order(o) = normalize(
            ShopifyTopic::OrdersUpdated,
            &order(r#","cancelled_at":null"#),
        )
        .unwrap() else {
            panic!()
        };
        assert!(!o.cancelled);
        let guest = br#"{"id":1,"customer":null,"updated_at":"2026-11-20T10:15:31Z"}"#;
        assert_eq!(
            normalize(ShopifyTopic::OrdersCreate, guest).unwrap(),
            Event::Skip("guest_order")
        );
    }

    #[test]
    fn compliance_and_other_topics() {
        assert_eq!(
            normalize(
                ShopifyTopic::CustomersRedact,
                br#"{"shop_id":1,"customer":{"id":191167,"email":"x@y.z"},"orders_to_redact":[1]}"#
            )
            .unwrap(),
            Event::RedactCustomer {
                customer_id: 191_167
            }
        );
        assert_eq!(
            normalize(ShopifyTopic::ShopRedact, b"{}").unwrap(),
            Event::RedactShop
        );
        assert!(matches!(
            normalize(ShopifyTopic::RefundsCreate, b"{}").unwrap(),
            Event::Skip(_)
        ));
    }

    #[test]
    fn unusable_bodies_have_precise_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "invalid_json"),
            (br#"{"customer":{"id":1}}"#, "missing_field"),
            (br#"{"id":1,"customer":{"id":1}}"#, "missing_field"),
            (
                br#"{"id":1,"customer":{"id":1},"updated_at":"yesterday","current_total_price":"1.00"}"#,
                "invalid_field",
            ),
            (
                br#"{"id":1,"customer":{"id":1},"updated_at":"2026-11-20T10:15:31Z"}"#,
                "missing_field",
            ),
            (
                br#"{"id":1,"customer":{"id":1},"updated_at":"2026-11-20T10:15:31Z","current_total_price":"1e3"}"#,
                "invalid_field",
            ),
            (
                br#"{"id":1,"customer":{"id":1},"updated_at":"2026-11-20T10:15:31Z","current_total_price":12.5}"#,
                "invalid_json",
            ),
        ];
        for (body, reason) in cases {
            let e = normalize(ShopifyTopic::OrdersUpdated, body).unwrap_err();
            assert_eq!(
                e.reason(),
                *reason,
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn loadgen_bodies_normalise_to_their_spec() {
        use loadgen::payload::{order_body, OrderStream};
        for spec in OrderStream::new(11, 50).take(100) {
            let body = order_body(&spec, "s.myshopify.com");
            match normalize(ShopifyTopic::OrdersUpdated, &body).unwrap() {
                Event::Order(o) => {
                    assert_eq!(Some(o.customer_id), spec.customer_id);
                    assert_eq!(o.order_id, spec.order_id);
                    assert_eq!(o.amount, Decimal::new(spec.current_total_cents() as i64, 2));
                }
                Event::Skip(r) => assert!(spec.customer_id.is_none(), "{r}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
