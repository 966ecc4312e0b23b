//! Stable codes for what `validate` finds, so that CI can allow a kind of
//! finding by name (`hybridmesh validate --allow HM0304`), as istioctl
//! analyze's IST codes do. A code names a class of problem, never one
//! message: messages may be reworded, codes stay. The table is
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
