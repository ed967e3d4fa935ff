//! The Okta operations the writer uses, typed: each one's method and path, the rate-limit
//! bucket and metric name it belongs to, and what its answer must carry. The only place that
//! knows Okta's paths; the transport under it (auth, retries, paging) is [`super`], and what to
//! call when is `apply.rs`.
//!
//! Protocol facts (Okta's docs and the official OpenAPI spec, `tests/spec/`):
//! - A partial profile update is `POST /api/v1/users/{id}` with `{"profile":{…}}`; `PUT` would
//!   replace the whole profile, deleting what is omitted, so it is never used.
//! - Membership is `PUT`/`DELETE /api/v1/groups/{gid}/users/{uid}` → 204; only `OKTA_GROUP`s
//!   can be managed this way.
//! - `GET /api/v1/users/{login}` accepts a login in place of the id; a login with `/` cannot be
//!   addressed in a path and must be searched for.
//! - Searches (`search=`) use Okta's filter syntax: `profile.email eq "a@example.com"`, string
//!   literals in double quotes with `"` and `\` escaped.
//! - Group rules (`/api/v1/groups/rules`) are created `INACTIVE` and changed by
//!   `…/lifecycle/activate|deactivate` (204); only an `INACTIVE` rule can be replaced (`PUT`),
//!   and never its `actions`.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{is_okta_id, Failure, OktaClient};

/// A kind of request the writer sends; its rate-limit bucket and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    GetUser,
    SearchUsers,
    UpdateUser,
    CreateUser,
    ListUserGroups,
    SearchGroups,
    ListGroupUsers,
    AddToGroup,
    RemoveFromGroup,
    ListGroupRules,
    CreateGroupRule,
    ReplaceGroupRule,
    DeleteGroupRule,
    ActivateGroupRule,
    DeactivateGroupRule,
    Token,
}

impl Operation {
    /// The name used in metrics, logs and dead letters (Okta's `operationId`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::GetUser => "getUser",
            Operation::SearchUsers => "listUsers",
            Operation::UpdateUser => "updateUser",
            Operation::CreateUser => "createUser",
            Operation::ListUserGroups => "listUserGroups",
            Operation::SearchGroups => "listGroups",
            Operation::ListGroupUsers => "listGroupUsers",
            Operation::AddToGroup => "assignUserToGroup",
            Operation::RemoveFromGroup => "unassignUserFromGroup",
            Operation::ListGroupRules => "listGroupRules",
            Operation::CreateGroupRule => "createGroupRule",
            Operation::ReplaceGroupRule => "replaceGroupRule",
            Operation::DeleteGroupRule => "deleteGroupRule",
            Operation::ActivateGroupRule => "activateGroupRule",
            Operation::DeactivateGroupRule => "deactivateGroupRule",
            Operation::Token => "token",
        }
    }

    /// Does a 2xx body carry what this call needs? Users and groups must have an `id` (Okta's
    /// ids are short ASCII alphanumerics, e.g. `00u1abcd2EFGH3ijk4x7`); lists must be arrays
    /// of such objects. Membership calls answer 204 and need nothing.
    pub fn check_body(self, body: &Value) -> Result<(), String> {
        fn has_id(v: &Value) -> Result<(), String> {
            match v.get("id").and_then(Value::as_str) {
                Some(id) if is_okta_id(id) => Ok(()),
                Some(id) => Err(format!("`id` {id:?} is not an Okta id")),
                None => Err("no `id`".into()),
            }
        }
        match self {
            Operation::GetUser | Operation::UpdateUser | Operation::CreateUser => {
                has_id(body).map_err(|e| format!("user object expected: {e}"))
            }
            Operation::CreateGroupRule | Operation::ReplaceGroupRule => {
                has_id(body).map_err(|e| format!("group rule expected: {e}"))
            }
            Operation::SearchUsers
            | Operation::ListUserGroups
            | Operation::SearchGroups
            | Operation::ListGroupUsers
            | Operation::ListGroupRules => match body {
                Value::Array(items) => items
                    .iter()
                    .try_for_each(has_id)
                    .map_err(|e| format!("list item: {e}")),
                _ => Err("a JSON array expected".into()),
            },
            Operation::AddToGroup
            | Operation::RemoveFromGroup
            | Operation::DeleteGroupRule
            | Operation::ActivateGroupRule
            | Operation::DeactivateGroupRule
            | Operation::Token => Ok(()),
        }
    }

    /// Okta's rate-limit bucket for the request (the limiter paces per bucket).
    pub fn bucket(self) -> &'static str {
        match self {
            Operation::GetUser | Operation::ListUserGroups => "users_get",
            Operation::SearchUsers => "users_search",
            Operation::UpdateUser | Operation::CreateUser => "users_update",
            Operation::SearchGroups
            | Operation::ListGroupUsers
            | Operation::AddToGroup
            | Operation::RemoveFromGroup
            | Operation::ListGroupRules
            | Operation::CreateGroupRule
            | Operation::ReplaceGroupRule
            | Operation::DeleteGroupRule
            | Operation::ActivateGroupRule
            | Operation::DeactivateGroupRule => "groups",
            Operation::Token => "token",
        }
    }
}

