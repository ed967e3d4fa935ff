//! shopify-sim: an in-memory shop behind the Shopify Admin GraphQL API endpoints tierflow's
//! historic sync uses, loopback only. Tests and local runs use it; it is not Shopify. Every
//! request is validated against Shopify's published schema for the pinned version and every
//! answer is produced by schema-driven execution ([`schema`]), so a query Shopify would refuse
//! is refused here and an answer Shopify could not give cannot be given.
//!
//! - [`store`]: the shop's orders, shared with the webhook generator (`SimOrder::webhook_body`).
//! - [`graphql`]: `POST /admin/api/<version>/graphql.json`: access-token auth, the query
//!   cost and its leaky bucket (`THROTTLED`), `orders` with cursors, sort and search,
//!   `currentAppInstallation.accessScopes`, `webhookSubscriptions`, and the bulk operation
//!   calls.
//! - [`bulk`]: the bulk operation state machine (created → running → completed, failed,
//!   canceled, expired), one query operation at a time per app (`OPERATION_IN_PROGRESS`),
//!   the JSONL result at a URL that expires.
//!
//! Modelled from Shopify's documentation: without the `read_all_orders` scope only orders
//! created in the last 60 days are visible (no error: results are silently limited); HTTP 429
//! with `Retry-After` when the REST-style request limit is hit; 401 for an unknown or revoked
//! token. [`Faults`] switches each failure on for a test.

pub mod bulk;
pub mod graphql;
pub mod schema;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use store::{SimCustomer, SimOrder};

/// An Admin API access token and the scopes it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub token: String,
    /// e.g. `read_orders`, `read_all_orders`, `read_customers`.
    pub scopes: Vec<String>,
}

/// Injected failures, switched on by tests (`PUT /__sim/faults` for the binary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next bulk operation ends `FAILED` with this `BulkOperationErrorCode`
    /// (`ACCESS_DENIED`, `INTERNAL_SERVER_ERROR`, `TIMEOUT`), after writing
    /// `partial_lines` lines to its partial data file.
    pub fail_next_bulk: Option<String>,
    pub partial_lines: usize,
    /// The next bulk operation is canceled by someone else (another app session, support)
    /// while it runs.
    pub cancel_next_bulk: bool,
    /// The next N requests are answered 429 with `Retry-After`.
    pub too_many_requests: u32,
    /// The next N requests are answered 5xx (502, as Shopify's edge does).
    pub server_errors: u32,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The shop's domain (`example.myshopify.com`).
    pub shop: String,
    pub tokens: Vec<AccessToken>,
    /// The query-cost bucket: Shopify's standard plans hold 2,000 points restoring 100/s
    /// (Plus: 20,000 and 1,000/s).
    pub cost_bucket: f64,
    pub cost_restore_per_second: f64,
    /// How long a bulk operation takes from creation to completion (half of it `CREATED`).
    pub bulk_duration: Duration,
    /// How long a completed operation's result URL works (Shopify: a week).
    pub bulk_url_ttl: Duration,
    /// After this long a completed operation is `EXPIRED` and its data gone.
    pub bulk_expiry: Duration,
}

impl SimConfig {
    pub fn new(shop: &str, token: &str) -> SimConfig {
        SimConfig {
            shop: shop.to_owned(),
            tokens: vec![AccessToken {
                token: token.to_owned(),
                scopes: vec!["read_orders".into(), "read_all_orders".into()],
            }],
            cost_bucket: 2000.0,
            cost_restore_per_second: 100.0,
            bulk_duration: Duration::from_millis(200),
            bulk_url_ttl: Duration::from_secs(7 * 86_400),
            bulk_expiry: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Everything the simulator holds, behind one lock (requests are short and tests are small).
#[derive(Debug)]
pub struct State {
    pub orders: Vec<SimOrder>,
    pub bulk: Vec<bulk::BulkOp>,
    pub faults: Faults,
    /// Points left in the cost bucket, and when it was last refilled.
    pub bucket: f64,
    pub refilled: Instant,
    /// Requests served, by kind (`graphql`, `throttled`, `bulk_download`, ...).
    pub requests: std::collections::BTreeMap<String, u64>,
    /// The app's webhook subscriptions: (`WebhookSubscriptionTopic`, uri).
    pub subscriptions: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Shared {
    pub config: SimConfig,
    pub state: Mutex<State>,
    /// Where the simulator is reachable (for the result URLs it hands out).
    pub base_url: Mutex<String>,
}

impl Shared {
    pub fn new(config: SimConfig) -> Arc<Shared> {
        let bucket = config.cost_bucket;
        Arc::new(Shared {
            config,
            state: Mutex::new(State {
                orders: Vec::new(),
                bulk: Vec::new(),
                faults: Faults::default(),
                bucket,
                refilled: Instant::now(),
                requests: Default::default(),
                subscriptions: Vec::new(),
            }),
            base_url: Mutex::new(String::new()),
        })
    }

    /// Add or replace orders (by id).
    pub fn upsert_orders(&self, orders: impl IntoIterator<Item = SimOrder>) {
        let mut s = self.lock();
        for o in orders {
            match s.orders.iter_mut().find(|e| e.id == o.id) {
                Some(e) => *e = o,
                None => s.orders.push(o),
            }
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// Serve on `listen` (a loopback address; port 0 picks one).
    pub async fn start_on(config: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
        anyhow::ensure!(
            listen.ip().is_loopback(),
            "the Shopify simulator serves loopback only, not {listen}: it has no real authentication"
        );
        let shared = Shared::new(config);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        *shared.base_url.lock().unwrap_or_else(|e| e.into_inner()) = format!("http://{addr}");
        let app = graphql::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimHandle { addr, shared, task })
    }

    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        SimHandle::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// `http://127.0.0.1:<port>`: the Admin API base (`admin_api_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Add or replace orders (by id).
    pub fn upsert_orders(&self, orders: impl IntoIterator<Item = SimOrder>) {
        self.shared.upsert_orders(orders);
    }

    /// Replace the app's webhook subscriptions: (`ORDERS_UPDATED`, `https://…`) pairs.
    pub fn set_subscriptions(&self, subscriptions: Vec<(String, String)>) {
        self.shared.lock().subscriptions = subscriptions;
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Requests served of a kind (`graphql`, `throttled`, `too_many_requests`,
    /// `unauthorized`, `bulk_download`, `bulk_download_expired`).
    pub fn requests(&self, kind: &str) -> u64 {
        self.shared.lock().requests.get(kind).copied().unwrap_or(0)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
