//! The Okta writer's Prometheus metrics. Labels are bounded (operations, status classes,
//! buckets, reasons); no customer id, email or Okta user id is ever a label.

use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// `tierflow_okta_requests_total{operation, status_class}`; status_class is 2xx, 4xx, 5xx,
    /// 429 or `transport` (timeout, connection error).
    pub requests: IntCounterVec,
    /// `tierflow_okta_request_duration_seconds{operation}`
    pub request_seconds: HistogramVec,
    /// `tierflow_okta_retries_total{operation}`
    pub retries: IntCounterVec,
    /// `tierflow_okta_rate_limited_total{kind}`: `rate` (bucket empty) or `concurrency`.
    pub rate_limited: IntCounterVec,
    /// `tierflow_okta_rate_limit_limit{bucket}` / `_remaining` / `_reset_timestamp_seconds`:
    /// the limiter's view of each bucket (remaining is its estimate, in-flight requests counted).
    pub bucket_limit: IntGaugeVec,
    pub bucket_remaining: IntGaugeVec,
    pub bucket_reset: IntGaugeVec,
    /// `tierflow_okta_limiter_waits_total{bucket}`: requests that waited for budget.
    pub limiter_waits: IntCounterVec,
    /// `tierflow_okta_rate_limit_reset_clamped_total{bucket}`: `X-Rate-Limit-Reset` values
    /// too far ahead to be believed (Okta's windows are a minute), clamped.
    pub reset_clamped: IntCounterVec,
    /// `tierflow_okta_invalid_responses_total{operation}`: 2xx answers without what the call
    /// needs (no user id, not a list, a repeated page link), treated as failures.
    pub invalid_responses: IntCounterVec,
    /// `tierflow_okta_concurrency_limit`: the adaptive bound on in-flight requests.
    pub concurrency_limit: IntGauge,
    /// `tierflow_okta_in_flight_requests`
    pub in_flight: IntGauge,
    /// `tierflow_okta_writer_updates_total{outcome}`: applied, skipped, dead_lettered, coalesced.
    pub updates: IntCounterVec,
    /// `tierflow_okta_writer_skipped_total{reason}`
    pub skipped: IntCounterVec,
    /// `tierflow_okta_writer_dead_letters_total{reason}`
    pub dead_letters: IntCounterVec,
    /// `tierflow_okta_writer_apply_latency_seconds`: from the segment update's record
    /// timestamp (when the segmenter decided it) to applied in Okta.
    pub apply_latency: Histogram,
    /// `tierflow_okta_writer_credentials_paused`: 1 while consuming is paused because Okta
    /// rejects the credentials. Alert on it.
    pub credentials_paused: IntGauge,
    /// `tierflow_okta_writer_buffered_records`: records received and not yet done.
    pub buffered: IntGauge,
    /// `tierflow_okta_writer_customers_in_flight`
    pub customers_in_flight: IntGauge,
    /// `tierflow_okta_writer_waiting_customers{lane}`: customers waiting for a turn, by lane
    /// (`urgent`: a tier change, first update or redaction; `spend_only`).
    pub waiting_customers: IntGaugeVec,
    /// `tierflow_okta_writer_user_cache_total{result}`: hit or miss.
    pub user_cache: IntCounterVec,
    /// `tierflow_okta_writer_drain_forecast_seconds{bucket}`: the calls the waiting customers
    /// need in each rate-limit bucket over the budget the limiter grants there.
    pub drain_forecast: GaugeVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let m = Metrics {
            requests: counter(
                "tierflow_okta_requests_total",
                "Okta API requests by operation and status class.",
                &["operation", "status_class"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tierflow_okta_request_duration_seconds",
                    "Okta API request latency (one attempt).",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
                &["operation"],
            )?,
            retries: counter(
                "tierflow_okta_retries_total",
                "Okta API requests retried after a transient failure.",
                &["operation"],
            )?,
            rate_limited: counter(
                "tierflow_okta_rate_limited_total",
                "429 responses: kind=rate (bucket exhausted) or concurrency (X-Rate-Limit-Limit: 0).",
                &["kind"],
            )?,
            bucket_limit: gauge(
                "tierflow_okta_rate_limit_limit",
                "X-Rate-Limit-Limit last seen per bucket.",
                &["bucket"],
            )?,
            bucket_remaining: gauge(
                "tierflow_okta_rate_limit_remaining",
                "Requests the limiter believes remain in the bucket's window.",
                &["bucket"],
            )?,
            bucket_reset: gauge(
                "tierflow_okta_rate_limit_reset_timestamp_seconds",
                "X-Rate-Limit-Reset last seen per bucket (epoch seconds).",
                &["bucket"],
            )?,
            reset_clamped: counter(
                "tierflow_okta_rate_limit_reset_clamped_total",
                "X-Rate-Limit-Reset values beyond the sane horizon, clamped.",
                &["bucket"],
            )?,
            invalid_responses: counter(
                "tierflow_okta_invalid_responses_total",
                "2xx responses lacking what the call needs, treated as failures.",
                &["operation"],
            )?,
            limiter_waits: counter(
                "tierflow_okta_limiter_waits_total",
                "Requests that waited for rate-limit budget.",
                &["bucket"],
            )?,
            concurrency_limit: IntGauge::new(
                "tierflow_okta_concurrency_limit",
                "Current bound on in-flight Okta requests (lowered after concurrency 429s).",
            )?,
            in_flight: IntGauge::new("tierflow_okta_in_flight_requests", "Okta requests in flight.")?,
            updates: counter(
                "tierflow_okta_writer_updates_total",
                "Segment updates by outcome: applied, skipped, dead_lettered, coalesced.",
                &["outcome"],
            )?,
            skipped: counter(
                "tierflow_okta_writer_skipped_total",
                "Segment updates skipped, by reason.",
                &["reason"],
            )?,
            dead_letters: counter(
                "tierflow_okta_writer_dead_letters_total",
                "Segment updates written to the dead-letter topic, by reason.",
                &["reason"],
            )?,
            apply_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "tierflow_okta_writer_apply_latency_seconds",
                    "From the segment update's record timestamp to applied in Okta.",
                )
                .buckets(exponential_buckets(0.005, 2.0, 16)?),
            )?,
            credentials_paused: IntGauge::new(
                "tierflow_okta_writer_credentials_paused",
                "1 while consuming is paused because Okta rejects the writer's credentials.",
            )?,
            buffered: IntGauge::new(
                "tierflow_okta_writer_buffered_records",
                "Records received and not yet applied or dead-lettered.",
            )?,
            customers_in_flight: IntGauge::new(
                "tierflow_okta_writer_customers_in_flight",
                "Customers whose update is being applied.",
            )?,
            waiting_customers: gauge(
                "tierflow_okta_writer_waiting_customers",
                "Customers with records waiting for their turn, by lane (urgent: tier change, first update or redaction; spend_only).",
                &["lane"],
            )?,
            user_cache: counter(
                "tierflow_okta_writer_user_cache_total",
                "Customer to Okta user lookups by result (hit, miss).",
                &["result"],
            )?,
            drain_forecast: GaugeVec::new(
                Opts::new(
                    "tierflow_okta_writer_drain_forecast_seconds",
                    "Seconds until the customers the writer holds are applied, per rate-limit bucket: the calls they need there over the budget granted there (share of the limit per window).",
                ),
                &["bucket"],
            )?,
        };
        // Known label values start at 0, so rate() and alerts see a series before the first
        // event (a dead letter should raise an alert, not create its series).
        for reason in crate::failure::DeadLetterReason::ALL {
            m.dead_letters
                .with_label_values(&[reason.label()])
                .inc_by(0);
        }
        for kind in ["rate", "concurrency"] {
            m.rate_limited.with_label_values(&[kind]).inc_by(0);
        }
        for lane in ["urgent", "spend_only"] {
            m.waiting_customers.with_label_values(&[lane]).set(0);
        }
        for bucket in ["users_update", "groups"] {
            m.drain_forecast.with_label_values(&[bucket]).set(0.0);
        }
        for outcome in ["applied", "skipped", "dead_lettered", "coalesced"] {
            m.updates.with_label_values(&[outcome]).inc_by(0);
        }
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.bucket_limit.clone()))?;
        registry.register(Box::new(m.bucket_remaining.clone()))?;
        registry.register(Box::new(m.bucket_reset.clone()))?;
        registry.register(Box::new(m.limiter_waits.clone()))?;
        registry.register(Box::new(m.reset_clamped.clone()))?;
        registry.register(Box::new(m.invalid_responses.clone()))?;
        registry.register(Box::new(m.concurrency_limit.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.updates.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.apply_latency.clone()))?;
        registry.register(Box::new(m.credentials_paused.clone()))?;
        registry.register(Box::new(m.buffered.clone()))?;
        registry.register(Box::new(m.customers_in_flight.clone()))?;
        registry.register(Box::new(m.waiting_customers.clone()))?;
        registry.register(Box::new(m.user_cache.clone()))?;
        registry.register(Box::new(m.drain_forecast.clone()))?;
        Ok(m)
    }

    /// Metrics in a private registry (CLI subcommands and tests that do not serve them).
    pub fn unregistered() -> Self {
        Metrics::register(&Registry::new()).expect("a fresh registry has no collisions")
    }
}
