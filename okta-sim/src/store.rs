//! The simulated org's data: users with profiles, groups, memberships, and the parts of Okta's
//! search syntax the writer uses (`profile.<attr> eq "<value>"`).
//!
//! Ids look like Okta's (`00u…` users, `00g…` groups, 20 characters). Every user is a member of
//! the built-in `Everyone` group, which cannot be changed through the membership API.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The type of a custom profile attribute, as declared in the org's user schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrType {
    String,
    Number,
    Integer,
    Boolean,
}

impl AttrType {
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) => true,
            (AttrType::String, Value::String(_)) => true,
            (AttrType::Number, Value::Number(_)) => true,
            (AttrType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (AttrType::Boolean, Value::Bool(_)) => true,
            _ => false,
        }
    }
}

/// Base profile properties of Okta's default user schema (all strings).
const BASE_ATTRIBUTES: &[&str] = &[
    "login",
    "email",
    "secondEmail",
    "firstName",
    "lastName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
    "title",
    "displayName",
    "nickName",
    "profileUrl",
    "primaryPhone",
    "mobilePhone",
    "streetAddress",
    "city",
    "state",
    "zipCode",
    "countryCode",
    "postalAddress",
    "preferredLanguage",
    "locale",
    "timezone",
    "userType",
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
    "managerId",
    "manager",
];

/// The custom attributes a tierflow org declares by default.
pub fn default_attributes() -> BTreeMap<String, AttrType> {
    BTreeMap::from([
        ("shopify_total_spent".to_owned(), AttrType::Number),
        ("shopify_orders_count".to_owned(), AttrType::Integer),
        ("shopify_customer_id".to_owned(), AttrType::String),
    ])
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub status: String,
    pub created: String,
    pub last_updated: String,
    pub profile: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    /// `OKTA_GROUP`, `APP_GROUP` or `BUILT_IN`.
    pub group_type: String,
    pub name: String,
    pub description: Option<String>,
    pub members: BTreeSet<String>,
    pub last_membership_updated: String,
}

/// A user in a seed file: `profile` holds anything beyond login and email.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub login: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub profile: Map<String, Value>,
    /// Group names the user starts in.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    pub name: String,
    #[serde(default = "okta_group", rename = "type")]
    pub group_type: String,
    #[serde(default)]
    pub description: Option<String>,
}

fn okta_group() -> String {
    "OKTA_GROUP".into()
}

/// The seed file's layout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Custom attributes declared in the user schema (besides the defaults).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrType>,
}

/// An Okta error: status, `errorCode`, summary and causes.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub summary: String,
    pub causes: Vec<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, summary: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            summary: summary.into(),
            causes: Vec::new(),
        }
    }

    pub fn not_found(what: &str, kind: &str) -> Self {
        ApiError::new(
            404,
            "E0000007",
            format!("Not found: Resource not found: {what} ({kind})"),
        )
    }

    pub fn validation(cause: impl Into<String>) -> Self {
        ApiError {
            causes: vec![cause.into()],
            ..ApiError::new(400, "E0000001", "Api validation failed: profile")
        }
    }

    pub fn body(&self, error_id: &str) -> Value {
        json!({
            "errorCode": self.code,
            "errorSummary": self.summary,
            "errorLink": self.code,
            "errorId": error_id,
            "errorCauses": self.causes.iter().map(|c| json!({"errorSummary": c})).collect::<Vec<_>>(),
        })
    }
}

/// One clause of Okta's search expression language: `<path> eq "<value>"`.
#[derive(Debug, Clone, PartialEq)]
pub struct EqSearch {
    pub path: String,
    pub value: String,
}

/// Parse `profile.email eq "a@b.c"` (the one form the writer sends; `\"` and `\\` escape).
pub fn parse_search(expr: &str) -> Result<EqSearch, ApiError> {
    let bad = || ApiError::new(400, "E0000031", "Invalid search criteria.");
    let expr = expr.trim();
    let (path, rest) = expr.split_once(' ').ok_or_else(bad)?;
    let rest = rest
        .trim_start()
        .strip_prefix("eq ")
        .ok_or_else(bad)?
        .trim();
    let inner = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(bad)?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next().ok_or_else(bad)?),
            '"' => return Err(bad()),
            c => value.push(c),
        }
    }
    let valid_path = path == "id"
        || path == "status"
        || path == "type"
        || path.strip_prefix("profile.").is_some_and(|a| {
            !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !valid_path {
        return Err(bad());
    }
    Ok(EqSearch {
        path: path.to_owned(),
        value,
    })
}

fn value_matches(v: Option<&Value>, want: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == want,
        Some(Value::Number(n)) => n.to_string() == want,
        Some(Value::Bool(b)) => b.to_string() == want,
        _ => false,
    }
}

