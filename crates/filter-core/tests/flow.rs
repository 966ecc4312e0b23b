//! The filter's behaviour, natively: every policy, health over time, identity,
//! trust and spoofing, hop records. The same flows run through the real `.wasm`
//! in crates/sim's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hybridmesh_filter_core::flow::{Direction, Peer, StreamState};
use hybridmesh_filter_core::identity::{IdentityIssue, Locality, NodeFacts};
use hybridmesh_filter_core::metrics::Counter;
use hybridmesh_filter_core::{parse_json, Filter};

fn outbound(
    f: &Filter,
    host: &mut FakeHost,
    req: &hybridmesh_filter_core::flow::Headers,
) -> (hybridmesh_filter_core::flow::Headers, StreamState) {
    host.direction = Some(Direction::Outbound);
    let out = f.on_request(req, host);
    assert!(out.local_reply.is_none());
    (
        out.headers.expect("outbound always sets headers"),
        out.state,
    )
}

/// Sends one request and answers it with `status` from the chosen cluster.
fn round_trip(
    f: &Filter,
    host: &mut FakeHost,
    authority: &str,
    extra: &[(&str, &str)],
    status: u32,
) -> Option<String> {
    let mut req = request(authority);
    req.extend(headers(extra));
    let (h, state) = outbound(f, host, &req);
    // The preferred cluster, or the one a pinned decision (cluster-local) names.
    let target = get(&h, "x-hybridmesh-target-cluster")
        .first()
        .or(get(&h, "x-hybridmesh-pinned-cluster").first())
        .map(|s| s.to_string());
    let served = target.clone().unwrap_or_else(|| "gke".into());
    let resp = headers(&[
        (":status", &status.to_string()),
        (
            "x-hybridmesh-served-by",
            &format!("cluster={served};network=x;locality=y"),
        ),
    ]);
    f.on_response(&state, &resp, host);
    target
}

const ECHO: &str = "echo-svc.default.svc.cluster.local";

#[test]
fn outbound_tags_every_request_and_strips_what_the_app_sent() {
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let mut host = FakeHost::default();
    let mut req = request("echo-svc.default");
    req.extend(headers(&[
        ("x-hybridmesh-source-cluster", "anthos"),
        ("x-hybridmesh-source-cluster", "evil"),
        ("x-hybridmesh-target-cluster", "anthos"),
        ("x-hybridmesh-anything", "1"),
        ("x-other", "kept"),
    ]));
    let out = f.on_request(&req, &mut host);
    let h = out.headers.unwrap();
    assert_eq!(get(&h, "x-hybridmesh-source-cluster"), vec!["gke"]);
    assert_eq!(
        get(&h, "x-hybridmesh-source-network"),
        vec!["kuchima-demo-vpc01"]
    );
    assert_eq!(
        get(&h, "x-hybridmesh-source-locality"),
        vec!["asia-northeast1/asia-northeast1-a"]
    );
    assert!(
        get(&h, "x-hybridmesh-target-cluster").is_empty(),
        "no rule: no decision header"
    );
    assert!(get(&h, "x-hybridmesh-anything").is_empty());
    assert_eq!(get(&h, "x-other"), vec!["kept"]);
    assert_eq!(get(&h, ":authority"), vec!["echo-svc.default"]);
    assert_eq!(
        out.effects.counters,
        vec![Counter::Spoofed {
            direction: Direction::Outbound
        }]
    );
}

