//! A request's way through the filter, as plain Rust over plain data.
//!
//! Request: the header map read in place -> spoofed headers found -> service
//! -> rule -> target cluster -> only the headers that change written out, one
//! host call each. Response: served-by -> health -> counters -> hop record.
//! The proxy is reached only through the small [`Host`] trait (each method is
//! one host call, made only when its answer is needed), so all of this runs
//! natively in tests, and the `.wasm` glue only translates.
//!
//! Nothing on the common path allocates: the stream's [`StreamState`] and the
//! VM's [`Scratch`] keep their buffers from one request to the next, header
//! values are borrowed from the proxy's buffer or precomputed at configure
//! time, numbers are written without `core::fmt`.
//!
//! [`Filter::on_request`] and [`Filter::on_response`] wrap the same path for
//! tests and the native simulator: headers as a list in, the new list and the
//! side effects out.

use crate::config::{Config, DirectionSetting, HopLog, PolicyKind, TrustSource, UnknownSource};
use crate::decide::{decide, sticky_hash, Decision, Plan, RoutePlan, Why};
use crate::health::{self, HealthEvent, HealthState};
use crate::hop::{
    is_gateway_address, log_token, served_by_value, Chain, Hop, HopRecord, ServedByRef,
};
use crate::hosts::{service_from_authority_into, service_from_cluster_name};
use crate::identity::{Identity, IdentityIssue, NodeFacts, ISTIO_DEFAULT_CLUSTER_ID};
use crate::metrics::{Counter, CounterRef};
use crate::wire::{self, Pairs};

/// A header map as a list: (lower-case name, value) pairs, in order.
pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    #[default]
    Outbound,
    Inbound,
}

/// The downstream connection as the server side sees it (what a test host
/// or the simulator holds; the filter asks for one part at a time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub mtls: bool,
    /// The peer certificate's URI SAN (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`).
    pub uri_san: Option<String>,
}

/// Which header map a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    Request,
    Response,
}

/// A read-modify-write of one shared-data value: gets the current value, returns
/// the new one (or `None` to write nothing).
pub type Update<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// What the filter asks of the proxy. Each method is one host call.
pub trait Host {
    fn now_ms(&mut self) -> u64;
    /// A uniformly random value (the glue uses a per-VM generator: no host call).
    fn random(&mut self) -> u64;
    /// `xds.listener_direction`.
    fn listener_direction(&mut self) -> Option<Direction>;
    /// `xds.cluster_name` in the request phase.
    fn cluster_name(&mut self) -> Option<String>;
    /// `connection.mtls`: the peer presented a verified certificate.
    fn peer_mtls(&mut self) -> bool;
    /// `connection.uri_san_peer_certificate` (there only with a verified peer certificate).
    fn peer_uri_san(&mut self) -> Option<&[u8]>;
    /// Shared data, read.
    fn shared_get(&mut self, key: &str) -> Option<&[u8]>;
    /// Shared data, read-modify-write with compare-and-swap (retried on
    /// mismatch). `update` returns the new value, or `None` to write nothing.
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>);
    /// `response.flags` (Envoy's response flag bitmask).
    fn response_flags(&mut self) -> u64;
    /// `upstream.address` (`ip:port`).
    fn upstream_address(&mut self) -> Option<&[u8]>;
    /// `xds.upstream_host_metadata` (serialized protobuf), `None` when the endpoint has none.
    fn upstream_host_metadata(&mut self) -> Option<&[u8]>;
    /// Appends a header (the name is known to be absent).
    fn add_header(&mut self, map: Map, name: &[u8], value: &[u8]);
    /// Removes every entry of a header and appends one.
    fn replace_header(&mut self, map: Map, name: &[u8], value: &[u8]);
    /// Removes every entry of a header.
    fn remove_header(&mut self, map: Map, name: &[u8]);
    /// Envoy filter state under `wasm.<key>`.
    fn set_filter_state(&mut self, key: &str, value: &[u8]);
    /// One counter increment (the glue buffers them: no host call per request).
    fn count(&mut self, counter: CounterRef<'_>);
    /// Would a log line at `level` be written?
    fn log_enabled(&self, level: Level) -> bool;
    /// A log line (the glue adds the `hybridmesh: ` prefix).
    fn log(&mut self, level: Level, message: &str);
}