/// The org.
#[derive(Debug, Default)]
pub struct Store {
    pub users: BTreeMap<String, User>,
    /// Lower-cased login → id (logins are unique and compared case-insensitively).
    logins: std::collections::HashMap<String, String>,
    pub groups: BTreeMap<String, Group>,
    pub attributes: BTreeMap<String, AttrType>,
    /// Group rules and the memberships they made (`crate::rules`).
    pub rules: crate::rules::Rules,
    next_id: u64,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    pub fn new(seed: &Seed) -> Result<Store, String> {
        let mut store = Store {
            attributes: default_attributes(),
            ..Store::default()
        };
        store.attributes.extend(seed.attributes.clone());
        store.add_group(
            "Everyone",
            "BUILT_IN",
            Some("All users in your organization"),
        );
        for g in &seed.groups {
            if store.group_by_name(&g.name).is_some() {
                return Err(format!("seed: duplicate group `{}`", g.name));
            }
            store.add_group(&g.name, &g.group_type, g.description.as_deref());
        }
        for u in &seed.users {
            let id = store
                .create_user(u)
                .map_err(|e| format!("seed user `{}`: {} {:?}", u.login, e.summary, e.causes))?;
            for name in &u.groups {
                let gid = store
                    .group_by_name(name)
                    .map(|g| g.id.clone())
                    .ok_or_else(|| format!("seed user `{}`: no group `{name}`", u.login))?;
                store
                    .groups
                    .get_mut(&gid)
                    .expect("found")
                    .members
                    .insert(id.clone());
            }
        }
        Ok(store)
    }

    /// Whether `name` is an attribute of the user profile schema (base or custom).
    pub fn has_attribute(&self, name: &str) -> bool {
        BASE_ATTRIBUTES.contains(&name) || self.attributes.contains_key(name)
    }

    /// Create a group rule (`INACTIVE`).
    pub fn create_rule(&mut self, req: crate::rules::RuleRequest) -> Result<Value, ApiError> {
        self.check_rule(&req)?;
        self.rules.check_new(&req, None)?;
        let id = self.new_id("0pr");
        Ok(self.rules.insert(id, req).json())
    }

    /// The parts of a rule only the org can check: its attribute and its groups.
    pub fn check_rule(&self, req: &crate::rules::RuleRequest) -> Result<(), ApiError> {
        if !self.has_attribute(&req.attribute) {
            return Err(ApiError {
                causes: vec![format!(
                    "conditions.expression.value: Invalid property {} in expression user.{}",
                    req.attribute, req.attribute
                )],
                ..ApiError::new(400, "E0000001", "Api validation failed: groupRule")
            });
        }
        for gid in &req.group_ids {
            match self.groups.get(gid) {
                Some(g) if g.group_type == "OKTA_GROUP" => {}
                Some(_) => {
                    return Err(ApiError::new(
                        400,
                        "E0000001",
                        "Api validation failed: groupRule: only OKTA_GROUP groups can be assigned",
                    ))
                }
                None => return Err(ApiError::not_found(gid, "UserGroup")),
            }
        }
        Ok(())
    }

