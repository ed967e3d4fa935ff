//! What-if: replay the orders topic under the configured rules and another tier table side by
//! side, emitting nothing, and report how many customers would move from each tier to each
//! other tier.
//!
//! It reads every partition of the orders topic from its start to the end it has when the run
//! begins (no consumer group, no commits), so it can run beside the live segmenter.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use rdkafka::{ClientConfig, Message};
use rust_decimal::Decimal;
use schemas::{headers as h, ShopifyTopic};
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::normalize::interpret;
use crate::rules::{decide, RecordMeta, Rules, SpendConfig};
use schemas::{TierRow, TierTable};

/// The alternative rules file: `[[tiers]]`, and optionally `[spend]` (default: the current).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtherRules {
    tiers: Vec<TierRow>,
    spend: Option<SpendConfig>,
}

/// Read the alternative rules from `path`.
pub fn load_other(path: &Path, current: &Rules) -> anyhow::Result<Rules> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let other: OtherRules = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid tiers file", path.display()))?;
    let tiers = TierTable::new(other.tiers).with_context(|| format!("in {}", path.display()))?;
    Ok(Rules::new(
        tiers,
        other.spend.unwrap_or_else(|| current.spend.clone()),
    ))
}

/// A customer whose tier would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mover {
    pub shop: String,
    pub customer_id: String,
    pub email: Option<String>,
    pub total_spent: Decimal,
    pub other_total_spent: Decimal,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Default)]
pub struct Report {
    /// (current tier, other tier) → customers.
    pub matrix: BTreeMap<(String, String), u64>,
    pub movers: Vec<Mover>,
    pub records: u64,
    pub customers: u64,
}

/// Replay `topic` under `current` and `other`.
pub fn run(
    client: &ClientConfig,
    topic: &str,
    current: &Rules,
    other: &Rules,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Report> {
    let consumer: BaseConsumer = client.create().context("creating the what-if consumer")?;
    let partitions = service_runtime::kafka::partition_count(&consumer, topic)?;
    let ranges = service_runtime::kafka::current_ranges(&consumer, topic, 0..partitions)?;
    progress.set_length(ranges.iter().map(|r| r.len).sum());
    let (mut a, mut b) = (Ledger::new(), Ledger::new());
    let records = service_runtime::kafka::read_ranges(
        &consumer,
        topic,
        &ranges,
        Duration::from_secs(5),
        None,
        |m| {
            progress.inc(1);
            let header = |name: &str| service_runtime::kafka::header(m.headers()?, name);
            let (Some(t), Some(shop)) = (header(h::SHOPIFY_TOPIC), header(h::SHOPIFY_SHOP_DOMAIN))
            else {
                return Ok(());
            };
            let Ok(t) = t.parse::<ShopifyTopic>() else {
                return Ok(());
            };
            // A shop/redact fans out to every partition in the live pipeline; here one copy
            // reaches both ledgers directly, so the fan-out copies are skipped.
            if header(h::FANOUT_FROM).is_some() {
                return Ok(());
            }
            let Ok(event) = interpret(shop, t, m.payload().unwrap_or_default()) else {
                return Ok(());
            };
            let received_at_us = header(h::RECEIVED_AT)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros())
                .or_else(|| m.timestamp().to_millis().map(|ms| ms.saturating_mul(1000)));
            let meta = RecordMeta {
                shop,
                topic: t,
                webhook_id: header(h::SHOPIFY_WEBHOOK_ID),
                event_time: "",
                received_at_us,
            };
            // Undecidable records are quarantined by the live pipeline: they change neither.
            let _ = decide(current, &mut a, &event, &meta);
            let _ = decide(other, &mut b, &event, &meta);
            Ok(())
        },
    )?;
    progress.finish_and_clear();
    let mut report = Report {
        records,
        ..Report::default()
    };
    report.add(&a, &b, current, other);
    Ok(report)
}

