//! `hybridmesh validate`: plugin configs and WasmPlugin manifests, checked by
//! the filter's own parser (the same code the `.wasm` runs).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use serde::{Deserialize, Serialize};

use hybridmesh_filter::config::{clean_message, error_path, parse_with, ConfigError, Raw};

use super::{Output, Paint};
use crate::Outcome;

/// Check plugin configs (JSON or YAML), WasmPlugin manifests (their
/// pluginConfig), or whole multi-document manifests.
///
/// Every error names the file, the document, the field path and what was
/// expected, with the line where YAML gives one.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh validate examples/03-weighted-80-20/config.yaml\n  hybridmesh validate wasmplugin/overlays/gke/*.yaml --output json"
)]
pub struct ValidateCommand {
    /// Files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
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

/// Checks one file; every document in it gives one finding.
pub fn validate_file(path: &std::path::Path) -> anyhow::Result<Vec<Finding>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.display().to_string();
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "json") {
        let errors = match hybridmesh_filter::parse_json(text.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => format_errors("", &e.0),
        };
        out.push(Finding {
            file,
            document: 1,
            what: "plugin config".into(),
            ok: errors.is_empty(),
            errors,
        });
        return Ok(out);
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
        let (what, errors) = match (meta.kind.as_deref(), meta.api_version.is_some()) {
            (None, false) => {
                let de = serde_yaml_ng::Deserializer::from_str(&doc_text);
                let errors = match parse_with(de, yaml_position).and_then(Raw::validate) {
                    Ok(_) => Vec::new(),
                    Err(e) => format_errors("", &e.0),
                };
                ("plugin config".to_string(), errors)
            }
            (Some("WasmPlugin"), _) => {
                let name = meta
                    .metadata
                    .map(|m| {
                        format!(
                            "{}/{}",
                            m.namespace.unwrap_or_else(|| "default".into()),
                            m.name.unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                let de = serde_yaml_ng::Deserializer::from_str(&doc_text);
                let errors = match serde_path_to_error::deserialize::<_, WasmPluginDoc>(de) {
                    Ok(d) => match d.spec.plugin_config {
                        None => Vec::new(),
                        Some(raw) => match raw.validate() {
                            Ok(_) => Vec::new(),
                            Err(e) => format_errors("spec.pluginConfig", &e.0),
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
                        format_errors("", &[err])
                    }
                };
                (format!("WasmPlugin {name}"), errors)
            }
            (Some(kind), _) => {
                // Other Kubernetes resources: not a plugin config; named so nothing is silently skipped.
                out.push(Finding {
                    file: file.clone(),
                    document: i + 1,
                    what: format!("{kind} (not a plugin config: not checked)"),
                    ok: true,
                    errors: Vec::new(),
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
        });
    }
    if out.is_empty() {
        out.push(Finding {
            file,
            document: 1,
            what: "empty file".into(),
            ok: false,
            errors: vec!["no document to check".into()],
        });
    }
    Ok(out)
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
        let mut findings = Vec::new();
        let mut unreadable = Vec::new();
        for f in &self.files {
            match validate_file(f) {
                Ok(found) => findings.extend(found),
                Err(e) => unreadable.push(format!("{e:#}")),
            }
        }
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
                }
                if findings.is_empty() {
                    // Nothing could be read: the error below says why.
                } else {
                    let mut summary = format!(
                        "{} plugin config(s) checked, {failed} with errors",
                        findings.len() - unchecked
                    );
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
