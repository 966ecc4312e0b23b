//! `scripts/demo --istio`: the seed article's walk-through (the example
//! scenarios) on the mesh whose Envoy config a real istiod computes from
//! Kubernetes objects and the manifests `wasmplugin/` renders (`istio-lab/`).
//! Each example's plugin config is applied with `kubectl apply`; drains mark
//! pods not Ready; requests are `curl` from a sleep pod's namespace. Then the
//! article's own locality failover steps (`demo::article_failover`).
//!
//! `--per-pod FILE`: instead, what each pod pays for the filter
//! (`per_pod::measure`, at Istio's default two worker threads), written to
//! FILE as BENCHMARKS.md's section (`scripts/bench --lab`).

use std::path::PathBuf;
use std::process::ExitCode;

use hybridmesh_lab::{demo::walk, per_pod, Lab, LabOptions};

const USAGE: &str =
    "usage: hybridmesh-lab [--examples DIR] [--release 1.NN] [--istiod-env NAME=value]...
  --examples DIR     the examples folder (default: this checkout's examples/)
  --release 1.NN     the Istio release (versions.tsv; default the newest), with the Envoy it ships
  --istiod-env N=V   a setting for both istiods, e.g. PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false
  --per-pod FILE     instead of the walk-through: what each pod pays (new pods with no plugin,
                     the SDK's empty filter and the filter; 100 config pushes), at two worker
                     threads; FILE gets the Markdown table (scripts/bench --lab)
Needs root, the release's Envoy (scripts/setup-envoy VERSION), the filter's .wasm and
istio-lab/build.sh: scripts/demo --istio [--release 1.NN] does all of it.";

fn main() -> ExitCode {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut examples = workspace.join("examples");
    let mut opts = LabOptions::for_checkout(&workspace);
    let mut args = std::env::args().skip(1);
    let mut per_pod = None;
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
            "--per-pod" => match args.next() {
                Some(v) => per_pod = Some(PathBuf::from(v)),
                None => return usage("--per-pod needs a file to write"),
            },
            "--istio" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    if let Some(out) = per_pod {
        return match measure_per_pod(&workspace, opts, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
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

/// `--per-pod FILE`: the lab at two worker threads, five new pods per
/// plugin set, 100 requests each, 100 pushes.
fn measure_per_pod(
    workspace: &std::path::Path,
    mut opts: LabOptions,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let sdk_path = hybridmesh_bench::build_sdk_probe(workspace)?;
    let sdk = std::fs::read(&sdk_path).with_context(|| sdk_path.display().to_string())?;
    opts.concurrency = Some(2);
    opts.traffic_extensions = false;
    let mut lab = Lab::start(workspace, &opts).context("the Istio lab did not start")?;
    let m = per_pod::measure(&mut lab, &sdk, 5, 100, 100, |l| eprintln!("{l}"))?;
    let text = m.markdown();
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    print!("{text}");
    Ok(())
}
