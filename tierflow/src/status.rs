//! What `tierflow dev` shows: a one-line summary on the terminal and a status page (plain
//! HTML/JS, no build step), both fed by scraping the services' own `/metrics`, the simulator's
//! groups (tier distribution) and a tail of `customer.segments` (the latest tier changes).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::pipeline::Endpoints;

/// One metric sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLine {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse Prometheus text exposition (the subset the services write: no timestamps, no
/// escapes inside label values beyond `\"`).
pub fn parse_metrics(text: &str) -> Vec<MetricLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let body = rest.trim_end_matches('}');
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        labels.insert(
                            k.trim_start_matches(',').to_owned(),
                            v.trim_end_matches('"').replace("\\\"", "\""),
                        );
                    }
                }
                (n.to_owned(), labels)
            }
            None => (head.to_owned(), BTreeMap::new()),
        };
        out.push(MetricLine {
            name,
            labels,
            value,
        });
    }
    out
}

fn sum(
    lines: &[MetricLine],
    name: &str,
    filter: impl Fn(&BTreeMap<String, String>) -> bool,
) -> f64 {
    // fold from +0.0: an empty f64 `sum()` is -0.0, which would print as "-0".
    lines
        .iter()
        .filter(|l| l.name == name && filter(&l.labels))
        .fold(0.0, |a, l| a + l.value)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Unix epoch milliseconds.
    pub at_ms: i64,
    pub webhooks_accepted: f64,
    pub webhooks_rejected: f64,
    pub segment_updates: f64,
    pub okta_calls: f64,
    pub okta_applied: f64,
    pub dead_letters: f64,
    /// `group/topic/partition` → messages behind.
    pub lag: BTreeMap<String, f64>,
    /// The Okta writer's own group lag (from the lag exporter in the writer's process).
    pub writer_lag: f64,
    /// Records the writer finished, every outcome (applied, skipped, coalesced,
    /// dead-lettered).
    pub writer_done: f64,
    /// The writer's forecast per rate-limit bucket, seconds
    /// (`tierflow_okta_writer_drain_forecast_seconds{bucket}`).
    pub budget_forecast: BTreeMap<String, f64>,
}

