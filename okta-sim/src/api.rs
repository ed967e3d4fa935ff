//! The simulator's HTTP surface.
//!
//! Every Okta request goes through the same steps, in Okta's order: the concurrency limit
//! (429, `X-Rate-Limit-Limit: 0`), authentication (401 `E0000011`), the endpoint's rate-limit
//! bucket (429 `E0000047`, headers on every bucketed response), injected faults (latency,
//! hangs, 5xx before any effect, 409 `E0000112` on membership changes), then the operation.
//! Every response carries `X-Okta-Request-Id`; errors carry Okta's JSON error body.
//!
//! `/__sim/state` (read-only dump), `/__sim/requests` (the request log; `DELETE` clears it),
//! `PUT /__sim/faults`, `PUT /__sim/api-tokens`, `PUT /__sim/attributes`, `POST /__sim/users`
//! inspect and steer the simulator. They exist only here: real Okta has nothing like them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::limits::{Bucket, Verdict};
use crate::store::{group_json, parse_search, user_json, ApiError, SeedUser};
use crate::{in_flight_guard, Faults, LogEntry, Shared};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// An Okta operation the simulator serves, named as in Okta's spec (`operationId`).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    GetUser(String),
    UpdateUser(String),
    ReplaceUser(String),
    ListUsers,
    CreateUser,
    ListUserGroups(String),
    ListGroups,
    GetGroup(String),
    ListGroupUsers(String),
    AssignUserToGroup(String, String),
    UnassignUserFromGroup(String, String),
    ListGroupRules,
    CreateGroupRule,
    GetGroupRule(String),
    ReplaceGroupRule(String),
    DeleteGroupRule(String),
    ActivateGroupRule(String),
    DeactivateGroupRule(String),
    Token,
}

