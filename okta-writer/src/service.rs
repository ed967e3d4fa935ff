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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, TopicPartitionList};
use service_runtime::kafka::GroupContext;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::apply::Applier;
use crate::config::{GroupAssignment, Settings, WriterConfig};
use crate::credentials::CredentialsGate;
use crate::job::{run_job, JobContext, JobEnd};
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::queue::{is_urgent, CustomerQueue, Job, Lane, Ordering, Rec};

/// The consumer and what the loop's applications share; [`Writer::run`] is the loop.
pub struct Writer {
    consumer: StreamConsumer<GroupContext>,
    jobs: Arc<JobContext>,
    cfg: WriterConfig,
    /// `[okta] credentials_pause` and `credentials_pause_max`.
    credentials_pause: (Duration, Duration),
    topic: String,
    metrics: Metrics,
    /// The running applications by partition, shared with the revoke hook.
    in_flight: InFlight,
}

/// The running applications with their partition, so a revoke can stop those of the
/// partitions it takes away before the next owner starts on them.
type InFlight = Arc<std::sync::Mutex<HashMap<tokio::task::Id, (i32, tokio::task::AbortHandle)>>>;

/// The Okta calls the waiting customers need, per rate-limit bucket: every application writes
/// the profile (`users_update`; a cached user, the common case under a backlog); an urgent one
/// (a tier change) also adds and removes a membership (`groups`) unless group rules do that.
/// Running applications count as urgent (an upper bound). First contacts' lookups are left out.
pub fn pending_calls(
    urgent: usize,
    spend_only: usize,
    assignment: GroupAssignment,
) -> [(&'static str, f64); 2] {
    let group_calls = match assignment {
        GroupAssignment::Calls => 2.0 * urgent as f64,
        GroupAssignment::Rules => 0.0,
    };
    [
        ("users_update", (urgent + spend_only) as f64),
        ("groups", group_calls),
    ]
}

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
            .field("group", &self.jobs.group)
            .finish_non_exhaustive()
    }
}

