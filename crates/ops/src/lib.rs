//! The operator's side of hybridmesh: deploying the filter ([`deploy`]:
//! render the manifests of `wasmplugin/` from a mesh description, package
//! the `.wasm` as an OCI image, validate manifests) and reading back what it
//! recorded ([`trace`]: hop records from access logs).

pub mod api;
pub mod deploy;
pub mod par;
pub mod support;
pub mod trace;
