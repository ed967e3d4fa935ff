//! Shopify's published Admin GraphQL schema for the pinned API version, as apollo-compiler
//! reads it: every request the simulator serves is parsed and validated against it, and every
//! response is produced by schema-driven execution (result coercion checks each leaf against
//! its declared type), so the simulator cannot answer what real Shopify could not.
//!
//! The schema is vendored as Shopify ships it: the introspection result in the npm package
//! `@shopify/dev-mcp` 1.16.0 (ISC, `dist/data/admin_<version>.json.gz`; licence beside it in
//! `schema/`). apollo-compiler reads SDL, not introspection JSON, so [`introspection_to_sdl`]
//! prints one from the other (no description text; deprecations and default values kept).

use std::fmt::Write as _;
use std::sync::OnceLock;

use apollo_compiler::validation::Valid;
use apollo_compiler::Schema;
use serde::Deserialize;

/// The Admin API version tierflow pins (Shopify supports a version for at least 12 months).
pub const API_VERSION: &str = "2026-10";

/// The vendored introspection result of [`API_VERSION`].
pub const INTROSPECTION_GZ: &[u8] = include_bytes!("../schema/admin_2026-10.json.gz");

/// The pinned Admin schema, parsed and validated once per process.
pub fn admin() -> &'static Valid<Schema> {
    static SCHEMA: OnceLock<Valid<Schema>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let sdl = introspection_to_sdl(&decompress(INTROSPECTION_GZ))
            .expect("the vendored introspection result is readable");
        Schema::parse_and_validate(sdl, "shopify-admin-2026-10.graphql")
            .expect("Shopify's published schema is valid GraphQL")
    })
}

fn decompress(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out)
        .expect("the vendored schema is gzip");
    out
}

