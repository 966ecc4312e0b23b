//! The attack table (`docs/src/security.md`): each row is a test
//! that plays the attack against the filter's real release `.wasm` in the
//! harness — through the seed's simulated mesh where the path matters (client
//! sidecar, east-west gateway, server sidecar, application), or through one
//! sidecar where the attack needs repeated or raw headers the mesh's request
//! format cannot carry — and asserts what a user would see: status, body, who
//! served, the headers the application and the client got, the counters and
//! the log lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use filter_support::{module, routes, CLUSTERS, ECHO};
use hybridmesh_scenario::{Fail, Mesh, ProxyOptions, RequestSpec};
use hybridmesh_sim::{Outcome, Pairs, Sidecar, SidecarSpec, Sim, WasmSidecar};
use proxy_wasm_host::{Connection, Direction, Level, Plugin, Proxy, Upstream};

const PREFIX: &str = "x-hybridmesh-";
const SPOOFED_OUT: &str = "direction=.=outbound;.;hybridmesh_spoofed_headers_total";
const SPOOFED_IN: &str = "direction=.=inbound;.;hybridmesh_spoofed_headers_total";
const MESH_PEER: &str = "spiffe://cluster.local/ns/sleep/sa/sleep";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/default";
const ANTHOS_SERVED_BY: &str = "cluster=anthos;network=default;locality=tokyo-onprem";

fn denied(source: &str) -> String {
    format!("source_cluster=.={source};.;hybridmesh_denied_total")
}

fn chain_problem(problem: &str) -> String {
    format!("problem=.={problem};.;hybridmesh_hop_chain_problems_total")
}

// ---------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------

