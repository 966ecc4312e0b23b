//! The benchmark suite runs end to end (`hybridmesh bench --quick`): every
//! variant answers through a real Envoy 1.40 under wrk, and BENCHMARKS.md
//! gets every table. The figures of a smoke run are not measurements; what
//! is asserted is what a user relies on: no failed request in any variant,
//! every table filled with numbers, the filter's memory gauge read.
//!
//! Needs Envoy (`scripts/setup-envoy`) and wrk (`scripts/setup-wrk`);
//! `scripts/test` installs both. Without them this test FAILS with what to
//! run; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../sim/tests/filter_support/mod.rs"]
mod filter_support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_benchmark_suite_runs_every_measurement_and_writes_the_report() {
    if let Err(e) = hybridmesh_replica::process::envoy_binary(&workspace()) {
        panic!("the benchmark needs Envoy 1.40: {e:#}");
    }
    assert!(
        hybridmesh_bench::load::wrk_present(),
        "the benchmark needs wrk: run scripts/setup-wrk (apt-get install wrk)"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::cargo_bin("hybridmesh")
        .unwrap()
        .current_dir(workspace())
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .arg("--wasm")
        .arg(filter_support::wasm_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed:\n{stderr}");
    let md = std::fs::read_to_string(&out).unwrap();
    for section in [
        "## Targets",
        "## Throughput, direct response",
        "## Throughput, real upstream",
        "## Latency at a fixed, moderate rate",
        "## Start-up",
        "## Memory",
        "## The harness",
        "## How to read this",
    ] {
        assert!(md.contains(section), "no {section:?} in:\n{md}");
    }
    assert!(
        md.contains("Failed requests during the run (non-2xx, socket errors): 0\n"),
        "{md}"
    );
    // Every variant has a row with a positive req/s in both throughput tables.
    for v in hybridmesh_bench::envoy::Variant::ALL {
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with(&format!("| {} |", v.name())))
            .collect();
        assert!(rows.len() >= 4, "{}: rows {rows:?}", v.name());
        let rps: f64 = rows[0].split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(rps > 0.0, "{}: {}", v.name(), rows[0]);
    }
    // The filter's gauge was read: linear memory is a whole number of 64 KiB pages.
    let line = md
        .lines()
        .find(|l| l.starts_with("| 1,000 requests |"))
        .unwrap();
    let bytes: u64 = line.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(bytes > 0 && bytes.is_multiple_of(65536), "{line}");
}
