//! Load, configure and drive one plugin the way Envoy 1.40 does.
//!
//! * [`Module`]: a compiled proxy-wasm module. Compiled once per process for the same
//!   bytes (the one process-wide cache; it only memoizes compilation).
//! * [`Plugin`]: one plugin as one Envoy runs it: a configuration canary (a throw-away VM
//!   whose `proxy_on_configure` decides whether the configuration is accepted), the main
//!   thread's VM (root context, ticks, no streams) and N worker VMs, all sharing shared
//!   data, queues, metrics, logs and the clock. Each VM runs Envoy's lifecycle:
//!   `_initialize` (or `_start`), `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`,
//!   `proxy_on_configure`.
//! * [`Stream`]: one HTTP context on a chosen worker, driven like Envoy's filter chain
//!   drives it, with the headers Envoy's connection manager adds.
//!
//! Files: `engine` (wasmtime engine, [`Module`]), `vm` (VM lifecycle, canary,
//! reconfiguration, ticks, reloads), `flow` (what Envoy does around each stream callback),
//! `stream` ([`Stream`]), `callouts` (answering HTTP and gRPC callouts).
//!
//! ```
//! use proxy_wasm_host::{Connection, Module, Plugin, Proxy, Route, Upstream};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any proxy-wasm module; here a pass-through filter in WAT.
//! let module = Module::from_bytes(br#"(module
//!     (memory (export "memory") 1)
//!     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
//!     (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#)?;
//! let mut plugin = Plugin::builder(&module)
//!     .proxy(Proxy::new().metadata("CLUSTER_ID", "gke"))
//!     .plugin_config(br#"{}"#)
//!     .routes(vec![Route::new("gke").header("x-target", "gke").cluster("outbound|80|gke|echo")])
//!     .default_cluster("outbound|80||echo")
//!     .build()?;
//! assert!(plugin.configured());
//!
//! let mut s = plugin.stream(0).connection(Connection::mtls("spiffe://a", "spiffe://b"));
//! s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "echo")], true)?;
//! assert_eq!(s.upstream_cluster().as_deref(), Some("outbound|80||echo"));
//! s.respond(Upstream::new(200).address("10.0.0.1:8080").body(b"hi"))?;
//! s.complete()?;
//! assert_eq!(s.client_response_status(), Some(200));
//! assert_eq!(s.client_response_body(), b"hi");
//! assert_eq!(s.client_response_header("server").as_deref(), Some("envoy"));
//! # Ok(())
//! # }
//! ```

mod callouts;
mod engine;
mod flow;
mod stream;
mod vm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use engine::Module;
pub use stream::{Stream, StreamHandle};

use crate::envoy::{PluginIdentity, Proxy, Route, RouteTable};
use crate::error::{usage, Error, Result};
use crate::host::{Clock, PluginEnv, StreamState};
use crate::limits::{Limits, MAX_WORKERS};
use crate::state::{
    self, Failure, GrpcCallout, HostCall, HttpCallout, Level, LogEntry, Metric, Shared,
};
use vm::Vm;

/// What a filter callback told the proxy to do.
///
/// ```
/// use proxy_wasm_host::{Action, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("api").cluster("authz").build()?;
///
/// // A plain request: the demo filter marks it and lets it go on.
/// let mut s = plugin.stream(0);
/// assert_eq!(s.request_headers(&[(":method", "GET"), (":path", "/")], true)?, Action::Continue);
/// assert!(s.request_forwarded());
///
/// // With `x-callout` it waits for its callout's answer, which resumes it.
/// let mut s = plugin.stream(0);
/// let headers = [(":method", "GET"), (":path", "/"), ("x-callout", "1")];
/// assert_eq!(s.request_headers(&headers, true)?, Action::Pause);
/// assert!(!s.request_forwarded());
/// let token = s.http_callouts()[0].token;
/// s.respond_http_call(token, 200, &[], b"")?;
/// assert!(s.request_forwarded());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on with the next filter / forward.
    Continue,
    /// Stop here until `proxy_continue_stream` (or a local reply). A Pause from a headers
    /// callback holds the body and trailers too (Envoy's StopAllIterationAndWatermark).
    Pause,
}

