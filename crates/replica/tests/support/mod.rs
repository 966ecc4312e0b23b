//! What the replica's test files share: where the workspace is, and the
//! Envoy they all need (failing, with what to run, when it is missing).
#![allow(dead_code, clippy::panic)]

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

pub fn examples() -> PathBuf {
    workspace().join("examples")
}

pub fn require_envoy() {
    if let Err(e) = hybridmesh_replica::process::envoy_binary(&workspace()) {
        panic!("the real-Envoy tests need Envoy: {e:#}");
    }
}

/// Records for the support matrix (`hybridmesh_ops::support`) that `check`
/// passed on the Envoy these tests run (`HYBRIDMESH_ENVOY`, else 1.40).
pub fn record(check: &str, detail: &str) {
    use hybridmesh_ops::support;
    let root = workspace();
    let version = hybridmesh_replica::process::envoy_binary(&root)
        .and_then(|b| hybridmesh_replica::process::envoy_version(&b))
        .unwrap_or_else(|e| panic!("the Envoy's version: {e:#}"));
    support::record(
        &root,
        &support::Subject::Envoy(version.clone()),
        &version,
        check,
        detail,
    )
    .unwrap_or_else(|e| panic!("recording {check}: {e:#}"));
}