#[test]
fn the_service_comes_from_authority_without_extra_host_calls() {
    let f = filter(&format!("{{{CLUSTERS}, \"routes\": [{{\"hosts\": [\"{ECHO}\"], \"policy\": \"clusterLocal\"}}]}}"), &gke());
    let mut host = FakeHost {
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    let out = f.on_request(&request("echo-svc.default:80"), &mut host);
    assert_eq!(out.state.service(), Some(ECHO));
    assert_eq!(host.calls, vec!["listener_direction", "now"]);
    // An IP authority: the outbound cluster name tells the service.
    let mut host = FakeHost {
        direction: Some(Direction::Outbound),
        cluster_name: Some(format!("outbound|80||{ECHO}")),
        ..Default::default()
    };
    let out = f.on_request(&request("10.96.0.10"), &mut host);
    assert_eq!(out.state.service(), Some(ECHO));
    // Cluster-local: pinned to the local cluster.
    assert_eq!(
        get(out.headers.as_ref().unwrap(), "x-hybridmesh-pinned-cluster"),
        vec!["gke"]
    );
}

#[test]
fn cluster_local_stays_home_even_when_home_is_ejected() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "outlierDetection": {{"consecutive5xxErrors": 1}}, "routes": [
            {{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}},
            {{"hosts": ["*"], "policy": "failover"}}]}}"#
    );
    let f = filter(&cfg, &anthos());
    let mut host = FakeHost::default();
    for _ in 0..5 {
        assert_eq!(
            round_trip(&f, &mut host, "echo-svc.default", &[], 503).as_deref(),
            Some("anthos")
        );
    }
    // Another namespace still spans clusters (the seed's httpbin-svc.sleep).
    assert_eq!(
        round_trip(&f, &mut host, "httpbin-svc.sleep", &[], 200).as_deref(),
        Some("anthos")
    );
}

#[test]
fn weighted_80_20_is_honoured_over_many_requests() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["{ECHO}"], "policy": "weighted", "distribute": [
            {{"from": "asia-northeast1/*", "to": {{"gke": 80, "anthos": 20}}}},
            {{"from": "*", "to": {{"gke": 20, "anthos": 80}}}}]}}]}}"#
    );
    for (node, expect_gke) in [(gke(), 8000), (anthos(), 2000)] {
        let f = filter(&cfg, &node);
        let mut host = FakeHost::default();
        let n = 10_000;
        let to_gke = (0..n)
            .filter(|_| {
                round_trip(&f, &mut host, "echo-svc.default", &[], 200).as_deref() == Some("gke")
            })
            .count();
        // 4 standard deviations of a binomial(10000, 0.8) is 160.
        assert!(
            (to_gke as i64 - expect_gke).abs() < 160,
            "{to_gke} of {n} to gke, expected about {expect_gke}"
        );
    }
}

#[test]
fn weighted_without_a_matching_from_leaves_it_to_envoy() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "weighted", "distribute": [{{"from": "us-west/*", "to": {{"gke": 100}}}}]}}]}}"#
    );
    let f = filter(&cfg, &gke());
    let mut host = FakeHost::default();
    let (h, state) = outbound(&f, &mut host, &request("echo-svc.default"));
    assert!(get(&h, "x-hybridmesh-target-cluster").is_empty());
    let d = state.decision.unwrap();
    assert_eq!(
        d.explain(&f.plan, None),
        "weighted rule=0: no distribute entry matches this locality, left to Envoy"
    );
}

