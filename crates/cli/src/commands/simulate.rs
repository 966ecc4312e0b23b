//! `hybridmesh simulate`: what does this config do to my traffic?

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

use hybridmesh_scenario::{ConfigRef, MeshRef, ProxyOptions, RequestSpec, Scenario};
use hybridmesh_sim::run::{build_sim, Engine};

use super::{load_module, Output, Paint};
use crate::Outcome;

/// The seed's mesh (GKE + Anthos), used unless `--mesh` names another.
const SEED_MESH: &str = include_str!("../../../../examples/mesh.yaml");

/// Send many requests from one cluster to a service through the filter, with
/// clusters failing at chosen times, and show where the traffic went.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh simulate --config examples/03-weighted-80-20/config.yaml --from gke\n  hybridmesh simulate --config examples/02-locality-failover/config.yaml --from anthos --drain anthos@20s-50s"
)]
pub struct SimulateCommand {
    /// The plugin config (YAML or JSON) every sidecar runs.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The mesh (default: the seed's GKE + Anthos mesh).
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// The client's cluster.
    #[arg(long, default_value = "gke")]
    from: String,
    /// The service, as the client names it.
    #[arg(long, default_value = "echo-svc.default")]
    authority: String,
    /// Number of requests (at most 10,000,000).
    #[arg(short = 'n', long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    requests: u32,
    /// Requests per second of simulated time.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// A cluster's endpoints go away during a time window: CLUSTER@START-END (e.g. anthos@20s-50s).
    #[arg(long, value_name = "CLUSTER@START-END")]
    drain: Vec<String>,
    /// A cluster's endpoints answer 503 during a time window: CLUSTER@START-END.
    #[arg(long, value_name = "CLUSTER@START-END")]
    fail: Vec<String>,
    /// A request header, NAME=VALUE; `{i}` in the value is replaced by the request number.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// The proxy-wasm module (default: the filter this repository builds).
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// Write the client sidecar's hop record of every request to FILE (JSON
    /// lines, as `hybridmesh trace` reads them).
    #[arg(long, value_name = "FILE")]
    hops: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    limits: crate::limits::ModuleLimits,
}

#[derive(Debug, Clone)]
struct Window {
    cluster: String,
    start: Duration,
    end: Duration,
    drain: bool,
}

fn window(spec: &str, drain: bool) -> anyhow::Result<Window> {
    let bad = || format!("{spec:?}: expected CLUSTER@START-END, e.g. anthos@20s-50s");
    let (cluster, times) = spec.split_once('@').with_context(bad)?;
    let (a, b) = times.split_once('-').with_context(bad)?;
    let start = hybridmesh_scenario::duration(a).with_context(bad)?;
    let end = hybridmesh_scenario::duration(b).with_context(bad)?;
    anyhow::ensure!(!cluster.is_empty(), "{spec:?}: no cluster before @");
    anyhow::ensure!(start < end, "{spec:?}: the window ends before it starts");
    Ok(Window {
        cluster: cluster.to_string(),
        start,
        end,
        drain,
    })
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: u32,
    pub from: String,
    pub service: String,
    /// Requests served, by cluster (`none`: answered by a proxy, not a cluster).
    pub served_by: BTreeMap<String, u32>,
    /// Requests the filter targeted, by cluster (`none`: left to Envoy).
    pub targeted: BTreeMap<String, u32>,
    pub errors: u32,
    /// Per time bucket: start second -> served_by counts.
    pub timeline: Vec<(u64, BTreeMap<String, u32>)>,
    /// (second, log line) of each ejection the client's sidecar logged.
    pub ejections: Vec<(f64, String)>,
    /// What happened when, for the timeline: drain and fail windows starting
    /// and ending, ejections and their ends (second, what), in time order.
    pub events: Vec<(f64, String)>,
    /// Requests that no rule of the config matched (the filter tagged them
    /// and left routing to Envoy).
    pub no_rule: u32,
}

/// `ejected cluster C for SVC for 60000ms (ejection #1) ...` -> (C, 60.0).
fn ejection(line: &str) -> Option<(String, f64)> {
    let rest = line.split("ejected cluster ").nth(1)?;
    let cluster = rest.split_whitespace().next()?.to_string();
    let ms = rest
        .split(" for ")
        .nth(2)?
        .split("ms")
        .next()?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some((cluster, ms / 1000.0))
}

