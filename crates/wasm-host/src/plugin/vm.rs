//! VM lifecycle as Envoy 1.40 runs it: the configuration canary, the main thread's VM and
//! the worker VMs; root contexts, reconfiguration, ticks, traps and reloads.

use std::time::Duration;

use wasmtime::{Func, Store, TypedFunc, WasmParams, WasmResults};
use wasmtime_wasi::{Deterministic, WasiCtxBuilder};

use super::engine::engine;
use super::{len_i32, Plugin};
use crate::abi::to_anyhow;
use crate::error::{usage, Error, Result};
use crate::host::{HostState, MonotonicClock, RootState};
use crate::state::{self, Failure};

pub(super) type F2<R> = TypedFunc<(i32, i32), R>;
pub(super) type F3<R> = TypedFunc<(i32, i32, i32), R>;
pub(super) type F5<R> = TypedFunc<(i32, i32, i32, i32, i32), R>;

/// The callbacks a VM exports (all optional, as the spec says).
#[derive(Default)]
pub(super) struct Exports {
    pub(super) initialize: Option<TypedFunc<(), ()>>,
    pub(super) start: Option<TypedFunc<(), ()>>,
    pub(super) on_context_create: Option<F2<()>>,
    pub(super) on_vm_start: Option<F2<i32>>,
    pub(super) on_configure: Option<F2<i32>>,
    pub(super) on_tick: Option<TypedFunc<i32, ()>>,
    pub(super) on_queue_ready: Option<F2<()>>,
    pub(super) on_request_headers: Option<F3<i32>>,
    pub(super) on_request_body: Option<F3<i32>>,
    pub(super) on_request_trailers: Option<F2<i32>>,
    pub(super) on_response_headers: Option<F3<i32>>,
    pub(super) on_response_body: Option<F3<i32>>,
    pub(super) on_response_trailers: Option<F2<i32>>,
    pub(super) on_done: Option<TypedFunc<i32, i32>>,
    pub(super) on_log: Option<TypedFunc<i32, ()>>,
    pub(super) on_delete: Option<TypedFunc<i32, ()>>,
    pub(super) on_http_call_response: Option<F5<()>>,
    pub(super) on_grpc_receive_initial_metadata: Option<F3<()>>,
    pub(super) on_grpc_receive: Option<F3<()>>,
    pub(super) on_grpc_receive_trailing_metadata: Option<F3<()>>,
    pub(super) on_grpc_close: Option<F3<()>>,
}

/// One VM: a worker's, the main thread's, or a configuration canary.
pub(super) struct Vm {
    pub(super) store: Store<HostState>,
    pub(super) exports: Exports,
    /// The root context in force (0 before one was created).
    pub(super) root_id: u32,
    /// It trapped: dead until reloaded.
    pub(super) failed: bool,
    /// When it trapped, on the harness clock (the FAIL_RELOAD backoff starts there).
    pub(super) failed_at: Duration,
    /// Its root context accepted the configuration in force (a thread-local
    /// `proxy_on_configure` that failed leaves the filter skipped on this thread).
    pub(super) configured: bool,
    pub(super) generation: u64,
}

impl Vm {
    /// Before a guest call: a fresh deadline and a fresh log count for a root
    /// context's call.
    pub(super) fn arm(&mut self, limits: &crate::Limits) {
        self.store.set_epoch_deadline(limits.deadline_ticks());
        self.store.data_mut().call_logs = Default::default();
    }

