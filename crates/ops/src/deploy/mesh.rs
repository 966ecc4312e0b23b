//! The mesh description `render` works from (`examples/deploy.yaml`): the
//! clusters (network, region), the filter's image, how the plugin is attached,
//! and the services the filter steers with their policy.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

pub use super::mesh_check::Problem;

use super::codes::Code;
use super::istio::IstioVersion;

/// The whole description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshDescription {
    pub image: Image,
    #[serde(default)]
    pub plugin: PluginSettings,
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub services: Vec<Service>,
    /// Policy for every host no service names (`none`: tag and record only).
    /// Absent: the filter leaves other hosts alone.
    pub other_hosts: Option<String>,
    /// The Istio version of the clusters' control planes (the oldest, if they
    /// differ), e.g. `1.13` for the seed's ASM 1.13. Absent: current Istio
    /// (1.27 and later). `render` writes what that version can apply and
    /// checks it against that version's schemas ([`super::istio`]).
    pub istio: Option<String>,
}

/// The filter's OCI image (or http(s) url) and its digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub url: String,
    /// For `oci://` urls: the image manifest digest (what Istio compares);
    /// for `http(s)://`: the `.wasm` file's sha256. `hybridmesh package` prints both.
    #[serde(default)]
    pub sha256: String,
    #[serde(default = "default_pull_policy")]
    pub pull_policy: String,
    /// A `kubernetes.io/dockerconfigjson` Secret in the plugin's namespace.
    pub pull_secret: Option<String>,
}

fn default_pull_policy() -> String {
    "IfNotPresent".to_string()
}

/// How the two WasmPlugins (client side, server side) are attached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginSettings {
    #[serde(default = "default_name")]
    pub name: String,
    /// The mesh's root namespace applies the plugin to every sidecar.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Optional workload selector (`selector.matchLabels`).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default = "Side::client_default")]
    pub client: Side,
    #[serde(default = "Side::server_default")]
    pub server: Side,
    /// Further plugin-config keys for every cluster (e.g. `trustDomains`,
    /// `hopLog`); `clusters`, `routes`, `identity` and `direction` are rendered.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            name: default_name(),
            namespace: default_namespace(),
            selector: BTreeMap::new(),
            client: Side::client_default(),
            server: Side::server_default(),
            config: serde_json::Map::new(),
        }
    }
}

fn default_name() -> String {
    "hybridmesh".to_string()
}

fn default_namespace() -> String {
    "istio-system".to_string()
}

/// Phase, priority and fail strategy of one side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Side {
    pub phase: String,
    pub priority: i64,
    pub fail_strategy: String,
}

impl Side {
    /// Client side: decides the route. Fails open: without it, requests take
    /// the VirtualService's default route (Istio's own spread), as before the
    /// filter was installed.
    pub fn client_default() -> Side {
        Side {
            phase: "AUTHN".into(),
            priority: 1000,
            fail_strategy: "FAIL_OPEN".into(),
        }
    }

