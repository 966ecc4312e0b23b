//! The root context: configure (parse, resolve identity, compile), metrics flush.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::host;
use super::http::Http;
use hybridmesh_filter_core::decide::{fnv1a, mix, Rng, FNV_OFFSET};
use hybridmesh_filter_core::flow::{Effects, Filter, Level};
use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::metrics::LabelGuard;

/// State shared by the root context and its HTTP contexts (one worker VM).
pub struct Shared {
    pub filter: Option<Rc<Filter>>,
    pub rng: Rng,
    pub metrics: Metrics,
    pub memory: MemoryGauge,
}

/// This VM's share of [`hybridmesh_filter_core::metrics::VM_MEMORY_GAUGE`].
#[derive(Default)]
pub struct MemoryGauge {
    id: Option<u32>,
    reported: u64,
}

impl MemoryGauge {
    /// Adds what the linear memory grew by since the last report.
    pub fn report(&mut self) {
        let id = match self.id {
            Some(id) => id,
            None => match host::define_gauge(hybridmesh_filter_core::metrics::VM_MEMORY_GAUGE) {
                Ok(id) => *self.id.insert(id),
                Err(s) => {
                    log::debug!("hybridmesh: define_metric (gauge) failed: {s:?}");
                    return;
                }
            },
        };
        let now = host::linear_memory_bytes();
        if now != self.reported {
            let delta = i64::try_from(now).unwrap_or(i64::MAX)
                - i64::try_from(self.reported).unwrap_or(i64::MAX);
            if host::add(id, delta).is_ok() {
                self.reported = now;
            }
        }
    }
}

/// FNV-1a as a [`Hasher`]: small and fast for the few metric keys of a VM
/// (bounded labels, not attacker-chosen in number).
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

/// Counters, buffered per VM and flushed on tick (or at once when the flush
/// interval is 0), so a request costs no metric host call.
#[derive(Default)]
pub struct Metrics {
    /// Metric ids by counter: a request costs a hash, not a formatted name.
    ids: HashMap<hybridmesh_filter_core::metrics::Counter, u32, BuildHasherDefault<Fnv>>,
    pending: BTreeMap<u32, u64>,
    guard: LabelGuard,
    immediate: bool,
}

impl Metrics {
    pub fn record(&mut self, effects: &Effects) {
        for c in &effects.counters {
            let c = self.bounded(c);
            let id = match self.ids.get(&c) {
                Some(id) => *id,
                None => match host::define_counter(&c.name()) {
                    Ok(id) => {
                        self.ids.insert(c, id);
                        id
                    }
                    Err(s) => {
                        log::debug!("hybridmesh: define_metric {} failed: {s:?}", c.name());
                        continue;
                    }
                },
            };
            if self.immediate {
                let _ = host::increment(id, 1);
            } else {
                *self.pending.entry(id).or_insert(0) += 1;
            }
        }
    }

    fn bounded(
        &mut self,
        c: &hybridmesh_filter_core::metrics::Counter,
    ) -> hybridmesh_filter_core::metrics::Counter {
        use hybridmesh_filter_core::metrics::Counter;
        match c {
            Counter::Requests {
                source,
                destination,
                decision,
                cross_network,
            } => Counter::Requests {
                source: self.guard.label(Some(source)),
                destination: self.guard.label(Some(destination)),
                decision,
                cross_network: *cross_network,
            },
            Counter::Ejections { destination } => Counter::Ejections {
                destination: self.guard.label(Some(destination)),
            },
            Counter::Denied { source } => Counter::Denied {
                source: self.guard.label(Some(source)),
            },
            Counter::Spoofed { direction } => Counter::Spoofed {
                direction: *direction,
            },
            Counter::HopChain { problem } => Counter::HopChain { problem },
        }
    }

    pub fn flush(&mut self) {
        for (id, n) in std::mem::take(&mut self.pending) {
            let _ = host::increment(id, n);
        }
    }
}

pub fn emit_logs(effects: &Effects) {
    for (level, line) in &effects.logs {
        log::log!(to_log_level(*level), "hybridmesh: {line}");
    }
}

pub fn to_log_level(level: Level) -> log::Level {
    match level {
        Level::Trace => log::Level::Trace,
        Level::Debug => log::Level::Debug,
        Level::Info => log::Level::Info,
        Level::Warn => log::Level::Warn,
        Level::Error | Level::Critical => log::Level::Error,
    }
}

/// Tick period when metrics flush on every request: the log level is still followed.
const DEFAULT_TICK_MS: u64 = 1000;

