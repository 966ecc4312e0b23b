//! Load, configure and drive one plugin the way Envoy does.
//!
//! * [`Module`]: a compiled proxy-wasm module. Compiled once per process for the same
//!   bytes (the one process-wide cache; it only memoizes compilation).
//! * [`Plugin`]: one plugin = N worker VMs sharing shared data, queues, metrics, logs and
//!   the clock. Each VM runs Envoy's lifecycle: `_initialize` (or `_start`),
//!   `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`.
//! * [`Stream`]: one HTTP context on a chosen worker.
//!
//! ```
//! use proxy_wasm_host::{Connection, Direction, Module, Plugin, Proxy, Route, Upstream};
//!
//! # fn main() -> anyhow::Result<()> {
//! // Any proxy-wasm module; here a pass-through filter in WAT.
//! let module = Module::from_bytes(br#"(module
//!     (memory (export "memory") 1)
//!     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
//!     (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#)?;
//! let mut plugin = Plugin::builder(&module)
//!     .proxy(Proxy::istio("gke").network("vpc01").direction(Direction::Outbound))
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
//! # Ok(())
//! # }
//! ```

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _};
use wasmtime::{
    Config, Engine, Func, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig,
    Store, TypedFunc, Val, ValType, WasmParams, WasmResults,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, WasiCtxBuilder};

use crate::abi::{self, to_anyhow};
use crate::envoy::{
    Connection, HeaderMap, MatchedRoute, PluginIdentity, Proxy, Route, RouteTable, Upstream,
};
use crate::host::{
    CallResponse, Clock, HostState, MonotonicClock, Phase, PluginEnv, RootState, StreamState,
};
use crate::state::{
    self, Failure, GrpcCallout, HostCall, HttpCallout, Level, LocalReply, LogEntry, Metric,
    RouteRematch, Shared,
};

/// What a filter callback told the proxy to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on with the next filter / forward.
    Continue,
    /// Stop here until `proxy_continue_stream` (or a local reply).
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

/// What happens to traffic when the plugin fails (Istio `WasmPlugin.failStrategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailStrategy {
    /// The failing stream gets a 503 local reply; the VM stays dead, so do later streams.
    #[default]
    FailClose,
    /// Traffic passes through unfiltered.
    FailOpen,
    /// The failing stream gets a 503; the next stream gets a fresh VM.
    FailReload,
}

// ---------------------------------------------------------------------------------------
// Engine and module cache
// ---------------------------------------------------------------------------------------

/// Whether the process-wide engine uses wasmtime's pooling allocator: yes unless
/// `HYBRIDMESH_POOLING=0`. Measured on the SDK probe filter:
/// a fresh plugin costs ~23 µs pooled vs ~32 µs on demand; requests/s are the same.
fn pooling() -> bool {
    std::env::var("HYBRIDMESH_POOLING").map_or(true, |v| v != "0")
}

fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    // Wasm backtraces are on by default: a trap is reported with its guest frames.
    let mut config = Config::new();
    if pooling() {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(1000)
            .total_tables(1000)
            .total_core_instances(1000);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config)
        .map_err(to_anyhow)
        .context("failed to create the wasmtime engine")?;
    Ok(ENGINE.get_or_init(|| engine))
}

fn linker() -> anyhow::Result<&'static Linker<HostState>> {
    static LINKER: OnceLock<Linker<HostState>> = OnceLock::new();
    if let Some(linker) = LINKER.get() {
        return Ok(linker);
    }
    let mut linker = Linker::new(engine()?);
    abi::add_to_linker(&mut linker).context("failed to define the host functions")?;
    Ok(LINKER.get_or_init(|| linker))
}

/// A compiled proxy-wasm module, ready to instantiate cheaply. Cloning is cheap.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    name: String,
    pre: InstancePre<HostState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Module {
    /// Loads a `.wasm` (or `.wat`) file. The same path with the same content is compiled
    /// once per process.
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Module> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        Module::load(path.display().to_string(), &bytes)
    }

    /// Loads a module from bytes (binary or WAT text), compiled once per process per content.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Module> {
        Module::load("<bytes>".to_owned(), bytes)
    }

    /// Where the module came from (a path or `<bytes>`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn load(name: String, bytes: &[u8]) -> anyhow::Result<Module> {
        /// (name, content hash, length) -> compiled module.
        type Cache = Mutex<HashMap<(String, u64, usize), Module>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = (name.clone(), hasher.finish(), bytes.len());
        let cache = CACHE.get_or_init(Mutex::default);
        if let Some(module) = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(module.clone());
        }
        let module = Module::compile(name, bytes)?;
        cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, module.clone());
        Ok(module)
    }

    fn compile(name: String, bytes: &[u8]) -> anyhow::Result<Module> {
        let engine = engine()?;
        let module = wasmtime::Module::new(engine, bytes)
            .map_err(to_anyhow)
            .with_context(|| format!("failed to compile {name}"))?;
        let linker = linker()?;
        let mut store = Store::new(engine, scratch_state()?);
        let missing: Vec<String> = module
            .imports()
            .filter(|import| linker.get_by_import(&mut store, import).is_none())
            .map(|import| {
                format!(
                    "module imports {}.{}, which this host does not provide",
                    import.module(),
                    import.name()
                )
            })
            .collect();
        if !missing.is_empty() {
            bail!("{name}: {}", missing.join("; "));
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(to_anyhow)
            .with_context(|| format!("{name}: imports do not match the host's signatures"))?;
        Ok(Module {
            inner: Arc::new(ModuleInner { name, pre }),
        })
    }
}

/// A throw-away host state, to resolve imports against the linker.
fn scratch_state() -> anyhow::Result<HostState> {
    let env = Arc::new(PluginEnv {
        proxy: Proxy::default(),
        identity: PluginIdentity::default(),
        routes: RouteTable::default(),
        log_level: Level::Trace,
        trace: false,
        vm_config: Vec::new(),
        seed: 0,
    });
    let clock = Clock::new(Duration::ZERO);
    let pipes = (MemoryOutputPipe::new(1), MemoryOutputPipe::new(1));
    let wasi = WasiCtxBuilder::new().build_p1();
    Ok(HostState::new(wasi, pipes, Arc::default(), env, clock, 0))
}

// ---------------------------------------------------------------------------------------
// Worker VMs
// ---------------------------------------------------------------------------------------

type F2<R> = TypedFunc<(i32, i32), R>;
type F3<R> = TypedFunc<(i32, i32, i32), R>;
type F5<R> = TypedFunc<(i32, i32, i32, i32, i32), R>;

/// The callbacks a VM exports (all optional, as the spec says).
#[derive(Default)]
struct Exports {
    initialize: Option<TypedFunc<(), ()>>,
    start: Option<TypedFunc<(), ()>>,
    on_context_create: Option<F2<()>>,
    on_vm_start: Option<F2<i32>>,
    on_configure: Option<F2<i32>>,
    on_tick: Option<TypedFunc<i32, ()>>,
    on_queue_ready: Option<F2<()>>,
    on_request_headers: Option<F3<i32>>,
    on_request_body: Option<F3<i32>>,
    on_request_trailers: Option<F2<i32>>,
    on_response_headers: Option<F3<i32>>,
    on_response_body: Option<F3<i32>>,
    on_response_trailers: Option<F2<i32>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    on_http_call_response: Option<F5<()>>,
    on_grpc_receive_initial_metadata: Option<F3<()>>,
    on_grpc_receive: Option<F3<()>>,
    on_grpc_receive_trailing_metadata: Option<F3<()>>,
    on_grpc_close: Option<F3<()>>,
}

