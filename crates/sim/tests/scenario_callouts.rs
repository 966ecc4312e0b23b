//! Scenario files that answer a module's HTTP callouts, expect its traps, give the
//! client's protocol and another filter's dynamic metadata (issue 28), run on the
//! simulated mesh with third-party-style modules: the harness's authorization fixture (`crates/wasm-host/tests/fixtures/concurrent-auth.wat`: asks cluster `authz`
//! `GET /check` per request and passes the answer's `:status`, or `none` when the callout
//! failed, upstream as `x-authz-status`) and a module that traps on every request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod filter_support;

use std::path::{Path, PathBuf};

use hybridmesh_scenario::runner::ScenarioReport;
use hybridmesh_sim::run::{run_file, Engine};
use proxy_wasm_host::Module;

fn scenario(name: &str, body: &str) -> PathBuf {
    filter_support::scenario_file(&format!("callouts-{name}"), body)
}

/// A module among the harness's test fixtures (`crates/wasm-host/tests/fixtures/`).
fn harness_fixture(file: &str) -> Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-host/tests/fixtures");
    Engine::wasm(Module::from_file(path.join(file)).unwrap())
}

fn auth() -> Engine {
    harness_fixture("concurrent-auth.wat")
}

/// Each step's problems, by step.
fn problems(r: &ScenarioReport) -> Vec<Vec<String>> {
    assert!(r.error.is_none(), "{:?}", r.error);
    r.steps.iter().map(|s| s.problems.clone()).collect()
}

const PROXY: &str = "proxy: {serverSidecars: false, calloutClusters: [authz]}\n";

#[test]
fn a_scenario_answers_callouts_with_a_response_a_failure_or_a_timeout() {
    let path = scenario(
        "answers",
        &format!(
            "{PROXY}steps:
  - name: the service allows
    request:
      authority: echo-svc.default
      callouts: [{{cluster: authz, status: 200, headers: {{x-user: alice}}, body: ok}}]
    expect: {{status: 200, upstreamHeaders: {{x-authz-status: '200'}}}}
  - name: the service refuses
    request: {{authority: echo-svc.default, callouts: [{{status: 403, body: no}}]}}
    expect: {{status: 200, upstreamHeaders: {{x-authz-status: '403'}}}}
  - name: the callout fails
    request: {{authority: echo-svc.default, callouts: [{{fail: true}}]}}
    expect: {{upstreamHeaders: {{x-authz-status: none}}}}
  - name: the service is too slow
    request: {{authority: echo-svc.default, callouts: [{{timeout: true}}]}}
    expect: {{upstreamHeaders: {{x-authz-status: '504'}}}}
  - name: three requests, each answered
    request:
      authority: echo-svc.default
      callouts: [{{status: 200}}]
    repeat: 3
    expect: {{upstreamHeaders: {{x-authz-status: '200'}}}}
"
        ),
    );
    let r = run_file(&path, &auth());
    assert_eq!(
        problems(&r),
        vec![Vec::<String>::new(); 5],
        "{:#?}",
        r.steps.iter().map(|s| &s.lines).collect::<Vec<_>>()
    );
    assert!(r.ok);
}

#[test]
fn missing_extra_and_misdirected_answers_are_problems() {
    let path = scenario(
        "wrong-answers",
        &format!(
            "{PROXY}steps:
  - name: no answer
    request: {{authority: echo-svc.default}}
  - name: one answer too many
    request: {{authority: echo-svc.default, callouts: [{{status: 200}}, {{fail: true}}]}}
    expect: {{status: 200}}
  - name: an answer for another service
    request: {{authority: echo-svc.default, callouts: [{{cluster: billing, status: 200}}]}}
"
        ),
    );
    let r = run_file(&path, &auth());
    let p = problems(&r);
    assert!(!r.ok);
    assert_eq!(
        p[0][0],
        "the module called out to authz (GET /check) and no answer was left for it: add one under request.callouts"
    );
    assert!(
        p[0][1].starts_with("no answer: the stream was held"),
        "{:?}",
        p[0]
    );
    assert_eq!(
        p[1],
        ["1 callout answer(s) left unused (fail): the module made 1 callout(s)"]
    );
    assert_eq!(
        p[2],
        ["callout 1 went to authz (GET /check), its answer is for billing"]
    );
}