    /// Server side: enforces cluster-local and strips untrusted identity
    /// headers. Fails closed: a broken plugin must not silently drop enforcement.
    pub fn server_default() -> Side {
        Side {
            phase: "AUTHZ".into(),
            priority: 1000,
            fail_strategy: "FAIL_CLOSE".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Istio's cluster ID (`values.global.multiCluster.clusterName`): the
    /// value of `topology.istio.io/cluster` on its endpoints.
    pub name: String,
    pub network: String,
    pub region: String,
    #[serde(default)]
    pub zone: String,
    /// `false` when the nodes carry no `topology.kubernetes.io/region` label
    /// (on-prem): the plugin config then supplies the locality.
    #[serde(default = "yes")]
    pub node_locality: bool,
}

fn yes() -> bool {
    true
}

impl Cluster {
    pub fn locality(&self) -> String {
        if self.zone.is_empty() {
            self.region.clone()
        } else {
            format!("{}/{}", self.region, self.zone)
        }
    }
}

/// One service the filter steers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// `<name>.<namespace>.svc.cluster.local`.
    pub host: String,
    /// `clusterLocal`, `weighted` or `failover`.
    pub policy: String,
    /// The clusters that serve it (default: all).
    pub clusters: Option<Vec<String>>,
    pub failover: Option<Vec<FromTo>>,
    pub failover_priority: Option<Vec<String>>,
    pub distribute: Option<Vec<Distribute>>,
    pub sticky_header: Option<String>,
    /// Only the chosen cluster may serve (a strict split that never spills
    /// over; requests in flight when it fails are lost).
    pub pinned: Option<bool>,
    #[serde(default)]
    pub outlier_detection: Outlier,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromTo {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribute {
    pub from: String,
    pub to: BTreeMap<String, u32>,
}

/// DestinationRule names; the filter takes the three it uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outlier {
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Envoy's analysis interval (DestinationRule only).
    pub interval: Option<String>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    /// DestinationRule only.
    pub max_ejection_percent: Option<u32>,
}

impl Service {
    /// `(name, namespace)` from `<name>.<namespace>.svc...`.
    pub fn name_namespace(&self) -> (String, String) {
        let mut parts = self.host.split('.');
        let name = parts.next().unwrap_or_default().to_string();
        let ns = parts.next().unwrap_or("default").to_string();
        (name, ns)
    }

    /// The clusters the filter can send this service's requests to.
    pub fn cluster_names<'a>(&'a self, mesh: &'a MeshDescription) -> Vec<&'a str> {
        match &self.clusters {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => mesh.clusters.iter().map(|c| c.name.as_str()).collect(),
        }
    }
}

impl MeshDescription {
    /// Reads and checks a description: every problem
    /// ([`super::mesh_check::check`]) with its field and line.
    pub fn load(path: &Path) -> anyhow::Result<MeshDescription> {
        let text = hybridmesh_input::read_text(path, hybridmesh_input::TEXT)?;
        Self::parse(&text)
            .with_context(|| format!("{} is not a valid mesh description", path.display()))
    }

    /// [`Self::from_yaml`] and [`super::mesh_check::check`], as one error.
    pub fn parse(text: &str) -> anyhow::Result<MeshDescription> {
        let mesh = Self::from_yaml(text)
            .map_err(|p| anyhow::anyhow!("{}", super::mesh_check::join(&p)))?;
        let problems = super::mesh_check::check(&mesh, text);
        anyhow::ensure!(
            problems.is_empty(),
            "{}",
            super::mesh_check::join(&problems)
        );
        Ok(mesh)
    }

    /// The YAML as a description (fields and types only), with the line of a
    /// field that is wrong; the rules come with [`super::mesh_check::check`].
    pub fn from_yaml(text: &str) -> Result<MeshDescription, Vec<Problem>> {
        if let Err(e) = hybridmesh_scenario::guard::yaml(text) {
            return Err(vec![Problem {
                code: Code::Syntax,
                path: String::new(),
                message: e.to_string(),
                line: Some(e.line),
            }]);
        }
        use hybridmesh_filter_core::config::{clean_message, error_path};
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let message = clean_message(&e.inner().to_string());
            let path = error_path(&e.path().to_string(), &message);
            // Every other unknown field, read the same way.
            let mut more = Vec::new();
            if let Ok(value) = serde_yaml_ng::from_str::<serde_json::Value>(text) {
                more = super::unknown::others(&value, "", text, (&path, &message), |v| {
                    serde_path_to_error::deserialize::<_, MeshDescription>(v)
                        .err()
                        .map(|e| {
                            let message = clean_message(&e.inner().to_string());
                            (error_path(&e.path().to_string(), &message), message)
                        })
                });
            }
            let mut problems = vec![Problem {
                code: Code::Description,
                path,
                message,
                line: e.inner().location().map(|l| l.line()),
            }];
            problems.extend(more.into_iter().map(|u| Problem {
                code: Code::Description,
                path: u.path,
                message: u.message,
                line: u.line,
            }));
            problems
        })
    }

