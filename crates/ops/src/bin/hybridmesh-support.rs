//! The README's support matrix, from the last test run's records
//! (`target/support/results.tsv`, which `scripts/test` empties first).
//!
//!   hybridmesh-support --check   # exit 1 if the README differs from what the run verified
//!   hybridmesh-support --write   # rewrite the README's block from it
//!   hybridmesh-support           # print the matrix

use std::path::Path;

use anyhow::{bail, Context as _};
use hybridmesh_ops::support;

fn main() {
    if let Err(e) = run() {
        eprintln!("hybridmesh-support: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    let mode = std::env::args().nth(1).unwrap_or_default();
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).context("README.md")?;
    let previous = support::block(&readme).with_context(|| {
        format!(
            "README.md has no support-matrix block ({} ... {})",
            support::BEGIN,
            support::END
        )
    })?;
    let results_path = support::results_path(root);
    let results = support::parse_results(
        &std::fs::read_to_string(&results_path)
            .with_context(|| format!("{}: run scripts/test first", results_path.display()))?,
    );
    let rows = support::parse_versions(support::VERSIONS_TSV)?;
    let made = support::matrix(&rows, &results, previous);
    match mode.as_str() {
        "" => print!("{made}"),
        "--write" => {
            let updated = support::with_block(&readme, &made).context("README.md's block")?;
            std::fs::write(&readme_path, updated)?;
            println!(
                "README.md: support matrix written from {}",
                results_path.display()
            );
        }
        "--check" => {
            if previous != made.trim_end() {
                bail!(
                    "README.md's support matrix is not what this run verified:\n\
                     README:\n{previous}\n\nthis run:\n{made}\n\
                     a check failed (see above) or the README is stale: \
                     cargo run -p hybridmesh-ops --bin hybridmesh-support -- --write"
                );
            }
            println!("README.md's support matrix is what this run verified");
        }
        m => bail!("unknown argument {m:?}: expected --check or --write"),
    }
    Ok(())
}
