//! `BENCHMARKS.md`: the figures of one run, ratios first.

use std::fmt::Write as _;

use super::envoy::{Mode, Variant};
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
pub const TARGET_RATIO: f64 = 0.88;
pub const TARGET_P99_US: f64 = 50.0;
pub const TARGET_WASM_BYTES: u64 = 200_000;

impl Report {
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

    fn startup_of(&self, v: Variant) -> f64 {
        median(
            self.startup
                .get(&variant_key(v))
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The targets of the performance issue: (what, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let w = self.ratio(Mode::Direct, Variant::Weighted);
        let lua = self.ratio(Mode::Direct, Variant::Lua);
        let (_, _, a50, a99) = self.latency_of(Variant::Weighted);
        vec![
            (
                format!("client side (tag + weighted + hop record) ≥ {TARGET_RATIO:.2} of no filter, direct response"),
                format!("{w:.3}"),
                w >= TARGET_RATIO,
            ),
            (
                "client side beats Lua doing less (tagging only)".to_string(),
                format!("{w:.3} vs Lua {lua:.3}"),
                w > lua,
            ),
            (
                // The floor's own p99 moves with the machine's noise, so a
                // negative added p99 proves nothing: the added p50 must be
                // under the bound too.
                format!(
                    "added p99 < {TARGET_P99_US:.0} µs at {} req/s (and added p50, which noise cannot hide)",
                    self.latency_rate
                ),
                format!("p99 {a99:+.1} µs, p50 {a50:+.1} µs"),
                a99 < TARGET_P99_US && a50 < TARGET_P99_US,
            ),
            (
                format!(".wasm < {} KB", TARGET_WASM_BYTES / 1000),
                format!("{:.1} KB", self.wasm_bytes as f64 / 1000.0),
                self.wasm_bytes < TARGET_WASM_BYTES,
            ),
            (
                "no linear-memory growth (after 1k requests vs at the end)".to_string(),
                format!(
                    "{} → {} bytes over {} requests",
                    self.memory.linear_after_1k, self.memory.linear_at_end, self.memory.requests
                ),
                self.memory.linear_at_end == self.memory.linear_after_1k
                    && self.memory.linear_after_1k > 0,
            ),
            (
                "at most one extra route match per request".to_string(),
                format!("{:.2}", self.harness.rematches_per_request),
                self.harness.rematches_per_request <= 1.0,
            ),
        ]
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
            for v in Variant::ALL {
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
        for v in Variant::ALL {
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
             compiles and configures the module first). Median of runs.\n"
        );
        let _ = writeln!(s, "| variant | ms | added ms |\n|---|---|---|");
        let floor = self.startup_of(Variant::None);
        for v in Variant::ALL {
            let ms = self.startup_of(v);
            let _ = writeln!(s, "| {} | {ms:.0} | {:+.0} |", v.name(), ms - floor);
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
        for v in Variant::ALL {
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
