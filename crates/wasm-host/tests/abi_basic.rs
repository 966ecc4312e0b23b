//! Logging, clocks, ticks, buffers, metrics, shared data and queues, each host function
//! called alone through the shim guest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{call, put, read_u32, read_u64, returned, ARGS, OOB, RET_PTR, RET_SIZE};
use proxy_wasm_host::{Level, MetricKind, Module, Plugin, Status};

fn plugin(extra: &str) -> Plugin {
    let module = common::module(extra);
    Plugin::builder(&module)
        .plugin_config(b"{\"a\":1}")
        .vm_config(b"vm-cfg")
        .build()
        .unwrap()
}

#[test]
fn log_records_level_worker_and_context() {
    let mut p = plugin("");
    let (ptr, len) = put(&mut p, ARGS, b"hello");
    assert_eq!(call(&mut p, 1, "proxy_log", &[4, ptr, len]), Status::Ok);
    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(
        (logs[0].worker, logs[0].context_id, logs[0].level),
        (0, 1, Level::Error)
    );
    assert_eq!(p.logs_at(Level::Error), vec!["hello".to_owned()]);
    // Unknown level, bad pointer.
    assert_eq!(
        call(&mut p, 1, "proxy_log", &[9, ptr, len]),
        Status::BadArgument
    );
    assert_eq!(
        call(&mut p, 1, "proxy_log", &[2, OOB, len]),
        Status::InvalidMemoryAccess
    );
    assert_eq!(
        call(&mut p, 1, "proxy_log", &[2, ptr, -1]),
        Status::InvalidMemoryAccess
    );
    assert_eq!(p.logs().len(), 1);
}

#[test]
fn log_level_filters_and_is_reported() {
    let module = common::module("");
    let mut p = Plugin::builder(&module)
        .log_level(Level::Warn)
        .build()
        .unwrap();
    let (ptr, len) = put(&mut p, ARGS, b"dropped");
    assert_eq!(call(&mut p, 1, "proxy_log", &[2, ptr, len]), Status::Ok);
    assert!(p.logs().is_empty());
    assert_eq!(
        call(&mut p, 1, "proxy_get_log_level", &[i64::from(RET_PTR)]),
        Status::Ok
    );
    assert_eq!(read_u32(&mut p, RET_PTR), Level::Warn as u32);
    assert_eq!(
        call(&mut p, 1, "proxy_get_log_level", &[OOB]),
        Status::InvalidMemoryAccess
    );
}

#[test]
fn time_follows_the_harness_clock() {
    let mut p = plugin("");
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_current_time_nanoseconds",
            &[i64::from(RET_PTR)]
        ),
        Status::Ok
    );
    let t0 = read_u64(&mut p, RET_PTR);
    assert_eq!(t0, 1_767_225_600 * 1_000_000_000);
    p.advance(Duration::from_millis(1500)).unwrap();
    call(
        &mut p,
        1,
        "proxy_get_current_time_nanoseconds",
        &[i64::from(RET_PTR)],
    );
    assert_eq!(read_u64(&mut p, RET_PTR) - t0, 1_500_000_000);
    assert_eq!(
        call(&mut p, 1, "proxy_get_current_time_nanoseconds", &[OOB]),
        Status::InvalidMemoryAccess
    );
}

/// WASI's clocks as Envoy answers them: realtime is the wall clock, monotonic the steady
/// clock, which is never 0 (Envoy's is time since boot; the Go runtime aborts at start on
/// a zero: `fatal error: nanotime returning zero`, found with the Go SDK corpus).
#[test]
fn wasi_clocks_are_the_wall_clock_and_a_steady_clock_that_is_never_zero() {
    let module = Module::from_bytes(
        br#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "now") (param $id i32) (result i64)
    (if (call $clock (local.get $id) (i64.const 1) (i32.const 64)) (then (return (i64.const -1))))
    (i64.load (i32.const 64))))"#,
    )
    .unwrap();
    let mut p = Plugin::builder(&module).build().unwrap();
    let now = |p: &mut Plugin, id: i64| p.call_export(0, 1, "now", &[id]).unwrap()[0];
    let (wall, steady) = (now(&mut p, 0), now(&mut p, 1));
    assert_eq!(wall, 1_767_225_600 * 1_000_000_000);
    assert!(steady > 0, "monotonic clock at start: {steady}");
    p.advance(Duration::from_millis(1500)).unwrap();
    assert_eq!(now(&mut p, 0) - wall, 1_500_000_000);
    assert_eq!(now(&mut p, 1) - steady, 1_500_000_000);
    // Envoy supports neither CPU-time clock: ENOTSUP (58) -> the fixture's -1.
    assert_eq!(now(&mut p, 2), -1);
}

