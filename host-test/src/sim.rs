//! The seed's mesh, simulated: client and server sidecars in each cluster,
//! endpoints that answer, east-west gateways, drains and failures.
//!
//! A request from cluster A goes through A's client sidecar (outbound), is
//! routed the way the VirtualService the filter needs routes it (header
//! `x-hybridmesh-target-cluster` -> that cluster's subset, else Envoy's default
//! spread over every endpoint), reaches the serving cluster's server sidecar
//! (inbound, over mTLS), the application answers, and the response goes back
//! through both sidecars. Remote networks are reached through their gateway
//! (`upstream.address` is the gateway, endpoint metadata `;;;;<cluster>`).
//!
//! Sidecars are a trait with two implementations: [`WasmSidecar`] runs a
//! `.wasm` in the harness; [`NativeSidecar`] runs the filter's decision code
//! natively. The same scenario through both must give the same results.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};

use hybridmesh_filter::flow::{
    Direction as FlowDirection, Headers, Host, Level as FlowLevel, Peer, StreamState, Update,
};
use hybridmesh_filter::identity::{Locality, NodeFacts};
use hybridmesh_filter::Filter;

use crate::envoy::{response_flags, Connection, Direction, NodeMetadataStyle, Proxy, Upstream};
use crate::plugin::{FailStrategy, Module, Plugin};
use crate::scenario::{Fail, Mesh, NodeMetadata, ProxyOptions, RequestSpec};

pub type Pairs = Vec<(String, String)>;

/// What leaves a sidecar towards the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Pairs,
    pub body: Vec<u8>,
    /// The hop record the sidecar wrote for this stream (JSON), if any.
    pub hop: Option<String>,
}

/// What a sidecar did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    Headers(Pairs),
    Reply(Reply),
}

/// What the upstream of a sidecar answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub address: Option<String>,
    pub workload: Option<String>,
    pub flags: u64,
}

/// One stream through a sidecar.
pub trait SidecarStream {
    fn request(&mut self, headers: &Pairs, body: Option<&[u8]>) -> anyhow::Result<Forward>;
    fn respond(&mut self, answer: &Answer) -> anyhow::Result<Reply>;
}

/// One sidecar proxy running the module.
pub trait Sidecar {
    fn open(&mut self, connection: Connection) -> Box<dyn SidecarStream + '_>;
    fn advance(&mut self, by: Duration) -> anyhow::Result<()>;
    fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool>;
    fn configured(&self) -> bool;
    fn metric(&self, name: &str) -> Option<u64>;
    /// (level, message) lines, levels in lower case.
    fn logs(&self) -> Vec<(String, String)>;
    /// The lines from the `start`-th on.
    fn logs_since(&self, start: usize) -> Vec<(String, String)> {
        self.logs().into_iter().skip(start).collect()
    }
    /// Traps in the module so far, one line each (callback and message).
    fn failures(&self) -> Vec<String> {
        Vec::new()
    }
}

/// How to make a sidecar for a cluster.
pub struct SidecarSpec<'a> {
    pub cluster: &'a str,
    pub network: &'a str,
    pub locality: &'a str,
    pub namespace: &'a str,
    pub direction: Direction,
    pub config: &'a [u8],
    pub options: &'a ProxyOptions,
}

// ---------------------------------------------------------------------------
// The .wasm in the harness
// ---------------------------------------------------------------------------

pub struct WasmSidecar {
    plugin: Plugin,
    next_worker: usize,
}

