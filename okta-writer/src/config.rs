//! The Okta writer's view of the pipeline config: `[kafka]`, `[topics]`, `[telemetry]`
//! (shared), `[okta]`, `[okta_writer]`, and `[[tiers]]` (the segmenter's table: the writer needs
//! every tier's Okta group to heal drift).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemas::{TierRow, TierTable};
use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::config::{
    de, ConfigError, KafkaConfig, ServiceSettings, TelemetryConfig, TopicsConfig,
};

use crate::profile::ProfileAttributes;
use crate::stores::{StoreConfig, StoreNames};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub okta: OktaConfig,
    #[serde(default)]
    pub okta_writer: WriterConfig,
    #[serde(default)]
    pub tiers: Vec<TierRow>,
}

/// How a segment update's customer is found in Okta (`[okta] user_lookup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    /// `GET /api/v1/users/{email}`: the customer's email is their Okta login. Strongly
    /// consistent, in the 2,000/min bucket.
    Login,
    /// `search=profile.email eq "…"`: eventually consistent, 600/min, may match several users.
    Email,
    /// `search=profile.<attr> eq "<customer id>"`: a custom attribute holding the Shopify id.
    Attribute(String),
}

impl<'de> Deserialize<'de> for UserLookup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "login" => Ok(UserLookup::Login),
            "email" => Ok(UserLookup::Email),
            other => match other.strip_prefix("attribute:") {
                Some(a) if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Ok(UserLookup::Attribute(a.to_owned()))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "`{s}`: use `login`, `email`, or `attribute:<profile attribute>` (e.g. attribute:shopify_customer_id)"
                ))),
            },
        }
    }
}

/// What to do when no Okta user matches a customer (`[okta] missing_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingUser {
    /// Dead-letter the update (redrive it once the user exists).
    DeadLetter,
    /// Count and skip it.
    Skip,
    /// Create a staged user with login = email and the attributes.
    Create,
}

/// How customers get into their tier group (`[okta] group_assignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupAssignment {
    /// The writer adds and removes memberships itself (a tier change: profile, add, remove).
    Calls,
    /// The writer writes the tier attribute only and Okta's group rules (one per tier, made by
    /// `okta-writer rules`) move the user: a tier change is one call. Needs a `tier` row in
    /// `[okta.profile_attributes]`.
    Rules,
}

/// `[okta]`: the org, credentials, lookup, and the limits the writer keeps to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OktaConfig {
    /// `https://<org>.okta.com`. `http://` is accepted only for loopback (the simulator), or
    /// with `allow_plain_http` (a simulator on a private network, e.g. docker-compose's).
    pub base_url: Option<String>,
    /// Allow `http://` to a non-loopback `base_url`. Never for real Okta: the token would
    /// travel in clear.
    pub allow_plain_http: bool,
    /// SSWS API token, inline (prefer `api_token_file` or `TIERFLOW_OKTA__API_TOKEN`).
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    /// OAuth 2.0 service app (`private_key_jwt`) instead of an API token.
    pub oauth_client_id: Option<String>,
    /// PEM private key (RSA or EC) registered with the service app.
    pub oauth_private_key_file: Option<PathBuf>,
    /// `kid` of that key in the app's JWKS.
    pub oauth_key_id: Option<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub oauth_scopes: Vec<String>,
    pub user_lookup: UserLookup,
    pub missing_user: MissingUser,
    /// How long a customer → Okta user id mapping (and what the writer last applied) is trusted.
    #[serde(with = "humantime_serde")]
    pub user_cache_ttl: Duration,
    /// Most customers kept in that cache.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub user_cache_size: u64,
    /// `[okta.profile_attributes]`: Okta profile attribute → the update's field it holds.
    pub profile_attributes: ProfileAttributes,
    /// Memberships by the writer's calls, or by Okta group rules on the tier attribute.
    pub group_assignment: GroupAssignment,
    /// `[okta.stores."<shop>"]`: the shops this writer serves, each with the suffixes of its
    /// own attributes and tier groups (see [`crate::stores`]). At least one is required.
    #[serde(deserialize_with = "crate::stores::deserialize")]
    pub stores: std::collections::BTreeMap<String, StoreConfig>,
    /// Replaced by `profile_attributes`; kept only to tell an operator how to migrate.
    #[serde(rename = "total_spent_attribute")]
    pub replaced_total_spent_attribute: Option<String>,
    /// Replaced by `profile_attributes`; kept only to tell an operator how to migrate.
    #[serde(rename = "orders_count_attribute")]
    pub replaced_orders_count_attribute: Option<String>,
    /// Share of each rate-limit bucket this writer may use (Okta gives a token 50% by default).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub rate_limit_share: f64,
    /// Share of that budget held back, for clock skew and requests racing the window reset.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub rate_limit_margin: f64,
    /// How a window's share is spent: `spread` evenly over the window, or `burst` as fast as
    /// requests come (see `limiter.rs`).
    pub pacing: crate::limiter::Pacing,
    /// Most Okta requests in flight (Okta allows 75 concurrent per org, shared with everyone).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First retry delay; doubles (with ±50% jitter) up to `retry_max_interval`.
    #[serde(with = "humantime_serde")]
    pub retry_initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_interval: Duration,
    /// After this long retrying one call, the update is dead-lettered (`retries_exhausted`).
    #[serde(with = "humantime_serde")]
    pub retry_max_elapsed: Duration,
    /// Pause after a credentials failure (401/403 on consecutive calls); doubles up to
    /// `credentials_pause_max` while they keep failing.
    #[serde(with = "humantime_serde")]
    pub credentials_pause: Duration,
    #[serde(with = "humantime_serde")]
    pub credentials_pause_max: Duration,
}

