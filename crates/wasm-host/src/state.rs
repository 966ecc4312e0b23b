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
///
/// # Examples
///
/// The demo filter logs `configured` at info level in each VM; a plugin whose log level
/// is above that keeps none of it, as Envoy drops what is below its level:
///
/// ```
/// use proxy_wasm_host::{Level, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// assert_eq!(Level::from_raw(2), Some(Level::Info));
/// assert!(Level::Warn > Level::Info);
/// assert_eq!(Level::Critical.to_string(), "critical");
///
/// let plugin = Plugin::builder(&module).build()?;
/// // The configuration canary, worker 0 and the main thread's VM.
/// assert_eq!(plugin.logs_at(Level::Info), ["configured"; 3]);
/// let quiet = Plugin::builder(&module).log_level(Level::Warn).build()?;
/// assert!(quiet.logs().is_empty());
/// # Ok(())
/// # }
/// ```
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
    ///
    /// ```
    /// use proxy_wasm_host::Level;
    ///
    /// assert_eq!(Level::from_raw(0), Some(Level::Trace));
    /// assert_eq!(Level::from_raw(5), Some(Level::Critical));
    /// // `proxy_log` with any other level is `BadArgument`.
    /// assert_eq!(Level::from_raw(6), None);
    /// assert_eq!(Level::from_raw(-1), None);
    /// ```
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
///
/// # Examples
///
/// The demo filter logs `request` at info level on each request:
///
/// ```
/// use proxy_wasm_host::{Level, LogEntry, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let before = plugin.log_count();
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// let context_id = s.context_id().unwrap();
///
/// let logged = plugin.logs_since(before);
/// let expected = LogEntry { worker: 0, context_id, level: Level::Info, message: "request".into() };
/// assert_eq!(logged, [expected]);
/// assert_eq!(logged[0].to_string(), format!("[worker 0 ctx {context_id}] info: request"));
/// // `configured` came from the root contexts, the main thread's VM's among them.
/// let main = plugin.main_vm();
/// assert!(plugin.logs().iter().any(|l| l.worker == main && l.message == "configured"));
/// # Ok(())
/// # }
/// ```
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
///
/// # Examples
///
/// The demo filter defines the counter `demo_requests`:
///
/// ```
/// use proxy_wasm_host::{MetricKind, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let plugin = Plugin::builder(&module).build()?;
/// let kinds: Vec<MetricKind> = plugin.metrics().iter().map(|m| m.kind).collect();
/// assert_eq!(kinds, [MetricKind::Counter]);
/// # Ok(())
/// # }
/// ```
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
///
/// # Examples
///
/// The demo filter counts requests in `demo_requests`; every VM defines it, and they
/// share one metric, as the threads of one Envoy share stats:
///
/// ```
/// use proxy_wasm_host::{Metric, MetricKind, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").workers(2).build()?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
/// for worker in [0, 1, 1] {
///     plugin.stream(worker).request_headers(&get, true)?;
/// }
/// let requests = Metric {
///     name: "demo_requests".into(),
///     kind: MetricKind::Counter,
///     value: 3,
///     samples: Vec::new(),
/// };
/// assert_eq!(plugin.metrics(), [requests]);
/// # Ok(())
/// # }
/// ```
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
///
/// # Examples
///
/// The demo filter reads `xds.node.metadata.CLUSTER_ID`, which a bare Envoy does not have:
///
/// ```
/// use proxy_wasm_host::{Module, Plugin, Status};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").trace(true).build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// let context_id = s.context_id().unwrap();
///
/// let calls = plugin.host_calls();
/// let lookup = calls.iter().find(|c| c.function == "proxy_get_property").unwrap();
/// assert_eq!((lookup.worker, lookup.context_id), (0, context_id));
/// assert_eq!(lookup.detail, "xds.node.metadata.CLUSTER_ID -> NotFound");
/// assert_eq!(lookup.status, Some(Status::NotFound));
/// assert_eq!(lookup.args.len(), 4); // path pointer and size, return pointers
/// assert!(lookup.to_string().starts_with(&format!("[worker 0 ctx {context_id}] proxy_get_property(")));
/// assert!(lookup.to_string().ends_with("-> NotFound"));
/// # Ok(())
/// # }
/// ```
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
///
/// # Examples
///
/// The demo filter calls `GET /check` on cluster `authz` (timeout 500 ms) when a request
/// has `x-callout`, and passes the answer's `:status` upstream as `x-authz-status`:
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin =
///     Plugin::builder(&module).default_cluster("backend").cluster("authz").build()?;
/// let root_id = plugin.root_context_id(0);
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-callout", "1")], true)?;
/// assert!(!s.request_forwarded()); // paused until the answer
///
/// let call = s.http_callouts()[0].clone();
/// assert_eq!(call.token, 4); // Envoy's first
/// assert_eq!((call.worker, Some(call.context_id)), (0, s.context_id()));
/// assert_eq!(Some(call.root_id), root_id); // the answer goes to the root context
/// assert_eq!(call.upstream, "authz");
/// let request: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
/// assert_eq!(request, [(":method", "GET"), (":path", "/check"), (":authority", "authz")]);
/// assert!(call.body.is_empty() && call.trailers.is_empty());
/// assert_eq!((call.timeout, call.issued_at), (Duration::from_millis(500), Duration::ZERO));
/// assert_eq!(call.deadline(), Some(Duration::from_millis(500)));
/// let wire = call.wire_headers();
/// assert_eq!(wire[3..], [
///     ("x-envoy-internal".to_string(), "true".to_string()),
///     ("x-envoy-expected-rq-timeout-ms".into(), "500".into()),
/// ]);
///
/// s.respond_http_call(call.token, 200, &[], b"")?;
/// assert!(s.http_callouts()[0].answered);
/// assert_eq!(s.upstream_request_header("x-authz-status").as_deref(), Some("200"));
/// # Ok(())
/// # }
/// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use proxy_wasm_host::HttpCallout;
    ///
    /// let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    /// let call = HttpCallout {
    ///     token: 4,
    ///     worker: 0,
    ///     context_id: 2,
    ///     root_id: 1,
    ///     upstream: "authz".into(),
    ///     headers: vec![pair(":method", "GET"), pair(":path", "/check"), pair(":authority", "authz")],
    ///     body: Vec::new(),
    ///     trailers: Vec::new(),
    ///     timeout: Duration::ZERO,
    ///     issued_at: Duration::ZERO,
    ///     answered: false,
    /// };
    /// // No timeout: no x-envoy-expected-rq-timeout-ms.
    /// assert_eq!(call.wire_headers()[3..], [pair("x-envoy-internal", "true")]);
    /// let call = HttpCallout { timeout: Duration::from_millis(1500), ..call };
    /// assert_eq!(
    ///     call.wire_headers()[3..],
    ///     [pair("x-envoy-internal", "true"), pair("x-envoy-expected-rq-timeout-ms", "1500")]
    /// );
    /// assert_eq!(call.wire_headers()[..3], call.headers[..]);
    /// ```
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

    /// When the callout times out unless answered first, on the harness clock (`None`: it
    /// has no timeout, or it was answered, as [`GrpcCallout::deadline`] once a call ended).
    ///
    /// [`Plugin::advance`](crate::Plugin::advance) past it answers the callout as Envoy's
    /// router does, with a 504:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin =
    ///     Plugin::builder(&module).default_cluster("backend").cluster("authz").build()?;
    /// plugin.advance(Duration::from_millis(200))?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-callout", "1")], true)?;
    /// let call = s.http_callouts()[0].clone();
    /// assert_eq!(call.issued_at, Duration::from_millis(200));
    /// assert_eq!(call.deadline(), Some(Duration::from_millis(700))); // issued_at + 500 ms
    ///
    /// s.plugin().advance(Duration::from_millis(499))?;
    /// assert!(!s.request_forwarded());
    /// s.plugin().advance(Duration::from_millis(1))?;
    /// assert_eq!(s.plugin().elapsed(), Duration::from_millis(700));
    /// assert!(s.http_callouts()[0].answered);
    /// assert_eq!(s.upstream_request_header("x-authz-status").as_deref(), Some("504"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn deadline(&self) -> Option<Duration> {
        (!self.timeout.is_zero() && !self.answered).then(|| self.issued_at + self.timeout)
    }
}

