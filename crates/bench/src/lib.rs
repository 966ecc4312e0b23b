//! `hybridmesh bench`: what the filter costs in a real Envoy 1.40 (V8),
//! measured against no filter and against Envoy's Lua filter doing the
//! tagging job, side by side in one run, and written to `BENCHMARKS.md`.
//!
//! One Envoy per variant, each with one worker pinned to CPU 0; `wrk`, the
//! upstream and the latency client on CPU 1. Variants are interleaved round
//! by round (the order rotates), and every figure is a median over rounds of
//! what was measured in the same round, so a noisy neighbour moves the
//! absolute numbers but not the ratios.

pub mod envoy;
pub mod harness;
pub mod instructions;
pub mod load;
pub mod report;
pub mod scaling;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use envoy::{HeaderSet, Mode, Variant};
use hybridmesh_replica::process::{self, Envoy, Options as SpawnOptions};

/// What to run, and how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub wasm: PathBuf,
    pub examples: PathBuf,
    pub workspace: PathBuf,
    /// Interleaved rounds of every measurement.
    pub rounds: usize,
    /// Each variant's `wrk` run per round.
    pub duration: Duration,
    pub connections: u32,
    /// The fixed, moderate rate of the latency runs.
    pub latency_rate: u32,
    pub latency_duration: Duration,
    pub startup_runs: usize,
    /// Only start-up and resident memory (no load, no callgrind).
    pub startup_only: bool,
    /// Requests before the second linear-memory reading.
    pub memory_requests: u64,
    pub harness_requests: u64,
    /// A smoke run ([`Options::quick`]): the report says its figures are not
    /// measurements.
    pub quick: bool,
    /// Requests counted per variant and header set under callgrind (0: no
    /// instruction counts).
    pub instruction_requests: u64,
    /// The variants whose instructions are counted.
    pub instruction_variants: Vec<Variant>,
    /// Only the instruction counts (no timed runs).
    pub instructions_only: bool,
    /// Also count each host-call probe (ten calls of one host function).
    pub instruction_probes: bool,
    /// Another build of the filter, run as the `*-before` variants.
    pub compare_wasm: Option<PathBuf>,
    /// Measure how cost grows with routes and clusters ([`scaling`]).
    pub scaling: bool,
}

impl Options {
    /// The variants of this run: the core ones, and the `--compare-wasm`
    /// ones when there is another build to compare with.
    pub fn variants(&self) -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|v| !v.is_before() || self.compare_wasm.is_some())
            .collect()
    }

    pub fn new(wasm: PathBuf, examples: PathBuf, workspace: PathBuf) -> Options {
        Options {
            wasm,
            examples,
            workspace,
            rounds: 5,
            duration: Duration::from_secs(5),
            connections: 16,
            latency_rate: 2000,
            latency_duration: Duration::from_secs(4),
            startup_runs: 3,
            startup_only: false,
            memory_requests: 1_000_000,
            harness_requests: 100_000,
            quick: false,
            instruction_requests: 500,
            instruction_variants: Variant::CORE.to_vec(),
            instructions_only: false,
            instruction_probes: true,
            compare_wasm: None,
            scaling: true,
        }
    }

    /// A smoke run: every measurement, tiny amounts (for tests).
    pub fn quick(mut self) -> Options {
        self.rounds = 1;
        self.duration = Duration::from_secs(1);
        self.latency_rate = 500;
        self.latency_duration = Duration::from_millis(500);
        self.startup_runs = 1;
        self.memory_requests = 5_000;
        self.harness_requests = 2_000;
        self.quick = true;
        self.instruction_requests = 0;
        self
    }
}

/// Where progress goes.
pub trait Progress {
    fn line(&mut self, s: &str);
}

/// One variant's throughput figures in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
    /// Envoy's CPU time (user + system) per request, microseconds.
    pub cpu_us: f64,
}

/// One variant's latency at the fixed rate in one round (microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
    pub errors: u64,
}

