//! The ingest service: Shopify webhooks in, verified records in Kafka out.
//!
//! - [`config`]: the `[shopify]` and `[ingest]` sections and their validation.
//! - [`signature`]: HMAC-SHA256 verification against per-shop and global secret sets.
//! - [`webhook`]: the HTTP routes and the status contract Shopify sees.
//! - [`server`]: the public listener's bounds (connections, header bytes and time, shutdown).
//! - [`publisher`]: the idempotent producer and its acknowledgement timeout.
//! - [`metrics`]: what `/metrics` on the admin listener exposes.
//! - [`deletion_check`]: an `orders/delete` confirmed with the Admin API before publishing.
//! - [`admin_api`]: the Shopify Admin GraphQL client (throttling, retries, the query texts).
//! - [`backfill`]: `ingest backfill`, a shop's order history from a bulk operation into the
//!   orders topic through the webhook's record contract, resumable from a checkpoint.
//! - [`tier_moves`]: the backfill summary's tiers before → after, read from the segments topic.
//! - [`reconcile`]: `ingest reconcile`, a watermark sweep of recently updated orders through
//!   the same path, so the segmenter can count (and heal) what webhooks missed.
//!
//! [`Application`] wires the service together; `main.rs` only parses flags and starts it (or
//! the backfill).

pub mod admin_api;
pub mod backfill;
pub mod config;
pub mod deletion_check;
pub mod metrics;
pub mod publisher;
pub mod reconcile;
pub mod server;
pub mod signature;
pub mod tier_moves;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::Producer;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::signature::Verifier;
use crate::webhook::{AppState, Readiness};

/// How often broker metadata is refreshed for `/readyz`, and how stale it may get.
const METADATA_INTERVAL: Duration = Duration::from_secs(5);
const METADATA_MAX_AGE: Duration = Duration::from_secs(15);
/// How long shutdown waits for queued records to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, ready-to-run ingest (ports are taken at [`Application::build`], so port 0 works).
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    state: Arc<AppState>,
    registry: prometheus::Registry,
    limits: server::ConnectionLimits,
}

