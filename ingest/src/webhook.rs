//! `POST /webhooks/shopify`: verify, key, publish, and only then answer 200.
//!
//! Status contract (what Shopify, load balancers and tests can rely on):
//!
//! | status | when | published |
//! |---|---|---|
//! | 200 | signed, acknowledged by the broker in the orders topic | orders topic |
//! | 200 | signed, but not JSON, lacking the key fields, or not the shape of its topic | quarantine topic, reason in a header |
//! | 200 | signed, topic not in `[ingest] topics` | nothing (counted) |
//! | 200 | signed, but the broker refuses it as too large | quarantine topic, cut to fit, with its length and digest |
//! | 400 | a required `X-Shopify-*` header missing or malformed, or the body could not be read | nothing |
//! | 401 | signature missing, malformed, or matching no secret of the shop | nothing |
//! | 405 | any method but POST | nothing |
//! | 408 | body not received within `body_read_timeout` | nothing |
//! | 413 | body over `max_body_bytes` (refused from `Content-Length`, or once the limit is crossed) | nothing |
//! | 422 | `orders/delete` of an order the Admin API still has (shops with Admin API access; see [`crate::deletion_check`]) | nothing |
//! | 431 | request head over `max_header_bytes` (hyper answers it, see [`crate::server`]) | nothing |
//! | 503 + `Retry-After` | in-flight bound or body byte budget reached, too many `orders/delete` checks at once, broker down, or no ack within `produce_timeout` | maybe (a retry is a harmless duplicate) |
//!
//! Anything but 2xx makes Shopify retry (8 times over 4 hours), so every refusal that a retry
//! cannot fix is either a 4xx caused by the sender, or a 200 with the body quarantined.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use rdkafka::message::OwnedHeaders;
use schemas::{headers as h, ShopifyTopic};
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::Instrument;

use crate::deletion_check::Verdict;
use crate::metrics::Metrics;
use crate::publisher::{PublishError, Publisher};
use crate::signature::{SignatureError, Verifier};
use schemas::is_shop_domain;

/// Bytes a record's key, headers and framing can add to its body (headers are bounded by
/// `max_header_bytes`, 16 KiB by default).
const RECORD_HEADROOM: usize = 20 * 1024;

/// How long Shopify (or a load balancer) should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "5";

/// Everything a request needs, shared by all of them.
#[derive(Debug)]
pub struct AppState {
    pub verifier: Verifier,
    pub publisher: Publisher,
    pub accepted: Vec<ShopifyTopic>,
    pub orders_topic: String,
    pub quarantine_topic: String,
    pub max_body_bytes: u64,
    /// Verified webhooks awaiting the broker (`max_in_flight`).
    pub permits: Arc<Semaphore>,
    /// Body bytes held in memory across requests, one permit a byte (`max_buffered_body_bytes`).
    pub body_budget: Semaphore,
    pub body_read_timeout: Duration,
    /// Largest record the quarantine topic takes (a body that the orders topic refuses as too
    /// large is quarantined cut to this).
    pub quarantine_max_bytes: usize,
    /// The orders topic's `max.message.bytes`: a body below it fits on its own even
    /// uncompressed, so a "too large" refusal of it blames the batch it shared, not the body.
    pub orders_max_bytes: usize,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// `orders/delete` confirmed with the Admin API (shops with access).
    pub deletions: crate::deletion_check::DeletionCheck,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhooks/shopify", post(receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// What happened to one request; the single place statuses are decided.
#[derive(Debug)]
enum Outcome {
    Accepted,
    Quarantined,
    IgnoredTopic,
    BadRequest(String),
    Unauthorized(SignatureError),
    TooLarge,
    /// The body did not arrive within `body_read_timeout`.
    Timeout,
    Overloaded,
    Unavailable,
    /// An `orders/delete` of an order the Admin API still has.
    NotDeleted(u64),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Quarantined => "quarantined",
            Outcome::IgnoredTopic => "ignored_topic",
            Outcome::BadRequest(_) => "bad_request",
            Outcome::Unauthorized(_) => "unauthorized",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::NotDeleted(_) => "not_deleted",
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Accepted | Outcome::Quarantined | Outcome::IgnoredTopic => {
                StatusCode::OK.into_response()
            }
            Outcome::BadRequest(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Outcome::Unauthorized(e) => (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            // The rest of the body may still be on its way: close rather than read it.
            Outcome::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, HeaderValue::from_static("close"))],
                "body not received in time\n",
            )
                .into_response(),
            Outcome::Overloaded => unavailable("overloaded; retry later\n"),
            // The broker's error text stays in the log: it names internals an outsider has no
            // business seeing.
            Outcome::Unavailable => unavailable("not stored; retry later\n"),
            Outcome::NotDeleted(id) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("order {id} exists in the shop: not an orders/delete\n"),
            )
                .into_response(),
        }
    }
}

