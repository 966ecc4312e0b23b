//! What a test can look at after driving a plugin.
//!
//! Modelled on the `proxytest` emulator of tetratelabs/proxy-wasm-go-sdk: per-area state
//! (logs, metrics, shared data, queues, callouts, host-call trace) that the host functions
//! fill in and a test reads afterwards through [`crate::Plugin`] and [`crate::Stream`].
//!
//! Everything here belongs to one plugin: its VMs (the configuration canary, the main
//! thread's, the workers') share it (as the threads of one Envoy share stats, shared data
//! and shared queues); two plugins never do.
//!
//! A `worker` field names the VM: `0..workers` are the worker VMs,
//! [`Plugin::main_vm`](crate::Plugin::main_vm) (= `workers`) the main thread's and
//! [`Plugin::canary_vm`](crate::Plugin::canary_vm) (= `workers + 1`) the configuration
//! canaries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::abi::Status;

/// A proxy-wasm log level (`proxy_log_level_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE` = 0
    Trace = 0,
    /// `DEBUG` = 1
    Debug = 1,
    /// `INFO` = 2
    Info = 2,
    /// `WARN` = 3
    Warn = 3,
    /// `ERROR` = 4
    Error = 4,
    /// `CRITICAL` = 5
    Critical = 5,
}

impl Level {
    /// The level for a raw ABI value, `None` when unknown.
    pub fn from_raw(raw: i32) -> Option<Level> {
        Some(match raw {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            4 => Level::Error,
            5 => Level::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        };
        f.write_str(name)
    }
}

/// One log message written by the guest (`proxy_log`, or one WASI `fd_write` to stdout or
/// stderr, as Envoy logs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The VM that wrote it (see the module docs for the numbering).
    pub worker: usize,
    /// Context that was active when it was written.
    pub context_id: u32,
    /// Its level (stdout is logged at `Info`, stderr at `Error`, as the spec says).
    pub level: Level,
    /// The message, UTF-8 (invalid bytes replaced).
    pub message: String,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[worker {} ctx {}] {}: {}",
            self.worker, self.context_id, self.level, self.message
        )
    }
}

/// Kind of a metric (`proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `COUNTER` = 0
    Counter,
    /// `GAUGE` = 1
    Gauge,
    /// `HISTOGRAM` = 2
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_raw(raw: i32) -> Option<MetricKind> {
        Some(match raw {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// A metric defined by the guest with `proxy_define_metric`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Name as the guest defined it (Envoy shows it as `wasmcustom.<name>`).
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Current value (counters and gauges; for histograms the last recorded value).
    pub value: u64,
    /// Every value recorded into a histogram, in order.
    pub samples: Vec<u64>,
}

/// One vm->host call, recorded when the plugin was built with `.trace(true)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCall {
    /// VM that made the call.
    pub worker: usize,
    /// Effective context at the time of the call.
    pub context_id: u32,
    /// Host function name, e.g. `proxy_get_property`.
    pub function: &'static str,
    /// Raw arguments as passed by the guest.
    pub args: Vec<i64>,
    /// What the host understood, e.g. the property path or header name (may be empty).
    pub detail: String,
    /// The status returned, or `None` when the call trapped.
    pub status: Option<Status>,
}

impl fmt::Display for HostCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[worker {} ctx {}] {}(",
            self.worker, self.context_id, self.function
        )?;
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        f.write_str(")")?;
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        match self.status {
            Some(s) => write!(f, " -> {s:?}"),
            None => f.write_str(" -> trap"),
        }
    }
}

/// An HTTP callout made with `proxy_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCallout {
    /// Token returned to the guest (even, from 4, as Envoy's); answer it with
    /// [`crate::Plugin::respond_http_call`].
    pub token: u32,
    /// VM that made the call.
    pub worker: usize,
    /// Context that made the call.
    pub context_id: u32,
    /// Its root context, which receives `proxy_on_http_call_response` (Envoy 1.40 makes
    /// every callout on the root context).
    pub root_id: u32,
    /// Upstream cluster name.
    pub upstream: String,
    /// Request headers (pseudo-headers included).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Vec<(String, String)>,
    /// Timeout the guest asked for (0: none, as Envoy's router reads a zero timeout).
    pub timeout: Duration,
    /// When it was made, on the harness clock ([`crate::Plugin::elapsed`]): unanswered at
    /// `issued_at + timeout`, [`crate::Plugin::advance`] times it out as Envoy does.
    pub issued_at: Duration,
    /// Whether a response has been delivered (or the callout failed or timed out).
    pub answered: bool,
}

impl HttpCallout {
    /// The request as Envoy's async client sends it: the guest's headers, then
    /// `x-envoy-internal: true` and, for a timeout, `x-envoy-expected-rq-timeout-ms`
    /// (measured with Envoy 1.40: the Go SDK corpus's `callout` filter).
    pub fn wire_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        headers.push(("x-envoy-internal".to_owned(), "true".to_owned()));
        if !self.timeout.is_zero() {
            headers.push((
                "x-envoy-expected-rq-timeout-ms".to_owned(),
                self.timeout.as_millis().to_string(),
            ));
        }
        headers
    }

    /// When an unanswered callout times out, on the harness clock (`None`: no timeout).
    pub fn deadline(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then(|| self.issued_at + self.timeout)
    }
}

