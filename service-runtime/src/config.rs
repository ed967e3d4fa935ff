//! Configuration loading shared by every service.
//!
//! One TOML file can configure the whole pipeline. Each service deserialises only the sections it
//! owns plus the shared ones (`[kafka]`, `[topics]`, `[telemetry]`) and ignores the others; a
//! section name no service knows is an error (a typo like `[injest]` would otherwise be silently
//! ignored), and so is an unknown key inside a section (sections use `deny_unknown_fields`).
//!
//! Precedence, lowest first: built-in defaults, the file (`--config PATH` or `TIERFLOW_CONFIG`),
//! environment overrides `TIERFLOW_<SECTION>__<FIELD>` (deeper levels join with `__` too), then
//! command-line flags applied by the binary. Environment values arrive as strings: fields read
//! through [`de`] accept a string where they expect a number or a list (lists comma-separated).
//! Under `[kafka.client]` an env name's single `_` become `.` (librdkafka property names use dots,
//! never underscores): `TIERFLOW_KAFKA__CLIENT__LINGER_MS=5` sets `linger.ms`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Every top-level section some tierflow service reads.
pub const KNOWN_SECTIONS: &[&str] = &[
    "kafka",
    "topics",
    "telemetry",
    "shopify",
    "ingest",
    "segmenter",
    "spend",
    "tiers",
    "okta",
    "okta_writer",
    "dev",
];

const ENV_PREFIX: &str = "TIERFLOW_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown config section `[{0}]`; known sections: {known}", known = KNOWN_SECTIONS.join(", "))]
    UnknownSection(String),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid config at `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// A refused `[[tiers]]` table is a config error at `tiers`.
impl From<schemas::TierTableError> for ConfigError {
    fn from(e: schemas::TierTableError) -> Self {
        ConfigError::invalid("tiers", e.to_string())
    }
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Read the file (if any), apply `TIERFLOW_*` overrides from `env`, and deserialise into `T`.
///
/// `T` is a service's view of the file: the sections it owns as fields with `#[serde(default)]`,
/// without `deny_unknown_fields` at the top level.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut root = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: syntax_message(&text, &e),
            })?
        }
        None => toml::Table::new(),
    };
    for section in root.keys() {
        if !KNOWN_SECTIONS.contains(&section.as_str()) {
            return Err(ConfigError::UnknownSection(section.clone()));
        }
    }
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        apply_env_override(&mut root, &var, value)?;
    }
    let deserializer = toml::Value::Table(root);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().message().trim_end().to_owned();
        ConfigError::Invalid {
            message: redact_message(&field, message),
            field,
        }
    })
}

/// Where a TOML syntax error is, and what kind it is, without the offending line: `toml`'s
/// own rendering quotes the line, and that line may hold a secret.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what} (the line is not shown: it may hold a secret)")
        }
        None => what.to_owned(),
    }
}

/// Field names whose values are secrets (tokens, webhook secrets, keys, passwords).
fn is_secret_field(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "private_key",
        "api_key",
        "credential",
    ]
    .iter()
    .any(|w| f.contains(w))
}

/// serde's messages quote the offending value (``invalid type: integer `12345`, expected a
/// string``); for a secret field that value is the secret. Keep the message's shape, drop the
/// quoted parts.
fn redact_message(field: &str, message: String) -> String {
    if !is_secret_field(field) {
        return message;
    }
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '`' {
            if !quoted {
                out.push_str("`<redacted>`");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// A service's settings: the shared `[kafka]` section plus its own validation.
pub trait ServiceSettings: DeserializeOwned {
    fn kafka_mut(&mut self) -> &mut KafkaConfig;
    fn validate(&self) -> Result<(), ConfigError>;
}

/// [`load`], then `--brokers` (which wins over file and env), then the service's validation.
pub fn load_service<T: ServiceSettings>(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    brokers: Option<String>,
) -> Result<T, ConfigError> {
    let mut settings: T = load(path, env)?;
    if brokers.is_some() {
        settings.kafka_mut().brokers = brokers;
    }
    settings.validate()?;
    Ok(settings)
}

fn apply_env_override(root: &mut toml::Table, var: &str, value: String) -> Result<(), ConfigError> {
    let env_err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let mut path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(env_err(
            "empty name segment; use TIERFLOW_<SECTION>__<FIELD>".into(),
        ));
    }
    if !KNOWN_SECTIONS.contains(&path[0].as_str()) {
        return Err(env_err(format!(
            "unknown section `{}`; known sections: {}",
            path[0],
            KNOWN_SECTIONS.join(", ")
        )));
    }
    if path.len() > 2 && path[0] == "kafka" && path[1] == "client" {
        let property = path[2..].join(".").replace('_', ".");
        path.truncate(2);
        path.push(property);
    }
    let (last, parents) = path
        .split_last()
        .expect("split yields at least one segment");
    let mut table = root;
    for segment in parents {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            env_err(format!(
                "`{segment}` is a value in the config file, not a section"
            ))
        })?;
    }
    table.insert(last.clone(), toml::Value::String(value));
    Ok(())
}

