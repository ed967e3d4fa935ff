//! What a topic holds, read without a consumer group (partitions assigned directly), so reading
//! never disturbs the services' groups.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use service_runtime::kafka::{current_ranges, partition_count, read_ranges};

fn reader(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Assigned partitions need no group; librdkafka still wants an id for offset APIs.
        .set("group.id", "tierflow-testkit-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a reader")
}

/// Records in `topic` by watermarks (all partitions; on a compacted topic, an upper bound).
pub fn count(bootstrap: &str, topic: &str) -> i64 {
    let consumer = reader(bootstrap);
    let partitions = partition_count(&consumer, topic).unwrap();
    (0..partitions)
        .map(|p| {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            hi - lo
        })
        .sum()
}

/// Every record in `topic` from its beginning up to its end as it is now, partition by
/// partition (offset order within each). Works on a compacted topic (offsets with gaps).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap);
    let partitions = partition_count(&consumer, topic).unwrap();
    let ranges = current_ranges(&consumer, topic, 0..partitions).unwrap();
    let mut out = Vec::new();
    read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(30),
        None,
        |m| {
            out.push(m.detach());
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("reading {topic}: {e:#}"));
    out
}

/// Records of `topic` from its beginning until `expect` arrived or `within` passed, then any
/// straggler (a duplicate) that shows within 200 ms. For topics still being written. Consumer
/// errors (a broker down in a failover test, while librdkafka reconnects) are skipped.
pub fn read_at_least(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    within: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap);
    let partitions = partition_count(&consumer, topic).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    while let Some(m) = consumer.poll(Duration::from_millis(200)) {
        if let Ok(m) = m {
            out.push(m.detach());
        }
    }
    out
}

/// A record's headers as text (lossy), by name; the last value wins for a repeated name.
pub fn headers(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One header of a record, as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    headers(m).remove(name)
}
