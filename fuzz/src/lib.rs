//! What the fuzz targets share: a fake proxy for `Filter::on_request` /
//! `on_response`, node facts, and the checks every request through the filter
//! must pass whatever the input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use hybridmesh_filter_core::flow::{Direction, Headers, Host, Level, Map, Peer, Update};
use hybridmesh_filter_core::metrics::CounterRef;
use hybridmesh_filter_core::identity::{Locality, NodeFacts};
use hybridmesh_filter_core::Filter;

/// The proxy, as far as the filter asks it anything. Every answer is data the
/// target chose.
#[derive(Default, Debug, Clone)]
pub struct FakeHost {
    pub now_ms: u64,
    pub random: u64,
    pub direction: Option<Direction>,
    pub cluster_name: Option<String>,
    pub peer: Peer,
    pub shared: HashMap<String, Vec<u8>>,
    pub flags: u64,
    pub upstream_address: Option<String>,
    pub host_metadata: Option<Vec<u8>>,
}

impl Host for FakeHost {
    fn now_ms(&mut self) -> u64 {
        self.now_ms
    }
    fn random(&mut self) -> u64 {
        self.random = self
            .random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.random
    }
    fn listener_direction(&mut self) -> Option<Direction> {
        self.direction
    }
    fn cluster_name(&mut self) -> Option<String> {
        self.cluster_name.clone()
    }
    fn peer_mtls(&mut self) -> bool {
        self.peer.mtls
    }
    fn peer_uri_san(&mut self) -> Option<&[u8]> {
        self.peer.uri_san.as_deref().map(str::as_bytes)
    }
    fn shared_get(&mut self, key: &str) -> Option<&[u8]> {
        self.shared.get(key).map(Vec::as_slice)
    }
    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        if let Some(v) = update(self.shared.get(key).map(|v| v.as_slice())) {
            self.shared.insert(key.to_string(), v);
        }
    }
    fn response_flags(&mut self) -> u64 {
        self.flags
    }
    fn upstream_address(&mut self) -> Option<&[u8]> {
        self.upstream_address.as_deref().map(str::as_bytes)
    }
    fn upstream_host_metadata(&mut self) -> Option<&[u8]> {
        self.host_metadata.as_deref()
    }
    fn add_header(&mut self, _map: Map, _name: &[u8], _value: &[u8]) {}
    fn replace_header(&mut self, _map: Map, _name: &[u8], _value: &[u8]) {}
    fn remove_header(&mut self, _map: Map, _name: &[u8]) {}
    fn set_filter_state(&mut self, _key: &str, _value: &[u8]) {}
    fn count(&mut self, _counter: CounterRef<'_>) {}
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
    fn log(&mut self, _level: Level, _message: &str) {}
}

/// Node facts as Istio's sidecars report them: GKE (with a locality),
/// on-prem (none), and a node without any metadata.
pub fn nodes() -> [NodeFacts; 3] {
    let node = |c: &str, n: &str, l: &str, ns: &str| NodeFacts {
        cluster: Some(c.to_string()),
        network: Some(n.to_string()),
        locality: Locality::parse(l).unwrap_or_default(),
        namespace: Some(ns.to_string()),
    };
    [
        node(
            "gke",
            "kuchima-demo-vpc01",
            "asia-northeast1/asia-northeast1-a",
            "sleep",
        ),
        node("anthos", "default", "", "default"),
        NodeFacts::default(),
    ]
}

