//! Istio's structural schemas (copies in `crates/ops/schemas/`, see its
//! README for provenance) and the CEL rules under `x-kubernetes-validations`
//! that the API server runs, implemented here.

use std::sync::OnceLock;

use serde_json::Value;

use super::codes::Code;
use super::istio::IstioVersion;

/// One problem: the field path (`spec.match[0].mode`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// [`Code::Schema`] or [`Code::CelRule`].
    pub code: Code,
    pub path: String,
    pub message: String,
    /// The field to find the line of (the unknown key itself, for an unknown field).
    pub at: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Where the current schemas come from (istio/api).
pub const CURRENT: &str = "b8f8791";

const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
/// Istio 1.13.9 serves no `v1` (it came in 1.22).
const NETWORKING_1_13: &[&str] = &[
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The resources this module knows: (kind, accepted apiVersions, the istio/api
/// release or commit it is from, schema text). The older ones are for
/// `render`/`validate --istio` ([`super::istio::SchemaSet`]).
const SCHEMAS: [(&str, &[&str], &str, &str); 9] = [
    (
        "WasmPlugin",
        &["extensions.istio.io/v1alpha1"],
        CURRENT,
        include_str!("../../schemas/wasmplugin.extensions.istio.io.v1alpha1.schema.json"),
    ),
    (
        "TrafficExtension",
        &["extensions.istio.io/v1alpha1"],
        CURRENT,
        include_str!("../../schemas/trafficextension.extensions.istio.io.v1alpha1.schema.json"),
    ),
    (
        "DestinationRule",
        NETWORKING,
        CURRENT,
        include_str!("../../schemas/destinationrule.networking.istio.io.v1.schema.json"),
    ),
    (
        "VirtualService",
        NETWORKING,
        CURRENT,
        include_str!("../../schemas/virtualservice.networking.istio.io.v1.schema.json"),
    ),
    (
        "WasmPlugin",
        &["extensions.istio.io/v1alpha1"],
        "1.13.9",
        include_str!(
            "../../schemas/istio-1.13/wasmplugin.extensions.istio.io.v1alpha1.schema.json"
        ),
    ),
    (
        "DestinationRule",
        NETWORKING_1_13,
        "1.13.9",
        include_str!(
            "../../schemas/istio-1.13/destinationrule.networking.istio.io.v1beta1.schema.json"
        ),
    ),
    (
        "VirtualService",
        NETWORKING_1_13,
        "1.13.9",
        include_str!(
            "../../schemas/istio-1.13/virtualservice.networking.istio.io.v1beta1.schema.json"
        ),
    ),
    (
        "WasmPlugin",
        &["extensions.istio.io/v1alpha1"],
        "1.16.7",
        include_str!(
            "../../schemas/istio-1.16/wasmplugin.extensions.istio.io.v1alpha1.schema.json"
        ),
    ),
    (
        "WasmPlugin",
        &["extensions.istio.io/v1alpha1"],
        "1.19.10",
        include_str!(
            "../../schemas/istio-1.19/wasmplugin.extensions.istio.io.v1alpha1.schema.json"
        ),
    ),
];

/// The CEL rules this module implements, by their exact text in the schemas.
pub const KNOWN_RULES: [&str; 11] = [
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1",
    "self.all(key, !key.contains(\"*\"))",
    "self.all(key, key.size() != 0)",
    "!self.contains(\"*\")",
    "self.size() == 0",
    "isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"]) : (isURL(\"http://\" + self) &&\nurl(\"http://\" + self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"])",
    "(has(self.valueFrom) ? self.valueFrom : \"\") != \"HOST\" || !has(self.value)",
    "duration(self) >= duration('1ms')",
    // TrafficExtension (what Istio 1.30+ makes of a WasmPlugin).
    "(has(self.selector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1",
    "has(self.wasm) != has(self.lua)",
    "isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"file\", \"oci\"]) : (isURL(\"http://\" + self) &&\nurl(\"http://\" + self).getScheme() in [\"\", \"http\", \"https\", \"file\", \"oci\"])",
];