impl Op {
    fn parse(method: &Method, path: &str) -> Option<Op> {
        let segs: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.clone();
        Some(match (m, s.as_slice()) {
            (Method::POST, ["oauth2", "v1", "token"]) => Op::Token,
            (Method::GET, ["api", "v1", "users"]) => Op::ListUsers,
            (Method::POST, ["api", "v1", "users"]) => Op::CreateUser,
            (Method::GET, ["api", "v1", "users", id]) => Op::GetUser(id.to_string()),
            (Method::POST, ["api", "v1", "users", id]) => Op::UpdateUser(id.to_string()),
            (Method::PUT, ["api", "v1", "users", id]) => Op::ReplaceUser(id.to_string()),
            (Method::GET, ["api", "v1", "users", id, "groups"]) => {
                Op::ListUserGroups(id.to_string())
            }
            (Method::GET, ["api", "v1", "groups", "rules"]) => Op::ListGroupRules,
            (Method::POST, ["api", "v1", "groups", "rules"]) => Op::CreateGroupRule,
            (Method::GET, ["api", "v1", "groups", "rules", r]) => Op::GetGroupRule(r.to_string()),
            (Method::PUT, ["api", "v1", "groups", "rules", r]) => {
                Op::ReplaceGroupRule(r.to_string())
            }
            (Method::DELETE, ["api", "v1", "groups", "rules", r]) => {
                Op::DeleteGroupRule(r.to_string())
            }
            (Method::POST, ["api", "v1", "groups", "rules", r, "lifecycle", "activate"]) => {
                Op::ActivateGroupRule(r.to_string())
            }
            (Method::POST, ["api", "v1", "groups", "rules", r, "lifecycle", "deactivate"]) => {
                Op::DeactivateGroupRule(r.to_string())
            }
            (Method::GET, ["api", "v1", "groups"]) => Op::ListGroups,
            (Method::GET, ["api", "v1", "groups", g]) => Op::GetGroup(g.to_string()),
            (Method::GET, ["api", "v1", "groups", g, "users"]) => Op::ListGroupUsers(g.to_string()),
            (Method::PUT, ["api", "v1", "groups", g, "users", u]) => {
                Op::AssignUserToGroup(g.to_string(), u.to_string())
            }
            (Method::DELETE, ["api", "v1", "groups", g, "users", u]) => {
                Op::UnassignUserFromGroup(g.to_string(), u.to_string())
            }
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Op::GetUser(_) => "getUser",
            Op::UpdateUser(_) => "updateUser",
            Op::ReplaceUser(_) => "replaceUser",
            Op::ListUsers => "listUsers",
            Op::CreateUser => "createUser",
            Op::ListUserGroups(_) => "listUserGroups",
            Op::ListGroups => "listGroups",
            Op::GetGroup(_) => "getGroup",
            Op::ListGroupUsers(_) => "listGroupUsers",
            Op::AssignUserToGroup(..) => "assignUserToGroup",
            Op::UnassignUserFromGroup(..) => "unassignUserFromGroup",
            Op::ListGroupRules => "listGroupRules",
            Op::CreateGroupRule => "createGroupRule",
            Op::GetGroupRule(_) => "getGroupRule",
            Op::ReplaceGroupRule(_) => "replaceGroupRule",
            Op::DeleteGroupRule(_) => "deleteGroupRule",
            Op::ActivateGroupRule(_) => "activateGroupRule",
            Op::DeactivateGroupRule(_) => "deactivateGroupRule",
            Op::Token => "token",
        }
    }

    fn bucket(&self) -> Bucket {
        match self {
            Op::GetUser(_) | Op::ListUserGroups(_) => Bucket::UsersGet,
            Op::ListUsers => Bucket::UsersSearch,
            Op::UpdateUser(_) | Op::ReplaceUser(_) | Op::CreateUser => Bucket::UsersUpdate,
            Op::ListGroups
            | Op::GetGroup(_)
            | Op::ListGroupUsers(_)
            | Op::AssignUserToGroup(..)
            | Op::UnassignUserFromGroup(..)
            | Op::ListGroupRules
            | Op::CreateGroupRule
            | Op::GetGroupRule(_)
            | Op::ReplaceGroupRule(_)
            | Op::DeleteGroupRule(_)
            | Op::ActivateGroupRule(_)
            | Op::DeactivateGroupRule(_) => Bucket::Groups,
            Op::Token => Bucket::Token,
        }
    }

    fn is_membership_change(&self) -> bool {
        matches!(
            self,
            Op::AssignUserToGroup(..) | Op::UnassignUserFromGroup(..)
        )
    }
}

/// A response on its way out: status, JSON body, and extra headers.
struct Reply {
    status: u16,
    body: Option<Value>,
    link_next: Option<String>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            link_next: None,
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            link_next: None,
        }
    }
}

fn request_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..20)
        .map(|_| {
            let i = rng.random_range(0..62u8);
            (match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            }) as char
        })
        .collect()
}

