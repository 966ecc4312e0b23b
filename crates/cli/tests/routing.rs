//! `hybridmesh validate` checks the routing the filter's preference needs
//! (`hybridmesh_filter_core::routing`): each `prefer-<cluster>` subset keeps
//! every endpoint, puts that cluster first by `failoverPriority`, has outlier
//! detection with `maxEjectionPercent: 100`; each preference route retries
//! into the next priority. Every check starts from what `render` writes
//! (`wasmplugin/`, which validates clean) and breaks one thing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap()
}

/// `validate` over the rendered manifests with `edit` applied to the
/// DestinationRules and VirtualServices text: (exit code, stdout).
fn validate(edit: impl Fn(String, String) -> (String, String)) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let (dr, vs) = edit(
        read("wasmplugin/base/destinationrules.yaml"),
        read("wasmplugin/base/virtualservices.yaml"),
    );
    let files = [
        ("dr.yaml", dr),
        ("vs.yaml", vs),
        (
            "wp.yaml",
            read("wasmplugin/overlays/anthos/wasmplugins.yaml"),
        ),
    ];
    let mut args = vec!["validate".to_string()];
    for (name, text) in &files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        args.push(p.display().to_string());
    }
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .current_dir(workspace())
        .args(&args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn unchanged(dr: String, vs: String) -> (String, String) {
    (dr, vs)
}

#[test]
fn the_rendered_routing_is_clean() {
    let (code, out) = validate(unchanged);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_preference_subset_that_selects_its_cluster_has_nothing_to_fail_over_to() {
    let (code, out) = validate(|dr, vs| {
        (
            dr.replacen(
                "    - name: prefer-anthos\n",
                "    - name: prefer-anthos\n      labels: {topology.istio.io/cluster: anthos}\n",
                1,
            ),
            vs,
        )
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("\"prefer-anthos\" selects cluster \"anthos\" by label, so it holds only that cluster's endpoints and Envoy has nothing to fail over to"),
        "{out}"
    );
}

#[test]
fn max_ejection_percent_below_100_stops_a_full_failover() {
    let (code, out) = validate(|dr, vs| {
        (
            dr.replace("maxEjectionPercent: 100", "maxEjectionPercent: 10"),
            vs,
        )
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("outlierDetection.maxEjectionPercent is 10, expected 100"),
        "{out}"
    );
}

#[test]
fn without_outlier_detection_istiod_applies_no_failover() {
    let (code, out) = validate(|dr, vs| {
        let mut kept = Vec::new();
        let mut skipping = false;
        for line in dr.lines() {
            if line.trim_start().starts_with("outlierDetection:") {
                skipping = true;
                continue;
            }
            if skipping && line.starts_with("          ") {
                continue;
            }
            skipping = false;
            kept.push(line);
        }
        (kept.join("\n") + "\n", vs)
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no outlierDetection (here or on the rule): istiod applies failoverPriority only with outlier detection"),
        "{out}"
    );
}

#[test]
fn a_failover_priority_for_another_cluster_is_named() {
    let (code, out) = validate(|dr, vs| {
        (
            dr.replacen(
                "failoverPriority: [topology.istio.io/cluster=anthos]",
                "failoverPriority: [topology.istio.io/cluster=gke]",
                1,
            ),
            vs,
        )
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failoverPriority: [\"topology.istio.io/cluster=gke\"], expected [\"topology.istio.io/cluster=anthos\"] first"),
        "{out}"
    );
}

#[test]
fn retries_that_cannot_leave_the_failed_priority_are_named() {
    for (from, to, says) in [
        (
            "        attempts: 3\n",
            "        attempts: 1\n",
            "retries.attempts: 1, expected at least 2 (3 recommended): Envoy's previous_priorities (update frequency 2) first leaves the failed priority on the third attempt",
        ),
        (
            "        retryRemoteLocalities: true\n",
            "        retryRemoteLocalities: false\n",
            "retries.retryRemoteLocalities: expected true: without it every retry stays in cluster",
        ),
        (
            "retryOn: connect-failure,refused-stream,unavailable,cancelled,reset,503",
            "retryOn: connect-failure,refused-stream,unavailable,cancelled,reset",
            "retries.retryOn: no 503 (or 5xx / gateway-error): an application that is down behind its sidecar answers 503",
        ),
        (
            "retryOn: connect-failure,refused-stream,unavailable,cancelled,reset,503",
            "retryOn: connect-failure,refused-stream,unavailable,cancelled,503",
            "retries.retryOn: no reset (or 5xx / gateway-error): a connection cut after it was made",
        ),
    ] {
        let (code, out) = validate(|dr, vs| (dr, vs.replace(from, to)));
        assert_eq!(code, 1, "{to}: {out}");
        assert!(out.contains(says), "{to}: {out}");
    }
}
