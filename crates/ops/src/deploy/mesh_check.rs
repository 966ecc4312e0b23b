//! The mesh description goes through everything `validate` runs on what
//! `render` makes from it, and each problem is told at the description's own
//! field and line:
//!
//! 1. the description's own rules (names that must exist, values Istio accepts);
//! 2. every cluster's plugin config, both sides, through the filter's own
//!    parser (`hybridmesh_filter_core::parse_json`, the code the `.wasm` runs
//!    on what Istio delivers): one config format, defined once;
//! 3. every rendered WasmPlugin, DestinationRule and VirtualService against
//!    Istio's schemas and CEL rules, then the cross-checks between them.
//!
//! A problem in a rendered document is mapped back to the description field
//! it was rendered from (`spec.url` -> `image.url`, `routes[0]` ->
//! `services[0]`); one that maps nowhere names the rendered document.

use std::fmt;
use std::sync::Arc;

use hybridmesh_filter_core::config::{Config, ConfigError, ConfigErrors};

use super::codes::Code;
use super::locate::line_of;
use super::mesh::MeshDescription;
use super::yaml::{self, Node};
use super::{checks, render, schema};

/// One problem in a mesh description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: Code,
    /// The description's field (`services[0].distribute[0].to`); empty for the whole file.
    pub path: String,
    pub message: String,
    /// The line of `path` (or of the nearest field that exists).
    pub line: Option<usize>,
}

impl Problem {
    /// `path: message (line N)`, without the code.
    pub fn text(&self) -> String {
        let mut out = if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        };
        if let Some(l) = self.line {
            out.push_str(&format!(" (line {l})"));
        }
        out
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.text())
    }
}

/// Problems as one text, one per line (for an error chain).
pub fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a YAML document without `kind` is a mesh description rather than
/// a plugin config: it has the description's `image` (a plugin config never does).
pub fn looks_like_description(value: &serde_yaml_ng::Value) -> bool {
    value.get("image").is_some() && value.get("kind").is_none()
}

/// Everything wrong with `mesh`, read from `text` (for the lines).
pub fn check(mesh: &MeshDescription, text: &str) -> Vec<Problem> {
    check_emitting(mesh, text, false).0
}

/// [`check`], and the DestinationRules and VirtualServices it checked, as
/// the text `render` writes of them ([`render::RulesText::render`] with no
/// existing rules): `render` renders them once. `None` when the
/// description's own rules fail (nothing is rendered).
pub fn check_and_render(
    mesh: &MeshDescription,
    text: &str,
) -> (Vec<Problem>, Option<render::RulesText>) {
    check_emitting(mesh, text, true)
}

