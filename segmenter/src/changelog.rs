//! The segmenter's changelog (`segmenter.ledger.changelog`, compacted, co-partitioned with
//! the orders topic): what one entry is and how it is keyed, the state reset marker
//! `segmenter replay --rebuild-state` writes, and restoring a partition's ledger from it.
//!
//! One entry per order (key `<shop>/<customer>/<order>`, value an [`OrderRecord`]), so
//! compaction keeps each order's newest accepted version and a redaction is one tombstone per
//! order; one marker per order deleted in Shopify (key `<shop>/deleted-order/<order>`).
//! Restore replays a partition from its start: a reset marker empties the ledger, a record
//! puts an order back as it was accepted, a tombstone removes one, a deleted-order marker
//! makes the ledger ignore that order from then on.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, Version};

/// One stored order version, as written to (and restored from) the changelog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub shop: String,
    pub customer_id: u64,
    pub order_id: u64,
    pub version: Version,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub counted: bool,
    pub email: Option<String>,
    pub currency: Option<String>,
    /// Absent in records written before order facts existed.
    #[serde(default)]
    pub facts: crate::normalize::OrderFacts,
}

impl OrderRecord {
    /// The changelog key: one entry per order, so compaction keeps each order's newest version
    /// and a redaction is one tombstone per order.
    pub fn key(shop: &str, customer_id: u64, order_id: u64) -> String {
        format!("{shop}/{customer_id}/{order_id}")
    }

    /// `(shop, customer id, order id)` from a changelog key.
    pub fn parse_key(key: &str) -> Option<(&str, u64, u64)> {
        let (rest, order) = key.rsplit_once('/')?;
        let (shop, customer) = rest.rsplit_once('/')?;
        Some((shop, customer.parse().ok()?, order.parse().ok()?))
    }
}

/// The changelog key of a state reset marker (no order key has this form).
pub const RESET_MARKER_KEY: &str = "__tierflow_state_reset__";

/// The changelog key of a deleted-order marker, `<shop>/deleted-order/<order>` (an order key's
/// middle part is a number, so the two never meet). Nothing tombstones it, so compaction keeps
/// it and a restored ledger still ignores the order's late versions.
pub fn deleted_order_key(shop: &str, order_id: u64) -> String {
    format!("{shop}/{DELETED_ORDER}/{order_id}")
}

/// `(shop, order id)` from a deleted-order marker's key.
pub fn parse_deleted_order_key(key: &str) -> Option<(&str, u64)> {
    let (rest, order) = key.rsplit_once('/')?;
    let (shop, kind) = rest.rsplit_once('/')?;
    (kind == DELETED_ORDER).then_some(())?;
    Some((shop, order.parse().ok()?))
}

const DELETED_ORDER: &str = "deleted-order";

/// A deleted-order marker's value (its key says everything; the value says what it is to a
/// person reading the topic).
pub const DELETED_ORDER_VALUE: &[u8] = br#"{"deleted_order":true}"#;

/// Write a state reset marker to every partition of the changelog.
pub fn reset_state(client: &ClientConfig, changelog: &str, partitions: i32) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = {
        let mut c = client.clone();
        for (k, v) in service_runtime::kafka::ACKED_PRODUCER {
            c.set(*k, *v);
        }
        c.remove("group.id");
        c.create().context("creating a producer")?
    };
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let value = format!(r#"{{"reset_at_ms":{at}}}"#);
    for p in 0..partitions {
        producer
            .send(
                BaseRecord::to(changelog)
                    .partition(p)
                    .key(RESET_MARKER_KEY)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .context("queueing a reset marker")?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("writing the reset markers")?;
    Ok(())
}

/// Read changelog `partitions` from their starts to their current ends into fresh ledgers,
/// with one consumer. A state reset marker (`segmenter replay --rebuild-state`) empties the
/// partition's ledger: what came before it is forgotten.
pub fn restore_partitions(
    config: &ClientConfig,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<(HashMap<i32, Ledger>, u64)> {
    let consumer: BaseConsumer = config.create().context("creating the restore consumer")?;
    let mut ledgers: HashMap<i32, Ledger> =
        partitions.iter().map(|p| (*p, Ledger::new())).collect();
    let ranges =
        service_runtime::kafka::current_ranges(&consumer, topic, partitions.iter().copied())?;
    let ten_minutes = Duration::from_secs(600);
    let records = service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        ten_minutes,
        Some(ten_minutes),
        |m| {
            let p = m.partition();
            let ledger = ledgers.get_mut(&p).expect("assigned partitions only");
            let key = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .unwrap_or_default();
            if key == RESET_MARKER_KEY {
                *ledger = Ledger::new();
                return Ok(());
            }
            if let Some((shop, order)) = parse_deleted_order_key(key) {
                ledger.mark_deleted(shop, order);
                return Ok(());
            }
            match m.payload() {
                Some(v) => match serde_json::from_slice::<OrderRecord>(v) {
                    Ok(r) => {
                        if let Err(e) = ledger.restore(&r) {
                            tracing::error!(partition = p, offset = m.offset(), error = %e, "changelog record refused on restore");
                        }
                    }
                    Err(e) => {
                        tracing::error!(partition = p, offset = m.offset(), error = %e, "unreadable changelog record skipped")
                    }
                },
                None => match OrderRecord::parse_key(key) {
                    Some((shop, customer, order)) => ledger.restore_delete(shop, customer, order),
                    None => tracing::error!(
                        partition = p,
                        offset = m.offset(),
                        key,
                        "unreadable changelog tombstone skipped"
                    ),
                },
            }
            Ok(())
        },
    )?;
    Ok((ledgers, records))
}
