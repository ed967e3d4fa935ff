//! The segmenter's consumer loop: records in, decisions out, offsets only after acks.
//!
//! Per batch (up to `batch_size` records, or what arrives within `batch_wait`):
//! 1. Decide every record against its partition's ledger (restoring the ledger from the
//!    changelog first if this instance just got the partition).
//! 2. Produce segment updates, quarantine copies and `shop/redact` fan-outs; await every ack.
//! 3. Produce the changelog entries for the same records; await every ack.
//! 4. Store each partition's last offset (librdkafka stores offset + 1); auto-commit sends
//!    stored offsets every second, and on revoke and shutdown they are committed
//!    synchronously.
//!
//! Why this order: if the process dies after (2) but before (3), a restart restores state
//! without the record's effect, decides it again and re-emits the same update (same
//! deterministic event id: harmless). If it dies after (3) but before (4), the restored state
//! already has the effect and the redelivered record is a duplicate: nothing is emitted. No
//! order of failures loses an update or applies an order twice. A failed produce abandons the
//! batch: the affected partitions' state is dropped and the consumer seeks back to the batch's
//! first offsets, which is exactly the restart path without the restart.
//!
//! Rebalances run inside `recv()`, i.e. between batches: a revoked partition's stored offsets
//! are committed before it goes, and a per-partition assignment epoch makes the loop drop
//! state (and any records collected) from an assignment that ended.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};
use schemas::{headers as h, RecordKey, ShopifyTopic, UpdateKind};

use service_runtime::kafka::GroupContext;

use crate::config::Settings;
use crate::ledger::{Ledger, OrderRecord};
use crate::metrics::Metrics;
use crate::normalize::normalize;
use crate::rules::{decide, ChangelogWrite, RecordMeta, Rules};

struct PartitionState {
    epoch: u64,
    ledger: Ledger,
}

