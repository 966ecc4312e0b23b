//! Deploying the filter: the manifests of `wasmplugin/` from a mesh
//! description ([`render`]), the `.wasm` as an OCI image Istio accepts
//! ([`image`]), and the checks `validate` runs on Kubernetes manifests:
//! Istio's schemas and CEL rules ([`schema`]) and cross-checks between the
//! WasmPlugins, DestinationRules and VirtualServices ([`checks`]).

pub mod checks;
pub mod codes;
pub mod existing;
pub mod image;
pub mod istio;
pub mod locate;
pub mod mesh;
pub mod mesh_check;
pub mod plugin_config;
pub mod push;
pub mod release;
pub mod render;
pub mod schema;
pub mod unknown;
pub mod validate;
pub mod yaml;

pub use mesh::MeshDescription;
