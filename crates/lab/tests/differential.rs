//! The three-way differential of issue #13: every example scenario on the
//! mesh whose Envoy config istiod computes (`istio-lab/`), on the replica
//! whose config is written by hand after istiod's, and in the wasmtime
//! harness; request by request.
//!
//! Needs root, Envoy (`scripts/setup-envoy`), the filter's `.wasm` and the
//! lab's binaries (`istio-lab/build.sh`, 15-17 min the first time); without
//! them this test FAILS with what to run. `scripts/test` does all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridmesh_lab::demo::{
    article_failover, article_failover_problems, article_walks, expects_unhealthy_endpoint,
};
use hybridmesh_lab::{Lab, LabOptions};
use hybridmesh_ops::support;
use hybridmesh_scenario::runner::Backend as _;
use hybridmesh_scenario::runner::{run_on, ScenarioReport};
use hybridmesh_scenario::{RequestSpec, Scenario};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn wasm() -> PathBuf {
    let path = std::env::var_os("HYBRIDMESH_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/wasm32-wasip1/wasm/hybridmesh_filter.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/build-wasm`",
        path.display()
    );
    path
}

/// Disagreements measured and explained, each a prefix of a report line; a
/// new one, or one of these no longer seen, fails the test. Empty since the
/// lab has a direct mTLS test peer (`istio-lab/peer.py`).
const KNOWN: &[(&str, &str)] = &[];

/// One backend's report per example.
struct Run {
    name: String,
    harness: ScenarioReport,
    replica: ScenarioReport,
    lab: Option<ScenarioReport>,
    not_played: Option<String>,
    /// Routes the lab read from the application's headers that Envoy's access log contradicts.
    route_problems: Vec<String>,
}

