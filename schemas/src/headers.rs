//! Kafka record header names written by the ingest on every record of the orders topic (and its
//! quarantine topic).
//!
//! The Shopify headers keep Shopify's own names, lower-cased, so a reader who knows the webhook
//! contract recognises them. Values are the header values exactly as received (UTF-8). Headers
//! Shopify may omit (`event id`, `triggered at`) are omitted on the record too, never sent empty.

/// The webhook topic, e.g. `orders/updated`.
pub const SHOPIFY_TOPIC: &str = "x-shopify-topic";
/// The shop's `*.myshopify.com` domain.
pub const SHOPIFY_SHOP_DOMAIN: &str = "x-shopify-shop-domain";
/// Unique per delivery attempt group: Shopify's retries of one webhook reuse it. The dedup key.
pub const SHOPIFY_WEBHOOK_ID: &str = "x-shopify-webhook-id";
/// Identifies the event behind the webhook; several webhooks may share it. Optional.
pub const SHOPIFY_EVENT_ID: &str = "x-shopify-event-id";
/// When Shopify triggered the webhook (RFC 3339). Optional.
pub const SHOPIFY_TRIGGERED_AT: &str = "x-shopify-triggered-at";
/// The Admin API version the body is rendered in, e.g. `2025-07`.
pub const SHOPIFY_API_VERSION: &str = "x-shopify-api-version";
/// When the ingest received the request: RFC 3339 UTC with milliseconds.
pub const RECEIVED_AT: &str = "tierflow-received-at";
/// Why a record was quarantined instead of published (quarantine topic only).
pub const QUARANTINE_REASON: &str = "tierflow-quarantine-reason";
/// W3C Trace Context, so downstream spans join the webhook's trace.
pub const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context vendor state; present only when the trace carries one.
pub const TRACESTATE: &str = "tracestate";
/// Where a record came from when not from a webhook: `backfill` (`ingest backfill`, from a
/// bulk operation) or `reconcile` (`ingest reconcile`). Absent on webhook records. The body is
/// rendered in the webhook's REST shape either way, so the record contract and the
/// segmenter's version rule treat both alike.
pub const ORIGIN: &str = "tierflow-origin";

/// The HTTP request header carrying the body's signature. Checked by the ingest and never copied
/// onto records: it proves nothing once the body has left the ingest.
pub const SHOPIFY_HMAC_SHA256: &str = "x-shopify-hmac-sha256";

/// Which service quarantined a record (`ingest` or `segmenter`).
pub const QUARANTINED_BY: &str = "tierflow-quarantined-by";
/// The full error message behind [`QUARANTINE_REASON`].
pub const QUARANTINE_DETAIL: &str = "tierflow-quarantine-detail";
/// Where a derived record (quarantine copy, segment update) came from.
pub const SOURCE_TOPIC: &str = "tierflow-source-topic";
pub const SOURCE_PARTITION: &str = "tierflow-source-partition";
pub const SOURCE_OFFSET: &str = "tierflow-source-offset";
/// On a segment update: its `event_id`, so consumers can dedup without parsing the value.
pub const EVENT_ID: &str = "tierflow-event-id";
/// On a quarantine record whose body was cut to fit the broker's limit: the original body's
/// length in bytes, its SHA-256 (hex), and `true`.
pub const BODY_BYTES: &str = "tierflow-body-bytes";
pub const BODY_SHA256: &str = "tierflow-body-sha256";
pub const BODY_TRUNCATED: &str = "tierflow-body-truncated";

/// SHA-256 of `bytes` in lower-case hex (for [`BODY_SHA256`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// On a `shop/redact` copy the segmenter fans out to every partition of the orders topic (a
/// shop's customers live in all of them); its value is the partition of the original record.
pub const FANOUT_FROM: &str = "tierflow-fanout-from";

/// Dead-letter records (`okta-writer.dlq`) keep the original key, value and headers and add
/// where the record came from and why it failed. The first five are Kafka Connect's names, so
/// tools that read Connect dead-letter queues understand them.
pub mod dlq {
    pub const TOPIC: &str = "__connect.errors.topic";
    pub const PARTITION: &str = "__connect.errors.partition";
    pub const OFFSET: &str = "__connect.errors.offset";
    /// The error class, e.g. `okta.permanent`, `okta.retries_exhausted`, `tierflow.invalid_record`.
    pub const EXCEPTION_CLASS: &str = "__connect.errors.exception.class.name";
    pub const EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
    /// The bounded reason label (`missing_user`, `okta_rejected`, …), as in the metrics.
    pub const REASON: &str = "tierflow-dlq-reason";
    /// The Okta operation that failed (`updateUser`, `assignUserToGroup`, …).
    pub const OPERATION: &str = "tierflow-dlq-operation";
    pub const HTTP_STATUS: &str = "tierflow-dlq-http-status";
    pub const OKTA_ERROR_CODE: &str = "tierflow-dlq-okta-error-code";
    pub const OKTA_ERROR_ID: &str = "tierflow-dlq-okta-error-id";
    pub const OKTA_REQUEST_ID: &str = "tierflow-dlq-okta-request-id";
    pub const ATTEMPTS: &str = "tierflow-dlq-attempts";
    /// RFC 3339 times of the first and last failed attempt.
    pub const FIRST_FAILURE_AT: &str = "tierflow-dlq-first-failure-at";
    pub const LAST_FAILURE_AT: &str = "tierflow-dlq-last-failure-at";
    /// How many queued updates of the customer were folded into the failed one.
    pub const COALESCED: &str = "tierflow-dlq-coalesced";
    /// A redrive outcome marker (no value) names the entry it is about: `<partition>/<offset>`
    /// of the dead-letter topic.
    pub const REDRIVE_OF: &str = "tierflow-dlq-redrive-of";
    /// `applied`, `skipped`, `superseded` or `failed`.
    pub const REDRIVE_OUTCOME: &str = "tierflow-dlq-redrive-outcome";
    pub const REDRIVE_MESSAGE: &str = "tierflow-dlq-redrive-message";
}
