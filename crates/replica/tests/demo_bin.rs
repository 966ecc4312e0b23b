//! `hybridmesh-demo`, the binary `scripts/demo` runs: the walk-through from
//! this crate alone, and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

fn demo(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hybridmesh-demo"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = demo(&["--nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown argument \"--nope\"\nusage: hybridmesh-demo"),
        "{err}"
    );
    let (code, _, err) = demo(&["--examples", "/nonexistent"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent: no mesh.yaml there"), "{err}");
    let (code, out, _) = demo(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--wasm FILE"), "{out}");
}

#[test]
fn the_walkthrough_runs_from_this_crate_alone() {
    support::require_envoy();
    let (code, out, err) = demo(&[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("every step behaved as the seed article describes, in real Envoy"),
        "{out}"
    );
    assert!(out.contains("0 failed; 9 Envoy processes"), "{out}");
}
