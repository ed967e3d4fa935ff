//! `POST /admin/api/<version>/graphql.json` and the simulator's own routes.
//!
//! A request goes through Shopify's steps in Shopify's order: the API version in the path
//! (404 for another), the access token (401), the REST-style request limit (429 with
//! `Retry-After`, a fault switch here), parsing and validation against the pinned schema (200
//! with `errors`, as Shopify answers), the query cost against the leaky bucket (200 with a
//! `THROTTLED` error and no data), then execution. Every answer carries `extensions.cost`.

use std::sync::Arc;
use std::time::Instant;

use apollo_compiler::executable::{Field, Selection, SelectionSet};
use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::JsonMap;
use apollo_compiler::ExecutableDocument;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::bulk::{BulkOp, BulkStatus};
use crate::schema::{self, API_VERSION};
use crate::store::{gid, parse_query, timestamp, SimCustomer, SimOrder};
use crate::{Faults, Shared, SimOrder as Order};

/// The most nodes one connection page may ask for (Shopify: 250).
pub const MAX_PAGE: i64 = 250;
/// Without `read_all_orders`, orders older than this are invisible (Shopify: 60 days).
pub const RECENT_ORDERS_DAYS: i64 = 60;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/admin/api/{version}/graphql.json", post(graphql))
        .route("/__sim/bulk/{file}", get(download))
        .route("/__sim/faults", put(put_faults))
        .route("/__sim/orders", get(get_orders).post(post_orders))
        .with_state(shared)
}

fn count(shared: &Shared, kind: &str) {
    *shared.lock().requests.entry(kind.to_owned()).or_default() += 1;
}

async fn graphql(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if version != API_VERSION {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": "Not Found"}))).into_response();
    }
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(scopes) = shared
        .config
        .tokens
        .iter()
        .find(|t| t.token == token)
        .map(|t| t.scopes.clone())
    else {
        count(&shared, "unauthorized");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})),
        )
            .into_response();
    };
    {
        let mut s = shared.lock();
        if s.faults.too_many_requests > 0 {
            s.faults.too_many_requests -= 1;
            *s.requests.entry("too_many_requests".into()).or_default() += 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1.0")],
                Json(json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."})),
            )
                .into_response();
        }
        if s.faults.server_errors > 0 {
            s.faults.server_errors -= 1;
            *s.requests.entry("server_error".into()).or_default() += 1;
            return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": format!("invalid JSON body: {e}")})),
            )
                .into_response()
        }
    };
    let query = request["query"].as_str().unwrap_or_default().to_owned();
    let variables: JsonMap = match request.get("variables") {
        None | Some(Value::Null) => JsonMap::new(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(m) => m,
            Err(_) => {
                return errors(
                    vec![json!({"message": "variables must be an object"})],
                    None,
                )
            }
        },
    };
    let operation_name = request["operationName"].as_str().map(str::to_owned);
    let schema = schema::admin();
    let doc = match ExecutableDocument::parse_and_validate(schema, query, "request.graphql") {
        Ok(d) => d,
        Err(e) => {
            let list: Vec<Value> = e
                .errors
                .iter()
                .map(|d| json!({"message": d.error.to_string()}))
                .collect();
            count(&shared, "invalid");
            return errors(list, None);
        }
    };
    let operation = match doc.operations.get(operation_name.as_deref()) {
        Ok(op) => op,
        Err(e) => return errors(vec![json!({"message": e.message().to_string()})], None),
    };
    let is_mutation = operation.operation_type.is_mutation();
    let requested = if is_mutation {
        10.0
    } else {
        selection_cost(&operation.selection_set, &variables)
    };
    let cost = {
        let mut s = shared.lock();
        let now = Instant::now();
        let refill =
            now.duration_since(s.refilled).as_secs_f64() * shared.config.cost_restore_per_second;
        s.bucket = (s.bucket + refill).min(shared.config.cost_bucket);
        s.refilled = now;
        let throttled = requested > s.bucket;
        if !throttled {
            s.bucket -= requested;
        }
        *s.requests
            .entry(if throttled { "throttled" } else { "graphql" }.into())
            .or_default() += 1;
        let status = json!({
            "maximumAvailable": shared.config.cost_bucket,
            "currentlyAvailable": s.bucket.floor(),
            "restoreRate": shared.config.cost_restore_per_second,
        });
        let cost = json!({
            "requestedQueryCost": requested,
            "actualQueryCost": if throttled { Value::Null } else { json!(requested) },
            "throttleStatus": status,
        });
        if throttled {
            return errors(
                vec![json!({
                    "message": "Throttled",
                    "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"},
                })],
                Some(cost),
            );
        }
        cost
    };
    let ctx = Ctx {
        shared: shared.clone(),
        scopes,
        now: Utc::now(),
        bulk_root: false,
    };
    let root = if is_mutation {
        Obj::Mutation(ctx)
    } else {
        Obj::Query(ctx)
    };
    let result = Execution::new(schema, &doc)
        .operation(operation)
        .raw_variable_values(&variables)
        .execute_sync(&root);
    match result {
        Ok(response) => {
            let mut v = serde_json::to_value(&response).expect("responses serialise");
            v["extensions"] = json!({"cost": cost});
            Json(v).into_response()
        }
        Err(e) => errors(
            vec![json!({"message": e.message().to_string()})],
            Some(cost),
        ),
    }
}