    /// Apply the group rule evaluations due by `now_ms` (see `crate::rules`).
    pub fn run_rules(&mut self, now_ms: u64) {
        let Some(due) = self.rules.take_due(now_ms) else {
            return;
        };
        let users: Vec<String> = due.unwrap_or_else(|| self.users.keys().cloned().collect());
        let active: Vec<crate::rules::Rule> = self
            .rules
            .rules
            .values()
            .filter(|r| r.status == "ACTIVE")
            .cloned()
            .collect();
        for uid in &users {
            let Some(user) = self.users.get(uid) else {
                continue;
            };
            for rule in &active {
                let matches = !rule.exclude.contains(uid)
                    && user.profile.get(&rule.attribute).and_then(Value::as_str)
                        == Some(rule.value.as_str());
                for gid in &rule.group_ids {
                    let key = (gid.clone(), uid.clone());
                    let Some(group) = self.groups.get_mut(gid) else {
                        continue;
                    };
                    if matches && !group.members.contains(uid) {
                        group.members.insert(uid.clone());
                        group.last_membership_updated = now_rfc3339();
                        self.rules.assigned.insert(key, rule.id.clone());
                    } else if !matches && self.rules.assigned.get(&key) == Some(&rule.id) {
                        group.members.remove(uid);
                        group.last_membership_updated = now_rfc3339();
                        self.rules.assigned.remove(&key);
                    }
                }
            }
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // Okta ids: 20 characters, a 3-character type prefix.
        format!("{prefix}{:017x}", self.next_id * 0x9E37_79B9 % (1 << 60))
    }

    pub fn add_group(&mut self, name: &str, group_type: &str, description: Option<&str>) -> String {
        let id = self.new_id("00g");
        self.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                group_type: group_type.to_owned(),
                name: name.to_owned(),
                description: description.map(str::to_owned),
                members: BTreeSet::new(),
                last_membership_updated: now_rfc3339(),
            },
        );
        id
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups.values().find(|g| g.name == name)
    }

    /// Find by id or login (logins compare case-insensitively, as Okta's do).
    pub fn user(&self, id_or_login: &str) -> Option<&User> {
        self.users.get(id_or_login).or_else(|| {
            self.logins
                .get(&id_or_login.to_lowercase())
                .and_then(|id| self.users.get(id))
        })
    }

    /// Delete a user and their memberships.
    pub fn remove_user(&mut self, id_or_login: &str) -> bool {
        let Some(id) = self.user(id_or_login).map(|u| u.id.clone()) else {
            return false;
        };
        if let Some(u) = self.users.remove(&id) {
            if let Some(l) = u.profile.get("login").and_then(Value::as_str) {
                self.logins.remove(&l.to_lowercase());
            }
        }
        for g in self.groups.values_mut() {
            g.members.remove(&id);
        }
        true
    }

    pub fn search_users(&self, q: &EqSearch) -> Vec<&User> {
        self.users
            .values()
            .filter(|u| match q.path.as_str() {
                "id" => u.id == q.value,
                "status" => u.status == q.value,
                p => {
                    let attr = p.strip_prefix("profile.").unwrap_or(p);
                    value_matches(u.profile.get(attr), &q.value)
                }
            })
            .collect()
    }

    pub fn search_groups(&self, q: &EqSearch) -> Vec<&Group> {
        self.groups
            .values()
            .filter(|g| match q.path.as_str() {
                "id" => g.id == q.value,
                "type" => g.group_type == q.value,
                "profile.name" => g.name == q.value,
                "profile.description" => g.description.as_deref() == Some(q.value.as_str()),
                _ => false,
            })
            .collect()
    }

    fn check_profile(&self, profile: &Map<String, Value>) -> Result<(), ApiError> {
        for (k, v) in profile {
            if BASE_ATTRIBUTES.contains(&k.as_str()) {
                if !(v.is_string() || v.is_null()) {
                    return Err(ApiError::validation(format!(
                        "{k}: Property type mismatch, expected a string"
                    )));
                }
            } else if let Some(t) = self.attributes.get(k) {
                if !t.accepts(v) {
                    return Err(ApiError::validation(format!(
                        "{k}: Property type mismatch, expected a {t:?}"
                    )));
                }
            } else {
                return Err(ApiError::validation(format!(
                    "Property name '{k}' is not defined in profile schema"
                )));
            }
        }
        Ok(())
    }

    pub fn create_user(&mut self, seed: &SeedUser) -> Result<String, ApiError> {
        let mut profile = seed.profile.clone();
        profile.insert("login".into(), Value::String(seed.login.clone()));
        if let Some(e) = &seed.email {
            profile.insert("email".into(), Value::String(e.clone()));
        }
        self.check_profile(&profile)?;
        if seed.login.trim().is_empty() || !profile.get("email").is_some_and(Value::is_string) {
            return Err(ApiError::validation("login and email are required"));
        }
        if self.user(&seed.login).is_some() {
            return Err(ApiError::validation(
                "login: An object with this field already exists in the current organization",
            ));
        }
        let id = self.new_id("00u");
        let now = now_rfc3339();
        self.logins.insert(seed.login.to_lowercase(), id.clone());
        self.users.insert(
            id.clone(),
            User {
                id: id.clone(),
                status: seed.status.clone().unwrap_or_else(|| "ACTIVE".into()),
                created: now.clone(),
                last_updated: now,
                profile,
            },
        );
        if let Some(everyone) = self
            .groups
            .values_mut()
            .find(|g| g.group_type == "BUILT_IN")
        {
            everyone.members.insert(id.clone());
        }
        Ok(id)
    }

    /// Partial update: listed properties replace, the others stay.
    pub fn update_profile(
        &mut self,
        id: &str,
        patch: &Map<String, Value>,
    ) -> Result<&User, ApiError> {
        self.check_profile(patch)?;
        if patch.get("login").is_some_and(|l| !l.is_string()) {
            return Err(ApiError::validation("login: must not be null"));
        }
        let uid = self
            .user(id)
            .map(|u| u.id.clone())
            .ok_or_else(|| ApiError::not_found(id, "User"))?;
        if let Some(new_login) = patch.get("login").and_then(Value::as_str) {
            if let Some(other) = self.logins.get(&new_login.to_lowercase()) {
                if *other != uid {
                    return Err(ApiError::validation(
                        "login: An object with this field already exists in the current organization",
                    ));
                }
            }
            self.logins.retain(|_, id| *id != uid);
            self.logins.insert(new_login.to_lowercase(), uid.clone());
        }
        let user = self.users.get_mut(&uid).expect("found");
        for (k, v) in patch {
            user.profile.insert(k.clone(), v.clone());
        }
        user.last_updated = now_rfc3339();
        Ok(user)
    }

    /// `PUT` (`add = true`) or `DELETE` a membership. Only `OKTA_GROUP` groups can change.
    pub fn set_membership(&mut self, gid: &str, uid: &str, add: bool) -> Result<(), ApiError> {
        if !self.users.contains_key(uid) {
            return Err(ApiError::not_found(uid, "User"));
        }
        let group = self
            .groups
            .get_mut(gid)
            .ok_or_else(|| ApiError::not_found(gid, "UserGroup"))?;
        if group.group_type != "OKTA_GROUP" {
            return Err(ApiError::new(
                403,
                "E0000006",
                "You do not have permission to perform the requested action",
            ));
        }
        let changed = if add {
            group.members.insert(uid.to_owned())
        } else {
            group.members.remove(uid)
        };
        if !add {
            // A rule-assigned member removed by hand: the rule excludes them from now on.
            self.rules.removed_by_hand(gid, uid);
        }
        if changed {
            group.last_membership_updated = now_rfc3339();
        }
        Ok(())
    }

    pub fn groups_of(&self, uid: &str) -> Vec<&Group> {
        self.groups
            .values()
            .filter(|g| g.members.contains(uid))
            .collect()
    }
}

