//! The seed article's walk-through on the replica, with real Envoy proxies:
//! what a person would see (curl-like lines and hop records), and a check
//! per outcome. `hybridmesh demo` prints it; the end-to-end test asserts
//! every check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::{Options, Replica};
use hybridmesh_scenario::runner::curl_line;
use hybridmesh_scenario::Outcome;
use hybridmesh_scenario::{config_json, ConfigRef, Mesh, RequestSpec};

/// One outcome the walk-through checks.
#[derive(Debug, Clone)]
pub struct Check {
    pub section: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// What the walk-through found.
pub struct Report {
    pub checks: Vec<Check>,
    /// Every request sent through a client sidecar, by (from, served by or
    /// `none`): the access logs in `logs` must tell the same.
    pub served: std::collections::BTreeMap<(String, String), u64>,
    pub logs: PathBuf,
    pub seconds: f64,
    pub startup: f64,
    pub processes: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

/// How lines are shown (the demo colours them; the test keeps them).
pub trait Out {
    fn title(&mut self, s: &str);
    fn note(&mut self, s: &str);
    fn line(&mut self, s: &str);
    fn check(&mut self, ok: bool, what: &str, detail: &str);
    /// The replica is up, before the walk-through (a test starts scraping it
    /// here).
    fn started(&mut self, _replica: &Replica) {}
    /// The walk-through is done, before the replica stops (a test reads
    /// what was scraped here, or drives more traffic).
    fn finishing(&mut self, _replica: &mut Replica) {}
}

/// The ejection time the demo's configs use instead of the examples' minute.
pub const SHORT_EJECTION: &str = "4s";

struct Walk<'a> {
    r: Replica,
    examples: PathBuf,
    out: &'a mut dyn Out,
    section: String,
    checks: Vec<Check>,
}

/// Starts the replica of `mesh` and walks through the seed article.
pub fn run(
    examples: &Path,
    workspace: &Path,
    run_name: &str,
    out: &mut dyn Out,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mesh: Mesh = serde_yaml_ng::from_str(
        &std::fs::read_to_string(examples.join("mesh.yaml")).context("examples/mesh.yaml")?,
    )?;
    let mut o = Options::new(mesh, workspace, run_name)?;
    o.config = example_config(examples, "01-default-spread", &[])?;
    out.title(&format!(
        "starting the replica: real Envoy {} processes on loopback",
        crate::process::envoy_version(&o.envoy)?
    ));
    let r = Replica::start(&o)?;
    let processes = r.processes().len();
    for c in &r.topology.clusters {
        out.note(&format!(
            "{:<7} network {:<19} sleep sidecar {}:15001  east-west gateway {}:15443  echo-svc pods {}",
            c.name,
            c.network,
            c.client,
            c.gateway,
            c.endpoints.iter().map(|e| format!("{e}:15006")).collect::<Vec<_>>().join(", ")
        ));
    }
    out.note(&format!(
        "{processes} Envoy processes ready in {:.1}s; logs in {}",
        r.startup,
        r.run_dir.join("logs").display()
    ));
    let startup = r.startup;
    out.started(&r);
    let mut w = Walk {
        r,
        examples: examples.to_path_buf(),
        out,
        section: String::new(),
        checks: Vec::new(),
    };
    for k in 0..5 {
        let result = match k {
            0 => w.default_spread(),
            1 => w.locality_failover(),
            2 => w.cluster_local(),
            3 => w.only_the_filter(),
            _ => w.live_config(),
        };
        if let Err(e) = result {
            let section = w.section.clone();
            w.record(false, "the section ran to the end", &format!("{e:#}"));
            w.out.line(&format!("(section {section:?} stopped: {e:#})"));
        }
    }
    w.out.finishing(&mut w.r);
    let checks = std::mem::take(&mut w.checks);
    let served = w.r.served().clone();
    let logs = w.r.run_dir.join("logs");
    drop(w); // stops every process (and flushes their access logs)
    Ok(Report {
        checks,
        served,
        logs,
        seconds: started.elapsed().as_secs_f64(),
        startup,
        processes,
    })
}

/// An example's plugin config as JSON, with `patch` fields set on top.
pub fn example_config(
    examples: &Path,
    example: &str,
    patch: &[(&str, Value)],
) -> anyhow::Result<Vec<u8>> {
    let dir = examples.join(example);
    let bytes = config_json(&dir, &ConfigRef::Path("config.yaml".into()))?;
    patch_config(&bytes, patch)
}

/// Sets top-level fields, and `routes[*].<field>` for keys `routes.<field>`.
pub fn patch_config(bytes: &[u8], patch: &[(&str, Value)]) -> anyhow::Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(bytes)?;
    for (k, val) in patch {
        if let Some(field) = k.strip_prefix("routes.") {
            if let Some(routes) = v.get_mut("routes").and_then(Value::as_array_mut) {
                for r in routes {
                    if r.get(field).is_some() {
                        r[field] = val.clone();
                    }
                }
            }
        } else {
            v[*k] = val.clone();
        }
    }
    Ok(serde_json::to_vec(&v)?)
}

