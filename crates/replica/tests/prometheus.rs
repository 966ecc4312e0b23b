//! A real Prometheus (Debian's package, `scripts/setup-prometheus`) scrapes
//! every Envoy of the replica once a second while the seed walk-through runs
//! (`hybridmesh demo`'s steps), then a pinned cluster is made to fail until
//! the filter ejects it. Then:
//!
//! - what Prometheus stored for the filter's counters equals what each Envoy's
//!   `/stats/prometheus` says, label by label (scraping and Envoy's tag
//!   extraction of the labels, end to end);
//! - every panel of `dashboards/hybridmesh.json` returns the series the walk
//!   made (both directions, the failover, the refusals, the ejection, each
//!   sidecar's memory);
//! - the docs' queries (`docs/src/operator/observability.md`) are the dashboard's.
//!
//! Needs Envoy (`scripts/setup-envoy`), Prometheus and the filter's `.wasm`;
//! without them this FAILS with what to run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{examples, require_envoy, workspace};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hybridmesh_replica::demo::{self, example_config, Out};
use hybridmesh_replica::{http, process, Replica};
use hybridmesh_scenario::RequestSpec;
use serde_json::{json, Value};

/// Where Prometheus listens: loopback, an address of its own.
const PROMETHEUS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 77, 9, 1), 9090);

/// The window the dashboard's `$__rate_interval` stands for here: longer
/// than the whole walk, so every increase is inside it.
const WINDOW: &str = "10m";