pub struct Schema {
    pub kind: &'static str,
    pub api_versions: &'static [&'static str],
    /// The istio/api release (`1.13.9`) or commit ([`CURRENT`]) it is from.
    pub from: &'static str,
    /// As shipped (with the CEL rules).
    pub raw: Value,
    /// `raw` with `apiVersion`, `kind` and `metadata` described, as the CEL
    /// walk reads it: compiled once into a tree (each object's fields sorted,
    /// each rule resolved to its implementation).
    walk: Walk,
    validator: jsonschema::Validator,
}

/// Every schema, compiled once.
pub fn schemas() -> &'static [Schema] {
    static CELL: OnceLock<Vec<Schema>> = OnceLock::new();
    CELL.get_or_init(|| {
        SCHEMAS
            .iter()
            .filter_map(|(kind, versions, from, text)| {
                let raw: Value = serde_json::from_str(text).ok()?;
                let mut closed = raw.clone();
                close(&mut closed);
                if let Some(props) = closed.get_mut("properties").and_then(Value::as_object_mut) {
                    props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
                    props.insert("kind".into(), serde_json::json!({"type": "string"}));
                    props.insert("metadata".into(), metadata_schema());
                }
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft4)
                    .should_validate_formats(false)
                    .build(&closed)
                    .ok()?;
                let mut walked = raw.clone();
                if let Some(props) = walked.get_mut("properties").and_then(Value::as_object_mut) {
                    for k in ["apiVersion", "kind"] {
                        props.insert(k.into(), serde_json::json!({"type": "string"}));
                    }
                    props.insert("metadata".into(), metadata_schema());
                }
                Some(Schema {
                    kind,
                    api_versions: versions,
                    from,
                    raw,
                    walk: Walk::new(&walked),
                    validator,
                })
            })
            .collect()
    })
}

/// The current schema of `kind`.
pub fn schema_for(kind: &str) -> Option<&'static Schema> {
    schema_for_version(kind, IstioVersion::CURRENT)
}

/// The schema `kind` has in `version` (the carried one whose fields match it,
/// [`IstioVersion::schema_set`]).
pub fn schema_for_version(kind: &str, version: IstioVersion) -> Option<&'static Schema> {
    let set = version.schema_set();
    let from = match kind {
        "WasmPlugin" => set.wasm_plugin_source(),
        "DestinationRule" | "VirtualService" => set.networking_source(),
        _ => CURRENT,
    };
    schemas().iter().find(|s| s.kind == kind && s.from == from)
}

