//! `validate`: plugin configs, mesh descriptions and Kubernetes manifests,
//! file by file. Plugin configs (and WasmPlugins' `pluginConfig`) go through
//! the filter's own parser; a mesh description through
//! [`super::mesh_check`]; WasmPlugins, DestinationRules and VirtualServices
//! through Istio's schemas and CEL rules ([`super::schema`]), then the
//! cross-checks ([`super::checks`]). A kustomization brings in its resources
//! (a cycle is an error, as in kustomize; a remote resource is named, not
//! fetched).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hybridmesh_filter_core::config::ConfigError;

use super::codes::{Code, Issue};
use super::istio::IstioVersion;
use super::mesh::MeshDescription;
use super::{checks, mesh_check, plugin_config, schema};

/// One problem or note about one document.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub file: String,
    /// 1-based document number in a multi-document YAML file.
    pub document: usize,
    /// What the document is (`plugin config`, `WasmPlugin echo/hybridmesh`, ...).
    pub what: String,
    pub ok: bool,
    /// What fails, each with its code.
    pub errors: Vec<Issue>,
    /// What would fail but was allowed by its code ([`allow`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Issue>,
    /// Worth reading, not failures (e.g. what the cross-checks could not check).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Deserialize)]
struct Meta {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    metadata: Option<Name>,
}

#[derive(Deserialize)]
struct Name {
    name: Option<String>,
    namespace: Option<String>,
}

/// The filter parser's errors as findings (HM0101): `prefix.path: message (line N)`.
pub fn config_issues(prefix: &str, errors: &[ConfigError]) -> Vec<Issue> {
    errors
        .iter()
        .map(|e| {
            let path = match (prefix.is_empty(), e.path.is_empty()) {
                (true, _) => e.path.clone(),
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}.{}", e.path),
            };
            let line = e
                .position
                .map(|(l, _)| format!(" (line {l})"))
                .unwrap_or_default();
            let message = if path.is_empty() {
                format!("{}{line}", e.message)
            } else {
                format!("{path}: {}{line}", e.message)
            };
            Issue::new(Code::PluginConfig, message)
        })
        .collect()
}

/// Checks one file; every document in it gives one finding. Kubernetes
/// documents are cross-checked with the others in the same file.
pub fn validate_file(path: &Path) -> anyhow::Result<Vec<Finding>> {
    let checked = check_file(path)?;
    let mut findings = checked.findings;
    apply_cross_checks(&mut findings, &checked.docs, None);
    Ok(findings)
}

/// What one file gave: findings, the Kubernetes documents for the
/// cross-checks (their `id` indexes `findings`), and what a kustomization
/// brings in.
pub struct Checked {
    pub findings: Vec<Finding>,
    pub docs: Vec<checks::Doc>,
    pub includes: Vec<Include>,
}

/// A file a kustomization's `resources` brings in.
pub struct Include {
    pub path: PathBuf,
    /// As written in `resources`.
    pub resource: String,
    /// The kustomization's finding (index into [`Checked::findings`]).
    pub finding: usize,
}

/// Reads `path` (`-`: standard input) through the one bounded reader
/// ([`hybridmesh_input::TEXT`]): a regular file, at most 64 MiB.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(hybridmesh_input::read(path, hybridmesh_input::TEXT)?)
}

fn display(path: &Path) -> String {
    hybridmesh_input::display(path)
}

/// Whether `path` is a kustomization by its name (kustomize's three names).
fn is_kustomization_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| {
        n == "kustomization.yaml" || n == "kustomization.yml" || n == "Kustomization"
    })
}

/// A resource kustomize fetches (a git repository or a url), not a local path.
fn is_remote(resource: &str) -> bool {
    resource.contains("://")
        || resource.starts_with("git@")
        || resource.starts_with("github.com/")
        || resource.starts_with("gitlab.com/")
        || resource.starts_with("bitbucket.org/")
        || resource.contains("?ref=")
}

fn one(file: String, what: &str, errors: Vec<Issue>) -> Checked {
    Checked {
        findings: vec![Finding {
            file,
            document: 1,
            what: what.into(),
            ok: errors.is_empty(),
            errors,
            notes: Vec::new(),
            allowed: Vec::new(),
        }],
        docs: Vec::new(),
        includes: Vec::new(),
    }
}

