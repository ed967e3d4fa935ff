//! The ingest's view of the pipeline config: `[kafka]`, `[topics]`, `[telemetry]` (shared),
//! `[shopify]` and `[ingest]` (its own). See the configuration reference in the README.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemas::ShopifyTopic;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::config::{
    de, ConfigError, KafkaConfig, ServiceSettings, TelemetryConfig, TopicsConfig,
};

/// Shopify's whole-request deadline; the produce timeout must leave room inside it.
const SHOPIFY_DEADLINE: Duration = Duration::from_secs(5);
/// Shopify documents no body limit; its own adapter accepts 500 kB. Refuse configs that could
/// turn a legitimate large order into a 413 that Shopify retries forever.
const MIN_BODY_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub shopify: ShopifyConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Only `[segmenter] group_id` (the section's other keys are the segmenter's): `backfill`
    /// waits for that group to consume what it published before it reads the tiers after.
    #[serde(default)]
    pub segmenter: SegmenterPeer,
}

/// The part of `[segmenter]` the ingest reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SegmenterPeer {
    pub group_id: String,
}

impl Default for SegmenterPeer {
    fn default() -> Self {
        // The segmenter's own default (segmenter/src/config.rs).
        SegmenterPeer {
            group_id: "tierflow-segmenter".into(),
        }
    }
}

/// `[shopify]`: the webhook secrets. Secrets never appear in `Debug` output or logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopifyConfig {
    /// Accepted for every shop: the app's client secret(s), or a store's notification key.
    #[serde(deserialize_with = "secret_list")]
    pub webhook_secrets: Vec<SecretString>,
    /// A file with one secret per line (blank lines and `#` comments ignored), added to
    /// `webhook_secrets`; for secrets mounted from a secret store.
    pub webhook_secrets_file: Option<PathBuf>,
    /// Per-shop secret sets, keyed by `*.myshopify.com` domain; a shop's requests are accepted
    /// with its own secrets or the global ones.
    pub shops: BTreeMap<String, ShopSecrets>,
}

/// `[shopify.shops."<domain>"]`: one shop's webhook secrets, and its Admin API access for
/// historic sync (`ingest backfill`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopSecrets {
    #[serde(deserialize_with = "secret_list")]
    pub webhook_secrets: Vec<SecretString>,
    pub webhook_secrets_file: Option<PathBuf>,
    /// The app's Admin API access token for this shop (`shpat_…`), or a file holding it.
    pub admin_access_token: Option<SecretString>,
    pub admin_access_token_file: Option<PathBuf>,
    /// Default `https://<domain>`; plain `http://` only to a loopback host (the simulator).
    pub admin_api_url: Option<String>,
    /// The Admin API version; only the one tierflow's queries are validated against
    /// ([`ADMIN_API_VERSION`]) is accepted.
    pub admin_api_version: Option<String>,
}

/// The Admin API version the backfill's queries are written for and checked against
/// (Shopify's published schema of this version, in the `shopify-sim` contract tests).
pub const ADMIN_API_VERSION: &str = "2026-10";

/// One shop's Admin API access, resolved and checked.
#[derive(Debug, Clone)]
pub struct AdminApi {
    pub shop: String,
    /// `<base>/admin/api/<version>/graphql.json`.
    pub graphql_url: url::Url,
    pub version: String,
    pub token: SecretString,
}

fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(de::string_list(d)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

/// `[ingest]`: the HTTP service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Where Shopify's webhooks arrive (public).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (keep it off the public network).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub admin_listen: SocketAddr,
    /// Largest accepted body; larger requests get 413 without being read further.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_body_bytes: u64,
    /// Shopify topics to publish; signed webhooks of other topics get 200 and are counted.
    #[serde(deserialize_with = "topic_list")]
    pub topics: Vec<ShopifyTopic>,
    /// How long to wait for the broker's acknowledgement before answering 503.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Verified webhooks awaiting the broker's acknowledgement at once; beyond it: 503. Taken
    /// only after the body is read and its signature verified, so unsigned or slow requests
    /// never hold one.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_in_flight: usize,
    /// Open connections on the public listener; past it, new connections wait in the
    /// kernel's backlog. Each costs at most `max_header_bytes` of buffer plus a task.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_connections: usize,
    /// A connection whose request head has not fully arrived this long after it opened (or
    /// after the previous response, on a keep-alive connection) is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A body not fully received this long after its head is answered 408 and the connection
    /// closed. With `header_read_timeout` it must fit in Shopify's 5 s request deadline.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest request head (request line + headers); larger gets 431. At least 8 KiB.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_header_bytes: usize,
    /// Bodies held in memory at once, across requests (reading, verifying, publishing);
    /// a chunk that would exceed it gets 503. Bounds body memory whatever clients send.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub max_buffered_body_bytes: u64,
    /// A connection this old is closed after its current request (bounds idle keep-alive).
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// On shutdown, how long open requests may take to finish before connections are dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Ask the Admin API whether an `orders/delete`'s order is gone before publishing it, for
    /// shops with `admin_access_token` (the topic header is unsigned; see
    /// `deletion_check.rs`). Fails open: unreachable Shopify publishes the deletion unchecked.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub confirm_deletions: bool,
}

