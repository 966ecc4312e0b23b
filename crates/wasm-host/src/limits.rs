//! What a module under test may use: time per guest call, linear memory per VM,
//! and log entries kept per request. Envoy sets none of these (a looping filter
//! stalls its worker for good; V8 lets a module grow to 4 GiB); a test harness
//! must, or a test of a broken module never ends.
//!
//! * Time: every guest call (and the start function) runs under an epoch deadline.
//!   One thread per process advances wasmtime's epoch every [`TICK`]; a call still
//!   running after [`Limits::call_time`] traps, and the failure says which limit
//!   it hit and how to raise it.
//! * Memory: a VM whose linear memory would grow past [`Limits::memory`] traps
//!   the same way.
//! * Ticks: a plugin fires at most [`Limits::ticks`] `proxy_on_tick` calls in its
//!   life; an `advance` that would fire more stops with [`crate::Error::Limit`]
//!   (a 1 ms tick period makes one simulated day 86.4 million calls).
//! * Logs: at most [`Limits::logs`] entries are kept per request (per stream
//!   context; per guest call for the root context's callbacks). The rest are
//!   counted, and one warning entry says how many were not kept.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the granularity of [`Limits::call_time`].
pub const TICK: Duration = Duration::from_millis(10);

/// The most worker VMs one plugin may have (Envoy's workers; the pooling allocator
/// holds 1,000 instances for the whole process).
pub const MAX_WORKERS: usize = 256;

/// What a module under test may use. [`Limits::default`] is what `hybridmesh test`
/// and `simulate` use unless told otherwise.
///
/// # Examples
///
/// The demo filter asks for a tick every second, on the worker's and on the main
/// thread's root context: a plugin allowed 3 ticks runs out in the second second.
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Error, Limits, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// assert_eq!(
///     Limits::default(),
///     Limits {
///         call_time: Duration::from_secs(10),
///         memory: 512 << 20,
///         logs: 10_000,
///         ticks: 1_000_000,
///     }
/// );
/// let limits = Limits { ticks: 3, ..Limits::default() };
/// let mut plugin = Plugin::builder(&module).limits(limits).build()?;
/// plugin.advance(Duration::from_secs(1))?; // two ticks
/// let err = plugin.advance(Duration::from_secs(1)).unwrap_err();
/// assert!(matches!(err, Error::Limit(_)), "{err}");
/// assert!(err.to_string().contains("raise it with --ticks-per-plugin"), "{err}");
/// # Ok(())
/// # }
/// ```
///
/// A call that runs past [`Limits::call_time`] traps, and the failure says so (here a
/// tiny filter that loops forever on request headers):
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Limits, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_bytes(br#"(module
///     (memory (export "memory") 1)
///     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
///     (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
///       (loop $forever (br $forever)) i32.const 0))"#)?;
/// let limits = Limits { call_time: Duration::from_millis(100), ..Limits::default() };
/// let mut plugin = Plugin::builder(&module).limits(limits).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
/// assert_eq!(s.client_response_status(), Some(503));
/// let failure = &plugin.failures()[0];
/// assert!(failure.message.contains("ran longer than 100ms"), "{}", failure.message);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall time one guest call may run (default 10 s).
    pub call_time: Duration,
    /// Bytes of linear memory one VM may have (default 512 MiB).
    pub memory: u64,
    /// Log entries kept per request (default 10,000).
    pub logs: usize,
    /// `proxy_on_tick` calls one plugin may fire in its life (default 1,000,000).
    pub ticks: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            call_time: Duration::from_secs(10),
            memory: 512 << 20,
            logs: 10_000,
            ticks: 1_000_000,
        }
    }
}

impl Limits {
    /// The epoch deadline, in ticks, for one call.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = TICK.as_nanos().max(1);
        let ticks = self.call_time.as_nanos().div_ceil(tick);
        // One more: the first tick may come at once.
        u64::try_from(ticks)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

/// Starts the thread that advances `engine`'s epoch (once per process).
pub(crate) fn start_ticker(engine: &Engine) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let engine = engine.clone();
        // A thread that cannot start leaves calls without a deadline to trip; the
        // deadline is then never reached, which is how the harness ran before limits.
        let _ = std::thread::Builder::new()
            .name("wasm-epoch".to_owned())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            });
    });
}

/// The memory limit as wasmtime's store limiter sees it.
#[derive(Debug)]
pub(crate) struct MemoryLimit {
    pub bytes: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.bytes {
            wasmtime::bail!(
                "{} {} bytes, past the harness's memory limit of {} per VM (raise it with --memory-per-vm)",
                MEMORY_GROWTH,
                desired,
                hybridmesh_input::limit_text(self.bytes)
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// How a memory-limit trap starts.
pub(crate) const MEMORY_GROWTH: &str = "the module grew its linear memory to";

/// What a call that trapped on its deadline ran past, as one line.
pub(crate) fn time_limit_hit(error: &wasmtime::Error, limits: &Limits) -> Option<String> {
    matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
    .then(|| {
        format!(
            "ran longer than {:?}, the harness's limit per call (an endless loop?; raise it with --time-per-call)",
            limits.call_time
        )
    })
}

/// A trap's message: its whole error chain, ending with the limit when one was
/// hit (the last line is the reason, as a trap's own chain has it).
pub(crate) fn trap_message(error: &wasmtime::Error, limits: &Limits) -> String {
    let mut message = error
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    if let Some(line) = time_limit_hit(error, limits) {
        message.push('\n');
        message.push_str(&line);
    }
    message
}