impl Default for OktaConfig {
    fn default() -> Self {
        OktaConfig {
            base_url: None,
            allow_plain_http: false,
            api_token: None,
            api_token_file: None,
            oauth_client_id: None,
            oauth_private_key_file: None,
            oauth_key_id: None,
            oauth_scopes: vec!["okta.users.manage".into(), "okta.groups.manage".into()],
            user_lookup: UserLookup::Login,
            missing_user: MissingUser::DeadLetter,
            user_cache_ttl: Duration::from_secs(3600),
            user_cache_size: 1_000_000,
            profile_attributes: ProfileAttributes::default(),
            group_assignment: GroupAssignment::Calls,
            stores: Default::default(),
            replaced_total_spent_attribute: None,
            replaced_orders_count_attribute: None,
            rate_limit_share: 0.5,
            rate_limit_margin: 0.05,
            pacing: crate::limiter::Pacing::Spread,
            max_concurrency: 16,
            request_timeout: Duration::from_secs(15),
            retry_initial_interval: Duration::from_millis(250),
            retry_max_interval: Duration::from_secs(30),
            retry_max_elapsed: Duration::from_secs(600),
            credentials_pause: Duration::from_secs(5),
            credentials_pause_max: Duration::from_secs(300),
        }
    }
}

/// How the writer authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    ApiToken(SecretString),
    OAuth {
        client_id: String,
        private_key_pem: SecretString,
        key_id: Option<String>,
        scopes: Vec<String>,
    },
}

/// `[okta_writer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// `/metrics` and `/healthz`.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub admin_listen: SocketAddr,
    pub group_id: String,
    /// Customers applied concurrently (each customer's updates stay in order).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_customers_in_flight: usize,
    /// Records held (in flight or waiting behind their customer) before partitions are paused.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_buffered_records: usize,
    /// How long a batch of polled records waits for more, so a burst for one customer is
    /// coalesced into one application.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// How long shutdown waits for in-flight applications before leaving them to redelivery.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Under a backlog, customers whose tier changes (or who are new, or redacted) take their
    /// turn before customers whose spend alone changed (`queue.rs`); `false`: arrival order.
    pub tier_changes_first: bool,
    /// The longest a spend-only customer waits behind tier changes before going next.
    #[serde(with = "humantime_serde")]
    pub spend_only_max_wait: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            admin_listen: ([127, 0, 0, 1], 9092).into(),
            group_id: "tierflow-okta-writer".into(),
            max_customers_in_flight: 64,
            max_buffered_records: 20_000,
            batch_wait: Duration::from_millis(20),
            shutdown_timeout: Duration::from_secs(20),
            tier_changes_first: true,
            spend_only_max_wait: Duration::from_secs(300),
        }
    }
}