/// Checks one file (`-`: standard input). Err only for I/O.
pub fn check_file(path: &Path) -> anyhow::Result<Checked> {
    check_file_for(path, IstioVersion::CURRENT)
}

/// [`check_file`] against the schemas of `istio` (a mesh description's own
/// `istio` wins for that description).
pub fn check_file_for(path: &Path, istio: IstioVersion) -> anyhow::Result<Checked> {
    let bytes = read_input(path)?;
    let file = display(path);
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return Ok(one(
                file,
                "text",
                vec![Issue::new(
                    Code::Syntax,
                    format!(
                        "not UTF-8 text: byte 0x{:02x} at line {line} (offset {at})",
                        bytes.get(at).copied().unwrap_or(0)
                    ),
                )],
            ));
        }
    };
    if let Err(e) = hybridmesh_scenario::guard::yaml(&text) {
        return Ok(one(
            file,
            "YAML",
            vec![Issue::new(Code::Syntax, e.to_string())],
        ));
    }
    let mut out = Vec::new();
    let mut docs = Vec::new();
    let mut includes = Vec::new();
    let documents = documents(&text);
    if path.extension().is_some_and(|e| e == "json") {
        let errors = match hybridmesh_filter_core::parse_json(text.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => {
                let mut more = Vec::new();
                if let (Ok(value), Some(first)) = (
                    serde_json::from_str::<serde_json::Value>(&text),
                    e.0.first(),
                ) {
                    more = plugin_config::more_unknown(&value, "", &text, 0, first);
                }
                config_issues("", &[e.0, more].concat())
            }
        };
        out.push(Finding {
            file,
            document: 1,
            what: "plugin config".into(),
            ok: errors.is_empty(),
            errors,
            notes: Vec::new(),
            allowed: Vec::new(),
        });
        return Ok(Checked {
            findings: out,
            docs,
            includes,
        });
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value: serde_yaml_ng::Value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e
                    .location()
                    .map(|l| format!(" (line {})", l.line()))
                    .unwrap_or_default();
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                out.push(Finding {
                    file: file.clone(),
                    document: i + 1,
                    what: "YAML".into(),
                    ok: false,
                    errors: vec![Issue::new(
                        Code::Syntax,
                        format!("not valid YAML: {msg}{line}"),
                    )],
                    notes: Vec::new(),
                    allowed: Vec::new(),
                });
                // A broken document ends the stream.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let meta: Meta = serde_yaml_ng::from_value(value.clone()).unwrap_or(Meta {
            kind: None,
            api_version: None,
            metadata: None,
        });
        let (offset, doc_text) = documents.get(i).cloned().unwrap_or_default();
        let name = meta
            .metadata
            .as_ref()
            .map(|m| {
                format!(
                    "{}/{}",
                    m.namespace.clone().unwrap_or_else(|| "default".into()),
                    m.name.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let mut notes = Vec::new();
        // kustomize reads a kustomization without apiVersion and kind.
        let kind = match meta.kind.as_deref() {
            None if is_kustomization_file(path) => Some("Kustomization"),
            k => k,
        };
        let (what, errors) = match (kind, meta.api_version.is_some()) {
            (None, false) if mesh_check::looks_like_description(&value) => {
                let mut errors = match MeshDescription::from_yaml(&doc_text) {
                    Ok(mut mesh) => {
                        if let (None, Some(m)) = (&mesh.istio, istio.minor) {
                            mesh.istio = Some(format!("1.{m}"));
                        }
                        mesh_check::check(&mesh, &doc_text)
                    }
                    Err(problems) => problems,
                };
                for e in &mut errors {
                    e.line = e.line.map(|l| l + offset);
                }
                if errors.is_empty() {
                    notes.push(format!(
                        "render it: hybridmesh render {file} --out wasmplugin"
                    ));
                }
                (
                    "mesh description".to_string(),
                    errors
                        .iter()
                        .map(|e| Issue::new(e.code, e.text()))
                        .collect(),
                )
            }
            (None, false) => {
                let json = serde_json::to_value(&value).unwrap_or_default();
                let errors = match plugin_config::read(&json, "", &doc_text, offset) {
                    Ok(raw) => match raw.validate() {
                        Ok(_) => Vec::new(),
                        Err(e) => config_issues("", &e.0),
                    },
                    Err(e) => config_issues("", &e),
                };
                ("plugin config".to_string(), errors)
            }
            (
                Some(
                    kind @ ("WasmPlugin" | "DestinationRule" | "VirtualService"
                    | "TrafficExtension"),
                ),
                _,
            ) => {
                let json = serde_json::to_value(&value).unwrap_or_default();
                let mut errors: Vec<Issue> = match schema::schema_for_version(kind, istio) {
                    Some(s) => schema::check(s, &json)
                        .into_iter()
                        .map(|p| {
                            let text = with_line(&p.to_string(), &p.at, &doc_text, offset);
                            Issue::new(p.code, text)
                        })
                        .collect(),
                    None => Vec::new(),
                };
                if kind == "TrafficExtension" && istio.minor.is_some_and(|m| m < 30) {
                    errors.insert(
                        0,
                        Issue::new(Code::NotServed, format!("kind: TrafficExtension is served from Istio 1.30; {istio} has no such resource (render for it writes WasmPlugins)")),
                    );
                }
                let mut config = None;
                // The filter's config: a WasmPlugin's spec.pluginConfig, a
                // TrafficExtension's spec.wasm.pluginConfig (a Lua one is not ours).
                let plugin = match kind {
                    "WasmPlugin" => Some((&json["spec"]["pluginConfig"], "spec.pluginConfig")),
                    "TrafficExtension" if json["spec"].get("lua").is_none() => Some((
                        &json["spec"]["wasm"]["pluginConfig"],
                        "spec.wasm.pluginConfig",
                    )),
                    _ => None,
                };
                if let Some((plugin, at)) = plugin {
                    if plugin.is_null() {
                        notes.push(format!("no {at}: the filter needs at least its routes"));
                    } else {
                        match plugin_config::read(plugin, at, &doc_text, offset) {
                            Ok(raw) => match raw.validate() {
                                Ok(c) => config = Some(std::sync::Arc::new(c)),
                                Err(e) => errors.extend(config_issues(at, &e.0)),
                            },
                            Err(e) => errors.extend(config_issues(at, &e)),
                        }
                    }
                }
                docs.push(checks::Doc {
                    id: out.len(),
                    kind: kind.to_string(),
                    value: json,
                    config,
                });
                (format!("{kind} {name}"), errors)
            }
            (Some("Kustomization"), _) => {
                let json = serde_json::to_value(&value).unwrap_or_default();
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut errors: Vec<Issue> = Vec::new();
                let kustomize = |message: String| Issue::new(Code::Kustomization, message);
                let finding = out.len();
                let mut include = |p: PathBuf, r: &str| {
                    includes.push(Include {
                        path: p,
                        resource: r.to_string(),
                        finding,
                    })
                };
                // kustomize's own rules: `resources` is a list; each entry once;
                // a file in or below the kustomization's folder (its default
                // load restrictor, docs/FAQ.md "security: file 'foo' is not in
                // or below 'bar'"); a folder anywhere.
                match &json["resources"] {
                    serde_json::Value::Null | serde_json::Value::Array(_) => {}
                    other => errors.push(kustomize(format!(
                        "resources: {}: expected a list of paths (kustomize cannot read anything else)",
                        match other {
                            serde_json::Value::Object(_) => "a map",
                            serde_json::Value::String(_) => "a string",
                            _ => "a scalar",
                        }
                    ))),
                }
                let root = std::fs::canonicalize(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })
                .ok();
                let mut listed = BTreeSet::new();
                for r in json["resources"].as_array().into_iter().flatten() {
                    let Some(r) = r.as_str() else {
                        errors.push(kustomize(format!("resources: {r}: expected a path")));
                        continue;
                    };
                    if !listed.insert(r.to_owned()) {
                        errors.push(kustomize(format!(
                            "resources: {r}: listed twice: kustomize refuses it (may not add resource with an already registered id)"
                        )));
                        continue;
                    }
                    if is_remote(r) {
                        notes.push(format!(
                            "resources: {r}: remote, not fetched here (not checked): run `kubectl kustomize DIR | hybridmesh validate -` to check what kustomize builds"
                        ));
                        continue;
                    }
                    let p = normalize(&dir.join(r));
                    if p.is_dir() {
                        match ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                            .iter()
                            .map(|k| p.join(k))
                            .find(|k| k.exists())
                        {
                            Some(k) => include(k, r),
                            None => errors.push(kustomize(format!(
                                "resources: {r}: a folder without a kustomization.yaml"
                            ))),
                        }
                    } else if p.exists() {
                        let inside = match (&root, std::fs::canonicalize(&p)) {
                            (Some(root), Ok(file)) => file.starts_with(root),
                            _ => true,
                        };
                        if inside {
                            include(p, r);
                        } else {
                            errors.push(kustomize(format!(
                                "resources: {r}: a file outside the kustomization's folder: kustomize refuses it (security: file is not in or below the kustomization's root); list a folder with its own kustomization.yaml instead"
                            )));
                        }
                    } else {
                        errors.push(kustomize(format!("resources: {r}: no such file or folder")));
                    }
                }
                let transforms: Vec<&str> = json
                    .as_object()
                    .map(|o| {
                        o.keys()
                            .map(String::as_str)
                            .filter(|k| {
                                !["apiVersion", "kind", "metadata", "resources"].contains(k)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !transforms.is_empty() {
                    notes.push(format!(
                        "{} not applied here: to check what kustomize builds, run `kubectl kustomize DIR | hybridmesh validate -`",
                        transforms.join(", ")
                    ));
                }
                (
                    "Kustomization (its resources are checked)".to_string(),
                    errors,
                )
            }
            (Some(kind), _) => {
                // Other Kubernetes resources: not a plugin config; named so nothing is silently skipped.
                out.push(Finding {
                    file: file.clone(),
                    document: i + 1,
                    what: format!("{kind} (not a plugin config: not checked)"),
                    ok: true,
                    errors: Vec::new(),
                    notes: Vec::new(),
                    allowed: Vec::new(),
                });
                continue;
            }
            (None, true) => (
                "document".to_string(),
                vec![Issue::new(Code::Schema, "has apiVersion but no kind")],
            ),
        };
        out.push(Finding {
            file: file.clone(),
            document: i + 1,
            what,
            ok: errors.is_empty(),
            errors,
            notes,
            allowed: Vec::new(),
        });
    }
    if out.is_empty() {
        out.push(Finding {
            file,
            document: 1,
            what: "empty file".into(),
            ok: false,
            errors: vec![Issue::new(Code::Syntax, "no document to check")],
            notes: Vec::new(),
            allowed: Vec::new(),
        });
    }
    Ok(Checked {
        findings: out,
        docs,
        includes,
    })
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Moves the errors whose code is in `codes` to [`Finding::allowed`]: a
/// finding left without errors passes (`validate --allow`).
pub fn allow(findings: &mut [Finding], codes: &[Code]) {
    if codes.is_empty() {
        return;
    }
    for f in findings {
        let (allowed, errors) = std::mem::take(&mut f.errors)
            .into_iter()
            .partition(|e| codes.contains(&e.code));
        f.errors = errors;
        f.allowed = allowed;
        f.ok = f.errors.is_empty();
    }
}

/// Adds the cross-check problems to the findings they are about.
pub fn apply_cross_checks(
    findings: &mut [Finding],
    docs: &[checks::Doc],
    module: Option<&checks::Module>,
) {
    let docs: Vec<&checks::Doc> = docs.iter().collect();
    for p in checks::cross_check(&docs, module) {
        if let Some(f) = findings.get_mut(p.doc) {
            if f.errors.iter().any(|e| e.message == p.message) || f.notes.contains(&p.message) {
                continue;
            }
            if p.note {
                f.notes.push(p.message);
            } else {
                f.errors.push(Issue::new(p.code, p.message));
                f.ok = false;
            }
        }
    }
}

/// `message (line N)` when the field path's last key is found in the document.
fn with_line(message: &str, path: &str, doc_text: &str, offset: usize) -> String {
    let keys: Vec<&str> = path
        .split(['.', '['])
        .filter(|k| !k.is_empty() && !k.ends_with(']'))
        .collect();
    // Follow the keys down the document: each one after the previous.
    let lines: Vec<&str> = doc_text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for k in &keys {
        let needle = format!("{k}:");
        match lines.iter().enumerate().skip(from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&needle)
                || t.starts_with(&format!("\"{k}\":"))
                || l.contains(&format!("{{{needle}"))
                || l.contains(&format!(", {needle}"))
        }) {
            Some((n, _)) => {
                from = n;
                found = Some(n + 1);
            }
            None => break,
        }
    }
    match found {
        Some(n) if !keys.is_empty() => format!("{message} (line {})", n + offset),
        _ => message.to_string(),
    }
}

/// Every YAML document's text with the line it starts after (so that
/// line numbers in its errors become the file's), in one pass.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut chunks: Vec<(usize, Vec<&str>)> = vec![(0, Vec::new())];
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            chunks.push((n + 1, Vec::new()));
        } else if let Some(last) = chunks.last_mut() {
            last.1.push(line);
        }
    }
    let has_content = |lines: &Vec<&str>| {
        lines
            .iter()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    };
    chunks
        .into_iter()
        .filter(|(_, l)| has_content(l))
        .map(|(start, lines)| (start, lines.join("\n")))
        .collect()
}

