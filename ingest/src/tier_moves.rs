//! Tiers before → after, for the summary of `ingest backfill`: what the history did to the
//! shop's customers.
//!
//! The tiers are read where the pipeline keeps them: `customer.segments` is compacted and keyed
//! `<shop>/<customer id>`, so its newest record per key is a customer's current state (the
//! Okta writer's reconciler reads it the same way). "Before" is read when the run starts;
//! "after" once the segmenter's group has consumed the orders topic up to where it ended when
//! the backfill's last record was acknowledged. The segmenter stores a record's offset only
//! after its segment update is acknowledged, so a committed offset past the backfill means the
//! updates it caused are readable. A segmenter that does not catch up within the wait is
//! reported with its lag, not waited for forever: the backfill itself is done by then.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::Message;
use schemas::SegmentUpdate;
use serde::Serialize;

use crate::config::Settings;

/// How long the segmenter may make no progress on the backfill before the wait gives up.
pub const STALL: Duration = Duration::from_secs(60);

/// A customer tierflow has no segment update for (never seen, or every order deleted before
/// it decided anything).
pub const NONE: &str = "(none)";
/// A customer whose data was redacted (their newest update is a `redact`, without a tier).
pub const REDACTED: &str = "(redacted)";

/// The tier of each of a shop's customers, by customer id. Tier names are interned: a shop
/// has millions of customers and a handful of tiers.
#[derive(Debug, Default)]
pub struct Tiers {
    names: Vec<String>,
    of: HashMap<u64, u16>,
}

impl Tiers {
    fn insert(&mut self, customer: u64, tier: &str) {
        let index = match self.names.iter().position(|n| n == tier) {
            Some(i) => i,
            None => {
                self.names.push(tier.to_owned());
                self.names.len() - 1
            }
        };
        // A tier table has far fewer than 65,536 rows (it is validated at the segmenter).
        self.of
            .insert(customer, u16::try_from(index).unwrap_or(u16::MAX));
    }

    pub fn get(&self, customer: u64) -> &str {
        self.of
            .get(&customer)
            .and_then(|&i| self.names.get(usize::from(i)))
            .map_or(NONE, String::as_str)
    }

    pub fn len(&self) -> usize {
        self.of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }
}

/// What the summary says about tiers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TierReport {
    /// The run's customers by their tier when it started.
    pub before: BTreeMap<String, u64>,
    /// The run's customers by (tier before, tier after), when the segmenter caught up.
    pub moves: Option<BTreeMap<(String, String), u64>>,
    /// Why there is no "after" (a dry run, or the segmenter still behind).
    pub after_missing: Option<String>,
}

impl TierReport {
    pub fn render(&self) -> String {
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!("tiers when the run started: {}", list(&self.before));
        match (&self.moves, &self.after_missing) {
            (Some(moves), _) => {
                let unchanged: u64 = moves
                    .iter()
                    .filter(|((a, b), _)| a == b)
                    .map(|(_, n)| n)
                    .sum();
                let moved: Vec<String> = moves
                    .iter()
                    .filter(|((a, b), _)| a != b)
                    .map(|((a, b), n)| format!("{a} → {b} {n}"))
                    .collect();
                out.push_str(&format!(
                    "; before → after: {}{unchanged} unchanged",
                    if moved.is_empty() {
                        String::new()
                    } else {
                        format!("{}; ", moved.join(", "))
                    }
                ));
            }
            (None, Some(why)) => out.push_str(&format!("; no tiers after: {why}")),
            (None, None) => {}
        }
        out
    }
}

fn reader(settings: &Settings, bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    service_runtime::kafka::topic_reader(&settings.kafka, bootstrap, "tierflow-backfill-tiers")
}

/// The current tier of every customer of `shop`, from `customer.segments` as it is now.
/// Blocking (it polls a consumer): call it from a blocking thread.
pub fn read(settings: &Settings, bootstrap: &str, shop: &str) -> anyhow::Result<Tiers> {
    let topic = settings.topics.segments.as_str();
    let consumer = reader(settings, bootstrap)?;
    let prefix = format!("{shop}/");
    let mut tiers = Tiers::default();
    service_runtime::kafka::read_topic_now(&consumer, topic, |m| {
        let ours = m.key().is_some_and(|k| k.starts_with(prefix.as_bytes()));
        if !ours {
            return Ok(());
        }
        // A record that is not a segment update is skipped: the Okta writer reports those.
        if let Some(u) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<SegmentUpdate>(p).ok())
        {
            let name = u.tier.as_ref().map_or(REDACTED, |t| t.name.as_str());
            tiers.insert(u.customer_id, name);
        }
        Ok(())
    })?;
    Ok(tiers)
}

/// Per partition of the orders topic, its (start, end) offsets now.
fn orders_marks(settings: &Settings, bootstrap: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer = reader(settings, bootstrap)?;
    service_runtime::kafka::watermarks(&consumer, &settings.topics.orders)
}