#[test]
fn sticky_users_stay_put_while_their_cluster_is_healthy() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "outlierDetection": {{"consecutive5xxErrors": 1, "baseEjectionTime": "10s"}},
        "routes": [{{"hosts": ["{ECHO}"], "policy": "weighted", "stickyHeader": "x-user",
            "distribute": [{{"from": "*", "to": {{"gke": 50, "anthos": 50}}}}]}}]}}"#
    );
    let f = filter(&cfg, &gke());
    let mut host = FakeHost::default();
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let first: Vec<Option<String>> = users
        .iter()
        .map(|u| round_trip(&f, &mut host, "echo-svc.default", &[("x-user", u)], 200))
        .collect();
    for _ in 0..3 {
        for (u, c) in users.iter().zip(&first) {
            assert_eq!(
                &round_trip(&f, &mut host, "echo-svc.default", &[("x-user", u)], 200),
                c,
                "{u} moved"
            );
        }
    }
    let on_anthos = first
        .iter()
        .filter(|c| c.as_deref() == Some("anthos"))
        .count();
    assert!(
        (60..140).contains(&on_anthos),
        "{on_anthos} of 200 users on anthos"
    );
    // Eject anthos: its users move to gke, gke's users stay.
    let anthos_user = users
        .iter()
        .zip(&first)
        .find(|(_, c)| c.as_deref() == Some("anthos"))
        .unwrap()
        .0;
    assert_eq!(
        round_trip(
            &f,
            &mut host,
            "echo-svc.default",
            &[("x-user", anthos_user)],
            503
        )
        .as_deref(),
        Some("anthos")
    );
    for (u, _) in users.iter().zip(&first) {
        assert_eq!(
            round_trip(&f, &mut host, "echo-svc.default", &[("x-user", u)], 200).as_deref(),
            Some("gke")
        );
    }
    // After the ejection they come back.
    host.now_ms += 10_000;
    for (u, c) in users.iter().zip(&first) {
        assert_eq!(
            &round_trip(&f, &mut host, "echo-svc.default", &[("x-user", u)], 200),
            c
        );
    }
}

#[test]
fn failover_follows_the_seed_walkthrough() {
    // The seed: anthos (tokyo-onprem, labelled by hand) fails over to asia-northeast1.
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["{ECHO}"], "policy": "failover",
            "failover": [{{"from": "tokyo-onprem", "to": "asia-northeast1"}}],
            "outlierDetection": {{"consecutive5xxErrors": 1, "baseEjectionTime": "1m"}}}}]}}"#
    );
    let f = filter(&cfg, &anthos());
    assert_eq!(
        f.me.locality.region, "tokyo-onprem",
        "region from the cluster table"
    );
    let mut host = FakeHost {
        now_ms: 1_000,
        ..Default::default()
    };
    for _ in 0..5 {
        assert_eq!(
            round_trip(&f, &mut host, "echo-svc.default", &[], 200).as_deref(),
            Some("anthos")
        );
    }
    // Local endpoints drained: one 503 from anthos ejects it.
    let mut req = request("echo-svc.default");
    req.extend(headers(&[("x-hybridmesh-debug", "1")]));
    let (_, state) = outbound(&f, &mut host, &req);
    let out = f.on_response(&state, &headers(&[(":status", "503")]), &mut host);
    assert_eq!(
        out.effects.counters[0],
        Counter::Ejections {
            destination: "anthos".into()
        }
    );
    assert_eq!(
        out.effects.logs[0].1,
        "ejected cluster anthos for echo-svc.default.svc.cluster.local for 60000ms (ejection #1) after 1 consecutive failures"
    );
    host.now_ms += 1;
    for _ in 0..5 {
        assert_eq!(
            round_trip(&f, &mut host, "echo-svc.default", &[], 200).as_deref(),
            Some("gke")
        );
    }
    let (_, state) = outbound(&f, &mut host, &request("echo-svc.default"));
    assert_eq!(
        state.decision.unwrap().explain(&f.plan, state.service()),
        "failover rule=0 service=echo-svc.default.svc.cluster.local order=anthos>gke skipped=anthos(ejected) -> gke"
    );
    // Back after baseEjectionTime.
    host.now_ms += 60_000;
    assert_eq!(
        round_trip(&f, &mut host, "echo-svc.default", &[], 200).as_deref(),
        Some("anthos")
    );
}