fn topic_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ShopifyTopic>, D::Error> {
    de::string_list(d)?
        .into_iter()
        .map(|t| t.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: ([0, 0, 0, 0], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            max_body_bytes: 2 * 1024 * 1024,
            topics: ShopifyTopic::ALL.to_vec(),
            produce_timeout: Duration::from_secs(3),
            max_in_flight: 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_millis(2500),
            max_header_bytes: 16 * 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            max_connection_age: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            confirm_deletions: true,
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

impl Settings {
    /// Load from the file and `env`, then validate. `brokers` (from `--brokers`) wins over both.
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
        let i = &self.ingest;
        if i.produce_timeout.is_zero() || i.produce_timeout >= SHOPIFY_DEADLINE {
            return Err(ConfigError::invalid(
                "ingest.produce_timeout",
                format!(
                    "{} is outside (0s, 5s): Shopify abandons a request after 5 s, so the ingest must answer 503 before that",
                    humantime::format_duration(i.produce_timeout)
                ),
            ));
        }
        if i.max_body_bytes < MIN_BODY_LIMIT {
            return Err(ConfigError::invalid(
                "ingest.max_body_bytes",
                format!("{} is below 1 MiB (1048576): large orders would get 413 and be retried until Shopify drops them", i.max_body_bytes),
            ));
        }
        if i.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "ingest.max_in_flight",
                "must be at least 1",
            ));
        }
        if i.max_connections == 0 {
            return Err(ConfigError::invalid(
                "ingest.max_connections",
                "must be at least 1",
            ));
        }
        for (field, d) in [
            ("ingest.header_read_timeout", i.header_read_timeout),
            ("ingest.body_read_timeout", i.body_read_timeout),
            ("ingest.max_connection_age", i.max_connection_age),
            ("ingest.shutdown_grace", i.shutdown_grace),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(field, "must be longer than 0s"));
            }
        }
        if i.header_read_timeout + i.body_read_timeout > SHOPIFY_DEADLINE {
            return Err(ConfigError::invalid(
                "ingest.body_read_timeout",
                format!(
                    "header_read_timeout + body_read_timeout = {} exceeds Shopify's 5 s deadline: a request that slow is already abandoned by Shopify, and only an attacker would still be sending; lower either",
                    humantime::format_duration(i.header_read_timeout + i.body_read_timeout)
                ),
            ));
        }
        if i.max_header_bytes < crate::server::MIN_HEADER_BYTES {
            return Err(ConfigError::invalid(
                "ingest.max_header_bytes",
                format!(
                    "{} is below 8192, the smallest buffer the HTTP server accepts",
                    i.max_header_bytes
                ),
            ));
        }
        if i.max_buffered_body_bytes < i.max_body_bytes {
            return Err(ConfigError::invalid(
                "ingest.max_buffered_body_bytes",
                format!(
                    "{} is below ingest.max_body_bytes ({}): a body of the allowed size could never be read; raise it (e.g. 64 × max_body_bytes)",
                    i.max_buffered_body_bytes, i.max_body_bytes
                ),
            ));
        }
        if i.topics.is_empty() {
            return Err(ConfigError::invalid(
                "ingest.topics",
                "is empty: the ingest would publish nothing; list the Shopify topics to accept",
            ));
        }
        if i.listen == i.admin_listen && i.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "ingest.admin_listen",
                "must differ from ingest.listen: admin endpoints stay off the public listener",
            ));
        }
        for shop in self.shopify.shops.keys() {
            if !schemas::is_shop_domain(shop) {
                return Err(ConfigError::invalid(
                    format!("shopify.shops.\"{shop}\""),
                    "is not a shop domain (lower-case letters, digits, `.` and `-`, e.g. `name.myshopify.com`)",
                ));
            }
        }
        let secrets = self.secrets()?;
        if secrets.global.is_empty() && secrets.shops.is_empty() {
            return Err(ConfigError::invalid(
                "shopify.webhook_secrets",
                "no webhook secret configured: set [shopify] webhook_secrets (or TIERFLOW_SHOPIFY__WEBHOOK_SECRETS, comma-separated), webhook_secrets_file, or per-shop [shopify.shops.\"name.myshopify.com\"] webhook_secrets",
            ));
        }
        Ok(())
    }

    /// Every secret, with the `*_file` ones read in.
    pub fn secrets(&self) -> Result<ResolvedSecrets, ConfigError> {
        let global = gather(
            "shopify",
            &self.shopify.webhook_secrets,
            self.shopify.webhook_secrets_file.as_deref(),
        )?;
        let mut shops = BTreeMap::new();
        for (shop, set) in &self.shopify.shops {
            let field = format!("shopify.shops.\"{shop}\"");
            let secrets = gather(
                &field,
                &set.webhook_secrets,
                set.webhook_secrets_file.as_deref(),
            )?;
            if secrets.is_empty() {
                if set.admin_access_token.is_none() && set.admin_access_token_file.is_none() {
                    return Err(ConfigError::invalid(
                        field,
                        "has neither webhook_secrets nor admin_access_token",
                    ));
                }
                continue; // an Admin API entry only; webhooks use the global secrets
            }
            shops.insert(shop.clone(), secrets);
        }
        Ok(ResolvedSecrets { global, shops })
    }
}

