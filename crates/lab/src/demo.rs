//! The seed article's walk-through (the example scenarios) on the lab:
//! `scripts/demo --istio`, `hybridmesh demo --istio`.

use std::path::{Path, PathBuf};

use hybridmesh_scenario::runner::run_on;
use hybridmesh_scenario::Scenario;

use crate::{Lab, LabOptions};

/// Starts the lab, plays every `*/scenario.yaml` under `examples` on it (each
/// example's plugin config applied with `kubectl apply` first), prints each
/// step as it went; whether every step passed.
pub fn walk(examples: &Path, workspace: &Path, opts: &LabOptions) -> anyhow::Result<bool> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples)?
        .filter_map(|e| e.ok().map(|e| e.path().join("scenario.yaml")))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no */scenario.yaml",
        examples.display()
    );
    println!("starting the Istio lab: per cluster a kube-apiserver and an istiod (Istio 1.31), every pod as pilot-agent + Envoy 1.40 ...");
    let started = std::time::Instant::now();
    let mut lab = Lab::start(workspace, opts)?;
    println!(
        "up in {:.0}s: gke and anthos, wasmplugin/overlays/<cluster> applied with kubectl apply -k\n",
        started.elapsed().as_secs_f64()
    );
    let mut all_ok = true;
    for f in &files {
        let s = Scenario::load(f)?;
        println!("=== {}", s.name);
        if !s.description.is_empty() {
            println!("{}", s.description.trim_end());
        }
        lab.reset()?;
        let mut applied = true;
        for c in ["gke", "anthos"] {
            if let Err(e) = s.config_for(c).and_then(|cfg| lab.apply_config(c, &cfg)) {
                println!("not played on the lab: {e:#}\n");
                applied = false;
                break;
            }
        }
        if !applied {
            continue;
        }
        println!("$ kubectl apply -f <the WasmPlugins with this example's pluginConfig>   (in gke and anthos)");
        let report = run_on(&s, &mut lab);
        for step in &report.steps {
            println!("{} {}", if step.ok { "ok  " } else { "FAIL" }, step.name);
            for l in &step.lines {
                println!("      {l}");
            }
            for p in &step.problems {
                println!("      - {p}");
            }
        }
        all_ok &= report.ok;
        println!();
    }
    println!(
        "lab logs, config dumps and access logs: {}",
        lab.run_dir().display()
    );
    Ok(all_ok)
}