#[test]
fn failover_priority_ranks_by_network_then_region_then_zone() {
    let cfg = r#"{"clusters": [
        {"name": "far", "network": "n2", "locality": "us-east1/us-east1-b"},
        {"name": "same-net-other-region", "network": "n1", "locality": "us-west1/us-west1-a"},
        {"name": "same-region", "network": "n1", "locality": "asia-northeast1/asia-northeast1-b"},
        {"name": "same-zone", "network": "n1", "locality": "asia-northeast1/asia-northeast1-a"},
        {"name": "me", "network": "n1", "locality": "asia-northeast1/asia-northeast1-a"}],
        "routes": [{"hosts": ["*"], "policy": "failover", "outlierDetection": {"consecutive5xxErrors": 1}}]}"#;
    let f = filter(cfg, &node("me", "n1", "asia-northeast1/asia-northeast1-a"));
    let names = |f: &Filter| match &f.plan.routes[0] {
        hybridmesh_filter_core::decide::RoutePlan::Failover { order } => order
            .iter()
            .map(|&k| f.cfg.clusters[k].name.clone())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        names(&f),
        vec![
            "me",
            "same-zone",
            "same-region",
            "same-net-other-region",
            "far"
        ]
    );
    // Ejected in order, traffic walks down the list.
    let mut host = FakeHost::default();
    for expected in [
        "me",
        "same-zone",
        "same-region",
        "same-net-other-region",
        "far",
    ] {
        let mut req = request("svc.ns");
        req.push((b"x".to_vec(), b"y".to_vec()));
        let (h, state) = outbound(&f, &mut host, &req);
        assert_eq!(get(&h, "x-hybridmesh-target-cluster"), vec![expected]);
        f.on_response(&state, &headers(&[(":status", "500")]), &mut host);
    }
    // All ejected: the first choice (panic), said so.
    let (h, state) = outbound(&f, &mut host, &request("svc.ns"));
    assert_eq!(get(&h, "x-hybridmesh-target-cluster"), vec!["me"]);
    assert!(state
        .decision
        .unwrap()
        .explain(&f.plan, None)
        .ends_with("all-ejected -> me"));
}

#[test]
fn connection_failures_count_like_5xx() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "failover", "outlierDetection": {{"consecutive5xxErrors": 2}}}}]}}"#
    );
    let f = filter(&cfg, &gke());
    let mut host = FakeHost {
        flags: 0x20,
        ..Default::default()
    };
    for _ in 0..2 {
        let (_, state) = outbound(&f, &mut host, &request("a.b"));
        // Envoy's own 503 for a connection failure: UF flag, no served-by.
        f.on_response(&state, &headers(&[(":status", "503")]), &mut host);
    }
    let (h, _) = outbound(&f, &mut host, &request("a.b"));
    assert_eq!(get(&h, "x-hybridmesh-target-cluster"), vec!["anthos"]);
}

#[test]
fn health_is_shared_through_shared_data() {
    // Two worker VMs: one sees the failures, the other skips the ejected cluster.
    let cfg = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "failover", "outlierDetection": {{"consecutive5xxErrors": 1}}}}]}}"#
    );
    let a = filter(&cfg, &gke());
    let b = filter(&cfg, &gke());
    let mut host = FakeHost::default();
    round_trip(&a, &mut host, "x.y", &[], 503);
    assert_eq!(
        round_trip(&b, &mut host, "x.y", &[], 200).as_deref(),
        Some("anthos")
    );
    assert!(host
        .shared
        .contains_key("hybridmesh.health/x.y.svc.cluster.local"));
}

