//! Shared helpers for the ABI tests: a WAT guest that re-exports every host function as
//! `call_<name>` (same signature), so a test can call each host function alone with any
//! pointers it likes, plus small memory helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proxy_wasm_host::{Module, Plugin, PluginBuilder, Status};

/// (name, params) of every host function: the 37 the Rust SDK 0.2.5 imports plus
/// `proxy_get_buffer_status` and `proxy_get_header_map_size`. All return i32.
pub const HOST_FUNCTIONS: &[(&str, &str)] = &[
    ("proxy_log", "i32 i32 i32"),
    ("proxy_get_log_level", "i32"),
    ("proxy_get_current_time_nanoseconds", "i32"),
    ("proxy_set_tick_period_milliseconds", "i32"),
    ("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_get_header_map_pairs", "i32 i32 i32"),
    ("proxy_set_header_map_pairs", "i32 i32 i32"),
    ("proxy_get_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_replace_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_remove_header_map_value", "i32 i32 i32"),
    ("proxy_add_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_get_property", "i32 i32 i32 i32"),
    ("proxy_set_property", "i32 i32 i32 i32"),
    ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_register_shared_queue", "i32 i32 i32"),
    ("proxy_resolve_shared_queue", "i32 i32 i32 i32 i32"),
    ("proxy_dequeue_shared_queue", "i32 i32 i32"),
    ("proxy_enqueue_shared_queue", "i32 i32 i32"),
    ("proxy_continue_stream", "i32"),
    ("proxy_close_stream", "i32"),
    (
        "proxy_send_local_response",
        "i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_http_call", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    (
        "proxy_grpc_call",
        "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_grpc_stream", "i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    ("proxy_grpc_send", "i32 i32 i32 i32"),
    ("proxy_grpc_cancel", "i32"),
    ("proxy_grpc_close", "i32"),
    ("proxy_get_status", "i32 i32 i32"),
    ("proxy_set_effective_context", "i32"),
    ("proxy_call_foreign_function", "i32 i32 i32 i32 i32 i32"),
    ("proxy_done", ""),
    ("proxy_define_metric", "i32 i32 i32 i32"),
    ("proxy_get_metric", "i32 i32"),
    ("proxy_record_metric", "i32 i64"),
    ("proxy_increment_metric", "i32 i64"),
    ("proxy_get_buffer_status", "i32 i32 i32"),
    ("proxy_get_header_map_size", "i32 i32"),
];

/// Scratch area the tests write arguments to.
pub const ARGS: u32 = 1024;
/// Where host functions write returned pointers/sizes.
pub const RET_PTR: u32 = 512;
pub const RET_SIZE: u32 = 516;
/// First address of the guest's bump allocator.
pub const HEAP: u32 = 16 * 1024;

/// A guest with one page... two pages of memory, a bump allocator, `call_<host fn>`
/// wrappers for every host function, and `extra` (more WAT fields) appended.
pub fn shim_wat(extra: &str) -> String {
    let mut wat = String::from("(module\n");
    for (name, params) in HOST_FUNCTIONS {
        wat += &format!(
            "  (import \"env\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
        );
    }
    wat += &format!(
        "  (memory (export \"memory\") 2)\n  (global $bump (mut i32) (i32.const {HEAP}))\n  (func (export \"proxy_on_memory_allocate\") (param $n i32) (result i32) (local $p i32)\n    global.get $bump local.set $p\n    global.get $bump local.get $n i32.add global.set $bump\n    local.get $p)\n"
    );
    for (name, params) in HOST_FUNCTIONS {
        let n = params.split_whitespace().count();
        let gets: String = (0..n).map(|i| format!("local.get {i} ")).collect();
        wat += &format!(
            "  (func (export \"call_{name}\") (param {params}) (result i32) {gets}call ${name})\n"
        );
    }
    wat += extra;
    wat += ")\n";
    wat
}

pub fn module(extra: &str) -> Module {
    Module::from_bytes(shim_wat(extra).as_bytes()).expect("shim module loads")
}

/// A plugin of the shim guest (no callbacks beyond `extra`).
pub fn builder(module: &Module) -> PluginBuilder<'_> {
    Plugin::builder(module)
}

/// Writes `bytes` at `ptr` of worker 0 and returns (ptr, len) as call arguments.
pub fn put(plugin: &mut Plugin, ptr: u32, bytes: &[u8]) -> (i64, i64) {
    plugin.write_memory(0, ptr, bytes).unwrap();
    (i64::from(ptr), bytes.len() as i64)
}

/// Calls `call_<name>` on worker 0 in `context` and returns the status.
pub fn call(plugin: &mut Plugin, context: u32, name: &str, args: &[i64]) -> Status {
    let out = plugin
        .call_export(0, context, &format!("call_{name}"), args)
        .unwrap();
    Status::from_raw(out[0] as i32).unwrap_or_else(|| panic!("unknown status {}", out[0]))
}

pub fn read_u32(plugin: &mut Plugin, ptr: u32) -> u32 {
    u32::from_le_bytes(plugin.read_memory(0, ptr, 4).unwrap().try_into().unwrap())
}

pub fn read_u64(plugin: &mut Plugin, ptr: u32) -> u64 {
    u64::from_le_bytes(plugin.read_memory(0, ptr, 8).unwrap().try_into().unwrap())
}

/// The bytes a host function returned through (RET_PTR, RET_SIZE).
pub fn returned(plugin: &mut Plugin) -> Vec<u8> {
    let ptr = read_u32(plugin, RET_PTR);
    let len = read_u32(plugin, RET_SIZE);
    if ptr == 0 {
        assert_eq!(len, 0);
        return Vec::new();
    }
    plugin.read_memory(0, ptr, len).unwrap()
}

/// NUL-joined property path.
pub fn path(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}

/// proxy-wasm pairs encoding.
pub fn pairs(list: &[(&str, &str)]) -> Vec<u8> {
    proxy_wasm_host::envoy::serialize_pairs(list.iter().copied())
}

pub const OOB: i64 = 10_000_000;

/// Bytes as a WAT string literal body (`\xx` escapes).
pub fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}
