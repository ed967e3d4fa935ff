//! Kafka client settings every service starts from, and the embedded development broker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, ClientContext};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::{ConfigError, KafkaConfig};

/// A client config for `bootstrap` with the operator's `[kafka.client]` properties applied.
///
/// `required` are properties the service's guarantees depend on (e.g. the ingest's `acks=all`):
/// they are set last, and an operator property that contradicts one is a config error rather
/// than a silent override in either direction.
/// What every tierflow producer keeps whatever `[kafka.client]` says: a record counts as
/// written only once every in-sync replica has it, and retries never duplicate or reorder it.
///
/// One produce request in flight per broker connection: with librdkafka's default of five, a
/// new producer sending to a partition whose leader is not ready yet (a topic just created, a
/// leader election) can get its second request stored before its first, which the broker
/// accepts (it holds no sequence state for a new producer id), and librdkafka then reports the
/// first request's records delivered although the log never got them. CI caught it as a
/// webhook answered 2xx and missing from the orders topic; the ingest test
/// `every_2xx_survives_a_topic_whose_partitions_are_still_being_created` reproduces it (3 of
/// 5 runs lost a record before this setting, none after), and confluent-kafka-go#921 reports
/// the same loss during a preferred-leader election. The throughput price is in
/// docs/BENCHMARKS.md.
pub const ACKED_PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("max.in.flight.requests.per.connection", "1"),
];

/// A producer's config: `defaults` (which `[kafka.client]` may override) and
/// [`ACKED_PRODUCER`] (which it may not).
pub fn acked_producer_config(
    kafka: &KafkaConfig,
    bootstrap: &str,
    defaults: &[(&str, &str)],
) -> Result<ClientConfig, ConfigError> {
    client_config(kafka, bootstrap, defaults, ACKED_PRODUCER)
}

/// A group consumer's config for a service that stores a record's offset itself, once the
/// record's effects are acknowledged (never librdkafka on delivery to the application); what
/// was stored is auto-committed every second, and a new group reads from the start.
/// `defaults` adds to (or overrides) the defaults; `[kafka.client]` may override those, but
/// not the group or the offset storing.
pub fn store_after_ack_consumer_config(
    kafka: &KafkaConfig,
    bootstrap: &str,
    group: &str,
    defaults: &[(&str, &str)],
) -> Result<ClientConfig, ConfigError> {
    let mut all = vec![
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "1000"),
    ];
    all.extend_from_slice(defaults);
    client_config(
        kafka,
        bootstrap,
        &all,
        &[("enable.auto.offset.store", "false"), ("group.id", group)],
    )
}

pub fn client_config(
    kafka: &KafkaConfig,
    bootstrap: &str,
    defaults: &[(&str, &str)],
    required: &[(&str, &str)],
) -> Result<ClientConfig, ConfigError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in &kafka.client {
        let v = match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some((_, want)) = required.iter().find(|(rk, _)| rk == k) {
            if v != *want {
                return Err(ConfigError::invalid(
                    format!("kafka.client.\"{k}\""),
                    format!("`{v}` conflicts with this service's delivery guarantee, which needs `{want}`; remove the property"),
                ));
            }
        }
        if k == "bootstrap.servers" {
            return Err(ConfigError::invalid(
                "kafka.client.\"bootstrap.servers\"",
                "set the brokers with [kafka] brokers instead",
            ));
        }
        config.set(k.as_str(), v);
    }
    for (k, v) in required {
        config.set(*k, *v);
    }
    Ok(config)
}

