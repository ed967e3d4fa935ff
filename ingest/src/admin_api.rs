//! A client of Shopify's Admin GraphQL API for historic sync: the few queries `backfill`
//! sends, and Shopify's documented failure answers handled as documented.
//!
//! - **Cost throttling**: every answer carries `extensions.cost.throttleStatus`; a query the
//!   bucket cannot pay is answered 200 with an error whose `extensions.code` is `THROTTLED`
//!   and no data. The client waits for the bucket to refill (the missing points ÷
//!   `restoreRate`) and sends again.
//! - **HTTP 429** (REST-style request limit) carries `Retry-After` (seconds): waited for.
//! - **5xx and transport errors**: retried with exponential backoff (0.5 s doubling to 30 s,
//!   at most [`MAX_ATTEMPTS`] attempts), then an error.
//! - **401/403**: the token is unknown, revoked or lacks a scope: an error naming the shop and
//!   the fix, never retried (a retry cannot fix a credential).
//! - Any other status, a body that is not JSON, or GraphQL `errors` beside no data: an error
//!   with Shopify's message (an odd answer is never read as success).
//!
//! The query texts are constants here so the contract test (`tests/it/backfill.rs`) can
//! validate each against Shopify's published schema of [`crate::config::ADMIN_API_VERSION`].

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::config::AdminApi;

/// Attempts per request on 5xx and transport errors.
pub const MAX_ATTEMPTS: u32 = 8;
/// Deadline of one GraphQL request, and the longest silence on a result download.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A `THROTTLED` answer is waited out this many times per request before giving up.
const MAX_THROTTLED: u32 = 50;

/// The scopes the app was granted on this shop.
pub const SCOPES_QUERY: &str =
    "query TierflowScopes { currentAppInstallation { accessScopes { handle } } }";

/// Start a bulk query operation.
pub const RUN_BULK_MUTATION: &str = "mutation TierflowBackfill($query: String!) { bulkOperationRunQuery(query: $query, groupObjects: false) { bulkOperation { id status } userErrors { field message code } } }";

/// One page of orders updated in a window, oldest update first (`ingest reconcile`).
pub fn orders_page_query() -> String {
    format!("query TierflowReconcile($query: String!, $after: String) {{ orders(first: 250, after: $after, sortKey: UPDATED_AT, query: $query) {{ edges {{ node {{ {ORDER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
}

/// The app's webhook subscriptions on the shop (those made through the Admin API; ones
/// declared in the app's `shopify.app.toml` are not listed by this query).
pub const SUBSCRIPTIONS_QUERY: &str =
    "query TierflowSubscriptions { webhookSubscriptions(first: 250) { nodes { topic uri } } }";

/// One bulk operation's state.
pub const BULK_STATUS_QUERY: &str = "query TierflowBulkStatus($id: ID!) { bulkOperation(id: $id) { id status errorCode objectCount url partialDataUrl } }";

/// Cancel a bulk operation.
pub const CANCEL_BULK_MUTATION: &str = "mutation TierflowCancelBulk($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { id status } userErrors { field message } } }";

/// The order fields the spend rule and the profile facts need, as one bulk query's node.
pub const ORDER_FIELDS: &str = "id legacyResourceId name email createdAt updatedAt cancelledAt test displayFinancialStatus currentTotalPriceSet { shopMoney { amount currencyCode } } customer { id legacyResourceId tags defaultEmailAddress { emailAddress marketingState } }";

/// The bulk query over a shop's orders, oldest update first, optionally only those matching
/// `search` (Shopify's search syntax, e.g. `updated_at:>='2024-01-01T00:00:00Z'`; single
/// quotes only, as it sits in a GraphQL string).
pub fn bulk_orders_query(search: Option<&str>) -> String {
    let filter = search
        .map(|s| format!(", query: \"{s}\""))
        .unwrap_or_default();
    format!("{{ orders(sortKey: UPDATED_AT{filter}) {{ edges {{ node {{ {ORDER_FIELDS} }} }} }} }}")
}

/// Whether an order exists (a deleted one reads as `null`): the `orders/delete` check.
pub const ORDER_EXISTS_QUERY: &str =
    "query TierflowOrderExists($id: ID!) { order(id: $id) { id } }";

/// How many orders match a search, counted up to `$limit` (`precision` `AT_LEAST` beyond).
pub const ORDERS_COUNT_QUERY: &str = "query TierflowCount($query: String!, $limit: Int) { ordersCount(query: $query, limit: $limit) { count precision } }";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Shopify refused the access token for {shop} (HTTP {status}): it is unknown, revoked or expired; set a valid [shopify.shops.\"{shop}\"] admin_access_token and run again (the checkpoint is kept)")]
    Unauthorized { shop: String, status: u16 },
    #[error("Shopify answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request to Shopify failed after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error(
        "Shopify kept answering THROTTLED ({0} times): the shop's API budget is used by other apps"
    )]
    Throttled(u32),
    #[error("Shopify answered with GraphQL errors: {0}")]
    GraphQL(String),
    #[error("Shopify's answer is not what the API documents: {0}")]
    Unexpected(String),
}

impl AdminError {
    /// Whether running again later can help without a change by the operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AdminError::Unavailable { .. } | AdminError::Throttled(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct AdminClient {
    api: AdminApi,
    http: reqwest::Client,
    /// The first wait after a 5xx or transport error (doubling to 30 s).
    retry_base: Duration,
}