struct Prometheus {
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of a query's result: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// An instant query: the result vector.
fn query(q: &str) -> Vec<Sample> {
    let path = format!("/api/v1/query?query={}", process::urlencode(q));
    let r = http::get(SocketAddr::V4(PROMETHEUS), &path).unwrap();
    let v: Value = serde_json::from_str(&r.text())
        .unwrap_or_else(|e| panic!("{q}: not JSON ({e}): {}", r.text()));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

/// Waits until Prometheus has scraped `q` at `at_least` or more.
fn scraped(q: &str, at_least: f64) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if query(q).iter().any(|(_, v)| *v >= at_least) {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "Prometheus has no {q} >= {at_least} after 30s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The filter's counters as one Envoy exposes them, summed over every
/// process: `name{labels}` -> value, `instance`/`job` aside.
fn counters_from_envoys(r: &Replica) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in r.envoys() {
        for line in e.prometheus().unwrap().lines() {
            if line.starts_with("hybridmesh_") && line.contains("_total") {
                let (series, value) = line.rsplit_once(' ').unwrap();
                *out.entry(series.to_string()).or_insert(0.0) += value.parse::<f64>().unwrap();
            }
        }
    }
    out
}

/// The same from Prometheus: `sum by (every label but instance/job)`.
fn counters_from_prometheus() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in query(r#"{__name__=~"hybridmesh_.*_total"}"#) {
        let name = labels["__name__"].clone();
        let rest: Vec<String> = labels
            .iter()
            .filter(|(k, _)| !["__name__", "instance", "job", "proxy"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        let series = if rest.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", rest.join(","))
        };
        *out.entry(series).or_insert(0.0) += value;
    }
    out
}

/// Envoy prints labels in its own order; Prometheus sorts them.
fn normalized(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| {
            let key = match k.split_once('{') {
                Some((name, rest)) => {
                    let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => k.clone(),
            };
            (key, *v)
        })
        .collect()
}

#[derive(Default)]
struct Scrape {
    dir: PathBuf,
    prometheus: Option<Prometheus>,
    transcript: Vec<String>,
    /// What Envoy and Prometheus said at the end: (from Envoy, from Prometheus).
    counters: Option<(BTreeMap<String, f64>, BTreeMap<String, f64>)>,
    /// Each dashboard panel's title and result.
    panels: Vec<(String, Vec<Sample>)>,
    /// The gke client's ejections of anthos, as Envoy counts them.
    ejections: Option<u64>,
    /// Sidecars running the filter (their memory gauge should be scraped).
    filter_proxies: usize,
    problems: Vec<String>,
}

impl Scrape {
    fn start(&mut self, r: &Replica) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut configs = Vec::new();
        for e in r.envoys() {
            configs.push(json!({"targets": [e.admin.to_string()], "labels": {"proxy": e.name}}));
        }
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "replica",
                "metrics_path": "/stats/prometheus",
                "static_configs": configs,
            }],
        });
        // Prometheus reads YAML; JSON is YAML.
        let path = self.dir.join("prometheus.yml");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let log = std::fs::File::create(self.dir.join("prometheus.log"))?;
        let data = self.dir.join("data");
        let _ = std::fs::remove_dir_all(&data);
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start prometheus ({e}): run scripts/setup-prometheus")
            })?;
        let p = Prometheus { child };
        let t = Instant::now();
        loop {
            if http::get(SocketAddr::V4(PROMETHEUS), "/-/ready").is_ok_and(|r| r.status == 200) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "prometheus not ready in 30s; see {}",
                self.dir.join("prometheus.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.prometheus = Some(p);
        Ok(())
    }

    /// A second act, once the walk has created every series: Prometheus
    /// cannot see a counter go from absent to N, so `rate()` misses a label
    /// set's first requests (those counted before its first scrape); these
    /// are the increases the panels must show. A cluster-local refusal;
    /// example 02's failover rule; a rule preferring anthos while anthos answers 503 (Envoy moves each
    /// request to gke: failovers); the same rule pinned (the filter ejects
    /// anthos, twice, with its ejection time between); every request with a
    /// spoofed source header from the application.
    fn again(&mut self, r: &mut Replica) -> anyhow::Result<()> {
        let examples = examples();
        let request = |from: &str| RequestSpec {
            headers: [(
                "x-hybridmesh-source-cluster".to_string(),
                "evil".to_string(),
            )]
            .into(),
            ..RequestSpec::get(from, "echo-svc.default")
        };
        anyhow::ensure!(
            r.push_config("all", &example_config(&examples, "04-cluster-local", &[])?)?,
            "examples/04 was rejected"
        );
        let mut refused = request("gke");
        refused.direct = Some("anthos".into());
        refused.peer = Some(r.topology.spiffe("sleep", "sleep"));
        refused
            .headers
            .insert("x-hybridmesh-source-cluster".into(), "gke".into());
        for _ in 0..3 {
            let o = r.request(&refused, "gke")?;
            anyhow::ensure!(
                o.status == 403,
                "a cluster-local call from gke answered {}",
                o.status
            );
            std::thread::sleep(Duration::from_millis(600));
        }
        // Example 02's failover rule from anthos (decision `failover`): the
        // walk's own failover requests come in one burst before a reload of
        // the client sidecars resets their counters, too few scrapes for
        // rate() to be sure to see them (it did not once the replica's
        // drains got quicker).
        anyhow::ensure!(
            r.push_config(
                "all",
                &example_config(&examples, "02-locality-failover", &[])?
            )?,
            "examples/02 was rejected"
        );
        for _ in 0..6 {
            let o = r.request(&request("anthos"), "anthos")?;
            anyhow::ensure!(
                o.status == 200,
                "a failover-rule request answered {}",
                o.status
            );
            std::thread::sleep(Duration::from_millis(600));
        }
        let mut cfg: Value = serde_json::from_slice(&example_config(
            &examples,
            "03-weighted-80-20",
            &[(
                "outlierDetection",
                json!({"consecutive5xxErrors": 3, "baseEjectionTime": demo::SHORT_EJECTION}),
            )],
        )?)?;
        cfg["routes"][0]["distribute"] =
            json!([{"from": "asia-northeast1/*", "to": {"gke": 0, "anthos": 100}}]);
        anyhow::ensure!(
            r.push_config("all", &serde_json::to_vec(&cfg)?)?,
            "the anthos-preferring config was rejected"
        );
        r.fail("anthos", 503)?;
        for _ in 0..4 {
            let o = r.request(&request("gke"), "gke")?;
            anyhow::ensure!(o.status == 200, "a failover answered {}", o.status);
            std::thread::sleep(Duration::from_millis(600));
        }
        cfg["routes"][0]["pinned"] = json!(true);
        anyhow::ensure!(
            r.push_config("all", &serde_json::to_vec(&cfg)?)?,
            "the pinned config was rejected"
        );
        let ejection: Duration = demo::SHORT_EJECTION
            .trim_end_matches('s')
            .parse::<u64>()
            .map(Duration::from_secs)?;
        for round in 0..2 {
            for _ in 0..4 {
                r.request(&request("gke"), "gke")?;
            }
            if round == 0 {
                // The second ejection must come after Prometheus has seen the
                // first (the series starts at 1): an increase it can see.
                scraped(
                    r#"sum(hybridmesh_ejections_total{destination_cluster="anthos"})"#,
                    1.0,
                )?;
                std::thread::sleep(ejection + Duration::from_millis(1500));
            }
        }
        r.fail("anthos", 200)?;
        // Both directions again, over a few of the filter's 1 s flushes.
        anyhow::ensure!(
            r.push_config("all", &example_config(&examples, "01-default-spread", &[])?)?,
            "examples/01 was rejected"
        );
        for k in 0..40 {
            let from = if k % 2 == 0 { "gke" } else { "anthos" };
            r.request(&request(from), from)?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn finish(&mut self, r: &mut Replica) -> anyhow::Result<()> {
        self.again(r)?;
        self.filter_proxies = r
            .envoys()
            .iter()
            .filter(|e| {
                e.prometheus()
                    .is_ok_and(|t| t.contains("hybridmesh_vm_memory_bytes"))
            })
            .count();
        // The filter flushes its counters on its 1 s tick: wait for Envoy's
        // figures to stop moving, then for Prometheus to have them.
        let mut envoy = counters_from_envoys(r);
        let t = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = counters_from_envoys(r);
            if now == envoy {
                break;
            }
            envoy = now;
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "counters kept moving"
            );
        }
        self.ejections = r.metric(
            "gke.client",
            "destination_cluster=.=anthos;.;hybridmesh_ejections_total",
        )?;
        let envoy = normalized(&envoy);
        let t = Instant::now();
        let prom = loop {
            let p = normalized(&counters_from_prometheus());
            if p == envoy || t.elapsed() > Duration::from_secs(20) {
                break p;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        self.counters = Some((envoy, prom));
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
            workspace().join("dashboards/hybridmesh.json"),
        )?)?;
        for p in dashboard["panels"].as_array().unwrap() {
            let expr = p["targets"][0]["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", WINDOW);
            self.panels
                .push((p["title"].as_str().unwrap().to_string(), query(&expr)));
        }
        Ok(())
    }
}

