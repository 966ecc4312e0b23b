//! `hybridmesh man`: the manual pages, made from the command line's own
//! definition (clap_mangen): one for `hybridmesh`, one per command.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};

use crate::Outcome;

/// Print the manual page of hybridmesh (roff), or write one page per command
/// into a folder.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh man | man -l -\n  hybridmesh man --out ~/.local/share/man/man1   # hybridmesh.1, hybridmesh-validate.1, ..."
)]
pub struct ManCommand {
    /// Write hybridmesh.1 and hybridmesh-<command>.1 into this folder
    /// (made if missing) instead of printing hybridmesh.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl ManCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let cli = crate::Cli::command();
        let Some(dir) = self.out else {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &page)
                .map_err(super::stdout_error)?;
            return Ok(Outcome::Passed);
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // clap_mangen names a subcommand's page `<parent>-<name>.1`.
        clap_mangen::generate_to(cli, &dir)
            .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
        let mut written: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hybridmesh") && n.ends_with(".1"))
            .collect();
        written.sort();
        for name in written {
            println!("wrote {}", dir.join(name).display());
        }
        Ok(Outcome::Passed)
    }
}
