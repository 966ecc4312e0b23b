//! Streams in flight together (issue 28): each a [`StreamHandle`] driven with
//! [`Plugin::on`], in any order with callout answers, the clock and other streams. The
//! filter (`tests/fixtures/concurrent-auth.wat`) asks an authorization service per request
//! (timeout 300 ms) and writes a shared counter with the CAS its request read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use proxy_wasm_host::{Action, Error, Module, Plugin, StreamHandle, Upstream};

const GET: [(&str, &str); 3] = [(":method", "GET"), (":path", "/"), (":authority", "api")];

fn auth_filter() -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/concurrent-auth.wat");
    Module::from_file(path).unwrap()
}

fn plugin(module: &Module) -> Plugin {
    on_workers(module, 1)
}

fn on_workers(module: &Module, workers: usize) -> Plugin {
    let mut p = Plugin::builder(module)
        .workers(workers)
        .default_cluster("backend")
        .cluster("authz")
        .build()
        .unwrap();
    p.set_shared_data("hits", b"0");
    p
}

#[test]
fn callouts_answered_out_of_order_resume_their_own_streams() {
    let module = auth_filter();
    let mut p = plugin(&module);
    let mut a = p.new_stream(0);
    let mut b = p.new_stream(0);
    assert_eq!(
        p.on(&mut a).unwrap().request_headers(&GET, true).unwrap(),
        Action::Pause
    );
    assert_eq!(
        p.on(&mut b).unwrap().request_headers(&GET, true).unwrap(),
        Action::Pause
    );

    // Each stream sees its own callout; the plugin sees both.
    let of_a = p.on(&mut a).unwrap().http_callouts();
    let of_b = p.on(&mut b).unwrap().http_callouts();
    assert_eq!((of_a.len(), of_b.len()), (1, 1));
    assert_ne!(of_a[0].token, of_b[0].token);
    assert_eq!(p.http_callouts().len(), 2);

    // The second request's callout is answered first: only that request goes on.
    p.on(&mut b)
        .unwrap()
        .respond_http_call(of_b[0].token, 200, &[], b"")
        .unwrap();
    assert!(p.on(&mut b).unwrap().request_forwarded());
    assert!(!p.on(&mut a).unwrap().request_forwarded());
    assert_eq!(
        p.on(&mut b)
            .unwrap()
            .upstream_request_header("x-authz-status")
            .as_deref(),
        Some("200")
    );
    assert!(p.on(&mut b).unwrap().http_callouts()[0].answered);
    assert!(!p.on(&mut a).unwrap().http_callouts()[0].answered);

    // Then the first's, with a refusal.
    p.respond_http_call(of_a[0].token, 403, &[], b"no").unwrap();
    assert_eq!(
        p.on(&mut a)
            .unwrap()
            .upstream_request_header("x-authz-status")
            .as_deref(),
        Some("403")
    );
    assert!(p.failures().is_empty());
}

#[test]
fn an_unanswered_callout_times_out_when_the_clock_passes_its_timeout() {
    let module = auth_filter();
    let mut p = plugin(&module);
    let mut a = p.new_stream(0);
    p.on(&mut a).unwrap().request_headers(&GET, true).unwrap();
    let callout = p.on(&mut a).unwrap().http_callouts()[0].clone();
    assert_eq!(callout.timeout, Duration::from_millis(300));
    assert_eq!(callout.deadline(), Some(Duration::from_millis(300)));

    // 1 ms short of the timeout: still waiting.
    p.advance(Duration::from_millis(299)).unwrap();
    assert!(!p.on(&mut a).unwrap().request_forwarded());
    // At the timeout Envoy's router answers the callout with its 504 local reply.
    p.advance(Duration::from_millis(1)).unwrap();
    let s = p.on(&mut a).unwrap();
    assert!(s.request_forwarded());
    assert_eq!(
        s.upstream_request_header("x-authz-status").as_deref(),
        Some("504")
    );
    assert!(s.http_callouts()[0].answered);
    // A late answer is a usage error, as the callout is over.
    let late = p.respond_http_call(callout.token, 200, &[], b"");
    assert!(matches!(late, Err(Error::Usage(_))), "{late:?}");
}

#[test]
fn two_timeouts_in_one_advance_each_fire_at_their_deadline() {
    let module = auth_filter();
    let mut p = plugin(&module);
    let mut a = p.new_stream(0);
    p.on(&mut a).unwrap().request_headers(&GET, true).unwrap();
    p.advance(Duration::from_millis(100)).unwrap();
    let mut b = p.new_stream(0);
    p.on(&mut b).unwrap().request_headers(&GET, true).unwrap();
    // One advance past both deadlines (300 and 400 ms): each times out at its own.
    p.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(p.elapsed(), Duration::from_millis(1100));
    for h in [&mut a, &mut b] {
        let s = p.on(h).unwrap();
        assert_eq!(
            s.upstream_request_header("x-authz-status").as_deref(),
            Some("504")
        );
    }
}

#[test]
fn two_streams_race_on_shared_data_and_the_later_write_loses_its_cas() {
    let module = auth_filter();
    let mut p = plugin(&module);
    let mut a = p.new_stream(0);
    let mut b = p.new_stream(0);
    // Both requests read the counter's CAS before either writes.
    p.on(&mut a).unwrap().request_headers(&GET, true).unwrap();
    p.on(&mut b).unwrap().request_headers(&GET, true).unwrap();
    for h in [&mut a, &mut b] {
        let token = p.on(h).unwrap().http_callouts()[0].token;
        p.respond_http_call(token, 200, &[], b"").unwrap();
    }
    // b's response comes first and writes; a's write then carries a stale CAS.
    p.on(&mut b).unwrap().respond(Upstream::new(200)).unwrap();
    p.on(&mut a).unwrap().respond(Upstream::new(200)).unwrap();
    assert_eq!(written(&mut p, &mut b).as_deref(), Some("ok"));
    assert_eq!(written(&mut p, &mut a).as_deref(), Some("cas-mismatch"));
    assert_eq!(p.shared_data("hits").as_deref(), Some(&b"ok"[..]));
}

fn written(p: &mut Plugin, h: &mut StreamHandle) -> Option<String> {
    p.on(h).unwrap().client_response_header("x-shared-write")
}

#[test]
fn streams_on_two_workers_and_a_handle_of_another_plugin() {
    let module = auth_filter();
    let mut p = on_workers(&module, 2);
    let mut a = p.new_stream(0);
    let mut b = p.new_stream(1);
    p.on(&mut a).unwrap().request_headers(&GET, true).unwrap();
    p.on(&mut b).unwrap().request_headers(&GET, true).unwrap();
    // The same context id on two VMs; each stream still sees only its callout.
    let (ca, cb) = (
        p.on(&mut a).unwrap().http_callouts(),
        p.on(&mut b).unwrap().http_callouts(),
    );
    assert_eq!(ca.len(), 1);
    assert_eq!(cb.len(), 1);
    assert_eq!((ca[0].worker, cb[0].worker), (0, 1));
    assert_eq!(b.worker(), 1);

    let mut other = plugin(&module);
    let refused = other.on(&mut a).map(|_| ());
    assert!(
        matches!(&refused, Err(Error::Usage(m)) if m.contains("another plugin")),
        "{refused:?}"
    );
}
