//! Scenario files on the replica: the same runner that plays them in the
//! harness ([`hybridmesh_scenario::runner::Backend`]), with real Envoy processes.

use std::path::Path;
use std::time::Duration;

use hybridmesh_scenario::runner::Backend;
use hybridmesh_scenario::Outcome;
use hybridmesh_scenario::{RequestSpec, Scenario};

use super::{Options, Replica};

/// The replica for a scenario: its mesh, its configs, its fail strategy, and
/// a test peer holding every SPIFFE id its direct requests present.
pub fn options(s: &Scenario, workspace: &Path, run_name: &str) -> anyhow::Result<Options> {
    let mesh = s.mesh()?;
    let names: Vec<String> = mesh.clusters.keys().cloned().collect();
    let mut o = Options::new(mesh, workspace, run_name)?;
    for name in &names {
        o.configs.insert(name.clone(), s.config_for(name)?);
    }
    if let Some(first) = names.first() {
        o.config = s.config_for(first)?;
    }
    o.fail = s.proxy.fail_strategy;
    for step in &s.steps {
        if let Some(peer) = step.request.as_ref().and_then(|r| r.peer.as_ref()) {
            if peer.starts_with("spiffe://") && !o.peer_identities.contains(peer) {
                o.peer_identities.push(peer.clone());
            }
        }
    }
    Ok(o)
}

impl Backend for Replica {
    fn cluster_names(&self) -> Vec<String> {
        Replica::cluster_names(self)
    }
    fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        Replica::request(self, spec, default_from)
    }
    /// Which requests are random is the filter's business, not the proxy's:
    /// compare with the harness's answer for the same request.
    fn is_random(&self, _from: &str, _spec: &RequestSpec) -> bool {
        false
    }
    fn drain(&mut self, cluster: &str) -> anyhow::Result<()> {
        Replica::drain(self, cluster)
    }
    fn restore(&mut self, cluster: &str) -> anyhow::Result<()> {
        Replica::restore(self, cluster)
    }
    fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()> {
        Replica::fail(self, cluster, status)
    }
    /// Real proxies, real time.
    fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        std::thread::sleep(by);
        Ok(())
    }
    fn reconfigure(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool> {
        self.push_config(cluster, config)
    }
    fn metric(&self, proxy: &str, name: &str) -> anyhow::Result<Option<u64>> {
        Replica::metric(self, proxy, name)
    }
    fn logs(&self, proxy: &str) -> anyhow::Result<Vec<(String, String)>> {
        Replica::logs(self, proxy)
    }
}
