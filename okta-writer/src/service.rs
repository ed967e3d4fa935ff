//! The writer's consumer loop over `customer.segments`.
//!
//! - Records are queued per customer (the record key). A customer has at most one application
//!   in flight, so their updates apply in order; different customers run in parallel up to
//!   `max_customers_in_flight`. Queued updates are dispatched `batch_wait` after they arrive,
//!   and everything queued for a customer by then is coalesced: updates carry absolute state,
//!   so only the newest is applied (the older ones' tiers still count as groups to leave).
//! - An offset is stored only once its record is applied, skipped, superseded by a coalesced
//!   newer one, or dead-lettered (its dead letter acknowledged by the broker), and only up to
//!   the first record that is not (librdkafka's `store_offset` stores offset + 1). Auto-commit
//!   sends stored offsets every second; revoke and shutdown commit synchronously.
//! - A revoke aborts the running applications of the partitions it takes away (and waits, up
//!   to 2 s, until they have stopped) before the offsets are committed, so the old owner never
//!   writes after the next owner starts: updates carry absolute state, but two owners
//!   interleaving their calls could still leave an older tier's group memberships behind.
//! - While more than `max_buffered_records` are held, or while Okta rejects the credentials,
//!   the assigned partitions are paused, not left unpolled: `recv()` keeps running, so the
//!   consumer stays in its group and rebalances are served.
//! - Credentials: an application failing with 401 (or 403 on consecutive calls) puts its records
//!   back and pauses consuming for `credentials_pause`, doubling up to `credentials_pause_max`;
//!   after each pause one customer is tried as a probe, and the first success resumes
//!   everything. Nothing is dead-lettered for it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, TopicPartitionList};
use schemas::SegmentUpdate;
use service_runtime::kafka::GroupContext;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::apply::{Applier, ApplyError, Outcome};
use crate::config::Settings;
use crate::dlq::{self, FailureContext};
use crate::failure::DeadLetterReason;
use crate::metrics::Metrics;

/// One received record.
#[derive(Debug)]
struct Rec {
    partition: i32,
    offset: i64,
    epoch: u64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    timestamp_ms: Option<i64>,
}

/// How an application of one customer's queued records ended.
#[derive(Debug)]
enum JobEnd {
    /// Every record is done (applied, skipped, superseded or dead-lettered).
    Done,
    /// Okta rejects the credentials: records go back to the front of the queue.
    Credentials(String),
    /// Writing the dead letter failed: records go back; the application is retried.
    Retry(String),
}

struct Job {
    customer: Vec<u8>,
    recs: Vec<Rec>,
    probe: bool,
}

struct CredentialsPause {
    until: Instant,
    backoff: Duration,
    probe_in_flight: bool,
}

/// Everything a job task needs.
struct Shared {
    applier: Arc<Applier>,
    producer: FutureProducer,
    dlq_topic: String,
    source_topic: String,
    group: String,
    metrics: Metrics,
}

#[derive(Default)]
struct Tracker {
    epoch: u64,
    /// Received offsets → done.
    offsets: BTreeMap<i64, bool>,
}

pub struct Writer {
    consumer: StreamConsumer<GroupContext>,
    shared: Arc<Shared>,
    settings: Settings,
    metrics: Metrics,
    in_flight: InFlight,
}

/// The running applications with their partition, so a revoke can stop those of the
/// partitions it takes away before the next owner starts on them.
type InFlight = Arc<std::sync::Mutex<HashMap<tokio::task::Id, (i32, tokio::task::AbortHandle)>>>;