#[test]
fn identity_precedence_override_then_node_then_cluster_table() {
    let cfg = |identity: &str| {
        parse_json(format!(r#"{{{CLUSTERS}, "identity": {identity}}}"#).as_bytes()).unwrap()
    };
    let f = Filter::new(cfg(r#"{"locality": "tokyo-onprem/rack-1"}"#), &anthos()).unwrap();
    assert_eq!(f.me.locality, Locality::new("tokyo-onprem", "rack-1", ""));
    let f = Filter::new(cfg("{}"), &gke()).unwrap();
    assert_eq!(
        f.me.locality.to_string(),
        "asia-northeast1/asia-northeast1-a",
        "node beats table"
    );
    let f = Filter::new(cfg("{}"), &anthos()).unwrap();
    assert_eq!(
        f.me.locality.to_string(),
        "tokyo-onprem",
        "table fills what the node lacks"
    );
    let f = Filter::new(
        cfg(r#"{"cluster": "anthos", "network": "vpn"}"#),
        &NodeFacts::default(),
    )
    .unwrap();
    assert_eq!(
        (f.me.cluster.as_str(), f.me.network.as_str()),
        ("anthos", "vpn")
    );
    assert_eq!(
        Filter::new(cfg("{}"), &NodeFacts::default()).unwrap_err(),
        IdentityIssue::MissingCluster
    );
    assert_eq!(
        IdentityIssue::MissingCluster.to_string(),
        "identity.cluster: no cluster id: node metadata CLUSTER_ID is missing and identity.cluster is not set"
    );
    let f = Filter::new(cfg("{}"), &node("Kubernetes", "", "")).unwrap();
    assert_eq!(
        f.warnings,
        vec![
            IdentityIssue::DefaultClusterId,
            IdentityIssue::UnknownCluster("Kubernetes".into())
        ]
    );
}

fn inbound(
    f: &Filter,
    host: &mut FakeHost,
    extra: &[(&str, &str)],
    authority: &str,
) -> hybridmesh_filter_core::flow::RequestOutcome {
    host.direction = Some(Direction::Inbound);
    let mut req = request(authority);
    req.extend(headers(extra));
    f.on_request(&req, host)
}

const FROM_GKE: &[(&str, &str)] = &[
    ("x-hybridmesh-source-cluster", "gke"),
    ("x-hybridmesh-source-network", "kuchima-demo-vpc01"),
];

fn mtls(san: &str) -> Peer {
    Peer {
        mtls: true,
        uri_san: Some(san.to_string()),
    }
}

#[test]
fn inbound_believes_source_headers_only_over_mesh_mtls() {
    let f = filter(
        &format!(r#"{{{CLUSTERS}, "trustDomains": ["cluster.local"]}}"#),
        &anthos(),
    );
    // mTLS from the mesh's trust domain: kept as they are, nothing rewritten.
    let mut host = FakeHost {
        peer: mtls("spiffe://cluster.local/ns/sleep/sa/sleep"),
        ..Default::default()
    };
    assert_eq!(
        inbound(&f, &mut host, FROM_GKE, "echo-svc.default").headers,
        None
    );
    // Plaintext and foreign trust domains: removed.
    for peer in [
        Peer::default(),
        mtls("spiffe://evil.example/ns/x/sa/y"),
        Peer {
            mtls: true,
            uri_san: None,
        },
    ] {
        let mut host = FakeHost {
            peer,
            ..Default::default()
        };
        let out = inbound(&f, &mut host, FROM_GKE, "echo-svc.default");
        let h = out.headers.expect("untrusted headers are removed");
        assert!(get(&h, "x-hybridmesh-source-cluster").is_empty());
        assert_eq!(get(&h, ":authority"), vec!["echo-svc.default"]);
        assert_eq!(
            out.effects.counters,
            vec![Counter::Spoofed {
                direction: Direction::Inbound
            }]
        );
    }
    // No source headers at all: the connection is not even looked at.
    let mut host = FakeHost::default();
    assert_eq!(
        inbound(&f, &mut host, &[], "echo-svc.default").headers,
        None
    );
    assert!(!host.calls.contains(&"peer"));
}

#[test]
fn inbound_refuses_cluster_local_hosts_from_other_clusters() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "trustSource": "any", "routes": [{{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}}]}}"#
    );
    let f = filter(&cfg, &anthos());
    let mut host = FakeHost::default();
    let out = inbound(
        &f,
        &mut host,
        FROM_GKE,
        "echo-svc.default.svc.cluster.local:80",
    );
    let reply = out.local_reply.expect("refused");
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.body,
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke refused\n"
    );
    assert_eq!(
        reply.headers,
        vec![(
            "x-hybridmesh-denied".to_string(),
            "cluster-local".to_string()
        )]
    );
    assert_eq!(
        out.effects.counters,
        vec![Counter::Denied {
            source: "gke".into()
        }]
    );
    // The local reply still gets served-by on its way out.
    let resp = f.on_response(&out.state, &headers(&[(":status", "403")]), &mut host);
    assert_eq!(
        resp.set_headers,
        vec![(
            "x-hybridmesh-served-by".to_string(),
            b"cluster=anthos;network=default;locality=tokyo-onprem".to_vec()
        )]
    );
    // Same cluster, other namespaces, unknown sources: served.
    assert!(inbound(
        &f,
        &mut host,
        &[("x-hybridmesh-source-cluster", "anthos")],
        "echo-svc.default"
    )
    .local_reply
    .is_none());
    assert!(inbound(&f, &mut host, FROM_GKE, "httpbin-svc.sleep")
        .local_reply
        .is_none());
    assert!(inbound(&f, &mut host, &[], "echo-svc.default")
        .local_reply
        .is_none());
    // unknownSource: deny, and a custom status.
    let strict = filter(
        &cfg.replace(
            "\"trustSource\": \"any\"",
            "\"trustSource\": \"any\", \"unknownSource\": \"deny\", \"denyStatus\": 421",
        ),
        &anthos(),
    );
    let reply = inbound(&strict, &mut host, &[], "echo-svc.default")
        .local_reply
        .unwrap();
    assert_eq!(reply.status, 421);
    assert!(reply.body.contains("request from cluster unknown refused"));
}

#[test]
fn a_spoofed_source_over_plaintext_cannot_slip_past_cluster_local() {
    // gke's app claims to be anthos, over plaintext: the claim is dropped.
    let cfg = format!(
        r#"{{{CLUSTERS}, "unknownSource": "deny", "routes": [{{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}}]}}"#
    );
    let f = filter(&cfg, &anthos());
    let mut host = FakeHost::default();
    let out = inbound(
        &f,
        &mut host,
        &[("x-hybridmesh-source-cluster", "anthos")],
        "echo-svc.default",
    );
    assert_eq!(out.local_reply.map(|r| r.status), Some(403));
}

#[test]
fn hop_record_tells_who_served_and_through_which_gateway() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "allowDebug": true, "routes": [{{"hosts": ["{ECHO}"], "policy": "weighted", "distribute": [{{"from": "*", "to": {{"anthos": 100}}}}]}}]}}"#
    );
    let f = filter(&cfg, &gke());
    let mut host = FakeHost {
        now_ms: 100,
        upstream_address: Some("172.16.10.152:15443".into()),
        ..Default::default()
    };
    let mut req = request("echo-svc.default");
    req.extend(headers(&[("x-hybridmesh-debug", "1")]));
    let (h, state) = outbound(&f, &mut host, &req);
    assert!(get(&h, "x-hybridmesh-debug").is_empty());
    host.now_ms = 107;
    let resp = headers(&[
        (":status", "200"),
        (
            "x-hybridmesh-served-by",
            "cluster=anthos;network=default;locality=tokyo-onprem",
        ),
    ]);
    let out = f.on_response(&state, &resp, &mut host);
    let hop = out.hop.unwrap();
    assert_eq!(hop.served_by.as_deref(), Some("anthos"));
    assert!(hop.cross_network);
    assert_eq!(hop.gateway.as_deref(), Some("172.16.10.152:15443"));
    assert_eq!(hop.latency_ms, 7);
    assert_eq!(
        hop.log_line(),
        "hop id=req-1 service=echo-svc.default.svc.cluster.local src=gke target=anthos served_by=anthos cross_network=true gateway=172.16.10.152:15443 decision=weighted status=200 latency_ms=7 chain=gke reason=\"weighted rule=0 service=echo-svc.default.svc.cluster.local from=* weights=anthos:100 pick=".to_string()
            + hop.reason.split("pick=").nth(1).unwrap()
            + "\""
    );
    assert_eq!(out.set_headers[0].0, "x-hybridmesh-decision",);
    let debug = String::from_utf8(out.set_headers[0].1.clone()).unwrap();
    assert!(debug.starts_with("weighted rule=0 service=echo-svc.default.svc.cluster.local from=* weights=anthos:100 pick="), "{debug}");
    assert!(
        debug.ends_with("-> anthos; served_by=anthos cross_network=true"),
        "{debug}"
    );
    assert_eq!(
        out.effects.counters,
        vec![Counter::Requests {
            source: "gke".into(),
            destination: "anthos".into(),
            decision: "weighted",
            cross_network: true
        }]
    );
    let json: serde_json::Value = serde_json::from_str(&hop.to_json()).unwrap();
    assert_eq!(json["served_by"], "anthos");
    assert_eq!(json["gateway"], "172.16.10.152:15443");
}