fn unavailable(why: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        )],
        why,
    )
        .into_response()
}

async fn receive(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let topic_label = headers
        .get(h::SHOPIFY_TOPIC)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.parse::<ShopifyTopic>().ok())
        .map_or("unknown", ShopifyTopic::as_str);
    let outcome = app.handle(&headers, body).await;
    let label = outcome.label();
    app.metrics
        .requests
        .with_label_values(&[label, topic_label])
        .inc();
    app.metrics
        .request_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    outcome.into_response()
}

/// The required headers, validated.
struct Meta<'a> {
    topic: &'a str,
    shop: String,
    webhook_id: &'a str,
    api_version: &'a str,
    event_id: Option<&'a str>,
    triggered_at: Option<&'a str>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Outcome> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| Outcome::BadRequest(format!("{name} is not visible ASCII"))),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Outcome> {
    header_str(headers, name)?
        .ok_or_else(|| Outcome::BadRequest(format!("missing required header {name}")))
}

fn read_meta(headers: &HeaderMap) -> Result<Meta<'_>, Outcome> {
    let shop = required(headers, h::SHOPIFY_SHOP_DOMAIN)?.to_ascii_lowercase();
    if !is_shop_domain(&shop) {
        return Err(Outcome::BadRequest(format!(
            "{} is not a shop domain",
            h::SHOPIFY_SHOP_DOMAIN
        )));
    }
    let meta = Meta {
        topic: required(headers, h::SHOPIFY_TOPIC)?,
        shop,
        webhook_id: required(headers, h::SHOPIFY_WEBHOOK_ID)?,
        api_version: required(headers, h::SHOPIFY_API_VERSION)?,
        event_id: header_str(headers, h::SHOPIFY_EVENT_ID)?,
        triggered_at: header_str(headers, h::SHOPIFY_TRIGGERED_AT)?,
    };
    if meta.webhook_id.len() > 255 {
        return Err(Outcome::BadRequest(format!(
            "{} is longer than 255 characters",
            h::SHOPIFY_WEBHOOK_ID
        )));
    }
    Ok(meta)
}