/// `[kafka]`: where the brokers are, plus free-form librdkafka properties.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers, or `embedded` for the in-process dev broker.
    pub brokers: Option<String>,
    /// librdkafka properties passed through as-is (`"linger.ms" = 5`); see `kafka::client_config`.
    #[serde(default)]
    pub client: BTreeMap<String, toml::Value>,
}

/// Where a service finds Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    /// librdkafka's in-process mock cluster: for local runs and tests only. Nothing survives the
    /// process.
    Embedded,
    /// A real cluster's bootstrap servers.
    External(String),
}

impl KafkaConfig {
    pub fn brokers(&self) -> Result<Brokers, ConfigError> {
        match self.brokers.as_deref().map(str::trim) {
            None | Some("") => Err(ConfigError::invalid(
                "kafka.brokers",
                "not set: set [kafka] brokers (or TIERFLOW_KAFKA__BROKERS, or --brokers) to your \
                 Kafka bootstrap servers, e.g. `kafka-1:9092,kafka-2:9092`, or to `embedded` for \
                 the in-process development broker (keeps nothing across restarts)",
            )),
            Some("embedded") => Ok(Brokers::Embedded),
            Some(list) => Ok(Brokers::External(list.to_owned())),
        }
    }

    /// The bootstrap servers of a cluster that already holds the pipeline's topics, for the
    /// commands that read or change them (replay, dead-letter tools, lag, topic checks). The
    /// embedded broker lives only inside a running process, so it is refused with `hint`:
    /// what the operator should pass instead.
    pub fn existing_brokers(&self, hint: &str) -> Result<String, ConfigError> {
        match self.brokers()? {
            Brokers::External(list) => Ok(list),
            Brokers::Embedded => Err(ConfigError::invalid(
                "kafka.brokers",
                format!("`embedded` is not a cluster this command can reach: {hint}"),
            )),
        }
    }
}

/// `[topics]`: the Kafka topic names the pipeline reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub orders: String,
    pub orders_quarantine: String,
    pub segments: String,
    pub okta_dlq: String,
    /// The segmenter's state changelog: one compacted entry per stored order version, with
    /// as many partitions as `orders` (partition p holds the state of orders partition p).
    pub ledger_changelog: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            orders: "shopify.orders".into(),
            orders_quarantine: "shopify.orders.quarantine".into(),
            segments: "customer.segments".into(),
            okta_dlq: "okta-writer.dlq".into(),
            ledger_changelog: "segmenter.ledger.changelog".into(),
        }
    }
}

impl TopicsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, name) in [
            ("topics.orders", &self.orders),
            ("topics.orders_quarantine", &self.orders_quarantine),
            ("topics.segments", &self.segments),
            ("topics.okta_dlq", &self.okta_dlq),
            ("topics.ledger_changelog", &self.ledger_changelog),
        ] {
            validate_topic_name(field, name)?;
        }
        if self.orders == self.orders_quarantine {
            return Err(ConfigError::invalid(
                "topics.orders_quarantine",
                "must differ from topics.orders, or quarantined bodies would reach consumers",
            ));
        }
        Ok(())
    }
}

/// Kafka's own rule: 1–249 characters of ASCII letters, digits, `.`, `_`, `-`; not `.` or `..`.
fn validate_topic_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let legal = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("`{name}` is not a legal Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
        ))
    }
}

/// `[telemetry]`: log format. The level comes from `RUST_LOG`, the OTLP exporter from the
/// standard `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Deserialisers that accept both a native TOML value and the string an env override gives.
pub mod de {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NativeOrText<T> {
        Native(T),
        Text(String),
    }

    /// A number (or anything `FromStr`) given natively or as a string.
    pub fn from_str_or_native<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + FromStr,
        T::Err: Display,
    {
        match NativeOrText::<T>::deserialize(d)? {
            NativeOrText::Native(v) => Ok(v),
            NativeOrText::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
        }
    }

    /// A list given as an array of strings or as one comma-separated string.
    pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match NativeOrText::<Vec<String>>::deserialize(d)? {
            NativeOrText::Native(v) => Ok(v),
            NativeOrText::Text(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
        }
    }
}

