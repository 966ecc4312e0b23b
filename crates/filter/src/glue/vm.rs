//! The VM's contexts: root contexts (one per plugin configuration the proxy
//! gives this VM) and streams (one per HTTP request, tied to its root).
//!
//! A stream's [`StreamState`] comes from a pool and goes back to it when the
//! proxy deletes the stream, so its buffers are reused: the steady state
//! allocates nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hybridmesh_filter_core::decide::{fnv1a, FNV_OFFSET};
use hybridmesh_filter_core::flow::{Level, Scratch, StreamState};
use hybridmesh_filter_core::metrics::VM_MEMORY_GAUGE;

use super::host;
use super::memory;
use super::root::Root;

/// FNV-1a as a [`Hasher`]: small and fast for context ids and metric keys
/// (bounded in number, not attacker-chosen).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(self.0, bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

pub struct Stream {
    /// The root context (plugin configuration) this stream belongs to.
    pub root: u32,
    pub state: StreamState,
    /// The request went through the flow (else the response is left alone).
    pub started: bool,
}

/// At most this many stream states are kept for reuse.
const POOL: usize = 1024;

#[derive(Default)]
pub struct Vm {
    pub roots: Vec<(u32, Root)>,
    pub streams: FnvMap<u32, Stream>,
    pool: Vec<StreamState>,
    pub scratch: Scratch,
    pub log: Log,
    pub memory: MemoryGauge,
}

/// This VM's share of [`VM_MEMORY_GAUGE`]: one per VM, not per root
/// context, reported on ticks only. Envoy gives every configuration a new
/// root context in the same VM, and first configures it in a canary VM that
/// never ticks and is dropped without a callback; a share per root, reported
/// at configure too, counted the VM's memory again at every push and kept
/// each canary's (the replica's walk-through read 22-32 MB per proxy for VMs
/// of 3 MB).
#[derive(Default)]
pub struct MemoryGauge {
    id: Option<u32>,
    reported: u64,
}

impl MemoryGauge {
    /// Adds what the linear memory grew by since the last report.
    pub fn report(&mut self, log: &mut Log) {
        self.set(memory::linear_memory_bytes(), log);
    }

    /// Takes this VM's share out of the gauge: its last root context is
    /// gone, and with it the plugin from this VM.
    pub fn retire(&mut self, log: &mut Log) {
        self.set(0, log);
    }

    fn set(&mut self, now: u64, log: &mut Log) {
        if now == self.reported {
            return;
        }
        let id = match self.id {
            Some(id) => id,
            None => match host::define_gauge(VM_MEMORY_GAUGE) {
                Ok(id) => *self.id.insert(id),
                Err(s) => {
                    log.line(
                        Level::Debug,
                        &format!("define_metric (gauge) failed: {s:?}"),
                    );
                    return;
                }
            },
        };
        let delta = i64::try_from(now).unwrap_or(i64::MAX)
            - i64::try_from(self.reported).unwrap_or(i64::MAX);
        if host::add(id, delta).is_ok() {
            self.reported = now;
        }
    }
}

/// Log lines at the proxy's level (followed on configure and on tick, so
/// `/logging?wasm=debug` takes effect at run time); disabled levels cost no
/// host call and no formatting.
pub struct Log {
    pub level: Level,
    line: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: Level::Info,
            line: String::new(),
        }
    }
}

impl Log {
    pub fn enabled(&self, level: Level) -> bool {
        level >= self.level
    }

    /// `hybridmesh: <message>` at `level`.
    pub fn line(&mut self, level: Level, message: &str) {
        if !self.enabled(level) {
            return;
        }
        self.line.clear();
        self.line.push_str("hybridmesh: ");
        self.line.push_str(message);
        host::log(level, &self.line);
    }

    /// Follows the proxy's log level.
    pub fn sync(&mut self) {
        self.level = match host::log_level() {
            Ok(Level::Critical) => Level::Error,
            Ok(l) => l,
            Err(_) => Level::Info,
        };
    }
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
}

/// Runs `f` on the VM's state. `None` when the state is already in use (a
/// callback the proxy made from inside one of ours): the caller then does
/// nothing rather than panic.
pub fn with<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.with(|vm| vm.try_borrow_mut().ok().map(|mut vm| f(&mut vm)))
}

impl Vm {
    pub fn create(&mut self, id: u32, parent: u32) {
        if parent == 0 {
            self.roots.retain(|(r, _)| *r != id);
            self.roots.push((id, Root::new(id)));
        } else {
            let state = self.pool.pop().unwrap_or_default();
            self.streams.insert(
                id,
                Stream {
                    root: parent,
                    state,
                    started: false,
                },
            );
        }
    }

    pub fn delete(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            if self.pool.len() < POOL {
                self.pool.push(s.state);
            }
        } else {
            // A root goes when its configuration is replaced (or the plugin
            // removed), possibly before its next tick: what it counted since
            // the last one is flushed now, not lost.
            if let Some((_, root)) = self.roots.iter_mut().find(|(r, _)| *r == id) {
                root.metrics.flush();
            }
            self.roots.retain(|(r, _)| *r != id);
            if self.roots.is_empty() {
                self.memory.retire(&mut self.log);
            }
        }
    }
}
