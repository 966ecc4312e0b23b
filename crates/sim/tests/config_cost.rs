//! What reading a big config costs the guest, pinned through the real `.wasm`: the heap
//! allocations one VM's `proxy_on_configure` makes for a client-side config of many
//! routes (read from the module's `hybridmesh_allocations` export). The filter's own
//! JSON reader once made this 3x more expensive than serde_json had (issue 26); the
//! bench's scaling curve caught it, and this keeps it in the fast tier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use filter_support::{module, CLUSTERS};
use proxy_wasm_host::{Direction, Plugin, Proxy};

/// The client side's weighted config with `n` services, one route each.
fn config(n: usize) -> String {
    let routes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"hosts": ["svc-{i}.default.svc.cluster.local"], "policy": "weighted",
                "distribute": [{{"from": "asia-northeast1/*", "to": {{"gke": 80, "anthos": 20}}}}]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"direction": "outbound", {CLUSTERS}, "routes": [{}]}}"#,
        routes.join(",")
    )
}

fn allocations(p: &mut Plugin) -> i64 {
    p.call_export(0, 0, "hybridmesh_allocations", &[]).unwrap()[0]
}

/// Worker 0's allocations while it takes a config of `n` routes.
fn configure_cost(n: usize) -> i64 {
    let module = module();
    let mut p = Plugin::builder(&module)
        .proxy(
            Proxy::istio("gke")
                .network("kuchima-demo-vpc01")
                .locality("asia-northeast1", "asia-northeast1-a", "")
                .direction(Direction::Outbound),
        )
        .plugin_config(config(1).as_bytes())
        .default_cluster("backend")
        .build()
        .unwrap();
    assert!(p.configured(), "{:?}", p.logs());
    let before = allocations(&mut p);
    assert!(
        p.reconfigure(config(n).as_bytes()).unwrap(),
        "{:?}",
        p.logs()
    );
    allocations(&mut p) - before
}

#[test]
fn a_big_config_costs_a_bounded_number_of_allocations_per_route() {
    let small = configure_cost(100);
    let big = configure_cost(1_000);
    let per_route = (big - small) as f64 / 900.0;
    println!(
        "configure: 100 routes {small} allocations, 1,000 routes {big}: {per_route:.1} per route"
    );
    // Measured 2026-12-06: 25.2 per route (the first own reader: 78.2, serde_json's
    // tree alone 24 per route natively). A reader that copies or clones per value again
    // fails here.
    assert!(
        per_route <= 30.0,
        "reading a config costs {per_route:.1} allocations per route (100 routes: {small}, \
         1,000: {big}); at most 30 expected (25.2 measured 2026-12-06)"
    );
}
