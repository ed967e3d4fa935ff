//! The shop's orders: one store the Admin API answers from and the webhook generator renders
//! from, so a test can deliver some orders as webhooks, drop others, and have the API find
//! them all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A customer as an order names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCustomer {
    pub id: u64,
    pub email: Option<String>,
    pub tags: Vec<String>,
    /// `CustomerEmailAddressMarketingState` (`SUBSCRIBED`, `NOT_SUBSCRIBED`, ...), if known.
    pub marketing_state: Option<String>,
}

/// One order's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimOrder {
    pub id: u64,
    /// `#1001`.
    pub name: String,
    pub email: Option<String>,
    /// `None`: a guest checkout.
    pub customer: Option<SimCustomer>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub test: bool,
    /// `OrderDisplayFinancialStatus`: `PAID`, `PENDING`, `PARTIALLY_REFUNDED`, ...
    pub financial_status: String,
    /// `currentTotalPriceSet.shopMoney.amount`, a decimal string (`"12.50"`).
    pub total: String,
    /// `CurrencyCode` (`USD`).
    pub currency: String,
}

/// Shopify's global id of an object.
pub fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// Shopify's timestamps: RFC 3339, seconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl SimOrder {
    /// The REST payload of an `orders/*` webhook for this version (the fields tierflow reads,
    /// in Shopify's REST spelling: snake case, numeric ids, lowercase financial status).
    pub fn webhook_body(&self) -> String {
        let money = serde_json::json!({"amount": self.total, "currency_code": self.currency});
        let customer = self.customer.as_ref().map(|c| {
            serde_json::json!({
                "id": c.id,
                "email": c.email,
                "tags": c.tags.join(", "),
                // The API's `marketingState` is never null for a customer with an email
                // (`NOT_SUBSCRIBED` unless known): the webhook says the same.
                "email_marketing_consent": c.email.as_ref().map(|_| serde_json::json!({
                    "state": c.marketing_state.as_deref().unwrap_or("NOT_SUBSCRIBED").to_ascii_lowercase(),
                })),
                "admin_graphql_api_id": gid("Customer", c.id),
            })
        });
        serde_json::json!({
            "id": self.id,
            "admin_graphql_api_id": gid("Order", self.id),
            "name": self.name,
            "email": self.email,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
            "cancelled_at": self.cancelled_at.map(timestamp),
            "test": self.test,
            "financial_status": self.financial_status.to_ascii_lowercase(),
            "currency": self.currency,
            "current_total_price": self.total,
            "current_total_price_set": {"shop_money": money, "presentment_money": money},
            "line_items": [],
            "customer": customer,
        })
        .to_string()
    }

    /// The webhook topic a change to this version would be delivered under.
    pub fn webhook_topic(&self) -> &'static str {
        if self.cancelled_at.is_some() {
            "orders/cancelled"
        } else if self.financial_status == "PAID" {
            "orders/paid"
        } else {
            "orders/updated"
        }
    }
}

/// One term of Shopify's search syntax the simulator understands:
/// `updated_at:>=2026-01-01T00:00:00Z` (also `>`, `<`, `<=`, and `created_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeFilter {
    field: TimeField,
    op: Cmp,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeField {
    UpdatedAt,
    CreatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

/// Parse a search `query`: terms separated by spaces or `AND`. A term the simulator does not
/// model is an error (real Shopify would apply it; silently ignoring it would make a test
/// pass for the wrong reason).
pub fn parse_query(q: &str) -> Result<Vec<TimeFilter>, String> {
    let mut out = Vec::new();
    for term in q.split_whitespace().filter(|t| *t != "AND") {
        let (field, rest) = term
            .split_once(':')
            .ok_or_else(|| format!("search term `{term}` is not modelled by the simulator"))?;
        let field = match field {
            "updated_at" => TimeField::UpdatedAt,
            "created_at" => TimeField::CreatedAt,
            _ => {
                return Err(format!(
                    "search field `{field}` is not modelled by the simulator"
                ))
            }
        };
        let (op, value) = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ]
        .into_iter()
        .find_map(|(p, op)| rest.strip_prefix(p).map(|v| (op, v)))
        .ok_or_else(|| format!("search term `{term}` has no comparison"))?;
        let value = value.trim_matches(|c| c == '\'' || c == '"');
        let at = DateTime::parse_from_rfc3339(value)
            .map_err(|e| format!("search term `{term}`: {e}"))?
            .with_timezone(&Utc);
        out.push(TimeFilter { field, op, at });
    }
    Ok(out)
}

impl TimeFilter {
    pub fn matches(&self, o: &SimOrder) -> bool {
        let t = match self.field {
            TimeField::UpdatedAt => o.updated_at,
            TimeField::CreatedAt => o.created_at,
        };
        match self.op {
            Cmp::Gt => t > self.at,
            Cmp::Ge => t >= self.at,
            Cmp::Lt => t < self.at,
            Cmp::Le => t <= self.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_parsed_or_refused() {
        let f =
            parse_query("updated_at:>='2026-01-01T00:00:00Z' AND updated_at:<2026-02-01T00:00:00Z")
                .unwrap();
        assert_eq!(f.len(), 2);
        assert!(parse_query("status:open").is_err());
        assert!(parse_query("updated_at:2026-01-01").is_err());
        assert!(parse_query("").unwrap().is_empty());
    }
}
