//! Applying one customer's newest segment update to Okta with as few calls as possible.
//!
//! 1. Resolve the customer to an Okta user id (cached with a TTL; `[okta] user_lookup`).
//! 2. Write the profile attributes (`[okta.profile_attributes]`, see [`crate::profile`]) with a
//!    partial update, unless the cache says exactly these values were applied.
//! 3. Put the user in the new tier's group *before* taking them out of the old one, so a failure
//!    in between leaves them in two tiers for a moment, never in none. With
//!    `group_assignment = "rules"` there is no step 3: Okta's group rules (`crate::rules`) move
//!    the user when the tier attribute written in step 2 changes.
//!
//! The Okta calls are the typed operations of [`crate::client::api`]. Which attributes and
//! tier groups are the update's is its shop's ([`crate::stores`]): a store never touches
//! another store's.
//!
//! What the writer last applied to a customer is trusted while cached and while the customer's
//! partition has stayed with this writer since ([`Trust::Epoch`]). When it cannot trust it
//! (the customer's first update since start, cache expiry, or the partition coming back from
//! another writer; a redriven dead letter; an update whose tier groups are not in the tier
//! table) it reads the user's groups once and removes
//! every tier group other than the target, so drift (a human moving people by hand, a failed
//! earlier run) heals. `Everyone` and non-tier groups are never touched; a `DELETE` that finds
//! no membership is done.

use std::collections::HashMap;
use std::time::Duration;

use schemas::{SegmentUpdate, UpdateKind};
use serde_json::{json, Map, Value};

use crate::client::api::{self, Group};
use crate::client::{ErrorClass, Failure, OktaClient};
use crate::config::{GroupAssignment, MissingUser, OktaConfig, UserLookup};
use crate::failure::DeadLetterReason;
use crate::metrics::Metrics;
use crate::profile::ProfileAttributes;
use crate::stores::StoreNames;

/// A tier's Okta group in one store, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierGroup {
    pub tier: String,
    /// The tier's `okta_group` as updates name it.
    pub in_updates: String,
    /// The store's Okta group name (with its `group_suffix`).
    pub name: String,
    pub id: String,
}

/// One store's tier groups, resolved by name at startup.
#[derive(Debug, Clone, Default)]
pub struct GroupTable {
    pub groups: Vec<TierGroup>,
    /// `in_updates` → id.
    by_name: HashMap<String, String>,
}

impl GroupTable {
    pub fn new(groups: Vec<TierGroup>) -> GroupTable {
        let by_name = groups
            .iter()
            .map(|g| (g.in_updates.clone(), g.id.clone()))
            .collect();
        GroupTable { groups, by_name }
    }

    /// The id of this store's group for the tier group an update names.
    pub fn id_of(&self, in_updates: &str) -> Option<&str> {
        self.by_name.get(in_updates).map(String::as_str)
    }

    fn is_tier_group(&self, id: &str) -> bool {
        self.groups.iter().any(|g| g.id == id)
    }
}

/// Why tier groups cannot be used; startup fails with this.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("Okta group `{0}` (tier `{1}`) does not exist; create it as an Okta group, or fix [[tiers]] okta_group (or the store's group_suffix)")]
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

/// A declared store, ready to apply with: its attributes, its resolved tier groups, and how
/// its customers are found.
#[derive(Debug, Clone)]
pub struct Store {
    pub shop: String,
    pub attributes: ProfileAttributes,
    pub groups: GroupTable,
    pub lookup: UserLookup,
}

