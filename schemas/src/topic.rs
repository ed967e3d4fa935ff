//! The Shopify webhook topics tierflow knows, and what each one's body is about.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Shopify webhook topic (the `X-Shopify-Topic` header) that tierflow understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ShopifyTopic {
    OrdersCreate,
    OrdersUpdated,
    OrdersCancelled,
    OrdersPaid,
    OrdersEdited,
    OrdersDelete,
    RefundsCreate,
    CustomersCreate,
    CustomersUpdate,
    CustomersDelete,
    CustomersRedact,
    CustomersDataRequest,
    ShopRedact,
}

/// What a topic's body describes, which decides how its record is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicScope {
    /// An order object: top-level `id`, and `customer` (an object, or `null` for guests).
    Order,
    /// An order's deletion: `{"id": <order id>}` and nothing else (Shopify's documented
    /// `orders/delete` payload), so no customer.
    OrderDeletion,
    /// A refund object: top-level `id` and `order_id`, no customer.
    Refund,
    /// A customer object: top-level `id` is the customer id.
    Customer,
    /// A compliance payload: `customer.id` names the customer.
    CustomerCompliance,
    /// A shop-wide compliance payload: no customer at all.
    Shop,
}

impl ShopifyTopic {
    pub const ALL: [ShopifyTopic; 13] = [
        ShopifyTopic::OrdersCreate,
        ShopifyTopic::OrdersUpdated,
        ShopifyTopic::OrdersCancelled,
        ShopifyTopic::OrdersPaid,
        ShopifyTopic::OrdersEdited,
        ShopifyTopic::OrdersDelete,
        ShopifyTopic::RefundsCreate,
        ShopifyTopic::CustomersCreate,
        ShopifyTopic::CustomersUpdate,
        ShopifyTopic::CustomersDelete,
        ShopifyTopic::CustomersRedact,
        ShopifyTopic::CustomersDataRequest,
        ShopifyTopic::ShopRedact,
    ];

    /// The topic as Shopify spells it in `X-Shopify-Topic`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ShopifyTopic::OrdersCreate => "orders/create",
            ShopifyTopic::OrdersUpdated => "orders/updated",
            ShopifyTopic::OrdersCancelled => "orders/cancelled",
            ShopifyTopic::OrdersPaid => "orders/paid",
            ShopifyTopic::OrdersEdited => "orders/edited",
            ShopifyTopic::OrdersDelete => "orders/delete",
            ShopifyTopic::RefundsCreate => "refunds/create",
            ShopifyTopic::CustomersCreate => "customers/create",
            ShopifyTopic::CustomersUpdate => "customers/update",
            ShopifyTopic::CustomersDelete => "customers/delete",
            ShopifyTopic::CustomersRedact => "customers/redact",
            ShopifyTopic::CustomersDataRequest => "customers/data_request",
            ShopifyTopic::ShopRedact => "shop/redact",
        }
    }

    pub const fn scope(self) -> TopicScope {
        match self {
            ShopifyTopic::OrdersCreate
            | ShopifyTopic::OrdersUpdated
            | ShopifyTopic::OrdersCancelled
            | ShopifyTopic::OrdersPaid
            | ShopifyTopic::OrdersEdited => TopicScope::Order,
            ShopifyTopic::OrdersDelete => TopicScope::OrderDeletion,
            ShopifyTopic::RefundsCreate => TopicScope::Refund,
            ShopifyTopic::CustomersCreate
            | ShopifyTopic::CustomersUpdate
            | ShopifyTopic::CustomersDelete => TopicScope::Customer,
            ShopifyTopic::CustomersRedact | ShopifyTopic::CustomersDataRequest => {
                TopicScope::CustomerCompliance
            }
            ShopifyTopic::ShopRedact => TopicScope::Shop,
        }
    }
}

impl fmt::Display for ShopifyTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Shopify topic `{0}`; known topics: orders/create, orders/updated, orders/cancelled, orders/paid, orders/edited, orders/delete, refunds/create, customers/create, customers/update, customers/delete, customers/redact, customers/data_request, shop/redact")]
pub struct UnknownTopic(pub String);

impl FromStr for ShopifyTopic {
    type Err = UnknownTopic;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShopifyTopic::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTopic(s.to_owned()))
    }
}

impl TryFrom<String> for ShopifyTopic {
    type Error = UnknownTopic;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ShopifyTopic> for String {
    fn from(t: ShopifyTopic) -> String {
        t.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_round_trips_through_its_name() {
        for t in ShopifyTopic::ALL {
            assert_eq!(t.as_str().parse::<ShopifyTopic>(), Ok(t));
        }
        assert!("orders/deleted".parse::<ShopifyTopic>().is_err());
        assert!("ORDERS/CREATE".parse::<ShopifyTopic>().is_err());
    }
}