    /// After a guest call: says how many log entries it made that were not kept.
    pub(super) fn disarm(&mut self) {
        crate::abi::log::report_dropped(self.store.data_mut());
    }
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
pub(super) enum Called<R> {
    Returned(R),
    Missing,
    Trapped,
}

impl Plugin {
    /// Instantiates the module as VM `worker` (no guest code runs yet).
    fn instantiate(&mut self, worker: usize) -> Result<Vm> {
        let engine = engine()?;
        let seed = self.env.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9);
        let wasi = WasiCtxBuilder::new()
            .wall_clock(self.clock.clone())
            .monotonic_clock(MonotonicClock(self.clock.clone()))
            .secure_random(Deterministic::new(deterministic_bytes(seed, 1024)))
            .insecure_random(Deterministic::new(deterministic_bytes(!seed, 1024)))
            .insecure_random_seed(u128::from(seed))
            .build_p1();
        let host = HostState::new(
            wasi,
            self.shared.clone(),
            self.env.clone(),
            self.clock.clone(),
            worker,
        );
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.memory_limit);
        // The start function runs under the same deadline as any call.
        store.set_epoch_deadline(self.env.limits.deadline_ticks());
        let instance =
            self.module
                .inner
                .pre
                .instantiate(&mut store)
                .map_err(|e| Error::Instantiate {
                    module: self.module.name().to_owned(),
                    message: match crate::limits::time_limit_hit(&e, &self.env.limits) {
                        Some(line) => {
                            format!(
                                "failed to instantiate {}: its start function {line}",
                                self.vm_name(worker)
                            )
                        }
                        None => {
                            format!(
                                "failed to instantiate {}: {:#}",
                                self.vm_name(worker),
                                to_anyhow(e)
                            )
                        }
                    },
                })?;
        macro_rules! export {
            ($name:literal) => {
                match instance.get_func(&mut store, $name) {
                    Some(func) => Some(func.typed(&store).map_err(|e| Error::Instantiate {
                        module: self.module.name().to_owned(),
                        message: format!(
                            "export {} has the wrong signature: {:#}",
                            $name,
                            to_anyhow(e)
                        ),
                    })?),
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
                .map_err(|e| Error::Instantiate {
                    module: self.module.name().to_owned(),
                    message: format!(
                        "the allocator export has the wrong signature: {:#}",
                        to_anyhow(e)
                    ),
                })?;
            store.data_mut().alloc = Some(typed);
        }
        self.generations += 1;
        Ok(Vm {
            store,
            exports,
            root_id: 0,
            failed: false,
            failed_at: Duration::ZERO,
            configured: false,
            generation: self.generations,
        })
    }

    /// Runs `_initialize` (or `_start`) and creates the first root context with the
    /// configuration: `proxy_on_context_create`, `proxy_on_vm_start`,
    /// `proxy_on_configure`. `true` when the configuration was accepted.
    fn boot(&mut self, worker: usize, vm: &mut Vm, config: &[u8]) -> bool {
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
                return false;
            }
        }
        let root = vm.store.data_mut().alloc_context_id();
        vm.store.data_mut().roots.insert(root, RootState::default());
        vm.root_id = root;
        self.start_root(worker, vm, root, config)
    }

    /// Envoy's configuration canary: a throw-away VM (numbered [`Plugin::canary_vm`])
    /// whose `proxy_on_configure` decides whether `config` is accepted. It is dropped
    /// without `proxy_on_done`/`proxy_on_delete`; what it wrote to shared data stays.
    pub(super) fn run_canary(&mut self, config: &[u8]) -> Result<bool> {
        let canary = self.canary_vm();
        let mut vm = self.instantiate(canary)?;
        let accepted = self.boot(canary, &mut vm, config) && !vm.failed;
        // Queue notifications for the canary's root go nowhere.
        Ok(accepted)
    }

    /// Starts the main thread's VM and every worker VM with the configuration in force.
    /// A VM whose thread-local `proxy_on_configure` fails gets its root context retired
    /// (`proxy_on_done`, `proxy_on_delete`) and the filter is skipped on its thread.
    pub(super) fn start_thread_vms(&mut self) -> Result<()> {
        self.vms.clear();
        // Envoy starts the main thread's VM first, then the workers'.
        let main = self.start_vm(self.main_vm())?;
        let mut vms = Vec::with_capacity(self.workers + 1);
        for worker in 0..self.workers {
            vms.push(Some(self.start_vm(worker)?));
        }
        vms.push(Some(main));
        self.vms = vms;
        Ok(())
    }

    /// A VM booted with the configuration in force.
    fn start_vm(&mut self, worker: usize) -> Result<Vm> {
        let mut vm = self.instantiate(worker)?;
        let config = self.plugin_config.clone();
        vm.configured = self.boot(worker, &mut vm, &config);
        if !vm.configured && !vm.failed && vm.root_id != 0 {
            let root = vm.root_id;
            self.retire_root(worker, &mut vm, root);
        }
        self.settle(worker, &mut vm, "proxy_on_configure");
        Ok(vm)
    }

    /// Creates root context `root`, runs `proxy_on_vm_start` and `proxy_on_configure`;
    /// `true` when both succeeded.
    pub(super) fn start_root(
        &mut self,
        worker: usize,
        vm: &mut Vm,
        root: u32,
        config: &[u8],
    ) -> bool {
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
    pub(super) fn call<P: WasmParams, R: WasmResults>(
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
        vm.arm(&self.env.limits);
        let result = func.call(&mut vm.store, params);
        vm.disarm();
        match result {
            Ok(value) => Called::Returned(value),
            Err(error) => {
                vm.failed = true;
                vm.failed_at = self.clock.elapsed();
                let message = crate::limits::trap_message(&error, &self.env.limits);
                state::lock(&self.shared).failures.push(Failure {
                    worker,
                    callback: name.to_owned(),
                    message,
                });
                Called::Trapped
            }
        }
    }

    /// Runs `f` with VM `worker` taken out of `self` (so `self` stays usable).
    pub(super) fn with_vm<T>(
        &mut self,
        worker: usize,
        f: impl FnOnce(&mut Plugin, &mut Vm) -> T,
    ) -> Result<T> {
        let slot = self
            .vms
            .get_mut(worker)
            .ok_or_else(|| usage(format!("no VM {worker}")))?;
        let mut vm = slot
            .take()
            .ok_or_else(|| usage(format!("VM {worker} is busy (re-entered)")))?;
        let result = f(self, &mut vm);
        self.vms[worker] = Some(vm);
        Ok(result)
    }

    pub(super) fn vm(&self, worker: usize) -> Option<&Vm> {
        self.vms.get(worker)?.as_ref()
    }

    /// An Envoy configuration update (ECDS), as Envoy 1.40 does it (measured):
    ///
    /// 1. a new configuration canary runs `proxy_on_configure` with `config`; if it
    ///    fails, the update is rejected (`false`) and no running VM is touched;
    /// 2. otherwise every live VM (the main thread's and the workers') gets a new root
    ///    context (the VM's next free context id): `proxy_on_context_create(root, 0)`,
    ///    `proxy_on_vm_start` again, `proxy_on_configure`; then the old root context gets
    ///    `proxy_on_done` and `proxy_on_delete`. A VM whose new root fails to configure
    ///    has both retired and skips the filter from then on (still `true`: Envoy
    ///    accepted the update).
    ///
    /// When no configuration was accepted before, the VMs start now.
    ///
    /// The demo filter refuses the configuration `reject`:
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// let mut plugin = Plugin::builder(&module).plugin_config(b"{}").build()?;
    /// assert_eq!(plugin.root_context_id(0), Some(1));
    /// let configured = |plugin: &Plugin| plugin.logs().iter().filter(|l| l.message == "configured").count();
    /// assert_eq!(configured(&plugin), 3); // the canary, the main thread's VM, worker 0
    ///
    /// // Refused by a new canary: the running VMs keep their root context and config.
    /// assert!(!plugin.reconfigure(b"reject")?);
    /// assert!(plugin.configured());
    /// assert_eq!(plugin.root_context_id(0), Some(1));
    /// assert_eq!(configured(&plugin), 3);
    ///
    /// // Accepted: every VM configures a new root context.
    /// assert!(plugin.reconfigure(br#"{"v": 2}"#)?);
    /// assert_eq!(plugin.root_context_id(0), Some(2));
    /// assert_eq!(plugin.root_context_id(plugin.main_vm()), Some(2));
    /// assert_eq!(configured(&plugin), 6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reconfigure(&mut self, config: &[u8]) -> Result<bool> {
        if !self.run_canary(config)? {
            return Ok(false);
        }
        self.plugin_config = config.to_vec();
        if !self.accepted || self.vms.is_empty() {
            self.accepted = true;
            self.start_thread_vms()?;
            return Ok(true);
        }
        // The main thread's VM first, then the workers'.
        let order: Vec<usize> = std::iter::once(self.main_vm())
            .chain(0..self.workers)
            .collect();
        for worker in order {
            self.with_vm(worker, |p, vm| {
                if vm.failed {
                    return;
                }
                let old = vm.configured.then_some(vm.root_id);
                let root = vm.store.data_mut().alloc_context_id();
                vm.store.data_mut().roots.insert(root, RootState::default());
                let ok = p.start_root(worker, vm, root, config);
                if ok {
                    vm.root_id = root;
                    vm.configured = true;
                } else {
                    p.retire_root(worker, vm, root);
                    vm.configured = false;
                }
                if let Some(old) = old {
                    p.retire_root(worker, vm, old);
                }
                p.settle(worker, vm, "proxy_on_configure");
            })?;
        }
        Ok(true)
    }

    pub(super) fn retire_root(&mut self, worker: usize, vm: &mut Vm, root: u32) {
        let r = root as i32;
        let done = vm.exports.on_done.clone();
        self.call(vm, worker, "proxy_on_done", root, done, r);
        let delete = vm.exports.on_delete.clone();
        self.call(vm, worker, "proxy_on_delete", root, delete, r);
        vm.store.data_mut().roots.remove(&root);
    }

    /// Moves the harness clock forward and delivers, in time order, `proxy_on_tick` to
    /// every root context whose tick period elapsed (once per elapsed period, the main
    /// thread's VM's included) and the timeout of every unanswered HTTP callout and
    /// unfinished gRPC call whose deadline passed
    /// ([`HttpCallout::deadline`](crate::HttpCallout::deadline),
    /// [`GrpcCallout::deadline`](crate::GrpcCallout::deadline); see
    /// [`Plugin::time_out_http_call`], [`Plugin::time_out_grpc_call`]), as in Envoy. At the
    /// same instant a timeout comes before a tick.
    ///
    /// ```
    /// use std::time::Duration;
    /// use proxy_wasm_host::{Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
    /// // The demo filter asks for a tick every second and logs `tick`.
    /// let mut plugin = Plugin::builder(&module).build()?;
    /// let ticks = |plugin: &Plugin| plugin.logs().iter().filter(|l| l.message == "tick").count();
    /// plugin.advance(Duration::from_millis(999))?;
    /// assert_eq!(ticks(&plugin), 0);
    /// // One advance over three periods: three ticks on worker 0 and three on the main
    /// // thread's VM, each at its time.
    /// plugin.advance(Duration::from_millis(2501))?;
    /// assert_eq!(ticks(&plugin), 6);
    /// assert_eq!(plugin.elapsed(), Duration::from_millis(3500));
    /// # Ok(())
    /// # }
    /// ```
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        let target = self.clock.elapsed() + by;
        loop {
            let timeout = {
                let shared = self.shared();
                let http = shared
                    .http_callouts
                    .iter()
                    .filter_map(|c| Some((c.deadline()?, c.token, false)));
                let grpc = shared
                    .grpc_callouts
                    .iter()
                    .filter_map(|c| Some((c.deadline()?, c.token, true)));
                http.chain(grpc).filter(|(at, ..)| *at <= target).min()
            };
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
            if let Some((at, token, grpc)) =
                timeout.filter(|(at, ..)| due.is_none_or(|d| *at <= d.0))
            {
                self.clock.set_elapsed(at);
                if grpc {
                    self.time_out_grpc_call(token)?;
                } else {
                    self.time_out_http_call(token)?;
                }
                continue;
            }
            let Some((at, worker, root)) = due else {
                break;
            };
            if self.ticks >= self.env.limits.ticks {
                return Err(Error::Limit(format!(
                    "the module's ticks: {} fired, the harness's limit per plugin, with {:?} of this advance left (raise it with --ticks-per-plugin)",
                    self.ticks,
                    target.saturating_sub(at)
                )));
            }
            self.ticks += 1;
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

    /// Under [`FailStrategy::FailReload`]: replaces a dead VM with a fresh one (its
    /// streams fail closed).
    pub(super) fn reload(&mut self, worker: usize) -> Result<()> {
        let vm = self.start_vm(worker)?;
        let Some(old) = self.vms.get_mut(worker).and_then(|slot| slot.replace(vm)) else {
            return Err(usage(format!("no worker {worker}")));
        };
        for (id, mut state) in old.store.into_data().streams {
            super::flow::fail_closed(&mut state, Some(self.clock.now()));
            self.orphans.insert((worker, id, old.generation), state);
        }
        self.reloads += 1;
        Ok(())
    }
}
