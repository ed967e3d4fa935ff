//! `okta-writer reconcile`: compare Okta with the customers' current state and heal the drift.
//!
//! People edit tier groups by hand and other tools write the same attributes, while the live
//! writer trusts what it applied (within an assignment epoch) and never looks again. The
//! reconciler:
//!
//! 1. reads `customer.segments` from its beginning to its end as it is now and keeps the newest
//!    update of every customer (the topic is compacted, so like a KTable's changelog it keeps
//!    the latest state of every customer however old);
//! 2. per declared store, lists the members of its tier groups (one paged call per 1,000
//!    members; every member comes with its profile) and matches them to customers by the
//!    store's lookup (login, email, or the id attribute);
//! 3. reports drift by kind and, with `--execute`, heals each drifted customer by applying their
//!    newest update trusting nothing (`Trust::Nothing`: read their groups, write the
//!    attributes, join the right group, leave the store's other tier groups).
//!
//! Kinds ([`Drift`]): `not_in_group` (a known customer in none of the store's tier groups: never
//! applied, removed by hand, or no Okta user), `wrong_group` (in another tier's group only, or a
//! redacted customer still in one), `two_groups`, `attributes` (right group, an attribute
//! differs), `unknown_member` (in a tier group without being a customer of the store).
//!
//! **Unknown members** are reported and left alone unless `--remove-unknown`: they may be
//! customers from before tierflow whose history is not backfilled yet, test users, or people an
//! admin added on purpose, and removing them would fire marketing flows off the membership.
//!
//! **Never racing live updates**: a customer whose newest record the live writer has not
//! committed yet, or who got a record while the reconciler ran, is left to the live writer
//! (`in_flight`). A record arriving between that check and the heal (one application, a few
//! calls) can still lose to the heal; the next run repairs it.
//!
//! **Group rules** (`group_assignment = "rules"`): memberships are the rules'; a heal rewrites
//! the attributes only and the rule moves the user. Membership drift that outlives the rules'
//! evaluation is a user on a rule's exclude list (removed by hand), which no API call should
//! override: `okta-writer rules` shows the counts.
//!
//! **Budget**: the reconciler paces with its own limiter at `--rate-limit-share` (default 0.1)
//! of each bucket. The limiter counts the org's use from Okta's headers, so the reconciler stops
//! once a bucket is 10% used while the live writer goes on to its 50%: it can take at most a
//! fifth of the writer's share in a window, and nothing once the writer has spent past 10%.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::{Message, Offset};
use schemas::{SegmentUpdate, UpdateKind};
use serde_json::{Map, Value};

use crate::apply::{Applier, ApplyError, Outcome, Store, Trust};
use crate::config::{GroupAssignment, Settings, UserLookup};
use crate::metrics::Metrics;

/// How a customer's Okta state differs from their newest update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drift {
    NotInGroup,
    WrongGroup,
    TwoGroups,
    Attributes,
    UnknownMember,
}

impl Drift {
    pub const ALL: [Drift; 5] = [
        Drift::NotInGroup,
        Drift::WrongGroup,
        Drift::TwoGroups,
        Drift::Attributes,
        Drift::UnknownMember,
    ];

    /// The `kind` label and the report's name.
    pub fn label(self) -> &'static str {
        match self {
            Drift::NotInGroup => "not_in_group",
            Drift::WrongGroup => "wrong_group",
            Drift::TwoGroups => "two_groups",
            Drift::Attributes => "attributes",
            Drift::UnknownMember => "unknown_member",
        }
    }
}

/// A customer's newest update and where it is in `customer.segments`.
#[derive(Debug, Clone)]
pub struct Latest {
    pub partition: i32,
    pub offset: i64,
    pub update: SegmentUpdate,
}