/// The API representation of a user (Okta's `User` object).
pub fn user_json(u: &User, base: &str) -> Value {
    json!({
        "id": u.id,
        "status": u.status,
        "created": u.created,
        "activated": if u.status == "ACTIVE" { Value::String(u.created.clone()) } else { Value::Null },
        "statusChanged": u.created,
        "lastLogin": null,
        "lastUpdated": u.last_updated,
        "passwordChanged": null,
        "type": {"id": "oty1simulatedusertype"},
        "profile": u.profile,
        "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        "_links": {"self": {"href": format!("{base}/api/v1/users/{}", u.id)}},
    })
}

/// The API representation of a group (Okta's `Group` object).
pub fn group_json(g: &Group, base: &str) -> Value {
    let object_class = if g.group_type == "APP_GROUP" {
        "okta:windows_security_principal"
    } else {
        "okta:user_group"
    };
    // Okta omits an unset description (the spec's OktaUserGroupProfile has no null there).
    let mut profile = json!({"name": g.name});
    if let Some(d) = &g.description {
        profile["description"] = json!(d);
    }
    json!({
        "id": g.id,
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "lastMembershipUpdated": g.last_membership_updated,
        "objectClass": [object_class],
        "type": g.group_type,
        "profile": profile,
        "_links": {
            "users": {"href": format!("{base}/api/v1/groups/{}/users", g.id)},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_expressions() {
        assert_eq!(
            parse_search(r#"profile.email eq "a\"b@x.com""#).unwrap(),
            EqSearch {
                path: "profile.email".into(),
                value: "a\"b@x.com".into()
            }
        );
        for bad in [
            "profile.email",
            r#"profile.email sw "a""#,
            r#"profile.email eq a"#,
            r#"profile.em-ail eq "a""#,
            r#"profile.email eq "a"b""#,
        ] {
            assert!(parse_search(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_rules_assign_after_activation_remove_non_matches_and_exclude_hand_removals() {
        use crate::rules::RuleRequest;
        let mut seed = crate::seed(&["VIP"], &[]);
        seed.attributes.insert("tier".into(), AttrType::String);
        for login in ["a@x.com", "b@x.com"] {
            seed.users.push(SeedUser {
                login: login.into(),
                email: Some(login.into()),
                ..Default::default()
            });
        }
        let mut s = Store::new(&seed).unwrap();
        let vip = s.group_by_name("VIP").unwrap().id.clone();
        let (a, b) = (
            s.user("a@x.com").unwrap().id.clone(),
            s.user("b@x.com").unwrap().id.clone(),
        );
        let tier = |v: &str| {
            let mut m = Map::new();
            m.insert("tier".into(), json!(v));
            m
        };
        s.update_profile(&a, &tier("VIP")).unwrap();
        let req = |expr: &str| {
            RuleRequest::parse(&json!({
                "type": "group_rule", "name": "tierflow VIP",
                "conditions": {"expression": {"value": expr, "type": "urn:okta:expression:1.0"}},
                "actions": {"assignUserToGroups": {"groupIds": [vip]}},
            }))
            .unwrap()
        };
        assert_eq!(
            s.create_rule(req("user.nope==\"VIP\"")).unwrap_err().code,
            "E0000001",
            "the attribute must exist"
        );
        let rule = s.create_rule(req("user.tier==\"VIP\"")).unwrap();
        assert_eq!(rule["status"], "INACTIVE");
        let id = rule["id"].as_str().unwrap().to_owned();
        s.rules.rules.get_mut(&id).unwrap().status = "ACTIVE".into();
        s.rules.schedule(None, 1_000);
        s.run_rules(999);
        assert!(!s.groups[&vip].members.contains(&a), "not before the delay");
        s.run_rules(1_000);
        assert!(s.groups[&vip].members.contains(&a));
        assert!(!s.groups[&vip].members.contains(&b));
        // b by hand stays; a no longer matching is removed.
        s.set_membership(&vip, &b, true).unwrap();
        s.update_profile(&a, &tier("New")).unwrap();
        s.rules.schedule(Some(a.clone()), 2_000);
        s.rules.schedule(Some(b.clone()), 2_000);
        s.run_rules(2_000);
        assert!(!s.groups[&vip].members.contains(&a));
        assert!(s.groups[&vip].members.contains(&b));
        // a matches again, is assigned, is removed by hand: excluded from then on.
        s.update_profile(&a, &tier("VIP")).unwrap();
        s.rules.schedule(Some(a.clone()), 3_000);
        s.run_rules(3_000);
        assert!(s.groups[&vip].members.contains(&a));
        s.set_membership(&vip, &a, false).unwrap();
        assert_eq!(s.rules.rules[&id].exclude, std::slice::from_ref(&a));
        s.rules.schedule(Some(a.clone()), 4_000);
        s.run_rules(4_000);
        assert!(!s.groups[&vip].members.contains(&a));
        // Only an inactive rule is replaced, and never its actions.
        assert!(s.rules.replace(&id, req("user.tier==\"Gold\"")).is_err());
        s.rules.rules.get_mut(&id).unwrap().status = "INACTIVE".into();
        assert_eq!(
            s.rules
                .replace(&id, req("user.tier==\"Gold\""))
                .unwrap()
                .value,
            "Gold"
        );
    }

    #[test]
    fn profiles_follow_the_schema_and_everyone_is_built_in() {
        let mut s = Store::new(&Seed {
            groups: vec![SeedGroup {
                name: "VIP".into(),
                group_type: "OKTA_GROUP".into(),
                description: None,
            }],
            ..Seed::default()
        })
        .unwrap();
        let id = s
            .create_user(&SeedUser {
                login: "a@x.com".into(),
                email: Some("a@x.com".into()),
                ..SeedUser::default()
            })
            .unwrap();
        let mut patch = Map::new();
        patch.insert("shopify_total_spent".into(), json!("12.50"));
        assert_eq!(s.update_profile(&id, &patch).unwrap_err().code, "E0000001");
        patch.insert("shopify_total_spent".into(), json!(12.5));
        patch.insert("shopify_orders_count".into(), json!(2));
        assert_eq!(
            s.update_profile("A@X.COM", &patch).unwrap().profile["shopify_orders_count"],
            2
        );
        patch.insert("undeclared".into(), json!(1));
        assert!(s.update_profile(&id, &patch).is_err());
        let everyone = s.group_by_name("Everyone").unwrap().id.clone();
        assert_eq!(
            s.set_membership(&everyone, &id, false).unwrap_err().status,
            403
        );
        let vip = s.group_by_name("VIP").unwrap().id.clone();
        s.set_membership(&vip, &id, true).unwrap();
        assert_eq!(s.groups_of(&id).len(), 2);
        assert_eq!(
            s.set_membership(&vip, "00unope", true).unwrap_err().status,
            404
        );
    }
}
