//! A seeded random driver for the real `.wasm` in the harness: random but
//! schema-valid configs (every policy, host patterns, weights, sticky headers,
//! outlier settings, header prefixes, trust settings), and random traffic
//! through the two-or-three-cluster [`Sim`] and straight through single
//! sidecars (repeated headers, reserved names, CR/LF, NUL, very long values,
//! forged hop chains and served-by answers), with drains, failing clusters,
//! time passing and reconfigures in between.
//!
//! libFuzzer's coverage cannot see inside the guest, so this is a plain
//! generator; every case is reproducible from its seed. What counts as a
//! finding:
//! - the module trapping (any callback, any sidecar), or the harness failing;
//! - a generated config the filter rejects (the generator follows the schema)
//!   or a valid one a sidecar does not take;
//! - a reserved header (`<prefix>-*`) reaching an application other than the
//!   filter's own source identity, target and validated hop chain, or one of
//!   those with a value the filter would not have written;
//! - CR, LF or NUL in any header value the filter wrote, or in a log line;
//! - a hop record that is not JSON;
//! - a decided request not served by its target although that cluster is up;
//! - the `.wasm` and the filter run natively deciding differently for the same
//!   request (until the first random pick of an episode, after which health
//!   may rightly differ).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hybridmesh_filter_core::config::HeaderNames;
use hybridmesh_filter_core::decide::Rng;

use crate::{Answer, Forward, NativeSidecar, Pairs, Sidecar, SidecarSpec, Sim, WasmSidecar};
use hybridmesh_scenario::{ClusterSpec, Mesh, ProxyOptions, RequestSpec};
use proxy_wasm_host::envoy::Connection;
use proxy_wasm_host::plugin::Module;

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Configs generated (one episode each).
    pub configs: u64,
    /// Requests through the mesh simulation.
    pub mesh_requests: u64,
    /// Requests sent straight to one sidecar (client or server side).
    pub sidecar_requests: u64,
    /// Drains, failures, restores, clock advances and reconfigures.
    pub events: u64,
    /// Requests whose `.wasm` outcome was compared with the native filter's.
    pub compared: u64,
    /// One line per finding, with the seed and case that reproduce it.
    pub findings: Vec<String>,
}

impl Report {
    /// Every request the module saw.
    pub fn executions(&self) -> u64 {
        self.mesh_requests + self.sidecar_requests
    }
}

/// Runs episodes from `seed` until `budget` is spent or `max_configs` episodes
/// ran, whichever comes first. Stops early after 20 findings.
pub fn run(module: &Module, seed: u64, budget: Duration, max_configs: u64) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut episode = 0u64;
    while started.elapsed() < budget && report.configs < max_configs && report.findings.len() < 20 {
        if let Err(e) = run_episode(module, seed, episode, &mut report) {
            report.findings.push(format!(
                "--replay {seed}:{episode}: the harness failed: {e:#}"
            ));
        }
        episode += 1;
    }
    report
}

/// Replays one episode (as a finding names it).
pub fn run_one(module: &Module, seed: u64, episode: u64) -> Report {
    let mut report = Report::default();
    if let Err(e) = run_episode(module, seed, episode, &mut report) {
        report.findings.push(format!(
            "--replay {seed}:{episode}: the harness failed: {e:#}"
        ));
    }
    report
}

struct Gen(Rng);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.0.next_u64() % den < num
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The mesh's clusters: (name, network, cluster-table locality, node locality).
const CLUSTERS: [(&str, &str, &str, &str); 3] = [
    (
        "gke",
        "kuchima-demo-vpc01",
        "asia-northeast1",
        "asia-northeast1/asia-northeast1-a",
    ),
    ("anthos", "default", "tokyo-onprem", ""),
    ("aks", "azure-vnet", "japaneast", "japaneast/1"),
];

const HOST_PATTERNS: [&str; 8] = [
    "echo-svc.default.svc.cluster.local",
    "*.default.svc.cluster.local",
    "*.svc.cluster.local",
    "*",
    "httpbin-svc.sleep.svc.cluster.local",
    "*.sleep.svc.cluster.local",
    "Echo-Svc.Default.svc.cluster.local.",
    "www.example.com",
];

