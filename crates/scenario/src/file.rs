//! Scenario files: a mesh, a plugin config, and steps with expectations.
//!
//! The format is YAML (see `docs/src/reference/scenarios.md`). It describes what a
//! person would do in the seed article (curl a service from a cluster, drain a
//! cluster's endpoints, wait, change the config) and what they would see, so the
//! same files can drive the harness and, later, real proxies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The mesh: a path (relative to this file) or inline.
    pub mesh: MeshRef,
    /// The plugin config of every sidecar: a path, inline YAML, a raw string
    /// (`!raw "text"`), or absent / `null`: no configuration at all (the module
    /// gets size 0, as from Envoy with no `configuration`).
    pub config: Option<ConfigRef>,
    /// Per-cluster config that replaces `config` in that cluster's sidecars.
    #[serde(default)]
    pub configs: BTreeMap<String, ConfigRef>,
    #[serde(default)]
    pub proxy: ProxyOptions,
    /// The cluster requests come from unless a request says otherwise.
    pub from: Option<String>,
    pub steps: Vec<Step>,
    /// Where the file was read from (for relative paths and messages).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MeshRef {
    Path(String),
    Inline(Mesh),
}

/// A plugin config in a scenario file.
#[derive(Debug, Clone)]
pub enum ConfigRef {
    /// A YAML or JSON file, relative to the scenario (`config: config.yaml`).
    Path(String),
    /// Inline YAML, passed as JSON (`config: {routes: [...]}`).
    Inline(serde_yaml_ng::Value),
    /// A string passed to the module as-is, JSON or not (`config: !raw "hello"`).
    Raw(String),
    /// No configuration (`null`): the module gets size 0.
    None,
}

impl<'de> Deserialize<'de> for ConfigRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigRef, D::Error> {
        use serde::de::Error as _;
        use serde_yaml_ng::Value;
        Ok(match Value::deserialize(d)? {
            Value::Null => ConfigRef::None,
            Value::String(path) => ConfigRef::Path(path),
            Value::Tagged(t) if t.tag == "raw" => match t.value {
                Value::String(text) => ConfigRef::Raw(text),
                _ => return Err(D::Error::custom("!raw takes a string: !raw \"text\"")),
            },
            Value::Tagged(t) => {
                return Err(D::Error::custom(format!(
                    "unknown tag {}, expected !raw \"text\"",
                    t.tag
                )))
            }
            value => ConfigRef::Inline(value),
        })
    }
}

/// The clusters of the mesh, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Namespace of the client workload (the seed's `sleep`).
    #[serde(default = "default_client_namespace")]
    pub client_namespace: String,
    /// The SPIFFE trust domain of the mesh.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Other trust domains whose peers the sidecars accept over mTLS
    /// (Istio's `meshConfig.trustDomainAliases`, e.g. while migrating).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
}

impl Mesh {
    /// The trust domain and its aliases: whose client certificates the
    /// sidecars accept.
    pub fn accepted_trust_domains(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.trust_domain).chain(&self.trust_domain_aliases)
    }

    /// Whether a server sidecar completes the mTLS handshake with a peer
    /// presenting this SPIFFE id. Istio's inbound TLS context matches the
    /// client certificate's URI SAN by the prefix `spiffe://<domain>/` of the
    /// trust domain and each alias (istio/istio 1.31 `pilot/pkg/networking/plugin/authn/util.go`
    /// `TrustDomainsForValidation`, `pilot/pkg/security/model/authentication.go`
    /// `ApplyToCommonTLSContext`; off only with `PILOT_SKIP_VALIDATE_TRUST_DOMAIN`).
    pub fn accepts_peer(&self, spiffe: &str) -> bool {
        self.accepted_trust_domains().any(|d| {
            spiffe
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.strip_prefix(d.as_str()))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

fn default_client_namespace() -> String {
    "sleep".to_string()
}

fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default)]
    pub network: String,
    /// What the cluster's nodes report as locality (`region/zone/subzone`, often empty on-prem).
    #[serde(default)]
    pub node_locality: String,
    /// The cluster's east-west gateway (`ip:15443`), what other networks reach it through.
    pub gateway: String,
    /// The service's endpoints in this cluster.
    pub endpoints: Vec<String>,
    /// What the service answers here.
    #[serde(default)]
    pub body: String,
}

