//! One file per command: `XCommand` (clap) with `execute(self)`.

pub mod bench;
pub mod demo;
pub mod inspect;
pub mod package;
pub mod release;
pub mod render;
pub mod simulate;
pub mod test;
pub mod trace;
pub mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;

/// Output format of every command but `test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Output format of `test`: also JUnit XML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TestOutput {
    Text,
    Json,
    /// JUnit XML.
    Junit,
}

/// Colours only on a terminal (and never with NO_COLOR set).
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Paint {
        Paint {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }

    pub fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }

    pub fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }

    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }

    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// The filter this repository builds (`cargo build --profile wasm --target
/// wasm32-wasip1 -p hybridmesh-filter`): under `CARGO_TARGET_DIR`, else under
/// `./target` when run from a checkout, else the checkout this binary was built in.
pub fn default_wasm() -> PathBuf {
    const REL: &str = "wasm32-wasip1/wasm/hybridmesh_filter.wasm";
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join(REL);
    }
    let here = PathBuf::from("target").join(REL);
    if here.exists() {
        return here;
    }
    workspace_root().join("target").join(REL)
}

/// The examples: `./examples` when run from a checkout, else the checkout this
/// binary was built in.
pub fn default_examples() -> PathBuf {
    let here = PathBuf::from("examples");
    if here.join("mesh.yaml").exists() {
        return here;
    }
    workspace_root().join("examples")
}

/// The checkout this binary was built in (else the current directory).
pub fn workspace_root() -> PathBuf {
    // This crate is `crates/cli` in the checkout.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match here.parent().and_then(|p| p.parent()) {
        Some(p) if p.join("Cargo.toml").exists() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Loads `--wasm`, or the repository's filter with a message saying how to build it.
pub fn load_module(wasm: Option<&PathBuf>) -> anyhow::Result<proxy_wasm_host::Module> {
    let path = match wasm {
        Some(p) => p.clone(),
        None => {
            let p = default_wasm();
            if !p.exists() {
                anyhow::bail!(
                    "the filter is not built: {} is missing\n  build it with: scripts/build-wasm\n  or pass another module with --wasm FILE",
                    p.display()
                );
            }
            p
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    check_module_bytes(&path, &bytes)?;
    // The harness's error names the module and what is wrong with it.
    Ok(proxy_wasm_host::Module::from_file(&path)?)
}

/// A module is binary WebAssembly (`\0asm`) or WAT text; anything else gets
/// a plain message instead of a parser's.
pub fn check_module_bytes(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let wat = std::str::from_utf8(bytes)
        .map(|t| {
            t.lines()
                .map(str::trim_start)
                .find(|l| !l.is_empty() && !l.starts_with(";;"))
                .is_some_and(|l| l.starts_with('('))
        })
        .unwrap_or(false);
    if bytes.starts_with(b"\0asm") || wat {
        Ok(())
    } else {
        anyhow::bail!(
            "{} is not a WebAssembly module (no \\0asm header, and not WAT text)",
            path.display()
        )
    }
}