impl SimulateCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let module = load_module(self.wasm.as_ref())?;
        let mut windows = Vec::new();
        for d in &self.drain {
            windows.push(window(d, true)?);
        }
        for f in &self.fail {
            windows.push(window(f, false)?);
        }
        anyhow::ensure!(self.rate > 0, "--rate must be at least 1");
        anyhow::ensure!(self.requests > 0, "-n must be at least 1");
        let config = std::fs::canonicalize(&self.config)
            .with_context(|| format!("cannot read {}", self.config.display()))?;
        let mesh = match &self.mesh {
            Some(p) => MeshRef::Path(
                std::fs::canonicalize(p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .display()
                    .to_string(),
            ),
            None => MeshRef::Inline(
                serde_yaml_ng::from_str(SEED_MESH).context("the built-in seed mesh")?,
            ),
        };
        let scenario = Scenario {
            name: "simulate".into(),
            description: String::new(),
            mesh,
            config: Some(ConfigRef::Path(config.display().to_string())),
            configs: BTreeMap::new(),
            proxy: ProxyOptions::default(),
            from: Some(self.from.clone()),
            steps: Vec::new(),
            path: PathBuf::from("simulate.yaml"),
        };
        // The config must be valid before traffic means anything: checked the
        // way `validate` checks it, so errors carry the file's own lines.
        let problems: Vec<String> = hybridmesh_ops::deploy::validate::validate_file(&self.config)?
            .into_iter()
            .flat_map(|f| f.errors)
            .map(|e| e.to_string())
            .collect();
        if !problems.is_empty() {
            anyhow::bail!(
                "{}: invalid plugin config:\n  {}",
                self.config.display(),
                problems.join("\n  ")
            );
        }
        let mut sim = build_sim(&scenario, &Engine::Wasm(module, self.limits.limits()))?;
        let step = Duration::from_secs_f64(1.0 / f64::from(self.rate));
        let total = step * self.requests;
        for w in &windows {
            anyhow::ensure!(
                sim.cluster_names().contains(&w.cluster),
                "--drain/--fail: unknown cluster {:?}, expected one of {}",
                w.cluster,
                sim.cluster_names().join(", ")
            );
            anyhow::ensure!(
                w.start < total,
                "--drain/--fail {}@{:?}: starts after the simulation ends ({:.1}s: {} requests at {}/s)",
                w.cluster,
                w.start,
                total.as_secs_f64(),
                self.requests,
                self.rate
            );
        }
        let bucket = (total.as_secs() / 10).max(1);
        let mut summary = Summary {
            requests: self.requests,
            from: self.from.clone(),
            service: self.authority.clone(),
            served_by: BTreeMap::new(),
            targeted: BTreeMap::new(),
            errors: 0,
            timeline: Vec::new(),
            ejections: Vec::new(),
            events: Vec::new(),
            no_rule: 0,
        };
        for w in &windows {
            let what = if w.drain { "drained" } else { "failing (503)" };
            summary.events.push((
                w.start.as_secs_f64(),
                format!("{} {what} until {:.2}s", w.cluster, w.end.as_secs_f64()),
            ));
            if w.end < total {
                summary
                    .events
                    .push((w.end.as_secs_f64(), format!("{} back", w.cluster)));
            }
        }
        let started = std::time::Instant::now();
        let mut last_report = started;
        let client = format!("{}.client", self.from);
        let mut hop_log = match &self.hops {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot write {}", p.display()))?,
            )),
            None => None,
        };
        let mut seen_logs = 0;
        let progress = std::io::stderr().is_terminal() && self.output == Output::Text;
        let mut now = Duration::ZERO;
        let mut active: Vec<bool> = vec![false; windows.len()];
        for i in 0..self.requests {
            for (k, w) in windows.iter().enumerate() {
                let on = now >= w.start && now < w.end;
                if on != active[k] {
                    active[k] = on;
                    if on && w.drain {
                        sim.drain(&w.cluster)?;
                    } else if on {
                        sim.fail(&w.cluster, 503)?;
                    } else {
                        sim.restore(&w.cluster)?;
                    }
                }
            }
            let mut headers = BTreeMap::new();
            for h in &self.headers {
                let (k, v) = h
                    .split_once('=')
                    .with_context(|| format!("--header {h:?}: expected NAME=VALUE"))?;
                headers.insert(k.to_string(), v.replace("{i}", &i.to_string()));
            }
            let spec = RequestSpec {
                from: None,
                authority: self.authority.clone(),
                path: "/".into(),
                method: "GET".into(),
                headers,
                body: None,
                direct: None,
                peer: None,
                protocol: None,
                metadata: Default::default(),
                callouts: Vec::new(),
            };
            let o = sim.request(&spec, &self.from)?;
            if let Some(hop) = sim.last_hop() {
                if let Some(w) = hop_log.as_mut() {
                    writeln!(w, "{hop}").with_context(|| {
                        format!(
                            "cannot write {}",
                            self.hops
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        )
                    })?;
                }
                let v: serde_json::Value = serde_json::from_str(hop).unwrap_or_default();
                if v.get("rule").is_some_and(serde_json::Value::is_null) {
                    summary.no_rule += 1;
                    if summary.no_rule == 1 {
                        eprintln!(
                            "warning: no rule of {} matches {} (--authority {}): the filter tags these requests and leaves routing to Envoy",
                            self.config.display(),
                            v["service"].as_str().unwrap_or(&self.authority),
                            self.authority
                        );
                    }
                }
            }
            let served = o.served_by.clone().unwrap_or_else(|| "none".into());
            *summary.served_by.entry(served.clone()).or_insert(0) += 1;
            *summary
                .targeted
                .entry(o.target.clone().unwrap_or_else(|| "none".into()))
                .or_insert(0) += 1;
            if o.status >= 500 {
                summary.errors += 1;
            }
            let b = now.as_secs() / bucket * bucket;
            if summary.timeline.last().map(|(s, _)| *s) != Some(b) {
                summary.timeline.push((b, BTreeMap::new()));
            }
            if let Some((_, m)) = summary.timeline.last_mut() {
                *m.entry(if o.status >= 500 {
                    "error".to_string()
                } else {
                    served
                })
                .or_insert(0) += 1;
            }
            let new_logs = sim.sidecar(&client)?.logs_since(seen_logs);
            seen_logs += new_logs.len();
            for (_, line) in new_logs {
                if line.contains("ejected cluster") {
                    let t = now.as_secs_f64();
                    if let Some((cluster, secs)) = ejection(&line) {
                        summary
                            .events
                            .push((t, format!("{cluster} ejected until {:.2}s", t + secs)));
                        if t + secs < total.as_secs_f64() {
                            summary
                                .events
                                .push((t + secs, format!("{cluster}'s ejection ends")));
                        }
                    }
                    summary.ejections.push((t, line));
                }
            }
            sim.advance(step)?;
            now += step;
            if progress && i % 500 == 0 {
                let done = f64::from(i) / f64::from(self.requests);
                let eta = if done > 0.0 {
                    format!(
                        ", about {:.0}s left",
                        started.elapsed().as_secs_f64() * (1.0 - done) / done
                    )
                } else {
                    String::new()
                };
                eprint!(
                    "\r{i}/{} requests ({:.0}%){eta}   ",
                    self.requests,
                    done * 100.0
                );
                let _ = std::io::stderr().flush();
            } else if !progress
                && self.output == Output::Text
                && last_report.elapsed() >= Duration::from_secs(10)
            {
                // Not a terminal (CI, a file): a line every 10 s of a long run.
                last_report = std::time::Instant::now();
                eprintln!(
                    "simulate: {i}/{} requests ({:.0}%) after {:.0}s",
                    self.requests,
                    f64::from(i) * 100.0 / f64::from(self.requests),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        summary.events.sort_by(|a, b| a.0.total_cmp(&b.0));
        if progress {
            eprint!("\r{:40}\r", "");
        }
        if let Some(mut w) = hop_log {
            w.flush()?;
        }
        match self.output {
            Output::Json | Output::Yaml => {
                super::print_data(self.output == Output::Json, &summary)?
            }
            Output::Text => print_summary(&summary, bucket),
        }
        Ok(Outcome::Passed)
    }
}

fn bar(share: f64, width: usize) -> String {
    let full = (share * width as f64).round() as usize;
    format!(
        "{}{}",
        "█".repeat(full.min(width)),
        "░".repeat(width - full.min(width))
    )
}

fn print_summary(s: &Summary, bucket: u64) {
    let p = Paint::stdout();
    let n = f64::from(s.requests.max(1));
    println!(
        "{} requests from {} to {}",
        s.requests,
        p.bold(&s.from),
        p.bold(&s.service)
    );
    println!("\nserved by:");
    for (c, k) in &s.served_by {
        let share = f64::from(*k) / n;
        println!("  {c:<10} {} {:>6.1}%  {k}", bar(share, 40), share * 100.0);
    }
    println!("\ndecisions (x-hybridmesh-target-cluster):");
    for (c, k) in &s.targeted {
        let label = if c == "none" {
            "left to Envoy".to_string()
        } else {
            format!("-> {c}")
        };
        println!("  {label:<16} {k}");
    }
    println!(
        "\nerrors (5xx): {} ({:.2}%)",
        s.errors,
        f64::from(s.errors) * 100.0 / n
    );
    println!("\ntimeline ({bucket}s buckets):");
    let mut events = s.events.iter().peekable();
    for (start, counts) in &s.timeline {
        // What happened before this bucket's end, on lines of its own.
        while let Some((t, what)) = events.next_if(|(t, _)| *t < (*start + bucket) as f64) {
            println!("   -- {t:>6.2}s  {what}");
        }
        let total: u32 = counts.values().sum();
        let parts: Vec<String> = counts
            .iter()
            .map(|(c, k)| {
                format!(
                    "{c} {:.1}%",
                    f64::from(*k) * 100.0 / f64::from(total.max(1))
                )
            })
            .collect();
        println!("  {:>5}s  {}", start, parts.join("  "));
    }
    for (t, what) in events {
        println!("   -- {t:>6.2}s  {what}");
    }
    if s.no_rule > 0 {
        println!(
            "\n{} request(s) matched no rule of the config: tagged, routing left to Envoy",
            s.no_rule
        );
    }
    if s.ejections.is_empty() {
        println!("\nejections: none");
    } else {
        println!("\nejections:");
        for (t, line) in &s.ejections {
            println!("  {t:>7.2}s  {}", line.trim_start_matches("hybridmesh: "));
        }
    }
}