/// The newest update of every customer (by `shop/customer` key), and where the read ended.
#[derive(Debug, Default)]
pub struct CurrentState {
    pub customers: HashMap<String, Latest>,
    /// Per partition, the end offset the read went to.
    pub ends: BTreeMap<i32, i64>,
    /// Records that are not segment updates (counted, skipped).
    pub unreadable: u64,
}

fn customer_key(u: &SegmentUpdate) -> String {
    format!("{}/{}", u.shop, u.customer_id)
}

/// Each partition from `from` (or its start) up to its end now; partitions with nothing
/// there (empty, or every record past retention) are left out, as a read of them would wait
/// for a record that never comes.
fn ranges_between(
    from: &BTreeMap<i32, i64>,
    now: &BTreeMap<i32, (i64, i64)>,
) -> Vec<service_runtime::kafka::Range> {
    now.iter()
        .filter_map(|(&partition, &(low, end))| {
            let start = from.get(&partition).copied().unwrap_or(low).max(low);
            (end > start).then(|| service_runtime::kafka::Range {
                partition,
                start: Offset::Offset(start),
                end,
                len: u64::try_from(end - start).unwrap_or(0),
            })
        })
        .collect()
}

/// Read `customer.segments` as it is now; the newest record of each key wins.
pub fn current_state(settings: &Settings, bootstrap: &str) -> anyhow::Result<CurrentState> {
    let topic = settings.topics.segments.as_str();
    let consumer = crate::dlq::topic_reader(settings, bootstrap, "tierflow-okta-reconcile")?;
    let now = service_runtime::kafka::watermarks(&consumer, topic)?;
    let mut state = CurrentState {
        ends: now.iter().map(|(&p, &(_, end))| (p, end)).collect(),
        ..CurrentState::default()
    };
    let ranges = ranges_between(&BTreeMap::new(), &now);
    service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(30),
        None,
        |m| {
            match m
                .payload()
                .and_then(|p| serde_json::from_slice::<SegmentUpdate>(p).ok())
            {
                Some(update) => {
                    state.customers.insert(
                        customer_key(&update),
                        Latest {
                            partition: m.partition(),
                            offset: m.offset(),
                            update,
                        },
                    );
                }
                None => state.unreadable += 1,
            }
            Ok(())
        },
    )?;
    Ok(state)
}

/// The keys of the records that arrived after the state was read (to `ends`).
fn changed_since(
    settings: &Settings,
    bootstrap: &str,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<HashSet<String>> {
    let topic = settings.topics.segments.as_str();
    let consumer = crate::dlq::topic_reader(settings, bootstrap, "tierflow-okta-reconcile")?;
    let ranges = ranges_between(ends, &service_runtime::kafka::watermarks(&consumer, topic)?);
    let mut keys = HashSet::new();
    service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(30),
        None,
        |m| {
            if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                keys.insert(k.to_owned());
            }
            Ok(())
        },
    )?;
    Ok(keys)
}

/// Per partition, the live writer group's committed offset (`None`: nothing committed).
fn committed(settings: &Settings, bootstrap: &str) -> anyhow::Result<HashMap<i32, Option<i64>>> {
    let config = service_runtime::kafka::client_config(&settings.kafka, bootstrap, &[], &[])?;
    Ok(service_runtime::lag::committed(
        &config,
        &settings.okta_writer.group_id,
        &settings.topics.segments,
    )?
    .into_iter()
    .collect())
}

/// What `reconcile` does besides reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Heal (otherwise a dry run).
    pub execute: bool,
    /// With `execute`, also take unknown members out of the store's tier groups.
    pub remove_unknown: bool,
}