#[test]
fn every_example_agrees_on_istiod_config_the_hand_shaped_replica_and_the_harness() {
    let root = workspace();
    let module = proxy_wasm_host::Module::from_file(wasm()).unwrap();
    // HYBRIDMESH_LAB_ISTIO=1.30 runs that release (versions.tsv); the lab
    // and the replica both run the Envoy it ships.
    // HYBRIDMESH_LAB_ISTIOD_ENV="PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false ..."
    // runs both istiods with those settings.
    let opts = LabOptions {
        istiod_env: std::env::var("HYBRIDMESH_LAB_ISTIOD_ENV")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        wasm: wasm(),
        ..LabOptions::for_checkout(&root)
    };
    let release = opts
        .istio
        .clone()
        .or_else(support::newest_istio)
        .expect("versions.tsv names an Istio release");
    let envoy_version = support::envoy_of_istio(&release)
        .unwrap_or_else(|| panic!("Istio {release} is not a release of versions.tsv"));
    let envoy = support::envoy_path(&root, &envoy_version).unwrap_or_else(|e| panic!("{e:#}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().join("scenario.yaml"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    // HYBRIDMESH_LAB_EXAMPLES=02,04 plays only those (while debugging; the
    // ledger is then not checked for what was left out).
    let only = std::env::var("HYBRIDMESH_LAB_EXAMPLES").ok();
    if let Some(only) = &only {
        files.retain(|f| {
            only.split(',').any(|o| {
                f.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(o)
            })
        });
    }
    // The harness and the replica first (the replica picks free loopback
    // ranges; the lab's control planes hold some while they run).
    let mut runs = Vec::new();
    for f in &files {
        let s = Scenario::load(f).unwrap();
        let name = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let harness =
            hybridmesh_sim::run::run(&s, &hybridmesh_sim::run::Engine::wasm(module.clone()));
        let mut o =
            hybridmesh_replica::backend::options(&s, &root, &format!("lab-diff-{name}")).unwrap();
        o.envoy = envoy.clone();
        let mut replica = hybridmesh_replica::Replica::start(&o)
            .unwrap_or_else(|e| panic!("{name}: the replica did not start: {e:#}"));
        let replica_report = run_on(&s, &mut replica);
        drop(replica);
        runs.push(Run {
            name,
            harness,
            replica: replica_report,
            lab: None,
            not_played: None,
            route_problems: Vec::new(),
        });
    }
    let mut lab =
        Lab::start(&root, &opts).unwrap_or_else(|e| panic!("the Istio lab did not start: {e:#}"));
    // What runs is what the release ships: its istiod and pilot-agent, and
    // the Envoy every sidecar reports.
    let versions = lab.versions().unwrap();
    println!(
        "Istio {} (istio.io/istio {}), Envoy {}",
        versions.istio, versions.istio_module, versions.envoy
    );
    assert_eq!(
        (versions.istio.as_str(), versions.envoy.as_str()),
        (release.as_str(), envoy_version.as_str())
    );
    // Every pod's workload certificate came from its cluster's istiod CA (a
    // CSR with the pod's service-account token), none is mounted: 4 pods
    // per cluster, 4 certificates issued.
    for c in ["gke", "anthos"] {
        assert_eq!(
            lab.istiod_metric(c, "citadel_server_success_cert_issuance_count")
                .unwrap(),
            4.0,
            "{c}: certificates istiod's CA issued"
        );
    }
    // The filter came the way it comes in a cluster: pushed to a private
    // registry, pulled by every istio-agent with the pull secret, at the
    // digest the committed release pins.
    let delivery = lab
        .delivery()
        .expect("the lab pushed the filter's image")
        .clone();
    assert!(
        delivery.url.starts_with("oci://127.60.0.1:5443/"),
        "{delivery:?}"
    );
    assert!(
        delivery.pinned_as_rendered,
        "the .wasm under test is not the release wasmplugin/ pins (image sha256 {}): scripts/release",
        delivery.sha256
    );
    let fetches = lab.wasm_fetches().unwrap();
    // Each of the 6 sidecars' agents fetches it once per plugin (client and
    // server: two ECDS resources, fetched side by side), and nothing failed.
    assert_eq!(
        fetches,
        std::collections::BTreeMap::from([("success".to_string(), 12.0)]),
        "istio_agent_wasm_remote_fetch_count over the lab's sidecars"
    );
    for (f, run) in files.iter().zip(&mut runs) {
        let s = Scenario::load(f).unwrap();
        lab.reset().unwrap();
        let mut refused = None;
        for c in ["gke", "anthos"] {
            if let Err(e) = s.config_for(c).and_then(|cfg| lab.apply_config(c, &cfg)) {
                refused = Some(format!("{e:#}"));
            }
        }
        match refused {
            Some(why) => run.not_played = Some(why),
            None => {
                run.lab = Some(run_on(&s, &mut lab));
                for p in lab.unconfirmed_routes() {
                    run.route_problems.push(p);
                }
            }
        }
    }
    // The filter's counters as Prometheus scrapes them from the sidecars,
    // with the labels wasmplugin/meshconfig-stats.yaml's extraStatTags
    // promise extracted from the names the filter gives them (`decision=.=weighted;.;...hybridmesh_requests_total`): a
    // label left unextracted would leave the series named
    // `decision___weighted___..._hybridmesh_requests_total`.
    for c in ["gke", "anthos"] {
        let text = lab.prometheus(c).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("hybridmesh_") && l.contains("_total"))
            .collect();
        assert!(!series.is_empty(), "{c}: no hybridmesh_*_total series");
        let unextracted: Vec<&&str> = series
            .iter()
            .filter(|l| !l.starts_with("hybridmesh_"))
            .collect();
        assert!(
            unextracted.is_empty(),
            "{c}: labels left in the names: {unextracted:#?}"
        );
        let requests: Vec<&&str> = series
            .iter()
            .filter(|l| l.starts_with("hybridmesh_requests_total{"))
            .collect();
        assert!(!requests.is_empty(), "{c}: no hybridmesh_requests_total");
        for line in requests {
            for label in [
                "source_cluster",
                "destination_cluster",
                "decision",
                "cross_network",
            ] {
                assert!(
                    line.contains(&format!("{label}=\"")),
                    "{c}: {label} is not a Prometheus label: {line}"
                );
            }
        }
    }
    // The same counters in a Prometheus server, as a cluster's monitoring
    // has them: it finds the pods through each apiserver and scrapes what
    // the annotations Istio's injector wrote point at (up.sh). What it stored
    // equals what every sidecar serves, label by label, plus the cluster,
    // namespace and pod it came from.
    let compared = lab
        .scraped_as_served("hybridmesh_", Duration::from_secs(30))
        .unwrap();
    assert!(compared > 0, "no hybridmesh_ series compared");
    eprintln!("Prometheus stored the {compared} hybridmesh_ series the sidecars serve");
    // A bad WasmPlugin applied with kubectl: the lab has no istiod
    // validation webhook (as a cluster whose webhook is not reachable), so
    // what stops it is the CRD's structural schema in the API server.
    let bad_plugin = |spec: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: bad, namespace: istio-system}}\nspec: {{url: 'http://127.60.0.1:8080/hybridmesh_filter.wasm', {spec}}}\n"
        )
    };
    let e = lab
        .kubectl_apply("gke", &bad_plugin("failStrategy: FAIL_SOMETIMES"))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("Unsupported value: \"FAIL_SOMETIMES\""),
        "{e:#}"
    );
    let e = lab
        .kubectl_apply("gke", &bad_plugin("pluginConfg: {routes: []}"))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("unknown field \"spec.pluginConfg\""),
        "{e:#}"
    );
    // The seed article's own locality failover steps, as its commands
    // (`kubectl --context anthos apply -f destinationrule.yaml`, two drains):
    // the live routing follows; as the article's DestinationRule stands on
    // Istio 1.31, and with minHealthPercent.
    let mut failover_problems = Vec::new();
    for walk in article_walks(&release, &opts.istiod_env) {
        let phases = article_failover(&mut lab, &root.join("examples"), &walk, false)
            .unwrap_or_else(|e| panic!("the article's failover steps: {e:#}"));
        println!("{}", walk.about);
        for p in &phases {
            println!(
                "  {}: Anthos {}, GKE {}, of {}",
                p.did.join("; "),
                p.served("Anthos"),
                p.served("GKE"),
                p.answers.len()
            );
        }
        for p in article_failover_problems(&walk, &phases) {
            failover_problems.push(format!("{}: {p}", walk.about));
        }
        assert!(
            phases[0]
                .endpoints
                .iter()
                .any(|e| e.ends_with("priority 1")),
            "the DestinationRule put no endpoint behind the local ones: {:?}",
            phases[0].endpoints
        );
        // What EDS holds with one pod drained: the pod as unhealthy, or not at all.
        let drained = phases[1]
            .endpoints
            .iter()
            .find(|e| e.starts_with("127.62.1.9:"));
        if expects_unhealthy_endpoint(&walk) {
            assert!(
                drained.is_some_and(|e| e.contains("failed_eds_health")),
                "{:?}",
                phases[1].endpoints
            );
        } else {
            assert_eq!(drained, None, "{:?}", phases[1].endpoints);
        }
        if !failover_problems.is_empty() {
            for p in &phases {
                failover_problems.push(format!(
                    "  {}:\n    {}",
                    p.did.join("; "),
                    p.endpoints.join("\n    ")
                ));
            }
        }
    }
    // The filter's failover route with one of Anthos's two pods not Ready:
    // the rendered prefer-anthos subset (minHealthPercent: 1) keeps every
    // request in Anthos (without it, Istio 1.31 sent the pod as an unhealthy
    // endpoint and 12 of 40 went to GKE).
    let failover_config: serde_json::Value = serde_yaml_ng::from_slice(
        &std::fs::read(root.join("examples/02-locality-failover/config.yaml")).unwrap(),
    )
    .unwrap();
    let failover_config = serde_json::to_vec(&failover_config).unwrap();
    lab.reset().unwrap();
    for c in ["gke", "anthos"] {
        assert!(lab.apply_config(c, &failover_config).unwrap());
    }
    lab.drain_pod("anthos", 0).unwrap();
    let mut partial = Vec::new();
    for _ in 0..40 {
        let o = lab
            .request(&RequestSpec::get("anthos", "echo-svc.default"), "anthos")
            .unwrap();
        partial.push((o.status, o.body.trim_end().to_string(), o.route));
    }
    lab.reset().unwrap();
    let stayed = partial
        .iter()
        .filter(|(s, b, r)| {
            *s == 200
                && b == "\"Anthos!!!\""
                && r.as_deref()
                    == Some("outbound|80|prefer-anthos|echo-svc.default.svc.cluster.local")
        })
        .count();
    println!("failover route, one of Anthos's two pods not Ready: {stayed} of 40 stayed in Anthos");
    let run_dir = lab.run_dir().to_path_buf();
    drop(lab);
    assert_eq!(
        stayed,
        partial.len(),
        "the failover route with one of Anthos's pods not Ready: {partial:?}"
    );
    assert!(
        failover_problems.is_empty(),
        "the article's failover steps on the lab (with anthos's sleep sidecar's echo-svc endpoints after each step):\n{}",
        failover_problems.join("\n")
    );

    let mut problems = Vec::new();
    let mut compared = 0;
    let mut table = String::from(
        "| example | requests | lab = harness | lab = replica | steps passing (harness / replica / lab) |\n|---|---|---|---|---|\n",
    );
    for run in &runs {
        for p in &run.route_problems {
            problems.push(format!("{}: {p}", run.name));
        }
        let Some(lab) = &run.lab else {
            let why = run.not_played.clone().unwrap_or_default();
            problems.push(format!("{}: not played on the lab: {why}", run.name));
            let _ = writeln!(table, "| {} | not played: {why} | | | |", run.name);
            continue;
        };
        let (mut requests, mut same_h, mut same_r) = (0, 0, 0);
        for ((h, r), l) in run
            .harness
            .steps
            .iter()
            .zip(&run.replica.steps)
            .zip(&lab.steps)
        {
            if r.ok != h.ok {
                problems.push(format!(
                    "{}: step {:?}: harness {}, replica {}: {:?} / {:?}",
                    run.name,
                    h.name,
                    if h.ok { "passes" } else { "fails" },
                    if r.ok { "passes" } else { "fails" },
                    h.problems,
                    r.problems
                ));
            }
            if l.ok != h.ok {
                problems.push(format!(
                    "{}: step {:?}: harness {}, lab {}: {:?}",
                    run.name,
                    l.name,
                    if h.ok { "passes" } else { "fails" },
                    if l.ok { "passes" } else { "fails" },
                    l.problems
                ));
            }
            for (k, (((ho, random), (ro, _)), (lo, _))) in h
                .outcomes
                .iter()
                .zip(&r.outcomes)
                .zip(&l.outcomes)
                .enumerate()
            {
                if *random {
                    continue;
                }
                requests += 1;
                let (a, b, c) = (ho.differential(), ro.differential(), lo.differential());
                if a == c {
                    same_h += 1;
                }
                if b == c {
                    same_r += 1;
                }
                if a != c || b != c {
                    problems.push(format!(
                        "{}: step {:?} request {}:\n harness {a}\n replica {b}\n lab     {c}",
                        run.name,
                        l.name,
                        k + 1
                    ));
                }
            }
        }
        compared += requests;
        let passing = |r: &ScenarioReport| r.steps.iter().filter(|s| s.ok).count();
        let _ = writeln!(
            table,
            "| {} | {requests} | {same_h} | {same_r} | {} / {} / {} of {} |",
            run.name,
            passing(&run.harness),
            passing(&run.replica),
            passing(lab),
            lab.steps.len()
        );
    }
    let out = root.join("target/istio-lab/differential.md");
    std::fs::write(&out, &table).unwrap();
    println!("{table}\nlab logs: {}", run_dir.display());
    for p in &problems {
        println!("- {p}");
    }
    let unexplained: Vec<&String> = problems
        .iter()
        .filter(|p| !KNOWN.iter().any(|(k, _)| p.starts_with(k)))
        .collect();
    let gone: Vec<&str> = KNOWN
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| only.is_none() && !problems.iter().any(|p| p.starts_with(k)))
        .collect();
    assert!(
        only.is_some() || compared > 150,
        "only {compared} requests compared"
    );
    assert!(
        unexplained.is_empty() && gone.is_empty(),
        "{table}\nunexplained disagreement(s):\n{}\n\nknown disagreement(s) no longer seen:\n{}",
        unexplained
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        gone.join("\n")
    );
    if only.is_none() {
        let subject = support::Subject::Istio(release.clone());
        let record = |check: &str, detail: String| {
            support::record(&root, &subject, &versions.envoy, check, &detail).unwrap();
        };
        let examples = format!(
            "{} examples, {compared} requests: the same on the harness, the replica and the lab",
            runs.len()
        );
        if opts.traffic_extensions {
            record("traffic-extension", examples);
        } else {
            record("examples", examples);
            record(
                "walk-through",
                "the article's DestinationRule and drains on istiod's config".to_string(),
            );
        }
    }
}