fn check_emitting(
    mesh: &MeshDescription,
    text: &str,
    emit: bool,
) -> (Vec<Problem>, Option<render::RulesText>) {
    let mut out: Vec<Problem> = Vec::new();
    // Each problem once (a plugin's is found again by every batch), found in
    // a set: a mesh with a problem in each of its 2,000 services is not
    // compared pair by pair.
    let mut seen = std::collections::HashSet::new();
    let mut add = |out: &mut Vec<Problem>, code: Code, path: String, message: String| {
        if seen.insert((path.clone(), message.clone())) {
            let line = if path.is_empty() {
                None
            } else {
                line_of(text, &path)
            };
            out.push(Problem {
                code,
                path,
                message,
                line,
            });
        }
    };
    let rules = mesh.rule_problems();
    let rules_failed = !rules.is_empty();
    for (path, message) in rules {
        add(&mut out, Code::Description, path, message);
    }
    if rules_failed {
        // Rendering what breaks the rules would only repeat them.
        return (out, None);
    }
    // 2. The filter's own parser, on what each sidecar will be given: each
    // distinct config once (most clusters are given the same one).
    let mut parsed = Parsed::default();
    // What each (cluster, direction) parsed to, for the plugins below.
    let mut given: Vec<[Option<Arc<Config>>; 2]> = Vec::new();
    const DIRECTIONS: [&str; 2] = ["outbound", "inbound"];
    for c in &mesh.clusters {
        let results = DIRECTIONS.map(|direction| {
            match parsed.parse(render::plugin_config(mesh, &c.name, direction)) {
                Ok(config) => Some(config),
                Err(errors) => {
                    for e in &errors.0 {
                        let (path, message) = config_error(mesh, &c.name, e);
                        add(&mut out, Code::PluginConfig, path, message);
                    }
                    None
                }
            }
        });
        given.push(results);
    }
    // 3. Istio's schemas and CEL rules, and the cross-checks. The plugins
    // are rendered once per cluster and kept; the DestinationRules and
    // VirtualServices (the same in every cluster: render::rules takes no
    // cluster) are rendered, checked against the plugins and dropped a batch
    // of services at a time, the batches spread over the cores: a mesh's
    // rules are never all held at once (64 clusters x 2,000 services render
    // 113 MB of them).
    let mut plugins: Vec<checks::Doc> = Vec::new();
    for (c, given) in mesh.clusters.iter().zip(&given) {
        // The plugin config is parsed apart: the schemas say only that it is
        // an object (x-kubernetes-preserve-unknown-fields), so the document
        // is checked with its direction there instead of a copy of the
        // config, and given the config parsed above (rendered again only
        // for a direction not parsed there).
        let nodes = render::wasm_plugins_with(mesh, &c.name, |d| Node::Str(d.to_string()));
        for mut node in nodes {
            let config = match take_plugin_config(&mut node) {
                Some(Node::Str(d)) => match DIRECTIONS.iter().position(|x| *x == d) {
                    Some(k) => given[k].clone(),
                    None => parsed.parse(render::plugin_config(mesh, &c.name, &d)).ok(),
                },
                _ => None,
            };
            let doc = document(node, plugins.len(), config);
            for (code, path, message) in schema_problems(mesh, &doc) {
                add(&mut out, code, path, message);
            }
            plugins.push(doc);
        }
    }
    let batches = check_services(mesh, &plugins, emit);
    let mut rules = render::RulesText::default();
    for batch in batches {
        for (code, path, message) in batch.problems {
            add(&mut out, code, path, message);
        }
        // Kept in the batches' parts: render writes them one after another.
        rules.destination_rules.push(batch.destination_rules);
        rules.virtual_services.push(batch.virtual_services);
    }
    (out, emit.then_some(rules))
}

/// What a batch of services found, and (when asked) their rules' text.
struct Batch {
    /// (code, the description's field, message)
    problems: Vec<(Code, String, String)>,
    destination_rules: String,
    virtual_services: String,
}

/// Services whose DestinationRules and VirtualServices are checked together.
const BATCH: usize = 16;

/// Every service's DestinationRule and VirtualService: each against Istio's
/// schemas, and all with the plugins through the cross-checks (each batch
/// with the client-side routes of its own services; the last also with those
/// past them, `otherHosts`). The batches in the services' order.
fn check_services(mesh: &MeshDescription, plugins: &[checks::Doc], emit: bool) -> Vec<Batch> {
    let n = mesh.services.len();
    let batches: Vec<std::ops::Range<usize>> = if n == 0 {
        // No service: one empty batch, for the plugins' other routes.
        std::iter::once(0..0).collect()
    } else {
        (0..n)
            .step_by(BATCH)
            .map(|a| a..(a + BATCH).min(n))
            .collect()
    };
    crate::par::map(&batches, |range| {
        check_batch(mesh, plugins, range.clone(), emit)
    })
}

