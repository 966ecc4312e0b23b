//! What hybridmesh is verified on: the Istio releases and Envoy versions of
//! `versions.tsv`, what each test run verified on them (the tests record
//! each check that passed in `target/support/results.tsv`), and the support
//! matrix the docs show (`docs/src/support.md`), made from those records (`hybridmesh-support`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// `versions.tsv`, as committed: one fact, read by the scripts and here.
pub const VERSIONS_TSV: &str = include_str!("../../../versions.tsv");

/// Which run verifies a row: every `scripts/test` (`.ci/run`), or only
/// `scripts/test --matrix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Ci,
    Matrix,
}

/// One row of `versions.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `istio 1.31`, or `envoy 1.40.0` for an Envoy-only row.
    pub subject: Subject,
    /// The Envoy version run: the one the release ships, or the row's own.
    pub envoy: String,
    pub tier: Tier,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// An Istio release (`1.31`), run in the lab with the Envoy it ships.
    Istio(String),
    /// An Envoy version alone (`1.40.0`), run in the replica and the corpus.
    Envoy(String),
}

/// The rows of `versions.tsv` (`text`), in its order (newest first).
pub fn parse_versions(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        // The fifth field says where the version comes from, for the reader.
        let [kind, version, envoy, tier, _source] = f.as_slice() else {
            bail!(
                "versions.tsv line {}: expected 5 tab-separated fields, found {}",
                i + 1,
                f.len()
            );
        };
        let tier = match *tier {
            "ci" => Tier::Ci,
            "matrix" => Tier::Matrix,
            t => bail!(
                "versions.tsv line {}: tier {t:?}: expected ci or matrix",
                i + 1
            ),
        };
        let (subject, envoy) = match *kind {
            "istio" => (Subject::Istio(version.to_string()), envoy.to_string()),
            "envoy" => (Subject::Envoy(version.to_string()), version.to_string()),
            k => bail!(
                "versions.tsv line {}: kind {k:?}: expected istio or envoy",
                i + 1
            ),
        };
        rows.push(Row {
            subject,
            envoy,
            tier,
        });
    }
    Ok(rows)
}

/// The committed rows.
pub fn versions() -> Vec<Row> {
    // A test parses the committed file; a broken one fails there.
    parse_versions(VERSIONS_TSV).unwrap_or_default()
}

/// The Envoy an Istio release ships (`versions.tsv`).
pub fn envoy_of_istio(release: &str) -> Option<String> {
    versions().into_iter().find_map(|r| match r.subject {
        Subject::Istio(v) if v == release => Some(r.envoy),
        _ => None,
    })
}

/// The newest Istio release of `versions.tsv` (the lab's default).
pub fn newest_istio() -> Option<String> {
    versions().into_iter().find_map(|r| match r.subject {
        Subject::Istio(v) => Some(v),
        Subject::Envoy(_) => None,
    })
}

/// Where `scripts/setup-envoy VERSION` installs that Envoy (the script says:
/// the one place that knows), failing with what to run when it is missing.
pub fn envoy_path(root: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new(root.join("scripts/setup-envoy"))
        .args(["--path", version])
        .output()
        .context("cannot run scripts/setup-envoy --path")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!(
            "Envoy {version} is missing ({}): run scripts/setup-envoy {version}",
            path.display()
        );
    }
    Ok(path)
}

/// The checks the matrix shows, in its column order.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "examples",
        "every example: the same answers on the harness, the replica and the lab, all on the release's Envoy (crates/lab/tests/differential.rs)",
    ),
    (
        "walk-through",
        "the seed article's steps (lab: its DestinationRule and drains on istiod's config; Envoy alone: scripts/demo, crates/replica/tests/mesh_e2e.rs)",
    ),
    (
        "failover-no-loss",
        "a cluster's faults under load with the filter's preference: no request lost (crates/replica/tests/mesh_faults.rs)",
    ),
    (
        "delivery",
        "the image pulled from a private registry with a pull secret, and what traffic gets when it cannot be (crates/lab/tests/delivery.rs)",
    ),
    (
        "traffic-extension",
        "the examples again with the plugins as TrafficExtensions (Istio 1.30+)",
    ),
    (
        "go-sdk-corpus",
        "the Go SDK's example filters: the harness answers as this Envoy does (crates/replica/tests/go_sdk.rs)",
    ),
];

/// Where a test run's records go.
pub fn results_path(root: &Path) -> PathBuf {
    root.join("target/support/results.tsv")
}

