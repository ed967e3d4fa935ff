//! The segmenter's compacted changelog after Apache Kafka's log cleaner has run (one KRaft
//! node; the mock cluster has no cleaner): a history with superseded order versions and a
//! customer redaction (one tombstone per order) is compacted, and a restore from what is left
//! rebuilds exactly the state a restore built before compaction — the same customers with the
//! same totals, counts and emails — and a restarted segmenter holds as many customers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use rust_decimal::Decimal;
use segmenter::changelog::OrderRecord;

const CHANGELOG: &str = "segmenter.ledger.changelog";

/// Every customer's summary in a restore of the whole changelog: (shop, customer) →
/// (total, orders, email); plus the records the restore read.
type State = BTreeMap<(String, u64), (Decimal, u64, Option<String>)>;

fn restore(bootstrap: &str) -> (State, u64) {
    let mut client = testkit::broker::client(bootstrap);
    // Assigned partitions, no membership; librdkafka still wants a group id.
    client.set("group.id", "kafka-changelog-restore");
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let (ledgers, records) =
        segmenter::changelog::restore_partitions(&client, CHANGELOG, &partitions).unwrap();
    let mut state = State::new();
    for ledger in ledgers.values() {
        for key in ledger.all_customers() {
            let s = ledger.summary(key).unwrap();
            state.insert(
                (ledger.shop_of(key).to_owned(), key.customer_id),
                (s.total_spent, s.orders_count, s.email),
            );
        }
    }
    (state, records)
}

/// What the cleaner could still remove from the changelog: records whose key appears again
/// later (superseded versions), and tombstones. The filler tombstones (key
/// [`filler_key`]) are not the history's and are left out.
async fn left_to_clean(bootstrap: &str) -> (usize, usize) {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut seen = std::collections::HashSet::new();
        let (mut duplicates, mut tombstones) = (0, 0);
        for m in testkit::topic::read_all(&b, CHANGELOG) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            if key == filler_key() {
                continue;
            }
            if !seen.insert(key) {
                duplicates += 1;
            }
            if m.payload().is_none() {
                tombstones += 1;
            }
        }
        (duplicates, tombstones)
    })
    .await
    .unwrap()
}

/// The key of an order nobody has: deleting it changes no state.
fn filler_key() -> String {
    OrderRecord::key(SHOP, 0, 0)
}