impl Action {
    fn from_raw(raw: i32) -> Action {
        // Envoy: 0 Continue, 2 ContinueAndEndStream; 1, 3, 4 stop iteration.
        if raw == 0 || raw == 2 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// What happens to traffic when a VM fails while serving (a trap), as Envoy 1.40 does it
/// (measured; `tests/fixtures/fidelity/MEASURED.md`, gap 7). It does not apply to a
/// configuration the canary rejected: see [`ConfigDelivery`].
///
/// The demo filter traps on a request with `x-trap`. What that request and the next
/// one get under each strategy:
///
/// ```
/// use std::time::Duration;
/// use proxy_wasm_host::{FailStrategy, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let get = [(":method", "GET"), (":path", "/")];
/// let trap = [(":method", "GET"), (":path", "/"), ("x-trap", "1")];
/// for (strategy, trapping, next) in [
///     // (strategy, what the trapping request gets, what the next one gets)
///     (FailStrategy::FailClose, Some(503), Some(503)),
///     (FailStrategy::FailOpen, Some(503), None), // None: forwarded
///     (FailStrategy::FailOpenLegacy, None, None),
/// ] {
///     let mut plugin = Plugin::builder(&module).default_cluster("api").fail_strategy(strategy).build()?;
///     let mut s = plugin.stream(0);
///     s.request_headers(&trap, true)?;
///     assert_eq!(s.client_response_status(), trapping, "{strategy:?}");
///     assert_eq!(s.request_forwarded(), trapping.is_none());
///     let mut s = plugin.stream(0);
///     s.request_headers(&get, true)?;
///     assert_eq!(s.client_response_status(), next, "{strategy:?}");
///     assert!(!s.is_filtered()); // the dead VM no longer filters
///     assert!(plugin.is_failed(0));
///     assert_eq!(plugin.failures()[0].callback, "proxy_on_request_headers");
/// }
///
/// // FailReload: 503s without the guest until the backoff has passed, then a fresh VM.
/// let mut plugin = Plugin::builder(&module)
///     .default_cluster("api")
///     .fail_strategy(FailStrategy::FailReload)
///     .reload_backoff(Duration::from_secs(1))
///     .build()?;
/// plugin.stream(0).request_headers(&trap, true)?;
/// plugin.advance(Duration::from_millis(999))?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.client_response_status(), Some(503));
/// assert_eq!(plugin.reloads(), 0);
/// plugin.advance(Duration::from_millis(1))?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.upstream_request_header("x-demo").as_deref(), Some("yes"));
/// assert_eq!(plugin.reloads(), 1);
/// assert!(plugin.configured() && !plugin.is_failed(0));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailStrategy {
    /// `failure_policy: FAIL_CLOSED`: the trapping stream and every later one get a 503
    /// local reply (`wasm_fail_stream`); the VM stays dead.
    #[default]
    FailClose,
    /// `failure_policy: FAIL_OPEN` (what Istio 1.25+ sets for `failStrategy: FAIL_OPEN`):
    /// the trapping stream still gets the 503; later streams pass through unfiltered.
    FailOpen,
    /// The deprecated `fail_open: true` (what older Istio set for `FAIL_OPEN`): the
    /// trapping stream passes through unfiltered, and so do later ones.
    FailOpenLegacy,
    /// `failure_policy: FAIL_RELOAD`: the trapping stream gets the 503; a later stream
    /// gets a fresh VM once [`PluginBuilder::reload_backoff`] has passed since the trap;
    /// until then streams get the 503 without the guest.
    FailReload,
}

/// How the plugin configuration reaches Envoy; it decides what a configuration rejected
/// by the canary does (measured with Envoy 1.40, under every [`FailStrategy`]).
///
/// The demo filter refuses the configuration `reject`:
///
/// ```
/// use proxy_wasm_host::{response_flags, ConfigDelivery, Error, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let get = [(":method", "GET"), (":path", "/")];
///
/// // ECDS (the default): the plugin is built, and every stream gets Envoy's 500.
/// let mut plugin = Plugin::builder(&module).default_cluster("api").plugin_config(b"reject").build()?;
/// assert!(!plugin.config_accepted() && !plugin.configured());
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.client_response_status(), Some(500));
/// assert_eq!(s.response_flags(), response_flags::NO_FILTER_CONFIG_FOUND);
/// // Until an update is accepted.
/// assert!(plugin.reconfigure(b"{}")?);
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.upstream_request_header("x-demo").as_deref(), Some("yes"));
///
/// // A static bootstrap: Envoy would not start.
/// let built = Plugin::builder(&module)
///     .identity("demo", "demo_root", "demo_vm")
///     .plugin_config(b"reject")
///     .delivery(ConfigDelivery::Static)
///     .build();
/// assert!(matches!(built, Err(Error::ConfigRejected { ref plugin, .. }) if plugin == "demo"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConfigDelivery {
    /// ECDS, as Istio delivers a WasmPlugin: a rejected first configuration leaves the
    /// listener without a filter config, and every stream gets a 500 local reply (empty
    /// body, response flag NFCF, empty details; a gRPC request gets 200 with
    /// `grpc-status: 2`). A rejected update keeps the previous configuration.
    #[default]
    Ecds,
    /// A static bootstrap: a rejected configuration makes Envoy exit, so
    /// [`PluginBuilder::build`] returns [`Error::ConfigRejected`].
    Static,
}