/// A gRPC call (`proxy_grpc_call`) or stream (`proxy_grpc_stream`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCallout {
    /// Token returned to the guest (odd, from 5, as Envoy's).
    pub token: u32,
    /// VM that made the call.
    pub worker: usize,
    /// Context that made the call.
    pub context_id: u32,
    /// Its root context, which receives the `proxy_on_grpc_*` callbacks.
    pub root_id: u32,
    /// Upstream: the raw bytes the guest passed (a cluster name or a serialized GrpcService).
    pub upstream: Vec<u8>,
    /// gRPC service name.
    pub service: String,
    /// gRPC method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: Vec<(String, String)>,
    /// Messages sent: the unary request, or each `proxy_grpc_send` on a stream.
    pub messages: Vec<Vec<u8>>,
    /// Timeout (unary calls only).
    pub timeout: Option<Duration>,
    /// `true` for `proxy_grpc_stream`.
    pub streaming: bool,
    /// `proxy_grpc_send` with `end_stream` was seen.
    pub half_closed: bool,
    /// `proxy_grpc_cancel` was called.
    pub cancelled: bool,
    /// `proxy_grpc_close` was called.
    pub closed: bool,
    /// When the call was made, on the harness clock: with a timeout, an unanswered call
    /// times out at `issued_at + timeout` ([`GrpcCallout::deadline`]).
    pub issued_at: Duration,
    /// `proxy_on_grpc_close` was delivered (the call is over).
    pub ended: bool,
}

impl GrpcCallout {
    /// When the call times out unless it ended before, on the harness clock: Envoy then
    /// delivers `proxy_on_grpc_close` with status 14 (UNAVAILABLE) and
    /// `proxy_get_status` message [`GRPC_TIMEOUT_MESSAGE`] (measured in Envoy 1.36.4,
    /// 1.39.3 and 1.40.0). `None` for streams, a zero timeout (measured: never times out)
    /// and calls the guest cancelled or closed.
    pub fn deadline(&self) -> Option<Duration> {
        if self.ended || self.cancelled || self.closed {
            return None;
        }
        self.timeout
            .filter(|t| !t.is_zero())
            .map(|t| self.issued_at + t)
    }
}

/// What `proxy_get_status` says in `proxy_on_grpc_close` for a gRPC call that timed out
/// (Envoy 1.36-1.40, measured; the status is 14).
pub const GRPC_TIMEOUT_MESSAGE: &str = "upstream request timeout{response_timeout}";

/// A local reply sent with `proxy_send_local_response`, or by Envoy itself (a failed VM:
/// 503 `wasm_fail_stream`; no filter config: 500 NFCF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u32,
    /// Status code details as Envoy's access log shows them (`%RESPONSE_CODE_DETAILS%`:
    /// whitespace replaced by `_`; empty for NFCF).
    pub details: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Extra headers the filter asked for, in its order.
    pub headers: Vec<(String, String)>,
    /// gRPC status, when the filter gave one (`-1` in the ABI means none).
    pub grpc_status: Option<i32>,
}

/// A route re-match after the filter changed request headers (or called `clear_route_cache`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRematch {
    /// Callback after which the route was matched again.
    pub callback: String,
    /// Lower-cased names of the request headers the filter changed (empty for
    /// `clear_route_cache` alone).
    pub changed_headers: Vec<String>,
    /// Route chosen before.
    pub previous_route: Option<String>,
    /// Route chosen now (`None`: no route matched, Envoy answers 404 NR).
    pub route: Option<String>,
    /// Cluster chosen now.
    pub cluster: Option<String>,
}

/// A guest trap, caught and handled following the plugin's fail strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// VM that failed.
    pub worker: usize,
    /// Callback that trapped, e.g. `proxy_on_request_headers`.
    pub callback: String,
    /// The error (trap message and wasm backtrace).
    pub message: String,
}

/// A shared queue (`proxy_register_shared_queue`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    /// (worker, root context) that registered it last: `proxy_on_queue_ready` goes there.
    pub owner: (usize, u32),
    pub items: VecDeque<Vec<u8>>,
}

/// State shared by the VMs of one plugin (canaries, main thread, workers).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub logs: Vec<LogEntry>,
    pub metrics: Vec<Metric>,
    pub metric_ids: HashMap<(String, u8), u32>,
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub queues: Vec<Queue>,
    /// Queue notifications to deliver once the running callback returns.
    pub queue_ready: VecDeque<(usize, u32, u32)>,
    pub host_calls: Vec<HostCall>,
    pub http_callouts: Vec<HttpCallout>,
    pub grpc_callouts: Vec<GrpcCallout>,
    pub next_http_token: u32,
    pub next_grpc_token: u32,
    pub failures: Vec<Failure>,
}

impl Shared {
    pub fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.metrics.get_mut(index)
    }

    pub fn queue_mut(&mut self, id: u32) -> Option<&mut Queue> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.queues.get_mut(index)
    }

    /// The next HTTP callout token: even, from 4 (as Envoy 1.40's first).
    pub fn http_token(&mut self) -> u32 {
        self.next_http_token = self.next_http_token.max(2).wrapping_add(2);
        self.next_http_token
    }

    /// The next gRPC callout token: odd, from 5 (as Envoy 1.40's first).
    pub fn grpc_token(&mut self) -> u32 {
        self.next_grpc_token = self.next_grpc_token.max(3).wrapping_add(2);
        self.next_grpc_token
    }
}

/// Lock shared state, ignoring poisoning (a panicking test thread must not hide state).
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}