/// The services in `range`: see [`check_services`].
fn check_batch(
    mesh: &MeshDescription,
    plugins: &[checks::Doc],
    range: std::ops::Range<usize>,
    emit: bool,
) -> Batch {
    let mut out = Vec::new();
    let (mut drs, mut vss) = (String::new(), String::new());
    let mut docs: Vec<checks::Doc> = Vec::new();
    for svc in &mesh.services[range.clone()] {
        let nodes = [
            (render::destination_rule(mesh, svc), &mut drs),
            (render::virtual_service(mesh, svc), &mut vss),
        ];
        for (node, into) in nodes {
            let Some(node) = node else { continue };
            if emit {
                into.push_str("---\n");
                yaml::write_document(into, &node);
            }
            let doc = document(node, plugins.len() + docs.len(), None);
            out.extend(schema_problems(mesh, &doc));
            docs.push(doc);
        }
    }
    let all: Vec<&checks::Doc> = plugins.iter().chain(&docs).collect();
    let routes = if range.end == mesh.services.len() {
        range.start..usize::MAX
    } else {
        range
    };
    for p in checks::cross_check_routes(&all, None, routes) {
        if p.note {
            continue;
        }
        let Some(d) = all.get(p.doc) else {
            continue;
        };
        let (field, message) = match p.message.split_once(": ") {
            Some((f, m)) if f.starts_with("spec") || f.starts_with("metadata") => {
                (f.to_string(), m.to_string())
            }
            _ => (String::new(), p.message.clone()),
        };
        let (path, message) = manifest_problem(
            mesh,
            &d.kind,
            &doc_name(&d.value),
            &d.value,
            &field,
            &message,
        );
        out.push((p.code, path, message));
    }
    Batch {
        problems: out,
        destination_rules: drs,
        virtual_services: vss,
    }
}

/// A rendered document as the checks read it.
fn document(node: Node, id: usize, config: Option<Arc<Config>>) -> checks::Doc {
    let value = node.into_json();
    checks::Doc {
        id,
        kind: value["kind"].as_str().unwrap_or_default().to_string(),
        value,
        config,
    }
}