impl WasmSidecar {
    pub fn new(module: &Module, spec: &SidecarSpec) -> anyhow::Result<WasmSidecar> {
        let loc = Locality::parse(spec.locality).unwrap_or_default();
        let proxy = Proxy::istio(spec.cluster)
            .network(spec.network)
            .locality(&loc.region, &loc.zone, &loc.subzone)
            .metadata("NAMESPACE", spec.namespace)
            .direction(spec.direction)
            .node_metadata_style(match spec.options.node_metadata {
                NodeMetadata::Xds => NodeMetadataStyle::Xds,
                NodeMetadata::Legacy => NodeMetadataStyle::Legacy,
            });
        let plugin = Plugin::builder(module)
            .proxy(proxy)
            .plugin_config(spec.config)
            .workers(spec.options.workers.max(1))
            .fail_strategy(match spec.options.fail_strategy {
                Fail::FailClose => FailStrategy::FailClose,
                Fail::FailOpen => FailStrategy::FailOpen,
                Fail::FailReload => FailStrategy::FailReload,
            })
            .seed(spec.options.seed)
            .build()
            .with_context(|| {
                format!(
                    "starting the module in {}'s {:?} sidecar",
                    spec.cluster, spec.direction
                )
            })?;
        Ok(WasmSidecar {
            plugin,
            next_worker: 0,
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

struct WasmStream<'p> {
    stream: crate::plugin::Stream<'p>,
}

fn borrowed(pairs: &Pairs) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl SidecarStream for WasmStream<'_> {
    fn request(&mut self, headers: &Pairs, body: Option<&[u8]>) -> anyhow::Result<Forward> {
        let s = &mut self.stream;
        s.request_headers(&borrowed(headers), body.is_none())?;
        if let Some(b) = body {
            if s.local_reply().is_none() {
                s.request_body(b, true)?;
            }
        }
        if s.local_reply().is_some() || !s.request_forwarded() {
            s.complete()?;
            return Ok(Forward::Reply(Reply {
                status: s.client_response_status().unwrap_or(0),
                headers: s.client_response_headers().unwrap_or_default(),
                body: s.client_response_body(),
                hop: hop_record(s),
            }));
        }
        Ok(Forward::Headers(
            s.upstream_request_headers().unwrap_or_default(),
        ))
    }

    fn respond(&mut self, a: &Answer) -> anyhow::Result<Reply> {
        let mut up = Upstream::new(a.status).body(&a.body).flags(a.flags);
        for (k, v) in &a.headers {
            up = up.header(k, v);
        }
        if let Some(addr) = &a.address {
            up = up.address(addr);
        }
        if let Some(w) = &a.workload {
            up = up.istio_workload(w);
        }
        let s = &mut self.stream;
        s.respond(up)?;
        s.complete()?;
        Ok(Reply {
            status: s.client_response_status().unwrap_or(0),
            headers: s.client_response_headers().unwrap_or_default(),
            body: s.client_response_body(),
            hop: hop_record(s),
        })
    }
}

/// The filter's hop record (filter state `hybridmesh.hop`), as Envoy's access
/// log would read it.
fn hop_record(s: &crate::plugin::Stream<'_>) -> Option<String> {
    s.filter_state()
        .get("hybridmesh.hop")
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Sidecar for WasmSidecar {
    fn open(&mut self, connection: Connection) -> Box<dyn SidecarStream + '_> {
        let workers = self.plugin.workers().max(1);
        let worker = self.next_worker % workers;
        self.next_worker += 1;
        Box::new(WasmStream {
            stream: self.plugin.stream(worker).connection(connection),
        })
    }

    fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        self.plugin.advance(by)
    }

    fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool> {
        self.plugin.reconfigure(config)
    }

    fn configured(&self) -> bool {
        self.plugin.configured()
    }

    fn metric(&self, name: &str) -> Option<u64> {
        self.plugin.metric(name)
    }

    fn failures(&self) -> Vec<String> {
        self.plugin
            .failures()
            .into_iter()
            .map(|f| {
                let first = f.message.lines().next().unwrap_or_default().to_string();
                format!(
                    "the module trapped in {} (worker {}): {first}",
                    f.callback, f.worker
                )
            })
            .collect()
    }

    fn logs(&self) -> Vec<(String, String)> {
        self.logs_since(0)
    }

    fn logs_since(&self, start: usize) -> Vec<(String, String)> {
        self.plugin
            .logs_since(start)
            .into_iter()
            .map(|l| (format!("{:?}", l.level).to_ascii_lowercase(), l.message))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The decision code, natively
// ---------------------------------------------------------------------------

/// The filter's own flow ([`hybridmesh_filter::flow`]) behind the same trait,
/// for parity with the `.wasm`. Metrics count at once (no flush interval).
pub struct NativeSidecar {
    filter: Option<Filter>,
    node: NodeFacts,
    direction: FlowDirection,
    now_ms: u64,
    rng: hybridmesh_filter::decide::Rng,
    shared: BTreeMap<String, Vec<u8>>,
    counters: BTreeMap<String, u64>,
    logs: Vec<(String, String)>,
}

impl NativeSidecar {
    pub fn new(spec: &SidecarSpec) -> NativeSidecar {
        let node = NodeFacts {
            cluster: Some(spec.cluster.to_string()),
            network: Some(spec.network.to_string()).filter(|n| !n.is_empty()),
            locality: Locality::parse(spec.locality).unwrap_or_default(),
            namespace: Some(spec.namespace.to_string()),
        };
        let mut sc = NativeSidecar {
            filter: None,
            node,
            direction: if spec.direction == Direction::Inbound {
                FlowDirection::Inbound
            } else {
                FlowDirection::Outbound
            },
            now_ms: 1_700_000_000_000,
            rng: hybridmesh_filter::decide::Rng::new(spec.options.seed),
            shared: BTreeMap::new(),
            counters: BTreeMap::new(),
            logs: Vec::new(),
        };
        sc.configure(spec.config);
        sc
    }

    fn configure(&mut self, config: &[u8]) -> bool {
        let built = hybridmesh_filter::parse_json(config)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .and_then(|cfg| Filter::new(cfg, &self.node).map_err(|i| vec![i.to_string()]));
        match built {
            Ok(f) => {
                self.filter = Some(f);
                true
            }
            Err(errors) => {
                for e in errors {
                    self.logs.push((
                        "error".into(),
                        format!("hybridmesh: invalid plugin config: {e}"),
                    ));
                }
                false
            }
        }
    }
}

struct NativeHost<'a> {
    sc: &'a mut NativeSidecar,
    peer: Peer,
    answer: Option<&'a Answer>,
}

impl Host for NativeHost<'_> {
    fn now_ms(&mut self) -> u64 {
        self.sc.now_ms
    }
    fn random(&mut self) -> u64 {
        self.sc.rng.next_u64()
    }
    fn listener_direction(&mut self) -> Option<FlowDirection> {
        Some(self.sc.direction)
    }
    fn cluster_name(&mut self) -> Option<String> {
        None
    }
    fn peer(&mut self) -> Peer {
        self.peer.clone()
    }
    fn shared_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.sc.shared.get(key).cloned()
    }
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        if let Some(v) = update(self.sc.shared.get(key).map(Vec::as_slice)) {
            self.sc.shared.insert(key.to_string(), v);
        }
    }
    fn response_flags(&mut self) -> u64 {
        self.answer.map(|a| a.flags).unwrap_or(0)
    }
    fn upstream_address(&mut self) -> Option<String> {
        self.answer.and_then(|a| a.address.clone())
    }
    fn upstream_host_metadata(&mut self) -> Option<Vec<u8>> {
        self.answer
            .and_then(|a| a.workload.as_deref())
            .map(|w| crate::envoy::HostMetadata::istio_workload(w).encode())
    }
}