#[derive(Deserialize)]
struct Envelope {
    data: Introspection,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Introspection {
    #[serde(rename = "__schema")]
    schema: SchemaDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaDef {
    query_type: Named,
    mutation_type: Option<Named>,
    types: Vec<TypeDef>,
    #[serde(default)]
    directives: Vec<DirectiveDef>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeDef {
    kind: String,
    name: String,
    #[serde(default)]
    fields: Option<Vec<FieldDef>>,
    #[serde(default)]
    input_fields: Option<Vec<InputDef>>,
    #[serde(default)]
    interfaces: Option<Vec<Named>>,
    #[serde(default)]
    possible_types: Option<Vec<Named>>,
    #[serde(default)]
    enum_values: Option<Vec<EnumValueDef>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FieldDef {
    name: String,
    #[serde(default)]
    args: Vec<InputDef>,
    #[serde(rename = "type")]
    ty: TypeRef,
    #[serde(default)]
    is_deprecated: bool,
    #[serde(default)]
    deprecation_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputDef {
    name: String,
    #[serde(rename = "type")]
    ty: TypeRef,
    #[serde(default)]
    default_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnumValueDef {
    name: String,
    #[serde(default)]
    is_deprecated: bool,
    #[serde(default)]
    deprecation_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectiveDef {
    name: String,
    #[serde(default)]
    locations: Vec<String>,
    #[serde(default)]
    args: Vec<InputDef>,
    #[serde(default)]
    is_repeatable: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeRef {
    kind: String,
    name: Option<String>,
    of_type: Option<Box<TypeRef>>,
}

impl TypeRef {
    fn render(&self) -> Result<String, String> {
        let inner = || {
            self.of_type
                .as_deref()
                .ok_or_else(|| format!("{} without ofType", self.kind))
                .and_then(TypeRef::render)
        };
        match self.kind.as_str() {
            "NON_NULL" => Ok(format!("{}!", inner()?)),
            "LIST" => Ok(format!("[{}]", inner()?)),
            _ => self
                .name
                .clone()
                .ok_or_else(|| "a named type without a name".into()),
        }
    }
}

/// Types and directives every GraphQL implementation predefines: apollo-compiler refuses
/// them defined again.
const BUILT_IN: &[&str] = &[
    "String",
    "Int",
    "Float",
    "Boolean",
    "ID",
    "include",
    "skip",
    "deprecated",
    "specifiedBy",
    "oneOf",
];

/// Print the SDL of an introspection result (`{"data": {"__schema": ...}}`).
pub fn introspection_to_sdl(json: &[u8]) -> Result<String, String> {
    let schema = serde_json::from_slice::<Envelope>(json)
        .map_err(|e| format!("not an introspection result: {e}"))?
        .data
        .schema;
    let mut out = String::new();
    let w = |out: &mut String, s: std::fmt::Arguments<'_>| {
        out.write_fmt(s).expect("writing to a String");
    };
    w(
        &mut out,
        format_args!("schema {{ query: {}", schema.query_type.name),
    );
    if let Some(m) = &schema.mutation_type {
        w(&mut out, format_args!(" mutation: {}", m.name));
    }
    out.push_str(" }\n");
    for d in &schema.directives {
        if BUILT_IN.contains(&d.name.as_str()) {
            continue;
        }
        w(
            &mut out,
            format_args!("directive @{}{}", d.name, args(&d.args)?),
        );
        if d.is_repeatable {
            out.push_str(" repeatable");
        }
        w(&mut out, format_args!(" on {}\n", d.locations.join(" | ")));
    }
    for t in &schema.types {
        if t.name.starts_with("__") || BUILT_IN.contains(&t.name.as_str()) {
            continue;
        }
        match t.kind.as_str() {
            "SCALAR" => w(&mut out, format_args!("scalar {}\n", t.name)),
            "OBJECT" | "INTERFACE" => {
                let keyword = if t.kind == "OBJECT" {
                    "type"
                } else {
                    "interface"
                };
                w(&mut out, format_args!("{keyword} {}", t.name));
                let interfaces: Vec<&str> = t
                    .interfaces
                    .iter()
                    .flatten()
                    .map(|i| i.name.as_str())
                    .collect();
                if !interfaces.is_empty() {
                    w(
                        &mut out,
                        format_args!(" implements {}", interfaces.join(" & ")),
                    );
                }
                out.push_str(" {\n");
                for f in t.fields.iter().flatten() {
                    w(
                        &mut out,
                        format_args!("  {}{}: {}", f.name, args(&f.args)?, f.ty.render()?),
                    );
                    deprecated(&mut out, f.is_deprecated, f.deprecation_reason.as_deref());
                    out.push('\n');
                }
                out.push_str("}\n");
            }
            "UNION" => {
                let members: Vec<&str> = t
                    .possible_types
                    .iter()
                    .flatten()
                    .map(|p| p.name.as_str())
                    .collect();
                w(
                    &mut out,
                    format_args!("union {} = {}\n", t.name, members.join(" | ")),
                );
            }
            "ENUM" => {
                w(&mut out, format_args!("enum {} {{\n", t.name));
                for v in t.enum_values.iter().flatten() {
                    w(&mut out, format_args!("  {}", v.name));
                    deprecated(&mut out, v.is_deprecated, v.deprecation_reason.as_deref());
                    out.push('\n');
                }
                out.push_str("}\n");
            }
            "INPUT_OBJECT" => {
                w(&mut out, format_args!("input {} {{\n", t.name));
                for f in t.input_fields.iter().flatten() {
                    w(&mut out, format_args!("  {}\n", input(f)?));
                }
                out.push_str("}\n");
            }
            other => return Err(format!("type {} of unknown kind {other}", t.name)),
        }
    }
    Ok(out)
}

fn input(a: &InputDef) -> Result<String, String> {
    let mut s = format!("{}: {}", a.name, a.ty.render()?);
    if let Some(d) = &a.default_value {
        let _ = write!(s, " = {d}");
    }
    Ok(s)
}

fn args(list: &[InputDef]) -> Result<String, String> {
    if list.is_empty() {
        return Ok(String::new());
    }
    let parts: Result<Vec<String>, String> = list.iter().map(input).collect();
    Ok(format!("({})", parts?.join(", ")))
}

fn deprecated(out: &mut String, is: bool, reason: Option<&str>) {
    if is {
        let reason = reason.unwrap_or("No longer supported");
        let _ = write!(
            out,
            " @deprecated(reason: {})",
            serde_json::to_string(reason).expect("a string serialises")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_compiler::ExecutableDocument;

    #[test]
    fn the_vendored_schema_has_what_backfill_and_reconcile_read() {
        let s = admin();
        assert_eq!(
            s.schema_definition.query.as_ref().unwrap().name,
            "QueryRoot"
        );
        for (ty, field) in [
            ("QueryRoot", "orders"),
            ("QueryRoot", "bulkOperation"),
            ("Mutation", "bulkOperationRunQuery"),
            ("Mutation", "bulkOperationCancel"),
            ("Order", "currentTotalPriceSet"),
            ("Order", "displayFinancialStatus"),
            ("BulkOperation", "partialDataUrl"),
        ] {
            assert!(
                s.type_field(ty, field).is_ok(),
                "{ty}.{field} is in Shopify's {API_VERSION} schema"
            );
        }
    }

    /// The check can fail: a field Shopify does not have, a wrong argument type and a missing
    /// required argument are refused.
    #[test]
    fn queries_shopify_would_refuse_are_refused() {
        let s = admin();
        for bad in [
            "{ orders(first: 1) { edges { node { totalSpent } } } }",
            "{ orders(first: \"ten\") { edges { node { id } } } }",
            "mutation { bulkOperationRunQuery(groupObjects: false) { userErrors { message } } }",
        ] {
            assert!(
                ExecutableDocument::parse_and_validate(s, bad, "bad.graphql").is_err(),
                "{bad}"
            );
        }
        ExecutableDocument::parse_and_validate(
            s,
            "{ orders(first: 1, sortKey: UPDATED_AT) { edges { node { id updatedAt } } } }",
            "good.graphql",
        )
        .unwrap();
    }
}