/// `namespace/name`.
fn doc_name(value: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        value["metadata"]["namespace"].as_str().unwrap_or("default"),
        value["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// A rendered document's problems against the schema of its kind.
fn schema_problems(mesh: &MeshDescription, doc: &checks::Doc) -> Vec<(Code, String, String)> {
    let Some(s) = schema::schema_for_version(&doc.kind, mesh.istio_version()) else {
        return Vec::new();
    };
    let name = doc_name(&doc.value);
    schema::check(s, &doc.value)
        .into_iter()
        .map(|p| {
            let (path, message) =
                manifest_problem(mesh, &doc.kind, &name, &doc.value, &p.path, &p.message);
            (p.code, path, message)
        })
        .collect()
}

/// Plugin configs parsed by the filter's parser, each distinct one once.
#[derive(Default)]
struct Parsed {
    seen: Vec<(Node, Result<Arc<Config>, ConfigErrors>)>,
}

impl Parsed {
    fn parse(&mut self, config: Node) -> Result<Arc<Config>, ConfigErrors> {
        if let Some((_, r)) = self.seen.iter().find(|(n, _)| *n == config) {
            return r.clone();
        }
        let bytes = serde_json::to_vec(&config.to_json()).unwrap_or_default();
        let r = hybridmesh_filter_core::parse_json(&bytes).map(Arc::new);
        self.seen.push((config, r.clone()));
        r
    }
}

/// A rendered WasmPlugin's `spec.pluginConfig` (a TrafficExtension's
/// `spec.wasm.pluginConfig`), taken out and left as an empty object.
fn take_plugin_config(node: &mut Node) -> Option<Node> {
    let kind = match node.get("kind") {
        Some(Node::Str(k)) => k.clone(),
        _ => return None,
    };
    let spec = node.get_mut("spec")?;
    let holder = match kind.as_str() {
        "WasmPlugin" => spec,
        "TrafficExtension" => spec.get_mut("wasm")?,
        _ => return None,
    };
    let config = holder.get_mut("pluginConfig")?;
    Some(std::mem::replace(config, Node::Map(Vec::new())))
}

/// A filter parser error on a rendered plugin config -> the description's field.
fn config_error(mesh: &MeshDescription, cluster: &str, e: &ConfigError) -> (String, String) {
    (config_path(mesh, cluster, &e.path), e.message.clone())
}

/// `routes[i]...` -> `services[i]...` (or `otherHosts`), `clusters[i].locality`
/// -> `clusters[i].region`, `identity.locality` -> this cluster's region, any
/// other key -> `plugin.config.<key>`.
fn config_path(mesh: &MeshDescription, cluster: &str, path: &str) -> String {
    let (head, rest) = split_head(path);
    match head {
        "" => "plugin.config".to_string(),
        "routes" => {
            let (index, rest) = split_index(rest);
            match index {
                Some(i) if i < mesh.services.len() => {
                    let rest = if rest.starts_with(".hosts") {
                        ".host".to_string()
                    } else {
                        rest.to_string()
                    };
                    format!("services[{i}]{rest}")
                }
                Some(_) => "otherHosts".to_string(),
                None => "services".to_string(),
            }
        }
        "clusters" => {
            let rest = rest.replace(".locality", ".region");
            format!("clusters{rest}")
        }
        "identity" => match mesh.clusters.iter().position(|c| c.name == cluster) {
            Some(i) => format!("clusters[{i}].region"),
            None => "clusters".to_string(),
        },
        "direction" => String::new(),
        other => format!("plugin.config.{other}{rest}"),
    }
}

/// `a.b[1]` -> (`a`, `.b[1]`); `a[1].b` -> (`a`, `[1].b`).
fn split_head(path: &str) -> (&str, &str) {
    match path.find(['.', '[']) {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    }
}

/// `[3].x` -> (Some(3), `.x`).
fn split_index(rest: &str) -> (Option<usize>, &str) {
    let Some(inner) = rest.strip_prefix('[') else {
        return (None, rest);
    };
    match inner.split_once(']') {
        Some((n, after)) => (n.parse().ok(), after),
        None => (None, rest),
    }
}

/// A problem in a rendered manifest -> (the description's field, the message
/// naming the rendered field too).
fn manifest_problem(
    mesh: &MeshDescription,
    kind: &str,
    name: &str,
    value: &serde_json::Value,
    field: &str,
    message: &str,
) -> (String, String) {
    let rendered = if field.is_empty() {
        format!("rendered into {kind} {name}")
    } else {
        format!("rendered into {kind} {name} {field}")
    };
    let with = |path: String| (path, format!("{message} ({rendered})"));
    if kind == "WasmPlugin" || kind == "TrafficExtension" {
        // A TrafficExtension has the module's fields under spec.wasm: read
        // them as a WasmPlugin's.
        let flat = field.replacen("spec.wasm.", "spec.", 1);
        let field = flat.as_str();
        let side = if value["spec"]["match"][0]["mode"] == "SERVER" {
            "server"
        } else {
            "client"
        };
        let cluster = value["metadata"]["labels"]["topology.istio.io/cluster"]
            .as_str()
            .unwrap_or_default();
        let path = match field {
            f if f.starts_with("spec.pluginConfig") => {
                let inner = f
                    .trim_start_matches("spec.pluginConfig")
                    .trim_start_matches('.');
                config_path(mesh, cluster, inner)
            }
            "spec.url" => "image.url".into(),
            "spec.sha256" => "image.sha256".into(),
            "spec.imagePullPolicy" => "image.pullPolicy".into(),
            "spec.imagePullSecret" => "image.pullSecret".into(),
            "spec.pluginName" | "metadata.name" => "plugin.name".into(),
            "metadata.namespace" => "plugin.namespace".into(),
            f if f.starts_with("spec.selector") => "plugin.selector".into(),
            f @ ("spec.phase" | "spec.priority" | "spec.failStrategy") => {
                format!("plugin.{side}.{}", f.trim_start_matches("spec."))
            }
            _ => "plugin".into(),
        };
        return with(path);
    }
    // DestinationRules and VirtualServices: one per service, found by host.
    let host = value["spec"]["host"]
        .as_str()
        .or_else(|| value["spec"]["hosts"][0].as_str())
        .unwrap_or_default();
    let Some(i) = mesh.services.iter().position(|s| s.host == host) else {
        return with("services".into());
    };
    let path = if let Some(rest) = field.strip_prefix("spec.trafficPolicy.outlierDetection") {
        format!("services[{i}].outlierDetection{rest}")
    } else if field.starts_with("spec.host") || field.starts_with("metadata") {
        format!("services[{i}].host")
    } else if field.starts_with("spec.subsets") || field.starts_with("spec.http") {
        if mesh.services[i].clusters.is_some() {
            format!("services[{i}].clusters")
        } else {
            format!("services[{i}]")
        }
    } else {
        format!("services[{i}]")
    };
    with(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const GOOD: &str = include_str!("../../../../examples/deploy.yaml");

    fn problems(text: &str) -> Vec<String> {
        match MeshDescription::from_yaml(text) {
            Ok(mesh) => check(&mesh, text).iter().map(Problem::to_string).collect(),
            Err(p) => p.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn the_seed_description_is_clean() {
        assert_eq!(problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_problem_names_the_description_field_and_line() {
        let bad = GOOD.replace("baseEjectionTime: 1m", "baseEjectionTime: 60");
        let p = problems(&bad);
        let line = bad
            .lines()
            .position(|l| l.contains("baseEjectionTime: 60"))
            .unwrap()
            + 1;
        assert!(
            p.iter().any(|m| m.starts_with(
                "[HM0101] services[0].outlierDetection.baseEjectionTime: \"60\" is not a duration"
            ) && m.ends_with(&format!("(line {line})"))),
            "{p:#?}"
        );
        let bad = GOOD.replace(
            "{from: tokyo-onprem, to: asia-northeast1}",
            "{from: tokyo-onprem, to: europe-west1}",
        );
        let p = problems(&bad);
        assert!(
            p.iter().any(|m| m.starts_with("[HM0101] services[0].failover[0].to: no cluster of this route is in region \"europe-west1\"")),
            "{p:#?}"
        );
        let bad = GOOD.replace("url: oci://", "url: s3://");
        let url_line = bad.lines().position(|l| l.contains("url: s3://")).unwrap() + 1;
        let p = problems(&bad);
        assert!(
            p.iter().any(
                |m| m.starts_with("[HM0202] image.url: url must have schema one of")
                    && m.contains(
                        "rendered into WasmPlugin istio-system/hybridmesh-client spec.url"
                    )
                    && m.ends_with(&format!("(line {url_line})"))
            ),
            "{p:#?}"
        );
    }

    fn mesh(clusters: usize, services: usize) -> String {
        crate::deploy::mesh::synthetic_description(clusters, services)
    }

    #[test]
    fn a_mesh_over_the_filters_cluster_limit_is_refused_by_the_description_rules_alone() {
        // One problem, the limit (the filter's own message), at the line of
        // `clusters:`; nothing rendered for each cluster repeats it.
        assert_eq!(
            problems(&mesh(65, 2)),
            vec!["[HM0601] clusters: 65 clusters, at most 64 are supported (line 4)".to_string()]
        );
        assert_eq!(problems(&mesh(64, 2)), Vec::<String>::new());
    }

    #[test]
    fn a_routing_problem_in_a_later_batch_is_told_at_its_service() {
        // 40 services are checked in three batches; the subsets of the 38th
        // eject at most half the hosts. Each cluster's subset says so, at
        // the service (was: a plugin given the same config as the first was
        // told the DestinationRule's problems as its own).
        let text = mesh(3, 40).replace(
            "svc37.ns2.svc.cluster.local, policy: failover}",
            "svc37.ns2.svc.cluster.local, policy: failover, outlierDetection: {maxEjectionPercent: 50}}",
        );
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:#?}");
        for (k, c) in ["c0", "c1", "c2"].iter().enumerate() {
            assert!(
                p[k].starts_with(
                    "[HM0303] services[37]: outlierDetection.maxEjectionPercent is 50, expected 100"
                ) && p[k].contains(&format!("x-hybridmesh-target-cluster: {c} routes to"))
                    && p[k].contains("rendered into DestinationRule ns2/svc37"),
                "{p:#?}"
            );
        }
    }

    #[test]
    fn a_large_mesh_with_duplicates_names_each_duplicate() {
        let text = mesh(3, 4)
            .replace("svc3.ns3", "svc1.ns1")
            .replace("name: c2", "name: c0");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.starts_with("[HM0601] clusters[2].name: duplicate cluster \"c0\"")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("[HM0601] clusters[0].name: duplicate cluster \"c0\"")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with(
                "[HM0601] services[3].host: \"svc1.ns1.svc.cluster.local\" is listed twice"
            )),
            "{p:#?}"
        );
        assert!(
            !p.iter().any(|m| m.contains("] services[1].host")),
            "{p:#?}"
        );
    }
}