/// What-if over the current state instead of history: the changelog's ledgers, re-tiered under
/// `other`. Much faster than a replay, but only valid when `other` counts orders the way the
/// current rules do (the changelog stores whether each order counted, not why).
pub fn run_on_state(
    client: &ClientConfig,
    changelog: &str,
    current: &Rules,
    other: &Rules,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        other.spend == current.spend,
        "the other rules change [spend]; the stored state cannot be re-counted: replay history instead (omit --from-state)"
    );
    let consumer: BaseConsumer = client.create().context("creating the what-if consumer")?;
    let partitions: Vec<i32> =
        (0..service_runtime::kafka::partition_count(&consumer, changelog)?).collect();
    drop(consumer);
    let (ledgers, records) = crate::changelog::restore_partitions(client, changelog, &partitions)?;
    let mut report = Report {
        records,
        ..Report::default()
    };
    for ledger in ledgers.values() {
        report.add(ledger, ledger, current, other);
    }
    report
        .movers
        .sort_by(|x, y| (&x.shop, &x.customer_id).cmp(&(&y.shop, &y.customer_id)));
    Ok(report)
}

impl Report {
    /// Count every customer of `a` (current rules) against its total in `b` (other rules).
    fn add(&mut self, a: &Ledger, b: &Ledger, current: &Rules, other: &Rules) {
        for key in a.all_customers() {
            let shop = a.shop_of(key).to_owned();
            let sa = a.summary(key).expect("listed");
            let other_total = b
                .find(&shop, key.customer_id)
                .and_then(|kb| b.summary(kb))
                .map_or(Decimal::ZERO, |s| s.total_spent);
            let from = current.tiers.tier_for(sa.total_spent).name.clone();
            let to = other.tiers.tier_for(other_total).name.clone();
            *self.matrix.entry((from.clone(), to.clone())).or_default() += 1;
            self.customers += 1;
            if from != to {
                self.movers.push(Mover {
                    shop,
                    customer_id: key.customer_id.to_string(),
                    email: sa.email,
                    total_spent: sa.total_spent,
                    other_total_spent: other_total,
                    from,
                    to,
                });
            }
        }
    }

    /// The from→to matrix as a text table, rows and columns in tier-table order.
    pub fn matrix_table(&self, current: &Rules, other: &Rules) -> String {
        let rows: Vec<&str> = current
            .tiers
            .rows()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let cols: Vec<&str> = other.tiers.rows().iter().map(|r| r.name.as_str()).collect();
        let width = rows
            .iter()
            .chain(&cols)
            .map(|s| s.len())
            .max()
            .unwrap_or(4)
            .max(8)
            + 2;
        let mut out = format!("{:width$}", "from \\ to");
        for c in &cols {
            out += &format!("{c:>width$}");
        }
        out.push('\n');
        for r in &rows {
            out += &format!("{r:width$}");
            for c in &cols {
                let n = self
                    .matrix
                    .get(&(r.to_string(), c.to_string()))
                    .copied()
                    .unwrap_or(0);
                out += &format!("{n:>width$}");
            }
            out.push('\n');
        }
        out
    }

    /// Write the movers as CSV (`.csv`) or JSON (anything else).
    pub fn write_movers(&self, path: &Path) -> anyhow::Result<()> {
        let text = if path.extension().is_some_and(|e| e == "csv") {
            let mut s =
                String::from("shop,customer_id,email,total_spent,other_total_spent,from,to\n");
            for m in &self.movers {
                s += &format!(
                    "{},{},{},{},{},{},{}\n",
                    csv(&m.shop),
                    m.customer_id,
                    csv(m.email.as_deref().unwrap_or("")),
                    m.total_spent,
                    m.other_total_spent,
                    csv(&m.from),
                    csv(&m.to)
                );
            }
            s
        } else {
            serde_json::to_string_pretty(&self.movers)? + "\n"
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// RFC 4180 quoting where needed.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
