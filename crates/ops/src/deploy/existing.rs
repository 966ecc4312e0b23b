//! Rules already in a cluster for the hosts `render` writes rules for: a DestinationRule
//! or VirtualService for the same host (the seed article has one for `echo-svc`), read
//! from the operator's files or `kubectl get dr,vs -A -o yaml`, merged into what `render`
//! writes, or explained and refused, never silently replaced.
//!
//! What Istio does with two rules for one host (istio/istio, `pilot/pkg/model`):
//! - DestinationRules (`destination_rule.go`, `mergeDestinationRule`): without workload
//!   selectors they are merged: the subsets of the newer one whose names are new are added
//!   to the older one, whose top-level `trafficPolicy` and `exportTo` are kept (the newer
//!   one's only fill what the older one lacks).
//! - VirtualServices bound to sidecars (no `gateways`, or `mesh` among them): one per host;
//!   the others for that host are ignored (`istioctl analyze` reports IST0109,
//!   ConflictingMeshGatewayVirtualServiceHosts).
//!
//! So: a DestinationRule with the rendered one's name would be replaced by `kubectl apply`:
//! its top-level traffic policy, `exportTo` and other subsets are carried into the rendered
//! one. One with another name is left to Istio's merge, unless a subset name clashes. A
//! VirtualService for the host, whatever its name, is merged: the rendered one takes its
//! name and namespace (so `apply` updates it in place) and its routes after the filter's
//! decision routes.

use std::path::Path;

use serde::Deserialize as _;
use serde_yaml_ng::Value;

use super::validate::read_input;
use super::yaml::{s, seq, Node};

/// One DestinationRule or VirtualService read from the operator's files.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it was read (`file`, document n).
    pub source: String,
    pub kind: Kind,
    pub name: String,
    pub namespace: String,
    /// Its `spec`, as written.
    pub spec: Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DestinationRule,
    VirtualService,
}

impl Rule {
    fn id(&self) -> String {
        let kind = match self.kind {
            Kind::DestinationRule => "DestinationRule",
            Kind::VirtualService => "VirtualService",
        };
        format!("{kind} {}/{} ({})", self.namespace, self.name, self.source)
    }

    /// The hosts it applies to, as fully qualified names.
    fn hosts(&self) -> Vec<String> {
        let names: Vec<&str> = match self.kind {
            Kind::DestinationRule => str_at(&self.spec, "host").into_iter().collect(),
            Kind::VirtualService => match self.spec.get("hosts") {
                Some(Node::Seq(items)) => items.iter().filter_map(as_str).collect(),
                _ => Vec::new(),
            },
        };
        names.iter().map(|h| fqdn(h, &self.namespace)).collect()
    }
}

/// Istio's `ResolveShortnameToFQDN`: a name without a dot is a service of the rule's
/// namespace; anything else is taken as written.
fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

fn as_str(n: &Node) -> Option<&str> {
    match n {
        Node::Str(t) => Some(t),
        _ => None,
    }
}

fn str_at<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.get(key).and_then(as_str)
}

fn to_node(v: &Value) -> Node {
    match v {
        Value::Null => s(""),
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Node::Int(i),
            None => s(n.to_string()),
        },
        Value::String(t) => s(t),
        Value::Sequence(items) => seq(items.iter().map(to_node)),
        Value::Mapping(m) => Node::Map(
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_node(v)))
                .collect(),
        ),
        Value::Tagged(t) => to_node(&t.value),
    }
}

/// Why a file of existing rules could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read (exit code 2).
    Io(anyhow::Error),
    /// It is not what it should be: not UTF-8, too deep, not YAML.
    Content(String),
}

