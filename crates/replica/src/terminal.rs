//! The walk-through on a terminal: what `scripts/demo` and `hybridmesh demo`
//! print (colours only on a terminal, never with `NO_COLOR`).

use std::io::IsTerminal as _;
use std::path::Path;

use crate::demo::{self, Out};

/// Prints the walk-through as it goes.
pub struct Terminal {
    color: bool,
}

impl Terminal {
    pub fn stdout() -> Terminal {
        Terminal {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

impl Out for Terminal {
    fn title(&mut self, s: &str) {
        println!("\n{} {}", self.paint("1", "==="), self.paint("1", s));
    }
    fn note(&mut self, s: &str) {
        println!("{}", self.paint("2", s));
    }
    fn line(&mut self, s: &str) {
        println!("    {s}");
    }
    fn check(&mut self, ok: bool, what: &str, detail: &str) {
        let mark = if ok {
            self.paint("32", "✓")
        } else {
            self.paint("31", "✗")
        };
        if detail.is_empty() {
            println!("{mark} {what}");
        } else {
            println!("{mark} {what}   {}", self.paint("2", detail));
        }
    }
}

/// Runs the seed's walk-through in the replica (the `.wasm` from
/// `HYBRIDMESH_WASM`, else the one this checkout builds), printing it and a
/// summary. Whether every step behaved as the seed article describes.
pub fn walk(examples: &Path, workspace: &Path) -> anyhow::Result<bool> {
    let mut out = Terminal::stdout();
    let report = demo::run(examples, workspace, "demo", &mut out)?;
    println!();
    let failed = report.failures().len();
    let summary = format!(
        "{} checks, {} passed, {failed} failed; {} Envoy processes, ready in {:.1}s, {:.1}s in all",
        report.checks.len(),
        report.checks.len() - failed,
        report.processes,
        report.startup,
        report.seconds
    );
    if report.ok() {
        println!(
            "{}",
            out.paint(
                "32",
                "every step behaved as the seed article describes, in real Envoy"
            )
        );
    } else {
        println!(
            "{}",
            out.paint("31", "some steps did not behave as expected (see above)")
        );
    }
    println!("{summary}");
    Ok(report.ok())
}