/// Resolve every store's tier group names to ids, failing on the first that is missing,
/// duplicated, or not an `OKTA_GROUP`.
pub async fn resolve_groups(
    client: &OktaClient,
    stores: Vec<StoreNames>,
) -> Result<Vec<Store>, GroupError> {
    let mut out = Vec::new();
    for store in stores {
        let mut groups = Vec::new();
        for t in store.groups {
            let found = client
                .groups_named(&t.name)
                .await
                .map_err(|f| GroupError::Okta(t.name.clone(), f))?;
            let matching: Vec<Group> = found
                .into_iter()
                .filter(|g| g.name.as_deref() == Some(t.name.as_str()))
                .collect();
            let g = match <[Group; 1]>::try_from(matching) {
                Ok([g]) => g,
                Err(v) if v.is_empty() => return Err(GroupError::Missing(t.name, t.tier)),
                Err(many) => return Err(GroupError::Duplicate(t.name, t.tier, many.len())),
            };
            if g.kind != "OKTA_GROUP" {
                return Err(GroupError::WrongType(t.name, t.tier, g.kind));
            }
            groups.push(TierGroup {
                tier: t.tier,
                in_updates: t.in_updates,
                name: t.name,
                id: g.id,
            });
        }
        out.push(Store {
            shop: store.shop,
            attributes: store.attributes,
            groups: GroupTable::new(groups),
            lookup: store.lookup,
        });
    }
    Ok(out)
}

/// Why an update could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Dead-letter it: `reason` is the bounded label, the message says the rest.
    #[error("{reason}: {message}")]
    Permanent {
        reason: DeadLetterReason,
        message: String,
        failure: Option<Box<Failure>>,
    },
    /// Okta rejects the credentials: pause, keep the update.
    #[error("credentials rejected: {0}")]
    Credentials(Box<Failure>),
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
                ApplyError::Credentials(Box::new(f))
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
                    failure: Some(Box::new(f)),
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
            ApplyError::Permanent { failure, .. } => failure.as_deref(),
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

/// How far [`Applier::apply`] may trust what the writer last applied to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Trust the cache (a caller that is the customer's only writer).
    Cached,
    /// Trust it only if it was applied in this assignment epoch of the customer's partition
    /// (`GroupContext::epoch`, unique per assignment in a process). A partition that went to
    /// another writer and came back may have been changed in Okta meanwhile: that writer, killed
    /// between a profile write and its group calls, left the user in an older tier's group,
    /// which a trusted cache then never corrected (found by the kill test).
    Epoch(u64),
    /// Read the user's groups (redrive).
    Nothing,
}

/// `(profile patch, tier group id)` as applied to a user.
type Applied = (Map<String, Value>, Option<String>);

/// What the writer last applied to a customer, and their Okta id.
#[derive(Debug, Clone)]
struct Known {
    user_id: String,
    /// Fully applied; `None` when unknown or a write failed.
    applied: Option<Applied>,
    /// The assignment epoch `applied` was written in, under [`Trust::Epoch`].
    epoch: Option<u64>,
}

impl Known {
    fn trusted(&self, trust: Trust) -> bool {
        match trust {
            Trust::Cached => true,
            Trust::Epoch(e) => self.epoch == Some(e),
            Trust::Nothing => false,
        }
    }
}

enum Lookup {
    Found(String),
    /// No user; with the lookup's 404 when there was one (for the dead letter's context).
    Missing(Option<Box<Failure>>),
}

/// The customer's Okta user, or why the update is skipped.
enum Resolved {
    User { id: String, created: bool },
    Skip(&'static str),
}

/// Applies updates; shared by the consumer loop's tasks and `dlq redrive`.
#[derive(Debug)]
pub struct Applier {
    pub client: OktaClient,
    /// The declared stores, in config order.
    pub stores: Vec<Store>,
    by_shop: HashMap<String, usize>,
    /// With `Rules`, memberships are Okta's group rules' to make: no group calls.
    pub assignment: GroupAssignment,
    missing_user: MissingUser,
    cache: moka::sync::Cache<String, Known>,
    metrics: Metrics,
}

impl Applier {
    pub fn new(
        client: OktaClient,
        stores: Vec<Store>,
        okta: &OktaConfig,
        metrics: Metrics,
    ) -> Applier {
        Applier {
            client,
            by_shop: stores
                .iter()
                .enumerate()
                .map(|(i, s)| (s.shop.clone(), i))
                .collect(),
            stores,
            assignment: okta.group_assignment,
            missing_user: okta.missing_user,
            cache: moka::sync::Cache::builder()
                .max_capacity(okta.user_cache_size)
                .time_to_live(okta.user_cache_ttl.max(Duration::from_secs(1)))
                .build(),
            metrics,
        }
    }

