//! `proxy-wasm-host`: a proxy-wasm host that runs filters offline.
//!
//! It loads any proxy-wasm module (ABI 0.2.1, as the proxy-wasm Rust SDK 0.2.5 builds it
//! for `wasm32-wasip1`) with wasmtime and plays Envoy 1.40's part — properties, headers,
//! routes, local replies, shared data, queues, metrics, ticks, callouts, fail strategies —
//! so filters are tested without Envoy. See [`plugin`] for an example.
//!
//! Layout, bottom up: `abi` holds the host functions, one module per ABI area;
//! [`envoy`] is the Envoy/Istio model (properties, header map, routes); [`state`] is
//! what a test reads afterwards; [`plugin`] drives VMs and streams.

#![warn(missing_docs)]

pub mod abi;
pub mod envoy;
pub mod error;
mod hcm;
mod host;
pub mod plugin;
pub mod state;

pub use abi::Status;
pub use envoy::{
    response_flags, Connection, Direction, HeaderMap, HostMetadata, MatchedRoute,
    NodeMetadataStyle, Proxy, Route, StructValue, Upstream,
};
pub use error::{Error, Result};
pub use plugin::{Action, ConfigDelivery, FailStrategy, Module, Plugin, PluginBuilder, Stream};
pub use state::{
    Failure, GrpcCallout, HostCall, HttpCallout, Level, LocalReply, LogEntry, Metric, MetricKind,
    RouteRematch,
};
