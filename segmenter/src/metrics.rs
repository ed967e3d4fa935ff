//! The segmenter's Prometheus metrics. Labels are bounded (outcomes, reasons, partitions);
//! no customer id or email is a label.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// `tierflow_segmenter_records_total{outcome}`
    pub records: IntCounterVec,
    /// `tierflow_segmenter_updates_total{kind, tier_changed}`
    pub updates: IntCounterVec,
    /// `tierflow_segmenter_quarantined_records_total{reason}`
    pub quarantined: IntCounterVec,
    /// `tierflow_segmenter_customers` / `_orders`: state size over owned partitions.
    pub customers: IntGauge,
    pub orders: IntGauge,
    /// `tierflow_segmenter_restore_duration_seconds`
    pub restore_seconds: Histogram,
    /// `tierflow_segmenter_restored_records_total`
    pub restored_records: IntCounter,
    /// `tierflow_segmenter_batch_duration_seconds{stage}`: decide, produce, total.
    pub batch_seconds: HistogramVec,
    /// `tierflow_segmenter_batch_failures_total`: batches retried from their offsets.
    pub batch_failures: IntCounter,
    /// `tierflow_segmenter_missed_webhooks_total`
    pub missed_webhooks: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            records: IntCounterVec::new(
                Opts::new(
                    "tierflow_segmenter_records_total",
                    "Input records by outcome.",
                ),
                &["outcome"],
            )?,
            updates: IntCounterVec::new(
                Opts::new(
                    "tierflow_segmenter_updates_total",
                    "Segment updates emitted.",
                ),
                &["kind", "tier_changed"],
            )?,
            quarantined: IntCounterVec::new(
                Opts::new(
                    "tierflow_segmenter_quarantined_records_total",
                    "Records sent to the quarantine topic, by reason.",
                ),
                &["reason"],
            )?,
            customers: IntGauge::new("tierflow_segmenter_customers", "Customers held in state.")?,
            orders: IntGauge::new("tierflow_segmenter_orders", "Order versions held in state.")?,
            restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tierflow_segmenter_restore_duration_seconds",
                    "Time to restore one partition's state from the changelog.",
                )
                .buckets(exponential_buckets(0.001, 4.0, 10)?),
            )?,
            restored_records: IntCounter::new(
                "tierflow_segmenter_restored_records_total",
                "Changelog records read while restoring state.",
            )?,
            batch_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tierflow_segmenter_batch_duration_seconds",
                    "Batch time by stage: wait (for the first record), collect (from the first record until the batch is full or batch_wait passed), decide (including handing chunks to the sender), produce (from the last decision until every ack is in), total (decide to stored offsets).",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["stage"],
            )?,
            batch_failures: IntCounter::new(
                "tierflow_segmenter_batch_failures_total",
                "Batches whose produces failed and were retried from their offsets.",
            )?,
            missed_webhooks: IntCounter::new(
                "tierflow_segmenter_missed_webhooks_total",
                "Order versions that only a reconcile sweep (`ingest reconcile`) brought: new to the ledger, so their webhook never arrived (or had not yet).",
            )?,
        };
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.updates.clone()))?;
        registry.register(Box::new(m.quarantined.clone()))?;
        registry.register(Box::new(m.customers.clone()))?;
        registry.register(Box::new(m.orders.clone()))?;
        registry.register(Box::new(m.restore_seconds.clone()))?;
        registry.register(Box::new(m.restored_records.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.batch_failures.clone()))?;
        registry.register(Box::new(m.missed_webhooks.clone()))?;
        Ok(m)
    }
}
