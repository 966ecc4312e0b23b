//! Offline figures: requests per second through the filter in the wasmtime
//! harness (one thread), a fresh plugin's set-up cost, route re-matches per
//! request, and the guest's linear memory over many requests.

use std::time::{Duration, Instant};

use proxy_wasm_host::{Connection, Level, Module, Plugin, Proxy, Route, Upstream};

#[derive(Debug, Clone, Default)]
pub struct HarnessFigures {
    pub compile: Duration,
    pub fresh_plugin: Duration,
    pub requests: u64,
    pub per_request: Duration,
    pub rps: f64,
    /// Route re-matches per request (Envoy re-matches when request headers change).
    pub rematches_per_request: f64,
    /// Distinct headers the re-matches were caused by, as the harness records them.
    pub rematch_causes: Vec<String>,
    /// Linear memory after the first thousand requests, and at the end.
    pub memory_after_1k: u64,
    pub memory_at_end: u64,
    /// Host calls the filter makes on one request (request + response),
    /// client side and server side.
    pub calls_client: usize,
    pub calls_server: usize,
}

/// Host calls made by one request (after a first one has warmed the VM), at
/// Envoy's default log level.
fn count_calls(module: &Module, config: &[u8], server: bool) -> anyhow::Result<usize> {
    let mut plugin = build(module, config, true)?;
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", "echo-svc.default.svc.cluster.local"),
    ];
    headers.extend(super::envoy::COMMON_HEADERS);
    if server {
        headers.extend([
            ("x-hybridmesh-source-cluster", "gke"),
            ("x-hybridmesh-source-network", "kuchima-demo-vpc01"),
        ]);
    }
    let upstream = Upstream::new(200)
        .header(
            "x-hybridmesh-served-by",
            "cluster=gke;network=kuchima-demo-vpc01",
        )
        .body(b"GKE!!!");
    let one = |plugin: &mut Plugin| -> anyhow::Result<()> {
        let mut s = plugin.stream(0);
        s.request_headers(&headers, true)?;
        s.respond(upstream.clone())?;
        s.complete()
    };
    one(&mut plugin)?;
    let before = plugin.host_calls().len();
    one(&mut plugin)?;
    Ok(plugin.host_calls().len() - before)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A gke client sidecar with the seed's per-cluster routes, at Envoy's
/// default log level (the hop log line, at debug, is not written).
pub(crate) fn build(module: &Module, config: &[u8], trace: bool) -> anyhow::Result<Plugin> {
    let plugin = Plugin::builder(module)
        .proxy(Proxy::istio("gke").network("kuchima-demo-vpc01").locality(
            "asia-northeast1",
            "asia-northeast1-a",
            "",
        ))
        .plugin_config(config)
        .log_level(Level::Info)
        .trace(trace)
        .routes(vec![
            Route::new("gke")
                .header("x-hybridmesh-target-cluster", "gke")
                .cluster("outbound|80|gke|echo-svc.default.svc.cluster.local"),
            Route::new("anthos")
                .header("x-hybridmesh-target-cluster", "anthos")
                .cluster("outbound|80|anthos|echo-svc.default.svc.cluster.local"),
        ])
        .default_cluster("outbound|80||echo-svc.default.svc.cluster.local")
        .build()?;
    anyhow::ensure!(plugin.configured(), "the plugin rejected its configuration");
    Ok(plugin)
}

/// Runs `requests` requests (client side) through the filter with `config`.
pub fn measure(
    wasm: &[u8],
    config: &[u8],
    server_config: &[u8],
    requests: u64,
) -> anyhow::Result<HarnessFigures> {
    // The config must be one the filter accepts, checked by its own parser.
    hybridmesh_filter_core::config::parse_json(config)
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let t = Instant::now();
    let module = Module::from_bytes(wasm)?;
    let compile = t.elapsed();
    let calls_client = count_calls(&module, config, false)?;
    let calls_server = count_calls(&module, server_config, true)?;
    let mut fresh = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let p = build(&module, config, false)?;
        fresh.push(t.elapsed());
        drop(p);
    }
    let mut plugin = build(&module, config, false)?;
    let upstream = Upstream::new(200)
        .address("10.24.1.9:8080")
        .istio_workload("echoserver;default;echoserver;latest;gke")
        .header(
            "x-hybridmesh-served-by",
            "cluster=gke;network=kuchima-demo-vpc01",
        )
        .body(b"GKE!!!");
    let mut rematches = 0u64;
    let mut causes = std::collections::BTreeSet::new();
    let one = |plugin: &mut Plugin,
               count: bool,
               rematches: &mut u64,
               causes: &mut std::collections::BTreeSet<String>|
     -> anyhow::Result<()> {
        let mut s = plugin
            .stream(0)
            .connection(Connection::mtls("spiffe://a", "spiffe://b"));
        s.request_headers(
            &[
                (":method", "GET"),
                (":path", "/"),
                (":authority", "echo-svc.default.svc.cluster.local"),
                ("x-request-id", "bench"),
            ],
            true,
        )?;
        if count {
            for r in s.route_rematches() {
                *rematches += 1;
                for h in &r.changed_headers {
                    causes.insert(h.clone());
                }
            }
        }
        s.respond(upstream.clone())?;
        s.complete()?;
        Ok(())
    };
    for _ in 0..1000 {
        one(&mut plugin, true, &mut rematches, &mut causes)?;
    }
    let memory_after_1k = plugin.memory_bytes(0).unwrap_or(0);
    let rematches_per_request = rematches as f64 / 1000.0;
    let t = Instant::now();
    for _ in 0..requests {
        one(&mut plugin, false, &mut rematches, &mut causes)?;
    }
    let elapsed = t.elapsed();
    anyhow::ensure!(
        plugin.failures().is_empty(),
        "the filter failed in the harness: {:?}",
        plugin.failures()
    );
    Ok(HarnessFigures {
        compile,
        fresh_plugin: median(fresh),
        requests,
        per_request: elapsed / u32::try_from(requests.max(1)).unwrap_or(u32::MAX),
        rps: requests as f64 / elapsed.as_secs_f64(),
        rematches_per_request,
        rematch_causes: causes.into_iter().collect(),
        memory_after_1k,
        memory_at_end: plugin.memory_bytes(0).unwrap_or(0),
        calls_client,
        calls_server,
    })
}