fn error_reply(e: &ApiError, request_id: &str) -> Reply {
    Reply::json(e.status, e.body(&format!("oae{request_id}")))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path().starts_with("/__sim/") {
        return admin(&shared, &method, uri.path(), &body);
    }
    let started = shared.now_ms();
    let rid = request_id();
    let base = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let op = Op::parse(&method, uri.path());
    let request_body: Option<Value> = serde_json::from_slice(&body).ok();
    let guard = in_flight_guard(&shared);
    let config = shared.config();

    let mut verdict: Option<Verdict> = None;
    let mut concurrency_limited = false;
    let reply = 'reply: {
        let Some(op) = op.clone() else {
            break 'reply error_reply(
                &ApiError::new(
                    404,
                    "E0000022",
                    "The endpoint does not support the provided HTTP method",
                ),
                &rid,
            );
        };
        if guard.count() > config.max_concurrency {
            concurrency_limited = true;
            break 'reply error_reply(
                &ApiError::new(
                    429,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                ),
                &rid,
            );
        }
        if op != Op::Token && !authorized(&shared, &config, &headers) {
            break 'reply error_reply(
                &ApiError::new(401, "E0000011", "Invalid token provided"),
                &rid,
            );
        }
        let v = shared.limits.check(op.bucket());
        verdict = Some(v);
        if !v.allowed {
            break 'reply error_reply(
                &ApiError::new(
                    429,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                ),
                &rid,
            );
        }
        if let Some(r) = inject_faults(&shared, &config.faults, &op, &rid).await {
            break 'reply r;
        }
        execute(&shared, &config, &op, &uri, &base, &body, &rid)
    };
    drop(guard);

    let mut response = match &reply.body {
        Some(b) => (
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(b.clone()),
        )
            .into_response(),
        None => StatusCode::from_u16(reply.status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        "x-okta-request-id",
        HeaderValue::from_str(&rid).expect("alphanumeric"),
    );
    if concurrency_limited {
        let reset = chrono::Utc::now().timestamp() + 1;
        h.insert("x-rate-limit-limit", HeaderValue::from(0));
        h.insert("x-rate-limit-remaining", HeaderValue::from(0));
        h.insert("x-rate-limit-reset", HeaderValue::from(reset));
    } else if let Some(v) = verdict {
        h.insert("x-rate-limit-limit", HeaderValue::from(v.limit));
        h.insert("x-rate-limit-remaining", HeaderValue::from(v.remaining));
        h.insert("x-rate-limit-reset", HeaderValue::from(v.reset));
    }
    if let Some(next) = &reply.link_next {
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            h.insert("link", v);
        }
    }
    shared.record(LogEntry {
        method: method.to_string(),
        uri: uri.to_string(),
        operation: op.as_ref().map_or("unknown", Op::name).to_owned(),
        status: reply.status,
        concurrency_limited,
        at_ms: started,
        request_body: if config.log_bodies {
            request_body
        } else {
            None
        },
        response_body: if config.log_bodies { reply.body } else { None },
    });
    response
}

fn authorized(shared: &Shared, config: &crate::SimConfig, headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(token) = auth.strip_prefix("SSWS ") {
        return config.api_tokens.iter().any(|t| t == token);
    }
    if let Some(token) = auth.strip_prefix("Bearer ") {
        let tokens = Shared::lock(&shared.tokens);
        return tokens.get(token).is_some_and(|exp| *exp > Instant::now());
    }
    false
}

