//! `hybridmesh`: validate plugin configs, run scenarios, simulate traffic and
//! inspect modules, all offline in the proxy-wasm harness.
//!
//! Exit codes: 0 when everything passed, 1 when checks ran and something
//! failed, 2 for usage or I/O errors.

mod commands;
mod limits;
mod version;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hybridmesh",
    version,
    about = "Cross-cluster routing for multi-network Istio meshes: check and run the hybridmesh filter offline",
    long_about = "hybridmesh runs the hybridmesh proxy-wasm filter (or any proxy-wasm module) in an \
offline host that plays Envoy's part, so configs and scenarios are checked before anything is deployed.\n\n\
Start with `hybridmesh demo`, then `hybridmesh validate your-config.yaml` and `hybridmesh test examples/`.",
    after_help = "Exit codes: 0 ok, 1 checks failed, 2 usage or I/O error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Validate(commands::validate::ValidateCommand),
    Check(commands::check::CheckCommand),
    Status(commands::status::StatusCommand),
    Test(commands::test::TestCommand),
    Simulate(commands::simulate::SimulateCommand),
    Inspect(commands::inspect::InspectCommand),
    Demo(commands::demo::DemoCommand),
    Render(commands::render::RenderCommand),
    Package(commands::package::PackageCommand),
    Release(commands::release::ReleaseCommand),
    Trace(commands::trace::TraceCommand),
    Bench(commands::bench::BenchCommand),
    Completions(commands::completions::CompletionsCommand),
    Man(commands::man::ManCommand),
}

/// What a command found.
pub enum Outcome {
    Passed,
    Failed,
}

/// Whether a panic is std's "failed printing to stdout/stderr" (the reader
/// of a pipe went away, e.g. `hybridmesh trace big.log | head`).
fn closed_output(payload: &(dyn std::any::Any + Send)) -> Option<&'static str> {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    if text.starts_with("failed printing to stdout") {
        Some("standard output")
    } else if text.starts_with("failed printing to stderr") {
        Some("standard error")
    } else {
        None
    }
}

fn main() -> ExitCode {
    // A closed stdout (or stderr) is an I/O error like any other: exit 2 with
    // one line, not a panic and exit 101.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if closed_output(info.payload()).is_none() {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(payload) => match closed_output(payload.as_ref()) {
            Some("standard output") => {
                // stderr may still be open: say why we stopped.
                let _ = writeln!(std::io::stderr(), "error: {}", commands::CLOSED_STDOUT);
                ExitCode::from(2)
            }
            Some(_) => ExitCode::from(2),
            None => std::panic::resume_unwind(payload),
        },
    }
}

fn run() -> ExitCode {
    let parsed = Cli::command()
        .long_version(version::long_version())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Validate(c) => c.execute(),
        Command::Check(c) => c.execute(),
        Command::Status(c) => c.execute(),
        Command::Test(c) => c.execute(),
        Command::Simulate(c) => c.execute(),
        Command::Inspect(c) => c.execute(),
        Command::Demo(c) => c.execute(),
        Command::Render(c) => c.execute(),
        Command::Package(c) => c.execute(),
        Command::Release(c) => c.execute(),
        Command::Trace(c) => c.execute(),
        Command::Bench(c) => c.execute(),
        Command::Completions(c) => c.execute(),
        Command::Man(c) => c.execute(),
    };
    match result {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
