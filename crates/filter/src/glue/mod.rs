//! proxy-wasm glue: the module's exports and imports, translating between the
//! proxy and [`hybridmesh_filter_core::flow`].
//!
//! The filter binds the proxy-wasm ABI 0.2.1 itself rather than through the
//! SDK's dispatcher: it exports only the callbacks it uses (each export is a
//! V8 transition Envoy makes on every stream), hands the host an arena for
//! the data it returns (no allocation per host call), and turns every status
//! into a value (a panic kills the VM and every request then fails).
//!
//! | module | what |
//! |---|---|
//! | [`abi`] | the host functions Envoy exports, raw |
//! | [`memory`] | the arena host calls return their data in; the counting allocator |
//! | [`host`] | safe host calls returning `Result<_, Status>` |
//! | [`vm`] | the VM's contexts: root contexts (one per plugin config) and streams |
//! | [`root`] | configure, tick, metrics |
//! | [`http`] | a stream's request and response headers |
//! | [`exports`] | the callbacks Envoy calls |

mod abi;
mod exports;
mod host;
mod http;
mod memory;
mod root;
mod vm;
