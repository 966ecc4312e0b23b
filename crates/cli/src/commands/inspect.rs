//! `hybridmesh inspect`: ABI version, exports, imports, and what a real proxy
//! would refuse to load.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use hybridmesh_input::printable;

use super::{Output, Paint};
use crate::Outcome;

/// Show a proxy-wasm module's ABI version, exports and imports, and name
/// every import Envoy (V8, as Istio runs it) does not provide: such a module
/// fails to load in the proxy, so catch it before deployment.
#[derive(Parser)]
#[command(
    after_help = "Example:\n  hybridmesh inspect target/wasm32-wasip1/wasm/hybridmesh_filter.wasm"
)]
pub struct InspectCommand {
    /// The module.
    #[arg(value_name = "MODULE.wasm")]
    module: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// The host functions Envoy's proxy-wasm host (proxy-wasm-cpp-host, as built into
/// Envoy 1.40 with V8) exports to modules, module `env`: `FOR_ALL_HOST_FUNCTIONS` and
/// `FOR_ALL_HOST_FUNCTIONS_ABI_SPECIFIC` in its `include/proxy-wasm/exports.h`, plus the
/// two Emscripten helpers it also exports.
const ENVOY_ENV: &[&str] = &[
    "log",
    "get_status",
    "set_property",
    "get_property",
    "send_local_response",
    "get_shared_data",
    "set_shared_data",
    "register_shared_queue",
    "resolve_shared_queue",
    "dequeue_shared_queue",
    "enqueue_shared_queue",
    "get_header_map_value",
    "add_header_map_value",
    "replace_header_map_value",
    "remove_header_map_value",
    "get_header_map_pairs",
    "set_header_map_pairs",
    "get_header_map_size",
    "get_buffer_status",
    "get_buffer_bytes",
    "set_buffer_bytes",
    "http_call",
    "grpc_call",
    "grpc_stream",
    "grpc_close",
    "grpc_cancel",
    "grpc_send",
    "set_tick_period_milliseconds",
    "get_current_time_nanoseconds",
    "define_metric",
    "increment_metric",
    "record_metric",
    "get_metric",
    "set_effective_context",
    "done",
    "call_foreign_function",
    "get_configuration",
    "continue_request",
    "continue_response",
    "clear_route_cache",
    "continue_stream",
    "close_stream",
    "get_log_level",
];

/// WASI functions that host exports (`FOR_ALL_WASI_FUNCTIONS`), under both
/// `wasi_unstable` and `wasi_snapshot_preview1`.
const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub module: String,
    pub bytes: u64,
    pub abi_versions: Vec<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Imports Envoy with V8 does not provide: the module would fail to load.
    pub missing_in_envoy: Vec<String>,
}

fn envoy_provides(module: &str, name: &str) -> bool {
    match module {
        "env" => {
            name.strip_prefix("proxy_")
                .is_some_and(|n| ENVOY_ENV.contains(&n))
                || name == "emscripten_notify_memory_growth"
                || name == "pthread_equal"
        }
        "wasi_unstable" | "wasi_snapshot_preview1" => ENVOY_WASI.contains(&name),
        _ => false,
    }
}

/// Validates the module and lists its imports and exports with `wasmparser`:
/// one linear pass, no compilation (was: the whole module compiled with
/// Cranelift, 39.8 s and 2.3 GB for a 3 MB module).
pub fn inspect(path: &std::path::Path) -> anyhow::Result<Inspection> {
    let bytes = super::read_module(path)?;
    parse(path, &bytes)
}

/// The ABI versions Envoy's proxy-wasm host loads (proxy-wasm-cpp-host
/// `src/wasm.cc`: a module exporting none of these markers fails with "Missing
/// or unknown Proxy-Wasm ABI version").
pub const ENVOY_ABI_VERSIONS: [&str; 3] = ["0.1.0", "0.2.0", "0.2.1"];

/// [`inspect`] of a module already read from `path`.
pub fn parse(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<Inspection> {
    let invalid = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("{} is not a valid WebAssembly module: {e}", path.display())
    };
    let binary = wat::parse_bytes(bytes).map_err(|e| invalid(&e))?;
    wasmparser::Validator::new()
        .validate_all(&binary)
        .map_err(|e| invalid(&e))?;
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    let mut missing_in_envoy = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&binary) {
        match payload.map_err(|e| invalid(&e))? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(|e| invalid(&e))?;
                    let name = format!("{}.{}", import.module, import.name);
                    if !envoy_provides(import.module, import.name) {
                        missing_in_envoy.push(name.clone());
                    }
                    imports.push(name);
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                for export in section {
                    exports.push(export.map_err(|e| invalid(&e))?.name.to_owned());
                }
            }
            _ => {}
        }
    }
    let abi_versions = exports
        .iter()
        .filter_map(|e| e.strip_prefix("proxy_abi_version_"))
        .map(|v| v.replace('_', "."))
        .collect();
    Ok(Inspection {
        module: path.display().to_string(),
        bytes: bytes.len() as u64,
        abi_versions,
        exports,
        imports,
        missing_in_envoy,
    })
}

impl InspectCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let i = inspect(&self.module)?;
        let ok = i.missing_in_envoy.is_empty() && !i.abi_versions.is_empty();
        match self.output {
            Output::Json | Output::Yaml => super::print_data(self.output == Output::Json, &i)?,
            Output::Text => {
                let p = Paint::stdout();
                println!("{} ({} bytes)", p.bold(&i.module), i.bytes);
                if i.abi_versions.is_empty() {
                    println!(
                        "ABI version: {} (no proxy_abi_version_* export: not a proxy-wasm module)",
                        p.red("none")
                    );
                } else {
                    println!("ABI version: {}", i.abi_versions.join(", "));
                }
                // Names are the module's: printed escaped. Marks are looked up in
                // a set (was: a list, quadratic: 200,000 imports took minutes).
                let missing: std::collections::HashSet<&str> =
                    i.missing_in_envoy.iter().map(String::as_str).collect();
                println!("exports ({}):", i.exports.len());
                for e in &i.exports {
                    println!("  {}", printable(e));
                }
                println!("imports ({}):", i.imports.len());
                for e in &i.imports {
                    let mark = if missing.contains(e.as_str()) {
                        p.red("  not in Envoy")
                    } else {
                        String::new()
                    };
                    println!("  {}{mark}", printable(e));
                }
                if i.abi_versions.is_empty() {
                    println!(
                        "{} not a proxy-wasm module: no proxy_abi_version_* export, Envoy would not load it as a filter",
                        p.red("FAIL")
                    );
                } else if i.missing_in_envoy.is_empty() {
                    println!("{} every import is provided by Envoy (V8)", p.green("ok"));
                } else {
                    println!(
                        "{} Envoy (V8) would refuse to load this module: it does not provide {}",
                        p.red("FAIL"),
                        printable(&i.missing_in_envoy.join(", "))
                    );
                }
            }
        }
        Ok(if ok { Outcome::Passed } else { Outcome::Failed })
    }
}
