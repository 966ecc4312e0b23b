//! Inputs the fuzzers found (`fuzz/`, `scripts/fuzz`; the harness-level
//! `host-test/examples/fuzz_wasm.rs`), replayed with the outcome each must
//! have. The failing inputs themselves are kept as seeds in `fuzz/seeds/`,
//! so every fuzz run starts from them too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hybridmesh_filter::flow::Direction;
use hybridmesh_filter::identity::Locality;
use hybridmesh_filter::parse_json;

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
        ("gke\r\nx-evil: 1", "gke__x-evil:_1"),
        ("a service=evil src=anthos", "a_service=evil_src=anthos"),
        ("nul\0tab\tend", "nul_tab_end"),
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