/// Commit the offsets `consumer` has stored, synchronously (on revoke and at shutdown).
///
/// A failure is logged, never returned: both consumers store an offset only after its
/// record's effect is acknowledged and applying a record twice changes nothing (the
/// segmenter's changelog and version rule, the writer's absolute state), so what was stored
/// but not committed costs the next owner a redo, not a result. A stop must not fail on it
/// either: right after a cluster restart the coordinator may be moving or loading
/// (`NotCoordinator`, `CoordinatorLoadInProgress`, a request timeout), and mid-rebalance it
/// refuses commits (`RebalanceInProgress`, `IllegalGeneration`, `UnknownMemberId`).
/// `NoOffset` (nothing stored since the last commit, e.g. an idle member) is not logged.
pub fn commit_stored<C: ConsumerContext>(consumer: &impl Consumer<C>, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(())
        | Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "offset commit {when} failed; the next owner redoes the records after the last commit (harmless: they are idempotent)"
        ),
    }
}

/// How long a stopping service waits for its consumer to leave the group.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Drop `consumer` (closing it: revoke, leave the group) on a thread of its own, waiting at
/// most `within`. librdkafka's close can wait for good (librdkafka#4362: a partition paused
/// and resumed keeps a reference that stops its broker thread from ending; rust-rdkafka#509,
/// seen here as a test that never stopped), and a service must still stop. Its offsets are
/// committed before this, so all a hung close costs is the prompt LeaveGroup: the coordinator
/// drops the member after its session timeout, and the thread ends with the process.
pub async fn close_within<T: Send + 'static>(consumer: T, within: Duration) {
    let (closed, done) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to close the Kafka consumer on; leaving it to the session timeout");
        return;
    }
    if tokio::time::timeout(within, done).await.is_err() {
        tracing::warn!(
            waited = ?within,
            "the Kafka consumer did not close in time (librdkafka); stopping anyway, its group drops it after the session timeout"
        );
    }
}

/// `headers` with each `(name, value)` appended, the pairs without a value left out: how every
/// record's headers are built (tierflow's header values are all text).
pub fn with_headers(headers: OwnedHeaders, pairs: &[(&str, Option<&str>)]) -> OwnedHeaders {
    pairs.iter().fold(headers, |hs, (key, value)| match value {
        Some(v) => hs.insert(Header {
            key,
            value: Some(*v),
        }),
        None => hs,
    })
}

/// `headers` with what a copy whose body was cut to `kept` bytes must say about the original:
/// its length, its SHA-256 and whether it was cut.
pub fn with_body_cut(headers: OwnedHeaders, body: &[u8], kept: usize) -> OwnedHeaders {
    use schemas::headers as h;
    with_headers(
        headers,
        &[
            (h::BODY_BYTES, Some(&body.len().to_string())),
            (h::BODY_SHA256, Some(&h::sha256_hex(body))),
            (
                h::BODY_TRUNCATED,
                Some(if kept < body.len() { "true" } else { "false" }),
            ),
        ],
    )
}

/// The value of header `name` as text: the last one when a record repeats it (what a map of
/// the headers would hold), and only if it is UTF-8. Every service reads headers this way, so
/// a record that repeats a header means the same to the segmenter, `segmenter whatif` and the
/// Okta writer.
pub fn header<'h, H: rdkafka::message::Headers + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Option<&'h str> {
    (0..headers.count()).rev().find_map(|i| {
        let h = headers.get(i);
        if h.key == name {
            std::str::from_utf8(h.value?).ok()
        } else {
            None
        }
    })
}