async fn inject_faults(shared: &Shared, f: &Faults, op: &Op, rid: &str) -> Option<Reply> {
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    if f.timeout_rate > 0.0 && shared.draw() < f.timeout_rate {
        tokio::time::sleep(f.timeout).await;
        return Some(error_reply(
            &ApiError::new(504, "E0000009", "Internal Server Error"),
            rid,
        ));
    }
    if f.error_rate > 0.0 {
        let d = shared.draw();
        if d < f.error_rate {
            let status = if d < f.error_rate / 2.0 { 500 } else { 503 };
            return Some(error_reply(
                &ApiError::new(status, "E0000009", "Internal Server Error"),
                rid,
            ));
        }
    }
    if op.is_membership_change() && f.conflict_rate > 0.0 && shared.draw() < f.conflict_rate {
        return Some(error_reply(
            &ApiError::new(
                409,
                "E0000112",
                "Unable to update group membership. Please try again.",
            ),
            rid,
        ));
    }
    None
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `limit` and `after` cursor paging over items sorted by id, with Okta's `Link: rel="next"`.
fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    uri: &Uri,
    base: &str,
    default_limit: usize,
) -> (Vec<T>, Option<String>) {
    let limit = query_param(uri, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(default_limit)
        .clamp(1, default_limit);
    let after = query_param(uri, "after");
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|t| after.as_deref().is_none_or(|a| id(t) > a))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = (more && !rest.is_empty()).then(|| {
        let last = id(rest.last().expect("non-empty"));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            if k != "after" {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("after", last);
        format!("{base}{}?{}", uri.path(), q.finish())
    });
    (rest, next)
}

fn execute(
    shared: &Shared,
    config: &crate::SimConfig,
    op: &Op,
    uri: &Uri,
    base: &str,
    body: &[u8],
    rid: &str,
) -> Reply {
    let result = (|| -> Result<Reply, ApiError> {
        let malformed = || ApiError::new(400, "E0000003", "The request body was not well-formed.");
        let mut store = Shared::lock(&shared.store);
        let now_ms = shared.now_ms();
        store.run_rules(now_ms);
        let rules_due = now_ms + config.rule_delay.as_millis() as u64;
        match op {
            Op::Token => {
                drop(store);
                token(shared, config, body, base)
            }
            Op::GetUser(id) => store
                .user(id)
                .map(|u| Reply::json(200, user_json(u, base)))
                .ok_or_else(|| ApiError::not_found(id, "User")),
            Op::UpdateUser(id) | Op::ReplaceUser(id) => {
                let v: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
                let patch = v
                    .get("profile")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| ApiError::validation("profile: is required"))?;
                if matches!(op, Op::ReplaceUser(_)) {
                    // PUT replaces the whole profile: what is omitted is deleted.
                    let uid = store
                        .user(id)
                        .map(|u| u.id.clone())
                        .ok_or_else(|| ApiError::not_found(id, "User"))?;
                    if !patch.get("login").is_some_and(Value::is_string) {
                        return Err(ApiError::validation("login: is required"));
                    }
                    store.users.get_mut(&uid).expect("found").profile.clear();
                }
                let u = store.update_profile(id, &patch)?;
                let reply = Reply::json(200, user_json(u, base));
                let uid = u.id.clone();
                store.rules.schedule(Some(uid), rules_due);
                Ok(reply)
            }
            Op::CreateUser => {
                let v: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
                let mut profile = v
                    .get("profile")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| ApiError::validation("profile: is required"))?;
                let login = profile
                    .remove("login")
                    .and_then(|l| l.as_str().map(str::to_owned))
                    .ok_or_else(|| ApiError::validation("login: is required"))?;
                let email = profile
                    .remove("email")
                    .and_then(|e| e.as_str().map(str::to_owned));
                let activate = query_param(uri, "activate").is_none_or(|a| a != "false");
                let id = store.create_user(&SeedUser {
                    login,
                    email,
                    status: Some(if activate { "ACTIVE" } else { "STAGED" }.into()),
                    profile,
                    groups: Vec::new(),
                })?;
                store.rules.schedule(Some(id.clone()), rules_due);
                Ok(Reply::json(200, user_json(&store.users[&id], base)))
            }
            Op::ListUsers => {
                let users: Vec<Value> = match query_param(uri, "search") {
                    Some(expr) => {
                        let q = parse_search(&expr)?;
                        store
                            .search_users(&q)
                            .into_iter()
                            .map(|u| user_json(u, base))
                            .collect()
                    }
                    None => store.users.values().map(|u| user_json(u, base)).collect(),
                };
                let (items, next) = page(users, |u| u["id"].as_str().unwrap_or(""), uri, base, 200);
                Ok(Reply {
                    link_next: next,
                    ..Reply::json(200, Value::Array(items))
                })
            }
            Op::ListUserGroups(id) => {
                let uid = store
                    .user(id)
                    .map(|u| u.id.clone())
                    .ok_or_else(|| ApiError::not_found(id, "User"))?;
                let groups = store
                    .groups_of(&uid)
                    .into_iter()
                    .map(|g| group_json(g, base))
                    .collect();
                Ok(Reply::json(200, Value::Array(groups)))
            }
            Op::ListGroups => {
                let groups: Vec<Value> = match (query_param(uri, "search"), query_param(uri, "q")) {
                    (Some(expr), _) => {
                        let q = parse_search(&expr)?;
                        store
                            .search_groups(&q)
                            .into_iter()
                            .map(|g| group_json(g, base))
                            .collect()
                    }
                    (None, Some(prefix)) => store
                        .groups
                        .values()
                        .filter(|g| g.name.starts_with(&prefix))
                        .map(|g| group_json(g, base))
                        .collect(),
                    (None, None) => store.groups.values().map(|g| group_json(g, base)).collect(),
                };
                let (items, next) = page(
                    groups,
                    |g| g["id"].as_str().unwrap_or(""),
                    uri,
                    base,
                    10_000,
                );
                Ok(Reply {
                    link_next: next,
                    ..Reply::json(200, Value::Array(items))
                })
            }
            Op::GetGroup(gid) => store
                .groups
                .get(gid)
                .map(|g| Reply::json(200, group_json(g, base)))
                .ok_or_else(|| ApiError::not_found(gid, "UserGroup")),
            Op::ListGroupUsers(gid) => {
                let g = store
                    .groups
                    .get(gid)
                    .ok_or_else(|| ApiError::not_found(gid, "UserGroup"))?;
                let users: Vec<Value> = g
                    .members
                    .iter()
                    .filter_map(|id| store.users.get(id))
                    .map(|u| user_json(u, base))
                    .collect();
                let (items, next) =
                    page(users, |u| u["id"].as_str().unwrap_or(""), uri, base, 1000);
                Ok(Reply {
                    link_next: next,
                    ..Reply::json(200, Value::Array(items))
                })
            }
            Op::AssignUserToGroup(gid, uid) => {
                store.set_membership(gid, uid, true)?;
                Ok(Reply::empty(204))
            }
            Op::UnassignUserFromGroup(gid, uid) => {
                store.set_membership(gid, uid, false)?;
                Ok(Reply::empty(204))
            }
            Op::ListGroupRules => {
                let search = query_param(uri, "search");
                let rules: Vec<Value> = store
                    .rules
                    .rules
                    .values()
                    .filter(|r| search.as_deref().is_none_or(|s| r.name.contains(s)))
                    .map(crate::rules::Rule::json)
                    .collect();
                let (items, next) = page(rules, |r| r["id"].as_str().unwrap_or(""), uri, base, 200);
                Ok(Reply {
                    link_next: next,
                    ..Reply::json(200, Value::Array(items))
                })
            }
            Op::CreateGroupRule => {
                let v: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
                let req = crate::rules::RuleRequest::parse(&v)?;
                Ok(Reply::json(200, store.create_rule(req)?))
            }
            Op::GetGroupRule(id) => store
                .rules
                .rules
                .get(id)
                .map(|r| Reply::json(200, r.json()))
                .ok_or_else(|| ApiError::not_found(id, "GroupRule")),
            Op::ReplaceGroupRule(id) => {
                let v: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
                let req = crate::rules::RuleRequest::parse(&v)?;
                store.check_rule(&req)?;
                Ok(Reply::json(200, store.rules.replace(id, req)?.json()))
            }
            Op::DeleteGroupRule(id) => {
                store
                    .rules
                    .rules
                    .remove(id)
                    .ok_or_else(|| ApiError::not_found(id, "GroupRule"))?;
                let remove_users = query_param(uri, "removeUsers").is_some_and(|v| v == "true");
                let made: Vec<(String, String)> = store
                    .rules
                    .assigned
                    .iter()
                    .filter(|(_, r)| *r == id)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (gid, uid) in made {
                    store.rules.assigned.remove(&(gid.clone(), uid.clone()));
                    if remove_users {
                        if let Some(g) = store.groups.get_mut(&gid) {
                            g.members.remove(&uid);
                        }
                    }
                }
                Ok(Reply::empty(202))
            }
            Op::ActivateGroupRule(id) | Op::DeactivateGroupRule(id) => {
                let active = matches!(op, Op::ActivateGroupRule(_));
                let rule = store
                    .rules
                    .rules
                    .get_mut(id)
                    .ok_or_else(|| ApiError::not_found(id, "GroupRule"))?;
                rule.status = if active { "ACTIVE" } else { "INACTIVE" }.into();
                rule.last_updated = crate::store::now_rfc3339();
                if active {
                    store.rules.schedule(None, rules_due);
                }
                Ok(Reply::empty(204))
            }
        }
    })();
    result.unwrap_or_else(|e| error_reply(&e, rid))
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
}