/// Log levels, as proxy-wasm numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// Side effects the wrapper API collects (counters and log lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub counters: Vec<Counter>,
    pub logs: Vec<(Level, String)>,
}

/// A reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Envoy's response code details.
    pub details: String,
}

/// What the filter remembers between a stream's request and response. Its
/// strings keep their capacity when the state is reused for the next stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub direction: Direction,
    service: String,
    has_service: bool,
    pub decision: Option<Decision>,
    /// When the request arrived (0: not timed, no hop record was wanted).
    pub start_ms: u64,
    pub debug: bool,
    pub request_id: String,
    /// The target's health entry had counts that a success must reset.
    pub target_dirty: bool,
    /// The hop chain sent on (ours last).
    pub chain: String,
    pub looped: bool,
}

impl StreamState {
    /// The service the request is for, if it could be told.
    pub fn service(&self) -> Option<&str> {
        self.has_service.then_some(self.service.as_str())
    }

    /// Empties the state for a new stream, keeping its buffers.
    pub fn reset(&mut self, direction: Direction) {
        self.direction = direction;
        self.service.clear();
        self.has_service = false;
        self.decision = None;
        self.start_ms = 0;
        self.debug = false;
        self.request_id.clear();
        self.target_dirty = false;
        self.chain.clear();
        self.looped = false;
    }
}

/// Buffers a VM reuses on every request (nothing of a stream lives here
/// across callbacks).
#[derive(Debug, Default)]
pub struct Scratch {
    /// A shared-data key.
    pub key: String,
    /// The decision's reason.
    pub reason: String,
    /// The gateway crossed.
    pub gateway: String,
    /// The served cluster when it came from endpoint metadata.
    pub served: String,
    /// A hop record or log line being written.
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The new request header map, if it changed.
    pub headers: Option<Headers>,
    pub local_reply: Option<LocalReply>,
    pub state: StreamState,
    pub effects: Effects,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseOutcome {
    /// Response headers replaced (name, value).
    pub set_headers: Vec<(String, Vec<u8>)>,
    pub hop: Option<HopRecord>,
    pub effects: Effects,
}

/// Response flags that mean the chosen cluster failed.
pub const FAILURE_FLAGS: u64 = 0x2 /* UH */ | 0x4 /* UT */ | 0x10 /* UR */ | 0x20 /* UF */ | 0x40 /* UC */;

/// Response flags that mean no upstream answered at all.
pub const NOT_SERVED_FLAGS: u64 = 0x2 /* UH */ | 0x20 /* UF */ | 0x80 /* UO */;

/// Filter state key of the hop record: `%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%`.
pub const HOP_FILTER_STATE: &str = crate::hop::HOP_FILTER_STATE_KEY;

/// The configured filter of one plugin: config, identity, compiled plan.
#[derive(Debug, Clone)]
pub struct Filter {
    pub cfg: Config,
    pub me: Identity,
    pub plan: Plan,
    /// Warnings to log at configure time.
    pub warnings: Vec<IdentityIssue>,
    served_by: Vec<u8>,
    locality: String,
}

impl Filter {
    /// Resolves identity (overrides, node metadata, the cluster table) and compiles
    /// the plan. A missing cluster id is an error.
    pub fn new(cfg: Config, node: &NodeFacts) -> Result<Filter, IdentityIssue> {
        let o = &cfg.identity;
        let cluster = o
            .cluster
            .clone()
            .or_else(|| node.cluster.clone().filter(|c| !c.is_empty()))
            .ok_or(IdentityIssue::MissingCluster)?;
        let entry = cfg.clusters.iter().find(|c| c.name == cluster);
        let network = o
            .network
            .clone()
            .or_else(|| node.network.clone().filter(|n| !n.is_empty()))
            .or_else(|| entry.map(|e| e.network.clone()))
            .unwrap_or_default();
        let locality = o
            .locality
            .clone()
            .or_else(|| (!node.locality.is_empty()).then(|| node.locality.clone()))
            .or_else(|| entry.map(|e| e.locality.clone()))
            .unwrap_or_default();
        let namespace = o
            .namespace
            .clone()
            .or_else(|| node.namespace.clone())
            .unwrap_or_default();
        let mut warnings = Vec::new();
        if cluster == ISTIO_DEFAULT_CLUSTER_ID {
            warnings.push(IdentityIssue::DefaultClusterId);
        }
        if entry.is_none() && !cfg.clusters.is_empty() {
            warnings.push(IdentityIssue::UnknownCluster(cluster.clone()));
        }
        let me = Identity {
            cluster,
            network,
            locality,
            namespace,
        };
        let plan = Plan::compile(&cfg, &me);
        Ok(Filter {
            served_by: served_by_value(&me).into_bytes(),
            locality: me.locality.to_string(),
            cfg,
            me,
            plan,
            warnings,
        })
    }

