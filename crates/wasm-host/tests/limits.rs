//! What a module under test may use: a call that never returns, a VM that grows
//! its memory without end and a request that logs millions of lines are each
//! stopped, and the failure names the limit and how to raise it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use proxy_wasm_host::{Level, Limits, Module, Plugin};

const GET: [(&str, &str); 3] = [(":method", "GET"), (":path", "/"), (":authority", "a")];

fn limits() -> Limits {
    Limits {
        call_time: Duration::from_millis(200),
        memory: 4 << 20,
        logs: 5,
        ticks: 1_000,
    }
}

#[test]
fn a_request_callback_that_never_returns_traps_at_the_time_limit() {
    let module = common::module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (loop $forever (br $forever)) i32.const 0)"#,
    );
    let mut p = Plugin::builder(&module)
        .limits(limits())
        .default_cluster("c")
        .build()
        .unwrap();
    let start = Instant::now();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let failure = &p.failures()[0];
    assert_eq!(failure.callback, "proxy_on_request_headers");
    assert!(
        failure.message.ends_with(
            "\nran longer than 200ms, the harness's limit per call (an endless loop?; raise it with --time-per-call)"
        ),
        "{}",
        failure.message
    );
}

#[test]
fn a_start_function_that_never_returns_fails_the_build_within_the_limit() {
    let module = Module::from_bytes(
        br#"(module (memory (export "memory") 1)
              (func $start (loop $forever (br $forever)))
              (start $start)
              (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#,
    )
    .unwrap();
    let start = Instant::now();
    // The configuration canary is the first VM to start.
    let e = Plugin::builder(&module)
        .limits(limits())
        .build()
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        e.to_string().contains(
            "failed to instantiate the configuration canary: its start function ran longer than 200ms, the harness's limit per call (an endless loop?; raise it with --time-per-call)"
        ),
        "{e}"
    );
}

#[test]
fn memory_grown_past_the_limit_traps_and_names_it() {
    // 2 pages + 100 = 6.4 MiB, past a 4 MiB limit.
    let module = common::module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (memory.grow (i32.const 100))) i32.const 0)"#,
    );
    let mut p = Plugin::builder(&module)
        .limits(limits())
        .default_cluster("c")
        .build()
        .unwrap();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    assert_eq!(s.client_response_status(), Some(503));
    let failure = &p.failures()[0];
    assert!(
        failure.message.contains(
            "the module grew its linear memory to 6684672 bytes, past the harness's memory limit of 4 MiB per VM (raise it with --memory-per-vm)"
        ),
        "{}",
        failure.message
    );
}

#[test]
fn logs_past_the_limit_are_counted_not_kept() {
    // 1,000 proxy_log calls on one request; 5 are kept, then one warning.
    let module = common::module(
        r#"(data (i32.const 600) "line")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
             (loop $again
               (drop (call $proxy_log (i32.const 2) (i32.const 600) (i32.const 4)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
             i32.const 0)"#,
    );
    let mut p = Plugin::builder(&module)
        .limits(limits())
        .default_cluster("c")
        .build()
        .unwrap();
    let before = p.log_count();
    let mut s = p.stream(0);
    s.request_headers(&GET, true).unwrap();
    let logs = p.logs_since(before);
    let lines: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines[..5], ["line"; 5]);
    assert_eq!(
        lines[5..],
        ["995 more log entries not kept: the harness keeps at most 5 per request (raise it with --logs-per-request)"]
    );
    assert_eq!(logs[5].level, Level::Warn);
    assert!(p.failures().is_empty());
}

#[test]
fn more_workers_than_a_plugin_can_have_is_a_usage_error() {
    let module = common::module("");
    let e = Plugin::builder(&module)
        .workers(100_000_000)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "100000000 workers: a plugin runs at most 256 worker VMs"
    );
}

#[test]
fn more_ticks_than_a_plugin_may_fire_stop_the_advance_and_say_so() {
    // A 1 ms tick period on two VMs (worker 0 and the main thread): half a
    // simulated second is the 1,000 ticks allowed.
    let module = common::module(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32)
             (drop (call $proxy_set_tick_period_milliseconds (i32.const 1))) i32.const 1)
           (func (export "proxy_on_tick") (param i32))"#,
    );
    let mut p = Plugin::builder(&module).limits(limits()).build().unwrap();
    p.advance(Duration::from_millis(500)).unwrap();
    let e = p.advance(Duration::from_secs(3600)).unwrap_err();
    assert!(matches!(e, proxy_wasm_host::Error::Limit(_)));
    assert_eq!(
        e.to_string(),
        "the module's ticks: 1000 fired, the harness's limit per plugin, with 3599.999s of this advance left (raise it with --ticks-per-plugin)"
    );
}
