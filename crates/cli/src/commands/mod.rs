//! One file per command: `XCommand` (clap) with `execute(self)`.

pub mod bench;
pub mod check;
pub mod completions;
pub mod demo;
pub mod inspect;
pub mod man;
pub mod package;
pub mod release;
pub mod render;
pub mod simulate;
pub mod status;
pub mod test;
pub mod trace;
pub mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::ValueEnum;

/// Output format of every command but `test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// Output format of `test`: also JUnit XML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TestOutput {
    Text,
    Json,
    Yaml,
    /// JUnit XML.
    Junit,
}

/// A finding as `    [HM0101] message`, `label` before the code
/// (`allowed: `), each further line of the message indented alike; what
/// came from input escaped.
pub fn print_coded(label: &str, code: hybridmesh_ops::deploy::codes::Code, message: &str) {
    let mut lines = message.split('\n');
    let first = lines.next().unwrap_or_default();
    println!("    {label}[{code}] {}", hybridmesh_input::printable(first));
    for line in lines {
        println!("    {}", hybridmesh_input::printable(line));
    }
}

/// `value` as JSON or YAML on standard output (`Text` prints nothing: each
/// command writes its own text).
pub fn print_data<T: serde::Serialize>(json: bool, value: &T) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(value)?);
    }
    Ok(())
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

/// What a command says when the reader of its standard output went away
/// (`hybridmesh trace big.log | head`): not a bug.
pub const CLOSED_STDOUT: &str =
    "cannot write to standard output: the reader closed it (broken pipe)";

/// A failed write to standard output, said as `main` says a failed `print!`.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::anyhow!(CLOSED_STDOUT)
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
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

/// `--wasm`, or the repository's filter if it is built (else a message saying how
/// to build it).
pub fn module_path(wasm: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match wasm {
        Some(p) => Ok(p.clone()),
        None => {
            let p = default_wasm();
            if !p.exists() {
                anyhow::bail!(
                    "the filter is not built: {} is missing\n  build it with: scripts/build-wasm\n  or pass another module with --wasm FILE",
                    p.display()
                );
            }
            Ok(p)
        }
    }
}

/// Loads `--wasm`, or the repository's filter with a message saying how to build it.
pub fn load_module(wasm: Option<&PathBuf>) -> anyhow::Result<proxy_wasm_host::Module> {
    let path = module_path(wasm)?;
    let bytes = read_module(&path)?;
    // What Envoy refuses to load is not run here either.
    let found = inspect::parse(&path, &bytes)?;
    if !found
        .abi_versions
        .iter()
        .any(|v| inspect::ENVOY_ABI_VERSIONS.contains(&v.as_str()))
    {
        anyhow::bail!(
            "{}: exports no proxy_abi_version_0_1_0, _0_2_0 or _0_2_1 marker: Envoy refuses to load it (\"Missing or unknown Proxy-Wasm ABI version\", proxy-wasm-cpp-host src/wasm.cc){}",
            path.display(),
            if found.abi_versions.is_empty() {
                String::new()
            } else {
                format!("; it exports ABI {}", found.abi_versions.join(", "))
            }
        );
    }
    // The harness's error names the module and what is wrong with it.
    Ok(proxy_wasm_host::Module::from_named_bytes(
        &path.display().to_string(),
        &bytes,
    )?)
}

/// A module file's bytes, through the one bounded reader (a regular file of at
/// most 256 MiB, [`hybridmesh_input::MODULE`]), checked to be WebAssembly or WAT.
pub fn read_module(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = hybridmesh_input::read(path, hybridmesh_input::MODULE)?;
    check_module_bytes(path, &bytes)?;
    Ok(bytes)
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
