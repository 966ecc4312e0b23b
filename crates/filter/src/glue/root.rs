//! A root context: configure (parse, resolve identity, compile), the tick
//! (metrics flush, log level), and the counters.

use std::rc::Rc;

use hybridmesh_filter_core::decide::{mix, Rng};
use hybridmesh_filter_core::flow::{Direction, Filter, Level};
use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::metrics::{decision_index, Counter, CounterRef, LabelGuard, DECISIONS};

use super::host;
use super::vm::{FnvMap, Log};

/// One plugin configuration in this VM.
pub struct Root {
    context_id: u32,
    pub filter: Option<Rc<Filter>>,
    pub rng: Rng,
    pub metrics: Metrics,
}

/// Counters, buffered per root and flushed on tick (or at once when the
/// flush interval is 0), so a request costs no metric host call. Each
/// counter's metric id is found by a small numeric key (labels as indices),
/// so a request costs a hash of a few bytes, not a formatted name.
#[derive(Default)]
pub struct Metrics {
    keys: FnvMap<u32, usize>,
    /// (metric id, increments not yet flushed).
    slots: Vec<(u32, u64)>,
    guard: LabelGuard,
    immediate: bool,
}

const PROBLEMS: [&str; 4] = ["malformed", "truncated", "oversized", "loop"];

impl Metrics {
    /// The counter's key: kind, then up to three small label indices.
    fn key(&mut self, c: &CounterRef<'_>) -> u32 {
        let pack = |kind: u32, a: usize, b: usize, c: usize| {
            kind | (a.min(255) as u32) << 4 | (b.min(255) as u32) << 12 | (c.min(255) as u32) << 20
        };
        match *c {
            CounterRef::Requests {
                source,
                destination,
                decision,
                cross_network,
            } => {
                let s = self.guard.index(Some(source));
                let d = self.guard.index(Some(destination));
                pack(
                    1,
                    s,
                    d,
                    decision_index(decision) * 2 + usize::from(cross_network),
                )
            }
            CounterRef::Ejections { destination } => {
                pack(2, self.guard.index(Some(destination)), 0, 0)
            }
            CounterRef::Denied { source } => pack(3, self.guard.index(Some(source)), 0, 0),
            CounterRef::Spoofed { direction } => {
                pack(4, usize::from(direction == Direction::Inbound), 0, 0)
            }
            CounterRef::HopChain { problem } => pack(
                5,
                PROBLEMS.iter().position(|p| *p == problem).unwrap_or(0),
                0,
                0,
            ),
            CounterRef::FailedOver {
                preferred,
                destination,
            } => {
                let p = self.guard.index(Some(preferred));
                let d = self.guard.index(Some(destination));
                pack(6, p, d, 0)
            }
        }
    }

    /// The counter a key stands for, its labels bounded (for its name).
    fn bounded(&self, key: u32) -> Option<Counter> {
        let a = ((key >> 4) & 0xff) as usize;
        let b = ((key >> 12) & 0xff) as usize;
        let c = ((key >> 20) & 0xff) as usize;
        let label = |i: usize| self.guard.name(i).to_string();
        Some(match key & 0xf {
            1 => Counter::Requests {
                source: label(a),
                destination: label(b),
                decision: DECISIONS.get(c / 2).copied().unwrap_or("none"),
                cross_network: c % 2 == 1,
            },
            2 => Counter::Ejections {
                destination: label(a),
            },
            3 => Counter::Denied { source: label(a) },
            4 => Counter::Spoofed {
                direction: if a == 1 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
            },
            5 => Counter::HopChain {
                problem: PROBLEMS.get(a).copied().unwrap_or("malformed"),
            },
            6 => Counter::FailedOver {
                preferred: label(a),
                destination: label(b),
            },
            _ => return None,
        })
    }

    pub fn record(&mut self, c: CounterRef<'_>, log: &mut Log) {
        let key = self.key(&c);
        let slot = match self.keys.get(&key) {
            Some(s) => *s,
            None => {
                let Some(counter) = self.bounded(key) else {
                    return;
                };
                let name = counter.name();
                match host::define_counter(&name) {
                    Ok(id) => {
                        self.slots.push((id, 0));
                        self.keys.insert(key, self.slots.len() - 1);
                        self.slots.len() - 1
                    }
                    Err(s) => {
                        log.line(Level::Debug, &format!("define_metric {name} failed: {s:?}"));
                        return;
                    }
                }
            }
        };
        let Some((id, pending)) = self.slots.get_mut(slot) else {
            return;
        };
        if self.immediate {
            let _ = host::increment(*id, 1);
        } else {
            *pending += 1;
        }
    }

