//! `okta-writer rules`: one Okta group rule per store and tier, made from the tier table, for
//! `group_assignment = "rules"`: the writer then writes the tier attribute only (a tier change
//! is one call instead of three) and Okta's rules move the user between the tier groups.
//!
//! Each rule is named `tierflow <group name>`, matches `user.<tier attribute>=="<tier name>"`
//! (the store's suffixed attribute) and assigns the store's tier group. The command reads the
//! org's rules named `tierflow …` and plans, per rule:
//!
//! - `create`: missing; created (Okta creates rules `INACTIVE`) and activated;
//! - `activate`: present and right, but inactive;
//! - `replace`: its expression differs: deactivated, replaced (`PUT` works on `INACTIVE` rules
//!   only), activated;
//! - `recreate`: its group differs (Okta cannot replace a rule's actions): deleted with the
//!   memberships it made (they are in a group that is no longer the tier's), created, activated;
//! - `delete`: ours (by name) but no tier wants it: deleted with its memberships;
//! - `ok`, with how many users are on its exclude list (people removed from the group by hand,
//!   whom the rule no longer assigns; Okta keeps at most 100 per rule).
//!
//! Nothing changes without `--execute`. Refused, naming the fix: no tier attribute, a tier name
//! the expression cannot quote (`"`, `\`, control characters), a rule name over Okta's 50
//! characters, more than Okta's 2,000 rules per org.
//!
//! Rules only remove memberships they made. An org whose tier groups the writer filled by calls
//! keeps those memberships when it switches to rules; see docs/OPERATIONS.md for the switch.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::apply::Store;
use crate::client::api::GroupRule;
use crate::client::OktaClient;

/// The prefix of every rule the command manages.
pub const PREFIX: &str = "tierflow ";
/// Okta's longest rule name.
const NAME_MAX: usize = 50;
/// Okta's most rules per org.
const RULES_MAX: usize = 2_000;

/// A rule as the tier table wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub expression: String,
    pub group_id: String,
    pub group_name: String,
}

/// Why the tier table cannot be expressed as group rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("store `{0}` writes no tier attribute: add one row with the tier field to [okta.profile_attributes], e.g. shopify_tier = \"tier\"")]
    NoTierAttribute(String),
    #[error("tier `{0}` cannot be quoted in a rule expression (it contains `\"`, `\\` or a control character): rename the tier")]
    Unquotable(String),
    #[error("rule name `{0}` is longer than Okta's {NAME_MAX} characters: shorten the group name `{1}` (or the store's group_suffix)")]
    NameTooLong(String, String),
    #[error("{0} rules needed, more than Okta's {RULES_MAX} per org")]
    TooMany(usize),
}

/// The rules the stores' tier tables want.
pub fn desired(stores: &[Store]) -> Result<Vec<Desired>, RulesError> {
    let mut out = Vec::new();
    for store in stores {
        let attribute = store
            .attributes
            .tier_attribute()
            .ok_or_else(|| RulesError::NoTierAttribute(store.shop.clone()))?;
        for g in &store.groups.groups {
            if g.tier
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
            {
                return Err(RulesError::Unquotable(g.tier.clone()));
            }
            let name = format!("{PREFIX}{}", g.name);
            if name.chars().count() > NAME_MAX {
                return Err(RulesError::NameTooLong(name, g.name.clone()));
            }
            out.push(Desired {
                name,
                expression: format!("user.{attribute}==\"{}\"", g.tier),
                group_id: g.id.clone(),
                group_name: g.name.clone(),
            });
        }
    }
    if out.len() > RULES_MAX {
        return Err(RulesError::TooMany(out.len()));
    }
    Ok(out)
}

/// One rule's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create(Desired),
    Activate(String, Desired),
    Replace {
        id: String,
        active: bool,
        desired: Desired,
    },
    Recreate {
        id: String,
        active: bool,
        desired: Desired,
    },
    Delete {
        id: String,
        name: String,
        active: bool,
    },
    Ok {
        desired: Desired,
        excluded: usize,
    },
}