/// What `validate` found in all its files.
pub struct Report {
    pub findings: Vec<Finding>,
    /// The Kubernetes documents (cross-checked together).
    pub docs: Vec<checks::Doc>,
    /// Files that could not be read, each error naming its path.
    pub unreadable: Vec<String>,
}

/// Checks `files` in order, each kustomization's resources after it (each
/// file once; a kustomization that brings itself in again, directly or
/// through others, is an error, as kustomize says "cycle detected"), then
/// cross-checks every Kubernetes document with the others.
pub fn validate_paths(
    files: &[PathBuf],
    module: Option<&checks::Module>,
    istio: IstioVersion,
) -> Report {
    let mut findings: Vec<Finding> = Vec::new();
    let mut docs: Vec<checks::Doc> = Vec::new();
    let mut unreadable = Vec::new();
    // (file, the kustomizations that brought it in, outermost first).
    let mut queue: VecDeque<(PathBuf, Vec<PathBuf>)> =
        files.iter().map(|f| (f.clone(), Vec::new())).collect();
    let mut seen = BTreeSet::new();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    while let Some((f, chain)) = queue.pop_front() {
        if f.as_os_str() != "-" && !seen.insert(canonical(&f)) {
            continue;
        }
        let checked = match check_file_for(&f, istio) {
            Ok(c) => c,
            Err(e) => {
                unreadable.push(format!("{e:#}"));
                continue;
            }
        };
        let offset = findings.len();
        findings.extend(checked.findings);
        docs.extend(checked.docs.into_iter().map(|mut d| {
            d.id += offset;
            d
        }));
        let mut inner = chain.clone();
        inner.push(canonical(&f));
        let mut next = Vec::new();
        for inc in checked.includes {
            let key = canonical(&inc.path);
            if let Some(start) = inner.iter().position(|k| *k == key) {
                let mut names: Vec<String> = inner[start..]
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                names.push(key.display().to_string());
                if let Some(finding) = findings.get_mut(offset + inc.finding) {
                    finding.ok = false;
                    finding.errors.push(Issue::new(
                        Code::Kustomization,
                        format!(
                            "resources: {}: a cycle ({}): kustomize refuses it (\"cycle detected\")",
                            inc.resource,
                            names.join(" -> ")
                        ),
                    ));
                }
                continue;
            }
            next.push((inc.path, inner.clone()));
        }
        for (i, n) in next.into_iter().enumerate() {
            queue.insert(i, n);
        }
    }
    apply_cross_checks(&mut findings, &docs, module);
    Report {
        findings,
        docs,
        unreadable,
    }
}