struct Vm {
    store: Store<HostState>,
    exports: Exports,
    root_id: u32,
    failed: bool,
    configured: bool,
    generation: u64,
}

fn deterministic_bytes(seed: u64, len: usize) -> Vec<u8> {
    // splitmix64
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Outcome of one guest call.
enum Called<R> {
    Returned(R),
    Missing,
    Trapped,
}

// ---------------------------------------------------------------------------------------
// Plugin
// ---------------------------------------------------------------------------------------

/// Builds a [`Plugin`]; see [`Plugin::builder`].
#[derive(Debug, Clone)]
pub struct PluginBuilder<'m> {
    module: &'m Module,
    proxy: Proxy,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    workers: usize,
    fail_strategy: FailStrategy,
    seed: u64,
    routes: Vec<Route>,
    default_cluster: Option<String>,
    trace: bool,
    log_level: Level,
    identity: PluginIdentity,
    start_time: SystemTime,
}

impl<'m> PluginBuilder<'m> {
    /// The proxy the plugin runs in (default: `Proxy::istio("Kubernetes")`).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }
    /// Plugin configuration (`PLUGIN_CONFIGURATION`, read in `proxy_on_configure`).
    pub fn plugin_config(mut self, config: &[u8]) -> Self {
        self.plugin_config = config.to_vec();
        self
    }
    /// VM configuration (`VM_CONFIGURATION`, read in `proxy_on_vm_start`).
    pub fn vm_config(mut self, config: &[u8]) -> Self {
        self.vm_config = config.to_vec();
        self
    }
    /// Number of worker VMs (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// What happens on a guest trap (default [`FailStrategy::FailClose`]).
    pub fn fail_strategy(mut self, strategy: FailStrategy) -> Self {
        self.fail_strategy = strategy;
        self
    }
    /// Seed of the WASI random source (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The route table (ordered).
    pub fn routes(mut self, routes: Vec<Route>) -> Self {
        self.routes = routes;
        self
    }
    /// Cluster of the default route (used when no route matches).
    pub fn default_cluster(mut self, cluster: &str) -> Self {
        self.default_cluster = Some(cluster.to_owned());
        self
    }
    /// Record every host call (see [`Plugin::host_calls`]).
    pub fn trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }
    /// Log level the host reports and filters by (default `Trace`: everything is kept).
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

    /// Instantiates and starts every worker VM. Guest traps and a failing
    /// `proxy_on_configure` are not errors (see [`Plugin::configured`],
    /// [`Plugin::failures`]); host-side problems are.
    pub fn build(self) -> anyhow::Result<Plugin> {
        ensure!(self.workers > 0, "a plugin needs at least one worker");
        let start = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .context("start time is before the UNIX epoch")?;
        let env = Arc::new(PluginEnv {
            proxy: self.proxy,
            identity: self.identity,
            routes: RouteTable {
                routes: self.routes,
                default_cluster: self.default_cluster,
            },
            log_level: self.log_level,
            trace: self.trace,
            vm_config: self.vm_config,
            seed: self.seed,
        });
        let mut plugin = Plugin {
            module: self.module.clone(),
            env,
            shared: Arc::default(),
            clock: Clock::new(start),
            vms: Vec::with_capacity(self.workers),
            fail_strategy: self.fail_strategy,
            plugin_config: self.plugin_config,
            reloads: 0,
            orphans: HashMap::new(),
            generations: 0,
        };
        for worker in 0..self.workers {
            let vm = plugin.start_vm(worker)?;
            plugin.vms.push(Some(vm));
        }
        Ok(plugin)
    }
}

/// One plugin: N worker VMs of one module sharing shared data, queues, metrics, logs and
/// the clock. No global state: every test holds its own.
pub struct Plugin {
    module: Module,
    env: Arc<PluginEnv>,
    shared: Arc<Mutex<Shared>>,
    clock: Clock,
    /// Worker VMs; a slot is `None` only while its VM is being driven.
    vms: Vec<Option<Vm>>,
    fail_strategy: FailStrategy,
    plugin_config: Vec<u8>,
    reloads: usize,
    /// Streams no longer in a VM (finished, failed, or never filtered), by (worker, id).
    orphans: HashMap<(usize, u32, u64), StreamState>,
    generations: u64,
}

/// Which stream callback to run.
#[derive(Clone, Copy, Debug)]
enum StreamCallback {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl StreamCallback {
    fn name(self) -> &'static str {
        match self {
            StreamCallback::RequestHeaders => "proxy_on_request_headers",
            StreamCallback::RequestBody => "proxy_on_request_body",
            StreamCallback::RequestTrailers => "proxy_on_request_trailers",
            StreamCallback::ResponseHeaders => "proxy_on_response_headers",
            StreamCallback::ResponseBody => "proxy_on_response_body",
            StreamCallback::ResponseTrailers => "proxy_on_response_trailers",
        }
    }

    fn is_request(self) -> bool {
        matches!(
            self,
            StreamCallback::RequestHeaders
                | StreamCallback::RequestBody
                | StreamCallback::RequestTrailers
        )
    }
}

fn eos(end_of_stream: bool) -> i32 {
    i32::from(end_of_stream)
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Status code of a `:status` header.
fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(":status").and_then(|s| s.parse().ok())
}

