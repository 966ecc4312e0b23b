//! Routing decisions: which cluster a request should go to, and why.
//!
//! Everything that depends only on the config and this proxy's identity is
//! compiled once into a [`Plan`] at configure time (the `distribute` entry that
//! matches our locality, the failover order); per request only a pick remains.

use std::fmt::Write as _;

use crate::config::{ClusterInfo, Config, Policy, PolicyKind, TopologyLabel};
use crate::identity::Identity;
use crate::text::push_u64;

/// Per-route precomputed choices for this proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePlan {
    None,
    ClusterLocal,
    Weighted {
        /// Index of the `distribute` entry whose `from` matches our locality.
        entry: Option<usize>,
        /// (cluster index, weight > 0), weights summing to 100.
        table: Vec<(usize, u32)>,
        sticky_header: Option<String>,
        /// ` from=<entry's from> weights=<cluster>:<w>,...` for the decision's
        /// reason: fixed for this proxy, so written once here.
        explained: String,
    },
    Failover {
        /// Cluster indices, most preferred first.
        order: Vec<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub routes: Vec<RoutePlan>,
    /// Every cluster a decision can name: the configured clusters in order,
    /// then this proxy's own cluster when it is not among them. A decision's
    /// target is an index into this list.
    pub names: Vec<String>,
    /// This proxy's cluster in [`Plan::names`].
    pub me: usize,
}

impl Plan {
    pub fn compile(cfg: &Config, me: &Identity) -> Plan {
        let me_idx = cfg.cluster_index(&me.cluster);
        let mut names: Vec<String> = cfg.clusters.iter().map(|c| c.name.clone()).collect();
        let me_name = match me_idx {
            Some(k) => k,
            None => {
                names.push(me.cluster.clone());
                names.len() - 1
            }
        };
        let routes = cfg
            .routes
            .iter()
            .map(|r| match &r.policy {
                Policy::None => RoutePlan::None,
                Policy::ClusterLocal => RoutePlan::ClusterLocal,
                Policy::Weighted {
                    distribute,
                    sticky_header,
                } => {
                    let entry = distribute.iter().position(|d| d.from.matches(&me.locality));
                    let table: Vec<(usize, u32)> = entry
                        .and_then(|e| distribute.get(e))
                        .map(|d| d.to.clone())
                        .unwrap_or_default();
                    let from = entry
                        .and_then(|e| distribute.get(e))
                        .map(|d| d.from.text.as_str())
                        .unwrap_or_default();
                    // One allocation per route: a big mesh has thousands.
                    let mut explained = format!(" from={from} weights=");
                    for (i, (k, w)) in table.iter().enumerate() {
                        let name = cfg.clusters.get(*k).map(|c| c.name.as_str());
                        let comma = if i > 0 { "," } else { "" };
                        let _ = write!(explained, "{comma}{}:{w}", name.unwrap_or("?"));
                    }
                    RoutePlan::Weighted {
                        entry,
                        explained,
                        table,
                        sticky_header: sticky_header.clone(),
                    }
                }
                Policy::Failover { failover, priority } => RoutePlan::Failover {
                    order: failover_order(
                        &cfg.clusters,
                        &r.candidates,
                        me,
                        me_idx,
                        failover,
                        priority,
                    ),
                },
            })
            .collect();
        Plan {
            routes,
            names,
            me: me_name,
        }
    }

    /// The index of a cluster name in [`Plan::names`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The name of a decision's target.
    pub fn name(&self, k: usize) -> &str {
        self.names.get(k).map(String::as_str).unwrap_or("?")
    }

    /// Does deciding for this route need the service's health?
    pub fn needs_health(&self, rule: usize) -> bool {
        match self.routes.get(rule) {
            Some(RoutePlan::Weighted { table, .. }) => table.len() > 1,
            Some(RoutePlan::Failover { order }) => order.len() > 1,
            _ => false,
        }
    }
}

/// Local cluster first; then the clusters in each `failover` `to` region for our
/// `from` region, in order; then the rest ranked by how many leading
/// `failoverPriority` labels they share with us (ties in config order).
fn failover_order(
    clusters: &[ClusterInfo],
    candidates: &[usize],
    me: &Identity,
    me_idx: Option<usize>,
    failover: &[(String, String)],
    priority: &[TopologyLabel],
) -> Vec<usize> {
    let mut order = Vec::with_capacity(candidates.len());
    if let Some(m) = me_idx.filter(|m| candidates.contains(m)) {
        order.push(m);
    }
    for (from, to) in failover {
        if *from != me.locality.region {
            continue;
        }
        for &k in candidates {
            if !order.contains(&k) && clusters.get(k).is_some_and(|c| c.locality.region == *to) {
                order.push(k);
            }
        }
    }
    let mut rest: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|k| !order.contains(k))
        .collect();
    let shared = |k: &usize| {
        clusters
            .get(*k)
            .map(|c| shared_labels(c, me, priority))
            .unwrap_or(0)
    };
    // Most labels shared first (a config-time sort: the small one).
    crate::config::sort::stable_sort_by(&mut rest, |a, b| shared(a) > shared(b));
    order.extend(rest);
    order
}