impl Settings {
    /// The Admin API access of `shop` (for `ingest backfill`), with the token file read.
    pub fn admin_api(&self, shop: &str) -> Result<AdminApi, ConfigError> {
        let field = format!("shopify.shops.\"{shop}\"");
        let set = self.shopify.shops.get(shop).ok_or_else(|| {
            ConfigError::invalid(
                field.clone(),
                "is not configured: add the section with admin_access_token (or admin_access_token_file)",
            )
        })?;
        let token = match (&set.admin_access_token, &set.admin_access_token_file) {
            (Some(t), None) => t.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{field}.admin_access_token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                SecretString::from(text.trim().to_owned())
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{field}.admin_access_token"),
                    "set either admin_access_token or admin_access_token_file, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{field}.admin_access_token"),
                    "missing: the app's Admin API access token for this shop (scopes read_orders and read_all_orders)",
                ))
            }
        };
        if token.expose_secret().is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.admin_access_token"),
                "is empty",
            ));
        }
        let version = set
            .admin_api_version
            .clone()
            .unwrap_or_else(|| ADMIN_API_VERSION.to_owned());
        if version != ADMIN_API_VERSION {
            return Err(ConfigError::invalid(
                format!("{field}.admin_api_version"),
                format!("{version} is not supported: tierflow's Admin API queries are checked against Shopify's {ADMIN_API_VERSION} schema; remove the setting or set it to {ADMIN_API_VERSION}"),
            ));
        }
        let base = set
            .admin_api_url
            .clone()
            .unwrap_or_else(|| format!("https://{shop}"));
        let base = url::Url::parse(&base).map_err(|e| {
            ConfigError::invalid(format!("{field}.admin_api_url"), format!("{base}: {e}"))
        })?;
        let loopback = match base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match base.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ConfigError::invalid(
                    format!("{field}.admin_api_url"),
                    format!("{base} must be https:// (plain http:// only to a loopback host, for the simulator): the access token travels with every request"),
                ))
            }
        }
        let graphql_url = base
            .join(&format!("admin/api/{version}/graphql.json"))
            .map_err(|e| ConfigError::invalid(format!("{field}.admin_api_url"), e.to_string()))?;
        Ok(AdminApi {
            shop: shop.to_owned(),
            graphql_url,
            version,
            token,
        })
    }
}

/// The secret sets after files are read; input to [`crate::signature::Verifier`].
#[derive(Debug)]
pub struct ResolvedSecrets {
    pub global: Vec<SecretString>,
    pub shops: BTreeMap<String, Vec<SecretString>>,
}