impl ServiceSettings for Settings {
    fn kafka_mut(&mut self) -> &mut KafkaConfig {
        &mut self.kafka
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Settings::validate(self)
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => *d == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

impl Settings {
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        brokers: Option<String>,
    ) -> Result<Settings, ConfigError> {
        service_runtime::config::load_service(path, env, brokers)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.brokers()?;
        self.topics.validate()?;
        self.tier_table()?;
        self.base_url()?;
        self.credentials()?;
        let o = &self.okta;
        if !(o.rate_limit_share > 0.0 && o.rate_limit_share <= 1.0) {
            return Err(ConfigError::invalid(
                "okta.rate_limit_share",
                "must be in (0, 1], e.g. 0.5 for half of each bucket",
            ));
        }
        if !(0.0..0.5).contains(&o.rate_limit_margin) {
            return Err(ConfigError::invalid(
                "okta.rate_limit_margin",
                "must be in [0, 0.5), e.g. 0.05",
            ));
        }
        if o.max_concurrency == 0 || o.max_concurrency > 75 {
            return Err(ConfigError::invalid(
                "okta.max_concurrency",
                "must be 1..=75 (Okta's per-org concurrency limit is 75, shared with every other client)",
            ));
        }
        if o.retry_initial_interval.is_zero() || o.retry_max_interval < o.retry_initial_interval {
            return Err(ConfigError::invalid(
                "okta.retry_max_interval",
                "must be at least okta.retry_initial_interval, which must be above 0",
            ));
        }
        if o.credentials_pause.is_zero() || o.credentials_pause_max < o.credentials_pause {
            return Err(ConfigError::invalid(
                "okta.credentials_pause_max",
                "must be at least okta.credentials_pause, which must be above 0",
            ));
        }
        for (key, replaced, field) in [
            (
                "okta.total_spent_attribute",
                &o.replaced_total_spent_attribute,
                "total_spent",
            ),
            (
                "okta.orders_count_attribute",
                &o.replaced_orders_count_attribute,
                "orders_count",
            ),
        ] {
            if let Some(attr) = replaced {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "was replaced by the [okta.profile_attributes] table: remove it and write \
                         `{attr} = \"{field}\"` there (with a row for every attribute to keep)"
                    ),
                ));
            }
        }
        if let Some(problem) = o.profile_attributes.problem() {
            return Err(ConfigError::invalid("okta.profile_attributes", problem));
        }
        if o.group_assignment == GroupAssignment::Rules
            && o.profile_attributes.tier_attribute().is_none()
        {
            return Err(ConfigError::invalid(
                "okta.group_assignment",
                "\"rules\" needs exactly one tier attribute for the rules to match on: add a row to [okta.profile_attributes], e.g. shopify_tier = \"tier\" (and the attribute, a string, to the Okta profile schema)",
            ));
        }
        self.stores()?;
        let w = &self.okta_writer;
        if w.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "okta_writer.group_id",
                "must not be empty",
            ));
        }
        if w.spend_only_max_wait.is_zero() {
            return Err(ConfigError::invalid(
                "okta_writer.spend_only_max_wait",
                "must be above 0 (it bounds how long a spend-only update waits behind tier changes), e.g. \"5m\"",
            ));
        }
        if w.max_customers_in_flight == 0 {
            return Err(ConfigError::invalid(
                "okta_writer.max_customers_in_flight",
                "must be at least 1",
            ));
        }
        if w.max_buffered_records < w.max_customers_in_flight {
            return Err(ConfigError::invalid(
                "okta_writer.max_buffered_records",
                "must be at least okta_writer.max_customers_in_flight",
            ));
        }
        Ok(())
    }

    pub fn tier_table(&self) -> Result<TierTable, ConfigError> {
        Ok(TierTable::new(self.tiers.clone())?)
    }

    /// Every declared store's attribute and group names, checked ([`crate::stores::resolve`]).
    pub fn stores(&self) -> Result<Vec<StoreNames>, ConfigError> {
        crate::stores::resolve(
            &self.okta.stores,
            &self.okta.profile_attributes,
            &self.tier_table()?,
            &self.okta.user_lookup,
        )
    }

    /// The org URL without a trailing slash.
    pub fn base_url(&self) -> Result<String, ConfigError> {
        let raw = self.okta.base_url.as_deref().map(str::trim).unwrap_or("");
        if raw.is_empty() {
            return Err(ConfigError::invalid(
                "okta.base_url",
                "not set: set [okta] base_url (or TIERFLOW_OKTA__BASE_URL) to your org, e.g. https://example.okta.com",
            ));
        }
        let url = url::Url::parse(raw).map_err(|e| {
            ConfigError::invalid("okta.base_url", format!("`{raw}` is not a URL: {e}"))
        })?;
        let loopback = url.host().is_some_and(|h| is_loopback(&h));
        match url.scheme() {
            "https" => {}
            "http" if loopback || self.okta.allow_plain_http => {}
            _ => {
                return Err(ConfigError::invalid(
                    "okta.base_url",
                    format!("`{raw}` must be https:// (plain http only for a loopback simulator): the API token travels in every request"),
                ))
            }
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(ConfigError::invalid(
                "okta.base_url",
                format!(
                    "`{raw}` must be the org URL only, without a path (the writer adds /api/v1/…)"
                ),
            ));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    /// The credentials, read from the file where one is named.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let o = &self.okta;
        let token = match (&o.api_token, &o.api_token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "okta.api_token_file",
                    "set either okta.api_token or okta.api_token_file, not both",
                ))
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret("okta.api_token_file", path)?),
            (None, None) => None,
        };
        match (token, &o.oauth_client_id) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "okta.oauth_client_id",
                "set either an API token or an OAuth service app, not both",
            )),
            (Some(t), None) => {
                use secrecy::ExposeSecret;
                if t.expose_secret().trim().is_empty() {
                    return Err(ConfigError::invalid("okta.api_token", "is empty"));
                }
                Ok(Credentials::ApiToken(t))
            }
            (None, Some(client_id)) => {
                let path = o.oauth_private_key_file.as_ref().ok_or_else(|| {
                    ConfigError::invalid(
                        "okta.oauth_private_key_file",
                        "required with okta.oauth_client_id: the PEM private key registered with the service app",
                    )
                })?;
                if o.oauth_scopes.is_empty() {
                    return Err(ConfigError::invalid(
                        "okta.oauth_scopes",
                        "is empty; the writer needs okta.users.manage and okta.groups.manage",
                    ));
                }
                Ok(Credentials::OAuth {
                    client_id: client_id.clone(),
                    private_key_pem: read_secret("okta.oauth_private_key_file", path)?,
                    key_id: o.oauth_key_id.clone(),
                    scopes: o.oauth_scopes.clone(),
                })
            }
            (None, None) => Err(ConfigError::invalid(
                "okta.api_token",
                "no Okta credentials: set okta.api_token_file (or TIERFLOW_OKTA__API_TOKEN), or okta.oauth_client_id with okta.oauth_private_key_file",
            )),
        }
    }
}

