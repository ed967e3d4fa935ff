//! The lag the services export (`service_runtime::lag`, behind every consumer's
//! `kafka_consumergroup_*` gauges and `tierflow lag`) against Kafka's own
//! `kafka-consumer-groups.sh --describe` (`ConsumerGroupCommand`) for the same group, on
//! Apache Kafka (one KRaft node): a live member has committed a different offset on each
//! partition and nothing on one; committed offsets, log ends and lags must agree partition by
//! partition.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "shopify.orders";
const GROUP: &str = "g-lag-check";
const PARTITIONS: i32 = 6;

/// ConsumerGroupCommand's rows: partition → (CURRENT-OFFSET, LOG-END-OFFSET, LAG), `None`
/// where it prints `-`.
type Described = BTreeMap<i32, (Option<i64>, i64, Option<i64>)>;

fn describe(kafka: &service_runtime::kafka::LocalKafka) -> Described {
    let out = kafka
        .tool(
            "consumer-groups",
            &[
                "--bootstrap-server",
                &kafka.bootstrap,
                "--describe",
                "--group",
                GROUP,
            ],
        )
        .unwrap();
    let mut rows = Described::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0] != GROUP || f[1] != TOPIC {
            continue;
        }
        let num = |s: &str| s.parse::<i64>().ok();
        rows.insert(
            f[2].parse().unwrap(),
            (num(f[3]), num(f[4]).unwrap(), num(f[5])),
        );
    }
    assert_eq!(rows.len(), PARTITIONS as usize, "{out}");
    rows
}

#[test]
fn exported_lag_equals_kafkas_consumer_group_describe() {
    let broker = testkit::Broker::kafka(1, PARTITIONS);
    let kafka = broker.apache_kafka().unwrap();
    // Partition p holds 10 (p + 1) records.
    let producer: ThreadedProducer<DefaultProducerContext> = broker.client().create().unwrap();
    for p in 0..PARTITIONS {
        for _ in 0..10 * (p + 1) {
            producer
                .send(BaseRecord::<str, str>::to(TOPIC).partition(p).payload("x"))
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // A live member of the group owns every partition and commits 3p on partition p, except
    // the last, where it commits nothing.
    let mut member_config = broker.client();
    member_config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let member: BaseConsumer = member_config.create().unwrap();
    member.subscribe(&[TOPIC]).unwrap();
    let started = Instant::now();
    while member.assignment().unwrap().count() < PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never assigned"
        );
        let _ = member.poll(Duration::from_millis(100));
    }
    let mut commits = TopicPartitionList::new();
    for p in 0..PARTITIONS - 1 {
        commits
            .add_partition_offset(TOPIC, p, Offset::Offset(i64::from(3 * p)))
            .unwrap();
    }
    member.commit(&commits, CommitMode::Sync).unwrap();

    let kafka_says = describe(kafka);
    let ours = service_runtime::lag::snapshot(&broker.client(), GROUP, TOPIC).unwrap();
    let registry = prometheus::Registry::new();
    let gauges = service_runtime::lag::LagMetrics::register(&registry).unwrap();
    gauges.set(GROUP, TOPIC, &ours);
    let mut total = 0;
    for l in &ours {
        let (current, end, lag) = kafka_says[&l.partition];
        assert_eq!(l.end, end, "log end of partition {}", l.partition);
        assert_eq!(l.committed, current, "committed offset of {}", l.partition);
        let exported = gauges
            .lag
            .with_label_values(&[GROUP, TOPIC, &l.partition.to_string()])
            .get();
        assert_eq!(exported, l.lag);
        match lag {
            Some(lag) => assert_eq!(l.lag, lag, "lag of partition {}", l.partition),
            // Nothing committed: Kafka prints `-`; the exporter counts from the log start
            // (what `auto.offset.reset=earliest` will read), like kafka_exporter does.
            None => assert_eq!(l.lag, end, "lag of uncommitted partition {}", l.partition),
        }
        total += l.lag;
    }
    assert_eq!(
        gauges.lag_sum.with_label_values(&[GROUP, TOPIC]).get(),
        total
    );

    // `tierflow lag` prints the same figures.
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["lag", "--config"])
        .arg(config)
        .args(["--brokers", &kafka.bootstrap, "--group"])
        .arg(format!("{GROUP}:{TOPIC}"))
        .env_remove("TIERFLOW_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for (p, (current, end, lag)) in &kafka_says {
        let row = table
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 6 && f[0] == GROUP && f[2] == p.to_string()
            })
            .unwrap_or_else(|| panic!("no row for partition {p}: {table}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(f[3], current.map_or("-".into(), |c| c.to_string()), "{row}");
        assert_eq!(f[4], end.to_string(), "{row}");
        assert_eq!(f[5], lag.unwrap_or(*end).to_string(), "{row}");
    }
    drop(member);
}
