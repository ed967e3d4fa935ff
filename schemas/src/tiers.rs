//! The tier table: half-open decimal ranges `[min, max)` that cover 0 to infinity exactly once.
//!
//! Validated at startup; every way a table can fail to assign exactly one tier to every total
//! (gap, overlap, first tier not at 0, bounded last tier, empty range, duplicate name or group)
//! is an error naming the rows and the fix.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::TierRef;

/// Why a tier table was refused: the rows at fault and how to fix them. Services report it as
/// a config error at `tiers`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TierTableError(String);

/// One `[[tiers]]` row as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRow {
    pub name: String,
    /// Inclusive lower bound, a decimal string (`"100"`, `"100.00"`).
    #[serde(with = "rust_decimal::serde::str")]
    pub min: Decimal,
    /// Exclusive upper bound; omitted on the last tier.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub max: Option<Decimal>,
    /// The Okta group holding this tier's members.
    pub okta_group: String,
}

/// A validated table, sorted by `min`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTable {
    rows: Vec<TierRow>,
    refs: Vec<TierRef>,
}

impl TierTable {
    /// The template's table (Potential 0–0, New 1–100, Active 101–500, VIP 501–5,000,000 in
    /// whole dollars), as half-open ranges: each row extends to the next row's minimum, so
    /// 100.50 is New instead of falling between rows, and VIP has no upper bound.
    pub fn template() -> TierTable {
        let row = |name: &str, min: i64, max: Option<i64>| TierRow {
            name: name.into(),
            min: Decimal::from(min),
            max: max.map(Decimal::from),
            okta_group: format!("Shopify {name}"),
        };
        TierTable::new(vec![
            row("Potential", 0, Some(1)),
            row("New", 1, Some(101)),
            row("Active", 101, Some(501)),
            row("VIP", 501, None),
        ])
        .expect("the template table is valid")
    }