    /// The side this request is on.
    pub fn direction(&self, host: &mut dyn Host) -> Direction {
        match self.cfg.direction {
            DirectionSetting::Outbound => Direction::Outbound,
            DirectionSetting::Inbound => Direction::Inbound,
            DirectionSetting::Auto => host.listener_direction().unwrap_or(Direction::Outbound),
        }
    }

    /// The hop log's level, if the proxy would write it.
    fn hop_log_level(&self, host: &dyn Host) -> Option<Level> {
        let level = match self.cfg.hop_log {
            HopLog::Off => return None,
            HopLog::Trace => Level::Trace,
            HopLog::Debug => Level::Debug,
            HopLog::Info => Level::Info,
            HopLog::Warn => Level::Warn,
        };
        host.log_enabled(level).then_some(level)
    }

    /// Is a hop record written for this request (filter state or log line)?
    pub fn hop_wanted(&self, host: &dyn Host) -> bool {
        self.cfg.filter_state || self.hop_log_level(host).is_some()
    }

    /// Request headers, either side: reads `headers` in place, writes only what
    /// changes through `host`, fills `state` for the response. A local reply,
    /// if the request must be refused, is for the caller to send (after it has
    /// let go of anything the reply's callbacks might need).
    pub fn request(
        &self,
        headers: &Pairs<'_>,
        host: &mut dyn Host,
        state: &mut StreamState,
        scratch: &mut Scratch,
    ) -> Option<LocalReply> {
        let direction = self.direction(host);
        state.reset(direction);
        match direction {
            Direction::Outbound => {
                self.outbound_request(headers, host, state, scratch);
                None
            }
            Direction::Inbound => self.inbound_request(headers, host, state),
        }
    }

    /// Response headers, either side.
    pub fn response(
        &self,
        state: &StreamState,
        headers: &Pairs<'_>,
        host: &mut dyn Host,
        scratch: &mut Scratch,
    ) {
        match state.direction {
            Direction::Inbound => {
                let name = self.cfg.headers.served_by.as_bytes();
                host.replace_header(Map::Response, name, &self.served_by);
            }
            Direction::Outbound => {
                let level = self.hop_log_level(host);
                let want = self.cfg.filter_state || level.is_some();
                let Scratch {
                    key,
                    reason,
                    gateway,
                    served,
                    line,
                } = scratch;
                let hop = self
                    .outbound_response(state, headers, host, want, key, reason, gateway, served);
                if !want {
                    return;
                }
                if self.cfg.filter_state {
                    line.clear();
                    hop.write_json(line);
                    host.set_filter_state(HOP_FILTER_STATE, line.as_bytes());
                }
                if let Some(level) = level {
                    line.clear();
                    hop.write_log_line(line);
                    host.log(level, line);
                }
            }
        }
    }