#[test]
fn without_served_by_the_endpoint_metadata_names_the_cluster() {
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let md = hybridmesh_test_metadata(";;;;anthos");
    let mut host = FakeHost {
        upstream_address: Some("172.16.10.152:15443".into()),
        host_metadata: Some(md),
        ..Default::default()
    };
    let (_, state) = outbound(&f, &mut host, &request("echo-svc.default"));
    let hop = f
        .on_response(&state, &headers(&[(":status", "200")]), &mut host)
        .hop
        .unwrap();
    assert_eq!(hop.served_by.as_deref(), Some("anthos"));
    assert_eq!(hop.served_network.as_deref(), Some("default"));
    assert!(hop.cross_network);
    // Debug was not asked for: no decision header.
    let out = f.on_response(&state, &headers(&[(":status", "200")]), &mut host);
    assert!(out.set_headers.is_empty());
}

#[test]
fn a_connection_failure_is_served_by_nobody() {
    // Envoy's 503 for a refused connection: the picked host has metadata, but
    // nothing served the request.
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let mut host = FakeHost {
        flags: 0x20,
        upstream_address: Some("172.16.10.152:15443".into()),
        host_metadata: Some(hybridmesh_test_metadata(";;;;anthos")),
        ..Default::default()
    };
    let (_, state) = outbound(&f, &mut host, &request("echo-svc.default"));
    let out = f.on_response(&state, &headers(&[(":status", "503")]), &mut host);
    let hop = out.hop.unwrap();
    assert_eq!(hop.served_by, None);
    assert_eq!(hop.flags, 0x20);
    assert!(!host.calls.contains(&"upstream_host_metadata"));
}