impl Application {
    /// Validate-time work is done by [`Settings::load`]; this binds and connects.
    pub async fn build(settings: &Settings, bootstrap: &str) -> anyhow::Result<Self> {
        let registry = service_runtime::admin::registry("ingest");
        let metrics = Metrics::register(&registry).context("registering metrics")?;
        let ingest = &settings.ingest;
        let defaults = publisher::defaults(
            ingest.produce_timeout,
            ingest.max_in_flight,
            ingest.max_body_bytes,
        );
        let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let client = service_runtime::kafka::client_config(
            &settings.kafka,
            bootstrap,
            &defaults,
            service_runtime::kafka::ACKED_PRODUCER,
        )?;
        let publisher = Publisher::new(&client, ingest.produce_timeout, metrics.clone())
            .context("creating the Kafka producer")?;
        let (orders_max_bytes, quarantine_max_bytes) =
            check_record_limits(settings, &client).await?;
        let secrets = settings.secrets()?;
        let state = Arc::new(AppState {
            verifier: Verifier::new(&secrets),
            publisher,
            accepted: ingest.topics.clone(),
            orders_topic: settings.topics.orders.clone(),
            quarantine_topic: settings.topics.orders_quarantine.clone(),
            max_body_bytes: ingest.max_body_bytes,
            permits: Arc::new(Semaphore::new(ingest.max_in_flight)),
            body_budget: Semaphore::new(
                usize::try_from(ingest.max_buffered_body_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            body_read_timeout: ingest.body_read_timeout,
            quarantine_max_bytes,
            orders_max_bytes,
            metrics,
            readiness: Readiness::new(METADATA_MAX_AGE),
            deletions: deletion_check::DeletionCheck::new(settings, ingest.confirm_deletions)
                .context("the Admin API access of [shopify.shops] (orders/delete checks)")?,
        });
        let listener = TcpListener::bind(ingest.listen)
            .await
            .with_context(|| format!("binding ingest.listen {}", ingest.listen))?;
        let admin_listener = TcpListener::bind(ingest.admin_listen)
            .await
            .with_context(|| format!("binding ingest.admin_listen {}", ingest.admin_listen))?;
        let limits = server::ConnectionLimits {
            max_connections: ingest.max_connections,
            header_read_timeout: ingest.header_read_timeout,
            max_header_bytes: ingest.max_header_bytes,
            max_connection_age: ingest.max_connection_age,
            shutdown_grace: ingest.shutdown_grace,
        };
        Ok(Application {
            listener,
            admin_listener,
            state,
            registry,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The public routes, for driving the handler in-process (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        webhook::router(self.state.clone())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serve until `shutdown` resolves, then: stop accepting, let in-flight requests finish
    /// (at most `shutdown_grace`), flush the producer, and only then stop the admin listener (so the last scrape sees it).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let readiness = tokio::spawn(watch_metadata(self.state.clone(), stopped(stop_rx.clone())));
        let admin = tokio::spawn(service_runtime::admin::serve(
            self.admin_listener,
            service_runtime::admin::router(self.registry),
            stopped(stop_rx),
        ));
        server::serve(
            self.listener,
            webhook::router(self.state.clone()),
            self.limits,
            self.state.metrics.clone(),
            shutdown,
        )
        .await;
        tracing::info!("listener closed; flushing the producer");
        let state = self.state.clone();
        let flushed =
            tokio::task::spawn_blocking(move || state.publisher.flush(FLUSH_TIMEOUT)).await;
        let _ = stop_tx.send(true);
        let _ = readiness.await;
        let admin = admin.await;
        flushed.context("flush task")?.context(
            "flushing the producer: some records may be unacknowledged (their webhooks got 503)",
        )?;
        admin
            .context("admin task")?
            .context("serving the admin listener")?;
        tracing::info!("ingest stopped cleanly");
        Ok(())
    }
}

/// Read the topics' real record limits (`max.message.bytes`) and refuse a config that cannot
/// store what `max_body_bytes` lets in; returns the orders topic's limit and the largest
/// quarantine record that fits.
async fn check_record_limits(
    settings: &Settings,
    client: &rdkafka::ClientConfig,
) -> anyhow::Result<(usize, usize)> {
    let ingest = &settings.ingest;
    let (orders, quarantine) = {
        let (c1, c2) = (client.clone(), client.clone());
        let (t1, t2) = (
            settings.topics.orders.clone(),
            settings.topics.orders_quarantine.clone(),
        );
        // The producer writes the quarantine records too, so its config is both sides.
        tokio::join!(
            tokio::task::spawn_blocking(move || {
                service_runtime::kafka::topic_record_limit(&c1, &t1)
            }),
            tokio::task::spawn_blocking(move || {
                service_runtime::kafka::quarantine_record_limit(&c2, &c2, &t2)
            })
        )
    };
    let orders = orders.context("reading the orders topic's limits")??;
    let quarantine = quarantine.context("reading the quarantine topic's limits")??;
    let needed = ingest.max_body_bytes + publisher::RECORD_OVERHEAD;
    // `compression.codec` is librdkafka's alias of `compression.type`; only an operator sets
    // it (the defaults use `compression.type`), and set later it wins.
    let compression = client
        .get("compression.codec")
        .or_else(|| client.get("compression.type"))
        .unwrap_or("none");
    anyhow::ensure!(
        compression != "none" || needed <= orders as u64,
        "ingest.max_body_bytes = {} cannot be stored: topic `{}` takes record batches of at most {orders} bytes (max.message.bytes) and [kafka.client] compression.type is none. Raise the topic's limit to at least {needed} (kafka-configs --alter --entity-type topics --entity-name {} --add-config max.message.bytes={needed}), lower ingest.max_body_bytes, or drop the compression.type override (lz4 by default)",
        ingest.max_body_bytes,
        settings.topics.orders,
        settings.topics.orders,
    );
    tracing::info!(
        orders_max_message_bytes = orders,
        quarantine_max_record_bytes = quarantine,
        compression,
        "broker record limits"
    );
    Ok((orders, quarantine))
}

/// Refresh broker metadata for the orders topic every few seconds for `/readyz`.
async fn watch_metadata(state: Arc<AppState>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let s = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let md = s
                .publisher
                .producer()
                .client()
                .fetch_metadata(Some(&s.orders_topic), Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            match md.topics().iter().find(|t| t.name() == s.orders_topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                Some(t) => Err(format!(
                    "topic {} unavailable: {:?}",
                    s.orders_topic,
                    t.error()
                )),
                None => Err(format!("topic {} not in metadata", s.orders_topic)),
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("metadata task failed: {e}")));
        match result {
            Ok(()) => state.readiness.record_ok(),
            // The reason goes to the log only: `/readyz` is public.
            Err(e) => tracing::warn!(error = %e, "broker metadata fetch failed"),
        }
        if let Some(age) = state.readiness.age() {
            state.metrics.metadata_age.set(age.as_secs_f64());
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(METADATA_INTERVAL) => {}
        }
    }
}
