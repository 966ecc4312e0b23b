//! `hybridmesh status`: what every sidecar was given and did with it, from
//! each cluster's istiod. See `hybridmesh_cluster::status`.

use std::path::PathBuf;

use clap::Parser;

use hybridmesh_cluster::status::{self, Sidecar, State};
use hybridmesh_input::printable_lines;
use hybridmesh_ops::deploy::MeshDescription;

use super::{Output, Paint};
use crate::Outcome;

/// Show, per sidecar, the filter's plugins as istiod gave them (module
/// digest, plugin config) and whether the proxy runs them (SYNCED), is
/// still applying them (PENDING), rejected them and why (REJECTED), or
/// refused the push that carried them for another plugin (UNCONFIRMED), in
/// the manner of istioctl proxy-status.
///
/// Reads istiod's debug endpoints on its monitoring port (15014): one
/// --istiod per cluster of a multi-primary mesh, e.g. after
/// `kubectl --context gke -n istio-system port-forward svc/istiod 15014`.
/// Each plugin is also held to the mesh description: its digest to
/// image.sha256, its config to what render makes for that cluster. A
/// rejected config is explained with the filter's own parser. Exit 1 when a
/// plugin is rejected, pending, or not what the description renders.
///
/// istiod does not see a module the agent could not fetch (the agent
/// acknowledges an RBAC stand-in): docs/src/operator/troubleshooting.md.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  kubectl --context gke -n istio-system port-forward svc/istiod 15014 &\n  hybridmesh status --istiod http://127.0.0.1:15014\n  hybridmesh status --istiod http://127.0.0.1:15014 --istiod http://127.0.0.1:25014 -o json"
)]
pub struct StatusCommand {
    /// istiod's monitoring address (repeatable: one per cluster).
    #[arg(long, value_name = "URL", required = true)]
    istiod: Vec<String>,
    /// The mesh description the plugins are held to.
    #[arg(long, value_name = "MESH.yaml", default_value = "examples/deploy.yaml")]
    mesh: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl StatusCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let mesh = MeshDescription::load(&self.mesh)?;
        let mut sidecars: Vec<Sidecar> = Vec::new();
        for url in &self.istiod {
            sidecars.extend(status::status(url, &mesh)?);
        }
        let bad = sidecars.iter().filter(|s| !s.ok()).count();
        match self.output {
            Output::Json | Output::Yaml => {
                super::print_data(self.output == Output::Json, &sidecars)?
            }
            Output::Text => print_table(&sidecars, &self.mesh.display().to_string()),
        }
        Ok(if bad == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        })
    }
}

fn print_table(sidecars: &[Sidecar], mesh: &str) {
    let p = Paint::stdout();
    let rows: Vec<[String; 6]> = sidecars
        .iter()
        .flat_map(|s| {
            let none = [
                s.proxy.clone(),
                s.cluster.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "no plugin".into(),
            ];
            let rows: Vec<[String; 6]> = s
                .plugins
                .iter()
                .map(|pl| {
                    let module = format!(
                        "{}{}",
                        pl.sha256.get(..12).unwrap_or(&pl.sha256),
                        if pl.pinned { "" } else { " (not pinned)" }
                    );
                    let config = if pl.as_rendered {
                        "as rendered"
                    } else {
                        "differs"
                    };
                    let state = match pl.state {
                        State::Synced => "SYNCED",
                        State::Pending => "PENDING",
                        State::Rejected => "REJECTED",
                        State::Unconfirmed => "UNCONFIRMED",
                    };
                    [
                        s.proxy.clone(),
                        s.cluster.clone(),
                        pl.name.clone(),
                        module,
                        config.to_string(),
                        state.to_string(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                vec![none]
            } else {
                rows
            }
        })
        .collect();
    let header = ["PROXY", "CLUSTER", "PLUGIN", "MODULE", "CONFIG", "STATUS"].map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", printable_lines(c), w = *w))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    // Each problem, said in full.
    for s in sidecars {
        for pl in &s.plugins {
            if pl.state == State::Rejected {
                println!(
                    "\n{} {} {}: {}",
                    p.red("REJECTED"),
                    s.proxy,
                    pl.name,
                    printable_lines(pl.error.as_deref().unwrap_or_default())
                );
                for e in &pl.problems {
                    super::print_coded("", e.code, &e.message);
                }
                if pl.problems.is_empty() {
                    println!("    the filter's parser accepts this config: the proxy's log says why (kubectl logs POD -c istio-proxy | grep hybridmesh)");
                }
                println!("    the proxy keeps the config it had before; without one, every request there answers 500 (NFCF)");
            }
            if pl.state == State::Unconfirmed {
                println!(
                    "\n{} {} {}: the push that carried it was refused for another plugin; whether the proxy applied this one is not known",
                    p.dim("UNCONFIRMED"),
                    s.proxy,
                    pl.name
                );
            }
            if !pl.pinned {
                println!(
                    "\n{} {} {}: module sha256 {} is not {mesh}'s image.sha256 (render and apply again, or pin this digest)",
                    p.red("DIFFERS"),
                    s.proxy,
                    pl.name,
                    pl.sha256,
                );
            }
            if !pl.as_rendered && pl.state != State::Rejected {
                println!(
                    "\n{} {} {}: its config is not what render makes from {mesh} for cluster {}: {}",
                    p.red("DIFFERS"),
                    s.proxy,
                    pl.name,
                    s.cluster,
                    printable_lines(pl.differs.as_deref().unwrap_or_default())
                );
            }
        }
    }
}