/// The record (or the batch it shares) is over a size limit: the producer's
/// `message.max.bytes`, checked on the uncompressed record, or the topic's
/// `max.message.bytes`, checked by the broker on the compressed batch. No retry of the same
/// batch fixes it; a record small enough on its own may pass when sent again alone.
pub fn record_too_large(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode;
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// librdkafka's default `message.max.bytes`: the largest record a producer sends, checked on
/// the uncompressed record before compression.
pub const LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// `topic`'s record limit as the broker reports it, or Kafka's default (with a warning) when
/// the broker cannot say.
pub fn topic_record_limit(config: &ClientConfig, topic: &str) -> anyhow::Result<usize> {
    Ok(
        topic_max_message_bytes(config, topic, Duration::from_secs(3))?.unwrap_or_else(|| {
            tracing::warn!(
                topic,
                "the broker did not report max.message.bytes; assuming Kafka's default 1048588"
            );
            KAFKA_DEFAULT_MAX_MESSAGE_BYTES
        }),
    )
}

/// The largest quarantine record that both the producer (`message.max.bytes`, checked on the
/// uncompressed record) and `topic` (`max.message.bytes`) take. Refuses a limit too small to
/// carry a quarantine record's headers. `admin` asks the broker; `producer` is the config of
/// the producer that writes the quarantine records.
pub fn quarantine_record_limit(
    admin: &ClientConfig,
    producer: &ClientConfig,
    topic: &str,
) -> anyhow::Result<usize> {
    const SMALLEST_USEFUL: usize = 16 * 1024;
    let producer_max = producer
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES);
    let topic_max = topic_record_limit(admin, topic)?;
    let limit = producer_max.min(topic_max);
    anyhow::ensure!(
        limit >= SMALLEST_USEFUL,
        "topic `{topic}` takes records of at most {limit} bytes (max.message.bytes {topic_max}, producer message.max.bytes {producer_max}): too small for a quarantine record's headers; raise the topic's max.message.bytes to at least 1048588"
    );
    Ok(limit)
}

/// Bootstrap addresses of the embedded brokers this process started.
static EMBEDDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Kafka's default `max.message.bytes` (topic) and `message.max.bytes` (broker): 1 MiB plus
/// record-batch overhead. Kafka applies it to the (compressed) record batch.
pub const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// The largest record batch `topic` accepts, as the broker reports it (DescribeConfigs: the
/// topic's `max.message.bytes`, inherited from the broker's `message.max.bytes` unless set).
/// `Ok(None)` when the broker cannot say (librdkafka's mock cluster has no DescribeConfigs);
/// callers then assume [`KAFKA_DEFAULT_MAX_MESSAGE_BYTES`].
fn topic_max_message_bytes(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Option<usize>> {
    use anyhow::Context as _;
    // The mock cluster never answers DescribeConfigs (the request would only time out): an
    // embedded broker of this process is known not to say.
    let embedded = config.get("bootstrap.servers").is_some_and(|b| {
        EMBEDDED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| e == b)
    });
    if embedded {
        return Ok(None);
    }
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating a Kafka admin client")?;
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = futures::executor::block_on(
        admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options),
    );
    let resource = match described {
        Ok(mut results) => match results.pop() {
            Some(Ok(resource)) => resource,
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "broker did not describe the topic's config");
                return Ok(None);
            }
            None => return Ok(None),
        },
        Err(e) => {
            tracing::warn!(topic, error = %e, "DescribeConfigs failed (unsupported by this broker?)");
            return Ok(None);
        }
    };
    let Some(value) = resource
        .get("max.message.bytes")
        .and_then(|e| e.value.as_deref())
    else {
        return Ok(None);
    };
    let bytes = value
        .trim()
        .parse::<usize>()
        .with_context(|| format!("topic {topic} reports max.message.bytes = {value:?}"))?;
    Ok(Some(bytes))
}

/// A group consumer's context: commits stored offsets synchronously when partitions are
/// revoked (before another instance starts from the committed position), numbers every
/// assignment of a partition (an *epoch*, so a loop can drop work from an assignment that
/// ended). Lag is exported separately, from committed offsets ([`crate::lag`]).
///
/// A loop that keeps work running *outside* `recv()` (the Okta writer's per-customer
/// applications) registers a revoke hook ([`GroupContext::on_revoke`]): it runs before the
/// commit and must return only when nothing of the revoked partitions is still in flight, or
/// the old owner would go on writing while the next owner starts (found with two writers on
/// Apache Kafka: a stale tier's group membership written after the newer one).
pub struct GroupContext {
    epochs: Mutex<HashMap<i32, u64>>,
    next_epoch: Mutex<u64>,
    group: String,
    revoke_hook: Mutex<Option<RevokeHook>>,
}