/// Reads every DestinationRule and VirtualService of `networking.istio.io` in `path`
/// (YAML documents, or the `kind: List` that `kubectl get -o yaml` prints); other
/// objects are skipped.
pub fn read(path: &Path) -> Result<Vec<Rule>, ReadError> {
    let file = path.display().to_string();
    let bytes = read_input(path).map_err(ReadError::Io)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ReadError::Content(format!(
            "{file}: not UTF-8 text (byte offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    hybridmesh_scenario::guard::yaml(&text)
        .map_err(|e| ReadError::Content(format!("{file}: {e}")))?;
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| {
            ReadError::Content(format!("{file}: document {} is not valid YAML: {e}", i + 1))
        })?;
        let source = format!("{file}, document {}", i + 1);
        match value.get("kind").and_then(Value::as_str) {
            Some("List") => {
                if let Some(Value::Sequence(items)) = value.get("items") {
                    for (j, item) in items.iter().enumerate() {
                        let source = format!("{source}, item {}", j + 1);
                        problems.extend(check(item, &source));
                        rules.extend(rule(item, source));
                    }
                }
            }
            _ => {
                problems.extend(check(&value, &source));
                rules.extend(rule(&value, source));
            }
        }
    }
    // A rule Istio would refuse is not merged into what `render` writes (was:
    // merged, so `validate` refused the output): every problem is named.
    if !problems.is_empty() {
        return Err(ReadError::Content(format!(
            "{} existing rule problem(s), nothing merged:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    Ok(rules)
}

/// What Istio's schema refuses in a DestinationRule or VirtualService (the
/// same check `validate` makes), each as `source: path: message`.
fn check(v: &Value, source: &str) -> Vec<String> {
    let (Some(api), Some(kind)) = (
        v.get("apiVersion").and_then(Value::as_str),
        v.get("kind").and_then(Value::as_str),
    ) else {
        return Vec::new();
    };
    if !api.starts_with("networking.istio.io/")
        || !matches!(kind, "DestinationRule" | "VirtualService")
    {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    if name.is_none_or(str::is_empty) {
        problems.push(format!(
            "{source}: metadata.name: missing, a {kind} needs one"
        ));
    }
    if let (Some(schema), Ok(json)) = (super::schema::schema_for(kind), serde_json::to_value(v)) {
        problems.extend(
            super::schema::check(schema, &json)
                .into_iter()
                .map(|p| format!("{source}: {p}")),
        );
    }
    problems
}

fn rule(v: &Value, source: String) -> Option<Rule> {
    let api = v.get("apiVersion").and_then(Value::as_str)?;
    if !api.starts_with("networking.istio.io/") {
        return None;
    }
    let kind = match v.get("kind").and_then(Value::as_str)? {
        "DestinationRule" => Kind::DestinationRule,
        "VirtualService" => Kind::VirtualService,
        _ => return None,
    };
    let meta = v.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    Some(Rule {
        source,
        kind,
        name: field("name").unwrap_or_default().to_string(),
        namespace: field("namespace").unwrap_or("default").to_string(),
        spec: to_node(v.get("spec").unwrap_or(&Value::Null)),
    })
}

/// What merging found: what was carried over (notes) and what cannot be merged
/// (problems: nothing may be written).
#[derive(Debug, Default)]
pub struct Merged {
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

fn meta_name(rendered: &Node) -> (String, String) {
    let m = rendered.get("metadata");
    let f = |k| m.and_then(|m| str_at(m, k)).unwrap_or_default().to_string();
    (f("name"), f("namespace"))
}

fn items(n: Option<&Node>) -> Vec<Node> {
    match n {
        Some(Node::Seq(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn keys(n: &Node) -> String {
    match n {
        Node::Map(entries) => entries
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// Merges the existing DestinationRules for `host` into `rendered` (see the module docs).
pub fn merge_destination_rule(
    rendered: &mut Node,
    host: &str,
    existing: &[Rule],
    out: &mut Merged,
) {
    let (name, namespace) = meta_name(rendered);
    for e in existing
        .iter()
        .filter(|e| e.kind == Kind::DestinationRule && e.hosts().iter().any(|h| h == host))
    {
        if e.spec.get("workloadSelector").is_some() {
            out.notes.push(format!(
                "{} applies to the workloads its workloadSelector picks: Istio keeps it apart \
                 from the rendered rule (no change needed)",
                e.id()
            ));
            continue;
        }
        let Some(spec) = rendered.get_mut("spec") else {
            continue;
        };
        let ours = items(spec.get("subsets"));
        let mut added = Vec::new();
        for subset in items(e.spec.get("subsets")) {
            let sub = str_at(&subset, "name").unwrap_or_default().to_string();
            match ours
                .iter()
                .find(|o| str_at(o, "name") == Some(sub.as_str()))
            {
                Some(o) if *o == subset => {}
                Some(_) => out.problems.push(format!(
                    "{}: its subset {sub:?} differs from the one render writes for the filter's \
                     routes; rename it (and the routes that use it) or remove it there",
                    e.id()
                )),
                None => added.push((sub, subset)),
            }
        }
        if e.name != name || e.namespace != namespace {
            out.notes.push(format!(
                "{} also configures {host}: Istio merges the two (the newer rule's subsets are \
                 added to the older one's; the older one's trafficPolicy and exportTo stay), so \
                 it keeps working beside the rendered rule",
                e.id()
            ));
            continue;
        }
        // Same name: `kubectl apply` would replace it. Carry over what it has.
        let mut kept = Vec::new();
        for key in ["trafficPolicy", "exportTo"] {
            if let (Some(theirs), None) = (e.spec.get(key), spec.get(key)) {
                let what = match key {
                    "trafficPolicy" => format!("trafficPolicy ({})", keys(theirs)),
                    _ => key.to_string(),
                };
                spec.set(key, theirs.clone());
                kept.push(what);
            }
        }
        if !added.is_empty() {
            let mut all = ours.clone();
            let names: Vec<String> = added.iter().map(|(n, _)| n.clone()).collect();
            all.extend(added.into_iter().map(|(_, s)| s));
            spec.set("subsets", Node::Seq(all));
            kept.push(format!("subsets {}", names.join(", ")));
        }
        if !kept.is_empty() {
            out.notes.push(format!(
                "merged {}: `kubectl apply` replaces it, so the rendered rule keeps its {}",
                e.id(),
                kept.join(" and ")
            ));
        }
    }
}

/// Whether a VirtualService reaches sidecars: no `gateways`, or `mesh` among them.
fn binds_sidecars(spec: &Node) -> bool {
    match spec.get("gateways") {
        Some(Node::Seq(g)) => g.is_empty() || g.iter().any(|n| as_str(n) == Some("mesh")),
        _ => true,
    }
}

fn is_catch_all(route: &Node) -> bool {
    match route.get("match") {
        None => true,
        Some(Node::Seq(m)) => m.is_empty(),
        Some(_) => false,
    }
}

/// Merges the existing VirtualServices for `host` into `rendered` (see the module docs).
pub fn merge_virtual_service(rendered: &mut Node, host: &str, existing: &[Rule], out: &mut Merged) {
    let (name, namespace) = meta_name(rendered);
    let found: Vec<&Rule> = existing
        .iter()
        .filter(|e| e.kind == Kind::VirtualService && e.hosts().iter().any(|h| h == host))
        .collect();
    let mut merged_into: Option<&Rule> = None;
    for e in found {
        if !binds_sidecars(&e.spec) {
            out.notes.push(format!(
                "{} routes {host} on gateways only: sidecars do not use it (no change needed)",
                e.id()
            ));
            continue;
        }
        let others: Vec<String> = e.hosts().into_iter().filter(|h| h != host).collect();
        if !others.is_empty() {
            out.problems.push(format!(
                "{} routes {host} and also {}: Istio applies one VirtualService per host to \
                 sidecars, so the rendered one and it cannot both apply; move {host}'s routes \
                 into a VirtualService of its own, then render again",
                e.id(),
                others.join(", ")
            ));
            continue;
        }
        if let Some(first) = merged_into {
            out.problems.push(format!(
                "{} and {} both route {host} for sidecars: Istio uses only the older one \
                 (istioctl analyze: IST0109); keep one",
                first.id(),
                e.id()
            ));
            continue;
        }
        merged_into = Some(e);
        let Some(spec) = rendered.get_mut("spec") else {
            continue;
        };
        let ours = items(spec.get("http"));
        let theirs = items(e.spec.get("http"));
        let decisions: Vec<Node> = ours.iter().filter(|r| !is_catch_all(r)).cloned().collect();
        let mut http = decisions.clone();
        http.extend(theirs.iter().cloned());
        if !theirs.iter().any(is_catch_all) {
            http.extend(ours.iter().filter(|r| is_catch_all(r)).cloned());
        }
        spec.set("http", Node::Seq(http));
        if let Node::Map(entries) = &e.spec {
            for (k, v) in entries {
                if spec.get(k).is_none() {
                    spec.set(k, v.clone());
                }
            }
        }
        if let Some(meta) = rendered.get_mut("metadata") {
            meta.set("name", s(&e.name));
            meta.set("namespace", s(&e.namespace));
        }
        let renamed = if e.name != name || e.namespace != namespace {
            format!(
                "; the rendered VirtualService takes its name (was {namespace}/{name}) so that \
                 `kubectl apply` updates it in place: Istio applies one VirtualService per host \
                 to sidecars"
            )
        } else {
            String::new()
        };
        out.notes.push(format!(
            "merged {}: the filter's {} decision routes first, then its {} route(s){renamed}",
            e.id(),
            decisions.len(),
            theirs.len()
        ));
    }
}
