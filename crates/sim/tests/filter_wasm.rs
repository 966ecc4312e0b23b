//! The filter's behaviour through its real release `.wasm`, in the harness:
//! configure and its errors, every policy, ejection across worker VMs, trust,
//! local replies, hop records, metrics, reconfigure. What a request costs
//! (host calls, allocations) is pinned in `request_cost.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::time::Duration;

use filter_support::{module, routes, CLUSTERS, ECHO};
use proxy_wasm_host::{
    Connection, Direction, FailStrategy, Level, NodeMetadataStyle, Plugin, Proxy, Upstream,
};

fn gke_proxy(direction: Direction) -> Proxy {
    Proxy::istio("gke")
        .network("kuchima-demo-vpc01")
        .locality("asia-northeast1", "asia-northeast1-a", "")
        .metadata("NAMESPACE", "sleep")
        .direction(direction)
}

fn anthos_proxy(direction: Direction) -> Proxy {
    Proxy::istio("anthos")
        .network("default")
        .metadata("NAMESPACE", "default")
        .direction(direction)
}

fn plugin(proxy: Proxy, config: &str) -> Plugin {
    Plugin::builder(&module())
        .proxy(proxy)
        .plugin_config(config.as_bytes())
        .routes(routes())
        .default_cluster(&format!("outbound|80||{ECHO}"))
        .build()
        .unwrap()
}

const GET_ECHO: [(&str, &str); 4] = [
    (":method", "GET"),
    (":path", "/"),
    (":authority", "echo-svc.default"),
    ("x-request-id", "r-1"),
];

fn failover_config() -> String {
    format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["{ECHO}"], "policy": "failover",
            "failover": [{{"from": "asia-northeast1", "to": "tokyo-onprem"}}],
            "outlierDetection": {{"consecutive5xxErrors": 1, "baseEjectionTime": "1m"}}}}]}}"#
    )
}

#[test]
fn configure_reads_node_identity_once_and_says_so() {
    let p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    assert!(p.configured());
    // Once per VM, as Envoy: the configuration canary, the main thread's VM, the worker.
    let line = "hybridmesh: configured cluster=gke network=kuchima-demo-vpc01 locality=asia-northeast1/asia-northeast1-a namespace=sleep direction=Auto routes=1";
    assert_eq!(p.logs_at(Level::Info), vec![line; 3]);
    let vms: Vec<usize> = p.logs().iter().map(|l| l.worker).collect();
    assert_eq!(vms, [p.canary_vm(), p.main_vm(), 0]);
    // Older proxies serve node metadata under `node`, not `xds.node`.
    let legacy = plugin(
        gke_proxy(Direction::Outbound).node_metadata_style(NodeMetadataStyle::Legacy),
        &failover_config(),
    );
    assert!(legacy.logs_at(Level::Info)[0].starts_with("hybridmesh: configured cluster=gke network=kuchima-demo-vpc01 locality=asia-northeast1/asia-northeast1-a"));
}

#[test]
fn a_bad_first_config_is_rejected_with_the_exact_message() {
    let bad = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "weighted", "distribute": [{{"from": "*", "to": {{"gke": 70, "anthos": 20}}}}]}}]}}"#
    );
    // Measured with Envoy 1.40: a first config rejected by ECDS answers 500 (NFCF) under
    // every fail strategy; FAIL_OPEN is about VMs that fail while serving.
    for (strategy, status) in [
        (FailStrategy::FailClose, 500),
        (FailStrategy::FailOpen, 500),
    ] {
        let mut p = Plugin::builder(&module())
            .proxy(gke_proxy(Direction::Outbound))
            .plugin_config(bad.as_bytes())
            .fail_strategy(strategy)
            .default_cluster("c")
            .build()
            .unwrap();
        assert!(!p.configured());
        assert_eq!(
            p.logs_at(Level::Error),
            vec![
                "hybridmesh: invalid plugin config: routes[0].distribute[0].to: weights sum to 90, expected 100",
                "hybridmesh: plugin config rejected (1 problem); Envoy keeps the previous config, and without one the plugin cannot start",
            ]
        );
        let mut s = p.stream(0);
        s.request_headers(&GET_ECHO, true).unwrap();
        assert!(!s.request_forwarded());
        assert_eq!(s.client_response_status(), Some(status), "{strategy:?}");
        assert_eq!(
            s.response_flags(),
            proxy_wasm_host::response_flags::NO_FILTER_CONFIG_FOUND
        );
    }
}