pub struct Root {
    context_id: u32,
    shared: Rc<RefCell<Shared>>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: Rc::new(RefCell::new(Shared {
                filter: None,
                rng: Rng::new(u64::from(context_id)),
                metrics: Metrics::default(),
                memory: MemoryGauge::default(),
            })),
        }
    }
}

/// A node property, from Envoy 1.40's `xds.node` paths or, for older proxies, `node`.
fn node_property(path: &[&str]) -> Option<String> {
    let mut xds = vec!["xds", "node"];
    xds.extend_from_slice(path);
    let mut legacy = vec!["node"];
    legacy.extend_from_slice(path);
    [xds, legacy].iter().find_map(|p| {
        host::get_property(p)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    })
}

fn node_facts() -> NodeFacts {
    let part = |k: &str| node_property(&["locality", k]).unwrap_or_default();
    NodeFacts {
        cluster: node_property(&["metadata", "CLUSTER_ID"]),
        network: node_property(&["metadata", "NETWORK"]),
        locality: Locality::new(&part("region"), &part("zone"), &part("sub_zone")),
        namespace: node_property(&["metadata", "NAMESPACE"]),
    }
}

impl Root {
    /// The closing line of a rejected config. Envoy builds a new root context
    /// for each config, so this one cannot tell whether an older config exists:
    /// the line says what Envoy does in both cases.
    fn rejected(&self, problems: usize) {
        let plural = if problems == 1 { "" } else { "s" };
        log::error!(
            "hybridmesh: plugin config rejected ({problems} problem{plural}); Envoy keeps the previous config, and without one the plugin cannot start"
        );
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        host::sync_log_level();
        let bytes = match host::plugin_configuration(plugin_configuration_size) {
            Ok(b) => b,
            Err(s) => {
                log::error!(
                    "hybridmesh: cannot read the plugin configuration (status {})",
                    s.0
                );
                self.rejected(1);
                return false;
            }
        };
        let cfg = match hybridmesh_filter_core::config::parse_json(&bytes) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    log::error!("hybridmesh: invalid plugin config: {e}");
                }
                self.rejected(errors.0.len());
                return false;
            }
        };
        let filter = match Filter::new(cfg, &node_facts()) {
            Ok(f) => f,
            Err(issue) => {
                log::error!("hybridmesh: invalid plugin config: {issue}");
                self.rejected(1);
                return false;
            }
        };
        for w in &filter.warnings {
            log::warn!("hybridmesh: {w}");
        }
        // The tick flushes metrics and follows the proxy's log level (which an
        // operator changes at run time with /logging?wasm=debug).
        let flush_ms = filter.cfg.metrics_flush_ms;
        let tick_ms = if flush_ms > 0 {
            flush_ms
        } else {
            DEFAULT_TICK_MS
        };
        let ticking = host::set_tick_period_ms(u32::try_from(tick_ms).unwrap_or(u32::MAX));
        if let Err(s) = ticking {
            log::warn!(
                "hybridmesh: cannot set the tick period (status {}); metrics flush on every request",
                s.0
            );
        }
        log::info!(
            "hybridmesh: configured cluster={} network={} locality={} namespace={} direction={:?} routes={}",
            filter.me.cluster,
            if filter.me.network.is_empty() { "-" } else { &filter.me.network },
            if filter.me.locality.is_empty() { "-".to_string() } else { filter.me.locality.to_string() },
            if filter.me.namespace.is_empty() { "-" } else { &filter.me.namespace },
            filter.cfg.direction,
            filter.cfg.routes.len()
        );
        let seed = host::now_ns().unwrap_or(0) ^ mix(u64::from(self.context_id));
        let mut sh = self.shared.borrow_mut();
        sh.metrics.flush();
        sh.metrics.immediate = flush_ms == 0 || ticking.is_err();
        sh.metrics.guard = LabelGuard::new(
            filter
                .cfg
                .clusters
                .iter()
                .map(|c| c.name.clone())
                .chain(std::iter::once(filter.me.cluster.clone())),
        );
        sh.rng = Rng::new(seed);
        sh.filter = Some(Rc::new(filter));
        sh.memory.report();
        true
    }

    fn on_tick(&mut self) {
        host::sync_log_level();
        let mut sh = self.shared.borrow_mut();
        sh.metrics.flush();
        sh.memory.report();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let filter = self.shared.borrow().filter.clone();
        Some(Box::new(Http::new(self.shared.clone(), filter)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