struct NativeStream<'s> {
    sc: &'s mut NativeSidecar,
    peer: Peer,
    state: Option<StreamState>,
    hop: Option<String>,
}

fn to_bytes(pairs: &Pairs) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn to_pairs(h: &Headers) -> Pairs {
    h.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

impl NativeStream<'_> {
    fn record(&mut self, effects: &hybridmesh_filter::flow::Effects) {
        for c in &effects.counters {
            *self.sc.counters.entry(c.name()).or_insert(0) += 1;
        }
        for (level, line) in &effects.logs {
            let level = match level {
                FlowLevel::Trace => "trace",
                FlowLevel::Debug => "debug",
                FlowLevel::Info => "info",
                FlowLevel::Warn => "warn",
                FlowLevel::Error | FlowLevel::Critical => "error",
            };
            self.sc
                .logs
                .push((level.into(), format!("hybridmesh: {line}")));
        }
    }

    /// Runs the response side of the filter over `headers`.
    fn response(&mut self, headers: &Pairs, answer: Option<&Answer>) -> Pairs {
        let (Some(filter), Some(state)) = (self.sc.filter.clone(), self.state.clone()) else {
            return headers.clone();
        };
        let bytes = to_bytes(headers);
        let out = {
            let mut host = NativeHost {
                sc: self.sc,
                peer: self.peer.clone(),
                answer,
            };
            filter.on_response(&state, &bytes, &mut host)
        };
        self.record(&out.effects);
        if self.sc.filter.as_ref().is_some_and(|f| f.cfg.filter_state) {
            self.hop = out.hop.as_ref().map(|h| h.to_json());
        }
        let mut result = headers.clone();
        for (k, v) in out.set_headers {
            result.retain(|(rk, _)| *rk != k);
            result.push((k, String::from_utf8_lossy(&v).into_owned()));
        }
        result
    }
}

