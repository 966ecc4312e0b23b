//! Who this proxy is: cluster, network, locality and namespace.
//!
//! Node metadata is read once at configure time (see `glue::root`), then
//! merged here with the plugin config's overrides and the mesh's cluster
//! table. Precedence: `identity.*` in the plugin config, then the node's own
//! metadata, then the entry for this cluster in `clusters` (so one mesh-wide
//! config also gives on-prem nodes, which carry no locality, their region).

use std::fmt;

/// A locality `region/zone/subzone`, as Istio writes it. Empty parts are allowed
/// (on-prem nodes often have no locality at all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn new(region: &str, zone: &str, subzone: &str) -> Self {
        Locality {
            region: region.to_string(),
            zone: zone.to_string(),
            subzone: subzone.to_string(),
        }
    }

    /// Parses `region[/zone[/subzone]]`. Returns `None` for more than three parts,
    /// an empty part followed by a non-empty one (`/zone`), or a part with `*`,
    /// whitespace or a control character (the locality is sent in a header).
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Locality::default());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let bad = |p: &&str| {
            p.is_empty()
                || p.contains('*')
                || p.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if parts.len() > 3 || parts.iter().any(bad) {
            return None;
        }
        let part = |i: usize| parts.get(i).copied().unwrap_or("");
        Some(Locality::new(part(0), part(1), part(2)))
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl fmt::Display for Locality {
    /// `region/zone/subzone` with trailing empty parts left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.region)?;
        if !self.zone.is_empty() || !self.subzone.is_empty() {
            write!(f, "/{}", self.zone)?;
        }
        if !self.subzone.is_empty() {
            write!(f, "/{}", self.subzone)?;
        }
        Ok(())
    }
}

/// What the node's metadata says (each part may be missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub cluster: Option<String>,
    pub network: Option<String>,
    pub locality: Locality,
    pub namespace: Option<String>,
}

/// The proxy's resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster: String,
    pub network: String,
    pub locality: Locality,
    pub namespace: String,
}

/// Istio's `ISTIO_META_CLUSTER_ID` when the mesh was installed without a cluster name.
pub const ISTIO_DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Why an identity could not be resolved, or what is suspicious about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityIssue {
    /// No cluster id anywhere: a configuration error.
    MissingCluster,
    /// The cluster id is Istio's default: every cluster would look alike.
    DefaultClusterId,
    /// The local cluster is not in `clusters`, so weighted/failover rules cannot rank it.
    UnknownCluster(String),
}

impl fmt::Display for IdentityIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityIssue::MissingCluster => f.write_str(
                "identity.cluster: no cluster id: node metadata CLUSTER_ID is missing and identity.cluster is not set",
            ),
            IdentityIssue::DefaultClusterId => write!(
                f,
                "identity.cluster: the cluster id is Istio's default {ISTIO_DEFAULT_CLUSTER_ID:?}; install each cluster with its own name (values.global.multiCluster.clusterName) or set identity.cluster"
            ),
            IdentityIssue::UnknownCluster(c) => write!(
                f,
                "identity.cluster: this proxy's cluster {c:?} is not listed in clusters; weighted and failover rules treat it as having no network or locality"
            ),
        }
    }
}
