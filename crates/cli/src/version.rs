//! `hybridmesh --version`: this build, the filter image its release pins, and
//! the Istio and Envoy versions the project is tested with.
//!
//! Both come from the files the tests hold true: `examples/deploy.yaml`
//! (`hybridmesh release --check` keeps its digest equal to the image this
//! source builds) and `versions.tsv` (what `scripts/test` runs).

use hybridmesh_ops::deploy::mesh::MeshDescription;
use hybridmesh_ops::support::{self, Subject, Tier};

/// The release's mesh description, as committed with this source.
const DESCRIPTION: &str = include_str!("../../../examples/deploy.yaml");

/// What `--version` prints (`-V` prints the first line).
pub fn long_version() -> String {
    let mut out = String::from(env!("CARGO_PKG_VERSION"));
    match MeshDescription::from_yaml(DESCRIPTION) {
        Ok(mesh) => out.push_str(&format!(
            "\nfilter image: {}\n  sha256: {} (the image manifest digest a WasmPlugin pins)",
            mesh.image.url, mesh.image.sha256
        )),
        Err(_) => out.push_str("\nfilter image: unknown (examples/deploy.yaml does not parse)"),
    }
    let rows = support::parse_versions(support::VERSIONS_TSV).unwrap_or_default();
    out.push_str("\ntested with (docs/src/support.md):");
    let mut envoys = Vec::new();
    for row in &rows {
        let run = match row.tier {
            Tier::Ci => "every test run",
            Tier::Matrix => "scripts/test --matrix",
        };
        match &row.subject {
            Subject::Istio(v) => out.push_str(&format!(
                "\n  Istio {v} with Envoy {}: in the lab, {run}",
                row.envoy
            )),
            Subject::Envoy(v) => envoys.push(v.as_str()),
        }
    }
    if !envoys.is_empty() {
        out.push_str(&format!(
            "\n  Envoy {}: in the replica and the Go SDK corpus",
            envoys.join(", ")
        ));
    }
    out
}
