//! `hybridmesh validate`: plugin configs and WasmPlugin manifests, checked by
//! the filter's own parser (the same code the `.wasm` runs); WasmPlugins,
//! DestinationRules and VirtualServices against Istio's schemas and CEL rules
//! (`hybridmesh_ops::deploy::schema`), then cross-checked together
//! (`hybridmesh_ops::deploy::checks`): every cluster the filter can choose has a
//! subset and a route, and `sha256` is the packaged module's.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use serde::{Deserialize, Serialize};

use hybridmesh_filter_core::config::{clean_message, error_path, parse_with, ConfigError, Raw};
use hybridmesh_ops::deploy::{checks, image, schema};

use super::{Output, Paint};
use crate::Outcome;

/// Check plugin configs (JSON or YAML), WasmPlugin manifests (their
/// pluginConfig), or whole multi-document manifests.
///
/// Every error names the file, the document, the field path and what was
/// expected, with the line where YAML gives one. WasmPlugins,
/// DestinationRules and VirtualServices are checked against Istio's schemas
/// and CEL rules, then together: every cluster a WasmPlugin's filter can
/// choose has a DestinationRule subset and a VirtualService route. A
/// kustomization.yaml brings in its resources; `-` reads standard input
/// (`kubectl kustomize DIR | hybridmesh validate -`).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh validate examples/03-weighted-80-20/config.yaml\n  hybridmesh validate wasmplugin/overlays/gke/kustomization.yaml --image hybridmesh-image\n  kubectl kustomize wasmplugin/overlays/anthos | hybridmesh validate - --output json"
)]
pub struct ValidateCommand {
    /// Files to check (`-`: standard input).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Check each WasmPlugin's sha256 against this packaged image (an OCI
    /// image layout folder or tar, as `hybridmesh package` writes it).
    #[arg(long, value_name = "LAYOUT")]
    image: Option<PathBuf>,
    /// Check each WasmPlugin's sha256 against this module (the digests
    /// `hybridmesh package` gives it).
    #[arg(long, value_name = "MODULE.wasm", conflicts_with = "image")]
    wasm: Option<PathBuf>,
}

/// One problem or note about one document.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub file: String,
    /// 1-based document number in a multi-document YAML file.
    pub document: usize,
    /// What the document is (`plugin config`, `WasmPlugin echo/hybridmesh`, ...).
    pub what: String,
    pub ok: bool,
    pub errors: Vec<String>,
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

#[derive(Deserialize)]
struct WasmPluginDoc {
    spec: WasmPluginSpec,
}

#[derive(Deserialize)]
struct WasmPluginSpec {
    #[serde(rename = "pluginConfig")]
    plugin_config: Option<Raw>,
}

fn format_errors(prefix: &str, errors: &[ConfigError]) -> Vec<String> {
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
            if path.is_empty() {
                format!("{}{line}", e.message)
            } else {
                format!("{path}: {}{line}", e.message)
            }
        })
        .collect()
}

fn yaml_position(e: &serde_yaml_ng::Error) -> Option<(usize, usize)> {
    e.location().map(|l| (l.line(), l.column()))
}

/// Checks one file; every document in it gives one finding. Kubernetes
/// documents are cross-checked with the others in the same file.
pub fn validate_file(path: &std::path::Path) -> anyhow::Result<Vec<Finding>> {
    let checked = check_file(path)?;
    let mut findings = checked.findings;
    apply_cross_checks(&mut findings, &checked.docs, None);
    Ok(findings)
}

/// What one file gave: findings, the Kubernetes documents for the
/// cross-checks (their `id` indexes `findings`), and the files a
/// kustomization.yaml brings in.
pub struct Checked {
    pub findings: Vec<Finding>,
    pub docs: Vec<checks::Doc>,
    pub includes: Vec<PathBuf>,
}

