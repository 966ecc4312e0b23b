//! `hybridmesh bench`: the filter's cost in a real Envoy, written to BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use hybridmesh_bench::{self as bench, Options};

use super::{default_examples, default_wasm, workspace_root, Paint};
use crate::Outcome;

/// Measure what the filter costs in real Envoy 1.40 (V8), side by side with no
/// filter and with Envoy's Lua filter: throughput and CPU per request through
/// one pinned worker (direct response and a real upstream), latency at a fixed
/// moderate rate, start-up, memory (RSS and the guest's linear memory over a
/// million requests), and the offline harness. Writes BENCHMARKS.md.
///
/// Needs 2 CPUs, `wrk` and Envoy (`scripts/bench` installs both and builds
/// the filter first). About 8 minutes with the defaults.
#[derive(Parser)]
pub struct BenchCommand {
    /// Where to write the report.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The filter module (default: the one this repository builds).
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// The examples folder (the variants' plugin configs come from it).
    #[arg(long, value_name = "DIR")]
    examples: Option<PathBuf>,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of `wrk` per variant per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests per second of the latency runs.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Requests before the second linear-memory reading.
    #[arg(long, default_value_t = 1_000_000)]
    memory_requests: u64,
    /// A smoke run: every measurement, one short round (figures are not measurements).
    #[arg(long)]
    quick: bool,
    /// Fail (exit 1) when a target of the performance issue is missed.
    #[arg(long)]
    check_targets: bool,
    /// Requests counted per variant and header set under valgrind's
    /// callgrind (instructions per request; 0 skips the counts).
    #[arg(long, value_name = "N", default_value_t = 500)]
    instructions: u64,
    /// Only count instructions (no timed runs; needs valgrind, not wrk).
    #[arg(long)]
    instructions_only: bool,
    /// The variants whose instructions are counted (default: all), e.g.
    /// `none,lua,tag,weighted,server`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    variants: Vec<String>,
    /// Skip the host-call probes of the instruction counts.
    #[arg(long)]
    no_probes: bool,
    /// Another build of the filter (e.g. the previous release), measured as
    /// the `tag-before`, `weighted-before` and `server-before` variants
    /// beside this one: before and after a change in one run.
    #[arg(long, value_name = "FILE")]
    compare_wasm: Option<PathBuf>,

    /// Only start-up and resident memory, per variant (`--variants`, default
    /// all), `--rounds` start-ups each, printed side by side; BENCHMARKS.md is
    /// not written.
    #[arg(long, conflicts_with = "instructions_only")]
    startup_only: bool,
    /// Skip the scaling curve (routes 1 to 10,000, clusters 2 to 64)
    #[arg(long)]
    no_scaling: bool,
    /// The Istio lab's per-pod figures, measured in the same run
    /// (`hybridmesh-lab --per-pod FILE` writes them; `scripts/bench --lab`
    /// runs it first): BENCHMARKS.md's "per pod" section.
    #[arg(long, value_name = "FILE")]
    per_pod: Option<PathBuf>,
}

struct Lines;

impl bench::Progress for Lines {
    fn line(&mut self, s: &str) {
        eprintln!("{s}");
    }
}

impl BenchCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        // The report is written after the run: a folder that is not there
        // would throw 40 minutes away.
        let folder = match self.out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        anyhow::ensure!(
            folder.is_dir(),
            "cannot write {}: {} is not a folder",
            self.out.display(),
            folder.display()
        );
        let mut opts = Options::new(
            self.wasm.unwrap_or_else(default_wasm),
            self.examples.unwrap_or_else(default_examples),
            workspace_root(),
        );
        opts.rounds = self.rounds.max(1);
        opts.duration = Duration::from_secs_f64(self.seconds.max(0.2));
        opts.latency_rate = self.rate.max(1);
        opts.memory_requests = self.memory_requests.max(1000);
        if self.quick {
            opts = opts.quick();
        }
        if !self.quick || self.instructions_only {
            opts.instruction_requests = self.instructions;
        }
        opts.instructions_only = self.instructions_only;
        opts.instruction_probes = !self.no_probes;
        opts.compare_wasm = self.compare_wasm.clone();
        opts.scaling = !self.no_scaling;
        opts.instruction_variants = opts.variants();
        if self.instructions_only && self.instructions == 0 {
            anyhow::bail!("--instructions-only needs --instructions above 0");
        }
        if !self.variants.is_empty() {
            opts.instruction_variants = self
                .variants
                .iter()
                .map(|name| {
                    opts.variants()
                        .into_iter()
                        .find(|v| v.short() == name.trim())
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                opts.variants().iter().map(|v| v.short()).collect();
                            anyhow::anyhow!(
                                "unknown variant {name:?}: expected one of {}",
                                known.join(", ")
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        opts.startup_only = self.startup_only;
        if self.startup_only {
            opts.startup_runs = opts.rounds;
        }
        // Read before the run: a missing file must not throw 40 minutes away.
        let per_pod = match &self.per_pod {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--per-pod {}: {e}", f.display()))?,
            ),
            None => None,
        };
        let mut report = bench::run(&opts, &mut Lines)?;
        report.per_pod = per_pod;
        if self.startup_only {
            print!("{}", bench::report::startup_table(&report));
            return Ok(Outcome::Passed);
        }
        // The command as run (its options, not where it wrote), so the
        // report says how to reproduce it.
        let mut command = String::from("scripts/bench");
        let mut args = std::env::args().skip_while(|a| a != "bench").skip(1);
        while let Some(a) = args.next() {
            if a == "--out" || a == "--per-pod" {
                // (`--per-pod FILE` is what `scripts/bench --lab` passes)
                args.next();
            } else if !a.starts_with("--out=") && !a.starts_with("--per-pod=") {
                command.push(' ');
                command.push_str(&a);
            }
        }
        if self.per_pod.is_some() {
            command.push_str(" --lab");
        }
        std::fs::write(&self.out, report.markdown(&command))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.out.display()))?;
        let p = Paint::stdout();
        println!("{}", p.bold("targets"));
        let mut missed = 0;
        for (what, got, ok) in report.targets() {
            if !ok {
                missed += 1;
            }
            let mark = if ok { p.green("✓") } else { p.red("✗") };
            println!("{mark} {what}: {got}");
        }
        println!("written to {}", self.out.display());
        Ok(if self.check_targets && missed > 0 {
            Outcome::Failed
        } else {
            Outcome::Passed
        })
    }
}
