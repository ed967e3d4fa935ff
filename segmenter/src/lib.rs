//! The segmenter: Shopify order events in, per-customer spend and tier decisions out.
//!
//! - [`normalize`]: raw webhook bodies to order facts (exact ids and decimal amounts).
//! - [`ledger`]: per-customer newest-version-per-order ledgers; the restorable state.
//! - [`tiers`]: the validated half-open tier table.
//! - [`rules`]: the spend rule, the rule version, and the decision for one event.

pub mod config;
pub mod ledger;
pub mod metrics;
pub mod normalize;
pub mod replay;
pub mod rules;
pub mod service;
pub mod tiers;
pub mod whatif;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::watch;

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
    let listen = settings.segmenter.admin_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding segmenter.admin_listen {listen}"))?;
    let addr = listener.local_addr()?;
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let admin = tokio::spawn(service_runtime::admin::serve(
        listener,
        service_runtime::admin::router(registry),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let segmenter = service::Segmenter::new(settings, bootstrap, metrics)?;
    tracing::info!(admin = %addr, group = %settings.segmenter.group_id, "segmenter running");
    let result = segmenter.run(shutdown).await;
    let _ = stop_tx.send(true);
    admin
        .await
        .context("admin task")?
        .context("admin listener")?;
    result
}
