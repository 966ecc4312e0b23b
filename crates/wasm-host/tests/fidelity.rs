//! Envoy 1.40's behaviour where the harness used to differ (issue 14), pinned with the
//! WAT fixtures that measured it in real Envoy (`tests/fixtures/fidelity/*.wat`; each
//! fixture's header comment says what Envoy did). Every test drives the fixture the way
//! the measurement did and checks what the filter logged and what client and upstream saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use proxy_wasm_host::{
    response_flags, Action, ConfigDelivery, Connection, Error, FailStrategy, Module, Plugin,
    Status, Upstream,
};

fn fixture(name: &str) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fidelity")
        .join(format!("{name}.wat"));
    Module::from_file(path).unwrap()
}

/// The fixture's own lines (`fidelity: ...`), in order.
fn said(p: &Plugin) -> Vec<String> {
    p.logs()
        .into_iter()
        .filter(|l| l.message.starts_with("fidelity: "))
        .map(|l| l.message["fidelity: ".len()..].to_owned())
        .collect()
}

/// Lines logged since `start`, without the prefix.
fn said_since(p: &Plugin, start: usize) -> Vec<String> {
    said(p).into_iter().skip(start).collect()
}

/// (worker, line) of every fixture line.
fn said_by(p: &Plugin) -> Vec<(usize, String)> {
    p.logs()
        .into_iter()
        .filter(|l| l.message.starts_with("fidelity: "))
        .map(|l| (l.worker, l.message["fidelity: ".len()..].to_owned()))
        .collect()
}

const GET: [(&str, &str); 3] = [
    (":authority", "example"),
    (":path", "/"),
    (":method", "GET"),
];

// ---------------------------------------------------------------------------------------
// Gap 1: a request paused on its headers holds its body
// ---------------------------------------------------------------------------------------

#[test]
fn gap1_a_request_paused_on_headers_holds_its_body_until_resumed() {
    let module = fixture("gap1-pause-headers-body");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    let post = [
        (":authority", "example"),
        (":path", "/up"),
        (":method", "POST"),
    ];
    assert_eq!(s.request_headers(&post, false).unwrap(), Action::Pause);
    // The body comes in two parts; the filter hears nothing and nothing goes upstream.
    assert_eq!(s.request_body(b"hello", false).unwrap(), Action::Pause);
    assert_eq!(s.request_body(b"-body", true).unwrap(), Action::Pause);
    assert!(!s.request_forwarded());
    assert_eq!(s.upstream_request_body(), b"");
    s.plugin().advance(Duration::from_millis(2999)).unwrap();
    assert_eq!(said(s.plugin()), ["request_headers ctx=2 eos=0 -> Pause"]);
    // The tick resumes the stream; Envoy then delivers ONE body callback with all of it,
    // after on_tick returned, and headers and body go upstream together.
    s.plugin().advance(Duration::from_millis(1)).unwrap();
    assert_eq!(
        said(s.plugin()),
        [
            "request_headers ctx=2 eos=0 -> Pause",
            "tick resumes ctx=2 continue_stream(0)=0",
            "request_body ctx=2 size=10 eos=1 -> Continue",
        ]
    );
    assert!(s.request_forwarded());
    assert_eq!(s.upstream_request_body(), b"hello-body");
    s.respond(
        Upstream::new(200)
            .address("127.0.0.1:18080")
            .body(b"upstream-ok\n"),
    )
    .unwrap();
    assert_eq!(s.client_response_status(), Some(200));
}

#[test]
fn gap1_a_get_paused_on_headers_goes_upstream_on_resume() {
    let module = fixture("gap1-pause-headers-body");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Pause);
    s.plugin().advance(Duration::from_secs(3)).unwrap();
    assert!(s.request_forwarded());
    assert_eq!(
        said(s.plugin()),
        [
            "request_headers ctx=2 eos=1 -> Pause",
            "tick resumes ctx=2 continue_stream(0)=0"
        ],
        "no body callback without a body"
    );
}

