//! Per-VM host state: what lives in each VM's `Store<HostState>` and what the host
//! functions read and write through `Caller`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::envoy::{
    Connection, HeaderMap, MatchedRoute, Metadata, PluginIdentity, Proxy, RouteTable, StreamFacts,
    Upstream,
};
use crate::limits::{Limits, MemoryLimit};
use crate::state::{self, Level, LocalReply, RouteRematch, Shared};

/// Read-only facts about a plugin, shared by its VMs.
#[derive(Debug)]
pub(crate) struct PluginEnv {
    pub proxy: Proxy,
    pub identity: PluginIdentity,
    pub routes: RouteTable,
    /// Every cluster Envoy knows: the routes' clusters, the default one and those the
    /// plugin declared. Callouts to any other are refused, as in Envoy.
    pub clusters: BTreeSet<String>,
    pub log_level: Level,
    pub trace: bool,
    pub vm_config: Vec<u8>,
    pub seed: u64,
    pub limits: Limits,
}

/// Log entries kept and not kept, against [`Limits::logs`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogCount {
    pub kept: usize,
    pub dropped: usize,
}

/// The harness clock: a fixed start plus time the test advanced; read by
/// `proxy_get_current_time_nanoseconds` and the WASI clocks.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    start: Duration,
    elapsed_nanos: Arc<AtomicU64>,
}

impl Clock {
    pub fn new(start: Duration) -> Clock {
        Clock {
            start,
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Time since the plugin was built.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Relaxed))
    }

    /// Wall-clock time since the UNIX epoch.
    pub fn now(&self) -> Duration {
        self.start + self.elapsed()
    }

    pub fn set_elapsed(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.store(nanos, Ordering::Relaxed);
    }
}

impl HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Clock::now(self)
    }
}

/// Where the monotonic clock stands when the plugin is built: Envoy answers WASI's
/// `clock_time_get(MONOTONIC)` with its steady clock (proxy-wasm-cpp-host's
/// `wasi_unstable_clock_time_get` -> `getMonotonicTimeNanoseconds`), time since the
/// machine booted on Linux, so never 0 — and the Go runtime stops at start with `fatal
/// error: nanotime returning zero` when it is (found with the Go SDK corpus).
pub(crate) const MONOTONIC_ORIGIN: Duration = Duration::from_secs(3600);

/// Monotonic view of the same clock: [`MONOTONIC_ORIGIN`] plus the time the test advanced.
pub(crate) struct MonotonicClock(pub Clock);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        u64::try_from((MONOTONIC_ORIGIN + self.0.elapsed()).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A root (plugin) context.
#[derive(Debug, Default)]
pub(crate) struct RootState {
    pub tick_period: Duration,
    pub next_tick: Duration,
    pub filter_state: BTreeMap<String, Vec<u8>>,
}

/// Which side of the stream is being processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Response,
    Log,
}

/// One HTTP stream (context) as the host sees it.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub root_id: u32,
    pub phase: Phase,
    pub connection: Connection,
    /// Dynamic metadata other filters set (`metadata.*`).
    pub metadata: Metadata,
    pub request_headers: Option<HeaderMap>,
    pub request_body: Option<Vec<u8>>,
    pub request_trailers: Option<HeaderMap>,
    pub response_headers: Option<HeaderMap>,
    pub response_body: Option<Vec<u8>>,
    pub response_trailers: Option<HeaderMap>,

    pub route: Option<MatchedRoute>,
    /// The proxy has a route table (routes or a default cluster): when no route matches,
    /// the router answers 404 NR instead of forwarding.
    pub route_table: bool,
    /// Route as it was when the running callback started (`xds.route_name` inside it).
    pub route_snapshot: Option<MatchedRoute>,
    pub route_cache_cleared: bool,
    pub changed_headers: Vec<String>,
    pub rematches: Vec<RouteRematch>,

    pub request_paused: bool,
    /// `on_request_headers` returned Pause and nothing resumed it yet: Envoy turns a 0.2.x
    /// Pause on headers into StopAllIterationAndWatermark, so body and trailers are only
    /// buffered (no callback) until `proxy_continue_stream`.
    pub request_held: bool,
    /// Body or trailers arrived while held: deliver them on resume.
    pub request_held_data: bool,
    /// The client ended the request (end of stream on headers or body, or trailers).
    pub request_ended: bool,
    /// The request is gRPC (`content-type: application/grpc...`): local replies are
    /// trailers-only gRPC replies.
    pub grpc: bool,
    /// Envoy's connection manager adds its headers (see `PluginBuilder::hcm_headers`).
    pub hcm: bool,
    pub request_forwarded: bool,
    pub upstream_request_headers: Option<HeaderMap>,
    pub upstream_request_body: Vec<u8>,
    pub upstream_request_trailers: Option<HeaderMap>,
    pub upstream: Option<Upstream>,
    pub response_paused: bool,
    /// As `request_held`, for `on_response_headers`.
    pub response_held: bool,
    pub response_held_data: bool,
    pub response_ended: bool,
    pub response_forwarded: bool,
    pub client_response_headers: Option<HeaderMap>,
    pub client_response_body: Vec<u8>,
    pub client_response_trailers: Option<HeaderMap>,
    pub response_code: Option<u32>,
    pub response_flags: u64,

    pub local_reply: Option<LocalReply>,
    pub local_reply_pending: bool,
    pub continue_request: bool,
    pub continue_response: bool,
    pub close_requested: bool,
    /// The reset `close_requested` asked for happened: the stream ended at once.
    pub reset: bool,
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub awaiting_done: bool,
    pub done_called: bool,
    pub finished: bool,
    /// `false` once the filter is out of the way (fail-open), or never was.
    pub filtered: bool,
    /// Log entries of this request, against [`Limits::logs`].
    pub logs: LogCount,
}