/// Called with the revoked partitions, on the thread that polls the consumer.
pub type RevokeHook = Box<dyn Fn(&[i32]) + Send + Sync>;

impl std::fmt::Debug for GroupContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupContext")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl GroupContext {
    pub fn new(group: &str) -> GroupContext {
        GroupContext {
            epochs: Mutex::new(HashMap::new()),
            next_epoch: Mutex::new(0),
            group: group.to_owned(),
            revoke_hook: Mutex::new(None),
        }
    }

    /// Run `hook` with the revoked partitions at every revoke, before the offsets are
    /// committed and the partitions released.
    pub fn on_revoke(&self, hook: RevokeHook) {
        *self.revoke_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The current assignment's epoch of `partition`, or `None` if it is not assigned.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .copied()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                // Epochs end first, so work finishing now is recognised as stale.
                let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
                for p in &partitions {
                    epochs.remove(p);
                }
                drop(epochs);
                if let Some(hook) = self
                    .revoke_hook
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    hook(&partitions);
                }
            }
            commit_stored(consumer, "on revoke");
            tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut next = self.next_epoch.lock().unwrap_or_else(|p| p.into_inner());
            let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                *next += 1;
                epochs.insert(e.partition(), *next);
            }
            tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
        }
    }
}

/// How many partitions `topic` has; an error naming the topic if it does not exist.
pub fn partition_count<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> anyhow::Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("fetching metadata for topic `{topic}`: {e}"))?;
    let count = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow::anyhow!("topic `{topic}` does not exist; create it first"))?;
    Ok(i32::try_from(count)?)
}

/// Per partition of `topic`, its (start, end) offsets now.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, (i64, i64)>> {
    let partitions = partition_count(consumer, topic)?;
    (0..partitions)
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("reading the end of {topic}/{p}: {e}"))?;
            Ok((p, marks))
        })
        .collect()
}

/// A stretch of one partition to read: from `start` up to `end` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub partition: i32,
    pub start: Offset,
    pub end: i64,
    /// Records in the range (for progress reporting).
    pub len: u64,
}

/// Each of `partitions` from its beginning to its end as it is now; empty ones are left out.
pub fn current_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> anyhow::Result<Vec<Range>> {
    let mut ranges = Vec::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("reading the end of {topic}/{partition}: {e}"))?;
        if high > low {
            ranges.push(Range {
                partition,
                start: Offset::Beginning,
                end: high,
                len: u64::try_from(high - low)?,
            });
        }
    }
    Ok(ranges)
}

/// Read `ranges` of `topic` (assigning `consumer` to them, no group involved), calling
/// `on_record` for every record, in offset order within each partition. Fails when no record
/// arrives for `idle`, or when the whole read takes longer than `deadline`. Returns the number
/// of records read.
pub fn read_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[Range],
    idle: Duration,
    deadline: Option<Duration>,
    mut on_record: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut ends: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in ranges {
        ends.insert(r.partition, r.end);
        tpl.add_partition_offset(topic, r.partition, r.start)?;
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let started = std::time::Instant::now();
    let mut last = started;
    let mut records = 0u64;
    while !ends.is_empty() {
        if let Some(limit) = deadline {
            anyhow::ensure!(
                started.elapsed() < limit,
                "reading {topic} took over {limit:?}"
            );
        }
        let Some(m) = consumer.poll(Duration::from_millis(500).min(idle)) else {
            anyhow::ensure!(
                last.elapsed() < idle,
                "no record from {topic} for {idle:?} with {} partitions unfinished",
                ends.len()
            );
            continue;
        };
        let m = m.map_err(|e| anyhow::anyhow!("reading {topic}: {e}"))?;
        last = std::time::Instant::now();
        on_record(&m)?;
        records += 1;
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() >= end - 1)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(records)
}