#[test]
fn gap1_a_response_paused_on_headers_holds_its_body_too() {
    let module = common::module(
        r#"(global $bodies (mut i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    global.get $bodies i32.const 1 i32.add global.set $bodies
    i32.const 0)
  (func (export "bodies") (result i32) global.get $bodies)"#,
    );
    let mut p = Plugin::builder(&module)
        .default_cluster("c")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    s.upstream(Upstream::new(200)).unwrap();
    assert_eq!(s.response_headers(&[], false).unwrap(), Action::Pause);
    assert_eq!(s.response_body(b"ab", false).unwrap(), Action::Pause);
    assert_eq!(s.response_body(b"cd", true).unwrap(), Action::Pause);
    assert_eq!(s.client_response_status(), None);
    let id = i64::from(s.context_id().unwrap());
    let bodies = |s: &mut proxy_wasm_host::Stream<'_>| {
        s.plugin().call_export(0, 1, "bodies", &[]).unwrap()[0]
    };
    assert_eq!(bodies(&mut s), 0, "no body callback while held");
    let id = u32::try_from(id).unwrap();
    s.plugin()
        .call_export(0, id, "call_proxy_continue_stream", &[1])
        .unwrap();
    assert_eq!(bodies(&mut s), 1, "one body callback with everything");
    assert_eq!(s.client_response_status(), Some(200));
    assert_eq!(s.client_response_body(), b"abcd");
}

// ---------------------------------------------------------------------------------------
// Gap 2: local replies
// ---------------------------------------------------------------------------------------

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The client's headers without `date` (its value is the harness clock's).
fn without_date(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.into_iter().filter(|(k, _)| k != "date").collect()
}

#[test]
fn gap2_the_filters_own_headers_come_before_content_length_and_type() {
    let module = fixture("gap2-local-reply-header-order");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    s.complete().unwrap();
    assert_eq!(
        said(&p),
        [
            "send_local_response=0",
            "response_headers n=7 eos=0",
            "response header :status: 403",
            "response header x-first: 1",
            "response header x-second: 2",
            "response header x-dup: a",
            "response header x-dup: b",
            "response header content-length: 7",
            "response header content-type: text/plain",
            "response_body size=7 eos=1",
        ]
    );
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        without_date(s.client_response_headers().unwrap()),
        pairs(&[
            (":status", "403"),
            ("x-first", "1"),
            ("x-second", "2"),
            ("x-dup", "a"),
            ("x-dup", "b"),
            ("content-length", "7"),
            ("content-type", "text/plain"),
            ("server", "envoy"),
        ])
    );
    assert_eq!(
        s.client_response_header("date").as_deref(),
        Some("Thu, 01 Jan 2026 00:00:00 GMT")
    );
    assert_eq!(s.client_response_body(), b"denied\n");
    assert_eq!(s.local_reply().unwrap().details, "wasm_probe_reply");
}

#[test]
fn gap2_grpc_status_is_ignored_for_a_plain_request() {
    let module = fixture("gap2-local-reply-grpc");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        said_since(s.plugin(), 0)[1..],
        [
            "response_headers n=4 eos=0",
            "response header :status: 503",
            "response header x-probe: grpc",
            "response header content-type: application/json",
            "response header content-length: 12",
            "response_body size=12 eos=1",
        ]
    );
    assert_eq!(s.client_response_status(), Some(503));
    assert_eq!(s.client_response_body(), b"backend down");
}

