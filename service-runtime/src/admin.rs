//! The admin listener: `/metrics` (Prometheus text format) and `/healthz`, served on a separate,
//! by default loopback-only, address so neither is exposed where webhooks arrive.

use std::future::Future;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// A fresh registry for one service, with the process collector (RSS, CPU, open fds) in it.
pub fn registry(service: &str) -> Registry {
    let registry = Registry::new_custom(None, None).expect("an empty prefix is valid");
    #[cfg(target_os = "linux")]
    {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        // Registering into a fresh registry cannot collide.
        let _ = registry.register(Box::new(process));
    }
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("tierflow_build_info", "Always 1; labels say what runs."),
        &["service", "version"],
    )
    .expect("valid metric");
    info.with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    let _ = registry.register(Box::new(info));
    registry
}

pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    let mut buf = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A service's admin listener (`/metrics`, `/healthz`) serving in the background.
#[derive(Debug)]
pub struct AdminServer {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Bind `listen` (named `field` in the error an operator sees) and serve `registry`.
    pub async fn start(
        listen: std::net::SocketAddr,
        field: &str,
        registry: Registry,
    ) -> anyhow::Result<AdminServer> {
        use anyhow::Context;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {field} {listen}"))?;
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(serve(listener, router(registry), async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        Ok(AdminServer { addr, stop, task })
    }

    /// Stop serving and wait for the listener to close.
    pub async fn stop(self) -> anyhow::Result<()> {
        use anyhow::Context;
        let _ = self.stop.send(true);
        self.task
            .await
            .context("admin task")?
            .context("admin listener")
    }
}

/// Serve `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