/// An Okta user, as far as the writer reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// `profile` (login, email, the attributes); empty when the answer has none.
    pub profile: Map<String, Value>,
}

/// An Okta group, as far as the writer reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    /// `OKTA_GROUP`, `APP_GROUP` or `BUILT_IN`; only the first can be managed.
    pub kind: String,
    /// `profile.name`.
    pub name: Option<String>,
}

/// A group rule, as far as the writer reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `INACTIVE` or `INVALID`.
    pub status: String,
    /// `conditions.expression.value`.
    pub expression: String,
    /// `actions.assignUserToGroups.groupIds`.
    pub group_ids: Vec<String>,
    /// `conditions.people.users.exclude`: users removed by hand from a rule's group.
    pub excluded: usize,
}

impl GroupRule {
    fn from_answer(v: &Value) -> GroupRule {
        let text = |ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        GroupRule {
            id: id_of(v),
            name: text("/name"),
            status: text("/status"),
            expression: text("/conditions/expression/value"),
            group_ids: v
                .pointer("/actions/assignUserToGroups/groupIds")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            excluded: v
                .pointer("/conditions/people/users/exclude")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
        }
    }

    /// The body of `createGroupRule` / `replaceGroupRule`.
    pub fn request(name: &str, expression: &str, group_id: &str) -> Value {
        json!({
            "type": "group_rule",
            "name": name,
            "conditions": {
                "expression": {"value": expression, "type": "urn:okta:expression:1.0"},
            },
            "actions": {"assignUserToGroups": {"groupIds": [group_id]}},
        })
    }
}

