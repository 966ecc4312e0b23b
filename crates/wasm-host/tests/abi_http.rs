//! Stream control and callouts: local replies (through the response callbacks),
//! pausing and resuming from an HTTP callout, gRPC callouts, foreign functions,
//! effective context, proxy_done.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{call, pairs, put, wat_bytes, ARGS, RET_PTR, RET_SIZE};
use proxy_wasm_host::{Action, Plugin, Route, Status, Upstream};

fn local_reply_guest() -> String {
    let headers = pairs(&[("X-Why", "policy")]);
    format!(
        r#"
  (data (i32.const 100) "denied")
  (data (i32.const 120) "no!")
  (data (i32.const 140) "{h}")
  (data (i32.const 200) "x-seen")
  (data (i32.const 220) "yes")
  (global $resp (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_send_local_response (i32.const 403) (i32.const 100) (i32.const 6)
      (i32.const 120) (i32.const 3) (i32.const 140) (i32.const {hl}) (i32.const -1)))
    i32.const 1)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    global.get $resp i32.const 1 i32.add global.set $resp
    (drop (call $proxy_add_header_map_value (i32.const 2) (i32.const 200) (i32.const 6) (i32.const 220) (i32.const 3)))
    i32.const 0)
  (func (export "response_calls") (result i32) global.get $resp)
"#,
        h = wat_bytes(&headers),
        hl = headers.len()
    )
}

#[test]
fn local_reply_runs_the_filters_response_callbacks() {
    let module = common::module(&local_reply_guest());
    let mut p = Plugin::builder(&module)
        .default_cluster("c")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    let action = s
        .request_headers(&[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    assert!(!s.request_forwarded());
    let reply = s.local_reply().unwrap();
    assert_eq!(
        (reply.status, reply.details.as_str(), reply.body.as_slice()),
        (403, "denied", &b"no!"[..])
    );
    assert_eq!(reply.grpc_status, None);
    assert_eq!(s.client_response_status(), Some(403));
    assert_eq!(s.client_response_header("x-why").as_deref(), Some("policy"));
    assert_eq!(
        s.client_response_header("x-seen").as_deref(),
        Some("yes"),
        "the filter saw its own reply"
    );
    assert_eq!(s.client_response_body(), b"no!");
    // Later request data is not forwarded; upstream cannot answer.
    assert!(s.respond(Upstream::new(200)).is_err());
    s.complete().unwrap();
    assert!(s.is_finished());
    assert_eq!(p.call_export(0, 1, "response_calls", &[]).unwrap(), [1]);
}

fn auth_guest() -> String {
    let headers = pairs(&[
        (":method", "GET"),
        (":path", "/check"),
        (":authority", "auth"),
    ]);
    format!(
        r#"
  (data (i32.const 100) "outbound|9000||auth")
  (data (i32.const 140) "{h}")
  (data (i32.const 400) "auth-body")
  (global $stream (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    local.get $ctx global.set $stream
    (drop (call $proxy_http_call (i32.const 100) (i32.const 19) (i32.const 140) (i32.const {hl})
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 300)))
    i32.const 1)
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get 3) (i32.const 310) (i32.const 314)))
    (drop (call $proxy_set_shared_data (i32.const 400) (i32.const 9) (i32.load (i32.const 310)) (i32.load (i32.const 314)) (i32.const 0)))
    (drop (call $proxy_set_effective_context (global.get $stream)))
    (drop (call $proxy_continue_stream (i32.const 0))))
"#,
        h = wat_bytes(&headers),
        hl = headers.len()
    )
}

#[test]
fn http_callout_pauses_until_answered_then_resumes() {
    let module = common::module(&auth_guest());
    let mut p = Plugin::builder(&module)
        .default_cluster("c")
        .cluster("outbound|9000||auth")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    assert_eq!(
        s.request_headers(&[(":method", "GET"), (":path", "/")], true)
            .unwrap(),
        Action::Pause
    );
    assert!(!s.request_forwarded());
    let callouts = s.plugin().http_callouts();
    assert_eq!(callouts.len(), 1);
    let c = &callouts[0];
    assert_eq!(c.upstream, "outbound|9000||auth");
    assert_eq!(c.context_id, s.context_id().unwrap());
    assert_eq!(c.timeout.as_millis(), 5000);
    assert!(c
        .headers
        .contains(&(":path".to_owned(), "/check".to_owned())));
    s.respond_http_call(c.token, 200, &[("x-auth", "ok")], b"allowed")
        .unwrap();
    assert!(s.request_forwarded());
    assert!(
        s.respond_http_call(c.token, 200, &[], b"").is_err(),
        "answered once"
    );
    s.respond(Upstream::new(200).address("10.0.0.2:80"))
        .unwrap();
    assert_eq!(s.client_response_status(), Some(200));
    s.complete().unwrap();
    assert_eq!(p.shared_data("auth-body").unwrap(), b"allowed");
}

#[test]
fn http_call_requires_pseudo_headers() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let (u, ul) = put(&mut p, ARGS, b"cluster");
    let (h, hl) = put(&mut p, ARGS + 100, &pairs(&[(":method", "GET")]));
    let args = [u, ul, h, hl, 0, 0, 0, 0, 1000, i64::from(RET_PTR)];
    assert_eq!(
        call(&mut p, 1, "proxy_http_call", &args),
        Status::BadArgument
    );
    assert!(p.http_callouts().is_empty());
}