fn mesh() -> Mesh {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// How one cluster's client-side plugin is broken, for the rows about a
/// client sidecar that does not run the filter.
#[derive(Clone, Copy)]
enum ClientDown {
    /// Its first config was rejected (delivered by ECDS, as Istio does): Envoy
    /// answers every request itself, 500 NFCF, whatever the fail strategy.
    Rejected(Fail),
    /// The filter is out of the way on that sidecar: its VM failed while serving
    /// under `FAIL_OPEN` (measured with Envoy 1.40: later requests pass unfiltered),
    /// or its thread-local configure failed. Played by a module that does nothing.
    Skipped,
}

/// A proxy-wasm module with no filter callbacks: requests pass untouched.
const PASS_THROUGH: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
    (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#;

/// The seed's mesh with the real `.wasm` in every sidecar: `config` everywhere
/// unless `per_cluster` names another for a cluster; `down` breaks one
/// cluster's client-side plugin.
fn sim_with(config: &str, per_cluster: &[(&str, &str)], down: Option<(&str, ClientDown)>) -> Sim {
    sim_in(mesh(), config, per_cluster, down)
}

fn sim_in(
    mesh: Mesh,
    config: &str,
    per_cluster: &[(&str, &str)],
    down: Option<(&str, ClientDown)>,
) -> Sim {
    let module = module();
    let options = ProxyOptions::default();
    let config_for = |cluster: &str| -> anyhow::Result<Vec<u8>> {
        let c = per_cluster
            .iter()
            .find(|(name, _)| *name == cluster)
            .map(|(_, c)| *c)
            .unwrap_or(config);
        Ok(c.as_bytes().to_vec())
    };
    let mut make = |spec: &SidecarSpec| -> anyhow::Result<Box<dyn Sidecar>> {
        match down {
            Some((cluster, how))
                if spec.cluster == cluster && spec.direction == Direction::Outbound =>
            {
                let sidecar = match how {
                    ClientDown::Rejected(fail) => {
                        let broken = ProxyOptions {
                            fail_strategy: fail,
                            ..ProxyOptions::default()
                        };
                        let sidecar = WasmSidecar::new(
                            &module,
                            &SidecarSpec {
                                config: br#"{"routes": "not a list"}"#,
                                options: &broken,
                                ..*spec
                            },
                        )?;
                        assert!(!sidecar.configured(), "the broken plugin must not start");
                        sidecar
                    }
                    ClientDown::Skipped => WasmSidecar::new(
                        &proxy_wasm_host::Module::from_bytes(PASS_THROUGH.as_bytes())?,
                        spec,
                    )?,
                };
                Ok(Box::new(sidecar))
            }
            _ => Ok(Box::new(WasmSidecar::new(&module, spec)?)),
        }
    };
    Sim::new(mesh, true, &config_for, &mut make, &options).unwrap()
}

fn seed_mesh(config: &str) -> Sim {
    sim_with(config, &[], None)
}

/// The seed's mesh whose sidecars also accept these trust domains over mTLS
/// (Istio's `meshConfig.trustDomainAliases`, as during a migration): their
/// peers get past the handshake and only the filter's `trustDomains` decides.
fn seed_mesh_accepting(config: &str, aliases: &[&str]) -> Sim {
    let mut m = mesh();
    m.trust_domain_aliases = aliases.iter().map(|a| a.to_string()).collect();
    sim_in(m, config, &[], None)
}

fn get(from: &str, authority: &str, headers: &[(&str, &str)]) -> RequestSpec {
    RequestSpec {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RequestSpec::get(from, authority)
    }
}

/// Straight to `to`'s server sidecar from a peer without the filter:
/// `plaintext` or mTLS with the given SPIFFE id.
fn direct(to: &str, peer: &str, authority: &str, headers: &[(&str, &str)]) -> RequestSpec {
    RequestSpec {
        direct: Some(to.to_string()),
        peer: Some(peer.to_string()),
        ..get(to, authority, headers)
    }
}

fn send(sim: &mut Sim, spec: &RequestSpec) -> Outcome {
    sim.request(spec, "anthos").unwrap()
}

/// The filter's headers in a header list, in order.
fn ours(headers: &Pairs) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .cloned()
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn metric(sim: &Sim, proxy: &str, name: &str) -> u64 {
    sim.sidecar(proxy).unwrap().metric(name).unwrap_or(0)
}

fn logs(sim: &Sim, proxy: &str) -> Vec<(String, String)> {
    sim.sidecar(proxy).unwrap().logs()
}

fn flush(sim: &mut Sim) {
    sim.advance(Duration::from_secs(1)).unwrap();
}

fn no_traps(sim: &Sim) {
    let counts = vec![0; 4];
    assert!(
        sim.failures_since(&counts).is_empty(),
        "{:?}",
        sim.failures_since(&counts)
    );
}

const CLUSTER_LOCAL: &str = r#"{
    "clusters": [
        {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
        {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}],
    "trustDomains": ["cluster.local"],
    "routes": [
        {"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"},
        {"hosts": ["*"], "policy": "none"}]}"#;

// ---------------------------------------------------------------------------
// One sidecar, for raw and repeated headers
// ---------------------------------------------------------------------------

/// The Anthos client sidecar (the seed's on-prem `sleep` pod), outbound.
fn anthos_client(config: &str) -> Plugin {
    Plugin::builder(&module())
        .proxy(
            Proxy::istio("anthos")
                .network("default")
                .metadata("NAMESPACE", "sleep")
                .direction(Direction::Outbound),
        )
        .plugin_config(config.as_bytes())
        .routes(routes())
        .default_cluster(&format!("outbound|80||{ECHO}"))
        .build()
        .unwrap()
}

/// The Anthos server sidecar in front of `echo-svc`, inbound.
fn anthos_server(config: &str) -> Plugin {
    Plugin::builder(&module())
        .proxy(
            Proxy::istio("anthos")
                .network("default")
                .metadata("NAMESPACE", "default")
                .direction(Direction::Inbound),
        )
        .plugin_config(config.as_bytes())
        .default_cluster("inbound|8080||")
        .build()
        .unwrap()
}

fn request(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", "echo-svc.default"),
        ("x-request-id", "r-1"),
    ];
    h.extend_from_slice(extra);
    h
}

/// Every value the filter wrote or relays under its prefix, and every log
/// line, is free of CR, LF and NUL.
fn assert_clean(what: &str, values: impl IntoIterator<Item = String>) {
    for v in values {
        assert!(
            !v.contains(['\r', '\n', '\0']),
            "{what} carries CR/LF/NUL: {v:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Outbound: what the application sets
// ---------------------------------------------------------------------------

#[test]
fn outbound_spoofed_identity_and_target_are_replaced_under_cluster_local() {
    let mut sim = seed_mesh(CLUSTER_LOCAL);
    let spoof = [
        ("x-hybridmesh-source-cluster", "gke"),
        ("x-hybridmesh-source-network", "kuchima-demo-vpc01"),
        (
            "x-hybridmesh-source-locality",
            "asia-northeast1/asia-northeast1-a",
        ),
        ("x-hybridmesh-target-cluster", "gke"),
    ];
    for _ in 0..10 {
        let o = send(&mut sim, &get("anthos", "echo-svc.default", &spoof));
        assert_eq!(o.status, 200);
        assert_eq!(o.body, r#""Anthos!!!""#);
        assert_eq!(o.served_by.as_deref(), Some("anthos"));
        assert_eq!(
            o.route.as_deref(),
            Some("outbound|80|only-anthos|echo-svc.default.svc.cluster.local")
        );
        // Exactly the sidecar's own values, once each.
        assert_eq!(
            ours(o.upstream_headers.as_ref().unwrap()),
            pairs(&[
                ("x-hybridmesh-source-cluster", "anthos"),
                ("x-hybridmesh-source-network", "default"),
                ("x-hybridmesh-source-locality", "tokyo-onprem"),
                ("x-hybridmesh-hops", "anthos"),
                ("x-hybridmesh-pinned-cluster", "anthos"),
            ])
        );
    }
    // A request without spoofed headers is not counted.
    let o = send(&mut sim, &get("anthos", "echo-svc.default", &[]));
    assert_eq!(o.served_by.as_deref(), Some("anthos"));
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.client", SPOOFED_OUT), 10);
    let removed = logs(&sim, "anthos.client")
        .into_iter()
        .filter(|(level, m)| {
            level == "debug"
                && m == "hybridmesh: removed 4 x-hybridmesh-* header(s) set by the application"
        })
        .count();
    assert_eq!(removed, 10);
    // Nothing reached GKE.
    assert_eq!(metric(&sim, "gke.server", &denied("anthos")), 0);
    no_traps(&sim);
}

#[test]
fn outbound_spoofed_target_does_not_move_weighted_traffic() {
    // The seed's 80/20 distribute, without the sticky header: a random pick.
    let config = r#"{
        "clusters": [
            {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
            {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}],
        "routes": [{"hosts": ["echo-svc.default.svc.cluster.local"], "policy": "weighted",
            "distribute": [
                {"from": "asia-northeast1/*", "to": {"gke": 80, "anthos": 20}},
                {"from": "tokyo-onprem/*", "to": {"gke": 20, "anthos": 80}}]}]}"#;
    let run = |headers: &[(&str, &str)]| {
        let mut sim = seed_mesh(config);
        let served: Vec<String> = (0..300)
            .map(|_| {
                let o = send(&mut sim, &get("anthos", "echo-svc.default", headers));
                assert_eq!(o.status, 200);
                assert_eq!(o.target, o.served_by, "served where the filter decided");
                o.served_by.unwrap()
            })
            .collect();
        flush(&mut sim);
        (served, metric(&sim, "anthos.client", SPOOFED_OUT))
    };
    let (honest, honest_spoofed) = run(&[]);
    let (steered, spoofed) = run(&[
        ("x-hybridmesh-target-cluster", "gke"),
        ("x-hybridmesh-source-cluster", "gke"),
        ("x-hybridmesh-source-locality", "asia-northeast1"),
    ]);
    // Same random source, same decisions: request by request, the spoofed
    // headers changed nothing.
    assert_eq!(steered, honest);
    let to_anthos = steered.iter().filter(|c| *c == "anthos").count() as f64 / 300.0;
    assert!(
        (0.72..=0.88).contains(&to_anthos),
        "Anthos share {to_anthos}, expected about 0.8"
    );
    assert_eq!(honest_spoofed, 0);
    assert_eq!(spoofed, 300);
}

#[test]
fn outbound_repeated_and_mixed_case_target_headers_are_all_removed() {
    let config =
        format!(r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#);
    let mut p = anthos_client(&config);
    let mut s = p.stream(0);
    // Envoy's codecs lower-case header names; the harness does the same.
    s.request_headers(
        &request(&[
            ("X-HybridMesh-Target-Cluster", "gke"),
            ("x-hybridmesh-target-cluster", "gke"),
            ("x-hybridmesh-target-cluster", "anthos"),
            ("X-HYBRIDMESH-SOURCE-CLUSTER", "gke"),
        ]),
        true,
    )
    .unwrap();
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some("outbound|80|only-anthos|echo-svc.default.svc.cluster.local")
    );
    let up = s.upstream_request_headers().unwrap();
    assert_eq!(
        ours(&up),
        pairs(&[
            ("x-hybridmesh-source-cluster", "anthos"),
            ("x-hybridmesh-source-network", "default"),
            ("x-hybridmesh-source-locality", "tokyo-onprem"),
            ("x-hybridmesh-hops", "anthos"),
            ("x-hybridmesh-pinned-cluster", "anthos"),
        ])
    );
    s.respond(Upstream::new(200).address("10.10.2.59:8080"))
        .unwrap();
    s.complete().unwrap();
    assert_eq!(s.client_response_status(), Some(200));
    p.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(p.metric(SPOOFED_OUT), Some(1));
    assert!(p.logs_at(Level::Debug).contains(
        &"hybridmesh: removed 4 x-hybridmesh-* header(s) set by the application".to_string()
    ));
}

#[test]
fn outbound_debug_and_decision_headers_from_the_application() {
    let forged = [
        ("x-hybridmesh-debug", "1"),
        ("x-hybridmesh-decision", "weighted -> gke; served_by=gke"),
        (
            "x-hybridmesh-served-by",
            "cluster=gke;network=kuchima-demo-vpc01",
        ),
        ("x-hybridmesh-denied", "cluster-local"),
    ];
    for allow_debug in [false, true] {
        let config = format!(
            r#"{{{CLUSTERS}, "allowDebug": {allow_debug}, "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#
        );
        let mut p = anthos_client(&config);
        let mut s = p.stream(0);
        s.request_headers(&request(&forged), true).unwrap();
        let up = s.upstream_request_headers().unwrap();
        // None of the application's own x-hybridmesh-* headers goes upstream.
        for (name, _) in forged {
            assert_eq!(
                s.upstream_request_header(name),
                None,
                "{name}, allowDebug {allow_debug}"
            );
        }
        assert_eq!(ours(&up).len(), 5, "{up:?}");
        s.respond(
            Upstream::new(200)
                .address("10.10.2.59:8080")
                .header("x-hybridmesh-served-by", ANTHOS_SERVED_BY),
        )
        .unwrap();
        s.complete().unwrap();
        let decision = s.client_response_header("x-hybridmesh-decision");
        if allow_debug {
            // The filter's own explanation, not the forged one.
            assert_eq!(
                decision.as_deref(),
                Some("clusterLocal rule=0 service=echo-svc.default.svc.cluster.local: stays in the local cluster -> anthos; served_by=anthos cross_network=false")
            );
        } else {
            assert_eq!(decision, None, "debug needs allowDebug");
        }
        p.advance(Duration::from_secs(1)).unwrap();
        assert_eq!(p.metric(SPOOFED_OUT), Some(1));
        // The debug flag is a request, not a spoof: three headers removed.
        assert!(p.logs_at(Level::Debug).contains(
            &"hybridmesh: removed 3 x-hybridmesh-* header(s) set by the application".to_string()
        ));
    }
}

// ---------------------------------------------------------------------------
// Inbound: what a peer sends
// ---------------------------------------------------------------------------

const CLAIMS: [(&str, &str); 5] = [
    ("x-hybridmesh-source-cluster", "anthos"),
    ("x-hybridmesh-source-network", "default"),
    ("x-hybridmesh-source-locality", "tokyo-onprem"),
    ("x-hybridmesh-target-cluster", "gke"),
    ("x-hybridmesh-hops", "anthos"),
];

#[test]
fn inbound_plaintext_and_foreign_trust_domain_peers_lose_every_identity_header() {
    // The sidecars accept the foreign domains (aliases): the filter's
    // `trustDomains: [cluster.local]` is what stands in their way.
    let mut sim = seed_mesh_accepting(CLUSTER_LOCAL, &FOREIGN_DOMAINS);
    let untrusted = [
        "plaintext",
        "spiffe://evil.example/ns/sleep/sa/sleep",
        // A trust domain that merely starts with ours.
        "spiffe://cluster.local.evil.example/ns/sleep/sa/sleep",
        "spiffe://cluster.localhost/ns/sleep/sa/sleep",
    ];
    for peer in untrusted {
        // httpbin-svc.sleep is not cluster-local: the request is served, bare.
        let o = send(&mut sim, &direct("gke", peer, "httpbin-svc.sleep", &CLAIMS));
        assert_eq!(o.status, 200, "{peer}");
        assert_eq!(o.body, r#""GKE!!!""#);
        let seen = o.upstream_headers.as_ref().unwrap();
        assert_eq!(ours(seen), vec![], "{peer}: the application saw {seen:?}");
        assert_eq!(
            o.response_header("x-hybridmesh-served-by"),
            Some(
                "cluster=gke;network=kuchima-demo-vpc01;locality=asia-northeast1/asia-northeast1-a"
            )
        );
    }
    // A mesh peer's headers are believed and reach the application as sent.
    let o = send(
        &mut sim,
        &direct("gke", MESH_PEER, "httpbin-svc.sleep", &CLAIMS),
    );
    assert_eq!(o.status, 200);
    let mut kept = ours(o.upstream_headers.as_ref().unwrap());
    kept.sort();
    let mut sent = pairs(&CLAIMS);
    sent.sort();
    assert_eq!(kept, sent);

    flush(&mut sim);
    assert_eq!(metric(&sim, "gke.server", SPOOFED_IN), 4);
    let removed = logs(&sim, "gke.server")
        .into_iter()
        .filter(|(level, m)| {
            level == "debug"
                && m == "hybridmesh: removed 5 x-hybridmesh-* header(s) from an untrusted peer"
        })
        .count();
    assert_eq!(removed, 4);
    no_traps(&sim);
}

/// Trust domains that are not the mesh's; two only start like it.
const FOREIGN_DOMAINS: [&str; 3] = [
    "evil.example",
    "cluster.local.evil.example",
    "cluster.localhost",
];

#[test]
fn inbound_peers_outside_the_meshs_trust_domains_are_refused_at_the_handshake() {
    // Istio's inbound TLS context matches the client certificate's SAN on
    // `spiffe://cluster.local/` (and aliases): without aliases nothing of
    // these peers reaches the filter or the application.
    let mut sim = seed_mesh(CLUSTER_LOCAL);
    for domain in FOREIGN_DOMAINS {
        let peer = format!("spiffe://{domain}/ns/sleep/sa/sleep");
        let o = send(
            &mut sim,
            &direct("gke", &peer, "httpbin-svc.sleep", &CLAIMS),
        );
        assert!(o.is_refused(), "{peer}: {o:?}");
        assert_eq!(o.upstream_headers, None, "{peer}");
        assert!(o.body.contains("refused the TLS handshake"), "{}", o.body);
    }
    // A mesh peer is served.
    let o = send(
        &mut sim,
        &direct("gke", MESH_PEER, "httpbin-svc.sleep", &CLAIMS),
    );
    assert_eq!(o.status, 200);
    flush(&mut sim);
    assert_eq!(metric(&sim, "gke.server", SPOOFED_IN), 0);
    no_traps(&sim);
}

#[test]
fn inbound_without_trust_domains_any_mtls_peer_is_believed() {
    // The documented default: `trustDomains: []` means any mTLS peer the
    // sidecar accepted (here the mesh also accepts evil.example).
    let config = CLUSTER_LOCAL.replace(r#""trustDomains": ["cluster.local"],"#, "");
    let mut sim = seed_mesh_accepting(&config, &["evil.example"]);
    let o = send(
        &mut sim,
        &direct(
            "gke",
            "spiffe://evil.example/ns/sleep/sa/sleep",
            "httpbin-svc.sleep",
            &CLAIMS[..1],
        ),
    );
    assert_eq!(
        o.upstream_header("x-hybridmesh-source-cluster"),
        Some("anthos")
    );
    // Plaintext is still not believed.
    let o = send(
        &mut sim,
        &direct("gke", "plaintext", "httpbin-svc.sleep", &CLAIMS[..1]),
    );
    assert_eq!(o.upstream_header("x-hybridmesh-source-cluster"), None);
}

#[test]
fn inbound_untrusted_claims_count_as_an_unknown_source_for_cluster_local() {
    let refusal = |from: &str| {
        format!("hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster {from} refused\n")
    };
    let untrusted = ["plaintext", "spiffe://evil.example/ns/sleep/sa/sleep"];

    // unknownSource: allow (the default): served, without the claim.
    let mut sim = seed_mesh_accepting(CLUSTER_LOCAL, &["evil.example"]);
    for peer in untrusted {
        for claim in ["anthos", "gke"] {
            let o = send(
                &mut sim,
                &direct(
                    "anthos",
                    peer,
                    "echo-svc.default",
                    &[("x-hybridmesh-source-cluster", claim)],
                ),
            );
            assert_eq!(o.status, 200, "{peer} claiming {claim}");
            assert_eq!(o.body, r#""Anthos!!!""#);
            assert_eq!(o.upstream_header("x-hybridmesh-source-cluster"), None);
            assert_eq!(o.response_header("x-hybridmesh-denied"), None);
        }
    }
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.server", &denied("unknown")), 0);
    assert_eq!(metric(&sim, "anthos.server", SPOOFED_IN), 4);

    // unknownSource: deny: claiming to be the local cluster does not help.
    let deny = CLUSTER_LOCAL.replace(
        r#""trustDomains": ["cluster.local"],"#,
        r#""trustDomains": ["cluster.local"], "unknownSource": "deny","#,
    );
    let mut sim = seed_mesh_accepting(&deny, &["evil.example"]);
    for peer in untrusted {
        let o = send(
            &mut sim,
            &direct(
                "anthos",
                peer,
                "echo-svc.default",
                &[("x-hybridmesh-source-cluster", "anthos")],
            ),
        );
        assert_eq!(o.status, 403, "{peer}");
        assert_eq!(o.body, refusal("unknown"));
        assert_eq!(o.upstream_headers, None, "the application never saw it");
        assert_eq!(
            o.response_header("x-hybridmesh-denied"),
            Some("cluster-local")
        );
        assert_eq!(
            o.response_header("x-hybridmesh-served-by"),
            Some(ANTHOS_SERVED_BY)
        );
    }
    // A mesh peer without a source header is unknown too.
    let o = send(
        &mut sim,
        &direct("anthos", MESH_PEER, "echo-svc.default", &[]),
    );
    assert_eq!(o.status, 403);
    assert_eq!(o.body, refusal("unknown"));
    // A mesh peer from Anthos is served.
    let o = send(
        &mut sim,
        &direct(
            "anthos",
            MESH_PEER,
            "echo-svc.default",
            &[("x-hybridmesh-source-cluster", "anthos")],
        ),
    );
    assert_eq!(o.status, 200);
    assert_eq!(
        o.upstream_header("x-hybridmesh-source-cluster"),
        Some("anthos")
    );
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.server", &denied("unknown")), 3);
    let refused = logs(&sim, "anthos.server")
        .into_iter()
        .filter(|(level, m)| level == "info" && format!("{m}\n") == refusal("unknown"))
        .count();
    assert_eq!(refused, 3);
}

// ---------------------------------------------------------------------------
// A cluster-local service reached through the other cluster's gateway
// ---------------------------------------------------------------------------

/// GKE's clients send echo-svc to Anthos (a route that ignores cluster-local).
const GKE_TO_ANTHOS: &str = r#"{
    "clusters": [
        {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
        {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}],
    "routes": [{"hosts": ["echo-svc.default.svc.cluster.local"], "policy": "weighted",
        "distribute": [{"from": "*", "to": {"anthos": 100}}]}]}"#;

#[test]
fn cluster_local_reached_through_the_gateway_is_refused_and_says_why() {
    let anthos = CLUSTER_LOCAL.replace(
        r#""trustDomains": ["cluster.local"],"#,
        r#""trustDomains": ["cluster.local"], "denyStatus": 451,"#,
    );
    let mut sim = sim_with(
        CLUSTER_LOCAL,
        &[("gke", GKE_TO_ANTHOS), ("anthos", &anthos)],
        None,
    );
    let o = send(&mut sim, &get("gke", "echo-svc.default", &[]));
    assert_eq!(o.target.as_deref(), Some("anthos"));
    assert_eq!(o.status, 451);
    assert_eq!(
        o.body,
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke refused\n"
    );
    assert_eq!(o.served_by.as_deref(), Some("anthos"));
    assert_eq!(o.upstream_headers, None, "echo-svc in Anthos never saw it");
    assert_eq!(
        o.response_header("x-hybridmesh-denied"),
        Some("cluster-local")
    );
    assert_eq!(
        o.response_header("x-hybridmesh-served-by"),
        Some(ANTHOS_SERVED_BY)
    );
    // The client side's hop record: refused in Anthos, across networks, through its gateway.
    let hop: serde_json::Value = serde_json::from_str(sim.last_hop().unwrap()).unwrap();
    assert_eq!(hop["source_cluster"], "gke");
    assert_eq!(hop["served_by"], "anthos");
    assert_eq!(hop["cross_network"], true);
    assert_eq!(hop["gateway"], "172.16.10.152:15443");
    assert_eq!(hop["status"], 451);
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.server", &denied("gke")), 1);
    assert!(logs(&sim, "anthos.server").contains(&(
        "info".to_string(),
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke refused".to_string()
    )));

    // A GKE application naming Anthos itself, with GKE's own cluster-local
    // config: the target is replaced, the request never leaves GKE.
    let mut sim = sim_with(CLUSTER_LOCAL, &[("anthos", &anthos)], None);
    let o = send(
        &mut sim,
        &get(
            "gke",
            "echo-svc.default",
            &[
                ("x-hybridmesh-target-cluster", "anthos"),
                ("x-hybridmesh-source-cluster", "anthos"),
            ],
        ),
    );
    assert_eq!(o.status, 200);
    assert_eq!(o.body, r#""GKE!!!""#);
    assert_eq!(o.target.as_deref(), Some("gke"));
    assert_eq!(
        o.upstream_header("x-hybridmesh-source-cluster"),
        Some("gke")
    );
    flush(&mut sim);
    assert_eq!(metric(&sim, "gke.client", SPOOFED_OUT), 1);
    assert_eq!(metric(&sim, "anthos.server", &denied("gke")), 0);
}

#[test]
fn cluster_local_with_the_client_plugin_down() {
    let to_anthos = [("x-hybridmesh-target-cluster", "anthos")];
    let deny = CLUSTER_LOCAL.replace(
        r#""trustDomains": ["cluster.local"],"#,
        r#""trustDomains": ["cluster.local"], "unknownSource": "deny","#,
    );

    // GKE's client filter is out of the way (its VM failed under FAIL_OPEN): the
    // application's target header goes through, over mTLS, to Anthos's gateway.
    // No source header arrives: with unknownSource deny, refused.
    let mut sim = sim_with(&deny, &[], Some(("gke", ClientDown::Skipped)));
    let o = send(&mut sim, &get("gke", "echo-svc.default", &to_anthos));
    assert_eq!(o.target.as_deref(), Some("anthos"));
    assert_eq!(o.status, 403);
    assert_eq!(
        o.body,
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster unknown refused\n"
    );
    assert_eq!(o.upstream_headers, None);
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.server", &denied("unknown")), 1);
    // The documented price of FAIL_OPEN: a source header the application
    // sets itself arrives over the mesh's mTLS and is believed.
    let o = send(
        &mut sim,
        &get(
            "gke",
            "echo-svc.default",
            &[
                ("x-hybridmesh-target-cluster", "anthos"),
                ("x-hybridmesh-source-cluster", "anthos"),
            ],
        ),
    );
    assert_eq!(o.status, 200);
    assert_eq!(o.body, r#""Anthos!!!""#);

    // With unknownSource allow (the default), the bare request is served too.
    let mut sim = sim_with(CLUSTER_LOCAL, &[], Some(("gke", ClientDown::Skipped)));
    let o = send(&mut sim, &get("gke", "echo-svc.default", &to_anthos));
    assert_eq!(o.status, 200);
    assert_eq!(o.served_by.as_deref(), Some("anthos"));
    assert_eq!(o.upstream_header("x-hybridmesh-source-cluster"), None);

    // A rejected first config is not "failing open": measured with Envoy 1.40, the
    // sidecar answers 500 (NFCF) under FAIL_OPEN as under FAIL_CLOSE, and nothing
    // leaves GKE while it is down.
    for fail in [Fail::FailOpen, Fail::FailClose] {
        let mut sim = sim_with(&deny, &[], Some(("gke", ClientDown::Rejected(fail))));
        let o = send(
            &mut sim,
            &get(
                "gke",
                "echo-svc.default",
                &[
                    ("x-hybridmesh-target-cluster", "anthos"),
                    ("x-hybridmesh-source-cluster", "anthos"),
                ],
            ),
        );
        assert_eq!(o.status, 500, "{fail:?}");
        assert_eq!(o.body, "");
        assert_eq!(o.served_by, None);
        assert_eq!(o.upstream_headers, None);
    }
}

// ---------------------------------------------------------------------------
// Hop chains
// ---------------------------------------------------------------------------

/// One request from the Anthos client with `hops` as its `x-hybridmesh-hops`
/// header(s); returns (forwarded chain header values, hop record, plugin).
fn with_chain(config: &str, hops: &[&str]) -> (Vec<String>, serde_json::Value, Plugin) {
    let mut p = anthos_client(config);
    let mut s = p.stream(0);
    let mut h: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", "echo-svc.default"),
        ("x-request-id", "r-1"),
    ];
    for v in hops {
        h.push(("x-hybridmesh-hops", v));
    }
    s.request_headers(&h, true).unwrap();
    let sent: Vec<String> = s
        .upstream_request_headers()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == "x-hybridmesh-hops")
        .map(|(_, v)| v)
        .collect();
    s.respond(
        Upstream::new(200)
            .address("10.10.2.59:8080")
            .header("x-hybridmesh-served-by", ANTHOS_SERVED_BY),
    )
    .unwrap();
    s.complete().unwrap();
    assert_eq!(
        s.client_response_status(),
        Some(200),
        "the request is served"
    );
    let hop = serde_json::from_slice(&s.filter_state()["hybridmesh.hop"]).unwrap();
    drop(s);
    p.advance(Duration::from_secs(1)).unwrap();
    (sent, hop, p)
}

fn local_config(extra: &str) -> String {
    format!(r#"{{{CLUSTERS}, {extra} "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#)
}

fn problems(p: &Plugin) -> BTreeMap<&'static str, u64> {
    ["malformed", "oversized", "truncated", "loop"]
        .into_iter()
        .map(|k| (k, p.metric(&chain_problem(k)).unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn hop_chains_of_thousands_of_entries_are_bounded() {
    // 1000 entries in 1999 bytes: read, and cut to maxHops (8) with ours last.
    let thousand = vec!["c"; 1000].join(",");
    assert_eq!(thousand.len(), 1999);
    let (sent, hop, p) = with_chain(&local_config(""), &[&thousand]);
    let expected = "c,c,c,c,c,c,c,anthos";
    assert_eq!(sent, vec![expected]);
    assert_eq!(hop["chain"], expected);
    assert_eq!(problems(&p), BTreeMap::from([("truncated", 1)]));

    // maxHops 32: 32 entries.
    let (sent, _, p) = with_chain(&local_config(r#""maxHops": 32,"#), &[&thousand]);
    assert_eq!(sent[0].split(',').count(), 32);
    assert!(sent[0].ends_with(",c,anthos"));
    assert_eq!(problems(&p), BTreeMap::from([("truncated", 1)]));

    // 5000 entries (33 KB): over 2 KB, not read at all; the chain restarts with us.
    let huge: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let (sent, hop, p) = with_chain(&local_config(""), &[&huge.join(",")]);
    assert_eq!(sent, vec!["anthos"]);
    assert_eq!(hop["chain"], "anthos");
    assert_eq!(problems(&p), BTreeMap::from([("oversized", 1)]));

    // Whatever maxHops allows, what leaves is bounded by the 2 KB read limit
    // plus our own name: eight 253-byte names (2031 bytes) are read and go on
    // with ours appended; nine (2285 bytes) are not read.
    let long_name = "a".repeat(253);
    let eight = [long_name.as_str(); 8].join(",");
    let (sent, _, p) = with_chain(&local_config(r#""maxHops": 32,"#), &[&eight]);
    assert_eq!(sent, vec![format!("{eight},anthos")]);
    assert_eq!(sent[0].len(), 2038);
    assert_eq!(problems(&p), BTreeMap::new());
    let nine = [long_name.as_str(); 9].join(",");
    let (sent, _, p) = with_chain(&local_config(r#""maxHops": 32,"#), &[&nine]);
    assert_eq!(sent, vec!["anthos"]);
    assert_eq!(problems(&p), BTreeMap::from([("oversized", 1)]));
}

#[test]
fn a_hop_chain_loop_is_logged_counted_and_still_served() {
    let mut sim = seed_mesh(CLUSTER_LOCAL);
    let o = send(
        &mut sim,
        &get(
            "anthos",
            "echo-svc.default",
            &[("x-hybridmesh-hops", "anthos,gke")],
        ),
    );
    assert_eq!(o.status, 200);
    assert_eq!(o.served_by.as_deref(), Some("anthos"));
    assert_eq!(
        o.upstream_header("x-hybridmesh-hops"),
        Some("anthos,gke,anthos")
    );
    let hop: serde_json::Value = serde_json::from_str(sim.last_hop().unwrap()).unwrap();
    assert_eq!(hop["loop"], true);
    assert_eq!(hop["chain"], "anthos,gke,anthos");
    flush(&mut sim);
    assert_eq!(metric(&sim, "anthos.client", &chain_problem("loop")), 1);
    assert!(logs(&sim, "anthos.client").contains(&(
        "warn".to_string(),
        "hybridmesh: request req-1 loops: cluster anthos is already in its hop chain".to_string()
    )));

    // A loop deep in a long chain: detected before the chain is cut, both counted,
    // and what goes on stays bounded.
    let looping = format!("anthos,{}", vec!["gke"; 20].join(","));
    let (sent, hop, p) = with_chain(&local_config(""), &[&looping]);
    assert_eq!(sent, vec!["gke,gke,gke,gke,gke,gke,gke,anthos"]);
    assert_eq!(hop["loop"], true);
    assert_eq!(
        problems(&p),
        BTreeMap::from([("loop", 1), ("truncated", 1)])
    );
    assert!(p.logs_at(Level::Warn).contains(
        &"hybridmesh: request r-1 loops: cluster anthos is already in its hop chain".to_string()
    ));
}

#[test]
fn malformed_repeated_and_overlong_hop_chains_are_replaced() {
    let long_entry = "a".repeat(300);
    let huge_entry = "a".repeat(3000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["gke;anthos"], "malformed"),
        (vec!["gke,,anthos"], "malformed"),
        (vec!["gke anthos"], "malformed"),
        (vec!["gke,x=1"], "malformed"),
        (vec!["gke\u{7f}"], "malformed"),
        (vec![&long_entry], "malformed"),
        (vec!["gke", "gke"], "malformed"),
        (vec![&huge_entry], "oversized"),
    ];
    for (values, problem) in cases {
        let (sent, hop, p) = with_chain(&local_config(""), &values);
        let shown: Vec<String> = values
            .iter()
            .map(|v| v.chars().take(20).collect())
            .collect();
        assert_eq!(
            sent,
            vec!["anthos"],
            "{shown:?}: one header, our cluster alone"
        );
        assert_eq!(hop["chain"], "anthos");
        assert_eq!(hop["loop"], false);
        assert_eq!(problems(&p), BTreeMap::from([(problem, 1)]), "{shown:?}");
    }
    // A 253-byte name is a valid cluster name: kept.
    let longest = "a".repeat(253);
    let (sent, _, p) = with_chain(&local_config(""), &[&longest]);
    assert_eq!(sent, vec![format!("{longest},anthos")]);
    assert_eq!(problems(&p), BTreeMap::new());
}

// ---------------------------------------------------------------------------
// Header values that try to inject headers or log lines
// ---------------------------------------------------------------------------

#[test]
fn crlf_and_nul_in_request_values_reach_no_header_log_line_or_record() {
    // Envoy's codecs refuse (or split) such values before any filter runs;
    // this is the filter's own line of defence, for anything that gets through.
    let config = format!(
        r#"{{{CLUSTERS}, "allowDebug": true, "hopLog": "info",
            "routes": [{{"hosts": ["echo-svc.default.svc.cluster.local"], "policy": "weighted",
                "stickyHeader": "x-user",
                "distribute": [{{"from": "*", "to": {{"gke": 50, "anthos": 50}}}}]}}]}}"#
    );
    let request_id = "r-1\r\nx-injected: 1\0";
    let user = "u-1\r\nx-injected: 2\0";
    let mut p = anthos_client(&config);
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "echo-svc.default"),
            ("x-request-id", request_id),
            ("x-user", user),
            ("x-hybridmesh-debug", "1"),
            ("x-hybridmesh-hops", "gke\r\nx-injected: 3"),
        ],
        true,
    )
    .unwrap();
    let up = s.upstream_request_headers().unwrap();
    let names: Vec<&str> = up.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            ":method",
            ":path",
            ":authority",
            ":scheme",
            "x-request-id",
            "x-user",
            "x-forwarded-proto",
            "x-hybridmesh-source-cluster",
            "x-hybridmesh-source-network",
            "x-hybridmesh-source-locality",
            "x-hybridmesh-hops",
            "x-hybridmesh-target-cluster",
            "x-envoy-expected-rq-timeout-ms",
        ],
        "no header was added but the connection manager's :scheme and x-forwarded-proto \
         and the router's timeout"
    );
    assert_clean(
        "a request header the filter wrote",
        ours(&up).into_iter().map(|(_, v)| v),
    );
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-hops").as_deref(),
        Some("anthos")
    );
    // The application's own headers pass as they came: the filter does not rewrite them.
    assert_eq!(
        s.upstream_request_header("x-request-id").as_deref(),
        Some(request_id)
    );
    let target = s
        .upstream_request_header("x-hybridmesh-target-cluster")
        .unwrap();
    assert!(target == "gke" || target == "anthos");
    // A hostile served-by from upstream (network and locality are not checked).
    s.respond(Upstream::new(200).address("10.10.2.59:8080").header(
        "x-hybridmesh-served-by",
        &format!("cluster={target};network=n\r\nx-injected: 4\0;locality=l\r\n"),
    ))
    .unwrap();
    s.complete().unwrap();
    assert_eq!(s.client_response_status(), Some(200));
    let response = s.client_response_headers().unwrap();
    assert!(response.iter().all(|(k, _)| k != "x-injected"));
    let decision = s.client_response_header("x-hybridmesh-decision").unwrap();
    assert_clean("the decision header", [decision.clone()]);
    assert!(decision.contains(" sticky -> "), "{decision}");

    // The hop record is one JSON document, and holds the values exactly.
    let raw = s.filter_state()["hybridmesh.hop"].clone();
    assert!(!raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    let hop: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(hop["request_id"], request_id);
    assert_eq!(hop["served_network"], "n\r\nx-injected: 4\0");
    assert_eq!(hop["chain"], "anthos");

    // Every log line is one line; the request id is written escaped.
    drop(s);
    let lines: Vec<String> = p.logs().into_iter().map(|l| l.message).collect();
    assert_clean("a log line", lines.clone());
    assert!(
        lines.iter().any(|l| l.starts_with(
            "hybridmesh: hop id=r-1\\u{d}\\u{a}x-injected:\\u{20}1\\u{0} service=echo-svc.default.svc.cluster.local src=anthos"
        )),
        "{lines:#?}"
    );
    p.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(p.metric(&chain_problem("malformed")), Some(1));
}

#[test]
fn a_looping_request_id_cannot_forge_log_lines() {
    let mut p = anthos_client(&local_config(""));
    let hop: serde_json::Value = {
        let mut s = p.stream(0);
        s.request_headers(
            &[
                (":method", "GET"),
                (":path", "/"),
                (":authority", "echo-svc.default"),
                ("x-request-id", "r-1\nhybridmesh: configured cluster=gke"),
                ("x-hybridmesh-hops", "anthos"),
            ],
            true,
        )
        .unwrap();
        s.respond(Upstream::new(200).address("10.10.2.59:8080"))
            .unwrap();
        s.complete().unwrap();
        serde_json::from_slice(&s.filter_state()["hybridmesh.hop"]).unwrap()
    };
    assert_eq!(hop["loop"], true);
    let warns = p.logs_at(Level::Warn);
    assert_eq!(
        warns,
        vec!["hybridmesh: request r-1\\u{a}hybridmesh:\\u{20}configured\\u{20}cluster=gke loops: cluster anthos is already in its hop chain"]
    );
    assert_clean("a log line", p.logs().into_iter().map(|l| l.message));
}

#[test]
fn a_trusted_peers_crlf_claim_is_refused_without_breaking_a_line() {
    let mut p = anthos_server(CLUSTER_LOCAL);
    let mut s = p
        .stream(0)
        .connection(Connection::mtls(MESH_PEER, SERVER_ID));
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "echo-svc.default"),
            ("x-hybridmesh-source-cluster", "gke\r\nx-injected: 1\0"),
        ],
        true,
    )
    .unwrap();
    s.complete().unwrap();
    assert_eq!(s.client_response_status(), Some(403));
    assert_eq!(
        String::from_utf8(s.client_response_body()).unwrap(),
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke\\u{d}\\u{a}x-injected:\\u{20}1\\u{0} refused\n"
    );
    let response = s.client_response_headers().unwrap();
    assert!(response.iter().all(|(k, _)| k != "x-injected"));
    assert_clean(
        "a response header",
        ours(&response).into_iter().map(|(_, v)| v),
    );
    assert_eq!(
        s.client_response_header("x-hybridmesh-denied").as_deref(),
        Some("cluster-local")
    );
    drop(s);
    assert_clean("a log line", p.logs().into_iter().map(|l| l.message));
    // The counter's label is bounded: a value that is no cluster name is `other`.
    p.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(p.metric(&denied("other")), Some(1));

    // From a plaintext peer the same value is just removed.
    let mut s = p.stream(0).connection(Connection::plaintext());
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "echo-svc.default"),
            ("x-hybridmesh-source-cluster", "gke\r\nx-injected: 1\0"),
        ],
        true,
    )
    .unwrap();
    assert!(s.local_reply().is_none());
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-source-cluster"),
        None
    );
}

#[test]
fn a_crlf_authority_is_not_a_service_name_and_injects_nothing() {
    let config = format!(
        r#"{{{CLUSTERS}, "allowDebug": true, "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#
    );
    let mut p = anthos_client(&config);
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "echo-svc.default\r\nx-injected: 1"),
            ("x-request-id", "r-1"),
            ("x-hybridmesh-debug", "1"),
        ],
        true,
    )
    .unwrap();
    // The authority names no service, so the service comes from the outbound
    // cluster Envoy's route chose (as documented), and the rule applies.
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-pinned-cluster")
            .as_deref(),
        Some("anthos")
    );
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some("outbound|80|only-anthos|echo-svc.default.svc.cluster.local")
    );
    let up = s.upstream_request_headers().unwrap();
    assert!(up.iter().all(|(k, _)| k != "x-injected"));
    assert_clean(
        "a request header the filter wrote",
        ours(&up).into_iter().map(|(_, v)| v),
    );
    s.respond(Upstream::new(200).address("10.10.2.59:8080"))
        .unwrap();
    s.complete().unwrap();
    let decision = s.client_response_header("x-hybridmesh-decision").unwrap();
    assert_eq!(
        decision,
        "clusterLocal rule=0 service=echo-svc.default.svc.cluster.local: stays in the local cluster -> anthos; served_by=- cross_network=false"
    );
    let raw = s.filter_state()["hybridmesh.hop"].clone();
    assert!(!raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    let hop: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(hop["service"], "echo-svc.default.svc.cluster.local");
    drop(s);
    assert_clean("a log line", p.logs().into_iter().map(|l| l.message));
}