/// Validate an executable document against the pinned schema, as every request is here:
/// for a client's contract test of its query texts.
pub fn validate(query: &str) -> Result<(), String> {
    ExecutableDocument::parse_and_validate(schema::admin(), query, "query.graphql")
        .map(|_| ())
        .map_err(|e| e.errors.to_string())
}

fn errors(list: Vec<Value>, cost: Option<Value>) -> Response {
    let mut v = json!({"errors": list});
    if let Some(c) = cost {
        v["extensions"] = json!({"cost": c});
    }
    Json(v).into_response()
}

/// Shopify's calculated query cost: scalars and enums 0, objects 1, connections 2 plus
/// `first` (or `last`) times the cost of their nodes.
pub fn selection_cost(set: &SelectionSet, variables: &JsonMap) -> f64 {
    set.selections
        .iter()
        .map(|s| match s {
            Selection::Field(f) => field_cost(f, variables),
            Selection::InlineFragment(i) => selection_cost(&i.selection_set, variables),
            // Named fragments are rare in the few queries tierflow sends; counted as one object.
            Selection::FragmentSpread(_) => 1.0,
        })
        .sum()
}

fn field_cost(f: &Field, variables: &JsonMap) -> f64 {
    if f.selection_set.selections.is_empty() {
        return 0.0;
    }
    let children = selection_cost(&f.selection_set, variables);
    if f.selection_set.ty.as_str().ends_with("Connection") {
        let page = ["first", "last"]
            .iter()
            .find_map(|n| int_argument(f, n, variables))
            .unwrap_or(0);
        2.0 + page as f64 * (children - 1.0).max(1.0)
    } else {
        1.0 + children
    }
}

fn int_argument(f: &Field, name: &str, variables: &JsonMap) -> Option<i64> {
    let arg = f.arguments.iter().find(|a| a.name == name)?;
    match arg.value.as_ref() {
        apollo_compiler::ast::Value::Int(i) => i.try_to_i32().ok().map(i64::from),
        apollo_compiler::ast::Value::Variable(v) => variables.get(v.as_str())?.as_i64(),
        _ => None,
    }
}

/// What resolvers need: the simulator, the caller's scopes, the request's time.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub scopes: Vec<String>,
    pub now: DateTime<Utc>,
    /// A bulk operation's root: `orders` returns every visible order, ignoring paging.
    pub bulk_root: bool,
}

impl Ctx {
    /// The visible orders matching the `query` argument (all of them without one).
    fn matching_orders(&self, query: Option<&str>) -> Result<Vec<Order>, FieldError> {
        let mut orders = self.visible_orders();
        if let Some(q) = query {
            let filters = parse_query(q).map_err(err)?;
            orders.retain(|o| filters.iter().all(|f| f.matches(o)));
        }
        Ok(orders)
    }

