//! The ingest's Prometheus metrics. Labels are bounded: Shopify topics outside the known list
//! are `unknown`, shops without their own secret set are `other` (the shop header is not signed,
//! so an attacker could otherwise mint label values), and no customer data is ever a label.

use prometheus::{
    exponential_buckets, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// `tierflow_ingest_requests_total{outcome, shopify_topic}`
    pub requests: IntCounterVec,
    /// `tierflow_ingest_request_duration_seconds{outcome}`: from headers read to response.
    pub request_seconds: HistogramVec,
    /// `tierflow_ingest_produce_duration_seconds{destination}`: send to broker ack.
    pub produce_seconds: HistogramVec,
    /// `tierflow_ingest_produce_failures_total{reason}`
    pub produce_failures: IntCounterVec,
    /// `tierflow_ingest_in_flight_records`: webhooks between accept and answer.
    pub in_flight: IntGauge,
    /// `tierflow_ingest_quarantined_records_total{reason}`
    pub quarantined: IntCounterVec,
    /// `tierflow_ingest_signature_failures_total{shop, reason}`
    pub signature_failures: IntCounterVec,
    /// `tierflow_ingest_broker_metadata_age_seconds`: since the last successful metadata fetch.
    pub metadata_age: Gauge,
    /// `tierflow_ingest_open_connections`: connections on the public listener.
    pub open_connections: IntGauge,
    /// `tierflow_ingest_connections_total{outcome}`: how public connections ended (closed,
    /// header_timeout, header_too_large, malformed, client_gone, io_error, accept_error,
    /// dropped_at_shutdown).
    pub connections: IntCounterVec,
    /// `tierflow_ingest_buffered_body_bytes`: request body bytes held in memory.
    pub buffered_body_bytes: IntGauge,
    /// `tierflow_ingest_deletion_checks_total{result}`: `orders/delete` checked with the
    /// Admin API (confirmed, refused, unchecked, failed, busy).
    pub deletion_checks: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        // 0.5 ms .. ~8 s: covers a fast ack and Shopify's 5 s deadline.
        let latency = exponential_buckets(0.0005, 2.0, 15)?;
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_requests_total",
                    "Webhook requests by outcome and Shopify topic.",
                ),
                &["outcome", "shopify_topic"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tierflow_ingest_request_duration_seconds",
                    "Webhook handling time, from headers received to response.",
                )
                .buckets(latency.clone()),
                &["outcome"],
            )?,
            produce_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tierflow_ingest_produce_duration_seconds",
                    "Time from handing a record to the producer to the broker's acknowledgement.",
                )
                .buckets(latency),
                &["destination"],
            )?,
            produce_failures: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_produce_failures_total",
                    "Records not acknowledged in time, by reason (answered 503).",
                ),
                &["reason"],
            )?,
            in_flight: IntGauge::new(
                "tierflow_ingest_in_flight_records",
                "Webhooks being read, verified or awaiting the broker's acknowledgement.",
            )?,
            quarantined: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_quarantined_records_total",
                    "Signed webhooks published to the quarantine topic, by reason.",
                ),
                &["reason"],
            )?,
            signature_failures: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_signature_failures_total",
                    "Requests refused with 401, by shop (configured shops only, else `other`) and reason.",
                ),
                &["shop", "reason"],
            )?,
            metadata_age: Gauge::new(
                "tierflow_ingest_broker_metadata_age_seconds",
                "Seconds since broker metadata was last fetched successfully.",
            )?,
            open_connections: IntGauge::new(
                "tierflow_ingest_open_connections",
                "Open connections on the public listener.",
            )?,
            connections: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_connections_total",
                    "Public connections by how they ended.",
                ),
                &["outcome"],
            )?,
            buffered_body_bytes: IntGauge::new(
                "tierflow_ingest_buffered_body_bytes",
                "Request body bytes held in memory (bounded by ingest.max_buffered_body_bytes).",
            )?,
            deletion_checks: IntCounterVec::new(
                Opts::new(
                    "tierflow_ingest_deletion_checks_total",
                    "orders/delete webhooks checked with the Admin API, by result (confirmed and unchecked/failed are published; refused gets 422, busy 503).",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.deletion_checks.clone()))?;
        registry.register(Box::new(m.open_connections.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.buffered_body_bytes.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.produce_seconds.clone()))?;
        registry.register(Box::new(m.produce_failures.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.quarantined.clone()))?;
        registry.register(Box::new(m.signature_failures.clone()))?;
        registry.register(Box::new(m.metadata_age.clone()))?;
        Ok(m)
    }
}