#[test]
fn an_answer_must_be_one_thing() {
    let path = scenario(
        "both",
        &format!(
            "{PROXY}steps:
  - request: {{authority: echo-svc.default, callouts: [{{status: 200, timeout: true}}]}}
"
        ),
    );
    let r = run_file(&path, &auth());
    let error = r.error.unwrap();
    assert!(
        error.ends_with(
            "steps[0].request.callouts[0]: give one of a response (status, headers, body), fail or timeout"
        ),
        "{error}"
    );
}

/// A module that traps in every `proxy_on_request_headers`.
fn trapping() -> Engine {
    Engine::wasm(
        Module::from_bytes(
            br#"(module (memory (export "memory") 1)
                (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
                (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
                (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                  unreachable))"#,
        )
        .unwrap(),
    )
}

#[test]
fn a_step_can_expect_the_module_to_trap() {
    let path = scenario(
        "trap",
        "proxy: {serverSidecars: false, failStrategy: failReload}
steps:
  - name: the trap is what this step is about
    request: {authority: echo-svc.default}
    expect: {status: 503, trap: unreachable}
  - advance: 3s
  - name: expected, but another message
    request: {authority: echo-svc.default}
    expect: {trap: out of bounds}
  - advance: 3s
  - name: not expected
    request: {authority: echo-svc.default}
    expect: {status: 503}
",
    );
    let r = run_file(&path, &trapping());
    let p = problems(&r);
    assert!(p[0].is_empty(), "{:?}", p[0]);
    assert!(
        r.steps[0]
            .lines
            .iter()
            .any(|l| l.starts_with("trapped, as expected: gke.client")),
        "{:?}",
        r.steps[0].lines
    );
    // (FAIL_RELOAD: a fresh VM once 2 s have passed, so each step's request runs the
    // module again.)
    assert_eq!(
        p[2][0],
        "expected the module to trap with \"out of bounds\"; its traps said otherwise:"
    );
    assert!(p[2][1].contains("unreachable"), "{:?}", p[2]);
    assert!(
        p[4].len() == 1 && p[4][0].contains("unreachable"),
        "{:?}",
        p[4]
    );
    // A module that does not trap, with a trap expected.
    let quiet = Engine::wasm(
        Module::from_bytes(
            br#"(module (memory (export "memory") 1)
                (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#,
        )
        .unwrap(),
    );
    let r = run_file(&path, &quiet);
    let first = &problems(&r)[0];
    assert!(
        first[0].starts_with("status 200, expected 503"),
        "{first:?}"
    );
    assert_eq!(
        first[1],
        "expected the module to trap with \"unreachable\"; it did not trap"
    );
}

/// A module that copies the dynamic metadata `envoy.filters.http.jwt_authn` / `sub` (what
/// a JWT filter ahead of it would leave) into request header `x-user`.
fn metadata_reader() -> Engine {
    harness_fixture("jwt-metadata-and-bodies.wat")
}

#[test]
fn a_request_carries_another_filters_metadata_and_its_clients_protocol() {
    let path = scenario(
        "metadata",
        "proxy: {serverSidecars: false}
steps:
  - name: a JWT filter ahead of the module found alice
    request:
      authority: echo-svc.default
      metadata: {envoy.filters.http.jwt_authn: {sub: alice, groups: [a, b]}}
    expect:
      upstreamHeaders: {x-user: alice}
      # The service's answer has no content-length: over HTTP/1.1 Envoy chunks it.
      responseHeaders: {transfer-encoding: chunked}
  - name: none found, over HTTP/2
    request: {authority: echo-svc.default, protocol: HTTP/2}
    expect:
      upstreamHeaders: {x-user: null}
      responseHeaders: {transfer-encoding: null, content-length: null}
  - name: not a protocol
    request: {authority: echo-svc.default, protocol: HTTP/9}
",
    );
    let r = run_file(&path, &metadata_reader());
    assert_eq!(
        r.error
            .as_deref()
            .map(|e| e.rsplit(": steps").next().unwrap_or(e)),
        Some("[2].request.protocol: \"HTTP/9\" is not one of HTTP/1.0, HTTP/1.1, HTTP/2, HTTP/3")
    );
    // Without the bad step, the others pass.
    let text = std::fs::read_to_string(&path).unwrap();
    let good = &text[..text.find("  - name: not a protocol").unwrap()];
    std::fs::write(&path, good).unwrap();
    let r = run_file(&path, &metadata_reader());
    assert_eq!(problems(&r), vec![Vec::<String>::new(); 2]);
    assert!(r.ok);
}