#[test]
fn a_server_application_cannot_claim_another_cluster_served_it() {
    let mut p = anthos_server(CLUSTER_LOCAL);
    let mut s = p
        .stream(0)
        .connection(Connection::mtls(MESH_PEER, SERVER_ID));
    s.request_headers(&request(&[("x-hybridmesh-source-cluster", "anthos")]), true)
        .unwrap();
    s.respond(
        Upstream::new(200)
            .header(
                "x-hybridmesh-served-by",
                "cluster=gke;network=kuchima-demo-vpc01;locality=asia-northeast1",
            )
            .header("x-hybridmesh-served-by", "cluster=gke"),
    )
    .unwrap();
    s.complete().unwrap();
    let served_by: Vec<String> = s
        .client_response_headers()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == "x-hybridmesh-served-by")
        .map(|(_, v)| v)
        .collect();
    // The sidecar's value alone: both of the application's claims are gone
    // (one replace: Envoy's setCopy removes every entry, measured with Envoy 1.40).
    assert_eq!(served_by, vec![ANTHOS_SERVED_BY]);
    assert_eq!(s.client_response_status(), Some(200));
    drop(s);
    // Set once, it is replaced.
    let mut s = p
        .stream(0)
        .connection(Connection::mtls(MESH_PEER, SERVER_ID));
    s.request_headers(&request(&[]), true).unwrap();
    s.respond(Upstream::new(200).header("x-hybridmesh-served-by", "cluster=gke"))
        .unwrap();
    s.complete().unwrap();
    let served_by: Vec<(String, String)> = ours(&s.client_response_headers().unwrap());
    assert_eq!(
        served_by,
        pairs(&[("x-hybridmesh-served-by", ANTHOS_SERVED_BY)])
    );
}
