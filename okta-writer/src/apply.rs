//! Applying one customer's newest segment update to Okta with as few calls as possible.
//!
//! 1. Resolve the customer to an Okta user id (cached with a TTL; `[okta] user_lookup`).
//! 2. Set `shopify_total_spent` (a JSON number, rounded to cents) and `shopify_orders_count`
//!    with a partial update, unless the cache says exactly these values were applied.
//! 3. Put the user in the new tier's group *before* taking them out of the old one, so a failure
//!    in between leaves them in two tiers for a moment, never in none.
//!
//! What the writer last applied to a customer is trusted while cached. When it cannot trust it
//! (the customer's first update since start or cache expiry, a redriven dead letter, an update
//! whose tier groups are not in the tier table) it reads the user's groups once and removes
//! every tier group other than the target, so drift (a human moving people by hand, a failed
//! earlier run) heals. `Everyone` and non-tier groups are never touched; a `DELETE` that finds
//! no membership is done.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::Method;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use schemas::TierTable;
use schemas::{SegmentUpdate, UpdateKind};
use serde_json::{json, Value};

use crate::client::{ErrorClass, Failure, OktaClient, Operation};
use crate::config::{MissingUser, OktaConfig, UserLookup};
use crate::failure::DeadLetterReason;
use crate::metrics::Metrics;

/// A tier's Okta group, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierGroup {
    pub tier: String,
    pub name: String,
    pub id: String,
}

/// Every tier's group, resolved by name at startup.
#[derive(Debug, Clone, Default)]
pub struct GroupTable {
    pub groups: Vec<TierGroup>,
    by_name: HashMap<String, String>,
}

impl GroupTable {
    pub fn new(groups: Vec<TierGroup>) -> GroupTable {
        let by_name = groups
            .iter()
            .map(|g| (g.name.clone(), g.id.clone()))
            .collect();
        GroupTable { groups, by_name }
    }

    pub fn id_of(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    fn is_tier_group(&self, id: &str) -> bool {
        self.groups.iter().any(|g| g.id == id)
    }
}

/// Why tier groups cannot be used; startup fails with this.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("Okta group `{0}` (tier `{1}`) does not exist; create it as an Okta group, or fix [[tiers]] okta_group")]
    Missing(String, String),
    #[error("{2} Okta groups are named `{0}` (tier `{1}`); rename all but one")]
    Duplicate(String, String, usize),
    #[error(
        "Okta group `{0}` (tier `{1}`) is of type {2}; only OKTA_GROUP memberships can be managed"
    )]
    WrongType(String, String, String),
    #[error("looking up Okta group `{0}`: {1}")]
    Okta(String, Failure),
}

/// Okta search-expression string literal (`"` and `\` escaped).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn search_query(expr: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("search", expr)
        .finish()
}

/// Resolve every tier's `okta_group` name to an id, failing on the first that is missing,
/// duplicated, or not an `OKTA_GROUP`.
pub async fn resolve_groups(
    client: &OktaClient,
    tiers: &TierTable,
) -> Result<GroupTable, GroupError> {
    let mut out = Vec::new();
    for t in tiers.rows() {
        let path = format!(
            "/api/v1/groups?{}",
            search_query(&format!("profile.name eq {}", quoted(&t.okta_group)))
        );
        let found = client
            .list_all(Operation::SearchGroups, &path)
            .await
            .map_err(|f| GroupError::Okta(t.okta_group.clone(), f))?;
        let matching: Vec<&Value> = found
            .iter()
            .filter(|g| {
                g.pointer("/profile/name").and_then(Value::as_str) == Some(t.okta_group.as_str())
            })
            .collect();
        let g = match matching.as_slice() {
            [] => return Err(GroupError::Missing(t.okta_group.clone(), t.name.clone())),
            [g] => *g,
            many => {
                return Err(GroupError::Duplicate(
                    t.okta_group.clone(),
                    t.name.clone(),
                    many.len(),
                ))
            }
        };
        let kind = g.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "OKTA_GROUP" {
            return Err(GroupError::WrongType(
                t.okta_group.clone(),
                t.name.clone(),
                kind.to_owned(),
            ));
        }
        out.push(TierGroup {
            tier: t.name.clone(),
            name: t.okta_group.clone(),
            id: g
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(GroupTable::new(out))
}

/// Why an update could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Dead-letter it: `reason` is the bounded label, the message says the rest.
    #[error("{reason}: {message}")]
    Permanent {
        reason: DeadLetterReason,
        message: String,
        failure: Option<Failure>,
    },
    /// Okta rejects the credentials: pause, keep the update.
    #[error("credentials rejected: {0}")]
    Credentials(Failure),
}

impl ApplyError {
    fn from_failure(f: Failure, client: &OktaClient) -> ApplyError {
        match f.class() {
            // A 401 (or the token endpoint refusing the client) always means the credentials;
            // a 403 on its own can be one protected user, so only a run of them across calls
            // counts as systemic.
            ErrorClass::Credentials
                if f.last.rejects_credentials() || client.consecutive_auth_failures() >= 3 =>
            {
                ApplyError::Credentials(f)
            }
            _ => {
                let reason = if f.last.is_unusable_answer() && !f.exhausted {
                    DeadLetterReason::InvalidResponse
                } else if f.exhausted {
                    DeadLetterReason::RetriesExhausted
                } else if f.last.status() == Some(404) {
                    DeadLetterReason::NotFound
                } else {
                    DeadLetterReason::OktaRejected
                };
                ApplyError::Permanent {
                    reason,
                    message: f.to_string(),
                    failure: Some(f),
                }
            }
        }
    }

    /// The bounded label: a dead-letter reason, or `credentials`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Permanent { reason, .. } => reason.label(),
            ApplyError::Credentials(_) => "credentials",
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            ApplyError::Permanent { failure, .. } => failure.as_ref(),
            ApplyError::Credentials(f) => Some(f),
        }
    }
}