/// The process environment as UTF-8 pairs (non-UTF-8 variables cannot be tierflow's and are
/// skipped rather than panicking as `std::env::vars` would).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_refuse_the_embedded_broker_with_the_hint() {
        let kafka = |b: &str| KafkaConfig {
            brokers: Some(b.into()),
            ..KafkaConfig::default()
        };
        assert_eq!(
            kafka("k1:9092,k2:9092").existing_brokers("x").unwrap(),
            "k1:9092,k2:9092"
        );
        let e = kafka("embedded")
            .existing_brokers("pass --brokers")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config at `kafka.brokers`") && e.ends_with("pass --brokers"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_tier_table_is_reported_at_tiers() {
        let e = ConfigError::from(schemas::TierTable::new(vec![]).unwrap_err()).to_string();
        assert!(
            e.starts_with("invalid config at `tiers`: no [[tiers]] rows"),
            "{e}"
        );
    }

    /// A service's view: two shared sections plus `[dev]` standing in for a service section.
    #[derive(Debug, Deserialize)]
    struct View {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        topics: TopicsConfig,
        #[serde(default)]
        dev: Demo,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        #[serde(deserialize_with = "de::from_str_or_native")]
        limit: u64,
        #[serde(deserialize_with = "de::string_list")]
        names: Vec<String>,
    }

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<View, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_file_and_env_layer_in_order() {
        let v = load_str(
            "[kafka]\nbrokers = \"a:9092\"\n[topics]\norders = \"o\"\n[dev]\nlimit = 3\nnames = [\"x\"]\n",
            &[
                ("TIERFLOW_KAFKA__BROKERS", "b:9092,c:9092"),
                ("TIERFLOW_DEV__LIMIT", "7"),
                ("TIERFLOW_DEV__NAMES", "p, q,,r"),
                ("TIERFLOW_CONFIG", "ignored"),
                ("OTHER__X", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(
            v.kafka.brokers().unwrap(),
            Brokers::External("b:9092,c:9092".into())
        );
        assert_eq!(v.topics.orders, "o");
        assert_eq!(v.topics.segments, "customer.segments");
        assert_eq!(v.dev.limit, 7);
        assert_eq!(v.dev.names, ["p", "q", "r"]);
    }

    #[test]
    fn kafka_client_env_names_map_to_dotted_properties() {
        let v = load_str("", &[("TIERFLOW_KAFKA__CLIENT__LINGER_MS", "5")]).unwrap();
        assert_eq!(
            v.kafka.client.get("linger.ms"),
            Some(&toml::Value::String("5".into()))
        );
    }

    #[test]
    fn errors_name_the_field_or_section() {
        let e = load_str("[kafka]\nbrokerz = \"x\"\n", &[]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, message } if field == "kafka.brokerz" && message.contains("expected `brokers`")),
            "{e}"
        );
        let e = load_str("[dev]\nlimit = \"many\"\n", &[]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "dev.limit"),
            "{e}"
        );
        let e = load_str("[injest]\nx = 1\n", &[]).unwrap_err();
        assert!(e.to_string().contains("[injest]"), "{e}");
        let e = load_str("", &[("TIERFLOW_NOPE__X", "1")]).unwrap_err();
        assert!(e.to_string().contains("TIERFLOW_NOPE__X"), "{e}");
        let e = load_str("", &[]).unwrap().kafka.brokers().unwrap_err();
        assert!(e.to_string().contains("kafka.brokers"), "{e}");
    }

    #[test]
    fn errors_never_echo_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[okta]\napi_token = \"00Abc-super-secret-token\nbase_url = \"x\"\n",
        )
        .unwrap();
        let e = load::<View>(Some(&path), Vec::new()).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("super-secret"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        std::fs::write(&path, "[okta]\napi_token = 987654321\n").unwrap();
        let e = load::<SecretView>(Some(&path), Vec::new()).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("987654321"), "{text}");
        assert!(text.contains("okta.api_token"), "{text}");
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct SecretView {
        okta: SecretSection,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct SecretSection {
        api_token: String,
    }

    #[test]
    fn syntax_errors_carry_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[kafka\n").unwrap();
        let e = load::<View>(Some(&path), []).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("bad.toml"));
    }

    #[test]
    fn topic_names_are_validated() {
        let mut t = TopicsConfig::default();
        t.validate().unwrap();
        t.orders = "bad name".into();
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("topics.orders"));
        let mut t = TopicsConfig::default();
        t.orders_quarantine = t.orders.clone();
        assert!(t.validate().is_err());
    }
}