/// The revoke hook: abort the applications of `partitions` and wait (bounded) until they have
/// stopped. Without it the old owner's application of an older update could still be writing
/// group memberships after the next owner wrote the newer ones (seen on Apache Kafka with two
/// writers: a customer left in the VIP group with an Active total). An HTTP request already
/// on the wire when the abort lands may still be served; nothing after it is sent.
fn stop_revoked(in_flight: &InFlight, partitions: &[i32]) {
    let handles: Vec<tokio::task::AbortHandle> = {
        let mut m = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let revoked: Vec<tokio::task::Id> = m
            .iter()
            .filter(|(_, (p, _))| partitions.contains(p))
            .map(|(id, _)| *id)
            .collect();
        revoked
            .iter()
            .filter_map(|id| m.remove(id).map(|(_, h)| h))
            .collect()
    };
    if handles.is_empty() {
        return;
    }
    for h in &handles {
        h.abort();
    }
    // This runs inside `recv()` on a runtime thread: the aborted tasks are dropped by the
    // runtime's other threads. A current-thread runtime (tests) cannot, so it does not wait.
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while handles.iter().any(|h| !h.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    tracing::info!(
        aborted = handles.len(),
        "in-flight Okta applications of revoked partitions stopped; their next owner redoes them"
    );
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("group", &self.settings.okta_writer.group_id)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Writer {
    pub fn new(
        settings: &Settings,
        bootstrap: &str,
        applier: Arc<Applier>,
        metrics: Metrics,
    ) -> anyhow::Result<Writer> {
        let cfg = &settings.okta_writer;
        let consumer: StreamConsumer<GroupContext> =
            service_runtime::kafka::store_after_ack_consumer_config(
                &settings.kafka,
                bootstrap,
                &cfg.group_id,
                &[("client.id", "tierflow-okta-writer")],
            )?
            .create_with_context(GroupContext::new(&cfg.group_id))
            .context("creating the Kafka consumer")?;
        let producer: FutureProducer = service_runtime::kafka::acked_producer_config(
            &settings.kafka,
            bootstrap,
            &[
                ("client.id", "tierflow-okta-writer"),
                ("message.timeout.ms", "30000"),
            ],
        )?
        .create()
        .context("creating the Kafka producer")?;
        service_runtime::kafka::partition_count(&consumer, &settings.topics.segments)?;
        service_runtime::kafka::partition_count(&consumer, &settings.topics.okta_dlq)?;
        let in_flight: InFlight = Arc::default();
        let hook_in_flight = in_flight.clone();
        consumer.context().on_revoke(Box::new(move |partitions| {
            stop_revoked(&hook_in_flight, partitions)
        }));
        consumer
            .subscribe(&[settings.topics.segments.as_str()])
            .context("subscribing to the segments topic")?;
        Ok(Writer {
            consumer,
            shared: Arc::new(Shared {
                applier,
                producer,
                dlq_topic: settings.topics.okta_dlq.clone(),
                source_topic: settings.topics.segments.clone(),
                group: cfg.group_id.clone(),
                metrics: metrics.clone(),
            }),
            settings: settings.clone(),
            metrics,
            in_flight,
        })
    }

    /// Run until `shutdown`; then finish (or abandon, after `shutdown_timeout`) what is in
    /// flight, store what is done and commit.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let cfg = self.settings.okta_writer.clone();
        let okta = self.settings.okta.clone();
        let topic = self.settings.topics.segments.clone();
        let mut trackers: HashMap<i32, Tracker> = HashMap::new();
        let mut queued: HashMap<Vec<u8>, Vec<Rec>> = HashMap::new();
        let mut ready: VecDeque<Vec<u8>> = VecDeque::new();
        let mut busy: HashSet<Vec<u8>> = HashSet::new();
        let mut tasks: JoinSet<(Job, JobEnd)> = JoinSet::new();
        // What each running task holds, for when a revoke aborts it (no Job comes back then).
        let mut running: HashMap<tokio::task::Id, (Vec<u8>, usize, bool)> = HashMap::new();
        let spawn = |tasks: &mut JoinSet<(Job, JobEnd)>,
                     running: &mut HashMap<tokio::task::Id, (Vec<u8>, usize, bool)>,
                     job: Job| {
            let partition = job.recs.first().map_or(-1, |r| r.partition);
            let held = (job.customer.clone(), job.recs.len(), job.probe);
            let h = tasks.spawn(run_job(self.shared.clone(), job));
            running.insert(h.id(), held);
            self.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h.id(), (partition, h));
        };
        let mut buffered = 0usize;
        let mut dispatch_at: Option<Instant> = None;
        let mut credentials: Option<CredentialsPause> = None;
        let mut paused = false;
        let mut buffered_dropped = 0usize;
        tokio::pin!(shutdown);

        loop {
            // Pause while full or while the credentials are rejected; resume below half full.
            let want_pause = credentials.is_some() || buffered >= cfg.max_buffered_records;
            let want_resume = credentials.is_none() && buffered <= cfg.max_buffered_records / 2;
            if want_pause && !paused {
                self.set_paused(true);
                paused = true;
            } else if paused && want_resume {
                self.set_paused(false);
                paused = false;
            }
            let resume_at = credentials
                .as_ref()
                .filter(|c| !c.probe_in_flight)
                .map(|c| c.until);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, (job, end)) = match joined {
                        Ok(done) => done,
                        Err(e) if e.is_cancelled() => {
                            // Aborted by a revoke: its records belong to the next owner.
                            if let Some((customer, records, probe)) = running.remove(&e.id()) {
                                busy.remove(&customer);
                                buffered -= records;
                                if probe {
                                    if let Some(c) = credentials.as_mut() {
                                        c.probe_in_flight = false;
                                    }
                                }
                            }
                            self.metrics.customers_in_flight.set(tasks.len() as i64);
                            continue;
                        }
                        Err(e) => return Err(anyhow::Error::new(e).context("an Okta writer task panicked")),
                    };
                    running.remove(&id);
                    self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    busy.remove(&job.customer);
                    self.metrics.customers_in_flight.set(tasks.len() as i64);
                    match end {
                        JobEnd::Done => {
                            if credentials.take().is_some() {
                                tracing::info!("Okta accepts the credentials again; resuming");
                                self.metrics.credentials_paused.set(0);
                            }
                            buffered -= job.recs.len();
                            self.mark_done(&topic, &mut trackers, &job.recs);
                        }
                        JobEnd::Credentials(message) => {
                            let backoff = match &credentials {
                                Some(c) if job.probe => (c.backoff * 2).min(okta.credentials_pause_max),
                                Some(c) => c.backoff,
                                None => okta.credentials_pause,
                            };
                            if credentials.is_none() || job.probe {
                                tracing::error!(error = %message, pause = ?backoff, "Okta rejects the writer's credentials; consuming paused, nothing dead-lettered");
                                credentials = Some(CredentialsPause { until: Instant::now() + backoff, backoff, probe_in_flight: false });
                            }
                            self.metrics.credentials_paused.set(1);
                            requeue(&mut queued, &mut ready, job);
                        }
                        JobEnd::Retry(message) => {
                            tracing::warn!(error = %message, "writing a dead letter failed; will retry the customer");
                            requeue(&mut queued, &mut ready, job);
                            dispatch_at.get_or_insert(Instant::now() + Duration::from_secs(1));
                        }
                    }
                    if !ready.is_empty() {
                        dispatch_at.get_or_insert(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(resume_at.unwrap_or_else(Instant::now)), if resume_at.is_some() => {
                    // One customer tries the credentials.
                    if let Some(c) = credentials.as_mut() {
                        if let Some(job) = next_job(&mut queued, &mut ready, &busy, &self.consumer, true, &mut buffered_dropped) {
                            c.probe_in_flight = true;
                            busy.insert(job.customer.clone());
                            spawn(&mut tasks, &mut running, job);
                        } else {
                            c.until = Instant::now() + c.backoff;
                        }
                    }
                }
                _ = tokio::time::sleep_until(dispatch_at.unwrap_or_else(Instant::now)), if dispatch_at.is_some() => {
                    dispatch_at = None;
                    if credentials.is_none() {
                        while tasks.len() < cfg.max_customers_in_flight {
                            let Some(job) = next_job(&mut queued, &mut ready, &busy, &self.consumer, false, &mut buffered_dropped) else { break };
                            busy.insert(job.customer.clone());
                            spawn(&mut tasks, &mut running, job);
                        }
                        self.metrics.customers_in_flight.set(tasks.len() as i64);
                    }
                }
                received = self.consumer.recv() => {
                    let m = match received {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "Kafka consumer error");
                            continue;
                        }
                    };
                    let Some(epoch) = self.consumer.context().epoch(m.partition()) else { continue };
                    let tracker = trackers.entry(m.partition()).or_default();
                    if tracker.epoch != epoch {
                        *tracker = Tracker { epoch, offsets: BTreeMap::new() };
                    }
                    tracker.offsets.insert(m.offset(), false);
                    let rec = Rec {
                        partition: m.partition(),
                        offset: m.offset(),
                        epoch,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m.headers().map(|h| h.detach()),
                        timestamp_ms: m.timestamp().to_millis(),
                    };
                    // Records without a key cannot be ordered per customer; they stand alone.
                    let customer = rec.key.clone().unwrap_or_else(|| format!("\0{}/{}", rec.partition, rec.offset).into_bytes());
                    let q = queued.entry(customer.clone()).or_default();
                    if q.is_empty() {
                        ready.push_back(customer);
                    }
                    q.push(rec);
                    buffered += 1;
                    dispatch_at.get_or_insert(Instant::now() + cfg.batch_wait);
                }
            }
            buffered -= std::mem::take(&mut buffered_dropped);
            self.metrics.buffered.set(buffered as i64);
        }

        // Shutdown: no new work; let in-flight applications finish for a while.
        tracing::info!(in_flight = tasks.len(), "okta-writer stopping");
        let deadline = Instant::now() + cfg.shutdown_timeout;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(Ok((job, JobEnd::Done)))) => {
                    self.mark_done(&topic, &mut trackers, &job.recs)
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(abandoned = tasks.len(), "shutdown timeout: abandoning in-flight applications; they are redelivered on restart");
                    tasks.abort_all();
                    break;
                }
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; uncommitted updates are re-applied on restart (harmless)")
            }
        }
        Ok(())
    }

    fn set_paused(&self, pause: bool) {
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading the assignment to pause/resume");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            tpl.add_partition(e.topic(), e.partition());
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) => tracing::info!(
                partitions = tpl.count(),
                "{}",
                if pause {
                    "paused consuming"
                } else {
                    "resumed consuming"
                }
            ),
            Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
        }
    }

    /// Mark `recs` done and store each partition's offset up to the first record not done.
    fn mark_done(&self, topic: &str, trackers: &mut HashMap<i32, Tracker>, recs: &[Rec]) {
        let mut touched = HashSet::new();
        for r in recs {
            if let Some(t) = trackers
                .get_mut(&r.partition)
                .filter(|t| t.epoch == r.epoch)
            {
                if let Some(done) = t.offsets.get_mut(&r.offset) {
                    *done = true;
                    touched.insert(r.partition);
                }
            }
        }
        for p in touched {
            let t = trackers
                .get_mut(&p)
                .expect("touched partitions are tracked");
            let mut last = None;
            while let Some(entry) = t.offsets.first_entry() {
                if !*entry.get() {
                    break;
                }
                last = Some(*entry.key());
                entry.remove();
            }
            if let Some(offset) = last {
                // Fails only if the partition was revoked meanwhile; its next owner redoes it.
                if let Err(e) = self.consumer.store_offset(topic, p, offset) {
                    tracing::debug!(partition = p, error = %e, "storing an offset failed");
                }
            }
        }
    }
}