fn permanent(reason: DeadLetterReason, message: impl Into<String>) -> ApplyError {
    ApplyError::Permanent {
        reason,
        message: message.into(),
        failure: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Skipped(&'static str),
}

/// What the writer last applied to a customer, and their Okta id.
#[derive(Debug, Clone)]
struct Known {
    user_id: String,
    /// `(profile patch, tier group id)` fully applied; `None` when unknown or a write failed.
    applied: Option<(Value, Option<String>)>,
}

enum Lookup {
    Found(String),
    /// No user; with the lookup's 404 when there was one (for the dead letter's context).
    Missing(Option<Box<Failure>>),
}

/// Applies updates; shared by the consumer loop's tasks and `dlq redrive`.
#[derive(Debug)]
pub struct Applier {
    pub client: OktaClient,
    pub groups: GroupTable,
    lookup: UserLookup,
    missing_user: MissingUser,
    spent_attr: String,
    count_attr: String,
    cache: moka::sync::Cache<String, Known>,
    metrics: Metrics,
}

/// Money as Okta's number attribute wants it: a JSON number rounded to cents.
fn money(d: Decimal) -> Value {
    d.round_dp(2)
        .to_f64()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

impl Applier {
    pub fn new(
        client: OktaClient,
        groups: GroupTable,
        okta: &OktaConfig,
        metrics: Metrics,
    ) -> Applier {
        Applier {
            client,
            groups,
            lookup: okta.user_lookup.clone(),
            missing_user: okta.missing_user,
            spent_attr: okta.total_spent_attribute.clone(),
            count_attr: okta.orders_count_attribute.clone(),
            cache: moka::sync::Cache::builder()
                .max_capacity(okta.user_cache_size)
                .time_to_live(okta.user_cache_ttl.max(Duration::from_secs(1)))
                .build(),
            metrics,
        }
    }

    fn profile_patch(&self, u: &SegmentUpdate) -> Value {
        let mut p = serde_json::Map::new();
        match u.kind {
            UpdateKind::Segment => {
                p.insert(self.spent_attr.clone(), money(u.total_spent));
                p.insert(self.count_attr.clone(), json!(u.orders_count));
            }
            UpdateKind::Redact => {
                p.insert(self.spent_attr.clone(), Value::Null);
                p.insert(self.count_attr.clone(), Value::Null);
            }
        }
        Value::Object(p)
    }

    async fn find_user(&self, u: &SegmentUpdate) -> Result<Lookup, ApplyError> {
        let c = &self.client;
        let search = |expr: String| async move {
            let path = format!("/api/v1/users?{}", search_query(&expr));
            let found = c
                .list_all(Operation::SearchUsers, &path)
                .await
                .map_err(|f| ApplyError::from_failure(f, c))?;
            match found.as_slice() {
                [] => Ok(Lookup::Missing(None)),
                [one] => Ok(Lookup::Found(
                    one.get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )),
                many => Err(permanent(
                    DeadLetterReason::AmbiguousUser,
                    format!("{expr} matches {} Okta users", many.len()),
                )),
            }
        };
        match &self.lookup {
            UserLookup::Attribute(attr) => {
                search(format!(
                    "profile.{attr} eq {}",
                    quoted(&u.customer_id.to_string())
                ))
                .await
            }
            UserLookup::Email => {
                let email = u.email.as_deref().ok_or_else(|| {
                    permanent(
                        DeadLetterReason::NoEmail,
                        "the update has no email to look the user up by",
                    )
                })?;
                search(format!("profile.email eq {}", quoted(email))).await
            }
            UserLookup::Login => {
                let email = u.email.as_deref().ok_or_else(|| {
                    permanent(
                        DeadLetterReason::NoEmail,
                        "the update has no email to look the user up by",
                    )
                })?;
                if email.contains('/') {
                    // Okta cannot address a login with `/` in the path.
                    return search(format!("profile.login eq {}", quoted(email))).await;
                }
                let path = format!(
                    "/api/v1/users/{}",
                    utf8_percent_encode(email, NON_ALPHANUMERIC)
                );
                match c.send(Operation::GetUser, Method::GET, &path, None).await {
                    Ok(r) => Ok(Lookup::Found(
                        r.body
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    )),
                    Err(f) if f.last.status() == Some(404) => {
                        Ok(Lookup::Missing(Some(Box::new(f))))
                    }
                    Err(f) => Err(ApplyError::from_failure(f, c)),
                }
            }
        }
    }

    async fn create_user(&self, u: &SegmentUpdate, patch: &Value) -> Result<String, ApplyError> {
        let email = u.email.as_deref().ok_or_else(|| {
            permanent(
                DeadLetterReason::NoEmail,
                "cannot create an Okta user without an email",
            )
        })?;
        let mut profile = patch.as_object().cloned().unwrap_or_default();
        profile.insert("login".into(), json!(email));
        profile.insert("email".into(), json!(email));
        let body = json!({ "profile": profile });
        let r = self
            .client
            .send(
                Operation::CreateUser,
                Method::POST,
                "/api/v1/users?activate=false",
                Some(body),
            )
            .await
            .map_err(|f| ApplyError::from_failure(f, &self.client))?;
        Ok(r.body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Apply `u` (the newest of a customer's queued updates). `previous_groups` are the Okta
    /// groups the coalesced updates said the customer was in before; `trusted = false` forces
    /// reading the user's groups (redrive).
    pub async fn apply(
        &self,
        u: &SegmentUpdate,
        previous_groups: &[String],
        trusted: bool,
    ) -> Result<Outcome, ApplyError> {
        let key = format!("{}/{}", u.shop, u.customer_id);
        let target = match (&u.kind, &u.tier) {
            (UpdateKind::Segment, Some(t)) => Some(
                self.groups
                    .id_of(&t.okta_group)
                    .ok_or_else(|| permanent(DeadLetterReason::UnknownGroup, format!("tier `{}` names Okta group `{}`, which is not in this writer's [[tiers]]", t.name, t.okta_group)))?
                    .to_owned(),
            ),
            (UpdateKind::Segment, None) => return Err(permanent(DeadLetterReason::InvalidRecord, "a segment update without a tier")),
            (UpdateKind::Redact, _) => None,
        };
        // The segmenter never emits these; a record that says so came from elsewhere and must
        // not reach a marketer's profile.
        if u.total_spent.is_sign_negative() && !u.total_spent.is_zero() {
            return Err(permanent(
                DeadLetterReason::InvalidRecord,
                format!("total_spent {} is negative", u.total_spent),
            ));
        }
        let patch = self.profile_patch(u);
        let known = self.cache.get(&key);
        self.metrics
            .user_cache
            .with_label_values(&[if known.is_some() { "hit" } else { "miss" }])
            .inc();
        let mut created = false;
        let needs_email = matches!(self.lookup, UserLookup::Login | UserLookup::Email);
        if known.is_none() && u.kind == UpdateKind::Redact && needs_email && u.email.is_none() {
            // Nothing left to find the user by; the segmenter never knew their email.
            return Ok(Outcome::Skipped("redact_user_not_found"));
        }
        let mut user_id = match &known {
            Some(k) => k.user_id.clone(),
            None => match self.find_user(u).await? {
                Lookup::Found(id) => id,
                Lookup::Missing(_) if u.kind == UpdateKind::Redact => {
                    return Ok(Outcome::Skipped("redact_user_not_found"))
                }
                Lookup::Missing(lookup) => match self.missing_user {
                    MissingUser::DeadLetter => {
                        return Err(ApplyError::Permanent {
                            reason: DeadLetterReason::MissingUser,
                            message: format!(
                                "no Okta user matches the customer (lookup: {:?})",
                                self.lookup
                            ),
                            failure: lookup.map(|f| *f),
                        })
                    }
                    MissingUser::Skip => return Ok(Outcome::Skipped("missing_user")),
                    MissingUser::Create => {
                        created = true;
                        self.create_user(u, &patch).await?
                    }
                },
            },
        };
        // What was applied before counts only if this is not a redrive and every group the
        // update history names is one the writer knows.
        let mappable = previous_groups
            .iter()
            .all(|g| self.groups.id_of(g).is_some());
        let applied = known
            .as_ref()
            .and_then(|k| k.applied.clone())
            // A redaction always reads the groups: it must leave no tier membership behind.
            .filter(|_| trusted && mappable && u.kind == UpdateKind::Segment);
        // Invalidate first: if anything below fails, the next attempt starts untrusted.
        self.cache.insert(
            key.clone(),
            Known {
                user_id: user_id.clone(),
                applied: None,
            },
        );

        if !created && applied.as_ref().map(|(p, _)| p) != Some(&patch) {
            let body = json!({ "profile": patch });
            let path = format!("/api/v1/users/{user_id}");
            match self
                .client
                .send(
                    Operation::UpdateUser,
                    Method::POST,
                    &path,
                    Some(body.clone()),
                )
                .await
            {
                Ok(_) => {}
                Err(f) if f.last.status() == Some(404) && known.is_some() => {
                    // The cached id is gone (user deleted and re-created?): look up once more.
                    self.cache.invalidate(&key);
                    user_id = match self.find_user(u).await? {
                        Lookup::Found(id) => id,
                        Lookup::Missing(lookup) => {
                            return Err(ApplyError::Permanent {
                                reason: DeadLetterReason::MissingUser,
                                message: "the Okta user the writer knew is gone and no other \
                                          matches"
                                    .into(),
                                failure: lookup.map(|f| *f),
                            })
                        }
                    };
                    self.cache.insert(
                        key.clone(),
                        Known {
                            user_id: user_id.clone(),
                            applied: None,
                        },
                    );
                    let path = format!("/api/v1/users/{user_id}");
                    self.client
                        .send(Operation::UpdateUser, Method::POST, &path, Some(body))
                        .await
                        .map_err(|f| ApplyError::from_failure(f, &self.client))?;
                }
                Err(f) => return Err(ApplyError::from_failure(f, &self.client)),
            }
        }

        let remove: Vec<String> = match applied.as_ref().map(|(_, g)| g.clone()) {
            Some(current) => current
                .into_iter()
                .filter(|g| Some(g) != target.as_ref())
                .collect(),
            None => {
                let path = format!("/api/v1/users/{user_id}/groups");
                let groups = self
                    .client
                    .list_all(Operation::ListUserGroups, &path)
                    .await
                    .map_err(|f| ApplyError::from_failure(f, &self.client))?;
                let ids: Vec<String> = groups
                    .iter()
                    .filter_map(|g| g.get("id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect();
                if let Some(t) = &target {
                    if ids.contains(t) {
                        // Already there: nothing to add.
                        self.finish(
                            &key,
                            &user_id,
                            patch,
                            target.clone(),
                            ids.iter()
                                .filter(|g| *g != t && self.groups.is_tier_group(g))
                                .cloned()
                                .collect(),
                        )
                        .await?;
                        return Ok(Outcome::Applied);
                    }
                }
                ids.into_iter()
                    .filter(|g| self.groups.is_tier_group(g) && Some(g) != target.as_ref())
                    .collect()
            }
        };
        if let Some(t) = &target {
            if applied.as_ref().and_then(|(_, g)| g.as_ref()) != Some(t) {
                let path = format!("/api/v1/groups/{t}/users/{user_id}");
                self.client
                    .send(Operation::AddToGroup, Method::PUT, &path, None)
                    .await
                    .map_err(|f| ApplyError::from_failure(f, &self.client))?;
            }
        }
        self.finish(&key, &user_id, patch, target, remove).await?;
        Ok(Outcome::Applied)
    }

    /// Remove the other tier groups, then remember what is now applied.
    async fn finish(
        &self,
        key: &str,
        user_id: &str,
        patch: Value,
        target: Option<String>,
        remove: Vec<String>,
    ) -> Result<(), ApplyError> {
        for g in remove {
            let path = format!("/api/v1/groups/{g}/users/{user_id}");
            match self
                .client
                .send(Operation::RemoveFromGroup, Method::DELETE, &path, None)
                .await
            {
                Ok(_) => {}
                // Not a member (or already gone): the effect is in place.
                Err(f) if f.last.status() == Some(404) => {}
                Err(f) => return Err(ApplyError::from_failure(f, &self.client)),
            }
        }
        self.cache.insert(
            key.to_owned(),
            Known {
                user_id: user_id.to_owned(),
                applied: Some((patch, target)),
            },
        );
        Ok(())
    }
}
