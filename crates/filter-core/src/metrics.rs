//! The filter's counters and their names.
//!
//! Labels are written into the metric name the way Istio's stats filter does
//! (`key=.=value;.;` before the metric's own name), so Envoy's tag extraction
//! (`stats_tags` regex `(key=\.=(.*?);\.;)`, which Istio's bootstrap already has
//! for `source_cluster` and `destination_cluster`) turns them into Prometheus
//! labels and leaves the bare name, e.g.
//! `source_cluster=.=gke;.;destination_cluster=.=anthos;.;decision=.=weighted;.;cross_network=.=true;.;hybridmesh_requests_total`.
//!
//! Cardinality is bounded by construction: decisions and booleans are fixed
//! sets, and each VM admits at most [`MAX_CLUSTER_LABELS`] distinct cluster
//! names (further ones are counted as `other`).

use crate::flow::Direction;

pub const MAX_CLUSTER_LABELS: usize = 32;

/// Every label the filter's counters carry in their names. Envoy needs a tag
/// extractor (`stats_tags`, Istio: `meshConfig.defaultConfig.extraStatTags`)
/// per label to turn it into a Prometheus label.
pub const LABELS: [&str; 7] = [
    "source_cluster",
    "destination_cluster",
    "preferred_cluster",
    "decision",
    "cross_network",
    "direction",
    "problem",
];

/// The labels an Istio mesh must add with `extraStatTags`: every one. Istio's
/// bootstrap extracts only Envoy's standard tags and one regex per
/// `extraStatTags` entry (Istio 1.31 `tools/packaging/common/envoy_bootstrap.json`,
/// `pkg/bootstrap/config.go` `getStatsOptions`); its own metrics get their
/// labels from istio-proxy's stats filter, not from tag extraction. Measured in
/// the Istio lab: without an entry, `source_cluster=.=gke;.;` stays in the
/// series name (`crates/lab/tests/differential.rs`).
pub fn extra_stat_tags() -> impl Iterator<Item = &'static str> {
    LABELS.into_iter()
}

/// Gauge: the linear memory of every VM of this plugin in the proxy, summed
/// (each VM adds what its memory grew by since it last reported, on tick).
/// Flat under steady load; growth means a leak.
pub const VM_MEMORY_GAUGE: &str = "hybridmesh_vm_memory_bytes";

/// One counter increment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A request answered, seen by the client side.
    Requests {
        source: String,
        destination: String,
        decision: &'static str,
        cross_network: bool,
    },
    /// A cluster ejected for a service (the service is not a label: unbounded).
    Ejections { destination: String },
    /// A request refused by the server side (cluster-local).
    Denied { source: String },
    /// Identity/decision headers removed because the sender may not set them.
    Spoofed { direction: Direction },
    /// A forwarded hop chain that was malformed, truncated, oversized or looping.
    HopChain { problem: &'static str },
    /// A request served by another cluster than the preferred one (Envoy's
    /// priorities and retries moved it).
    FailedOver {
        preferred: String,
        destination: String,
    },
}

/// One counter increment as the request path produces it: labels borrowed
/// from the config, the identity or a response header (nothing allocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterRef<'a> {
    Requests {
        source: &'a str,
        destination: &'a str,
        decision: &'static str,
        cross_network: bool,
    },
    Ejections {
        destination: &'a str,
    },
    Denied {
        source: &'a str,
    },
    Spoofed {
        direction: Direction,
    },
    HopChain {
        problem: &'static str,
    },
    FailedOver {
        preferred: &'a str,
        destination: &'a str,
    },
}

impl CounterRef<'_> {
    pub fn to_owned(&self) -> Counter {
        match *self {
            CounterRef::Requests {
                source,
                destination,
                decision,
                cross_network,
            } => Counter::Requests {
                source: source.to_string(),
                destination: destination.to_string(),
                decision,
                cross_network,
            },
            CounterRef::Ejections { destination } => Counter::Ejections {
                destination: destination.to_string(),
            },
            CounterRef::Denied { source } => Counter::Denied {
                source: source.to_string(),
            },
            CounterRef::Spoofed { direction } => Counter::Spoofed { direction },
            CounterRef::HopChain { problem } => Counter::HopChain { problem },
            CounterRef::FailedOver {
                preferred,
                destination,
            } => Counter::FailedOver {
                preferred: preferred.to_string(),
                destination: destination.to_string(),
            },
        }
    }
}

