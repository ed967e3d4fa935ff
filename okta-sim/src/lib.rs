//! okta-sim: an in-memory Okta org behind the Management API endpoints tierflow's Okta writer
//! uses, with Okta's status codes, error bodies and rate-limit behaviour. Tests, the local
//! pipeline and benchmarks run against it; it is not Okta, and the contract test in
//! `okta-writer/tests/contract.rs` checks its responses against Okta's official OpenAPI spec.
//!
//! - [`store`]: users, groups, memberships, search.
//! - [`limits`]: per-bucket fixed-window rate limits.
//! - [`api`]: the HTTP surface (Okta's paths, plus `/__sim/*` to inspect and steer it).
//!
//! Served endpoints: `GET/POST /api/v1/users/{idOrLogin}`, `GET/POST /api/v1/users`,
//! `GET /api/v1/users/{id}/groups`, `GET /api/v1/groups`, `GET /api/v1/groups/{id}`,
//! `GET /api/v1/groups/{id}/users`, `PUT/DELETE /api/v1/groups/{gid}/users/{uid}`,
//! `POST /oauth2/v1/token` (client credentials with a `private_key_jwt` assertion).

pub mod api;
pub mod limits;
pub mod rules;
pub mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use limits::Bucket;
pub use store::{AttrType, Seed, SeedGroup, SeedUser};

/// Injected failures. Shares are probabilities per request, drawn from a seeded generator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 500/503 before they take effect.
    pub error_rate: f64,
    /// Share of membership changes answered 409 `E0000112` (Okta's "try again" conflict).
    pub conflict_rate: f64,
    /// Added to every request.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Share of requests that hang for `timeout` and then fail with 504.
    pub timeout_rate: f64,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// An OAuth 2.0 service app allowed to get tokens with a `private_key_jwt` assertion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthClient {
    pub client_id: String,
    /// The app's public key (PEM, RSA or EC).
    pub public_key_pem: String,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Valid `SSWS` API tokens.
    pub api_tokens: Vec<String>,
    pub oauth_clients: Vec<OAuthClient>,
    /// Lifetime of issued access tokens (Okta: one hour).
    pub token_lifetime: Duration,
    /// Rate-limit window (Okta: one minute); whole seconds.
    pub window: Duration,
    /// Per-bucket limits per window; buckets not listed get Okta's typical limit.
    pub limits: BTreeMap<Bucket, u32>,
    /// Concurrent requests allowed (Okta: 75 for most orgs).
    pub max_concurrency: usize,
    pub faults: Faults,
    /// Seed of the fault generator.
    pub rng_seed: u64,
    /// Request-log entries kept (oldest dropped first).
    pub log_capacity: usize,
    /// Keep request and response bodies in the log (for the contract test).
    pub log_bodies: bool,
    /// How long after a profile change or a rule's activation the group rules evaluate
    /// (Okta: asynchronous, no documented delay).
    pub rule_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_tokens: vec!["sim-token".into()],
            oauth_clients: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            window: Duration::from_secs(60),
            limits: BTreeMap::new(),
            max_concurrency: 75,
            faults: Faults::default(),
            rng_seed: 1,
            log_capacity: 100_000,
            log_bodies: false,
            rule_delay: Duration::from_millis(500),
        }
    }
}

impl SimConfig {
    /// No practical rate or concurrency limit (a million per window in every bucket, 1000
    /// concurrent requests): for measuring or testing what is not the limiter.
    pub fn unthrottled() -> SimConfig {
        SimConfig {
            limits: Bucket::ALL.iter().map(|b| (*b, 1_000_000)).collect(),
            max_concurrency: 1000,
            ..SimConfig::default()
        }
    }
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub method: String,
    /// Path and query as sent.
    pub uri: String,
    /// The operation (`getUser`, `updateUser`, … as in Okta's spec), or `unknown`.
    pub operation: String,
    pub status: u16,
    /// Whether a 429 was for concurrency (`X-Rate-Limit-Limit: 0`).
    pub concurrency_limited: bool,
    /// When the request arrived, milliseconds since the Unix epoch (rate-limit windows are
    /// aligned to it).
    pub at_ms: u64,
    pub request_body: Option<serde_json::Value>,
    pub response_body: Option<serde_json::Value>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<store::Store>,
    pub limits: limits::RateLimits,
    pub config: Mutex<SimConfig>,
    pub in_flight: AtomicUsize,
    log: Mutex<VecDeque<LogEntry>>,
    /// Issued access tokens → expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Shared {
    pub fn new(config: SimConfig, seed: &Seed) -> Result<Arc<Shared>, String> {
        use rand::SeedableRng;
        Ok(Arc::new(Shared {
            store: Mutex::new(store::Store::new(seed)?),
            limits: limits::RateLimits::new(config.window, config.limits.clone()),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(config.rng_seed)),
            config: Mutex::new(config),
            in_flight: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(HashMap::new()),
        }))
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> SimConfig {
        Self::lock(&self.config).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        Self::lock(&self.config).faults = faults;
    }