#[test]
fn identity_problems_are_errors_or_warnings() {
    let p = Plugin::builder(&module())
        .proxy(Proxy::default())
        .plugin_config(b"{}")
        .build()
        .unwrap();
    assert!(!p.configured());
    assert_eq!(
        p.logs_at(Level::Error)[0],
        "hybridmesh: invalid plugin config: identity.cluster: no cluster id: node metadata CLUSTER_ID is missing and identity.cluster is not set"
    );
    let p = Plugin::builder(&module())
        .proxy(Proxy::istio("Kubernetes"))
        .plugin_config(b"{}")
        .build()
        .unwrap();
    assert!(p.configured());
    assert!(p.logs_at(Level::Warn)[0].starts_with(
        "hybridmesh: identity.cluster: the cluster id is Istio's default \"Kubernetes\""
    ));
}

#[test]
fn outbound_sets_its_headers_and_the_route_is_matched_once_more() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    let mut s = p.stream(0);
    let mut headers = GET_ECHO.to_vec();
    headers.push(("x-hybridmesh-target-cluster", "anthos"));
    headers.push(("x-hybridmesh-source-cluster", "anthos"));
    s.request_headers(&headers, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-source-cluster")
            .as_deref(),
        Some("gke")
    );
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-target-cluster")
            .as_deref(),
        Some("gke")
    );
    assert_eq!(
        s.upstream_request_header(":authority").as_deref(),
        Some("echo-svc.default")
    );
    assert_eq!(
        s.upstream_request_header("x-request-id").as_deref(),
        Some("r-1")
    );
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some(&*format!("outbound|80|prefer-gke|{ECHO}"))
    );
    let rematches = s.route_rematches();
    assert_eq!(rematches.len(), 1, "{rematches:?}");
}

#[test]
fn failover_ejection_is_seen_by_every_worker_vm() {
    let mut p = Plugin::builder(&module())
        .proxy(gke_proxy(Direction::Outbound))
        .plugin_config(failover_config().as_bytes())
        .routes(routes())
        .workers(2)
        .build()
        .unwrap();
    // Worker 0: gke answers 503 (no healthy upstream): gke is ejected.
    let mut s = p.stream(0);
    s.request_headers(&GET_ECHO, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-target-cluster")
            .as_deref(),
        Some("gke")
    );
    s.respond(Upstream::new(503).flags(proxy_wasm_host::response_flags::NO_HEALTHY_UPSTREAM))
        .unwrap();
    s.complete().unwrap();
    assert!(p.logs_at(Level::Warn).iter().any(|l| l
        == "hybridmesh: ejected cluster gke for echo-svc.default.svc.cluster.local for 60000ms (ejection #1) after 1 consecutive failures"));
    // Worker 1 fails over to anthos.
    let mut s = p.stream(1);
    s.request_headers(&GET_ECHO, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-target-cluster")
            .as_deref(),
        Some("anthos")
    );
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some(&*format!("outbound|80|prefer-anthos|{ECHO}"))
    );
    s.respond(Upstream::new(200)).unwrap();
    s.complete().unwrap();
    // A minute later gke is back.
    p.advance(Duration::from_secs(60)).unwrap();
    let mut s = p.stream(1);
    s.request_headers(&GET_ECHO, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-target-cluster")
            .as_deref(),
        Some("gke")
    );
}

#[test]
fn hop_record_goes_to_filter_state_and_metrics_flush_on_tick() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    let mut s = p.stream(0);
    s.request_headers(&GET_ECHO, true).unwrap();
    s.respond(Upstream::new(200).address("10.24.1.9:8080").header(
        "x-hybridmesh-served-by",
        "cluster=gke;network=kuchima-demo-vpc01;locality=asia-northeast1/asia-northeast1-a",
    ))
    .unwrap();
    s.complete().unwrap();
    let state = s.filter_state();
    let hop: serde_json::Value = serde_json::from_slice(
        state
            .get("hybridmesh.hop")
            .expect("hop record in filter state"),
    )
    .unwrap();
    assert_eq!(hop["request_id"], "r-1");
    assert_eq!(hop["served_by"], "gke");
    assert_eq!(hop["target_cluster"], "gke");
    assert_eq!(hop["decision"], "failover");
    assert_eq!(hop["cross_network"], false);
    assert_eq!(
        hop["reason"],
        "failover rule=0 service=echo-svc.default.svc.cluster.local order=gke>anthos -> gke"
    );
    assert!(p.logs_at(Level::Debug).iter().any(|l| l.starts_with("hybridmesh: hop id=r-1 service=echo-svc.default.svc.cluster.local src=gke target=gke served_by=gke cross_network=false")));
    let name = "source_cluster=.=gke;.;destination_cluster=.=gke;.;decision=.=failover;.;cross_network=.=false;.;hybridmesh_requests_total";
    assert_eq!(p.metric(name), Some(0), "defined, not yet flushed");
    p.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(p.metric(name), Some(1));
}