impl SidecarStream for NativeStream<'_> {
    fn request(&mut self, headers: &Pairs, _body: Option<&[u8]>) -> anyhow::Result<Forward> {
        let Some(filter) = self.sc.filter.clone() else {
            return Ok(Forward::Headers(headers.clone()));
        };
        let bytes = to_bytes(headers);
        let out = {
            let mut host = NativeHost {
                sc: self.sc,
                peer: self.peer.clone(),
                answer: None,
            };
            filter.on_request(&bytes, &mut host)
        };
        self.record(&out.effects);
        self.state = Some(out.state);
        if let Some(reply) = out.local_reply {
            let mut h: Pairs = vec![(":status".into(), reply.status.to_string())];
            h.extend(reply.headers);
            let headers = self.response(&h, None);
            return Ok(Forward::Reply(Reply {
                status: reply.status,
                headers,
                body: reply.body.into_bytes(),
                hop: self.hop.take(),
            }));
        }
        Ok(Forward::Headers(
            out.headers
                .as_ref()
                .map(to_pairs)
                .unwrap_or_else(|| headers.clone()),
        ))
    }

    fn respond(&mut self, a: &Answer) -> anyhow::Result<Reply> {
        let mut h: Pairs = vec![(":status".into(), a.status.to_string())];
        h.extend(a.headers.iter().filter(|(k, _)| k != ":status").cloned());
        let headers = self.response(&h, Some(a));
        Ok(Reply {
            status: a.status,
            headers,
            body: a.body.clone(),
            hop: self.hop.take(),
        })
    }
}

impl Sidecar for NativeSidecar {
    fn open(&mut self, connection: Connection) -> Box<dyn SidecarStream + '_> {
        let peer = Peer {
            mtls: connection.is_mtls(),
            uri_san: connection.peer_uri_san().map(str::to_string),
        };
        Box::new(NativeStream {
            sc: self,
            peer,
            state: None,
            hop: None,
        })
    }

    fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        self.now_ms += u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        Ok(())
    }

    fn reconfigure(&mut self, config: &[u8]) -> anyhow::Result<bool> {
        Ok(self.configure(config))
    }

    fn configured(&self) -> bool {
        self.filter.is_some()
    }

    fn metric(&self, name: &str) -> Option<u64> {
        self.counters.get(name).copied()
    }

    fn logs(&self) -> Vec<(String, String)> {
        self.logs.clone()
    }
}

// ---------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------

