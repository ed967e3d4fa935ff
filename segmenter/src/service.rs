//! The segmenter's consumer loop: records in, decisions out, offsets only after acks.
//!
//! Per batch (up to `batch_size` records, or what arrives within `batch_wait`):
//! 1. Decide every record against its partition's ledger (restoring the ledger from the
//!    changelog first if this instance just got the partition). Every 1,000 decided records
//!    go to a sending task as a chunk, and deciding goes on while the chunk's acks come back.
//! 2. Per chunk, in decision order: produce segment updates, quarantine copies and
//!    `shop/redact` fan-outs; await every ack; then queue the changelog entries for the same
//!    records.
//! 3. Await every changelog ack of the batch.
//! 4. Store each partition's last offset (librdkafka stores offset + 1); auto-commit sends
//!    stored offsets every second, and on revoke and shutdown they are committed
//!    synchronously.
//!
//! Why this order: if the process dies after a chunk's updates but before its changelog, a
//! restart restores state without the records' effects, decides them again and re-emits the
//! same updates (same deterministic event ids: harmless). If it dies after (3) but before
//! (4), the restored state
//! already has the effect and the redelivered record is a duplicate: nothing is emitted. No
//! order of failures loses an update or applies an order twice. A failed produce abandons the
//! batch: the affected partitions' state is dropped and the consumer seeks back to the batch's
//! first offsets, which is exactly the restart path without the restart.
//!
//! Rebalances run inside `recv()`, i.e. between batches, when nothing is being produced: a revoked partition's stored offsets
//! are committed before it goes, and a per-partition assignment epoch makes the loop drop
//! state (and any records collected) from an assignment that ended.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};
use schemas::{headers as h, RecordKey, ShopifyTopic, UpdateKind};
use tokio::sync::mpsc;

use service_runtime::kafka::{with_body_cut, with_headers, GroupContext};

use crate::changelog::{restore_partitions, OrderRecord};
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::normalize::interpret;
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

impl Out {
    /// A rejected record as the producer hands it back, to send again or quarantine.
    fn from_message(mut m: OwnedMessage) -> Out {
        Out {
            topic: m.topic().to_owned(),
            partition: (m.partition() >= 0).then_some(m.partition()),
            key: key_text(&m),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m.detach_headers().unwrap_or_default(),
        }
    }
}

/// Metric increments of one batch, applied only once the batch is acknowledged and its
/// offsets stored: a failed batch is redone, and counting it twice would lie.
#[derive(Default)]
struct Tally {
    records: HashMap<&'static str, u64>,
    quarantined: HashMap<&'static str, u64>,
    updates: HashMap<(&'static str, &'static str), u64>,
    /// Reconcile records whose version was new to the ledger.
    missed_webhooks: u64,
}

impl Tally {
    fn record(&mut self, outcome: &'static str) {
        *self.records.entry(outcome).or_default() += 1;
    }

    fn quarantine(&mut self, reason: &'static str) {
        *self.quarantined.entry(reason).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (k, n) in other.records {
            *self.records.entry(k).or_default() += n;
        }
        for (k, n) in other.quarantined {
            *self.quarantined.entry(k).or_default() += n;
        }
        for (k, n) in other.updates {
            *self.updates.entry(k).or_default() += n;
        }
        self.missed_webhooks += other.missed_webhooks;
    }

    fn apply(self, m: &Metrics) {
        for (outcome, n) in self.records {
            m.records.with_label_values(&[outcome]).inc_by(n);
        }
        for (reason, n) in self.quarantined {
            m.quarantined.with_label_values(&[reason]).inc_by(n);
        }
        for ((kind, changed), n) in self.updates {
            m.updates.with_label_values(&[kind, changed]).inc_by(n);
        }
        m.missed_webhooks.inc_by(self.missed_webhooks);
    }
}

/// One chunk of a batch's output: segment updates (with quarantine copies and fan-outs) and
/// the changelog entries of the same records.
struct Chunk {
    outs: Vec<Out>,
    changelog: Vec<Out>,
}

/// How many decided records make a chunk. The loop hands each chunk to the sender and goes on
/// deciding while its acks come back, so only the last chunk's round trips are waited out
/// (a 5,000-record batch of 7 KB bodies takes ~130 ms to decide; its acks ~60 ms).
const CHUNK_RECORDS: usize = 1000;