    /// The orders this caller may see, oldest update first.
    fn visible_orders(&self) -> Vec<Order> {
        let all_orders = self.scopes.iter().any(|s| s == "read_all_orders");
        let horizon = self.now - chrono::Duration::days(RECENT_ORDERS_DAYS);
        let mut v: Vec<Order> = self
            .shared
            .lock()
            .orders
            .iter()
            .filter(|o| all_orders || o.created_at >= horizon)
            .cloned()
            .collect();
        v.sort_by_key(|o| (o.updated_at, o.id));
        v
    }
}

#[derive(Clone)]
pub(crate) struct UserErr {
    field: Option<Vec<String>>,
    message: String,
    code: Option<&'static str>,
}

/// Every object the simulator can return, one variant per GraphQL type.
pub(crate) enum Obj {
    Query(Ctx),
    Mutation(Ctx),
    OrderConnection {
        page: Vec<(usize, Order)>,
        has_next: bool,
        has_previous: bool,
    },
    OrderEdge(usize, Order),
    PageInfo {
        start: Option<String>,
        end: Option<String>,
        has_next: bool,
        has_previous: bool,
    },
    Order(Order),
    MoneyBag(String, String),
    MoneyV2(String, String),
    Customer(SimCustomer),
    CustomerEmailAddress(String, Option<String>),
    Bulk(Box<BulkView>),
    BulkRunPayload(Option<Box<BulkView>>, Vec<UserErr>),
    BulkCancelPayload(Option<Box<BulkView>>, Vec<UserErr>),
    BulkUserError(UserErr),
    UserError(UserErr),
    AppInstallation(Vec<String>),
    AccessScope(String),
    WebhookConnection(Vec<(usize, String, String)>),
    WebhookEdge(usize, String, String),
    WebhookSubscription(usize, String, String),
    /// `Count`: the count and its precision (`EXACT`, or `AT_LEAST` when capped by `limit`).
    Count(u64, &'static str),
}

/// A bulk operation as read at one moment.
#[derive(Clone)]
pub(crate) struct BulkView {
    pub op: BulkOp,
    pub status: BulkStatus,
    pub base_url: String,
    pub config: crate::SimConfig,
}

fn cursor(index: usize) -> String {
    format!("sim-cursor-{index}")
}

fn parse_cursor(c: &str) -> Result<usize, FieldError> {
    c.strip_prefix("sim-cursor-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| FieldError {
            message: format!("Invalid cursor for current pagination sort: {c}"),
        })
}

fn err(message: impl Into<String>) -> FieldError {
    FieldError {
        message: message.into(),
    }
}

