//! A filter author's first test of a filter built with the proxy-wasm Rust SDK 0.2.5: a
//! tenant gate (`examples/filters/rust-sdk/`). Its configuration lists the allowed
//! tenants; an empty one is refused. A request from an allowed tenant (`x-tenant`) goes
//! upstream marked `x-tenant-checked`; any other, one without the header included, gets
//! a 403 with a body and counts in the metric `tenant_gate_denied`. Two requests are in
//! flight at once, and no request makes the SDK panic (a trap).
//!
//! Run it: `cargo run -p proxy-wasm-host --example rust_sdk_filter`. It first builds the
//! filter (`cargo build --release --target wasm32-wasip1`, into
//! `target/example-filters/rust-sdk`), which needs the `wasm32-wasip1` target and crates.io.

use std::path::{Path, PathBuf};
use std::process::Command;

use proxy_wasm_host::{ConfigDelivery, Level, Module, Plugin, Upstream};

/// Builds the filter into `<target>/example-filters/rust-sdk`, `<target>` being the
/// directory this example runs from (`<target>/<profile>/examples/<exe>`).
fn build_filter() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/filters/rust-sdk/Cargo.toml");
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot find the target directory above this example")?;
    let out = target.join("example-filters/rust-sdk");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--release", "--target", "wasm32-wasip1"]);
    build.arg("--manifest-path").arg(&manifest);
    build.arg("--target-dir").arg(&out);
    println!("building the filter: {build:?}");
    if !build.status().is_ok_and(|s| s.success()) {
        let install = "the wasm32-wasip1 target (`rustup target add wasm32-wasip1`) \
                       and crates.io reachable, for proxy-wasm 0.2.5";
        return Err(format!("building the Rust SDK filter failed: it needs {install}").into());
    }
    Ok(out.join("wasm32-wasip1/release/tenant_gate.wasm"))
}

fn request(tenant: Option<&str>) -> Vec<(&str, &str)> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "api"),
    ];
    headers.extend(tenant.map(|t| ("x-tenant", t)));
    headers
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = Module::from_file(build_filter()?)?;

    // An empty configuration is refused. Delivered as Istio does (ECDS), the plugin is
    // not configured and every request gets Envoy's 500; in a static bootstrap Envoy
    // would not start, which `build` reports with what the filter logged.
    let mut refused = Plugin::builder(&module)
        .default_cluster("backend")
        .build()?;
    assert!(!refused.configured());
    let mut s = refused.stream(0);
    s.request_headers(&request(Some("acme")), true)?;
    println!(
        "empty configuration: configured() = false, the filter logged {:?}, a request gets {:?}",
        s.plugin().logs_at(Level::Error),
        s.client_response_status()
    );
    assert_eq!(s.client_response_status(), Some(500));
    let refused = Plugin::builder(&module)
        .identity("tenant-gate", "", "")
        .delivery(ConfigDelivery::Static)
        .build();
    let Err(error) = refused else {
        return Err("a static bootstrap accepted an empty configuration".into());
    };
    println!("the same in a static bootstrap: {error}");

    let mut plugin = Plugin::builder(&module)
        .plugin_config(b"acme, globex")
        .default_cluster("backend")
        .build()?;
    assert!(plugin.configured());

    // Two requests in flight: acme's waits on its upstream while initech is turned away.
    let mut acme = plugin.new_stream(0);
    let mut initech = plugin.new_stream(0);
    plugin
        .on(&mut acme)?
        .request_headers(&request(Some("acme")), true)?;
    plugin
        .on(&mut initech)?
        .request_headers(&request(Some("initech")), true)?;
    let denied = plugin.on(&mut initech)?;
    let body = String::from_utf8_lossy(&denied.client_response_body()).into_owned();
    println!("initech: {:?} {body:?}", denied.client_response_status());
    assert_eq!(denied.client_response_status(), Some(403));
    assert_eq!(body, "tenant initech is not allowed\n");
    let mut allowed = plugin.on(&mut acme)?;
    let checked = allowed.upstream_request_header("x-tenant-checked");
    println!("acme: forwarded with x-tenant-checked = {checked:?}");
    assert_eq!(checked.as_deref(), Some("acme"));
    allowed.respond(Upstream::new(200).body(b"[]"))?;
    assert_eq!(allowed.client_response_status(), Some(200));

    // No `x-tenant` at all: denied too, and the SDK did not panic (no trap, no 503).
    let mut s = plugin.stream(0);
    s.request_headers(&request(None), true)?;
    assert_eq!(s.client_response_body(), b"tenant (none) is not allowed\n");
    assert!(plugin.failures().is_empty(), "{:?}", plugin.failures());

    let denials = plugin.metric("tenant_gate_denied");
    println!("tenant_gate_denied = {denials:?}; traps: none");
    assert_eq!(denials, Some(2));
    println!("ok");
    Ok(())
}
