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
        panic!("the real-Envoy tests need Envoy 1.40: {e:#}");
    }
}