/// Builds a [`Plugin`]; see [`Plugin::builder`].
///
/// Every setting has Envoy's (or Istio's) default; a test sets what its filter depends
/// on. The demo filter (`examples/filters/demo.wat`) as Istio would run it:
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use proxy_wasm_host::{
///     ConfigDelivery, FailStrategy, Level, Limits, Module, Plugin, Proxy, Route, Upstream,
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .proxy(Proxy::istio("gke"))
///     .identity("demo", "demo_root", "demo_vm")
///     .plugin_config(br#"{"mode": "strict"}"#)
///     .vm_config(b"{}")
///     .delivery(ConfigDelivery::Ecds)
///     .workers(2)
///     .fail_strategy(FailStrategy::FailReload)
///     .reload_backoff(Duration::from_secs(1))
///     .limits(Limits { ticks: 100, ..Limits::default() })
///     .routes(vec![Route::new("v2").header("x-version", "2").cluster("outbound|80|v2|api")])
///     .default_cluster("outbound|80||api")
///     .cluster("authz")
///     .hcm_headers(true)
///     .seed(7)
///     .start_time(UNIX_EPOCH + Duration::from_secs(951_782_400)) // 2000-02-29
///     .log_level(Level::Info)
///     .trace(false)
///     .build()?;
/// assert!(plugin.configured());
/// assert_eq!(plugin.workers(), 2);
///
/// let mut s = plugin.stream(1);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), ("x-version", "2")], true)?;
/// assert_eq!(s.upstream_cluster().as_deref(), Some("outbound|80|v2|api"));
/// assert_eq!(s.upstream_request_header("x-cluster").as_deref(), Some("gke"));
/// s.respond(Upstream::new(200))?;
/// // The connection manager's `date`, on the harness clock.
/// assert_eq!(s.client_response_header("date").as_deref(), Some("Tue, 29 Feb 2000 00:00:00 GMT"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PluginBuilder<'m> {
    module: &'m Module,
    proxy: Proxy,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    workers: usize,
    fail_strategy: FailStrategy,
    delivery: ConfigDelivery,
    reload_backoff: Duration,
    seed: u64,
    routes: Vec<Route>,
    default_cluster: Option<String>,
    clusters: BTreeSet<String>,
    hcm_headers: bool,
    trace: bool,
    log_level: Level,
    identity: PluginIdentity,
    start_time: SystemTime,
    limits: Limits,
}

