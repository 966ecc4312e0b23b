//! hybridmesh and live clusters: what `hybridmesh check` reads.
//!
//! Every read goes through `kubectl` ([`kubectl::Kubectl`]), the way many
//! cluster CLIs do it: the operator's kubeconfig, contexts and credential
//! plugins (`gke-gcloud-auth-plugin` on GKE, OIDC on bare metal) work as
//! they do for `kubectl` itself, with nothing for this project to
//! re-implement or keep in step.
//!
//! - [`kubectl`]: running kubectl with a time bound, its errors kept.
//! - [`check`]: the pre-flight checks of one context against the mesh
//!   description, each finding with its code and the command that fixes it.
//! - [`status`]: per sidecar, the filter's plugins as istiod gave them and
//!   what the proxy did with them, from istiod's debug endpoints ([`http`]).

pub mod check;
pub mod http;
pub mod kubectl;
pub mod status;