    /// What serde cannot say: names that must exist, values Istio accepts.
    /// (field path, message) pairs.
    pub(crate) fn rule_problems(&self) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut p = |path: String, message: String| problems.push((path, message));
        if self.clusters.is_empty() {
            p(
                "clusters".into(),
                "empty, expected the mesh's clusters".into(),
            );
        }
        // The filter's own limit (its parser says the same), checked here so
        // that a description far over it is refused before anything is
        // rendered for each of its clusters.
        let max = hybridmesh_filter_core::config::MAX_CLUSTERS;
        if self.clusters.len() > max {
            p(
                "clusters".into(),
                format!(
                    "{} clusters, at most {max} are supported",
                    self.clusters.len()
                ),
            );
        }
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for c in &self.clusters {
            *seen.entry(c.name.as_str()).or_insert(0) += 1;
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if !hybridmesh_filter_core::config::is_cluster_name(&c.name) {
                p(
                    format!("clusters[{i}].name"),
                    format!("{:?} is not a cluster name", c.name),
                );
            }
            if seen.get(c.name.as_str()).is_some_and(|&n| n > 1) {
                p(
                    format!("clusters[{i}].name"),
                    format!("duplicate cluster {:?}", c.name),
                );
            }
            if c.region.is_empty() {
                p(format!("clusters[{i}].region"), "empty".into());
            }
        }
        let mut hosts_seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let (name, ns) = s.name_namespace();
            if name.is_empty() || !s.host.contains(".svc.") {
                p(
                    format!("services[{i}].host"),
                    format!("{:?} is not <name>.<namespace>.svc.<domain>", s.host),
                );
            } else if ns.is_empty() {
                p(
                    format!("services[{i}].host"),
                    format!("no namespace in {:?}", s.host),
                );
            }
            if !["clusterLocal", "weighted", "failover"].contains(&s.policy.as_str()) {
                p(
                    format!("services[{i}].policy"),
                    format!(
                        "{:?}, expected clusterLocal, weighted or failover",
                        s.policy
                    ),
                );
            }
            for n in s.cluster_names(self) {
                if !self.clusters.iter().any(|c| c.name == n) {
                    p(
                        format!("services[{i}].clusters"),
                        format!(
                            "unknown cluster {n:?}, expected one of {}",
                            self.cluster_list()
                        ),
                    );
                }
            }
            if !hosts_seen.insert(s.host.as_str()) {
                p(
                    format!("services[{i}].host"),
                    format!("{:?} is listed twice", s.host),
                );
            }
        }
        if let Some(o) = &self.other_hosts {
            if !["none", "clusterLocal"].contains(&o.as_str()) {
                p(
                    "otherHosts".into(),
                    format!("{o:?}, expected none or clusterLocal"),
                );
            }
        }
        if let Some(v) = &self.istio {
            if let Err(e) = IstioVersion::parse(v) {
                p("istio".into(), e);
            }
        }
        let version = self.istio_version();
        if !version.prefer_cluster() {
            for (i, s) in self.services.iter().enumerate() {
                if s.policy == "weighted" {
                    p(
                        format!("services[{i}].policy"),
                        format!(
                            "weighted cannot be rendered for {version}: a decision for a cluster goes to a subset that prefers it by failoverPriority `label=value`, which Istio reads from 1.18 on; use Istio's own localityLbSetting.distribute for this host, or render for 1.18 or later"
                        ),
                    );
                }
            }
        }
        for key in ["clusters", "routes", "identity", "direction"] {
            if self.plugin.config.contains_key(key) {
                p(
                    format!("plugin.config.{key}"),
                    "rendered from the description, do not set it here".into(),
                );
            }
        }
        for (side, s) in [
            ("client", &self.plugin.client),
            ("server", &self.plugin.server),
        ] {
            if !["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"].contains(&s.phase.as_str()) {
                p(
                    format!("plugin.{side}.phase"),
                    format!(
                        "{:?}, expected AUTHN, AUTHZ, STATS or UNSPECIFIED_PHASE",
                        s.phase
                    ),
                );
            }
            if !["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"].contains(&s.fail_strategy.as_str()) {
                p(
                    format!("plugin.{side}.failStrategy"),
                    format!(
                        "{:?}, expected FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD",
                        s.fail_strategy
                    ),
                );
            }
        }
        problems
    }

    /// The target control plane ([`Self::istio`]; current if absent or unreadable:
    /// [`Self::rule_problems`] reports the latter).
    pub fn istio_version(&self) -> IstioVersion {
        self.istio
            .as_deref()
            .and_then(|v| IstioVersion::parse(v).ok())
            .unwrap_or_default()
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The clusters' names, `gke, anthos` (for a message about an unknown one).
    pub fn cluster_list(&self) -> String {
        self.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A mesh description of `clusters` clusters (networks and regions in
/// turn) and `services` services with the failover policy: the input the
/// scale bounds and benchmarks use (docs/src/reliability.md).
pub fn synthetic_description(clusters: usize, services: usize) -> String {
    let mut t = format!(
        "image:\n  url: oci://example.com/hm/filter:0.1.0\n  sha256: {}\nclusters:\n",
        "a".repeat(64)
    );
    for i in 0..clusters {
        t += &format!(
            "  - {{name: c{i}, network: net{}, region: region{}}}\n",
            i % 5,
            i % 10
        );
    }
    t += "services:\n";
    for j in 0..services {
        t += &format!(
            "  - {{host: svc{j}.ns{}.svc.cluster.local, policy: failover}}\n",
            j % 7
        );
    }
    t
}
