//! The seed's mesh simulated in the harness: every sidecar runs the filter's
//! `.wasm` in [`proxy_wasm_host`] (or its decision code natively), and
//! scenarios run on it ([`run`]), request by request comparable with the
//! real-Envoy replica. Also the `.wasm` fuzz driver ([`fuzz`]).
//!
//! | module | what |
//! |---|---|
//! | [`sidecar`] | the [`Sidecar`] traits: one proxy running the module |
//! | [`wasm_sidecar`] | the `.wasm` in the harness |
//! | [`native_sidecar`] | the decision code natively |
//! | [`mesh`] | [`Sim`]: clusters, endpoints, gateways, routes, drains, failures |
//! | [`run`] | scenarios on the simulated mesh; the wasm/native parity check |
//! | [`fuzz`] | random configs and traffic through the real `.wasm` |

pub mod fuzz;
pub mod mesh;
pub mod native_sidecar;
pub mod run;
pub mod sidecar;
pub mod wasm_sidecar;

pub use hybridmesh_scenario::{header, Outcome, Pairs};
pub use mesh::{Sim, SERVICE_NAMESPACE};
pub use native_sidecar::NativeSidecar;
pub use sidecar::{Answer, CalloutQueue, Forward, Reply, Sidecar, SidecarSpec, SidecarStream};
pub use wasm_sidecar::WasmSidecar;

#[cfg(test)]
mod tests {
    #[test]
    fn a_scenario_may_ask_for_as_many_workers_as_the_harness_runs() {
        assert_eq!(
            hybridmesh_scenario::MAX_WORKERS,
            proxy_wasm_host::limits::MAX_WORKERS
        );
    }
}
