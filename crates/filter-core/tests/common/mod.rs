//! A fake proxy for native tests of the decision flow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::collections::HashMap;

use hybridmesh_filter_core::flow::{Direction, Headers, Host, Level, Map, Peer, Update};
use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::metrics::CounterRef;
use hybridmesh_filter_core::{parse_json, Filter};

#[derive(Default)]
pub struct FakeHost {
    pub now_ms: u64,
    pub randoms: Vec<u64>,
    pub counter: u64,
    pub direction: Option<Direction>,
    pub cluster_name: Option<String>,
    pub peer: Peer,
    pub shared: HashMap<String, Vec<u8>>,
    pub flags: u64,
    pub upstream_address: Option<String>,
    pub host_metadata: Option<Vec<u8>>,
    /// Host calls made that read something, by name.
    pub calls: Vec<&'static str>,
    /// Header writes, as (call, name).
    pub writes: Vec<(&'static str, Map, String)>,
    /// Filter state written.
    pub filter_state: Vec<(String, Vec<u8>)>,
}

impl Host for FakeHost {
    fn now_ms(&mut self) -> u64 {
        self.calls.push("now");
        self.now_ms
    }
    fn random(&mut self) -> u64 {
        self.counter += 1;
        if self.randoms.is_empty() {
            hybridmesh_filter_core::decide::mix(self.counter)
        } else {
            self.randoms.remove(0)
        }
    }
    fn listener_direction(&mut self) -> Option<Direction> {
        self.calls.push("listener_direction");
        self.direction
    }
    fn cluster_name(&mut self) -> Option<String> {
        self.calls.push("cluster_name");
        self.cluster_name.clone()
    }
    fn peer_mtls(&mut self) -> bool {
        self.calls.push("peer");
        self.peer.mtls
    }
    fn peer_uri_san(&mut self) -> Option<&[u8]> {
        self.calls.push("peer");
        self.peer.uri_san.as_deref().map(str::as_bytes)
    }
    fn shared_get(&mut self, key: &str) -> Option<&[u8]> {
        self.calls.push("shared_get");
        self.shared.get(key).map(|v| v.as_slice())
    }
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        self.calls.push("shared_update");
        if let Some(v) = update(self.shared.get(key).map(|v| v.as_slice())) {
            self.shared.insert(key.to_string(), v);
        }
    }
    fn response_flags(&mut self) -> u64 {
        self.calls.push("response_flags");
        self.flags
    }
    fn upstream_address(&mut self) -> Option<&[u8]> {
        self.calls.push("upstream_address");
        self.upstream_address.as_deref().map(str::as_bytes)
    }
    fn upstream_host_metadata(&mut self) -> Option<&[u8]> {
        self.calls.push("upstream_host_metadata");
        self.host_metadata.as_deref()
    }
    fn add_header(&mut self, map: Map, name: &[u8], _value: &[u8]) {
        self.writes
            .push(("add", map, String::from_utf8_lossy(name).into_owned()));
    }
    fn replace_header(&mut self, map: Map, name: &[u8], _value: &[u8]) {
        self.writes
            .push(("replace", map, String::from_utf8_lossy(name).into_owned()));
    }
    fn remove_header(&mut self, map: Map, name: &[u8]) {
        self.writes
            .push(("remove", map, String::from_utf8_lossy(name).into_owned()));
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.filter_state.push((key.to_string(), value.to_vec()));
    }
    fn count(&mut self, _counter: CounterRef<'_>) {}
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
    fn log(&mut self, _level: Level, _message: &str) {}
}

pub fn node(cluster: &str, network: &str, locality: &str) -> NodeFacts {
    NodeFacts {
        cluster: Some(cluster.to_string()),
        network: Some(network.to_string()),
        locality: Locality::parse(locality).unwrap(),
        namespace: Some("sleep".to_string()),
    }
}

pub fn gke() -> NodeFacts {
    node(
        "gke",
        "kuchima-demo-vpc01",
        "asia-northeast1/asia-northeast1-a",
    )
}

/// On-prem nodes carry no locality.
pub fn anthos() -> NodeFacts {
    node("anthos", "default", "")
}

/// The seed's two clusters.
pub const CLUSTERS: &str = r#""clusters": [
    {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
    {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}
]"#;

pub fn filter(json: &str, node: &NodeFacts) -> Filter {
    let cfg = parse_json(json.as_bytes()).unwrap_or_else(|e| panic!("config rejected: {e}"));
    Filter::new(cfg, node).unwrap()
}

pub fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

pub fn get<'a>(h: &'a Headers, name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
        .collect()
}

pub fn request(authority: &str) -> Headers {
    headers(&[
        (":method", "GET"),
        (":path", "/"),
        (":authority", authority),
        ("x-request-id", "req-1"),
    ])
}
