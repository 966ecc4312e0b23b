//! What one request costs the proxy, pinned through the real `.wasm`: the
//! host calls each side makes (each a transition across the V8 boundary in
//! Envoy, most of them copying data) and the guest's heap allocations in the
//! steady state (read from the module's `hybridmesh_allocations` export).
//! A change that adds a host call or an allocation to the request path fails
//! here; the instruction counts in real Envoy are in `hybridmesh bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use filter_support::{module, CLUSTERS};
use proxy_wasm_host::{Connection, Direction, Level, Plugin, Proxy, Route, Upstream};

const ECHO: &str = "echo-svc.default.svc.cluster.local";

fn proxy(direction: Direction) -> Proxy {
    Proxy::istio("gke")
        .network("kuchima-demo-vpc01")
        .locality("asia-northeast1", "asia-northeast1-a", "")
        .metadata("NAMESPACE", "sleep")
        .direction(direction)
}

fn plugin(direction: Direction, config: &str) -> Plugin {
    let routes = ["gke", "anthos"]
        .iter()
        .map(|c| {
            Route::new(c)
                .header("x-hybridmesh-target-cluster", c)
                .cluster(&format!("outbound|80|{c}|{ECHO}"))
        })
        .collect();
    let p = Plugin::builder(&module())
        .proxy(proxy(direction))
        .plugin_config(config.as_bytes())
        .routes(routes)
        .default_cluster(&format!("outbound|80||{ECHO}"))
        .trace(true)
        // Envoy's default level: the hop log line (debug) is not written.
        .log_level(Level::Info)
        .build()
        .unwrap();
    assert!(p.configured(), "{:?}", p.logs());
    p
}

/// The client side as `wasmplugin/` deploys it, with an 80/20 weighted rule,
/// sticky users and the hop record in filter state (the benchmark's client side).
fn client_weighted() -> String {
    format!(
        r#"{{"direction": "outbound", "filterState": true, {CLUSTERS}, "routes": [{{"hosts": ["{ECHO}"],
            "policy": "weighted", "stickyHeader": "x-user",
            "distribute": [{{"from": "asia-northeast1/*", "to": {{"gke": 80, "anthos": 20}}}}]}}]}}"#
    )
}

/// Tagging only: policy `none`, no filter state.
fn client_tag() -> String {
    format!(
        r#"{{"direction": "outbound", "filterState": false, {CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "none"}}]}}"#
    )
}

fn server() -> String {
    format!(
        r#"{{"direction": "inbound", {CLUSTERS}, "routes": [{{"hosts": ["{ECHO}"], "policy": "clusterLocal"}}]}}"#
    )
}

const BARE: [(&str, &str); 3] = [
    (":method", "GET"),
    (":path", "/"),
    (":authority", "echo-svc.default"),
];

