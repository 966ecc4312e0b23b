//! Where an Envoy's resident memory goes, read from outside the process:
//! `/proc/PID/smaps` (file-backed vs anonymous pages), the admin's
//! `/memory` (tcmalloc, Envoy's allocator: bytes in use, and bytes it keeps
//! free without returning them), `/stats` (how many Wasm VMs) and the
//! filter's own gauge (its VMs' linear memory).
//!
//! Measured on Envoy 1.40 (BENCHMARKS.md, start-up): with a Wasm filter
//! most of what a VM adds is not in use. V8 compiles the whole module with
//! TurboFan at load (proxy-wasm-cpp-host turns Liftoff off), its compiler's
//! memory is freed after, and tcmalloc keeps those pages.
//!
//! Read the same way for the replica's Envoys (`hybridmesh bench`) and the
//! Istio lab's sidecars (`hybridmesh-lab`, whose admin is reached inside the
//! pod's network namespace): [`Footprint::read`] takes the admin as a
//! function.

use crate::process::Envoy;

/// The filter's gauge of its linear memory, every VM's summed (each VM that
/// ticks adds its own; flushed every
/// `metricsFlushInterval`, 1 s by default).
pub const LINEAR_MEMORY_STAT: &str = "wasmcustom.hybridmesh_vm_memory_bytes";

/// Envoy's gauge of the Wasm VMs alive.
pub const VMS_STAT: &str = "wasm.envoy.wasm.runtime.v8.active";

/// One process's memory at one moment, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Footprint {
    /// VmRSS.
    pub rss: u64,
    /// Resident pages of mapped files: Envoy's binary (V8's compiler among
    /// its code) and shared libraries.
    pub files: u64,
    /// Resident anonymous pages: the allocator's heap, V8's heaps, the VMs'
    /// linear memories, thread stacks.
    pub anonymous: u64,
    /// tcmalloc: bytes allocated and not freed.
    pub in_use: u64,
    /// tcmalloc: bytes freed and kept (page heap and thread caches), still
    /// resident.
    pub kept_free: u64,
    /// Wasm VMs alive ([`VMS_STAT`]).
    pub vms: u64,
    /// The filter's linear memory, every ticking VM's summed (its gauge; 0:
    /// not the filter, or not read). The module starts with 17 pages (1.06
    /// MiB: 16 of them Rust's stack) and stays there: 2 VMs on one worker
    /// read 2.12 MiB, 3 on two workers 3.19.
    pub linear: u64,
}

impl Footprint {
    /// Reads `e` now; `ours`: also wait (up to 3 s) for the filter's
    /// linear-memory gauge.
    pub fn of(e: &Envoy, ours: bool) -> Footprint {
        Footprint::read(
            e.pid,
            |path| {
                crate::http::get(e.admin, &format!("/{path}"))
                    .ok()
                    .map(|r| r.text())
            },
            ours,
        )
    }

    /// Reads the Envoy process `pid` now, its admin through `admin` (`GET
    /// /<path>` -> the body, `None` when it did not answer); `ours`: also
    /// wait (up to 3 s) for the filter's linear-memory gauge.
    pub fn read(pid: u32, admin: impl Fn(&str) -> Option<String>, ours: bool) -> Footprint {
        let stat = |name: &str| -> Option<u64> {
            let text = admin(&format!("stats?filter={}", crate::process::urlencode(name)))?;
            crate::process::stat_in(&text, name)
        };
        let mut f = Footprint::default();
        let mut linear = 0;
        let asked = std::time::Instant::now();
        while ours && linear == 0 && asked.elapsed() < std::time::Duration::from_secs(3) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            linear = stat(LINEAR_MEMORY_STAT).unwrap_or(0);
        }
        f.linear = linear;
        f.vms = stat(VMS_STAT).unwrap_or(0);
        if let Some(text) = admin("memory") {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let n = |k: &str| {
                v[k].as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            f.in_use = n("allocated");
            f.kept_free = n("pageheap_free") + n("total_thread_cache");
        }
        (f.files, f.anonymous) = smaps(pid);
        f.rss = crate::load::rss_kib(pid).map_or(0, |k| k * 1024);
        f
    }

    /// `108.2MiB (3 VMs, ...)` for a progress line.
    pub fn line(&self) -> String {
        format!(
            "{:.1}MiB ({} VMs, linear {:.2}, files {:.1}, anonymous {:.1}: in use {:.1}, kept free {:.1})",
            mib(self.rss),
            self.vms,
            mib(self.linear),
            mib(self.files),
            mib(self.anonymous),
            mib(self.in_use),
            mib(self.kept_free),
        )
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Resident bytes of file-backed and of anonymous mappings.
fn smaps(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return (0, 0);
    };
    let (mut files, mut anonymous, mut file) = (0, 0, false);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // address perms offset dev inode [path]
            file = fields.nth(4).is_some_and(|p| p.starts_with('/'));
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|k| k.parse().ok()).unwrap_or(0);
            if file {
                files += kib * 1024;
            } else {
                anonymous += kib * 1024;
            }
        }
    }
    (files, anonymous)
}