    fn outbound_request(
        &self,
        headers: &Pairs<'_>,
        host: &mut dyn Host,
        state: &mut StreamState,
        scratch: &mut Scratch,
    ) {
        let names = &self.cfg.headers;
        let mut spoofed = 0u32;
        let mut debug_sent = false;
        let mut debug = false;
        let mut authority: &[u8] = b"";
        let mut request_id: &[u8] = b"";
        let mut forwarded_chain: Option<&[u8]> = None;
        let mut chain_repeated = false;
        // Which of the headers we set the application sent too: they are
        // replaced rather than added.
        let ours = [
            names.source_cluster.as_bytes(),
            names.source_network.as_bytes(),
            names.source_locality.as_bytes(),
            names.hops.as_bytes(),
            names.target_cluster.as_bytes(),
            names.pinned_cluster.as_bytes(),
        ];
        let mut sent = [false; 6];
        for (k, v) in headers.iter() {
            if names.is_reserved(k) {
                if k == names.debug.as_bytes() {
                    debug_sent = true;
                    debug = v == b"1";
                } else if k == names.hops.as_bytes() {
                    // The one header the application forwards: validated, not stripped.
                    chain_repeated |= forwarded_chain.is_some();
                    forwarded_chain = Some(v);
                    sent[3] = true;
                } else {
                    spoofed += 1;
                    if let Some(i) = ours.iter().position(|o| *o == k) {
                        sent[i] = true;
                    }
                }
                continue;
            }
            match k {
                b":authority" => authority = v,
                b"x-request-id" => request_id = v,
                _ => {}
            }
        }
        let hop_wanted = self.hop_wanted(host);
        let mut now: Option<u64> = None;
        if hop_wanted {
            let t = host.now_ms();
            now = Some(t);
            state.start_ms = t;
            state
                .request_id
                .push_str(&String::from_utf8_lossy(request_id));
        }
        if spoofed > 0 {
            host.count(CounterRef::Spoofed {
                direction: Direction::Outbound,
            });
            if host.log_enabled(Level::Debug) {
                host.log(
                    Level::Debug,
                    &format!(
                        "removed {spoofed} {}-* header(s) set by the application",
                        names.prefix
                    ),
                );
            }
        }

        state.has_service = service_from_authority_into(
            authority,
            &self.me.namespace,
            &self.cfg.domain_suffix,
            &mut state.service,
        );
        if !state.has_service {
            if let Some(svc) = host
                .cluster_name()
                .as_deref()
                .and_then(service_from_cluster_name)
            {
                state.service.push_str(svc);
                state.has_service = true;
            }
        }
        let decision = match state.service() {
            None => Decision::undecided(Why::NoService),
            Some(svc) => match self.cfg.hosts.lookup(svc) {
                None => Decision::undecided(Why::NoRule),
                Some(rule) => {
                    let (mut ejected, mut dirty) = (0u64, 0u64);
                    if self.plan.needs_health(rule) {
                        health::health_key_into(svc, &mut scratch.key);
                        let t = match now {
                            Some(t) => t,
                            None => *now.insert(host.now_ms()),
                        };
                        if let Some(bytes) = host.shared_get(&scratch.key) {
                            (ejected, dirty) =
                                health::read_in_place(bytes, |n| self.plan.index_of(n), t);
                        }
                    }
                    let sticky_value = match self.plan.routes.get(rule) {
                        Some(RoutePlan::Weighted {
                            sticky_header: Some(name),
                            ..
                        }) => headers.get(name.as_bytes()),
                        _ => None,
                    };
                    let (pick, sticky) = match sticky_value {
                        Some(v) => (sticky_hash(v), true),
                        None => (host.random(), false),
                    };
                    let d = decide(&self.cfg, &self.plan, rule, ejected, pick, sticky);
                    state.target_dirty = d.target.is_some_and(|t| t < 64 && dirty & (1 << t) != 0);
                    d
                }
            },
        };

        let chain = Chain::extend_into(
            forwarded_chain,
            chain_repeated,
            &self.me.cluster,
            self.cfg.max_hops,
            &mut state.chain,
        );
        if let Some(problem) = chain.problem {
            host.count(CounterRef::HopChain {
                problem: problem.label(),
            });
        }
        if chain.looped {
            host.count(CounterRef::HopChain { problem: "loop" });
            if host.log_enabled(Level::Warn) {
                host.log(
                    Level::Warn,
                    &format!(
                        "request {} loops: cluster {} is already in its hop chain",
                        log_token(&String::from_utf8_lossy(request_id)),
                        self.me.cluster
                    ),
                );
            }
        }

        // Out: what the application must not have sent, then ours, in order.
        if spoofed > 0 || debug_sent {
            for (i, (k, _)) in headers.iter().enumerate() {
                let ours_or_hops = ours.contains(&k);
                let first = !headers.iter().take(i).any(|(e, _)| e == k);
                if names.is_reserved(k) && !ours_or_hops && first {
                    host.remove_header(Map::Request, k);
                }
            }
        }
        let set = |host: &mut dyn Host, i: usize, value: &[u8]| {
            if sent[i] {
                host.replace_header(Map::Request, ours[i], value);
            } else {
                host.add_header(Map::Request, ours[i], value);
            }
        };
        set(host, 0, self.me.cluster.as_bytes());
        set(host, 1, self.me.network.as_bytes());
        set(host, 2, self.locality.as_bytes());
        set(host, 3, state.chain.as_bytes());
        // The decision: the preferred cluster (Envoy may fail over), or the
        // only one that may serve it; the other header must not be there.
        let (write, other) = if decision.pinned { (5, 4) } else { (4, 5) };
        match decision.target {
            Some(t) => set(host, write, self.plan.name(t).as_bytes()),
            None if sent[write] => host.remove_header(Map::Request, ours[write]),
            None => {}
        }
        if sent[other] {
            host.remove_header(Map::Request, ours[other]);
        }
        state.decision = Some(decision);
        state.debug = debug && self.cfg.allow_debug;
        state.looped = chain.looped;
    }