/// What one request looked like end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub from: String,
    pub status: u32,
    pub body: String,
    /// The cluster whose server side answered; `None` when the client side or Envoy did.
    pub served_by: Option<String>,
    /// The target-cluster header the request left the client sidecar with.
    pub target: Option<String>,
    /// The Envoy cluster the route chose (`outbound|80|<subset>|<fqdn>`).
    pub route: Option<String>,
    /// Request headers as the server application saw them.
    pub upstream_headers: Option<Pairs>,
    /// Response headers as the client application saw them.
    pub response_headers: Pairs,
}

impl Outcome {
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response_headers, name)
    }

    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream_headers.as_ref().and_then(|h| header(h, name))
    }
}

pub fn header<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Default)]
struct ClusterState {
    drained: bool,
    fail_status: Option<u32>,
}

/// The mesh with one client and (optionally) one server sidecar per cluster.
pub struct Sim {
    pub mesh: Mesh,
    names: Vec<String>,
    pub clients: Vec<Box<dyn Sidecar>>,
    pub servers: Vec<Option<Box<dyn Sidecar>>>,
    state: Vec<ClusterState>,
    requests: u64,
    spread: u64,
    target_header: String,
    /// The client sidecars' current config, per cluster (for [`Sim::is_random`]).
    configs: Vec<Vec<u8>>,
    /// The client sidecar's hop record of the last request (see [`Sim::last_hop`]).
    last_hop: Option<String>,
}

/// The workload namespace of the service (the seed's `echo-svc` lives in `default`).
pub const SERVICE_NAMESPACE: &str = "default";

impl Sim {
    /// Builds the mesh; `make` creates each sidecar.
    pub fn new(
        mesh: Mesh,
        server_sidecars: bool,
        config_for: &dyn Fn(&str) -> anyhow::Result<Vec<u8>>,
        make: &mut dyn FnMut(&SidecarSpec) -> anyhow::Result<Box<dyn Sidecar>>,
        options: &ProxyOptions,
    ) -> anyhow::Result<Sim> {
        let names: Vec<String> = mesh.clusters.keys().cloned().collect();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        let mut target_header = "x-hybridmesh-target-cluster".to_string();
        let mut configs = Vec::new();
        for name in &names {
            let c = &mesh.clusters[name];
            let config = config_for(name)?;
            configs.push(config.clone());
            if let Ok(cfg) = hybridmesh_filter::parse_json(&config) {
                target_header = cfg.headers.target_cluster.clone();
            }
            let spec = |direction, namespace| SidecarSpec {
                cluster: name,
                network: &c.network,
                locality: &c.node_locality,
                namespace,
                direction,
                config: &config,
                options,
            };
            clients.push(make(&spec(Direction::Outbound, &mesh.client_namespace))?);
            servers.push(if server_sidecars {
                Some(make(&spec(Direction::Inbound, SERVICE_NAMESPACE))?)
            } else {
                None
            });
        }
        Ok(Sim {
            state: vec![ClusterState::default(); names.len()],
            names,
            mesh,
            clients,
            servers,
            requests: 0,
            spread: 0,
            target_header,
            configs,
            last_hop: None,
        })
    }

    pub fn cluster_names(&self) -> &[String] {
        &self.names
    }

    fn index(&self, cluster: &str) -> anyhow::Result<usize> {
        self.names
            .iter()
            .position(|n| n == cluster)
            .with_context(|| {
                format!(
                    "unknown cluster {cluster:?}, expected one of {}",
                    self.names.join(", ")
                )
            })
    }

    pub fn drain(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        self.state[i].drained = true;
        Ok(())
    }

    pub fn restore(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        self.state[i] = ClusterState::default();
        Ok(())
    }