/// `POST /oauth2/v1/token`: client credentials with a signed client assertion (RFC 7523).
fn token(
    shared: &Shared,
    config: &crate::SimConfig,
    body: &[u8],
    base: &str,
) -> Result<Reply, ApiError> {
    let oauth_error = |status: u16, error: &str, description: &str| {
        Ok(Reply::json(
            status,
            json!({"error": error, "error_description": description}),
        ))
    };
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server. Configured grant types: [client_credentials].");
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            401,
            "invalid_client",
            "client_assertion_type is missing or not jwt-bearer.",
        );
    }
    let Some(assertion) = form.get("client_assertion") else {
        return oauth_error(401, "invalid_client", "client_assertion is required.");
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return oauth_error(
            401,
            "invalid_client",
            "The client_assertion is not a valid JWT.",
        );
    };
    let audience = format!("{base}/oauth2/v1/token");
    let verified = config.oauth_clients.iter().find_map(|c| {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(c.public_key_pem.as_bytes())
            .or_else(|_| jsonwebtoken::DecodingKey::from_ec_pem(c.public_key_pem.as_bytes()))
            .ok()?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[audience.as_str()]);
        v.set_issuer(&[c.client_id.as_str()]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(assertion, &key, &v).ok()?;
        (data.claims.sub == data.claims.iss).then_some(())
    });
    if verified.is_none() {
        return oauth_error(401, "invalid_client", "The client_assertion signature is invalid, expired, or for another client or audience.");
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    const GRANTABLE: &[&str] = &[
        "okta.users.read",
        "okta.users.manage",
        "okta.groups.read",
        "okta.groups.manage",
    ];
    if scope.is_empty() || scope.split(' ').any(|s| !GRANTABLE.contains(&s)) {
        return oauth_error(
            400,
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        );
    }
    let access_token = format!("sim.{}", request_id());
    Shared::lock(&shared.tokens)
        .insert(access_token.clone(), Instant::now() + config.token_lifetime);
    Ok(Reply::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": config.token_lifetime.as_secs(),
            "access_token": access_token,
            "scope": scope,
        }),
    ))
}