impl Sample {
    pub fn lag_total(&self) -> f64 {
        self.lag.values().fold(0.0, |a, v| a + v)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TierChange {
    pub decided_at: String,
    pub customer_id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub total_spent: String,
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusData {
    pub samples: VecDeque<Sample>,
    /// Seconds until the Okta writer's backlog is gone at the pace of the last minute
    /// ([`drain_forecast`]); `None` while it finished nothing with a backlog.
    pub drain_forecast_seconds: Option<f64>,
    /// Tier group → members in Okta (the simulator).
    pub tiers: Vec<(String, usize)>,
    pub tier_changes: VecDeque<TierChange>,
}

pub type Shared = Arc<Mutex<StatusData>>;

const KEEP_SAMPLES: usize = 600;
const KEEP_CHANGES: usize = 20;

/// Scrape every service once.
pub async fn scrape(http: &reqwest::Client, endpoints: &Endpoints) -> Sample {
    let mut lines = Vec::new();
    let (mut writer_lag, mut writer_done) = (0.0, 0.0);
    let mut budget_forecast = BTreeMap::new();
    for addr in [
        endpoints.ingest_admin,
        endpoints.segmenter_admin,
        endpoints.writer_admin,
    ] {
        if let Ok(r) = http.get(format!("http://{addr}/metrics")).send().await {
            if let Ok(text) = r.text().await {
                let parsed = parse_metrics(&text);
                if addr == endpoints.writer_admin {
                    writer_lag = sum(&parsed, "kafka_consumergroup_lag", |_| true);
                    writer_done = sum(&parsed, "tierflow_okta_writer_updates_total", |_| true);
                    for l in parsed
                        .iter()
                        .filter(|l| l.name == "tierflow_okta_writer_drain_forecast_seconds")
                    {
                        if let Some(bucket) = l.labels.get("bucket") {
                            budget_forecast.insert(bucket.clone(), l.value);
                        }
                    }
                }
                lines.extend(parsed);
            }
        }
    }
    let mut lag = BTreeMap::new();
    for l in lines.iter().filter(|l| l.name == "kafka_consumergroup_lag") {
        let key = format!(
            "{}/{}/{}",
            l.labels
                .get("consumergroup")
                .map(String::as_str)
                .unwrap_or("?"),
            l.labels.get("topic").map(String::as_str).unwrap_or("?"),
            l.labels.get("partition").map(String::as_str).unwrap_or("?")
        );
        lag.insert(key, l.value);
    }
    Sample {
        at_ms: chrono::Utc::now().timestamp_millis(),
        webhooks_accepted: sum(&lines, "tierflow_ingest_requests_total", |l| {
            l.get("outcome").is_some_and(|o| o == "accepted")
        }),
        webhooks_rejected: sum(&lines, "tierflow_ingest_requests_total", |l| {
            l.get("outcome").is_some_and(|o| {
                !matches!(o.as_str(), "accepted" | "quarantined" | "ignored_topic")
            })
        }),
        segment_updates: sum(&lines, "tierflow_segmenter_updates_total", |_| true),
        okta_calls: sum(&lines, "tierflow_okta_requests_total", |_| true),
        okta_applied: sum(&lines, "tierflow_okta_writer_updates_total", |l| {
            l.get("outcome").is_some_and(|o| o == "applied")
        }),
        dead_letters: sum(&lines, "tierflow_okta_writer_dead_letters_total", |_| true),
        lag,
        writer_lag,
        writer_done,
        budget_forecast,
    }
}

/// How long the Okta writer needs for its backlog at the pace of the last `window` of
/// samples: its lag divided by the records it finished per second (the same forecast as the
/// `TierflowOktaDrainSlow` alert). `Some(0)` without a backlog; `None` when it has one and
/// finished nothing (paused, or Okta unreachable: no pace to forecast from).
pub fn drain_forecast(samples: &VecDeque<Sample>, window: Duration) -> Option<f64> {
    let last = samples.back()?;
    if last.writer_lag <= 0.0 {
        return Some(0.0);
    }
    let since = last.at_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let first = samples.iter().find(|s| s.at_ms >= since)?;
    let seconds = (last.at_ms - first.at_ms) as f64 / 1000.0;
    let done = last.writer_done - first.writer_done;
    (seconds > 0.0 && done > 0.0).then(|| last.writer_lag / (done / seconds))
}

/// Every second: scrape, record the tier distribution; until `stop`.
pub async fn collect(
    data: Shared,
    endpoints: Endpoints,
    sim: Arc<okta_sim::Shared>,
    stop: impl std::future::Future<Output = ()>,
) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let sample = scrape(&http, &endpoints).await;
        let tiers: Vec<(String, usize)> = {
            let store = sim.store.lock().unwrap_or_else(|p| p.into_inner());
            store
                .groups
                .values()
                .filter(|g| g.group_type == "OKTA_GROUP")
                .map(|g| (g.name.clone(), g.members.len()))
                .collect()
        };
        let mut d = data.lock().unwrap_or_else(|p| p.into_inner());
        d.samples.push_back(sample);
        while d.samples.len() > KEEP_SAMPLES {
            d.samples.pop_front();
        }
        d.drain_forecast_seconds = drain_forecast(&d.samples, Duration::from_secs(60));
        d.tiers = tiers;
    }
}

/// Keep the latest tier changes from the segments topic (read from its end, no group).
pub async fn tail_tier_changes(
    data: Shared,
    bootstrap: String,
    topic: String,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "tierflow-dev-status")
        .set("enable.auto.commit", "false")
        .create()?;
    let partitions = service_runtime::kafka::partition_count(&consumer, &topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    tokio::pin!(stop);
    loop {
        let m = tokio::select! {
            _ = &mut stop => return Ok(()),
            m = consumer.recv() => m,
        };
        let Ok(m) = m else { continue };
        let Some(Ok(u)) = m
            .payload()
            .map(serde_json::from_slice::<schemas::SegmentUpdate>)
        else {
            continue;
        };
        if !u.tier_changed {
            continue;
        }
        let change = TierChange {
            decided_at: u.decided_at.clone(),
            customer_id: u.customer_id.to_string(),
            from: u.previous_tier.map(|t| t.name),
            to: u.tier.map(|t| t.name),
            total_spent: format!("{} {}", u.total_spent, u.currency.unwrap_or_default()),
            order_id: u.cause.order_id.map(|o| o.to_string()),
        };
        let mut d = data.lock().unwrap_or_else(|p| p.into_inner());
        d.tier_changes.push_front(change);
        d.tier_changes.truncate(KEEP_CHANGES);
    }
}

/// The terminal's one-line summary of the last two samples.
pub fn summary_line(prev: Option<&Sample>, now: &Sample) -> String {
    let rate = |f: fn(&Sample) -> f64| match prev {
        Some(p) if now.at_ms > p.at_ms => (f(now) - f(p)) / ((now.at_ms - p.at_ms) as f64 / 1000.0),
        _ => 0.0,
    };
    format!(
        "webhooks {:.0} ({:.0}/s) | segment updates {:.0} ({:.0}/s) | okta calls {:.0} ({:.0}/s), applied {:.0} | lag {:.0} | dead letters {:.0}",
        now.webhooks_accepted,
        rate(|s| s.webhooks_accepted),
        now.segment_updates,
        rate(|s| s.segment_updates),
        now.okta_calls,
        rate(|s| s.okta_calls),
        now.okta_applied,
        now.lag_total(),
        now.dead_letters
    )
}

const PAGE: &str = include_str!("status.html");

pub fn router(data: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(status_json))
        .with_state(data)
}