/// The producing half of the segmenter, cloned into the task that sends a batch's chunks.
#[derive(Clone)]
struct Sender {
    producer: FutureProducer,
    quarantine_topic: String,
    produce_timeout: Duration,
}

impl Sender {
    /// Send a batch's chunks as they come, in order; returns how many records the broker
    /// rejected (quarantined as markers instead). Per chunk, its changelog entries are queued
    /// only once all its updates are acknowledged (an entry must never be durable before the
    /// update it stands for), and chunks are taken one at a time, so changelog entries reach
    /// the broker in decision order: the compacted changelog keeps a key's last write, and an
    /// older order version landing after a newer one would regress restored state. The
    /// changelog's acks are awaited at the end; the caller stores offsets only after this
    /// returns `Ok`.
    async fn send_chunks(self, mut chunks: mpsc::Receiver<Chunk>) -> anyhow::Result<u64> {
        let mut rejected = 0;
        let mut changelog_acks = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            rejected += self
                .send_all(chunk.outs)
                .await
                .context("producing segment updates")?;
            let (pending, refused) = self.queue(chunk.changelog).await?;
            changelog_acks.push(pending);
            // Not isolated: a changelog entry the broker refuses would leave restored state
            // different from live state, so it fails the batch (entries are tiny; a refusal
            // is systemic).
            if let Some((_, e)) = refused.into_iter().next() {
                return Err(anyhow::Error::new(e).context("the broker rejected a changelog entry"));
            }
        }
        for pending in changelog_acks {
            if let Some((_, e)) = acks(pending).await?.into_iter().next() {
                return Err(anyhow::Error::new(e).context("the broker rejected a changelog entry"));
            }
        }
        Ok(rejected)
    }

    /// Produce `outs` and wait for every acknowledgement. Returns how many records the broker
    /// rejected for themselves and were replaced by quarantine markers.
    async fn send_all(&self, outs: Vec<Out>) -> anyhow::Result<u64> {
        let rejected = self.send_each(outs).await?;
        if rejected.is_empty() {
            return Ok(0);
        }
        // The broker judges a whole batch: records that shared one with an oversized record
        // are refused with it. Each is sent again alone, and only a second refusal is its own.
        let mut own = Vec::new();
        for (o, first) in rejected {
            let topic = o.topic.clone();
            if let Some(again) = self.send_each(vec![o]).await?.pop() {
                own.push(again);
            } else {
                tracing::info!(%topic, error = %first, "a record refused with its batch went through alone");
            }
        }
        // The broker refused these records themselves (too large, invalid), which no retry
        // fixes: keep the partition moving and leave a body-less quarantine marker with the
        // record's headers (its source coordinates among them) and the broker's reason.
        let markers: Vec<Out> = own
            .into_iter()
            .map(|(o, e)| {
                tracing::error!(topic = %o.topic, key = %o.key, error = %e, "the broker rejected a record; quarantining a marker instead");
                let detail = format!("producing to {} failed: {e}", o.topic);
                Out {
                    topic: self.quarantine_topic.clone(),
                    partition: None,
                    key: o.key,
                    payload: None,
                    headers: with_headers(
                        o.headers,
                        &[
                            (h::QUARANTINE_REASON, Some("produce_rejected")),
                            (h::QUARANTINE_DETAIL, Some(truncate_str(&detail, 1024))),
                            (h::QUARANTINED_BY, Some("segmenter")),
                        ],
                    ),
                }
            })
            .collect();
        let n = markers.len() as u64;
        if let Some((_, e)) = self.send_each(markers).await?.pop() {
            return Err(anyhow::Error::new(e).context("the broker rejected a quarantine marker"));
        }
        Ok(n)
    }

    /// Produce `outs` and wait for every acknowledgement. Records the broker rejects for
    /// what they are (see [`record_rejected`]) are handed back; any other failure fails the
    /// whole call (the batch is retried).
    async fn send_each(&self, outs: Vec<Out>) -> anyhow::Result<Vec<(Out, KafkaError)>> {
        let (pending, mut rejected) = self.queue(outs).await?;
        rejected.extend(acks(pending).await?);
        Ok(rejected)
    }

    /// Queue `outs` with the producer, awaiting nothing but room in its queue. Every record
    /// is queued before any acknowledgement is awaited, so a batch costs one round of linger
    /// and round trip, not one per record. (`FutureProducer::send` would only queue a record
    /// when its future is first polled.) The headers move into the producer, which hands
    /// them back with a rejected record.
    async fn queue(&self, outs: Vec<Out>) -> anyhow::Result<(Pending, Vec<(Out, KafkaError)>)> {
        let mut pending = Vec::with_capacity(outs.len());
        let mut rejected = Vec::new();
        for o in outs {
            let Out {
                topic,
                partition,
                key,
                payload,
                headers,
            } = o;
            let mut record = FutureRecord::<str, [u8]>::to(&topic)
                .key(key.as_str())
                .headers(headers);
            if let Some(p) = &payload {
                record = record.payload(p.as_slice());
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let queued_by = Instant::now() + self.produce_timeout;
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
                    Err((e, back)) if record_rejected(&e) => {
                        let headers = back.headers.unwrap_or_default();
                        let o = Out {
                            topic,
                            partition,
                            key,
                            payload,
                            headers,
                        };
                        rejected.push((o, e));
                        break;
                    }
                    Err((e, _)) => return Err(anyhow::Error::new(e).context("queueing a record")),
                }
            }
        }
        Ok((pending, rejected))
    }
}

