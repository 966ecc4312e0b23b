//! `BENCHMARKS.md`: the figures of one run, ratios first.

use std::fmt::Write as _;

use super::envoy::{HeaderSet, Mode, Probe, Variant};
use super::{mode_key, variant_key, Report};

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

/// The throughput target for the client side with a weighted decision.
pub const TARGET_RATIO: f64 = 0.65;
/// The fleet-cost targets: the module's size, and what a sidecar pays at
/// start beyond what the empty proxy-wasm Rust SDK module costs.
pub const TARGET_WASM_BYTES: u64 = 150_000;
pub const TARGET_STARTUP_OVER_SDK_MS: f64 = 80.0;
pub const TARGET_RSS_OVER_SDK_MIB: f64 = 4.0;
/// Header-heavy requests cost at most this much more than bare ones.
pub const TARGET_HEAVY: f64 = 1.10;

impl Report {
    /// Instructions per request of a variant with a header set.
    pub fn instructions_of(&self, v: Variant, set: HeaderSet) -> Option<f64> {
        self.instructions
            .get(&(variant_key(v), set))
            .map(|c| c.per_request)
    }

    /// What a variant adds to no filter with the same request headers.
    pub fn added_instructions(&self, v: Variant, set: HeaderSet) -> Option<f64> {
        let floor = if v.after() == Variant::Server {
            self.server_floor.get(&set).map(|c| c.per_request)
        } else {
            self.instructions_of(Variant::None, set)
        };
        Some(self.instructions_of(v, set)? - floor?)
    }

    /// Instructions one call of a probe's host function adds.
    pub fn probe_instructions(&self, p: Probe) -> Option<f64> {
        let empty = self.instructions_of(Variant::Empty, HeaderSet::Bare)?;
        Some((self.probes.get(&p)?.per_request - empty) / 10.0)
    }

