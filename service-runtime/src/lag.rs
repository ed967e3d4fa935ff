//! Consumer-group lag, as the dashboards SREs already have expect it.
//!
//! Names and labels follow kafka_exporter (`kafka_consumergroup_lag{consumergroup, topic,
//! partition}`, `kafka_consumergroup_current_offset`, `kafka_consumergroup_lag_sum{consumergroup,
//! topic}`) and kafka-lag-exporter for time lag (`kafka_consumergroup_group_lag_seconds{group,
//! topic, partition}`, `kafka_consumergroup_group_max_lag_seconds{group}`). Lag is measured the
//! way those exporters do, from the group's *committed* offsets (what a restart would resume
//! from) against each partition's end; time lag is the age of the oldest unconsumed record, i.e.
//! now minus the timestamp of the record at the committed offset (0 when caught up).
//!
//! Each consuming service runs an exporter thread for its group ([`spawn_exporter`]);
//! `tierflow lag` prints the same [`snapshot`] as a table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// One partition's lag.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The committed offset (the next record the group will read), or `None` if the group has
    /// committed nothing for the partition (it starts per `auto.offset.reset`).
    pub committed: Option<i64>,
    /// The low and high watermarks.
    pub start: i64,
    pub end: i64,
    /// `end - committed` (from `start` when nothing is committed).
    pub lag: i64,
    /// Age of the oldest unconsumed record in seconds; 0 when caught up.
    pub lag_seconds: f64,
}

/// `group`'s committed offset on every partition of `topic` (`None`: nothing committed), read
/// with OffsetFetch (the group is never joined), and the consumer that read them.
fn group_offsets(
    config: &rdkafka::ClientConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<(BaseConsumer, BTreeMap<i32, Option<i64>>)> {
    let mut offsets_cfg = config.clone();
    offsets_cfg
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let offsets: BaseConsumer = offsets_cfg.create()?;
    let partitions = crate::kafka::partition_count(&offsets, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = offsets
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| {
            anyhow::anyhow!("reading group {group}'s committed offsets on {topic}: {e}")
        })?;
    let by_partition = (0..partitions)
        .map(|p| {
            let offset = committed
                .find_partition(topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (p, offset)
        })
        .collect();
    Ok((offsets, by_partition))
}

/// `group`'s committed offset on every partition of `topic` (`None`: nothing committed),
/// without the watermarks and record reads a [`snapshot`] adds.
pub fn committed(
    config: &rdkafka::ClientConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    Ok(group_offsets(config, group, topic)?.1)
}

/// The lag of `group` on every partition of `topic`. `config` is a client config for the
/// cluster; the group is only read (OffsetFetch), never joined.
pub fn snapshot(
    config: &rdkafka::ClientConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionLag>> {
    let timeout = Duration::from_secs(10);
    let (offsets, committed) = group_offsets(config, group, topic)?;
    let partitions = i32::try_from(committed.len())?;
    let mut reader_cfg = config.clone();
    reader_cfg
        .set("group.id", format!("{group}.lag-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let reader: BaseConsumer = reader_cfg.create()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut out = Vec::new();
    for p in 0..partitions {
        let (start, end) = offsets
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| anyhow::anyhow!("reading the end of {topic}/{p}: {e}"))?;
        let committed = committed.get(&p).copied().flatten();
        let from = committed.unwrap_or(start).max(start);
        let lag = (end - from).max(0);
        let lag_seconds = if lag == 0 {
            0.0
        } else {
            oldest_timestamp(&reader, topic, p, from)
                .map(|ts| ((now_ms - ts).max(0)) as f64 / 1000.0)
                .unwrap_or(0.0)
        };
        out.push(PartitionLag {
            partition: p,
            committed,
            start,
            end,
            lag,
            lag_seconds,
        });
    }
    Ok(out)
}

/// The timestamp (ms) of the record at `offset`, read without a group.
fn oldest_timestamp(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .ok()?;
    reader.assign(&tpl).ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition => return m.timestamp().to_millis(),
            _ => continue,
        }
    }
    None
}

/// The exporter's gauges.
#[derive(Debug, Clone)]
pub struct LagMetrics {
    pub lag: IntGaugeVec,
    pub current_offset: IntGaugeVec,
    pub lag_sum: IntGaugeVec,
    pub lag_seconds: prometheus::GaugeVec,
    pub max_lag_seconds: prometheus::GaugeVec,
}

impl LagMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<LagMetrics> {
        let m = LagMetrics {
            lag: IntGaugeVec::new(
                Opts::new(
                    "kafka_consumergroup_lag",
                    "Messages between the group's committed offset and the partition's end.",
                ),
                &["consumergroup", "topic", "partition"],
            )?,
            current_offset: IntGaugeVec::new(
                Opts::new(
                    "kafka_consumergroup_current_offset",
                    "The group's committed offset.",
                ),
                &["consumergroup", "topic", "partition"],
            )?,
            lag_sum: IntGaugeVec::new(
                Opts::new(
                    "kafka_consumergroup_lag_sum",
                    "The group's lag summed over the topic's partitions.",
                ),
                &["consumergroup", "topic"],
            )?,
            lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "kafka_consumergroup_group_lag_seconds",
                    "Age of the oldest unconsumed record (0 when caught up).",
                ),
                &["group", "topic", "partition"],
            )?,
            max_lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "kafka_consumergroup_group_max_lag_seconds",
                    "The group's largest time lag over its partitions.",
                ),
                &["group"],
            )?,
        };
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.current_offset.clone()))?;
        registry.register(Box::new(m.lag_sum.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.max_lag_seconds.clone()))?;
        Ok(m)
    }

    /// Publish one snapshot (what the exporter thread does on every refresh).
    pub fn set(&self, group: &str, topic: &str, lags: &[PartitionLag]) {
        let mut sum = 0;
        let mut max = 0.0f64;
        for l in lags {
            let p = l.partition.to_string();
            self.lag.with_label_values(&[group, topic, &p]).set(l.lag);
            if let Some(c) = l.committed {
                self.current_offset
                    .with_label_values(&[group, topic, &p])
                    .set(c);
            }
            self.lag_seconds
                .with_label_values(&[group, topic, &p])
                .set(l.lag_seconds);
            sum += l.lag;
            max = max.max(l.lag_seconds);
        }
        self.lag_sum.with_label_values(&[group, topic]).set(sum);
        self.max_lag_seconds.with_label_values(&[group]).set(max);
    }
}

