//! A filter author's first test of an authorization filter: three requests in flight at
//! once, each asking an authorization service (an HTTP callout with a 300 ms timeout),
//! answered out of order, one never answered. What each request then carried upstream
//! is what Envoy would have sent.
//!
//! Run it: `cargo run -p proxy-wasm-host --example auth_callouts`. The filter is the
//! harness's fixture `tests/fixtures/concurrent-auth.wat` (WAT, so it needs no build):
//! it passes the service's `:status` upstream as `x-authz-status` (`none` when the
//! callout failed).

use std::path::Path;
use std::time::Duration;

use proxy_wasm_host::{Module, Plugin, Upstream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = Module::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/concurrent-auth.wat"),
    )?;
    let mut plugin = Plugin::builder(&module)
        .default_cluster("backend")
        .cluster("authz") // the authorization service the filter calls out to
        .build()?;
    plugin.set_shared_data("hits", b"0");
    let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];

    // Three requests arrive; each pauses on its callout.
    let mut streams = [
        plugin.new_stream(0),
        plugin.new_stream(0),
        plugin.new_stream(0),
    ];
    for s in &mut streams {
        plugin.on(s)?.request_headers(&get, true)?;
    }
    let tokens: Vec<u32> = streams
        .iter_mut()
        .map(|s| Ok(plugin.on(s)?.http_callouts()[0].token))
        .collect::<Result<_, proxy_wasm_host::Error>>()?;

    // The service answers the third request first, refuses the first, and never answers
    // the second: the clock passes its 300 ms timeout and Envoy answers it 504.
    plugin.respond_http_call(tokens[2], 200, &[], b"")?;
    plugin.respond_http_call(tokens[0], 403, &[], b"no")?;
    plugin.advance(Duration::from_millis(300))?;

    let mut seen = Vec::new();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut stream = plugin.on(s)?;
        let status = stream.upstream_request_header("x-authz-status");
        println!("request {}: x-authz-status upstream = {status:?}", i + 1);
        seen.push(status);
        stream.respond(Upstream::new(200))?;
    }
    assert_eq!(
        seen,
        [Some("403".into()), Some("504".into()), Some("200".into())]
    );
    println!("ok: each answer reached its own request; the unanswered one timed out");
    Ok(())
}
