//! Scenario files and the runner that plays them on any backend.
//!
//! [`Scenario`] is the YAML format (a mesh, a plugin config, steps with
//! expectations on what a person would see); [`runner`] plays it against a
//! [`runner::Backend`] (the harness's simulated mesh in `hybridmesh-sim`, the
//! real-Envoy replica in `hybridmesh-replica`) and checks every expectation;
//! [`Outcome`] is one request as either backend saw it. Nothing here runs a
//! proxy: the real-Envoy side builds without the wasmtime harness.

mod file;
pub mod guard;
mod outcome;
pub mod runner;

pub use file::*;
pub use outcome::{header, Outcome, Pairs};