#[test]
fn debug_header_needs_allow_debug() {
    let f = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let mut host = FakeHost::default();
    let mut req = request("echo-svc.default");
    req.extend(headers(&[("x-hybridmesh-debug", "1")]));
    let (_, state) = outbound(&f, &mut host, &req);
    assert!(!state.debug);
}

#[test]
fn header_prefix_renames_every_header() {
    let f = filter(
        &format!(
            r#"{{{CLUSTERS}, "headerPrefix": "x-mesh", "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#
        ),
        &gke(),
    );
    let mut host = FakeHost::default();
    let mut req = request("a.b");
    req.extend(headers(&[
        ("x-hybridmesh-source-cluster", "kept: not ours any more"),
        ("x-mesh-target-cluster", "anthos"),
    ]));
    let (h, _) = outbound(&f, &mut host, &req);
    // Cluster-local pins to the local cluster; the app's preference header is gone.
    assert_eq!(get(&h, "x-mesh-pinned-cluster"), vec!["gke"]);
    assert!(get(&h, "x-mesh-target-cluster").is_empty());
    assert_eq!(get(&h, "x-mesh-source-cluster"), vec!["gke"]);
    assert_eq!(
        get(&h, "x-hybridmesh-source-cluster"),
        vec!["kept: not ours any more"]
    );
}

