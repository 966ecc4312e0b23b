//! Inputs the fuzzers found (`fuzz/`, `scripts/fuzz`; the harness-level
//! `crates/sim/examples/fuzz_wasm.rs`), replayed with the outcome each must
//! have. The failing inputs themselves are kept as seeds in `fuzz/seeds/`,
//! so every fuzz run starts from them too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hybridmesh_filter_core::flow::Direction;
use hybridmesh_filter_core::identity::Locality;
use hybridmesh_filter_core::parse_json;

fn rejected(json: &str) -> Vec<String> {
    match parse_json(json.as_bytes()) {
        Ok(_) => panic!("config was accepted: {json}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// fuzz target `headers`, seed `crash-hop-log-request-id-crlf`: the client's
/// `x-request-id` went into the hop log line as it was, so CR/LF split the line
/// (and a space let it add its own `key=value` fields).
#[test]
fn a_client_request_id_cannot_split_or_add_fields_to_the_hop_log_line() {
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    for (id, token) in [
        ("gke\r\nx-evil: 1", "gke\\u{d}\\u{a}x-evil:\\u{20}1"),
        (
            "a service=evil src=anthos",
            "a\\u{20}service=evil\\u{20}src=anthos",
        ),
        ("nul\0tab\tend", "nul\\u{0}tab\\u{9}end"),
        ("req-1", "req-1"),
    ] {
        let mut host = FakeHost {
            direction: Some(Direction::Outbound),
            ..Default::default()
        };
        let mut req = request("echo-svc.default");
        req.retain(|(k, _)| k.as_slice() != b"x-request-id");
        req.push((b"x-request-id".to_vec(), id.as_bytes().to_vec()));
        let out = f.on_request(&req, &mut host);
        let resp = headers(&[(":status", "200")]);
        let hop = f.on_response(&out.state, &resp, &mut host).hop.unwrap();
        let line = hop.log_line();
        assert!(
            line.starts_with(&format!(
                "hop id={token} service=echo-svc.default.svc.cluster.local src=gke target=- "
            )),
            "{line}"
        );
        assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        assert_eq!(line.matches(" src=").count(), 1, "{line}");
        // The JSON record keeps the id exactly, escaped.
        let json = hop.to_json();
        assert!(!json.contains(['\r', '\n', '\0']), "{json:?}");
        assert_eq!(hop.request_id, id);
    }
}

/// fuzz target `config`, seed `crash-locality-crlf.json`: a locality with CR/LF
/// was accepted, and an on-prem proxy (no node locality) sent it on every
/// request in `x-hybridmesh-source-locality`.
#[test]
fn localities_with_whitespace_or_control_characters_are_rejected() {
    let expected = |path: &str, text: &str| {
        format!("{path}: {text:?} is not a locality, expected region[/zone[/subzone]] (e.g. \"tokyo-onprem\")")
    };
    assert_eq!(
        rejected(
            r#"{"clusters": [{"name": "anthos", "network": "default", "locality": "tokyo\r\nonprem"}]}"#
        ),
        vec![expected("clusters[0].locality", "tokyo\r\nonprem")]
    );
    assert_eq!(
        rejected(r#"{"clusters": [{"name": "anthos", "locality": "tokyo/zone a"}]}"#),
        vec![expected("clusters[0].locality", "tokyo/zone a")]
    );
    assert_eq!(
        rejected(r#"{"identity": {"locality": "tokyo\u0000"}}"#),
        vec![expected("identity.locality", "tokyo\0")]
    );
    assert_eq!(
        rejected(&format!(
            r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "weighted", "distribute": [{{"from": "tokyo-onprem\n", "to": {{"gke": 100}}}}]}}]}}"#
        )),
        vec!["routes[0].distribute[0].from: \"tokyo-onprem\\n\" is not a locality pattern, expected region[/zone[/subzone]] with * for any (e.g. \"asia-northeast1/*\")".to_string()]
    );
    assert_eq!(Locality::parse("a\tb"), None);
    // Ordinary localities are still what they were.
    assert_eq!(
        Locality::parse("asia-northeast1/asia-northeast1-a"),
        Some(Locality::new("asia-northeast1", "asia-northeast1-a", ""))
    );
    let f = filter(
        r#"{"clusters": [{"name": "anthos", "network": "default", "locality": "tokyo-onprem/dc1/rack_2"}]}"#,
        &anthos(),
    );
    let mut host = FakeHost::default();
    let out = f.on_request(&request("echo-svc.default"), &mut host);
    assert_eq!(
        get(
            out.headers.as_ref().unwrap(),
            "x-hybridmesh-source-locality"
        ),
        vec!["tokyo-onprem/dc1/rack_2"]
    );
}