/// A gRPC call (`proxy_grpc_call`) or stream (`proxy_grpc_stream`).
///
/// # Examples
///
/// The demo filter calls `demo.Checker/Check` on cluster `authz` (timeout 500 ms) when a
/// request has `x-grpc`, and resumes the request once the call closes:
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin =
///     Plugin::builder(&module).default_cluster("backend").cluster("authz").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-grpc", "1")], true)?;
/// let call = s.grpc_callouts()[0].clone();
/// assert_eq!(call.token, 5); // Envoy's first
/// assert_eq!(call.upstream, b"authz");
/// assert_eq!((call.service.as_str(), call.method.as_str()), ("demo.Checker", "Check"));
/// assert_eq!(call.timeout, Some(Duration::from_millis(500)));
/// assert!(call.initial_metadata.is_empty());
/// assert_eq!(call.messages, [Vec::<u8>::new()]); // the (empty) unary request
/// assert!(!call.streaming && !call.half_closed && !call.cancelled && !call.closed);
/// assert!(!call.ended && !s.request_forwarded());
///
/// s.plugin().grpc_close(call.token, 0, "")?;
/// assert!(s.grpc_callouts()[0].ended);
/// assert!(s.request_forwarded());
/// # Ok(())
/// # }
/// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin =
    ///     Plugin::builder(&module).default_cluster("backend").cluster("authz").build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-grpc", "1")], true)?;
    /// assert_eq!(s.grpc_callouts()[0].deadline(), Some(Duration::from_millis(500)));
    ///
    /// // Nobody answers: at the deadline the filter gets proxy_on_grpc_close (status 14).
    /// s.plugin().advance(Duration::from_millis(500))?;
    /// let call = s.grpc_callouts()[0].clone();
    /// assert!(call.ended);
    /// assert_eq!(call.deadline(), None); // it is over
    /// assert!(s.request_forwarded());
    /// let last = s.plugin().logs().last().map(|l| l.message.clone());
    /// assert_eq!(last.as_deref(), Some("grpc closed"));
    /// # Ok(())
    /// # }
    /// ```
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
///
/// # Examples
///
/// The demo filter answers a request with `x-deny` itself:
///
/// ```
/// use proxy_wasm_host::{LocalReply, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-deny", "1")], true)?;
/// let denied = LocalReply {
///     status: 403,
///     details: "demo_denied".into(),
///     body: b"denied".to_vec(),
///     headers: Vec::new(),
///     grpc_status: None,
/// };
/// assert_eq!(s.local_reply(), Some(denied));
/// assert!(!s.request_forwarded());
/// assert_eq!(s.client_response_status(), Some(403));
/// assert_eq!(s.client_response_body(), b"denied");
///
/// // A request that is not denied gets no local reply.
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// assert_eq!(s.local_reply(), None);
/// # Ok(())
/// # }
/// ```
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
///
/// # Examples
///
/// The demo filter adds `x-demo: yes`; a route on that header takes the request once it
/// is matched again:
///
/// ```
/// use proxy_wasm_host::{Module, Plugin, Route, RouteRematch};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .routes(vec![Route::new("demo").header("x-demo", "yes").cluster("demo-backend")])
///     .default_cluster("backend")
///     .build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// let rematch = RouteRematch {
///     callback: "proxy_on_request_headers".into(),
///     changed_headers: vec!["x-demo".into()],
///     previous_route: Some("default".into()),
///     route: Some("demo".into()),
///     cluster: Some("demo-backend".into()),
/// };
/// assert_eq!(s.route_rematches(), [rematch]);
/// assert_eq!(s.upstream_cluster().as_deref(), Some("demo-backend"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRematch {
    /// Callback after which the route was matched again.
    pub callback: String,
    /// Lower-cased names of the request headers the filter changed (empty for
    /// `clear_route_cache` alone).
    pub changed_headers: Vec<String>,
    /// Route chosen before.
    pub previous_route: Option<String>,
    /// Route chosen now (`None`: no route matched, and the router answers 404 NR).
    pub route: Option<String>,
    /// Cluster chosen now.
    pub cluster: Option<String>,
}

/// A guest trap, caught and handled following the plugin's fail strategy.
///
/// # Examples
///
/// The demo filter traps on a request with `x-trap`; under the default fail strategy
/// (fail closed) the stream gets Envoy's 503:
///
/// ```
/// use proxy_wasm_host::{Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-trap", "1")], true)?;
/// assert_eq!(s.client_response_status(), Some(503));
/// assert_eq!(s.local_reply().map(|r| r.details).as_deref(), Some("wasm_fail_stream"));
///
/// let failures = plugin.failures();
/// assert_eq!(failures.len(), 1);
/// assert_eq!(failures[0].worker, 0);
/// assert_eq!(failures[0].callback, "proxy_on_request_headers");
/// assert!(failures[0].message.contains("unreachable"), "{}", failures[0].message);
/// assert!(plugin.is_failed(0));
/// # Ok(())
/// # }
/// ```
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
