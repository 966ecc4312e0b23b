//! `hybridmesh test`: run scenario files through a module in the harness.

use std::path::{Path, PathBuf};

use clap::Parser;

use hybridmesh_scenario::runner::ScenarioReport;
use hybridmesh_sim::run::{run_file_within, Engine};

use hybridmesh_input::{printable, printable_lines, xml};

use super::{load_module, Paint, TestOutput as Output};
use crate::limits::{ModuleLimits, ScenarioTotals};
use crate::Outcome;

/// Run scenario files and check their expectations.
///
/// PATH is a scenario file or a directory searched for `scenario.yaml` and
/// `*.scenario.yaml`. Each step prints a pass/fail line; the last line is the
/// summary. The module is the filter this repository builds unless `--wasm`
/// names another: any proxy-wasm module runs.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh test examples/\n  hybridmesh test examples/02-locality-failover --output junit > report.xml\n  hybridmesh test my.scenario.yaml --wasm other_filter.wasm"
)]
pub struct TestCommand {
    /// Scenario files or directories.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The proxy-wasm module to run (default: target/wasm32-wasip1/wasm/hybridmesh_filter.wasm).
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// Run the filter's decision code natively instead of a module (parity checks).
    #[arg(long, conflicts_with = "wasm")]
    native: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    limits: ModuleLimits,
    #[command(flatten)]
    totals: ScenarioTotals,
}

/// Scenario files under `paths`, sorted; each folder and file once, however many
/// links lead to it (a folder linking to itself or an ancestor is not entered again).
pub fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = Seen::default();
    for p in paths {
        if p.is_dir() {
            collect(p, &mut out, &mut seen)?;
        } else if p.exists() {
            if seen.first(p) {
                out.push(p.clone());
            }
        } else {
            anyhow::bail!("{}: no such file or directory", p.display());
        }
    }
    if out.is_empty() {
        anyhow::bail!(
            "no scenario files (scenario.yaml or *.scenario.yaml) under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// Folders and files already taken, by device and inode (what a link leads to).
#[derive(Default)]
struct Seen(std::collections::HashSet<(u64, u64)>);

impl Seen {
    /// Whether `path` is met for the first time (unreadable: taken, its read reports it).
    fn first(&mut self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(path) {
            Ok(m) => self.0.insert((m.dev(), m.ino())),
            Err(_) => true,
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut Seen) -> anyhow::Result<()> {
    if !seen.first(dir) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out, seen)?;
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "scenario.yaml" || n.ends_with(".scenario.yaml"))
            && seen.first(&p)
        {
            out.push(p);
        }
    }
    Ok(())
}

impl TestCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let files = scenario_files(&self.paths)?;
        let engine = if self.native {
            Engine::Native
        } else {
            Engine::Wasm(load_module(self.wasm.as_ref())?, self.limits.limits())
        };
        let p = Paint::stdout();
        let totals = self.totals.totals();
        let mut reports = Vec::new();
        for f in &files {
            let r = run_file_within(f, &engine, &totals);
            if self.output == Output::Text {
                print_report(&p, &r);
            }
            reports.push(r);
        }
        let steps: usize = reports
            .iter()
            .map(|r| r.steps.len().max(usize::from(r.error.is_some())))
            .sum();
        let failed: usize = reports
            .iter()
            .map(|r| r.steps.iter().filter(|s| !s.ok).count() + usize::from(r.error.is_some()))
            .sum();
        match self.output {
            Output::Text => {
                let bad = reports.iter().filter(|r| !r.ok).count();
                println!("{} scenario(s), {} failed", reports.len(), bad);
                println!("{} passed, {} failed", steps - failed, failed);
            }
            Output::Json | Output::Yaml => {
                super::print_data(self.output == Output::Json, &reports)?
            }
            Output::Junit => print!("{}", junit(&reports)),
        }
        Ok(if failed == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        })
    }
}

/// Names and paths come from the scenario files and are printed escaped
/// ([`printable`]); errors and problems are ours but quote input, so each of
/// their lines is escaped and indented under its step.
fn print_report(p: &Paint, r: &ScenarioReport) {
    let head = if r.ok { p.green("PASS") } else { p.red("FAIL") };
    println!(
        "{head} {} {}",
        p.bold(&printable(&r.name)),
        p.dim(&format!("({}, {:.2}s)", printable(&r.path), r.seconds))
    );
    if let Some(e) = &r.error {
        println!("  {} {}", p.red("error:"), printable_lines(e));
    }
    for s in &r.steps {
        if s.ok {
            println!("  {} {}", p.green("ok"), printable(&s.name));
        } else {
            println!("  {} {}", p.red("FAIL"), printable(&s.name));
            for problem in &s.problems {
                for line in problem.split('\n') {
                    println!("      {}", printable(line));
                }
            }
        }
    }
}

/// JUnit XML: a suite per scenario, a case per step.
pub fn junit(reports: &[ScenarioReport]) -> String {
    let tests: usize = reports.iter().map(|r| r.steps.len().max(1)).sum();
    let failures: usize = reports
        .iter()
        .map(|r| r.steps.iter().filter(|s| !s.ok).count() + usize::from(r.error.is_some()))
        .sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"hybridmesh\" tests=\"{tests}\" failures=\"{failures}\">\n"
    );
    for r in reports {
        let failures = r.steps.iter().filter(|s| !s.ok).count() + usize::from(r.error.is_some());
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
            xml(&r.name),
            r.steps.len().max(1),
            r.seconds
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!("    <testcase name=\"load\" classname=\"{}\"><failure message=\"{}\"/></testcase>\n", xml(&r.path), xml(e)));
        }
        for s in &r.steps {
            out.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\"",
                xml(&s.name),
                xml(&r.path)
            ));
            if s.ok {
                out.push_str("/>\n");
            } else {
                out.push_str(&format!(
                    "><failure message=\"{}\"/></testcase>\n",
                    xml(&s.problems.join("; "))
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use hybridmesh_scenario::runner::{ScenarioReport, StepReport};

    #[test]
    fn junit_is_well_formed_xml_whatever_the_names_hold() {
        let evil = "x\u{1b}[2K\r\u{0}\u{ffff}<&\"'\nPASS";
        let report = ScenarioReport {
            name: evil.to_owned(),
            path: evil.to_owned(),
            ok: false,
            error: Some(evil.to_owned()),
            steps: vec![StepReport {
                name: evil.to_owned(),
                ok: false,
                problems: vec![evil.to_owned()],
                lines: Vec::new(),
                outcomes: Vec::new(),
            }],
            seconds: 0.0,
        };
        let xml = super::junit(&[report]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") != Some("load"))
            .unwrap();
        // What an XML reader gets back: the name, its controls shown as escapes.
        assert_eq!(
            case.attribute("name"),
            Some("x\\x1b[2K\r\\x00\\u{ffff}<&\"'\nPASS")
        );
    }
}