/// WASI `fd_write` to stdout/stderr as Envoy logs it (proxy-wasm-cpp-host `writevImpl`):
/// one message per call with its buffers joined, the trailing newline dropped, stdout at
/// info and stderr at error; other descriptors are EBADF. (The Go runtime prints a panic
/// in many small writes; Envoy logs each as its own message.)
#[test]
fn wasi_fd_write_logs_one_message_per_call_as_envoy_does() {
    let module = Module::from_bytes(
        br#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello\n")
  (data (i32.const 120) "a")
  (data (i32.const 130) "b\n")
  (data (i32.const 140) "\n")
  ;; iovecs: [hello\n] at 200; [a][b\n] at 216; [\n] at 240
  (data (i32.const 200) "\64\00\00\00\06\00\00\00")
  (data (i32.const 216) "\78\00\00\00\01\00\00\00\82\00\00\00\02\00\00\00")
  (data (i32.const 240) "\8c\00\00\00\01\00\00\00")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "write") (param $fd i32) (param $iov i32) (param $n i32) (result i32)
    (call $write (local.get $fd) (local.get $iov) (local.get $n) (i32.const 300)))
  (func (export "written") (result i32) (i32.load (i32.const 300))))"#,
    )
    .unwrap();
    let mut p = Plugin::builder(&module).build().unwrap();
    let write = |p: &mut Plugin, fd: i64, iov: i64, n: i64| {
        p.call_export(0, 1, "write", &[fd, iov, n]).unwrap()[0]
    };
    let start = p.log_count();
    assert_eq!(write(&mut p, 1, 200, 1), 0);
    assert_eq!(p.call_export(0, 1, "written", &[]).unwrap()[0], 6);
    assert_eq!(write(&mut p, 2, 216, 2), 0);
    assert_eq!(p.call_export(0, 1, "written", &[]).unwrap()[0], 3);
    assert_eq!(write(&mut p, 1, 240, 1), 0);
    assert_eq!(write(&mut p, 1, 240, 0), 0, "an empty write logs nothing");
    assert_eq!(write(&mut p, 3, 200, 1), 8, "EBADF");
    assert_eq!(write(&mut p, 1, 65_530, 1), 21, "EFAULT");
    let logged: Vec<(Level, String)> = p
        .logs_since(start)
        .into_iter()
        .map(|l| (l.level, l.message))
        .collect();
    assert_eq!(
        logged,
        [
            (Level::Info, "hello".to_string()),
            (Level::Error, "ab".to_string()),
            (Level::Info, String::new()),
        ]
    );
}

const TICK_COUNTER: &str = r#"
  (global $ticks (mut i32) (i32.const 0))
  (func (export "proxy_on_tick") (param i32) global.get $ticks i32.const 1 i32.add global.set $ticks)
  (func (export "ticks") (result i32) global.get $ticks)
"#;

#[test]
fn ticks_are_delivered_when_the_clock_advances() {
    let mut p = plugin(TICK_COUNTER);
    assert_eq!(
        call(&mut p, 1, "proxy_set_tick_period_milliseconds", &[1000]),
        Status::Ok
    );
    let ticks = |p: &mut Plugin| p.call_export(0, 1, "ticks", &[]).unwrap()[0];
    p.advance(Duration::from_millis(999)).unwrap();
    assert_eq!(ticks(&mut p), 0);
    p.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(ticks(&mut p), 1);
    p.advance(Duration::from_millis(3500)).unwrap();
    assert_eq!(ticks(&mut p), 4);
    assert_eq!(
        call(&mut p, 1, "proxy_set_tick_period_milliseconds", &[0]),
        Status::Ok
    );
    p.advance(Duration::from_secs(10)).unwrap();
    assert_eq!(ticks(&mut p), 4);
}