/// Decrements the in-flight gauge however the request ends (including client disconnects,
/// which drop the handler's future).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl AppState {
    async fn handle(&self, headers: &HeaderMap, body: Body) -> Outcome {
        let declared_len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > self.max_body_bytes) {
            return Outcome::TooLarge;
        }
        let meta = match read_meta(headers) {
            Ok(meta) => meta,
            Err(outcome) => return outcome,
        };
        // Nothing scarce is held while an unverified client sends its body: only the bytes
        // that have actually arrived count against the shared budget, and the whole body has
        // `body_read_timeout` to arrive.
        let (body, _budget) =
            match tokio::time::timeout(self.body_read_timeout, self.read_body(body)).await {
                Ok(Ok(read)) => read,
                Ok(Err(outcome)) => return outcome,
                Err(_elapsed) => return Outcome::Timeout,
            };
        let signature = headers
            .get(h::SHOPIFY_HMAC_SHA256)
            .map(HeaderValue::as_bytes);
        if let Err(e) = self.verifier.verify(&meta.shop, signature, &body) {
            let shop_label = if self.verifier.knows_shop(&meta.shop) {
                meta.shop.as_str()
            } else {
                "other"
            };
            self.metrics
                .signature_failures
                .with_label_values(&[shop_label, signature_reason(e)])
                .inc();
            tracing::warn!(shop = %meta.shop, error = %e, "webhook refused: signature");
            return Outcome::Unauthorized(e);
        }
        let topic = match meta.topic.parse::<ShopifyTopic>() {
            Ok(t) if self.accepted.contains(&t) => t,
            _ => {
                tracing::debug!(
                    topic = meta.topic,
                    "signed webhook of a topic not configured; ignored"
                );
                return Outcome::IgnoredTopic;
            }
        };
        // The in-flight bound covers what waits on the broker: signed, complete requests only.
        let Ok(_permit) = self.permits.try_acquire() else {
            tracing::warn!("in-flight bound reached; answering 503");
            return Outcome::Overloaded;
        };
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(&self.metrics.in_flight);
        self.publish_verified(&meta, topic, &body).await
    }

    /// Read the body chunk by chunk against `max_body_bytes` and the shared byte budget.
    async fn read_body(&self, mut body: Body) -> Result<(Bytes, BodyBudget<'_>), Outcome> {
        let mut budget = BodyBudget {
            permit: None,
            gauge: &self.metrics.buffered_body_bytes,
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Outcome::BadRequest(format!("cannot read body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we read
            };
            let n = data.len() as u64;
            total += n;
            if total > self.max_body_bytes {
                return Err(Outcome::TooLarge);
            }
            let Ok(more) = u32::try_from(n) else {
                return Err(Outcome::TooLarge);
            };
            let Ok(permit) = self.body_budget.try_acquire_many(more) else {
                tracing::warn!("body byte budget exhausted; answering 503");
                return Err(Outcome::Overloaded);
            };
            budget.add(permit);
            chunks.push(data);
        }
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().expect("one chunk"),
            _ => {
                let mut all = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
                for c in &chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        Ok((body, budget))
    }

    /// Key and publish a signed body of an accepted topic; quarantine what cannot be keyed or
    /// does not have its topic's shape.
    async fn publish_verified(&self, meta: &Meta<'_>, topic: ShopifyTopic, body: &[u8]) -> Outcome {
        let mut deleted_order = None;
        let (destination, topic_name, key, reason) = match schemas::record_key(
            &meta.shop, topic, body,
        ) {
            Ok(key) => {
                if let (ShopifyTopic::OrdersDelete, schemas::RecordKey::Order { order_id, .. }) =
                    (topic, &key)
                {
                    deleted_order = Some(*order_id);
                }
                ("orders", &self.orders_topic, key.to_string(), None)
            }
            Err(e) => {
                tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, %topic, error = %e, "signed webhook has no usable key; quarantining");
                (
                    "quarantine",
                    &self.quarantine_topic,
                    meta.shop.clone(),
                    Some(e.reason()),
                )
            }
        };
        // Keyed, so the body has the shape of a deletion: `{"id": N}`, N in the key.
        if let Some(id) = deleted_order {
            let verdict = self.deletions.check(&meta.shop, id).await;
            self.metrics
                .deletion_checks
                .with_label_values(&[verdict.label()])
                .inc();
            match verdict {
                Verdict::Exists => {
                    tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, order = id, "orders/delete of an order the Admin API still has: refused (a signed deletion body of another resource under an unsigned orders/delete header?)");
                    return Outcome::NotDeleted(id);
                }
                Verdict::Busy => return Outcome::Overloaded,
                Verdict::Confirmed | Verdict::Unchecked | Verdict::Failed => {}
            }
        }
        let span = publish_span(topic_name, topic, meta);
        // The headers are built again for the rare second send rather than cloned for every
        // first one (a copy of ~10 headers is ~2% of a webhook's CPU), with the same receipt
        // time both times.
        let received_at = received_at_now();
        let send = || {
            self.publisher
                .publish(
                    destination,
                    topic_name,
                    &key,
                    body,
                    record_headers(meta, &span, &received_at, reason),
                )
                .instrument(span.clone())
        };
        let mut published = send().await;
        // The broker judges a whole batch: a small record batched with an oversized one is
        // refused with it. Sent again it travels in a batch of its own making.
        let fits_alone = body.len() + RECORD_HEADROOM <= self.orders_max_bytes;
        if matches!(published, Err(PublishError::TooLarge(_))) && fits_alone {
            tracing::info!(
                webhook_id = meta.webhook_id,
                "refused as part of a batch that was too large; sending again"
            );
            published = send().await;
        }
        match (published, reason) {
            (Err(PublishError::TooLarge(e)), None) if fits_alone => {
                tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, error = %e, "a body that fits the topic was refused as too large twice; answering 503");
                Outcome::Unavailable
            }
            (Err(PublishError::TooLarge(e)), None) => {
                tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, body_bytes = body.len(), error = %e, "signed body too large for the orders topic; quarantining it (a retry could never succeed)");
                self.quarantine_too_large(meta, topic, body).await
            }
            (Ok(()), None) => Outcome::Accepted,
            (Ok(()), Some(reason)) => {
                self.metrics.quarantined.with_label_values(&[reason]).inc();
                Outcome::Quarantined
            }
            (Err(e), _) => {
                tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, error = %e, "record not acknowledged; answering 503");
                Outcome::Unavailable
            }
        }
    }
}

