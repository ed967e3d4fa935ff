//! One application: a customer's queued records, parsed, coalesced into the newest update and
//! applied to Okta; a record that cannot be applied is dead-lettered with its context.
//!
//! An application runs as its own task (the consumer loop in [`crate::service`] spawns it and
//! handles how it ends). It is done only when every record is: applied, skipped, superseded by
//! the newest, or dead-lettered with the dead letter acknowledged by the broker.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use schemas::SegmentUpdate;
use tracing::Instrument;

use crate::apply::{Applier, ApplyError, Outcome, Trust};
use crate::dlq::{self, FailureContext};
use crate::failure::DeadLetterReason;
use crate::metrics::Metrics;
use crate::queue::{Job, Rec};

/// How an application of one customer's queued records ended.
#[derive(Debug)]
pub enum JobEnd {
    /// Every record is done (applied, skipped, superseded or dead-lettered).
    Done,
    /// Okta rejects the credentials: records go back to the front of the queue.
    Credentials(String),
    /// Writing the dead letter failed: records go back; the application is retried.
    Retry(String),
}

/// What every application needs, shared by the loop's tasks.
pub struct JobContext {
    pub applier: Arc<Applier>,
    /// Writes dead letters (`acks=all`, idempotent).
    pub producer: FutureProducer,
    pub dlq_topic: String,
    /// `customer.segments`: the dead letter's source topic and the trace span's destination.
    pub source_topic: String,
    /// The consumer group, for the trace span.
    pub group: String,
    pub metrics: Metrics,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("dlq_topic", &self.dlq_topic)
            .field("source_topic", &self.source_topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Apply `job`; hand it back with how it ended.
pub async fn run_job(shared: Arc<JobContext>, job: Job) -> (Job, JobEnd) {
    let end = apply_job(&shared, &job).await;
    (job, end)
}

async fn dead_letter(
    shared: &JobContext,
    rec: &Rec,
    ctx: FailureContext<'_>,
) -> Result<(), JobEnd> {
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

/// The Okta groups the customer may be in according to a run of updates (oldest first) that
/// is coalesced into the last one: every update's previous tier and every tier but the last,
/// once each, in the order they appear. The application leaves these groups (when it trusts
/// what it applied before) besides the one it applies.
fn previous_groups<'a>(updates: impl ExactSizeIterator<Item = &'a SegmentUpdate>) -> Vec<String> {
    let last = updates.len().saturating_sub(1);
    let mut previous: Vec<String> = Vec::new();
    for (i, u) in updates.enumerate() {
        let tiers = [
            u.previous_tier.as_ref(),
            u.tier.as_ref().filter(|_| i < last),
        ];
        for t in tiers.into_iter().flatten() {
            if !previous.contains(&t.okta_group) {
                previous.push(t.okta_group.clone());
            }
        }
    }
    previous
}

async fn apply_job(shared: &JobContext, job: &Job) -> JobEnd {
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
    let previous = previous_groups(valid.iter().map(|(_, u)| u));
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
        .apply(newest, &previous, Trust::Epoch(rec.epoch))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(previous: Option<&str>, tier: &str) -> SegmentUpdate {
        let tier_ref = |g: &str| serde_json::json!({"name": g, "okta_group": format!("G {g}")});
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "event_id": "e", "kind": "segment",
            "shop": "a.myshopify.com", "customer_id": "1", "email": null,
            "total_spent": "1", "orders_count": 1, "currency": "USD",
            "tier": tier_ref(tier), "previous_tier": previous.map(tier_ref),
            "tier_changed": true, "rule_version": "r",
            "cause": {"order_id": "2", "webhook_id": null, "shopify_topic": "orders/create"},
            "decided_at": "2026-11-20T15:15:31Z"
        }))
        .unwrap()
    }

    #[test]
    fn coalesced_updates_name_every_earlier_tier_once() {
        let run = [
            update(None, "New"),
            update(Some("New"), "Active"),
            update(Some("Active"), "VIP"),
            update(Some("VIP"), "Active"),
        ];
        assert_eq!(
            previous_groups(run.iter()),
            ["G New", "G Active", "G VIP"],
            "the last update's own tier is not a group to leave unless an earlier one named it"
        );
        assert_eq!(
            previous_groups([update(None, "New")].iter()),
            Vec::<String>::new()
        );
        assert_eq!(
            previous_groups([update(Some("VIP"), "New")].iter()),
            ["G VIP"]
        );
        assert_eq!(previous_groups(std::iter::empty()), Vec::<String>::new());
    }
}
