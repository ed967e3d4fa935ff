//! The one test harness of the workspace, used by the ingest's, segmenter's, okta-writer's and
//! the end-to-end tests alike:
//!
//! - [`broker`]: the broker a test runs on — librdkafka's in-process mock cluster (fast, and
//!   the only one with fault injection on requests), or Apache Kafka from `scripts/kafka.py`
//!   with one KRaft node or three — with the pipeline's topics created by the same code as
//!   `tierflow topics ensure`. `TIERFLOW_TEST_BROKER` picks it for tests that run on any.
//! - [`process`]: the services' real binaries as processes a test can `kill -9` and restart.
//! - [`running`]: a service built and run inside the test's process, stopped on request.
//! - [`topic`]: reading what a topic holds (records, counts, headers).
//! - [`log`]: `TEST_LOG`, the switch that shows in-process logs.
//! - waiting for a condition, reading a `/metrics` page, and [`heavy`] (here).

pub mod broker;
pub mod log;
pub mod process;
pub mod running;
pub mod topic;

use std::time::{Duration, Instant};

pub use broker::{Broker, BrokerKind};
pub use running::Running;

/// Hold this for the whole of a test that loads the machine by itself (three Kafka nodes,
/// processes killed at random points): at most one such test runs at a time in a test binary,
/// beside the light ones, so their timings stay those of a machine that is not also running
/// another heavy test. Each crate's tests are one binary (`tests/it/main.rs`): this is what
/// separate binaries gave by running one after the other.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// Poll `check` until it returns no complaints; panics with the last ones after `timeout`.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> Vec<String>) {
    let started = Instant::now();
    loop {
        let bad = check();
        if bad.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "after {timeout:?}, {} mismatches, e.g.:\n{}",
            bad.len(),
            bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll `check` until it holds; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every series in a Prometheus text page whose line starts with `prefix` (a
/// metric name, optionally with its first labels: `name{outcome="ok"`).
pub fn metric_sum(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(prefix)
                .is_some_and(|rest| prefix.contains('{') || rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A loopback address nobody listens on now (the kernel's pick for port 0, released).
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_sum_matches_whole_names_and_label_prefixes() {
        let page = "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_more 100\nx 7\n";
        assert_eq!(super::metric_sum(page, "x_total"), 5.0);
        assert_eq!(super::metric_sum(page, "x_total{a=\"2\""), 3.0);
        assert_eq!(super::metric_sum(page, "x"), 7.0);
        assert_eq!(super::metric_sum(page, "y"), 0.0);
    }
}