fn gather(
    section: &str,
    inline: &[SecretString],
    file: Option<&Path>,
) -> Result<Vec<SecretString>, ConfigError> {
    let mut out = Vec::with_capacity(inline.len());
    for s in inline {
        if s.expose_secret().trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{section}.webhook_secrets"),
                "contains an empty secret",
            ));
        }
        out.push(s.clone());
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                format!("{section}.webhook_secrets_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| SecretString::from(l.to_owned())),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tierflow.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
        )
    }

    const MIN: &str = "[kafka]\nbrokers = \"embedded\"\n[shopify]\nwebhook_secrets = [\"s1\"]\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let s = load(MIN, &[]).unwrap();
        assert_eq!(s.ingest.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.ingest.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.ingest.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(s.ingest.produce_timeout, Duration::from_secs(3));
        assert_eq!(s.ingest.topics.len(), 13);
        assert_eq!(s.topics.orders, "shopify.orders");
        assert_eq!(s.segmenter.group_id, "tierflow-segmenter");
    }

    #[test]
    fn env_overrides_and_other_services_sections_are_ignored() {
        let text = format!("{MIN}[segmenter]\nanything = 1\ngroup_id = \"seg-blue\"\n[ingest]\nlisten = \"127.0.0.1:1\"\n");
        let s = load(
            &text,
            &[
                ("TIERFLOW_INGEST__LISTEN", "127.0.0.1:8181"),
                ("TIERFLOW_INGEST__MAX_BODY_BYTES", "3000000"),
                ("TIERFLOW_INGEST__TOPICS", "orders/create,orders/updated"),
                ("TIERFLOW_INGEST__PRODUCE_TIMEOUT", "1500ms"),
                ("TIERFLOW_SHOPIFY__WEBHOOK_SECRETS", "new,old"),
            ],
        )
        .unwrap();
        assert_eq!(s.ingest.listen.to_string(), "127.0.0.1:8181");
        assert_eq!(s.ingest.max_body_bytes, 3_000_000);
        assert_eq!(
            s.ingest.topics,
            [ShopifyTopic::OrdersCreate, ShopifyTopic::OrdersUpdated]
        );
        assert_eq!(s.ingest.produce_timeout, Duration::from_millis(1500));
        assert_eq!(s.secrets().unwrap().global.len(), 2);
        assert_eq!(s.segmenter.group_id, "seg-blue");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets");
        std::fs::write(&file, "# rotated 2026-11\nfile-secret-1\n\nfile-secret-2\n").unwrap();
        let text = format!(
            "[kafka]\nbrokers = \"embedded\"\n[shopify.shops.\"a.myshopify.com\"]\nwebhook_secrets_file = {:?}\n",
            file.display().to_string()
        );
        let s = load(&text, &[]).unwrap();
        let secrets = s.secrets().unwrap();
        assert_eq!(secrets.shops["a.myshopify.com"].len(), 2);
        let debug = format!("{s:?} {secrets:?}");
        assert!(!debug.contains("file-secret"), "{debug}");
        let s = load(MIN, &[]).unwrap();
        assert!(!format!("{s:?}").contains("s1"));
    }

    #[test]
    fn shipped_config_files_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("config");
        for file in ["tierflow.example.toml", "dev.toml"] {
            Settings::load(Some(&root.join(file)), std::iter::empty(), None)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn invalid_values_name_the_field_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            ("[kafka]\nbrokers = \"embedded\"\n", "shopify.webhook_secrets"),
            ("[shopify]\nwebhook_secrets = [\"x\"]\n", "kafka.brokers"),
            (&format!("{MIN}[ingest]\nproduce_timeout = \"6s\"\n"), "ingest.produce_timeout"),
            (&format!("{MIN}[ingest]\nmax_body_bytes = 1000\n"), "ingest.max_body_bytes"),
            (&format!("{MIN}[ingest]\ntopics = [\"orders/deleted\"]\n"), "ingest.topics"),
            (&format!("{MIN}[ingest]\nlisten = \"nowhere\"\n"), "ingest.listen"),
            (&format!("{MIN}[ingest]\nlisen = \"0.0.0.0:1\"\n"), "ingest.lisen"),
            (&format!("{MIN}[ingest]\nmax_in_flight = 0\n"), "ingest.max_in_flight"),
            (
                &format!("{MIN}[ingest]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"\n"),
                "ingest.admin_listen",
            ),
            (&format!("{MIN}[shopify.shops.\"Bad Shop\"]\nwebhook_secrets = [\"x\"]\n"), "Bad Shop"),
            (&format!("{MIN}[topics]\norders = \"a b\"\n"), "topics.orders"),
        ];
        for (text, field) in cases {
            let e = load(text, &[]).unwrap_err();
            assert!(e.to_string().contains(field), "expected {field} in: {e}");
        }
    }
}