/// One run's findings and what was done.
#[derive(Debug, Default)]
pub struct Report {
    pub executed: bool,
    /// Customers with a newest update, in declared stores.
    pub customers: usize,
    /// Of those, customers of shops no store declares (left alone).
    pub undeclared: usize,
    /// Tier group memberships read.
    pub memberships: usize,
    /// Customers who cannot be matched (no email under a login/email lookup).
    pub unmatchable: usize,
    pub found: BTreeMap<Drift, u64>,
    pub healed: BTreeMap<Drift, u64>,
    /// Drifted customers left to the live writer (a newer record not yet applied).
    pub in_flight: u64,
    /// Under `group_assignment = "rules"`: membership drift whose attributes were rewritten,
    /// left to Okta's group rules (a user still wrong after their evaluation is on a rule's
    /// exclude list: `okta-writer rules` shows how many).
    pub left_to_rules: u64,
    /// Heals skipped by the applier (e.g. no Okta user and `missing_user = skip`), by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Heals that failed: `shop/customer: error` (at most [`Report::FAILURES_KEPT`]).
    pub failures: Vec<String>,
    pub failed: u64,
    /// Okta calls made during the run.
    pub calls: u64,
    /// Records of `customer.segments` that are not segment updates.
    pub unreadable: u64,
}

impl Report {
    pub const FAILURES_KEPT: usize = 20;

    /// The report `okta-writer reconcile` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} customers, {} tier group memberships read, {} Okta calls{}",
            self.customers,
            self.memberships,
            self.calls,
            if self.executed {
                ""
            } else {
                " (dry run: nothing changed; --execute heals)"
            }
        );
        let _ = writeln!(out, "{:<16} {:>10} {:>10}", "drift", "found", "healed");
        for d in Drift::ALL {
            let _ = writeln!(
                out,
                "{:<16} {:>10} {:>10}",
                d.label(),
                self.found.get(&d).copied().unwrap_or(0),
                self.healed.get(&d).copied().unwrap_or(0)
            );
        }
        for (what, n) in [
            (
                "left to the live writer (newer update in flight)",
                self.in_flight,
            ),
            (
                "attributes rewritten, membership left to the group rules",
                self.left_to_rules,
            ),
            ("customers of undeclared shops", self.undeclared as u64),
            (
                "customers without an email to match",
                self.unmatchable as u64,
            ),
            ("unreadable records in the topic", self.unreadable),
            ("heals failed", self.failed),
        ] {
            if n > 0 {
                let _ = writeln!(out, "{what}: {n}");
            }
        }
        for (reason, n) in &self.skipped {
            let _ = writeln!(out, "heals skipped ({reason}): {n}");
        }
        for f in &self.failures {
            let _ = writeln!(out, "  {f}");
        }
        out
    }
}