#[test]
fn configuration_buffers_follow_envoy_availability() {
    let mut p = plugin("");
    let args = |t: i64| [t, 0, 100, i64::from(RET_PTR), i64::from(RET_SIZE)];
    assert_eq!(
        call(&mut p, 1, "proxy_get_buffer_bytes", &args(6)),
        Status::Ok
    );
    assert_eq!(returned(&mut p), b"vm-cfg");
    // Start/max: a window of the buffer.
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_buffer_bytes",
            &[6, 3, 2, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::Ok
    );
    assert_eq!(returned(&mut p), b"cf");
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_buffer_bytes",
            &[6, 7, 1, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::BadArgument
    );
    // Plugin configuration only inside proxy_on_configure; bodies only once they exist.
    assert_eq!(
        call(&mut p, 1, "proxy_get_buffer_bytes", &args(7)),
        Status::NotFound
    );
    assert_eq!(
        call(&mut p, 1, "proxy_get_buffer_bytes", &args(0)),
        Status::NotFound
    );
    assert_eq!(
        call(&mut p, 1, "proxy_get_buffer_bytes", &args(9)),
        Status::BadArgument
    );
    assert_eq!(
        call(&mut p, 1, "proxy_get_buffer_bytes", &[6, 0, 100, OOB, 0]),
        Status::InvalidMemoryAccess
    );
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_buffer_status",
            &[6, i64::from(RET_SIZE), i64::from(RET_PTR)]
        ),
        Status::Ok
    );
    assert_eq!(read_u32(&mut p, RET_SIZE), 6);
    // Config buffers are read-only.
    let (ptr, len) = put(&mut p, ARGS, b"x");
    assert_eq!(
        call(&mut p, 1, "proxy_set_buffer_bytes", &[6, 0, 0, ptr, len]),
        Status::BadArgument
    );
}

/// on_configure copies the plugin configuration into shared data `config`.
const CONFIG_TO_SHARED: &str = r#"
  (data (i32.const 200) "config")
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 300) (i32.const 304)))
    (drop (call $proxy_set_shared_data (i32.const 200) (i32.const 6) (i32.load (i32.const 300)) (i32.load (i32.const 304)) (i32.const 0)))
    i32.const 1)
"#;

#[test]
fn plugin_configuration_is_readable_in_on_configure() {
    let p = plugin(CONFIG_TO_SHARED);
    assert!(p.configured());
    assert_eq!(p.shared_data("config").unwrap(), b"{\"a\":1}");
}

#[test]
fn request_body_get_and_set_follow_envoy_copy_from() {
    let get = [0, 0, 100, i64::from(RET_PTR), i64::from(RET_SIZE)];
    // The filter pauses on the body, so the chunk stays buffered for it.
    let mut p = plugin(
        r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) i32.const 1)"#,
    );
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "POST"), (":path", "/")], false)
        .unwrap();
    s.request_body(b"hello", false).unwrap();
    let id = s.context_id().unwrap();
    assert!(s.upstream_request_body().is_empty());
    assert_eq!(
        call(s.plugin(), id, "proxy_get_buffer_bytes", &get),
        Status::Ok
    );
    assert_eq!(returned(s.plugin()), b"hello");
    let (ptr, len) = put(s.plugin(), ARGS, b">>");
    assert_eq!(
        call(
            s.plugin(),
            id,
            "proxy_set_buffer_bytes",
            &[0, 0, 0, ptr, len]
        ),
        Status::Ok
    ); // prepend
    let (ptr, len) = put(s.plugin(), ARGS, b"<<");
    assert_eq!(
        call(
            s.plugin(),
            id,
            "proxy_set_buffer_bytes",
            &[0, 100, 0, ptr, len]
        ),
        Status::Ok
    ); // append
    assert_eq!(
        call(
            s.plugin(),
            id,
            "proxy_set_buffer_bytes",
            &[0, 2, 1, ptr, len]
        ),
        Status::BadArgument
    ); // inject
    call(s.plugin(), id, "proxy_get_buffer_bytes", &get);
    assert_eq!(returned(s.plugin()), b">>hello<<");
    let (ptr, len) = put(s.plugin(), ARGS, b"new");
    assert_eq!(
        call(
            s.plugin(),
            id,
            "proxy_set_buffer_bytes",
            &[0, 0, 9, ptr, len]
        ),
        Status::Ok
    ); // replace
       // Resume: the buffered (modified) body goes upstream.
    assert_eq!(
        call(s.plugin(), id, "proxy_continue_stream", &[0]),
        Status::Ok
    );
    assert_eq!(s.upstream_request_body(), b"new");
}