fn req(from: &str, authority: &str) -> RequestSpec {
    RequestSpec::get(from, authority)
}

fn served(o: &Outcome) -> &str {
    o.served_by.as_deref().unwrap_or("none")
}

/// `gke 8 · anthos 12`
fn tally(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        *m.entry(served(o).to_string()).or_insert(0) += 1;
    }
    m
}

fn show_tally(t: &BTreeMap<String, usize>, n: usize) -> String {
    t.iter()
        .map(|(k, v)| format!("{k} {v} ({:.0}%)", 100.0 * *v as f64 / n.max(1) as f64))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn share(outcomes: &[Outcome], cluster: &str) -> f64 {
    let n = outcomes.len().max(1) as f64;
    outcomes.iter().filter(|o| served(o) == cluster).count() as f64 / n
}

/// The fields of a hop line a person looks at.
pub fn hop_summary(line: &str) -> String {
    let keep = [
        "src",
        "target",
        "served_by",
        "cross_network",
        "gateway",
        "decision",
        "status",
    ];
    line.split_whitespace()
        .filter(|kv| keep.iter().any(|k| kv.starts_with(&format!("{k}="))))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Walk<'_> {
    fn begin(&mut self, title: &str, about: &str) {
        self.section = title.to_string();
        self.out.title(title);
        for l in about.lines() {
            self.out.note(l.trim());
        }
    }

    fn record(&mut self, ok: bool, what: &str, detail: &str) {
        self.out.check(ok, what, detail);
        self.checks.push(Check {
            section: self.section.clone(),
            what: what.to_string(),
            ok,
            detail: detail.to_string(),
        });
    }

    fn config(&self, example: &str, patch: &[(&str, Value)]) -> anyhow::Result<Vec<u8>> {
        example_config(&self.examples, example, patch)
    }

    fn push(&mut self, what: &str, config: &[u8]) -> anyhow::Result<bool> {
        let t = Instant::now();
        let accepted = self.r.push_config("all", config)?;
        self.out.line(&format!(
            "ECDS push: {what}: {} by every sidecar in {:.2}s",
            if accepted { "accepted" } else { "rejected" },
            t.elapsed().as_secs_f64()
        ));
        Ok(accepted)
    }

    /// Sends `n` requests, shows the first `show` as curl lines (with the
    /// hop record of the first `hops`), returns every outcome.
    fn curl(
        &mut self,
        spec: &RequestSpec,
        n: usize,
        show: usize,
        hops: usize,
    ) -> anyhow::Result<Vec<Outcome>> {
        let from = spec.from.clone().unwrap_or_default();
        let mut out = Vec::new();
        for k in 0..n {
            let o = self.r.request(spec, &from)?;
            if k < show {
                self.out.line(&curl_line(&o));
                if k < hops && spec.direct.is_none() {
                    let id = self.r.last_request_id();
                    if let Some(h) = self.r.hop_line(&from, &id) {
                        self.out.line(&format!("    hop: {}", hop_summary(&h)));
                    }
                }
            }
            out.push(o);
        }
        if n > show {
            self.out.line(&format!(
                "… {} requests: {}",
                n,
                show_tally(&tally(&out), n)
            ));
        }
        Ok(out)
    }

    fn default_spread(&mut self) -> anyhow::Result<()> {
        self.begin(
            "1. default spread: requests from each cluster land in both",
            "No DestinationRule, filter policy `none` (examples/01): it only tags requests and records who served.",
        );
        for from in ["gke", "anthos"] {
            self.out.line(&format!(
                "$ kubectl --context {from} exec sleep -- curl echo-svc.default   (x20)"
            ));
            let os = self.curl(&req(from, "echo-svc.default"), 20, 4, 4)?;
            let (g, a) = (share(&os, "gke"), share(&os, "anthos"));
            let ok = os.iter().all(|o| o.status == 200)
                && (0.3..=0.7).contains(&g)
                && (0.3..=0.7).contains(&a);
            self.record(
                ok,
                &format!("from {from}: both clusters serve (30-70% each)"),
                &show_tally(&tally(&os), os.len()),
            );
            let remote = if from == "gke" { "anthos" } else { "gke" };
            let crossed = os
                .iter()
                .filter(|o| served(o) == remote)
                .all(|o| o.upstream_header("x-hybridmesh-source-cluster") == Some(from));
            self.record(crossed, &format!("{remote}'s pods see x-hybridmesh-source-cluster: {from} (through the east-west gateway, over mTLS)"), "");
        }
        Ok(())
    }

    fn locality_failover(&mut self) -> anyhow::Result<()> {
        self.begin(
            "2. locality failover from tokyo-onprem to asia-northeast1",
            &format!("examples/02 (failover rule, consecutive5xxErrors 1); baseEjectionTime {SHORT_EJECTION} instead of 1m so the demo is short."),
        );
        let cfg = self.config(
            "02-locality-failover",
            &[(
                "routes.outlierDetection",
                json!({"consecutive5xxErrors": 1, "baseEjectionTime": SHORT_EJECTION}),
            )],
        )?;
        self.push("examples/02-locality-failover", &cfg)?;
        let spec = req("anthos", "echo-svc.default");
        let os = self.curl(&spec, 5, 2, 1)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "anthos"),
            "on-prem clients stay on-prem",
            &show_tally(&tally(&os), 5),
        );

        self.out
            .line("$ curl -X POST anthos-echo-svc-0:15000/drain_listeners");
        self.r.drain_pod("anthos", 0)?;
        let os = self.curl(&spec, 6, 2, 0)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "anthos"),
            "one pod drained: the other on-prem pod serves (the drained pod left EDS)",
            &show_tally(&tally(&os), 6),
        );

        self.out
            .line("$ curl -X POST anthos-echo-svc-1:15000/drain_listeners");
        self.r.drain_pod("anthos", 1)?;
        let os = self.curl(&spec, 5, 2, 2)?;
        let via_gateway = os.iter().all(|o| {
            o.status == 200 && served(o) == "gke" && o.target.as_deref() == Some("anthos")
        });
        self.record(
            via_gateway,
            "the filter still prefers anthos; Envoy serves from GKE through its east-west gateway (prefer-anthos: GKE next in priority); no request lost",
            &show_tally(&tally(&os), 5),
        );
        // The counters reach Prometheus with labels (Envoy's tag extraction);
        // they are flushed on the filter's 1s tick.
        std::thread::sleep(Duration::from_millis(1100));
        let prom = self.r.prometheus("anthos.client")?;
        let line = prom.lines().find(|l| {
            l.starts_with("hybridmesh_requests_total{")
                && l.contains("source_cluster=\"anthos\"")
                && l.contains("destination_cluster=\"gke\"")
                && l.contains("decision=\"failover\"")
                && l.contains("cross_network=\"true\"")
        });
        if let Some(l) = line {
            self.out
                .line(&format!("anthos sidecar /stats/prometheus: {l}"));
        }
        self.record(
            line.is_some(),
            "the failover shows in Prometheus with cluster, decision and network labels",
            "",
        );
        let moved = prom.lines().find(|l| {
            l.starts_with("hybridmesh_failed_over_total{")
                && l.contains("preferred_cluster=\"anthos\"")
                && l.contains("destination_cluster=\"gke\"")
        });
        if let Some(l) = moved {
            self.out
                .line(&format!("anthos sidecar /stats/prometheus: {l}"));
        }
        self.record(
            moved.is_some(),
            "the request Envoy moved is counted: preferred anthos, served by gke",
            "",
        );

        self.out
            .line("the drained pods come back (new pods at the same addresses)");
        self.r.restore("anthos")?;
        let os = self.curl(&spec, 5, 2, 1)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "anthos"),
            "back on-prem as soon as the pods are back in EDS",
            &show_tally(&tally(&os), 5),
        );
        self.envoy_failover()
    }

    /// The seed's own DestinationRule, without the filter's rule: Envoy's
    /// locality failover (own cluster at priority 0) with outlier detection.
    fn envoy_failover(&mut self) -> anyhow::Result<()> {
        self.out.line("");
        self.out.line(&format!("the seed's DestinationRule alone (policy `none`): localityLbSetting failover + outlierDetection (consecutive5xxErrors 1, interval 1s, baseEjectionTime {SHORT_EJECTION})"));
        let cfg = self.config("01-default-spread", &[])?;
        self.push("examples/01-default-spread", &cfg)?;
        let secs = hybridmesh_scenario::duration(SHORT_EJECTION)?.as_secs();
        let t = Instant::now();
        self.r
            .set_locality_failover(Some(super::envoy_config::LocalityFailover {
                base_ejection_secs: secs,
            }))?;
        self.out.line(&format!(
            "$ kubectl apply -f destinationrule.yaml   (client sidecars reloaded in {:.1}s)",
            t.elapsed().as_secs_f64()
        ));
        let spec = req("anthos", "echo-svc.default");
        let os = self.curl(&spec, 5, 1, 1)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "anthos"),
            "Envoy's locality failover keeps on-prem traffic on-prem",
            &show_tally(&tally(&os), 5),
        );
        self.out
            .line("$ curl -X POST anthos-echo-svc-{0,1}:15000/drain_listeners");
        self.r.drain("anthos")?;
        let drained_at = Instant::now();
        let os = self.curl(&spec, 4, 2, 2)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "gke"),
            "Envoy fails over to GKE without losing a request (retries + outlier detection)",
            &show_tally(&tally(&os), 4),
        );
        self.r.restore("anthos")?;
        let wait = Duration::from_secs(secs).saturating_sub(drained_at.elapsed());
        self.out.line(&format!(
            "pods back; … waiting {:.1}s for Envoy's ejection to end",
            wait.as_secs_f64()
        ));
        std::thread::sleep(wait);
        // Ejections end on the next 1s outlier tick; while one pod is still
        // ejected, Envoy's overprovisioning factor (1.4) sends 30% to GKE.
        let t = Instant::now();
        let mut streak = 0;
        let mut sent = 0;
        while streak < 5 && t.elapsed() < Duration::from_secs(6) {
            let o = self.r.request(&spec, "anthos")?;
            sent += 1;
            streak = if o.status == 200 && served(&o) == "anthos" {
                streak + 1
            } else {
                0
            };
            if streak == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.out.line(&format!(
            "\"Anthos!!!\" 5 times in a row after {sent} requests, {:.1}s after the ejection time",
            t.elapsed().as_secs_f64()
        ));
        self.record(
            streak >= 5,
            "Envoy brings on-prem traffic home",
            &format!("{sent} requests over {:.1}s", t.elapsed().as_secs_f64()),
        );
        self.r.set_locality_failover(None)?;
        self.out
            .line("$ kubectl delete destinationrule echo-svc   (back to the default spread)");
        Ok(())
    }

    fn cluster_local(&mut self) -> anyhow::Result<()> {
        self.begin(
            "3. clusterLocal for *.default.svc.cluster.local",
            "examples/04: the default namespace stays home; httpbin-svc.sleep still spans clusters.",
        );
        let cfg = self.config("04-cluster-local", &[])?;
        self.push("examples/04-cluster-local", &cfg)?;
        let os = self.curl(&req("anthos", "echo-svc.default"), 10, 2, 1)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "anthos"),
            "echo-svc.default from anthos stays in anthos",
            &show_tally(&tally(&os), 10),
        );
        let os = self.curl(&req("gke", "echo-svc.default.svc.cluster.local"), 10, 2, 0)?;
        self.record(
            os.iter().all(|o| o.status == 200 && served(o) == "gke"),
            "echo-svc.default.svc.cluster.local from gke stays in gke",
            &show_tally(&tally(&os), 10),
        );
        let os = self.curl(&req("anthos", "httpbin-svc.sleep"), 20, 2, 1)?;
        let (g, a) = (share(&os, "gke"), share(&os, "anthos"));
        self.record(
            (0.3..=0.7).contains(&g) && (0.3..=0.7).contains(&a),
            "httpbin-svc.sleep still spans clusters",
            &show_tally(&tally(&os), 20),
        );
        Ok(())
    }

    fn only_the_filter(&mut self) -> anyhow::Result<()> {
        self.begin(
            "4. what only the filter adds",
            &format!("examples/03: distribute 80/20 by cluster, sticky x-user, consecutive5xxErrors 3; baseEjectionTime {SHORT_EJECTION}."),
        );
        let cfg = self.config(
            "03-weighted-80-20",
            &[(
                "outlierDetection",
                json!({"consecutive5xxErrors": 3, "baseEjectionTime": SHORT_EJECTION}),
            )],
        )?;
        self.push("examples/03-weighted-80-20", &cfg)?;
        const N: usize = 500;
        // Four standard deviations of a share of 0.8 over N requests.
        let bound = 4.0 * (0.16 / N as f64).sqrt();
        for (from, home) in [("gke", "gke"), ("anthos", "anthos")] {
            let os = self.curl(&req(from, "echo-svc.default"), N, 2, 1)?;
            let s = share(&os, home);
            let ok = os.iter().all(|o| o.status == 200) && (s - 0.8).abs() <= bound;
            self.record(
                ok,
                &format!(
                    "from {from}: 80% stay in {home} (±{:.1}% over {N})",
                    bound * 100.0
                ),
                &show_tally(&tally(&os), N),
            );
        }
        for user in ["alice", "bob", "carol"] {
            let mut spec = req("gke", "echo-svc.default");
            spec.headers.insert("x-user".into(), user.into());
            let os = self.curl(&spec, 20, 0, 0)?;
            let t = tally(&os);
            self.record(
                t.len() == 1 && os.iter().all(|o| o.status == 200),
                &format!("x-user: {user} always lands in the same cluster"),
                &show_tally(&t, 20),
            );
        }

        self.out
            .line("anthos's echo-svc processes die (their sidecars stay)");
        self.r.kill_apps("anthos")?;
        let os = self.curl(&req("gke", "echo-svc.default"), 60, 0, 0)?;
        let failed: Vec<usize> = os
            .iter()
            .enumerate()
            .filter(|(_, o)| o.status != 200)
            .map(|(i, _)| i)
            .collect();
        let last_failure = failed.last().copied().unwrap_or(0);
        if let Some(&i) = failed.first() {
            self.out.line(&curl_line(&os[i]));
        }
        self.out.line(&format!(
            "failures at requests {:?}",
            failed.iter().map(|i| i + 1).collect::<Vec<_>>()
        ));
        let ejected_at = Instant::now();
        let _ = last_failure;
        let moved = os
            .iter()
            .filter(|o| o.target.as_deref() == Some("anthos"))
            .count();
        let ok = failed.is_empty() && os.iter().all(|o| served(o) == "gke");
        self.record(
            ok,
            "no request lost: Envoy's retries serve anthos's share from gke (prefer-anthos: anthos first, gke next)",
            &format!(
                "{} failures; {moved} preferred anthos and were moved",
                failed.len()
            ),
        );
        // Counters reach Envoy's stats on the filter's 1s tick.
        std::thread::sleep(Duration::from_millis(1100));
        let counted = self.r.metric(
            "gke.client",
            "preferred_cluster=.=anthos;.;destination_cluster=.=gke;.;hybridmesh_failed_over_total",
        )?;
        self.record(
            counted.is_some_and(|n| n >= moved as u64),
            "every request Envoy moved is counted (hybridmesh_failed_over_total, preferred anthos, served by gke)",
            &format!("{counted:?}"),
        );
        self.out.line("anthos's echo-svc comes back");
        self.r.restore("anthos")?;
        let wait = hybridmesh_scenario::duration(SHORT_EJECTION)?
            .saturating_sub(ejected_at.elapsed())
            // Envoy un-ejects a host on its next outlier tick (1s).
            + Duration::from_millis(1300);
        self.out.line(&format!(
            "… waiting {:.1}s for Envoy's ejection of anthos's gateway to end",
            wait.as_secs_f64()
        ));
        std::thread::sleep(wait);
        let os = self.curl(&req("gke", "echo-svc.default"), 200, 0, 0)?;
        let s = share(&os, "anthos");
        self.record(
            os.iter().all(|o| o.status == 200) && s >= 0.08,
            "anthos is readmitted and gets its share again",
            &show_tally(&tally(&os), 200),
        );

        self.out.line("examples/04 again; a GKE workload (mesh identity, no filter) calls anthos's pod directly, claiming to be gke");
        let cfg = self.config("04-cluster-local", &[])?;
        self.push("examples/04-cluster-local", &cfg)?;
        let mut spec = req("gke", "echo-svc.default");
        spec.direct = Some("anthos".into());
        spec.peer = Some(self.r.topology.spiffe("sleep", "sleep"));
        spec.headers
            .insert("x-hybridmesh-source-cluster".into(), "gke".into());
        let o = self.r.request(&spec, "gke")?;
        self.out.line(&format!(
            "< HTTP/1.1 {}  x-hybridmesh-denied: {}",
            o.status,
            o.response_header("x-hybridmesh-denied").unwrap_or("-")
        ));
        self.out.line(&format!("< {}", o.body.trim_end()));
        let want = "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke refused";
        self.record(
            o.status == 403
                && o.body.trim_end() == want
                && o.response_header("x-hybridmesh-denied") == Some("cluster-local"),
            "refused on the server side, and told why",
            &format!("{} {:?}", o.status, o.body.trim_end()),
        );

        let mut spec = req("gke", "httpbin-svc.sleep");
        spec.direct = Some("gke".into());
        spec.peer = Some("plaintext".into());
        spec.headers
            .insert("x-hybridmesh-source-cluster".into(), "anthos".into());
        let o = self.r.request(&spec, "gke")?;
        self.record(
            o.status == 200
                && o.upstream_headers.is_some()
                && o.upstream_header("x-hybridmesh-source-cluster").is_none(),
            "a plaintext peer's x-hybridmesh-source-cluster never reaches the application",
            &curl_line(&o),
        );
        Ok(())
    }

    fn live_config(&mut self) -> anyhow::Result<()> {
        self.begin(
            "5. a live config change through ECDS, and a broken one",
            "examples/05 (per-cluster subsets) pushed to running sidecars; then examples/07's broken configs.",
        );
        let pids: Vec<(String, u32)> = self.r.processes();
        let cfg = self.config("05-per-cluster-subsets", &[])?;
        let accepted = self.push("examples/05-per-cluster-subsets", &cfg)?;
        let g = self.curl(&req("gke", "echo-svc.default"), 5, 1, 1)?;
        let a = self.curl(&req("anthos", "echo-svc.default"), 5, 1, 0)?;
        let subsets = g.iter().all(|o| {
            o.route.as_deref() == Some("outbound|80|only-gke|echo-svc.default.svc.cluster.local")
        }) && a.iter().all(|o| {
            o.route.as_deref() == Some("outbound|80|only-anthos|echo-svc.default.svc.cluster.local")
        });
        self.record(
            accepted && subsets && pids == self.r.processes(),
            "the new config serves at once, no process restarted",
            &format!("routes {:?}", g[0].route),
        );
        for (file, expect) in [
            ("bad-weights.yaml", "weights sum to 90, expected 100"),
            ("typo.yaml", "unknown field `polcy`"),
        ] {
            let bad = config_json(
                &self.examples.join("07-bad-config"),
                &ConfigRef::Path(file.into()),
            )?;
            let accepted = self.push(&format!("examples/07-bad-config/{file}"), &bad)?;
            let line = self
                .r
                .logs("gke.client")?
                .into_iter()
                .find(|(l, m)| l == "error" && m.contains(expect));
            if let Some((_, m)) = &line {
                self.out.line(&format!("gke sidecar log: {m}"));
            }
            let os = self.curl(&req("gke", "echo-svc.default"), 5, 1, 0)?;
            let still = os
                .iter()
                .all(|o| o.status == 200 && o.target.as_deref() == Some("gke"));
            self.record(!accepted && line.is_some() && still, &format!("{file} is rejected with a message naming the field; the old config keeps serving"), "");
        }
        Ok(())
    }
}