    pub fn set_api_tokens(&self, tokens: Vec<String>) {
        Self::lock(&self.config).api_tokens = tokens;
    }

    pub fn declare_attribute(&self, name: &str, t: AttrType) {
        Self::lock(&self.store)
            .attributes
            .insert(name.to_owned(), t);
    }

    pub fn add_user(&self, user: &SeedUser) -> Result<String, String> {
        let mut store = Self::lock(&self.store);
        let id = store.create_user(user).map_err(|e| e.summary)?;
        for name in &user.groups {
            let gid = store
                .group_by_name(name)
                .map(|g| g.id.clone())
                .ok_or_else(|| format!("no group `{name}`"))?;
            store
                .set_membership(&gid, &id, true)
                .map_err(|e| e.summary)?;
        }
        Ok(id)
    }

    /// Delete a user (to make lookups miss).
    pub fn remove_user(&self, login: &str) -> bool {
        Self::lock(&self.store).remove_user(login)
    }

    /// A user's profile, by login or id.
    pub fn profile(&self, login: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        Self::lock(&self.store)
            .user(login)
            .map(|u| u.profile.clone())
    }

    /// Names of the groups `login` is in, sorted (`Everyone` included), after the group rule
    /// evaluations due by now.
    pub fn groups_of(&self, login: &str) -> Vec<String> {
        let mut store = Self::lock(&self.store);
        store.run_rules(self.now_ms());
        let Some(u) = store.user(login) else {
            return Vec::new();
        };
        let mut names: Vec<String> = store
            .groups_of(&u.id)
            .iter()
            .map(|g| g.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Every user's login by user id: to read the request log (whose paths carry ids) per
    /// customer.
    pub fn logins_by_id(&self) -> std::collections::HashMap<String, String> {
        Self::lock(&self.store)
            .users
            .values()
            .filter_map(|u| Some((u.id.clone(), u.profile.get("login")?.as_str()?.to_owned())))
            .collect()
    }

    pub fn requests(&self) -> Vec<LogEntry> {
        Self::lock(&self.log).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        Self::lock(&self.log).clear();
    }

    fn record(&self, entry: LogEntry) {
        let cap = Self::lock(&self.config).log_capacity;
        let mut log = Self::lock(&self.log);
        while log.len() >= cap.max(1) {
            log.pop_front();
        }
        log.push_back(entry);
    }

    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn draw(&self) -> f64 {
        use rand::Rng;
        Self::lock(&self.rng).random::<f64>()
    }
}

/// A simulator serving on a loopback port, for tests and benchmarks.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// Start on `127.0.0.1:0` in the current runtime.
    pub async fn start(config: SimConfig, seed: &Seed) -> anyhow::Result<SimHandle> {
        let shared = Shared::new(config, seed).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = api::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SimHandle { addr, shared, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A seed with the given OKTA_GROUP groups and users `login` → groups.
pub fn seed(groups: &[&str], users: &[(&str, &[&str])]) -> Seed {
    Seed {
        groups: groups
            .iter()
            .map(|g| SeedGroup {
                name: (*g).to_owned(),
                group_type: "OKTA_GROUP".into(),
                description: None,
            })
            .collect(),
        users: users
            .iter()
            .map(|(login, groups)| SeedUser {
                login: (*login).to_owned(),
                email: Some((*login).to_owned()),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..SeedUser::default()
            })
            .collect(),
        attributes: BTreeMap::new(),
    }
}

pub(crate) fn in_flight_guard(shared: &Shared) -> InFlight<'_> {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    InFlight(shared)
}

pub(crate) struct InFlight<'a>(&'a Shared);

impl InFlight<'_> {
    /// Requests in flight, this one included.
    pub fn count(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
