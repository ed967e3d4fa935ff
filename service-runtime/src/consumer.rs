//! What a consuming service (the segmenter, the Okta writer) runs around its loop, so both
//! have the ingest's shape: `Application::build` (bind, connect, check) →
//! `admin_addr()` → `run_until(shutdown)`.
//!
//! [`ConsumerShell::bind`] makes the metrics registry and binds the admin listener (`/metrics`,
//! health) before the service connects anywhere, and prepares the lag exporter for the
//! service's group; [`ConsumerShell::run`] runs the loop beside that exporter and stops the
//! admin listener after the loop ends, whatever it returned.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::admin::AdminServer;
use crate::config::KafkaConfig;
use crate::lag::LagMetrics;

/// How often the lag exporter reads the group's offsets.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// The group whose lag a service exports: its own, on its input topic.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub kafka: &'a KafkaConfig,
    pub bootstrap: &'a str,
    pub group: &'a str,
    pub topic: &'a str,
}

/// A consuming service's registry, admin listener and lag exporter.
pub struct ConsumerShell {
    /// The service registers its own metrics here (they are served on the admin listener).
    pub registry: prometheus::Registry,
    service: String,
    admin: AdminServer,
    lag: LagMetrics,
    lag_client: rdkafka::ClientConfig,
    group: String,
    topic: String,
}

impl std::fmt::Debug for ConsumerShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerShell")
            .field("admin", &self.admin.addr)
            .finish_non_exhaustive()
    }
}

impl ConsumerShell {
    /// A registry for `service`, its admin listener on `listen` (`field` names the config
    /// key in a bind error), and the lag exporter's settings for `watched`.
    pub async fn bind(
        service: &str,
        listen: SocketAddr,
        field: &str,
        watched: Watched<'_>,
    ) -> anyhow::Result<Self> {
        let lag_client = crate::kafka::client_config(watched.kafka, watched.bootstrap, &[], &[])?;
        let registry = crate::admin::registry(service);
        let lag = LagMetrics::register(&registry).context("registering lag metrics")?;
        let admin = AdminServer::start(listen, field, registry.clone()).await?;
        Ok(ConsumerShell {
            registry,
            service: service.to_owned(),
            admin,
            lag,
            lag_client,
            group: watched.group.to_owned(),
            topic: watched.topic.to_owned(),
        })
    }

    /// Where the admin listener is bound (tests bind port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// Run `work` (the service's loop) while exporting its group's lag, then stop the admin
    /// listener. The loop's error wins over a failed stop.
    pub async fn run(self, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
        tracing::info!(admin = %self.admin.addr, group = %self.group, "{} running", self.service);
        let _lag = crate::lag::spawn_exporter(
            self.lag_client,
            self.group,
            self.topic,
            self.lag,
            LAG_INTERVAL,
        );
        let result = work.await;
        let stopped = self.admin.stop().await;
        result.and(stopped)
    }

    /// The shell with what the service built on it, or, if building failed, that error
    /// after the admin listener is stopped (a service that cannot start holds no port).
    pub async fn keep<T>(self, built: anyhow::Result<T>) -> anyhow::Result<(Self, T)> {
        match built {
            Ok(t) => Ok((self, t)),
            Err(e) => {
                let _ = self.admin.stop().await;
                Err(e)
            }
        }
    }
}