#[test]
fn direction_comes_from_the_listener_in_new_and_old_proxies() {
    // Envoy 1.40 serves xds.listener_direction; older proxies listener_direction.
    for style in [NodeMetadataStyle::Xds, NodeMetadataStyle::Legacy] {
        let cfg = format!(r#"{{{CLUSTERS}, "trustSource": "any"}}"#);
        let mut p = plugin(
            anthos_proxy(Direction::Inbound).node_metadata_style(style),
            &cfg,
        );
        let mut s = p.stream(0);
        let mut h = GET_ECHO.to_vec();
        h.push(("x-hybridmesh-source-cluster", "gke"));
        s.request_headers(&h, true).unwrap();
        // Inbound: the trusted source is kept, nothing outbound is added.
        assert_eq!(
            s.upstream_request_header("x-hybridmesh-source-cluster")
                .as_deref(),
            Some("gke"),
            "{style:?}"
        );
        assert_eq!(
            s.upstream_request_header("x-hybridmesh-source-network"),
            None,
            "{style:?}"
        );
        s.respond(Upstream::new(200)).unwrap();
        assert!(
            s.client_response_header("x-hybridmesh-served-by").is_some(),
            "{style:?}"
        );
    }
}

#[test]
fn a_response_without_served_by_or_endpoint_metadata_does_not_break_anything() {
    // Envoy answers SerializationFailure for xds.upstream_host_metadata here; the
    // SDK's own get_property would panic and kill the VM.
    let mut p = plugin(gke_proxy(Direction::Outbound), &format!("{{{CLUSTERS}}}"));
    for _ in 0..3 {
        let mut s = p.stream(0);
        s.request_headers(&GET_ECHO, true).unwrap();
        s.respond(Upstream::new(200).address("10.0.0.1:8080"))
            .unwrap();
        s.complete().unwrap();
        assert_eq!(s.client_response_status(), Some(200));
    }
    assert!(p.failures().is_empty(), "{:?}", p.failures());
    assert!(!p.is_failed(0));
}

#[test]
fn cross_network_hops_name_the_gateway() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &format!("{{{CLUSTERS}}}"));
    let mut s = p.stream(0);
    s.request_headers(&GET_ECHO, true).unwrap();
    s.respond(
        Upstream::new(200)
            .address("172.16.10.152:15443")
            .istio_workload(";;;;anthos"),
    )
    .unwrap();
    s.complete().unwrap();
    let hop: serde_json::Value =
        serde_json::from_slice(&s.filter_state()["hybridmesh.hop"]).unwrap();
    assert_eq!(hop["served_by"], "anthos");
    assert_eq!(hop["served_network"], "default");
    assert_eq!(hop["cross_network"], true);
    assert_eq!(hop["gateway"], "172.16.10.152:15443");
}

#[test]
fn inbound_refuses_cluster_local_from_another_cluster_over_mtls() {
    let cfg = format!(
        r#"{{{CLUSTERS}, "trustDomains": ["cluster.local"], "routes": [{{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}}]}}"#
    );
    let mut p = plugin(anthos_proxy(Direction::Inbound), &cfg);
    let mtls = Connection::mtls(
        "spiffe://cluster.local/ns/sleep/sa/sleep",
        "spiffe://cluster.local/ns/default/sa/default",
    );
    let mut s = p.stream(0).connection(mtls.clone());
    let mut h = GET_ECHO.to_vec();
    h.push(("x-hybridmesh-source-cluster", "gke"));
    s.request_headers(&h, true).unwrap();
    let reply = s.local_reply().expect("refused");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.details, "hybridmesh_cluster_local");
    assert_eq!(
        String::from_utf8(s.client_response_body()).unwrap(),
        "hybridmesh: echo-svc.default.svc.cluster.local is cluster-local to cluster anthos; request from cluster gke refused\n"
    );
    assert_eq!(
        s.client_response_header("x-hybridmesh-denied").as_deref(),
        Some("cluster-local")
    );
    assert_eq!(
        s.client_response_header("x-hybridmesh-served-by")
            .as_deref(),
        Some("cluster=anthos;network=default;locality=tokyo-onprem")
    );
    // The same claim over plaintext is dropped: the request is served, without it.
    let mut s = p.stream(0).connection(Connection::plaintext());
    s.request_headers(&h, true).unwrap();
    assert!(s.local_reply().is_none());
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-source-cluster"),
        None
    );
    // From the same cluster: served, headers kept.
    let mut s = p.stream(0).connection(mtls);
    let mut h = GET_ECHO.to_vec();
    h.push(("x-hybridmesh-source-cluster", "anthos"));
    s.request_headers(&h, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-hybridmesh-source-cluster")
            .as_deref(),
        Some("anthos")
    );
    s.respond(Upstream::new(200)).unwrap();
    assert_eq!(
        s.client_response_header("x-hybridmesh-served-by")
            .as_deref(),
        Some("cluster=anthos;network=default;locality=tokyo-onprem")
    );
}