fn metadata_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253,
                     "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
            "namespace": {"type": "string", "maxLength": 63,
                          "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

/// Structural schemas drop unknown fields (and `kubectl apply
/// --validate=strict` rejects them): close every object schema that lists
/// properties and does not say otherwise.
fn close(schema: &mut Value) {
    if let Value::Object(o) = schema {
        let preserve = o
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if o.contains_key("properties") && !o.contains_key("additionalProperties") && !preserve {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
        // `nullable: true` means null is allowed as well.
        if o.get("nullable").and_then(Value::as_bool) == Some(true) {
            if let Some(Value::String(t)) = o.get("type").cloned() {
                o.insert("type".into(), serde_json::json!([t, "null"]));
            }
        }
        for (k, v) in o.iter_mut() {
            if k != "x-kubernetes-validations" {
                close(v);
            }
        }
    } else if let Value::Array(a) = schema {
        for v in a {
            close(v);
        }
    }
}

/// `/spec/match/0/mode` -> `spec.match[0].mode`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Schema and CEL problems of one document of a known kind.
pub fn check(schema: &Schema, doc: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    if !schema.api_versions.contains(&api) {
        problems.push(Problem {
            code: Code::Schema,
            path: "apiVersion".into(),
            message: format!(
                "{api:?} is not an apiVersion of {}, expected {}",
                schema.kind,
                schema.api_versions.join(" or ")
            ),
            at: "apiVersion".into(),
        });
    }
    // Most documents are valid: `is_valid` stops early and builds no error,
    // the errors are collected only for a document that has some.
    let errors = if schema.validator.is_valid(doc) {
        None
    } else {
        Some(schema.validator.iter_errors(doc))
    };
    for e in errors.into_iter().flatten() {
        // Unknown fields are reported by `cel` with the fields expected there.
        if matches!(
            e.kind(),
            jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
        ) {
            continue;
        }
        let path = pointer_to_path(e.instance_path().as_str());
        problems.push(Problem {
            code: Code::Schema,
            at: path.clone(),
            path,
            message: e.to_string(),
        });
    }
    if !doc.is_object() {
        return problems;
    }
    cel(&schema.walk, doc, &At::Root, &mut problems);
    if schema.from != CURRENT {
        for p in &mut problems {
            p.message = format!("{} (Istio {}'s {})", p.message, schema.from, schema.kind);
        }
    }
    problems
}

/// A schema node as the CEL walk reads it.
#[derive(Default)]
struct Walk {
    /// `x-kubernetes-validations`: (the rule, its message, its implementation).
    rules: Vec<(String, String, Option<Rule>)>,
    /// `properties`, sorted by name (as the unknown-field message lists them).
    properties: Vec<(String, Walk)>,
    /// `properties` without `additionalProperties` or
    /// `x-kubernetes-preserve-unknown-fields: true`: other fields are unknown.
    closed: bool,
    additional: Option<Box<Walk>>,
    items: Option<Box<Walk>>,
}

impl Walk {
    fn new(schema: &Value) -> Walk {
        let rules = schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let rule = r["rule"].as_str().unwrap_or_default();
                let message = r["message"].as_str().unwrap_or(rule);
                (rule.to_string(), message.to_string(), Rule::of(rule))
            })
            .collect();
        let mut properties: Vec<(String, Walk)> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Walk::new(v)))
            .collect();
        properties.sort_by(|a, b| a.0.cmp(&b.0));
        let has_properties = schema["properties"].is_object();
        Walk {
            rules,
            properties,
            closed: has_properties
                && schema.get("additionalProperties").is_none()
                && schema["x-kubernetes-preserve-unknown-fields"].as_bool() != Some(true),
            additional: schema["additionalProperties"]
                .is_object()
                .then(|| Box::new(Walk::new(&schema["additionalProperties"]))),
            items: (!schema["items"].is_null()).then(|| Box::new(Walk::new(&schema["items"]))),
        }
    }

    fn property(&self, name: &str) -> Option<&Walk> {
        // Most objects have a few fields: a scan beats the search.
        if self.properties.len() <= 16 {
            return self
                .properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, w)| w);
        }
        self.properties
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.properties[i].1)
    }
}

/// Where the walk is: made into a path (`spec.http[0].route`) only for a
/// problem.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn path(&self) -> String {
        match self {
            At::Root => String::new(),
            At::Key(parent, k) => {
                let p = parent.path();
                if p.is_empty() {
                    k.to_string()
                } else {
                    format!("{p}.{k}")
                }
            }
            At::Index(parent, i) => format!("{}[{i}]", parent.path()),
        }
    }
}

/// Walks the instance with the schema and runs each `x-kubernetes-validations` rule.
fn cel(schema: &Walk, value: &Value, at: &At<'_>, out: &mut Vec<Problem>) {
    for (rule, message, implemented) in &schema.rules {
        let message = match implemented.map(|r| r.run(value)) {
            Some(true) => continue,
            Some(false) => rule_message(rule, message, value),
            None => format!("CEL rule not implemented by hybridmesh, not checked: {rule}"),
        };
        let path = at.path();
        out.push(Problem {
            code: Code::CelRule,
            at: path.clone(),
            path,
            message,
        });
    }
    match value {
        Value::Object(o) => {
            if schema.closed {
                for k in o.keys().filter(|k| schema.property(k).is_none()) {
                    let names: Vec<&str> =
                        schema.properties.iter().map(|(n, _)| n.as_str()).collect();
                    let path = at.path();
                    out.push(Problem {
                        code: Code::Schema,
                        message: format!(
                            "unknown field `{k}` (the API server drops it, kubectl apply --validate=strict rejects it), expected one of {}",
                            names.join(", ")
                        ),
                        at: if path.is_empty() { k.clone() } else { format!("{path}.{k}") },
                        path,
                    });
                }
            }
            for (k, v) in o {
                let child = At::Key(at, k);
                if let Some(s) = schema.property(k) {
                    cel(s, v, &child, out);
                } else if let Some(s) = &schema.additional {
                    cel(s, v, &child, out);
                }
            }
        }
        // Items with no schema have nothing to check.
        Value::Array(a) => {
            if let Some(s) = &schema.items {
                for (i, v) in a.iter().enumerate() {
                    cel(s, v, &At::Index(at, i), out);
                }
            }
        }
        _ => {}
    }
}