/// Records that `check` passed on `subject` running Envoy `envoy` (the
/// version the binary or the sidecar reported), with a short detail.
/// Called by a test after its assertions held.
pub fn record(
    root: &Path,
    subject: &Subject,
    envoy: &str,
    check: &str,
    detail: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        CHECKS.iter().any(|(c, _)| *c == check),
        "unknown check {check:?}"
    );
    let path = results_path(root);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (kind, version) = match subject {
        Subject::Istio(v) => ("istio", v),
        Subject::Envoy(v) => ("envoy", v),
    };
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let line = format!("{kind}\t{version}\t{envoy}\t{check}\t{}\n", clean(detail));
    // One write of one short line with O_APPEND: tests running side by side
    // do not interleave within it.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| path.display().to_string())?
        .write_all(line.as_bytes())?;
    Ok(())
}

/// What a run recorded: (subject, check) -> (envoy run, detail).
pub type Results = BTreeMap<(Subject, String), (String, String)>;

pub fn parse_results(text: &str) -> Results {
    let mut out = Results::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [kind, version, envoy, check, detail] = f.as_slice() {
            let subject = match *kind {
                "istio" => Subject::Istio(version.to_string()),
                _ => Subject::Envoy(version.to_string()),
            };
            out.insert(
                (subject, check.to_string()),
                (envoy.to_string(), detail.to_string()),
            );
        }
    }
    out
}

/// Which checks apply to a row (the others are shown as "-").
fn applies(subject: &Subject, check: &str) -> bool {
    match subject {
        Subject::Istio(v) => {
            matches!(check, "examples" | "walk-through" | "delivery")
                || (check == "traffic-extension"
                    && crate::deploy::istio::IstioVersion::parse(v)
                        .is_ok_and(|v| v.traffic_extension()))
        }
        Subject::Envoy(_) => matches!(check, "walk-through" | "failover-no-loss" | "go-sdk-corpus"),
    }
}

/// Which run verifies a cell: the row's tier, except the faults under load
/// on an Envoy-only row, which every run plays only on the replica's
/// default Envoy (the first `envoy` row) and on the Envoys of the Istio
/// releases it plays in the lab (`scripts/test` says so); on the others
/// only `--matrix` does.
pub fn cell_tier(rows: &[Row], row: &Row, check: &str) -> Tier {
    if row.tier == Tier::Matrix {
        return Tier::Matrix;
    }
    let Subject::Envoy(v) = &row.subject else {
        return Tier::Ci;
    };
    let default = rows.iter().find_map(|r| match &r.subject {
        Subject::Envoy(d) => Some(d),
        Subject::Istio(_) => None,
    });
    let a_lab_envoy = rows
        .iter()
        .any(|r| matches!(r.subject, Subject::Istio(_)) && r.tier == Tier::Ci && r.envoy == *v);
    if check == "failover-no-loss" && default != Some(v) && !a_lab_envoy {
        Tier::Matrix
    } else {
        Tier::Ci
    }
}