    pub fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        self.state[i].fail_status = Some(status);
        Ok(())
    }

    pub fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        for s in self
            .clients
            .iter_mut()
            .chain(self.servers.iter_mut().flatten())
        {
            s.advance(by)?;
        }
        Ok(())
    }

    fn all_sidecars(&self) -> Vec<(String, &dyn Sidecar)> {
        let mut out: Vec<(String, &dyn Sidecar)> = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            out.push((format!("{name}.client"), self.clients[i].as_ref()));
            if let Some(s) = &self.servers[i] {
                out.push((format!("{name}.server"), s.as_ref()));
            }
        }
        out
    }

    /// How many traps each sidecar has had (for [`Sim::failures_since`]).
    pub fn failure_counts(&self) -> Vec<usize> {
        self.all_sidecars()
            .iter()
            .map(|(_, s)| s.failures().len())
            .collect()
    }

    /// The traps since `counts` was taken, named by sidecar.
    pub fn failures_since(&self, counts: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        for (k, (name, s)) in self.all_sidecars().into_iter().enumerate() {
            let before = counts.get(k).copied().unwrap_or(0);
            for f in s.failures().into_iter().skip(before) {
                out.push(format!("{name}: {f}"));
            }
        }
        out
    }

    /// Sidecars by name: `<cluster>.client` / `<cluster>.server`.
    pub fn sidecar(&self, name: &str) -> anyhow::Result<&dyn Sidecar> {
        let (cluster, side) = name.rsplit_once('.').with_context(|| {
            format!("proxy {name:?}: expected <cluster>.client or <cluster>.server")
        })?;
        let i = self.index(cluster)?;
        match side {
            "client" => Ok(self.clients[i].as_ref()),
            "server" => self.servers[i]
                .as_deref()
                .with_context(|| format!("proxy {name:?}: this scenario runs no server sidecars")),
            _ => bail!("proxy {name:?}: expected <cluster>.client or <cluster>.server"),
        }
    }

    /// Reconfigures the client and server sidecars of `cluster` (or `all`).
    /// Returns whether every one accepted.
    pub fn reconfigure(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool> {
        let only = if cluster == "all" {
            None
        } else {
            Some(self.index(cluster)?)
        };
        let mut all = true;
        for i in 0..self.names.len() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let accepted = self.clients[i].reconfigure(config)?;
            if accepted {
                self.configs[i] = config.to_vec();
            }
            all &= accepted;
            if let Some(s) = self.servers[i].as_mut() {
                all &= s.reconfigure(config)?;
            }
        }
        Ok(all)
    }

    /// Does the filter's decision for this request depend on a random pick (a
    /// weighted rule without a sticky key)? Such requests differ between runs
    /// with different random sources; only their shares can be compared.
    pub fn is_random(&self, from: &str, spec: &RequestSpec) -> bool {
        let Ok(i) = self.index(from) else {
            return false;
        };
        let c = &self.mesh.clusters[&self.names[i]];
        let node = NodeFacts {
            cluster: Some(self.names[i].clone()),
            network: Some(c.network.clone()),
            locality: Locality::parse(&c.node_locality).unwrap_or_default(),
            namespace: Some(self.mesh.client_namespace.clone()),
        };
        let Some(f) = hybridmesh_filter::parse_json(&self.configs[i])
            .ok()
            .and_then(|cfg| Filter::new(cfg, &node).ok())
        else {
            return false;
        };
        let service = hybridmesh_filter::hosts::service_from_authority(
            spec.authority.as_bytes(),
            &f.me.namespace,
            &f.cfg.domain_suffix,
        );
        let Some(rule) = service.and_then(|s| f.cfg.hosts.lookup(&s)) else {
            return false;
        };
        match f.plan.routes.get(rule) {
            Some(hybridmesh_filter::decide::RoutePlan::Weighted {
                table,
                sticky_header,
                ..
            }) => {
                table.len() > 1
                    && !sticky_header
                        .as_ref()
                        .is_some_and(|h| spec.headers.keys().any(|k| k.eq_ignore_ascii_case(h)))
            }
            _ => false,
        }
    }

    /// The hop record (JSON, as in filter state `hybridmesh.hop`) the client
    /// sidecar wrote for the last request, if it wrote one.
    pub fn last_hop(&self) -> Option<&str> {
        self.last_hop.as_deref()
    }

    /// Sends one request and follows it through the mesh.
    pub fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        self.requests += 1;
        self.last_hop = None;
        let from = spec
            .from
            .clone()
            .unwrap_or_else(|| default_from.to_string());
        let from_i = self.index(&from)?;
        let mut headers: Pairs = vec![
            (":method".into(), spec.method.clone()),
            (":path".into(), spec.path.clone()),
            (":authority".into(), spec.authority.clone()),
            ("x-request-id".into(), format!("req-{}", self.requests)),
        ];
        headers.extend(
            spec.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        let body = spec.body.as_deref().map(str::as_bytes);
        let service = service_fqdn(&spec.authority);

        if let Some(to) = &spec.direct {
            let to_i = self.index(to)?;
            let connection = match spec.peer.as_deref() {
                None | Some("plaintext") => Connection::plaintext(),
                Some(san) => Connection::mtls(san, &self.spiffe(SERVICE_NAMESPACE, "default")),
            };
            let reply = self.serve(to_i, connection, &headers, body)?;
            return Ok(Outcome {
                from,
                status: reply.0.status,
                body: String::from_utf8_lossy(&reply.0.body).into_owned(),
                served_by: Some(to.clone()),
                target: None,
                route: None,
                upstream_headers: reply.1,
                response_headers: reply.0.headers,
            });
        }

        // Client sidecar, outbound.
        let client_conn = Connection::plaintext();
        let names = self.names.clone();
        let state = self.state.clone();
        let mesh = self.mesh.clone();
        let target_header = self.target_header.clone();
        let spread = self.spread;
        let mut served_by = None;
        let mut upstream_headers = None;
        let mut route = None;
        let mut target = None;
        let mut used_spread = false;

        // The server side runs while the client stream is open; the client
        // sidecar is taken out of the list for that time.
        let mut client = std::mem::replace(&mut self.clients[from_i], Box::new(Placeholder));
        let result = (|| -> anyhow::Result<Reply> {
            let mut cs = client.open(client_conn);
            let forwarded = match cs.request(&headers, body)? {
                Forward::Reply(r) => return Ok(r),
                Forward::Headers(h) => h,
            };
            target = header(&forwarded, &target_header).map(str::to_string);
            // The VirtualService: target header -> that cluster's subset; else the default spread.
            let healthy =
                |i: usize| !state[i].drained && !mesh.clusters[&names[i]].endpoints.is_empty();
            let chosen: Option<(usize, String)> = match &target {
                Some(t) => {
                    route = Some(format!("outbound|80|{t}|{service}"));
                    names
                        .iter()
                        .position(|n| n == t)
                        .filter(|&i| healthy(i))
                        .map(|i| {
                            let eps = &mesh.clusters[&names[i]].endpoints;
                            (i, eps[(spread as usize) % eps.len()].clone())
                        })
                }
                None => {
                    route = Some(format!("outbound|80||{service}"));
                    let all: Vec<(usize, String)> = (0..names.len())
                        .filter(|&i| healthy(i))
                        .flat_map(|i| {
                            mesh.clusters[&names[i]]
                                .endpoints
                                .iter()
                                .map(move |e| (i, e.clone()))
                        })
                        .collect();
                    used_spread = true;
                    (!all.is_empty()).then(|| all[(spread as usize) % all.len()].clone())
                }
            };
            let Some((to_i, endpoint)) = chosen else {
                // Envoy's own reply: no healthy upstream.
                return cs.respond(&Answer {
                    status: 503,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: b"no healthy upstream".to_vec(),
                    address: None,
                    workload: None,
                    flags: response_flags::NO_HEALTHY_UPSTREAM,
                });
            };
            let same_network =
                mesh.clusters[&names[to_i]].network == mesh.clusters[&names[from_i]].network;
            let (address, workload) = if same_network {
                (
                    endpoint,
                    format!(
                        "echoserver;{SERVICE_NAMESPACE};echoserver;latest;{}",
                        names[to_i]
                    ),
                )
            } else {
                (
                    mesh.clusters[&names[to_i]].gateway.clone(),
                    format!(";;;;{}", names[to_i]),
                )
            };
            let peer = self.spiffe(&mesh.client_namespace, "sleep");
            let local = self.spiffe(SERVICE_NAMESPACE, "default");
            let (reply, seen) =
                self.serve(to_i, Connection::mtls(&peer, &local), &forwarded, body)?;
            served_by = Some(names[to_i].clone());
            upstream_headers = seen;
            cs.respond(&Answer {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
                address: Some(address),
                workload: Some(workload),
                flags: 0,
            })
        })();
        self.clients[from_i] = client;
        if used_spread {
            self.spread += 1;
        }
        let reply = result?;
        self.last_hop = reply.hop.clone();
        Ok(Outcome {
            from,
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body).into_owned(),
            served_by,
            target,
            route,
            upstream_headers,
            response_headers: reply.headers,
        })
    }

    fn spiffe(&self, namespace: &str, account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{account}",
            self.mesh.trust_domain
        )
    }

    /// The serving cluster: its server sidecar (inbound) and the application.
    /// Returns the reply and the request headers the application saw.
    fn serve(
        &mut self,
        i: usize,
        connection: Connection,
        headers: &Pairs,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(Reply, Option<Pairs>)> {
        let app_status = self.state[i].fail_status.unwrap_or(200);
        let app_body = if app_status == 200 {
            self.mesh.clusters[&self.names[i]].body.clone().into_bytes()
        } else {
            format!("error {app_status}").into_bytes()
        };
        let app = |status: u32, body: Vec<u8>| Answer {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body,
            address: Some("127.0.0.1:8080".into()),
            workload: None,
            flags: 0,
        };
        match self.servers[i].as_mut() {
            None => {
                let a = app(app_status, app_body);
                let mut h = vec![(":status".to_string(), app_status.to_string())];
                h.extend(a.headers);
                Ok((
                    Reply {
                        status: app_status,
                        headers: h,
                        body: a.body,
                        hop: None,
                    },
                    Some(headers.clone()),
                ))
            }
            Some(server) => {
                let mut ss = server.open(connection);
                match ss.request(headers, body)? {
                    Forward::Reply(r) => Ok((r, None)),
                    Forward::Headers(seen) => {
                        let reply = ss.respond(&app(app_status, app_body))?;
                        Ok((reply, Some(seen)))
                    }
                }
            }
        }
    }
}

