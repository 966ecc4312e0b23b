//! `proxy-wasm-host`: a proxy-wasm host that runs filters offline, playing Envoy 1.40.
//!
//! It loads any proxy-wasm module (ABI 0.2.1, as the proxy-wasm Rust SDK 0.2.5 builds it
//! for `wasm32-wasip1`, or any other toolchain) with wasmtime and plays Envoy 1.40's part
//! — the connection manager's headers, properties, routes, local replies, shared data,
//! queues, metrics, ticks, callouts, VM lifecycle, fail strategies — so a filter is tested
//! without Envoy. Depends on wasmtime, wasmtime-wasi and anyhow only; nothing in its API
//! assumes Istio ([`Proxy::istio`] is a convenience).
//!
//! # Testing a third-party filter
//!
//! A filter (here a small one in WAT; [`Module::from_file`] loads any `.wasm`) that
//! refuses requests without an `authorization` header with a local reply and marks the
//! others:
//!
//! ```
//! use proxy_wasm_host::{Module, Plugin, Upstream};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let module = Module::from_bytes(br#"(module
//!   (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
//!   (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
//!   (import "env" "proxy_send_local_response"
//!     (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
//!   (memory (export "memory") 1)
//!   (data (i32.const 100) "authorization")
//!   (data (i32.const 120) "x-auth-checked")
//!   (data (i32.const 140) "yes")
//!   (data (i32.const 160) "no token")
//!   (global $heap (mut i32) (i32.const 4096))
//!   (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
//!     global.get $heap local.set $p
//!     global.get $heap local.get $n i32.add global.set $heap
//!     local.get $p)
//!   (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
//!   (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
//!   (func (export "proxy_on_context_create") (param i32 i32))
//!   (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
//!     (if (call $get (i32.const 0) (i32.const 100) (i32.const 13) (i32.const 200) (i32.const 204))
//!       (then
//!         (drop (call $reply (i32.const 401) (i32.const 160) (i32.const 8) (i32.const 160)
//!           (i32.const 8) (i32.const 0) (i32.const 0) (i32.const -1)))
//!         (return (i32.const 1))))
//!     (drop (call $add (i32.const 0) (i32.const 120) (i32.const 14) (i32.const 140) (i32.const 3)))
//!     i32.const 0))"#)?;
//! let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
//! assert!(plugin.configured());
//!
//! // Without a token: the filter's local reply, as Envoy sends it.
//! let mut s = plugin.stream(0);
//! s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api")], true)?;
//! assert!(!s.request_forwarded());
//! assert_eq!(s.client_response_status(), Some(401));
//! assert_eq!(s.client_response_body(), b"no token");
//! assert_eq!(s.client_response_header("content-type").as_deref(), Some("text/plain"));
//! assert_eq!(s.local_reply().unwrap().details, "no_token"); // as the access log shows it
//!
//! // With a token: marked and forwarded, with the headers Envoy's connection manager adds.
//! let mut s = plugin.stream(0);
//! s.request_headers(
//!     &[(":method", "GET"), (":path", "/"), (":authority", "api"), ("authorization", "Bearer t")],
//!     true,
//! )?;
//! assert_eq!(s.upstream_request_header("x-auth-checked").as_deref(), Some("yes"));
//! assert_eq!(s.upstream_request_header("x-forwarded-proto").as_deref(), Some("http"));
//! assert!(s.upstream_request_header("x-request-id").is_some());
//! s.respond(Upstream::new(200).address("10.0.0.7:8080").body(b"hello"))?;
//! s.complete()?;
//! assert_eq!(s.client_response_body(), b"hello");
//! assert!(plugin.failures().is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # What is modelled
//!
//! Measured with Envoy 1.40 (the repository's `tests/fixtures/fidelity/*.wat` pin each):
//! a configuration canary decides acceptance, then a main-thread VM and N worker VMs run
//! (ticks on all of them); a headers callback's Pause holds body and trailers
//! (StopAll); any number of streams in flight ([`Plugin::new_stream`], [`Plugin::on`]);
//! local replies in Envoy's header order and as gRPC trailers-only replies for gRPC
//! requests; callouts only to known clusters, answered on the root context, timed out by
//! the clock (HTTP: the router's 504; gRPC: a close with status 14), sent with Envoy's
//! wire headers; routes on the path and headers, and `direct_response` routes; another
//! filter's dynamic metadata ([`Stream::filter_metadata`]); the client's protocol framing
//! bodies and responses ([`Connection::protocol`], [`Stream::request`]); no
//! configuration is size 0; the connection manager's `:scheme`, `x-forwarded-proto`,
//! `x-request-id`, `x-envoy-upstream-service-time`, `date`, `server`; a rejected
//! configuration (ECDS: 500 NFCF; static: [`Error::ConfigRejected`]); traps per
//! [`FailStrategy`]. The repository's book (`docs/src/verification/harness.md`) lists
//! what is modelled and what is not; `docs/src/verification/filter-authors.md` and the
//! crate's `examples/` walk a filter author through it.
//!
//! Callouts are answered in one place, the plugin, by token: HTTP with
//! [`Plugin::respond_http_call`], [`Plugin::fail_http_call`] and
//! [`Plugin::time_out_http_call`]; gRPC with [`Plugin::grpc_initial_metadata`],
//! [`Plugin::grpc_receive`], [`Plugin::grpc_trailing_metadata`], [`Plugin::grpc_close`]
//! and [`Plugin::time_out_grpc_call`] ([`Stream`] forwards the HTTP answers for its own).
//!
//! Layout, bottom up: [`abi`] holds the host functions, one module per ABI area;
//! [`envoy`] is the Envoy model (properties, header map, routes); `hcm` the connection
//! manager around the filter; [`state`] is what a test reads afterwards; [`plugin`]
//! drives VMs and streams; [`error`] the typed errors.

#![warn(missing_docs)]

pub mod abi;
pub mod envoy;
pub mod error;
mod hcm;
mod host;
pub mod limits;
pub mod plugin;
pub mod state;

pub use abi::Status;
pub use envoy::{
    response_flags, Connection, DirectResponse, Direction, HeaderMap, MatchedRoute, Metadata,
    NodeMetadataStyle, Proxy, Route, StructValue, Upstream,
};
pub use error::{Error, Result};
pub use limits::Limits;
pub use plugin::{
    Action, ConfigDelivery, FailStrategy, Module, Plugin, PluginBuilder, Stream, StreamHandle,
};
pub use state::{
    Failure, GrpcCallout, HostCall, HttpCallout, Level, LocalReply, LogEntry, Metric, MetricKind,
    RouteRematch,
};