impl StreamState {
    pub fn new(root_id: u32, connection: Connection, filtered: bool) -> StreamState {
        StreamState {
            root_id,
            phase: Phase::Request,
            connection,
            metadata: Metadata::default(),
            request_headers: None,
            request_body: None,
            request_trailers: None,
            response_headers: None,
            response_body: None,
            response_trailers: None,
            route: None,
            route_table: false,
            route_snapshot: None,
            route_cache_cleared: false,
            changed_headers: Vec::new(),
            rematches: Vec::new(),
            request_paused: false,
            request_held: false,
            request_held_data: false,
            request_ended: false,
            grpc: false,
            hcm: false,
            request_forwarded: false,
            upstream_request_headers: None,
            upstream_request_body: Vec::new(),
            upstream_request_trailers: None,
            upstream: None,
            response_paused: false,
            response_held: false,
            response_held_data: false,
            response_ended: false,
            response_forwarded: false,
            client_response_headers: None,
            client_response_body: Vec::new(),
            client_response_trailers: None,
            response_code: None,
            response_flags: 0,
            local_reply: None,
            local_reply_pending: false,
            continue_request: false,
            continue_response: false,
            close_requested: false,
            reset: false,
            filter_state: BTreeMap::new(),
            awaiting_done: false,
            done_called: false,
            finished: false,
            filtered,
            logs: LogCount::default(),
        }
    }

    pub fn facts(&self) -> StreamFacts<'_> {
        StreamFacts {
            connection: &self.connection,
            metadata: &self.metadata,
            route: self.route_snapshot.as_ref(),
            request_headers: self.request_headers.as_ref(),
            response: self.response_code.map(|c| (c, self.response_flags)),
            upstream: self
                .upstream
                .as_ref()
                .filter(|_| self.response_headers.is_some()),
            details: match &self.local_reply {
                _ if self.reset => Some("wasm_close_stream"),
                Some(reply) => Some(reply.details.as_str()),
                None => self
                    .upstream
                    .as_ref()
                    .filter(|_| self.response_headers.is_some())
                    .map(|_| "via_upstream"),
            },
        }
    }

    /// Any work left for the harness after a callback.
    pub fn has_pending(&self) -> bool {
        self.route_cache_cleared
            || self.local_reply_pending
            || self.continue_request
            || self.continue_response
            || (self.awaiting_done && self.done_called)
    }
}

/// Data of an HTTP or gRPC callout response while its callback runs.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub trailers: HeaderMap,
    pub status: (u32, String),
}

/// State of one VM (a worker's, the main thread's or the configuration canary).
pub(crate) struct HostState {
    pub wasi: WasiP1Ctx,
    pub shared: Arc<Mutex<Shared>>,
    pub env: Arc<PluginEnv>,
    pub clock: Clock,
    pub worker: usize,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    /// Plugin configuration, readable while `proxy_on_configure` runs.
    pub configuring: Option<Vec<u8>>,
    pub active_context: u32,
    pub roots: BTreeMap<u32, RootState>,
    pub streams: HashMap<u32, StreamState>,
    pub call: Option<CallResponse>,
    /// gRPC calls to an unknown cluster given as a `GrpcService`: Envoy answers them with
    /// `proxy_on_grpc_close(root, token, 14)` once the running callback returns.
    pub pending_grpc_close: Vec<(u32, u32)>,
    pub next_context_id: u32,
    /// Trace detail of the running host call.
    pub detail: String,
    /// Exported functions by name (for `Plugin::call_export`).
    pub instance_exports: HashMap<String, wasmtime::Func>,
    /// The VM's linear memory limit, as the store's limiter.
    pub memory_limit: MemoryLimit,
    /// Log entries of the running guest call in a root context.
    pub call_logs: LogCount,
}

impl HostState {
    pub fn new(
        wasi: WasiP1Ctx,
        shared: Arc<Mutex<Shared>>,
        env: Arc<PluginEnv>,
        clock: Clock,
        worker: usize,
    ) -> HostState {
        HostState {
            wasi,
            shared,
            clock,
            worker,
            memory: None,
            alloc: None,
            configuring: None,
            active_context: 0,
            roots: BTreeMap::new(),
            streams: HashMap::new(),
            call: None,
            pending_grpc_close: Vec::new(),
            next_context_id: 1,
            detail: String::new(),
            instance_exports: HashMap::new(),
            memory_limit: MemoryLimit {
                bytes: env.limits.memory,
            },
            call_logs: LogCount::default(),
            env,
        }
    }

    /// Allocates a context id the way Envoy's proxy-wasm host does: a per-VM counter that
    /// starts at 1 and skips ids in use.
    pub fn alloc_context_id(&mut self) -> u32 {
        loop {
            let id = self.next_context_id;
            self.next_context_id = self.next_context_id.wrapping_add(1);
            if id != 0 && !self.roots.contains_key(&id) && !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        state::lock(&self.shared)
    }

    /// The stream of the effective context, if it is a stream.
    pub fn stream(&self) -> Option<&StreamState> {
        self.streams.get(&self.active_context)
    }

    pub fn stream_mut(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.active_context)
    }

    /// Root context owning the effective context.
    pub fn active_root(&self) -> Option<u32> {
        if self.roots.contains_key(&self.active_context) {
            Some(self.active_context)
        } else {
            self.stream().map(|s| s.root_id)
        }
    }

    /// Records a trace detail for the running host call (only when tracing).
    pub fn note(&mut self, detail: impl FnOnce() -> String) {
        if self.env.trace {
            self.detail = detail();
        }
    }
}