    /// Should the server side believe the source headers of this connection?
    fn trusted(&self, host: &mut dyn Host) -> bool {
        match self.cfg.trust_source {
            TrustSource::Any => true,
            // A verified peer certificate is enough.
            TrustSource::Mtls if self.cfg.trust_domains.is_empty() => host.peer_mtls(),
            // Its URI SAN is there only with a verified peer certificate.
            TrustSource::Mtls => {
                let Some(san) = host.peer_uri_san() else {
                    return false;
                };
                let Some(rest) = san.strip_prefix(b"spiffe://") else {
                    return false;
                };
                let domain = rest.split(|b| *b == b'/').next().unwrap_or(b"");
                self.cfg
                    .trust_domains
                    .iter()
                    .any(|td| td.as_bytes() == domain)
            }
        }
    }

    fn inbound_request(
        &self,
        headers: &Pairs<'_>,
        host: &mut dyn Host,
        state: &mut StreamState,
    ) -> Option<LocalReply> {
        let names = &self.cfg.headers;
        let mut authority: &[u8] = b"";
        let mut source: Option<&[u8]> = None;
        let mut reserved = 0u32;
        for (k, v) in headers.iter() {
            if names.is_reserved(k) {
                reserved += 1;
                if k == names.source_cluster.as_bytes() && source.is_none() {
                    source = Some(v);
                }
            } else if k == b":authority" {
                authority = v;
            }
        }
        state.has_service = service_from_authority_into(
            authority,
            &self.me.namespace,
            &self.cfg.domain_suffix,
            &mut state.service,
        );
        let rule = state.service().and_then(|s| self.cfg.hosts.lookup(s));
        let cluster_local = rule
            .and_then(|r| self.cfg.routes.get(r))
            .is_some_and(|r| r.policy.kind() == PolicyKind::ClusterLocal);

        // Only ask for the connection's identity when it matters.
        let trusted = (reserved > 0 || cluster_local) && self.trusted(host);
        if reserved > 0 && !trusted {
            for (i, (k, _)) in headers.iter().enumerate() {
                if names.is_reserved(k) && !headers.iter().take(i).any(|(e, _)| e == k) {
                    host.remove_header(Map::Request, k);
                }
            }
            source = None;
            host.count(CounterRef::Spoofed {
                direction: Direction::Inbound,
            });
            if host.log_enabled(Level::Debug) {
                host.log(
                    Level::Debug,
                    &format!(
                        "removed {reserved} {}-* header(s) from an untrusted peer",
                        names.prefix
                    ),
                );
            }
        }
        if !cluster_local {
            return None;
        }
        let source = source.map(String::from_utf8_lossy);
        let refused = match &source {
            Some(src) => *src != self.me.cluster,
            None => self.cfg.unknown_source == UnknownSource::Deny,
        };
        if !refused {
            return None;
        }
        let svc = state.service().unwrap_or_default();
        let from = source.as_deref().unwrap_or("unknown");
        // The claim is the peer's: written escaped, so it cannot break the line.
        let body = format!(
            "hybridmesh: {svc} is cluster-local to cluster {}; request from cluster {} refused\n",
            self.me.cluster,
            log_token(from)
        );
        let line = body.trim_end().trim_start_matches("hybridmesh: ");
        host.log(Level::Info, line);
        host.count(CounterRef::Denied { source: from });
        Some(LocalReply {
            status: self.cfg.deny_status,
            body,
            headers: vec![(names.denied.clone(), "cluster-local".to_string())],
            details: "hybridmesh_cluster_local".to_string(),
        })
    }

