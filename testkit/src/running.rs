//! A service running inside the test's own process: its `Application` built by the test,
//! its `run_until` spawned here with a shutdown the test triggers, its `/metrics` page at
//! hand. (The [`crate::process`] module runs the real binaries instead, for kill tests.)

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::oneshot;

/// The shutdown signal handed to a service's `run_until`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An in-process service.
#[derive(Debug)]
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The service's admin listener (`/metrics`, health).
    pub admin: SocketAddr,
}

impl Running {
    /// Spawn `run` (e.g. `|stop| app.run_until(stop)`) for a service whose admin listener is
    /// at `admin`.
    pub fn spawn<F>(admin: SocketAddr, run: impl FnOnce(Shutdown) -> F) -> Running
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        crate::log::init();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(Box::pin(async move {
            let _ = stop_rx.await;
        })));
        Running {
            stop: Some(stop_tx),
            handle,
            admin,
        }
    }

    /// Stop the service and wait for it; panics unless it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle)
            .await
            .expect("the service task")
            .expect("a clean shutdown");
    }

    /// The service's `/metrics` page.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("the admin listener answers")
            .text()
            .await
            .expect("a /metrics page")
    }

    /// The sum of the metric lines starting with `prefix` (0 when absent).
    pub async fn metric(&self, prefix: &str) -> f64 {
        crate::metric_sum(&self.metrics().await, prefix)
    }
}
