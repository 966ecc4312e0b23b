//! Every example in `examples/` runs and passes, through the real `.wasm` and
//! through the filter's decision code natively, and the two agree request by
//! request (except picks that are random by design, checked by share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::path::{Path, PathBuf};

use hybridmesh_sim::run::{parity, run_file, Engine};

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("scenario.yaml")))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    assert!(
        out.len() >= 7,
        "expected the seed's seven examples, found {out:?}"
    );
    out
}

fn assert_passes(engine: &Engine) {
    for path in examples() {
        let r = run_file(&path, engine);
        let failed: Vec<String> = r
            .steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| format!("  {}: {}", s.name, s.problems.join("; ")))
            .collect();
        assert!(
            r.ok,
            "{} failed: {:?}\n{}",
            path.display(),
            r.error,
            failed.join("\n")
        );
        assert!(!r.steps.is_empty());
    }
}

#[test]
fn every_example_passes_through_the_wasm() {
    assert_passes(&Engine::wasm(filter_support::module()));
}

#[test]
fn every_example_passes_natively() {
    assert_passes(&Engine::Native);
}

#[test]
fn wasm_and_native_agree_request_by_request() {
    let module = filter_support::module();
    let mut compared = 0;
    for path in examples() {
        let p = parity(&path, &module).unwrap();
        assert!(
            p.differences.is_empty(),
            "{}:\n{}",
            path.display(),
            p.differences.join("\n")
        );
        compared += p.compared;
    }
    // Every deterministic request of every example (the weighted example's
    // random picks are checked by share instead).
    assert!(compared >= 150, "only {compared} requests compared");
}