    /// The client side's response: health, counters, the debug header; the hop
    /// record for the caller to write (its reason only when `want`ed or asked
    /// for by a debug request).
    #[allow(clippy::too_many_arguments)]
    fn outbound_response<'a>(
        &'a self,
        state: &'a StreamState,
        headers: &Pairs<'a>,
        host: &mut dyn Host,
        want: bool,
        key: &mut String,
        reason: &'a mut String,
        gateway: &'a mut String,
        served: &'a mut String,
    ) -> Hop<'a> {
        let names = &self.cfg.headers;
        let mut status = 0u32;
        let mut served_by: Option<ServedByRef<'a>> = None;
        for (k, v) in headers.iter() {
            if k == b":status" {
                status = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if k == names.served_by.as_bytes() && served_by.is_none() {
                served_by = ServedByRef::parse(v);
            }
        }
        let flags = if status >= 500 || status == 0 {
            host.response_flags()
        } else {
            0
        };
        gateway.clear();
        served.clear();
        let crossed_by_header = served_by.is_some_and(|sb| {
            !sb.network.is_empty() && !self.me.network.is_empty() && sb.network != self.me.network
        });
        // The gateway crossed: for the hop record when a served-by header says
        // the request crossed networks; without one, it is how we tell.
        let mut crossed_gateway = false;
        if served_by.is_none() || (crossed_by_header && want) {
            if let Some(a) = host
                .upstream_address()
                .and_then(|a| std::str::from_utf8(a).ok())
                .filter(|a| is_gateway_address(a))
            {
                gateway.push_str(a);
                crossed_gateway = true;
            }
        }
        // No served-by header: the endpoint's metadata, unless no healthy
        // host, a failed connection or an overflow means nothing served the
        // request, whatever host was picked.
        if served_by.is_none() && flags & NOT_SERVED_FLAGS == 0 {
            if let Some(c) = host
                .upstream_host_metadata()
                .and_then(crate::proto::istio_workload_cluster)
            {
                served.push_str(&c);
            }
        }
        let gateway: &'a String = gateway;
        let served: &'a String = served;
        let (served_cluster, served_network, cross_network) = match served_by {
            Some(sb) => (Some(sb.cluster), Some(sb.network), crossed_by_header),
            None => {
                let network = self
                    .cfg
                    .clusters
                    .iter()
                    .find(|x| !served.is_empty() && x.name == *served)
                    .map(|x| x.network.as_str());
                let cluster = (!served.is_empty()).then_some(served.as_str());
                (cluster, network, crossed_gateway)
            }
        };

        let decision = state
            .decision
            .unwrap_or_else(|| Decision::undecided(Why::NoService));
        let target = decision.target_name(&self.plan);
        // Envoy served the request elsewhere than the preferred cluster: its
        // priorities, retries and outlier detection moved it. That is
        // Envoy's failover working: recorded (counter, hop record), and not
        // held against the preferred cluster's health, which would keep
        // traffic away after Envoy has brought it back.
        let failed_over =
            !decision.pinned && matches!((target, served_cluster), (Some(t), Some(s)) if t != s);
        let failed = status >= 500 || flags & FAILURE_FLAGS != 0;
        // Health: only for decisions that choose among clusters, and only
        // for answers that say something about the chosen one.
        let health = match (decision.policy, target, state.service(), decision.rule) {
            (Some(PolicyKind::Weighted | PolicyKind::Failover), Some(t), Some(svc), Some(rule))
                if (failed || state.target_dirty) && !failed_over =>
            {
                Some((t, svc, rule))
            }
            _ => None,
        };
        let timed = want && state.start_ms > 0;
        let now = if timed || health.is_some() {
            host.now_ms()
        } else {
            0
        };
        if let Some((target, svc, rule)) = health {
            let od = self
                .cfg
                .routes
                .get(rule)
                .map(|r| r.outlier)
                .unwrap_or_default();
            let mut event = HealthEvent::Unchanged;
            health::health_key_into(svc, key);
            host.shared_update(key, &mut |current| {
                let mut h = current.map(HealthState::decode).unwrap_or_default();
                event = h.record(target, failed, now, &od);
                (event != HealthEvent::Unchanged).then(|| h.encode())
            });
            if let HealthEvent::Ejected {
                until_ms,
                ejections,
            } = event
            {
                host.count(CounterRef::Ejections {
                    destination: target,
                });
                host.log(
                    Level::Warn,
                    &format!(
                        "ejected cluster {target} for {svc} for {}ms (ejection #{ejections}) after {} consecutive failures",
                        until_ms.saturating_sub(now),
                        od.consecutive_5xx
                    ),
                );
            }
        }
        host.count(CounterRef::Requests {
            source: &self.me.cluster,
            destination: served_cluster.or(target).unwrap_or_default(),
            decision: decision.label(),
            cross_network,
        });
        if failed_over {
            host.count(CounterRef::FailedOver {
                preferred: target.unwrap_or_default(),
                destination: served_cluster.unwrap_or_default(),
            });
        }

        reason.clear();
        if want || state.debug {
            decision.explain_into(&self.plan, state.service(), reason);
        }
        if state.debug {
            key.clear();
            key.push_str(reason);
            key.push_str("; served_by=");
            key.push_str(served_cluster.unwrap_or("-"));
            key.push_str(" cross_network=");
            key.push_str(if cross_network { "true" } else { "false" });
            if failed_over {
                key.push_str(" failed_over=true");
            }
            host.replace_header(Map::Response, names.decision.as_bytes(), key.as_bytes());
        }
        let reason: &'a String = reason;
        Hop {
            request_id: &state.request_id,
            service: state.service().unwrap_or_default(),
            source_cluster: &self.me.cluster,
            source_network: &self.me.network,
            target,
            pinned: decision.pinned,
            failed_over,
            served_by: served_cluster,
            served_network,
            cross_network,
            gateway: crossed_gateway.then_some(gateway.as_str()),
            decision: decision.label(),
            rule: decision.rule,
            reason,
            chain: &state.chain,
            looped: state.looped,
            status,
            flags,
            latency_ms: if timed {
                now.saturating_sub(state.start_ms)
            } else {
                0
            },
        }
    }

