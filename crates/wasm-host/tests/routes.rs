//! Routes matched on the path (issue 28), as Envoy's `match.prefix` and `match.path` do it
//! (compared with Envoy 1.36-1.40 by the Go SDK corpus's `properties` filter, which logs
//! `xds.route_name` and `xds.cluster_name`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