/// Stops the exporter thread when dropped.
#[derive(Debug)]
pub struct ExporterHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for ExporterHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Refresh `metrics` for `group` on `topic` every `interval` on a background thread (the
/// Kafka calls block), until the handle is dropped.
pub fn spawn_exporter(
    config: rdkafka::ClientConfig,
    group: String,
    topic: String,
    metrics: LagMetrics,
    interval: Duration,
) -> ExporterHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name(format!("lag-{group}"))
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match snapshot(&config, &group, &topic) {
                    Ok(lags) => metrics.set(&group, &topic, &lags),
                    Err(e) => tracing::debug!(error = %e, "lag refresh failed"),
                }
                let mut slept = Duration::ZERO;
                while slept < interval && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    slept += Duration::from_millis(100);
                }
            }
        })
        .expect("spawning the lag exporter thread");
    ExporterHandle { stop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::CommitMode;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    #[test]
    fn lag_and_time_lag_from_the_committed_offset() {
        let broker = crate::kafka::EmbeddedBroker::start(&["t"], 2).unwrap();
        let mut cfg = rdkafka::ClientConfig::new();
        cfg.set("bootstrap.servers", broker.bootstrap_servers());
        let producer: ThreadedProducer<DefaultProducerContext> = cfg.create().unwrap();
        let minute_ago = chrono_free_now_ms() - 60_000;
        for i in 0..10 {
            producer
                .send(
                    BaseRecord::<str, str>::to("t")
                        .partition(0)
                        .payload("x")
                        .timestamp(minute_ago + i),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        // The group has read 4 records of partition 0 and nothing of partition 1.
        let mut g = cfg.clone();
        g.set("group.id", "g");
        let committer: BaseConsumer = g.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(4)).unwrap();
        committer.commit(&tpl, CommitMode::Sync).unwrap();

        let lags = snapshot(&cfg, "g", "t").unwrap();
        assert_eq!(lags.len(), 2);
        let p0 = &lags[0];
        assert_eq!((p0.committed, p0.end, p0.lag), (Some(4), 10, 6));
        assert!(
            (59.0..70.0).contains(&p0.lag_seconds),
            "the record at offset 4 is a minute old: {}",
            p0.lag_seconds
        );
        assert_eq!(
            (lags[1].committed, lags[1].lag, lags[1].lag_seconds),
            (None, 0, 0.0)
        );

        let registry = Registry::new();
        let m = LagMetrics::register(&registry).unwrap();
        m.set("g", "t", &lags);
        assert_eq!(m.lag_sum.with_label_values(&["g", "t"]).get(), 6);
        assert_eq!(
            m.current_offset.with_label_values(&["g", "t", "0"]).get(),
            4
        );
        assert!(m.max_lag_seconds.with_label_values(&["g"]).get() >= 59.0);
    }

    fn chrono_free_now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }
}
