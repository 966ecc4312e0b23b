//! Where everything of the replica lives: one loopback range per cluster
//! (standing for its network), one address per pod, Istio's well-known ports.
//!
//! Cluster k (1-based, in the mesh file's order) of run slot `net` uses
//! `127.<net>.<k>.0/24`: the sleep pod's sidecar at `.2`, the east-west
//! gateway at `.6`, the `echo-svc` pods at `.9`, `.10`, ... The test peer (a
//! workload without the filter) is `127.<net>.250.1`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};

use anyhow::bail;

use hybridmesh_scenario::Mesh;

/// Istio's ports.
pub const ADMIN: u16 = 15000;
pub const OUTBOUND: u16 = 15001;
pub const INBOUND: u16 = 15006;
pub const GATEWAY: u16 = 15443;
pub const APP: u16 = 8080;
/// The test peer's listeners: one per SPIFFE identity, from this port up.
pub const PEER_BASE: u16 = 17001;

/// The services every client sidecar knows: the seed's `echo-svc` and a
/// service in another namespace (the seed's `httpbin-svc.sleep`). Both are
/// served by the same pods.
pub const SERVICES: [&str; 2] = [
    "echo-svc.default.svc.cluster.local",
    "httpbin-svc.sleep.svc.cluster.local",
];

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub network: String,
    /// What the nodes report (`region/zone`), empty on-prem.
    pub node_locality: String,
    /// What the echo application answers here.
    pub body: String,
    pub client: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub endpoints: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub net: u8,
    pub trust_domain: String,
    /// The trust domain and its aliases: whose client certificates the
    /// server sidecars accept (`Mesh::accepted_trust_domains`).
    pub accepted_trust_domains: Vec<String>,
    pub client_namespace: String,
    pub clusters: Vec<Cluster>,
    pub peer: Ipv4Addr,
    /// SPIFFE ids the test peer can present (one listener each).
    pub peer_identities: Vec<String>,
}

impl Topology {
    /// Lays out `mesh` in run slot `net` (endpoint counts as in the mesh file).
    pub fn new(mesh: &Mesh, net: u8, peer_identities: &[String]) -> anyhow::Result<Topology> {
        let mut clusters = Vec::new();
        for (k, (name, spec)) in mesh.clusters.iter().enumerate() {
            let k = u8::try_from(k + 1).ok().filter(|k| *k < 250);
            let Some(k) = k else {
                bail!("the replica supports at most 249 clusters")
            };
            let n = spec.endpoints.len().clamp(1, 200);
            clusters.push(Cluster {
                name: name.clone(),
                network: spec.network.clone(),
                node_locality: spec.node_locality.clone(),
                body: spec.body.clone(),
                client: Ipv4Addr::new(127, net, k, 2),
                gateway: Ipv4Addr::new(127, net, k, 6),
                endpoints: (0..n)
                    .map(|i| Ipv4Addr::new(127, net, k, 9 + i as u8))
                    .collect(),
            });
        }
        Ok(Topology {
            net,
            trust_domain: mesh.trust_domain.clone(),
            accepted_trust_domains: mesh.accepted_trust_domains().cloned().collect(),
            client_namespace: mesh.client_namespace.clone(),
            clusters,
            peer: Ipv4Addr::new(127, net, 250, 1),
            peer_identities: peer_identities.to_vec(),
        })
    }

    /// Picks a run slot whose every address and port is free, starting at a
    /// slot derived from this process id (so parallel runs rarely collide).
    pub fn first_free(mesh: &Mesh, peer_identities: &[String]) -> anyhow::Result<Topology> {
        let start = 20 + (std::process::id() % 200) as u8;
        for i in 0..200u16 {
            let net = 20 + ((u16::from(start) - 20 + i) % 200) as u8;
            let t = Topology::new(mesh, net, peer_identities)?;
            if t.all_ports().iter().all(|a| port_free(*a)) {
                return Ok(t);
            }
        }
        bail!(
            "no free loopback range 127.20-219.x.x for the replica (every slot has a port in use)"
        )
    }

    pub fn cluster(&self, name: &str) -> anyhow::Result<&Cluster> {
        match self.clusters.iter().find(|c| c.name == name) {
            Some(c) => Ok(c),
            None => bail!(
                "unknown cluster {name:?}, expected one of {}",
                self.names().join(", ")
            ),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.clusters.iter().map(|c| c.name.clone()).collect()
    }

    pub fn spiffe(&self, namespace: &str, account: &str) -> String {
        format!("spiffe://{}/ns/{namespace}/sa/{account}", self.trust_domain)
    }

    /// Every socket the replica will listen on.
    pub fn all_ports(&self) -> Vec<SocketAddrV4> {
        let mut out = Vec::new();
        for c in &self.clusters {
            out.push(SocketAddrV4::new(c.client, ADMIN));
            out.push(SocketAddrV4::new(c.client, OUTBOUND));
            out.push(SocketAddrV4::new(c.gateway, ADMIN));
            out.push(SocketAddrV4::new(c.gateway, GATEWAY));
            for e in &c.endpoints {
                for p in [ADMIN, INBOUND, APP] {
                    out.push(SocketAddrV4::new(*e, p));
                }
            }
        }
        out.push(SocketAddrV4::new(self.peer, ADMIN));
        for k in 0..self.peer_identities.len() {
            out.push(SocketAddrV4::new(self.peer, PEER_BASE + k as u16));
        }
        out
    }
}

/// Region and zone of a `region/zone/subzone` locality.
pub fn region_zone(locality: &str) -> (String, String) {
    let mut parts = locality.split('/');
    let region = parts.next().unwrap_or("").to_string();
    let zone = parts.next().unwrap_or("").to_string();
    (region, zone)
}

/// Can we listen on `addr`? (Checked before any process starts.)
pub fn port_free(addr: SocketAddrV4) -> bool {
    TcpListener::bind(SocketAddr::V4(addr)).is_ok()
}
