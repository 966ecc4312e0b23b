//! The docs' support matrix (`docs/src/support.md`), from the last test
//! run's records (`target/support/results.tsv`, which `scripts/test` empties
//! first).
//!
//!   hybridmesh-support --check   # exit 1 if the page differs from what the run verified
//!   hybridmesh-support --write   # rewrite the page's block from it
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
    let page_path = root.join(support::PAGE);
    let page = std::fs::read_to_string(&page_path).context(support::PAGE)?;
    let previous = support::block(&page).with_context(|| {
        format!(
            "{} has no support-matrix block ({} ... {})",
            support::PAGE,
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
            let updated = support::with_block(&page, &made)
                .with_context(|| format!("{}'s block", support::PAGE))?;
            std::fs::write(&page_path, updated)?;
            println!(
                "{}: support matrix written from {}",
                support::PAGE,
                results_path.display()
            );
        }
        "--check" => {
            if previous != made.trim_end() {
                bail!(
                    "{page}'s support matrix is not what this run verified:\n\
                     {page}:\n{previous}\n\nthis run:\n{made}\n\
                     a check failed (see above) or the page is stale: \
                     cargo run -p hybridmesh-ops --bin hybridmesh-support -- --write",
                    page = support::PAGE
                );
            }
            println!(
                "{}'s support matrix is what this run verified",
                support::PAGE
            );
        }
        m => bail!("unknown argument {m:?}: expected --check or --write"),
    }
    Ok(())
}
