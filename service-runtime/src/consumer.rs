//! What a consuming service (the segmenter, the Okta writer) runs around its loop, so both
//! have the ingest's shape: `Application::build` (bind, connect, check) →
//! `admin_addr()` → `run_until(shutdown)`.
//!
//! [`ConsumerShell::bind`] makes the metrics registry and binds the admin listener (`/metrics`,
//! health) before the service connects anywhere; [`ConsumerShell::run`] runs the loop beside
//! the consumer-group lag exporter and stops the admin listener after the loop ends, whatever
//! it returned.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::admin::AdminServer;
use crate::config::KafkaConfig;
use crate::lag::LagMetrics;

/// How often the lag exporter reads the group's offsets.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// A consuming service's registry, admin listener and lag metrics.
pub struct ConsumerShell {
    /// The service registers its own metrics here (they are served on the admin listener).
    pub registry: prometheus::Registry,
    admin: AdminServer,
    lag: LagMetrics,
}

impl std::fmt::Debug for ConsumerShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerShell")
            .field("admin", &self.admin.addr)
            .finish_non_exhaustive()
    }
}

impl ConsumerShell {
    /// A registry for `service` and its admin listener on `listen` (`field` names the config
    /// key in a bind error).
    pub async fn bind(service: &str, listen: SocketAddr, field: &str) -> anyhow::Result<Self> {
        let registry = crate::admin::registry(service);
        let lag = LagMetrics::register(&registry).context("registering lag metrics")?;
        let admin = AdminServer::start(listen, field, registry.clone()).await?;
        Ok(ConsumerShell {
            registry,
            admin,
            lag,
        })
    }

    /// Where the admin listener is bound (tests bind port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// Run `work` (the service's loop) while exporting the lag of `group` on `topic`, then
    /// stop the admin listener. The loop's error wins over a failed stop.
    pub async fn run(
        self,
        kafka: &KafkaConfig,
        bootstrap: &str,
        group: &str,
        topic: &str,
        work: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let result = async {
            let _lag = crate::lag::spawn_exporter(
                crate::kafka::client_config(kafka, bootstrap, &[], &[])?,
                group.to_owned(),
                topic.to_owned(),
                self.lag,
                LAG_INTERVAL,
            );
            work.await
        }
        .await;
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
