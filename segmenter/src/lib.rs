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

/// Bind the admin listener, connect to Kafka, and run until `shutdown`; returns the admin
/// address through `bound` as soon as it is known (tests bind port 0).
pub async fn run(
    settings: &config::Settings,
    bootstrap: &str,
    shutdown: impl Future<Output = ()>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let registry = service_runtime::admin::registry("segmenter");
    let metrics = metrics::Metrics::register(&registry).context("registering metrics")?;
    let admin = service_runtime::admin::AdminServer::start(
        settings.segmenter.admin_listen,
        "segmenter.admin_listen",
        registry.clone(),
    )
    .await?;
    if let Some(tx) = bound {
        let _ = tx.send(admin.addr);
    }
    let lag_metrics =
        service_runtime::lag::LagMetrics::register(&registry).context("registering lag metrics")?;
    let result = async {
        let segmenter = service::Segmenter::new(settings, bootstrap, metrics)?;
        let _lag = service_runtime::lag::spawn_exporter(
            service_runtime::kafka::client_config(&settings.kafka, bootstrap, &[], &[])?,
            settings.segmenter.group_id.clone(),
            settings.topics.orders.clone(),
            lag_metrics,
            std::time::Duration::from_secs(5),
        );
        tracing::info!(admin = %admin.addr, group = %settings.segmenter.group_id, "segmenter running");
        segmenter.run(shutdown).await
    }
    .await;
    admin.stop().await?;
    result
}
