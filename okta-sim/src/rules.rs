//! Group rules (`/api/v1/groups/rules`), as Okta documents them.
//!
//! - A rule is created `INACTIVE`; `POST …/lifecycle/activate` and `…/deactivate` change that.
//!   Only an `INACTIVE` rule can be replaced (`PUT`), and never its `actions`.
//! - An active rule assigns every user its expression matches (and its exclude list does not
//!   name) to its groups, and removes a user it had assigned once they no longer match. It
//!   never removes memberships it did not make.
//! - Evaluation is asynchronous with no documented delay: here it happens
//!   [`crate::SimConfig::rule_delay`] after a user's profile changes or a rule is activated, so
//!   clients must poll, as with real Okta.
//! - A rule-assigned user removed from the group by hand goes on the rule's exclude list (at
//!   most 100 users; Okta documents that limit) and is not assigned again.
//! - At most 2,000 rules per org. Expressions: the simulator understands
//!   `user.<attribute>=="<value>"` only (Okta's expression language is larger); the attribute
//!   must exist in the user profile schema.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::store::{now_rfc3339, ApiError};

pub const MAX_RULES: usize = 2_000;
pub const MAX_EXCLUDED: usize = 100;
pub const EXPRESSION_TYPE: &str = "urn:okta:expression:1.0";

/// One group rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub name: String,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub expression: String,
    /// The parsed expression: `user.<attribute>=="<value>"`.
    pub attribute: String,
    pub value: String,
    pub group_ids: Vec<String>,
    pub exclude: Vec<String>,
    pub created: String,
    pub last_updated: String,
}

impl Rule {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "group_rule",
            "status": self.status,
            "name": self.name,
            "created": self.created,
            "lastUpdated": self.last_updated,
            "conditions": {
                "people": {"users": {"exclude": self.exclude}, "groups": {"exclude": []}},
                "expression": {"value": self.expression, "type": EXPRESSION_TYPE},
            },
            "actions": {"assignUserToGroups": {"groupIds": self.group_ids}},
        })
    }
}

/// A rule as a create or replace request gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleRequest {
    pub name: String,
    pub expression: String,
    pub attribute: String,
    pub value: String,
    pub group_ids: Vec<String>,
    pub exclude: Vec<String>,
}

fn invalid(cause: impl Into<String>) -> ApiError {
    ApiError {
        causes: vec![cause.into()],
        ..ApiError::new(400, "E0000001", "Api validation failed: groupRule")
    }
}

/// `user.<attribute>=="<value>"` → (attribute, value).
pub fn parse_expression(expr: &str) -> Result<(String, String), ApiError> {
    let unsupported = || {
        invalid(format!(
            "conditions.expression.value: `{expr}` is not an expression this simulator evaluates (user.<attribute>==\"<value>\")"
        ))
    };
    let rest = expr.trim().strip_prefix("user.").ok_or_else(unsupported)?;
    let (attribute, literal) = rest.split_once("==").ok_or_else(unsupported)?;
    let value = literal
        .trim()
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains('"') && !v.contains('\\'))
        .ok_or_else(unsupported)?;
    let attribute = attribute.trim();
    if attribute.is_empty()
        || !attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(unsupported());
    }
    Ok((attribute.to_owned(), value.to_owned()))
}

impl RuleRequest {
    /// Read a `CreateGroupRuleRequest` / `GroupRule` body.
    pub fn parse(body: &Value) -> Result<RuleRequest, ApiError> {
        if body.get("type").and_then(Value::as_str) != Some("group_rule") {
            return Err(invalid("type: must be group_rule"));
        }
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("name: is required"))?;
        if name.is_empty() || name.chars().count() > 50 {
            return Err(invalid("name: must be 1 to 50 characters"));
        }
        let expression = body
            .pointer("/conditions/expression")
            .ok_or_else(|| invalid("conditions.expression: is required"))?;
        if expression.get("type").and_then(Value::as_str) != Some(EXPRESSION_TYPE) {
            return Err(invalid(format!(
                "conditions.expression.type: must be {EXPRESSION_TYPE}"
            )));
        }
        let expr = expression
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("conditions.expression.value: is required"))?;
        let (attribute, value) = parse_expression(expr)?;
        let strings = |ptr: &str| -> Vec<String> {
            body.pointer(ptr)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let group_ids = strings("/actions/assignUserToGroups/groupIds");
        if group_ids.is_empty() {
            return Err(invalid("actions.assignUserToGroups.groupIds: is required"));
        }
        Ok(RuleRequest {
            name: name.to_owned(),
            expression: expr.to_owned(),
            attribute,
            value,
            group_ids,
            exclude: strings("/conditions/people/users/exclude"),
        })
    }
}

