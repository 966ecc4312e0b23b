//! A filter that reads what a filter ahead of it left (a JWT filter's dynamic metadata)
//! and buffers request bodies, tested as an HTTP/1.1 and as an HTTP/2 client would reach
//! it through Envoy: over HTTP/1.1 the body comes as its data, then an empty end of
//! stream (two body callbacks); over HTTP/2 in one piece. Both measured in Envoy 1.40.
//!
//! Run it: `cargo run -p proxy-wasm-host --example bodies_and_metadata`.

use std::path::Path;

use proxy_wasm_host::{Connection, Module, Plugin, StructValue, Upstream};

/// A little-endian word of worker 0's memory (0 if it cannot be read).
fn word(plugin: &mut Plugin, at: u32) -> u32 {
    let bytes = plugin.read_memory(0, at, 4).unwrap_or_default();
    bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The filter (WAT, so the example needs no build): `x-user` from the metadata
    // `envoy.filters.http.jwt_authn` / `sub`; each body callback counted at address 300
    // (the count) and 304.. (its sizes); the body paused until its end.
    let module = Module::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt-metadata-and-bodies.wat"),
    )?;
    let post = [
        (":method", "POST"),
        (":path", "/upload"),
        (":authority", "api"),
        ("content-length", "10"),
    ];
    for (protocol, callbacks) in [("HTTP/1.1", vec![10, 10]), ("HTTP/2", vec![10])] {
        let mut plugin = Plugin::builder(&module)
            .default_cluster("backend")
            .build()?;
        let mut s = plugin
            .stream(0)
            .connection(Connection::plaintext().protocol(protocol));
        // What a JWT filter ahead of this one found.
        s.filter_metadata(
            "envoy.filters.http.jwt_authn",
            "sub",
            StructValue::String("alice".into()),
        );
        s.request(&post, b"hello body")?;
        let user = s.upstream_request_header("x-user");
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(s.upstream_request_body(), b"hello body");
        s.respond(Upstream::new(200).body(b"stored"))?;
        let framing = s.client_response_header("transfer-encoding");
        drop(s);
        let count = word(&mut plugin, 300);
        let sizes: Vec<u32> = (0..count).map(|i| word(&mut plugin, 304 + 4 * i)).collect();
        println!(
            "{protocol}: x-user upstream = {user:?}; body callbacks saw {sizes:?} bytes; \
             the client's transfer-encoding = {framing:?}"
        );
        assert_eq!(sizes, callbacks);
    }
    println!("ok");
    Ok(())
}