impl Out for Scrape {
    fn title(&mut self, s: &str) {
        self.transcript.push(format!("== {s}"));
    }
    fn note(&mut self, s: &str) {
        self.transcript.push(s.to_string());
    }
    fn line(&mut self, s: &str) {
        self.transcript.push(s.to_string());
    }
    fn check(&mut self, ok: bool, what: &str, detail: &str) {
        self.transcript.push(format!(
            "[{}] {what} ({detail})",
            if ok { "ok" } else { "FAIL" }
        ));
    }
    fn started(&mut self, r: &Replica) {
        if let Err(e) = self.start(r) {
            self.problems.push(format!("{e:#}"));
        }
    }
    fn finishing(&mut self, r: &mut Replica) {
        if self.prometheus.is_some() {
            if let Err(e) = self.finish(r) {
                self.problems.push(format!("{e:#}"));
            }
        }
    }
}

/// The series of a panel whose labels include `want`, and their values.
fn series(panels: &[(String, Vec<Sample>)], title: &str, want: &[(&str, &str)]) -> Vec<f64> {
    let (_, result) = panels
        .iter()
        .find(|(t, _)| t == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    result
        .iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect()
}

#[test]
fn prometheus_scrapes_the_walk_through_and_every_dashboard_panel_shows_it() {
    require_envoy();
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "prometheus is missing: run scripts/setup-prometheus (apt-get install prometheus)"
    );
    let mut s = Scrape {
        dir: workspace().join("target/mesh-run/prometheus-scrape"),
        ..Scrape::default()
    };
    let report = demo::run(
        &workspace().join("examples"),
        &workspace(),
        "prometheus",
        &mut s,
    )
    .unwrap_or_else(|e| panic!("the replica did not start: {e:#}"));
    let transcript = s.transcript.join("\n");
    assert!(s.problems.is_empty(), "{:?}\n{transcript}", s.problems);
    assert!(
        report.ok(),
        "the walk-through failed: {:?}\n{transcript}",
        report.failures()
    );

    // Both ejections are counted, the second although a config push
    // replaced its root context within milliseconds (before its tick).
    assert_eq!(s.ejections, Some(2), "{transcript}");
    // Stored = exposed, label by label.
    let (envoy, prom) = s.counters.clone().unwrap();
    assert!(!envoy.is_empty(), "no hybridmesh counter in any Envoy");
    assert_eq!(prom, envoy, "Prometheus vs Envoy's /stats/prometheus");

    let p = &s.panels;
    for (title, result) in p {
        eprintln!("{title}: {result:?}");
    }
    let share = series(p, "Cross-network share", &[]);
    assert!(
        share.len() == 1 && share[0] > 0.0 && share[0] < 1.0,
        "cross-network share {share:?}"
    );
    for (from, to) in [
        ("gke", "gke"),
        ("gke", "anthos"),
        ("anthos", "gke"),
        ("anthos", "anthos"),
    ] {
        let v = series(
            p,
            "Requests by source and serving cluster",
            &[("source_cluster", from), ("destination_cluster", to)],
        );
        assert!(v.iter().sum::<f64>() > 0.0, "{from} -> {to}: {v:?}");
    }
    for decision in ["none", "weighted", "failover", "cluster_local"] {
        let v = series(p, "Decisions", &[("decision", decision)]);
        assert_eq!(v.len(), 1, "decision {decision}: {p:?}");
    }
    let weighted = series(p, "Decisions", &[("decision", "weighted")]);
    assert!(weighted[0] > 0.0, "weighted decisions {weighted:?}");
    let failovers = series(
        p,
        "Failovers per minute",
        &[
            ("preferred_cluster", "anthos"),
            ("destination_cluster", "gke"),
        ],
    );
    assert!(
        failovers.iter().sum::<f64>() > 0.0,
        "failovers {failovers:?}"
    );
    let refusals = series(p, "Refusals per minute (cluster-local, server side)", &[]);
    assert!(refusals.iter().sum::<f64>() > 0.0, "refusals {refusals:?}");
    let ejections = series(
        p,
        "Ejections (the filter's outlier detection)",
        &[("destination_cluster", "anthos")],
    );
    assert!(
        ejections.iter().sum::<f64>() > 0.0,
        "ejections {ejections:?}"
    );
    let spoofed = series(p, "Spoofed headers removed", &[]);
    assert!(spoofed.iter().sum::<f64>() > 0.0, "spoofed {spoofed:?}");
    let memory = series(p, "Filter memory per proxy", &[]);
    assert_eq!(memory.len(), s.filter_proxies, "{memory:?}");
    // Each proxy's two VMs (main thread and worker; both plugins share
    // them), once each: 2.1 MiB here, not a sum that grows with every config
    // push (it read 22-32 MiB before the gauge was kept per VM).
    assert!(
        memory
            .iter()
            .all(|m| *m >= 65536.0 && *m <= 4.0 * 1048576.0),
        "{memory:?}"
    );

    // The docs' queries are the dashboard's (`5m` for `$__rate_interval`).
    let readme =
        std::fs::read_to_string(workspace().join("docs/src/operator/observability.md")).unwrap();
    let block = readme
        .split("```promql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```promql block in docs/src/operator/observability.md");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("dashboards/hybridmesh.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
        })
        .collect();
    let queries: Vec<&str> = block
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        queries, exprs,
        "docs/src/operator/observability.md vs dashboards/hybridmesh.json"
    );
}
