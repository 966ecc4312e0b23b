//! hybridmesh filter: source identity, cluster-local / weighted / failover
//! decisions and hop records for Istio meshes that span clusters and networks.
//!
//! The decision logic is plain Rust over plain data and builds natively (the
//! `hybridmesh` tools link it as a library: one config parser everywhere). The
//! proxy-wasm glue lives in the `hybridmesh-filter` crate (the `.wasm`) and only
//! translates.
//!
//! | module | what it decides |
//! |---|---|
//! | [`config`] | the plugin config: read, then a validated model (the `hybridmesh-config` crate, with [`json`], [`identity`] and [`hosts`]) |
//! | [`identity`] | this proxy's cluster, network, locality |
//! | [`hosts`] | the service a request is for; host patterns by specificity |
//! | [`decide`] | the target cluster and why |
//! | [`health`] | outlier detection per (service, cluster) in shared data |
//! | [`hop`] | served-by and the hop record |
//! | [`metrics`] | counter names with labels |
//! | [`flow`] | a request's way through all of the above |

pub mod decide;
pub mod flow;
pub mod health;
pub mod hop;
pub mod metrics;
pub mod proto;
pub mod routing;
pub mod text;
pub mod wire;

pub use flow::{Direction, Filter, Host};
/// The plugin config (its own crate, built for size: read once per push).
pub use hybridmesh_config as config;
pub use hybridmesh_config::{hosts, identity, json};
pub use hybridmesh_config::{parse_json, Config, ConfigError, ConfigErrors};