impl<'m> PluginBuilder<'m> {
    /// The proxy the plugin runs in (default: [`Proxy::new`], a bare Envoy).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }
    /// Plugin configuration (`PLUGIN_CONFIGURATION`, read in `proxy_on_configure`), passed
    /// as-is: any bytes, JSON or not. Default: none, which the module sees as Envoy gives
    /// it: size 0, and an empty buffer (`Ok`, null pointer, length 0).
    pub fn plugin_config(mut self, config: &[u8]) -> Self {
        self.plugin_config = config.to_vec();
        self
    }
    /// VM configuration (`VM_CONFIGURATION`, read in `proxy_on_vm_start`).
    pub fn vm_config(mut self, config: &[u8]) -> Self {
        self.vm_config = config.to_vec();
        self
    }
    /// What the module may use: time per guest call, memory per VM, log entries kept
    /// per request (default: [`Limits::default`]). A call past its time or a VM past
    /// its memory traps, and the failure names the limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use proxy_wasm_host::{Error, Limits, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// // The demo filter ticks every second on the worker and on the main thread's VM.
    /// let mut plugin = Plugin::builder(&module).limits(Limits { ticks: 3, ..Limits::default() }).build()?;
    /// plugin.advance(Duration::from_secs(1))?; // 2 ticks
    /// let stopped = plugin.advance(Duration::from_secs(1)); // the 4th is one too many
    /// assert!(matches!(stopped, Err(Error::Limit(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Number of worker VMs (default 1, at most [`MAX_WORKERS`]); Envoy's `--concurrency`.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// What happens on a guest trap (default [`FailStrategy::FailClose`]).
    pub fn fail_strategy(mut self, strategy: FailStrategy) -> Self {
        self.fail_strategy = strategy;
        self
    }
    /// How the configuration is delivered (default [`ConfigDelivery::Ecds`]).
    pub fn delivery(mut self, delivery: ConfigDelivery) -> Self {
        self.delivery = delivery;
        self
    }
    /// Under [`FailStrategy::FailReload`], how long after a trap the next VM may be built
    /// (default 2 s; Envoy 1.40 backs off with jitter: measured 1.2-2.4 s).
    pub fn reload_backoff(mut self, backoff: Duration) -> Self {
        self.reload_backoff = backoff;
        self
    }
    /// Seed of the WASI random source and of generated request ids (default 0).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let request_id = |seed: u64| -> Result<Option<String>, Box<dyn std::error::Error>> {
    ///     let mut plugin = Plugin::builder(&module).default_cluster("api").seed(seed).build()?;
    ///     let mut s = plugin.stream(0);
    ///     s.request_headers(&[(":method", "GET"), (":path", "/")], true)?;
    ///     Ok(s.upstream_request_header("x-request-id"))
    /// };
    /// // The same seed gives the same run; another seed other ids.
    /// assert_eq!(request_id(1)?, request_id(1)?);
    /// assert_ne!(request_id(1)?, request_id(2)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The route table (ordered). Its clusters are known clusters (see
    /// [`PluginBuilder::cluster`]).
    pub fn routes(mut self, routes: Vec<Route>) -> Self {
        self.routes = routes;
        self
    }
    /// Cluster of the default route (used when no route matches); a known cluster.
    pub fn default_cluster(mut self, cluster: &str) -> Self {
        self.default_cluster = Some(cluster.to_owned());
        self
    }
    /// Declares a cluster Envoy knows besides the routes' ones, e.g. the target of the
    /// plugin's HTTP or gRPC callouts. A callout to a cluster nobody declared fails as in
    /// Envoy (`BadArgument` for `proxy_http_call`).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let callout = [(":method", "GET"), (":path", "/"), ("x-callout", "1")];
    ///
    /// // With `authz` declared, the demo filter's callout goes out and holds the request.
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").cluster("authz").build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&callout, true)?;
    /// assert!(!s.request_forwarded());
    /// assert_eq!(plugin.http_callouts().len(), 1);
    ///
    /// // Without it, `proxy_http_call` fails: the filter goes on as for a plain request.
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&callout, true)?;
    /// assert!(s.request_forwarded());
    /// assert_eq!(s.upstream_request_header("x-demo").as_deref(), Some("yes"));
    /// assert!(plugin.http_callouts().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.insert(name.to_owned());
        self
    }
    /// Whether Envoy's connection manager adds its headers (default true): before
    /// `proxy_on_request_headers` `:scheme`, `x-forwarded-proto` and `x-request-id` when
    /// absent; `x-envoy-upstream-service-time` on upstream responses; `date` and
    /// `server: envoy` for the client. Turn off to see the headers a test sent, plus only
    /// what the router adds (`x-envoy-expected-rq-timeout-ms` for a route's timeout).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, Upstream};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").hcm_headers(false).build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/")], true)?;
    /// // What the test sent, the filter's x-demo and the router's timeout header: no
    /// // `:scheme`, `x-forwarded-proto` or `x-request-id` from the connection manager.
    /// assert_eq!(
    ///     s.upstream_request_headers(),
    ///     Some(vec![
    ///         (":method".to_owned(), "GET".to_owned()),
    ///         (":path".to_owned(), "/".to_owned()),
    ///         ("x-demo".to_owned(), "yes".to_owned()),
    ///         ("x-envoy-expected-rq-timeout-ms".to_owned(), "15000".to_owned()),
    ///     ])
    /// );
    /// s.respond(Upstream::new(204))?;
    /// assert_eq!(s.client_response_header("server"), None);
    /// assert_eq!(s.client_response_header("date"), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn hcm_headers(mut self, on: bool) -> Self {
        self.hcm_headers = on;
        self
    }
    /// Record every host call (see [`Plugin::host_calls`]).
    pub fn trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }
    /// Log level the host reports and filters by (default `Trace`: everything is kept).
    ///
    /// ```
    /// use proxy_wasm_host::{Level, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// // The demo filter logs `configured` and `request` at info: dropped at warn.
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").log_level(Level::Warn).build()?;
    /// plugin.stream(0).request_headers(&[(":method", "GET"), (":path", "/")], true)?;
    /// assert_eq!(plugin.log_count(), 0);
    /// assert_eq!(plugin.metric("demo_requests"), Some(1)); // the filter did run
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_level(mut self, level: Level) -> Self {
        self.log_level = level;
        self
    }
    /// Plugin name, root id and vm id (`plugin_name`, `plugin_root_id`, `plugin_vm_id`;
    /// the vm id also scopes shared queues).
    pub fn identity(mut self, name: &str, root_id: &str, vm_id: &str) -> Self {
        self.identity = PluginIdentity {
            name: name.to_owned(),
            root_id: root_id.to_owned(),
            vm_id: vm_id.to_owned(),
        };
        self
    }
    /// Wall-clock time at which the harness clock starts (default 2026-01-01T00:00:00Z).
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start_time = time;
        self
    }

    /// Runs the configuration canary, then (when it accepted the configuration) starts
    /// the main thread's VM and every worker VM.
    ///
    /// Guest traps and a failing `proxy_on_configure` are not errors (see
    /// [`Plugin::configured`], [`Plugin::failures`]), except a configuration the canary
    /// rejects under [`ConfigDelivery::Static`], which is [`Error::ConfigRejected`].
    pub fn build(self) -> Result<Plugin> {
        if self.workers == 0 {
            return Err(usage("a plugin needs at least one worker"));
        }
        if self.workers > MAX_WORKERS {
            return Err(usage(format!(
                "{} workers: a plugin runs at most {MAX_WORKERS} worker VMs",
                self.workers
            )));
        }
        let start = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| usage("the start time is before the UNIX epoch"))?;
        let mut clusters = self.clusters;
        clusters.extend(
            self.routes
                .iter()
                .filter_map(|r| r.cluster_name().map(str::to_owned)),
        );
        clusters.extend(self.default_cluster.iter().cloned());
        let env = Arc::new(PluginEnv {
            proxy: self.proxy,
            identity: self.identity,
            routes: RouteTable {
                routes: self.routes,
                default_cluster: self.default_cluster,
            },
            clusters,
            log_level: self.log_level,
            trace: self.trace,
            vm_config: self.vm_config,
            seed: self.seed,
            limits: self.limits,
        });
        static PLUGINS: AtomicU64 = AtomicU64::new(0);
        let mut plugin = Plugin {
            id: PLUGINS.fetch_add(1, Ordering::Relaxed),
            module: self.module.clone(),
            env,
            shared: Arc::default(),
            clock: Clock::new(start),
            workers: self.workers,
            vms: Vec::new(),
            fail_strategy: self.fail_strategy,
            delivery: self.delivery,
            reload_backoff: self.reload_backoff,
            hcm_headers: self.hcm_headers,
            plugin_config: self.plugin_config,
            accepted: false,
            reloads: 0,
            orphans: HashMap::new(),
            generations: 0,
            request_ids: 0,
            ticks: 0,
        };
        let config = plugin.plugin_config.clone();
        let logs_before = plugin.log_count();
        if plugin.run_canary(&config)? {
            plugin.accepted = true;
            plugin.start_thread_vms()?;
        } else if plugin.delivery == ConfigDelivery::Static {
            return Err(Error::ConfigRejected {
                plugin: plugin.env.identity.name.clone(),
                reasons: plugin.canary_reasons(logs_before),
            });
        }
        Ok(plugin)
    }
}

