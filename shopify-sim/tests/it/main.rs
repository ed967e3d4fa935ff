//! The simulator over HTTP, as a client meets it: Shopify's answers for auth, versions,
//! invalid queries and cost throttling; paging, search and the 60-day window; the bulk
//! operation state machine and its result file; and responses checked against the schema
//! (an answer Shopify could not give is an error, not a success).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use shopify_sim::{AccessToken, SimConfig, SimCustomer, SimHandle, SimOrder};

const SHOP: &str = "sim-test.myshopify.com";
const TOKEN: &str = "shpat_sim_test";

fn orders(n: u64) -> Vec<SimOrder> {
    let now = Utc::now().timestamp();
    (0..n)
        .map(|i| {
            let created = Utc.timestamp_opt(now - (i as i64) * 86_400, 0).unwrap();
            SimOrder {
                id: 100 + i,
                name: format!("#{}", 1000 + i),
                email: Some(format!("c{}@example.com", i % 50)),
                customer: (i % 7 != 0).then(|| SimCustomer {
                    id: 9000 + i % 50,
                    email: Some(format!("c{}@example.com", i % 50)),
                    tags: vec![],
                    marketing_state: None,
                }),
                created_at: created,
                updated_at: created + chrono::Duration::seconds((i * 37 % 1000) as i64),
                cancelled_at: None,
                test: false,
                financial_status: "PAID".into(),
                total: "10.00".into(),
                currency: "USD".into(),
            }
        })
        .collect()
}

async fn start(n: u64, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut c = SimConfig::new(SHOP, TOKEN);
    c.bulk_duration = Duration::from_millis(200);
    tweak(&mut c);
    let sim = SimHandle::start(c).await.unwrap();
    sim.upsert_orders(orders(n));
    sim
}

async fn post(
    sim: &SimHandle,
    token: &str,
    version: &str,
    query: &str,
    vars: Value,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/admin/api/{version}/graphql.json",
            sim.base_url()
        ))
        .header("x-shopify-access-token", token)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn gql(sim: &SimHandle, query: &str, vars: Value) -> Value {
    let (status, v) = post(sim, TOKEN, "2026-10", query, vars).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn auth_versions_invalid_queries_and_odd_values_answer_as_shopify_does() {
    let sim = start(3, |_| {}).await;
    let q = "{ orders(first: 1) { edges { node { id } } } }";
    assert_eq!(post(&sim, "wrong", "2026-10", q, json!({})).await.0, 401);
    assert_eq!(post(&sim, TOKEN, "2019-04", q, json!({})).await.0, 404);
    let v = gql(
        &sim,
        "{ orders(first: 1) { edges { node { totalSpent } } } }",
        json!({}),
    )
    .await;
    assert!(
        v["data"].is_null() && v["errors"][0]["message"].is_string(),
        "{v}"
    );
    let v = gql(
        &sim,
        "{ orders(first: 251) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("250"),
        "{v}"
    );
    // A value the schema does not allow never reaches the client as data.
    let mut bogus = orders(1).remove(0);
    bogus.id = 1;
    bogus.financial_status = "BOGUS".into();
    sim.upsert_orders([bogus]);
    let v = gql(
        &sim,
        "{ orders(first: 10, sortKey: ID) { edges { node { id displayFinancialStatus } } } }",
        json!({}),
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expected enum"),
        "{v}"
    );
}

#[tokio::test]
async fn orders_page_by_cursor_in_update_order_and_filter_by_search() {
    // Four queries of ~500 points each: a Plus plan's bucket, so throttling (its own test)
    // cannot land in the middle (a Standard bucket of 2,000 runs dry unless 0.1 s passes).
    let sim = start(600, |c| c.cost_bucket = 20_000.0).await;
    let q = "query($after: String, $q: String) { orders(first: 250, after: $after, sortKey: UPDATED_AT, query: $q) { edges { cursor node { legacyResourceId updatedAt } } pageInfo { hasNextPage endCursor } } }";
    let mut after = Value::Null;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let v = gql(&sim, q, json!({"after": after, "q": null})).await;
        let c = &v["data"]["orders"];
        for e in c["edges"].as_array().unwrap() {
            seen.push(e["node"]["updatedAt"].as_str().unwrap().to_owned());
        }
        pages += 1;
        if c["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = c["pageInfo"]["endCursor"].clone();
    }
    assert_eq!((pages, seen.len()), (3, 600));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "sorted by updatedAt");
    let since = &seen[500];
    let v = gql(
        &sim,
        q,
        json!({"after": null, "q": format!("updated_at:>='{since}'")}),
    )
    .await;
    let edges = v["data"]["orders"]["edges"].as_array();
    assert_eq!(edges.map(Vec::len), Some(100), "{v}");
    // A cost is reported with every answer.
    assert!(v["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"].is_number());
}

