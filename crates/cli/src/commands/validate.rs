//! `hybridmesh validate`: plugin configs and WasmPlugin manifests, checked by
//! the filter's own parser (the same code the `.wasm` runs); WasmPlugins,
//! DestinationRules and VirtualServices against Istio's schemas and CEL rules
//! (`hybridmesh_ops::deploy::schema`), then cross-checked together
//! (`hybridmesh_ops::deploy::checks`): every cluster the filter can choose has a
//! subset and a route, and `sha256` is the packaged module's.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use hybridmesh_input::{printable, printable_lines};
use hybridmesh_ops::deploy::codes::Code;
use hybridmesh_ops::deploy::istio::IstioVersion;
use hybridmesh_ops::deploy::validate::{allow, validate_paths, Report};
use hybridmesh_ops::deploy::{checks, image};

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
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Check each WasmPlugin's sha256 against this packaged image (an OCI
    /// image layout folder or tar, as `hybridmesh package` writes it).
    #[arg(long, value_name = "LAYOUT")]
    image: Option<PathBuf>,
    /// Check each WasmPlugin's sha256 against this module (the digests
    /// `hybridmesh package` gives it).
    #[arg(long, value_name = "MODULE.wasm", conflicts_with = "image")]
    wasm: Option<PathBuf>,
    /// Check against the schemas of this Istio version (e.g. 1.13: no
    /// `networking.istio.io/v1`, no WasmPlugin `match` or `failStrategy`);
    /// default: current Istio.
    #[arg(long, value_name = "1.MINOR", value_parser = IstioVersion::parse)]
    istio: Option<IstioVersion>,
    /// Findings with this code do not fail the run: they are printed as
    /// allowed (repeatable, or comma-separated: `--allow HM0304,HM0401`).
    /// The codes: docs/src/reference/codes.md.
    #[arg(long, value_name = "CODE", value_delimiter = ',', value_parser = Code::parse)]
    allow: Vec<Code>,
}

impl ValidateCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        // Every file is checked; a file that cannot be read is reported with
        // the others and makes the exit code 2.
        let module = match (&self.image, &self.wasm) {
            (Some(layout), _) => Some(checks::Module::from_image(
                &image::verify(layout, None)
                    .with_context(|| format!("--image {}", layout.display()))?,
            )),
            (None, Some(wasm)) => {
                let bytes = hybridmesh_input::read(wasm, hybridmesh_input::MODULE)?;
                Some(
                    checks::Module::from_wasm(&bytes)
                        .with_context(|| format!("--wasm {}", wasm.display()))?,
                )
            }
            (None, None) => None,
        };
        let istio = self.istio.unwrap_or_default();
        let Report {
            findings,
            docs,
            unreadable,
        } = validate_paths(&self.files, module.as_ref(), istio);
        let mut findings = findings;
        allow(&mut findings, &self.allow);
        let failed = findings.iter().filter(|f| !f.ok).count();
        let unchecked = findings
            .iter()
            .filter(|f| f.what.contains("not checked"))
            .count();
        match self.output {
            Output::Json | Output::Yaml => {
                super::print_data(self.output == Output::Json, &findings)?
            }
            Output::Text => {
                let p = Paint::stdout();
                for f in &findings {
                    let doc = if f.document > 1 {
                        format!(" (document {})", f.document)
                    } else {
                        String::new()
                    };
                    // File names and what a document is called are the input's:
                    // printed escaped, as is every line of an error or note.
                    let (file, what) = (printable(&f.file), printable(&f.what));
                    if f.ok {
                        println!("{} {file}{doc}: {what}", p.green("ok"));
                    } else {
                        println!("{} {file}{doc}: {what}", p.red("FAIL"));
                        for e in &f.errors {
                            super::print_coded("", e.code, &e.message);
                        }
                    }
                    for e in &f.allowed {
                        super::print_coded(&format!("{} ", p.dim("allowed:")), e.code, &e.message);
                    }
                    for n in &f.notes {
                        println!("    {} {}", p.dim("note:"), printable_lines(n));
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
                    let descriptions = findings.iter().all(|f| f.what == "mesh description");
                    let mut summary = if descriptions {
                        format!(
                            "{} mesh description(s) checked, {failed} with errors",
                            findings.len()
                        )
                    } else if resources == 0 {
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
