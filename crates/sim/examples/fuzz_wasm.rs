//! The harness-level fuzzer: random schema-valid configs and random traffic
//! through the filter's real `.wasm` in the simulated mesh (see
//! `hybridmesh_sim::fuzz` for what it checks).
//!
//! `cargo run -p hybridmesh --example fuzz_wasm -- [--seconds N] [--seed S] [--wasm PATH]`
//!
//! Defaults: 60 seconds, seed from the clock (printed), the module in
//! `HYBRIDMESH_WASM` or `target/wasm32-wasip1/wasm/hybridmesh_filter.wasm`
//! (`scripts/build-wasm`).
//! `--replay SEED:EPISODE` reruns one episode a finding names. Exit code 1
//! when anything was found.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use proxy_wasm_host::Module;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut seconds = 60u64;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut wasm = std::env::var_os("HYBRIDMESH_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/wasm32-wasip1/wasm/hybridmesh_filter.wasm")
        });
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--wasm" => wasm = PathBuf::from(value()?),
            "--replay" => {
                let v = value()?;
                let (s, e) = v.split_once(':').context("--replay SEED:EPISODE")?;
                replay = Some((s.parse::<u64>()?, e.parse::<u64>()?));
            }
            _ => bail!("unknown argument {a:?}; expected --seconds N, --seed S, --wasm PATH, --replay SEED:EPISODE"),
        }
    }
    let module = Module::from_file(&wasm).with_context(|| format!("loading {}", wasm.display()))?;
    let started = Instant::now();
    let report = match replay {
        Some((s, e)) => hybridmesh_sim::fuzz::run_one(&module, s, e),
        None => {
            println!("fuzz_wasm: {} for {seconds}s, seed {seed}", wasm.display());
            hybridmesh_sim::fuzz::run(&module, seed, Duration::from_secs(seconds), u64::MAX)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "configs {}  executions {} ({} through the mesh, {} straight to a sidecar)  events {}  compared with native {}  in {secs:.0}s ({:.0} executions/s)",
        report.configs,
        report.executions(),
        report.mesh_requests,
        report.sidecar_requests,
        report.events,
        report.compared,
        report.executions() as f64 / secs.max(1e-9),
    );
    for f in &report.findings {
        println!("FINDING {f}");
    }
    println!("findings {}", report.findings.len());
    Ok(report.findings.is_empty())
}