/// Harness knobs for every sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyOptions {
    #[serde(default)]
    pub node_metadata: NodeMetadata,
    #[serde(default)]
    pub fail_strategy: Fail,
    #[serde(default = "one")]
    pub workers: usize,
    /// Run the module in the servers' sidecars too (the inbound side).
    #[serde(default = "yes")]
    pub server_sidecars: bool,
    #[serde(default)]
    pub seed: u64,
    /// Envoy clusters besides the mesh's that the module may call out to
    /// (`proxy_http_call`'s upstream), e.g. an authorization service; a step's
    /// `request.callouts` answers them.
    #[serde(default)]
    pub callout_clusters: Vec<String>,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            node_metadata: NodeMetadata::Xds,
            fail_strategy: Fail::FailClose,
            workers: 1,
            server_sidecars: true,
            seed: 0,
            callout_clusters: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeMetadata {
    #[default]
    Xds,
    Legacy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fail {
    #[default]
    FailClose,
    FailOpen,
    FailReload,
}

/// One step. Exactly one action (`request`, `drain`, `restore`, `fail`,
/// `advance`, `reconfigure`), or only `expect` for checks on the proxies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    pub name: Option<String>,
    pub request: Option<RequestSpec>,
    /// Send the request this many times (expectations hold for each; `share` over all).
    pub repeat: Option<u32>,
    /// The cluster's endpoints go away (the seed's `/drain_listeners`).
    pub drain: Option<String>,
    /// The cluster's endpoints come back and answer normally.
    pub restore: Option<String>,
    /// The cluster's endpoints answer with an error status.
    pub fail: Option<FailSpec>,
    /// Move every proxy's clock (`30s`, `1m`), delivering ticks.
    pub advance: Option<String>,
    pub reconfigure: Option<Reconfigure>,
    pub expect: Option<Expect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestSpec {
    /// The client's cluster (default: the scenario's `from`).
    pub from: Option<String>,
    /// `:authority`, as curl would send it (`echo-svc.default`).
    pub authority: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Send straight to this cluster's server sidecar, skipping the client
    /// sidecar (a peer that does not run the filter, or an attacker).
    pub direct: Option<String>,
    /// For `direct`: the connection (`plaintext`, or a SPIFFE id for mTLS).
    pub peer: Option<String>,
    /// The client's protocol: `HTTP/1.1` (the default), `HTTP/1.0`, `HTTP/2` or
    /// `HTTP/3`. It frames what the client's sidecar hands the module (over HTTP/1.x a
    /// body is its data, then an empty end of stream) and the response the client gets.
    pub protocol: Option<String>,
    /// Dynamic metadata that filters ahead of the module set on the client's sidecar:
    /// namespace -> key -> value (any YAML value; the module reads it under
    /// `metadata.filter_metadata.<namespace>.<key>`).
    #[serde(default)]
    pub metadata: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// How the services the module calls out to answer, in the order the module's
    /// callouts are made (by either sidecar of the request): each answer is used
    /// once; a callout with no answer left, or an answer left unused, is a problem.
    #[serde(default)]
    pub callouts: Vec<CalloutAnswer>,
}

/// The client protocols a request step may name, as Envoy names them.
pub const PROTOCOLS: [&str; 4] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

/// How a service answers one of the module's HTTP callouts: a response
/// (`status`, `headers`, `body`), a failure (`fail`), or none in time (`timeout`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalloutAnswer {
    /// The cluster the callout must go to (checked when given).
    pub cluster: Option<String>,
    /// The response's status (default 200).
    pub status: Option<u32>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// The callout fails (Envoy calls the module back with no headers, as when
    /// the service resets the stream or has no healthy host).
    #[serde(default)]
    pub fail: bool,
    /// The service does not answer in time: the module gets Envoy's answer to a
    /// timed-out callout, `504` with body `upstream request timeout`.
    #[serde(default)]
    pub timeout: bool,
}

impl CalloutAnswer {
    /// What the answer says, for a report.
    pub fn describe(&self) -> String {
        if self.fail {
            "fail".to_string()
        } else if self.timeout {
            "timeout".to_string()
        } else {
            format!("status {}", self.status.unwrap_or(200))
        }
    }
}

impl RequestSpec {
    /// `curl <authority>` from `from`'s client workload: GET /, no headers.
    pub fn get(from: &str, authority: &str) -> RequestSpec {
        RequestSpec {
            from: Some(from.to_string()),
            authority: authority.to_string(),
            path: default_path(),
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            direct: None,
            peer: None,
            protocol: None,
            metadata: BTreeMap::new(),
            callouts: Vec::new(),
        }
    }
}

