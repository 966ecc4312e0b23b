//! Stable codes for what `validate` finds, so that CI can allow a kind of
//! finding by name (`hybridmesh validate --allow HM0304`), as istioctl
//! analyze's IST codes do. A code names a class of problem, never one
//! message: messages may be reworded, codes stay. `check` reports what it
//! finds in a live cluster with codes too (HM07xx). The table is
//! `docs/src/reference/codes.md`, held to [`Code::ALL`] by a test.

use std::fmt;

/// One class of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The file is not YAML or JSON, or holds nothing to check.
    Syntax,
    /// The filter's own parser refuses a plugin config.
    PluginConfig,
    /// Istio's structural schema refuses a field.
    Schema,
    /// One of Istio's CEL validation rules refuses a resource.
    CelRule,
    /// The resource's kind is not served by the Istio version checked for.
    NotServed,
    /// A cluster the filter can choose has no DestinationRule subset.
    NoSubset,
    /// A cluster the filter can choose has no VirtualService route to its subset.
    NoRoute,
    /// A preference subset cannot fail over.
    NoFailover,
    /// A preference route's retries cannot carry a request to another cluster.
    Retries,
    /// A plugin's `sha256` is not the image's or module's Istio will compare.
    Digest,
    /// A kustomization kustomize would refuse.
    Kustomization,
    /// A mesh description breaks its own rules.
    Description,
    /// `check`: a kubeconfig context cannot be read.
    Unreachable,
    /// `check`: the cluster has no Istio this project can read.
    NoIstio,
    /// `check`: the cluster's ID is not a cluster of the mesh description.
    UnknownCluster,
    /// `check`: the resource kind `render` writes is not served, or another is.
    Kind,
    /// `check`: the cluster's network label disagrees with the description.
    Network,
    /// `check`: no east-west gateway.
    Gateway,
    /// `check`: no remote secret for another cluster of the mesh.
    RemoteSecret,
    /// `check`: the image pull secret the plugins name is missing or wrong.
    PullSecret,
    /// `check`: mesh config does not carry the filter's stats.
    Stats,
    /// `check`: mesh config has no access log provider with the hop record.
    AccessLog,
}

impl Code {
    /// Every code, in the table's order.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::PluginConfig,
        Code::Schema,
        Code::CelRule,
        Code::NotServed,
        Code::NoSubset,
        Code::NoRoute,
        Code::NoFailover,
        Code::Retries,
        Code::Digest,
        Code::Kustomization,
        Code::Description,
        Code::Unreachable,
        Code::NoIstio,
        Code::UnknownCluster,
        Code::Kind,
        Code::Network,
        Code::Gateway,
        Code::RemoteSecret,
        Code::PullSecret,
        Code::Stats,
        Code::AccessLog,
    ];

    /// `HM0101`.
    pub fn id(self) -> &'static str {
        match self {
            Code::Syntax => "HM0001",
            Code::PluginConfig => "HM0101",
            Code::Schema => "HM0201",
            Code::CelRule => "HM0202",
            Code::NotServed => "HM0203",
            Code::NoSubset => "HM0301",
            Code::NoRoute => "HM0302",
            Code::NoFailover => "HM0303",
            Code::Retries => "HM0304",
            Code::Digest => "HM0401",
            Code::Kustomization => "HM0501",
            Code::Description => "HM0601",
            Code::Unreachable => "HM0701",
            Code::NoIstio => "HM0702",
            Code::UnknownCluster => "HM0703",
            Code::Kind => "HM0704",
            Code::Network => "HM0705",
            Code::Gateway => "HM0706",
            Code::RemoteSecret => "HM0707",
            Code::PullSecret => "HM0708",
            Code::Stats => "HM0709",
            Code::AccessLog => "HM0710",
        }
    }

    /// What the code means, in one line.
    pub fn summary(self) -> &'static str {
        match self {
            Code::Syntax => "the file is not YAML or JSON, or holds no document to check",
            Code::PluginConfig => "the filter's parser refuses the plugin config: every sidecar given it would reject it",
            Code::Schema => "Istio's schema refuses a field (type, value, required, unknown field, apiVersion): the API server or kubectl --validate=strict would",
            Code::CelRule => "one of Istio's CEL validation rules refuses the resource: the API server would",
            Code::NotServed => "the Istio version checked for does not serve this kind of resource",
            Code::NoSubset => "a cluster the filter can choose has no DestinationRule subset, or a route names a subset that does not exist",
            Code::NoRoute => "a cluster the filter can choose has no VirtualService route on its decision header to its subset, or that route is hidden or leads elsewhere",
            Code::NoFailover => "a preference subset cannot fail over: cluster labels, failoverPriority, distribute or outlier detection stop Envoy moving the request",
            Code::Retries => "a preference route's retries cannot carry a failed request to another cluster",
            Code::Digest => "a plugin's sha256 is not what Istio will compare (the image manifest digest for oci://, the module's for http(s))",
            Code::Kustomization => "kustomize would refuse the kustomization (resources not a list, listed twice, outside its folder, missing, a cycle)",
            Code::Description => "the mesh description breaks its own rules (fields, names, weights, references)",
            Code::Unreachable => "check: the kubeconfig context cannot be read (kubectl fails or times out)",
            Code::NoIstio => "check: the cluster has no Istio control plane configuration in istio-system",
            Code::UnknownCluster => "check: the cluster's Istio cluster ID is not a cluster of the mesh description",
            Code::Kind => "check: the cluster does not serve the resource kind render writes for it (WasmPlugin or TrafficExtension)",
            Code::Network => "check: the cluster's network (istio-system's topology.istio.io/network, Istio's values) disagrees with the mesh description",
            Code::Gateway => "check: no east-west gateway (a Service with port 15443, or its Gateway for *.local) to reach this cluster from other networks",
            Code::RemoteSecret => "check: no remote secret for another cluster of the mesh: istiod cannot see its endpoints",
            Code::PullSecret => "check: the pull secret the plugins name is missing, of the wrong type, or has no credentials for the image's registry",
            Code::Stats => "check: mesh config lacks the filter's extraStatTags or proxyStatsMatcher: its counters reach Prometheus without labels, or not at all",
            Code::AccessLog => "check: mesh config has no access log provider carrying the hop record (what hybridmesh trace reads)",
        }
    }

    /// The code named `id` (`HM0304`), in any case.
    pub fn parse(id: &str) -> Result<Code, String> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.id().eq_ignore_ascii_case(id.trim()))
            .ok_or_else(|| {
                let ids: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
                format!("no finding code {id:?}: expected one of {}", ids.join(", "))
            })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One problem a check found: its code and what is wrong, with the field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Issue {
    pub code: Code,
    pub message: String,
}

impl Issue {
    pub fn new(code: Code, message: impl Into<String>) -> Issue {
        Issue {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back() {
        let mut ids: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Code::ALL.len());
        for c in Code::ALL {
            assert_eq!(Code::parse(c.id()), Ok(*c));
            assert_eq!(Code::parse(&c.id().to_lowercase()), Ok(*c));
        }
        assert!(Code::parse("IST0109").unwrap_err().contains("HM0001"));
    }
}