/// The FQDN the route is for (as Istio names the outbound cluster).
fn service_fqdn(authority: &str) -> String {
    hybridmesh_filter::hosts::service_from_authority(authority.as_bytes(), "sleep", "cluster.local")
        .unwrap_or_else(|| authority.to_string())
}

/// Stands in for a client sidecar while its stream is open.
struct Placeholder;

impl Sidecar for Placeholder {
    fn open(&mut self, _: Connection) -> Box<dyn SidecarStream + '_> {
        Box::new(PlaceholderStream)
    }
    fn advance(&mut self, _: Duration) -> anyhow::Result<()> {
        Ok(())
    }
    fn reconfigure(&mut self, _: &[u8]) -> anyhow::Result<bool> {
        Ok(false)
    }
    fn configured(&self) -> bool {
        false
    }
    fn metric(&self, _: &str) -> Option<u64> {
        None
    }
    fn logs(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

struct PlaceholderStream;

impl SidecarStream for PlaceholderStream {
    fn request(&mut self, _: &Pairs, _: Option<&[u8]>) -> anyhow::Result<Forward> {
        bail!("a sidecar was used while its own stream was open")
    }
    fn respond(&mut self, _: &Answer) -> anyhow::Result<Reply> {
        bail!("a sidecar was used while its own stream was open")
    }
}