/// The matrix as the docs show it, from `versions.tsv` and a run's
/// records. A cell only `scripts/test --matrix` verifies ([`cell_tier`])
/// that this run did not play keeps what `previous` (the page's block)
/// shows for it.
pub fn matrix(rows: &[Row], results: &Results, previous: &str) -> String {
    let mut out = String::new();
    out.push_str("| Istio | Envoy |");
    for (c, _) in CHECKS {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str(" verified by |\n|---|---|");
    for _ in CHECKS {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for r in rows {
        let istio = match &r.subject {
            Subject::Istio(v) => v.clone(),
            Subject::Envoy(_) => "-".to_string(),
        };
        let prefix = format!("| {istio} | {} |", r.envoy);
        // The page's cells for this row, in CHECKS order.
        let before: Vec<String> = previous
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(|l| {
                l[prefix.len()..]
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&prefix);
        let mut matrix_only = Vec::new();
        for (k, (c, _)) in CHECKS.iter().enumerate() {
            let tier = cell_tier(rows, r, c);
            let cell = if !applies(&r.subject, c) {
                "-".to_string()
            } else {
                if tier == Tier::Matrix {
                    matrix_only.push(*c);
                }
                match results.get(&(r.subject.clone(), c.to_string())) {
                    Some((envoy, _)) if *envoy == r.envoy => "pass".to_string(),
                    Some(_) => "other Envoy".to_string(),
                    None if tier == Tier::Matrix => before
                        .get(k)
                        .filter(|b| !b.is_empty())
                        .cloned()
                        .unwrap_or_else(|| "not run".to_string()),
                    None => "not run".to_string(),
                }
            };
            out.push_str(&format!(" {cell} |"));
        }
        let by = if r.tier == Tier::Matrix {
            "`scripts/test --matrix`".to_string()
        } else if matrix_only.is_empty() {
            "every `scripts/test`".to_string()
        } else {
            format!(
                "every `scripts/test` ({}: `--matrix`)",
                matrix_only.join(", ")
            )
        };
        out.push_str(&format!(" {by} |\n"));
    }
    out
}

/// The page of the docs that holds the matrix, between [`BEGIN`] and [`END`].
pub const PAGE: &str = "docs/src/support.md";

/// The page's lines between the markers.
pub const BEGIN: &str = "<!-- support-matrix: made by `cargo run -p hybridmesh-ops --bin hybridmesh-support -- --write` from the last test run; do not edit -->";
pub const END: &str = "<!-- /support-matrix -->";

/// The block between [`BEGIN`] and [`END`] in `page`.
pub fn block(page: &str) -> Option<&str> {
    let start = page.find(BEGIN)? + BEGIN.len();
    let end = page[start..].find(END)? + start;
    Some(page[start..end].trim_matches('\n'))
}

/// `page` with the block between the markers replaced by `matrix`.
pub fn with_block(page: &str, matrix: &str) -> Option<String> {
    let start = page.find(BEGIN)? + BEGIN.len();
    let end = page[start..].find(END)? + start;
    Some(format!(
        "{}\n{}\n{}",
        &page[..start],
        matrix.trim_end(),
        &page[end..]
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_committed_versions_parse_and_each_istio_release_names_its_envoy() {
        let rows = parse_versions(VERSIONS_TSV).unwrap();
        assert!(rows
            .iter()
            .any(|r| r.subject == Subject::Envoy("1.40.0".into())));
        assert_eq!(newest_istio().as_deref(), Some("1.31"));
        assert_eq!(envoy_of_istio("1.31").as_deref(), Some("1.39.3"));
        assert_eq!(envoy_of_istio("1.30").as_deref(), Some("1.38.2"));
        assert_eq!(envoy_of_istio("1.29"), None);
    }

    #[test]
    fn a_malformed_row_is_refused_with_its_line() {
        let e = parse_versions("# c\nistio\t1.31\t1.39.3\tnightly\tx\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "versions.tsv line 2: tier \"nightly\": expected ci or matrix"
        );
        let e = parse_versions("envoy 1.40.0 - ci x\n").unwrap_err();
        assert!(
            e.to_string().contains("expected 5 tab-separated fields"),
            "{e}"
        );
    }

    #[test]
    fn the_matrix_says_pass_only_for_what_was_recorded_on_the_rows_envoy() {
        let rows = parse_versions(
            "istio\t1.31\t1.39.3\tci\ts\nistio\t1.30\t1.38.2\tmatrix\ts\n\
             envoy\t1.40.0\t-\tci\ts\nenvoy\t1.39.3\t-\tci\ts\nenvoy\t1.37.0\t-\tci\ts\n",
        )
        .unwrap();
        let results = parse_results(
            "istio\t1.31\t1.39.3\texamples\t8 of 8\n\
             istio\t1.31\t1.40.0\tdelivery\tx\n\
             envoy\t1.40.0\t1.40.0\tgo-sdk-corpus\t14\n\
             envoy\t1.37.0\t1.37.0\twalk-through\t29\n",
        );
        // The page as a --matrix run left it: 1.30's row and 1.37's faults.
        let previous =
            "| 1.30 | 1.38.2 | pass | pass | - | pass | pass | - | `scripts/test --matrix` |\n\
                        | - | 1.37.0 | - | pass | pass | - | - | pass | x |\n";
        let m = matrix(&rows, &results, previous);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(
            lines[2],
            "| 1.31 | 1.39.3 | pass | not run | - | other Envoy | not run | - | every `scripts/test` |"
        );
        assert_eq!(
            lines[3],
            "| 1.30 | 1.38.2 | pass | pass | - | pass | pass | - | `scripts/test --matrix` |"
        );
        assert_eq!(
            lines[4],
            "| - | 1.40.0 | - | not run | not run | - | - | pass | every `scripts/test` |"
        );
        // 1.39.3 is a lab release's Envoy: its faults run in every run.
        assert_eq!(
            lines[5],
            "| - | 1.39.3 | - | not run | not run | - | - | not run | every `scripts/test` |"
        );
        // 1.37.0's faults: only --matrix plays them; kept from the page.
        assert_eq!(
            lines[6],
            "| - | 1.37.0 | - | pass | pass | - | - | not run | every `scripts/test` (failover-no-loss: `--matrix`) |"
        );
    }
}
