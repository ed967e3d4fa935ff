//! The public listener's connection handling: what an outsider can hold, and for how long.
//!
//! `axum::serve` has no header deadline, no header size bound, no connection bound and an
//! unbounded graceful shutdown, so one client trickling bytes could hold a slot forever. This
//! module drives hyper's HTTP/1 connection directly with:
//!
//! - **a connection bound** (`max_connections`): a permit is taken *before* `accept`, so past
//!   the bound new connections wait in the kernel's backlog instead of costing memory here
//!   (mini-redis's pattern);
//! - **a header deadline** (`header_read_timeout`): hyper's timer closes a connection whose
//!   request head has not fully arrived, counted from the connection's start, and (hyper 1.12,
//!   checked by `tests/hostile.rs`) from the end of the previous response on a keep-alive
//!   connection, so an idle connection holds its slot no longer than this;
//! - **a header size bound** (`max_header_bytes`): hyper's read buffer never grows past it, and
//!   a longer head is answered `431` by hyper itself;
//! - **a connection age** (`max_connection_age`): a connection is asked to close (after the
//!   request in hand) once this old, which bounds idle keep-alive connections too;
//! - **a bounded shutdown** (`shutdown_grace`): after it, connections still open are dropped.
//!
//! The body deadline and the body byte budget are per request, in [`crate::webhook`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;

/// The bounds a public connection lives under (from `[ingest]`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connection_age: Duration,
    pub shutdown_grace: Duration,
}

/// hyper refuses a read buffer below 8 KiB.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting, let open
/// requests finish for at most `shutdown_grace`, and drop what is left.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Graceful (finish the request in hand, then close) and then forced (drop the connection).
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the slot is released.
                    tracing::warn!(error = %e, "accept failed");
                    metrics.connections.with_label_values(&["accept_error"]).inc();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        metrics.open_connections.inc();
        let service = TowerToHyperService::new(router.clone());
        let http = http.clone();
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        let max_age = limits.max_connection_age;
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let age = tokio::time::sleep(max_age);
            tokio::pin!(age);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break Some(result),
                    () = &mut age, if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    changed = stop.changed() => {
                        let now = changed.map(|()| *stop.borrow_and_update()).unwrap_or(Stop::Force);
                        match now {
                            Stop::Run => {}
                            Stop::Graceful if !closing => {
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            Stop::Graceful => {}
                            Stop::Force => break None,
                        }
                    }
                }
            };
            metrics.open_connections.dec();
            let outcome = match &result {
                None => "dropped_at_shutdown",
                Some(Ok(())) => "closed",
                Some(Err(e)) if e.is_timeout() => "header_timeout",
                Some(Err(e)) if e.is_parse_too_large() => "header_too_large",
                Some(Err(e)) if e.is_parse() => "malformed",
                Some(Err(e)) if e.is_incomplete_message() => "client_gone",
                Some(Err(_)) => "io_error",
            };
            metrics.connections.with_label_values(&[outcome]).inc();
        });
    }
    drop(listener);
    let _ = stop_tx.send(Stop::Graceful);
    // Every connection task holds one slot: all slots back means all connections closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace; dropping them");
            let _ = stop_tx.send(Stop::Force);
            // The tasks drop their connections on their next poll; give them a moment.
            let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    Graceful,
    Force,
}
