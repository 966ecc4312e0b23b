//! `hybridmesh check`: before applying the filter, what each cluster must
//! have, read from the cluster itself (through kubectl) and held to the mesh
//! description. See `hybridmesh_cluster::check`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use hybridmesh_cluster::check::{self, Finding, Report};
use hybridmesh_cluster::kubectl::Kubectl;
use hybridmesh_input::printable_lines;
use hybridmesh_ops::deploy::codes::Code;
use hybridmesh_ops::deploy::MeshDescription;

use super::{Output, Paint};
use crate::Outcome;

/// Check live clusters before the filter is applied: Istio and its CRDs (the
/// kind render must write), the network label, the east-west gateway, the
/// remote secrets, the image pull secret, the filter's stats and access log
/// in mesh config, and the cluster's ID and network against the mesh
/// description.
///
/// Every finding has a code (docs/src/reference/codes.md, HM07xx) and the
/// command that fixes it. Reads through kubectl ($HYBRIDMESH_KUBECTL, else
/// kubectl on the PATH) with your kubeconfig and credentials; writes nothing.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh check --mesh examples/deploy.yaml                 # every context of the kubeconfig\n  hybridmesh check --context gke --context abm\n  hybridmesh check --context gke --allow HM0710 -o json"
)]
pub struct CheckCommand {
    /// The mesh description the clusters are held to.
    #[arg(long, value_name = "MESH.yaml", default_value = "examples/deploy.yaml")]
    mesh: PathBuf,
    /// A kubeconfig context to check (repeatable; default: every context of
    /// the kubeconfig).
    #[arg(long, value_name = "CONTEXT")]
    context: Vec<String>,
    /// The kubeconfig (default: kubectl's, $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Findings with this code do not fail the run (repeatable or
    /// comma-separated).
    #[arg(long, value_name = "CODE", value_delimiter = ',', value_parser = Code::parse)]
    allow: Vec<Code>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl CheckCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let mesh = MeshDescription::load(&self.mesh)?;
        let kubectl = Kubectl::new(self.kubeconfig.as_deref())?;
        let contexts = if self.context.is_empty() {
            let all = kubectl.contexts().context("the kubeconfig's contexts")?;
            anyhow::ensure!(
                !all.is_empty(),
                "the kubeconfig has no context: name one with --context, or the file with --kubeconfig"
            );
            all
        } else {
            self.context.clone()
        };
        let source = self.mesh.display().to_string();
        let reports: Vec<Report> = contexts
            .iter()
            .map(|c| {
                let mut r = check::check(&kubectl, c, &mesh, &source);
                r.allow(&self.allow);
                r
            })
            .collect();
        let failed = reports.iter().filter(|r| !r.ok).count();
        match self.output {
            Output::Json | Output::Yaml => {
                super::print_data(self.output == Output::Json, &reports)?
            }
            Output::Text => {
                let p = Paint::stdout();
                for r in &reports {
                    let status = if r.ok { p.green("ok") } else { p.red("FAIL") };
                    println!(
                        "{status} context {}: {}",
                        printable_lines(&r.context),
                        describe(r)
                    );
                    for f in r.findings.iter().filter(|f| !f.note) {
                        print_finding("", f);
                    }
                    for f in &r.allowed {
                        print_finding(&format!("{} ", p.dim("allowed:")), f);
                    }
                    for f in r.findings.iter().filter(|f| f.note) {
                        print_finding(&format!("{} ", p.dim("note:")), f);
                    }
                }
                println!("{} context(s) checked, {failed} with errors", reports.len());
            }
        }
        Ok(if failed == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        })
    }
}

/// `cluster gke, network kuchima-demo-vpc01, Istio 1.31.0`.
fn describe(r: &Report) -> String {
    let unknown = "unknown".to_string();
    format!(
        "cluster {}, network {}, Istio {}",
        r.cluster.as_ref().unwrap_or(&unknown),
        r.network.as_ref().unwrap_or(&unknown),
        r.istio.as_ref().unwrap_or(&unknown)
    )
}

fn print_finding(label: &str, f: &Finding) {
    super::print_coded(label, f.code, &f.message);
    if let Some(fix) = &f.fix {
        println!("      fix: {}", printable_lines(fix));
    }
}