/// One record produced by a batch.
struct Out {
    topic: String,
    partition: Option<i32>,
    key: String,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// The running segmenter.
pub struct Segmenter {
    consumer: StreamConsumer<GroupContext>,
    producer: FutureProducer,
    restore_config: ClientConfig,
    rules: Rules,
    settings: Settings,
    metrics: Metrics,
    state: HashMap<i32, PartitionState>,
    orders_partitions: i32,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("group", &self.settings.segmenter.group_id)
            .field("partitions", &self.state.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Segmenter {
    /// Connect, check the topics, and subscribe.
    pub fn new(settings: &Settings, bootstrap: &str, metrics: Metrics) -> anyhow::Result<Self> {
        let rules = settings.rules()?;
        let cfg = &settings.segmenter;
        let consumer_config = service_runtime::kafka::client_config(
            &settings.kafka,
            bootstrap,
            &[
                ("auto.offset.reset", "earliest"),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("client.id", "tierflow-segmenter"),
            ],
            // Offsets are stored by the loop after a batch's acks, never by librdkafka on
            // delivery to the application.
            &[
                ("enable.auto.offset.store", "false"),
                ("group.id", cfg.group_id.as_str()),
            ],
        )?;
        let ctx = GroupContext::new(&cfg.group_id);
        let consumer: StreamConsumer<GroupContext> = consumer_config
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        let timeout = cfg.produce_timeout.as_millis().to_string();
        let producer: FutureProducer = service_runtime::kafka::client_config(
            &settings.kafka,
            bootstrap,
            &[
                ("linger.ms", "5"),
                ("message.timeout.ms", timeout.as_str()),
                ("client.id", "tierflow-segmenter"),
            ],
            &[("enable.idempotence", "true"), ("acks", "all")],
        )?
        .create()
        .context("creating the Kafka producer")?;
        let restore_config = service_runtime::kafka::client_config(
            &settings.kafka,
            bootstrap,
            &[("client.id", "tierflow-segmenter-restore")],
            &[
                ("group.id", "tierflow-segmenter-restore"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "false"),
            ],
        )?;
        let topics = &settings.topics;
        let partitions = |name: &str| service_runtime::kafka::partition_count(&consumer, name);
        let orders_partitions = partitions(&topics.orders)?;
        let changelog_partitions = partitions(&topics.ledger_changelog)?;
        anyhow::ensure!(
            orders_partitions == changelog_partitions,
            "topic `{}` has {changelog_partitions} partitions but `{}` has {orders_partitions}: the changelog must be co-partitioned with the orders topic (create it with {orders_partitions} partitions, cleanup.policy=compact)",
            topics.ledger_changelog,
            topics.orders
        );
        partitions(&topics.segments)?;
        partitions(&topics.orders_quarantine)?;
        consumer
            .subscribe(&[topics.orders.as_str()])
            .context("subscribing to the orders topic")?;
        Ok(Segmenter {
            consumer,
            producer,
            restore_config,
            rules,
            settings: settings.clone(),
            metrics,
            state: HashMap::new(),
            orders_partitions,
        })
    }

    /// Run until `shutdown` resolves; then finish the batch in hand and commit.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(200);
        loop {
            let batch = tokio::select! {
                () = &mut shutdown => break,
                batch = self.collect() => batch?,
            };
            if batch.is_empty() {
                continue;
            }
            match self.process(batch).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "batch failed; its partitions restart from their last stored offsets");
                    self.metrics.batch_failures.inc();
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::info!("shutting down: committing stored offsets");
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // The group is mid-rebalance (another member joined or left as we stop): the
            // coordinator takes no commits now. What was stored but not committed is redone by
            // the next owner, which the changelog makes a no-op; not worth failing the stop.
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId),
            )) => {
                tracing::warn!(error = %code, "final offset commit refused during a rebalance; the next owner redoes the last records (harmless)");
            }
            Err(e) => return Err(anyhow::Error::new(e).context("final offset commit")),
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Wait for one record, then take what else arrives within `batch_wait`.
    async fn collect(&self) -> anyhow::Result<Vec<(OwnedMessage, u64)>> {
        let cfg = &self.settings.segmenter;
        let mut batch = Vec::new();
        // librdkafka reports broker trouble (transport failures, a broker down) as consumer
        // errors and keeps reconnecting on its own: log them and keep polling. Only the
        // loop's own failures end the service.
        let first = loop {
            match self.consumer.recv().await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        let tag = |m: &rdkafka::message::BorrowedMessage<'_>| {
            self.consumer.context().epoch(m.partition())
        };
        if let Some(epoch) = tag(&first) {
            batch.push((first.detach(), epoch));
        }
        while batch.len() < cfg.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(m)) => {
                    if let Some(epoch) = tag(&m) {
                        batch.push((m.detach(), epoch));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries");
                    break;
                }
            }
        }
        Ok(batch)
    }

    async fn process(&mut self, batch: Vec<(OwnedMessage, u64)>) -> anyhow::Result<()> {
        let started = Instant::now();
        let orders_topic = self.settings.topics.orders.clone();
        let mut first_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut outs: Vec<Out> = Vec::new();
        let mut changelog: Vec<Out> = Vec::new();
        // Partitions this batch needs and this instance has no current state for (newly
        // assigned, or dropped after a failed batch): restore them together, one read.
        let mut needed: BTreeMap<i32, u64> = BTreeMap::new();
        for (m, epoch) in &batch {
            let p = m.partition();
            if self.consumer.context().epoch(p) == Some(*epoch)
                && self.state.get(&p).is_none_or(|s| s.epoch != *epoch)
            {
                needed.insert(p, *epoch);
            }
        }
        if !needed.is_empty() {
            let mut ledgers = self.restore(needed.keys().copied().collect()).await?;
            for (p, epoch) in needed {
                let ledger = ledgers.remove(&p).unwrap_or_default();
                self.state.insert(p, PartitionState { epoch, ledger });
            }
        }
        for (m, epoch) in &batch {
            let p = m.partition();
            if self.consumer.context().epoch(p) != Some(*epoch) {
                // Received under an assignment that has since ended; its new owner (maybe us
                // again) starts from the committed offset.
                self.metrics
                    .records
                    .with_label_values(&["stale_assignment"])
                    .inc();
                continue;
            }
            first_offsets.entry(p).or_insert(m.offset());
            last_offsets.insert(p, m.offset());
            let outcome = self.decide_record(m, &mut outs, &mut changelog);
            self.metrics.records.with_label_values(&[outcome]).inc();
        }
        let decided = started.elapsed();
        let produce_started = Instant::now();
        let result = async {
            self.send_all(outs)
                .await
                .context("producing segment updates")?;
            self.send_all(changelog)
                .await
                .context("producing changelog entries")
        }
        .await;
        if let Err(e) = result {
            for (p, first) in &first_offsets {
                self.state.remove(p);
                if let Err(seek) = self.consumer.seek(
                    &orders_topic,
                    *p,
                    Offset::Offset(*first),
                    Duration::from_secs(5),
                ) {
                    tracing::error!(partition = p, error = %seek, "seek back failed; restarting the consumer is the safe recovery");
                    return Err(e.context(format!("and seeking partition {p} back failed: {seek}")));
                }
            }
            return Err(e);
        }
        for (p, last) in &last_offsets {
            self.consumer
                .store_offset(&orders_topic, *p, *last)
                .with_context(|| format!("storing offset {last} of partition {p}"))?;
        }
        let (customers, orders) = self.state.values().fold((0, 0), |(c, o), s| {
            (c + s.ledger.customers(), o + s.ledger.orders())
        });
        self.metrics
            .customers
            .set(i64::try_from(customers).unwrap_or(i64::MAX));
        self.metrics
            .orders
            .set(i64::try_from(orders).unwrap_or(i64::MAX));
        let b = &self.metrics.batch_seconds;
        b.with_label_values(&["decide"])
            .observe(decided.as_secs_f64());
        b.with_label_values(&["produce"])
            .observe(produce_started.elapsed().as_secs_f64());
        b.with_label_values(&["total"])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Decide one record, appending what it produces. Returns the outcome label.
    fn decide_record(
        &mut self,
        m: &OwnedMessage,
        outs: &mut Vec<Out>,
        changelog: &mut Vec<Out>,
    ) -> &'static str {
        let p = m.partition();
        let headers = header_map(m);
        let get = |name: &str| headers.get(name).map(String::as_str);
        let source = |hs: OwnedHeaders| {
            hs.insert(Header {
                key: h::SOURCE_TOPIC,
                value: Some(m.topic()),
            })
            .insert(Header {
                key: h::SOURCE_PARTITION,
                value: Some(&p.to_string()),
            })
            .insert(Header {
                key: h::SOURCE_OFFSET,
                value: Some(&m.offset().to_string()),
            })
        };
        let quarantine = |reason: &str, detail: &str, outs: &mut Vec<Out>| {
            let hs = m.headers().cloned().unwrap_or_default();
            let hs = source(hs)
                .insert(Header {
                    key: h::QUARANTINE_REASON,
                    value: Some(reason),
                })
                .insert(Header {
                    key: h::QUARANTINE_DETAIL,
                    value: Some(detail),
                })
                .insert(Header {
                    key: h::QUARANTINED_BY,
                    value: Some("segmenter"),
                });
            outs.push(Out {
                topic: self.settings.topics.orders_quarantine.clone(),
                partition: None,
                key: key_text(m),
                payload: Some(m.payload().unwrap_or_default().to_vec()),
                headers: hs,
            });
        };
        let (Some(topic), Some(shop)) = (get(h::SHOPIFY_TOPIC), get(h::SHOPIFY_SHOP_DOMAIN)) else {
            quarantine(
                "missing_header",
                "record lacks x-shopify-topic or x-shopify-shop-domain",
                outs,
            );
            self.metrics
                .quarantined
                .with_label_values(&["missing_header"])
                .inc();
            return "quarantined";
        };
        let Ok(topic) = topic.parse::<ShopifyTopic>() else {
            quarantine(
                "unknown_topic",
                &format!("unknown Shopify topic `{topic}`"),
                outs,
            );
            self.metrics
                .quarantined
                .with_label_values(&["unknown_topic"])
                .inc();
            return "quarantined";
        };
        if topic == ShopifyTopic::ShopRedact && get(h::FANOUT_FROM).is_none() {
            // A shop's customers live in every partition: hand each partition's owner a copy.
            for target in 0..self.orders_partitions {
                let hs = m.headers().cloned().unwrap_or_default();
                outs.push(Out {
                    topic: self.settings.topics.orders.clone(),
                    partition: Some(target),
                    key: key_text(m),
                    payload: Some(m.payload().unwrap_or_default().to_vec()),
                    headers: hs.insert(Header {
                        key: h::FANOUT_FROM,
                        value: Some(&p.to_string()),
                    }),
                });
            }
            return "fanned_out";
        }
        let event = match normalize(topic, m.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                quarantine(e.reason(), &e.to_string(), outs);
                self.metrics
                    .quarantined
                    .with_label_values(&[e.reason()])
                    .inc();
                return "quarantined";
            }
        };
        let event_time = get(h::SHOPIFY_TRIGGERED_AT)
            .map(str::to_owned)
            .or_else(|| {
                m.timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            })
            .unwrap_or_default();
        let meta = RecordMeta {
            shop,
            topic,
            webhook_id: get(h::SHOPIFY_WEBHOOK_ID),
            event_time: &event_time,
        };
        let state = self.state.get_mut(&p).expect("restored above");
        let decision = decide(&self.rules, &mut state.ledger, &event, &meta);
        let span = tracing::info_span!(
            "decide",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %m.topic(),
            messaging.consumer.group.name = %self.settings.segmenter.group_id,
            messaging.destination.partition.id = p,
            messaging.kafka.offset = m.offset(),
        );
        service_runtime::telemetry::set_remote_parent(
            &span,
            get(h::TRACEPARENT),
            get(h::TRACESTATE),
        );
        let (traceparent, tracestate) =
            service_runtime::telemetry::trace_context_after(&span, get(h::TRACEPARENT));
        for u in &decision.updates {
            self.metrics
                .updates
                .with_label_values(&[
                    match u.kind {
                        UpdateKind::Segment => "segment",
                        UpdateKind::Redact => "redact",
                    },
                    if u.tier_changed { "true" } else { "false" },
                ])
                .inc();
            let mut hs = source(OwnedHeaders::new())
                .insert(Header {
                    key: h::EVENT_ID,
                    value: Some(u.event_id.as_str()),
                })
                .insert(Header {
                    key: h::TRACEPARENT,
                    value: Some(traceparent.as_str()),
                });
            if let Some(ts) = &tracestate {
                hs = hs.insert(Header {
                    key: h::TRACESTATE,
                    value: Some(ts.as_str()),
                });
            }
            outs.push(Out {
                topic: self.settings.topics.segments.clone(),
                partition: None,
                key: RecordKey::Customer {
                    shop: u.shop.clone(),
                    customer_id: u.customer_id,
                }
                .to_string(),
                payload: Some(serde_json::to_vec(u).expect("updates serialise")),
                headers: hs,
            });
        }
        for w in decision.changelog {
            let (key, payload) = match w {
                ChangelogWrite::Put(r) => (
                    OrderRecord::key(&r.shop, r.customer_id, r.order_id),
                    Some(serde_json::to_vec(&r).expect("records serialise")),
                ),
                ChangelogWrite::Delete { key } => (key, None),
            };
            changelog.push(Out {
                topic: self.settings.topics.ledger_changelog.clone(),
                partition: Some(p),
                key,
                payload,
                headers: OwnedHeaders::new(),
            });
        }
        decision.outcome
    }

    /// Produce `outs` and wait for every acknowledgement.
    async fn send_all(&self, outs: Vec<Out>) -> anyhow::Result<()> {
        // Every record is queued before any acknowledgement is awaited, so a batch costs one
        // round of linger + round trip, not one per record. (`FutureProducer::send` would only
        // queue a record when its future is first polled.)
        let mut pending = Vec::with_capacity(outs.len());
        for o in &outs {
            let mut record = FutureRecord::<str, [u8]>::to(&o.topic)
                .key(o.key.as_str())
                .headers(o.headers.clone());
            if let Some(p) = &o.payload {
                record = record.payload(p.as_slice());
            }
            if let Some(p) = o.partition {
                record = record.partition(p);
            }
            let queued_by = Instant::now() + self.settings.segmenter.produce_timeout;
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < queued_by =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(anyhow::Error::new(e).context("queueing a record")),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(anyhow::Error::new(e).context("delivery failed")),
                Err(_canceled) => anyhow::bail!("the producer shut down before delivery"),
            }
        }
        Ok(())
    }

    /// Rebuild the ledgers of `partitions` from their changelog partitions.
    async fn restore(&self, partitions: Vec<i32>) -> anyhow::Result<HashMap<i32, Ledger>> {
        let started = Instant::now();
        let config = self.restore_config.clone();
        let topic = self.settings.topics.ledger_changelog.clone();
        let (ledgers, records) =
            tokio::task::spawn_blocking(move || restore_partitions(&config, &topic, &partitions))
                .await
                .context("restore task")??;
        let took = started.elapsed();
        self.metrics.restore_seconds.observe(took.as_secs_f64());
        self.metrics.restored_records.inc_by(records);
        let customers: usize = ledgers.values().map(Ledger::customers).sum();
        tracing::info!(partitions = ledgers.len(), records, customers, took = ?took, "partition state restored");
        Ok(ledgers)
    }
}