/// What an application's request from a browser-facing service carries
/// (the benchmark's header-heavy set).
fn heavy() -> Vec<(&'static str, &'static str)> {
    let mut h = BARE.to_vec();
    h.extend([
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "ja,en-US;q=0.9,en;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; _ga=GA1.2.1234567890.1700000000; cart=3f1c2a9e"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImhtLTEifQ.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"),
        ("x-request-id", "3f1c2a9e-8d7b-4c6a-9f0e-2b1d5c7a8e90"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("baggage", "user=alice,tenant=acme"),
        ("x-forwarded-for", "203.0.113.7, 10.24.1.3"),
        ("x-user", "alice"),
    ]);
    h
}

/// The server side's request: what a client sidecar sent.
fn from_gke(mut h: Vec<(&'static str, &'static str)>) -> Vec<(&'static str, &'static str)> {
    h.extend([
        ("x-hybridmesh-source-cluster", "gke"),
        ("x-hybridmesh-source-network", "kuchima-demo-vpc01"),
        (
            "x-hybridmesh-source-locality",
            "asia-northeast1/asia-northeast1-a",
        ),
        ("x-hybridmesh-hops", "gke"),
    ]);
    h
}

fn allocations(p: &mut Plugin) -> i64 {
    p.call_export(0, 0, "hybridmesh_allocations", &[]).unwrap()[0]
}

/// One request and its response: the host calls of each phase (function
/// names, and the memory the host asked the guest for), and the guest's
/// allocations over the whole stream.
struct Cost {
    request: Vec<String>,
    response: Vec<String>,
    allocations: i64,
}

fn one(p: &mut Plugin, headers: &[(&str, &str)], direction: Direction) -> Cost {
    let before_alloc = allocations(p);
    let start = p.host_calls().len();
    let mut s = p.stream(0);
    if direction == Direction::Inbound {
        s = s.connection(Connection::mtls(
            "spiffe://cluster.local/ns/sleep/sa/sleep",
            "spiffe://cluster.local/ns/default/sa/default",
        ));
    }
    s.request_headers(headers, true).unwrap();
    let mid = s.plugin().host_calls().len();
    s.respond(
        Upstream::new(200)
            .header(
                "x-hybridmesh-served-by",
                "cluster=gke;network=kuchima-demo-vpc01;locality=asia-northeast1",
            )
            .address("10.24.1.9:8080"),
    )
    .unwrap();
    let end = s.plugin().host_calls().len();
    s.complete().unwrap();
    let calls = p.host_calls();
    let names = |r: std::ops::Range<usize>| -> Vec<String> {
        calls[r].iter().map(|c| c.function.to_string()).collect()
    };
    Cost {
        request: names(start..mid),
        response: names(mid..end),
        allocations: allocations(p) - before_alloc,
    }
}

/// Warms the VM (stream-state pool, arena, metric ids), then measures one request.
fn steady(config: &str, direction: Direction, headers: &[(&str, &str)]) -> Cost {
    let mut p = plugin(direction, config);
    for _ in 0..20 {
        one(&mut p, headers, direction);
    }
    one(&mut p, headers, direction)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_client_side_reads_once_writes_what_changes_and_allocates_nothing() {
    for headers in [BARE.to_vec(), heavy()] {
        let c = steady(&client_weighted(), Direction::Outbound, &headers);
        assert_eq!(
            c.request,
            strs(&[
                "proxy_get_header_map_pairs",
                "proxy_get_current_time_nanoseconds",
                "proxy_get_shared_data",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
            ]),
            "{} request headers",
            headers.len()
        );
        assert_eq!(
            c.response,
            strs(&[
                "proxy_get_header_map_pairs",
                "proxy_get_current_time_nanoseconds",
                "proxy_set_property",
            ])
        );
        assert_eq!(c.allocations, 0, "{} request headers", headers.len());
    }
}

#[test]
fn tagging_alone_costs_five_host_calls() {
    for headers in [BARE.to_vec(), heavy()] {
        let c = steady(&client_tag(), Direction::Outbound, &headers);
        assert_eq!(
            c.request,
            strs(&[
                "proxy_get_header_map_pairs",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
                "proxy_add_header_map_value",
            ])
        );
        assert_eq!(c.response, strs(&["proxy_get_header_map_pairs"]));
        assert_eq!(c.allocations, 0);
    }
}

#[test]
fn the_server_side_checks_the_peer_once_and_allocates_nothing() {
    for headers in [from_gke(BARE.to_vec()), from_gke(heavy())] {
        let c = steady(&server(), Direction::Inbound, &headers);
        assert_eq!(
            c.request,
            strs(&["proxy_get_header_map_pairs", "proxy_get_property"])
        );
        assert_eq!(c.response, strs(&["proxy_replace_header_map_value"]));
        assert_eq!(c.allocations, 0);
    }
}

#[test]
fn spoofed_headers_cost_one_call_each_and_are_gone() {
    let mut headers = BARE.to_vec();
    headers.extend([
        ("x-hybridmesh-target-cluster", "anthos"),
        ("x-hybridmesh-source-cluster", "evil"),
        ("x-hybridmesh-anything", "1"),
        ("x-hybridmesh-anything", "2"),
    ]);
    let c = steady(&client_tag(), Direction::Outbound, &headers);
    assert_eq!(
        c.request,
        strs(&[
            "proxy_get_header_map_pairs",
            "proxy_remove_header_map_value",
            "proxy_replace_header_map_value",
            "proxy_add_header_map_value",
            "proxy_add_header_map_value",
            "proxy_add_header_map_value",
            "proxy_remove_header_map_value",
        ])
    );
}