fn shared_labels(c: &ClusterInfo, me: &Identity, priority: &[TopologyLabel]) -> usize {
    let same = |a: &str, b: &str| !a.is_empty() && a == b;
    priority
        .iter()
        .take_while(|l| match l {
            TopologyLabel::Network => same(&c.network, &me.network),
            TopologyLabel::Cluster => same(&c.name, &me.cluster),
            TopologyLabel::Region => same(&c.locality.region, &me.locality.region),
            TopologyLabel::Zone => same(&c.locality.zone, &me.locality.zone),
            TopologyLabel::Subzone => same(&c.locality.subzone, &me.locality.subzone),
        })
        .count()
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The service could not be told from the request.
    NoService,
    /// No route's hosts match the service.
    NoRule,
    /// The matching route's policy is `none`: Envoy decides.
    PolicyNone,
    ClusterLocal,
    /// No `distribute` entry matches this proxy's locality.
    NoDistributeEntry,
    Weighted {
        entry: usize,
        /// 0..100 position of the pick in the weight table.
        point: u32,
        sticky: bool,
        /// Clusters skipped because they were ejected (bit per cluster index).
        skipped: u64,
        /// Every cluster was ejected; picked as if none were.
        panic: bool,
    },
    Failover {
        skipped: u64,
        panic: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub rule: Option<usize>,
    pub policy: Option<PolicyKind>,
    /// The cluster the request is sent to, an index into [`Plan::names`];
    /// `None` leaves it to Envoy.
    pub target: Option<usize>,
    /// Only the target may serve it (`clusterLocal`, or a `pinned` rule);
    /// else the target is preferred and Envoy fails over by priority.
    pub pinned: bool,
    pub why: Why,
}

impl Decision {
    pub fn undecided(why: Why) -> Self {
        Decision {
            rule: None,
            policy: None,
            target: None,
            pinned: false,
            why,
        }
    }

    /// The metric label for this decision.
    pub fn label(&self) -> &'static str {
        match self.policy {
            Some(PolicyKind::ClusterLocal) => "cluster_local",
            Some(PolicyKind::Weighted) if self.target.is_some() => "weighted",
            Some(PolicyKind::Failover) => "failover",
            _ => "none",
        }
    }

    /// The target's cluster name.
    pub fn target_name<'p>(&self, plan: &'p Plan) -> Option<&'p str> {
        self.target.map(|k| plan.name(k))
    }

    /// One line saying why: `weighted rule=1 from=asia-northeast1/* weights=gke:80,anthos:20 pick=37 -> gke`.
    pub fn explain(&self, plan: &Plan, service: Option<&str>) -> String {
        let mut s = String::new();
        self.explain_into(plan, service, &mut s);
        s
    }

    /// [`Decision::explain`] appended to `s` (no allocation once `s` has room).
    pub fn explain_into(&self, plan: &Plan, service: Option<&str>, s: &mut String) {
        s.push_str(self.policy.map(PolicyKind::as_str).unwrap_or("none"));
        if let Some(r) = self.rule {
            s.push_str(" rule=");
            push_u64(s, r as u64);
        }
        if let Some(svc) = service {
            s.push_str(" service=");
            s.push_str(svc);
        }
        let skipped_list = |s: &mut String, mask: u64| {
            let mut first = true;
            for k in (0..64usize).filter(|k| mask & (1u64 << k) != 0) {
                if !first {
                    s.push(',');
                }
                first = false;
                s.push_str(plan.name(k));
            }
        };
        match &self.why {
            Why::NoService => s.push_str(": no service name in the request"),
            Why::NoRule => s.push_str(": no route matches"),
            Why::PolicyNone => s.push_str(": left to Envoy"),
            Why::ClusterLocal => s.push_str(": stays in the local cluster"),
            Why::NoDistributeEntry => {
                s.push_str(": no distribute entry matches this locality, left to Envoy")
            }
            Why::Weighted {
                point,
                sticky,
                skipped,
                panic,
                ..
            } => {
                if let Some(RoutePlan::Weighted { explained, .. }) =
                    self.rule.and_then(|r| plan.routes.get(r))
                {
                    s.push_str(explained);
                }
                s.push_str(" pick=");
                push_u64(s, u64::from(*point));
                if *sticky {
                    s.push_str(" sticky");
                }
                if *skipped != 0 {
                    s.push_str(" skipped=");
                    skipped_list(s, *skipped);
                    s.push_str("(ejected)");
                }
                if *panic {
                    s.push_str(" all-ejected");
                }
            }
            Why::Failover { skipped, panic } => {
                if let Some(RoutePlan::Failover { order }) =
                    self.rule.and_then(|r| plan.routes.get(r))
                {
                    s.push_str(" order=");
                    for (i, &k) in order.iter().enumerate() {
                        if i > 0 {
                            s.push('>');
                        }
                        s.push_str(plan.name(k));
                    }
                }
                if *skipped != 0 {
                    s.push_str(" skipped=");
                    skipped_list(s, *skipped);
                    s.push_str("(ejected)");
                }
                if *panic {
                    s.push_str(" all-ejected");
                }
            }
        }
        if let Some(t) = self.target {
            s.push_str(" -> ");
            s.push_str(plan.name(t));
            if self.pinned && self.policy != Some(PolicyKind::ClusterLocal) {
                s.push_str(" (pinned)");
            }
        }
    }
}

