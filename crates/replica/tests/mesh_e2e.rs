//! End to end in real Envoy 1.40: the seed's two-cluster mesh as Envoy
//! processes on loopback (crates/replica/src), the filter's `.wasm` in every
//! sidecar by ECDS, and every outcome of the seed's walk-through asserted.
//!
//! Needs Envoy (`scripts/setup-envoy`, which `scripts/test` runs first) and
//! the filter's `.wasm`. Without them these tests FAIL with what to run; they
//! never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{examples, require_envoy, workspace};

use std::path::Path;
use std::sync::Mutex;

use hybridmesh_replica::demo::{self, Out};
use hybridmesh_replica::{process, Options, Replica};
use hybridmesh_scenario::{config_json, ConfigRef, Mesh, RequestSpec};

/// One replica at a time (2 cores; each replica is 9 Envoy processes).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Default)]
struct Transcript(Vec<String>);

impl Out for Transcript {
    fn title(&mut self, s: &str) {
        self.0.push(format!("=== {s}"));
    }
    fn note(&mut self, s: &str) {
        self.0.push(s.to_string());
    }
    fn line(&mut self, s: &str) {
        self.0.push(format!("    {s}"));
    }
    fn check(&mut self, ok: bool, what: &str, detail: &str) {
        self.0.push(format!(
            "{} {what}   {detail}",
            if ok { "ok " } else { "FAIL" }
        ));
    }
}

/// Every outcome of the issue, by the walk-through's check names.
const OUTCOMES: &[&str] = &[
    // 1) default spread
    "from gke: both clusters serve",
    "from anthos: both clusters serve",
    "anthos's pods see x-hybridmesh-source-cluster: gke",
    "gke's pods see x-hybridmesh-source-cluster: anthos",
    // 2) locality failover with drains, one pod at a time, and back
    "on-prem clients stay on-prem",
    "one pod drained: the other on-prem pod serves",
    "the filter still prefers anthos; Envoy serves from GKE through its east-west gateway",
    "the failover shows in Prometheus with cluster, decision and network labels",
    "the request Envoy moved is counted: preferred anthos, served by gke",
    "back on-prem as soon as the pods are back in EDS",
    "Envoy's locality failover keeps on-prem traffic on-prem",
    "Envoy fails over to GKE without losing a request",
    "Envoy brings on-prem traffic home",
    // 3) cluster-local
    "echo-svc.default from anthos stays in anthos",
    "echo-svc.default.svc.cluster.local from gke stays in gke",
    "httpbin-svc.sleep still spans clusters",
    // 4) what only the filter adds
    "from gke: 80% stay in gke",
    "from anthos: 80% stay in anthos",
    "x-user: alice always lands in the same cluster",
    "x-user: bob always lands in the same cluster",
    "x-user: carol always lands in the same cluster",
    "no request lost: Envoy's retries serve anthos's share from gke",
    "every request Envoy moved is counted (hybridmesh_failed_over_total",
    "anthos is readmitted and gets its share again",
    "refused on the server side, and told why",
    "a plaintext peer's x-hybridmesh-source-cluster never reaches the application",
    // 5) ECDS
    "the new config serves at once, no process restarted",
    "bad-weights.yaml is rejected with a message naming the field; the old config keeps serving",
    "typo.yaml is rejected with a message naming the field; the old config keeps serving",
];