    pub fn new(mut rows: Vec<TierRow>) -> Result<TierTable, TierTableError> {
        let err = TierTableError;
        if rows.is_empty() {
            return Err(err(
                "no [[tiers]] rows: define at least one tier starting at min = \"0\"".into(),
            ));
        }
        for (i, r) in rows.iter().enumerate() {
            if r.name.trim().is_empty() || r.okta_group.trim().is_empty() {
                return Err(err(format!(
                    "row {} has an empty name or okta_group",
                    i + 1
                )));
            }
        }
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                if a.name == b.name {
                    return Err(err(format!(
                        "duplicate tier name `{}`: names must be unique",
                        a.name
                    )));
                }
                if a.okta_group == b.okta_group {
                    return Err(err(format!(
                        "tiers `{}` and `{}` share okta_group `{}`: each tier needs its own group",
                        a.name, b.name, a.okta_group
                    )));
                }
            }
        }
        rows.sort_by_key(|r| r.min);
        if rows[0].min != Decimal::ZERO {
            return Err(err(format!(
                "the lowest tier `{}` starts at {}, not 0: totals below it would have no tier; set its min = \"0\"",
                rows[0].name, rows[0].min
            )));
        }
        for r in &rows {
            if let Some(max) = r.max {
                if max <= r.min {
                    return Err(err(format!(
                        "tier `{}` is empty: max {} is not above min {} (max is exclusive)",
                        r.name, max, r.min
                    )));
                }
            }
        }
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            match a.max {
                None => {
                    return Err(err(format!(
                        "tier `{}` has no max but tier `{}` starts above it: only the highest tier may omit max",
                        a.name, b.name
                    )))
                }
                Some(max) if max < b.min => {
                    return Err(err(format!(
                        "gap between tiers `{}` (max {max}, exclusive) and `{}` (min {}): totals in [{max}, {}) have no tier; set `{}` max = \"{}\"",
                        a.name, b.name, b.min, b.min, a.name, b.min
                    )))
                }
                Some(max) if max > b.min => {
                    return Err(err(format!(
                        "tiers `{}` [{}, {max}) and `{}` [{}, ...) overlap on [{}, {max}); set `{}` max = \"{}\"",
                        a.name, a.min, b.name, b.min, b.min, a.name, b.min
                    )))
                }
                Some(_) => {}
            }
        }
        let last = rows.last().expect("non-empty");
        if let Some(max) = last.max {
            return Err(err(format!(
                "the highest tier `{}` ends at {max}: totals from {max} up would have no tier; omit its max",
                last.name
            )));
        }
        let refs = rows
            .iter()
            .map(|r| TierRef {
                name: r.name.clone(),
                okta_group: r.okta_group.clone(),
            })
            .collect();
        Ok(TierTable { rows, refs })
    }

    pub fn rows(&self) -> &[TierRow] {
        &self.rows
    }

    /// The tier a total falls in. Totals below 0 (impossible from Shopify's amounts, but not
    /// worth a panic) fall in the lowest tier.
    pub fn tier_for(&self, total: Decimal) -> &TierRef {
        let i = self
            .rows
            .partition_point(|r| r.min <= total)
            .saturating_sub(1);
        &self.refs[i]
    }

    /// A canonical text of the table, for the rule version hash.
    pub fn canonical(&self) -> String {
        self.rows
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}|{}",
                    r.name,
                    r.min.normalize(),
                    r.max.map(|m| m.normalize().to_string()).unwrap_or_default(),
                    r.okta_group
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn row(name: &str, min: &str, max: Option<&str>) -> TierRow {
        TierRow {
            name: name.into(),
            min: d(min),
            max: max.map(d),
            okta_group: format!("g-{name}"),
        }
    }

    #[test]
    fn template_assigns_every_total_exactly_once() {
        let t = TierTable::template();
        for (total, tier) in [
            ("0", "Potential"),
            ("0.99", "Potential"),
            ("1", "New"),
            ("45.50", "New"),
            ("100.50", "New"),
            ("100.99", "New"),
            ("101", "Active"),
            ("500.99", "Active"),
            ("501", "VIP"),
            ("5000000", "VIP"),
            ("99999999999", "VIP"),
            ("-5", "Potential"),
        ] {
            assert_eq!(t.tier_for(d(total)).name, tier, "{total}");
        }
    }

    #[test]
    fn broken_tables_are_rejected_with_the_rows_named() {
        let cases: Vec<(Vec<TierRow>, &[&str])> = vec![
            // The template's own integer rows leave 100.01..100.99 unassigned.
            (
                vec![row("New", "0", Some("100")), row("Active", "101", None)],
                &["gap", "`New`", "`Active`", "max = \"101\""],
            ),
            (
                vec![row("New", "0", Some("150")), row("Active", "100", None)],
                &["overlap", "`New`", "`Active`"],
            ),
            (vec![row("New", "1", None)], &["starts at 1, not 0"]),
            (
                vec![row("A", "0", Some("10")), row("A", "10", None)],
                &["duplicate tier name `A`"],
            ),
            (
                vec![
                    row("A", "0", Some("10")),
                    TierRow {
                        okta_group: "g-A".into(),
                        ..row("B", "10", None)
                    },
                ],
                &["share okta_group `g-A`"],
            ),
            (
                vec![row("A", "0", Some("10"))],
                &["highest tier `A` ends at 10"],
            ),
            (
                vec![row("A", "0", None), row("B", "10", None)],
                &["only the highest tier may omit max"],
            ),
            (
                vec![row("A", "0", Some("0")), row("B", "0", None)],
                &["is empty"],
            ),
            (vec![], &["no [[tiers]]"]),
        ];
        for (rows, expected) in cases {
            let e = TierTable::new(rows.clone()).unwrap_err().to_string();
            for needle in expected {
                assert!(e.contains(needle), "expected {needle:?} in: {e}");
            }
        }
    }

    #[test]
    fn rows_may_be_listed_in_any_order() {
        let t = TierTable::new(vec![row("B", "10", None), row("A", "0", Some("10"))]).unwrap();
        assert_eq!(t.tier_for(d("9.99")).name, "A");
        assert_eq!(t.tier_for(d("10")).name, "B");
    }
}