    /// Per-round ratios of a variant's req/s to the floor's in the same round.
    pub fn ratios(&self, mode: Mode, v: Variant) -> Vec<f64> {
        let floor = self
            .throughput
            .get(&(mode_key(mode), variant_key(Variant::None)));
        let this = self.throughput.get(&(mode_key(mode), variant_key(v)));
        match (floor, this) {
            (Some(f), Some(t)) => f
                .iter()
                .zip(t)
                .map(|(f, t)| t.rps / f.rps.max(1e-9))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn ratio(&self, mode: Mode, v: Variant) -> f64 {
        median(self.ratios(mode, v))
    }

    fn rps(&self, mode: Mode, v: Variant) -> f64 {
        median(
            self.throughput
                .get(&(mode_key(mode), variant_key(v)))
                .map(|t| t.iter().map(|x| x.rps).collect())
                .unwrap_or_default(),
        )
    }

    fn cpu(&self, mode: Mode, v: Variant) -> (f64, f64) {
        let get = |v: Variant| -> Vec<f64> {
            self.throughput
                .get(&(mode_key(mode), variant_key(v)))
                .map(|t| t.iter().map(|x| x.cpu_us).collect())
                .unwrap_or_default()
        };
        let this = get(v);
        let floor = get(Variant::None);
        let added: Vec<f64> = this.iter().zip(&floor).map(|(a, b)| a - b).collect();
        (median(this), median(added))
    }

    /// CPU µs of one cheap host call: (ten calls − empty) / 10, median of rounds.
    pub fn host_call_us(&self) -> f64 {
        let get = |v: Variant| -> Vec<f64> {
            self.throughput
                .get(&(mode_key(Mode::Direct), variant_key(v)))
                .map(|t| t.iter().map(|x| x.cpu_us).collect())
                .unwrap_or_default()
        };
        median(
            get(Variant::Calls)
                .iter()
                .zip(get(Variant::Empty))
                .map(|(c, e)| (c - e) / 10.0)
                .collect(),
        )
    }

    fn errors(&self) -> u64 {
        self.throughput
            .values()
            .flatten()
            .map(|t| t.errors)
            .sum::<u64>()
            + self
                .latency
                .values()
                .flatten()
                .map(|l| l.errors)
                .sum::<u64>()
            + self.memory.errors
    }

    /// (p50, p99, added p50, added p99), medians over rounds.
    pub fn latency_of(&self, v: Variant) -> (f64, f64, f64, f64) {
        let get = |v: Variant| {
            self.latency
                .get(&variant_key(v))
                .cloned()
                .unwrap_or_default()
        };
        let this = get(v);
        let floor = get(Variant::None);
        let p50 = median(this.iter().map(|l| l.p50).collect());
        let p99 = median(this.iter().map(|l| l.p99).collect());
        let a50 = median(
            this.iter()
                .zip(&floor)
                .map(|(a, b)| a.p50 - b.p50)
                .collect(),
        );
        let a99 = median(
            this.iter()
                .zip(&floor)
                .map(|(a, b)| a.p99 - b.p99)
                .collect(),
        );
        (p50, p99, a50, a99)
    }

    pub(crate) fn startup_of(&self, v: Variant) -> f64 {
        median(
            self.startup
                .get(&variant_key(v))
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The targets of the performance issue: (what, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let lua = self.added_instructions(Variant::Lua, HeaderSet::Bare);
        let k = |x: f64| format!("{:+.1}k", x / 1000.0);
        if let Some(lua) = lua {
            for (v, factor, what) in [
                (Variant::Tag, 2.0, "tag only adds at most 2 × Lua's instructions per request"),
                (
                    Variant::Weighted,
                    2.6,
                    "client side (weighted + sticky + hop record) adds at most 2.6 × Lua's instructions",
                ),
                (Variant::Server, 1.0, "server side adds no more instructions than Lua"),
            ] {
                if let Some(a) = self.added_instructions(v, HeaderSet::Bare) {
                    out.push((
                        what.to_string(),
                        format!("{} vs Lua {} ({:.2} ×)", k(a), k(lua), a / lua),
                        a <= factor * lua,
                    ));
                }
            }
        }
        for v in [Variant::Tag, Variant::Weighted, Variant::Server] {
            if let (Some(bare), Some(heavy)) = (
                self.added_instructions(v, HeaderSet::Bare),
                self.added_instructions(v, HeaderSet::Heavy),
            ) {
                out.push((
                    format!(
                        "{}: 12 headers (1 KB) cost at most {:.0}% more than a bare request",
                        v.short(),
                        (TARGET_HEAVY - 1.0) * 100.0
                    ),
                    format!(
                        "{} vs {} ({:+.1}%)",
                        k(heavy),
                        k(bare),
                        (heavy / bare - 1.0) * 100.0
                    ),
                    heavy <= TARGET_HEAVY * bare,
                ));
            }
        }
        if !self.throughput.is_empty() {
            let w = self.ratio(Mode::Direct, Variant::Weighted);
            out.push((
                format!(
                    "client side ≥ {TARGET_RATIO:.2} of no filter's throughput, direct response"
                ),
                format!("{w:.3}"),
                w >= TARGET_RATIO,
            ));
        }
        out.push((
            format!(".wasm ≤ {} KB", TARGET_WASM_BYTES / 1000),
            format!("{:.1} KB", self.wasm_bytes as f64 / 1000.0),
            self.wasm_bytes <= TARGET_WASM_BYTES,
        ));
        if self.startup.contains_key(&variant_key(Variant::SdkEmpty)) {
            let over = self.startup_of(Variant::Weighted) - self.startup_of(Variant::SdkEmpty);
            out.push((
                format!("start-up at most {TARGET_STARTUP_OVER_SDK_MS:.0} ms over the empty SDK module's"),
                format!("{over:+.0} ms"),
                over <= TARGET_STARTUP_OVER_SDK_MS,
            ));
            let rss = |v: Variant| {
                median(
                    self.startup_memory
                        .get(&variant_key(v))
                        .map(|runs| {
                            runs.iter()
                                .map(|m| hybridmesh_replica::memory::mib(m.rss))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            };
            let over = rss(Variant::Weighted) - rss(Variant::SdkEmpty);
            out.push((
                format!("RSS at most {TARGET_RSS_OVER_SDK_MIB:.0} MiB over the empty SDK module's"),
                format!("{over:+.1} MiB"),
                over <= TARGET_RSS_OVER_SDK_MIB,
            ));
        }
        if self.memory.requests > 0 {
            out.push((
                "no linear-memory growth (after 1k requests vs at the end)".to_string(),
                format!(
                    "{} → {} bytes over {} requests",
                    self.memory.linear_after_1k, self.memory.linear_at_end, self.memory.requests
                ),
                self.memory.linear_at_end == self.memory.linear_after_1k
                    && self.memory.linear_after_1k > 0,
            ));
        }
        for (clusters, what) in [
            (
                false,
                "per-request instructions flat (within 10%) from 1 to 10,000 routes",
            ),
            (
                true,
                "per-request instructions flat (within 10%) from 2 to 64 clusters",
            ),
        ] {
            if let Some((first, worst)) = self.scaling_spread(clusters) {
                out.push((
                    what.to_string(),
                    format!(
                        "{:.1}k → at most {:.1}k ({:+.1}%)",
                        first / 1000.0,
                        worst / 1000.0,
                        (worst / first - 1.0) * 100.0
                    ),
                    worst <= 1.10 * first,
                ));
            }
        }
        if self.harness.requests > 0 {
            out.push((
                "at most one extra route match per request".to_string(),
                format!("{:.2}", self.harness.rematches_per_request),
                self.harness.rematches_per_request <= 1.0,
            ));
        }
        out
    }

    /// Per-request instructions along the scaling curve: (what, the spread
    /// over the curve's points, whether it stays within the target).
    fn scaling_spread(&self, clusters: bool) -> Option<(f64, f64)> {
        let pts: Vec<f64> = self
            .scaling
            .iter()
            .filter(|f| {
                if clusters {
                    f.routes == 1
                } else {
                    f.clusters == 2
                }
            })
            .filter_map(|f| f.instructions)
            .collect();
        let first = *pts.first()?;
        let worst = pts.iter().copied().fold(first, f64::max);
        Some((first, worst))
    }

    fn scaling_markdown(&self, s: &mut String) {
        if self.scaling.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## How cost grows with the mesh\n\n\
             The client side's weighted config (example 03) grown to many routes (one service \
             each, the requested service's route listed last) and to many clusters (the route \
             weighted over all of them). Instructions per request: callgrind in Envoy, bare GET, \
             as above. A fresh VM: the harness (wasmtime) instantiating the module, starting the \
             VM and parsing and planning the config, median of 5; every worker VM pays it at \
             start and on every config push. Linear memory: the harness, after configure and \
             1,000 requests. Health entry: the service's shared-data entry after 1,000 failed \
             requests spread over its clusters (one entry per service that has failed).\n"
        );
        let _ = writeln!(
            s,
            "| routes | clusters | config JSON | instructions per request | vs 1 route, 2 clusters | \
             fresh VM (harness) | linear memory | health entry |\n|---|---|---|---|---|---|---|---|"
        );
        let base = self.scaling.first().and_then(|f| f.instructions);
        for f in &self.scaling {
            let (ins, vs) = match (f.instructions, base) {
                (Some(i), Some(b)) => (
                    format!("{:.1}k", i / 1000.0),
                    format!("{:+.1}%", (i / b - 1.0) * 100.0),
                ),
                _ => ("-".to_string(), "-".to_string()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} KB | {ins} | {vs} | {:.2} ms | {:.2} MiB | {} bytes |",
                f.routes,
                f.clusters,
                f.config_bytes as f64 / 1000.0,
                f.fresh_vm.as_secs_f64() * 1e3,
                f.linear_memory as f64 / 1048576.0,
                f.health_entry_bytes
            );
        }
        s.push('\n');
    }

    fn instructions_markdown(&self, s: &mut String) {
        if self.instructions.is_empty() {
            return;
        }
        let n = self
            .instructions
            .values()
            .next()
            .map(|c| c.requests)
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "## Instructions per request (callgrind)\n\n\
             Counted by valgrind's callgrind inside one Envoy process per variant (V8's JIT code \
             included, `--smc-check=all`): after a warm-up the counters are zeroed, {n} requests are \
             sent on one keep-alive connection and counted, then the process idles as long and that \
             background (timers, stats flushes, the filter's tick) is subtracted. Start-up never enters \
             the figure, and the count does not move with the machine's load. Direct response, one \
             worker. *Added* is the variant minus no filter with the same request headers (the server \
             side's floor carries the three source headers a client sidecar sends: Envoy parses each \
             header it receives).\n"
        );
        let _ = writeln!(
            s,
            "| variant | bare GET | added | 12 headers, 1 KB | added | heavy vs bare (added) | added vs Lua (bare) |\n|---|---|---|---|---|---|---|"
        );
        let lua = self.added_instructions(Variant::Lua, HeaderSet::Bare);
        let fmt = |x: Option<f64>| {
            x.map(|x| format!("{:.1}k", x / 1000.0))
                .unwrap_or("-".into())
        };
        let fmt_add = |x: Option<f64>| {
            x.map(|x| format!("{:+.1}k", x / 1000.0))
                .unwrap_or("-".into())
        };
        for v in &self.variants {
            if self.instructions_of(*v, HeaderSet::Bare).is_none() {
                continue;
            }
            let ab = self.added_instructions(*v, HeaderSet::Bare);
            let ah = self.added_instructions(*v, HeaderSet::Heavy);
            let ratio = match (ab, ah) {
                (Some(b), Some(h)) if *v != Variant::None => {
                    format!("{:+.0}%", (h / b - 1.0) * 100.0)
                }
                _ => "-".into(),
            };
            let vs_lua = match (ab, lua) {
                (Some(a), Some(l)) if *v != Variant::None => format!("{:.2} ×", a / l),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {ratio} | {vs_lua} |",
                v.name(),
                fmt(self.instructions_of(*v, HeaderSet::Bare)),
                if *v == Variant::None {
                    "-".to_string()
                } else {
                    fmt_add(ab)
                },
                fmt(self.instructions_of(*v, HeaderSet::Heavy)),
                if *v == Variant::None {
                    "-".to_string()
                } else {
                    fmt_add(ah)
                },
            );
        }
        if let (Some(b), Some(h)) = (
            self.server_floor.get(&HeaderSet::Bare),
            self.server_floor.get(&HeaderSet::Heavy),
        ) {
            let _ = writeln!(
                s,
                "| no filter, with the server side's request headers | {:.1}k | - | {:.1}k | - | - | - |",
                b.per_request / 1000.0,
                h.per_request / 1000.0
            );
        }
        s.push('\n');
        if !self.probes.is_empty() {
            let _ = writeln!(
                s,
                "### What one host call costs in Envoy 1.40\n\n\
                 An otherwise empty module makes one host call ten times per request; a tenth of what \
                 that adds to the empty module is the call's price (calls that return data include the \
                 host's call back into the guest to allocate, with its restricted-callback set).\n\n\
                 | host call | instructions per call |\n|---|---|"
            );
            for p in Probe::ALL {
                if let Some(x) = self.probe_instructions(p) {
                    let _ = writeln!(s, "| `{}` | {:.0} |", p.call(), x);
                }
            }
            s.push('\n');
        }
    }
    pub fn markdown(&self, command: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "What the hybridmesh filter costs in a real proxy, measured against no filter and against \
             Envoy's Lua filter doing the tagging job. Written by `{command}` on {}; the whole run took \
             {:.0} s. Rerun it to refresh this file.\n",
            self.started, self.seconds
        );
        if self.quick {
            let _ = writeln!(
                s,
                "> **Smoke run** (`--quick`): one short round of everything; the figures below are not \
                 measurements, only proof that every part runs.\n"
            );
        }
        let _ = writeln!(s, "- Machine: {}", self.machine);
        let _ = writeln!(
            s,
            "- Load average (1/5/15 min): {} before, {} after",
            self.load_before, self.load_after
        );
        let _ = writeln!(s, "- Envoy: `{}`, V8", self.envoy_version);
        let _ = writeln!(
            s,
            "- Filter: `hybridmesh_filter.wasm`, {} bytes ({:.1} KB)",
            self.wasm_bytes,
            self.wasm_bytes as f64 / 1000.0
        );
        let _ = writeln!(s, "- Run: {}", self.options_line);
        let errors = self.errors();
        let _ = writeln!(
            s,
            "- Failed requests during the run (non-2xx, socket errors): {errors}\n"
        );

        if let Some(b) = self.compare_wasm_bytes {
            let _ = writeln!(
                s,
                "- Compared with (`--compare-wasm`, the `*-before` variants): another build of the filter, {b} bytes ({:.1} KB)",
                b as f64 / 1000.0
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
        for (what, got, ok) in self.targets() {
            let _ = writeln!(
                s,
                "| {what} | {got} | {} |",
                if ok { "yes" } else { "**no**" }
            );
        }
        s.push('\n');

        self.instructions_markdown(&mut s);
        self.scaling_markdown(&mut s);
        if self.throughput.is_empty() {
            return s;
        }

        for mode in [Mode::Direct, Mode::Upstream] {
            let _ = writeln!(s, "## Throughput, {}\n", mode.name());
            let _ = writeln!(
                s,
                "{}\n",
                match mode {
                    Mode::Direct => "The listener answers from its route table, so the filter is the only variable.",
                    Mode::Upstream =>
                        "The route sends every request to a real upstream (an Envoy answering directly, on the load's CPU).",
                }
            );
            let _ = writeln!(
                s,
                "| variant | req/s (median) | vs no filter (median of rounds) | range over rounds | Envoy CPU µs/request | added CPU µs/request |\n|---|---|---|---|---|---|"
            );
            for v in self.variants.iter().copied() {
                let r = self.ratios(mode, v);
                let (lo, hi) = min_max(&r);
                let (cpu, added) = self.cpu(mode, v);
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.3} | {:.3}–{:.3} | {:.2} | {:+.2} |",
                    v.name(),
                    self.rps(mode, v),
                    self.ratio(mode, v),
                    lo,
                    hi,
                    cpu,
                    added
                );
            }
            s.push('\n');
            if mode == Mode::Direct {
                let _ = writeln!(
                    s,
                    "One host call across the V8 boundary (the clock, no data copied): {:.2} µs of Envoy CPU \
                     (a tenth of what ten calls add to the empty filter). The filter makes {} host calls on a \
                     client-side request and {} on a server-side one (counted by the harness).\n",
                    self.host_call_us(),
                    self.harness.calls_client,
                    self.harness.calls_server
                );
            }
        }

        let _ = writeln!(
            s,
            "## Latency at a fixed, moderate rate (direct response)\n\n{} req/s over 4 keep-alive \
             connections, each request timed from when it was due. Added = the variant minus no filter \
             in the same round, median over rounds.\n",
            self.latency_rate
        );
        let _ = writeln!(
            s,
            "| variant | p50 µs | p99 µs | added p50 µs | added p99 µs | samples per round |\n|---|---|---|---|---|---|"
        );
        for v in self.variants.iter().copied() {
            let (p50, p99, a50, a99) = self.latency_of(v);
            let n = self
                .latency
                .get(&variant_key(v))
                .and_then(|l| l.first())
                .map(|l| l.samples)
                .unwrap_or(0);
            let _ = writeln!(
                s,
                "| {} | {p50:.0} | {p99:.0} | {a50:+.1} | {a99:+.1} | {n} |",
                v.name()
            );
        }
        s.push('\n');

        let _ = writeln!(
            s,
            "## Start-up\n\nFrom starting Envoy to the first 200 on the listener (with the filter, V8 \
             compiles and configures the module first), and its memory after 100 more requests. \
             One worker. Median of runs.\n"
        );
        s.push_str(&startup_table(self));
        s.push('\n');

        let _ = writeln!(s, "## Per pod (the Istio lab)\n");
        match &self.per_pod {
            Some(text) => {
                let _ = writeln!(
                    s,
                    "What a new pod of the lab pays with the filter's two plugins, beside the same pod \
                     with no plugin and with the proxy-wasm Rust SDK's empty filter in both plugins: \
                     istiod's real config, pilot-agent pulling the module from a registry, Istio's \
                     default two worker threads (`hybridmesh-lab --per-pod`, \
                     `crates/lab/tests/per_pod.rs`; measured in this run).\n\n{}",
                    text.trim_end()
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "Not measured in this run (it needs root and the lab: `scripts/bench --lab`)."
                );
            }
        }
        s.push('\n');

        let _ = writeln!(s, "## Memory\n");
        let _ = writeln!(
            s,
            "Envoy's resident memory after the throughput rounds (direct response):\n\n| variant | RSS MiB | added MiB |\n|---|---|---|"
        );
        let mib = |b: u64| b as f64 / 1048576.0;
        let floor = self
            .rss
            .get(&variant_key(Variant::None))
            .copied()
            .unwrap_or(0);
        for v in self.variants.iter().copied() {
            let b = self.rss.get(&variant_key(v)).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:+.1} |",
                v.name(),
                mib(b),
                mib(b) - mib(floor)
            );
        }
        let m = &self.memory;
        let _ = writeln!(
            s,
            "\nThe guest's linear memory (the filter's gauge `hybridmesh_vm_memory_bytes`, every VM of \
             the plugin summed) in a fresh client-side Envoy:\n\n| after | linear memory bytes | Envoy RSS MiB |\n|---|---|---|\n\
             | 1,000 requests | {} | {:.1} |\n| {} requests | {} | {:.1} |\n",
            m.linear_after_1k,
            mib(m.rss_after_1k),
            m.requests,
            m.linear_at_end,
            mib(m.rss_at_end)
        );

        let h = &self.harness;
        let _ = writeln!(
            s,
            "## The harness (offline, wasmtime, one thread)\n\n| measurement | value |\n|---|---|\n\
             | requests through the filter (client side, weighted, request + response) | {:.0} req/s ({:.1} µs/request) |\n\
             | a fresh plugin (instantiate, start the VM, configure), median | {:.0} µs |\n\
             | compiling the module | {:.0} ms |\n\
             | route re-matches per request (Envoy re-matches when request headers change) | {:.2} (caused by: {}) |\n\
             | linear memory after 1,000 requests → after {} more | {} → {} bytes |\n",
            h.rps,
            h.per_request.as_secs_f64() * 1e6,
            h.fresh_plugin.as_secs_f64() * 1e6,
            h.compile.as_secs_f64() * 1e3,
            h.rematches_per_request,
            if h.rematch_causes.is_empty() {
                "-".to_string()
            } else {
                h.rematch_causes.join(", ")
            },
            h.requests,
            h.memory_after_1k,
            h.memory_at_end
        );

        let _ = writeln!(
            s,
            "## How to read this\n\n\
             - This machine is shared and noisy: absolute req/s and µs drift from run to run; the \
             ratios and the added figures compare variants measured in the same round, one after \
             another, with the order rotating each round, and are what to compare across runs.\n\
             - One Envoy per variant, `--concurrency 1`, pinned to CPU 0 (`taskset`); `wrk` \
             (`-t1`), the upstream and the latency client share CPU 1. Throughput is therefore \
             Envoy's worker saturated on its own core.\n\
             - Variants: **no filter** is the floor (router only). **Lua** removes the target header \
             and replaces the three source headers (the tagging an operator would write by hand). \
             **empty Wasm** is a module whose every callback returns at once: the cost of \
             crossing into V8 for a stream's callbacks, which any Wasm filter pays. **+ 10 host calls** is the empty module asking for the \
             time ten times per request: a tenth of its added CPU is what one call across the V8 \
             boundary costs (calls that hand data to the guest cost more: the host calls back into \
             the guest to allocate). **tag only** is the filter with policy `none` (tags, strips spoofed headers, records the \
             hop). **client side** adds an 80/20 weighted decision (example 03), the target header \
             and the hop record in filter state. **server side** is the inbound half (example 04, \
             trusting the source headers it is sent, since the load generator has no mTLS): \
             cluster-local check and the served-by header. The filter's variants set `direction` \
             in their config, as `wasmplugin/` deploys them (one WasmPlugin per side), so no request \
             reads the listener direction.\n\
             - Every request carries the headers an application's request typically has \
             (user-agent, accept, x-request-id, traceparent, x-forwarded-proto, baggage).\n\
             - Every route table carries Istio-style per-cluster routes matched on \
             `x-hybridmesh-target-cluster`, so the floor pays for the same route table.\n\
             - CPU µs/request is Envoy's user+system time (from `/proc/<pid>/stat`, 10 ms ticks) \
             over the requests `wrk` completed.\n\
             - Route re-matches are counted by the harness, which re-selects the route the way Envoy \
             does when a filter changes request headers.\n"
        );
        s
    }
}

/// Start-up and memory of each variant, medians over the start-up runs,
/// each beside no filter and beside the empty SDK module (the floor a Rust
/// proxy-wasm filter cannot go under), when they were run; then where the
/// memory goes. `--startup-only` prints it; BENCHMARKS.md's start-up section
/// is it.
pub fn startup_table(r: &Report) -> String {
    use hybridmesh_replica::memory::{mib, Footprint};
    let mut s = String::new();
    let runs = |v: Variant| -> Vec<Footprint> {
        r.startup_memory
            .get(&variant_key(v))
            .cloned()
            .unwrap_or_default()
    };
    let med = |v: Variant, f: &dyn Fn(&Footprint) -> u64| {
        median(runs(v).iter().map(|m| mib(f(m))).collect())
    };
    let has = |v: Variant| r.startup.contains_key(&variant_key(v));
    let diff = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:+.1}", a - b));
    let rss = |v: Variant| med(v, &|m| m.rss);
    let none = has(Variant::None).then(|| (r.startup_of(Variant::None), rss(Variant::None)));
    let sdk =
        has(Variant::SdkEmpty).then(|| (r.startup_of(Variant::SdkEmpty), rss(Variant::SdkEmpty)));
    let _ = writeln!(
        s,
        "| variant | start-up ms | added ms | vs SDK floor ms | RSS MiB | added MiB | vs SDK floor MiB |\n|---|---|---|---|---|---|---|"
    );
    let shown: Vec<Variant> = r.variants.iter().copied().filter(|v| has(*v)).collect();
    for &v in &shown {
        let ms = r.startup_of(v);
        let _ = writeln!(
            s,
            "| {} | {ms:.0} | {} | {} | {:.1} | {} | {} |",
            v.name(),
            diff(ms, none.map(|n| n.0)),
            diff(ms, sdk.map(|n| n.0)),
            rss(v),
            diff(rss(v), none.map(|n| n.1)),
            diff(rss(v), sdk.map(|n| n.1)),
        );
    }
    let _ = writeln!(
        s,
        "\nWhere it goes (MiB, medians): pages of files (Envoy's binary, V8's compiler among its code) and anonymous pages; of the anonymous, what Envoy's allocator (tcmalloc, the admin's `/memory`) has in use and what it keeps free without returning it; the Wasm VMs alive and the filter's linear memory (its gauge: every VM that ticks adds its own 1.06 MiB).\n\n| variant | files | anonymous | in use | kept free | VMs | linear memory, VMs summed |\n|---|---|---|---|---|---|---|"
    );
    for &v in &shown {
        let vms = runs(v).first().map_or(0, |m| m.vms);
        let linear = med(v, &|m| m.linear);
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {vms} | {} |",
            v.name(),
            med(v, &|m| m.files),
            med(v, &|m| m.anonymous),
            med(v, &|m| m.in_use),
            med(v, &|m| m.kept_free),
            if linear > 0.0 {
                format!("{linear:.2}")
            } else {
                "-".to_string()
            },
        );
    }
    s
}