/// A consumer that reads topics by assignment (no group joined, nothing committed), as
/// `client_id`: for operator commands that read a topic whole.
pub fn topic_reader(
    kafka: &KafkaConfig,
    bootstrap: &str,
    client_id: &str,
) -> anyhow::Result<BaseConsumer> {
    client_config(
        kafka,
        bootstrap,
        &[("client.id", client_id)],
        &[
            ("group.id", &format!("{client_id}-reader")),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
    )?
    .create()
    .map_err(|e| anyhow::anyhow!("creating a Kafka consumer: {e}"))
}

/// Every partition of `topic` from its beginning to its end as it is now, through
/// [`read_ranges`] (failing after 30 s without a record). Returns the number of records read.
pub fn read_topic_now(
    consumer: &BaseConsumer,
    topic: &str,
    on_record: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let partitions = partition_count(consumer, topic)?;
    let ranges = current_ranges(consumer, topic, 0..partitions)?;
    read_ranges(
        consumer,
        topic,
        &ranges,
        Duration::from_secs(30),
        None,
        on_record,
    )
}

/// The bootstrap servers to use: the configured ones, or a freshly started embedded broker
/// with every pipeline topic (which the caller must keep alive, on this thread, for as long
/// as it runs). `service` names who started it in the warning an operator sees.
pub fn resolve_brokers(
    kafka: &crate::config::KafkaConfig,
    topics: &crate::config::TopicsConfig,
    service: &str,
) -> anyhow::Result<(String, Option<EmbeddedBroker>)> {
    match kafka.brokers()? {
        crate::config::Brokers::External(list) => Ok((list, None)),
        crate::config::Brokers::Embedded => {
            let broker = EmbeddedBroker::start_pipeline(topics, 6)?;
            let bootstrap = broker.bootstrap_servers();
            tracing::warn!(%bootstrap, "{service} started an embedded in-process Kafka broker: records live in memory only and are lost when it stops; other services can use it with --brokers {bootstrap}");
            println!("embedded Kafka broker: {bootstrap}");
            Ok((bootstrap, Some(broker)))
        }
    }
}

/// librdkafka's in-process mock cluster, speaking the Kafka protocol on a loopback port.
///
/// For local runs and tests: data lives in memory, at most about 5 MiB per partition (older
/// records are dropped), and nothing survives the process. The cluster is not `Send`: keep it on
/// the thread that created it (a binary's `main`, a test's body) for as long as clients use it.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.cluster.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    /// One broker with `topics` created, each with `partitions` partitions.
    pub fn start(topics: &[&str], partitions: i32) -> Result<Self, rdkafka::error::KafkaError> {
        let cluster = MockCluster::new(1)?;
        for topic in topics {
            cluster.create_topic(topic, partitions, 1)?;
        }
        EMBEDDED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cluster.bootstrap_servers());
        Ok(EmbeddedBroker { cluster })
    }

    /// One broker with every topic the pipeline uses, `partitions` each, so every service can
    /// share it (`--brokers` with the address this one prints).
    pub fn start_pipeline(
        topics: &crate::config::TopicsConfig,
        partitions: i32,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        EmbeddedBroker::start(
            &[
                topics.orders.as_str(),
                topics.orders_quarantine.as_str(),
                topics.segments.as_str(),
                topics.ledger_changelog.as_str(),
                topics.okta_dlq.as_str(),
            ],
            partitions,
        )
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The underlying mock cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_header_reads_as_its_last_utf8_value() {
        use rdkafka::message::{Header, OwnedHeaders};
        let hs = OwnedHeaders::new()
            .insert(Header {
                key: "x-shopify-topic",
                value: Some("orders/create"),
            })
            .insert(Header {
                key: "x-shopify-topic",
                value: Some("orders/updated"),
            })
            .insert(Header {
                key: "bad",
                value: Some("ok"),
            })
            .insert(Header {
                key: "bad",
                value: Some(&[0xff_u8, 0xfe][..]),
            })
            .insert(Header::<&str> {
                key: "none",
                value: None,
            });
        assert_eq!(header(&hs, "x-shopify-topic"), Some("orders/updated"));
        assert_eq!(
            header(&hs, "bad"),
            Some("ok"),
            "non-UTF-8 values are skipped"
        );
        assert_eq!(header(&hs, "none"), None);
        assert_eq!(header(&hs, "X-Shopify-Topic"), None, "names are exact");
    }

    #[test]
    fn operator_properties_apply_but_cannot_weaken_required_ones() {
        let mut kafka = KafkaConfig::default();
        kafka
            .client
            .insert("linger.ms".into(), toml::Value::Integer(7));
        let c = client_config(&kafka, "b:1", &[("linger.ms", "1")], &[("acks", "all")]).unwrap();
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));

        kafka
            .client
            .insert("acks".into(), toml::Value::String("1".into()));
        let e = client_config(&kafka, "b:1", &[], &[("acks", "all")]).unwrap_err();
        assert!(e.to_string().contains("acks"), "{e}");
    }
}