/// The rule's message, with the offending value where it helps.
fn rule_message(rule: &str, message: &str, value: &Value) -> String {
    if rule.starts_with("isURL(") {
        let url = value.as_str().unwrap_or_default();
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        return format!("{message}: {url:?} has scheme {scheme:?} (no scheme means oci)");
    }
    if rule.starts_with("duration(") {
        return format!("{message}: {value}");
    }
    if rule.starts_with("(has(self.selector)") {
        let set: Vec<&str> = ["selector", "targetRef", "targetRefs"]
            .into_iter()
            .filter(|k| value.get(*k).is_some())
            .collect();
        return format!(
            "{message}: {} are set, a WasmPlugin picks its workloads one way",
            set.join(" and ")
        );
    }
    message.to_string()
}

/// A rule this module implements: which of [`KNOWN_RULES`].
#[derive(Clone, Copy)]
struct Rule(usize);

impl Rule {
    fn of(rule: &str) -> Option<Rule> {
        KNOWN_RULES.iter().position(|r| *r == rule).map(Rule)
    }

    /// Whether `v` keeps the rule.
    fn run(self, v: &Value) -> bool {
        let has = |k: &str| v.get(k).is_some();
        match self.0 {
            0 | 8 => {
                [has("selector"), has("targetRef"), has("targetRefs")]
                    .iter()
                    .filter(|b| **b)
                    .count()
                    <= 1
            }
            1 => v
                .as_object()
                .is_none_or(|o| o.keys().all(|k| !k.contains('*'))),
            2 => v
                .as_object()
                .is_none_or(|o| o.keys().all(|k| !k.is_empty())),
            3 => v.as_str().is_none_or(|s| !s.contains('*')),
            4 => v.as_str().is_none_or(str::is_empty),
            5 | 10 => v.as_str().is_none_or(url_scheme_ok),
            9 => has("wasm") != has("lua"),
            6 => v.get("valueFrom").and_then(Value::as_str) != Some("HOST") || !has("value"),
            // 7: `duration(self) >= duration('1ms')` (`of` makes no other).
            _ => v
                .as_str()
                .and_then(go_duration_ns)
                .is_some_and(|ns| ns >= 1_000_000),
        }
    }
}

/// The url rule: a scheme among "", http, https, oci, file; a url without a
/// scheme is read as `http://` + it (and so is an OCI reference).
pub fn url_scheme_ok(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && ["http", "https", "oci", "file"].contains(&scheme.to_ascii_lowercase().as_str())
        }
        // `registry/repo:tag`: no scheme, which Istio reads as oci.
        None => !url.is_empty() && !url.contains(char::is_whitespace) && !url.starts_with(':'),
    }
}

/// A Go/CEL duration (`1s`, `1m30s`, `500ms`, `1.5h`, `10us`) in nanoseconds.
pub fn go_duration_ns(text: &str) -> Option<u128> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += number * factor;
    }
    Some(total as u128)
}

/// Every CEL rule text in the shipped schemas.
pub fn rules_in_schemas() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(rules) = o.get("x-kubernetes-validations").and_then(Value::as_array) {
                    for r in rules {
                        if let Some(t) = r["rule"].as_str() {
                            if !out.iter().any(|x| x == t) {
                                out.push(t.to_string());
                            }
                        }
                    }
                }
                o.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in schemas() {
        walk(&s.raw, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_schema_compiles_and_every_rule_is_implemented() {
        assert_eq!(schemas().len(), SCHEMAS.len());
        for rule in rules_in_schemas() {
            assert!(
                KNOWN_RULES.contains(&rule.as_str()),
                "rule not implemented: {rule}"
            );
        }
    }

    #[test]
    fn urls_and_durations() {
        for ok in [
            "oci://r.example/x:1",
            "https://h/p.wasm",
            "file:///x.wasm",
            "r.example/x:1",
        ] {
            assert!(url_scheme_ok(ok), "{ok}");
        }
        for bad in ["ftp://h/x", "s3://b/x", "oci://", ""] {
            assert!(!url_scheme_ok(bad), "{bad}");
        }
        assert_eq!(go_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration_ns("500us"), Some(500_000));
        assert_eq!(go_duration_ns("1x"), None);
    }
}
