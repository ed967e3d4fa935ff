//! The pipeline's topics as production creates them, through the Admin API: what each needs
//! (partitions, replication, `min.insync.replicas`, compaction for the changelog,
//! co-partitioning), and a check of existing topics against it that reports drift instead of
//! silently "fixing" what cannot be changed safely (more partitions would move customers'
//! keys to other partitions and break the changelog's co-partitioning).

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::config::TopicsConfig;

/// One topic as the pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic configs that must hold (`cleanup.policy`, `min.insync.replicas`).
    pub configs: Vec<(&'static str, String)>,
    /// The changelog must have exactly as many partitions as the orders topic has.
    pub co_partitioned_with: Option<String>,
    /// The pipeline cannot run on this topic unless it is compacted (the changelog: restores
    /// would read every version ever written). Other compacted topics work on `delete`, with
    /// less history: a difference there is a warning.
    pub compaction_required: bool,
}

/// How the topics should be laid out (flags of `tierflow topics ensure`).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub partitions: i32,
    pub replication: i32,
    pub min_insync_replicas: i32,
}

/// Every pipeline topic: the orders topic and its quarantine and the writer's dead letters
/// (`cleanup.policy=delete`), the segment updates (compacted: keyed by customer and each one
/// absolute state, the topic keeps every customer's latest state however old, which
/// `okta-writer reconcile` reads as a KTable's changelog), and the segmenter's compacted
/// changelog, co-partitioned with the orders topic.
pub fn pipeline_topics(topics: &TopicsConfig, layout: Layout) -> Vec<TopicSpec> {
    let spec = |name: &str, policy: &str, co: Option<&str>| TopicSpec {
        name: name.to_owned(),
        partitions: layout.partitions,
        replication: layout.replication,
        configs: vec![
            ("cleanup.policy", policy.to_owned()),
            (
                "min.insync.replicas",
                layout.min_insync_replicas.to_string(),
            ),
        ],
        co_partitioned_with: co.map(str::to_owned),
        compaction_required: false,
    };
    vec![
        spec(&topics.orders, "delete", None),
        spec(&topics.orders_quarantine, "delete", None),
        spec(&topics.segments, "compact", None),
        spec(&topics.okta_dlq, "delete", None),
        TopicSpec {
            compaction_required: true,
            ..spec(&topics.ledger_changelog, "compact", Some(&topics.orders))
        },
    ]
}

/// What `ensure` found (or did) for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Missing; created (or would be, on a dry run).
    Created { name: String, executed: bool },
    /// Exists as specified.
    Ok { name: String },
    /// Exists but differs. `fatal` when the pipeline cannot run on it (the changelog not
    /// compacted or not co-partitioned); otherwise a warning (e.g. another partition count).
    Drift {
        name: String,
        what: String,
        fatal: bool,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Created {
                name,
                executed: true,
            } => write!(f, "created  {name}"),
            Finding::Created {
                name,
                executed: false,
            } => write!(f, "missing  {name} (would create; --execute)"),
            Finding::Ok { name } => write!(f, "ok       {name}"),
            Finding::Drift { name, what, fatal } => write!(
                f,
                "{}  {name}: {what}",
                if *fatal { "DRIFT!" } else { "drift " }
            ),
        }
    }
}

/// Check every topic of `specs`; create the missing ones when `execute`. Existing topics are
/// never altered: drift is reported for an operator to decide.
pub fn ensure(
    config: &ClientConfig,
    specs: &[TopicSpec],
    execute: bool,
    timeout: Duration,
) -> anyhow::Result<Vec<Finding>> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating a Kafka admin client")?;
    // A topic the metadata read did not show may still exist: created a moment ago (by
    // someone else, or just before this run) and not yet in the answering broker's metadata
    // cache. Creating it then fails with TopicAlreadyExists; checking it again once the
    // metadata shows it reports its drift instead of calling it created.
    let mut raced = Vec::new();
    for attempt in 1..=5u32 {
        let findings;
        (findings, raced) = ensure_once(&admin, specs, execute, timeout)?;
        if raced.is_empty() {
            return Ok(findings);
        }
        std::thread::sleep(Duration::from_millis(200) * attempt);
    }
    anyhow::bail!(
        "topics {} exist, but the brokers' metadata does not show them yet; run again",
        raced.join(", ")
    )
}