    fn failed(&self, f: Failure) -> ApplyError {
        ApplyError::from_failure(f, &self.client)
    }

    /// The users matching a search: none, one, or an ambiguity to dead-letter.
    async fn search_one(&self, expr: String) -> Result<Lookup, ApplyError> {
        let found = self
            .client
            .search_users(&expr)
            .await
            .map_err(|f| self.failed(f))?;
        match found.as_slice() {
            [] => Ok(Lookup::Missing(None)),
            [one] => Ok(Lookup::Found(one.id.clone())),
            many => Err(permanent(
                DeadLetterReason::AmbiguousUser,
                format!("{expr} matches {} Okta users", many.len()),
            )),
        }
    }

    /// The store `u` belongs to; an undeclared shop's update is dead-lettered.
    fn store_of(&self, u: &SegmentUpdate) -> Result<&Store, ApplyError> {
        self.by_shop
            .get(&u.shop)
            .map(|&i| &self.stores[i])
            .ok_or_else(|| {
                permanent(
                    DeadLetterReason::UnknownStore,
                    format!(
                        "shop `{}` is not declared in [okta.stores]; declare it (with its own attribute_suffix and group_suffix if another store is declared), restart, and redrive",
                        u.shop
                    ),
                )
            })
    }

    async fn find_user(&self, store: &Store, u: &SegmentUpdate) -> Result<Lookup, ApplyError> {
        let email = || {
            u.email.as_deref().ok_or_else(|| {
                permanent(
                    DeadLetterReason::NoEmail,
                    "the update has no email to look the user up by",
                )
            })
        };
        match &store.lookup {
            UserLookup::Attribute(attr) => {
                self.search_one(api::attribute_equals(attr, &u.customer_id.to_string()))
                    .await
            }
            UserLookup::Email => {
                self.search_one(api::attribute_equals("email", email()?))
                    .await
            }
            UserLookup::Login => {
                let login = email()?;
                if login.contains('/') {
                    // Okta cannot address a login with `/` in the path.
                    return self.search_one(api::attribute_equals("login", login)).await;
                }
                match self.client.get_user(login).await {
                    Ok(user) => Ok(Lookup::Found(user.id)),
                    Err(f) if f.last.status() == Some(404) => {
                        Ok(Lookup::Missing(Some(Box::new(f))))
                    }
                    Err(f) => Err(self.failed(f)),
                }
            }
        }
    }

    /// A staged user with login and email = the customer's email, and the attributes.
    async fn create_user(
        &self,
        u: &SegmentUpdate,
        patch: &Map<String, Value>,
    ) -> Result<String, ApplyError> {
        let email = u.email.as_deref().ok_or_else(|| {
            permanent(
                DeadLetterReason::NoEmail,
                "cannot create an Okta user without an email",
            )
        })?;
        let mut profile = patch.clone();
        profile.insert("login".into(), json!(email));
        profile.insert("email".into(), json!(email));
        let user = self
            .client
            .create_staged_user(profile)
            .await
            .map_err(|f| self.failed(f))?;
        Ok(user.id)
    }