/// Linear memory and RSS of a fresh client-side Envoy, after 1k and after
/// `requests` requests.
#[derive(Debug, Clone, Default)]
pub struct MemoryRun {
    pub requests: u64,
    pub linear_after_1k: u64,
    pub linear_at_end: u64,
    pub rss_after_1k: u64,
    pub rss_at_end: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub options_line: String,
    pub machine: String,
    pub envoy_version: String,
    pub wasm_bytes: u64,
    pub load_before: String,
    pub load_after: String,
    pub started: String,
    pub seconds: f64,
    /// (mode, variant) -> per round.
    pub throughput: BTreeMap<(u8, u8), Vec<Throughput>>,
    pub latency: BTreeMap<u8, Vec<Latency>>,
    /// Start-up to first response, milliseconds, per run.
    pub startup: BTreeMap<u8, Vec<f64>>,
    /// Each start-up run's memory after 100 requests.
    pub startup_memory: BTreeMap<u8, Vec<hybridmesh_replica::memory::Footprint>>,
    /// VmRSS after the throughput rounds (direct response), bytes.
    pub rss: BTreeMap<u8, u64>,
    pub memory: MemoryRun,
    pub harness: harness::HarnessFigures,
    pub quick: bool,
    /// Requests per second of the latency runs.
    pub latency_rate: u32,
    /// Instructions per request under callgrind, by (variant, header set).
    pub instructions: BTreeMap<(u8, HeaderSet), instructions::Count>,
    /// No filter with the server side's request headers (its floor).
    pub server_floor: BTreeMap<HeaderSet, instructions::Count>,
    /// Instructions per request of each host-call probe (ten calls).
    pub probes: BTreeMap<envoy::Probe, instructions::Count>,
    /// The variants of the run, in table order.
    pub variants: Vec<Variant>,
    /// The `--compare-wasm` build's size in bytes.
    pub compare_wasm_bytes: Option<u64>,
    /// How cost grows with routes and clusters, point by point.
    pub scaling: Vec<scaling::Figures>,
    /// What each pod pays, measured in the Istio lab (`hybridmesh-lab
    /// --per-pod FILE`'s Markdown, which `scripts/bench --lab` runs first).
    pub per_pod: Option<String>,
}

pub fn mode_key(m: Mode) -> u8 {
    match m {
        Mode::Direct => 1,
        Mode::Upstream => 2,
    }
}

pub fn variant_key(v: Variant) -> u8 {
    Variant::ALL.iter().position(|x| *x == v).unwrap_or(0) as u8
}

/// The plugin config of a variant: an example's config through the filter's
/// own parser, as the tools load every config.
pub fn plugin_config(examples: &Path, v: Variant) -> anyhow::Result<Vec<u8>> {
    use serde_json::json;
    let bytes = match v {
        Variant::None | Variant::Lua | Variant::Empty | Variant::Calls => return Ok(Vec::new()),
        // The reference filters read their mode from the configuration.
        Variant::SdkEmpty => return Ok(b"empty".to_vec()),
        Variant::SdkTag => return Ok(b"tag".to_vec()),
        // The side is set in the config, as wasmplugin/ deploys the filter
        // (one WasmPlugin per side), so no request reads the listener direction.
        // Tagging only: no hop record in filter state (the weighted variant
        // has one).
        Variant::Tag | Variant::TagBefore => hybridmesh_replica::demo::example_config(
            examples,
            "01-default-spread",
            &[
                ("direction", json!("outbound")),
                ("filterState", json!(false)),
            ],
        )?,
        Variant::Weighted | Variant::WeightedBefore => hybridmesh_replica::demo::example_config(
            examples,
            "03-weighted-80-20",
            &[("direction", json!("outbound"))],
        )?,
        // No mTLS between the load generator and the listener: the server
        // side believes the source headers it is sent.
        Variant::Server | Variant::ServerBefore => hybridmesh_replica::demo::example_config(
            examples,
            "04-cluster-local",
            &[
                ("direction", json!("inbound")),
                ("trustSource", json!("any")),
            ],
        )?,
    };
    hybridmesh_filter_core::config::parse_json(&bytes)
        .map_err(|e| anyhow::anyhow!("the {} config is invalid: {e}", v.short()))?;
    Ok(bytes)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{model}, {cpus} CPUs, {mem}, {}", sh("uname", &["-sr"]))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// (utime + stime) of a process in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: u64 = f.get(11).context("utime")?.parse()?;
    let s: u64 = f.get(12).context("stime")?.parse()?;
    Ok(u + s)
}