/// fuzz target `hop_chain`, seed `long-chain-round-trip` (and the chain-length
/// bound it led to): a valid forwarded chain of up to 2 KiB, with our cluster
/// appended, could be longer than the 2 KiB the next hop reads, so the next hop
/// threw the whole chain away as oversized (and with it loop detection).
#[test]
fn the_chain_sent_on_is_one_the_next_hop_reads() {
    use hybridmesh_filter_core::hop::{Chain, ChainProblem, MAX_CHAIN_BYTES};
    // Eight 253-byte cluster names and one of 16: exactly 2048 bytes.
    let long = |c: char| c.to_string().repeat(253);
    let mut entries: Vec<String> = "abcdefgh".chars().map(long).collect();
    entries.push("sixteen-bytes-xy".to_string());
    let forwarded = entries.join(",");
    assert_eq!(forwarded.len(), MAX_CHAIN_BYTES);

    let chain = Chain::extend(Some(forwarded.as_bytes()), false, "gke", 32);
    assert_eq!(chain.problem, Some(ChainProblem::Truncated));
    assert!(chain.value().len() <= MAX_CHAIN_BYTES);
    // Only the oldest entry made room for ours.
    let mut want = entries[1..].to_vec();
    want.push("gke".to_string());
    assert_eq!(chain.clusters, want);
    let next = Chain::extend(Some(chain.value().as_bytes()), false, "anthos", 32);
    assert_eq!(next.problem, None);
    assert_eq!(next.clusters.len(), 10);

    // A chain that fits is kept whole.
    let short = Chain::extend(Some(b"anthos,aks"), false, "gke", 8);
    assert_eq!(short.problem, None);
    assert_eq!(short.value(), "anthos,aks,gke");
}

/// Harness fuzzer (`fuzz_wasm`, seed 1): a trusted peer's source-cluster went
/// as it was into the server side's refusal log line and the local reply body
/// of a cluster-local host, so CR/LF or NUL in it split or corrupted the line.
#[test]
fn a_peer_source_cluster_cannot_split_the_refusal_log_line() {
    use hybridmesh_filter_core::flow::Peer;
    use hybridmesh_filter_core::metrics::Counter;
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}}]}}"#
    );
    let f = filter(&cfg, &anthos());
    for (sent, shown) in [
        ("gke\r\nx-evil: 1", "gke\\u{d}\\u{a}x-evil:\\u{20}1"),
        ("\0", "\\u{0}"),
        ("gke", "gke"),
    ] {
        let mut host = FakeHost {
            direction: Some(Direction::Inbound),
            peer: Peer {
                mtls: true,
                uri_san: Some("spiffe://cluster.local/ns/sleep/sa/sleep".into()),
            },
            ..Default::default()
        };
        let mut req = request("echo-svc.default.svc.cluster.local");
        req.push((
            b"x-hybridmesh-source-cluster".to_vec(),
            sent.as_bytes().to_vec(),
        ));
        let out = f.on_request(&req, &mut host);
        let reply = out.local_reply.expect("refused");
        assert_eq!(
            reply.body,
            format!("hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster {shown} refused\n")
        );
        assert_eq!(
            out.effects.logs.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
            vec![format!("echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster {shown} refused")]
        );
        assert_eq!(
            out.effects.counters,
            // The label as sent: the glue's label guard turns a name that is
            // not a configured cluster into `other`.
            vec![Counter::Denied {
                source: sent.to_string()
            }]
        );
    }
}

/// Harness fuzzer (`fuzz_wasm`, seed 1): the client's `x-request-id` went as it
/// was into the warning about a looping request.
#[test]
fn a_client_request_id_cannot_split_the_loop_warning() {
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let mut host = FakeHost {
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    let mut req = request("echo-svc.default");
    req.retain(|(k, _)| k.as_slice() != b"x-request-id");
    req.push((b"x-request-id".to_vec(), b"r-1\r\nhop id=forged".to_vec()));
    req.push((b"x-hybridmesh-hops".to_vec(), b"gke,anthos".to_vec()));
    let out = f.on_request(&req, &mut host);
    assert!(out.state.looped);
    let warnings: Vec<&str> = out.effects.logs.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        warnings,
        vec!["request r-1\\u{d}\\u{a}hop\\u{20}id=forged loops: cluster gke is already in its hop chain"]
    );
}