fn admin(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Response {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m).into_response();
    match (method.clone(), path) {
        (Method::GET, "/__sim/state") => {
            let store = Shared::lock(&shared.store);
            let groups: Vec<Value> = store
                .groups
                .values()
                .map(|g| {
                    let mut v = group_json(g, "");
                    v["members"] = json!(g.members);
                    v
                })
                .collect();
            let users: Vec<Value> = store.users.values().map(|u| user_json(u, "")).collect();
            axum::Json(json!({"users": users, "groups": groups, "attributes": store.attributes}))
                .into_response()
        }
        (Method::GET, "/__sim/requests") => axum::Json(shared.requests()).into_response(),
        (Method::DELETE, "/__sim/requests") => {
            shared.clear_requests();
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::PUT, "/__sim/faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                shared.set_faults(f);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => bad(e.to_string()),
        },
        (Method::PUT, "/__sim/api-tokens") => match serde_json::from_slice::<Vec<String>>(body) {
            Ok(t) => {
                shared.set_api_tokens(t);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => bad(e.to_string()),
        },
        (Method::PUT, "/__sim/attributes") => {
            match serde_json::from_slice::<std::collections::BTreeMap<String, crate::AttrType>>(
                body,
            ) {
                Ok(attrs) => {
                    for (k, t) in attrs {
                        shared.declare_attribute(&k, t);
                    }
                    StatusCode::NO_CONTENT.into_response()
                }
                Err(e) => bad(e.to_string()),
            }
        }
        (Method::POST, "/__sim/users") => match serde_json::from_slice::<SeedUser>(body) {
            Ok(u) => match shared.add_user(&u) {
                Ok(id) => axum::Json(json!({"id": id})).into_response(),
                Err(e) => bad(e),
            },
            Err(e) => bad(e.to_string()),
        },
        _ => (StatusCode::NOT_FOUND, "unknown simulator endpoint\n").into_response(),
    }
}