/// An Apache Kafka started by `scripts/kafka.py` (one KRaft node, or three), for tests and
/// local runs that need what only a real broker does. Stopped on drop; its directory (logs,
/// data) is removed unless the thread is panicking, so a failed test leaves them to read.
#[derive(Debug)]
pub struct LocalKafka {
    pub dir: String,
    pub bootstrap: String,
}

impl LocalKafka {
    /// Start `nodes` nodes (1 or 3) and wait until they are ready. Needs python3, Java 17 and
    /// Maven (`scripts/install-test-deps.sh`).
    pub fn start(nodes: u8) -> anyhow::Result<LocalKafka> {
        use anyhow::Context as _;
        let out = std::process::Command::new(Self::script())
            .args(["start", "--json", "--nodes", &nodes.to_string()])
            .output()
            .context("running scripts/kafka.py (needs python3, Java 17 and Maven)")?;
        anyhow::ensure!(
            out.status.success(),
            "starting Apache Kafka failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        #[derive(serde::Deserialize)]
        struct Started {
            dir: String,
            bootstrap: String,
        }
        let started: Started =
            serde_json::from_slice(&out.stdout).context("reading scripts/kafka.py's answer")?;
        Ok(LocalKafka {
            dir: started.dir,
            bootstrap: started.bootstrap,
        })
    }

    /// The script, found from this crate's source directory (a development helper).
    pub fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.py")
    }

    /// `kill -9` node `node` (a node id from 1, or `all`).
    pub fn kill(&self, node: &str) -> anyhow::Result<()> {
        self.node_command("kill", node)
    }

    /// SIGSTOP: the node hangs with its connections open, as a stalled broker does.
    pub fn pause(&self, node: &str) -> anyhow::Result<()> {
        self.node_command("pause", node)
    }

    /// SIGCONT after [`LocalKafka::pause`].
    pub fn resume(&self, node: &str) -> anyhow::Result<()> {
        self.node_command("resume", node)
    }

    /// Start a killed node (or `all`) again on its data, waiting until the cluster lists it.
    pub fn restart(&self, node: &str) -> anyhow::Result<()> {
        self.node_command("restart", node)
    }

    fn node_command(&self, action: &str, node: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new(Self::script())
            .args([action, "--dir", &self.dir, "--node", node])
            .status()?;
        anyhow::ensure!(
            status.success(),
            "scripts/kafka.py {action} --node {node} failed"
        );
        Ok(())
    }

    /// Run one of Kafka's own tools (`consumer-groups`, `topics`, `producer-perf`,
    /// `consumer-perf`) against this cluster's jars; its stdout when it succeeds.
    pub fn tool(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(Self::script())
            .args(["tool", name])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kafka tool {name} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for LocalKafka {
    fn drop(&mut self) {
        let mut stop = std::process::Command::new(Self::script());
        stop.args(["stop", "--dir", &self.dir]);
        if !std::thread::panicking() {
            stop.arg("--clean");
        }
        let _ = stop.status();
    }
}
