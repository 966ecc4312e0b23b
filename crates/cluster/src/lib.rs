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

pub mod check;
pub mod kubectl;