// Answers reach these only after `Operation::check_body` accepted them: every object has an
// Okta id.
fn id_of(v: &Value) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl User {
    fn from_answer(v: &Value) -> User {
        User {
            id: id_of(v),
            profile: v
                .get("profile")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

impl Group {
    fn from_answer(v: &Value) -> Group {
        Group {
            id: id_of(v),
            kind: v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            name: v
                .pointer("/profile/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// `profile.<attribute> eq "<value>"`: an Okta search expression matching one attribute.
pub fn attribute_equals(attribute: &str, value: &str) -> String {
    let literal = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("profile.{attribute} eq \"{literal}\"")
}

/// A path segment, percent-encoded (ids come from Okta, logins from Shopify: neither may
/// change the path).
fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn search(path: &str, expr: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("search", expr)
        .finish();
    format!("{path}?{query}")
}

impl OktaClient {
    /// `getUser` by login (or id).
    pub async fn get_user(&self, login: &str) -> Result<User, Failure> {
        let path = format!("/api/v1/users/{}", segment(login));
        let r = self
            .send(Operation::GetUser, Method::GET, &path, None)
            .await?;
        Ok(User::from_answer(&r.body))
    }

    /// `listUsers` with a search expression (see [`attribute_equals`]), every page.
    pub async fn search_users(&self, expr: &str) -> Result<Vec<User>, Failure> {
        let found = self
            .list_all(Operation::SearchUsers, &search("/api/v1/users", expr))
            .await?;
        Ok(found.iter().map(User::from_answer).collect())
    }

    /// `createUser`, staged (not activated: no email goes out), with `profile`.
    pub async fn create_staged_user(&self, profile: Map<String, Value>) -> Result<User, Failure> {
        let body = json!({ "profile": profile });
        let r = self
            .send(
                Operation::CreateUser,
                Method::POST,
                "/api/v1/users?activate=false",
                Some(body),
            )
            .await?;
        Ok(User::from_answer(&r.body))
    }

    /// `updateUser` as a partial update: only the attributes in `patch` change.
    pub async fn update_profile(
        &self,
        user_id: &str,
        patch: &Map<String, Value>,
    ) -> Result<(), Failure> {
        let path = format!("/api/v1/users/{}", segment(user_id));
        let body = json!({ "profile": patch });
        self.send(Operation::UpdateUser, Method::POST, &path, Some(body))
            .await
            .map(drop)
    }

    /// `listUserGroups`: every group the user is in.
    pub async fn user_groups(&self, user_id: &str) -> Result<Vec<Group>, Failure> {
        let path = format!("/api/v1/users/{}/groups", segment(user_id));
        let found = self.list_all(Operation::ListUserGroups, &path).await?;
        Ok(found.iter().map(Group::from_answer).collect())
    }

    /// `assignUserToGroup`.
    pub async fn add_to_group(&self, group_id: &str, user_id: &str) -> Result<(), Failure> {
        self.membership(Operation::AddToGroup, Method::PUT, group_id, user_id)
            .await
    }

    /// `unassignUserFromGroup`. Okta answers 404 when the user is not a member.
    pub async fn remove_from_group(&self, group_id: &str, user_id: &str) -> Result<(), Failure> {
        self.membership(
            Operation::RemoveFromGroup,
            Method::DELETE,
            group_id,
            user_id,
        )
        .await
    }

    /// `PUT` or `DELETE /api/v1/groups/{gid}/users/{uid}` (204, no body).
    async fn membership(
        &self,
        op: Operation,
        method: Method,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), Failure> {
        let path = format!(
            "/api/v1/groups/{}/users/{}",
            segment(group_id),
            segment(user_id)
        );
        self.send(op, method, &path, None).await.map(drop)
    }

    /// `listGroups` searching by exact name (Okta's search also matches other groups only if
    /// the name is not unique; the caller checks).
    pub async fn groups_named(&self, name: &str) -> Result<Vec<Group>, Failure> {
        let expr = attribute_equals("name", name);
        let found = self
            .list_all(Operation::SearchGroups, &search("/api/v1/groups", &expr))
            .await?;
        Ok(found.iter().map(Group::from_answer).collect())
    }

    /// `listGroupRules` whose name contains `search`, every page.
    pub async fn group_rules(&self, search_for: &str) -> Result<Vec<GroupRule>, Failure> {
        let path = format!("{}&limit=200", search("/api/v1/groups/rules", search_for));
        let found = self.list_all(Operation::ListGroupRules, &path).await?;
        Ok(found.iter().map(GroupRule::from_answer).collect())
    }

    /// `createGroupRule` (Okta creates it `INACTIVE`).
    pub async fn create_group_rule(&self, body: Value) -> Result<GroupRule, Failure> {
        let r = self
            .send(
                Operation::CreateGroupRule,
                Method::POST,
                "/api/v1/groups/rules",
                Some(body),
            )
            .await?;
        Ok(GroupRule::from_answer(&r.body))
    }

    /// `replaceGroupRule` (the rule must be `INACTIVE`; its actions cannot change).
    pub async fn replace_group_rule(&self, id: &str, body: Value) -> Result<GroupRule, Failure> {
        let path = format!("/api/v1/groups/rules/{}", segment(id));
        let r = self
            .send(Operation::ReplaceGroupRule, Method::PUT, &path, Some(body))
            .await?;
        Ok(GroupRule::from_answer(&r.body))
    }

    /// `deleteGroupRule`; `remove_users` also takes out the memberships it made.
    pub async fn delete_group_rule(&self, id: &str, remove_users: bool) -> Result<(), Failure> {
        let path = format!(
            "/api/v1/groups/rules/{}?removeUsers={remove_users}",
            segment(id)
        );
        self.send(Operation::DeleteGroupRule, Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    /// `activateGroupRule` (`active`) or `deactivateGroupRule`.
    pub async fn set_group_rule_active(&self, id: &str, active: bool) -> Result<(), Failure> {
        let (op, verb) = if active {
            (Operation::ActivateGroupRule, "activate")
        } else {
            (Operation::DeactivateGroupRule, "deactivate")
        };
        let path = format!("/api/v1/groups/rules/{}/lifecycle/{verb}", segment(id));
        self.send(op, Method::POST, &path, None).await.map(drop)
    }

    /// `listGroupUsers`: every member of the group (1,000 per page, Okta's largest).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<User>, Failure> {
        let path = format!("/api/v1/groups/{}/users?limit=1000", segment(group_id));
        let found = self.list_all(Operation::ListGroupUsers, &path).await?;
        Ok(found.iter().map(User::from_answer).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_literals_and_path_segments_cannot_escape() {
        assert_eq!(
            attribute_equals("email", r#"a"b\c@example.com"#),
            r#"profile.email eq "a\"b\\c@example.com""#
        );
        assert_eq!(segment("a/b@c.com"), "a%2Fb%40c%2Ecom");
        assert_eq!(
            search("/api/v1/users", &attribute_equals("email", "a&b=c")),
            "/api/v1/users?search=profile.email+eq+%22a%26b%3Dc%22"
        );
    }

    #[test]
    fn answers_read_into_types() {
        let g = Group::from_answer(
            &json!({"id": "00g1", "type": "OKTA_GROUP", "profile": {"name": "VIP"}}),
        );
        assert_eq!(
            g,
            Group {
                id: "00g1".into(),
                kind: "OKTA_GROUP".into(),
                name: Some("VIP".into())
            }
        );
        assert_eq!(User::from_answer(&json!({"id": "00u1"})).id, "00u1");
    }
}