#[test]
fn metrics_follow_envoy_semantics() {
    let mut p = plugin("");
    let (ptr, len) = put(&mut p, ARGS, b"requests_total");
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_define_metric",
            &[0, ptr, len, i64::from(RET_PTR)]
        ),
        Status::Ok
    );
    let counter = i64::from(read_u32(&mut p, RET_PTR));
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_define_metric",
            &[0, ptr, len, i64::from(RET_PTR)]
        ),
        Status::Ok
    );
    assert_eq!(
        i64::from(read_u32(&mut p, RET_PTR)),
        counter,
        "same name, same id"
    );
    assert_eq!(
        call(&mut p, 1, "proxy_increment_metric", &[counter, 2]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_increment_metric", &[counter, -1]),
        Status::BadArgument
    );
    assert_eq!(
        call(&mut p, 1, "proxy_record_metric", &[counter, 3]),
        Status::Ok
    );
    assert_eq!(p.metric("requests_total"), Some(5));
    let (ptr, len) = put(&mut p, ARGS, b"inflight");
    call(
        &mut p,
        1,
        "proxy_define_metric",
        &[1, ptr, len, i64::from(RET_PTR)],
    );
    let gauge = i64::from(read_u32(&mut p, RET_PTR));
    assert_eq!(
        call(&mut p, 1, "proxy_record_metric", &[gauge, 10]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_increment_metric", &[gauge, -3]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_get_metric", &[gauge, i64::from(RET_PTR)]),
        Status::Ok
    );
    assert_eq!(read_u64(&mut p, RET_PTR), 7);
    let (ptr, len) = put(&mut p, ARGS, b"latency");
    call(
        &mut p,
        1,
        "proxy_define_metric",
        &[2, ptr, len, i64::from(RET_PTR)],
    );
    let hist = i64::from(read_u32(&mut p, RET_PTR));
    assert_eq!(
        call(&mut p, 1, "proxy_record_metric", &[hist, 42]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_get_metric", &[hist, i64::from(RET_PTR)]),
        Status::BadArgument
    );
    assert_eq!(
        call(&mut p, 1, "proxy_increment_metric", &[999, 1]),
        Status::NotFound
    );
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_define_metric",
            &[3, ptr, len, i64::from(RET_PTR)]
        ),
        Status::BadArgument
    );
    let metrics = p.metrics();
    assert_eq!(
        metrics.iter().map(|m| m.kind).collect::<Vec<_>>(),
        [
            MetricKind::Counter,
            MetricKind::Gauge,
            MetricKind::Histogram
        ]
    );
    assert_eq!(metrics[2].samples, [42]);
}

#[test]
fn shared_data_cas() {
    let mut p = plugin("");
    let (k, kl) = put(&mut p, ARGS, b"key");
    let (v, vl) = put(&mut p, ARGS + 100, b"v1");
    let get = [
        k,
        kl,
        i64::from(RET_PTR),
        i64::from(RET_SIZE),
        i64::from(ARGS + 200),
    ];
    assert_eq!(
        call(&mut p, 1, "proxy_get_shared_data", &get),
        Status::NotFound
    );
    assert_eq!(
        call(&mut p, 1, "proxy_set_shared_data", &[k, kl, v, vl, 7]),
        Status::CasMismatch
    );
    assert_eq!(
        call(&mut p, 1, "proxy_set_shared_data", &[k, kl, v, vl, 0]),
        Status::Ok
    );
    assert_eq!(call(&mut p, 1, "proxy_get_shared_data", &get), Status::Ok);
    assert_eq!(returned(&mut p), b"v1");
    let cas = i64::from(read_u32(&mut p, ARGS + 200));
    assert_ne!(cas, 0);
    let (v2, vl2) = put(&mut p, ARGS + 100, b"v2");
    assert_eq!(
        call(&mut p, 1, "proxy_set_shared_data", &[k, kl, v2, vl2, cas]),
        Status::Ok
    );
    assert_eq!(
        call(&mut p, 1, "proxy_set_shared_data", &[k, kl, v2, vl2, cas]),
        Status::CasMismatch,
        "stale cas"
    );
    assert_eq!(p.shared_data("key").unwrap(), b"v2");
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_shared_data",
            &[k, kl, OOB, i64::from(RET_SIZE), 0]
        ),
        Status::InvalidMemoryAccess
    );
}