#[tokio::test]
async fn without_read_all_orders_only_sixty_days_are_visible() {
    let sim = start(200, |c| {
        c.tokens.push(AccessToken {
            token: "recent".into(),
            scopes: vec!["read_orders".into()],
        })
    })
    .await;
    let q = "{ orders(first: 250) { edges { node { id } } } }";
    let (_, all) = post(&sim, TOKEN, "2026-10", q, json!({})).await;
    let (_, recent) = post(&sim, "recent", "2026-10", q, json!({})).await;
    assert_eq!(
        all["data"]["orders"]["edges"].as_array().unwrap().len(),
        200
    );
    let n = recent["data"]["orders"]["edges"].as_array().unwrap().len();
    assert!((60..=61).contains(&n), "{n} orders in 60 days");
    let v = gql(
        &sim,
        "{ currentAppInstallation { accessScopes { handle } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["data"]["currentAppInstallation"]["accessScopes"][1]["handle"],
        "read_all_orders"
    );
}

#[tokio::test]
async fn an_expensive_query_is_throttled_with_the_cost_to_wait_for() {
    let sim = start(10, |c| {
        c.cost_bucket = 100.0;
        c.cost_restore_per_second = 10.0;
    })
    .await;
    let q = "{ orders(first: 200) { edges { node { id customer { id } } } } }";
    let v = gql(&sim, q, json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED", "{v}");
    assert!(v.get("data").is_none_or(Value::is_null));
    let cost = &v["extensions"]["cost"];
    assert!(cost["requestedQueryCost"].as_f64().unwrap() > 100.0);
    assert_eq!(cost["throttleStatus"]["restoreRate"], 10.0);
    assert_eq!(sim.requests("throttled"), 1);
}

#[tokio::test]
async fn a_bulk_operation_runs_completes_and_leaves_one_line_per_order() {
    let sim = start(120, |_| {}).await;
    let run = "mutation($q: String!) { bulkOperationRunQuery(query: $q, groupObjects: false) { bulkOperation { id status } userErrors { message code } } }";
    let inner = "{ orders { edges { node { id name customer { id } } } } }";
    let v = gql(&sim, run, json!({"q": inner})).await;
    let id = v["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        v["data"]["bulkOperationRunQuery"]["bulkOperation"]["status"],
        "CREATED"
    );
    // One query operation at a time.
    let v = gql(&sim, run, json!({"q": inner})).await;
    assert_eq!(
        v["data"]["bulkOperationRunQuery"]["userErrors"][0]["code"],
        "OPERATION_IN_PROGRESS"
    );
    let status = "query($id: ID!) { bulkOperation(id: $id) { status objectCount url } }";
    let mut seen = Vec::new();
    let url = loop {
        let v = gql(&sim, status, json!({"id": id})).await;
        let op = &v["data"]["bulkOperation"];
        let s = op["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "COMPLETED" {
            assert_eq!(op["objectCount"], "120");
            break op["url"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen, ["CREATED", "RUNNING", "COMPLETED"]);
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 120);
    assert!(lines[0]["id"]
        .as_str()
        .unwrap()
        .starts_with("gid://shopify/Order/"));
    assert!(lines
        .iter()
        .all(|l| l.get("edges").is_none() && l.get("node").is_none()));

    // Canceling a running operation; a nested connection is refused as not modelled.
    let v = gql(&sim, run, json!({"q": inner})).await;
    let id2 = v["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = "mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { status } userErrors { message } } }";
    let v = gql(&sim, cancel, json!({"id": id2})).await;
    assert_eq!(
        v["data"]["bulkOperationCancel"]["bulkOperation"]["status"],
        "CANCELED"
    );
    let v = gql(&sim, run, json!({"q": "{ orders { edges { node { id lineItems(first: 5) { edges { node { id } } } } } } }"})).await;
    assert_eq!(
        v["data"]["bulkOperationRunQuery"]["userErrors"][0]["code"], "INVALID",
        "{v}"
    );
}
