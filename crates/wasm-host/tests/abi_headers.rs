//! HTTP fields, Envoy-faithful: first value, lower-cased keys, set-pairs, unavailable
//! maps, bad pointers; and the route re-match a request-header change causes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{call, pairs, put, read_u32, returned, ARGS, OOB, RET_PTR, RET_SIZE};
use proxy_wasm_host::{Plugin, Route, Status};

const REQ: i64 = 0;
const RESP: i64 = 2;

fn routes() -> Vec<Route> {
    vec![Route::new("gke")
        .header("x-target", "gke")
        .cluster("outbound|80|gke|echo")]
}

#[test]
fn header_map_host_functions() {
    // The filter pauses the request: it is not forwarded, so header changes re-route.
    // The connection manager's own headers are off: this test is about the host calls.
    let module = common::module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1)"#,
    );
    let mut p = Plugin::builder(&module)
        .hcm_headers(false)
        .routes(routes())
        .default_cluster("outbound|80||echo")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            ("x-dup", "first"),
            ("X-Dup", "second"),
        ],
        true,
    )
    .unwrap();
    let id = s.context_id().unwrap();
    let p = s.plugin();

    // First value of a repeated key; lookups are case-insensitive.
    let (k, kl) = put(p, ARGS, b"X-DUP");
    let get = |k, kl| [REQ, k, kl, i64::from(RET_PTR), i64::from(RET_SIZE)];
    assert_eq!(
        call(p, id, "proxy_get_header_map_value", &get(k, kl)),
        Status::Ok
    );
    assert_eq!(returned(p), b"first");
    let (m, ml) = put(p, ARGS, b"missing");
    assert_eq!(
        call(p, id, "proxy_get_header_map_value", &get(m, ml)),
        Status::NotFound
    );

    // replace: every entry removed, one appended (Envoy setCopy), key lower-cased.
    let (k, kl) = put(p, ARGS, b"X-Dup");
    let (v, vl) = put(p, ARGS + 100, b"third");
    assert_eq!(
        call(
            p,
            id,
            "proxy_replace_header_map_value",
            &[REQ, k, kl, v, vl]
        ),
        Status::Ok
    );
    // add keeps the rest; remove drops all entries.
    let (k2, kl2) = put(p, ARGS + 200, b"X-Added");
    assert_eq!(
        call(p, id, "proxy_add_header_map_value", &[REQ, k2, kl2, v, vl]),
        Status::Ok
    );
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_pairs",
            &[REQ, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::Ok
    );
    let got = proxy_wasm_host::envoy::deserialize_pairs(&returned(p)).unwrap();
    let want: Vec<(String, String)> = [
        (":method", "GET"),
        (":path", "/"),
        ("x-dup", "third"),
        ("x-added", "third"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_size",
            &[REQ, i64::from(RET_SIZE)]
        ),
        Status::Ok
    );
    assert_eq!(
        read_u32(p, RET_SIZE) as usize,
        pairs(&[
            (":method", "GET"),
            (":path", "/"),
            ("x-dup", "third"),
            ("x-added", "third")
        ])
        .len()
    );
    let (k, kl) = put(p, ARGS, b"x-dup");
    assert_eq!(
        call(p, id, "proxy_remove_header_map_value", &[REQ, k, kl]),
        Status::Ok
    );
    assert_eq!(
        call(p, id, "proxy_remove_header_map_value", &[REQ, k, kl]),
        Status::Ok,
        "absent is Ok"
    );

    // set-pairs: remove everything, add the pairs.
    let (d, dl) = put(p, ARGS, &pairs(&[(":method", "POST"), ("X-Target", "gke")]));
    assert_eq!(
        call(p, id, "proxy_set_header_map_pairs", &[REQ, d, dl]),
        Status::Ok
    );

    // Response headers do not exist during the request: BadArgument, as Envoy.
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_pairs",
            &[RESP, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::BadArgument
    );
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_value",
            &[RESP, k, kl, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::BadArgument
    );
    // Invalid map type, bad pointers.
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_pairs",
            &[8, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::BadArgument
    );
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_value",
            &[REQ, OOB, 4, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::InvalidMemoryAccess
    );
    assert_eq!(
        call(
            p,
            id,
            "proxy_get_header_map_pairs",
            &[REQ, OOB, i64::from(RET_SIZE)]
        ),
        Status::InvalidMemoryAccess
    );
    // On the root context there is no stream: BadArgument.
    assert_eq!(
        call(
            p,
            1,
            "proxy_get_header_map_pairs",
            &[REQ, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::BadArgument
    );

    assert_eq!(
        s.request_header_map().unwrap(),
        vec![
            (":method".to_owned(), "POST".to_owned()),
            ("x-target".to_owned(), "gke".to_owned())
        ]
    );
    // Each call_export is its own "callback": one re-match after each change.
    let rematches = s.route_rematches();
    assert_eq!(rematches.len(), 5);
    assert_eq!(rematches[0].changed_headers, ["x-dup"]);
    assert_eq!(rematches[1].changed_headers, ["x-added"]);
    let last = rematches.last().unwrap();
    assert_eq!(
        last.changed_headers,
        [":method", ":path", "x-added", "x-target"]
    );
    assert_eq!(last.previous_route.as_deref(), Some("default"));
    assert_eq!(last.route.as_deref(), Some("gke"));
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some("outbound|80|gke|echo")
    );
}

/// on_request_headers replaces x-target with "gke" and records what xds.route_name said
/// inside the callback (in shared data "seen").
const REROUTE: &str = r#"
  (data (i32.const 100) "x-target")
  (data (i32.const 120) "gke")
  (data (i32.const 140) "xds\00route_name")
  (data (i32.const 160) "seen")
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (drop (call $proxy_replace_header_map_value (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 120) (i32.const 3)))
    (drop (call $proxy_get_property (i32.const 140) (i32.const 14) (i32.const 300) (i32.const 304)))
    (drop (call $proxy_set_shared_data (i32.const 160) (i32.const 4) (i32.load (i32.const 300)) (i32.load (i32.const 304)) (i32.const 0)))
    i32.const 0)
"#;

#[test]
fn header_change_rematches_the_route_after_the_callback() {
    let module = common::module(REROUTE);
    let mut p = Plugin::builder(&module)
        .routes(routes())
        .default_cluster("outbound|80||echo")
        .trace(true)
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(
        &[(":method", "GET"), (":path", "/"), ("x-target", "evil")],
        true,
    )
    .unwrap();
    assert_eq!(
        s.upstream_cluster().as_deref(),
        Some("outbound|80|gke|echo")
    );
    let rematches = s.route_rematches();
    assert_eq!(rematches.len(), 1, "one extra route match per request");
    assert_eq!(rematches[0].callback, "proxy_on_request_headers");
    assert_eq!(rematches[0].changed_headers, ["x-target"]);
    assert_eq!(
        s.upstream_request_header("x-target").as_deref(),
        Some("gke")
    );
    s.complete().unwrap();
    // Inside the callback the route was still the one chosen before the change.
    assert_eq!(p.shared_data("seen").unwrap(), b"default");
    let calls = p.host_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.function == "proxy_replace_header_map_value"
                && c.detail.contains("x-target: gke")),
        "{calls:#?}"
    );
}
