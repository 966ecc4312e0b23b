;; The harness's demo filter: the module its API docs' examples run (each loads it with
;; `Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))`).
;; Small, in WAT so it needs no build, and doing one thing per request header so that each
;; example can show one part of the harness:
;;
;; - configure: the plugin configuration `reject` is refused (proxy_on_configure returns
;;   false); otherwise it defines the counter `demo_requests`, registers the shared queue
;;   `requests`, asks for a tick every 1000 ms and logs `configured` (info).
;; - every tick: logs `tick` (info).
;; - every request: counts it in `demo_requests`, logs `request` (info), enqueues `request`
;;   on `requests`, then
;;   - `x-trap` present: traps (`unreachable`);
;;   - `x-deny` present: a local reply 403 `denied` (details `demo_denied`);
;;   - `x-callout` present: GET /check to cluster `authz` (timeout 500 ms), paused until its
;;     answer, whose `:status` (`none` when it failed) goes upstream as `x-authz-status`;
;;   - `x-grpc` present: a gRPC call `demo.Checker/Check` to cluster `authz` (timeout
;;     500 ms), paused until it closes, then logs `grpc closed` (info);
;;   - otherwise: adds `x-demo: yes`, `x-greeting` (shared data `greeting`, when set) and
;;     `x-cluster` (property `xds.node.metadata.CLUSTER_ID`, when there is one).
;; - every response: adds `x-demo-response: yes`.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick_period (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call"
    (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "authz")
  ;; GET /check to authz, serialized as proxy-wasm header pairs (70 bytes)
  (data (i32.const 120) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/check\00:authority\00authz\00")
  (data (i32.const 200) ":status")
  (data (i32.const 210) "x-authz-status")
  (data (i32.const 230) "none")
  (data (i32.const 240) "x-deny")
  (data (i32.const 250) "denied")
  (data (i32.const 260) "demo_denied")
  (data (i32.const 280) "x-callout")
  (data (i32.const 290) "x-trap")
  (data (i32.const 300) "x-demo")
  (data (i32.const 310) "yes")
  (data (i32.const 320) "x-greeting")
  (data (i32.const 340) "greeting")
  (data (i32.const 350) "demo_requests")
  (data (i32.const 370) "requests")
  (data (i32.const 380) "request")
  (data (i32.const 390) "configured")
  (data (i32.const 400) "tick")
  (data (i32.const 410) "x-grpc")
  (data (i32.const 420) "demo.Checker")
  (data (i32.const 440) "Check")
  (data (i32.const 450) "grpc closed")
  (data (i32.const 470) "x-cluster")
  (data (i32.const 480) "xds\00node\00metadata\00CLUSTER_ID")
  (data (i32.const 510) "reject")
  (data (i32.const 520) "x-demo-response")
  ;; 1024/1028: a host call's returned pointer and size; 1032: a callout's token;
  ;; 1036: the metric's id; 1040: the queue's id; 1044: a CAS.
  ;; 2048 + 4 * token: the stream an HTTP callout pauses; 3072 + 4 * token: a gRPC call's.
  (global $heap (mut i32) (i32.const 8192))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (func $present (param $name i32) (param $len i32) (result i32)
    (i32.eqz (call $get (i32.const 0) (local.get $name) (local.get $len)
      (i32.const 1024) (i32.const 1028))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eq (local.get $size) (i32.const 6)) (then
      (drop (call $buffer (i32.const 7) (i32.const 0) (i32.const 6) (i32.const 1024) (i32.const 1028)))
      (if (i32.and
            (i32.eq (i32.load (i32.load (i32.const 1024))) (i32.load (i32.const 510)))
            (i32.eq (i32.load16_u (i32.add (i32.load (i32.const 1024)) (i32.const 4)))
                    (i32.load16_u (i32.const 514))))
        (then (return (i32.const 0))))))
    (drop (call $define (i32.const 0) (i32.const 350) (i32.const 13) (i32.const 1036)))
    (drop (call $register (i32.const 370) (i32.const 8) (i32.const 1040)))
    (drop (call $tick_period (i32.const 1000)))
    (drop (call $log (i32.const 2) (i32.const 390) (i32.const 10)))
    i32.const 1)
  (func (export "proxy_on_tick") (param i32)
    (drop (call $log (i32.const 2) (i32.const 400) (i32.const 4))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (drop (call $increment (i32.load (i32.const 1036)) (i64.const 1)))
    (drop (call $log (i32.const 2) (i32.const 380) (i32.const 7)))
    (drop (call $enqueue (i32.load (i32.const 1040)) (i32.const 380) (i32.const 7)))
    (if (call $present (i32.const 290) (i32.const 6)) (then unreachable))
    (if (call $present (i32.const 240) (i32.const 6)) (then
      (drop (call $reply (i32.const 403) (i32.const 260) (i32.const 11) (i32.const 250)
        (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))
      (return (i32.const 1))))
    (if (call $present (i32.const 280) (i32.const 9)) (then
      (if (i32.eqz (call $http_call (i32.const 100) (i32.const 5) (i32.const 120) (i32.const 70)
            (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 1032)))
        (then
          (i32.store (i32.add (i32.const 2048) (i32.shl (i32.load (i32.const 1032)) (i32.const 2)))
            (local.get $ctx))
          (return (i32.const 1))))))
    (if (call $present (i32.const 410) (i32.const 6)) (then
      (if (i32.eqz (call $grpc_call (i32.const 100) (i32.const 5) (i32.const 420) (i32.const 12)
            (i32.const 440) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
            (i32.const 500) (i32.const 1032)))
        (then
          (i32.store (i32.add (i32.const 3072) (i32.shl (i32.load (i32.const 1032)) (i32.const 2)))
            (local.get $ctx))
          (return (i32.const 1))))))
    (drop (call $add (i32.const 0) (i32.const 300) (i32.const 6) (i32.const 310) (i32.const 3)))
    (if (i32.eqz (call $get_shared (i32.const 340) (i32.const 8) (i32.const 1024) (i32.const 1028)
          (i32.const 1044)))
      (then (drop (call $add (i32.const 0) (i32.const 320) (i32.const 10)
        (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))
    (if (i32.eqz (call $property (i32.const 480) (i32.const 28) (i32.const 1024) (i32.const 1028)))
      (then (drop (call $add (i32.const 0) (i32.const 470) (i32.const 9)
        (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 520) (i32.const 15) (i32.const 310) (i32.const 3)))
    i32.const 0)
  (func (export "proxy_on_http_call_response") (param i32) (param $token i32) (param i32 i32 i32)
    (drop (call $effective
      (i32.load (i32.add (i32.const 2048) (i32.shl (local.get $token) (i32.const 2))))))
    (if (call $get (i32.const 6) (i32.const 200) (i32.const 7) (i32.const 1024) (i32.const 1028))
      (then (i32.store (i32.const 1024) (i32.const 230)) (i32.store (i32.const 1028) (i32.const 4))))
    (drop (call $add (i32.const 0) (i32.const 210) (i32.const 14)
      (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_grpc_receive") (param i32 i32 i32))
  (func (export "proxy_on_grpc_close") (param i32) (param $token i32) (param i32)
    (drop (call $effective
      (i32.load (i32.add (i32.const 3072) (i32.shl (local.get $token) (i32.const 2))))))
    (drop (call $log (i32.const 2) (i32.const 450) (i32.const 11)))
    (drop (call $continue (i32.const 0)))))