#[test]
fn the_seed_walkthrough_in_real_envoy() {
    require_envoy();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = Transcript::default();
    let report = demo::run(&examples(), &workspace(), "e2e", &mut t);
    let transcript = t.0.join("\n");
    let report = match report {
        Ok(r) => r,
        Err(e) => panic!("the replica did not start: {e:#}\n{transcript}"),
    };
    let mut problems = Vec::new();
    for want in OUTCOMES {
        match report.checks.iter().find(|c| c.what.starts_with(want)) {
            None => problems.push(format!("no check {want:?} ran")),
            Some(c) if !c.ok => problems.push(format!("{}: {} ({})", c.section, c.what, c.detail)),
            Some(_) => {}
        }
    }
    for c in report.failures() {
        let line = format!("{}: {} ({})", c.section, c.what, c.detail);
        if !problems.contains(&line) {
            problems.push(line);
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}\n\ntranscript:\n{transcript}\n\nlogs: target/mesh-run/e2e/logs",
        problems.len(),
        problems.join("\n  ")
    );
    // `hybridmesh trace` on the access logs the demo left behind sees every
    // request the demo sent, served where the demo saw it served.
    let mut text = String::new();
    for entry in std::fs::read_dir(&report.logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let parsed = hybridmesh_ops::trace::parse(&text);
    assert!(parsed.malformed.is_empty(), "{:?}", parsed.malformed);
    let matrix = hybridmesh_ops::trace::Matrix::of(parsed.hops.iter());
    assert_eq!(
        matrix.flows, report.served,
        "trace's matrix vs what the demo saw"
    );
    // The access log's header form (what trace reads when the filter writes
    // no record, `filterState: false`): each client-side line with a record,
    // its `hop` blanked, is rebuilt from the filter's headers as Envoy logged
    // them, and says the same as the record but for the decision.
    let mut compared = 0;
    let mut differ = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let recorded = hybridmesh_ops::trace::parse(line);
        let Some(record) = recorded.hops.first() else {
            continue;
        };
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["hop"] = serde_json::Value::Null;
        let rebuilt = hybridmesh_ops::trace::parse(&v.to_string());
        let Some(r) = rebuilt.hops.first() else {
            differ.push(format!("not rebuilt: {line}"));
            continue;
        };
        compared += 1;
        let same = (
            &r.request_id,
            &r.service,
            &r.source_cluster,
            &r.source_network,
            &r.target_cluster,
            &r.served_by,
            &r.served_network,
            &r.gateway,
            r.cross_network,
            r.status,
            &r.chain,
        ) == (
            &record.request_id,
            &record.service,
            &record.source_cluster,
            &record.source_network,
            &record.target_cluster,
            &record.served_by,
            &record.served_network,
            &record.gateway,
            record.cross_network,
            record.status,
            &record.chain,
        );
        if !same || r.decision != hybridmesh_ops::trace::UNRECORDED {
            differ.push(format!("record {record:?}\n  rebuilt {r:?}"));
        }
    }
    assert!(compared > 0, "no client-side line with a hop record");
    assert!(
        differ.is_empty(),
        "{} of {compared} lines differ between the hop record and the header form:\n{}",
        differ.len(),
        differ.join("\n")
    );
    eprintln!(
        "{} checks passed in {:.1}s ({} Envoy processes ready in {:.1}s)",
        report.checks.len(),
        report.seconds,
        report.processes,
        report.startup
    );
    support::record(
        "walk-through",
        &format!(
            "{} checks of the replica's walk-through",
            report.checks.len()
        ),
    );
}

/// Measured in Envoy 1.40: a bad FIRST config by ECDS leaves the listener
/// answering 500 (NFCF) until a good one arrives, which recovers at once.
#[test]
fn a_bad_first_config_answers_500_until_a_good_one_arrives() {
    require_envoy();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mesh: Mesh =
        serde_yaml_ng::from_str(&std::fs::read_to_string(examples().join("mesh.yaml")).unwrap())
            .unwrap();
    let mut o =
        Options::new(mesh, &workspace(), "e2e-bad-first").unwrap_or_else(|e| panic!("{e:#}"));
    let bad_dir = examples().join("07-bad-config");
    o.config = config_json(&bad_dir, &ConfigRef::Path("bad-weights.yaml".into())).unwrap();
    let mut r = Replica::start(&o).unwrap_or_else(|e| panic!("{e:#}"));
    let spec = RequestSpec::get("gke", "echo-svc.default");
    let first = r.request(&spec, "gke").unwrap();
    assert_eq!(first.status, 500, "{first:?}");
    assert!(r
        .logs("gke.client")
        .unwrap()
        .iter()
        .any(|(l, m)| l == "error" && m.contains("weights sum to 90")));
    let good = demo::example_config(&examples(), "05-per-cluster-subsets", &[]).unwrap();
    assert!(
        r.push_config("all", &good).unwrap(),
        "the good config was rejected"
    );
    let after = r.request(&spec, "gke").unwrap();
    assert_eq!(
        (after.status, after.target.as_deref()),
        (200, Some("gke")),
        "{after:?}"
    );
}

#[test]
fn a_missing_envoy_is_reported_with_what_to_run() {
    if std::env::var_os("HYBRIDMESH_ENVOY").is_some() {
        return; // the override is checked instead of the folder
    }
    let e = process::envoy_binary(Path::new("/nonexistent")).unwrap_err();
    assert!(format!("{e:#}").contains("scripts/setup-envoy"), "{e:#}");
}

// Every example on the harness, this replica and the mesh a real istiod
// configures, request by request: crates/lab/tests/differential.rs.
