//! Harness benchmark: requests/second through a filter (single thread) and the cost of a
//! fresh plugin (instantiate + vm start + configure), median of many.
//!
//! `cargo run --release --example harness_bench -- PATH.wasm [PLUGIN_CONFIG]`
//! (default module: the SDK probe fixture). `HYBRIDMESH_POOLING=0` turns wasmtime's
//! pooling allocator off.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hybridmesh::{Connection, Module, Plugin, Proxy, Route, Upstream};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdk_probe.wasm").to_owned()
    });
    let config = args.next().unwrap_or_else(|| "{}".to_owned());

    let t = Instant::now();
    let module = Module::from_file(&path).with_context(|| format!("failed to load {path}"))?;
    println!("module        {path}");
    println!("compile       {:?}", t.elapsed());

    let build = || {
        Plugin::builder(&module)
            .proxy(Proxy::istio("gke").network("vpc01").locality(
                "asia-northeast1",
                "asia-northeast1-a",
                "",
            ))
            .plugin_config(config.as_bytes())
            .routes(vec![Route::new("gke")
                .header("x-hybridmesh-target-cluster", "gke")
                .cluster("outbound|80|gke|echo")])
            .default_cluster("outbound|80||echo")
            .build()
    };

    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let plugin = build()?;
        samples.push(t.elapsed());
        drop(plugin);
    }
    println!("fresh plugin  {:?} (median of {})", median(samples), 200);

    let mut plugin = build()?;
    anyhow::ensure!(plugin.configured(), "the plugin rejected its configuration");
    let upstream = Upstream::new(200)
        .address("10.24.1.9:8080")
        .istio_workload("echoserver;default;echoserver;latest;gke")
        .body(b"GKE!!!");
    let run = |plugin: &mut Plugin, n: usize| -> anyhow::Result<Duration> {
        let t = Instant::now();
        for _ in 0..n {
            let mut s = plugin
                .stream(0)
                .connection(Connection::mtls("spiffe://a", "spiffe://b"));
            s.request_headers(
                &[
                    (":method", "GET"),
                    (":path", "/"),
                    (":authority", "echo-svc.default"),
                ],
                true,
            )?;
            s.respond(upstream.clone())?;
            s.complete()?;
        }
        Ok(t.elapsed())
    };
    run(&mut plugin, 1000)?; // warm up
    let n = 20_000;
    let elapsed = run(&mut plugin, n)?;
    println!(
        "requests      {n} in {elapsed:?}: {:.0} req/s ({:?}/request, single thread)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed / n as u32
    );
    Ok(())
}