impl AdminClient {
    pub fn new(api: AdminApi) -> anyhow::Result<Self> {
        // No whole-request deadline on the client: a bulk result of millions of orders streams
        // for minutes while it is published. A stalled read still fails (`read_timeout`), and
        // every GraphQL request has its own deadline (`REQUEST_TIMEOUT`).
        let http = reqwest::Client::builder()
            .read_timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tierflow-ingest/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(AdminClient {
            api,
            http,
            retry_base: Duration::from_millis(500),
        })
    }

    /// Start retries at `base` instead of 0.5 s (tests).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    pub fn shop(&self) -> &str {
        &self.api.shop
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Send one GraphQL request and return its `data`, handling throttling and retries.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value, AdminError> {
        let body = json!({"query": query, "variables": variables});
        let mut attempts = 0;
        let mut throttled = 0;
        let mut backoff = self.retry_base;
        loop {
            attempts += 1;
            let sent = self
                .http
                .post(self.api.graphql_url.clone())
                .timeout(REQUEST_TIMEOUT)
                .header("x-shopify-access-token", self.api.token.expose_secret())
                .json(&body)
                .send()
                .await;
            let wait = match sent {
                Err(e) => Some(format!("transport: {e}")),
                Ok(r) => {
                    let status = r.status().as_u16();
                    match status {
                        200 => {
                            let v: Value = r.json().await.map_err(|e| {
                                AdminError::Unexpected(format!("a 200 body that is not JSON: {e}"))
                            })?;
                            match throttle_wait(&v) {
                                Some(wait) => {
                                    throttled += 1;
                                    if throttled > MAX_THROTTLED {
                                        return Err(AdminError::Throttled(throttled));
                                    }
                                    tracing::info!(
                                        wait_ms = wait.as_millis() as u64,
                                        "Shopify answered THROTTLED; waiting for the cost bucket"
                                    );
                                    tokio::time::sleep(wait).await;
                                    attempts -= 1; // throttling is not a failure
                                    continue;
                                }
                                None => return data_of(v),
                            }
                        }
                        401 | 403 => {
                            return Err(AdminError::Unauthorized {
                                shop: self.api.shop.clone(),
                                status,
                            })
                        }
                        429 => {
                            let wait = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<f64>().ok())
                                .filter(|s| s.is_finite() && *s >= 0.0)
                                .map_or(Duration::from_secs(2), |s| {
                                    Duration::from_secs_f64(s.min(60.0))
                                });
                            tracing::info!(
                                wait_ms = wait.as_millis() as u64,
                                "Shopify answered 429; waiting Retry-After"
                            );
                            tokio::time::sleep(wait).await;
                            attempts -= 1;
                            continue;
                        }
                        500..=599 => Some(format!("HTTP {status}")),
                        _ => {
                            let body = r.text().await.unwrap_or_default();
                            return Err(AdminError::Status {
                                status,
                                body: body.chars().take(500).collect(),
                            });
                        }
                    }
                }
            };
            let last = wait.unwrap_or_default();
            if attempts >= MAX_ATTEMPTS {
                return Err(AdminError::Unavailable { attempts, last });
            }
            tracing::warn!(attempt = attempts, error = %last, "Shopify request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// How long to wait before a `THROTTLED` query can be paid, if the answer is one.
fn throttle_wait(v: &Value) -> Option<Duration> {
    let throttled = v["errors"]
        .as_array()?
        .iter()
        .any(|e| e["extensions"]["code"] == "THROTTLED");
    if !throttled {
        return None;
    }
    let cost = &v["extensions"]["cost"];
    let requested = cost["requestedQueryCost"].as_f64().unwrap_or(100.0);
    let available = cost["throttleStatus"]["currentlyAvailable"]
        .as_f64()
        .unwrap_or(0.0);
    let rate = cost["throttleStatus"]["restoreRate"]
        .as_f64()
        .filter(|r| *r > 0.0)
        .unwrap_or(50.0);
    let seconds = ((requested - available).max(0.0) / rate).clamp(0.05, 60.0);
    Some(Duration::from_secs_f64(seconds))
}

fn data_of(mut v: Value) -> Result<Value, AdminError> {
    let errors = v.get("errors").filter(|e| !e.is_null()).cloned();
    match (v.get_mut("data").map(Value::take), errors) {
        (Some(data), None) if data.is_object() => Ok(data),
        (_, Some(e)) => Err(AdminError::GraphQL(
            e.as_array()
                .map(|list| {
                    list.iter()
                        .map(|x| x["message"].as_str().unwrap_or("?").to_owned())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| e.to_string()),
        )),
        _ => Err(AdminError::Unexpected("a 200 answer without data".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_answers_wait_for_the_missing_points() {
        let v = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 300, "throttleStatus": {"currentlyAvailable": 100, "restoreRate": 100}}}});
        assert_eq!(throttle_wait(&v), Some(Duration::from_secs(2)));
        assert_eq!(throttle_wait(&json!({"data": {}})), None);
    }

    #[test]
    fn errors_without_data_and_odd_answers_are_errors() {
        assert!(data_of(json!({"data": {"a": 1}})).is_ok());
        assert!(matches!(
            data_of(json!({"errors": [{"message": "Field 'x' doesn't exist"}]})),
            Err(AdminError::GraphQL(m)) if m.contains("doesn't exist")
        ));
        assert!(matches!(
            data_of(json!({"data": null})),
            Err(AdminError::Unexpected(_))
        ));
        assert!(matches!(
            data_of(json!([1])),
            Err(AdminError::Unexpected(_))
        ));
    }
}