fn read_secret(field: &str, path: &Path) -> Result<SecretString, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| SecretString::from(s.trim().to_owned()))
        .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Some("embedded".into()),
        )
    }

    const BASE: &str = r#"
[okta]
base_url = "https://example.okta.com"
api_token = "t0ken"
[[tiers]]
name = "Potential"
min = "0"
okta_group = "Shopify Potential"
[okta.stores."a.myshopify.com"]
"#;

    #[test]
    fn profile_attributes_are_a_table_and_the_replaced_keys_say_how_to_migrate() {
        let with = |extra: &str| {
            load(
                &BASE.replace("[okta]\n", &format!("[okta]\n{extra}\n")),
                &[],
            )
        };
        let e = with("total_spent_attribute = \"ltv\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("okta.total_spent_attribute") && e.contains("`ltv = \"total_spent\"`"),
            "{e}"
        );
        let text = format!(
            "{BASE}[okta.profile_attributes]\nltv = \"total_spent\"\nshop_tier = \"tier\"\n"
        );
        let s = load(&text, &[]).unwrap();
        let table: ProfileAttributes =
            toml::from_str("ltv = \"total_spent\"\nshop_tier = \"tier\"").unwrap();
        assert_eq!(s.okta.profile_attributes, table);
        let e = load(
            &format!("{BASE}[okta.profile_attributes]\n\"x-y\" = \"tier\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("okta.profile_attributes") && e.contains("`x-y`"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_env() {
        let s = load(
            BASE,
            &[
                (
                    "TIERFLOW_OKTA__USER_LOOKUP",
                    "attribute:shopify_customer_id",
                ),
                ("TIERFLOW_OKTA_WRITER__ADMIN_LISTEN", "127.0.0.1:1"),
            ],
        )
        .unwrap();
        assert_eq!(s.okta_writer.admin_listen.to_string(), "127.0.0.1:1");
        assert_eq!(
            s.okta.user_lookup,
            UserLookup::Attribute("shopify_customer_id".into())
        );
        assert_eq!(s.okta.missing_user, MissingUser::DeadLetter);
        assert!(matches!(s.credentials().unwrap(), Credentials::ApiToken(_)));
        assert!(
            !format!("{s:?}").contains("t0ken"),
            "the token must not reach Debug output"
        );
        assert_eq!(
            load(BASE, &[])
                .unwrap()
                .okta_writer
                .admin_listen
                .to_string(),
            "127.0.0.1:9092"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                BASE.replace("https://example.okta.com", "http://example.okta.com"),
                "okta.base_url",
            ),
            (
                BASE.replace("https://example.okta.com", "https://example.okta.com/api"),
                "without a path",
            ),
            (
                BASE.replace("api_token = \"t0ken\"", ""),
                "no Okta credentials",
            ),
            (
                BASE.replace(
                    "api_token = \"t0ken\"",
                    "api_token = \"t0ken\"\nuser_lookup = \"phone\"",
                ),
                "okta.user_lookup",
            ),
            (
                BASE.replace(
                    "api_token = \"t0ken\"",
                    "api_token = \"t0ken\"\nmax_concurrency = 100",
                ),
                "okta.max_concurrency",
            ),
            (
                BASE.replace(
                    "api_token = \"t0ken\"",
                    "api_token = \"t0ken\"\nrate_limit_share = 0",
                ),
                "okta.rate_limit_share",
            ),
            (
                BASE.replace(
                    "api_token = \"t0ken\"",
                    "api_token = \"t0ken\"\noauth_client_id = \"x\"",
                ),
                "not both",
            ),
            (
                BASE.replace("api_token = \"t0ken\"", "oauth_client_id = \"x\""),
                "okta.oauth_private_key_file",
            ),
            (
                BASE.replace(
                    "api_token = \"t0ken\"",
                    "api_token_file = \"/nonexistent/t\"",
                ),
                "/nonexistent/t",
            ),
        ];
        for (text, needle) in &cases {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
        assert!(load(
            &BASE.replace("https://example.okta.com", "http://127.0.0.1:8190"),
            &[]
        )
        .is_ok());
    }

    #[test]
    fn shipped_config_files_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        // The example names a secrets file that exists only in production.
        let env = [(
            "TIERFLOW_OKTA__API_TOKEN_FILE".to_string(),
            token.display().to_string(),
        )];
        Settings::load(Some(&root.join("tierflow.example.toml")), env, None)
            .unwrap_or_else(|e| panic!("tierflow.example.toml: {e}"));
        Settings::load(Some(&root.join("dev.toml")), [], None)
            .unwrap_or_else(|e| panic!("dev.toml: {e}"));
    }
}
