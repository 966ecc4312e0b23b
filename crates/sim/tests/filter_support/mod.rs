//! The filter's release `.wasm`, built once per test process.
//!
//! `HYBRIDMESH_WASM` names a prebuilt module (the test script sets it); without
//! it the module is built here into `target/test-wasm` (its own target dir, so
//! the build does not wait on the lock of the `cargo test` that runs us).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use proxy_wasm_host::{Module, Route};

pub fn wasm_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("HYBRIDMESH_WASM") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let target = root.join("target/test-wasm");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--profile",
                "wasm",
                "--target",
                "wasm32-wasip1",
                "-p",
                "hybridmesh-filter",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("cannot run cargo to build the filter's .wasm");
        assert!(status.success(), "building the filter's .wasm failed");
        target.join("wasm32-wasip1/wasm/hybridmesh_filter.wasm")
    })
    .clone()
}

pub fn module() -> Module {
    Module::from_file(wasm_path()).expect("the filter's .wasm loads")
}

/// The seed's two clusters.
pub const CLUSTERS: &str = r#""clusters": [
    {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
    {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}]"#;

/// The echo service's host name.
pub const ECHO: &str = "echo-svc.default.svc.cluster.local";

/// The VirtualService `render` writes: per cluster, the pinned header ->
/// `only-<c>`, the target header -> `prefer-<c>`; else the default route.
pub fn routes() -> Vec<Route> {
    ["gke", "anthos"]
        .iter()
        .flat_map(|c| {
            [
                Route::new(&format!("only-{c}"))
                    .header("x-hybridmesh-pinned-cluster", c)
                    .cluster(&format!("outbound|80|only-{c}|{ECHO}")),
                Route::new(&format!("prefer-{c}"))
                    .header("x-hybridmesh-target-cluster", c)
                    .cluster(&format!("outbound|80|prefer-{c}|{ECHO}")),
            ]
        })
        .collect()
}

/// Writes a scenario named `name` (`body` after a header naming the seed's mesh and
/// `from: gke`) into its own temporary folder and returns its path.
pub fn scenario_file(name: &str, body: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hybridmesh-scenario-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh.yaml");
    let path = dir.join("scenario.yaml");
    std::fs::write(
        &path,
        format!("name: {name}\nmesh: {}\nfrom: gke\n{body}", mesh.display()),
    )
    .unwrap();
    path
}
