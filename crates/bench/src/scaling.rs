//! How the filter's cost grows with the mesh: the client side's weighted
//! config (example 03) grown to many routes (services) and to many clusters,
//! and at each point the figures that could grow with it: instructions per
//! request in Envoy (callgrind), a fresh VM's set-up in the harness (start
//! and configure, what every worker VM and every config push pays), the
//! guest's linear memory, and the shared-data health entry of a service.
//!
//! The request always goes to the example's service, whose route is listed
//! last, so a lookup that scanned the routes would show here.

use std::path::Path;
use std::time::{Duration, Instant};

use proxy_wasm_host::{Module, Plugin, Upstream};
use serde_json::{json, Value};

/// One point of the curve: how many routes (services), how many clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub routes: usize,
    pub clusters: usize,
}

/// The curve: routes from 1 to 10,000 with the seed's two clusters, then
/// clusters from 2 to 64 with one route.
pub const POINTS: [Point; 6] = [
    Point {
        routes: 1,
        clusters: 2,
    },
    Point {
        routes: 100,
        clusters: 2,
    },
    Point {
        routes: 1_000,
        clusters: 2,
    },
    Point {
        routes: 10_000,
        clusters: 2,
    },
    Point {
        routes: 1,
        clusters: 8,
    },
    Point {
        routes: 1,
        clusters: 64,
    },
];

/// What was measured at one point.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub routes: usize,
    pub clusters: usize,
    /// The plugin configuration's size (JSON bytes).
    pub config_bytes: usize,
    /// A fresh VM in the harness: instantiate, start, parse and plan the
    /// config (median of runs).
    pub fresh_vm: Duration,
    /// Linear memory after configure and 1,000 requests.
    pub linear_memory: u64,
    /// The service's health entry in shared data after 1,000 failed
    /// requests spread over its clusters.
    pub health_entry_bytes: usize,
    /// Instructions per request in Envoy (bare GET, callgrind), when counted.
    pub instructions: Option<f64>,
}

const SERVICE: &str = "echo-svc.default.svc.cluster.local";

/// The example's weighted config grown to `p`: clusters `gke`, `anthos`,
/// then `c3`..`cN` (one network each, every fourth sharing gke's), every
/// route weighted over all clusters from gke's locality, the example's own
/// route last. Checked by the filter's own parser.
pub fn config(examples: &Path, p: Point) -> anyhow::Result<Vec<u8>> {
    let base = hybridmesh_replica::demo::example_config(
        examples,
        "03-weighted-80-20",
        &[("direction", json!("outbound"))],
    )?;
    let mut v: Value = serde_json::from_slice(&base)?;
    let names: Vec<String> = (0..p.clusters.max(2))
        .map(|i| match i {
            0 => "gke".to_string(),
            1 => "anthos".to_string(),
            i => format!("c{}", i + 1),
        })
        .collect();
    if let Some(clusters) = v.get_mut("clusters").and_then(Value::as_array_mut) {
        for (i, name) in names.iter().enumerate().skip(2) {
            let network = if i % 4 == 0 {
                "kuchima-demo-vpc01".to_string()
            } else {
                format!("net-{name}")
            };
            clusters.push(
                json!({"name": name, "network": network, "locality": format!("region-{name}")}),
            );
        }
    }
    let n = names.len();
    let weights: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let w = 100 / n + usize::from(i < 100 % n);
            (c.clone(), json!(w))
        })
        .collect();
    let example_route = v
        .get("routes")
        .and_then(|r| r.get(0))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("example 03 has no route"))?;
    let mut own = example_route.clone();
    if n > 2 {
        own["distribute"] = json!([{"from": "asia-northeast1/*", "to": weights}]);
    }
    let mut routes = Vec::with_capacity(p.routes);
    for i in 1..p.routes {
        let mut r = own.clone();
        r["hosts"] = json!([format!("svc-{i}.default.svc.cluster.local")]);
        routes.push(r);
    }
    routes.push(own);
    v["routes"] = Value::Array(routes);
    let bytes = serde_json::to_vec(&v)?;
    hybridmesh_filter_core::config::parse_json(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "the scaled config ({} routes, {} clusters) is invalid: {e}",
            p.routes,
            p.clusters
        )
    })?;
    Ok(bytes)
}

fn request(plugin: &mut Plugin, i: usize, upstream: &Upstream) -> anyhow::Result<()> {
    let user = format!("user-{i}");
    let mut s = plugin.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", SERVICE),
            ("x-user", &user),
        ],
        true,
    )?;
    s.respond(upstream.clone())?;
    s.complete()?;
    Ok(())
}

/// The harness's figures at one point.
pub fn harness(module: &Module, examples: &Path, p: Point) -> anyhow::Result<Figures> {
    let config = config(examples, p)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        drop(crate::harness::build(module, &config, false)?);
        times.push(t.elapsed());
    }
    times.sort();
    let mut plugin = crate::harness::build(module, &config, false)?;
    let ok = Upstream::new(200).body(b"GKE!!!");
    for i in 0..1000 {
        request(&mut plugin, i, &ok)?;
    }
    let linear_memory = plugin.memory_bytes(0).unwrap_or(0);
    let failing = Upstream::new(503);
    for i in 0..1000 {
        request(&mut plugin, i, &failing)?;
    }
    anyhow::ensure!(
        plugin.failures().is_empty(),
        "the filter failed in the harness: {:?}",
        plugin.failures()
    );
    let health_entry_bytes = plugin
        .shared_data(&hybridmesh_filter_core::health::health_key(SERVICE))
        .map(|v| v.len())
        .unwrap_or(0);
    Ok(Figures {
        routes: p.routes,
        clusters: p.clusters,
        config_bytes: config.len(),
        fresh_vm: times[times.len() / 2],
        linear_memory,
        health_entry_bytes,
        instructions: None,
    })
}