impl AppState {
    /// A signed body the broker cannot hold: answer 2xx (Shopify's retries could never
    /// succeed) and keep its metadata, digest and as much of it as the quarantine topic takes.
    async fn quarantine_too_large(
        &self,
        meta: &Meta<'_>,
        topic: ShopifyTopic,
        body: &[u8],
    ) -> Outcome {
        const REASON: &str = "too_large_for_broker";
        let span = publish_span(&self.quarantine_topic, topic, meta);
        let room = self.quarantine_max_bytes.saturating_sub(
            usize::try_from(crate::publisher::RECORD_OVERHEAD).unwrap_or(usize::MAX),
        );
        let kept = &body[..body.len().min(room)];
        let headers = service_runtime::kafka::with_body_cut(
            record_headers(meta, &span, &received_at_now(), Some(REASON)),
            body,
            kept.len(),
        );
        let published = self
            .publisher
            .publish(
                "quarantine",
                &self.quarantine_topic,
                &meta.shop,
                kept,
                headers,
            )
            .instrument(span)
            .await;
        match published {
            Ok(()) => {
                self.metrics.quarantined.with_label_values(&[REASON]).inc();
                Outcome::Quarantined
            }
            Err(e) => {
                tracing::warn!(shop = %meta.shop, webhook_id = meta.webhook_id, error = %e, "quarantine record not acknowledged; answering 503");
                Outcome::Unavailable
            }
        }
    }
}

/// The producer span of one publish (OpenTelemetry messaging conventions).
fn publish_span(topic_name: &str, topic: ShopifyTopic, meta: &Meta<'_>) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {topic_name}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic_name,
        shopify.topic = %topic,
        shopify.webhook_id = meta.webhook_id,
    )
}

/// Body bytes this request holds against [`AppState::body_budget`] (one permit a byte),
/// returned on drop; the gauge follows.
struct BodyBudget<'a> {
    permit: Option<SemaphorePermit<'a>>,
    gauge: &'a prometheus::IntGauge,
}

impl<'a> BodyBudget<'a> {
    fn add(&mut self, permit: SemaphorePermit<'a>) {
        self.gauge
            .add(i64::try_from(permit.num_permits()).unwrap_or(i64::MAX));
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
    }
}

impl Drop for BodyBudget<'_> {
    fn drop(&mut self) {
        let held = self.permit.as_ref().map_or(0, SemaphorePermit::num_permits);
        self.gauge.sub(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

fn signature_reason(e: SignatureError) -> &'static str {
    match e {
        SignatureError::Missing => "missing",
        SignatureError::Malformed => "malformed",
        SignatureError::Mismatch => "mismatch",
    }
}

/// `tierflow-received-at` for a record written now.
fn received_at_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn record_headers(
    meta: &Meta<'_>,
    span: &tracing::Span,
    received_at: &str,
    quarantine: Option<&str>,
) -> OwnedHeaders {
    let (traceparent, tracestate) = service_runtime::telemetry::trace_context(span);
    service_runtime::kafka::with_headers(
        OwnedHeaders::new_with_capacity(11),
        &[
            (h::SHOPIFY_TOPIC, Some(meta.topic)),
            (h::SHOPIFY_SHOP_DOMAIN, Some(meta.shop.as_str())),
            (h::SHOPIFY_WEBHOOK_ID, Some(meta.webhook_id)),
            (h::SHOPIFY_API_VERSION, Some(meta.api_version)),
            (h::RECEIVED_AT, Some(received_at)),
            (h::TRACEPARENT, Some(traceparent.as_str())),
            (h::SHOPIFY_EVENT_ID, meta.event_id),
            (h::SHOPIFY_TRIGGERED_AT, meta.triggered_at),
            (h::TRACESTATE, tracestate.as_deref()),
            (h::QUARANTINE_REASON, quarantine),
        ],
    )
}

/// Broker reachability as seen by a periodic metadata fetch (see [`crate::Application`]).
#[derive(Debug)]
pub struct Readiness {
    origin: Instant,
    /// Milliseconds after `origin` of the last good fetch, plus one; 0 means never.
    last_ok_ms: AtomicU64,
    max_age: Duration,
}

impl Readiness {
    pub fn new(max_age: Duration) -> Self {
        Readiness {
            origin: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            max_age,
        }
    }

    /// A metadata fetch succeeded now.
    pub fn record_ok(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ok_ms.store(ms + 1, Ordering::Relaxed);
    }

    /// Time since the last good fetch; `None` if there never was one.
    pub fn age(&self) -> Option<Duration> {
        match self.last_ok_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.origin
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }

    fn is_ready(&self) -> bool {
        self.age().is_some_and(|age| age <= self.max_age)
    }
}

/// Public, so it says only ready or not; why is in the log (`broker metadata fetch failed`)
/// and in `tierflow_ingest_broker_metadata_age_seconds`.
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.readiness.is_ready() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: broker unreachable\n",
        )
            .into_response()
    }
}