#[test]
fn two_workers_share_shared_data() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).workers(2).build().unwrap();
    assert_eq!(
        p.root_context_id(1),
        Some(1),
        "each VM allocates its own context ids"
    );
    p.write_memory(0, ARGS, b"k").unwrap();
    p.write_memory(0, ARGS + 10, b"from-0").unwrap();
    let out = p
        .call_export(
            0,
            1,
            "call_proxy_set_shared_data",
            &[i64::from(ARGS), 1, i64::from(ARGS + 10), 6, 0],
        )
        .unwrap();
    assert_eq!(out, [0]);
    p.write_memory(1, ARGS, b"k").unwrap();
    let get = [
        i64::from(ARGS),
        1,
        i64::from(RET_PTR),
        i64::from(RET_SIZE),
        i64::from(ARGS + 100),
    ];
    assert_eq!(
        p.call_export(1, 1, "call_proxy_get_shared_data", &get)
            .unwrap(),
        [0]
    );
    let ptr = u32::from_le_bytes(p.read_memory(1, RET_PTR, 4).unwrap().try_into().unwrap());
    assert_eq!(p.read_memory(1, ptr, 6).unwrap(), b"from-0");
}

const QUEUE_READY: &str = r#"
  (global $ready (mut i32) (i32.const 0))
  (func (export "proxy_on_queue_ready") (param i32 i32) local.get 1 global.set $ready)
  (func (export "ready") (result i32) global.get $ready)
"#;

#[test]
fn queues_register_resolve_enqueue_dequeue_and_notify() {
    let module = common::module(QUEUE_READY);
    let mut p = Plugin::builder(&module)
        .workers(2)
        .identity("plugin", "root", "vm1")
        .build()
        .unwrap();
    p.write_memory(0, ARGS, b"jobs").unwrap();
    p.write_memory(0, ARGS + 10, b"vm1").unwrap();
    let resolve = [
        i64::from(ARGS + 10),
        3,
        i64::from(ARGS),
        4,
        i64::from(RET_PTR),
    ];
    assert_eq!(
        call(&mut p, 1, "proxy_resolve_shared_queue", &resolve),
        Status::NotFound
    );
    // Worker 1 registers (and owns) the queue.
    p.write_memory(1, ARGS, b"jobs").unwrap();
    assert_eq!(
        p.call_export(
            1,
            1,
            "call_proxy_register_shared_queue",
            &[i64::from(ARGS), 4, i64::from(RET_PTR)]
        )
        .unwrap(),
        [0]
    );
    assert_eq!(
        call(&mut p, 1, "proxy_resolve_shared_queue", &resolve),
        Status::Ok
    );
    let id = i64::from(read_u32(&mut p, RET_PTR));
    let deq = [id, i64::from(RET_PTR), i64::from(RET_SIZE)];
    assert_eq!(
        call(&mut p, 1, "proxy_dequeue_shared_queue", &deq),
        Status::Empty
    );
    let (v, vl) = put(&mut p, ARGS + 20, b"job-1");
    assert_eq!(
        call(&mut p, 1, "proxy_enqueue_shared_queue", &[id, v, vl]),
        Status::Ok
    );
    // The owner (worker 1's root) was told, not worker 0.
    assert_eq!(p.call_export(1, 1, "ready", &[]).unwrap(), [id]);
    assert_eq!(p.call_export(0, 1, "ready", &[]).unwrap(), [0]);
    assert_eq!(p.queue("jobs").unwrap(), vec![b"job-1".to_vec()]);
    assert_eq!(
        call(&mut p, 1, "proxy_dequeue_shared_queue", &deq),
        Status::Ok
    );
    assert_eq!(returned(&mut p), b"job-1");
    assert_eq!(
        call(&mut p, 1, "proxy_dequeue_shared_queue", &deq),
        Status::Empty
    );
    assert_eq!(
        call(&mut p, 1, "proxy_enqueue_shared_queue", &[99, v, vl]),
        Status::NotFound
    );
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_dequeue_shared_queue",
            &[99, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::NotFound
    );
}