fn clock_ticks() -> f64 {
    sh("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

/// Resident memory in bytes (0 when the process is gone).
fn rss_bytes(pid: u32) -> u64 {
    hybridmesh_replica::load::rss_kib(pid).map_or(0, |kb| kb * 1024)
}

/// The processes of one run, stopped on drop.
struct Fleet {
    envoys: Vec<Envoy>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.envoys.iter().map(|e| e.pid).collect();
        process::stop_many(&pids);
    }
}

struct Ctx<'a> {
    opts: &'a Options,
    empty_wasm: PathBuf,
    calls_wasm: PathBuf,
    sdk_wasm: PathBuf,
    binary: PathBuf,
    dir: PathBuf,
    configs: BTreeMap<u8, Vec<u8>>,
}

impl Ctx<'_> {
    fn spawn(
        &self,
        ip: Ipv4Addr,
        mode: Mode,
        v: Variant,
        name: &str,
        cpu: usize,
    ) -> anyhow::Result<Envoy> {
        let path = self.write_bootstrap(ip, mode, v, name)?;
        process::spawn_with(
            &self.binary,
            name,
            &path,
            envoy::admin(ip),
            &self.dir,
            &SpawnOptions {
                cpu: Some(cpu),
                quiet: true,
                ..SpawnOptions::default()
            },
        )
    }

    fn write_bootstrap(
        &self,
        ip: Ipv4Addr,
        mode: Mode,
        v: Variant,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        let wasm = match v {
            Variant::Empty => &self.empty_wasm,
            Variant::Calls => &self.calls_wasm,
            Variant::SdkEmpty | Variant::SdkTag => &self.sdk_wasm,
            v if v.is_before() => self.opts.compare_wasm.as_ref().unwrap_or(&self.opts.wasm),
            _ => &self.opts.wasm,
        };
        self.write_bootstrap_with(ip, mode, v, name, wasm)
    }

    fn write_bootstrap_with(
        &self,
        ip: Ipv4Addr,
        mode: Mode,
        v: Variant,
        name: &str,
        wasm: &Path,
    ) -> anyhow::Result<PathBuf> {
        let boot = envoy::bootstrap(
            ip,
            mode,
            v,
            wasm,
            self.configs
                .get(&variant_key(v))
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
        let path = self.dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&boot)?)?;
        Ok(path)
    }
}