impl Obj {
    /// `ordersCount(query, limit)`: the orders `orders(query)` would list, counted up to
    /// `limit` (default 10,000; `null` for no cap), `AT_LEAST` when capped.
    fn orders_count(ctx: &Ctx, info: &ResolveInfo<'_>) -> Result<Obj, FieldError> {
        let args = info.arguments();
        let orders = ctx.matching_orders(args.get("query").and_then(|v| v.as_str()))?;
        let limit = match args.get("limit") {
            None => Some(10_000),
            Some(v) if v.is_null() => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| err("limit must be a non-negative Int"))?,
            ),
        };
        let n = orders.len() as u64;
        Ok(match limit {
            Some(l) if n > l => Obj::Count(l, "AT_LEAST"),
            _ => Obj::Count(n, "EXACT"),
        })
    }

    fn orders(ctx: &Ctx, info: &ResolveInfo<'_>) -> Result<Obj, FieldError> {
        let args = info.arguments();
        let get = |k: &str| args.get(k).filter(|v| !v.is_null());
        let mut orders = ctx.matching_orders(get("query").and_then(|v| v.as_str()))?;
        match get("sortKey")
            .and_then(|v| v.as_str())
            .unwrap_or("PROCESSED_AT")
        {
            "UPDATED_AT" => {}
            "ID" => orders.sort_by_key(|o| o.id),
            // Shopify's default. The simulator's orders are processed when created.
            "CREATED_AT" | "PROCESSED_AT" => orders.sort_by_key(|o| (o.created_at, o.id)),
            other => {
                return Err(err(format!(
                    "sortKey {other} is not modelled by the simulator"
                )))
            }
        }
        if get("reverse").and_then(|v| v.as_bool()).unwrap_or(false) {
            orders.reverse();
        }
        let indexed: Vec<(usize, Order)> = orders.into_iter().enumerate().collect();
        if ctx.bulk_root {
            return Ok(Obj::OrderConnection {
                page: indexed,
                has_next: false,
                has_previous: false,
            });
        }
        if get("last").is_some() || get("before").is_some() {
            return Err(err("backward paging is not modelled by the simulator"));
        }
        let first = get("first")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| err("you must provide one of first or last"))?;
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(err(format!(
                "The page size must be between 0 and {MAX_PAGE}"
            )));
        }
        let start = match get("after").and_then(|v| v.as_str()) {
            Some(c) => parse_cursor(c)? + 1,
            None => 0,
        };
        let total = indexed.len();
        let page: Vec<(usize, Order)> = indexed
            .into_iter()
            .skip(start)
            .take(first as usize)
            .collect();
        Ok(Obj::OrderConnection {
            has_next: start + page.len() < total,
            has_previous: start > 0,
            page,
        })
    }

    fn bulk_view(ctx: &Ctx, op: &BulkOp) -> Box<BulkView> {
        Box::new(BulkView {
            status: op.status(&ctx.shared.config),
            op: op.clone(),
            base_url: ctx
                .shared
                .base_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            config: ctx.shared.config.clone(),
        })
    }

    fn find_bulk(ctx: &Ctx, id: &str) -> Option<Box<BulkView>> {
        let n: u64 = id
            .strip_prefix("gid://shopify/BulkOperation/")?
            .parse()
            .ok()?;
        let s = ctx.shared.lock();
        s.bulk
            .iter()
            .find(|o| o.id == n)
            .map(|o| Obj::bulk_view(ctx, o))
    }

    fn run_bulk_query(ctx: &Ctx, query: &str) -> Obj {
        let invalid = |message: String| {
            Obj::BulkRunPayload(
                None,
                vec![UserErr {
                    field: Some(vec!["query".into()]),
                    message,
                    code: Some("INVALID"),
                }],
            )
        };
        let lines = match crate::bulk::render(ctx, query) {
            Ok(l) => l,
            Err(e) => return invalid(e),
        };
        let mut s = ctx.shared.lock();
        if let Some(running) = s
            .bulk
            .iter()
            .find(|o| !o.status(&ctx.shared.config).is_terminal())
        {
            let message = format!(
                "A bulk query operation for this app and shop is already in progress: {}.",
                gid("BulkOperation", running.id)
            );
            return Obj::BulkRunPayload(
                None,
                vec![UserErr {
                    field: None,
                    message,
                    code: Some("OPERATION_IN_PROGRESS"),
                }],
            );
        }
        // One-shot faults apply to this operation only.
        let fail = s.faults.fail_next_bulk.take();
        let canceled_by_other = std::mem::take(&mut s.faults.cancel_next_bulk);
        let op = BulkOp {
            id: 1000 + s.bulk.len() as u64,
            query: query.to_owned(),
            created_at: ctx.now,
            started: Instant::now(),
            fail,
            partial_lines: s.faults.partial_lines,
            canceled_at: None,
            canceled_by_other,
            lines,
        };
        s.bulk.push(op.clone());
        drop(s);
        Obj::BulkRunPayload(Some(Obj::bulk_view(ctx, &op)), Vec::new())
    }

    fn cancel_bulk(ctx: &Ctx, id: &str) -> Obj {
        let n: Option<u64> = id
            .strip_prefix("gid://shopify/BulkOperation/")
            .and_then(|n| n.parse().ok());
        let mut s = ctx.shared.lock();
        let Some(op) = s.bulk.iter_mut().find(|o| Some(o.id) == n) else {
            return Obj::BulkCancelPayload(
                None,
                vec![UserErr {
                    field: Some(vec!["id".into()]),
                    message: "Bulk operation does not exist".into(),
                    code: None,
                }],
            );
        };
        let status = op.status(&ctx.shared.config);
        if status.is_terminal() {
            let message = format!(
                "A bulk operation cannot be canceled when it is {}",
                status.as_str().to_ascii_lowercase()
            );
            let view = Obj::bulk_view(ctx, op);
            return Obj::BulkCancelPayload(
                Some(view),
                vec![UserErr {
                    field: None,
                    message,
                    code: None,
                }],
            );
        }
        op.canceled_at = Some(Instant::now());
        let op = op.clone();
        drop(s);
        Obj::BulkCancelPayload(Some(Obj::bulk_view(ctx, &op)), Vec::new())
    }
}

