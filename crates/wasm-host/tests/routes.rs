//! Routes matched on the path (issue 28), as Envoy's `match.prefix` and `match.path` do it
//! (compared with Envoy 1.36-1.40 by the Go SDK corpus's `properties` filter, which logs
//! `xds.route_name` and `xds.cluster_name`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use proxy_wasm_host::{Module, Plugin, Route};

fn route_of(p: &mut Plugin, path: &str) -> Option<(String, String)> {
    let mut s = p.stream(0);
    s.request_headers(
        &[(":method", "GET"), (":path", path), (":authority", "api")],
        true,
    )
    .unwrap();
    s.route().map(|r| (r.name, r.cluster))
}

#[test]
fn prefix_takes_the_whole_path_and_exact_path_ignores_the_query() {
    let module = Module::from_bytes(
        br#"(module (memory (export "memory") 1)
            (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#,
    )
    .unwrap();
    let mut p = Plugin::builder(&module)
        .routes(vec![
            Route::new("exact-plain").path("/plain").cluster("second"),
            Route::new("prefix-p").path_prefix("/p/").cluster("second"),
            Route::new("api-v2")
                .path_prefix("/api")
                .header("x-version", "2")
                .cluster("v2"),
            Route::new("to-upstream")
                .path_prefix("/")
                .cluster("upstream"),
        ])
        .build()
        .unwrap();
    let named = |n: &str, c: &str| Some((n.to_owned(), c.to_owned()));
    assert_eq!(route_of(&mut p, "/plain"), named("exact-plain", "second"));
    assert_eq!(
        route_of(&mut p, "/plain?y=2"),
        named("exact-plain", "second")
    );
    assert_eq!(
        route_of(&mut p, "/plain#top"),
        named("exact-plain", "second")
    );
    assert_eq!(
        route_of(&mut p, "/plain/more"),
        named("to-upstream", "upstream")
    );
    assert_eq!(route_of(&mut p, "/Plain"), named("to-upstream", "upstream"));
    assert_eq!(route_of(&mut p, "/p/q?x=1"), named("prefix-p", "second"));
    assert_eq!(route_of(&mut p, "/pq"), named("to-upstream", "upstream"));
    // A path condition and a header condition must both hold.
    assert_eq!(route_of(&mut p, "/api/x"), named("to-upstream", "upstream"));
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/api/x"),
            (":authority", "api"),
            ("x-version", "2"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(s.upstream_cluster().as_deref(), Some("v2"));
}

/// A filter that marks every response it sees with `x-seen: 1` and counts its request
/// body callbacks at address 200.
const MARKER: &str = r#"
  (data (i32.const 100) "x-seen")
  (data (i32.const 110) "1")
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    i32.const 200 i32.const 200 i32.load i32.const 1 i32.add i32.store
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    i32.const 2 i32.const 100 i32.const 6 i32.const 110 i32.const 1
    call $proxy_add_header_map_value drop
    i32.const 0)
"#;

fn direct_plugin(module: &Module) -> Plugin {
    Plugin::builder(module)
        .routes(vec![
            Route::new("empty")
                .path_prefix("/direct/empty")
                .direct_response(503, b""),
            Route::new("direct")
                .path_prefix("/direct")
                .direct_response(200, b"direct-ok\n"),
            Route::new("to-upstream").cluster("upstream"),
        ])
        .build()
        .unwrap()
}

#[test]
fn a_direct_response_goes_through_the_filter_and_nothing_is_forwarded() {
    let module = common::module(MARKER);
    let mut p = direct_plugin(&module);
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "POST"),
            (":path", "/direct"),
            (":authority", "api"),
            ("content-length", "10"),
        ],
        false,
    )
    .unwrap();
    // Envoy answers at the headers; the body that follows is never asked for.
    s.request_body(b"hello body", true).unwrap();
    s.complete().unwrap();
    assert!(!s.request_forwarded());
    assert_eq!(s.upstream_request_body(), b"");
    assert_eq!(s.upstream_cluster(), None);
    assert_eq!(s.route().map(|r| r.name).as_deref(), Some("direct"));
    assert_eq!(
        s.local_reply().map(|r| r.details).as_deref(),
        Some("direct_response")
    );
    assert_eq!(s.client_response_status(), Some(200));
    assert_eq!(s.client_response_body(), b"direct-ok\n");
    // What Envoy 1.40 sent (MEASURED.md gap 6, the Go SDK corpus's /direct requests):
    // the filter's header among the router's, then what the connection manager adds;
    // the HTTP/1.1 codec closes the connection, since the request's body had not all
    // arrived when the answer went out (measured with curl, POST /direct).
    let headers: Vec<String> = s
        .client_response_headers()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k != "date")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    assert_eq!(
        headers,
        [
            ":status: 200",
            "content-length: 10",
            "content-type: text/plain",
            "x-seen: 1",
            "server: envoy",
            "connection: close"
        ]
    );
    drop(s);
    assert_eq!(p.read_memory(0, 200, 4).unwrap(), [0, 0, 0, 0]);
}

#[test]
fn a_direct_response_without_a_body_has_a_zero_length() {
    let module = common::module(MARKER);
    let mut p = direct_plugin(&module);
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/direct/empty"),
            (":authority", "api"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    assert_eq!(s.client_response_body(), b"");
    assert_eq!(
        s.client_response_header("content-length").as_deref(),
        Some("0")
    );
    assert_eq!(s.client_response_header("x-seen").as_deref(), Some("1"));
    // The other routes still go upstream.
    drop(s);
    let mut s = p.stream(0);
    s.request_headers(
        &[(":method", "GET"), (":path", "/x"), (":authority", "api")],
        true,
    )
    .unwrap();
    assert!(s.request_forwarded());
    assert_eq!(s.upstream_cluster().as_deref(), Some("upstream"));
}