#[test]
fn grpc_callouts_are_recorded_and_answered() {
    let module = common::module(
        r#"(global $closed (mut i32) (i32.const -1))
           (func (export "proxy_on_grpc_close") (param i32 i32 i32) local.get 2 global.set $closed)
           (func (export "closed") (result i32) global.get $closed)"#,
    );
    let mut p = Plugin::builder(&module)
        .cluster("xds-grpc")
        .build()
        .unwrap();
    let (u, ul) = put(&mut p, ARGS, b"xds-grpc");
    let (sv, sl) = put(&mut p, ARGS + 20, b"svc.Foo");
    let (m, ml) = put(&mut p, ARGS + 40, b"Bar");
    let (msg, msgl) = put(&mut p, ARGS + 60, b"\x08\x01");
    let unary = [
        u,
        ul,
        sv,
        sl,
        m,
        ml,
        0,
        0,
        msg,
        msgl,
        100,
        i64::from(RET_PTR),
    ];
    assert_eq!(call(&mut p, 1, "proxy_grpc_call", &unary), Status::Ok);
    let unary_token = common::read_u32(&mut p, RET_PTR);
    let stream = [u, ul, sv, sl, m, ml, 0, 0, i64::from(RET_PTR)];
    assert_eq!(call(&mut p, 1, "proxy_grpc_stream", &stream), Status::Ok);
    let stream_token = i64::from(common::read_u32(&mut p, RET_PTR));
    assert_eq!(
        call(&mut p, 1, "proxy_grpc_send", &[stream_token, msg, msgl, 1]),
        Status::Ok
    );
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_grpc_send",
            &[i64::from(unary_token), msg, msgl, 0]
        ),
        Status::BadArgument
    );
    assert_eq!(
        call(&mut p, 1, "proxy_grpc_cancel", &[stream_token]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_grpc_send", &[stream_token, msg, msgl, 0]),
        Status::NotFound
    );
    assert_eq!(call(&mut p, 1, "proxy_grpc_close", &[77]), Status::NotFound);
    let calls = p.grpc_callouts();
    assert_eq!(calls[0].service, "svc.Foo");
    assert_eq!(calls[0].messages, [b"\x08\x01".to_vec()]);
    assert!(calls[1].streaming && calls[1].half_closed && calls[1].cancelled);
    p.grpc_close(unary_token, 14, "unavailable").unwrap();
    assert_eq!(p.call_export(0, 1, "closed", &[]).unwrap(), [14]);
}

#[test]
fn foreign_functions_and_effective_context() {
    let module = common::module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1)"#,
    );
    let mut p = Plugin::builder(&module)
        .routes(vec![Route::new("r").header("x-a", "1").cluster("c1")])
        .default_cluster("c0")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET"), ("x-a", "1")], true)
        .unwrap();
    let id = s.context_id().unwrap();
    let p = s.plugin();
    let (n, nl) = put(p, ARGS, b"clear_route_cache");
    assert_eq!(
        call(
            p,
            id,
            "proxy_call_foreign_function",
            &[n, nl, 0, 0, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::Ok
    );
    let (n, nl) = put(p, ARGS, b"no_such_function");
    assert_eq!(
        call(
            p,
            id,
            "proxy_call_foreign_function",
            &[n, nl, 0, 0, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::NotFound
    );
    assert_eq!(
        call(p, 1, "proxy_set_effective_context", &[i64::from(id)]),
        Status::Ok
    );
    assert_eq!(
        call(p, 1, "proxy_set_effective_context", &[999]),
        Status::BadArgument
    );
    assert_eq!(
        call(p, id, "proxy_continue_stream", &[2]),
        Status::Unimplemented
    );
    assert_eq!(
        call(p, id, "proxy_continue_stream", &[7]),
        Status::BadArgument
    );
    assert_eq!(
        call(p, id, "proxy_done", &[]),
        Status::NotFound,
        "not pending finalization"
    );
    let rematches = s.route_rematches();
    assert_eq!(rematches.len(), 1);
    assert!(rematches[0].changed_headers.is_empty());
    assert_eq!(rematches[0].route.as_deref(), Some("r"));
}

#[test]
fn proxy_done_finishes_a_context_that_returned_false_from_on_done() {
    let module = common::module(
        r#"(global $logged (mut i32) (i32.const 0))
           (func (export "proxy_on_done") (param i32) (result i32) i32.const 0)
           (func (export "proxy_on_log") (param i32) i32.const 1 global.set $logged)
           (func (export "logged") (result i32) global.get $logged)"#,
    );
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET")], true).unwrap();
    let id = s.context_id().unwrap();
    s.complete().unwrap();
    assert!(!s.is_finished());
    // Envoy logs the stream before it destroys the filter: proxy_on_log already ran.
    assert_eq!(s.plugin().call_export(0, 1, "logged", &[]).unwrap(), [1]);
    assert_eq!(call(s.plugin(), id, "proxy_done", &[]), Status::Ok);
    assert!(s.is_finished());
    assert_eq!(p.call_export(0, 1, "logged", &[]).unwrap(), [1]);
}