const AUTHORITIES: [&str; 9] = [
    "echo-svc.default",
    "echo-svc.default:80",
    "echo-svc.default.svc.cluster.local",
    "ECHO-SVC.default",
    "httpbin-svc.sleep",
    "echo-svc",
    "10.96.0.10",
    "www.example.com",
    "[::1]:80",
];

/// A generated plugin config and what the generator knows about it.
struct Generated {
    json: String,
    prefix: String,
    sticky: Option<String>,
}

fn gen_outlier(g: &mut Gen) -> String {
    let consecutive = g.below(4);
    let base = *g.pick(&["1s", "5s", "30s", "500ms"]);
    if g.chance(1, 2) {
        format!(r#"{{"consecutive5xxErrors": {consecutive}, "baseEjectionTime": "{base}"}}"#)
    } else {
        format!(
            r#"{{"consecutive5xxErrors": {consecutive}, "baseEjectionTime": "{base}", "maxEjectionTime": "60s"}}"#
        )
    }
}

/// Weights over `clusters` summing to 100 (some may be 0).
fn gen_weights(g: &mut Gen, clusters: &[&str]) -> String {
    let mut left = 100usize;
    let mut parts = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let w = if i + 1 == clusters.len() {
            left
        } else {
            g.below(left + 1)
        };
        left -= w;
        parts.push(format!(r#""{c}": {w}"#));
    }
    format!("{{{}}}", parts.join(", "))
}

fn gen_config(g: &mut Gen, n: usize) -> Generated {
    let names: Vec<&str> = CLUSTERS[..n].iter().map(|c| c.0).collect();
    let regions: Vec<&str> = CLUSTERS[..n].iter().map(|c| c.2).collect();
    let mut fields: Vec<String> = Vec::new();
    let clusters: Vec<String> = CLUSTERS[..n]
        .iter()
        .map(|(c, net, loc, _)| {
            format!(r#"{{"name": "{c}", "network": "{net}", "locality": "{loc}"}}"#)
        })
        .collect();
    fields.push(format!(r#""clusters": [{}]"#, clusters.join(", ")));
    let prefix = if g.chance(1, 5) {
        fields.push(r#""headerPrefix": "x-mesh""#.to_string());
        "x-mesh".to_string()
    } else {
        "x-hybridmesh".to_string()
    };
    if g.chance(1, 2) {
        fields.push(r#""allowDebug": true"#.to_string());
    }
    if g.chance(1, 3) {
        fields.push(format!(r#""maxHops": {}"#, 2 + g.below(7)));
    }
    if g.chance(1, 4) {
        fields.push(r#""trustSource": "any""#.to_string());
    } else if g.chance(1, 3) {
        fields.push(r#""trustDomains": ["cluster.local"]"#.to_string());
    }
    if g.chance(1, 3) {
        fields.push(r#""unknownSource": "deny""#.to_string());
    }
    if g.chance(1, 3) {
        fields.push(format!(r#""denyStatus": {}"#, 400 + g.below(200)));
    }
    if g.chance(1, 3) {
        fields.push(format!(
            r#""hopLog": "{}""#,
            g.pick(&["off", "info", "warn", "debug"])
        ));
    }
    if g.chance(1, 3) {
        fields.push(format!(r#""outlierDetection": {}"#, gen_outlier(g)));
    }
    let mut sticky = None;
    let mut routes = Vec::new();
    for _ in 0..g.below(4) {
        let mut hosts: Vec<String> = Vec::new();
        for _ in 0..=g.below(2) {
            hosts.push(format!("\"{}\"", g.pick(&HOST_PATTERNS)));
        }
        let mut r = vec![format!(r#""hosts": [{}]"#, hosts.join(", "))];
        // A route may name a subset of the clusters (at least one).
        let subset: Vec<&str> = if g.chance(1, 4) {
            let k = 1 + g.below(n);
            names[..k].to_vec()
        } else {
            names.clone()
        };
        let policy = g.below(4);
        // `clusters` only where a policy chooses among them.
        let subset = if policy >= 2 { subset } else { names.clone() };
        if subset.len() < n {
            let quoted: Vec<String> = subset.iter().map(|c| format!("\"{c}\"")).collect();
            r.push(format!(r#""clusters": [{}]"#, quoted.join(", ")));
        }
        match policy {
            0 => r.push(r#""policy": "none""#.to_string()),
            1 => r.push(r#""policy": "clusterLocal""#.to_string()),
            2 => {
                r.push(r#""policy": "weighted""#.to_string());
                let mut entries = Vec::new();
                for _ in 0..=g.below(3) {
                    let region = *g.pick(&regions);
                    let from = match g.below(3) {
                        0 => "*".to_string(),
                        1 => format!("{region}/*"),
                        _ => region.to_string(),
                    };
                    entries.push(format!(
                        r#"{{"from": "{from}", "to": {}}}"#,
                        gen_weights(g, &subset)
                    ));
                }
                r.push(format!(r#""distribute": [{}]"#, entries.join(", ")));
                if g.chance(1, 2) {
                    let h = g.pick(&["x-user", "x-session", "cookie"]).to_string();
                    r.push(format!(r#""stickyHeader": "{h}""#));
                    sticky = Some(h);
                }
                if g.chance(1, 2) {
                    r.push(format!(r#""outlierDetection": {}"#, gen_outlier(g)));
                }
            }
            _ => {
                r.push(r#""policy": "failover""#.to_string());
                let sub_regions: Vec<&str> = CLUSTERS[..n]
                    .iter()
                    .filter(|c| subset.contains(&c.0))
                    .map(|c| c.2)
                    .collect();
                if sub_regions.len() >= 2 && g.chance(1, 2) {
                    let a = g.below(sub_regions.len());
                    let b = (a + 1 + g.below(sub_regions.len() - 1)) % sub_regions.len();
                    r.push(format!(
                        r#""failover": [{{"from": "{}", "to": "{}"}}]"#,
                        sub_regions[a], sub_regions[b]
                    ));
                } else if g.chance(1, 2) {
                    let labels = [
                        "topology.istio.io/network",
                        "topology.istio.io/cluster",
                        "topology.kubernetes.io/region",
                        "topology.kubernetes.io/zone",
                    ];
                    let k = 1 + g.below(labels.len());
                    let quoted: Vec<String> =
                        labels[..k].iter().map(|l| format!("\"{l}\"")).collect();
                    r.push(format!(r#""failoverPriority": [{}]"#, quoted.join(", ")));
                }
                if g.chance(1, 2) {
                    r.push(format!(r#""outlierDetection": {}"#, gen_outlier(g)));
                }
            }
        }
        routes.push(format!("{{{}}}", r.join(", ")));
    }
    fields.push(format!(r#""routes": [{}]"#, routes.join(", ")));
    Generated {
        json: format!("{{{}}}", fields.join(", ")),
        prefix,
        sticky,
    }
}

fn gen_mesh(n: usize) -> Mesh {
    let mut clusters = BTreeMap::new();
    for (i, (name, net, _, node_locality)) in CLUSTERS[..n].iter().enumerate() {
        clusters.insert(
            name.to_string(),
            ClusterSpec {
                network: net.to_string(),
                node_locality: node_locality.to_string(),
                gateway: format!("172.16.{i}.1:15443"),
                endpoints: vec![format!("10.{i}.0.5:8080"), format!("10.{i}.0.6:8080")],
                body: format!("{name}!"),
            },
        );
    }
    Mesh {
        clusters,
        client_namespace: "sleep".to_string(),
        trust_domain: "cluster.local".to_string(),
        trust_domain_aliases: Vec::new(),
    }
}

/// A header value: ordinary, hostile (CR/LF/NUL) or very long. (The harness's
/// header maps hold text, so bytes that are not UTF-8 are covered natively by
/// the `headers` cargo-fuzz target; here they are multi-byte characters.)
fn gen_value(g: &mut Gen) -> String {
    const VALUES: [&str; 18] = [
        "gke",
        "anthos",
        "aks",
        "1",
        "gke,anthos",
        "anthos,gke,aks",
        " gke , aks ",
        "gke,,anthos",
        "gke\r\nx-evil: 1",
        "cluster=anthos;network=default;locality=tokyo-onprem",
        "cluster=aks;network=azure-vnet",
        "cluster=gke\n;network=x",
        "\u{0}",
        "é\u{fffd}😀",
        "",
        "a b\tc",
        "cluster=mars",
        "x=y;cluster=gke",
    ];
    match g.below(8) {
        0 => {
            let v = *g.pick(&VALUES);
            let n = 1 + g.below(20_000) / v.len().max(1);
            v.repeat(n)
        }
        1 => {
            let n = 1 + g.below(60);
            let mut parts = Vec::new();
            for _ in 0..n {
                parts.push(*g.pick(&["gke", "anthos", "aks", "mars"]));
            }
            parts.join(",")
        }
        _ => g.pick(&VALUES).to_string(),
    }
}

fn gen_name(g: &mut Gen, prefix: &str, sticky: Option<&str>) -> String {
    const SUFFIXES: [&str; 11] = [
        "source-cluster",
        "source-network",
        "source-locality",
        "target-cluster",
        "served-by",
        "debug",
        "hops",
        "decision",
        "denied",
        "anything",
        "",
    ];
    match g.below(10) {
        0..=4 => format!("{prefix}-{}", g.pick(&SUFFIXES)),
        5 => format!("x-hybridmesh-{}", g.pick(&SUFFIXES)),
        6 => sticky.unwrap_or("x-user").to_string(),
        7 => g
            .pick(&["x-request-id", "user-agent", "cookie", "x-b3-traceid"])
            .to_string(),
        _ => format!("x-app-{}", g.below(5)),
    }
}

fn clean(v: &str) -> bool {
    !v.contains(['\r', '\n', '\0'])
}

/// The reserved headers an application may see from a client sidecar, with
/// the values the filter would write. `None` when every such header checks out.
fn check_reserved(
    headers: &Pairs,
    names: &HeaderNames,
    from: &str,
    identity: Option<(&str, &str)>,
    known: &[&str],
    max_hops: usize,
) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in headers {
        if !names.is_reserved(k.as_bytes()) {
            continue;
        }
        if !clean(v) {
            return Some(format!("{k}: {v:?} holds CR, LF or NUL"));
        }
        *counts.entry(k.as_str()).or_default() += 1;
        let ok = if *k == names.source_cluster {
            v == from
        } else if *k == names.source_network {
            identity.is_none_or(|(net, _)| v == net)
        } else if *k == names.source_locality {
            identity.is_none_or(|(_, loc)| v == loc)
        } else if *k == names.target_cluster || *k == names.pinned_cluster {
            known.contains(&v.as_str())
        } else if *k == names.hops {
            let entries: Vec<&str> = v.split(',').collect();
            entries.len() <= max_hops
                && entries.last() == Some(&from)
                && entries
                    .iter()
                    .all(|e| hybridmesh_filter_core::config::is_cluster_name(e))
        } else {
            false
        };
        if !ok {
            return Some(format!("{k}: {v:?} reached the application"));
        }
    }
    counts
        .iter()
        .find(|(_, n)| **n > 1)
        .map(|(k, n)| format!("{k} reached the application {n} times"))
}

fn check_logs(side: &str, sidecar: &dyn Sidecar, since: usize) -> Option<String> {
    sidecar
        .logs_since(since)
        .into_iter()
        .find(|(_, m)| !clean(m))
        .map(|(level, m)| format!("{side} logged a line with CR/LF/NUL at {level}: {m:?}"))
}

fn run_episode(
    module: &Module,
    run_seed: u64,
    episode: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let seed = run_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(episode);
    let mut g = Gen(Rng::new(seed));
    let n = 2 + g.below(2);
    let generated = gen_config(&mut g, n);
    let finding = |report: &mut Report, what: String| {
        report.findings.push(format!(
            "--replay {run_seed}:{episode}: {what}\n  config: {}",
            generated.json
        ));
    };
    report.configs += 1;
    let cfg = match hybridmesh_filter_core::parse_json(generated.json.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            finding(report, format!("a generated config was rejected: {e}"));
            return Ok(());
        }
    };
    let names = cfg.headers.clone();
    let max_hops = cfg.max_hops;
    let mesh = gen_mesh(n);
    let options = ProxyOptions {
        seed,
        ..ProxyOptions::default()
    };
    let config = generated.json.clone().into_bytes();
    let config_for = |_: &str| -> anyhow::Result<Vec<u8>> { Ok(config.clone()) };
    let mut wasm = Sim::new(
        mesh.clone(),
        true,
        &config_for,
        &mut |spec: &SidecarSpec| -> anyhow::Result<Box<dyn Sidecar>> {
            Ok(Box::new(WasmSidecar::new(module, spec)?))
        },
        &options,
    )
    .context("building the mesh")?;
    let mut native = Sim::new(
        mesh.clone(),
        true,
        &config_for,
        &mut |spec: &SidecarSpec| -> anyhow::Result<Box<dyn Sidecar>> {
            Ok(Box::new(NativeSidecar::new(spec)))
        },
        &options,
    )?;
    // In the simulation's order (its sidecars are listed that way).
    let sim_names: Vec<String> = wasm.cluster_names().to_vec();
    let cluster_names: Vec<&str> = sim_names.iter().map(String::as_str).collect();
    for (i, c) in wasm.clients.iter().enumerate() {
        if !c.configured() {
            finding(
                report,
                format!(
                    "{}'s client sidecar did not take a valid config",
                    cluster_names[i]
                ),
            );
            return Ok(());
        }
    }
    let mut comparing = true;
    let mut stop = false;
    let mut drained = vec![false; n];
    // The status each cluster's endpoints answer with, when failing.
    let mut failing: Vec<Option<u32>> = vec![None; n];

    for step in 0..(20 + g.below(40)) {
        let counts = wasm.failure_counts();
        let log_marks: Vec<usize> = wasm
            .clients
            .iter()
            .chain(wasm.servers.iter().flatten())
            .map(|c| c.logs().len())
            .collect();
        match g.below(20) {
            // Events: both meshes see the same.
            0 => {
                let i = g.below(n);
                drained[i] = true;
                wasm.drain(cluster_names[i])?;
                native.drain(cluster_names[i])?;
                report.events += 1;
            }
            1 => {
                let i = g.below(n);
                drained[i] = false;
                failing[i] = None;
                wasm.restore(cluster_names[i])?;
                native.restore(cluster_names[i])?;
                report.events += 1;
            }
            2 => {
                let i = g.below(n);
                let status = *g.pick(&[500u32, 503, 504]);
                failing[i] = Some(status);
                wasm.fail(cluster_names[i], status)?;
                native.fail(cluster_names[i], status)?;
                report.events += 1;
            }
            3 => {
                let by = Duration::from_millis(g.below(40_000) as u64);
                wasm.advance(by)?;
                native.advance(by)?;
                report.events += 1;
            }
            4 if g.chance(1, 3) => {
                // A broken config is refused and the old one stays; a valid one is taken.
                let broken = g.chance(1, 2);
                let next = if broken {
                    r#"{"routes": [{"hosts": ["*"], "policy": "weighted"}]}"#.to_string()
                } else {
                    gen_config(&mut g, n).json
                };
                let accepted = wasm.reconfigure("all", next.as_bytes())?;
                report.events += 1;
                let want = hybridmesh_filter_core::parse_json(next.as_bytes()).is_ok();
                if accepted != want {
                    finding(
                        report,
                        format!("step {step}: reconfigure to {next} accepted={accepted}"),
                    );
                }
                // The sidecars now differ from the native mesh and the generator's knowledge.
                comparing = false;
                stop = accepted;
            }
            5..=7 => {
                // Straight through one sidecar: repeats and anything in a header set.
                let i = g.below(n);
                let mut pairs: Pairs = vec![
                    (":method".into(), "GET".into()),
                    (":path".into(), "/".into()),
                    (":authority".into(), g.pick(&AUTHORITIES).to_string()),
                ];
                for _ in 0..g.below(16) {
                    let k = gen_name(&mut g, &generated.prefix, generated.sticky.as_deref());
                    let v = gen_value(&mut g);
                    pairs.push((k, v));
                }
                report.sidecar_requests += 1;
                let inbound = g.chance(1, 2);
                if inbound {
                    let plaintext = g.chance(1, 2);
                    let connection = if plaintext {
                        Connection::plaintext()
                    } else {
                        Connection::mtls(
                            "spiffe://cluster.local/ns/sleep/sa/sleep",
                            "spiffe://cluster.local/ns/default/sa/default",
                        )
                    };
                    let Some(server) = wasm.servers[i].as_mut() else {
                        continue;
                    };
                    let mut s = server.open(connection);
                    match s.request(&pairs, None)? {
                        Forward::Headers(seen) => {
                            if plaintext
                                && cfg.trust_source
                                    == hybridmesh_filter_core::config::TrustSource::Mtls
                            {
                                if let Some((k, v)) =
                                    seen.iter().find(|(k, _)| names.is_reserved(k.as_bytes()))
                                {
                                    finding(report, format!("step {step}: a plaintext peer's {k}: {v:?} reached {}'s application", cluster_names[i]));
                                }
                            }
                            let reply = s.respond(&Answer {
                                status: 200,
                                headers: vec![("content-type".into(), "text/plain".into())],
                                body: b"ok".to_vec(),
                                address: Some("127.0.0.1:8080".into()),
                                workload: None,
                                flags: 0,
                            })?;
                            let want = hybridmesh_filter_core::hop::served_by_value(
                                &wasm_identity(&mesh, cluster_names[i]),
                            );
                            let got: Vec<&String> = reply
                                .headers
                                .iter()
                                .filter(|(k, _)| *k == names.served_by)
                                .map(|(_, v)| v)
                                .collect();
                            if got != vec![&want] {
                                finding(report, format!("step {step}: {}'s server answered served-by {got:?}, expected {want:?}", cluster_names[i]));
                            }
                        }
                        Forward::Reply(r) => {
                            for (k, v) in &r.headers {
                                if names.is_reserved(k.as_bytes()) && !clean(v) {
                                    finding(
                                        report,
                                        format!("step {step}: local reply header {k}: {v:?}"),
                                    );
                                }
                            }
                        }
                    }
                } else {
                    // The upstream answers with whatever served-by and status.
                    let mut headers: Pairs = Vec::new();
                    for _ in 0..g.below(4) {
                        headers.push((names.served_by.clone(), gen_value(&mut g)));
                    }
                    let answer = Answer {
                        status: *g.pick(&[200u32, 503, 500, 404]),
                        headers,
                        body: Vec::new(),
                        address: Some(g.pick(&["172.16.1.1:15443", "10.0.0.5:8080"]).to_string()),
                        workload: g
                            .chance(1, 2)
                            .then(|| format!(";;;;{}", g.pick(&cluster_names))),
                        flags: if g.chance(1, 4) { 0x20 } else { 0 },
                    };
                    let as_spec = RequestSpec {
                        from: None,
                        authority: pairs[2].1.clone(),
                        path: "/".to_string(),
                        method: "GET".to_string(),
                        headers: pairs.iter().skip(3).cloned().collect(),
                        body: None,
                        direct: None,
                        peer: None,
                        protocol: None,
                        metadata: Default::default(),
                        callouts: Vec::new(),
                    };
                    let random = wasm.is_random(cluster_names[i], &as_spec);
                    let mut s = wasm.clients[i].open(Connection::plaintext());
                    let sent = match s.request(&pairs, None)? {
                        Forward::Headers(sent) => sent,
                        Forward::Reply(r) => {
                            finding(
                                report,
                                format!(
                                    "step {step}: a client sidecar answered itself: {}",
                                    r.status
                                ),
                            );
                            continue;
                        }
                    };
                    let (net, loc) = source_facts(cluster_names[i]);
                    if let Some(p) = check_reserved(
                        &sent,
                        &names,
                        cluster_names[i],
                        Some((net, loc)),
                        &cluster_names,
                        max_hops,
                    ) {
                        finding(
                            report,
                            format!(
                                "step {step}: {} client, headers {pairs:?}: {p}",
                                cluster_names[i]
                            ),
                        );
                    }
                    let reply = s.respond(&answer)?;
                    drop(s);
                    // The upstream's own served-by passes through untouched.
                    for p in check_reply(
                        &reply.headers,
                        reply.hop.as_deref(),
                        &names,
                        Some(&names.served_by),
                    ) {
                        finding(report, format!("step {step}: {p}"));
                    }
                    // The same through the native client, so health stays the same on both.
                    let target = |h: &Pairs| {
                        crate::header(h, &names.target_cluster)
                            .or_else(|| crate::header(h, &names.pinned_cluster))
                            .map(str::to_string)
                    };
                    let mut ns = native.clients[i].open(Connection::plaintext());
                    if let Forward::Headers(theirs) = ns.request(&pairs, None)? {
                        if comparing && !random {
                            report.compared += 1;
                            if target(&sent) != target(&theirs) {
                                finding(report, format!(
                                    "step {step}: {} client, headers {pairs:?}: the .wasm and the native filter disagree: target {:?} vs {:?}",
                                    cluster_names[i], target(&sent), target(&theirs)
                                ));
                                comparing = false;
                            }
                        }
                        ns.respond(&answer)?;
                    }
                    if random {
                        comparing = false;
                    }
                }
            }
            _ => {
                // Through the mesh.
                let from = cluster_names[g.below(n)];
                let mut headers = BTreeMap::new();
                for _ in 0..g.below(8) {
                    let k = gen_name(&mut g, &generated.prefix, generated.sticky.as_deref());
                    headers.insert(k, gen_value(&mut g));
                }
                let direct = g
                    .chance(1, 6)
                    .then(|| cluster_names[g.below(n)].to_string());
                let peer = direct.as_ref().and_then(|_| {
                    g.chance(1, 2)
                        .then(|| "spiffe://cluster.local/ns/sleep/sa/sleep".to_string())
                });
                let spec = RequestSpec {
                    from: Some(from.to_string()),
                    authority: g.pick(&AUTHORITIES).to_string(),
                    path: "/".to_string(),
                    method: "GET".to_string(),
                    headers,
                    body: None,
                    direct,
                    peer,
                    protocol: None,
                    metadata: Default::default(),
                    callouts: Vec::new(),
                };
                let random = wasm.is_random(from, &spec);
                let out = wasm.request(&spec, from)?;
                report.mesh_requests += 1;
                if spec.direct.is_none() {
                    if let Some(up) = &out.upstream_headers {
                        let (net, loc) = source_facts(from);
                        if let Some(p) = check_reserved(
                            up,
                            &names,
                            from,
                            Some((net, loc)),
                            &cluster_names,
                            max_hops,
                        ) {
                            finding(report, format!("step {step}: {spec:?}: {p}"));
                        }
                    }
                    if let (Some(t), Some(s)) = (&out.target, &out.served_by) {
                        let k = cluster_names.iter().position(|c| c == t);
                        let up = k.is_some_and(|k| !drained[k]);
                        // A preference (prefer- subset) moves to another
                        // cluster when the preferred one answers 503 (the
                        // route retries it); a pin never moves.
                        let pinned = out.route.as_deref().is_some_and(|r| r.contains("|only-"));
                        let moved = !pinned && k.is_some_and(|k| failing[k] == Some(503));
                        if up && t != s && !moved {
                            finding(
                                report,
                                format!("step {step}: {spec:?}: target {t} is up but {s} served"),
                            );
                        }
                    }
                } else if spec.peer.is_none()
                    && cfg.trust_source == hybridmesh_filter_core::config::TrustSource::Mtls
                {
                    if let Some(up) = &out.upstream_headers {
                        if let Some((k, v)) =
                            up.iter().find(|(k, _)| names.is_reserved(k.as_bytes()))
                        {
                            finding(report, format!("step {step}: a plaintext peer's {k}: {v:?} reached the application ({spec:?})"));
                        }
                    }
                }
                for p in check_reply(&out.response_headers, wasm.last_hop(), &names, None) {
                    finding(report, format!("step {step}: {spec:?}: {p}"));
                }
                if comparing {
                    let theirs = native.request(&spec, from)?;
                    if random {
                        comparing = false;
                    } else {
                        report.compared += 1;
                        let key = |o: &crate::Outcome| {
                            (
                                o.status,
                                o.target.clone(),
                                o.served_by.clone(),
                                o.route.clone(),
                            )
                        };
                        if key(&out) != key(&theirs) {
                            finding(report, format!(
                                "step {step}: {spec:?}: the .wasm and the native filter disagree: {:?} vs {:?}",
                                key(&out),
                                key(&theirs)
                            ));
                            comparing = false;
                        }
                    }
                }
            }
        }
        for f in wasm.failures_since(&counts) {
            finding(report, format!("step {step}: {f}"));
        }
        let sides = wasm
            .clients
            .iter()
            .zip(cluster_names.iter().map(|c| format!("{c}.client")));
        let servers = wasm
            .servers
            .iter()
            .flatten()
            .zip(cluster_names.iter().map(|c| format!("{c}.server")));
        for (i, (c, side)) in sides.chain(servers).enumerate() {
            if let Some(p) = check_logs(&side, c.as_ref(), log_marks[i]) {
                finding(report, format!("step {step}: {p}"));
            }
        }
        if stop || report.findings.len() >= 20 {
            break;
        }
    }
    Ok(())
}

/// The network and locality a cluster's client sidecar sends (node facts,
/// else the cluster table's region).
fn source_facts(cluster: &str) -> (&'static str, &'static str) {
    CLUSTERS
        .iter()
        .find(|c| c.0 == cluster)
        .map(|(_, net, loc, node)| (*net, if node.is_empty() { *loc } else { *node }))
        .unwrap_or(("", ""))
}

/// The identity a mesh cluster's proxies resolve (node facts, then the cluster table).
fn wasm_identity(mesh: &Mesh, cluster: &str) -> hybridmesh_filter_core::identity::Identity {
    let c = &mesh.clusters[cluster];
    let table = CLUSTERS
        .iter()
        .find(|x| x.0 == cluster)
        .map(|x| x.2)
        .unwrap_or_default();
    let node =
        hybridmesh_filter_core::identity::Locality::parse(&c.node_locality).unwrap_or_default();
    hybridmesh_filter_core::identity::Identity {
        cluster: cluster.to_string(),
        network: c.network.clone(),
        locality: if node.is_empty() {
            hybridmesh_filter_core::identity::Locality::new(table, "", "")
        } else {
            node
        },
        namespace: crate::SERVICE_NAMESPACE.to_string(),
    }
}

/// What the client application gets back: the filter's own response headers
/// are clean (`skip`: a reserved header the upstream itself sent), the hop
/// record is JSON.
fn check_reply(
    headers: &Pairs,
    hop: Option<&str>,
    names: &HeaderNames,
    skip: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in headers {
        if names.is_reserved(k.as_bytes()) && Some(k.as_str()) != skip && !clean(v) {
            out.push(format!("response header {k}: {v:?}"));
        }
    }
    if let Some(h) = hop {
        if serde_json::from_str::<serde_json::Value>(h).is_err() {
            out.push(format!("the hop record is not JSON: {h:?}"));
        }
    }
    out
}
