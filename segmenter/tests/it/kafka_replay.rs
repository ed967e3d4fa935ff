//! Replay by time and the live-member refusal on Apache Kafka (one KRaft node from
//! `scripts/kafka.py`): what the mock cluster cannot do (no offsets-for-times, no ListGroups).
//! `--to-datetime` / `--by-duration` must land each partition on its first record at or after
//! the time, and `replay --execute` must be refused while the group has a live member.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use segmenter::replay::{ensure_inactive, plan, GroupCheckError, Target};

const TOPIC: &str = "shopify.orders";
const PARTITIONS: i32 = 6;
const GROUP: &str = "g-kafka-replay";
/// 2026-01-01 and 2026-06-01, in milliseconds since the epoch.
const JANUARY: i64 = 1_767_225_600_000;
const JUNE: i64 = 1_780_272_000_000;

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

#[tokio::test]
async fn replay_by_time_and_the_live_member_refusal() {
    let broker = testkit::Broker::kafka(1, PARTITIONS);
    let kafka = broker.apache_kafka().unwrap();

    // Partition p gets p + 1 records from January, then 2 from June (record timestamps are
    // the producer's, as the ingest's are).
    let producer: FutureProducer = client(&kafka.bootstrap).create().unwrap();
    for p in 0..PARTITIONS {
        let stamps = (0..=p)
            .map(|i| JANUARY + i64::from(i) * 1000)
            .chain([JUNE, JUNE + 1000]);
        for (i, ts) in stamps.enumerate() {
            let value = format!("record {i}");
            producer
                .send(
                    FutureRecord::<str, str>::to(TOPIC)
                        .partition(p)
                        .key("k")
                        .payload(&value)
                        .timestamp(ts),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }

    let b = kafka.bootstrap.clone();
    let moves = tokio::task::spawn_blocking(move || {
        // The first record at or after February: the first June record of each partition.
        let february = Target::Datetime(JANUARY + 31 * 24 * 3600 * 1000);
        let by_time = plan(&client(&b), GROUP, TOPIC, &february).unwrap();
        // Before everything: the start; after everything: the end.
        let before = plan(&client(&b), GROUP, TOPIC, &Target::Datetime(JANUARY - 1)).unwrap();
        let after = plan(&client(&b), GROUP, TOPIC, &Target::Datetime(JUNE + 10_000)).unwrap();
        (by_time, before, after)
    })
    .await
    .unwrap();
    for p in 0..PARTITIONS as usize {
        let january_records = p as i64 + 1;
        assert_eq!(
            moves.0[p].target, january_records,
            "partition {p}: {:?}",
            moves.0[p]
        );
        assert_eq!(moves.1[p].target, 0, "partition {p}");
        assert_eq!(moves.2[p].target, january_records + 2, "partition {p}");
    }

    // A live member of the group (a running segmenter, here a plain group consumer).
    let b = kafka.bootstrap.clone();
    let (refused, after_leaving) = tokio::task::spawn_blocking(move || {
        let member: BaseConsumer = client(&b)
            .set("group.id", GROUP)
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        member.subscribe(&[TOPIC]).unwrap();
        // Poll until the group has given it partitions: it is a member then.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while member.assignment().unwrap().count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "never joined the group"
            );
            let _ = member.poll(Duration::from_millis(100));
        }
        let refused = ensure_inactive(&client(&b), GROUP);
        member.unsubscribe();
        drop(member); // leaves the group
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let after = loop {
            let r = ensure_inactive(&client(&b), GROUP);
            if r.is_ok() || std::time::Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        (refused, after)
    })
    .await
    .unwrap();
    let e = refused.expect_err("a live member must block the replay");
    assert!(
        matches!(e, GroupCheckError::LiveMembers { members: 1, .. }),
        "{e:#}"
    );
    after_leaving.expect("once the member left, the replay may go ahead");
}
