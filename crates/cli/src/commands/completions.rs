//! `hybridmesh completions`: the shell's completion script, made from the
//! command line's own definition (clap_complete).

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

use crate::Outcome;

/// Print the completion script for a shell: every command, option and value
/// (formats, shells) completes.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh completions bash > ~/.local/share/bash-completion/completions/hybridmesh\n  hybridmesh completions zsh > ~/.zfunc/_hybridmesh   # with fpath+=(~/.zfunc) before compinit\n  hybridmesh completions fish > ~/.config/fish/completions/hybridmesh.fish"
)]
pub struct CompletionsCommand {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

impl CompletionsCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let mut cli = crate::Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut cli, "hybridmesh", &mut script);
        std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
            .map_err(super::stdout_error)?;
        Ok(Outcome::Passed)
    }
}