async fn wait_processed(running: &Running, records: u64) {
    let m = running
        .metrics_after(records, Duration::from_secs(90))
        .await;
    assert!(
        metric_sum(&m, "tierflow_segmenter_records_total") >= records,
        "not all records processed: {m}"
    );
    assert_eq!(metric_sum(&m, "tierflow_segmenter_batch_failures_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_after_the_log_cleaner_ran_rebuilds_the_state_before_compaction() {
    let broker = testkit::Broker::kafka_without_topics(1);
    let b = broker.bootstrap_servers();
    // The changelog as production makes it (compacted, co-partitioned) but with the cleaner
    // made eager: a segment rolls after 300 ms, any dirt is worth cleaning, and tombstones
    // are dropped 100 ms after a clean — so within seconds the cleaner has removed superseded
    // versions and, on a later pass, the redaction's tombstones themselves.
    testkit::broker::create_topic(
        &b,
        CHANGELOG,
        PARTITIONS,
        &[
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "1"),
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
        ],
    )
    .await;
    testkit::broker::ensure_pipeline_topics(&b, 1, PARTITIONS).await;

    // A history where most orders have several versions (only the newest survives
    // compaction), then two customers redacted (their orders become tombstones).
    let (versions, mut inputs) = history(60, 7);
    let mut redacted: Vec<u64> = versions.iter().map(|v| v.customer).collect();
    redacted.dedup();
    redacted.truncate(2);
    for c in &redacted {
        inputs.push(Input {
            topic: "customers/redact",
            key: format!("{SHOP}/{c}"),
            body: format!(r#"{{"shop_id":1,"shop_domain":"{SHOP}","customer":{{"id":{c},"email":"x@y"}},"orders_to_redact":[]}}"#).into_bytes(),
            webhook_id: format!("redact-{c}"),
        });
    }
    produce(&b, &inputs[..inputs.len() - redacted.len()]).await;
    let running = start(settings(&b, "g-kafka-changelog"), &b).await;
    wait_processed(&running, (inputs.len() - redacted.len()) as u64).await;
    produce(&b, &inputs[inputs.len() - redacted.len()..]).await;
    wait_processed(&running, inputs.len() as u64).await;
    running.stop().await;

    let b2 = b.clone();
    let (before, records_before) = tokio::task::spawn_blocking(move || restore(&b2))
        .await
        .unwrap();
    // Before compaction the restored state is the spend rule's answer for everyone left.
    let want = reference(&versions);
    let want_customers = want.len() - redacted.len();
    assert_eq!(before.len(), want_customers, "{before:?}");
    for (c, (total, count)) in &want {
        let restored = before.get(&(SHOP.to_owned(), *c)).map(|s| (s.0, s.1));
        if redacted.contains(c) {
            assert_eq!(restored, None, "customer {c} was redacted");
        } else {
            assert_eq!(restored, Some((*total, *count)), "customer {c}");
        }
    }

    // Segments roll only when a record arrives after segment.ms: a harmless tombstone (an
    // order nobody has) in every partition, repeated, makes the history's segments
    // cleanable. Then wait until the cleaner has removed records.
    let producer: FutureProducer = testkit::broker::client(&b).create().unwrap();
    let nobody = filler_key();
    let (superseded, tombstones) = left_to_clean(&b).await;
    assert!(
        superseded > 0 && tombstones > 0,
        "the history must leave the cleaner work: {superseded} superseded, {tombstones} tombstones"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let (after, records_after) = loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for p in 0..PARTITIONS {
            producer
                .send(
                    FutureRecord::<str, [u8]>::to(CHANGELOG)
                        .partition(p)
                        .key(&nobody),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        // Fully compacted: among the history's records (the fillers aside) no key is left
        // twice and no tombstone is left at all.
        let (duplicates, tombstones) = left_to_clean(&b).await;
        if duplicates == 0 && tombstones == 0 {
            let b2 = b.clone();
            break tokio::task::spawn_blocking(move || restore(&b2))
                .await
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s the cleaner left {duplicates} superseded versions and {tombstones} tombstones"
        );
    };
    eprintln!(
        "changelog: {records_before} records before compaction ({superseded} superseded versions, {tombstones} tombstones), {records_after} after; {} customers",
        after.len()
    );
    assert_eq!(after, before, "the restore after compaction differs");

    // The service's own restore on the compacted log: a partition is restored when records
    // for it arrive, so every surviving customer gets a new pending order (which counts for
    // nothing); afterwards the segmenter holds exactly the surviving customers.
    let running = start(settings(&b, "g-kafka-changelog"), &b).await;
    let news: Vec<Input> = before
        .keys()
        .enumerate()
        .map(|(i, (_, c))| {
            Version {
                order_id: 9_000_000 + i as u64,
                customer: *c,
                cents: 100,
                second: 1,
                cancelled: false,
                test: false,
                status: "pending",
            }
            .input(&format!("after-compaction-{i}"))
        })
        .collect();
    produce(&b, &news).await;
    wait_processed(&running, news.len() as u64).await;
    let m = running.metrics().await;
    assert_eq!(
        metric_sum(&m, "tierflow_segmenter_customers"),
        want_customers as u64,
        "{m}"
    );
    running.stop().await;
    let b2 = b.clone();
    let (again, _) = tokio::task::spawn_blocking(move || restore(&b2))
        .await
        .unwrap();
    assert_eq!(again, before, "a pending order changes no total");
}