/// `Metadata{filter_metadata{istio: {workload: value}}}`, hand-encoded.
fn hybridmesh_test_metadata(workload: &str) -> Vec<u8> {
    fn len(n: u32, p: &[u8]) -> Vec<u8> {
        let mut o = vec![((n << 3) | 2) as u8, p.len() as u8];
        o.extend_from_slice(p);
        o
    }
    let value = len(3, workload.as_bytes());
    let field = [len(1, b"workload"), len(2, &value)].concat();
    let st = len(1, &field);
    let entry = [len(1, b"istio"), len(2, &st)].concat();
    len(1, &entry)
}

fn chain_of(out: &hybridmesh_filter_core::flow::RequestOutcome) -> Vec<String> {
    get(out.headers.as_ref().unwrap(), "x-hybridmesh-hops")
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn the_hop_chain_grows_by_one_cluster_per_hop() {
    // A in gke calls B in anthos, which forwards the header when it calls C.
    let f_gke = filter(&format!("{{{CLUSTERS}}}"), &gke());
    let f_anthos = filter(&format!("{{{CLUSTERS}}}"), &anthos());
    let mut host = FakeHost {
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    let a = f_gke.on_request(&request("b.ns"), &mut host);
    assert_eq!(chain_of(&a), vec!["gke"]);
    let mut from_b = request("c.ns");
    from_b.extend(headers(&[("x-hybridmesh-hops", "gke")]));
    let b = f_anthos.on_request(&from_b, &mut host);
    assert_eq!(chain_of(&b), vec!["gke,anthos"]);
    assert!(
        b.effects.counters.is_empty(),
        "a forwarded chain is not a spoofed header"
    );
    assert_eq!(b.state.chain, "gke,anthos");
    assert!(!b.state.looped);
}

#[test]
fn hop_chains_are_bounded_loops_detected_and_garbage_replaced() {
    let f = filter(&format!(r#"{{{CLUSTERS}, "maxHops": 4}}"#), &gke());
    let mut host = FakeHost {
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    let send = |chain: &[&str], host: &mut FakeHost| {
        let mut req = request("svc.ns");
        for c in chain {
            req.push((b"x-hybridmesh-hops".to_vec(), c.as_bytes().to_vec()));
        }
        f.on_request(&req, host)
    };
    // Thousands of entries: oversized, replaced by ours.
    let huge: String = (0..5000)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = send(&[&huge], &mut host);
    assert_eq!(chain_of(&out), vec!["gke"]);
    assert_eq!(
        out.effects.counters,
        vec![Counter::HopChain {
            problem: "oversized"
        }]
    );
    // Longer than maxHops: the oldest are dropped.
    let out = send(&["a,b,c,d,e"], &mut host);
    assert_eq!(chain_of(&out), vec!["c,d,e,gke"]);
    assert_eq!(
        out.effects.counters,
        vec![Counter::HopChain {
            problem: "truncated"
        }]
    );
    // A loop: said, counted, still forwarded (bounded).
    let out = send(&["anthos,gke,anthos"], &mut host);
    assert_eq!(chain_of(&out), vec!["anthos,gke,anthos,gke"]);
    assert!(out.state.looped);
    assert_eq!(
        out.effects.counters,
        vec![Counter::HopChain { problem: "loop" }]
    );
    assert!(out
        .effects
        .logs
        .iter()
        .any(|(_, l)| l == "request req-1 loops: cluster gke is already in its hop chain"));
    // Header injection and junk: replaced, never trusted.
    for junk in [
        "gke\r\nx-evil: 1",
        "a;b",
        "",
        ",",
        "gke,,anthos",
        "\u{fffd}",
    ] {
        let out = send(&[junk], &mut host);
        assert_eq!(chain_of(&out), vec!["gke"], "{junk:?}");
        assert_eq!(
            out.effects.counters,
            vec![Counter::HopChain {
                problem: "malformed"
            }],
            "{junk:?}"
        );
    }
    // Sent twice: malformed too.
    let out = send(&["a", "b"], &mut host);
    assert_eq!(chain_of(&out), vec!["gke"]);
}
