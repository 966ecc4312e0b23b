//! The process-wide wasmtime engine and linker, and [`Module`]: a compiled proxy-wasm
//! module (compiled once per process for the same bytes).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtxBuilder;

use crate::abi;
use crate::envoy::{PluginIdentity, Proxy, RouteTable};
use crate::error::{Error, Result};
use crate::host::{Clock, HostState, PluginEnv};
use crate::state::Level;

/// Whether the process-wide engine uses wasmtime's pooling allocator: yes unless
/// `HYBRIDMESH_POOLING=0`. Measured on the SDK probe filter:
/// a fresh plugin costs ~23 µs pooled vs ~32 µs on demand; requests/s are the same.
fn pooling() -> bool {
    std::env::var("HYBRIDMESH_POOLING").map_or(true, |v| v != "0")
}

fn host_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Host(format!("{context}: {e}"))
}

pub(crate) fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    // Wasm backtraces are on by default: a trap is reported with its guest frames.
    let mut config = Config::new();
    // Every guest call runs under an epoch deadline (crate::limits).
    config.epoch_interruption(true);
    if pooling() {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(1000)
            .total_tables(1000)
            .total_core_instances(1000);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config)
        .map_err(|e| host_error("failed to create the wasmtime engine", abi::to_anyhow(e)))?;
    let engine = ENGINE.get_or_init(|| engine);
    crate::limits::start_ticker(engine);
    Ok(engine)
}

fn linker() -> Result<&'static Linker<HostState>> {
    static LINKER: OnceLock<Linker<HostState>> = OnceLock::new();
    if let Some(linker) = LINKER.get() {
        return Ok(linker);
    }
    let mut linker = Linker::new(engine()?);
    abi::add_to_linker(&mut linker)
        .map_err(|e| host_error("failed to define the host functions", format!("{e:#}")))?;
    Ok(LINKER.get_or_init(|| linker))
}

/// A compiled proxy-wasm module, ready to instantiate cheaply. Cloning is cheap.
///
/// ```
/// use proxy_wasm_host::{Error, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat");
/// let module = Module::from_file(path)?;
/// assert_eq!(module.name(), path);
/// assert!(Plugin::builder(&module).build()?.configured());
///
/// // The same text from memory: named `<bytes>`, or as the test says.
/// let text = std::fs::read(path)?;
/// assert_eq!(Module::from_bytes(&text)?.name(), "<bytes>");
/// assert_eq!(Module::from_named_bytes("demo.wat", &text)?.name(), "demo.wat");
///
/// // What does not load says which module it was.
/// assert!(matches!(
///     Module::from_named_bytes("broken.wasm", b"\0asm\x01\0\0\0\x05"),
///     Err(Error::Compile { ref module, .. }) if module == "broken.wasm"
/// ));
/// assert!(matches!(
///     Module::from_bytes(br#"(module (import "env" "proxy_teleport" (func)))"#),
///     Err(Error::UnknownImports { ref imports, .. }) if imports == &["env.proxy_teleport"]
/// ));
/// assert!(matches!(Module::from_file("no/such/filter.wasm"), Err(Error::Read { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub(crate) name: String,
    pub(crate) pre: InstancePre<HostState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Module {
    /// Loads a `.wasm` (or `.wat`) file: a regular file of at most 256 MiB, the
    /// largest module Istio's agent takes ([`hybridmesh_input::MODULE`]). The same
    /// path with the same content is compiled once per process.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Module> {
        let path = path.as_ref();
        let bytes = hybridmesh_input::read(path, hybridmesh_input::MODULE).map_err(|source| {
            Error::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Module::load(path.display().to_string(), &bytes)
    }

    /// Loads a module from bytes (binary or WAT text), compiled once per process per content.
    pub fn from_bytes(bytes: &[u8]) -> Result<Module> {
        Module::load("<bytes>".to_owned(), bytes)
    }

    /// [`Module::from_bytes`], named `name` in errors (e.g. the path the bytes came from).
    pub fn from_named_bytes(name: &str, bytes: &[u8]) -> Result<Module> {
        Module::load(name.to_owned(), bytes)
    }

    /// Where the module came from (a path or `<bytes>`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn load(name: String, bytes: &[u8]) -> Result<Module> {
        /// (name, content hash, length) -> compiled module.
        type Cache = Mutex<HashMap<(String, u64, usize), Module>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = (name.clone(), hasher.finish(), bytes.len());
        let cache = CACHE.get_or_init(Mutex::default);
        if let Some(module) = cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(module.clone());
        }
        let module = Module::compile(name, bytes)?;
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, module.clone());
        Ok(module)
    }

    fn compile(name: String, bytes: &[u8]) -> Result<Module> {
        let engine = engine()?;
        let module = wasmtime::Module::new(engine, bytes).map_err(|e| Error::Compile {
            module: name.clone(),
            message: format!("{:#}", abi::to_anyhow(e)),
        })?;
        let linker = linker()?;
        let mut store = Store::new(engine, scratch_state());
        let missing: Vec<String> = module
            .imports()
            .filter(|import| linker.get_by_import(&mut store, import).is_none())
            .map(|import| format!("{}.{}", import.module(), import.name()))
            .collect();
        if !missing.is_empty() {
            return Err(Error::UnknownImports {
                module: name,
                imports: missing,
            });
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Instantiate {
                module: name.clone(),
                message: format!(
                    "imports do not match the host's signatures: {:#}",
                    abi::to_anyhow(e)
                ),
            })?;
        Ok(Module {
            inner: Arc::new(ModuleInner { name, pre }),
        })
    }
}

/// A throw-away host state, to resolve imports against the linker.
fn scratch_state() -> HostState {
    let env = Arc::new(PluginEnv {
        proxy: Proxy::default(),
        identity: PluginIdentity::default(),
        routes: RouteTable::default(),
        clusters: Default::default(),
        log_level: Level::Trace,
        trace: false,
        vm_config: Vec::new(),
        seed: 0,
        limits: crate::Limits::default(),
    });
    let clock = Clock::new(Duration::ZERO);
    let wasi = WasiCtxBuilder::new().build_p1();
    HostState::new(wasi, Arc::default(), env, clock, 0)
}
