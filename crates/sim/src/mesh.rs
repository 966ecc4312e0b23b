//! The seed's mesh, simulated: client and server sidecars in each cluster,
//! endpoints that answer, east-west gateways, drains and failures.
//!
//! A request from cluster A goes through A's client sidecar (outbound), is
//! routed the way the VirtualService `render` writes routes it
//! (`hybridmesh_filter_core::routing`): `x-hybridmesh-target-cluster: C` ->
//! subset `prefer-C` (C's endpoints in priority 0, every other cluster's in
//! priority 1, renumbered when C has none; retries on 503 that leave the
//! failed priority from the third attempt on, as Envoy's
//! `previous_priorities` does), `x-hybridmesh-pinned-cluster: C` -> `only-C`
//! (C alone), else Envoy's default spread over every endpoint. The request
//! reaches the serving cluster's server sidecar (inbound, over mTLS), the
//! application answers, and the response goes back through both sidecars
//! (the client side sees only the last attempt's). Remote networks are
//! reached through their gateway (`upstream.address` is the gateway,
//! endpoint metadata `;;;;<cluster>`). Envoy's own outlier ejection is not
//! modelled: with the retries it changes how many attempts a request takes,
//! not where it is served.
//!
//! Sidecars are a trait with two implementations: [`WasmSidecar`] runs a
//! `.wasm` in the harness; [`NativeSidecar`] runs the filter's decision code
//! natively. The same scenario through both must give the same results.

use std::time::Duration;

use anyhow::{bail, Context as _};

use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::routing;
use hybridmesh_filter_core::Filter;