/// The org's rules, the memberships they made, and the evaluations due.
#[derive(Debug, Default)]
pub struct Rules {
    pub rules: BTreeMap<String, Rule>,
    /// `(group id, user id)` → the rule that assigned it.
    pub assigned: HashMap<(String, String), String>,
    /// Evaluations due: (at, user id; `None` = every user).
    due: Vec<(u64, Option<String>)>,
}

impl Rules {
    /// Evaluate `user` (or every user) at `at_ms`.
    pub fn schedule(&mut self, user: Option<String>, at_ms: u64) {
        if !self.rules.values().any(|r| r.status == "ACTIVE") && user.is_some() {
            return;
        }
        self.due.push((at_ms, user));
    }

    /// The evaluations due by `now_ms`: `None` if none, `Some(None)` for every user.
    pub fn take_due(&mut self, now_ms: u64) -> Option<Option<Vec<String>>> {
        if self.due.iter().all(|(at, _)| *at > now_ms) {
            return None;
        }
        let (ready, later): (Vec<_>, Vec<_>) =
            self.due.drain(..).partition(|(at, _)| *at <= now_ms);
        self.due = later;
        if ready.iter().any(|(_, u)| u.is_none()) {
            return Some(None);
        }
        let mut users: Vec<String> = ready.into_iter().filter_map(|(_, u)| u).collect();
        users.sort();
        users.dedup();
        Some(Some(users))
    }

    pub fn by_name(&self, name: &str) -> Option<&Rule> {
        self.rules.values().find(|r| r.name == name)
    }

    pub fn check_new(&self, req: &RuleRequest, replacing: Option<&str>) -> Result<(), ApiError> {
        if replacing.is_none() && self.rules.len() >= MAX_RULES {
            return Err(invalid(format!(
                "an org has at most {MAX_RULES} group rules"
            )));
        }
        if self
            .by_name(&req.name)
            .is_some_and(|r| Some(r.id.as_str()) != replacing)
        {
            return Err(invalid(
                "name: An object with this field already exists in the current organization",
            ));
        }
        if req.exclude.len() > MAX_EXCLUDED {
            return Err(invalid(format!(
                "conditions.people.users.exclude: at most {MAX_EXCLUDED} users"
            )));
        }
        Ok(())
    }

    pub fn insert(&mut self, id: String, req: RuleRequest) -> &Rule {
        let now = now_rfc3339();
        self.rules.insert(
            id.clone(),
            Rule {
                id: id.clone(),
                name: req.name,
                status: "INACTIVE".into(),
                expression: req.expression,
                attribute: req.attribute,
                value: req.value,
                group_ids: req.group_ids,
                exclude: req.exclude,
                created: now.clone(),
                last_updated: now,
            },
        );
        &self.rules[&id]
    }

    /// `PUT`: only an inactive rule, and never its actions.
    pub fn replace(&mut self, id: &str, req: RuleRequest) -> Result<&Rule, ApiError> {
        self.check_new(&req, Some(id))?;
        let rule = self
            .rules
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(id, "GroupRule"))?;
        if rule.status != "INACTIVE" {
            return Err(invalid(
                "status: only an INACTIVE group rule can be updated",
            ));
        }
        if rule.group_ids != req.group_ids {
            return Err(invalid(
                "actions: the actions of a group rule cannot be updated",
            ));
        }
        rule.name = req.name;
        rule.expression = req.expression;
        rule.attribute = req.attribute;
        rule.value = req.value;
        rule.exclude = req.exclude;
        rule.last_updated = now_rfc3339();
        Ok(rule)
    }

    /// A rule-assigned membership removed by hand: the user goes on the rule's exclude list.
    pub fn removed_by_hand(&mut self, gid: &str, uid: &str) {
        if let Some(rule_id) = self.assigned.remove(&(gid.to_owned(), uid.to_owned())) {
            if let Some(rule) = self.rules.get_mut(&rule_id) {
                if rule.exclude.len() < MAX_EXCLUDED && !rule.exclude.iter().any(|u| u == uid) {
                    rule.exclude.push(uid.to_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_the_simulator_evaluates() {
        assert_eq!(
            parse_expression("user.shopify_tier==\"VIP\"").unwrap(),
            ("shopify_tier".into(), "VIP".into())
        );
        assert_eq!(
            parse_expression(" user.tier_eu == \"New (EU)\" ").unwrap(),
            ("tier_eu".into(), "New (EU)".into())
        );
        for bad in [
            "user.a==VIP",
            "isMemberOfGroup(\"x\")",
            "user.a==\"V\\\"IP\"",
            "user.==\"x\"",
        ] {
            assert!(parse_expression(bad).is_err(), "{bad}");
        }
    }
}