fn check_file(path: &std::path::Path) -> anyhow::Result<Checked> {
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .context("cannot read standard input")?;
        t
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let file = if path.as_os_str() == "-" {
        "(stdin)".to_string()
    } else {
        path.display().to_string()
    };
    let mut out = Vec::new();
    let mut docs = Vec::new();
    let mut includes = Vec::new();
    if path.extension().is_some_and(|e| e == "json") {
        let errors = match hybridmesh_filter_core::parse_json(text.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => format_errors("", &e.0),
        };
        out.push(Finding {
            file,
            document: 1,
            what: "plugin config".into(),
            ok: errors.is_empty(),
            errors,
            notes: Vec::new(),
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
                    errors: vec![format!("not valid YAML: {msg}{line}")],
                    notes: Vec::new(),
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
        let doc_text = nth_document(&text, i);
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
        let (what, errors) = match (meta.kind.as_deref(), meta.api_version.is_some()) {
            (None, false) => {
                let de = serde_yaml_ng::Deserializer::from_str(&doc_text);
                let errors = match parse_with(de, yaml_position).and_then(Raw::validate) {
                    Ok(_) => Vec::new(),
                    Err(e) => format_errors("", &e.0),
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
                let mut errors: Vec<String> = match schema::schema_for(kind) {
                    Some(s) => schema::check(s, &json)
                        .into_iter()
                        .map(|p| with_line(&p.to_string(), &p.at, &doc_text))
                        .collect(),
                    None => Vec::new(),
                };
                let mut config = None;
                if kind == "WasmPlugin" {
                    let de = serde_yaml_ng::Deserializer::from_str(&doc_text);
                    match serde_path_to_error::deserialize::<_, WasmPluginDoc>(de) {
                        Ok(d) => match d.spec.plugin_config {
                            None => notes.push(
                                "no pluginConfig: the filter needs at least its routes".to_string(),
                            ),
                            Some(raw) => match raw.validate() {
                                Ok(c) => config = Some(c),
                                Err(e) => errors.extend(format_errors("spec.pluginConfig", &e.0)),
                            },
                        },
                        Err(e) => {
                            let inner = e.inner();
                            let message = clean_message(&inner.to_string());
                            let path = error_path(&e.path().to_string(), &message);
                            let err = ConfigError {
                                path,
                                message,
                                position: yaml_position(inner),
                            };
                            errors.extend(format_errors("", &[err]));
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
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                let mut errors = Vec::new();
                for r in json["resources"].as_array().into_iter().flatten() {
                    let Some(r) = r.as_str() else { continue };
                    let p = normalize(&dir.join(r));
                    if p.is_dir() {
                        match ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                            .iter()
                            .map(|k| p.join(k))
                            .find(|k| k.exists())
                        {
                            Some(k) => includes.push(k),
                            None => errors.push(format!(
                                "resources: {r}: a folder without a kustomization.yaml"
                            )),
                        }
                    } else if p.exists() {
                        includes.push(p);
                    } else {
                        errors.push(format!("resources: {r}: no such file or folder"));
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
                });
                continue;
            }
            (None, true) => (
                "document".to_string(),
                vec!["has apiVersion but no kind".to_string()],
            ),
        };
        out.push(Finding {
            file: file.clone(),
            document: i + 1,
            what,
            ok: errors.is_empty(),
            errors,
            notes,
        });
    }
    if out.is_empty() {
        out.push(Finding {
            file,
            document: 1,
            what: "empty file".into(),
            ok: false,
            errors: vec!["no document to check".into()],
            notes: Vec::new(),
        });
    }
    Ok(Checked {
        findings: out,
        docs,
        includes,
    })
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &std::path::Path) -> PathBuf {
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

/// Adds the cross-check problems to the findings they are about.
pub fn apply_cross_checks(
    findings: &mut [Finding],
    docs: &[checks::Doc],
    module: Option<&checks::Module>,
) {
    for p in checks::cross_check(docs, module) {
        if let Some(f) = findings.get_mut(p.doc) {
            if f.errors.contains(&p.message) || f.notes.contains(&p.message) {
                continue;
            }
            if p.note {
                f.notes.push(p.message);
            } else {
                f.errors.push(p.message);
                f.ok = false;
            }
        }
    }
}

/// `message (line N)` when the field path's last key is found in the document.
fn with_line(message: &str, path: &str, doc_text: &str) -> String {
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
        Some(n) if !keys.is_empty() => format!("{message} (line {n})"),
        _ => message.to_string(),
    }
}

/// The text of the i-th YAML document, padded with blank lines in front so
/// that line numbers in errors are the file's.
fn nth_document(text: &str, i: usize) -> String {
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
    let docs: Vec<&(usize, Vec<&str>)> = chunks.iter().filter(|(_, l)| has_content(l)).collect();
    match docs.get(i) {
        Some((start, lines)) => "\n".repeat(*start) + &lines.join("\n"),
        None => String::new(),
    }
}

impl ValidateCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        anyhow::ensure!(
            self.output != Output::Junit,
            "--output junit is for `hybridmesh test`; use text or json"
        );
        // Every file is checked; a file that cannot be read is reported with
        // the others and makes the exit code 2.
        let module = match (&self.image, &self.wasm) {
            (Some(layout), _) => Some(checks::Module::from_image(
                &image::verify(layout, None)
                    .with_context(|| format!("--image {}", layout.display()))?,
            )),
            (None, Some(wasm)) => {
                let bytes = std::fs::read(wasm)
                    .with_context(|| format!("cannot read {}", wasm.display()))?;
                Some(
                    checks::Module::from_wasm(&bytes)
                        .with_context(|| format!("--wasm {}", wasm.display()))?,
                )
            }
            (None, None) => None,
        };
        let mut findings: Vec<Finding> = Vec::new();
        let mut docs: Vec<checks::Doc> = Vec::new();
        let mut unreadable = Vec::new();
        // Files in order; a kustomization.yaml's resources follow it, each file once.
        let mut queue: std::collections::VecDeque<PathBuf> = self.files.iter().cloned().collect();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(f) = queue.pop_front() {
            let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            if f.as_os_str() != "-" && !seen.insert(key) {
                continue;
            }
            match check_file(&f) {
                Ok(checked) => {
                    let offset = findings.len();
                    findings.extend(checked.findings);
                    docs.extend(checked.docs.into_iter().map(|mut d| {
                        d.id += offset;
                        d
                    }));
                    for (i, inc) in checked.includes.into_iter().enumerate() {
                        queue.insert(i, inc);
                    }
                }
                Err(e) => unreadable.push(format!("{e:#}")),
            }
        }
        apply_cross_checks(&mut findings, &docs, module.as_ref());
        let failed = findings.iter().filter(|f| !f.ok).count();
        let unchecked = findings
            .iter()
            .filter(|f| f.what.contains("not checked"))
            .count();
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
            Output::Text | Output::Junit => {
                let p = Paint::stdout();
                for f in &findings {
                    let doc = if f.document > 1 {
                        format!(" (document {})", f.document)
                    } else {
                        String::new()
                    };
                    if f.ok {
                        println!("{} {}{doc}: {}", p.green("ok"), f.file, f.what);
                    } else {
                        println!("{} {}{doc}: {}", p.red("FAIL"), f.file, f.what);
                        for e in &f.errors {
                            println!("    {e}");
                        }
                    }
                    for n in &f.notes {
                        println!("    {} {n}", p.dim("note:"));
                    }
                }
                if findings.is_empty() {
                    // Nothing could be read: the error below says why.
                } else {
                    let resources = docs.len()
                        + findings
                            .iter()
                            .filter(|f| f.what.starts_with("Kustomization"))
                            .count();
                    let mut summary = if resources == 0 {
                        format!(
                            "{} plugin config(s) checked, {failed} with errors",
                            findings.len() - unchecked
                        )
                    } else {
                        format!(
                            "{} document(s) checked, {failed} with errors",
                            findings.len() - unchecked
                        )
                    };
                    if unchecked > 0 {
                        summary.push_str(&format!(", {unchecked} other document(s) not checked"));
                    }
                    println!("{summary}");
                }
            }
        }
        if !unreadable.is_empty() {
            anyhow::bail!("{}", unreadable.join("\n"));
        }
        Ok(if failed == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        })
    }
}