/// Queued records' delivery futures.
type Pending = Vec<DeliveryFuture>;

/// Await `pending`; the records the broker rejected for what they are, handed back.
async fn acks(pending: Pending) -> anyhow::Result<Vec<(Out, KafkaError)>> {
    let mut rejected = Vec::new();
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, m))) if record_rejected(&e) => rejected.push((Out::from_message(m), e)),
            Ok(Err((e, _))) => return Err(anyhow::Error::new(e).context("delivery failed")),
            Err(_canceled) => anyhow::bail!("the producer shut down before delivery"),
        }
    }
    Ok(rejected)
}

/// The running segmenter.
pub struct Segmenter {
    /// Shared so a batch can borrow its records from the consumer (no copy of each ~7 KB
    /// body) while the loop changes the rest of `self`.
    consumer: Arc<StreamConsumer<GroupContext>>,
    sender: Sender,
    restore_config: ClientConfig,
    rules: Rules,
    settings: Settings,
    metrics: Metrics,
    state: HashMap<i32, PartitionState>,
    orders_partitions: i32,
    /// Largest quarantine record the broker takes (topic `max.message.bytes`, capped by the
    /// producer's `message.max.bytes`); quarantine copies are cut to fit.
    quarantine_max_bytes: usize,
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
        let consumer_config = service_runtime::kafka::store_after_ack_consumer_config(
            &settings.kafka,
            bootstrap,
            &cfg.group_id,
            &[
                ("client.id", "tierflow-segmenter"),
                // A batch takes thousands of records off the prefetch queue at once; when the
                // queue was full (`queued.max.messages.kbytes`, 64 MiB: ~9,000 order bodies)
                // librdkafka postpones the partition's next fetch by this much, 1 s by
                // default, which left the loop idle ~0.4 s of every third batch in a replay.
                ("fetch.queue.backoff.ms", "20"),
            ],
        )?;
        let ctx = GroupContext::new(&cfg.group_id);
        let consumer: StreamConsumer<GroupContext> = consumer_config
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        let timeout = cfg.produce_timeout.as_millis().to_string();
        let producer_config = service_runtime::kafka::acked_producer_config(
            &settings.kafka,
            bootstrap,
            &[
                ("linger.ms", "5"),
                ("message.timeout.ms", timeout.as_str()),
                ("client.id", "tierflow-segmenter"),
            ],
        )?;
        let producer: FutureProducer = producer_config
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
        let quarantine_max_bytes = service_runtime::kafka::quarantine_record_limit(
            &restore_config,
            &producer_config,
            &topics.orders_quarantine,
        )?;
        consumer
            .subscribe(&[topics.orders.as_str()])
            .context("subscribing to the orders topic")?;
        Ok(Segmenter {
            consumer: Arc::new(consumer),
            sender: Sender {
                producer,
                quarantine_topic: settings.topics.orders_quarantine.clone(),
                produce_timeout: cfg.produce_timeout,
            },
            restore_config,
            rules,
            settings: settings.clone(),
            metrics,
            state: HashMap::new(),
            orders_partitions,
            quarantine_max_bytes,
        })
    }

    /// Run until `shutdown` resolves; then finish the batch in hand and commit.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(200);
        loop {
            let consumer = Arc::clone(&self.consumer);
            let batch = tokio::select! {
                () = &mut shutdown => break,
                batch = self.collect(&consumer) => batch?,
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
        service_runtime::kafka::commit_stored(self.consumer.as_ref(), "at shutdown");
        self.consumer.unsubscribe();
        service_runtime::kafka::close_within(self.consumer, service_runtime::kafka::CLOSE_TIMEOUT)
            .await;
        Ok(())
    }

    /// Wait for one record, then take what else arrives within `batch_wait`.
    async fn collect<'c>(
        &self,
        consumer: &'c StreamConsumer<GroupContext>,
    ) -> anyhow::Result<Vec<(BorrowedMessage<'c>, u64)>> {
        let cfg = &self.settings.segmenter;
        let mut batch = Vec::new();
        // librdkafka reports broker trouble (transport failures, a broker down) as consumer
        // errors and keeps reconnecting on its own: log them and keep polling. Only the
        // loop's own failures end the service.
        let waiting = Instant::now();
        let first = loop {
            match consumer.recv().await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let collecting = Instant::now();
        self.metrics
            .batch_seconds
            .with_label_values(&["wait"])
            .observe(collecting.duration_since(waiting).as_secs_f64());
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        let tag = |m: &BorrowedMessage<'_>| consumer.context().epoch(m.partition());
        if let Some(epoch) = tag(&first) {
            batch.push((first, epoch));
        }
        while batch.len() < cfg.batch_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(m)) => {
                    if let Some(epoch) = tag(&m) {
                        batch.push((m, epoch));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries");
                    break;
                }
            }
        }
        self.metrics
            .batch_seconds
            .with_label_values(&["collect"])
            .observe(collecting.elapsed().as_secs_f64());
        Ok(batch)
    }

    async fn process(&mut self, batch: Vec<(BorrowedMessage<'_>, u64)>) -> anyhow::Result<()> {
        let started = Instant::now();
        let orders_topic = self.settings.topics.orders.clone();
        let mut first_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut outs: Vec<Out> = Vec::new();
        let mut changelog: Vec<Out> = Vec::new();
        let mut tally = Tally::default();
        // Partitions whose ledger a panic may have left half-changed, with the offset after
        // the panicking record: nothing more of them is decided in this batch (it would build
        // on that state); after the batch their state is dropped and they are read again from
        // there, restored from the changelog, which holds only accepted effects.
        let mut poisoned: BTreeMap<i32, i64> = BTreeMap::new();
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
        // Chunks go to the sender as they are decided (see [`Sender::send_chunks`]); the
        // channel holds every chunk of a batch, so handing one over never waits.
        let (chunks, chunks_rx) = mpsc::channel(batch.len().div_ceil(CHUNK_RECORDS).max(1));
        let sending = tokio::spawn(self.sender.clone().send_chunks(chunks_rx));
        let mut in_chunk = 0;
        for (m, epoch) in &batch {
            if in_chunk == CHUNK_RECORDS {
                in_chunk = 0;
                let chunk = Chunk {
                    outs: std::mem::take(&mut outs),
                    changelog: std::mem::take(&mut changelog),
                };
                // Refused only if the sender already failed; its error ends the batch below.
                let _ = chunks.try_send(chunk);
                // Deciding never awaits, and a task woken from this one waits in this worker's
                // LIFO slot, which other workers do not steal from: without a yield the sender
                // would start only after the last decision.
                tokio::task::yield_now().await;
            }
            in_chunk += 1;
            let p = m.partition();
            if self.consumer.context().epoch(p) != Some(*epoch) {
                // Received under an assignment that has since ended; its new owner (maybe us
                // again) starts from the committed offset.
                tally.record("stale_assignment");
                continue;
            }
            if poisoned.contains_key(&p) {
                continue; // read again after the restore
            }
            first_offsets.entry(p).or_insert(m.offset());
            last_offsets.insert(p, m.offset());
            let mut record_outs = Vec::new();
            let mut record_changelog = Vec::new();
            let mut record_tally = Tally::default();
            let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.decide_record(
                    m,
                    &mut record_outs,
                    &mut record_changelog,
                    &mut record_tally,
                )
            }));
            match decided {
                Ok(outcome) => {
                    outs.append(&mut record_outs);
                    changelog.append(&mut record_changelog);
                    tally.merge(record_tally);
                    tally.record(outcome);
                }
                Err(panic) => {
                    let detail = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    tracing::error!(partition = p, offset = m.offset(), panic = %detail, "deciding a record panicked; quarantined, partition state will be restored");
                    outs.push(self.quarantine_copy(m, "decision_panic", &detail));
                    tally.quarantine("decision_panic");
                    tally.record("quarantined");
                    poisoned.insert(p, m.offset() + 1);
                }
            }
        }
        let _ = chunks.try_send(Chunk { outs, changelog });
        drop(chunks);
        let decided = started.elapsed();
        let produce_started = Instant::now();
        // Awaited even when the batch is abandoned, so nothing of it is still being handed to
        // the producer when its partitions are restored and decided anew (what was already
        // queued reaches each partition before anything queued later).
        let result = match sending.await {
            Ok(Ok(rejected)) => {
                if rejected > 0 {
                    *tally.quarantined.entry("produce_rejected").or_default() += rejected;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(anyhow::anyhow!("the sending task failed: {join}")),
        };
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
        tally.apply(&self.metrics);
        for (p, next) in poisoned {
            self.state.remove(&p);
            self.consumer
                .seek(
                    &orders_topic,
                    p,
                    Offset::Offset(next),
                    Duration::from_secs(5),
                )
                .with_context(|| format!("seeking partition {p} back to {next} after a panic"))?;
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

    /// A quarantine copy of `m`: its headers plus where it came from and why, its body cut
    /// to what the quarantine topic takes (the whole record stays at its source offset).
    fn quarantine_copy(&self, m: &BorrowedMessage<'_>, reason: &str, detail: &str) -> Out {
        let payload = m.payload().unwrap_or_default();
        let detail = truncate_str(detail, 1024);
        let mut hs = with_headers(
            with_source(
                m.headers().map(BorrowedHeaders::detach).unwrap_or_default(),
                m,
            ),
            &[
                (h::QUARANTINE_REASON, Some(reason)),
                (h::QUARANTINE_DETAIL, Some(detail)),
                (h::QUARANTINED_BY, Some("segmenter")),
            ],
        );
        let key = key_text(m);
        let overhead = key.len() + headers_len(&hs) + RECORD_OVERHEAD;
        let room = self.quarantine_max_bytes.saturating_sub(overhead);
        let body = if payload.len() > room {
            // The headers added cost a little room too.
            let kept = room.saturating_sub(256);
            hs = with_body_cut(hs, payload, kept);
            &payload[..kept]
        } else {
            payload
        };
        Out {
            topic: self.settings.topics.orders_quarantine.clone(),
            partition: None,
            key,
            payload: Some(body.to_vec()),
            headers: hs,
        }
    }

    /// Quarantine `m` for `reason`; returns the outcome label.
    fn quarantined(
        &self,
        m: &BorrowedMessage<'_>,
        tally: &mut Tally,
        reason: &'static str,
        detail: &str,
        outs: &mut Vec<Out>,
    ) -> &'static str {
        outs.push(self.quarantine_copy(m, reason, detail));
        tally.quarantine(reason);
        "quarantined"
    }

    /// Decide one record, appending what it produces. Returns the outcome label.
    fn decide_record(
        &mut self,
        m: &BorrowedMessage<'_>,
        outs: &mut Vec<Out>,
        changelog: &mut Vec<Out>,
        tally: &mut Tally,
    ) -> &'static str {
        let p = m.partition();
        let get = |name: &str| header(m, name);
        let (Some(topic), Some(shop)) = (get(h::SHOPIFY_TOPIC), get(h::SHOPIFY_SHOP_DOMAIN)) else {
            return self.quarantined(
                m,
                tally,
                "missing_header",
                "record lacks x-shopify-topic or x-shopify-shop-domain",
                outs,
            );
        };
        let Ok(topic) = topic.parse::<ShopifyTopic>() else {
            return self.quarantined(
                m,
                tally,
                "unknown_topic",
                &format!("unknown Shopify topic `{topic}`"),
                outs,
            );
        };
        // The topic header is not signed: the body must have that topic's documented shape
        // (checked before a shop/redact fans out) or it is never acted on.
        let event = match interpret(shop, topic, m.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => return self.quarantined(m, tally, e.reason(), &e.to_string(), outs),
        };
        let fans_out = matches!(topic, ShopifyTopic::ShopRedact | ShopifyTopic::OrdersDelete);
        if fans_out && get(h::FANOUT_FROM).is_none() {
            // A shop's customers live in every partition, and a deletion names no customer:
            // hand each partition's owner a copy.
            for target in 0..self.orders_partitions {
                let hs = m.headers().map(BorrowedHeaders::detach).unwrap_or_default();
                outs.push(Out {
                    topic: self.settings.topics.orders.clone(),
                    partition: Some(target),
                    key: key_text(m),
                    payload: Some(m.payload().unwrap_or_default().to_vec()),
                    headers: with_headers(hs, &[(h::FANOUT_FROM, Some(&p.to_string()))]),
                });
            }
            return "fanned_out";
        }
        let event_time = get(h::SHOPIFY_TRIGGERED_AT)
            .map(str::to_owned)
            .or_else(|| {
                m.timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            })
            .unwrap_or_default();
        let received_at_us = get(h::RECEIVED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
            .or_else(|| m.timestamp().to_millis().map(|ms| ms.saturating_mul(1000)));
        let meta = RecordMeta {
            shop,
            topic,
            webhook_id: get(h::SHOPIFY_WEBHOOK_ID),
            event_time: &event_time,
            received_at_us,
        };
        let state = self.state.get_mut(&p).expect("restored above");
        let decision = match decide(&self.rules, &mut state.ledger, &event, &meta) {
            Ok(d) => d,
            Err(e) => return self.quarantined(m, tally, e.reason, &e.detail, outs),
        };
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
        // A reconcile sweep republishes what Shopify has; a version new to the ledger is one
        // whose webhook never came (or has not yet: the sweep's window ends in the past).
        if get(h::ORIGIN) == Some("reconcile")
            && matches!(decision.outcome, "applied" | "unchanged")
        {
            tally.missed_webhooks += 1;
        }
        for u in &decision.updates {
            let labels = (
                match u.kind {
                    UpdateKind::Segment => "segment",
                    UpdateKind::Redact => "redact",
                },
                if u.tier_changed { "true" } else { "false" },
            );
            *tally.updates.entry(labels).or_default() += 1;
            let hs = with_headers(
                with_source(OwnedHeaders::new(), m),
                &[
                    (h::EVENT_ID, Some(u.event_id.as_str())),
                    (h::TRACEPARENT, Some(traceparent.as_str())),
                    (h::TRACESTATE, tracestate.as_deref()),
                ],
            );
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
                ChangelogWrite::OrderDeleted { shop, order_id } => (
                    crate::changelog::deleted_order_key(&shop, order_id),
                    Some(crate::changelog::DELETED_ORDER_VALUE.to_vec()),
                ),
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

/// Header `name` of `m` (see [`service_runtime::kafka::header`]), read in place.
fn header<'m>(m: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    service_runtime::kafka::header(m.headers()?, name)
}

/// `hs` plus where `m` came from (topic, partition, offset).
fn with_source(hs: OwnedHeaders, m: &BorrowedMessage<'_>) -> OwnedHeaders {
    with_headers(
        hs,
        &[
            (h::SOURCE_TOPIC, Some(m.topic())),
            (h::SOURCE_PARTITION, Some(&m.partition().to_string())),
            (h::SOURCE_OFFSET, Some(&m.offset().to_string())),
        ],
    )
}

/// Errors about the record itself, which no retry fixes (as opposed to the broker's state).
fn record_rejected(e: &KafkaError) -> bool {
    service_runtime::kafka::record_too_large(e)
        || matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::InvalidRecord)
        )
}

/// Per-record framing a broker counts beyond key, value and headers (record batch header
/// included), rounded up generously.
const RECORD_OVERHEAD: usize = 512;

fn headers_len(hs: &OwnedHeaders) -> usize {
    hs.iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 10)
        .sum()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn key_text(m: &impl Message) -> String {
    m.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}
