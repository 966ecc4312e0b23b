//! The hybridmesh filter's `.wasm`: proxy-wasm contexts that translate between
//! the proxy and [`hybridmesh_filter_core`], where every decision is made.
//!
//! Build it with `scripts/build-wasm`
//! (`target/wasm32-wasip1/wasm/hybridmesh_filter.wasm`). Natively this crate is empty.

#[cfg(target_arch = "wasm32")]
mod glue;