/// One pass of [`ensure`]: the findings, and the topics that turned out to exist when created.
fn ensure_once(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    execute: bool,
    timeout: Duration,
) -> anyhow::Result<(Vec<Finding>, Vec<String>)> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, timeout)
        .context("fetching topic metadata")?;
    let existing = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| {
                let replication = t
                    .partitions()
                    .iter()
                    .map(|p| p.replicas().len() as i32)
                    .min()
                    .unwrap_or(0);
                (t.partitions().len() as i32, replication)
            })
    };
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let mut findings = Vec::new();
    let mut to_create = Vec::new();
    for spec in specs {
        let Some((partitions, replication)) = existing(&spec.name) else {
            to_create.push(spec);
            continue;
        };
        let mut drift: Vec<(String, bool)> = Vec::new();
        let want_partitions = match &spec.co_partitioned_with {
            Some(other) => existing(other).map_or(spec.partitions, |(p, _)| p),
            None => spec.partitions,
        };
        if partitions != want_partitions {
            let fatal = spec.co_partitioned_with.is_some();
            drift.push((
                format!(
                    "{partitions} partitions, want {want_partitions}{}",
                    if fatal {
                        " (must equal the orders topic's: recreate it, then `segmenter replay --rebuild-state`)"
                    } else {
                        " (never increased here: it would move customers to other partitions)"
                    }
                ),
                fatal,
            ));
        }
        if replication < spec.replication {
            drift.push((
                format!(
                    "replication factor {replication}, want {}",
                    spec.replication
                ),
                false,
            ));
        }
        let described = futures::executor::block_on(
            admin.describe_configs(&[ResourceSpecifier::Topic(&spec.name)], &options),
        )
        .with_context(|| format!("describing topic {}", spec.name))?;
        let resource = described
            .into_iter()
            .next()
            .and_then(Result::ok)
            .with_context(|| format!("the broker did not describe topic {}", spec.name))?;
        for (key, want) in &spec.configs {
            let have = resource.get(key).and_then(|e| e.value.clone());
            if have.as_deref() != Some(want.as_str()) {
                // A segments topic on `delete` keeps working; the reconciler then sees only
                // customers updated within its retention.
                let fatal = *key == "cleanup.policy" && spec.compaction_required;
                drift.push((
                    format!(
                        "{key} = {}, want {want}",
                        have.as_deref().unwrap_or("(unset)")
                    ),
                    fatal,
                ));
            }
        }
        if drift.is_empty() {
            findings.push(Finding::Ok {
                name: spec.name.clone(),
            });
        }
        for (what, fatal) in drift {
            findings.push(Finding::Drift {
                name: spec.name.clone(),
                what,
                fatal,
            });
        }
    }
    if !to_create.is_empty() && execute {
        let new: Vec<NewTopic<'_>> = to_create
            .iter()
            .map(|spec| {
                let partitions = spec
                    .co_partitioned_with
                    .as_deref()
                    .and_then(existing)
                    .map_or(spec.partitions, |(p, _)| p);
                spec.configs.iter().fold(
                    NewTopic::new(
                        &spec.name,
                        partitions,
                        TopicReplication::Fixed(spec.replication),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let results = futures::executor::block_on(admin.create_topics(&new, &options))
            .context("creating topics")?;
        let mut raced = Vec::new();
        for r in results {
            match r {
                Ok(_) => {}
                Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    raced.push(name)
                }
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        if !raced.is_empty() {
            return Ok((findings, raced));
        }
    }
    for spec in to_create {
        findings.push(Finding::Created {
            name: spec.name.clone(),
            executed: execute,
        });
    }
    Ok((findings, Vec::new()))
}