fn default_path() -> String {
    "/".to_string()
}

fn default_method() -> String {
    "GET".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailSpec {
    pub cluster: String,
    #[serde(default = "default_fail_status")]
    pub status: u32,
}

fn default_fail_status() -> u32 {
    503
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reconfigure {
    /// A cluster name, or `all`.
    #[serde(default = "all")]
    pub cluster: String,
    pub config: ConfigRef,
    /// `accepted` or `rejected`.
    pub expect: Option<Acceptance>,
}

fn all() -> String {
    "all".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Acceptance {
    Accepted,
    Rejected,
}

/// What a person would see. Per request: status, body, headers, who served.
/// Over a `repeat`: shares. On the proxies: metrics and logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    pub status: Option<u32>,
    /// The server's sidecar refused the connection (the mTLS handshake): no
    /// HTTP answer at all.
    #[serde(default)]
    pub refused: bool,
    pub body: Option<String>,
    pub body_contains: Option<String>,
    /// The cluster whose sidecar answered (`none` when the client's own sidecar or Envoy replied).
    pub served_by: Option<String>,
    /// The `x-hybridmesh-target-cluster` the request left with (`none`: absent).
    pub target_cluster: Option<String>,
    /// The Envoy cluster the route chose (`outbound|80|<subset>|<fqdn>`).
    pub route: Option<String>,
    /// Over a `repeat`: every request served by the same cluster (sticky users).
    #[serde(default)]
    pub consistent: bool,
    /// The response's `x-hybridmesh-served-by` names the cluster that served it
    /// (whichever that was).
    #[serde(default)]
    pub served_by_header: bool,
    /// Request headers as the server application saw them (`null`: absent).
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Option<String>>,
    /// Response headers as the client application saw them (`null`: absent).
    #[serde(default)]
    pub response_headers: BTreeMap<String, Option<String>>,
    /// Over a `repeat`: the share of requests each cluster served, `[min, max]`.
    #[serde(default)]
    pub share: BTreeMap<String, [f64; 2]>,
    /// Counter values by proxy (`<cluster>.client` / `<cluster>.server`) and metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, BTreeMap<String, u64>>,
    /// Log lines that must have been written.
    #[serde(default)]
    pub logs: Vec<LogExpect>,
    /// The module traps in this step, with a message containing this text (a
    /// trap not expected is a problem of the step).
    pub trap: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogExpect {
    /// `<cluster>.client` or `<cluster>.server`.
    pub proxy: String,
    #[serde(default)]
    pub level: Option<String>,
    pub contains: String,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = crate::guard::read_yaml("scenario", path)?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let mut s: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let message = hybridmesh_filter_core::config::clean_message(&inner.to_string());
            let at = hybridmesh_filter_core::config::error_path(&e.path().to_string(), &message);
            let line = inner
                .location()
                .map(|l| format!(" (line {})", l.line()))
                .unwrap_or_default();
            let at = if at.is_empty() {
                "scenario".to_string()
            } else {
                at
            };
            anyhow::anyhow!("{}: {at}: {message}{line}", path.display())
        })?;
        s.path = path.to_path_buf();
        s.check()?;
        Ok(s)
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Resolves the mesh.
    pub fn mesh(&self) -> anyhow::Result<Mesh> {
        match &self.mesh {
            MeshRef::Inline(m) => Ok(m.clone()),
            MeshRef::Path(p) => {
                let path = self.dir().join(p);
                let text = crate::guard::read_yaml("mesh", &path)?;
                serde_yaml_ng::from_str(&text)
                    .with_context(|| format!("invalid mesh {}", path.display()))
            }
        }
    }

    /// The plugin config bytes for one cluster's sidecars (empty: none).
    pub fn config_for(&self, cluster: &str) -> anyhow::Result<Vec<u8>> {
        match self.configs.get(cluster).or(self.config.as_ref()) {
            None => Ok(Vec::new()),
            Some(c) => config_json(self.dir(), c),
        }
    }

    /// Refuses a scenario whose steps, all together, send more requests or
    /// advance the clocks further than `totals` allow.
    pub fn check_totals(&self, totals: &Totals) -> anyhow::Result<()> {
        let mut requests: u64 = 0;
        let mut simulated = std::time::Duration::ZERO;
        for step in &self.steps {
            if step.request.is_some() {
                requests += u64::from(step.repeat.unwrap_or(1).max(1));
            }
            if let Some(a) = &step.advance {
                simulated += duration(a).unwrap_or_default();
            }
        }
        if requests > totals.requests {
            bail!(
                "{}: the steps send {requests} requests in all, past the limit of {} per scenario (raise it with --requests-per-scenario)",
                self.path.display(),
                totals.requests
            );
        }
        if simulated > totals.simulated {
            bail!(
                "{}: the steps advance the clocks by {} in all, past the limit of {} per scenario (raise it with --simulated-time-per-scenario)",
                self.path.display(),
                hours(simulated),
                hours(totals.simulated)
            );
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.proxy.workers > MAX_WORKERS {
            bail!(
                "{}: proxy.workers: {} worker VMs, at most {MAX_WORKERS} per sidecar",
                self.path.display(),
                self.proxy.workers
            );
        }
        // Expectations that cannot fail are refused: a config for a cluster
        // the mesh does not have would be ignored.
        if !self.configs.is_empty() {
            let mesh = self.mesh()?;
            for name in self.configs.keys() {
                if !mesh.clusters.contains_key(name) {
                    bail!(
                        "{}: configs.{name}: no cluster {name:?} in the mesh (clusters: {})",
                        self.path.display(),
                        mesh.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let actions = [
                step.request.is_some(),
                step.drain.is_some(),
                step.restore.is_some(),
                step.fail.is_some(),
                step.advance.is_some(),
                step.reconfigure.is_some(),
            ]
            .iter()
            .filter(|a| **a)
            .count();
            if actions > 1 {
                bail!(
                    "{}: steps[{i}]: more than one action; give each its own step",
                    self.path.display()
                );
            }
            if actions == 0 && step.expect.is_none() {
                bail!("{}: steps[{i}]: nothing to do: give an action (request, drain, restore, fail, advance, reconfigure) or expect", self.path.display());
            }
            if let Some(n) = step.repeat {
                if n == 0 {
                    bail!(
                        "{}: steps[{i}].repeat: 0 requests, expected at least 1 (without repeat: one request)",
                        self.path.display()
                    );
                }
                if n > MAX_REPEAT {
                    bail!(
                        "{}: steps[{i}].repeat: {n} requests, at most {MAX_REPEAT} per step (a share is measured well within that)",
                        self.path.display()
                    );
                }
            }
            if let Some(a) = &step.advance {
                let by = duration(a)
                    .with_context(|| format!("{}: steps[{i}].advance", self.path.display()))?;
                if by > MAX_ADVANCE {
                    bail!(
                        "{}: steps[{i}].advance: {a} is longer than {}h: every clock ticks through it (maxEjectionTime is minutes)",
                        self.path.display(),
                        MAX_ADVANCE.as_secs() / 3600
                    );
                }
            }
            if step.repeat.is_some() && step.request.is_none() {
                bail!(
                    "{}: steps[{i}]: repeat needs a request",
                    self.path.display()
                );
            }
            if let Some(p) = step.request.as_ref().and_then(|r| r.protocol.as_deref()) {
                if !PROTOCOLS.contains(&p) {
                    bail!(
                        "{}: steps[{i}].request.protocol: {p:?} is not one of {}",
                        self.path.display(),
                        PROTOCOLS.join(", ")
                    );
                }
            }
            for (k, a) in step
                .request
                .iter()
                .flat_map(|r| r.callouts.iter())
                .enumerate()
            {
                let response = a.status.is_some() || !a.headers.is_empty() || a.body.is_some();
                if [response, a.fail, a.timeout].iter().filter(|x| **x).count() > 1 {
                    bail!(
                        "{}: steps[{i}].request.callouts[{k}]: give one of a response (status, headers, body), fail or timeout",
                        self.path.display()
                    );
                }
                if let Some(status) = a.status.filter(|s| !(100..=599).contains(s)) {
                    bail!(
                        "{}: steps[{i}].request.callouts[{k}].status: {status} is not an HTTP status, expected 100 to 599",
                        self.path.display()
                    );
                }
            }
            if let Some(f) = &step.fail {
                if !(100..=599).contains(&f.status) {
                    bail!(
                        "{}: steps[{i}].fail.status: {} is not an HTTP status, expected 100 to 599",
                        self.path.display(),
                        f.status
                    );
                }
            }
            if let Some(e) = &step.expect {
                for (cluster, [min, max]) in &e.share {
                    if !(min.is_finite()
                        && max.is_finite()
                        && 0.0 <= *min
                        && min <= max
                        && *max <= 1.0)
                    {
                        bail!(
                            "{}: steps[{i}].expect.share.{cluster}: [{min}, {max}] is not a share range, expected [min, max] with 0 <= min <= max <= 1",
                            self.path.display()
                        );
                    }
                }
                if (!e.share.is_empty() || e.consistent) && step.repeat.is_none() {
                    bail!(
                        "{}: steps[{i}].expect: share and consistent need repeat",
                        self.path.display()
                    );
                }
            }
        }
        Ok(())
    }
}

/// A config reference as the plugin receives it: JSON bytes for YAML files and
/// inline YAML (converted; the filter's own parser is what checks them), the
/// bytes as they are for `.json` files and `!raw` strings, nothing for `null`.
pub fn config_json(dir: &Path, c: &ConfigRef) -> anyhow::Result<Vec<u8>> {
    let value: serde_json::Value = match c {
        ConfigRef::None => return Ok(Vec::new()),
        ConfigRef::Raw(text) => return Ok(text.as_bytes().to_vec()),
        ConfigRef::Inline(v) => serde_json::to_value(v).context("inline config")?,
        ConfigRef::Path(p) => {
            let path = dir.join(p);
            let text = crate::guard::read_yaml("config", &path)?;
            if path.extension().is_some_and(|e| e == "json") {
                // Passed through untouched: the filter reports its own errors.
                return Ok(text.into_bytes());
            }
            let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("invalid YAML in {}", path.display()))?;
            serde_json::to_value(yaml).with_context(|| format!("config {}", path.display()))?
        }
    };
    Ok(serde_json::to_vec(&value)?)
}

/// Requests one step may repeat.
pub const MAX_REPEAT: u32 = 100_000;
/// The longest `advance` (each sidecar's clock ticks through it).
pub const MAX_ADVANCE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Worker VMs per sidecar (`proxy.workers`): the harness's own limit per plugin
/// (`proxy_wasm_host::limits::MAX_WORKERS`; a sim test keeps the two equal).
pub const MAX_WORKERS: usize = 256;

/// What one scenario may ask for in all, whatever each step asks: each step is
/// capped ([`MAX_REPEAT`], [`MAX_ADVANCE`]), but 10,000 steps of 100,000 requests
/// would run for days. `hybridmesh test` raises these with its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Requests sent by all steps (default 100,000).
    pub requests: u64,
    /// Simulated time all `advance` steps move the clocks by (default 24 h).
    pub simulated: std::time::Duration,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            requests: 100_000,
            simulated: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// `d` in hours, minutes or seconds, whichever reads best.
fn hours(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.3}s")
    }
}

/// Parses a duration like the filter config does (`30s`, `1m`, `500ms`).
pub fn duration(text: &str) -> anyhow::Result<std::time::Duration> {
    hybridmesh_filter_core::config::parse_duration_ms(text)
        .map(std::time::Duration::from_millis)
        .with_context(|| {
            format!("{text:?} is not a duration, expected e.g. \"30s\", \"1m\", \"500ms\"")
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sidecar_accepts_peers_of_the_trust_domain_and_its_aliases_only() {
        let mut mesh: Mesh = serde_yaml_ng::from_str(
            "clusters: {}\ntrustDomain: cluster.local\ntrustDomainAliases: [old.example]",
        )
        .unwrap();
        assert!(mesh.accepts_peer("spiffe://cluster.local/ns/sleep/sa/sleep"));
        assert!(mesh.accepts_peer("spiffe://old.example/ns/x/sa/y"));
        for foreign in [
            "spiffe://evil.example/ns/x/sa/y",
            "spiffe://cluster.local.evil.example/ns/x/sa/y",
            "spiffe://cluster.localhost/ns/x/sa/y",
            "spiffe://cluster.local",
            "cluster.local/ns/x/sa/y",
        ] {
            assert!(!mesh.accepts_peer(foreign), "{foreign}");
        }
        mesh.trust_domain_aliases.clear();
        assert!(!mesh.accepts_peer("spiffe://old.example/ns/x/sa/y"));
    }
}
