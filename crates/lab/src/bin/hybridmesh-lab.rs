//! `scripts/demo --istio`: the seed article's walk-through (the example
//! scenarios) on the mesh whose Envoy config a real istiod computes from
//! Kubernetes objects and the manifests `wasmplugin/` renders (`istio-lab/`).
//! Each example's plugin config is applied with `kubectl apply`; drains mark
//! pods not Ready; requests are `curl` from a sleep pod's namespace. Then the
//! article's own locality failover steps (`demo::article_failover`).

use std::path::PathBuf;
use std::process::ExitCode;

use hybridmesh_lab::{demo::walk, LabOptions};

const USAGE: &str =
    "usage: hybridmesh-lab [--examples DIR] [--release 1.NN] [--istiod-env NAME=value]...
  --examples DIR     the examples folder (default: this checkout's examples/)
  --release 1.NN     the Istio release (versions.tsv; default the newest), with the Envoy it ships
  --istiod-env N=V   a setting for both istiods, e.g. PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false
Needs root, the release's Envoy (scripts/setup-envoy VERSION), the filter's .wasm and
istio-lab/build.sh: scripts/demo --istio [--release 1.NN] does all of it.";

fn main() -> ExitCode {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut examples = workspace.join("examples");
    let mut opts = LabOptions::for_checkout(&workspace);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--examples" => match args.next() {
                Some(v) => examples = PathBuf::from(v),
                None => return usage("--examples needs a folder"),
            },
            "--istiod-env" => match args.next() {
                Some(v) if v.contains('=') => opts.istiod_env.push(v),
                _ => return usage("--istiod-env needs NAME=value"),
            },
            "--release" => match args.next() {
                Some(v) if hybridmesh_ops::support::envoy_of_istio(&v).is_some() => {
                    opts.istio = Some(v)
                }
                Some(v) => {
                    return usage(&format!(
                        "--release {v}: not an Istio release of versions.tsv"
                    ))
                }
                None => return usage("--release needs an Istio release, e.g. 1.30"),
            },
            "--istio" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    match walk(&examples, &workspace, &opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\n{USAGE}");
    ExitCode::from(2)
}