impl ObjectValue for Obj {
    fn type_name(&self) -> &str {
        match self {
            Obj::Query(_) => "QueryRoot",
            Obj::Mutation(_) => "Mutation",
            Obj::OrderConnection { .. } => "OrderConnection",
            Obj::OrderEdge(..) => "OrderEdge",
            Obj::PageInfo { .. } => "PageInfo",
            Obj::Order(_) => "Order",
            Obj::MoneyBag(..) => "MoneyBag",
            Obj::MoneyV2(..) => "MoneyV2",
            Obj::Customer(_) => "Customer",
            Obj::CustomerEmailAddress(..) => "CustomerEmailAddress",
            Obj::Bulk(_) => "BulkOperation",
            Obj::BulkRunPayload(..) => "BulkOperationRunQueryPayload",
            Obj::BulkCancelPayload(..) => "BulkOperationCancelPayload",
            Obj::BulkUserError(_) => "BulkOperationUserError",
            Obj::UserError(_) => "UserError",
            Obj::AppInstallation(_) => "AppInstallation",
            Obj::AccessScope(_) => "AccessScope",
            Obj::WebhookConnection(_) => "WebhookSubscriptionConnection",
            Obj::WebhookEdge(..) => "WebhookSubscriptionEdge",
            Obj::WebhookSubscription(..) => "WebhookSubscription",
            Obj::Count(..) => "Count",
        }
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let field = info.field_name();
        let str_arg = |k: &str| {
            info.arguments()
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let leaf_opt = |v: Option<String>| match v {
            Some(s) => ResolvedValue::leaf(s),
            None => ResolvedValue::null(),
        };
        Ok(match (self, field) {
            (Obj::Query(ctx), "orders") => ResolvedValue::object(Obj::orders(ctx, info)?),
            // A deleted order (gone from the store) reads as null, as in Shopify.
            (Obj::Query(ctx), "order") => {
                let id = str_arg("id");
                let found = ctx
                    .visible_orders()
                    .into_iter()
                    .find(|o| gid("Order", o.id) == id);
                ResolvedValue::nullable_object(found.map(Obj::Order))
            }
            (Obj::Query(ctx), "ordersCount") => {
                ResolvedValue::object(Obj::orders_count(ctx, info)?)
            }
            (Obj::Count(n, _), "count") => ResolvedValue::leaf(*n as i64),
            (Obj::Count(_, p), "precision") => ResolvedValue::leaf(*p),
            (Obj::Query(ctx), "bulkOperation") => {
                ResolvedValue::nullable_object(Obj::find_bulk(ctx, &str_arg("id")).map(Obj::Bulk))
            }
            (Obj::Query(ctx), "currentBulkOperation") => {
                let s = ctx.shared.lock();
                let last = s.bulk.last().map(|o| Obj::bulk_view(ctx, o));
                drop(s);
                ResolvedValue::nullable_object(last.map(Obj::Bulk))
            }
            (Obj::Query(ctx), "webhookSubscriptions") => {
                let first = info.arguments().get("first").and_then(|v| v.as_i64());
                if !first.is_some_and(|f| (0..=MAX_PAGE).contains(&f)) {
                    return Err(err(format!(
                        "first must be between 0 and {MAX_PAGE} (the simulator serves one page)"
                    )));
                }
                let list = ctx.shared.lock().subscriptions.clone();
                ResolvedValue::object(Obj::WebhookConnection(
                    list.into_iter()
                        .enumerate()
                        .map(|(i, (t, u))| (i, t, u))
                        .collect(),
                ))
            }
            (Obj::WebhookConnection(list), "nodes") => {
                ResolvedValue::list(list.iter().map(|(i, t, u)| {
                    ResolvedValue::object(Obj::WebhookSubscription(*i, t.clone(), u.clone()))
                }))
            }
            (Obj::WebhookConnection(list), "edges") => {
                ResolvedValue::list(list.iter().map(|(i, t, u)| {
                    ResolvedValue::object(Obj::WebhookEdge(*i, t.clone(), u.clone()))
                }))
            }
            (Obj::WebhookConnection(list), "pageInfo") => ResolvedValue::object(Obj::PageInfo {
                start: list.first().map(|(i, ..)| cursor(*i)),
                end: list.last().map(|(i, ..)| cursor(*i)),
                has_next: false,
                has_previous: false,
            }),
            (Obj::WebhookEdge(i, ..), "cursor") => ResolvedValue::leaf(cursor(*i)),
            (Obj::WebhookEdge(i, t, u), "node") => {
                ResolvedValue::object(Obj::WebhookSubscription(*i, t.clone(), u.clone()))
            }
            (Obj::WebhookSubscription(i, ..), "id") => {
                ResolvedValue::leaf(gid("WebhookSubscription", 1 + *i as u64))
            }
            (Obj::WebhookSubscription(_, t, _), "topic") => ResolvedValue::leaf(t.clone()),
            (Obj::WebhookSubscription(_, _, u), "uri") => ResolvedValue::leaf(u.clone()),
            (Obj::WebhookSubscription(..), "format") => ResolvedValue::leaf("JSON"),
            (Obj::Query(ctx), "currentAppInstallation") => {
                ResolvedValue::object(Obj::AppInstallation(ctx.scopes.clone()))
            }
            (Obj::Mutation(ctx), "bulkOperationRunQuery") => {
                ResolvedValue::object(Obj::run_bulk_query(ctx, &str_arg("query")))
            }
            (Obj::Mutation(ctx), "bulkOperationCancel") => {
                ResolvedValue::object(Obj::cancel_bulk(ctx, &str_arg("id")))
            }
            (Obj::AppInstallation(scopes), "accessScopes") => ResolvedValue::list(
                scopes
                    .iter()
                    .map(|s| ResolvedValue::object(Obj::AccessScope(s.clone()))),
            ),
            (Obj::AccessScope(h), "handle") => ResolvedValue::leaf(h.clone()),
            (Obj::AccessScope(h), "description") => ResolvedValue::leaf(format!("Scope {h}")),
            (Obj::OrderConnection { page, .. }, "edges") => ResolvedValue::list(
                page.iter()
                    .map(|(i, o)| ResolvedValue::object(Obj::OrderEdge(*i, o.clone()))),
            ),
            (Obj::OrderConnection { page, .. }, "nodes") => ResolvedValue::list(
                page.iter()
                    .map(|(_, o)| ResolvedValue::object(Obj::Order(o.clone()))),
            ),
            (
                Obj::OrderConnection {
                    page,
                    has_next,
                    has_previous,
                },
                "pageInfo",
            ) => ResolvedValue::object(Obj::PageInfo {
                start: page.first().map(|(i, _)| cursor(*i)),
                end: page.last().map(|(i, _)| cursor(*i)),
                has_next: *has_next,
                has_previous: *has_previous,
            }),
            (Obj::OrderEdge(i, _), "cursor") => ResolvedValue::leaf(cursor(*i)),
            (Obj::OrderEdge(_, o), "node") => ResolvedValue::object(Obj::Order(o.clone())),
            (Obj::PageInfo { start, .. }, "startCursor") => leaf_opt(start.clone()),
            (Obj::PageInfo { end, .. }, "endCursor") => leaf_opt(end.clone()),
            (Obj::PageInfo { has_next, .. }, "hasNextPage") => ResolvedValue::leaf(*has_next),
            (Obj::PageInfo { has_previous, .. }, "hasPreviousPage") => {
                ResolvedValue::leaf(*has_previous)
            }
            (Obj::Order(o), _) => order_field(o, field)?,
            (Obj::MoneyBag(a, c), "shopMoney" | "presentmentMoney") => {
                ResolvedValue::object(Obj::MoneyV2(a.clone(), c.clone()))
            }
            (Obj::MoneyV2(a, _), "amount") => ResolvedValue::leaf(a.clone()),
            (Obj::MoneyV2(_, c), "currencyCode") => ResolvedValue::leaf(c.clone()),
            (Obj::Customer(c), "id") => ResolvedValue::leaf(gid("Customer", c.id)),
            (Obj::Customer(c), "legacyResourceId") => ResolvedValue::leaf(c.id.to_string()),
            (Obj::Customer(c), "tags") => {
                ResolvedValue::list(c.tags.iter().map(|t| ResolvedValue::leaf(t.clone())))
            }
            (Obj::Customer(c), "defaultEmailAddress") => ResolvedValue::nullable_object(
                c.email
                    .clone()
                    .map(|e| Obj::CustomerEmailAddress(e, c.marketing_state.clone())),
            ),
            (Obj::CustomerEmailAddress(e, _), "emailAddress") => ResolvedValue::leaf(e.clone()),
            (Obj::CustomerEmailAddress(_, m), "marketingState") => {
                ResolvedValue::leaf(m.clone().unwrap_or_else(|| "NOT_SUBSCRIBED".into()))
            }
            (Obj::Bulk(v), _) => bulk_field(v, field)?,
            (Obj::BulkRunPayload(op, _) | Obj::BulkCancelPayload(op, _), "bulkOperation") => {
                ResolvedValue::nullable_object(op.clone().map(Obj::Bulk))
            }
            (Obj::BulkRunPayload(_, errs), "userErrors") => ResolvedValue::list(
                errs.iter()
                    .map(|e| ResolvedValue::object(Obj::BulkUserError(e.clone()))),
            ),
            (Obj::BulkCancelPayload(_, errs), "userErrors") => ResolvedValue::list(
                errs.iter()
                    .map(|e| ResolvedValue::object(Obj::UserError(e.clone()))),
            ),
            (Obj::BulkUserError(e) | Obj::UserError(e), "message") => {
                ResolvedValue::leaf(e.message.clone())
            }
            (Obj::BulkUserError(e) | Obj::UserError(e), "field") => match &e.field {
                Some(f) => ResolvedValue::list(f.iter().map(|s| ResolvedValue::leaf(s.clone()))),
                None => ResolvedValue::null(),
            },
            (Obj::BulkUserError(e), "code") => match e.code {
                Some(c) => ResolvedValue::leaf(c),
                None => ResolvedValue::null(),
            },
            _ => {
                return Err(err(format!(
                    "the simulator does not model {}.{field}",
                    self.type_name()
                )))
            }
        })
    }
}

fn order_field<'a>(o: &Order, field: &str) -> Result<ResolvedValue<'a>, FieldError> {
    Ok(match field {
        "id" => ResolvedValue::leaf(gid("Order", o.id)),
        "legacyResourceId" => ResolvedValue::leaf(o.id.to_string()),
        "name" => ResolvedValue::leaf(o.name.clone()),
        "email" => match &o.email {
            Some(e) => ResolvedValue::leaf(e.clone()),
            None => ResolvedValue::null(),
        },
        "createdAt" => ResolvedValue::leaf(timestamp(o.created_at)),
        "updatedAt" => ResolvedValue::leaf(timestamp(o.updated_at)),
        "cancelledAt" => match o.cancelled_at {
            Some(t) => ResolvedValue::leaf(timestamp(t)),
            None => ResolvedValue::null(),
        },
        "test" => ResolvedValue::leaf(o.test),
        "displayFinancialStatus" => ResolvedValue::leaf(o.financial_status.clone()),
        "currencyCode" => ResolvedValue::leaf(o.currency.clone()),
        "currentTotalPriceSet" | "totalPriceSet" => {
            ResolvedValue::object(Obj::MoneyBag(o.total.clone(), o.currency.clone()))
        }
        "customer" => ResolvedValue::nullable_object(o.customer.clone().map(Obj::Customer)),
        _ => return Err(err(format!("the simulator does not model Order.{field}"))),
    })
}

fn bulk_field<'a>(v: &BulkView, field: &str) -> Result<ResolvedValue<'a>, FieldError> {
    let op = &v.op;
    let done = v.status == BulkStatus::Completed;
    let lines = op.visible_lines(v.status);
    Ok(match field {
        "id" => ResolvedValue::leaf(gid("BulkOperation", op.id)),
        "status" => ResolvedValue::leaf(v.status.as_str()),
        "type" => ResolvedValue::leaf("QUERY"),
        "query" => ResolvedValue::leaf(op.query.clone()),
        "createdAt" => ResolvedValue::leaf(timestamp(op.created_at)),
        "completedAt" => match v.status {
            BulkStatus::Completed | BulkStatus::Failed | BulkStatus::Expired => {
                ResolvedValue::leaf(timestamp(op.created_at))
            }
            _ => ResolvedValue::null(),
        },
        "errorCode" => match (&op.fail, v.status) {
            (Some(code), BulkStatus::Failed) => ResolvedValue::leaf(code.clone()),
            _ => ResolvedValue::null(),
        },
        "objectCount" | "rootObjectCount" => ResolvedValue::leaf(lines.len().to_string()),
        "fileSize" => {
            if done {
                let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
                ResolvedValue::leaf(bytes.to_string())
            } else {
                ResolvedValue::null()
            }
        }
        "url" => {
            if done && !lines.is_empty() {
                ResolvedValue::leaf(op.url(&v.base_url, false, &v.config))
            } else {
                ResolvedValue::null()
            }
        }
        "partialDataUrl" => {
            if v.status == BulkStatus::Failed && !lines.is_empty() {
                ResolvedValue::leaf(op.url(&v.base_url, true, &v.config))
            } else {
                ResolvedValue::null()
            }
        }
        _ => {
            return Err(err(format!(
                "the simulator does not model BulkOperation.{field}"
            )))
        }
    })
}

/// Run `query` against a bulk root (every visible order, no paging) and return the data.
pub(crate) fn execute_bulk(ctx: &Ctx, query: &str) -> Result<Value, String> {
    let schema = schema::admin();
    let doc = ExecutableDocument::parse_and_validate(schema, query, "bulk.graphql")
        .map_err(|e| format!("Invalid bulk query: {}", e.errors))?;
    let root = Obj::Query(Ctx {
        bulk_root: true,
        ..ctx.clone()
    });
    let response = Execution::new(schema, &doc)
        .execute_sync(&root)
        .map_err(|e| format!("Invalid bulk query: {}", e.message()))?;
    if let Some(e) = response.errors.first() {
        return Err(format!("Invalid bulk query: {}", e.message));
    }
    serde_json::to_value(response.data).map_err(|e| e.to_string())
}

#[derive(serde::Deserialize)]
struct DownloadQuery {
    #[serde(default)]
    expires: i64,
}

/// The result file: JSONL, one line per order. After its URL's time it is gone (403, as the
/// signed storage URLs Shopify hands out answer).
async fn download(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Response {
    let (name, partial) = match file.strip_suffix(".partial.jsonl") {
        Some(n) => (n, true),
        None => (file.strip_suffix(".jsonl").unwrap_or(&file), false),
    };
    let id: Option<u64> = name.parse().ok();
    let s = shared.lock();
    let Some(op) = s.bulk.iter().find(|o| Some(o.id) == id) else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    let status = op.status(&shared.config);
    let expired = Utc::now().timestamp_millis() > q.expires || status == BulkStatus::Expired;
    if expired || q.expires != op.url_expiry(&shared.config) {
        drop(s);
        count(&shared, "bulk_download_expired");
        return (
            StatusCode::FORBIDDEN,
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
        )
            .into_response();
    }
    let lines = op.visible_lines(status);
    let ok = if partial {
        status == BulkStatus::Failed
    } else {
        status == BulkStatus::Completed
    };
    if !ok {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    }
    let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        body.push_str(l);
        body.push('\n');
    }
    drop(s);
    count(&shared, "bulk_download");
    ([("content-type", "application/jsonl")], body).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, Json(f): Json<Faults>) -> StatusCode {
    shared.lock().faults = f;
    StatusCode::NO_CONTENT
}

async fn get_orders(State(shared): State<Arc<Shared>>) -> Json<Vec<SimOrder>> {
    Json(shared.lock().orders.clone())
}

async fn post_orders(
    State(shared): State<Arc<Shared>>,
    Json(orders): Json<Vec<SimOrder>>,
) -> StatusCode {
    shared.upsert_orders(orders);
    StatusCode::NO_CONTENT
}
