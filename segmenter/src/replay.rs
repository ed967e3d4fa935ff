//! Offset resets for reprocessing history, in the vocabulary of
//! `kafka-consumer-groups --reset-offsets`, plus the state reset a rebuild needs and the
//! decision digest that proves a rebuild reproduced the original run.
//!
//! A reset only moves the group's committed offsets; the segmenter's state would still hold
//! what it learnt, and re-read records would be duplicates. `--rebuild-state` therefore also
//! writes a reset marker to every changelog partition: restore discards everything before the
//! newest marker, so the next run starts from empty state. Both are refused while the group
//! has live members (they would overwrite the reset on their next commit).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

/// Where to move the group's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    /// Milliseconds since the epoch: the first record at or after it.
    Datetime(i64),
}

/// One partition's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub partition: i32,
    pub current: Option<i64>,
    pub target: i64,
    pub low: i64,
    pub high: i64,
}

/// Compute the new offsets for `group` on `topic`.
pub fn plan(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    target: &Target,
) -> anyhow::Result<Vec<Move>> {
    let consumer: BaseConsumer = group_consumer(client, group)?;
    let partitions = service_runtime::kafka::partition_count(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = committed_offsets(&consumer, &tpl)?;
    let by_time = match target {
        Target::Datetime(ms) => {
            let mut q = TopicPartitionList::new();
            for p in 0..partitions {
                q.add_partition_offset(topic, p, Offset::Offset(*ms))?;
            }
            Some(
                consumer
                    .offsets_for_times(q, Duration::from_secs(10))
                    .context(
                    "looking up offsets by time (the broker must support ListOffsets by timestamp)",
                )?,
            )
        }
        _ => None,
    };
    let mut moves = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let current = committed
            .find_partition(topic, p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0);
        let raw = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(o) => *o,
            Target::ShiftBy(n) => current.unwrap_or(low) + n,
            Target::Datetime(_) => by_time
                .as_ref()
                .and_then(|t| t.find_partition(topic, p))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(high),
        };
        moves.push(Move {
            partition: p,
            current,
            target: raw.clamp(low, high),
            low,
            high,
        });
    }
    Ok(moves)
}

/// The group's committed offsets. The group coordinator may not be ready yet (a fresh cluster
/// creates `__consumer_offsets` on the first request, a coordinator moves or loads after a
/// broker restart): those answers are retried for a while, as Kafka's own tools do.
fn committed_offsets(
    consumer: &BaseConsumer,
    tpl: &TopicPartitionList,
) -> anyhow::Result<TopicPartitionList> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => return Ok(c),
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable,
            )) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("reading the group's committed offsets"))
            }
        }
    }
}

/// Why [`ensure_inactive`] did not clear the group.
#[derive(Debug, thiserror::Error)]
pub enum GroupCheckError {
    /// The group has members: a replay now would be overwritten by their next commit.
    #[error("consumer group `{group}` has {members} live member(s) (state {state}): stop every segmenter instance first")]
    LiveMembers {
        group: String,
        members: usize,
        state: String,
    },
    /// The broker could not say (e.g. it has no DescribeGroups, as the embedded one).
    #[error("{0:#}")]
    Unknown(anyhow::Error),
}