    /// Request headers as a list (tests, the native simulator): the same path
    /// as [`Filter::request`], the header writes applied to a copy of the list
    /// the way Envoy applies them.
    pub fn on_request(
        &self,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> RequestOutcome {
        let wire = wire::encode(headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let pairs = Pairs::parse(&wire).unwrap_or(Pairs::EMPTY);
        let mut rec = Recorder::new(host, headers.to_vec(), Vec::new());
        let mut state = StreamState::default();
        let mut scratch = Scratch::default();
        let local_reply = self.request(&pairs, &mut rec, &mut state, &mut scratch);
        RequestOutcome {
            headers: rec.changed_request.then_some(rec.request),
            local_reply,
            state,
            effects: rec.effects,
        }
    }

    /// Response headers as a list (tests, the native simulator); the client
    /// side's hop record is returned whether or not the config writes it.
    pub fn on_response(
        &self,
        state: &StreamState,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> ResponseOutcome {
        let wire = wire::encode(headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let pairs = Pairs::parse(&wire).unwrap_or(Pairs::EMPTY);
        let mut rec = Recorder::new(host, Vec::new(), headers.to_vec());
        let mut scratch = Scratch::default();
        let hop = match state.direction {
            Direction::Inbound => {
                self.response(state, &pairs, &mut rec, &mut scratch);
                None
            }
            Direction::Outbound => {
                let Scratch {
                    key,
                    reason,
                    gateway,
                    served,
                    ..
                } = &mut scratch;
                let hop = self
                    .outbound_response(state, &pairs, &mut rec, true, key, reason, gateway, served);
                Some(hop.to_record())
            }
        };
        ResponseOutcome {
            set_headers: rec.set_response,
            hop,
            effects: rec.effects,
        }
    }
}

/// A [`Host`] that passes reads through and applies writes to lists, for the
/// list-based API.
struct Recorder<'h> {
    inner: &'h mut dyn Host,
    request: Headers,
    changed_request: bool,
    response: Headers,
    set_response: Vec<(String, Vec<u8>)>,
    effects: Effects,
}

impl<'h> Recorder<'h> {
    fn new(inner: &'h mut dyn Host, request: Headers, response: Headers) -> Self {
        Recorder {
            inner,
            request,
            changed_request: false,
            response,
            set_response: Vec::new(),
            effects: Effects::default(),
        }
    }

    fn map(&mut self, map: Map) -> &mut Headers {
        match map {
            Map::Request => {
                self.changed_request = true;
                &mut self.request
            }
            Map::Response => &mut self.response,
        }
    }
}

impl Host for Recorder<'_> {
    fn now_ms(&mut self) -> u64 {
        self.inner.now_ms()
    }
    fn random(&mut self) -> u64 {
        self.inner.random()
    }
    fn listener_direction(&mut self) -> Option<Direction> {
        self.inner.listener_direction()
    }
    fn cluster_name(&mut self) -> Option<String> {
        self.inner.cluster_name()
    }
    fn peer_mtls(&mut self) -> bool {
        self.inner.peer_mtls()
    }
    fn peer_uri_san(&mut self) -> Option<&[u8]> {
        self.inner.peer_uri_san()
    }
    fn shared_get(&mut self, key: &str) -> Option<&[u8]> {
        self.inner.shared_get(key)
    }
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        self.inner.shared_update(key, update)
    }
    fn response_flags(&mut self) -> u64 {
        self.inner.response_flags()
    }
    fn upstream_address(&mut self) -> Option<&[u8]> {
        self.inner.upstream_address()
    }
    fn upstream_host_metadata(&mut self) -> Option<&[u8]> {
        self.inner.upstream_host_metadata()
    }
    fn add_header(&mut self, map: Map, name: &[u8], value: &[u8]) {
        self.inner.add_header(map, name, value);
        self.map(map).push((name.to_vec(), value.to_vec()));
    }
    fn replace_header(&mut self, map: Map, name: &[u8], value: &[u8]) {
        self.inner.replace_header(map, name, value);
        if map == Map::Response {
            self.set_response
                .push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        }
        let m = self.map(map);
        m.retain(|(k, _)| k != name);
        m.push((name.to_vec(), value.to_vec()));
    }
    fn remove_header(&mut self, map: Map, name: &[u8]) {
        self.inner.remove_header(map, name);
        self.map(map).retain(|(k, _)| k != name);
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.inner.set_filter_state(key, value)
    }
    fn count(&mut self, counter: CounterRef<'_>) {
        self.inner.count(counter);
        self.effects.counters.push(counter.to_owned());
    }
    fn log_enabled(&self, level: Level) -> bool {
        self.inner.log_enabled(level)
    }
    fn log(&mut self, level: Level, message: &str) {
        self.inner.log(level, message);
        self.effects.logs.push((level, message.to_string()));
    }
}