#[test]
fn gap2_a_grpc_request_gets_a_trailers_only_grpc_reply() {
    let module = fixture("gap2-local-reply-grpc");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    let grpc = [
        (":method", "POST"),
        (":path", "/svc.Svc/Method"),
        (":authority", "example"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    s.request_headers(&grpc, false).unwrap();
    assert_eq!(
        said(s.plugin())[1..],
        [
            "response_headers n=5 eos=1",
            "response header :status: 200",
            "response header x-probe: grpc",
            "response header content-type: application/grpc",
            "response header grpc-status: 14",
            "response header grpc-message: backend down",
        ],
        "no body callback; the filter's content-type replaced in place"
    );
    assert_eq!(s.client_response_status(), Some(200));
    assert_eq!(s.client_response_body(), b"");
    assert_eq!(s.local_reply().unwrap().grpc_status, Some(14));
}

/// A guest that answers every request locally with the given status, details, body and
/// grpc_status (the ABI shim), to check the mapping and the empty-body case.
fn replier(status: u32, details: &str, body: &str, grpc_status: i32) -> Module {
    common::module(&format!(
        r#"
  (data (i32.const 100) "{details}")
  (data (i32.const 200) "{body}")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_send_local_response (i32.const {status}) (i32.const 100) (i32.const {dl})
      (i32.const 200) (i32.const {bl}) (i32.const 0) (i32.const 0) (i32.const {grpc_status})))
    i32.const 1)
"#,
        dl = details.len(),
        bl = body.len()
    ))
}