    /// The tier group `u` puts the customer in (`None` for a redaction), after checking the
    /// update is one the segmenter could have written.
    fn target_group(&self, store: &Store, u: &SegmentUpdate) -> Result<Option<String>, ApplyError> {
        // The segmenter never emits these; a record that says so came from elsewhere and must
        // not reach a marketer's profile.
        if u.total_spent.is_sign_negative() && !u.total_spent.is_zero() {
            return Err(permanent(
                DeadLetterReason::InvalidRecord,
                format!("total_spent {} is negative", u.total_spent),
            ));
        }
        match (&u.kind, &u.tier) {
            (UpdateKind::Segment, Some(t)) => match store.groups.id_of(&t.okta_group) {
                Some(id) => Ok(Some(id.to_owned())),
                None => Err(permanent(
                    DeadLetterReason::UnknownGroup,
                    format!(
                        "tier `{}` names Okta group `{}`, which is not in this writer's [[tiers]]",
                        t.name, t.okta_group
                    ),
                )),
            },
            (UpdateKind::Segment, None) => Err(permanent(
                DeadLetterReason::InvalidRecord,
                "a segment update without a tier",
            )),
            (UpdateKind::Redact, _) => Ok(None),
        }
    }

    /// Step 1: the customer's Okta user, from the cache, a lookup, or (by `missing_user`)
    /// created.
    async fn resolve_user(
        &self,
        store: &Store,
        u: &SegmentUpdate,
        known: Option<&Known>,
        patch: &Map<String, Value>,
    ) -> Result<Resolved, ApplyError> {
        if let Some(k) = known {
            return Ok(Resolved::User {
                id: k.user_id.clone(),
                created: false,
            });
        }
        let needs_email = matches!(store.lookup, UserLookup::Login | UserLookup::Email);
        if u.kind == UpdateKind::Redact && needs_email && u.email.is_none() {
            // Nothing left to find the user by; the segmenter never knew their email.
            return Ok(Resolved::Skip("redact_user_not_found"));
        }
        let lookup = match self.find_user(store, u).await? {
            Lookup::Found(id) => return Ok(Resolved::User { id, created: false }),
            Lookup::Missing(_) if u.kind == UpdateKind::Redact => {
                return Ok(Resolved::Skip("redact_user_not_found"))
            }
            Lookup::Missing(lookup) => lookup,
        };
        match self.missing_user {
            MissingUser::DeadLetter => Err(ApplyError::Permanent {
                reason: DeadLetterReason::MissingUser,
                message: format!(
                    "no Okta user matches the customer (lookup: {:?})",
                    store.lookup
                ),
                failure: lookup,
            }),
            MissingUser::Skip => Ok(Resolved::Skip("missing_user")),
            MissingUser::Create => Ok(Resolved::User {
                id: self.create_user(u, patch).await?,
                created: true,
            }),
        }
    }

    /// Step 2: the partial profile update. A cached user id that Okta no longer knows (the
    /// user was deleted and re-created?) is looked up once more; `user_id` becomes the new one.
    async fn write_profile(
        &self,
        store: &Store,
        key: &str,
        u: &SegmentUpdate,
        user_id: &mut String,
        was_cached: bool,
        patch: &Map<String, Value>,
    ) -> Result<(), ApplyError> {
        match self.client.update_profile(user_id, patch).await {
            Ok(()) => return Ok(()),
            Err(f) if f.last.status() == Some(404) && was_cached => {}
            Err(f) => return Err(self.failed(f)),
        }
        self.cache.invalidate(key);
        *user_id = match self.find_user(store, u).await? {
            Lookup::Found(id) => id,
            Lookup::Missing(lookup) => {
                return Err(ApplyError::Permanent {
                    reason: DeadLetterReason::MissingUser,
                    message: "the Okta user the writer knew is gone and no other matches".into(),
                    failure: lookup,
                })
            }
        };
        self.remember(key, user_id, None);
        self.client
            .update_profile(user_id, patch)
            .await
            .map_err(|f| self.failed(f))
    }