impl Step {
    fn describe(&self) -> String {
        let rule = |d: &Desired| format!("`{}`: {} → {}", d.name, d.expression, d.group_name);
        match self {
            Step::Create(d) => format!("create    {}", rule(d)),
            Step::Activate(_, d) => format!("activate  {}", rule(d)),
            Step::Replace { desired, .. } => format!("replace   {}", rule(desired)),
            Step::Recreate { desired, .. } => format!(
                "recreate  {} (its group changed; the old rule's memberships are removed)",
                rule(desired)
            ),
            Step::Delete { name, .. } => {
                format!("delete    `{name}` (no tier wants it; its memberships are removed)")
            }
            Step::Ok { desired, excluded } => {
                let mut s = format!("ok        {}", rule(desired));
                if *excluded > 0 {
                    let _ = write!(
                        s,
                        " ({excluded} users excluded: removed from the group by hand, the rule no longer assigns them)"
                    );
                }
                s
            }
        }
    }
}

/// What to do to make `existing` (the org's `tierflow …` rules) what `desired` wants.
pub fn plan(desired: Vec<Desired>, existing: Vec<GroupRule>) -> Vec<Step> {
    let mut by_name: HashMap<String, GroupRule> = existing
        .into_iter()
        .filter(|r| r.name.starts_with(PREFIX))
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut steps = Vec::new();
    for d in desired {
        let Some(r) = by_name.remove(&d.name) else {
            steps.push(Step::Create(d));
            continue;
        };
        let active = r.status == "ACTIVE";
        steps.push(
            if r.group_ids != [d.group_id.clone()] || r.status == "INVALID" {
                Step::Recreate {
                    id: r.id,
                    active,
                    desired: d,
                }
            } else if r.expression != d.expression {
                Step::Replace {
                    id: r.id,
                    active,
                    desired: d,
                }
            } else if !active {
                Step::Activate(r.id, d)
            } else {
                Step::Ok {
                    desired: d,
                    excluded: r.excluded,
                }
            },
        );
    }
    let mut stale: Vec<_> = by_name.into_values().collect();
    stale.sort_by(|a, b| a.name.cmp(&b.name));
    steps.extend(stale.into_iter().map(|r| Step::Delete {
        active: r.status == "ACTIVE",
        id: r.id,
        name: r.name,
    }));
    steps
}

async fn create_active(client: &OktaClient, d: &Desired) -> anyhow::Result<()> {
    let rule = client
        .create_group_rule(GroupRule::request(&d.name, &d.expression, &d.group_id))
        .await?;
    client.set_group_rule_active(&rule.id, true).await?;
    Ok(())
}

/// Deactivate the rule if it is active: Okta replaces and deletes only inactive rules.
async fn make_inactive(client: &OktaClient, id: &str, active: bool) -> anyhow::Result<()> {
    if active {
        client.set_group_rule_active(id, false).await?;
    }
    Ok(())
}

/// Carry out one step.
async fn execute(client: &OktaClient, step: &Step) -> anyhow::Result<()> {
    match step {
        Step::Ok { .. } => {}
        Step::Create(d) => create_active(client, d).await?,
        Step::Activate(id, _) => client.set_group_rule_active(id, true).await?,
        Step::Replace {
            id,
            active,
            desired: d,
        } => {
            make_inactive(client, id, *active).await?;
            client
                .replace_group_rule(id, GroupRule::request(&d.name, &d.expression, &d.group_id))
                .await?;
            client.set_group_rule_active(id, true).await?;
        }
        Step::Recreate {
            id,
            active,
            desired: d,
        } => {
            make_inactive(client, id, *active).await?;
            client.delete_group_rule(id, true).await?;
            create_active(client, d).await?;
        }
        Step::Delete { id, active, .. } => {
            make_inactive(client, id, *active).await?;
            client.delete_group_rule(id, true).await?;
        }
    }
    Ok(())
}