#[test]
fn gap2_empty_bodies_grpc_status_mapping_and_details() {
    // Empty body: the filter sees :status only; the client gets content-length: 0.
    let module = replier(401, "denied by policy", "", -1);
    let mut p = Plugin::builder(&module)
        .default_cluster("c")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        without_date(s.client_response_headers().unwrap()),
        pairs(&[
            (":status", "401"),
            ("server", "envoy"),
            // The HTTP/1.1 codec appends it last (measured with the Go SDK corpus).
            ("content-length", "0")
        ])
    );
    assert_eq!(s.local_reply().unwrap().details, "denied_by_policy");
    // A gRPC request without a grpc_status: mapped from the HTTP status, no message.
    // Over HTTP/2 (curl --http2-prior-knowledge) that is all; over HTTP/1.1 the codec
    // closes the connection (the request's body never came) and frames the empty reply
    // (curl 7.88 over HTTP/1.1, Envoy 1.40).
    let reply = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "16"),
        ("server", "envoy"),
    ];
    let http1 = [("connection", "close"), ("content-length", "0")];
    for (protocol, framing) in [("HTTP/2", &[][..]), ("HTTP/1.1", &http1[..])] {
        let mut s = p
            .stream(0)
            .connection(Connection::plaintext().protocol(protocol));
        s.request_headers(
            &[
                (":method", "POST"),
                (":path", "/a.B/C"),
                ("content-type", "application/grpc+proto"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            without_date(s.client_response_headers().unwrap()),
            pairs(&[&reply[..], framing].concat()),
            "{protocol}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Gap 3: callouts to unknown clusters; responses go to the root context
// ---------------------------------------------------------------------------------------

#[test]
fn gap3_callouts_to_a_cluster_envoy_does_not_know() {
    let module = fixture("gap3-callout-unknown-cluster");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .cluster("callout")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Continue);
    assert!(s.request_forwarded(), "the request itself is unaffected");
    assert_eq!(
        said(s.plugin()),
        [
            "http_call(cluster nope)=2 token=0",
            "grpc_call(service \"nope\")=4 token=-1",
            "grpc_call(GrpcService envoy_grpc nope)=10 token=-1",
            "grpc_close ctx=1 token=5 status=14",
        ]
    );
    assert!(p.http_callouts().is_empty());
    assert!(p.grpc_callouts().is_empty());
}

#[test]
fn gap3_callouts_to_declared_and_routed_clusters_are_made() {
    let module = common::module("");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .cluster("auth")
        .build()
        .unwrap();
    let headers = common::pairs(&[(":method", "GET"), (":path", "/"), (":authority", "a")]);
    for (cluster, expected) in [
        (&b"auth"[..], Status::Ok),
        (b"upstream", Status::Ok),
        (b"nope", Status::BadArgument),
    ] {
        let (u, ul) = common::put(&mut p, common::ARGS, cluster);
        let (h, hl) = common::put(&mut p, common::ARGS + 100, &headers);
        p.write_memory(0, common::RET_PTR, &[0xff; 4]).unwrap();
        let args = [u, ul, h, hl, 0, 0, 0, 0, 1000, i64::from(common::RET_PTR)];
        assert_eq!(common::call(&mut p, 1, "proxy_http_call", &args), expected);
        if expected == Status::BadArgument {
            assert_eq!(
                common::read_u32(&mut p, common::RET_PTR),
                0,
                "token word set to 0"
            );
        }
    }
    let tokens: Vec<u32> = p.http_callouts().iter().map(|c| c.token).collect();
    assert_eq!(tokens, [4, 6], "HTTP tokens are even, from 4, as Envoy's");
}

#[test]
fn gap3b_callout_responses_go_to_the_root_context() {
    let module = fixture("gap3-callout-response-context");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .cluster("callout")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Pause);
    let callout = s.plugin().http_callouts()[0].clone();
    assert_eq!(
        (callout.token, callout.context_id, callout.root_id),
        (4, 2, 1)
    );
    s.respond_http_call(
        4,
        200,
        &[
            ("server", "BaseHTTP/0.6 Python/3.11.7"),
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("content-type", "text/plain"),
            ("x-upstream", "yes"),
            ("content-length", "12"),
            ("x-envoy-upstream-service-time", "1"),
        ],
        b"upstream-ok\n",
    )
    .unwrap();
    assert!(s.request_forwarded(), "resumed after set_effective_context");
    s.respond(Upstream::new(200).address("127.0.0.1:18080"))
        .unwrap();
    assert_eq!(
        said(s.plugin()),
        [
            "request_headers ctx=2 http_call(callout)=0 token=4 -> Pause",
            "http_call_response ctx=1 token=4 headers=7 body=12",
            "continue_stream(0) in the callback's context=0",
            "continue_stream(0) after set_effective_context(2)=0",
            "response_headers ctx=2",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Gap 4: the configuration canary and the main thread's VM
// ---------------------------------------------------------------------------------------

#[test]
fn gap4_canary_main_thread_and_worker_vms() {
    let module = fixture("gap4-lifecycle");
    let mut p = Plugin::builder(&module)
        .plugin_config(b"cfg")
        .workers(2)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let (main, canary) = (p.main_vm(), p.canary_vm());
    assert_eq!((main, canary), (2, 3));
    let boot = |vm| {
        vec![
            (vm, "context_create ctx=1 parent=0".to_owned()),
            (vm, "vm_start ctx=1 vm_config_size=0".to_owned()),
            (vm, "configure ctx=1 config_size=3".to_owned()),
        ]
    };
    let mut expected = [boot(canary), boot(main), boot(0), boot(1)].concat();
    assert_eq!(said_by(&p), expected);
    // A request on worker 1, then every root ticks, the main thread's too.
    let mut s = p.stream(1);
    s.request_headers(&GET, true).unwrap();
    s.respond(Upstream::new(200)).unwrap();
    s.complete().unwrap();
    p.advance(Duration::from_secs(2)).unwrap();
    for line in [
        "context_create ctx=2 parent=1",
        "request_headers ctx=2",
        "done ctx=2",
        "delete ctx=2",
    ] {
        expected.push((1, line.to_owned()));
    }
    for vm in [0, 1, main] {
        expected.push((vm, "tick ctx=1".to_owned()));
    }
    assert_eq!(said_by(&p), expected);
    assert_eq!(p.root_context_id(main), Some(1));
}

#[test]
fn gap4_an_update_runs_a_new_canary_then_new_roots_in_the_same_vms() {
    let module = fixture("gap4-lifecycle");
    let mut p = Plugin::builder(&module)
        .plugin_config(b"cfg")
        .workers(2)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    s.complete().unwrap();
    let before = said(&p).len();
    assert!(p.reconfigure(b"cfg2").unwrap());
    let (main, canary) = (p.main_vm(), p.canary_vm());
    let lines: Vec<(usize, String)> = said_by(&p).into_iter().skip(before).collect();
    let root = |vm, id: u32| {
        vec![
            (vm, format!("context_create ctx={id} parent=0")),
            (vm, format!("vm_start ctx={id} vm_config_size=0")),
            (vm, format!("configure ctx={id} config_size=4")),
            (vm, "done ctx=1".to_owned()),
            (vm, "delete ctx=1".to_owned()),
        ]
    };
    let canary_lines = vec![
        (canary, "context_create ctx=1 parent=0".to_owned()),
        (canary, "vm_start ctx=1 vm_config_size=0".to_owned()),
        (canary, "configure ctx=1 config_size=4".to_owned()),
    ];
    // Worker 0 used context 2 for its stream: its new root is 3 (as W1's in Envoy).
    assert_eq!(
        lines,
        [canary_lines, root(main, 2), root(0, 3), root(1, 2)].concat()
    );
    assert_eq!(p.root_context_id(0), Some(3));
    let before = said(&p).len();
    p.advance(Duration::from_secs(2)).unwrap();
    let mut ticks = said_since(&p, before);
    ticks.sort();
    assert_eq!(
        ticks,
        ["tick ctx=2", "tick ctx=2", "tick ctx=3"],
        "only the new roots tick"
    );
}

// ---------------------------------------------------------------------------------------
// Gap 5: no configuration, raw configuration
// ---------------------------------------------------------------------------------------

#[test]
fn gap5_no_configuration_is_size_0_and_a_null_buffer() {
    let module = fixture("gap5-plugin-configuration");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let lines = said(&p);
    assert!(
        lines.contains(&"configure config_size=0 get_buffer_bytes(PluginConfiguration, 0, 1024)=0 ptr=0 len=0 hex=".to_owned()),
        "{lines:?}"
    );
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    let last = said(s.plugin()).last().cloned().unwrap();
    assert!(
        last.starts_with("request_headers get_buffer_bytes(PluginConfiguration)=1"),
        "NotFound outside configure: {last}"
    );
}

#[test]
fn gap5_a_raw_configuration_reaches_the_module_as_is() {
    let module = fixture("gap5-plugin-configuration");
    let p = Plugin::builder(&module)
        .plugin_config(b"hello")
        .default_cluster("upstream")
        .build()
        .unwrap();
    let lines = said(&p);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "configure config_size=5 get_buffer_bytes(PluginConfiguration, 0, 1024)=0 ptr="
        ) && l.ends_with("len=5 hex=68656c6c6f")),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Gap 6: what the connection manager adds
// ---------------------------------------------------------------------------------------

#[test]
fn gap6_headers_the_connection_manager_adds() {
    let module = fixture("gap6-hcm-headers");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":authority", "127.0.0.1:10000"),
            (":path", "/up"),
            (":method", "GET"),
            ("user-agent", "curl/7.88.1"),
            ("accept", "*/*"),
        ],
        true,
    )
    .unwrap();
    s.respond(
        Upstream::new(200)
            .address("127.0.0.1:18080")
            .service_time_ms(3)
            .header("server", "BaseHTTP/0.6 Python/3.11.7")
            .header("date", "Wed, 21 Oct 2015 07:28:00 GMT")
            .header("content-type", "text/plain")
            .header("x-upstream", "yes")
            .header("content-length", "12")
            .body(b"upstream-ok\n"),
    )
    .unwrap();
    let lines = said(s.plugin());
    let request_id = s.upstream_request_header("x-request-id").unwrap();
    assert_eq!(request_id.len(), 36);
    assert_eq!(&request_id[14..15], "4", "a version 4 UUID");
    assert_eq!(
        lines,
        [
            "request_headers n=8 eos=1".to_owned(),
            "request header :authority: 127.0.0.1:10000".to_owned(),
            "request header :path: /up".to_owned(),
            "request header :method: GET".to_owned(),
            "request header :scheme: http".to_owned(),
            "request header user-agent: curl/7.88.1".to_owned(),
            "request header accept: */*".to_owned(),
            "request header x-forwarded-proto: http".to_owned(),
            format!("request header x-request-id: {request_id}"),
            "response_headers n=7 eos=0".to_owned(),
            "response header :status: 200".to_owned(),
            "response header server: BaseHTTP/0.6 Python/3.11.7".to_owned(),
            "response header date: Wed, 21 Oct 2015 07:28:00 GMT".to_owned(),
            "response header content-type: text/plain".to_owned(),
            "response header x-upstream: yes".to_owned(),
            "response header content-length: 12".to_owned(),
            "response header x-envoy-upstream-service-time: 3".to_owned(),
        ]
    );
    assert_eq!(
        s.client_response_headers().unwrap(),
        pairs(&[
            (":status", "200"),
            ("server", "envoy"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("content-type", "text/plain"),
            ("x-upstream", "yes"),
            ("content-length", "12"),
            ("x-envoy-upstream-service-time", "3"),
        ]),
        "server overwritten in place, the upstream's date kept"
    );
}

#[test]
fn gap6_client_supplied_values_are_kept_and_scheme_follows_them() {
    let module = fixture("gap6-hcm-headers");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(
        &[
            (":authority", "a"),
            (":path", "/"),
            (":method", "GET"),
            ("x-request-id", "client-supplied-id"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-foo", "bar"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(
        s.upstream_request_headers().unwrap(),
        pairs(&[
            (":authority", "a"),
            (":path", "/"),
            (":method", "GET"),
            (":scheme", "https"),
            ("x-request-id", "client-supplied-id"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-foo", "bar"),
            // The router's, for the route's timeout (Envoy's default 15 s).
            ("x-envoy-expected-rq-timeout-ms", "15000"),
        ])
    );
    // Over TLS the connection manager says https.
    let mut s = p
        .stream(0)
        .connection(Connection::mtls("spiffe://a", "spiffe://b"));
    s.request_headers(&GET, true).unwrap();
    assert_eq!(
        s.upstream_request_header(":scheme").as_deref(),
        Some("https")
    );
    assert_eq!(
        s.upstream_request_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

// ---------------------------------------------------------------------------------------
// Gap 7: a configuration the canary rejects
// ---------------------------------------------------------------------------------------

#[test]
fn gap7_a_rejected_first_config_by_ecds_answers_500_nfcf_under_every_strategy() {
    let module = fixture("gap7-configure-fails");
    for strategy in [
        FailStrategy::FailClose,
        FailStrategy::FailOpen,
        FailStrategy::FailOpenLegacy,
        FailStrategy::FailReload,
    ] {
        let mut p = Plugin::builder(&module)
            .fail_strategy(strategy)
            .default_cluster("upstream")
            .build()
            .unwrap();
        assert!(!p.config_accepted() && !p.configured(), "{strategy:?}");
        let mut s = p.stream(0);
        s.request_headers(&GET, true).unwrap();
        assert!(!s.request_forwarded(), "{strategy:?}");
        assert!(!s.is_filtered());
        assert_eq!(
            without_date(s.client_response_headers().unwrap()),
            pairs(&[
                (":status", "500"),
                ("server", "envoy"),
                // The HTTP/1.1 codec appends it last (measured with the Go SDK corpus).
                ("content-length", "0")
            ]),
            "{strategy:?}"
        );
        assert_eq!(s.response_flags(), response_flags::NO_FILTER_CONFIG_FOUND);
        assert_eq!(s.local_reply().unwrap().details, "");
        // A gRPC client over HTTP/2, as measured.
        let mut s = p
            .stream(0)
            .connection(Connection::plaintext().protocol("HTTP/2"));
        s.request_headers(
            &[
                (":method", "POST"),
                (":path", "/a.B/C"),
                ("content-type", "application/grpc"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            without_date(s.client_response_headers().unwrap()),
            pairs(&[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "2"),
                ("server", "envoy"),
            ])
        );
        // Only the canary ran the module.
        let canary = p.canary_vm();
        assert!(p.logs().iter().all(|l| l.worker == canary));
        assert_eq!(said(&p), ["configure ctx=1 -> false"]);
    }
}

#[test]
fn gap7_a_rejected_static_config_stops_envoy() {
    let module = fixture("gap7-configure-fails");
    let err = Plugin::builder(&module)
        .delivery(ConfigDelivery::Static)
        .identity("probe", "", "probe")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::ConfigRejected { ref plugin, .. } if plugin == "probe"));
    assert!(
        err.to_string()
            .contains("Unable to create Wasm plugin \"probe\""),
        "{err}"
    );
}

#[test]
fn gap7_a_rejected_update_never_touches_the_running_vms() {
    // on_configure accepts a 2-byte configuration only.
    let module = common::module(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) local.get 1 i32.const 2 i32.eq)"#,
    );
    let mut p = Plugin::builder(&module)
        .plugin_config(b"ok")
        .workers(2)
        .trace(true)
        .build()
        .unwrap();
    let calls = p.host_calls().len();
    let logs = p.log_count();
    assert!(!p.reconfigure(b"bad!").unwrap());
    assert!(p.configured());
    assert_eq!(p.host_calls().len(), calls);
    assert_eq!(p.log_count(), logs);
    assert_eq!(p.root_context_id(0), Some(1));
}

#[test]
fn gap7_a_thread_local_configure_failure_skips_the_filter() {
    let module = fixture("gap7-configure-fails-after-canary");
    for strategy in [
        FailStrategy::FailClose,
        FailStrategy::FailOpen,
        FailStrategy::FailReload,
    ] {
        let mut p = Plugin::builder(&module)
            .fail_strategy(strategy)
            .default_cluster("upstream")
            .build()
            .unwrap();
        assert!(p.config_accepted(), "the canary accepted it");
        assert!(!p.configured());
        assert_eq!(
            said(&p),
            [
                "configure (first in the process: the canary) -> true",
                "configure (not first) -> false",
                "configure (not first) -> false",
            ]
        );
        let mut s = p.stream(0);
        assert_eq!(s.request_headers(&GET, true).unwrap(), Action::Continue);
        assert!(s.request_forwarded() && !s.is_filtered(), "{strategy:?}");
        s.respond(Upstream::new(200).address("127.0.0.1:18080"))
            .unwrap();
        assert_eq!(s.client_response_status(), Some(200));
        assert_eq!(said(&p).len(), 3, "no filter callbacks");
    }
}

// ---------------------------------------------------------------------------------------
// gRPC callout timeouts (issue 28)
// ---------------------------------------------------------------------------------------

#[test]
fn a_grpc_callout_times_out_on_the_clock_with_status_14() {
    let module = fixture("gap8-grpc-callout-timeout");
    let mut p = Plugin::builder(&module)
        .default_cluster("upstream")
        .cluster("callout")
        .build()
        .unwrap();
    let mut s = p.new_stream(0);
    assert_eq!(
        p.on(&mut s).unwrap().request_headers(&GET, true).unwrap(),
        Action::Pause
    );
    let call = p.on(&mut s).unwrap().grpc_callouts()[0].clone();
    assert_eq!(
        call.deadline(),
        Some(call.issued_at + Duration::from_millis(300))
    );
    // Not before its deadline.
    p.advance(Duration::from_millis(299)).unwrap();
    assert_eq!(said(&p), ["grpc_call(300)=0 token=5"]);
    assert!(!p.on(&mut s).unwrap().request_forwarded());
    // At it: what Envoy 1.36.4, 1.39.3 and 1.40.0 delivered (the fixture's header).
    p.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(
        said(&p),
        [
            "grpc_call(300)=0 token=5",
            "grpc_close ctx=1 token=5 status=14 get_status=14 message=\"upstream request timeout{response_timeout}\""
        ]
    );
    assert!(p.on(&mut s).unwrap().request_forwarded());
    assert_eq!(p.grpc_callouts()[0].deadline(), None);
    // It is over: no second close.
    p.advance(Duration::from_secs(5)).unwrap();
    assert_eq!(said(&p).len(), 2);
}

/// The one route of the gap9 measurement: prefix `/` with `x-route: yes`, to `up`.
fn gap9_plugin(module: &Module) -> Plugin {
    Plugin::builder(module)
        .routes(vec![proxy_wasm_host::Route::new("only-with-header")
            .header("x-route", "yes")
            .cluster("up")])
        .build()
        .unwrap()
}

const GAP9_PATH: [(&str, &str); 3] = [(":method", "GET"), (":path", "/p"), (":authority", "fid")];

#[test]
fn gap9_a_request_no_route_matches_gets_the_routers_404_through_the_filter() {
    let module = fixture("gap9-reset-and-no-route");
    let mut p = gap9_plugin(&module);
    let mut s = p.stream(0);
    s.request_headers(&GAP9_PATH, true).unwrap();
    assert!(!s.request_forwarded());
    assert_eq!(s.route(), None);
    assert_eq!(s.client_response_status(), Some(404));
    assert!(s.client_response_body().is_empty());
    assert_eq!(
        without_date(s.client_response_headers().unwrap()),
        // As Envoy's client got it over HTTP/1.1: date, server, content-length: 0.
        pairs(&[
            (":status", "404"),
            ("server", "envoy"),
            ("content-length", "0")
        ])
    );
    assert_eq!(s.response_flags(), response_flags::NO_ROUTE_FOUND);
    assert_eq!(s.local_reply().unwrap().details, "route_not_found");
    s.complete().unwrap();
    // What Envoy 1.40.0 and 1.36.4 delivered (the fixture's header): proxy_on_log first.
    assert_eq!(
        said(&p),
        [
            "request_headers route_name=1 cluster_name=1",
            "response_headers details=0:route_not_found eos=1",
            "log details=0:route_not_found code=0:404",
            "done",
        ]
    );
}

#[test]
fn gap9_a_routed_stream_is_logged_before_it_is_done() {
    let module = fixture("gap9-reset-and-no-route");
    let mut p = gap9_plugin(&module);
    let mut s = p.stream(0);
    let mut headers = GAP9_PATH.to_vec();
    headers.push(("x-route", "yes"));
    s.request_headers(&headers, true).unwrap();
    assert!(s.request_forwarded());
    s.respond(Upstream::new(200).body(b"up-ok\n")).unwrap();
    s.complete().unwrap();
    assert_eq!(
        said(&p),
        [
            "request_headers route_name=0:only-with-header cluster_name=0:up",
            "response_headers details=0:via_upstream eos=0",
            "log details=0:via_upstream code=0:200",
            "done",
        ]
    );
}

#[test]
fn gap9_a_stream_the_filter_resets_ends_at_once_even_when_it_continues() {
    let module = fixture("gap9-reset-and-no-route");
    for (routed, route_name) in [
        (true, "route_name=0:only-with-header cluster_name=0:up"),
        (false, "route_name=1 cluster_name=1"),
    ] {
        let mut p = gap9_plugin(&module);
        let mut s = p.stream(0);
        let mut headers = GAP9_PATH.to_vec();
        headers.push(("x-close", "1"));
        if routed {
            headers.push(("x-route", "yes"));
        }
        assert_eq!(s.request_headers(&headers, true).unwrap(), Action::Continue);
        assert!(s.was_reset());
        assert!(!s.request_forwarded(), "nothing reaches the upstream");
        assert_eq!(s.client_response_status(), None, "the client sees a reset");
        assert!(s.is_finished());
        assert!(s.respond(Upstream::new(200)).is_err());
        assert_eq!(
            said(&p),
            [
                format!("request_headers {route_name}"),
                "close_stream(0)= 0".to_owned(),
                "log details=0:wasm_close_stream code=1".to_owned(),
                "done".to_owned(),
            ]
        );
    }
}
