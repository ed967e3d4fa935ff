//! Publishing records to Kafka with an acknowledgement the HTTP answer can trust.
//!
//! The producer is idempotent with `acks=all`: an acknowledged record is on every in-sync
//! replica and librdkafka's retries never duplicate or reorder it within a partition. The
//! in-flight bound is the caller's semaphore plus librdkafka's own queue
//! (`queue.buffering.max.messages`); a full queue is an immediate 503 rather than a wait.
//! `message.timeout.ms` is set to the produce timeout so a record the HTTP side gave up on
//! (answered 503, which Shopify retries) does not linger in the queue; the tokio timeout around
//! the delivery future is the backstop, since a broker outage can take seconds to surface.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    /// The record itself is over a limit (the producer's `message.max.bytes`, checked on the
    /// uncompressed record, or the topic's `max.message.bytes`, on the compressed batch): no
    /// retry can fix it.
    #[error("record too large for the broker: {0}")]
    TooLarge(KafkaError),
    #[error("broker refused the record: {0}")]
    Broker(KafkaError),
}

impl PublishError {
    /// Short, stable metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "queue_full",
            PublishError::Timeout(_) => "timeout",
            PublishError::TooLarge(_) => "too_large",
            PublishError::Broker(_) => "broker_error",
        }
    }
}

/// Room for a record's key, headers and framing on top of its body.
pub const RECORD_OVERHEAD: u64 = 64 * 1024;

/// Defaults tuned for low-latency acknowledgements; `[kafka.client]` may override them.
pub fn defaults(
    produce_timeout: Duration,
    max_in_flight: usize,
    max_body_bytes: u64,
) -> Vec<(&'static str, String)> {
    vec![
        // Webhook JSON compresses several-fold, and Kafka's size limit applies to the
        // compressed batch: a 2 MiB order fits a topic's default 1 MiB limit. lz4 is the
        // cheapest codec per byte (docs/BENCHMARKS.md).
        ("compression.type", "lz4".into()),
        // librdkafka refuses, before compressing, a record over `message.max.bytes`
        // (default 1,000,000): let every body the ingest accepts through to the broker, which
        // judges the compressed batch against the topic's `max.message.bytes`.
        (
            "message.max.bytes",
            (max_body_bytes + RECORD_OVERHEAD).to_string(),
        ),
        // A short linger batches a flash sale's concurrent webhooks without adding visible
        // latency; a long one would eat into Shopify's 5 s deadline.
        ("linger.ms", "2".into()),
        (
            "message.timeout.ms",
            produce_timeout.as_millis().to_string(),
        ),
        (
            "queue.buffering.max.messages",
            (max_in_flight * 2).max(1000).to_string(),
        ),
        ("socket.keepalive.enable", "true".into()),
        ("client.id", "tierflow-ingest".into()),
    ]
}

pub struct Publisher {
    producer: FutureProducer,
    timeout: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        config: &ClientConfig,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, KafkaError> {
        Ok(Publisher {
            producer: config.create()?,
            timeout,
            metrics,
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Send one record and wait for the broker's acknowledgement (or the timeout).
    /// `destination` is the metric label (`orders` or `quarantine`), not the topic name.
    pub async fn publish(
        &self,
        destination: &'static str,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let result = match self.producer.send_result(record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(PublishError::QueueFull)
            }
            Err((e, _)) if service_runtime::kafka::record_too_large(&e) => {
                Err(PublishError::TooLarge(e))
            }
            Err((e, _)) => Err(PublishError::Broker(e)),
            Ok(delivery) => match tokio::time::timeout(self.timeout, delivery).await {
                Err(_) => Err(PublishError::Timeout(self.timeout)),
                // The producer was dropped mid-flight: only possible during shutdown.
                Ok(Err(_canceled)) => Err(PublishError::Broker(KafkaError::Canceled)),
                Ok(Ok(Err((
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                    _,
                )))) => Err(PublishError::Timeout(self.timeout)),
                Ok(Ok(Err((e, _)))) if service_runtime::kafka::record_too_large(&e) => {
                    Err(PublishError::TooLarge(e))
                }
                Ok(Ok(Err((e, _)))) => Err(PublishError::Broker(e)),
                Ok(Ok(Ok(_delivery))) => Ok(()),
            },
        };
        match &result {
            Ok(()) => self
                .metrics
                .produce_seconds
                .with_label_values(&[destination])
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => self
                .metrics
                .produce_failures
                .with_label_values(&[e.reason()])
                .inc(),
        }
        result
    }

    /// Wait for everything queued to be acknowledged, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