impl Plugin {
    /// Starts building a plugin of `module`.
    pub fn builder(module: &Module) -> PluginBuilder<'_> {
        PluginBuilder {
            module,
            proxy: Proxy::istio("Kubernetes"),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            workers: 1,
            fail_strategy: FailStrategy::default(),
            seed: 0,
            routes: Vec::new(),
            default_cluster: None,
            trace: false,
            log_level: Level::Trace,
            identity: PluginIdentity::default(),
            start_time: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        }
    }

    fn start_vm(&mut self, worker: usize) -> anyhow::Result<Vm> {
        let engine = engine()?;
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let seed = self.env.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(self.clock.clone())
            .monotonic_clock(MonotonicClock(self.clock.clone()))
            .secure_random(Deterministic::new(deterministic_bytes(seed, 1024)))
            .insecure_random(Deterministic::new(deterministic_bytes(!seed, 1024)))
            .insecure_random_seed(u128::from(seed))
            .build_p1();
        let host = HostState::new(
            wasi,
            (stdout, stderr),
            self.shared.clone(),
            self.env.clone(),
            self.clock.clone(),
            worker,
        );
        let mut store = Store::new(engine, host);
        let instance = self
            .module
            .inner
            .pre
            .instantiate(&mut store)
            .map_err(to_anyhow)
            .with_context(|| {
                format!(
                    "failed to instantiate {} (worker {worker})",
                    self.module.name()
                )
            })?;
        macro_rules! export {
            ($name:literal) => {
                match instance.get_func(&mut store, $name) {
                    Some(func) => Some(
                        func.typed(&store)
                            .map_err(to_anyhow)
                            .with_context(|| format!("export {} has the wrong signature", $name))?,
                    ),
                    None => None,
                }
            };
        }
        let exports = Exports {
            initialize: export!("_initialize"),
            start: export!("_start"),
            on_context_create: export!("proxy_on_context_create"),
            on_vm_start: export!("proxy_on_vm_start"),
            on_configure: export!("proxy_on_configure"),
            on_tick: export!("proxy_on_tick"),
            on_queue_ready: export!("proxy_on_queue_ready"),
            on_request_headers: export!("proxy_on_request_headers"),
            on_request_body: export!("proxy_on_request_body"),
            on_request_trailers: export!("proxy_on_request_trailers"),
            on_response_headers: export!("proxy_on_response_headers"),
            on_response_body: export!("proxy_on_response_body"),
            on_response_trailers: export!("proxy_on_response_trailers"),
            on_done: export!("proxy_on_done"),
            on_log: export!("proxy_on_log"),
            on_delete: export!("proxy_on_delete"),
            on_http_call_response: export!("proxy_on_http_call_response"),
            on_grpc_receive_initial_metadata: export!("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: export!("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: export!("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: export!("proxy_on_grpc_close"),
        };
        let funcs: Vec<(String, Func)> = instance
            .exports(&mut store)
            .filter_map(|e| {
                let name = e.name().to_owned();
                e.into_func().map(|f| (name, f))
            })
            .collect();
        store.data_mut().instance_exports = funcs.into_iter().collect();
        if let Some(memory) = instance.get_memory(&mut store, "memory") {
            store.data_mut().memory = Some(memory);
        }
        let alloc = ["proxy_on_memory_allocate", "malloc"]
            .iter()
            .find_map(|name| instance.get_func(&mut store, name));
        if let Some(alloc) = alloc {
            let typed = alloc
                .typed::<i32, i32>(&store)
                .map_err(to_anyhow)
                .context("the allocator export has the wrong signature")?;
            store.data_mut().alloc = Some(typed);
        }
        self.generations += 1;
        let mut vm = Vm {
            store,
            exports,
            root_id: 0,
            failed: false,
            configured: false,
            generation: self.generations,
        };
        self.boot(worker, &mut vm);
        Ok(vm)
    }

    /// Envoy's VM lifecycle: `_initialize`/`_start`, root context, vm start, configure.
    fn boot(&mut self, worker: usize, vm: &mut Vm) {
        let init = vm
            .exports
            .initialize
            .clone()
            .or_else(|| vm.exports.start.clone());
        if let Some(init) = init {
            if matches!(
                self.call(vm, worker, "_initialize", 0, Some(init), ()),
                Called::Trapped
            ) {
                return;
            }
        }
        let root = vm.store.data_mut().alloc_context_id();
        vm.store.data_mut().roots.insert(root, RootState::default());
        vm.root_id = root;
        let config = self.plugin_config.clone();
        vm.configured = self.start_root(worker, vm, root, &config);
    }

    /// Creates root context `root`, runs `proxy_on_vm_start` and `proxy_on_configure`;
    /// `true` when both succeeded.
    fn start_root(&mut self, worker: usize, vm: &mut Vm, root: u32, config: &[u8]) -> bool {
        let r = root as i32;
        let create = vm.exports.on_context_create.clone();
        if matches!(
            self.call(vm, worker, "proxy_on_context_create", root, create, (r, 0)),
            Called::Trapped
        ) {
            return false;
        }
        let vm_config_len = len_i32(self.env.vm_config.len());
        let vm_start = vm.exports.on_vm_start.clone();
        match self.call(
            vm,
            worker,
            "proxy_on_vm_start",
            root,
            vm_start,
            (r, vm_config_len),
        ) {
            Called::Returned(0) | Called::Trapped => return false,
            _ => {}
        }
        vm.store.data_mut().configuring = Some(config.to_vec());
        let configure = vm.exports.on_configure.clone();
        let result = self.call(
            vm,
            worker,
            "proxy_on_configure",
            root,
            configure,
            (r, len_i32(config.len())),
        );
        vm.store.data_mut().configuring = None;
        !matches!(result, Called::Returned(0) | Called::Trapped)
    }

    /// Calls a guest function with `context` effective; a trap is recorded as a failure and
    /// kills the VM.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        vm: &mut Vm,
        worker: usize,
        name: &str,
        context: u32,
        func: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Called<R> {
        let Some(func) = func else {
            return Called::Missing;
        };
        if vm.failed {
            return Called::Trapped;
        }
        vm.store.data_mut().active_context = context;
        let result = func.call(&mut vm.store, params);
        vm.store.data_mut().drain_stdio();
        match result {
            Ok(value) => Called::Returned(value),
            Err(error) => {
                vm.failed = true;
                let message = error
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                state::lock(&self.shared).failures.push(Failure {
                    worker,
                    callback: name.to_owned(),
                    message,
                });
                Called::Trapped
            }
        }
    }

    /// Runs `f` with worker `worker`'s VM taken out of `self` (so `self` stays usable).
    fn with_vm<T>(
        &mut self,
        worker: usize,
        f: impl FnOnce(&mut Plugin, &mut Vm) -> T,
    ) -> anyhow::Result<T> {
        let slot = self
            .vms
            .get_mut(worker)
            .ok_or_else(|| anyhow!("no worker {worker}"))?;
        let mut vm = slot
            .take()
            .ok_or_else(|| anyhow!("worker {worker} is busy (re-entered)"))?;
        let result = f(self, &mut vm);
        self.vms[worker] = Some(vm);
        Ok(result)
    }

    fn vm(&self, worker: usize) -> Option<&Vm> {
        self.vms.get(worker)?.as_ref()
    }

    /// Whether `proxy_on_configure` (and vm start) succeeded on every worker and no VM is
    /// dead.
    pub fn configured(&self) -> bool {
        self.vms
            .iter()
            .flatten()
            .all(|vm| vm.configured && !vm.failed)
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.vms.len()
    }

    /// Root context id of a worker.
    pub fn root_context_id(&self, worker: usize) -> Option<u32> {
        self.vm(worker).map(|vm| vm.root_id)
    }

    /// Whether a worker's VM is dead (it trapped and was not reloaded).
    pub fn is_failed(&self, worker: usize) -> bool {
        self.vm(worker).is_some_and(|vm| vm.failed)
    }

    /// How many VMs were replaced under [`FailStrategy::FailReload`].
    pub fn reloads(&self) -> usize {
        self.reloads
    }

    /// An Envoy config update: a new root context on every worker gets the new plugin
    /// configuration (`proxy_on_context_create`, `proxy_on_vm_start`,
    /// `proxy_on_configure`). If it succeeds everywhere the old root contexts are retired
    /// and `true` is returned; otherwise the new ones are dropped and the previous
    /// configuration (and root context state) stays in force.
    pub fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool> {
        let mut new_roots = Vec::new();
        let mut all_ok = true;
        for worker in 0..self.vms.len() {
            let root = self.with_vm(worker, |p, vm| {
                if vm.failed {
                    return None;
                }
                let root = vm.store.data_mut().alloc_context_id();
                vm.store.data_mut().roots.insert(root, RootState::default());
                let ok = p.start_root(worker, vm, root, config);
                Some((root, ok))
            })?;
            match root {
                Some((root, ok)) => {
                    all_ok &= ok;
                    new_roots.push((worker, root));
                }
                None => all_ok = false,
            }
        }
        for (worker, new_root) in new_roots {
            self.with_vm(worker, |p, vm| {
                let retired = if all_ok { vm.root_id } else { new_root };
                p.retire_root(worker, vm, retired);
                if all_ok {
                    vm.root_id = new_root;
                    vm.configured = true;
                }
            })?;
        }
        if all_ok {
            self.plugin_config = config.to_vec();
        }
        Ok(all_ok)
    }

    fn retire_root(&mut self, worker: usize, vm: &mut Vm, root: u32) {
        let r = root as i32;
        let done = vm.exports.on_done.clone();
        self.call(vm, worker, "proxy_on_done", root, done, r);
        let delete = vm.exports.on_delete.clone();
        self.call(vm, worker, "proxy_on_delete", root, delete, r);
        vm.store.data_mut().roots.remove(&root);
    }

    /// Moves the harness clock forward and delivers `proxy_on_tick` to every root context
    /// whose tick period elapsed (once per elapsed period, in time order).
    pub fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        let target = self.clock.elapsed() + by;
        loop {
            let due = self
                .vms
                .iter()
                .enumerate()
                .filter_map(|(w, vm)| Some((w, vm.as_ref()?)))
                .filter(|(_, vm)| !vm.failed)
                .flat_map(|(w, vm)| {
                    vm.store
                        .data()
                        .roots
                        .iter()
                        .filter(|(_, r)| !r.tick_period.is_zero() && r.next_tick <= target)
                        .map(move |(id, r)| (r.next_tick, w, *id))
                })
                .min();
            let Some((at, worker, root)) = due else {
                break;
            };
            self.clock.set_elapsed(at);
            self.with_vm(worker, |p, vm| {
                if let Some(r) = vm.store.data_mut().roots.get_mut(&root) {
                    r.next_tick = at + r.tick_period;
                }
                let tick = vm.exports.on_tick.clone();
                p.call(vm, worker, "proxy_on_tick", root, tick, root as i32);
                p.settle(worker, vm, "proxy_on_tick");
            })?;
        }
        self.clock.set_elapsed(target);
        Ok(())
    }

    /// Time since the plugin was built, on the harness clock.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Opens a stream (HTTP context) on `worker`. Nothing runs until the first
    /// `request_headers`.
    pub fn stream(&mut self, worker: usize) -> Stream<'_> {
        Stream {
            plugin: self,
            worker,
            slot: None,
            connection: Connection::plaintext(),
            upstream: None,
        }
    }

    // --- callouts --------------------------------------------------------------------

    /// Delivers the response of HTTP callout `token`: `proxy_on_http_call_response` runs
    /// with the headers (`:status` first), body and trailers readable.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        let mut map = HeaderMap::default();
        map.add(":status", &status.to_string());
        for (k, v) in headers {
            map.add(k, v);
        }
        self.deliver_http_call(token, Some((map, body.to_vec())))
    }

    /// Fails HTTP callout `token` (timeout, reset): `proxy_on_http_call_response` runs
    /// with zero headers, as Envoy does.
    pub fn fail_http_call(&mut self, token: u32) -> anyhow::Result<()> {
        self.deliver_http_call(token, None)
    }

    fn deliver_http_call(
        &mut self,
        token: u32,
        response: Option<(HeaderMap, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let (worker, context) = {
            let mut shared = state::lock(&self.shared);
            let callout = shared
                .http_callouts
                .iter_mut()
                .find(|c| c.token == token)
                .ok_or_else(|| anyhow!("no HTTP callout with token {token}"))?;
            ensure!(
                !callout.answered,
                "HTTP callout {token} was already answered"
            );
            callout.answered = true;
            (callout.worker, callout.context_id)
        };
        self.with_vm(worker, |p, vm| {
            let (headers, body) = response.unwrap_or_default();
            let status = status_of(&headers).unwrap_or(0);
            let args = (
                context as i32,
                token as i32,
                len_i32(headers.len()),
                len_i32(body.len()),
                0,
            );
            vm.store.data_mut().call = Some(CallResponse {
                headers,
                body: Some(body),
                trailers: HeaderMap::default(),
                status: (status, String::new()),
            });
            let f = vm.exports.on_http_call_response.clone();
            p.call(vm, worker, "proxy_on_http_call_response", context, f, args);
            vm.store.data_mut().call = None;
            p.settle(worker, vm, "proxy_on_http_call_response");
        })
    }

    fn grpc_callout(&self, token: u32) -> anyhow::Result<(usize, u32)> {
        let shared = state::lock(&self.shared);
        let c = shared
            .grpc_callouts
            .iter()
            .find(|c| c.token == token)
            .ok_or_else(|| anyhow!("no gRPC callout with token {token}"))?;
        Ok((c.worker, c.context_id))
    }

    fn deliver_grpc(
        &mut self,
        token: u32,
        name: &'static str,
        call: CallResponse,
        arg: i32,
        pick: fn(&Exports) -> Option<F3<()>>,
    ) -> anyhow::Result<()> {
        let (worker, context) = self.grpc_callout(token)?;
        self.with_vm(worker, |p, vm| {
            vm.store.data_mut().call = Some(call);
            let f = pick(&vm.exports);
            p.call(
                vm,
                worker,
                name,
                context,
                f,
                (context as i32, token as i32, arg),
            );
            vm.store.data_mut().call = None;
            p.settle(worker, vm, name);
        })
    }

    /// Delivers gRPC initial metadata (`proxy_on_grpc_receive_initial_metadata`).
    pub fn grpc_initial_metadata(
        &mut self,
        token: u32,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let headers = HeaderMap::from_pairs(metadata);
        let n = len_i32(headers.len());
        let call = CallResponse {
            headers,
            ..CallResponse::default()
        };
        self.deliver_grpc(
            token,
            "proxy_on_grpc_receive_initial_metadata",
            call,
            n,
            |e| e.on_grpc_receive_initial_metadata.clone(),
        )
    }

    /// Delivers a gRPC message (`proxy_on_grpc_receive`, readable as `GRPC_CALL_MESSAGE`).
    pub fn grpc_receive(&mut self, token: u32, message: &[u8]) -> anyhow::Result<()> {
        let n = len_i32(message.len());
        let call = CallResponse {
            body: Some(message.to_vec()),
            ..CallResponse::default()
        };
        self.deliver_grpc(token, "proxy_on_grpc_receive", call, n, |e| {
            e.on_grpc_receive.clone()
        })
    }

    /// Delivers gRPC trailing metadata (`proxy_on_grpc_receive_trailing_metadata`).
    pub fn grpc_trailing_metadata(
        &mut self,
        token: u32,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let trailers = HeaderMap::from_pairs(metadata);
        let n = len_i32(trailers.len());
        let call = CallResponse {
            trailers,
            ..CallResponse::default()
        };
        self.deliver_grpc(
            token,
            "proxy_on_grpc_receive_trailing_metadata",
            call,
            n,
            |e| e.on_grpc_receive_trailing_metadata.clone(),
        )
    }

    /// Closes a gRPC call or stream (`proxy_on_grpc_close`; `proxy_get_status` gives
    /// `status` and `message`).
    pub fn grpc_close(&mut self, token: u32, status: u32, message: &str) -> anyhow::Result<()> {
        let call = CallResponse {
            status: (status, message.to_owned()),
            ..CallResponse::default()
        };
        self.deliver_grpc(token, "proxy_on_grpc_close", call, status as i32, |e| {
            e.on_grpc_close.clone()
        })
    }

    // --- direct access, for ABI tests and debugging ------------------------------------

    /// Calls any guest export with `context_id` effective, then does what Envoy does after
    /// a callback (route re-match, local reply, resume, queue notifications). Arguments are
    /// converted to the export's i32/i64 parameter types; a trap is returned as an error
    /// (and kills the VM, as any trap).
    pub fn call_export(
        &mut self,
        worker: usize,
        context_id: u32,
        name: &str,
        args: &[i64],
    ) -> anyhow::Result<Vec<i64>> {
        self.with_vm(worker, |p, vm| {
            ensure!(!vm.failed, "worker {worker}'s VM is dead");
            let func = vm
                .store
                .data()
                .instance_exports
                .get(name)
                .copied()
                .ok_or_else(|| anyhow!("the module exports no function {name}"))?;
            let ty = func.ty(&vm.store);
            ensure!(
                ty.params().len() == args.len(),
                "{name} takes {} arguments",
                ty.params().len()
            );
            let params: Vec<Val> = ty
                .params()
                .zip(args)
                .map(|(t, a)| match t {
                    ValType::I64 => Val::I64(*a),
                    _ => Val::I32(*a as i32),
                })
                .collect();
            let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
            if let Some(s) = vm.store.data_mut().streams.get_mut(&context_id) {
                s.route_snapshot = s.route.clone();
            }
            vm.store.data_mut().active_context = context_id;
            let outcome = func.call(&mut vm.store, &params, &mut results);
            vm.store.data_mut().drain_stdio();
            if let Err(error) = outcome {
                vm.failed = true;
                let message = error
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                p.shared().failures.push(Failure {
                    worker,
                    callback: name.to_owned(),
                    message: message.clone(),
                });
                bail!("{name} trapped: {message}");
            }
            p.after(vm, worker, context_id, name, None);
            p.settle(worker, vm, name);
            Ok(results
                .iter()
                .map(|v| v.i64().or(v.i32().map(i64::from)).unwrap_or(0))
                .collect())
        })?
    }

    /// The size of a worker VM's linear memory in bytes (`None` without a VM
    /// or an exported memory).
    pub fn memory_bytes(&self, worker: usize) -> Option<u64> {
        let vm = self.vm(worker)?;
        let memory = vm.store.data().memory?;
        Some(memory.data_size(&vm.store) as u64)
    }

    /// Copies guest memory of a worker (`None` when out of bounds).
    pub fn read_memory(&mut self, worker: usize, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let vm = self.vm(worker)?;
        let memory = vm.store.data().memory?;
        let start = ptr as usize;
        memory
            .data(&vm.store)
            .get(start..start.checked_add(len as usize)?)
            .map(<[u8]>::to_vec)
    }

    /// Writes guest memory of a worker.
    pub fn write_memory(&mut self, worker: usize, ptr: u32, bytes: &[u8]) -> anyhow::Result<()> {
        let vm = self
            .vms
            .get_mut(worker)
            .and_then(Option::as_mut)
            .context("no such worker")?;
        let memory = vm
            .store
            .data()
            .memory
            .context("the module exports no memory")?;
        let start = ptr as usize;
        memory
            .data_mut(&mut vm.store)
            .get_mut(start..start + bytes.len())
            .context("out of bounds")?
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

    /// Filter state set with `proxy_set_property` on a worker's root context.
    pub fn root_filter_state(&self, worker: usize) -> BTreeMap<String, Vec<u8>> {
        self.vm(worker)
            .and_then(|vm| vm.store.data().roots.get(&vm.root_id))
            .map(|r| r.filter_state.clone())
            .unwrap_or_default()
    }

    // --- stream machinery ------------------------------------------------------------

    /// Opens a stream context on `worker`, following the fail strategy when the VM is
    /// unusable.
    fn open_stream(&mut self, worker: usize, connection: Connection) -> anyhow::Result<Slot> {
        ensure!(
            worker < self.vms.len(),
            "no worker {worker} (the plugin has {})",
            self.vms.len()
        );
        let failed = self.vm(worker).is_some_and(|vm| vm.failed);
        if failed && self.fail_strategy == FailStrategy::FailReload {
            self.reload(worker)?;
        }
        let usable = self
            .vm(worker)
            .is_some_and(|vm| !vm.failed && vm.configured);
        if !usable {
            let mut state = StreamState::new(0, connection, false);
            if self.fail_strategy != FailStrategy::FailOpen {
                fail_closed(&mut state);
            }
            return Ok(Slot::Detached(Box::new(state)));
        }
        self.with_vm(worker, |p, vm| {
            let root = vm.root_id;
            let id = vm.store.data_mut().alloc_context_id();
            vm.store
                .data_mut()
                .streams
                .insert(id, StreamState::new(root, connection, true));
            let create = vm.exports.on_context_create.clone();
            let generation = vm.generation;
            if let Called::Trapped = p.call(
                vm,
                worker,
                "proxy_on_context_create",
                id,
                create,
                (id as i32, root as i32),
            ) {
                p.fail_stream(vm, worker, id);
            }
            Slot::Vm { id, generation }
        })
    }

    fn reload(&mut self, worker: usize) -> anyhow::Result<()> {
        let vm = self.start_vm(worker)?;
        let Some(old) = self.vms.get_mut(worker).and_then(|slot| slot.replace(vm)) else {
            bail!("no worker {worker}");
        };
        for (id, mut state) in old.store.into_data().streams {
            fail_closed(&mut state);
            self.orphans.insert((worker, id, old.generation), state);
        }
        self.reloads += 1;
        Ok(())
    }

    /// The guest trapped while handling stream `id`: take the stream out of the VM and
    /// apply the fail strategy.
    fn fail_stream(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        let Some(mut state) = vm.store.data_mut().streams.remove(&id) else {
            return;
        };
        state.filtered = false;
        if self.fail_strategy == FailStrategy::FailOpen {
            if state.local_reply.is_none() {
                if state.request_headers.is_some() {
                    forward_request(&mut state);
                }
                if state.response_headers.is_some() {
                    forward_response(&mut state);
                }
            }
        } else {
            fail_closed(&mut state);
        }
        self.orphans.insert((worker, id, vm.generation), state);
    }

    /// Runs one stream callback and what Envoy does after it.
    fn run(
        &mut self,
        worker: usize,
        id: u32,
        callback: StreamCallback,
        a: usize,
        eos_flag: Option<bool>,
    ) -> anyhow::Result<Action> {
        self.with_vm(worker, |p, vm| {
            p.run_in(vm, worker, id, callback, a, eos_flag)
        })
    }

    fn run_in(
        &mut self,
        vm: &mut Vm,
        worker: usize,
        id: u32,
        callback: StreamCallback,
        a: usize,
        eos_flag: Option<bool>,
    ) -> Action {
        let Some(stream) = vm.store.data_mut().streams.get_mut(&id) else {
            return Action::Continue;
        };
        stream.route_snapshot = stream.route.clone();
        let ctx = id as i32;
        let a = len_i32(a);
        let e = &vm.exports;
        let called = match (callback, eos_flag) {
            (StreamCallback::RequestTrailers, _) => {
                let f = e.on_request_trailers.clone();
                self.call(vm, worker, callback.name(), id, f, (ctx, a))
            }
            (StreamCallback::ResponseTrailers, _) => {
                let f = e.on_response_trailers.clone();
                self.call(vm, worker, callback.name(), id, f, (ctx, a))
            }
            (cb, flag) => {
                let f = match cb {
                    StreamCallback::RequestHeaders => e.on_request_headers.clone(),
                    StreamCallback::RequestBody => e.on_request_body.clone(),
                    StreamCallback::ResponseHeaders => e.on_response_headers.clone(),
                    _ => e.on_response_body.clone(),
                };
                self.call(
                    vm,
                    worker,
                    cb.name(),
                    id,
                    f,
                    (ctx, a, eos(flag.unwrap_or(false))),
                )
            }
        };
        let action = match called {
            Called::Returned(raw) => Action::from_raw(raw),
            Called::Missing => Action::Continue,
            Called::Trapped => {
                self.fail_stream(vm, worker, id);
                return if self.fail_strategy == FailStrategy::FailOpen {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
        };
        self.after(vm, worker, id, callback.name(), Some((callback, action)));
        self.settle(worker, vm, callback.name());
        action
    }

    /// What Envoy does once a callback returned: re-match the route if the cache was
    /// cleared, send a pending local reply, forward or hold data, resume on
    /// `proxy_continue_stream`, finish on `proxy_done`.
    fn after(
        &mut self,
        vm: &mut Vm,
        worker: usize,
        id: u32,
        name: &str,
        returned: Option<(StreamCallback, Action)>,
    ) {
        let routes = &self.env.routes;
        let Some(s) = vm.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        if s.route_cache_cleared {
            s.route_cache_cleared = false;
            let changed = std::mem::take(&mut s.changed_headers);
            if !s.request_forwarded {
                let previous = s.route.take();
                s.route = s.request_headers.as_ref().and_then(|h| routes.select(h));
                s.rematches.push(RouteRematch {
                    callback: name.to_owned(),
                    changed_headers: changed,
                    previous_route: previous.map(|r| r.name),
                    route: s.route.as_ref().map(|r| r.name.clone()),
                    cluster: s.route.as_ref().map(|r| r.cluster.clone()),
                });
            }
        }
        if s.local_reply_pending {
            s.local_reply_pending = false;
            s.request_paused = false;
            self.deliver_local_reply(vm, worker, id);
            return;
        }
        if s.local_reply.is_some() && s.phase == Phase::Request {
            return;
        }
        if let Some((callback, action)) = returned {
            match (callback.is_request(), action) {
                (true, Action::Continue) => forward_request(s),
                (true, Action::Pause) => s.request_paused = true,
                (false, Action::Continue) => forward_response(s),
                (false, Action::Pause) => s.response_paused = true,
            }
        }
        if std::mem::take(&mut s.continue_request) && s.request_paused {
            s.request_paused = false;
            forward_request(s);
        }
        if std::mem::take(&mut s.continue_response) && s.response_paused {
            s.response_paused = false;
            forward_response(s);
        }
        if s.awaiting_done && s.done_called {
            s.awaiting_done = false;
            self.finalize(vm, worker, id);
        }
    }

    /// Handles stream work left by a callback on another context (e.g. an HTTP call
    /// response resuming a stream) and delivers queued `proxy_on_queue_ready`.
    fn settle(&mut self, worker: usize, vm: &mut Vm, name: &str) {
        loop {
            let pending: Vec<u32> = vm
                .store
                .data()
                .streams
                .iter()
                .filter(|(_, s)| s.has_pending())
                .map(|(id, _)| *id)
                .collect();
            for id in &pending {
                self.after(vm, worker, *id, name, None);
            }
            let event = self.shared().queue_ready.pop_front();
            match event {
                Some((target, root, queue)) if target == worker => {
                    self.queue_ready(vm, worker, root, queue)
                }
                Some((target, root, queue)) => {
                    // Another worker's VM (not being driven right now).
                    let _ = self.with_vm(target, |p, other| {
                        p.queue_ready(other, target, root, queue);
                        p.settle(target, other, "proxy_on_queue_ready");
                    });
                }
                None if pending.is_empty() => break,
                None => {}
            }
        }
    }

    fn queue_ready(&mut self, vm: &mut Vm, worker: usize, root: u32, queue: u32) {
        if vm.store.data().roots.contains_key(&root) {
            let f = vm.exports.on_queue_ready.clone();
            self.call(
                vm,
                worker,
                "proxy_on_queue_ready",
                root,
                f,
                (root as i32, queue as i32),
            );
        }
    }

    /// Sends the local reply through this filter's response callbacks (Envoy does), or,
    /// when it was sent from a response callback, replaces the response.
    fn deliver_local_reply(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        let Some(s) = vm.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        let Some(reply) = s.local_reply.clone() else {
            return;
        };
        let headers = local_reply_headers(&reply);
        if s.phase != Phase::Request {
            s.client_response_headers = Some(headers);
            s.client_response_body = reply.body;
            s.response_code = Some(reply.status);
            s.response_forwarded = true;
            return;
        }
        s.phase = Phase::Response;
        s.upstream = None;
        s.response_code = Some(reply.status);
        let n = headers.len();
        s.response_headers = Some(headers);
        let body = reply.body;
        self.run_in(
            vm,
            worker,
            id,
            StreamCallback::ResponseHeaders,
            n,
            Some(body.is_empty()),
        );
        if !body.is_empty() {
            if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
                s.response_body = Some(body);
                let len = s.response_body.as_ref().map_or(0, Vec::len);
                self.run_in(
                    vm,
                    worker,
                    id,
                    StreamCallback::ResponseBody,
                    len,
                    Some(true),
                );
            }
        }
        // A local reply is sent even if the filter paused on it.
        if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
            s.response_paused = false;
            forward_response(s);
        }
    }

    /// `proxy_on_log` and `proxy_on_delete`, then the stream leaves the VM.
    fn finalize(&mut self, vm: &mut Vm, worker: usize, id: u32) {
        if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
            s.phase = Phase::Log;
        }
        let log = vm.exports.on_log.clone();
        self.call(vm, worker, "proxy_on_log", id, log, id as i32);
        let delete = vm.exports.on_delete.clone();
        self.call(vm, worker, "proxy_on_delete", id, delete, id as i32);
        if let Some(mut s) = vm.store.data_mut().streams.remove(&id) {
            s.finished = true;
            self.orphans.insert((worker, id, vm.generation), s);
        }
    }

    fn complete_stream(&mut self, worker: usize, id: u32) -> anyhow::Result<()> {
        self.with_vm(worker, |p, vm| {
            if !vm.store.data().streams.contains_key(&id) {
                return;
            }
            let done = vm.exports.on_done.clone();
            match p.call(vm, worker, "proxy_on_done", id, done, id as i32) {
                Called::Returned(0) => {
                    if let Some(s) = vm.store.data_mut().streams.get_mut(&id) {
                        s.awaiting_done = true;
                    }
                }
                Called::Trapped => p.fail_stream(vm, worker, id),
                _ => p.finalize(vm, worker, id),
            }
            p.settle(worker, vm, "proxy_on_done");
        })
    }
}

