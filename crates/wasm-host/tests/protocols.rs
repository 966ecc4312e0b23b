//! How the client's and the upstream's protocols frame what the filter and the client see
//! (issue 28), as measured in Envoy 1.40 with curl 7.88 and the Go SDK corpus's `body`
//! filter: over HTTP/1.1 a body is the data, then an empty end of stream; over HTTP/2 one
//! piece with the end of stream; the client's response is framed by its codec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use proxy_wasm_host::{Connection, Plugin, Upstream};

/// A filter like the corpus's `body`: it pauses each body until its end and records every
/// body callback as (request 0 / response 1, size, end of stream) words from address 304
/// (their count at 300); it removes the response's `content-length`, as a filter that
/// grows the body must.
const BODIES: &str = r#"
  (data (i32.const 100) "content-length")
  (func $record (param $side i32) (param $size i32) (param $eos i32)
    (local $at i32)
    i32.const 304 i32.const 300 i32.load i32.const 12 i32.mul i32.add local.set $at
    local.get $at local.get $side i32.store
    local.get $at local.get $size i32.store offset=4
    local.get $at local.get $eos i32.store offset=8
    i32.const 300 i32.const 300 i32.load i32.const 1 i32.add i32.store)
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    i32.const 0 local.get 1 local.get 2 call $record
    local.get 2 i32.eqz)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    i32.const 2 i32.const 100 i32.const 14 call $proxy_remove_header_map_value drop
    i32.const 0)
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    i32.const 1 local.get 1 local.get 2 call $record
    local.get 2 i32.eqz)
"#;

/// A body callback the filter saw: (request 0 / response 1, size, end of stream).
type Body = (u32, u32, bool);

/// The body callbacks the filter saw.
fn bodies(p: &mut Plugin) -> Vec<Body> {
    let word = |p: &mut Plugin, at: u32| {
        u32::from_le_bytes(p.read_memory(0, at, 4).unwrap().try_into().unwrap())
    };
    let n = word(p, 300);
    (0..n)
        .map(|i| {
            let at = 304 + 12 * i;
            (word(p, at), word(p, at + 4), word(p, at + 8) == 1)
        })
        .collect()
}

const POST: [(&str, &str); 4] = [
    (":method", "POST"),
    (":path", "/b"),
    (":authority", "api"),
    ("content-length", "10"),
];

/// A POST from a `client` speaking one protocol answered by an `upstream` speaking
/// another: the body callbacks and the client's response headers (without `date`).
fn exchange(client: &str, upstream: &str) -> (Vec<Body>, Vec<(String, String)>) {
    let module = common::module(BODIES);
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p
        .stream(0)
        .connection(Connection::plaintext().protocol(client));
    s.request(&POST, b"hello body").unwrap();
    assert_eq!(s.upstream_request_body(), b"hello body");
    s.respond(
        Upstream::new(200)
            .protocol(upstream)
            .header("content-length", "7")
            .body(b"answer!"),
    )
    .unwrap();
    assert_eq!(s.client_response_body(), b"answer!");
    let headers = s
        .client_response_headers()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k != "date")
        .collect();
    drop(s);
    (bodies(&mut p), headers)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn over_http1_a_body_is_its_data_then_an_empty_end_and_the_response_is_chunked() {
    let (seen, client) = exchange("HTTP/1.1", "HTTP/1.1");
    // Envoy 1.40, curl POST of 10 bytes (content-length or chunked) and an HTTP/1
    // upstream: `request body size=10 eos=false`, `size=10 eos=true` (the filter paused,
    // so the second call sees the whole buffer), then the same for the response.
    assert_eq!(
        seen,
        [(0, 10, false), (0, 10, true), (1, 7, false), (1, 7, true)]
    );
    // The filter removed `content-length`: the HTTP/1.1 codec chunks the body (measured
    // with curl on a direct response and by the corpus's `body` filter).
    assert_eq!(
        client,
        pairs(&[
            (":status", "200"),
            ("server", "envoy"),
            ("transfer-encoding", "chunked"),
        ])
    );
}

#[test]
fn over_http2_a_body_is_one_piece_and_the_response_is_not_reframed() {
    let (seen, client) = exchange("HTTP/2", "HTTP/2");
    // curl --http2-prior-knowledge: `request body size=10 eos=true`.
    assert_eq!(seen, [(0, 10, true), (1, 7, true)]);
    assert_eq!(client, pairs(&[(":status", "200"), ("server", "envoy"),]));
}