/// One plugin in one Envoy: a configuration canary, the main thread's VM and N worker VMs
/// of one module sharing shared data, queues, metrics, logs and the clock. No global
/// state: every test holds its own.
///
/// The demo filter (`examples/filters/demo.wat`) on two workers: requests in flight
/// together, an HTTP callout answered and one timed out by the clock, a gRPC call
/// answered and closed, ticks, and what the filter left behind read back.
///
/// ```
/// use std::time::Duration;
/// use proxy_wasm_host::{Level, Module, Plugin, Proxy, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .proxy(Proxy::istio("gke"))
///     .default_cluster("backend")
///     .cluster("authz") // the filter's callouts go there
///     .workers(2)
///     .build()?;
/// assert!(plugin.config_accepted() && plugin.configured());
/// // VMs 0 and 1 are the workers, 2 the main thread's, 3 the configuration canary.
/// assert_eq!((plugin.workers(), plugin.main_vm(), plugin.canary_vm()), (2, 2, 3));
/// assert_eq!(plugin.vm_name(1), "worker 1");
/// assert_eq!(plugin.vm_name(plugin.main_vm()), "the main thread's VM");
/// assert_eq!(plugin.vm_name(3), "the configuration canary");
/// assert_eq!(plugin.root_context_id(0), Some(1));
/// assert!(!plugin.is_failed(0));
/// // Each of the four ran proxy_on_configure, which logs `configured`.
/// assert_eq!(plugin.logs_at(Level::Info), ["configured"; 4]);
///
/// // A plain request: marked, with shared data set by the test and the node's metadata.
/// plugin.set_shared_data("greeting", b"hello");
/// assert_eq!(plugin.shared_data("greeting").as_deref(), Some(&b"hello"[..]));
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.upstream_request_header("x-greeting").as_deref(), Some("hello"));
/// assert_eq!(s.upstream_request_header("x-cluster").as_deref(), Some("gke"));
/// s.respond(Upstream::new(200))?;
/// assert_eq!(s.client_response_header("x-demo-response").as_deref(), Some("yes"));
///
/// // Two requests in flight on two workers, each paused on its callout to authz.
/// let callout = [(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-callout", "1")];
/// let mut a = plugin.new_stream(0);
/// let mut b = plugin.new_stream(1);
/// plugin.on(&mut a)?.request_headers(&callout, true)?;
/// plugin.on(&mut b)?.request_headers(&callout, true)?;
/// let calls = plugin.http_callouts();
/// assert_eq!(calls.len(), 2);
/// assert_eq!((calls[0].upstream.as_str(), calls[0].timeout), ("authz", Duration::from_millis(500)));
/// assert!(!plugin.on(&mut a)?.request_forwarded());
///
/// // authz answers the first; nobody answers the second, and at its 500 ms deadline
/// // Envoy answers it 504.
/// plugin.respond_http_call(calls[0].token, 200, &[("x-authz", "ok")], b"")?;
/// plugin.advance(Duration::from_millis(500))?;
/// assert_eq!(plugin.elapsed(), Duration::from_millis(500));
/// assert_eq!(plugin.on(&mut a)?.upstream_request_header("x-authz-status").as_deref(), Some("200"));
/// assert_eq!(plugin.on(&mut b)?.upstream_request_header("x-authz-status").as_deref(), Some("504"));
///
/// // A gRPC call to authz: metadata, a message, trailers, then the close resumes the request.
/// let grpc = [(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-grpc", "1")];
/// let mut g = plugin.new_stream(0);
/// plugin.on(&mut g)?.request_headers(&grpc, true)?;
/// let call = plugin.grpc_callouts()[0].clone();
/// assert_eq!((call.service.as_str(), call.method.as_str()), ("demo.Checker", "Check"));
/// plugin.grpc_initial_metadata(call.token, &[("x-served-by", "authz")])?;
/// plugin.grpc_receive(call.token, b"\x08\x01")?;
/// plugin.grpc_trailing_metadata(call.token, &[("grpc-status", "0")])?;
/// assert!(!plugin.on(&mut g)?.request_forwarded());
/// plugin.grpc_close(call.token, 0, "")?;
/// assert!(plugin.on(&mut g)?.request_forwarded());
/// assert_eq!(plugin.logs().last().map(|l| l.message.as_str()), Some("grpc closed"));
///
/// // The clock reaches 1000 ms: one tick on every root context (workers, main thread).
/// let before = plugin.log_count();
/// plugin.advance(Duration::from_millis(500))?;
/// let ticks: Vec<(usize, String)> =
///     plugin.logs_since(before).into_iter().map(|l| (l.worker, l.message)).collect();
/// assert_eq!(ticks, [(0, "tick".into()), (1, "tick".into()), (2, "tick".into())]);
///
/// // Four requests ran the filter: counted, and enqueued on `requests`.
/// assert_eq!(plugin.metric("demo_requests"), Some(4));
/// assert_eq!(plugin.metrics().len(), 1);
/// assert_eq!(plugin.queue("requests"), Some(vec![b"request".to_vec(); 4]));
/// assert!(plugin.failures().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Plugin {
    /// Unique in the process: a [`StreamHandle`] names the plugin that opened it.
    id: u64,
    module: Module,
    env: Arc<PluginEnv>,
    shared: Arc<Mutex<Shared>>,
    clock: Clock,
    workers: usize,
    /// Worker VMs `0..workers`, then the main thread's VM; empty while no configuration
    /// was ever accepted. A slot is `None` only while its VM is being driven.
    vms: Vec<Option<Vm>>,
    fail_strategy: FailStrategy,
    delivery: ConfigDelivery,
    reload_backoff: Duration,
    hcm_headers: bool,
    /// The configuration in force (or the rejected first one).
    plugin_config: Vec<u8>,
    /// Whether the canary accepted a configuration (the one in force).
    accepted: bool,
    reloads: usize,
    /// Streams no longer in a VM (finished, failed, or never filtered), by (worker, id,
    /// VM generation).
    orphans: HashMap<(usize, u32, u64), StreamState>,
    generations: u64,
    request_ids: u64,
    /// `proxy_on_tick` calls fired so far, against [`Limits::ticks`].
    ticks: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("module", &self.module)
            .field("workers", &self.workers)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Starts building a plugin of `module`.
    pub fn builder(module: &Module) -> PluginBuilder<'_> {
        PluginBuilder {
            module,
            proxy: Proxy::new(),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            workers: 1,
            fail_strategy: FailStrategy::default(),
            delivery: ConfigDelivery::default(),
            reload_backoff: Duration::from_secs(2),
            seed: 0,
            routes: Vec::new(),
            default_cluster: None,
            clusters: BTreeSet::new(),
            hcm_headers: true,
            trace: false,
            log_level: Level::Trace,
            identity: PluginIdentity::default(),
            start_time: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            limits: Limits::default(),
        }
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The number the main thread's VM goes by in [`LogEntry::worker`],
    /// [`Failure::worker`] and the other records, and in [`Plugin::root_context_id`]
    /// (= [`Plugin::workers`]). It runs a root context and ticks, never streams.
    pub fn main_vm(&self) -> usize {
        self.workers
    }

    /// VM `worker` as a person reads it: `worker N`, `the main thread's VM` or
    /// `the configuration canary`.
    pub fn vm_name(&self, worker: usize) -> String {
        if worker == self.canary_vm() {
            "the configuration canary".to_owned()
        } else if worker == self.main_vm() {
            "the main thread's VM".to_owned()
        } else {
            format!("worker {worker}")
        }
    }

    /// The number the configuration canaries go by in the records (= `workers + 1`).
    /// Each configuration gets a fresh canary VM, dropped after `proxy_on_configure`
    /// without `proxy_on_done`/`proxy_on_delete`, as in Envoy.
    pub fn canary_vm(&self) -> usize {
        self.workers + 1
    }

    /// Whether the configuration in force was accepted (by the canary) and every worker
    /// and the main thread's VM run the filter with it: no thread-local
    /// `proxy_on_configure` failed and no VM is dead.
    pub fn configured(&self) -> bool {
        self.accepted
            && !self.vms.is_empty()
            && self
                .vms
                .iter()
                .flatten()
                .all(|vm| vm.configured && !vm.failed)
    }

    /// Whether Envoy accepted a configuration: the canary's `proxy_on_configure` returned
    /// true for the first configuration or a later [`Plugin::reconfigure`]. When it is
    /// false, under [`ConfigDelivery::Ecds`], every stream gets Envoy's 500 NFCF reply.
    pub fn config_accepted(&self) -> bool {
        self.accepted
    }

    /// Root context id of a worker's VM (or of the main thread's, [`Plugin::main_vm`]).
    pub fn root_context_id(&self, worker: usize) -> Option<u32> {
        self.vm(worker).map(|vm| vm.root_id)
    }

    /// Whether a worker's VM is dead (it trapped and was not reloaded).
    pub fn is_failed(&self, worker: usize) -> bool {
        self.vm(worker).is_some_and(|vm| vm.failed)
    }

    /// How many VMs were replaced under [`FailStrategy::FailReload`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use proxy_wasm_host::{FailStrategy, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module)
    ///     .default_cluster("api")
    ///     .fail_strategy(FailStrategy::FailReload)
    ///     .build()?;
    /// let trap = [(":method", "GET"), (":path", "/"), ("x-trap", "1")];
    /// plugin.stream(0).request_headers(&trap, true)?; // kills worker 0's VM
    /// assert!(plugin.is_failed(0));
    /// plugin.advance(Duration::from_secs(2))?; // the default backoff
    /// assert_eq!(plugin.reloads(), 0); // a VM is replaced when a stream needs it
    /// plugin.stream(0).request_headers(&trap, true)?; // a fresh VM, killed again
    /// assert_eq!(plugin.reloads(), 1);
    /// assert!(plugin.is_failed(0));
    /// plugin.advance(Duration::from_secs(2))?;
    /// plugin.stream(0).request_headers(&[(":method", "GET"), (":path", "/")], true)?;
    /// assert_eq!(plugin.reloads(), 2);
    /// assert!(!plugin.is_failed(0));
    /// assert_eq!(plugin.failures().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reloads(&self) -> usize {
        self.reloads
    }

    /// Time since the plugin was built, on the harness clock.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Opens a stream (HTTP context) on `worker`. Nothing runs until the first
    /// `request_headers`. It borrows the plugin while it lives; for streams in flight
    /// together see [`Plugin::new_stream`].
    pub fn stream(&mut self, worker: usize) -> Stream<'_> {
        Stream::new(self, worker)
    }

    /// Opens a stream on `worker` that does not borrow the plugin: drive it with
    /// [`Plugin::on`], in any order with other streams, ticks ([`Plugin::advance`]),
    /// callout answers and config pushes. Nothing runs until its first `request_headers`.
    pub fn new_stream(&self, worker: usize) -> StreamHandle {
        StreamHandle::new(self.id, worker)
    }

    /// Drives (or reads) a stream opened with [`Plugin::new_stream`]. A usage error when
    /// the handle is another plugin's.
    ///
    /// ```
    /// use proxy_wasm_host::{Error, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").build()?;
    /// let mut other = Plugin::builder(&module).default_cluster("api").build()?;
    /// let mut s = plugin.new_stream(0);
    /// assert!(matches!(other.on(&mut s), Err(Error::Usage(_))));
    /// plugin.on(&mut s)?.request_headers(&[(":method", "GET"), (":path", "/")], true)?;
    /// assert!(plugin.on(&mut s)?.request_forwarded());
    /// # Ok(())
    /// # }
    /// ```
    pub fn on<'a>(&'a mut self, handle: &'a mut StreamHandle) -> Result<Stream<'a>> {
        if handle.plugin != self.id {
            return Err(usage("the stream was opened on another plugin"));
        }
        Ok(Stream::of(self, handle))
    }

    // --- direct access, for ABI tests and debugging ------------------------------------

    /// The size of a VM's linear memory in bytes (`None` without a VM or an exported
    /// memory).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let plugin = Plugin::builder(&module).build()?;
    /// assert_eq!(plugin.memory_bytes(0), Some(65_536)); // the demo filter's one page
    /// assert_eq!(plugin.memory_bytes(plugin.main_vm()), Some(65_536));
    /// assert_eq!(plugin.memory_bytes(plugin.canary_vm()), None); // dropped after configuring
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_bytes(&self, worker: usize) -> Option<u64> {
        let vm = self.vm(worker)?;
        let memory = vm.store.data().memory?;
        Some(memory.data_size(&vm.store) as u64)
    }

    /// Copies guest memory of a VM (`None` when out of bounds).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).build()?;
    /// // The demo filter keeps the header names it looks for at fixed addresses.
    /// assert_eq!(plugin.read_memory(0, 240, 6).as_deref(), Some(&b"x-deny"[..]));
    /// assert_eq!(plugin.read_memory(0, 65_530, 10), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_memory(&mut self, worker: usize, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let vm = self.vm(worker)?;
        let memory = vm.store.data().memory?;
        let start = ptr as usize;
        memory
            .data(&vm.store)
            .get(start..start.checked_add(len as usize)?)
            .map(<[u8]>::to_vec)
    }

    /// Writes guest memory of a VM.
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").build()?;
    /// // Rename the header the demo filter denies on, in worker 0's memory.
    /// plugin.write_memory(0, 240, b"x-nope")?;
    /// assert_eq!(plugin.read_memory(0, 240, 6).as_deref(), Some(&b"x-nope"[..]));
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), ("x-nope", "1")], true)?;
    /// assert_eq!(s.client_response_status(), Some(403));
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), ("x-deny", "1")], true)?;
    /// assert!(s.request_forwarded());
    ///
    /// assert!(plugin.write_memory(0, 65_535, b"xy").is_err()); // out of bounds
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_memory(&mut self, worker: usize, ptr: u32, bytes: &[u8]) -> Result<()> {
        let vm = self
            .vms
            .get_mut(worker)
            .and_then(Option::as_mut)
            .ok_or_else(|| usage(format!("no VM {worker}")))?;
        let memory = vm
            .store
            .data()
            .memory
            .ok_or_else(|| usage("the module exports no memory"))?;
        let start = ptr as usize;
        memory
            .data_mut(&mut vm.store)
            .get_mut(start..start.saturating_add(bytes.len()))
            .ok_or_else(|| usage("out of bounds"))?
            .copy_from_slice(bytes);
        Ok(())
    }

    // --- what a test reads -----------------------------------------------------------

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        state::lock(&self.shared)
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.shared().logs.clone()
    }

    /// Log entries from the `start`-th on (cheap polling of a long run).
    pub fn logs_since(&self, start: usize) -> Vec<LogEntry> {
        self.shared()
            .logs
            .get(start..)
            .map(<[LogEntry]>::to_vec)
            .unwrap_or_default()
    }

    /// How many log entries there are.
    pub fn log_count(&self) -> usize {
        self.shared().logs.len()
    }

    /// Messages logged at exactly `level`.
    pub fn logs_at(&self, level: Level) -> Vec<String> {
        self.shared()
            .logs
            .iter()
            .filter(|l| l.level == level)
            .map(|l| l.message.clone())
            .collect()
    }

    /// Value of the metric called `name` (any kind).
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.shared()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every metric defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.shared().metrics.clone()
    }

    /// Shared data value of `key`.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared().shared_data.get(key).map(|(v, _)| v.clone())
    }

    /// Sets shared data from the test (as another plugin would).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let mut shared = self.shared();
        shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
        let cas = shared.next_cas;
        shared
            .shared_data
            .insert(key.to_owned(), (value.to_vec(), cas));
    }

    /// Items waiting in the queue `name` (of this plugin's vm id).
    pub fn queue(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        self.shared()
            .queues
            .iter()
            .find(|q| q.name == name && q.vm_id == self.env.identity.vm_id)
            .map(|q| q.items.iter().cloned().collect())
    }

    /// The host-call trace (empty unless built with `.trace(true)`).
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, Status};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("api").trace(true).build()?;
    /// let configuring = plugin.host_calls().len();
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), ("x-deny", "1")], true)?;
    /// let context = s.context_id().ok_or("no context")?;
    /// let calls = plugin.host_calls().split_off(configuring);
    /// let reply = calls
    ///     .iter()
    ///     .find(|c| c.function == "proxy_send_local_response")
    ///     .ok_or("no local reply")?;
    /// assert_eq!(reply.args[0], 403);
    /// assert_eq!(reply.status, Some(Status::Ok));
    /// assert_eq!(reply.context_id, context);
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_calls(&self) -> Vec<HostCall> {
        self.shared().host_calls.clone()
    }

    /// HTTP callouts made so far.
    pub fn http_callouts(&self) -> Vec<HttpCallout> {
        self.shared().http_callouts.clone()
    }

    /// gRPC calls and streams opened so far.
    pub fn grpc_callouts(&self) -> Vec<GrpcCallout> {
        self.shared().grpc_callouts.clone()
    }

    /// Guest traps caught so far.
    pub fn failures(&self) -> Vec<Failure> {
        self.shared().failures.clone()
    }

    /// Filter state set with `proxy_set_property` on a VM's root context.
    ///
    /// A module that sets `mode` to `strict` on its root context when configured (the
    /// demo filter sets no property):
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///   (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
    ///   (memory (export "memory") 1)
    ///   (data (i32.const 100) "mode")
    ///   (data (i32.const 110) "strict")
    ///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
    ///   (func (export "proxy_on_configure") (param i32 i32) (result i32)
    ///     (drop (call $set (i32.const 100) (i32.const 4) (i32.const 110) (i32.const 6)))
    ///     i32.const 1))"#)?;
    /// let plugin = Plugin::builder(&module).build()?;
    /// let state = plugin.root_filter_state(0);
    /// assert_eq!(state.get("mode").map(Vec::as_slice), Some(&b"strict"[..]));
    /// assert_eq!(plugin.root_filter_state(plugin.main_vm()).len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn root_filter_state(&self, worker: usize) -> BTreeMap<String, Vec<u8>> {
        self.vm(worker)
            .and_then(|vm| vm.store.data().roots.get(&vm.root_id))
            .map(|r| r.filter_state.clone())
            .unwrap_or_default()
    }

    /// What the last canary logged at error level or above, and its trap, if any.
    fn canary_reasons(&self, logs_before: usize) -> Vec<String> {
        let canary = self.canary_vm();
        let shared = self.shared();
        let mut reasons: Vec<String> = shared
            .logs
            .iter()
            .skip(logs_before)
            .filter(|l| l.worker == canary && l.level >= Level::Error)
            .map(|l| l.message.clone())
            .collect();
        reasons.extend(
            shared
                .failures
                .iter()
                .filter(|f| f.worker == canary)
                .map(|f| {
                    format!(
                        "{} trapped: {}",
                        f.callback,
                        f.message.lines().next().unwrap_or("")
                    )
                }),
        );
        reasons
    }
}

fn eos(end_of_stream: bool) -> i32 {
    i32::from(end_of_stream)
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}
