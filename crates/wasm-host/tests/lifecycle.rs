//! Envoy's plugin lifecycle and failure handling as Istio configures it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use proxy_wasm_host::{response_flags, Action, FailStrategy, Module, Plugin, Upstream};

/// Traps in on_request_headers when the request has `x-crash`; adds `x-filtered` otherwise.
const CRASHY: &str = r#"
  (data (i32.const 100) "x-crash")
  (data (i32.const 120) "x-filtered")
  (data (i32.const 140) "1")
  (func $maybe_crash (param i32)
    (if (i32.eqz (call $proxy_get_header_map_value (i32.const 0) (i32.const 100) (i32.const 7) (i32.const 300) (i32.const 304)))
      (then unreachable)))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (call $maybe_crash (local.get $ctx))
    (drop (call $proxy_replace_header_map_value (i32.const 0) (i32.const 120) (i32.const 10) (i32.const 140) (i32.const 1)))
    i32.const 0)
"#;

fn crashy(strategy: FailStrategy) -> Plugin {
    let module = common::module(CRASHY);
    Plugin::builder(&module)
        .fail_strategy(strategy)
        .default_cluster("c")
        .build()
        .unwrap()
}

const GET: [(&str, &str); 2] = [(":method", "GET"), (":path", "/")];
const CRASH: [(&str, &str); 3] = [(":method", "GET"), (":path", "/"), ("x-crash", "1")];

#[test]
fn fail_close_answers_503_and_the_vm_stays_dead() {
    let mut p = crashy(FailStrategy::FailClose);
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&CRASH, true).unwrap(), Action::Pause);
    assert_eq!(s.client_response_status(), Some(503));
    assert_eq!(s.local_reply().unwrap().details, "wasm_fail_stream");
    assert!(!s.request_forwarded());
    let failures = p.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].callback, "proxy_on_request_headers");
    assert!(
        failures[0].message.contains("unreachable"),
        "{}",
        failures[0].message
    );
    assert!(
        failures[0].message.contains("wasm backtrace"),
        "{}",
        failures[0].message
    );
    assert!(p.is_failed(0));
    assert!(!p.configured());
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        s.client_response_status(),
        Some(503),
        "later streams fail too"
    );
    assert!(!s.is_filtered());
}

#[test]
fn fail_open_answers_the_trapping_stream_503_then_passes_traffic_unfiltered() {
    // failure_policy FAIL_OPEN, measured with Envoy 1.40: the stream that trapped still
    // gets 503 wasm_fail_stream; later streams skip the filter.
    let mut p = crashy(FailStrategy::FailOpen);
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&CRASH, true).unwrap(), Action::Pause);
    assert!(!s.request_forwarded());
    assert_eq!(s.client_response_status(), Some(503));
    assert_eq!(s.local_reply().unwrap().details, "wasm_fail_stream");
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Continue);
    assert!(!s.is_filtered());
    assert_eq!(
        s.upstream_request_header("x-filtered"),
        None,
        "the filter no longer runs"
    );
    s.respond(Upstream::new(204)).unwrap();
    s.complete().unwrap();
    assert_eq!(s.client_response_status(), Some(204));
}

#[test]
fn legacy_fail_open_lets_the_trapping_stream_through() {
    // The deprecated fail_open: true, measured with Envoy 1.40: the trapping request
    // passes through (200 via_upstream), and so do later ones.
    let mut p = crashy(FailStrategy::FailOpenLegacy);
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&CRASH, true).unwrap(), Action::Continue);
    assert!(s.request_forwarded());
    s.respond(Upstream::new(200).body(b"ok")).unwrap();
    assert_eq!(s.client_response_status(), Some(200));
    assert_eq!(s.client_response_body(), b"ok");
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert!(!s.is_filtered());
    assert!(s.request_forwarded());
    assert_eq!(s.upstream_request_header("x-filtered"), None);
}

#[test]
fn fail_reload_replaces_the_vm_after_a_backoff() {
    // FAIL_RELOAD, measured with Envoy 1.40: 503 for the trapping stream; streams during
    // the backoff get the 503 without a VM; a later one gets a fresh VM.
    let mut p = crashy(FailStrategy::FailReload);
    let mut s = p.stream(0);
    s.request_headers(&CRASH, true).unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    p.advance(Duration::from_millis(1200)).unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    assert!(!s.is_filtered());
    assert_eq!(p.reloads(), 0);
    p.advance(Duration::from_millis(800)).unwrap();
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Continue);
    assert!(s.is_filtered());
    assert_eq!(
        s.upstream_request_header("x-filtered").as_deref(),
        Some("1")
    );
    assert_eq!(p.reloads(), 1);
    assert!(p.configured());
}

fn configurable() -> Module {
    // on_configure accepts a 2-byte configuration only; on_tick counts per VM.
    common::module(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) local.get 1 i32.const 2 i32.eq)"#,
    )
}

#[test]
fn first_config_rejected_makes_the_plugin_unusable() {
    // Measured with Envoy 1.40 (ECDS, as Istio delivers it): 500 NFCF under every fail
    // strategy, FAIL_OPEN included.
    let module = configurable();
    for strategy in [FailStrategy::FailClose, FailStrategy::FailOpen] {
        let mut p = Plugin::builder(&module)
            .plugin_config(b"bad!")
            .fail_strategy(strategy)
            .build()
            .unwrap();
        assert!(!p.configured());
        let mut s = p.stream(0);
        s.request_headers(&GET, true).unwrap();
        assert_eq!(s.client_response_status(), Some(500), "{strategy:?}");
        assert!(!s.request_forwarded());
        assert_eq!(s.response_flags(), response_flags::NO_FILTER_CONFIG_FOUND);

        // A good update makes it usable.
        assert!(p.reconfigure(b"ok").unwrap());
        assert!(p.configured());
        let mut s = p.stream(0);
        s.request_headers(&GET, true).unwrap();
        assert!(s.is_filtered() && s.request_forwarded());
    }
}

#[test]
fn rejected_reconfigure_keeps_the_previous_config() {
    let module = configurable();
    let mut p = Plugin::builder(&module)
        .plugin_config(b"ok")
        .workers(2)
        .build()
        .unwrap();
    assert!(p.configured());
    assert_eq!(p.root_context_id(0), Some(1));
    assert!(!p.reconfigure(b"bad!").unwrap());
    assert!(p.configured(), "previous config stays in force");
    assert_eq!(p.root_context_id(0), Some(1), "old root context kept");
    assert!(p.reconfigure(b"no").unwrap());
    assert_eq!(
        p.root_context_id(0),
        Some(2),
        "a new root context (the rejected config never reached the workers)"
    );
    assert_eq!(p.root_context_id(1), Some(2));
}

#[test]
fn trap_in_vm_start_leaves_plugin_unconfigured() {
    let module = common::module(
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)"#,
    );
    let p = Plugin::builder(&module).build().unwrap();
    assert!(!p.configured());
    assert_eq!(p.failures()[0].callback, "proxy_on_vm_start");
}