/// The decisions' metric labels, in a fixed order (see [`decision_index`]).
pub const DECISIONS: [&str; 4] = ["none", "cluster_local", "weighted", "failover"];

/// The position of a decision label in [`DECISIONS`] (0 for anything else).
pub fn decision_index(label: &str) -> usize {
    DECISIONS.iter().position(|d| *d == label).unwrap_or(0)
}

impl Counter {
    /// The Envoy stat name (labels first, then the metric name).
    pub fn name(&self) -> String {
        let tag = |k: &str, v: &str| format!("{k}=.={v};.;");
        match self {
            Counter::Requests {
                source,
                destination,
                decision,
                cross_network,
            } => format!(
                "{}{}{}{}hybridmesh_requests_total",
                tag("source_cluster", source),
                tag("destination_cluster", destination),
                tag("decision", decision),
                tag(
                    "cross_network",
                    if *cross_network { "true" } else { "false" }
                ),
            ),
            Counter::Ejections { destination } => {
                format!(
                    "{}hybridmesh_ejections_total",
                    tag("destination_cluster", destination)
                )
            }
            Counter::Denied { source } => {
                format!("{}hybridmesh_denied_total", tag("source_cluster", source))
            }
            Counter::FailedOver {
                preferred,
                destination,
            } => format!(
                "{}{}hybridmesh_failed_over_total",
                tag("preferred_cluster", preferred),
                tag("destination_cluster", destination)
            ),
            Counter::HopChain { problem } => {
                format!(
                    "{}hybridmesh_hop_chain_problems_total",
                    tag("problem", problem)
                )
            }
            Counter::Spoofed { direction } => format!(
                "{}hybridmesh_spoofed_headers_total",
                tag(
                    "direction",
                    if *direction == Direction::Inbound {
                        "inbound"
                    } else {
                        "outbound"
                    }
                ),
            ),
        }
    }
}

/// Admits at most [`MAX_CLUSTER_LABELS`] distinct cluster label values.
#[derive(Debug, Default, Clone)]
pub struct LabelGuard {
    seen: Vec<String>,
}

impl LabelGuard {
    /// Starts with the configured clusters (always admitted).
    pub fn new(known: impl Iterator<Item = String>) -> Self {
        let mut seen: Vec<String> = known.collect();
        seen.truncate(MAX_CLUSTER_LABELS);
        LabelGuard { seen }
    }

    pub fn label(&mut self, cluster: Option<&str>) -> String {
        let i = self.index(cluster);
        self.name(i).to_string()
    }

    /// The label of `cluster` as a small number: 0 `unknown` (none given),
    /// 1 `other` (over the bound, or not a cluster name), 2.. the admitted
    /// names in the order they were first seen. Allocates only when a new
    /// name is admitted.
    pub fn index(&mut self, cluster: Option<&str>) -> usize {
        let Some(c) = cluster.filter(|c| !c.is_empty()) else {
            return 0;
        };
        if let Some(i) = self.seen.iter().position(|s| s == c) {
            return i + 2;
        }
        if self.seen.len() < MAX_CLUSTER_LABELS && crate::config::is_cluster_name(c) {
            self.seen.push(c.to_string());
            return self.seen.len() + 1;
        }
        1
    }

    /// The label an [`LabelGuard::index`] stands for.
    pub fn name(&self, index: usize) -> &str {
        match index {
            0 => "unknown",
            1 => "other",
            i => self.seen.get(i - 2).map(String::as_str).unwrap_or("other"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_labels_in_istio_style() {
        let c = Counter::Requests {
            source: "gke".into(),
            destination: "anthos".into(),
            decision: "weighted",
            cross_network: true,
        };
        assert_eq!(
            c.name(),
            "source_cluster=.=gke;.;destination_cluster=.=anthos;.;decision=.=weighted;.;cross_network=.=true;.;hybridmesh_requests_total"
        );
    }

    #[test]
    fn cluster_labels_are_bounded() {
        let mut g = LabelGuard::new(["gke".to_string()].into_iter());
        assert_eq!(g.label(Some("gke")), "gke");
        assert_eq!(g.label(None), "unknown");
        assert_eq!(g.label(Some("bad;name")), "other");
        for i in 0..100 {
            g.label(Some(&format!("c{i}")));
        }
        assert_eq!(g.label(Some("c0")), "c0");
        assert_eq!(g.label(Some("c99")), "other");
    }
}
