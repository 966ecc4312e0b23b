//! A request's way through the filter, as plain Rust over plain data.
//!
//! Request: headers in -> spoofed headers out -> service -> rule -> target
//! cluster -> one header map out. Response: served-by -> health -> hop record.
//! The proxy is reached only through the small [`Host`] trait (each method is
//! one host call, made only when the answer is needed), so all of this runs
//! natively in tests, and the `.wasm` glue only translates.

use crate::config::{Config, DirectionSetting, PolicyKind, TrustSource, UnknownSource};
use crate::decide::{decide, sticky_hash, Decision, Plan, Why};
use crate::health::{health_key, HealthEvent, HealthState};
use crate::hop::{is_gateway_address, log_token, served_by_value, Chain, HopRecord, ServedBy};
use crate::hosts::{service_from_authority, service_from_cluster_name};
use crate::identity::{Identity, IdentityIssue, NodeFacts, ISTIO_DEFAULT_CLUSTER_ID};
use crate::metrics::Counter;

/// A header map as the proxy hands it over: (lower-case name, value) pairs.
pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// The downstream connection as the server side sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub mtls: bool,
    /// The peer certificate's URI SAN (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`).
    pub uri_san: Option<String>,
}

/// A read-modify-write of one shared-data value: gets the current value, returns
/// the new one (or `None` to write nothing).
pub type Update<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// What the filter asks of the proxy. Each method is one host call.
pub trait Host {
    fn now_ms(&mut self) -> u64;
    /// A uniformly random value (the glue uses a per-VM generator).
    fn random(&mut self) -> u64;
    /// `listener_direction`.
    fn listener_direction(&mut self) -> Option<Direction>;
    /// `xds.cluster_name` in the request phase.
    fn cluster_name(&mut self) -> Option<String>;
    fn peer(&mut self) -> Peer;
    /// Shared data, read.
    fn shared_get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Shared data, read-modify-write with compare-and-swap (retried on
    /// mismatch). `update` returns the new value, or `None` to write nothing.
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>);
    /// `response.flags` (Envoy's response flag bitmask).
    fn response_flags(&mut self) -> u64;
    /// `upstream.address` (`ip:port`).
    fn upstream_address(&mut self) -> Option<String>;
    /// `xds.upstream_host_metadata` (serialized protobuf), `None` when the endpoint has none.
    fn upstream_host_metadata(&mut self) -> Option<Vec<u8>>;
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

/// Side effects the glue performs after a callback.
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

/// What the filter remembers between a stream's request and response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub direction: Direction,
    pub service: Option<String>,
    pub decision: Option<Decision>,
    pub start_ms: u64,
    pub debug: bool,
    pub request_id: String,
    /// The target's health entry had counts that a success must reset.
    pub target_dirty: bool,
    /// The hop chain sent on (ours last).
    pub chain: String,
    pub looped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The new request header map, if it changed (set in one host call).
    pub headers: Option<Headers>,
    pub local_reply: Option<LocalReply>,
    pub state: StreamState,
    pub effects: Effects,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseOutcome {
    /// Response headers to replace (name, value).
    pub set_headers: Vec<(String, Vec<u8>)>,
    pub hop: Option<HopRecord>,
    pub effects: Effects,
}

/// Response flags that mean the chosen cluster failed.
pub const FAILURE_FLAGS: u64 = 0x2 /* UH */ | 0x4 /* UT */ | 0x10 /* UR */ | 0x20 /* UF */ | 0x40 /* UC */;

/// Response flags that mean no upstream answered at all.
pub const NOT_SERVED_FLAGS: u64 = 0x2 /* UH */ | 0x20 /* UF */ | 0x80 /* UO */;

/// The configured filter of one plugin: config, identity, compiled plan.
#[derive(Debug, Clone)]
pub struct Filter {
    pub cfg: Config,
    pub me: Identity,
    pub plan: Plan,
    /// Warnings to log at configure time.
    pub warnings: Vec<IdentityIssue>,
    served_by: Vec<u8>,
    source_headers: [(Vec<u8>, Vec<u8>); 3],
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
        let h = &cfg.headers;
        let source_headers = [
            (
                h.source_cluster.clone().into_bytes(),
                me.cluster.clone().into_bytes(),
            ),
            (
                h.source_network.clone().into_bytes(),
                me.network.clone().into_bytes(),
            ),
            (
                h.source_locality.clone().into_bytes(),
                me.locality.to_string().into_bytes(),
            ),
        ];
        Ok(Filter {
            served_by: served_by_value(&me).into_bytes(),
            source_headers,
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

    /// Request headers, either side.
    pub fn on_request(
        &self,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> RequestOutcome {
        match self.direction(host) {
            Direction::Outbound => self.outbound_request(headers, host),
            Direction::Inbound => self.inbound_request(headers, host),
        }
    }

    /// Response headers, either side.
    pub fn on_response(
        &self,
        state: &StreamState,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> ResponseOutcome {
        match state.direction {
            Direction::Outbound => self.outbound_response(state, headers, host),
            Direction::Inbound => ResponseOutcome {
                set_headers: vec![(self.cfg.headers.served_by.clone(), self.served_by.clone())],
                hop: None,
                effects: Effects::default(),
            },
        }
    }

    fn outbound_request(
        &self,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> RequestOutcome {
        let names = &self.cfg.headers;
        let start_ms = host.now_ms();
        let mut effects = Effects::default();
        let mut out: Headers = Vec::with_capacity(headers.len() + 4);
        let mut spoofed = 0u32;
        let mut debug = false;
        let mut authority: &[u8] = b"";
        let mut request_id = String::new();
        let mut forwarded_chain: Option<&[u8]> = None;
        let mut chain_repeated = false;
        for (k, v) in headers {
            if names.is_reserved(k) {
                if k.as_slice() == names.debug.as_bytes() {
                    debug = v.as_slice() == b"1";
                } else if k.as_slice() == names.hops.as_bytes() {
                    // The one header the application forwards: validated, not stripped.
                    chain_repeated |= forwarded_chain.is_some();
                    forwarded_chain = Some(v);
                } else {
                    spoofed += 1;
                }
                continue;
            }
            match k.as_slice() {
                b":authority" => authority = v,
                b"x-request-id" => request_id = String::from_utf8_lossy(v).into_owned(),
                _ => {}
            }
            out.push((k.clone(), v.clone()));
        }
        if spoofed > 0 {
            effects.counters.push(Counter::Spoofed {
                direction: Direction::Outbound,
            });
            effects.logs.push((
                Level::Debug,
                format!(
                    "removed {spoofed} {}-* header(s) set by the application",
                    names.prefix
                ),
            ));
        }

        let service =
            service_from_authority(authority, &self.me.namespace, &self.cfg.domain_suffix).or_else(
                || {
                    host.cluster_name()
                        .as_deref()
                        .and_then(service_from_cluster_name)
                        .map(str::to_string)
                },
            );
        let mut target_dirty = false;
        let decision = match &service {
            None => Decision::undecided(Why::NoService),
            Some(svc) => match self.cfg.hosts.lookup(svc) {
                None => Decision::undecided(Why::NoRule),
                Some(rule) => {
                    let health = if self.plan.needs_health(rule) {
                        host.shared_get(&health_key(svc))
                            .map(|b| HealthState::decode(&b))
                    } else {
                        None
                    };
                    let mut ejected = 0u64;
                    if let Some(h) = &health {
                        for (k, c) in self.cfg.clusters.iter().enumerate().take(64) {
                            if h.is_ejected(&c.name, start_ms) {
                                ejected |= 1 << k;
                            }
                        }
                    }
                    let sticky_value = match self.plan.routes.get(rule) {
                        Some(crate::decide::RoutePlan::Weighted {
                            sticky_header: Some(name),
                            ..
                        }) => headers
                            .iter()
                            .find(|(k, _)| k.as_slice() == name.as_bytes())
                            .map(|(_, v)| v.as_slice()),
                        _ => None,
                    };
                    let (pick, sticky) = match sticky_value {
                        Some(v) => (sticky_hash(v), true),
                        None => (host.random(), false),
                    };
                    let d = decide(&self.cfg, &self.plan, &self.me, rule, ejected, pick, sticky);
                    if let (Some(h), Some(t)) = (&health, &d.target) {
                        target_dirty = h
                            .get(t)
                            .is_some_and(|e| e.consecutive > 0 || e.ejections > 0);
                    }
                    d
                }
            },
        };

        let chain = Chain::extend(
            forwarded_chain,
            chain_repeated,
            &self.me.cluster,
            self.cfg.max_hops,
        );
        if let Some(problem) = chain.problem {
            effects.counters.push(Counter::HopChain {
                problem: problem.label(),
            });
        }
        if chain.looped {
            effects.counters.push(Counter::HopChain { problem: "loop" });
            effects.logs.push((
                Level::Warn,
                format!(
                    "request {} loops: cluster {} is already in its hop chain",
                    log_token(&request_id),
                    self.me.cluster
                ),
            ));
        }
        for (k, v) in &self.source_headers {
            out.push((k.clone(), v.clone()));
        }
        out.push((names.hops.clone().into_bytes(), chain.value().into_bytes()));
        if let Some(t) = &decision.target {
            out.push((
                names.target_cluster.clone().into_bytes(),
                t.clone().into_bytes(),
            ));
        }
        RequestOutcome {
            headers: Some(out),
            local_reply: None,
            state: StreamState {
                direction: Direction::Outbound,
                service,
                decision: Some(decision),
                start_ms,
                debug: debug && self.cfg.allow_debug,
                request_id,
                target_dirty,
                chain: chain.value(),
                looped: chain.looped,
            },
            effects,
        }
    }

    /// Should the server side believe the source headers of this connection?
    fn trusted(&self, host: &mut dyn Host) -> bool {
        match self.cfg.trust_source {
            TrustSource::Any => true,
            TrustSource::Mtls => {
                let peer = host.peer();
                if !peer.mtls {
                    return false;
                }
                if self.cfg.trust_domains.is_empty() {
                    return true;
                }
                let Some(san) = peer.uri_san else {
                    return false;
                };
                let Some(rest) = san.strip_prefix("spiffe://") else {
                    return false;
                };
                let domain = rest.split('/').next().unwrap_or("");
                self.cfg.trust_domains.iter().any(|td| td == domain)
            }
        }
    }

    fn inbound_request(
        &self,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> RequestOutcome {
        let names = &self.cfg.headers;
        let mut effects = Effects::default();
        let mut authority: &[u8] = b"";
        let mut source: Option<&[u8]> = None;
        let mut reserved = 0u32;
        for (k, v) in headers {
            if names.is_reserved(k) {
                reserved += 1;
                if k.as_slice() == names.source_cluster.as_bytes() && source.is_none() {
                    source = Some(v);
                }
            } else if k.as_slice() == b":authority" {
                authority = v;
            }
        }
        let service =
            service_from_authority(authority, &self.me.namespace, &self.cfg.domain_suffix);
        let rule = service.as_deref().and_then(|s| self.cfg.hosts.lookup(s));
        let cluster_local = rule
            .and_then(|r| self.cfg.routes.get(r))
            .is_some_and(|r| r.policy.kind() == PolicyKind::ClusterLocal);

        // Only ask for the connection's identity when it matters.
        let trusted = (reserved > 0 || cluster_local) && self.trusted(host);
        let mut new_headers = None;
        if reserved > 0 && !trusted {
            new_headers = Some(
                headers
                    .iter()
                    .filter(|(k, _)| !names.is_reserved(k))
                    .cloned()
                    .collect::<Headers>(),
            );
            source = None;
            effects.counters.push(Counter::Spoofed {
                direction: Direction::Inbound,
            });
            effects.logs.push((
                Level::Debug,
                format!(
                    "removed {reserved} {}-* header(s) from an untrusted peer",
                    names.prefix
                ),
            ));
        }
        let source = source.map(|s| String::from_utf8_lossy(s).into_owned());

        let mut local_reply = None;
        if cluster_local {
            let refused = match &source {
                Some(src) => *src != self.me.cluster,
                None => self.cfg.unknown_source == UnknownSource::Deny,
            };
            if refused {
                let svc = service.clone().unwrap_or_default();
                let from = source.clone().unwrap_or_else(|| "unknown".to_string());
                // The claim is the peer's: written escaped, so it cannot break the line.
                let body = format!(
                    "hybridmesh: {svc} is cluster-local to cluster {}; request from cluster {} refused\n",
                    self.me.cluster,
                    log_token(&from)
                );
                let line = body.trim_end().trim_start_matches("hybridmesh: ");
                effects.logs.push((Level::Info, line.to_string()));
                effects.counters.push(Counter::Denied { source: from });
                local_reply = Some(LocalReply {
                    status: self.cfg.deny_status,
                    body,
                    headers: vec![(names.denied.clone(), "cluster-local".to_string())],
                    details: "hybridmesh_cluster_local".to_string(),
                });
            }
        }
        RequestOutcome {
            headers: new_headers,
            local_reply,
            state: StreamState {
                direction: Direction::Inbound,
                service,
                decision: None,
                start_ms: 0,
                debug: false,
                request_id: String::new(),
                target_dirty: false,
                chain: String::new(),
                looped: false,
            },
            effects,
        }
    }

    fn outbound_response(
        &self,
        state: &StreamState,
        headers: &[(Vec<u8>, Vec<u8>)],
        host: &mut dyn Host,
    ) -> ResponseOutcome {
        let names = &self.cfg.headers;
        let mut effects = Effects::default();
        let mut status = 0u32;
        let mut served: Option<ServedBy> = None;
        for (k, v) in headers {
            if k.as_slice() == b":status" {
                status = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if k.as_slice() == names.served_by.as_bytes() && served.is_none() {
                served = ServedBy::parse(v);
            }
        }
        let now = host.now_ms();
        let flags = if status >= 500 || status == 0 {
            host.response_flags()
        } else {
            0
        };

        let (served_by, served_network, cross_network, gateway) = match &served {
            Some(sb) => {
                let crossed = !sb.network.is_empty()
                    && !self.me.network.is_empty()
                    && sb.network != self.me.network;
                let gateway = if crossed {
                    host.upstream_address().filter(|a| is_gateway_address(a))
                } else {
                    None
                };
                (
                    Some(sb.cluster.clone()),
                    Some(sb.network.clone()),
                    crossed,
                    gateway,
                )
            }
            None => {
                let address = host.upstream_address();
                let gateway = address.filter(|a| is_gateway_address(a));
                // No healthy host, a failed connection or an overflow: nothing
                // served the request, whatever host was picked.
                let cluster = if flags & NOT_SERVED_FLAGS != 0 {
                    None
                } else {
                    host.upstream_host_metadata()
                        .and_then(|md| crate::proto::istio_workload_cluster(&md))
                };
                let network = cluster
                    .as_deref()
                    .and_then(|c| self.cfg.clusters.iter().find(|x| x.name == c))
                    .map(|x| x.network.clone());
                (cluster, network, gateway.is_some(), gateway)
            }
        };

        let decision = state
            .decision
            .clone()
            .unwrap_or_else(|| Decision::undecided(Why::NoService));
        // Health: only for decisions that choose among clusters.
        if let (
            Some(PolicyKind::Weighted | PolicyKind::Failover),
            Some(target),
            Some(svc),
            Some(rule),
        ) = (
            decision.policy,
            &decision.target,
            &state.service,
            decision.rule,
        ) {
            let failed = status >= 500 || flags & FAILURE_FLAGS != 0;
            if failed || state.target_dirty {
                let od = self
                    .cfg
                    .routes
                    .get(rule)
                    .map(|r| r.outlier)
                    .unwrap_or_default();
                let mut event = HealthEvent::Unchanged;
                host.shared_update(&health_key(svc), &mut |current| {
                    let mut h = current.map(HealthState::decode).unwrap_or_default();
                    event = h.record(target, failed, now, &od);
                    (event != HealthEvent::Unchanged).then(|| h.encode())
                });
                if let HealthEvent::Ejected {
                    until_ms,
                    ejections,
                } = event
                {
                    effects.counters.push(Counter::Ejections {
                        destination: target.clone(),
                    });
                    effects.logs.push((
                        Level::Warn,
                        format!(
                            "ejected cluster {target} for {svc} for {}ms (ejection #{ejections}) after {} consecutive failures",
                            until_ms.saturating_sub(now),
                            od.consecutive_5xx
                        ),
                    ));
                }
            }
        }

        let reason = decision.explain(&self.cfg, &self.plan, state.service.as_deref());
        let hop = HopRecord {
            request_id: state.request_id.clone(),
            service: state.service.clone().unwrap_or_default(),
            source_cluster: self.me.cluster.clone(),
            source_network: self.me.network.clone(),
            target: decision.target.clone(),
            served_by,
            served_network,
            cross_network,
            gateway,
            decision: decision.label(),
            rule: decision.rule,
            reason,
            chain: state.chain.clone(),
            looped: state.looped,
            status,
            flags,
            latency_ms: now.saturating_sub(state.start_ms),
        };
        effects.counters.push(Counter::Requests {
            source: self.me.cluster.clone(),
            destination: hop
                .served_by
                .clone()
                .or_else(|| hop.target.clone())
                .unwrap_or_default(),
            decision: hop.decision,
            cross_network,
        });
        let mut set_headers = Vec::new();
        if state.debug {
            let line = format!(
                "{}; served_by={} cross_network={}",
                hop.reason,
                hop.served_by.as_deref().unwrap_or("-"),
                hop.cross_network
            );
            set_headers.push((names.decision.clone(), line.into_bytes()));
        }
        ResponseOutcome {
            set_headers,
            hop: Some(hop),
            effects,
        }
    }
}
