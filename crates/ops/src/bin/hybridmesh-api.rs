//! The harness crate's public API (`proxy-wasm-host`): builds its rustdoc JSON
//! (warnings denied, so every intra-doc link resolves), then checks that
//! every public type, free function and method is shown in a runnable example
//! and that the API is the snapshot's (`crates/wasm-host/api.txt`): a removed
//! or changed item is a breaking change and needs a new version.
//!
//!   hybridmesh-api            # check (scripts/test runs this)
//!   hybridmesh-api --bless    # rewrite the snapshot (refused for a breaking change at the same version)

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};
use hybridmesh_ops::api;

fn main() {
    if let Err(e) = run() {
        eprintln!("hybridmesh-api: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    let bless = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--bless") => true,
        Some(other) => bail!("unknown argument {other:?} (only --bless)"),
    };
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    // rustdoc's JSON is unstable: on the pinned stable toolchain it needs
    // RUSTC_BOOTSTRAP, as cargo-semver-checks does. Its own target directory,
    // so that the dependencies checked with it do not replace `cargo doc`'s.
    let target = target.join("api");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "RUSTDOCFLAGS",
            "-D warnings -Z unstable-options --output-format json",
        )
        .args(["doc", "--quiet", "-p", "proxy-wasm-host", "--no-deps"])
        .status()
        .context("running cargo doc")?;
    if !status.success() {
        bail!("cargo doc -p proxy-wasm-host failed (see above)");
    }
    let json_path = target.join("doc/proxy_wasm_host.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json_path).with_context(|| json_path.display().to_string())?,
    )
    .with_context(|| json_path.display().to_string())?;
    let version = api::crate_version(&json).context("no crate_version in rustdoc's JSON")?;
    let items = api::public_items(&json, root)?;
    let made = api::snapshot(version, &items);
    let snapshot_path = root.join(api::SNAPSHOT);
    let old = std::fs::read_to_string(&snapshot_path).unwrap_or_default();
    let change = api::compare(&old, &made);
    let missing = api::without_examples(&items);
    for m in &missing {
        eprintln!("  {m}");
    }
    let shown = items
        .iter()
        .filter(|i| matches!(i.kind, "struct" | "enum" | "fn" | "method"))
        .count();
    println!(
        "proxy-wasm-host {version}: {} public items, {shown} types, functions and methods, {} without a runnable example",
        items.len(),
        missing.len()
    );
    if bless {
        api::may_bless(&change, api::snapshot_version(&old), version)?;
        std::fs::write(&snapshot_path, &made)?;
        println!(
            "{}: {} added, {} removed or changed",
            api::SNAPSHOT,
            change.added.len(),
            change.removed.len()
        );
    } else if !change.is_empty() {
        for line in &change.removed {
            eprintln!("- {line}");
        }
        for line in &change.added {
            eprintln!("+ {line}");
        }
        bail!(
            "the public API is not {}'s ({}): review the lines above, then \
             cargo run -p hybridmesh-ops --bin hybridmesh-api -- --bless",
            api::SNAPSHOT,
            if change.is_breaking() {
                "a breaking change: items removed or changed"
            } else {
                "items added"
            }
        );
    }
    if !missing.is_empty() {
        bail!(
            "{} public items are shown in no runnable example (listed above)",
            missing.len()
        );
    }
    Ok(())
}