/// Records of the orders topic below `marks`' ends the segmenter's group has not committed
/// past (from a partition's start where it has committed nothing).
fn behind(
    settings: &Settings,
    bootstrap: &str,
    marks: &BTreeMap<i32, (i64, i64)>,
) -> anyhow::Result<i64> {
    let config = service_runtime::kafka::client_config(&settings.kafka, bootstrap, &[], &[])?;
    let committed = service_runtime::lag::committed(
        &config,
        &settings.segmenter.group_id,
        &settings.topics.orders,
    )?;
    Ok(marks
        .iter()
        .map(|(p, &(start, end))| {
            let at = committed
                .get(p)
                .copied()
                .flatten()
                .unwrap_or(start)
                .max(start);
            (end - at).max(0)
        })
        .sum())
}

/// The run's customers counted by their tier in `tiers`.
fn distribution(tiers: &Tiers, customers: &BTreeSet<u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for &c in customers {
        *out.entry(tiers.get(c).to_owned()).or_default() += 1;
    }
    out
}

/// The report at the end of a run that started with `before`. With `executed`, waits up to
/// `wait` for the segmenter to consume what was published, then reads the tiers again.
pub async fn report(
    settings: &Settings,
    bootstrap: &str,
    shop: &str,
    before: Tiers,
    customers: &BTreeSet<u64>,
    executed: bool,
    wait: Duration,
) -> anyhow::Result<TierReport> {
    let mut out = TierReport {
        before: distribution(&before, customers),
        ..TierReport::default()
    };
    if !executed {
        out.after_missing = Some("a dry run publishes nothing".into());
        return Ok(out);
    }
    let (s, b) = (settings.clone(), bootstrap.to_owned());
    let marks = tokio::task::spawn_blocking(move || orders_marks(&s, &b)).await??;
    let started = Instant::now();
    tracing::info!(
        group = %settings.segmenter.group_id,
        "backfill published; waiting (up to {}) for the segmenter to consume it before reading the tiers after",
        humantime::format_duration(wait)
    );
    // A segmenter that is not running (or stuck) is named after STALL, not after the whole
    // wait: the operator has a finished backfill and nothing to wait for.
    let mut progress = (i64::MAX, Instant::now());
    loop {
        let (s, b, e) = (settings.clone(), bootstrap.to_owned(), marks.clone());
        let lag = tokio::task::spawn_blocking(move || behind(&s, &b, &e)).await??;
        if lag == 0 {
            break;
        }
        if lag < progress.0 {
            progress = (lag, Instant::now());
        }
        let group = &settings.segmenter.group_id;
        let why = if started.elapsed() >= wait {
            Some(format!(
                "the segmenter (group {group}) was still {lag} records behind the backfill after {}; see its consumer lag, and `okta-writer reconcile` once it catches up",
                humantime::format_duration(wait)
            ))
        } else if progress.1.elapsed() >= STALL {
            Some(format!(
                "the segmenter (group {group}) consumed nothing of the backfill for {} ({lag} records behind): is it running? Its lag dashboard shows when it catches up",
                humantime::format_duration(STALL)
            ))
        } else {
            None
        };
        if why.is_some() {
            out.after_missing = why;
            return Ok(out);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (s, b, shop) = (settings.clone(), bootstrap.to_owned(), shop.to_owned());
    let after = tokio::task::spawn_blocking(move || read(&s, &b, &shop)).await??;
    let mut moves = BTreeMap::new();
    for &c in customers {
        *moves
            .entry((before.get(c).to_owned(), after.get(c).to_owned()))
            .or_default() += 1;
    }
    out.moves = Some(moves);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_without_an_update_are_none_and_names_are_shared() {
        let mut t = Tiers::default();
        t.insert(1, "VIP");
        t.insert(2, "VIP");
        t.insert(3, REDACTED);
        t.insert(2, "New");
        assert_eq!(
            (t.get(1), t.get(2), t.get(3), t.get(4)),
            ("VIP", "New", REDACTED, NONE)
        );
        assert_eq!(t.names.len(), 3);
        let d = distribution(&t, &[1, 2, 4, 5].into_iter().collect());
        assert_eq!(
            d,
            BTreeMap::from([("New".into(), 1), ("VIP".into(), 1), (NONE.into(), 2)])
        );
    }

    #[test]
    fn the_report_names_moves_and_counts_the_unchanged() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let r = TierReport {
            before: BTreeMap::from([(NONE.into(), 3), ("New".into(), 2)]),
            moves: Some(BTreeMap::from([
                (pair(NONE, "VIP"), 3),
                (pair("New", "New"), 2),
            ])),
            after_missing: None,
        };
        assert_eq!(
            r.render(),
            "tiers when the run started: (none) 3, New 2; before → after: (none) → VIP 3; 2 unchanged"
        );
        let r = TierReport {
            moves: None,
            after_missing: Some("a dry run publishes nothing".into()),
            ..r
        };
        assert!(r
            .render()
            .ends_with("; no tiers after: a dry run publishes nothing"));
    }
}
