//! A filter built with the proxy-wasm Rust SDK 0.2.5 (tests/fixtures/sdk-probe) runs in
//! the harness: lifecycle, properties, headers, local reply, metrics, ticks, panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxy_wasm_host::{Connection, FailStrategy, Level, Metadata, Module, Plugin, Proxy, Upstream};

fn module() -> Module {
    Module::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sdk_probe.wasm"
    ))
    .unwrap()
}

const GET: [(&str, &str); 3] = [(":method", "GET"), (":path", "/"), (":authority", "echo")];

#[test]
fn sdk_filter_runs_a_request() {
    let module = module();
    let mut p = Plugin::builder(&module)
        .proxy(Proxy::istio("gke"))
        .plugin_config(b"{}")
        .trace(true)
        .build()
        .unwrap();
    assert!(p.configured());
    // Envoy configures the canary, the main thread's VM and each worker's.
    let configured: Vec<usize> = p
        .logs()
        .iter()
        .filter(|l| l.level == Level::Info && l.message == "configured with 2 bytes")
        .map(|l| l.worker)
        .collect();
    assert_eq!(configured, [p.canary_vm(), p.main_vm(), 0]);
    let mut s = p.stream(0).connection(Connection::plaintext());
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        s.upstream_request_header("x-probe-cluster").as_deref(),
        Some("gke")
    );
    s.respond(
        Upstream::new(200)
            .address("10.24.1.9:8080")
            .istio_workload(";;;;aws"),
    )
    .unwrap();
    assert_eq!(
        s.client_response_header("x-probe-upstream").as_deref(),
        Some("10.24.1.9:8080")
    );
    let encoded = Metadata::istio_workload(";;;;aws")
        .encode()
        .len()
        .to_string();
    assert_eq!(
        s.client_response_header("x-probe-workload-bytes"),
        Some(encoded)
    );
    s.complete().unwrap();
    assert!(s.is_finished());
    assert_eq!(p.metric("probe_requests"), Some(1));
    assert!(p
        .host_calls()
        .iter()
        .any(|c| c.function == "proxy_get_property"));
}

#[test]
fn sdk_filter_sees_serialization_failure_for_hosts_without_metadata() {
    let module = module();
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    s.respond(Upstream::new(200).address("10.0.0.1:15443"))
        .unwrap();
    assert_eq!(
        s.client_response_header("x-probe-workload-bytes")
            .as_deref(),
        Some("SerializationFailure")
    );
}

#[test]
fn sdk_local_reply_goes_through_response_callbacks() {
    let module = module();
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET"), (":path", "/deny")], true)
        .unwrap();
    assert_eq!(s.client_response_status(), Some(403));
    assert_eq!(s.client_response_body(), b"denied");
    assert_eq!(
        s.client_response_header("x-probe").as_deref(),
        Some("denied")
    );
    assert_eq!(
        s.client_response_header("x-probe-upstream").as_deref(),
        Some("none")
    );
}

#[test]
fn sdk_ticks_and_rejected_config() {
    let module = module();
    let mut p = Plugin::builder(&module).workers(2).build().unwrap();
    p.advance(Duration::from_millis(2500)).unwrap();
    assert_eq!(
        p.shared_data("ticks").unwrap().len(),
        6,
        "(2 workers + the main thread's VM) x 2 ticks"
    );
    let mut rejected = Plugin::builder(&module)
        .plugin_config(b"reject")
        .build()
        .unwrap();
    assert!(!rejected.configured());
    assert_eq!(rejected.logs_at(Level::Error), ["config rejected"]);
    assert!(rejected.reconfigure(b"{}").unwrap());
}

#[test]
fn sdk_panic_is_a_trap_with_the_panic_message_logged() {
    let module = module();
    let mut p = Plugin::builder(&module)
        .fail_strategy(FailStrategy::FailReload)
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET"), (":path", "/panic")], true)
        .unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    let critical = p.logs_at(Level::Critical);
    assert!(
        critical
            .iter()
            .any(|m| m.contains("probe panic on request 2")),
        "{critical:?}"
    );
    assert_eq!(p.failures()[0].callback, "proxy_on_request_headers");
    // Envoy backs off before it reloads: a stream right after the trap gets the 503
    // without the guest.
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    assert_eq!(p.reloads(), 0);
    p.advance(Duration::from_secs(2)).unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert!(s.request_forwarded());
    assert_eq!(p.reloads(), 1);
}
