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

use super::host;
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
            self.roots.retain(|(r, _)| *r != id);
        }
    }
}