/// The stream fails closed: a 503 local reply (`wasm_fail_stream`), no filter callbacks.
fn fail_closed(state: &mut StreamState) {
    let reply = LocalReply {
        status: 503,
        details: "wasm_fail_stream".to_owned(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: Some(14),
    };
    state.filtered = false;
    state.client_response_headers = Some(local_reply_headers(&reply));
    state.client_response_body = Vec::new();
    state.response_code = Some(503);
    state.response_forwarded = true;
    state.local_reply = Some(reply);
}

fn local_reply_headers(reply: &LocalReply) -> HeaderMap {
    let mut headers = HeaderMap::default();
    headers.add(":status", &reply.status.to_string());
    if !reply.body.is_empty() {
        headers.add("content-length", &reply.body.len().to_string());
        headers.add("content-type", "text/plain");
    }
    for (k, v) in &reply.headers {
        headers.add(k, v);
    }
    headers
}

/// Request headers (first time), buffered body and trailers go upstream.
fn forward_request(s: &mut StreamState) {
    if !s.request_forwarded {
        s.request_forwarded = true;
        s.upstream_request_headers = s.request_headers.clone();
    }
    if let Some(body) = s.request_body.as_mut() {
        s.upstream_request_body.append(body);
    }
    if s.request_trailers.is_some() {
        s.upstream_request_trailers = s.request_trailers.clone();
    }
}

/// Response headers (first time), buffered body and trailers go to the client.
fn forward_response(s: &mut StreamState) {
    if !s.response_forwarded {
        s.response_forwarded = true;
        s.client_response_headers = s.response_headers.clone();
    }
    if let Some(body) = s.response_body.as_mut() {
        s.client_response_body.append(body);
    }
    if s.response_trailers.is_some() {
        s.client_response_trailers = s.response_trailers.clone();
    }
}

/// Where a stream's state lives.
enum Slot {
    /// In a VM (context id, VM generation); moved to `Plugin::orphans` when it leaves.
    Vm { id: u32, generation: u64 },
    /// Never filtered (plugin unusable): held by the handle.
    Detached(Box<StreamState>),
}

/// One HTTP stream on a worker, driven like Envoy drives its filter chain.
///
/// Stream methods return `Err` only for harness misuse or host problems; guest traps are
/// handled by the fail strategy (see [`Plugin::failures`]).
pub struct Stream<'p> {
    plugin: &'p mut Plugin,
    worker: usize,
    slot: Option<Slot>,
    connection: Connection,
    upstream: Option<Upstream>,
}

