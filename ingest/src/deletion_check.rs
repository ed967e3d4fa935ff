//! Confirming an `orders/delete` with the Admin API before it is published.
//!
//! The HMAC covers the body only; `X-Shopify-Topic` is unsigned. An `orders/delete` body is
//! `{"id": N}`, the same as other resources' deletion bodies (`products/delete`, ...), so a
//! signed deletion of another resource, re-sent under `orders/delete`, would delete order N
//! from its customer's total. For a shop with Admin API access (`admin_access_token`), the
//! ingest asks Shopify whether order N still exists (`order(id:)`): a deleted order reads as
//! `null`. An order that exists is not deleted: the request is refused (422, nothing published;
//! Shopify retries a real deletion whose read raced it, and the retry is confirmed).
//!
//! The check fails open: a shop without Admin API access, an Admin API that errs or does not
//! answer within [`DEADLINE`] (Shopify's own deadline for the webhook is 5 s) publishes the
//! deletion unchecked, counted and logged, rather than answering non-2xx until Shopify deletes
//! the `orders/delete` subscription after 8 failures. At most [`MAX_CHECKS`] checks run at
//! once; beyond that the request gets 503, so a flood of replayed deletions cannot spend the
//! shop's API budget.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::admin_api::{AdminClient, ORDER_EXISTS_QUERY};
use crate::config::Settings;

/// The longest a check may take inside Shopify's 5 s webhook deadline (the publish follows).
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Checks in flight at once, all shops together.
pub const MAX_CHECKS: usize = 8;

/// What the check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Shopify has no such order: publish.
    Confirmed,
    /// The order exists: refuse.
    Exists,
    /// No Admin API access for the shop: publish unchecked.
    Unchecked,
    /// The Admin API erred or did not answer in time: publish unchecked.
    Failed,
    /// [`MAX_CHECKS`] already running: answer 503.
    Busy,
}

impl Verdict {
    /// The `result` label of `tierflow_ingest_deletion_checks_total`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Exists => "refused",
            Verdict::Unchecked => "unchecked",
            Verdict::Failed => "failed",
            Verdict::Busy => "busy",
        }
    }
}

/// The Admin API clients of the shops that have access, and the bound on checks.
#[derive(Debug)]
pub struct DeletionCheck {
    clients: HashMap<String, AdminClient>,
    permits: Semaphore,
}

impl DeletionCheck {
    /// One client per shop with an `admin_access_token(_file)`; none when `enabled` is false.
    pub fn new(settings: &Settings, enabled: bool) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        if enabled {
            for (shop, s) in &settings.shopify.shops {
                if s.admin_access_token.is_some() || s.admin_access_token_file.is_some() {
                    clients.insert(shop.clone(), AdminClient::new(settings.admin_api(shop)?)?);
                }
            }
        }
        Ok(DeletionCheck {
            clients,
            permits: Semaphore::new(MAX_CHECKS),
        })
    }

    /// Whether Shopify still has order `id` of `shop`.
    pub async fn check(&self, shop: &str, id: u64) -> Verdict {
        let Some(client) = self.clients.get(shop) else {
            return Verdict::Unchecked;
        };
        let Ok(_permit) = self.permits.try_acquire() else {
            return Verdict::Busy;
        };
        let gid = format!("gid://shopify/Order/{id}");
        let asked = client.graphql(ORDER_EXISTS_QUERY, json!({ "id": gid }));
        match tokio::time::timeout(DEADLINE, asked).await {
            Ok(Ok(data)) => match &data["order"] {
                serde_json::Value::Null => Verdict::Confirmed,
                o if o["id"] == gid.as_str() => Verdict::Exists,
                other => {
                    tracing::warn!(shop, order = id, answer = %other, "the Admin API answered an order lookup oddly; publishing the deletion unchecked");
                    Verdict::Failed
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(shop, order = id, error = %e, "cannot confirm an orders/delete with the Admin API; publishing it unchecked");
                Verdict::Failed
            }
            Err(_) => {
                tracing::warn!(
                    shop,
                    order = id,
                    "the Admin API did not answer an order lookup within {DEADLINE:?}; publishing the deletion unchecked"
                );
                Verdict::Failed
            }
        }
    }
}
