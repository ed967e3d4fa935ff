//! The Okta writer: applies customer segment updates from `customer.segments` to Okta (profile
//! attributes and tier group membership), paced by Okta's rate limits, with retries, a
//! dead-letter topic and redrive.
//!
//! - [`config`]: `[okta]`, `[okta_writer]` and the shared sections, validated.
//! - [`client`]: the Okta API client (auth, errors, retries with `backoff`).
//! - [`limiter`]: per-bucket pacing from `X-Rate-Limit-*` and adaptive concurrency.
//! - [`apply`]: one customer's update as the fewest Okta calls; user and group resolution.
//! - [`service`]: the consumer loop (per-customer order, coalescing, offsets, pauses).
//! - [`dlq`]: dead-letter records, `dlq list` and `dlq redrive`.

pub mod apply;
pub mod client;
pub mod config;
pub mod dlq;
pub mod failure;
pub mod limiter;
pub mod metrics;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

/// An Okta client plus the resolved tier groups: what the service and `dlq redrive` apply with.
pub async fn applier(
    settings: &config::Settings,
    metrics: metrics::Metrics,
) -> anyhow::Result<apply::Applier> {
    let client = client::OktaClient::new(
        settings.base_url()?,
        settings.credentials()?,
        &settings.okta,
        metrics.clone(),
    )?;
    let groups = apply::resolve_groups(&client, &settings.tier_table()?)
        .await
        .context("resolving the tier groups in Okta")?;
    for g in &groups.groups {
        tracing::info!(tier = %g.tier, group = %g.name, id = %g.id, "tier group resolved");
    }
    Ok(apply::Applier::new(client, groups, &settings.okta, metrics))
}

/// Bind the admin listener, resolve the tier groups, and consume until `shutdown`; returns the
/// admin address through `bound` as soon as it is known (tests bind port 0).
pub async fn run(
    settings: &config::Settings,
    bootstrap: &str,
    shutdown: impl Future<Output = ()>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let registry = service_runtime::admin::registry("okta-writer");
    let metrics = metrics::Metrics::register(&registry).context("registering metrics")?;
    let admin = service_runtime::admin::AdminServer::start(
        settings.okta_writer.admin_listen,
        "okta_writer.admin_listen",
        registry.clone(),
    )
    .await?;
    if let Some(tx) = bound {
        let _ = tx.send(admin.addr);
    }
    let lag_metrics =
        service_runtime::lag::LagMetrics::register(&registry).context("registering lag metrics")?;
    let result = async {
        let applier = Arc::new(applier(settings, metrics.clone()).await?);
        let writer = service::Writer::new(settings, bootstrap, applier, metrics)?;
        let _lag = service_runtime::lag::spawn_exporter(
            service_runtime::kafka::client_config(&settings.kafka, bootstrap, &[], &[])?,
            settings.okta_writer.group_id.clone(),
            settings.topics.segments.clone(),
            lag_metrics,
            std::time::Duration::from_secs(5),
        );
        tracing::info!(admin = %admin.addr, group = %settings.okta_writer.group_id, okta = %settings.base_url()?, "okta-writer running");
        writer.run(shutdown).await
    }
    .await;
    admin.stop().await?;
    result
}

/// `okta-writer groups`: each tier's group, its id and member count, as a table.
pub async fn groups_table(settings: &config::Settings) -> anyhow::Result<String> {
    use std::fmt::Write;
    let applier = applier(settings, metrics::Metrics::unregistered()).await?;
    let mut out = String::new();
    writeln!(
        out,
        "{:<16} {:<32} {:<22} {:>10}",
        "tier", "okta group", "id", "members"
    )?;
    for g in &applier.groups.groups {
        let members = applier
            .client
            .list_all(
                client::Operation::ListGroupUsers,
                &format!("/api/v1/groups/{}/users?limit=1000", g.id),
            )
            .await
            .with_context(|| format!("listing the members of `{}`", g.name))?
            .len();
        writeln!(
            out,
            "{:<16} {:<32} {:<22} {:>10}",
            g.tier, g.name, g.id, members
        )?;
    }
    Ok(out)
}
