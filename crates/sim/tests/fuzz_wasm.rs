//! The harness-level fuzzer (`hybridmesh_sim::fuzz`, `examples/fuzz_wasm.rs`), CI
//! sized: fixed seeds, a few thousand requests through the filter's real
//! `.wasm` under random schema-valid configs, nothing found.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::time::Duration;

use filter_support::module;

#[test]
fn random_configs_and_traffic_through_the_wasm_find_nothing() {
    let module = module();
    let mut executions = 0;
    let mut configs = 0;
    let mut compared = 0;
    for seed in [1u64, 2, 3, 4] {
        let report = hybridmesh_sim::fuzz::run(&module, seed, Duration::from_secs(600), 40);
        assert!(
            report.findings.is_empty(),
            "seed {seed}:\n{}",
            report.findings.join("\n")
        );
        assert_eq!(report.configs, 40, "seed {seed} ran out of time");
        executions += report.executions();
        configs += report.configs;
        compared += report.compared;
    }
    // The fixed seeds do reach the module: a few thousand requests, many of
    // them compared with the native filter.
    eprintln!(
        "{configs} configs, {executions} executions, {compared} compared with the native filter"
    );
    assert_eq!(configs, 160);
    assert!(executions >= 2000, "{executions} executions");
    assert!(compared >= 500, "{compared} compared");
}

#[test]
fn replaying_an_episode_gives_the_same_run() {
    let module = module();
    let a = hybridmesh_sim::fuzz::run_one(&module, 7, 3);
    let b = hybridmesh_sim::fuzz::run_one(&module, 7, 3);
    assert_eq!(a.configs, 1);
    assert!(a.executions() > 0);
    assert_eq!(
        (a.executions(), a.events, a.compared, a.findings.clone()),
        (b.executions(), b.events, b.compared, b.findings)
    );
}