/// A header value the filter emits must be a valid HTTP field value as far as
/// framing goes: no CR, LF or NUL.
pub fn clean(v: &[u8]) -> bool {
    !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// A hostname that `pattern` (as the host table stores it) matches.
pub fn host_for(pattern: &hybridmesh_filter_core::hosts::HostPattern) -> String {
    use hybridmesh_filter_core::hosts::HostPattern;
    match pattern {
        HostPattern::Exact(h) => h.clone(),
        HostPattern::Suffix(s) => format!("x{s}"),
        HostPattern::Any => "example.com".to_string(),
    }
}

/// Checks one outbound request through `f`: the reserved headers that leave
/// are exactly ours (source identity, validated hop chain, at most one target
/// that is a cluster the filter knows), every other header passes unchanged and
/// in order, and nothing the filter writes holds CR, LF or NUL.
/// Returns the request's output headers.
pub fn check_outbound(f: &Filter, input: &Headers, out: &Headers) {
    let names = &f.cfg.headers;
    let ours: [(&str, &[u8]); 3] = [
        (&names.source_cluster, f.me.cluster.as_bytes()),
        (&names.source_network, f.me.network.as_bytes()),
        (&names.source_locality, &[]),
    ];
    let locality = f.me.locality.to_string();
    let mut seen = [0usize; 3];
    let mut hops = 0;
    let mut targets = 0;
    for (k, v) in out {
        if !names.is_reserved(k) {
            continue;
        }
        assert!(
            clean(v),
            "the filter emitted {:?}: {:?}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        );
        if let Some(i) = ours.iter().position(|(n, _)| n.as_bytes() == k.as_slice()) {
            let want: &[u8] = if i == 2 {
                locality.as_bytes()
            } else {
                ours[i].1
            };
            assert_eq!(v.as_slice(), want, "{} is not ours", ours[i].0);
            seen[i] += 1;
        } else if k.as_slice() == names.hops.as_bytes() {
            hops += 1;
            let text = std::str::from_utf8(v).expect("the hop chain is text");
            let entries: Vec<&str> = text.split(',').collect();
            assert!(
                entries.len() <= f.cfg.max_hops,
                "hop chain {text:?} longer than maxHops {}",
                f.cfg.max_hops
            );
            assert_eq!(entries.last(), Some(&f.me.cluster.as_str()), "{text:?}");
            for e in &entries[..entries.len() - 1] {
                assert!(
                    hybridmesh_filter_core::config::is_cluster_name(e),
                    "hop chain entry {e:?} is not a cluster name"
                );
            }
        } else if k.as_slice() == names.target_cluster.as_bytes()
            || k.as_slice() == names.pinned_cluster.as_bytes()
        {
            targets += 1;
            let t = std::str::from_utf8(v).expect("the target is text");
            assert!(
                f.cfg.cluster_index(t).is_some() || t == f.me.cluster,
                "target {t:?} is no cluster the filter knows"
            );
        } else {
            panic!(
                "client-sent reserved header {:?}: {:?} reached the upstream",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            );
        }
    }
    assert_eq!(seen, [1, 1, 1], "each source header exactly once");
    assert_eq!(hops, 1, "exactly one hop chain");
    assert!(targets <= 1, "at most one decision (target or pinned)");
    let passed: Vec<&(Vec<u8>, Vec<u8>)> = input
        .iter()
        .filter(|(k, _)| !names.is_reserved(k))
        .collect();
    let kept: Vec<&(Vec<u8>, Vec<u8>)> =
        out.iter().filter(|(k, _)| !names.is_reserved(k)).collect();
    assert_eq!(passed, kept, "other headers pass unchanged, in order");
}

/// The response side of a stream: headers the filter sets are ours and clean,
/// the hop record's JSON parses and says what the request said.
pub fn check_response(
    f: &Filter,
    state: &hybridmesh_filter_core::flow::StreamState,
    outcome: &hybridmesh_filter_core::flow::ResponseOutcome,
) {
    let names = &f.cfg.headers;
    for (k, v) in &outcome.set_headers {
        assert!(
            k == &names.served_by || k == &names.decision,
            "the filter set {k:?}"
        );
        assert!(
            clean(v),
            "the filter emitted {k}: {:?}",
            String::from_utf8_lossy(v)
        );
    }
    if let Some(hop) = &outcome.hop {
        let json: serde_json::Value =
            serde_json::from_str(&hop.to_json()).expect("the hop record is JSON");
        assert_eq!(json["request_id"].as_str(), Some(state.request_id.as_str()));
        assert_eq!(json["chain"].as_str(), Some(state.chain.as_str()));
        let line = hop.log_line();
        assert!(
            !line.contains(['\n', '\r', '\0']),
            "the hop log line is not one line: {line:?}"
        );
    }
}

/// Local replies: an error status, clean headers.
pub fn check_local_reply(reply: &hybridmesh_filter_core::flow::LocalReply) {
    assert!((400..=599).contains(&reply.status), "{reply:?}");
    for (k, v) in &reply.headers {
        assert!(clean(k.as_bytes()) && clean(v.as_bytes()), "{reply:?}");
    }
}

/// Every line the filter logs is one line.
pub fn check_logs(effects: &hybridmesh_filter_core::flow::Effects) {
    for (level, line) in &effects.logs {
        assert!(
            !line.contains(['\r', '\n', '\0']),
            "a {level:?} log line is not one line: {line:?}"
        );
    }
}
