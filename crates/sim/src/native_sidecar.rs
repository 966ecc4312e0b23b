//! The decision code natively, as a [`Sidecar`] (the parity check's other side).

use std::collections::BTreeMap;
use std::time::Duration;

use hybridmesh_filter_core::flow::{
    Direction as FlowDirection, Headers, Host, Level as FlowLevel, Map, Peer, StreamState, Update,
};
use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::metrics::CounterRef;
use hybridmesh_filter_core::Filter;

use crate::sidecar::{Answer, Forward, Reply, Sidecar, SidecarSpec, SidecarStream};
use hybridmesh_scenario::Pairs;
use proxy_wasm_host::envoy::{Connection, Direction};

/// The filter's own flow ([`hybridmesh_filter_core::flow`]) behind the same trait,
/// for parity with the `.wasm`. Metrics count at once (no flush interval).
pub struct NativeSidecar {
    filter: Option<Filter>,
    node: NodeFacts,
    direction: FlowDirection,
    now_ms: u64,
    rng: hybridmesh_filter_core::decide::Rng,
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
            rng: hybridmesh_filter_core::decide::Rng::new(spec.options.seed),
            shared: BTreeMap::new(),
            counters: BTreeMap::new(),
            logs: Vec::new(),
        };
        sc.configure(spec.config);
        sc
    }

    fn configure(&mut self, config: &[u8]) -> bool {
        let built = hybridmesh_filter_core::parse_json(config)
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
    metadata: Option<Vec<u8>>,
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
    fn peer_mtls(&mut self) -> bool {
        self.peer.mtls
    }
    fn peer_uri_san(&mut self) -> Option<&[u8]> {
        self.peer.uri_san.as_deref().map(str::as_bytes)
    }
    fn shared_get(&mut self, key: &str) -> Option<&[u8]> {
        self.sc.shared.get(key).map(Vec::as_slice)
    }
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        if let Some(v) = update(self.sc.shared.get(key).map(Vec::as_slice)) {
            self.sc.shared.insert(key.to_string(), v);
        }
    }
    fn response_flags(&mut self) -> u64 {
        self.answer.map(|a| a.flags).unwrap_or(0)
    }
    fn upstream_address(&mut self) -> Option<&[u8]> {
        self.answer
            .and_then(|a| a.address.as_deref())
            .map(str::as_bytes)
    }
    fn upstream_host_metadata(&mut self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }
    // Header writes are applied by the list-based API; counters and logs
    // come back as its effects.
    fn add_header(&mut self, _map: Map, _name: &[u8], _value: &[u8]) {}
    fn replace_header(&mut self, _map: Map, _name: &[u8], _value: &[u8]) {}
    fn remove_header(&mut self, _map: Map, _name: &[u8]) {}
    fn set_filter_state(&mut self, _key: &str, _value: &[u8]) {}
    fn count(&mut self, _counter: CounterRef<'_>) {}
    fn log_enabled(&self, _level: FlowLevel) -> bool {
        true
    }
    fn log(&mut self, _level: FlowLevel, _message: &str) {}
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
    fn record(&mut self, effects: &hybridmesh_filter_core::flow::Effects) {
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
            let metadata = answer
                .and_then(|a| a.workload.as_deref())
                .map(|w| proxy_wasm_host::envoy::Metadata::istio_workload(w).encode());
            let mut host = NativeHost {
                sc: self.sc,
                peer: self.peer.clone(),
                answer,
                metadata,
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
            // No filter config (the first one was rejected): Envoy answers 500 NFCF
            // itself, as the harness does.
            return Ok(Forward::Reply(Reply {
                status: 500,
                headers: vec![
                    (":status".into(), "500".into()),
                    ("content-length".into(), "0".into()),
                ],
                body: Vec::new(),
                hop: None,
            }));
        };
        let bytes = to_bytes(headers);
        let out = {
            let mut host = NativeHost {
                sc: self.sc,
                peer: self.peer.clone(),
                answer: None,
                metadata: None,
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

    fn config_rejected(&self) -> bool {
        self.filter.is_none()
    }

    fn metric(&self, name: &str) -> Option<u64> {
        self.counters.get(name).copied()
    }

    fn logs(&self) -> Vec<(String, String)> {
        self.logs.clone()
    }
}
