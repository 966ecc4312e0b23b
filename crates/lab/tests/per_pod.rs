//! What the filter costs each pod (issue #26), in the Istio lab at Istio's
//! default sidecar concurrency (2 worker threads): a new echo-svc pod with
//! no plugin, with the proxy-wasm Rust SDK's empty filter in both
//! WasmPlugins (the floor any Rust filter pays) and with the filter's two
//! plugins; then 100 config pushes. Prints the table BENCHMARKS.md's "per
//! pod" section holds (also written to `target/bench/per-pod.md`), and
//! asserts what an operator relies on: the pod is Ready and serves with each,
//! both plugins share the SDK floor's VM layout, and pushes neither add VMs
//! nor grow memory.
//!
//! Needs root, Envoy (`scripts/setup-envoy`), the filter's `.wasm`
//! (`scripts/build-wasm`) and the lab's binaries (`istio-lab/build.sh`);
//! without them this test FAILS with what to run. `scripts/test` does all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use hybridmesh_lab::per_pod::{self, Plugins};
use hybridmesh_lab::{Lab, LabOptions};
use hybridmesh_replica::memory::mib;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// New pods per plugin set (the table shows the median; `hybridmesh-lab
/// --per-pod`, for BENCHMARKS.md, takes 5).
const ROUNDS: usize = 3;
/// Requests from the pod's application before its memory is read.
const REQUESTS: usize = 100;
/// Config pushes.
const PUSHES: usize = 100;

#[test]
fn what_the_filter_costs_each_pod_and_each_config_push() {
    let root = workspace();
    let sdk = hybridmesh_bench::build_sdk_probe(&root)
        .and_then(|p| Ok(std::fs::read(p)?))
        .unwrap_or_else(|e| {
            panic!("the SDK's empty filter (crates/bench/probes/sdk-floor): {e:#}")
        });
    let opts = LabOptions {
        concurrency: Some(2),
        traffic_extensions: false,
        ..LabOptions::for_checkout(&root)
    };
    let mut lab =
        Lab::start(&root, &opts).unwrap_or_else(|e| panic!("the Istio lab did not start: {e:#}"));
    let m = per_pod::measure(&mut lab, &sdk, ROUNDS, REQUESTS, PUSHES, |l| {
        println!("{l}")
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        m.concurrency, 2,
        "the sidecars' worker threads (LAB_CONCURRENCY)"
    );
    let text = m.markdown();
    println!("\n{text}");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("per-pod.md"), &text).unwrap();
    let (rows, pushes) = (&m.pods, &m.pushes);

    // No plugin: no VM. The SDK's empty filter and the filter: the same VMs
    // (both plugins of a pod, as Istio configures them, in one VM per thread
    // when Envoy keys them alike: the filter adds no VM over the floor).
    let of = |p: Plugins| rows.iter().filter(move |r| r.plugins == p);
    assert!(of(Plugins::None).all(|r| r.footprint.vms == 0), "{rows:#?}");
    let sdk_vms: Vec<u64> = of(Plugins::SdkEmpty).map(|r| r.footprint.vms).collect();
    let our_vms: Vec<u64> = of(Plugins::Filter).map(|r| r.footprint.vms).collect();
    assert!(sdk_vms.iter().all(|v| *v > 0), "{sdk_vms:?}");
    assert_eq!(
        our_vms, sdk_vms,
        "Wasm VMs per pod: the filter vs the SDK floor"
    );
    // The filter's VMs each report their linear memory.
    assert!(
        of(Plugins::Filter).all(|r| r.footprint.linear > 0),
        "{rows:#?}"
    );

    // Pushes: every one served (config_pushes fails otherwise), no VM
    // added, and the pod's memory where it was: tcmalloc's bytes in use
    // within 2 MiB (an old config kept per push would be 100 of them).
    assert_eq!(pushes.apply_to_serving.len(), PUSHES);
    assert_eq!(
        pushes.after.vms, pushes.before.vms,
        "VMs after {PUSHES} pushes"
    );
    let grew = mib(pushes.after.in_use) - mib(pushes.before.in_use);
    assert!(
        grew < 2.0,
        "tcmalloc in use grew {grew:.1} MiB over {PUSHES} pushes: {:?} -> {:?}",
        pushes.before,
        pushes.after
    );
}