impl<'p> Stream<'p> {
    /// The downstream connection (default: plaintext). Set before `request_headers`.
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    /// The plugin, e.g. to answer a callout while the stream waits.
    pub fn plugin(&mut self) -> &mut Plugin {
        self.plugin
    }

    /// Answers an HTTP callout (see [`Plugin::respond_http_call`]).
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.plugin.respond_http_call(token, status, headers, body)
    }

    /// Context id of this stream in its VM (`None` before `request_headers` or when the
    /// plugin was unusable).
    pub fn context_id(&self) -> Option<u32> {
        match &self.slot {
            Some(Slot::Vm { id, .. }) => Some(*id),
            _ => None,
        }
    }

    fn state(&self) -> Option<&StreamState> {
        match self.slot.as_ref()? {
            Slot::Detached(state) => Some(state),
            Slot::Vm { id, generation } => {
                let vm = self.plugin.vm(self.worker)?;
                if vm.generation == *generation {
                    if let Some(s) = vm.store.data().streams.get(id) {
                        return Some(s);
                    }
                }
                self.plugin.orphans.get(&(self.worker, *id, *generation))
            }
        }
    }

    fn state_mut(&mut self) -> Option<&mut StreamState> {
        match self.slot.as_mut()? {
            Slot::Detached(state) => Some(state),
            Slot::Vm { id, generation } => {
                let key = (self.worker, *id, *generation);
                let in_vm = self.plugin.vm(self.worker).is_some_and(|vm| {
                    vm.generation == *generation && vm.store.data().streams.contains_key(id)
                });
                if in_vm {
                    let vm = self.plugin.vms.get_mut(self.worker)?.as_mut()?;
                    vm.store.data_mut().streams.get_mut(id)
                } else {
                    self.plugin.orphans.get_mut(&key)
                }
            }
        }
    }

    /// The context id when the stream is still inside a live VM with the filter active.
    fn live_id(&self) -> Option<u32> {
        match self.slot.as_ref()? {
            Slot::Vm { id, generation } => {
                let vm = self.plugin.vm(self.worker)?;
                (vm.generation == *generation && vm.store.data().streams.contains_key(id))
                    .then_some(*id)
            }
            Slot::Detached(_) => None,
        }
    }

    /// Request headers arrive from the client: `proxy_on_request_headers`. The route is
    /// matched first; header changes re-match it afterwards.
    pub fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        ensure!(
            self.slot.is_none(),
            "request headers were already sent on this stream"
        );
        let slot = self
            .plugin
            .open_stream(self.worker, self.connection.clone())?;
        self.slot = Some(slot);
        let map = HeaderMap::from_pairs(headers);
        let route = self.plugin.env.routes.select(&map);
        let n = map.len();
        let Some(s) = self.state_mut() else {
            bail!("the stream was lost");
        };
        s.route = route;
        if s.request_headers.is_none() {
            s.request_headers = Some(map);
        }
        if !s.filtered {
            return Ok(self.passthrough_request());
        }
        self.drive(StreamCallback::RequestHeaders, n, Some(end_of_stream))
    }

    fn passthrough_request(&mut self) -> Action {
        match self.state_mut() {
            Some(s) if s.local_reply.is_none() => {
                forward_request(s);
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    fn drive(
        &mut self,
        callback: StreamCallback,
        n: usize,
        end_of_stream: Option<bool>,
    ) -> anyhow::Result<Action> {
        match self.live_id() {
            Some(id) => self.plugin.run(self.worker, id, callback, n, end_of_stream),
            None => Ok(if callback.is_request() {
                self.passthrough_request()
            } else {
                self.passthrough_response()
            }),
        }
    }

    fn passthrough_response(&mut self) -> Action {
        match self.state_mut() {
            Some(s) if s.local_reply.is_none() || !s.filtered && s.response_headers.is_some() => {
                forward_response(s);
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    /// A request body chunk: `proxy_on_request_body`. While the filter pauses, chunks
    /// are buffered and the filter sees the whole buffer.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        let body = s.request_body.get_or_insert_with(Vec::new);
        body.extend_from_slice(chunk);
        let n = body.len();
        self.drive(StreamCallback::RequestBody, n, Some(end_of_stream))
    }

    /// Request trailers: `proxy_on_request_trailers`.
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        let map = HeaderMap::from_pairs(trailers);
        let n = map.len();
        s.request_trailers = Some(map);
        self.drive(StreamCallback::RequestTrailers, n, None)
    }

    /// Sets what the upstream answered without sending it yet (see [`Stream::respond`]).
    pub fn upstream(&mut self, upstream: Upstream) -> anyhow::Result<()> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure!(
            s.request_forwarded,
            "the request was not forwarded upstream (paused or answered locally)"
        );
        s.upstream = Some(upstream.clone());
        s.response_flags = upstream.flags;
        self.upstream = Some(upstream);
        Ok(())
    }

    /// Response headers from the upstream: `proxy_on_response_headers`. `:status` comes
    /// from [`Stream::upstream`] unless given.
    pub fn response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        let status = self.upstream.as_ref().map(|u| u.status);
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure!(s.local_reply.is_none(), "the stream was answered locally");
        let mut map = HeaderMap::default();
        if let Some(status) = status.filter(|_| !headers.iter().any(|(k, _)| *k == ":status")) {
            map.add(":status", &status.to_string());
        }
        for (k, v) in headers {
            map.add(k, v);
        }
        s.response_code = status_of(&map);
        s.phase = Phase::Response;
        let n = map.len();
        s.response_headers = Some(map);
        self.drive(StreamCallback::ResponseHeaders, n, Some(end_of_stream))
    }

    /// A response body chunk: `proxy_on_response_body`.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        ensure!(
            s.response_headers.is_some(),
            "response headers were not sent yet"
        );
        if s.local_reply.is_some() && s.filtered {
            return Ok(Action::Pause);
        }
        let body = s.response_body.get_or_insert_with(Vec::new);
        body.extend_from_slice(chunk);
        let n = body.len();
        self.drive(StreamCallback::ResponseBody, n, Some(end_of_stream))
    }

    /// Response trailers: `proxy_on_response_trailers`.
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        let s = self
            .state_mut()
            .context("request headers were not sent yet")?;
        if s.local_reply.is_some() && s.filtered {
            return Ok(Action::Pause);
        }
        let map = HeaderMap::from_pairs(trailers);
        let n = map.len();
        s.response_trailers = Some(map);
        self.drive(StreamCallback::ResponseTrailers, n, None)
    }

    /// The upstream answers: sets it (see [`Stream::upstream`]) and runs its headers, body
    /// and trailers through the filter's response callbacks.
    pub fn respond(&mut self, upstream: Upstream) -> anyhow::Result<()> {
        self.upstream(upstream.clone())?;
        let headers: Vec<(&str, &str)> = upstream
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let has_body = !upstream.body.is_empty();
        let has_trailers = !upstream.trailers.is_empty();
        self.response_headers(&headers, !has_body && !has_trailers)?;
        if has_body {
            self.response_body(&upstream.body, !has_trailers)?;
        }
        if has_trailers {
            let trailers: Vec<(&str, &str)> = upstream
                .trailers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.response_trailers(&trailers)?;
        }
        Ok(())
    }

    /// The stream ends: `proxy_on_done`, then (when it returned true, or once the filter
    /// calls `proxy_done`) `proxy_on_log` and `proxy_on_delete`.
    pub fn complete(&mut self) -> anyhow::Result<()> {
        match self.live_id() {
            Some(id) => self.plugin.complete_stream(self.worker, id),
            None => {
                if let Some(s) = self.state_mut() {
                    s.finished = true;
                }
                Ok(())
            }
        }
    }

    // --- what a test reads -----------------------------------------------------------

    /// Request headers as the filter left them.
    pub fn request_header_map(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .request_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// Request headers as forwarded upstream (`None`: not forwarded).
    pub fn upstream_request_headers(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .upstream_request_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// First value of a forwarded request header.
    pub fn upstream_request_header(&self, key: &str) -> Option<String> {
        self.state()?
            .upstream_request_headers
            .as_ref()?
            .get(key)
            .map(str::to_owned)
    }

    /// Request body as forwarded upstream.
    pub fn upstream_request_body(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.upstream_request_body.clone())
            .unwrap_or_default()
    }

    /// Whether the request went upstream.
    pub fn request_forwarded(&self) -> bool {
        self.state().is_some_and(|s| s.request_forwarded)
    }

    /// The route chosen now (after any re-match).
    pub fn route(&self) -> Option<MatchedRoute> {
        self.state()?.route.clone()
    }

    /// The cluster the request goes to (after any re-match).
    pub fn upstream_cluster(&self) -> Option<String> {
        self.state()?.route.as_ref().map(|r| r.cluster.clone())
    }

    /// Route re-matches caused by the filter (their count is how many extra matches Envoy
    /// would do).
    pub fn route_rematches(&self) -> Vec<RouteRematch> {
        self.state()
            .map(|s| s.rematches.clone())
            .unwrap_or_default()
    }

    /// The local reply, if the filter (or fail-close) sent one.
    pub fn local_reply(&self) -> Option<LocalReply> {
        self.state()?.local_reply.clone()
    }

    /// Response headers as the client got them.
    pub fn client_response_headers(&self) -> Option<Vec<(String, String)>> {
        self.state()?
            .client_response_headers
            .as_ref()
            .map(HeaderMap::to_vec)
    }

    /// First value of a response header the client got.
    pub fn client_response_header(&self, key: &str) -> Option<String> {
        self.state()?
            .client_response_headers
            .as_ref()?
            .get(key)
            .map(str::to_owned)
    }

    /// HTTP status the client got.
    pub fn client_response_status(&self) -> Option<u32> {
        status_of(self.state()?.client_response_headers.as_ref()?)
    }

    /// Response body as the client got it.
    pub fn client_response_body(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.client_response_body.clone())
            .unwrap_or_default()
    }

    /// Filter state set with `proxy_set_property` on this stream.
    pub fn filter_state(&self) -> BTreeMap<String, Vec<u8>> {
        self.state()
            .map(|s| s.filter_state.clone())
            .unwrap_or_default()
    }

    /// Whether the filter runs on this stream (false: fail-open pass-through, fail-close
    /// reply, or after a trap).
    pub fn is_filtered(&self) -> bool {
        self.state().is_some_and(|s| s.filtered)
    }

    /// Whether the filter reset the stream with `proxy_close_stream`.
    pub fn was_reset(&self) -> bool {
        self.state().is_some_and(|s| s.close_requested)
    }

    /// Whether `proxy_on_delete` ran (or the unfiltered stream completed).
    pub fn is_finished(&self) -> bool {
        self.state().is_some_and(|s| s.finished)
    }
}