/// Fail unless `group` has no live members.
pub fn ensure_inactive(client: &ClientConfig, group: &str) -> Result<(), GroupCheckError> {
    let consumer: BaseConsumer = group_consumer(client, group).map_err(GroupCheckError::Unknown)?;
    let groups = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .context("asking the broker for the group's members")
        .map_err(GroupCheckError::Unknown)?;
    match groups.groups().iter().find(|g| g.name() == group) {
        Some(g) if !g.members().is_empty() => Err(GroupCheckError::LiveMembers {
            group: group.to_owned(),
            members: g.members().len(),
            state: g.state().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Commit the planned offsets for `group`, as a member of it.
///
/// The tool joins the group and commits with its member id: that works on every broker (the
/// embedded one rejects commits from non-members of a group it has seen) and doubles as the
/// live-member check, since any other live member would receive part of the assignment.
pub fn execute(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    moves: &[Move],
) -> anyhow::Result<()> {
    let mut c = client.clone();
    // The broker's minimum: if this tool's leave is lost, its membership expires quickly and
    // the segmenter started next is not kept waiting for it.
    c.set("session.timeout.ms", "6000");
    let consumer: BaseConsumer = group_consumer(&c, group)?;
    consumer.subscribe(&[topic]).context("joining the group")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let assignment = loop {
        // Records polled here are ignored: only the explicit offsets below are committed.
        let _ = consumer.poll(Duration::from_millis(200));
        let a = consumer.assignment().context("reading the assignment")?;
        if a.count() > 0 {
            break a;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "joining consumer group `{group}` took over 60 s"
        );
    };
    let missing: Vec<i32> = moves
        .iter()
        .map(|m| m.partition)
        .filter(|p| assignment.find_partition(topic, *p).is_none())
        .collect();
    if !missing.is_empty() {
        leave(&consumer);
        anyhow::bail!(
            "consumer group `{group}` has other live members (they hold partitions {missing:?}): stop every segmenter instance first"
        );
    }
    let mut tpl = TopicPartitionList::new();
    for m in moves {
        tpl.add_partition_offset(topic, m.partition, Offset::Offset(m.target))?;
    }
    let result = consumer
        .commit(&tpl, CommitMode::Sync)
        .context("committing the new offsets");
    leave(&consumer);
    result
}

/// Leave the group and let librdkafka finish the revoke and the LeaveGroup request, so the
/// next member does not wait out this one's session.
fn leave(consumer: &BaseConsumer) {
    consumer.unsubscribe();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(100));
        if consumer.assignment().is_ok_and(|a| a.count() == 0) {
            break;
        }
    }
}

fn group_consumer(client: &ClientConfig, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut c = client.clone();
    c.set("group.id", group).set("enable.auto.commit", "false");
    c.create().context("creating a consumer")
}

/// Per-partition offsets, `P:O,P:O`; absent partitions mean "the start" or "the end".
pub fn parse_offsets(text: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (p, o) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("`{pair}` is not PARTITION:OFFSET"))?;
            Ok((p.parse()?, o.parse()?))
        })
        .collect()
}

/// A digest of the decisions in `[from, to)` of the segments topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionDigest {
    /// Per partition: distinct decisions (exact redeliveries, same event id, counted once) and
    /// the SHA-256 of their event ids in order.
    pub partitions: BTreeMap<i32, (u64, String)>,
    /// Over all partitions in partition order.
    pub combined: String,
    /// The end offsets read to, for `--from` of a later run.
    pub ends: BTreeMap<i32, i64>,
}

pub fn digest(
    client: &ClientConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    to: Option<&BTreeMap<i32, i64>>,
) -> anyhow::Result<DecisionDigest> {
    let consumer: BaseConsumer = group_consumer(client, "tierflow-digest")?;
    let partitions = service_runtime::kafka::partition_count(&consumer, topic)?;
    let mut out = DecisionDigest {
        partitions: BTreeMap::new(),
        combined: String::new(),
        ends: BTreeMap::new(),
    };
    let mut ranges = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let start = from.get(&p).copied().unwrap_or(low).max(low);
        let end = to
            .and_then(|t| t.get(&p).copied())
            .unwrap_or(high)
            .min(high);
        out.ends.insert(p, end);
        if start < end {
            ranges.push(service_runtime::kafka::Range {
                partition: p,
                start: Offset::Offset(start),
                end,
                len: u64::try_from(end - start)?,
            });
        }
    }
    // Per partition: the event ids seen, their count and the running hash, in offset order.
    let mut per: BTreeMap<i32, (BTreeSet<String>, u64, Sha256)> = (0..partitions)
        .map(|p| (p, (BTreeSet::new(), 0, Sha256::new())))
        .collect();
    service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(10),
        None,
        |m| {
            let u: schemas::SegmentUpdate = serde_json::from_slice(m.payload().unwrap_or_default())
                .with_context(|| {
                    format!(
                        "partition {} offset {} is not a segment update",
                        m.partition(),
                        m.offset()
                    )
                })?;
            let (seen, count, h) = per
                .get_mut(&m.partition())
                .expect("assigned partitions only");
            if seen.insert(u.event_id.clone()) {
                h.update(u.event_id.as_bytes());
                h.update(b"\n");
                *count += 1;
            }
            Ok(())
        },
    )?;
    let mut combined = Sha256::new();
    for (p, (_, count, h)) in per {
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        combined.update(format!("{p}:{count}:{hex}\n").as_bytes());
        out.partitions.insert(p, (count, hex));
    }
    out.combined = combined
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(out)
}
