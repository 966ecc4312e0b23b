//! `hybridmesh demo`: the seed article's walk-through, step by step.

use std::path::PathBuf;

use clap::Parser;

use hybridmesh_scenario::Scenario;
use hybridmesh_sim::run::{run_file, Engine};

use super::{default_examples, load_module, Paint};
use crate::Outcome;

/// Walk through the seed article (GKE + on-prem Anthos in one Istio mesh)
/// in real Envoy 1.40 processes, with the filter in every sidecar: default spread, locality failover while
/// endpoints drain, cluster-local, the 80/20 split, per-cluster subsets,
/// spoofed headers and a bad config, printing what a person would see.
#[derive(Parser)]
pub struct DemoCommand {
    /// The examples folder.
    #[arg(long, value_name = "DIR")]
    examples: Option<PathBuf>,
    /// The proxy-wasm module (default: the filter this repository builds).
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// Run the walk-through in the wasmtime harness instead of the real-Envoy
    /// replica (no Envoy needed; every example file, step by step).
    #[arg(long, conflicts_with = "istio")]
    harness: bool,
    /// Run the walk-through on the mesh whose Envoy config a real istiod
    /// computes (istio-lab/: kube-apiserver, istiod, pilot-agent and Envoy per
    /// pod, the manifests wasmplugin/ renders applied with kubectl): every
    /// example, then the article's own DestinationRule and drains. Needs
    /// root; builds the lab's Go binaries the first time (about 7 minutes).
    #[arg(long)]
    istio: bool,
}

impl DemoCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        if self.harness {
            self.harness()
        } else if self.istio {
            let dir = self.examples.unwrap_or_else(default_examples);
            super::test::scenario_files(std::slice::from_ref(&dir))?;
            let ok = hybridmesh_lab::demo::walk(
                &dir,
                &super::workspace_root(),
                &hybridmesh_lab::LabOptions::for_checkout(&super::workspace_root()),
            )?;
            Ok(if ok { Outcome::Passed } else { Outcome::Failed })
        } else {
            self.replica()
        }
    }

    /// The seed's walk-through with real Envoy processes (the default).
    fn replica(self) -> anyhow::Result<Outcome> {
        let dir = self.examples.unwrap_or_else(default_examples);
        // The same check (and message) as the harness walk-through.
        super::test::scenario_files(std::slice::from_ref(&dir))?;
        if let Some(w) = &self.wasm {
            std::env::set_var("HYBRIDMESH_WASM", w);
        }
        let ok =
            hybridmesh_replica::terminal::walk(&dir, &super::workspace_root()).map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}\n  (the same walk-through without Envoy: hybridmesh demo --harness)"
                )
            })?;
        Ok(if ok { Outcome::Passed } else { Outcome::Failed })
    }

    /// The walk-through in the wasmtime harness: every example, step by step.
    fn harness(self) -> anyhow::Result<Outcome> {
        let dir = self.examples.unwrap_or_else(default_examples);
        let files = super::test::scenario_files(&[dir])?;
        let engine = Engine::wasm(load_module(self.wasm.as_ref())?);
        let p = Paint::stdout();
        let mut ok = true;
        for f in &files {
            let description = Scenario::load(f).map(|s| s.description).unwrap_or_default();
            let r = run_file(f, &engine);
            println!("\n{} {}", p.bold("==="), p.bold(&r.name));
            for line in description.lines().filter(|l| !l.trim().is_empty()) {
                println!("{}", p.dim(line.trim()));
            }
            if let Some(e) = &r.error {
                println!("  {} {e}", p.red("error:"));
            }
            for s in &r.steps {
                let mark = if s.ok { p.green("✓") } else { p.red("✗") };
                println!("{mark} {}", s.name);
                for line in &s.lines {
                    println!("    {line}");
                }
                if s.lines.len() >= 12 {
                    println!("    {}", p.dim("…"));
                }
                for problem in &s.problems {
                    println!("    {} {problem}", p.red("!"));
                }
            }
            ok &= r.ok;
        }
        println!();
        if ok {
            println!(
                "{}",
                p.green("every step behaved as the seed article describes")
            );
        } else {
            println!(
                "{}",
                p.red("some steps did not behave as expected (see above)")
            );
        }
        Ok(if ok { Outcome::Passed } else { Outcome::Failed })
    }
}