async fn status_json(State(data): State<Shared>) -> impl IntoResponse {
    let d = data.lock().unwrap_or_else(|p| p.into_inner()).clone();
    axum::Json(d)
}

/// Serve the status page on `listen` until `stop`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    data: Shared,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the status page on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router(data))
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_forecast_is_the_backlog_over_the_last_minutes_pace() {
        let sample = |at_s: i64, lag: f64, done: f64| Sample {
            at_ms: at_s * 1000,
            writer_lag: lag,
            writer_done: done,
            ..Sample::default()
        };
        let minute = Duration::from_secs(60);
        // 5 records a second for the last minute (older samples do not count), 3,000 behind.
        let s: VecDeque<Sample> = [
            sample(0, 9000.0, 0.0),
            sample(40, 5000.0, 100.0),
            sample(100, 3000.0, 400.0),
        ]
        .into();
        assert_eq!(drain_forecast(&s, minute), Some(600.0));
        let idle: VecDeque<Sample> = [sample(0, 0.0, 10.0), sample(1, 0.0, 10.0)].into();
        assert_eq!(drain_forecast(&idle, minute), Some(0.0));
        let stalled: VecDeque<Sample> = [sample(0, 50.0, 10.0), sample(30, 50.0, 10.0)].into();
        assert_eq!(drain_forecast(&stalled, minute), None);
        assert_eq!(drain_forecast(&VecDeque::new(), minute), None);
    }

    #[test]
    fn parses_the_exposition_format() {
        let text = "# HELP x y\n# TYPE x counter\nx_total{outcome=\"accepted\",shopify_topic=\"orders/paid\"} 12\nup 1\nkafka_consumergroup_lag{consumergroup=\"g\",topic=\"t\",partition=\"0\"} 3\n";
        let m = parse_metrics(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].labels["shopify_topic"], "orders/paid");
        assert_eq!(m[0].value, 12.0);
        assert_eq!(m[1].name, "up");
        assert_eq!(
            sum(&m, "kafka_consumergroup_lag", |l| l["partition"] == "0"),
            3.0
        );
    }
}
