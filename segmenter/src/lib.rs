//! The segmenter: Shopify order events in, per-customer spend and tier decisions out.
//!
//! - [`normalize`]: raw webhook bodies to order facts (exact ids and decimal amounts).
//! - [`ledger`]: per-customer newest-version-per-order ledgers; the restorable state.
//! - [`changelog`]: the ledger's changelog: entries and their keys, the state reset marker,
//!   restore.
//! - [`rules`]: the spend rule, the rule version, and the decision for one event (over the tier
//!   table in [`schemas::tiers`], which the Okta writer reads too).
//! - [`service`]: the consumer loop (batches, chunked produce, offsets after acks) and restore
//!   from the changelog.
//! - [`replay`]: `segmenter replay`: offset resets by time or offset, state reset, digests.
//! - [`whatif`]: `segmenter whatif`: the tier changes another tier table would cause.
//! - [`tools`]: the operator commands' arguments and output (`whatif`, `replay`, `digest`).
//! - [`config`], [`metrics`]: typed settings, validated at startup; the Prometheus metrics.

pub mod changelog;
pub mod config;
pub mod ledger;
pub mod metrics;
pub mod normalize;
pub mod replay;
pub mod rules;
pub mod service;
pub mod tools;
pub mod whatif;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use service_runtime::consumer::{ConsumerShell, Watched};

/// The segmenter, built (admin listener bound, Kafka connected, topics checked) and ready to
/// run: `build` → `admin_addr` → `run_until`, like the ingest's `Application`.
#[derive(Debug)]
pub struct Application {
    shell: ConsumerShell,
    segmenter: service::Segmenter,
}

impl Application {
    /// Validate-time work is done by [`config::Settings::load`]; this binds and connects.
    pub async fn build(settings: &config::Settings, bootstrap: &str) -> anyhow::Result<Self> {
        let shell = ConsumerShell::bind(
            "segmenter",
            settings.segmenter.admin_listen,
            "segmenter.admin_listen",
            Watched {
                kafka: &settings.kafka,
                bootstrap,
                group: &settings.segmenter.group_id,
                topic: &settings.topics.orders,
            },
        )
        .await?;
        let built = metrics::Metrics::register(&shell.registry)
            .context("registering metrics")
            .and_then(|m| service::Segmenter::new(settings, bootstrap, m));
        let (shell, segmenter) = shell.keep(built).await?;
        Ok(Application { shell, segmenter })
    }

    /// The admin listener's address (`/metrics`, health).
    pub fn admin_addr(&self) -> SocketAddr {
        self.shell.admin_addr()
    }

    /// Consume until `shutdown` resolves; then finish the batch in hand, commit, and stop.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.shell.run(self.segmenter.run(shutdown)).await
    }
}