    /// Step 3: the user in `target` (if any) and in no other tier group. `applied_group` is
    /// the tier group the writer last put them in, when that can be trusted; otherwise the
    /// user's groups are read (which also heals drift: hand edits, failed earlier runs).
    /// The new group is added *before* the old ones are left, so a failure in between leaves
    /// the customer in two tiers for a moment, never in none.
    async fn sync_groups(
        &self,
        store: &Store,
        user_id: &str,
        target: Option<&String>,
        applied_group: Option<Option<String>>,
    ) -> Result<(), ApplyError> {
        let (in_target, leave): (bool, Vec<String>) = match applied_group {
            Some(current) => (
                current.as_ref() == target,
                current.into_iter().filter(|g| Some(g) != target).collect(),
            ),
            None => {
                let groups = self
                    .client
                    .user_groups(user_id)
                    .await
                    .map_err(|f| self.failed(f))?;
                let in_target = target.is_some_and(|t| groups.iter().any(|g| &g.id == t));
                let leave = groups
                    .into_iter()
                    .map(|g| g.id)
                    .filter(|g| store.groups.is_tier_group(g) && Some(g) != target)
                    .collect();
                (in_target, leave)
            }
        };
        if let Some(t) = target.filter(|_| !in_target) {
            self.client
                .add_to_group(t, user_id)
                .await
                .map_err(|f| self.failed(f))?;
        }
        for g in leave {
            match self.client.remove_from_group(&g, user_id).await {
                Ok(()) => {}
                // Not a member (or already gone): the effect is in place.
                Err(f) if f.last.status() == Some(404) => {}
                Err(f) => return Err(self.failed(f)),
            }
        }
        Ok(())
    }

    fn remember(&self, key: &str, user_id: &str, applied: Option<(Applied, Trust)>) {
        let (applied, epoch) = match applied {
            Some((a, Trust::Epoch(e))) => (Some(a), Some(e)),
            Some((a, _)) => (Some(a), None),
            None => (None, None),
        };
        self.cache.insert(
            key.to_owned(),
            Known {
                user_id: user_id.to_owned(),
                applied,
                epoch,
            },
        );
    }

    /// Apply `u` (the newest of a customer's queued updates). `previous_groups` are the Okta
    /// groups the coalesced updates said the customer was in before; `trust` says whether what
    /// the cache says was applied may stand in for reading the user's groups.
    pub async fn apply(
        &self,
        u: &SegmentUpdate,
        previous_groups: &[String],
        trust: Trust,
    ) -> Result<Outcome, ApplyError> {
        let key = format!("{}/{}", u.shop, u.customer_id);
        let store = self.store_of(u)?;
        let target = self.target_group(store, u)?;
        let patch = store.attributes.patch(u);
        let known = self.cache.get(&key);
        self.metrics
            .user_cache
            .with_label_values(&[if known.is_some() { "hit" } else { "miss" }])
            .inc();
        let (mut user_id, created) =
            match self.resolve_user(store, u, known.as_ref(), &patch).await? {
                Resolved::User { id, created } => (id, created),
                Resolved::Skip(reason) => return Ok(Outcome::Skipped(reason)),
            };
        // What was applied before counts only if this is not a redrive and every group the
        // update history names is one the writer knows.
        let mappable = previous_groups
            .iter()
            .all(|g| store.groups.id_of(g).is_some());
        let applied = known
            .as_ref()
            .filter(|k| k.trusted(trust))
            .and_then(|k| k.applied.clone())
            // A redaction always reads the groups: it must leave no tier membership behind.
            .filter(|_| mappable && u.kind == UpdateKind::Segment);
        // Invalidate first: if anything below fails, the next attempt starts untrusted.
        self.remember(&key, &user_id, None);

        let (applied_patch, applied_group) = applied.unzip();
        if !created && applied_patch.as_ref() != Some(&patch) {
            self.write_profile(store, &key, u, &mut user_id, known.is_some(), &patch)
                .await?;
        }
        if self.assignment == GroupAssignment::Calls {
            self.sync_groups(store, &user_id, target.as_ref(), applied_group)
                .await?;
        }
        self.remember(&key, &user_id, Some(((patch, target), trust)));
        Ok(Outcome::Applied)
    }
}
