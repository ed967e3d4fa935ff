//! Contract test against Okta's official OpenAPI spec (version 2026.06.3, vendored in
//! `tests/spec/`):
//! every request the writer sends matches a path template and method in the spec and its JSON
//! body validates against the operation's request schema; the simulator's responses to those
//! requests validate against the spec's response schemas for their status.
//!
//! The spec is OpenAPI 3.0, whose schemas are JSON Schema (draft 4 era) plus `nullable`; the
//! test rewrites `nullable: true` into a `"null"` type before validating with `jsonschema`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::*;
use okta_sim::SimConfig;
use okta_writer::apply::Trust;
use okta_writer::config::{MissingUser, UserLookup};
use serde_json::{json, Value};

fn spec_path() -> PathBuf {
    let default =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/spec/okta-management-2026.06.3.yaml");
    std::env::var_os("OKTA_OPENAPI_SPEC")
        .map(PathBuf::from)
        .unwrap_or(default)
}

/// OpenAPI 3.0 → JSON Schema: `nullable: true` next to `type` becomes `type: [t, "null"]`.
fn nullable_to_json_schema(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = map.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            for child in map.values_mut() {
                nullable_to_json_schema(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        let path = spec_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading the Okta spec at {}: {e}", path.display()));
        let mut doc: Value = serde_norway::from_str(&text).expect("the spec is YAML");
        nullable_to_json_schema(&mut doc);
        Spec { doc }
    }

    /// The spec's path template for a concrete path: same segments, `{param}` matching any;
    /// among several, the one with the most literal segments (`/users/me` over `/users/{id}`).
    fn template(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for t in self.doc["paths"].as_object().unwrap().keys() {
            let tsegs: Vec<&str> = t.trim_matches('/').split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let ok = tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    true
                } else {
                    literal += 1;
                    t == s
                }
            });
            if ok && best.as_ref().is_none_or(|(l, _)| literal > *l) {
                best = Some((literal, t.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {r}")),
            None => v,
        }
    }

    /// Validate `instance` against `schema` (which may `$ref` into the spec's components).
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let wrapped = json!({"allOf": [schema], "components": self.doc["components"]});
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&wrapped)
            .map_err(|e| format!("compiling the schema: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_requests_and_simulator_responses_follow_the_official_spec() {
    let sim = sim(
        SimConfig {
            log_bodies: true,
            ..SimConfig::default()
        },
        2,
    )
    .await;
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let metrics = okta_writer::metrics::Metrics::unregistered();

    // Every kind of request the writer sends, and Okta's error responses to some.
    let mut s = settings(&bootstrap, &sim.base_url(), "w-contract");
    let applier = okta_writer::applier(&s, metrics.clone()).await.unwrap(); // listGroups search
    applier
        .apply(&update(0, 20_000, 3, Some("Potential")), &[], Trust::Cached)
        .await
        .unwrap(); // getUser, updateUser, listUserGroups, PUT, DELETE
    applier
        .apply(&update(0, 60_000, 4, Some("Active")), &[], Trust::Cached)
        .await
        .unwrap(); // cached path
    assert!(applier
        .apply(&update(9, 100, 1, None), &[], Trust::Cached)
        .await
        .is_err()); // getUser 404
    s.okta.user_lookup = UserLookup::Email;
    s.okta.missing_user = MissingUser::Create;
    let by_email = okta_writer::applier(&s, metrics.clone()).await.unwrap();
    by_email
        .apply(&update(1, 700, 1, None), &[], Trust::Cached)
        .await
        .unwrap(); // listUsers search
    by_email
        .apply(&update(5, 700, 1, None), &[], Trust::Cached)
        .await
        .unwrap(); // createUser
    sim.shared
        .declare_attribute("shopify_orders_count", okta_sim::AttrType::String);
    assert!(by_email
        .apply(&update(1, 900, 2, None), &[], Trust::Nothing)
        .await
        .is_err()); // updateUser 400
    okta_writer::groups_table(&s).await.unwrap(); // listGroupUsers

    // Group rules: create + activate, replace (deactivate, PUT, activate), delete.
    sim.shared
        .declare_attribute("shopify_tier", okta_sim::AttrType::String);
    sim.shared
        .declare_attribute("shopify_tier_v2", okta_sim::AttrType::String);
    let mut with_rules = s.clone();
    with_rules.okta.profile_attributes = toml::from_str("shopify_tier = \"tier\"").unwrap();
    let ruled = okta_writer::applier(&with_rules, metrics.clone())
        .await
        .unwrap();
    okta_writer::rules::sync(&ruled.client, &ruled.stores, true)
        .await
        .unwrap();
    ruled
        .client
        .create_group_rule(okta_writer::client::api::GroupRule::request(
            "tierflow stale",
            "user.shopify_tier==\"Gone\"",
            &ruled.stores[0].groups.groups[0].id,
        ))
        .await
        .unwrap();
    with_rules.okta.profile_attributes = toml::from_str("shopify_tier_v2 = \"tier\"").unwrap();
    let renamed = okta_writer::applier(&with_rules, metrics.clone())
        .await
        .unwrap();
    okta_writer::rules::sync(&renamed.client, &renamed.stores, true)
        .await
        .unwrap();

    // Okta's 429 (a bucket of 1 request per window, asked twice).
    let tight = okta_sim::SimHandle::start(
        SimConfig {
            log_bodies: true,
            limits: std::collections::BTreeMap::from([(okta_sim::Bucket::UsersGet, 1)]),
            window: std::time::Duration::from_secs(60),
            ..SimConfig::default()
        },
        &okta_sim::seed(&[], &[("a@example.com", &[])]),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..2 {
        http.get(format!("{}/api/v1/users/a%40example.com", tight.base_url()))
            .header("authorization", "SSWS sim-token")
            .send()
            .await
            .unwrap();
    }

    let spec = Spec::load();
    let mut log = sim.shared.requests();
    log.extend(tight.shared.requests());
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for r in &log {
        let path = r.uri.split('?').next().unwrap();
        let Some(template) = spec.template(path) else {
            failures.push(format!("{} {path}: no such path in the spec", r.method));
            continue;
        };
        let method = r.method.to_lowercase();
        let Some(op) = spec.doc["paths"][&template].get(&method) else {
            failures.push(format!("{} {template}: method not in the spec", r.method));
            continue;
        };
        seen.insert(format!("{} {template} → {}", r.method, r.status));
        if let Some(body) = &r.request_body {
            let schema = &spec.resolve(&op["requestBody"])["content"]["application/json"]["schema"];
            if schema.is_null() {
                failures.push(format!(
                    "{} {template}: sends a body the spec does not take",
                    r.method
                ));
            } else if let Err(e) = spec.validate(schema, body) {
                failures.push(format!("{} {template} request: {e}", r.method));
            }
        }
        let responses = &op["responses"];
        let Some(response) = responses
            .get(r.status.to_string())
            .or_else(|| responses.get("default"))
        else {
            failures.push(format!(
                "{} {template}: status {} not in the spec",
                r.method, r.status
            ));
            continue;
        };
        let response = spec.resolve(response);
        if let (Some(body), Some(schema)) = (
            &r.response_body,
            response.pointer("/content/application~1json/schema"),
        ) {
            if let Err(e) = spec.validate(schema, body) {
                failures.push(format!(
                    "{} {template} → {} response: {e}",
                    r.method, r.status
                ));
            }
        }
    }
    let operations: BTreeSet<&str> = log.iter().map(|r| r.operation.as_str()).collect();
    for op in [
        "listGroups",
        "getUser",
        "updateUser",
        "listUserGroups",
        "assignUserToGroup",
        "unassignUserFromGroup",
        "listUsers",
        "createUser",
        "listGroupUsers",
        "listGroupRules",
        "createGroupRule",
        "activateGroupRule",
        "deactivateGroupRule",
        "replaceGroupRule",
        "deleteGroupRule",
    ] {
        assert!(
            operations.contains(op),
            "the test never exercised {op}: {operations:?}"
        );
    }
    for status in [400, 404, 429] {
        assert!(
            log.iter().any(|r| r.status == status),
            "no {status} response exercised"
        );
    }
    assert!(
        failures.is_empty(),
        "{} contract violations:\n{}\nchecked: {seen:#?}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        log.iter()
            .all(|r| r.method != "PUT" || r.uri.starts_with("/api/v1/groups/")),
        "never PUT a user"
    );
}

#[test]
fn the_base_attributes_the_writer_never_writes_are_the_specs_user_profile() {
    let spec = Spec::load();
    let profile = spec.resolve(&spec.doc["components"]["schemas"]["UserProfile"]);
    let in_spec: BTreeSet<&str> = profile["properties"]
        .as_object()
        .expect("UserProfile has properties")
        .keys()
        .map(String::as_str)
        .collect();
    let listed: BTreeSet<&str> = okta_writer::profile::OKTA_BASE_ATTRIBUTES
        .into_iter()
        .collect();
    assert_eq!(listed, in_spec);
}