/// The loop's state between two events.
struct LoopState {
    /// Records received and not yet done, per customer.
    queue: CustomerQueue,
    /// Which offsets may be stored.
    offsets: OffsetTracker,
    credentials: CredentialsGate,
    /// The running applications.
    tasks: JoinSet<(Job, JobEnd)>,
    /// What each running application holds (customer, records, probe), for when a revoke
    /// aborts it: no [`Job`] comes back then.
    running: HashMap<tokio::task::Id, (Vec<u8>, usize, bool)>,
    /// When waiting customers are next dispatched: `batch_wait` after a record arrives (so a
    /// burst for one customer coalesces), at once when an application ends.
    dispatch_at: Option<Instant>,
    /// Whether the assigned partitions are paused (full, or credentials rejected).
    paused: bool,
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
            jobs: Arc::new(JobContext {
                applier,
                producer,
                dlq_topic: settings.topics.okta_dlq.clone(),
                source_topic: settings.topics.segments.clone(),
                group: cfg.group_id.clone(),
                metrics: metrics.clone(),
            }),
            cfg: cfg.clone(),
            credentials_pause: (
                settings.okta.credentials_pause,
                settings.okta.credentials_pause_max,
            ),
            topic: settings.topics.segments.clone(),
            metrics,
            in_flight,
        })
    }

    /// Run until `shutdown`; then finish (or abandon, after `shutdown_timeout`) what is in
    /// flight, store what is done and commit.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut s = LoopState {
            queue: CustomerQueue::new(Ordering {
                tier_changes_first: self.cfg.tier_changes_first,
                spend_only_max_wait: self.cfg.spend_only_max_wait,
            }),
            offsets: OffsetTracker::default(),
            credentials: CredentialsGate::new(self.credentials_pause.0, self.credentials_pause.1),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            dispatch_at: None,
            paused: false,
        };
        tokio::pin!(shutdown);
        loop {
            self.pause_or_resume(&mut s);
            let probe_due = s.credentials.probe_due();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(joined) = s.tasks.join_next_with_id(), if !s.tasks.is_empty() => {
                    self.on_application_end(&mut s, joined)?;
                }
                _ = tokio::time::sleep_until(probe_due.unwrap_or_else(Instant::now)), if probe_due.is_some() => {
                    self.on_probe_due(&mut s);
                }
                _ = tokio::time::sleep_until(s.dispatch_at.unwrap_or_else(Instant::now)), if s.dispatch_at.is_some() => {
                    self.on_dispatch_due(&mut s);
                }
                received = self.consumer.recv() => match received {
                    Ok(m) => {
                        if let Some(rec) = self.received(&mut s, &m) {
                            s.queue.push(rec, Instant::now());
                            s.dispatch_at.get_or_insert(Instant::now() + self.cfg.batch_wait);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                },
            }
            self.metrics.buffered.set(s.queue.held() as i64);
            for lane in [Lane::Urgent, Lane::SpendOnly] {
                self.metrics
                    .waiting_customers
                    .with_label_values(&[lane.label()])
                    .set(s.queue.waiting_in(lane) as i64);
            }
            let applier = &self.jobs.applier;
            for (bucket, calls) in pending_calls(
                s.queue.waiting_in(Lane::Urgent) + s.running.len(),
                s.queue.waiting_in(Lane::SpendOnly),
                applier.assignment,
            ) {
                if let Some(rate) = applier.client.limiter.granted_per_second(bucket) {
                    self.metrics
                        .drain_forecast
                        .with_label_values(&[bucket])
                        .set(calls / rate);
                }
            }
        }
        self.stop(s).await;
        service_runtime::kafka::close_within(self.consumer, service_runtime::kafka::CLOSE_TIMEOUT)
            .await;
        Ok(())
    }

    /// Pause while full or while the credentials are rejected; resume below half full.
    fn pause_or_resume(&self, s: &mut LoopState) {
        let held = s.queue.held();
        let want_pause = s.credentials.is_paused() || held >= self.cfg.max_buffered_records;
        let want_resume = !s.credentials.is_paused() && held <= self.cfg.max_buffered_records / 2;
        if want_pause && !s.paused {
            self.set_paused(true);
            s.paused = true;
        } else if s.paused && want_resume {
            self.set_paused(false);
            s.paused = false;
        }
    }

    /// A received record, tracked; `None` if its partition is no longer assigned.
    fn received(&self, s: &mut LoopState, m: &BorrowedMessage<'_>) -> Option<Rec> {
        let epoch = self.consumer.context().epoch(m.partition())?;
        s.offsets.received(m.partition(), epoch, m.offset());
        Some(Rec {
            partition: m.partition(),
            offset: m.offset(),
            epoch,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m.headers().map(|h| h.detach()),
            timestamp_ms: m.timestamp().to_millis(),
            urgent: is_urgent(m.payload()),
        })
    }

    /// Whether `rec` was received in its partition's current assignment.
    fn is_current(&self, rec: &Rec) -> bool {
        self.consumer.context().epoch(rec.partition) == Some(rec.epoch)
    }

    fn spawn(&self, s: &mut LoopState, job: Job) {
        let partition = job.recs.first().map_or(-1, |r| r.partition);
        let held = (job.customer.clone(), job.recs.len(), job.probe);
        let h = s.tasks.spawn(run_job(self.jobs.clone(), job));
        s.running.insert(h.id(), held);
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h.id(), (partition, h));
        self.metrics.customers_in_flight.set(s.tasks.len() as i64);
    }

    /// `batch_wait` is over (or an application ended): start applications for waiting
    /// customers up to `max_customers_in_flight`, unless the credentials are rejected.
    fn on_dispatch_due(&self, s: &mut LoopState) {
        s.dispatch_at = None;
        if s.credentials.is_paused() {
            return;
        }
        let cap = self.in_flight_cap();
        while s.tasks.len() < cap {
            let Some(job) = s
                .queue
                .next_job(false, Instant::now(), |r| self.is_current(r))
            else {
                break;
            };
            self.spawn(s, job);
        }
    }

    /// How many customers may be applied at once: `max_customers_in_flight`, or, once Okta's
    /// budget for profile updates is known, what that budget serves while one application runs
    /// (three calls at the mean `updateUser` latency) plus a quarter second, at least 2.
    /// Applications beyond it would only wait inside the limiter, in no order; waiting in the
    /// queue instead, the next one out is the most urgent: a tier change arriving mid-window does
    /// not queue behind dozens of spend-only applications already holding a slot (measured:
    /// tier-change p50 5.8 s → 0.98 s, docs/BENCHMARKS.md "Pacing").
    fn in_flight_cap(&self) -> usize {
        let max = self.cfg.max_customers_in_flight;
        let op = crate::client::api::Operation::UpdateUser;
        let Some(rate) = self
            .jobs
            .applier
            .client
            .limiter
            .granted_per_second(op.bucket())
        else {
            return max;
        };
        let calls = self.metrics.request_seconds.with_label_values(&[op.name()]);
        let mean_call = match calls.get_sample_count() {
            0 => 0.1,
            n => calls.get_sample_sum() / n as f64,
        };
        ((rate * (3.0 * mean_call + 0.25)).ceil() as usize).clamp(2.min(max), max)
    }

    /// The credentials pause is over: one customer tries them.
    fn on_probe_due(&self, s: &mut LoopState) {
        match s
            .queue
            .next_job(true, Instant::now(), |r| self.is_current(r))
        {
            Some(job) => {
                s.credentials.probe_started();
                self.spawn(s, job);
            }
            None => s.credentials.nothing_to_probe(Instant::now()),
        }
    }

    /// An application ended: store what is done, or put its records back.
    fn on_application_end(
        &self,
        s: &mut LoopState,
        joined: Result<(tokio::task::Id, (Job, JobEnd)), JoinError>,
    ) -> anyhow::Result<()> {
        let (id, (job, end)) = match joined {
            Ok(done) => done,
            Err(e) if e.is_cancelled() => {
                // Aborted by a revoke: its records belong to the next owner.
                if let Some((customer, records, probe)) = s.running.remove(&e.id()) {
                    s.queue.aborted(&customer, records);
                    if probe {
                        s.credentials.probe_lost();
                    }
                }
                self.metrics.customers_in_flight.set(s.tasks.len() as i64);
                // The customer may have records waiting that were passed over while it was
                // busy: when the partition comes back to this instance, they are received
                // again and queued behind the aborted application, and a dispatch that ran
                // meanwhile skipped them. Without this they waited for the next record to
                // arrive, which after a burst never comes (found by the kill and three-node
                // tests on Apache Kafka: customers left at an older state).
                if s.queue.has_waiting() {
                    s.dispatch_at.get_or_insert(Instant::now());
                }
                return Ok(());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("an Okta writer task panicked")),
        };
        s.running.remove(&id);
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.metrics.customers_in_flight.set(s.tasks.len() as i64);
        match end {
            JobEnd::Done => {
                if s.credentials.accepted() {
                    tracing::info!("Okta accepts the credentials again; resuming");
                    self.metrics.credentials_paused.set(0);
                }
                s.queue.finished(&job);
                self.store_done(s, &job.recs);
            }
            JobEnd::Credentials(message) => {
                if let Some(pause) = s.credentials.rejected(job.probe, Instant::now()) {
                    tracing::error!(error = %message, ?pause, "Okta rejects the writer's credentials; consuming paused, nothing dead-lettered");
                }
                self.metrics.credentials_paused.set(1);
                s.queue.requeue(job, Instant::now());
            }
            JobEnd::Retry(message) => {
                tracing::warn!(error = %message, "writing a dead letter failed; will retry the customer");
                s.queue.requeue(job, Instant::now());
                s.dispatch_at
                    .get_or_insert(Instant::now() + Duration::from_secs(1));
            }
        }
        if s.queue.has_waiting() {
            s.dispatch_at.get_or_insert(Instant::now());
        }
        Ok(())
    }

    /// Shutdown: no new work; let in-flight applications finish for up to `shutdown_timeout`,
    /// store what they finished and commit.
    async fn stop(&self, mut s: LoopState) {
        tracing::info!(in_flight = s.tasks.len(), "okta-writer stopping");
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        while !s.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, s.tasks.join_next()).await {
                Ok(Some(Ok((job, JobEnd::Done)))) => self.store_done(&mut s, &job.recs),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(abandoned = s.tasks.len(), "shutdown timeout: abandoning in-flight applications; they are redelivered on restart");
                    s.tasks.abort_all();
                    break;
                }
            }
        }
        service_runtime::kafka::commit_stored(&self.consumer, "at shutdown");
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
    fn store_done(&self, s: &mut LoopState, recs: &[Rec]) {
        let done = recs.iter().map(|r| (r.partition, r.epoch, r.offset));
        for (partition, offset) in s.offsets.done(done) {
            // Fails only if the partition was revoked meanwhile; its next owner redoes it.
            if let Err(e) = self.consumer.store_offset(&self.topic, partition, offset) {
                tracing::debug!(partition, error = %e, "storing an offset failed");
            }
        }
    }
}
