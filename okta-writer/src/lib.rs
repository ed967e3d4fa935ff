//! The Okta writer: applies customer segment updates from `customer.segments` to Okta (profile
//! attributes and tier group membership), paced by Okta's rate limits, with retries, a
//! dead-letter topic and redrive.
//!
//! - [`config`]: `[okta]`, `[okta_writer]` and the shared sections, validated.
//! - [`client`]: the Okta API client (auth, errors, retries with `backoff`, paging); its
//!   [`client::api`] is every Okta operation the writer uses, typed.
//! - [`profile`]: the profile attributes written (`[okta.profile_attributes]`).
//! - [`stores`]: the shops served (`[okta.stores]`), each owning its attributes and groups.
//! - [`limiter`]: per-bucket pacing from `X-Rate-Limit-*` and adaptive concurrency.
//! - [`apply`]: one customer's update as the fewest Okta calls; user and group resolution.
//! - [`service`]: the consumer loop: receives, dispatches applications, stores offsets,
//!   pauses; its state is [`queue`] (per-customer order), [`offsets`] (what may be stored) and
//!   [`credentials`] (the pause while Okta rejects the credentials).
//! - [`job`]: one application: a customer's records coalesced, applied, or dead-lettered.
//! - [`failure`]: dead-letter reasons, each with its label and exception class.
//! - [`metrics`]: the writer's Prometheus metrics.
//! - [`dlq`]: dead-letter records, `dlq list` and `dlq redrive`.
//! - [`rules`]: `rules`: one Okta group rule per store and tier, for `group_assignment = "rules"`.
//! - [`reconcile`]: `reconcile`: Okta's tier groups and attributes against the customers'
//!   current state; drift reported and healed.

pub mod apply;
pub mod client;
pub mod config;
pub mod credentials;
pub mod dlq;
pub mod failure;
pub mod job;
pub mod limiter;
pub mod metrics;
pub mod offsets;
pub mod profile;
pub mod queue;
pub mod reconcile;
pub mod rules;
pub mod service;
pub mod stores;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use service_runtime::consumer::{ConsumerShell, Watched};

/// An Okta client plus the resolved tier groups: what the service and `dlq redrive` apply with.
pub async fn applier(
    settings: &config::Settings,
    metrics: metrics::Metrics,
) -> anyhow::Result<apply::Applier> {
    let okta = settings.base_url()?;
    let client = client::OktaClient::new(
        okta.clone(),
        settings.credentials()?,
        &settings.okta,
        metrics.clone(),
    )?;
    let stores = apply::resolve_groups(&client, settings.stores()?)
        .await
        .context("resolving the tier groups in Okta")?;
    for store in &stores {
        for g in &store.groups.groups {
            tracing::info!(%okta, shop = %store.shop, tier = %g.tier, group = %g.name, id = %g.id, "tier group resolved");
        }
    }
    Ok(apply::Applier::new(client, stores, &settings.okta, metrics))
}

/// The Okta writer, built (admin listener bound, tier groups resolved in Okta, Kafka connected)
/// and ready to run: `build` → `admin_addr` → `run_until`, like the ingest's `Application`.
#[derive(Debug)]
pub struct Application {
    shell: ConsumerShell,
    writer: service::Writer,
}

impl Application {
    /// Validate-time work is done by [`config::Settings::load`]; this binds and connects.
    pub async fn build(settings: &config::Settings, bootstrap: &str) -> anyhow::Result<Self> {
        let shell = ConsumerShell::bind(
            "okta-writer",
            settings.okta_writer.admin_listen,
            "okta_writer.admin_listen",
            Watched {
                kafka: &settings.kafka,
                bootstrap,
                group: &settings.okta_writer.group_id,
                topic: &settings.topics.segments,
            },
        )
        .await?;
        let built = async {
            let metrics =
                metrics::Metrics::register(&shell.registry).context("registering metrics")?;
            let applier = Arc::new(applier(settings, metrics.clone()).await?);
            service::Writer::new(settings, bootstrap, applier, metrics)
        }
        .await;
        let (shell, writer) = shell.keep(built).await?;
        Ok(Application { shell, writer })
    }

    /// The admin listener's address (`/metrics`, health).
    pub fn admin_addr(&self) -> SocketAddr {
        self.shell.admin_addr()
    }

    /// Consume until `shutdown` resolves; then finish or hand back what is in flight, commit,
    /// and stop.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.shell.run(self.writer.run(shutdown)).await
    }
}

/// `okta-writer groups`: each store's tier groups, their ids and member counts, as a table.
pub async fn groups_table(settings: &config::Settings) -> anyhow::Result<String> {
    use std::fmt::Write;
    let applier = applier(settings, metrics::Metrics::unregistered()).await?;
    let mut out = String::new();
    writeln!(
        out,
        "{:<28} {:<16} {:<32} {:<22} {:>10}",
        "store", "tier", "okta group", "id", "members"
    )?;
    for store in &applier.stores {
        for g in &store.groups.groups {
            let members = applier
                .client
                .group_members(&g.id)
                .await
                .with_context(|| format!("listing the members of `{}`", g.name))?
                .len();
            writeln!(
                out,
                "{:<28} {:<16} {:<32} {:<22} {:>10}",
                store.shop, g.tier, g.name, g.id, members
            )?;
        }
    }
    Ok(out)
}