fn requeue(queued: &mut HashMap<Vec<u8>, Vec<Rec>>, ready: &mut VecDeque<Vec<u8>>, job: Job) {
    let q = queued.entry(job.customer.clone()).or_default();
    let was_empty = q.is_empty();
    let mut recs = job.recs;
    recs.append(q);
    *q = recs;
    if was_empty {
        ready.push_front(job.customer);
    }
}

/// The next customer to apply: all of their queued records (from a current assignment).
fn next_job(
    queued: &mut HashMap<Vec<u8>, Vec<Rec>>,
    ready: &mut VecDeque<Vec<u8>>,
    busy: &HashSet<Vec<u8>>,
    consumer: &StreamConsumer<GroupContext>,
    probe: bool,
    dropped: &mut usize,
) -> Option<Job> {
    let n = ready.len();
    for _ in 0..n {
        let customer = ready.pop_front()?;
        if busy.contains(&customer) {
            // Dispatched again when the in-flight application ends.
            ready.push_back(customer);
            continue;
        }
        let all = queued.remove(&customer).unwrap_or_default();
        let before = all.len();
        // Records of a partition this instance no longer owns belong to its new owner.
        let recs: Vec<Rec> = all
            .into_iter()
            .filter(|r| consumer.context().epoch(r.partition) == Some(r.epoch))
            .collect();
        *dropped += before - recs.len();
        if recs.is_empty() {
            continue;
        }
        return Some(Job {
            customer,
            recs,
            probe,
        });
    }
    None
}