#[test]
fn reconfigure_takes_effect_and_a_bad_one_keeps_the_old() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    let local =
        format!(r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#);
    let to_anthos = format!(
        r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "weighted", "distribute": [{{"from": "*", "to": {{"anthos": 100}}}}]}}]}}"#
    );
    assert!(p.reconfigure(to_anthos.as_bytes()).unwrap());
    // The decision: the preferred cluster, or (cluster-local) the pinned one.
    let target = |p: &mut Plugin| {
        let mut s = p.stream(0);
        s.request_headers(&GET_ECHO, true).unwrap();
        s.upstream_request_header("x-hybridmesh-target-cluster")
            .or_else(|| s.upstream_request_header("x-hybridmesh-pinned-cluster"))
    };
    assert_eq!(target(&mut p).as_deref(), Some("anthos"));
    assert!(!p
        .reconfigure(br#"{"routes": [{"hosts": ["*"], "policy": "clusterLocal", "oops": 1}]}"#)
        .unwrap());
    assert_eq!(
        p.logs_at(Level::Error).last().map(String::as_str),
        Some("hybridmesh: plugin config rejected (1 problem); Envoy keeps the previous config, and without one the plugin cannot start")
    );
    assert!(p.logs_at(Level::Error).iter().any(
        |l| l.starts_with("hybridmesh: invalid plugin config: routes[0]: unknown field `oops`")
    ));
    assert_eq!(
        target(&mut p).as_deref(),
        Some("anthos"),
        "the previous config keeps serving"
    );
    assert!(p.reconfigure(local.as_bytes()).unwrap());
    assert_eq!(target(&mut p).as_deref(), Some("gke"));
}

#[test]
fn hostile_header_bytes_do_not_crash_the_vm() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    let long = "x".repeat(64 * 1024);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![(":authority", "\u{fffd}\u{0}echo")],
        vec![
            (":authority", "echo-svc.default"),
            ("x-hybridmesh-debug", "1\r\nx-evil: 1"),
        ],
        vec![(":authority", &long)],
        vec![(":authority", "echo-svc.default:99999999999999999999")],
        vec![],
    ];
    for h in cases {
        let mut s = p.stream(0);
        s.request_headers(&h, true).unwrap();
        s.respond(Upstream::new(200).header("x-hybridmesh-served-by", "cluster=\u{fffd};;;="))
            .unwrap();
        s.complete().unwrap();
    }
    assert!(p.failures().is_empty(), "{:?}", p.failures());
}

/// `hybridmesh_vm_memory_bytes` is the linear memory of the VMs running the
/// plugin (main thread and workers), however many configurations were
/// pushed: Envoy gives each a new root context in the same VM, and first
/// tries it in a canary VM that is dropped without a callback.
#[test]
fn the_memory_gauge_counts_each_vm_once_across_config_pushes() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    let vms = |p: &Plugin| -> u64 {
        (0..=p.workers())
            .map(|w| p.memory_bytes(w).unwrap_or(0))
            .sum()
    };
    p.advance(Duration::from_secs(1)).unwrap();
    let first = p.metric("hybridmesh_vm_memory_bytes").unwrap();
    assert_eq!(first, vms(&p));
    for _ in 0..5 {
        assert!(p.reconfigure(failover_config().as_bytes()).unwrap());
        p.advance(Duration::from_secs(1)).unwrap();
    }
    assert_eq!(p.metric("hybridmesh_vm_memory_bytes").unwrap(), vms(&p));
    assert!(
        vms(&p) >= first && vms(&p) < 2 * first,
        "{} vs {first}",
        vms(&p)
    );
}

/// Counters are buffered per configuration (root context) and flushed on
/// its 1 s tick; a configuration replaced before its next tick flushes what
/// it counted instead of losing it (the replica's Prometheus test lost an
/// ejection that way: counted, then a push 17 ms later).
#[test]
fn counts_made_just_before_a_config_push_are_not_lost() {
    let mut p = plugin(gke_proxy(Direction::Outbound), &failover_config());
    p.advance(Duration::from_secs(1)).unwrap();
    let requests = |p: &Plugin| -> u64 {
        p.metrics()
            .iter()
            .filter(|m| m.name.ends_with("hybridmesh_requests_total"))
            .map(|m| m.value)
            .sum()
    };
    let before = requests(&p);
    for _ in 0..3 {
        let mut s = p.stream(0);
        s.request_headers(&GET_ECHO, true).unwrap();
        s.respond(Upstream::new(200)).unwrap();
        s.complete().unwrap();
    }
    assert!(p.reconfigure(failover_config().as_bytes()).unwrap());
    assert_eq!(requests(&p), before + 3);
}
