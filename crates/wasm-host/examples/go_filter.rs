//! A filter author's first test of a filter built with the proxy-wasm Go SDK: a
//! response-side filter (`examples/filters/go/`) that adds `x-served-by` with the
//! node's `CLUSTER_ID` (the property `xds.node.metadata.CLUSTER_ID`, which
//! `Proxy::istio("gke")` sets) and logs `response body N bytes` when the stream ends.
//! Tested over HTTP/1.1 and over HTTP/2: the body reaches the filter in two callbacks
//! (its data, then an empty end of stream) over HTTP/1.1, in one over HTTP/2, and the
//! count is the same.
//!
//! Run it: `cargo run -p proxy-wasm-host --example go_filter`. It first builds the filter
//! (`GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`, into
//! `target/example-filters/go`), which needs Go 1.24 or later and the Go module proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use proxy_wasm_host::{Connection, Level, Module, Plugin, Proxy, Upstream};

/// Builds the filter into `<target>/example-filters/go/served_by.wasm`, `<target>` being
/// the directory this example runs from (`<target>/<profile>/examples/<exe>`).
fn build_filter() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/filters/go");
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot find the target directory above this example")?;
    let wasm = target.join("example-filters/go/served_by.wasm");
    let go = std::env::var_os("GO").filter(|go| !go.is_empty());
    let go = go.unwrap_or_else(|| "go".into());
    let mut build = Command::new(go);
    build
        .current_dir(&source)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm");
    build
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&wasm)
        .arg(".");
    println!("building the filter in {}: {build:?}", source.display());
    if !build.status().is_ok_and(|s| s.success()) {
        let install = "Go 1.24 or later (`go` on PATH, or GO=/path/to/go; https://go.dev/dl/) \
                       and the Go module proxy reachable, for the proxy-wasm Go SDK";
        return Err(format!("building the Go filter failed: it needs {install}").into());
    }
    Ok(wasm)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = Module::from_file(build_filter()?)?;
    let mut plugin = Plugin::builder(&module)
        .proxy(Proxy::istio("gke")) // an Istio sidecar in the cluster `gke`
        .default_cluster("backend")
        .build()?;
    assert!(plugin.configured());
    let get = [
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "api"),
    ];
    let body = br#"{"orders":[]}"#;

    for (protocol, callbacks) in [("HTTP/1.1", 2), ("HTTP/2", 1)] {
        let logged = plugin.log_count();
        // The client and the upstream both speak `protocol`.
        let mut s = plugin
            .stream(0)
            .connection(Connection::plaintext().protocol(protocol));
        s.request_headers(&get, true)?;
        s.respond(
            Upstream::new(200)
                .protocol(protocol)
                .header("content-length", &body.len().to_string())
                .body(body),
        )?;
        s.complete()?;
        let served_by = s.client_response_header("x-served-by");
        assert_eq!(served_by.as_deref(), Some("gke"));
        assert_eq!(s.client_response_body(), body);
        drop(s);

        let logs = plugin.logs_since(logged);
        let seen = |level| logs.iter().filter(move |l| l.level == level);
        let info: Vec<&str> = seen(Level::Info).map(|l| l.message.as_str()).collect();
        let pieces = seen(Level::Debug).count();
        println!(
            "{protocol}: x-served-by = {served_by:?}; body callbacks: {pieces}; \
             the filter logged {info:?}"
        );
        assert_eq!(pieces, callbacks);
        assert_eq!(info, ["response body 13 bytes"]);
    }
    assert!(plugin.failures().is_empty(), "{:?}", plugin.failures());
    println!("ok");
    Ok(())
}
