//! The proxy-wasm ABI 0.2.1 host functions, one module per ABI area
//! (<https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1>).
//!
//! Every host function is a plain Rust function returning `HostResult`: `Ok(())` or
//! `Err(HostError::Status(..))` hands a [`Status`] back to the guest, `Err(HostError::Trap(..))`
//! traps the guest. Bad guest pointers give `InvalidMemoryAccess`, as the spec says (the Rust
//! SDK then panics, which traps, as in Envoy).

use wasmtime::{Caller, Linker};

use crate::host::HostState;
use crate::state::HostCall;

/// Registers `$func` (a Rust fn of the same name taking `&mut Caller` and the i32/i64 args)
/// as `env.$func`, recording it in the trace.
macro_rules! link {
    ($linker:expr, $func:ident ( $($arg:ident : $ty:ty),* )) => {
        $linker
            .func_wrap(
                "env",
                stringify!($func),
                |mut caller: wasmtime::Caller<'_, $crate::host::HostState>, $($arg: $ty),*|
                 -> wasmtime::Result<i32> {
                    let result = $func(&mut caller, $($arg),*);
                    $crate::abi::finish(&mut caller, stringify!($func), &[$(i64::from($arg)),*], result)
                },
            )
            .map_err($crate::abi::to_anyhow)?;
    };
}

pub(crate) mod buffers;
pub(crate) mod callouts;
pub(crate) mod foreign;
pub(crate) mod headers;
pub(crate) mod http;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod properties;
pub(crate) mod queues;
pub(crate) mod shared_data;
pub(crate) mod time;
pub(crate) mod wasi;

/// `proxy_status_t`.
///
/// # Examples
///
/// What the demo filter's `proxy_get_shared_data("greeting")` got, before and after the
/// test set the key, read from the trace:
///
/// ```
/// use proxy_wasm_host::{Module, Plugin, Status};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").trace(true).build()?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
/// plugin.stream(0).request_headers(&get, true)?;
/// plugin.set_shared_data("greeting", b"hello");
/// plugin.stream(0).request_headers(&get, true)?;
///
/// let statuses: Vec<Option<Status>> = plugin
///     .host_calls()
///     .into_iter()
///     .filter(|c| c.function == "proxy_get_shared_data")
///     .map(|c| c.status)
///     .collect();
/// assert_eq!(statuses, [Some(Status::NotFound), Some(Status::Ok)]);
/// // The guest sees the number.
/// assert_eq!(Status::NotFound as u32, 1);
/// assert_eq!(Status::from_raw(1), Some(Status::NotFound));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// `OK`
    Ok = 0,
    /// `NOT_FOUND`
    NotFound = 1,
    /// `BAD_ARGUMENT`
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE`
    SerializationFailure = 3,
    /// `PARSE_FAILURE`
    ParseFailure = 4,
    /// `INVALID_MEMORY_ACCESS`
    InvalidMemoryAccess = 6,
    /// `EMPTY`
    Empty = 7,
    /// `CAS_MISMATCH`
    CasMismatch = 8,
    /// `INTERNAL_FAILURE`
    InternalFailure = 10,
    /// `UNIMPLEMENTED`
    Unimplemented = 12,
}

impl Status {
    /// The status for a raw ABI value.
    ///
    /// ```
    /// use proxy_wasm_host::Status;
    ///
    /// assert_eq!(Status::from_raw(0), Some(Status::Ok));
    /// assert_eq!(Status::from_raw(8), Some(Status::CasMismatch));
    /// // 5, 9 and 11 are not statuses of ABI 0.2.1.
    /// assert_eq!(Status::from_raw(5), None);
    /// assert_eq!(Status::from_raw(-1), None);
    /// ```
    pub fn from_raw(raw: i32) -> Option<Status> {
        Some(match raw {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            6 => Status::InvalidMemoryAccess,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            10 => Status::InternalFailure,
            12 => Status::Unimplemented,
            _ => return None,
        })
    }
}

/// Outcome of a host function that did not succeed.
#[derive(Debug)]
pub(crate) enum HostError {
    /// Return this status to the guest.
    Status(Status),
    /// Trap the guest.
    Trap(anyhow::Error),
}

impl From<Status> for HostError {
    fn from(status: Status) -> HostError {
        HostError::Status(status)
    }
}

pub(crate) type HostResult<T = ()> = Result<T, HostError>;

/// The 37 host functions the proxy-wasm Rust SDK 0.2.5 imports (`src/hostcalls.rs`).
pub const SDK_HOST_FUNCTIONS: [&str; 37] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// Host functions of ABI 0.2.1 the SDK does not import but the spec (and Envoy) provide.
pub const EXTRA_HOST_FUNCTIONS: [&str; 2] =
    ["proxy_get_buffer_status", "proxy_get_header_map_size"];

/// Adds WASI preview 1 and every proxy-wasm host function to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |s: &mut HostState| &mut s.wasi)
        .map_err(to_anyhow)?;
    wasi::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    time::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    shared_data::add_to_linker(linker)?;
    queues::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    callouts::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    foreign::add_to_linker(linker)?;
    Ok(())
}

/// Turns a host function's result into what wasmtime expects, recording the call in the
/// trace when the plugin traces.
pub(crate) fn finish(
    caller: &mut Caller<'_, HostState>,
    function: &'static str,
    args: &[i64],
    result: HostResult,
) -> wasmtime::Result<i32> {
    let data = caller.data_mut();
    if data.env.trace {
        let status = match &result {
            Ok(()) => Some(Status::Ok),
            Err(HostError::Status(s)) => Some(*s),
            Err(HostError::Trap(_)) => None,
        };
        let call = HostCall {
            worker: data.worker,
            context_id: data.active_context,
            function,
            args: args.to_vec(),
            detail: std::mem::take(&mut data.detail),
            status,
        };
        data.shared().host_calls.push(call);
    }
    match result {
        Ok(()) => Ok(Status::Ok as i32),
        Err(HostError::Status(s)) => Ok(s as i32),
        Err(HostError::Trap(e)) => Err(to_wasmtime(e.context(format!("host function {function}")))),
    }
}

/// `wasmtime::Error` -> `anyhow::Error`, keeping the chain.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}

/// `anyhow::Error` -> `wasmtime::Error`, keeping the chain.
pub(crate) fn to_wasmtime(e: anyhow::Error) -> wasmtime::Error {
    wasmtime::Error::from_boxed(e.into())
}

/// Reads a property path / key argument: NUL-separated segments.
pub(crate) fn split_path(raw: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts
}
