//! The seed article's walk-through (the example scenarios) on the lab:
//! `scripts/demo --istio`, `hybridmesh demo --istio`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hybridmesh_scenario::runner::{run_on, Backend as _};
use hybridmesh_scenario::{RequestSpec, Scenario};

use crate::{Lab, LabOptions};

/// Starts the lab, plays every `*/scenario.yaml` under `examples` on it (each
/// example's plugin config applied with `kubectl apply` first), prints each
/// step as it went; whether every step passed.
pub fn walk(examples: &Path, workspace: &Path, opts: &LabOptions) -> anyhow::Result<bool> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples)?
        .filter_map(|e| e.ok().map(|e| e.path().join("scenario.yaml")))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no */scenario.yaml",
        examples.display()
    );
    println!("starting the Istio lab: per cluster a kube-apiserver and an istiod, every pod as pilot-agent + Envoy ...");
    let started = std::time::Instant::now();
    let mut lab = Lab::start(workspace, opts)?;
    let versions = lab.versions()?;
    println!(
        "up in {:.0}s: Istio {} (istio.io/istio {}), Envoy {}; gke and anthos, wasmplugin/overlays/<cluster> applied with kubectl apply -k",
        started.elapsed().as_secs_f64(),
        versions.istio,
        versions.istio_module,
        versions.envoy
    );
    if let Some(d) = lab.delivery() {
        println!(
            "the filter's image: pushed to the lab's private registry (TLS, basic auth) as {}\n  sha256 {} (the image manifest digest{})",
            d.url,
            d.sha256,
            if d.pinned_as_rendered { ", as wasmplugin/ pins it" } else { "; wasmplugin/ pins another release: scripts/release" }
        );
        let fetches = lab.wasm_fetches()?;
        println!(
            "  pulled by every istio-agent with the pull secret hybridmesh-pull: istio_agent_wasm_remote_fetch_count {}\n",
            fetches
                .iter()
                .map(|(r, n)| format!("{{result=\"{r}\"}} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut all_ok = true;
    for f in &files {
        let s = Scenario::load(f)?;
        println!("=== {}", s.name);
        if !s.description.is_empty() {
            println!("{}", s.description.trim_end());
        }
        lab.reset()?;
        let mut applied = true;
        for c in ["gke", "anthos"] {
            if let Err(e) = s.config_for(c).and_then(|cfg| lab.apply_config(c, &cfg)) {
                println!("not played on the lab: {e:#}\n");
                applied = false;
                break;
            }
        }
        if !applied {
            continue;
        }
        println!("$ kubectl apply -f <the WasmPlugins with this example's pluginConfig>   (in gke and anthos)");
        let report = run_on(&s, &mut lab);
        for step in &report.steps {
            println!("{} {}", if step.ok { "ok  " } else { "FAIL" }, step.name);
            for l in &step.lines {
                println!("      {l}");
            }
            for p in &step.problems {
                println!("      - {p}");
            }
        }
        all_ok &= report.ok;
        println!();
    }
    for walk in article_walks(&versions.istio, &opts.istiod_env) {
        println!(
            "=== the seed article's locality failover, as its commands (the filter only tags)"
        );
        println!("{}", walk.about);
        let phases = article_failover(&mut lab, examples, &walk, true)?;
        let problems = article_failover_problems(&walk, &phases);
        for p in &problems {
            println!("FAIL {p}");
        }
        if problems.is_empty() {
            println!("ok   {}", walk.expect);
        }
        all_ok &= problems.is_empty();
        println!();
    }
    println!(
        "lab logs, config dumps and access logs: {}",
        lab.run_dir().display()
    );
    Ok(all_ok)
}

/// How to play the walk-through, and what it must show.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    /// Label Anthos's nodes with the region first, as the article does.
    pub label_nodes: bool,
    /// `outlierDetection.minHealthPercent` added to the article's DestinationRule.
    pub min_health_percent: Option<u32>,
    /// Requests after each step.
    pub requests: usize,
    /// The share of the requests Anthos must serve with one of its two pods
    /// drained, `[min, max]`.
    pub anthos_share_one_drained: [f64; 2],
    pub about: &'static str,
    pub expect: &'static str,
}

/// The article's DestinationRule as it is, on Istio 1.31, without its node
/// labelling (on 1.31 the sleep sidecar and Anthos's pods share the empty
/// locality, so Anthos comes first without it; labelling nodes while the
/// proxies are connected is worse, see docs/src/verification/lab.md).
pub const ARTICLE: Walk = Walk {
    label_nodes: false,
    min_health_percent: None,
    requests: 40,
    // 1 of 2 healthy: Envoy keeps 50% x 1.4 (overprovisioning) = 70% there.
    anthos_share_one_drained: [0.4, 0.95],
    about: "Istio 1.31 sends a not-Ready pod to the proxies as an unhealthy endpoint (PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS, new in 1.31): with one of Anthos's two pods drained, Envoy keeps 50% x 1.4 = 70% of the requests in Anthos and sends the rest to GKE. ASM 1.13 dropped the pod from EDS instead, so the article saw Anthos only.",
    expect: "Anthos serves while it has a Ready pod (about 70% with one of two drained: the rest go to GKE), GKE alone once both are drained; no request failed",
};

/// The same with `minHealthPercent: 1`: istiod then leaves not-Ready pods out
/// of EDS (`supportsUnhealthyEndpoints`), and the article's result holds.
pub const ARTICLE_EXCLUDING_NOT_READY: Walk = Walk {
    min_health_percent: Some(1),
    anthos_share_one_drained: [1.0, 1.0],
    about: "The same DestinationRule with outlierDetection.minHealthPercent: 1: istiod 1.31 then leaves not-Ready pods out of EDS (pilot/pkg/xds/endpoints/endpoint_builder.go, supportsUnhealthyEndpoints), as ASM 1.13 did.",
    expect: "Anthos alone while it has a Ready pod, GKE alone once both are drained; no request failed (the article's result)",
    ..ARTICLE
};

/// The walk-throughs to play on a lab of Istio `release` (`1.31`) whose
/// istiods run with `istiod_env`: the article's rule as written, and with
/// `minHealthPercent: 1`. With `PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false`,
/// and on releases before 1.31 (which do not have that setting; their
/// `PILOT_SEND_UNHEALTHY_ENDPOINTS` defaults to false: release-1.30
/// `pilot/pkg/features/experimental.go`), a not-Ready pod leaves EDS either
/// way, so the article's rule keeps every request in Anthos too.
pub fn article_walks(release: &str, istiod_env: &[String]) -> Vec<Walk> {
    let before_1_31 = hybridmesh_ops::deploy::istio::IstioVersion::parse(release)
        .is_ok_and(|v| v.minor.is_some_and(|m| m < 31));
    let article = if before_1_31 {
        Walk {
            anthos_share_one_drained: [1.0, 1.0],
            about: "Istio before 1.31 leaves not-Ready pods out of EDS (PILOT_SEND_UNHEALTHY_ENDPOINTS defaults to false; the automatic setting came in 1.31), as ASM 1.13 did.",
            expect: "Anthos alone while it has a Ready pod, GKE alone once both are drained; no request failed (the article's result)",
            ..ARTICLE
        }
    } else if istiod_env
        .iter()
        .any(|e| e == "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false")
    {
        Walk {
            anthos_share_one_drained: [1.0, 1.0],
            about: "With PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false istiod leaves not-Ready pods out of EDS, as ASM 1.13 did.",
            expect: "Anthos alone while it has a Ready pod, GKE alone once both are drained; no request failed (the article's result)",
            ..ARTICLE
        }
    } else {
        ARTICLE
    };
    vec![article, ARTICLE_EXCLUDING_NOT_READY]
}

/// Whether a walk expects the drained pod in EDS (as an unhealthy endpoint).
pub fn expects_unhealthy_endpoint(walk: &Walk) -> bool {
    walk.anthos_share_one_drained[1] < 1.0
}

/// One phase of the seed's locality failover walk-through: what the
/// operator did, echo-svc's endpoints at Anthos's sleep sidecar afterwards,
/// and what `curl echo-svc.default` answered there.
pub struct Phase {
    pub did: Vec<String>,
    pub endpoints: Vec<String>,
    /// (status, body) per request.
    pub answers: Vec<(u32, String)>,
}

impl Phase {
    /// How many answers were `cluster`'s body (`Anthos` or `GKE`).
    pub fn served(&self, cluster: &str) -> usize {
        let body = format!("\"{cluster}!!!\"");
        self.answers.iter().filter(|(_, b)| *b == body).count()
    }
}

/// The seed article's "Locality Load Balancing を試す" as its own commands,
/// on the lab: (with `how.label_nodes`) label Anthos's nodes
/// `topology.kubernetes.io/region=tokyo-onprem`, `kubectl --context anthos
/// apply -f destinationrule.yaml` (the article's locality failover from
/// tokyo-onprem to asia-northeast1 with outlier detection, plus the subsets
/// the filter's VirtualService names), curl `how.requests` times, drain one
/// echo-svc pod and curl again, then the other and curl again.
/// The filter only tags (example 01's config): Envoy routes. Afterwards the
/// pods are Ready, the nodes unlabelled and the rendered DestinationRule
/// applied again. `print`: show each command and answer as it happens.
pub fn article_failover(
    lab: &mut Lab,
    examples: &Path,
    how: &Walk,
    print: bool,
) -> anyhow::Result<Vec<Phase>> {
    let show = |line: &str| {
        if print {
            println!("{line}");
        }
    };
    let config = std::fs::read(examples.join("01-default-spread/config.yaml"))?;
    let config = serde_yaml_ng::from_slice::<serde_json::Value>(&config)?;
    let config = serde_json::to_vec(&config)?;
    lab.reset()?;
    for c in ["gke", "anthos"] {
        lab.apply_config(c, &config)?;
    }
    let dr = lab
        .root
        .join("istio-lab/manifests/seed-destinationrule.yaml");
    let mut dr_text = std::fs::read_to_string(&dr)?;
    if let Some(p) = how.min_health_percent {
        let od = "outlierDetection: {";
        anyhow::ensure!(dr_text.contains(od), "{}: no `{od}`", dr.display());
        dr_text = dr_text.replace(od, &format!("{od}minHealthPercent: {p}, "));
    }
    let mut phases = Vec::new();
    let mut phase = |lab: &mut Lab, did: Vec<String>, n: usize| -> anyhow::Result<()> {
        for d in &did {
            show(&format!("$ {d}"));
        }
        let endpoints = lab.echo_endpoints("anthos")?;
        show("$ istioctl proxy-config endpoints sleep-0.sleep | grep echo-svc   (from the sidecar's admin)");
        for e in &endpoints {
            show(&format!("  {e}"));
        }
        let mut answers = Vec::new();
        for _ in 0..n {
            let o = lab.request(&RequestSpec::get("anthos", "echo-svc.default"), "anthos")?;
            answers.push((o.status, o.body.trim_end().to_string()));
        }
        show(&format!(
            "$ for i in $(seq {n}); do kubectl exec -n sleep sleep-0 -- curl -sS -w ' %{{http_code}}\\n' echo-svc.default; done | sort | uniq -c"
        ));
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for (status, body) in &answers {
            *tally.entry(format!("{body} {status}")).or_default() += 1;
        }
        for (answer, count) in tally {
            show(&format!("  {count:>4} {answer}"));
        }
        phases.push(Phase {
            did,
            endpoints,
            answers,
        });
        Ok(())
    };
    let label = "topology.kubernetes.io/region=tokyo-onprem";
    let mut first = Vec::new();
    if how.label_nodes {
        lab.kubectl_in("anthos", &["label", "nodes", "--all", label, "--overwrite"])?;
        first.push(format!(
            "kubectl --context anthos label nodes --all {label}"
        ));
    }
    lab.kubectl_apply("anthos", &dr_text)?;
    first.push(match how.min_health_percent {
        None => "kubectl --context anthos apply -f istio-lab/manifests/seed-destinationrule.yaml".into(),
        Some(p) => format!("kubectl --context anthos apply -f istio-lab/manifests/seed-destinationrule.yaml   (with outlierDetection.minHealthPercent: {p})"),
    });
    // Until the failover priorities reach Anthos's sleep sidecar.
    let start = std::time::Instant::now();
    while !lab
        .echo_endpoints("anthos")?
        .iter()
        .any(|e| e.ends_with("priority 1"))
    {
        anyhow::ensure!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the DestinationRule's failover priorities did not reach anthos's sleep sidecar in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    phase(lab, first, how.requests)?;
    for (pod, did) in [
        (0, "drain anthos's echo-svc-0 (not Ready; istiod pushes)"),
        (1, "drain anthos's echo-svc-1 too"),
    ] {
        lab.drain_pod("anthos", pod)?;
        phase(lab, vec![did.into()], how.requests)?;
    }
    lab.reset()?;
    if how.label_nodes {
        lab.kubectl_in(
            "anthos",
            &["label", "nodes", "--all", "topology.kubernetes.io/region-"],
        )?;
    }
    lab.reapply_rendered("anthos", "DestinationRule", "echo-svc")?;
    Ok(phases)
}

/// What the walk-through must show, checked: every request answered 200;
/// Anthos alone with the rule applied, Anthos's share with one pod drained
/// within `how.anthos_share_one_drained`, GKE alone with both drained.
pub fn article_failover_problems(how: &Walk, phases: &[Phase]) -> Vec<String> {
    let mut problems = Vec::new();
    if phases.len() != 3 {
        problems.push(format!("{} phases, expected 3", phases.len()));
        return problems;
    }
    let shares = [[1.0, 1.0], how.anthos_share_one_drained, [0.0, 0.0]];
    for (p, [lo, hi]) in phases.iter().zip(shares) {
        let step = p.did.join("; ");
        for (status, body) in &p.answers {
            if *status != 200 || !(body.contains("Anthos!!!") || body.contains("GKE!!!")) {
                problems.push(format!("after `{step}`: {status} {body:?}"));
            }
        }
        let anthos = p.served("Anthos");
        let share = anthos as f64 / p.answers.len().max(1) as f64;
        if share < lo || share > hi {
            problems.push(format!(
                "after `{step}`: Anthos served {anthos} of {}, expected a share in [{lo}, {hi}]",
                p.answers.len()
            ));
        }
    }
    problems
}
