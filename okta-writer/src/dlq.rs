//! The dead-letter topic: writing entries, and the `okta-writer dlq list|redrive` commands.
//!
//! An entry is the failed segment update's original key, value and headers plus the headers in
//! [`schemas::headers::dlq`]: where it came from (Kafka Connect's `__connect.errors.*`), why
//! (reason, class, message, HTTP status, Okta errorCode/errorId/request id), and how hard it
//! was tried (attempts, first and last failure). The topic is append-only: `redrive` records its
//! outcome for an entry as a marker record (same key, headers `tierflow-dlq-redrive-of` and
//! `-outcome`), and `list` counts an entry as open until a marker says `applied`, `skipped` or
//! `superseded`.
//!
//! Redrive never writes an old state over a newer one: before applying an entry it reads the
//! rest of the entry's source partition of `customer.segments`, and if the customer has a later
//! update there (which the writer applied or dead-lettered in its turn), the entry is
//! `superseded` and left alone. Of several open entries for one customer only the newest is
//! applied.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset};
use schemas::headers::dlq;
use schemas::SegmentUpdate;
use service_runtime::kafka::with_headers;

use crate::apply::{Applier, ApplyError, Outcome, Trust};
use crate::client::Failure;
use crate::config::Settings;
use crate::failure::DeadLetterReason;

/// Why and how a record failed.
#[derive(Debug)]
pub struct FailureContext<'a> {
    pub reason: DeadLetterReason,
    pub message: String,
    pub failure: Option<&'a Failure>,
    pub coalesced: usize,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The dead-letter headers: the original ones, then the failure's.
pub fn headers(
    original: Option<&OwnedHeaders>,
    source: (&str, i32, i64),
    ctx: &FailureContext<'_>,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(orig) = original {
        for hd in orig.iter() {
            out = out.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    let now = SystemTime::now();
    let f = ctx.failure;
    let body = f.and_then(|f| f.last.body());
    let (attempts, first, last) = f.map_or((1, now, now), |f| {
        (f.attempts, f.first_failure, f.last_failure)
    });
    with_headers(
        out,
        &[
            (dlq::TOPIC, Some(source.0)),
            (dlq::PARTITION, Some(&source.1.to_string())),
            (dlq::OFFSET, Some(&source.2.to_string())),
            (dlq::EXCEPTION_CLASS, Some(ctx.reason.exception_class())),
            (dlq::EXCEPTION_MESSAGE, Some(&ctx.message)),
            (dlq::REASON, Some(ctx.reason.label())),
            (dlq::COALESCED, Some(&ctx.coalesced.to_string())),
            (dlq::OPERATION, f.map(|f| f.last.operation)),
            (
                dlq::HTTP_STATUS,
                f.and_then(|f| f.last.status())
                    .map(|s| s.to_string())
                    .as_deref(),
            ),
            (
                dlq::OKTA_ERROR_CODE,
                body.and_then(|b| b.error_code.as_deref()),
            ),
            (dlq::OKTA_ERROR_ID, body.and_then(|b| b.error_id.as_deref())),
            (
                dlq::OKTA_REQUEST_ID,
                f.and_then(|f| f.last.request_id.as_deref()),
            ),
            (dlq::ATTEMPTS, Some(&attempts.to_string())),
            (dlq::FIRST_FAILURE_AT, Some(&rfc3339(first))),
            (dlq::LAST_FAILURE_AT, Some(&rfc3339(last))),
        ],
    )
}

/// Produce one record and wait for the broker's ack.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: OwnedHeaders,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, timeout)
        .await
        .map(|_| ())
        .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))
}

/// A record of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Entry {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