/// What identifies a user under `lookup`, from their Okta profile.
fn member_identity(lookup: &UserLookup, profile: &Map<String, Value>) -> Option<String> {
    let field = match lookup {
        UserLookup::Login => "login",
        UserLookup::Email => "email",
        UserLookup::Attribute(a) => a.as_str(),
    };
    match profile.get(field)? {
        Value::String(s) => Some(normalize(lookup, s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What identifies a customer's user under `lookup`, from the update.
fn customer_identity(lookup: &UserLookup, u: &SegmentUpdate) -> Option<String> {
    match lookup {
        UserLookup::Login | UserLookup::Email => u.email.as_deref().map(|e| normalize(lookup, e)),
        UserLookup::Attribute(_) => Some(u.customer_id.to_string()),
    }
}

/// Okta logins and emails compare case-insensitively.
fn normalize(lookup: &UserLookup, s: &str) -> String {
    match lookup {
        UserLookup::Attribute(_) => s.to_owned(),
        _ => s.to_lowercase(),
    }
}

/// Whether the profile holds every value of `patch` (numbers compared as numbers; absent is
/// null).
fn attributes_match(patch: &Map<String, Value>, profile: &Map<String, Value>) -> bool {
    patch.iter().all(|(name, want)| {
        let have = profile.get(name).unwrap_or(&Value::Null);
        match (want.as_f64(), have.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => want == have,
        }
    })
}

/// A member of a store's tier groups.
#[derive(Debug, Default)]
struct Member {
    user_id: String,
    groups: Vec<String>,
    profile: Map<String, Value>,
}

/// A store's drift: customers to heal and unknown memberships `(user id, group id)`.
#[derive(Debug, Default)]
struct StoreDrift {
    heal: Vec<(Drift, String)>,
    unknown: Vec<(String, String)>,
}

/// Compare one store's tier groups with its customers' newest updates.
async fn inspect(
    applier: &Applier,
    store: &Store,
    state: &CurrentState,
    report: &mut Report,
) -> anyhow::Result<StoreDrift> {
    let mut members: HashMap<String, Member> = HashMap::new();
    let mut out = StoreDrift::default();
    for g in &store.groups.groups {
        let users = applier
            .client
            .group_members(&g.id)
            .await
            .with_context(|| format!("listing the members of `{}`", g.name))?;
        for user in users {
            report.memberships += 1;
            match member_identity(&store.lookup, &user.profile) {
                Some(identity) => {
                    let m = members.entry(identity).or_default();
                    m.user_id = user.id;
                    m.groups.push(g.id.clone());
                    m.profile = user.profile;
                }
                None => out.unknown.push((user.id, g.id.clone())),
            }
        }
    }
    for (key, latest) in state
        .customers
        .iter()
        .filter(|(_, l)| l.update.shop == store.shop)
    {
        let u = &latest.update;
        report.customers += 1;
        let Some(identity) = customer_identity(&store.lookup, u) else {
            report.unmatchable += 1;
            continue;
        };
        let member = members.remove(&identity);
        let groups = member.as_ref().map_or(&[][..], |m| m.groups.as_slice());
        let target = match (&u.kind, &u.tier) {
            (UpdateKind::Segment, Some(t)) => match store.groups.id_of(&t.okta_group) {
                Some(id) => Some(id),
                // Not a tier of this table: the live writer dead-letters it (unknown_group).
                None => continue,
            },
            (UpdateKind::Segment, None) => continue,
            (UpdateKind::Redact, _) => None,
        };
        let drift = match target {
            Some(_) if groups.is_empty() => Some(Drift::NotInGroup),
            Some(_) if groups.len() > 1 => Some(Drift::TwoGroups),
            Some(t) if groups[0] != t => Some(Drift::WrongGroup),
            Some(_) => member
                .as_ref()
                .filter(|m| !attributes_match(&store.attributes.patch(u), &m.profile))
                .map(|_| Drift::Attributes),
            None if groups.is_empty() => None,
            None => Some(Drift::WrongGroup),
        };
        if let Some(d) = drift {
            *report.found.entry(d).or_default() += 1;
            out.heal.push((d, key.clone()));
        }
    }
    for m in members.into_values() {
        for g in m.groups {
            out.unknown.push((m.user_id.clone(), g));
        }
    }
    *report.found.entry(Drift::UnknownMember).or_default() += out.unknown.len() as u64;
    Ok(out)
}

/// Sum of `tierflow_okta_requests_total` on `metrics`.
fn calls(metrics: &Metrics) -> u64 {
    use prometheus::core::Collector;
    metrics
        .requests
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Heal what [`inspect`] found, leaving customers with a newer update in flight to the live
/// writer.
async fn heal(
    applier: &Applier,
    state: &CurrentState,
    drift: &[StoreDrift],
    fresh: &Fresh,
    options: Options,
    report: &mut Report,
) -> anyhow::Result<()> {
    let failed = |report: &mut Report, what: String| {
        report.failed += 1;
        if report.failures.len() < Report::FAILURES_KEPT {
            report.failures.push(what);
        }
    };
    for store_drift in drift {
        for (d, key) in &store_drift.heal {
            let Some(latest) = state.customers.get(key) else {
                continue;
            };
            let applied_to = fresh.committed.get(&latest.partition).copied().flatten();
            if fresh.changed.contains(key) || applied_to.is_none_or(|c| latest.offset >= c) {
                report.in_flight += 1;
                continue;
            }
            let by_rules = applier.assignment == GroupAssignment::Rules && *d != Drift::Attributes;
            match applier.apply(&latest.update, &[], Trust::Nothing).await {
                // The attributes are written; the membership is the group rules' to fix.
                Ok(Outcome::Applied) if by_rules => report.left_to_rules += 1,
                Ok(Outcome::Applied) => *report.healed.entry(*d).or_default() += 1,
                Ok(Outcome::Skipped(reason)) => {
                    *report.skipped.entry(reason.to_owned()).or_default() += 1
                }
                Err(e @ ApplyError::Credentials(_)) => {
                    return Err(anyhow::Error::new(e).context("Okta rejected the credentials"))
                }
                // The reason only: messages can carry a search expression with an email.
                Err(e) => failed(report, format!("{key}: {}", e.reason())),
            }
        }
        if options.remove_unknown {
            for (user, group) in &store_drift.unknown {
                match applier.client.remove_from_group(group, user).await {
                    Ok(()) => *report.healed.entry(Drift::UnknownMember).or_default() += 1,
                    Err(f) if f.last.status() == Some(404) => {
                        *report.healed.entry(Drift::UnknownMember).or_default() += 1
                    }
                    Err(f) => failed(report, format!("user {user} in group {group}: {f}")),
                }
            }
        }
    }
    Ok(())
}

/// What happened in Kafka while the run compared: the live writer's committed offsets and the
/// keys of records that arrived since the state was read.
#[derive(Debug, Default)]
struct Fresh {
    committed: HashMap<i32, Option<i64>>,
    changed: HashSet<String>,
}

/// One reconciliation: read the current state, compare every store, heal when `options.execute`.
pub async fn run(
    settings: &Settings,
    bootstrap: &str,
    applier: &Applier,
    metrics: &Metrics,
    options: Options,
) -> anyhow::Result<Report> {
    let calls_before = calls(metrics);
    let (s, b) = (settings.clone(), bootstrap.to_owned());
    let state = tokio::task::spawn_blocking(move || current_state(&s, &b))
        .await?
        .context("reading the customers' current state from the segments topic")?;
    let mut report = Report {
        executed: options.execute,
        unreadable: state.unreadable,
        ..Report::default()
    };
    report.undeclared = state
        .customers
        .values()
        .filter(|l| !applier.stores.iter().any(|s| s.shop == l.update.shop))
        .count();
    let mut drift = Vec::new();
    for store in &applier.stores {
        drift.push(inspect(applier, store, &state, &mut report).await?);
    }
    if options.execute {
        let (s, b, ends) = (settings.clone(), bootstrap.to_owned(), state.ends.clone());
        let fresh = tokio::task::spawn_blocking(move || {
            anyhow::Ok(Fresh {
                committed: committed(&s, &b)?,
                changed: changed_since(&s, &b, &ends)?,
            })
        })
        .await?
        .context("reading what changed in Kafka during the run")?;
        heal(applier, &state, &drift, &fresh, options, &mut report).await?;
    }
    report.calls = calls(metrics) - calls_before;
    Ok(report)
}

/// `tierflow_okta_reconcile_*`: what the periodic reconciler found and healed.
#[derive(Debug, Clone)]
pub struct ReconcileMetrics {
    /// `tierflow_okta_reconcile_drift_found_total{kind}`
    pub found: IntCounterVec,
    /// `tierflow_okta_reconcile_drift_healed_total{kind}`
    pub healed: IntCounterVec,
    /// `tierflow_okta_reconcile_runs_total{outcome}`: `ok` or `failed`.
    pub runs: IntCounterVec,
    /// `tierflow_okta_reconcile_heal_failures_total`
    pub heal_failures: prometheus::IntCounter,
    /// `tierflow_okta_reconcile_last_success_timestamp_seconds`
    pub last_success: IntGauge,
}

impl ReconcileMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ReconcileMetrics> {
        let found = IntCounterVec::new(
            Opts::new(
                "tierflow_okta_reconcile_drift_found_total",
                "Drift found by the reconciler, by kind (a customer counts once per run).",
            ),
            &["kind"],
        )?;
        let healed = IntCounterVec::new(
            Opts::new(
                "tierflow_okta_reconcile_drift_healed_total",
                "Drift healed by the reconciler, by kind.",
            ),
            &["kind"],
        )?;
        let runs = IntCounterVec::new(
            Opts::new(
                "tierflow_okta_reconcile_runs_total",
                "Reconciler runs, by outcome (ok, failed).",
            ),
            &["outcome"],
        )?;
        let heal_failures = prometheus::IntCounter::new(
            "tierflow_okta_reconcile_heal_failures_total",
            "Heals that failed (the report names them).",
        )?;
        let last_success = IntGauge::new(
            "tierflow_okta_reconcile_last_success_timestamp_seconds",
            "When the last run completed (Unix seconds).",
        )?;
        registry.register(Box::new(found.clone()))?;
        registry.register(Box::new(healed.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(heal_failures.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        for d in Drift::ALL {
            found.with_label_values(&[d.label()]);
            healed.with_label_values(&[d.label()]);
        }
        for outcome in ["ok", "failed"] {
            runs.with_label_values(&[outcome]);
        }
        Ok(ReconcileMetrics {
            found,
            healed,
            runs,
            heal_failures,
            last_success,
        })
    }

    /// Count one run's outcome.
    pub fn record(&self, outcome: &anyhow::Result<Report>) {
        match outcome {
            Ok(r) => {
                for (d, n) in &r.found {
                    self.found.with_label_values(&[d.label()]).inc_by(*n);
                }
                for (d, n) in &r.healed {
                    self.healed.with_label_values(&[d.label()]).inc_by(*n);
                }
                self.heal_failures.inc_by(r.failed);
                self.runs.with_label_values(&["ok"]).inc();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.last_success
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
            }
            Err(_) => self.runs.with_label_values(&["failed"]).inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_start_where_asked_and_skip_partitions_with_nothing_to_read() {
        let now = BTreeMap::from([(0, (0, 10)), (1, (5, 5)), (2, (3, 8)), (3, (0, 0))]);
        let all = ranges_between(&BTreeMap::new(), &now);
        let got: Vec<_> = all.iter().map(|r| (r.partition, r.start, r.end)).collect();
        assert_eq!(got, [(0, Offset::Offset(0), 10), (2, Offset::Offset(3), 8)]);
        let since = ranges_between(&BTreeMap::from([(0, 10), (2, 6)]), &now);
        let got: Vec<_> = since
            .iter()
            .map(|r| (r.partition, r.start, r.end))
            .collect();
        assert_eq!(got, [(2, Offset::Offset(6), 8)]);
    }

    #[test]
    fn identities_compare_logins_and_emails_without_case() {
        let profile = json!({"login": "Ann@Example.com", "email": "ann@example.com", "sid": 42})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            member_identity(&UserLookup::Login, &profile).as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(
            member_identity(&UserLookup::Attribute("sid".into()), &profile).as_deref(),
            Some("42")
        );
        assert_eq!(
            member_identity(&UserLookup::Attribute("none".into()), &profile),
            None
        );
    }

    #[test]
    fn attributes_match_as_numbers_and_absent_is_null() {
        let patch = json!({"spent": 610.5, "count": 2, "tier": null});
        let patch = patch.as_object().unwrap();
        let same = json!({"spent": 610.50, "count": 2.0});
        assert!(attributes_match(patch, same.as_object().unwrap()));
        let edited = json!({"spent": 600, "count": 2});
        assert!(!attributes_match(patch, edited.as_object().unwrap()));
        let extra = json!({"spent": 610.5, "count": 2, "tier": "VIP"});
        assert!(!attributes_match(patch, extra.as_object().unwrap()));
    }
}
