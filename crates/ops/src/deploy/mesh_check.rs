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

use super::locate::line_of;
use super::mesh::MeshDescription;
use super::yaml::Node;
use super::{checks, render, schema};

/// One problem in a mesh description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The description's field (`services[0].distribute[0].to`); empty for the whole file.
    pub path: String,
    pub message: String,
    /// The line of `path` (or of the nearest field that exists).
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(l) = self.line {
            write!(f, " (line {l})")?;
        }
        Ok(())
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
    let mut out: Vec<Problem> = Vec::new();
    let add = |out: &mut Vec<Problem>, path: String, message: String| {
        if !out.iter().any(|p| p.path == path && p.message == message) {
            let line = if path.is_empty() {
                None
            } else {
                line_of(text, &path)
            };
            out.push(Problem {
                path,
                message,
                line,
            });
        }
    };
    let rules = mesh.rule_problems();
    let rules_failed = !rules.is_empty();
    for (path, message) in rules {
        add(&mut out, path, message);
    }
    if rules_failed {
        // Rendering what breaks the rules would only repeat them.
        return out;
    }
    // 2. The filter's own parser, on what each sidecar will be given: each
    // distinct config once (most clusters are given the same one).
    let mut parsed = Parsed::default();
    for c in &mesh.clusters {
        for direction in ["outbound", "inbound"] {
            if let Err(errors) = parsed.parse(render::plugin_config(mesh, &c.name, direction)) {
                for e in &errors.0 {
                    let (path, message) = config_error(mesh, &c.name, e);
                    add(&mut out, path, message);
                }
            }
        }
    }
    // 3. Istio's schemas and CEL rules, and the cross-checks.
    // The DestinationRules and VirtualServices are the same in every cluster
    // (render::rules takes no cluster): rendered and checked once; the
    // plugins once per cluster.
    let (drs, vss, _) = render::rules(mesh, &[]);
    let nodes = drs.into_iter().chain(vss).chain(
        mesh.clusters
            .iter()
            .flat_map(|c| render::wasm_plugins(mesh, &c.name)),
    );
    let mut names: Vec<String> = Vec::new();
    let mut docs: Vec<checks::Doc> = Vec::new();
    for mut node in nodes {
        // The plugin config is parsed (and cached) apart: the schemas say only
        // that it is an object (x-kubernetes-preserve-unknown-fields), so the
        // document is checked with an empty one instead of a copy per cluster.
        let config = take_plugin_config(&mut node).map(|c| parsed.parse(c).ok());
        let value = node.to_json();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let name = format!(
            "{}/{}",
            value["metadata"]["namespace"].as_str().unwrap_or("default"),
            value["metadata"]["name"].as_str().unwrap_or_default()
        );
        if let Some(s) = schema::schema_for_version(&kind, mesh.istio_version()) {
            for p in schema::check(s, &value) {
                let (path, message) =
                    manifest_problem(mesh, &kind, &name, &value, &p.path, &p.message);
                add(&mut out, path, message);
            }
        }
        docs.push(checks::Doc {
            id: docs.len(),
            kind,
            value,
            config: config.flatten(),
        });
        names.push(name);
    }
    for p in checks::cross_check(&docs, None) {
        if p.note {
            continue;
        }
        let (Some(name), Some(d)) = (names.get(p.doc), docs.get(p.doc)) else {
            continue;
        };
        let (field, message) = match p.message.split_once(": ") {
            Some((f, m)) if f.starts_with("spec") || f.starts_with("metadata") => {
                (f.to_string(), m.to_string())
            }
            _ => (String::new(), p.message.clone()),
        };
        let (path, message) = manifest_problem(mesh, &d.kind, name, &d.value, &field, &message);
        add(&mut out, path, message);
    }
    out
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
                "services[0].outlierDetection.baseEjectionTime: \"60\" is not a duration"
            ) && m.ends_with(&format!("(line {line})"))),
            "{p:#?}"
        );
        let bad = GOOD.replace(
            "{from: tokyo-onprem, to: asia-northeast1}",
            "{from: tokyo-onprem, to: europe-west1}",
        );
        let p = problems(&bad);
        assert!(
            p.iter().any(|m| m.starts_with("services[0].failover[0].to: no cluster of this route is in region \"europe-west1\"")),
            "{p:#?}"
        );
        let bad = GOOD.replace("url: oci://", "url: s3://");
        let url_line = bad.lines().position(|l| l.contains("url: s3://")).unwrap() + 1;
        let p = problems(&bad);
        assert!(
            p.iter()
                .any(|m| m.starts_with("image.url: url must have schema one of")
                    && m.contains(
                        "rendered into WasmPlugin istio-system/hybridmesh-client spec.url"
                    )
                    && m.ends_with(&format!("(line {url_line})"))),
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
            vec!["clusters: 65 clusters, at most 64 are supported (line 4)".to_string()]
        );
        assert_eq!(problems(&mesh(64, 2)), Vec::<String>::new());
    }

    #[test]
    fn a_large_mesh_with_duplicates_names_each_duplicate() {
        let text = mesh(3, 4)
            .replace("svc3.ns3", "svc1.ns1")
            .replace("name: c2", "name: c0");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.starts_with("clusters[2].name: duplicate cluster \"c0\"")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("clusters[0].name: duplicate cluster \"c0\"")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m
                .starts_with("services[3].host: \"svc1.ns1.svc.cluster.local\" is listed twice")),
            "{p:#?}"
        );
        assert!(
            !p.iter().any(|m| m.starts_with("services[1].host")),
            "{p:#?}"
        );
    }
}