/// `okta-writer rules [--execute]`: the plan, carried out with `execute`; the report.
pub async fn sync(client: &OktaClient, stores: &[Store], execute_: bool) -> anyhow::Result<String> {
    let desired = desired(stores)?;
    let existing = client.group_rules(PREFIX.trim_end()).await?;
    let steps = plan(desired, existing);
    let mut out = String::new();
    for step in &steps {
        writeln!(out, "{}", step.describe())?;
        if execute_ {
            execute(client, step)
                .await
                .map_err(|e| e.context(step.describe()))?;
        }
    }
    let changes = steps
        .iter()
        .filter(|s| !matches!(s, Step::Ok { .. }))
        .count();
    writeln!(
        out,
        "{changes} of {} rules to change{}",
        steps.len(),
        if execute_ {
            ": done (Okta evaluates active rules asynchronously: memberships follow within minutes)"
        } else if changes > 0 {
            " (dry run: --execute makes them)"
        } else {
            ""
        }
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(tier: &str, group: &str) -> Desired {
        Desired {
            name: format!("{PREFIX}{group}"),
            expression: format!("user.shopify_tier==\"{tier}\""),
            group_id: format!("00g{tier}"),
            group_name: group.into(),
        }
    }

    fn rule(d: &Desired, status: &str) -> GroupRule {
        GroupRule {
            id: format!("0pr{}", d.group_name.len()),
            name: d.name.clone(),
            status: status.into(),
            expression: d.expression.clone(),
            group_ids: vec![d.group_id.clone()],
            excluded: 0,
        }
    }

    fn store(tier_row: &str, tiers: &[(&str, &str)]) -> Store {
        use crate::apply::{GroupTable, TierGroup};
        Store {
            shop: "a.myshopify.com".into(),
            attributes: toml::from_str(tier_row).unwrap(),
            groups: GroupTable::new(
                tiers
                    .iter()
                    .map(|(tier, group)| TierGroup {
                        tier: (*tier).into(),
                        in_updates: (*group).into(),
                        name: (*group).into(),
                        id: format!("00g{tier}"),
                    })
                    .collect(),
            ),
            lookup: crate::config::UserLookup::Login,
        }
    }

    #[test]
    fn tables_the_rules_cannot_express_are_refused() {
        let ok = store("shopify_tier = \"tier\"", &[("VIP", "Shopify VIP")]);
        assert_eq!(
            desired(&[ok]).unwrap(),
            [Desired {
                name: "tierflow Shopify VIP".into(),
                expression: "user.shopify_tier==\"VIP\"".into(),
                group_id: "00gVIP".into(),
                group_name: "Shopify VIP".into(),
            }]
        );
        let no_attr = store("spent = \"total_spent\"", &[("VIP", "Shopify VIP")]);
        assert!(matches!(
            desired(&[no_attr]),
            Err(RulesError::NoTierAttribute(_))
        ));
        let quoted = store("t = \"tier\"", &[("V\\\"IP", "Shopify VIP")]);
        assert!(matches!(desired(&[quoted]), Err(RulesError::Unquotable(_))));
        let long = "x".repeat(45);
        let long = store("t = \"tier\"", &[("VIP", long.as_str())]);
        assert!(matches!(desired(&[long]), Err(RulesError::NameTooLong(..))));
    }

    #[test]
    fn the_plan_creates_activates_replaces_recreates_and_deletes() {
        let (vip, new, active, gone) = (
            want("VIP", "Shopify VIP"),
            want("New", "Shopify New"),
            want("Active", "Shopify Active!"),
            want("Old", "Shopify Old"),
        );
        let mut edited = rule(&new, "ACTIVE");
        edited.expression = "user.shopify_tier==\"Neu\"".into();
        let mut moved = rule(&active, "INACTIVE");
        moved.group_ids = vec!["00gOther".into()];
        let foreign = GroupRule {
            name: "Someone else's rule".into(),
            ..rule(&gone, "ACTIVE")
        };
        let steps = plan(
            vec![vip.clone(), new.clone(), active.clone()],
            vec![
                edited.clone(),
                moved.clone(),
                rule(&gone, "ACTIVE"),
                foreign,
            ],
        );
        assert_eq!(
            steps,
            vec![
                Step::Create(vip.clone()),
                Step::Replace {
                    id: edited.id,
                    active: true,
                    desired: new.clone()
                },
                Step::Recreate {
                    id: moved.id,
                    active: false,
                    desired: active.clone()
                },
                Step::Delete {
                    id: rule(&gone, "ACTIVE").id,
                    name: gone.name.clone(),
                    active: true
                },
            ]
        );
        let again = plan(
            vec![vip.clone(), new.clone()],
            vec![rule(&vip, "ACTIVE"), rule(&new, "INACTIVE")],
        );
        assert_eq!(
            again,
            vec![
                Step::Ok {
                    desired: vip.clone(),
                    excluded: 0
                },
                Step::Activate(rule(&new, "INACTIVE").id, new)
            ]
        );
    }
}