    pub fn flush(&mut self) {
        for (id, pending) in &mut self.slots {
            if *pending > 0 {
                let _ = host::increment(*id, *pending);
                *pending = 0;
            }
        }
    }
}

/// Tick period when metrics flush on every request: the log level is still followed.
const DEFAULT_TICK_MS: u64 = 1000;

/// Paths of the node's properties: Envoy 1.40's `xds.node`, then older
/// proxies' `node` (parts joined with NUL, as the ABI takes them).
fn node_property(path: &str) -> Option<String> {
    ["xds\0node\0", "node\0"].iter().find_map(|prefix| {
        let full = format!("{prefix}{path}");
        host::get_property(&full)
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

fn node_facts() -> NodeFacts {
    let part = |k: &str| node_property(&format!("locality\0{k}")).unwrap_or_default();
    NodeFacts {
        cluster: node_property("metadata\0CLUSTER_ID"),
        network: node_property("metadata\0NETWORK"),
        locality: Locality::new(&part("region"), &part("zone"), &part("sub_zone")),
        namespace: node_property("metadata\0NAMESPACE"),
    }
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            filter: None,
            rng: Rng::new(u64::from(context_id)),
            metrics: Metrics::default(),
        }
    }

    /// The closing line of a rejected config. Envoy builds a new root context
    /// for each config, so this one cannot tell whether an older config exists:
    /// the line says what Envoy does in both cases.
    fn rejected(log: &mut Log, problems: usize) {
        let plural = if problems == 1 { "" } else { "s" };
        log.line(
            Level::Error,
            &format!(
                "plugin config rejected ({problems} problem{plural}); Envoy keeps the previous config, and without one the plugin cannot start"
            ),
        );
    }

    pub fn configure(&mut self, size: usize, log: &mut Log) -> bool {
        log.sync();
        let bytes = match host::plugin_configuration(size) {
            Ok(b) => b,
            Err(s) => {
                log.line(
                    Level::Error,
                    &format!("cannot read the plugin configuration (status {})", s.0),
                );
                Self::rejected(log, 1);
                return false;
            }
        };
        let cfg = match hybridmesh_filter_core::config::parse_json(bytes) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    log.line(Level::Error, &format!("invalid plugin config: {e}"));
                }
                Self::rejected(log, errors.0.len());
                return false;
            }
        };
        let filter = match Filter::new(cfg, &node_facts()) {
            Ok(f) => f,
            Err(issue) => {
                log.line(Level::Error, &format!("invalid plugin config: {issue}"));
                Self::rejected(log, 1);
                return false;
            }
        };
        for w in &filter.warnings {
            log.line(Level::Warn, &w.to_string());
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
            log.line(
                Level::Warn,
                &format!(
                    "cannot set the tick period (status {}); metrics flush on every request",
                    s.0
                ),
            );
        }
        let me = &filter.me;
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        log.line(
            Level::Info,
            &format!(
                "configured cluster={} network={} locality={} namespace={} direction={:?} routes={}",
                me.cluster,
                dash(&me.network),
                dash(&me.locality.to_string()),
                dash(&me.namespace),
                filter.cfg.direction,
                filter.cfg.routes.len()
            ),
        );
        let seed = host::now_ns().unwrap_or(0) ^ mix(u64::from(self.context_id));
        // Label indices start afresh with the new cluster table.
        self.metrics.flush();
        self.metrics.keys.clear();
        self.metrics.slots.clear();
        self.metrics.immediate = flush_ms == 0 || ticking.is_err();
        self.metrics.guard = LabelGuard::new(
            filter
                .cfg
                .clusters
                .iter()
                .map(|c| c.name.clone())
                .chain(std::iter::once(filter.me.cluster.clone())),
        );
        self.rng = Rng::new(seed);
        self.filter = Some(Rc::new(filter));
        true
    }

    pub fn tick(&mut self, log: &mut Log) {
        log.sync();
        self.metrics.flush();
    }
}