impl Entry {
    fn from_message(m: &BorrowedMessage<'_>) -> Entry {
        Entry {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|hd| (hd.key.to_owned(), hd.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn id(&self) -> String {
        format!("{}/{}", self.partition, self.offset)
    }

    pub fn reason(&self) -> &str {
        self.header(dlq::REASON).unwrap_or("unknown")
    }

    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    /// When it last failed (the record's timestamp if the header is missing).
    pub fn failed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.header(dlq::LAST_FAILURE_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|| {
                self.timestamp_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
            })
    }

    fn source(&self) -> Option<(String, i32, i64)> {
        Some((
            self.header(dlq::TOPIC)?.to_owned(),
            self.header(dlq::PARTITION)?.parse().ok()?,
            self.header(dlq::OFFSET)?.parse().ok()?,
        ))
    }
}

type Time = chrono::DateTime<chrono::Utc>;

/// (segments topic, partition, record key) → offset of the customer's newest update there.
type NewestUpdates = HashMap<(String, i32, Vec<u8>), i64>;

/// The topic's entries with the last redrive outcome recorded for each.
#[derive(Debug, Default)]
pub struct DeadLetters {
    pub entries: Vec<Entry>,
    /// Entry id → (outcome, message).
    pub outcomes: HashMap<String, (String, String)>,
}

impl DeadLetters {
    /// Entries not yet resolved by a redrive.
    pub fn open(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| {
            !matches!(
                self.outcomes.get(&e.id()).map(|(o, _)| o.as_str()),
                Some("applied" | "skipped" | "superseded")
            )
        })
    }
}

fn reader(settings: &Settings, bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    topic_reader(settings, bootstrap, "tierflow-okta-writer-dlq")
}

/// A consumer that reads topics by assignment (no group joined, nothing committed), as
/// `client_id`.
pub(crate) fn topic_reader(
    settings: &Settings,
    bootstrap: &str,
    client_id: &str,
) -> anyhow::Result<BaseConsumer> {
    service_runtime::kafka::topic_reader(&settings.kafka, bootstrap, client_id)
}

/// Read the whole dead-letter topic as it is now.
pub fn read(settings: &Settings, bootstrap: &str) -> anyhow::Result<DeadLetters> {
    let topic = settings.topics.okta_dlq.as_str();
    let consumer = reader(settings, bootstrap)?;
    let mut out = DeadLetters::default();
    service_runtime::kafka::read_topic_now(&consumer, topic, |m| {
        let e = Entry::from_message(m);
        if let Some(of) = e.header(dlq::REDRIVE_OF) {
            let outcome = e
                .header(dlq::REDRIVE_OUTCOME)
                .unwrap_or("failed")
                .to_owned();
            let message = e.header(dlq::REDRIVE_MESSAGE).unwrap_or("").to_owned();
            out.outcomes.insert(of.to_owned(), (outcome, message));
        } else {
            out.entries.push(e);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Which entries `list` shows and `redrive` takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these reasons (all when empty).
    pub reasons: Vec<String>,
    /// Only entries that last failed at least this long ago.
    pub older_than: Option<Duration>,
    /// Only entries that last failed at most this long ago.
    pub newer_than: Option<Duration>,
    /// At most this many (oldest first).
    pub limit: Option<usize>,
}

impl Filter {
    pub fn select<'a>(&self, dl: &'a DeadLetters) -> Vec<&'a Entry> {
        let now = chrono::Utc::now();
        let age = |e: &Entry| {
            e.failed_at()
                .map(|t| (now - t).to_std().unwrap_or_default())
        };
        let mut picked: Vec<&Entry> = dl
            .open()
            .filter(|e| self.reasons.is_empty() || self.reasons.iter().any(|r| r == e.reason()))
            .filter(|e| {
                self.older_than
                    .is_none_or(|d| age(e).is_some_and(|a| a >= d))
            })
            .filter(|e| {
                self.newer_than
                    .is_none_or(|d| age(e).is_some_and(|a| a <= d))
            })
            .collect();
        picked.sort_by_key(|e| (e.failed_at(), e.partition, e.offset));
        if let Some(n) = self.limit {
            picked.truncate(n);
        }
        picked
    }
}

/// `okta-writer dlq list`: a summary by reason and age, then the selected entries.
pub fn list(
    settings: &Settings,
    bootstrap: &str,
    filter: &Filter,
    show: usize,
) -> anyhow::Result<String> {
    use std::fmt::Write;
    let dl = read(settings, bootstrap)?;
    let picked = filter.select(&dl);
    let now = chrono::Utc::now();
    // reason → (count, oldest failure, newest failure)
    let mut by_reason: BTreeMap<&str, (usize, Option<Time>, Option<Time>)> = BTreeMap::new();
    for e in &picked {
        let r = by_reason.entry(e.reason()).or_default();
        r.0 += 1;
        let t = e.failed_at();
        r.1 = match (r.1, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        r.2 = match (r.2, t) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let age = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| {
            humantime::format_duration(Duration::from_secs((now - t).num_seconds().max(0) as u64))
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
    };
    let mut s = String::new();
    let resolved = dl.entries.len() - dl.open().count();
    writeln!(
        s,
        "{}: {} entries, {} open, {} resolved by redrive; {} selected",
        settings.topics.okta_dlq,
        dl.entries.len(),
        dl.open().count(),
        resolved,
        picked.len()
    )?;
    writeln!(
        s,
        "{:<24} {:>8} {:>16} {:>16}",
        "reason", "count", "oldest", "newest"
    )?;
    for (reason, (n, oldest, newest)) in &by_reason {
        writeln!(
            s,
            "{reason:<24} {n:>8} {:>16} {:>16}",
            age(*oldest),
            age(*newest)
        )?;
    }
    if show > 0 && !picked.is_empty() {
        writeln!(s)?;
        writeln!(
            s,
            "{:<12} {:<40} {:<18} {:<6} {:<10} {:>8} message",
            "entry", "key", "reason", "status", "okta code", "attempts"
        )?;
        for e in picked.iter().take(show) {
            let last = dl
                .outcomes
                .get(&e.id())
                .map(|(o, m)| format!(" [last redrive: {o} {m}]"))
                .unwrap_or_default();
            writeln!(
                s,
                "{:<12} {:<40} {:<18} {:<6} {:<10} {:>8} {}{}",
                e.id(),
                e.key_str(),
                e.reason(),
                e.header(dlq::HTTP_STATUS).unwrap_or("-"),
                e.header(dlq::OKTA_ERROR_CODE).unwrap_or("-"),
                e.header(dlq::ATTEMPTS).unwrap_or("-"),
                e.header(dlq::EXCEPTION_MESSAGE).unwrap_or(""),
                last
            )?;
        }
    }
    Ok(s)
}

/// What redrive did with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveResult {
    pub entry: String,
    pub key: String,
    /// `applied`, `skipped`, `superseded`, `failed`, or `would_redrive` in a dry run.
    pub outcome: String,
    pub message: String,
}

/// What `okta-writer dlq redrive` prints: one line per entry, then the count per outcome.
pub fn redrive_report(results: &[RedriveResult], executed: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    for r in results {
        *counts.entry(r.outcome.as_str()).or_default() += 1;
        let _ = writeln!(
            out,
            "{:<12} {:<40} {:<14} {}",
            r.entry, r.key, r.outcome, r.message
        );
    }
    let _ = writeln!(
        out,
        "{}{} entries: {}",
        if executed {
            ""
        } else {
            "dry run (add --execute to apply): "
        },
        results.len(),
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

/// Customers (record keys) with an update after the given offset in the segments topic, per
/// source partition: key → newest offset.
fn newer_updates(
    settings: &Settings,
    bootstrap: &str,
    from: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<NewestUpdates> {
    let consumer = reader(settings, bootstrap)?;
    let mut newest = HashMap::new();
    for ((topic, partition), start) in from {
        let (_, high) = consumer
            .fetch_watermarks(topic, *partition, Duration::from_secs(10))
            .with_context(|| format!("reading the end of {topic}/{partition}"))?;
        if high <= *start {
            continue;
        }
        let range = service_runtime::kafka::Range {
            partition: *partition,
            start: Offset::Offset(*start),
            end: high,
            len: (high - start) as u64,
        };
        service_runtime::kafka::read_ranges(
            &consumer,
            topic,
            &[range],
            Duration::from_secs(30),
            None,
            |m| {
                if let Some(k) = m.key() {
                    newest.insert((topic.clone(), *partition, k.to_vec()), m.offset());
                }
                Ok(())
            },
        )?;
    }
    Ok(newest)
}

/// `okta-writer dlq redrive`: re-apply the selected open entries (newest per customer), unless
/// a later update of the customer exists; with `execute = false` only say what would happen.
/// Each outcome is recorded as a marker record on the dead-letter topic.
pub async fn redrive(
    settings: &Settings,
    bootstrap: &str,
    applier: &Applier,
    filter: &Filter,
    execute: bool,
    per_second: f64,
) -> anyhow::Result<Vec<RedriveResult>> {
    let dl = {
        let (s, b) = (settings.clone(), bootstrap.to_owned());
        tokio::task::spawn_blocking(move || read(&s, &b)).await??
    };
    let picked: Vec<Entry> = filter.select(&dl).into_iter().cloned().collect();
    // Newest open entry per customer; the older ones are superseded by it.
    let mut newest_entry: HashMap<Vec<u8>, (i64, i32, i64)> = HashMap::new();
    for e in dl.open() {
        let src = e.source().map(|s| s.2).unwrap_or(-1);
        let k = e.key.clone().unwrap_or_default();
        let cand = (src, e.partition, e.offset);
        newest_entry
            .entry(k)
            .and_modify(|v| *v = (*v).max(cand))
            .or_insert(cand);
    }
    let mut from: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in &picked {
        if let Some((t, p, o)) = e.source() {
            let v = from.entry((t, p)).or_insert(o + 1);
            *v = (*v).min(o + 1);
        }
    }
    let later = {
        let (s, b, f) = (settings.clone(), bootstrap.to_owned(), from.clone());
        tokio::task::spawn_blocking(move || newer_updates(&s, &b, &f)).await??
    };
    let producer: FutureProducer = service_runtime::kafka::acked_producer_config(
        &settings.kafka,
        bootstrap,
        &[("client.id", "tierflow-okta-writer-redrive")],
    )?
    .create()
    .context("creating the Kafka producer")?;
    let pause = Duration::from_secs_f64(1.0 / per_second.max(0.01));
    let mut results = Vec::new();
    for e in &picked {
        let key = e.key_str();
        let src = e.source();
        let superseded_by_entry = newest_entry
            .get(&e.key.clone().unwrap_or_default())
            .is_some_and(|n| {
                *n != (
                    src.as_ref().map(|s| s.2).unwrap_or(-1),
                    e.partition,
                    e.offset,
                )
            });
        let superseded_by_update = src.as_ref().is_some_and(|(t, p, o)| {
            later
                .get(&(t.clone(), *p, e.key.clone().unwrap_or_default()))
                .is_some_and(|n| n > o)
        });
        let (outcome, message) = if superseded_by_entry || superseded_by_update {
            (
                "superseded".to_owned(),
                "the customer has a later update; it carries the current state".to_owned(),
            )
        } else if !execute {
            ("would_redrive".to_owned(), String::new())
        } else {
            let parsed = e
                .value
                .as_deref()
                .map(serde_json::from_slice::<SegmentUpdate>);
            match parsed {
                None => ("failed".to_owned(), "the entry has no value".to_owned()),
                Some(Err(err)) => ("failed".to_owned(), format!("not a segment update: {err}")),
                Some(Ok(u)) => {
                    tokio::time::sleep(pause).await;
                    let previous: Vec<String> = u
                        .previous_tier
                        .iter()
                        .map(|t| t.okta_group.clone())
                        .collect();
                    match applier.apply(&u, &previous, Trust::Nothing).await {
                        Ok(Outcome::Applied) => ("applied".to_owned(), String::new()),
                        Ok(Outcome::Skipped(why)) => ("skipped".to_owned(), why.to_owned()),
                        Err(err @ ApplyError::Credentials(_)) => {
                            anyhow::bail!("Okta rejects the writer's credentials; fix them and run redrive again: {err}")
                        }
                        Err(err) => ("failed".to_owned(), err.to_string()),
                    }
                }
            }
        };
        if execute {
            let marker = with_headers(
                OwnedHeaders::new(),
                &[
                    (dlq::REDRIVE_OF, Some(&e.id())),
                    (dlq::REDRIVE_OUTCOME, Some(&outcome)),
                    (dlq::REDRIVE_MESSAGE, Some(&message)),
                ],
            );
            let value = serde_json::json!({"redrive_of": e.id(), "outcome": outcome, "message": message, "at": rfc3339(SystemTime::now())}).to_string();
            produce(
                &producer,
                &settings.topics.okta_dlq,
                e.key.as_deref(),
                Some(value.as_bytes()),
                marker,
                Duration::from_secs(30),
            )
            .await?;
        }
        results.push(RedriveResult {
            entry: e.id(),
            key,
            outcome,
            message,
        });
    }
    Ok(results)
}