/// Read changelog `partitions` from their starts to their current ends into fresh ledgers,
/// with one consumer. A state reset marker (`segmenter replay --rebuild-state`) empties the
/// partition's ledger: what came before it is forgotten.
pub fn restore_partitions(
    config: &ClientConfig,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<(HashMap<i32, Ledger>, u64)> {
    let consumer: BaseConsumer = config.create().context("creating the restore consumer")?;
    let mut ledgers: HashMap<i32, Ledger> =
        partitions.iter().map(|p| (*p, Ledger::new())).collect();
    let ranges =
        service_runtime::kafka::current_ranges(&consumer, topic, partitions.iter().copied())?;
    let ten_minutes = Duration::from_secs(600);
    let records = service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        ten_minutes,
        Some(ten_minutes),
        |m| {
            let p = m.partition();
            let ledger = ledgers.get_mut(&p).expect("assigned partitions only");
            let key = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .unwrap_or_default();
            if key == crate::replay::RESET_MARKER_KEY {
                *ledger = Ledger::new();
                return Ok(());
            }
            match m.payload() {
                Some(v) => match serde_json::from_slice::<OrderRecord>(v) {
                    Ok(r) => ledger.restore(&r),
                    Err(e) => {
                        tracing::error!(partition = p, offset = m.offset(), error = %e, "unreadable changelog record skipped")
                    }
                },
                None => match OrderRecord::parse_key(key) {
                    Some((shop, customer, order)) => ledger.restore_delete(shop, customer, order),
                    None => tracing::error!(
                        partition = p,
                        offset = m.offset(),
                        key,
                        "unreadable changelog tombstone skipped"
                    ),
                },
            }
            Ok(())
        },
    )?;
    Ok((ledgers, records))
}

fn header_map(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn key_text(m: &OwnedMessage) -> String {
    m.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}