/// Builds the SDK reference filters (`probes/sdk-floor`) with cargo into the
/// workspace's target folder; the `.wasm`'s path.
pub fn build_sdk_probe(workspace: &Path) -> anyhow::Result<PathBuf> {
    let manifest = workspace.join("crates/bench/probes/sdk-floor/Cargo.toml");
    let target = workspace.join("target/probes");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .context("cannot run cargo to build the SDK reference filters")?;
    if !out.status.success() {
        bail!(
            "building {} failed:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(target.join("wasm32-wasip1/release/sdk_floor.wasm"))
}

/// Runs the whole suite.
pub fn run(opts: &Options, out: &mut dyn Progress) -> anyhow::Result<Report> {
    let started = Instant::now();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 2 && !opts.instructions_only {
        bail!("the benchmark needs 2 CPUs (Envoy's worker on one, the load on the other); this machine has {cpus}");
    }
    if !load::wrk_present() && !opts.instructions_only {
        bail!("wrk is missing: install it with `apt-get install wrk` (scripts/bench does)");
    }
    let binary = process::envoy_binary(&opts.workspace)?;
    let wasm_bytes = std::fs::metadata(&opts.wasm)
        .with_context(|| {
            format!(
                "cannot read {} (build it: scripts/build-wasm)",
                opts.wasm.display()
            )
        })?
        .len();
    // Envoy runs elsewhere than here: it gets an absolute path.
    let wasm_path = std::fs::canonicalize(&opts.wasm)?;
    let compare_wasm = match &opts.compare_wasm {
        Some(w) => Some(
            std::fs::canonicalize(w)
                .with_context(|| format!("cannot read --compare-wasm {}", w.display()))?,
        ),
        None => None,
    };
    let opts = &Options {
        wasm: wasm_path,
        compare_wasm,
        ..opts.clone()
    };
    // This process (the latency client) joins wrk and the upstream on CPU 1.
    let _ = Command::new("taskset")
        .args(["-a", "-cp", "1", &std::process::id().to_string()])
        .output();
    // One directory per run: two runs at once (the test suite starts two)
    // must not delete each other's files.
    let dir = opts
        .workspace
        .join("target/bench-run")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut configs = BTreeMap::new();
    let variants = opts.variants();
    for v in &variants {
        configs.insert(variant_key(*v), plugin_config(&opts.examples, *v)?);
    }
    let empty_wasm = dir.join("empty.wasm");
    std::fs::write(&empty_wasm, wat::parse_str(envoy::empty_module())?)?;
    let calls_wasm = dir.join("calls.wasm");
    std::fs::write(&calls_wasm, wat::parse_str(envoy::calls_module())?)?;
    out.line("building the SDK reference filters ...");
    let sdk_wasm = build_sdk_probe(&opts.workspace)?;
    let ctx = Ctx {
        opts,
        empty_wasm,
        calls_wasm,
        sdk_wasm,
        binary: binary.clone(),
        dir: dir.clone(),
        configs,
    };
    let mut report = Report {
        variants: variants.clone(),
        compare_wasm_bytes: match &opts.compare_wasm {
            Some(w) => Some(
                std::fs::metadata(w)
                    .with_context(|| format!("cannot read {}", w.display()))?
                    .len(),
            ),
            None => None,
        },
        machine: machine(),
        envoy_version: sh(&binary.display().to_string(), &["--version"])
            .split("version:")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string(),
        wasm_bytes,
        load_before: loadavg(),
        started: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        quick: opts.quick,
        latency_rate: opts.latency_rate,
        options_line: format!(
            "{} rounds; wrk -t1 -c{} for {:.1} s per variant per round; latency at {} req/s over 4 connections for {:.1} s; {} start-ups per variant; {} requests for the memory run; {} harness requests",
            opts.rounds,
            opts.connections,
            opts.duration.as_secs_f64(),
            opts.latency_rate,
            opts.latency_duration.as_secs_f64(),
            opts.startup_runs,
            opts.memory_requests,
            opts.harness_requests
        ),
        ..Report::default()
    };
    if opts.instruction_requests > 0 {
        instructions::tools_present()?;
    }
    if opts.startup_only {
        let chosen = opts.instruction_variants.clone();
        startup(&ctx, &chosen, &mut report, out)?;
        report.load_after = loadavg();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if opts.instructions_only {
        (report.instructions, report.server_floor, report.probes) = count_instructions(&ctx, out)?;
        if opts.scaling {
            report.scaling = scaling_run(&ctx, out)?;
        }
        report.load_after = loadavg();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let ticks = clock_ticks();

    // The standing fleet: every variant, both modes, and the upstream.
    out.line(&format!(
        "starting Envoy: {} variants x 2 modes + 1 upstream ...",
        variants.len()
    ));
    let mut fleet = Fleet { envoys: Vec::new() };
    let upstream_boot = dir.join("upstream.json");
    std::fs::write(
        &upstream_boot,
        serde_json::to_vec_pretty(&envoy::upstream_bootstrap())?,
    )?;
    fleet.envoys.push(process::spawn_with(
        &binary,
        "upstream",
        &upstream_boot,
        envoy::admin(envoy::upstream_address()),
        &dir,
        &SpawnOptions {
            cpu: Some(1),
            quiet: true,
            ..SpawnOptions::default()
        },
    )?);
    let mut standing: BTreeMap<(u8, u8), Envoy> = BTreeMap::new();
    for mode in [Mode::Direct, Mode::Upstream] {
        for v in variants.iter().copied() {
            let ip = envoy::address(mode_key(mode), v);
            let e = ctx.spawn(ip, mode, v, &format!("{}-{}", mode_key(mode), v.short()), 0)?;
            fleet.envoys.push(e.clone());
            standing.insert((mode_key(mode), variant_key(v)), e);
        }
    }
    for e in &fleet.envoys {
        e.wait_ready(Duration::from_secs(60))?;
    }
    // Every variant answers 200 before anything is measured.
    for mode in [Mode::Direct, Mode::Upstream] {
        for v in variants.iter().copied() {
            let ip = envoy::address(mode_key(mode), v);
            let mut c = load::Conn::open(envoy::listener(ip))?;
            let status = load::status(&mut c, envoy::SERVICE, &v.request_headers())?;
            if status != 200 {
                bail!(
                    "{} ({}) answered {status}; see {}",
                    v.name(),
                    mode.name(),
                    dir.display()
                );
            }
        }
    }

    // Throughput, interleaved.
    let warm = Duration::from_secs(1);
    for mode in [Mode::Direct, Mode::Upstream] {
        for v in variants.iter().copied() {
            let ip = envoy::address(mode_key(mode), v);
            load::wrk(
                envoy::listener(ip),
                envoy::SERVICE,
                &v.request_headers(),
                opts.connections,
                warm,
                Some(1),
            )?;
        }
    }
    for round in 0..opts.rounds {
        for mode in [Mode::Direct, Mode::Upstream] {
            let mut line = format!(
                "throughput round {}/{} ({}):",
                round + 1,
                opts.rounds,
                mode.name()
            );
            for k in 0..variants.len() {
                let v = variants[(k + round) % variants.len()];
                let key = (mode_key(mode), variant_key(v));
                let e = &standing[&key];
                let ip = envoy::address(mode_key(mode), v);
                let before = cpu_ticks(e.pid)?;
                let w = load::wrk(
                    envoy::listener(ip),
                    envoy::SERVICE,
                    &v.request_headers(),
                    opts.connections,
                    opts.duration,
                    Some(1),
                )?;
                let used = cpu_ticks(e.pid)?.saturating_sub(before) as f64 / ticks;
                let t = Throughput {
                    rps: w.rps,
                    requests: w.requests,
                    errors: w.errors,
                    cpu_us: used * 1e6 / (w.requests.max(1) as f64),
                };
                line.push_str(&format!(" {} {:.0}", v.short(), t.rps));
                report.throughput.entry(key).or_default().push(t);
            }
            out.line(&line);
        }
    }
    for v in variants.iter().copied() {
        let e = &standing[&(mode_key(Mode::Direct), variant_key(v))];
        report.rss.insert(variant_key(v), rss_bytes(e.pid));
    }

    // Latency at a fixed, moderate rate (direct response).
    for round in 0..opts.rounds {
        let mut line = format!("latency round {}/{}:", round + 1, opts.rounds);
        for k in 0..variants.len() {
            let v = variants[(k + round) % variants.len()];
            let ip = envoy::address(mode_key(Mode::Direct), v);
            let p = load::paced(
                envoy::listener(ip),
                envoy::SERVICE,
                &v.request_headers(),
                opts.latency_rate,
                4,
                opts.latency_duration,
            )?;
            let l = Latency {
                p50: p.percentile(50.0),
                p99: p.percentile(99.0),
                samples: p.latencies_us.len(),
                errors: p.errors,
            };
            line.push_str(&format!(
                " {} p50 {:.0}us p99 {:.0}us",
                v.short(),
                l.p50,
                l.p99
            ));
            report.latency.entry(variant_key(v)).or_default().push(l);
        }
        out.line(&line);
    }
    drop(fleet);

    startup(&ctx, &variants, &mut report, out)?;

    // Linear memory: a fresh client-side Envoy, after 1k requests and after many.
    report.memory = memory_run(&ctx, out)?;

    if opts.instruction_requests > 0 {
        (report.instructions, report.server_floor, report.probes) = count_instructions(&ctx, out)?;
    }

    out.line("harness ...");
    let wasm = std::fs::read(&opts.wasm)?;
    report.harness = harness::measure(
        &wasm,
        &ctx.configs[&variant_key(Variant::Weighted)],
        &ctx.configs[&variant_key(Variant::Server)],
        opts.harness_requests,
    )?;
    if opts.scaling {
        report.scaling = scaling_run(&ctx, out)?;
    }
    report.load_after = loadavg();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Start-up, from spawn to the first 200 on the listener, `startup_runs`
/// times per variant (interleaved); then, in each run, the resident memory
/// after 100 more requests (VmRSS: V8, the module's compiled code, the VMs'
/// linear memory, and where it goes: [`hybridmesh_replica::memory::Footprint`]), into
/// `report.startup` and `report.startup_memory`.
fn startup(
    ctx: &Ctx,
    variants: &[Variant],
    report: &mut Report,
    out: &mut dyn Progress,
) -> anyhow::Result<()> {
    let opts = ctx.opts;
    for run in 0..opts.startup_runs {
        let mut line = format!("start-up run {}/{}:", run + 1, opts.startup_runs);
        for k in 0..variants.len() {
            let v = variants[(k + run) % variants.len()];
            let ip = envoy::address(3, v);
            let t = Instant::now();
            let e = ctx.spawn(ip, Mode::Direct, v, &format!("startup-{}", v.short()), 0)?;
            let fleet = Fleet {
                envoys: vec![e.clone()],
            };
            let (ms, mut c) = loop {
                if let Ok(mut c) = load::Conn::open(envoy::listener(ip)) {
                    if let Ok(200) = load::status(&mut c, envoy::SERVICE, &v.request_headers()) {
                        break (t.elapsed().as_secs_f64() * 1e3, c);
                    }
                }
                if t.elapsed() > Duration::from_secs(60) {
                    bail!("{} did not serve within 60 s: {}", v.name(), e.log_tail(10));
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            for _ in 0..100 {
                load::status(&mut c, envoy::SERVICE, &v.request_headers())?;
            }
            let m = hybridmesh_replica::memory::Footprint::of(&e, v.is_ours());
            drop(fleet);
            line.push_str(&format!(" {} {:.0}ms {}", v.short(), ms, m.line()));
            report.startup.entry(variant_key(v)).or_default().push(ms);
            report
                .startup_memory
                .entry(variant_key(v))
                .or_default()
                .push(m);
        }
        out.line(&line);
    }
    Ok(())
}

type Counts = BTreeMap<(u8, HeaderSet), instructions::Count>;

/// The instruction phase's results: every variant, the server side's floor,
/// the host-call probes.
type InstructionCounts = (
    Counts,
    BTreeMap<HeaderSet, instructions::Count>,
    BTreeMap<envoy::Probe, instructions::Count>,
);

/// Instructions per request of every chosen variant, bare and header-heavy
/// (no filter also with the server side's headers, its floor), one Envoy
/// under callgrind per variant; then each host-call probe.
fn count_instructions(ctx: &Ctx, out: &mut dyn Progress) -> anyhow::Result<InstructionCounts> {
    let mut counts = BTreeMap::new();
    let mut server_floor = BTreeMap::new();
    let sets = [HeaderSet::Bare, HeaderSet::Heavy];
    let n = ctx.opts.instruction_requests;
    for v in &ctx.opts.instruction_variants {
        let v = *v;
        let ip = envoy::address(5, v);
        let name = format!("instructions-{}", v.short());
        let boot = ctx.write_bootstrap(ip, Mode::Direct, v, &name)?;
        out.line(&format!("instructions: {} under callgrind ...", v.name()));
        let mut headers: Vec<Vec<(&str, &str)>> = sets.iter().map(|s| v.headers(*s)).collect();
        if v == Variant::None {
            headers.extend(sets.iter().map(|s| Variant::Server.headers(*s)));
        }
        let got = instructions::count(&ctx.binary, &ctx.dir, &name, &boot, ip, &headers, n)?;
        let mut line = format!("instructions: {}", v.short());
        for (k, c) in got.into_iter().enumerate() {
            let set = sets[k % 2];
            line.push_str(&format!(" {:.0}", c.per_request));
            if k < 2 {
                counts.insert((variant_key(v), set), c);
            } else {
                server_floor.insert(set, c);
            }
        }
        out.line(&line);
    }
    let mut probes = BTreeMap::new();
    if ctx.opts.instruction_probes {
        for (k, p) in envoy::Probe::ALL.iter().enumerate() {
            let wasm = ctx.dir.join(format!("probe-{}.wasm", p.short()));
            std::fs::write(&wasm, wat::parse_str(p.module())?)?;
            let ip = Ipv4Addr::new(127, 78, 6, k as u8 + 1);
            let name = format!("probe-{}", p.short());
            let boot = ctx.write_bootstrap_with(ip, Mode::Direct, Variant::Empty, &name, &wasm)?;
            out.line(&format!(
                "instructions: 10 x {} under callgrind ...",
                p.call()
            ));
            let got = instructions::count(
                &ctx.binary,
                &ctx.dir,
                &name,
                &boot,
                ip,
                &[Variant::Empty.headers(HeaderSet::Bare)],
                n,
            )?;
            if let Some(c) = got.into_iter().next() {
                out.line(&format!(
                    "instructions: probe {} {:.0}",
                    p.short(),
                    c.per_request
                ));
                probes.insert(*p, c);
            }
        }
    }
    Ok((counts, server_floor, probes))
}

/// The scaling curve: the harness's figures at every point and, when
/// instructions are counted, the client side's instructions per request in
/// Envoy under callgrind (bare GET).
fn scaling_run(ctx: &Ctx, out: &mut dyn Progress) -> anyhow::Result<Vec<scaling::Figures>> {
    let module = proxy_wasm_host::Module::from_bytes(&std::fs::read(&ctx.opts.wasm)?)?;
    let mut figures = Vec::new();
    for (k, p) in scaling::POINTS.iter().enumerate() {
        let mut f = scaling::harness(&module, &ctx.opts.examples, *p)?;
        if ctx.opts.instruction_requests > 0 {
            let config = scaling::config(&ctx.opts.examples, *p)?;
            let ip = Ipv4Addr::new(127, 78, 7, k as u8 + 1);
            let name = format!("scaling-{}-routes-{}-clusters", p.routes, p.clusters);
            let boot =
                envoy::bootstrap(ip, Mode::Direct, Variant::Weighted, &ctx.opts.wasm, &config);
            let path = ctx.dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_vec(&boot)?)?;
            out.line(&format!(
                "instructions: client side, routes {} clusters {}, under callgrind ...",
                p.routes, p.clusters
            ));
            let got = instructions::count(
                &ctx.binary,
                &ctx.dir,
                &name,
                &path,
                ip,
                &[Variant::Weighted.headers(HeaderSet::Bare)],
                ctx.opts.instruction_requests,
            )?;
            f.instructions = got.first().map(|c| c.per_request);
        }
        out.line(&format!(
            "scaling: routes {} clusters {}: fresh VM {:.0} µs, linear memory {} bytes, health entry {} bytes{}",
            f.routes,
            f.clusters,
            f.fresh_vm.as_secs_f64() * 1e6,
            f.linear_memory,
            f.health_entry_bytes,
            f.instructions
                .map(|i| format!(", {i:.0} instructions per request"))
                .unwrap_or_default()
        ));
        figures.push(f);
    }
    Ok(figures)
}

fn memory_run(ctx: &Ctx, out: &mut dyn Progress) -> anyhow::Result<MemoryRun> {
    let v = Variant::Weighted;
    let ip = envoy::address(4, v);
    let e = ctx.spawn(ip, Mode::Direct, v, "memory-weighted", 0)?;
    let _fleet = Fleet {
        envoys: vec![e.clone()],
    };
    e.wait_ready(Duration::from_secs(60))?;
    let target = envoy::listener(ip);
    let mut run = MemoryRun {
        requests: ctx.opts.memory_requests,
        ..MemoryRun::default()
    };
    let headers = v.request_headers();
    let mut c = load::Conn::open(target)?;
    for _ in 0..1000 {
        if load::status(&mut c, envoy::SERVICE, &headers)? != 200 {
            run.errors += 1;
        }
    }
    // The gauge is reported on the filter's 1 s tick.
    std::thread::sleep(Duration::from_millis(1300));
    run.linear_after_1k = e.stat(hybridmesh_replica::memory::LINEAR_MEMORY_STAT)?;
    run.rss_after_1k = rss_bytes(e.pid);
    let rq = format!("http.{}.downstream_rq_total", envoy::STAT_PREFIX);
    loop {
        let done = e.stat(&rq)?;
        if done >= ctx.opts.memory_requests {
            break;
        }
        let w = load::wrk(
            target,
            envoy::SERVICE,
            &headers,
            ctx.opts.connections,
            Duration::from_secs(5).min(ctx.opts.duration),
            Some(1),
        )?;
        run.errors += w.errors;
        out.line(&format!(
            "memory run: {} of {} requests",
            e.stat(&rq)?,
            ctx.opts.memory_requests
        ));
    }
    std::thread::sleep(Duration::from_millis(1300));
    run.requests = e.stat(&rq)?;
    run.linear_at_end = e.stat(hybridmesh_replica::memory::LINEAR_MEMORY_STAT)?;
    run.rss_at_end = rss_bytes(e.pid);
    if run.linear_after_1k == 0 {
        bail!(
            "the filter reported no linear memory ({} is 0): see {}",
            hybridmesh_replica::memory::LINEAR_MEMORY_STAT,
            e.log.display()
        );
    }
    Ok(run)
}