use crate::sidecar::{Answer, CalloutQueue, Forward, Reply, Sidecar, SidecarSpec, SidecarStream};
use hybridmesh_scenario::header;
use hybridmesh_scenario::{Mesh, Outcome, Pairs, ProxyOptions, RequestSpec};
use proxy_wasm_host::envoy::{response_flags, Connection, Direction, StructValue};

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
    pinned_header: String,
    /// The client sidecars' current config, per cluster (for [`Sim::is_random`]).
    configs: Vec<Vec<u8>>,
    /// The client sidecar's hop record of the last request (see [`Sim::last_hop`]).
    last_hop: Option<String>,
    /// What went wrong with the last request's callouts (see [`Sim::callout_problems`]).
    callout_problems: Vec<String>,
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
        let defaults = hybridmesh_filter_core::config::HeaderNames::default();
        let mut target_header = defaults.target_cluster;
        let mut pinned_header = defaults.pinned_cluster;
        let mut configs = Vec::new();
        for name in &names {
            let c = &mesh.clusters[name];
            let config = config_for(name)?;
            configs.push(config.clone());
            if let Ok(cfg) = hybridmesh_filter_core::parse_json(&config) {
                target_header = cfg.headers.target_cluster.clone();
                pinned_header = cfg.headers.pinned_cluster.clone();
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
            pinned_header,
            configs,
            last_hop: None,
            callout_problems: Vec::new(),
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

    /// A line per sidecar whose first plugin config was rejected, so it runs
    /// without one.
    pub fn config_rejections(&self) -> Vec<String> {
        self.all_sidecars()
            .into_iter()
            .filter(|(_, s)| s.config_rejected())
            .map(|(name, s)| {
                // Why, when the module trapped while it started (a trap, or a
                // call past the harness's time limit, in the configuration canary).
                let why = s
                    .failures()
                    .first()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                format!("{name}: plugin config rejected{why}; without one Envoy answers every request there 500 (NFCF)")
            })
            .collect()
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
        let Some(f) = hybridmesh_filter_core::parse_json(&self.configs[i])
            .ok()
            .and_then(|cfg| Filter::new(cfg, &node).ok())
        else {
            return false;
        };
        let service = hybridmesh_filter_core::hosts::service_from_authority(
            spec.authority.as_bytes(),
            &f.me.namespace,
            &f.cfg.domain_suffix,
        );
        let Some(rule) = service.and_then(|s| f.cfg.hosts.lookup(&s)) else {
            return false;
        };
        match f.plan.routes.get(rule) {
            Some(hybridmesh_filter_core::decide::RoutePlan::Weighted {
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

    /// Sends one request and follows it through the mesh; the module's callouts on
    /// the way are answered from `spec.callouts`.
    pub fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        let queue = CalloutQueue::new(&spec.callouts);
        self.answer_callouts_from(&queue);
        let outcome = self.follow(spec, default_from);
        self.answer_callouts_from(&CalloutQueue::default());
        self.callout_problems = queue.finish();
        outcome
    }

    /// Every sidecar, client and server, answers its module's callouts from `queue`.
    fn answer_callouts_from(&mut self, queue: &CalloutQueue) {
        for sidecar in self
            .clients
            .iter_mut()
            .chain(self.servers.iter_mut().flatten())
        {
            sidecar.answer_callouts_from(queue);
        }
    }

    /// What went wrong with the last request's callouts: a callout with no answer
    /// left, an answer for another cluster, answers left unused. Taken once.
    pub fn callout_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.callout_problems)
    }

    fn follow(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
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
                // Istio's inbound TLS refuses a certificate outside the
                // mesh's trust domains before the filter sees anything.
                Some(san) if !self.mesh.accepts_peer(san) => {
                    return Ok(Outcome::refused(
                        &from,
                        to,
                        &format!(
                            "{to}'s sidecar refused the TLS handshake: {san} is outside the mesh's trust domains"
                        ),
                    ));
                }
                Some(san) => Connection::mtls(san, &self.spiffe(SERVICE_NAMESPACE, "default")),
            };
            let reply = self.serve(to_i, with_protocol(connection, spec), &headers, body)?;
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
        let client_conn = with_protocol(Connection::plaintext(), spec);
        let metadata: Vec<(String, String, StructValue)> = spec
            .metadata
            .iter()
            .flat_map(|(namespace, fields)| {
                fields
                    .iter()
                    .map(move |(key, value)| (namespace.clone(), key.clone(), struct_value(value)))
            })
            .collect();
        let names = self.names.clone();
        let state = self.state.clone();
        let mesh = self.mesh.clone();
        let target_header = self.target_header.clone();
        let pinned_header = self.pinned_header.clone();
        let mut spread = self.spread;
        let mut served_by = None;
        let mut upstream_headers = None;
        let mut route = None;
        let mut target = None;

        // The server side runs while the client stream is open; the client
        // sidecar is taken out of the list for that time.
        let mut client = std::mem::replace(&mut self.clients[from_i], Box::new(Placeholder));
        let result = (|| -> anyhow::Result<Reply> {
            let mut cs = client.open_with_metadata(client_conn, &metadata);
            let forwarded = match cs.request(&headers, body)? {
                Forward::Reply(r) => return Ok(r),
                Forward::Headers(h) => h,
            };
            let pinned = header(&forwarded, &pinned_header).map(str::to_string);
            let preferred = header(&forwarded, &target_header).map(str::to_string);
            target = pinned.clone().or_else(|| preferred.clone());
            let healthy =
                |i: usize| !state[i].drained && !mesh.clusters[&names[i]].endpoints.is_empty();
            let index = |c: &str| names.iter().position(|n| n == c);
            // The route's priorities (cluster indices per priority, no empty
            // priority) and how many attempts it makes on a 503.
            let (levels, attempts): (Vec<Vec<usize>>, u32) = match (&pinned, &preferred) {
                (Some(p), _) => {
                    route = Some(format!("outbound|80|{}|{service}", routing::only_subset(p)));
                    (
                        vec![index(p).filter(|&i| healthy(i)).into_iter().collect()],
                        1,
                    )
                }
                (None, Some(t)) => {
                    route = Some(format!(
                        "outbound|80|{}|{service}",
                        routing::prefer_subset(t)
                    ));
                    let p0: Vec<usize> = index(t).filter(|&i| healthy(i)).into_iter().collect();
                    let p1: Vec<usize> = (0..names.len())
                        .filter(|&i| healthy(i) && Some(i) != index(t))
                        .collect();
                    (vec![p0, p1], 1 + routing::RETRY_ATTEMPTS)
                }
                (None, None) => {
                    route = Some(format!("outbound|80||{service}"));
                    (vec![(0..names.len()).filter(|&i| healthy(i)).collect()], 1)
                }
            };
            let levels: Vec<Vec<usize>> = levels.into_iter().filter(|l| !l.is_empty()).collect();
            let mut attempted: Vec<usize> = Vec::new();
            let mut last: Option<(usize, Answer, Option<Pairs>)> = None;
            for attempt in 1..=attempts {
                // Envoy's previous_priorities (update frequency 2): the first two
                // attempts use the original priority load, later ones leave the
                // priorities already tried (all of them tried: back to the original).
                let fresh = levels
                    .iter()
                    .find(|l| !l.iter().any(|i| attempted.contains(i)));
                let level = match (attempt, fresh) {
                    (1 | 2, _) | (_, None) => levels.first(),
                    (_, Some(l)) => Some(l),
                };
                let Some(level) = level else { break };
                let all: Vec<(usize, String)> = level
                    .iter()
                    .flat_map(|&i| {
                        mesh.clusters[&names[i]]
                            .endpoints
                            .iter()
                            .map(move |e| (i, e.clone()))
                    })
                    .collect();
                let (to_i, endpoint) = all[(spread as usize) % all.len()].clone();
                spread += 1;
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
                attempted.push(to_i);
                // The route retries a 503 only on a preference route
                // (`routing::RETRY_ON`); Istio's default no longer does.
                let retry = reply.status == 503 && attempt < attempts;
                last = Some((
                    to_i,
                    Answer {
                        status: reply.status,
                        headers: reply.headers,
                        body: reply.body,
                        address: Some(address),
                        workload: Some(workload),
                        flags: 0,
                    },
                    seen,
                ));
                if !retry {
                    break;
                }
            }
            let Some((to_i, answer, seen)) = last else {
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
            served_by = Some(names[to_i].clone());
            upstream_headers = seen;
            cs.respond(&answer)
        })();
        self.clients[from_i] = client;
        self.spread = spread;
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
    hybridmesh_filter_core::hosts::service_from_authority(
        authority.as_bytes(),
        "sleep",
        "cluster.local",
    )
    .unwrap_or_else(|| authority.to_string())
}

/// Stands in for a client sidecar while its stream is open.
/// The connection speaking the request's `protocol`, when it names one.
fn with_protocol(connection: Connection, spec: &RequestSpec) -> Connection {
    match spec.protocol.as_deref() {
        Some(protocol) => connection.protocol(protocol),
        None => connection,
    }
}

/// A YAML/JSON value as a `google.protobuf.Value` (what a scenario's
/// `request.metadata` holds).
pub fn struct_value(v: &serde_json::Value) -> StructValue {
    use serde_json::Value;
    match v {
        Value::Null => StructValue::Null,
        Value::Bool(b) => StructValue::Bool(*b),
        Value::Number(n) => StructValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => StructValue::String(s.clone()),
        Value::Array(items) => StructValue::List(items.iter().map(struct_value).collect()),
        Value::Object(fields) => StructValue::Struct(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), struct_value(v)))
                .collect(),
        ),
    }
}

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