/// Decides for a request matched to `rule`. `ejected` has a bit set per
/// cluster index that is ejected now; `pick` is a uniformly random or sticky
/// 64-bit value.
pub fn decide(
    cfg: &Config,
    plan: &Plan,
    rule: usize,
    ejected: u64,
    pick: u64,
    sticky: bool,
) -> Decision {
    let policy = cfg.routes.get(rule).map(|r| r.policy.kind());
    let mut d = Decision {
        rule: Some(rule),
        policy,
        target: None,
        pinned: cfg.routes.get(rule).is_some_and(|r| r.pinned),
        why: Why::PolicyNone,
    };
    let name = |k: usize| (k < plan.names.len()).then_some(k);
    match plan.routes.get(rule) {
        None | Some(RoutePlan::None) => {}
        Some(RoutePlan::ClusterLocal) => {
            d.target = Some(plan.me);
            d.why = Why::ClusterLocal;
        }
        Some(RoutePlan::Weighted { entry, table, .. }) => {
            let Some(entry) = *entry else {
                d.why = Why::NoDistributeEntry;
                return d;
            };
            let point = (pick % 100) as u32;
            let first = walk(table.iter().copied(), point);
            let skipped = table
                .iter()
                .filter(|(k, _)| is_set(ejected, *k))
                .fold(0u64, |m, (k, _)| m | bit(*k));
            let (chosen, panic) = match first {
                Some(k) if !is_set(ejected, k) => (Some(k), false),
                _ => {
                    let healthy: Vec<(usize, u32)> = table
                        .iter()
                        .copied()
                        .filter(|(k, _)| !is_set(ejected, *k))
                        .collect();
                    let total: u32 = healthy.iter().map(|(_, w)| w).sum();
                    if total == 0 {
                        (first, true)
                    } else {
                        // Other bits of the same value: a sticky key re-lands the same way.
                        let second = ((pick / 100) % u64::from(total)) as u32;
                        (walk(healthy.into_iter(), second), false)
                    }
                }
            };
            d.target = chosen.and_then(name);
            d.why = Why::Weighted {
                entry,
                point,
                sticky,
                skipped: if panic {
                    0
                } else {
                    skipped & chosen.map(|c| !bit(c)).unwrap_or(u64::MAX)
                },
                panic,
            };
        }
        Some(RoutePlan::Failover { order }) => {
            let mut skipped = 0u64;
            let mut chosen = None;
            for &k in order {
                if is_set(ejected, k) {
                    skipped |= bit(k);
                } else {
                    chosen = Some(k);
                    break;
                }
            }
            let panic = chosen.is_none();
            if panic {
                chosen = order.first().copied();
                skipped = 0;
            }
            d.target = chosen.and_then(name);
            d.why = Why::Failover { skipped, panic };
        }
    }
    d
}

fn walk(table: impl Iterator<Item = (usize, u32)>, point: u32) -> Option<usize> {
    let mut acc = 0u32;
    let mut last = None;
    for (k, w) in table {
        acc += w;
        last = Some(k);
        if point < acc {
            return Some(k);
        }
    }
    last
}

fn bit(k: usize) -> u64 {
    if k < 64 {
        1u64 << k
    } else {
        0
    }
}

fn is_set(mask: u64, k: usize) -> bool {
    mask & bit(k) != 0
}

/// FNV-1a, 64-bit: the sticky hash. Stable across VMs, proxies and releases, so a
/// user lands on the same cluster from every sidecar.
pub fn sticky_hash(value: &[u8]) -> u64 {
    // Finalise (splitmix64) so nearby keys spread over the whole table.
    mix(fnv1a(FNV_OFFSET, value))
}

/// FNV-1a's 64-bit offset basis: the state [`fnv1a`] starts from.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit, continued from `state` over `bytes`.
pub fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's output function.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tiny deterministic random source (splitmix64), one per worker VM, seeded
/// from the host clock at configure time.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
}