async fn run_job(shared: Arc<Shared>, job: Job) -> (Job, JobEnd) {
    let end = apply_job(&shared, &job).await;
    (job, end)
}

async fn dead_letter(shared: &Shared, rec: &Rec, ctx: FailureContext<'_>) -> Result<(), JobEnd> {
    let headers = dlq::headers(
        rec.headers.as_ref(),
        (&shared.source_topic, rec.partition, rec.offset),
        &ctx,
    );
    dlq::produce(
        &shared.producer,
        &shared.dlq_topic,
        rec.key.as_deref(),
        rec.payload.as_deref(),
        headers,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| JobEnd::Retry(e.to_string()))?;
    tracing::warn!(reason = ctx.reason.label(), partition = rec.partition, offset = rec.offset, error = %ctx.message, "segment update dead-lettered");
    shared
        .metrics
        .dead_letters
        .with_label_values(&[ctx.reason.label()])
        .inc();
    shared
        .metrics
        .updates
        .with_label_values(&["dead_lettered"])
        .inc();
    Ok(())
}

async fn apply_job(shared: &Shared, job: &Job) -> JobEnd {
    let mut valid: Vec<(&Rec, SegmentUpdate)> = Vec::new();
    for rec in &job.recs {
        let parsed = rec
            .payload
            .as_deref()
            .ok_or_else(|| "the record has no value".to_owned())
            .and_then(|p| {
                serde_json::from_slice::<SegmentUpdate>(p)
                    .map_err(|e| format!("not a segment update: {e}"))
            });
        match parsed {
            Ok(u) => valid.push((rec, u)),
            Err(message) => {
                let ctx = FailureContext {
                    reason: DeadLetterReason::InvalidRecord,
                    message,
                    failure: None,
                    coalesced: 0,
                };
                if let Err(end) = dead_letter(shared, rec, ctx).await {
                    return end;
                }
            }
        }
    }
    let Some((rec, newest)) = valid.last() else {
        return JobEnd::Done;
    };
    // Groups the customer may be in from the coalesced history (all but the newest tier).
    let mut previous: Vec<String> = Vec::new();
    for (i, (_, u)) in valid.iter().enumerate() {
        let mut add = |g: &String| {
            if !previous.contains(g) {
                previous.push(g.clone());
            }
        };
        if let Some(t) = &u.previous_tier {
            add(&t.okta_group);
        }
        if i + 1 < valid.len() {
            if let Some(t) = &u.tier {
                add(&t.okta_group);
            }
        }
    }
    let coalesced = valid.len() - 1;
    shared
        .metrics
        .updates
        .with_label_values(&["coalesced"])
        .inc_by(coalesced as u64);
    // The application continues the trace of the newest update (ingest → segmenter → here);
    // its Okta calls are child spans (client.rs).
    let span = tracing::info_span!(
        "apply",
        otel.name = %format_args!("process {}", shared.source_topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %shared.source_topic,
        messaging.consumer.group.name = %shared.group,
        messaging.destination.partition.id = rec.partition,
        messaging.kafka.offset = rec.offset,
        messaging.batch.message_count = valid.len(),
    );
    let header = |name: &str| {
        rec.headers
            .as_ref()
            .and_then(|hs| service_runtime::kafka::header(hs, name))
    };
    service_runtime::telemetry::set_remote_parent(
        &span,
        header(schemas::headers::TRACEPARENT),
        header(schemas::headers::TRACESTATE),
    );
    match shared
        .applier
        .apply(newest, &previous, true)
        .instrument(span)
        .await
    {
        Ok(Outcome::Applied) => {
            shared.metrics.updates.with_label_values(&["applied"]).inc();
            if let Some(ts) = rec.timestamp_ms {
                shared
                    .metrics
                    .apply_latency
                    .observe((now_ms() - ts).max(0) as f64 / 1000.0);
            }
            JobEnd::Done
        }
        Ok(Outcome::Skipped(reason)) => {
            shared.metrics.updates.with_label_values(&["skipped"]).inc();
            shared.metrics.skipped.with_label_values(&[reason]).inc();
            JobEnd::Done
        }
        Err(ApplyError::Credentials(f)) => JobEnd::Credentials(f.to_string()),
        Err(e @ ApplyError::Permanent { reason, .. }) => {
            let ctx = FailureContext {
                reason,
                message: e.to_string(),
                failure: e.failure(),
                coalesced,
            };
            match dead_letter(shared, rec, ctx).await {
                Ok(()) => JobEnd::Done,
                Err(end) => end,
            }
        }
    }
}
