//! `scripts/demo`: the seed article's walk-through in real Envoy (1.40, or
//! `HYBRIDMESH_ENVOY`), built
//! from this crate alone (no wasmtime, no command-line stack), so a
//! newcomer's first run compiles only what it runs. `hybridmesh demo` is the
//! same walk-through from the full command line.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: hybridmesh-demo [--examples DIR] [--wasm FILE]
  --examples DIR   the examples folder (default: this checkout's examples/)
  --wasm FILE      the proxy-wasm module (default: the filter this checkout builds)
The same walk-through without Envoy: hybridmesh demo --harness";

fn main() -> ExitCode {
    // This crate is `crates/replica` in the checkout.
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut examples = workspace.join("examples");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--examples" => match args.next() {
                Some(v) => examples = PathBuf::from(v),
                None => return usage("--examples needs a folder"),
            },
            "--wasm" => match args.next() {
                Some(v) => std::env::set_var("HYBRIDMESH_WASM", v),
                None => return usage("--wasm needs a file"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    if !examples.join("mesh.yaml").is_file() {
        return usage(&format!("{}: no mesh.yaml there", examples.display()));
    }
    match hybridmesh_replica::terminal::walk(&examples, &workspace) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!(
                "error: {e:#}\n  (the same walk-through without Envoy: hybridmesh demo --harness)"
            );
            ExitCode::from(2)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\n{USAGE}");
    ExitCode::from(2)
}
