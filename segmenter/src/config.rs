//! The segmenter's view of the pipeline config: `[kafka]`, `[topics]`, `[telemetry]` (shared),
//! `[segmenter]`, `[spend]` and `[[tiers]]`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use service_runtime::config::{
    de, ConfigError, KafkaConfig, ServiceSettings, TelemetryConfig, TopicsConfig,
};

use crate::rules::{Rules, SpendConfig};
use schemas::{TierRow, TierTable};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub segmenter: SegmenterConfig,
    #[serde(default)]
    pub spend: SpendConfig,
    #[serde(default)]
    pub tiers: Vec<TierRow>,
}

/// `[segmenter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmenterConfig {
    /// `/metrics` and `/healthz`.
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub admin_listen: SocketAddr,
    /// Kafka consumer group; instances with the same id share the partitions.
    pub group_id: String,
    /// Most records decided per batch (one round of produce acks and offset stores).
    #[serde(deserialize_with = "de::from_str_or_native")]
    pub batch_size: usize,
    /// How long a batch waits for more records after its first.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// How long a batch's produces may take before the batch is retried from its offsets.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            admin_listen: ([127, 0, 0, 1], 9091).into(),
            group_id: "tierflow-segmenter".into(),
            batch_size: 5000,
            batch_wait: Duration::from_millis(5),
            produce_timeout: Duration::from_secs(30),
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
        self.rules()?;
        let c = &self.segmenter;
        if c.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "segmenter.group_id",
                "must not be empty",
            ));
        }
        if c.batch_size == 0 {
            return Err(ConfigError::invalid(
                "segmenter.batch_size",
                "must be at least 1",
            ));
        }
        if c.produce_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "segmenter.produce_timeout",
                "must be at least 1s: a broker failover takes seconds",
            ));
        }
        if self.spend.counted_financial_statuses.is_empty() {
            return Err(ConfigError::invalid(
                "spend.counted_financial_statuses",
                "is empty: no order would ever count; list e.g. [\"paid\", \"partially_refunded\"]",
            ));
        }
        Ok(())
    }

    /// The validated tier table and spend rule.
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        Ok(Rules::new(
            TierTable::new(self.tiers.clone())?,
            self.spend.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: &str = r#"
[kafka]
brokers = "embedded"
[[tiers]]
name = "Potential"
min = "0"
max = "1"
okta_group = "Shopify Potential"
[[tiers]]
name = "New"
min = "1"
okta_group = "Shopify New"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(Some(&path), std::iter::empty(), None)
    }

    #[test]
    fn loads_tiers_and_defaults() {
        let s = load(TIERS).unwrap();
        assert_eq!(s.segmenter.admin_listen.to_string(), "127.0.0.1:9091");
        assert_eq!(s.rules().unwrap().tiers.rows().len(), 2);
    }

    #[test]
    fn bad_tables_and_values_are_named() {
        let cases = [
            (TIERS.replace("min = \"1\"", "min = \"2\""), "gap"),
            (TIERS.replace("min = \"1\"", "min = \"0.5\""), "overlap"),
            (
                TIERS.replace("min = \"1\"", "min = \"one\""),
                "tiers[1].min",
            ),
            (
                TIERS.replace("Shopify New", "Shopify Potential"),
                "share okta_group",
            ),
            (
                TIERS.replace("name = \"New\"", "name = \"Potential\""),
                "duplicate tier name",
            ),
            (
                format!("{TIERS}[spend]\ncounted_financial_statuses = []\n"),
                "spend.counted_financial_statuses",
            ),
            (
                format!("{TIERS}[segmenter]\nbatch_sise = 3\n"),
                "segmenter.batch_sise",
            ),
            (
                "[kafka]\nbrokers = \"embedded\"\n".to_string(),
                "no [[tiers]]",
            ),
        ];
        for (text, needle) in cases {
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
    }

    #[test]
    fn shipped_config_files_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for file in ["tierflow.example.toml", "dev.toml"] {
            Settings::load(Some(&root.join(file)), std::iter::empty(), None)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
