//! The seed's hybrid mesh out of real Envoy processes on loopback (1.40 by
//! default; `HYBRIDMESH_ENVOY` names another: every minor from 1.36 is
//! verified, `versions.tsv`).
//!
//! Per cluster (its own loopback range standing for its network): the sleep
//! pod's client sidecar (outbound listener), one Envoy per `echo-svc` pod
//! (inbound listener in front of the application, so each pod can be drained
//! alone with `POST /drain_listeners`), and an east-west gateway passing mTLS
//! through on 15443. The filter's `.wasm` runs in every sidecar, delivered by
//! ECDS from a file, as Istio delivers it. Certificates (a mesh CA and SPIFFE
//! workload certs) are made at start-up.
//!
//! [`Replica`] starts it, plays requests ([`Replica::request`] gives the same
//! [`Outcome`] as the harness simulation), drains and restores pods, fails or
//! kills applications, pushes plugin configs, and reads metrics and logs.
//! Every process is stopped by pid when it is dropped, on error and on Ctrl-C.
//! Logs stay in the run folder (`target/mesh-run/<name>/logs`).

pub mod backend;
pub mod certs;
pub mod demo;
pub mod echo;
pub mod envoy_config;
pub mod http;
pub mod load;
pub mod memory;
pub mod process;
pub mod terminal;
pub mod topology;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use envoy_config::{
    LocalityFailover, Tls, DETAILS_HEADER, DIRECT_HEADER, FILTER_NAME, ROUTE_HEADER,
};
use hybridmesh_filter_core::routing;
use hybridmesh_scenario::Outcome;
use hybridmesh_scenario::{Fail, Mesh, RequestSpec};
use process::Envoy;
use topology::{Topology, ADMIN, INBOUND, OUTBOUND, PEER_BASE};

/// How to build the replica.
#[derive(Clone)]
pub struct Options {
    pub mesh: Mesh,
    /// The filter's `.wasm`.
    pub wasm: PathBuf,
    /// The Envoy binary ([`process::envoy_binary`]).
    pub envoy: PathBuf,
    /// Run folder: configs, certs, ECDS files, logs (emptied first).
    pub run_dir: PathBuf,
    /// Every sidecar's first plugin config (JSON).
    pub config: Vec<u8>,
    /// Per-cluster first configs replacing `config`.
    pub configs: HashMap<String, Vec<u8>>,
    pub fail: Fail,
    /// The seed's DestinationRule on the default cluster (locality failover
    /// with outlier detection); `None`: Istio's default spread.
    pub locality_failover: Option<LocalityFailover>,
    /// SPIFFE ids the test peer can present (`direct` requests).
    pub peer_identities: Vec<String>,
}

impl Options {
    /// The seed's mesh with the repository's filter and the project's Envoy.
    pub fn new(mesh: Mesh, workspace: &Path, run_name: &str) -> anyhow::Result<Options> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let wasm = std::env::var_os("HYBRIDMESH_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("wasm32-wasip1/wasm/hybridmesh_filter.wasm"));
        if !wasm.is_file() {
            bail!(
                "the filter is not built: {} is missing\n  build it with: scripts/build-wasm",
                wasm.display()
            );
        }
        let trust = mesh.trust_domain.clone();
        Ok(Options {
            mesh,
            wasm: std::fs::canonicalize(&wasm)?,
            envoy: process::envoy_binary(workspace)?,
            run_dir: target.join("mesh-run").join(run_name),
            config: b"{}".to_vec(),
            configs: HashMap::new(),
            fail: Fail::FailClose,
            locality_failover: None,
            peer_identities: vec![
                format!("spiffe://{trust}/ns/sleep/sa/sleep"),
                "spiffe://evil.example/ns/x/sa/y".to_string(),
            ],
        })
    }
}

/// One echo-svc pod: its sidecar and its application.
struct Pod {
    name: String,
    envoy: Envoy,
    bootstrap: PathBuf,
    ecds: PathBuf,
    echo: echo::Echo,
    drained: bool,
}

/// An ECDS file written to a sidecar, waiting for Envoy to apply or reject it.
struct PendingEcds {
    envoy: Envoy,
    /// Its (config_reload, update_rejected) counters before the write.
    before: (u64, u64),
    /// The ECDS file's name.
    name: String,
    config: Vec<u8>,
}

/// A running replica. Dropping it stops every process.
pub struct Replica {
    pub topology: Topology,
    pub run_dir: PathBuf,
    envoy_bin: PathBuf,
    wasm: PathBuf,
    /// Sidecars (by ECDS file name) running another module than `wasm`
    /// ([`Replica::push_module`]).
    modules: std::collections::BTreeMap<String, PathBuf>,
    fail: Fail,
    clients: Vec<(Envoy, PathBuf)>,
    pods: Vec<Vec<Pod>>,
    gateways: Vec<Envoy>,
    peer: Envoy,
    seen: echo::Seen,
    /// Current plugin config per cluster.
    configs: Vec<Vec<u8>>,
    /// The seed's DestinationRule, when applied (endpoint priorities follow it).
    failover: Option<LocalityFailover>,
    /// The outlier detection of the preference subsets (the DestinationRule
    /// `render` writes from the same description as the first plugin config).
    outlier: envoy_config::Outlier,
    /// Version of the endpoints (EDS) files.
    eds_version: u64,
    version: u64,
    requests: u64,
    /// Requests sent through client sidecars, by (from, served by or `none`):
    /// what the access logs must show (`hybridmesh trace`).
    served: std::collections::BTreeMap<(String, String), u64>,
    /// Seconds it took to start.
    pub startup: f64,
    client_leaf: certs::Leaf,
    ca: PathBuf,
}

fn log_dir(run: &Path) -> PathBuf {
    run.join("logs")
}

impl Replica {
    /// Lays out the mesh on free loopback addresses, makes the certificates,
    /// writes every bootstrap and ECDS file, starts every process and waits
    /// until all are ready. On failure every started process is stopped.
    pub fn start(o: &Options) -> anyhow::Result<Replica> {
        let started = Instant::now();
        process::install_ctrlc();
        let topology = Topology::first_free(&o.mesh, &o.peer_identities)?;
        let run = o.run_dir.clone();
        if run.exists() {
            std::fs::remove_dir_all(&run)
                .with_context(|| format!("cannot empty {}", run.display()))?;
        }
        for d in ["logs", "config", "certs", "ecds", "eds"] {
            std::fs::create_dir_all(run.join(d))?;
        }
        let mut certs = certs::Certs::new(&run.join("certs"))?;
        let client_leaf = certs.leaf(&topology.spiffe(&topology.client_namespace, "sleep"))?;
        let server_leaf = certs.leaf(&topology.spiffe("default", "default"))?;
        let peer_leaves = topology
            .peer_identities
            .iter()
            .map(|id| certs.leaf(id))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ca = certs.ca.clone();
        let seen: echo::Seen = Arc::new(Mutex::new(HashMap::new()));

        let configs: Vec<Vec<u8>> = topology
            .clusters
            .iter()
            .map(|c| o.configs.get(&c.name).unwrap_or(&o.config).clone())
            .collect();
        let write = |name: &str, v: &serde_json::Value| -> anyhow::Result<PathBuf> {
            let p = run.join("config").join(format!("{name}.json"));
            std::fs::write(&p, serde_json::to_vec_pretty(v)?)?;
            Ok(p)
        };
        let mut r = Replica {
            topology: topology.clone(),
            run_dir: run.clone(),
            envoy_bin: o.envoy.clone(),
            wasm: o.wasm.clone(),
            modules: std::collections::BTreeMap::new(),
            fail: o.fail,
            clients: Vec::new(),
            pods: Vec::new(),
            gateways: Vec::new(),
            peer: Envoy {
                name: String::new(),
                pid: 0,
                admin: admin(topology.peer),
                log: PathBuf::new(),
                bootstrap: PathBuf::new(),
            },
            seen: seen.clone(),
            configs: configs.clone(),
            failover: o.locality_failover.clone(),
            outlier: envoy_config::Outlier::of(&o.config, topology::SERVICES[0])
                .unwrap_or_default(),
            eds_version: 1,
            version: 1,
            requests: 0,
            served: std::collections::BTreeMap::new(),
            startup: 0.0,
            client_leaf: client_leaf.clone(),
            ca: ca.clone(),
        };
        // From here on, dropping `r` stops whatever was started.
        let logs = log_dir(&run);
        for (k, c) in topology.clusters.iter().enumerate() {
            let tls = Tls {
                leaf: &client_leaf,
                ca: &ca,
            };
            let name = format!("{}-client", c.name);
            let ecds = r.write_ecds(&name, &configs[k])?;
            let eds = r.write_eds(k)?;
            let boot = write(
                &name,
                &envoy_config::client_sidecar(
                    &topology,
                    c,
                    &tls,
                    &ecds,
                    &eds,
                    o.locality_failover.as_ref(),
                    &r.outlier,
                ),
            )?;
            let e = process::spawn(&o.envoy, &name, &boot, admin(c.client), &logs)?;
            r.clients.push((e, ecds));

            let gw_name = format!("{}-eastwestgateway", c.name);
            let boot = write(&gw_name, &envoy_config::gateway(&topology, c))?;
            r.gateways.push(process::spawn(
                &o.envoy,
                &gw_name,
                &boot,
                admin(c.gateway),
                &logs,
            )?);

            let mut pods = Vec::new();
            for (i, ip) in c.endpoints.iter().enumerate() {
                let name = format!("{}-echo-svc-{i}", c.name);
                let tls = Tls {
                    leaf: &server_leaf,
                    ca: &ca,
                };
                let ecds = r.write_ecds(&name, &configs[k])?;
                let boot = write(
                    &name,
                    &envoy_config::endpoint_sidecar(
                        c,
                        i,
                        &tls,
                        &topology.accepted_trust_domains,
                        &ecds,
                    ),
                )?;
                let app = SocketAddr::V4(SocketAddrV4::new(*ip, topology::APP));
                let echo = echo::Echo::start(app, &c.body, seen.clone())?;
                let envoy = process::spawn(&o.envoy, &name, &boot, admin(*ip), &logs)?;
                pods.push(Pod {
                    name,
                    envoy,
                    bootstrap: boot,
                    ecds,
                    echo,
                    drained: false,
                });
            }
            r.pods.push(pods);
        }
        let boot = write("peer", &envoy_config::peer(&topology, &peer_leaves, &ca))?;
        r.peer = process::spawn(&o.envoy, "test-peer", &boot, admin(topology.peer), &logs)?;
        for e in r.all_envoys() {
            e.wait_ready(Duration::from_secs(60))?;
        }
        r.startup = started.elapsed().as_secs_f64();
        Ok(r)
    }

    fn all_envoys(&self) -> Vec<&Envoy> {
        let mut v: Vec<&Envoy> = self.clients.iter().map(|(e, _)| e).collect();
        v.extend(self.gateways.iter());
        v.extend(self.pods.iter().flatten().map(|p| &p.envoy));
        if self.peer.pid != 0 {
            v.push(&self.peer);
        }
        v
    }

    /// Every Envoy process (name, pid, admin address, log).
    pub fn envoys(&self) -> Vec<Envoy> {
        self.all_envoys().into_iter().cloned().collect()
    }

    /// Every process: (name, pid).
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.all_envoys()
            .iter()
            .map(|e| (e.name.clone(), e.pid))
            .collect()
    }

    fn write_ecds(&self, name: &str, config: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.run_dir.join("ecds").join(format!("{name}.json"));
        let wasm = self.modules.get(name).unwrap_or(&self.wasm);
        let v = envoy_config::ecds(self.version, config, wasm, self.fail);
        // Atomic replace: Envoy watches the folder for the file being moved in.
        let tmp = self.run_dir.join("ecds").join(format!(".{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Which pods are up: `live[k][i]` for pod i of cluster k.
    fn live(&self) -> Vec<Vec<bool>> {
        self.topology
            .clusters
            .iter()
            .enumerate()
            .map(|(k, c)| {
                (0..c.endpoints.len())
                    .map(|i| {
                        self.pods
                            .get(k)
                            .and_then(|p| p.get(i))
                            .is_none_or(|p| !p.drained)
                    })
                    .collect()
            })
            .collect()
    }

    /// Writes client `k`'s endpoints files (atomically, as for ECDS) and
    /// returns their folder.
    fn write_eds(&self, k: usize) -> anyhow::Result<PathBuf> {
        let c = &self.topology.clusters[k];
        let dir = self.run_dir.join("eds").join(format!("{}-client", c.name));
        std::fs::create_dir_all(&dir)?;
        let files = envoy_config::client_eds(
            &self.topology,
            c,
            self.failover.as_ref(),
            &self.live(),
            self.eds_version,
        );
        for (cluster, v) in files {
            let path = envoy_config::eds_file(&dir, &cluster);
            let tmp = dir.join(".eds.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(dir)
    }

    /// Sends every client sidecar its endpoints again (as istiod does when a
    /// pod stops or starts being ready) and waits until each applied them.
    fn push_endpoints(&mut self) -> anyhow::Result<()> {
        self.eds_version += 1;
        let stat = |e: &Envoy| {
            e.stat(&format!(
                "cluster.outbound|80||{};.update_success",
                topology::SERVICES[0]
            ))
        };
        for k in 0..self.clients.len() {
            let before = stat(&self.clients[k].0)?;
            self.write_eds(k)?;
            let start = Instant::now();
            while stat(&self.clients[k].0)? <= before {
                if start.elapsed() > Duration::from_secs(10) {
                    bail!(
                        "{}: endpoints not updated 10s after writing its EDS file",
                        self.clients[k].0.name
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn index(&self, cluster: &str) -> anyhow::Result<usize> {
        let names = self.topology.names();
        names.iter().position(|n| n == cluster).with_context(|| {
            format!(
                "unknown cluster {cluster:?}, expected one of {}",
                names.join(", ")
            )
        })
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.topology.names()
    }

    /// The client sidecar of a cluster.
    pub fn client(&self, cluster: &str) -> anyhow::Result<&Envoy> {
        Ok(&self.clients[self.index(cluster)?].0)
    }

    /// Applies (or removes) the seed's DestinationRule on the default
    /// clusters — locality failover with outlier detection — the way a new
    /// CDS push would: each client sidecar is restarted with the new
    /// clusters (its ECDS file, so its plugin config, stays).
    pub fn set_locality_failover(
        &mut self,
        failover: Option<LocalityFailover>,
    ) -> anyhow::Result<()> {
        self.failover = failover;
        self.reload_clients()
    }

    /// The DestinationRule of the preference subsets changes (outlier
    /// detection), as an operator applies one rendered from the same mesh
    /// description as the plugin config: client sidecars reload when it does.
    fn apply_outlier(&mut self, outlier: envoy_config::Outlier) -> anyhow::Result<()> {
        if outlier == self.outlier {
            return Ok(());
        }
        self.outlier = outlier;
        self.reload_clients()
    }

    /// Restarts every client sidecar with clusters for the current
    /// DestinationRules, the way a CDS push changes them (its ECDS file, so its
    /// plugin config, stays).
    fn reload_clients(&mut self) -> anyhow::Result<()> {
        let failover = self.failover.clone();
        let logs = log_dir(&self.run_dir);
        for k in 0..self.clients.len() {
            let c = self.topology.clusters[k].clone();
            let tls = Tls {
                leaf: &self.client_leaf,
                ca: &self.ca,
            };
            let (old, ecds) = self.clients[k].clone();
            let eds = self.write_eds(k)?;
            let boot = envoy_config::client_sidecar(
                &self.topology,
                &c,
                &tls,
                &ecds,
                &eds,
                failover.as_ref(),
                &self.outlier,
            );
            std::fs::write(&old.bootstrap, serde_json::to_vec_pretty(&boot)?)?;
            old.stop();
            let e = process::spawn(&self.envoy_bin, &old.name, &old.bootstrap, old.admin, &logs)?;
            self.clients[k].0 = e;
        }
        for (e, _) in &self.clients {
            e.wait_ready(Duration::from_secs(60))?;
        }
        Ok(())
    }

    /// Sends one request the way the scenario runner does and follows it.
    pub fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        self.requests += 1;
        let from = spec
            .from
            .clone()
            .unwrap_or_else(|| default_from.to_string());
        let rid = format!("replica-{}-{}", std::process::id(), self.requests);
        let mut headers = vec![("x-request-id".to_string(), rid.clone())];
        headers.extend(
            spec.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        let body = spec.body.as_deref().map(str::as_bytes);
        let addr = match &spec.direct {
            Some(to) => {
                let i = self.index(to)?;
                match spec.peer.as_deref() {
                    None | Some("plaintext") => {
                        let k = self.pods[i].iter().position(|p| !p.drained).unwrap_or(0);
                        let ip = self.topology.clusters[i].endpoints[k];
                        SocketAddr::V4(SocketAddrV4::new(ip, INBOUND))
                    }
                    Some(id) => {
                        let k = self
                            .topology
                            .peer_identities
                            .iter()
                            .position(|p| p == id)
                            .with_context(|| {
                                format!("the test peer has no certificate for {id}")
                            })?;
                        headers.push((DIRECT_HEADER.to_string(), to.clone()));
                        SocketAddr::V4(SocketAddrV4::new(self.topology.peer, PEER_BASE + k as u16))
                    }
                }
            }
            None => {
                let i = self.index(&from)?;
                SocketAddr::V4(SocketAddrV4::new(
                    self.topology.clusters[i].client,
                    OUTBOUND,
                ))
            }
        };
        let r = http::request(
            addr,
            &spec.method,
            &spec.path,
            &spec.authority,
            &headers,
            body,
        )?;
        let upstream_headers = self.seen.lock().ok().and_then(|mut m| m.remove(&rid));
        // The test peer is apparatus: when the server's sidecar refused its
        // handshake, its own Envoy answers 503 and says why in its details
        // (`...remote_connection_failure|TLS_error:...CERTIFICATE_UNKNOWN...`);
        // no HTTP reached the server.
        if let (Some(to), Some(_)) = (&spec.direct, spec.peer.as_deref()) {
            let details = r.header(DETAILS_HEADER).unwrap_or_default();
            if r.status == 503 && details.contains("TLS_error") {
                return Ok(Outcome::refused(&from, to, details));
            }
        }
        let served_by = match &spec.direct {
            Some(to) => Some(to.clone()),
            None => r
                .header("x-hybridmesh-served-by")
                .and_then(|v| v.split(';').find_map(|kv| kv.strip_prefix("cluster=")))
                .map(str::to_string),
        };
        let route = match &spec.direct {
            Some(_) => None,
            None => r.header(ROUTE_HEADER).map(str::to_string),
        };
        // The decision, from the subset the route chose (prefer-<c> / only-<c>).
        let target = route
            .as_deref()
            .and_then(routing::decided_cluster)
            .map(str::to_string);
        let mut response_headers = vec![(":status".to_string(), r.status.to_string())];
        response_headers.extend(r.headers.iter().cloned());
        if spec.direct.is_none() {
            let to = served_by.clone().unwrap_or_else(|| "none".to_string());
            *self.served.entry((from.clone(), to)).or_insert(0) += 1;
        }
        Ok(Outcome {
            from,
            status: r.status,
            body: r.text(),
            served_by,
            target,
            route,
            upstream_headers,
            response_headers,
        })
    }

    /// Requests sent through client sidecars so far, by (from, served by or `none`).
    pub fn served(&self) -> &std::collections::BTreeMap<(String, String), u64> {
        &self.served
    }

    /// Drains one pod's listeners (`POST /drain_listeners`, as the seed does),
    /// then takes it out of EDS as the pod's failing readiness does; returns
    /// once the clients have closed their connections to it (they close the
    /// pools of a host EDS removed).
    pub fn drain_pod(&mut self, cluster: &str, pod: usize) -> anyhow::Result<()> {
        self.stop_listening(cluster, pod)?;
        // The drained pod is no longer ready: it leaves every client's EDS.
        self.push_endpoints()?;
        self.until_closed(cluster, pod)
    }

    /// Every pod of the cluster stops answering (its sidecar refuses
    /// connections) before istiod notices: the endpoints stay in EDS, as for
    /// pods that died between two health checks.
    pub fn kill_pods(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        for k in 0..self.pods[i].len() {
            self.stop_listening(cluster, k)?;
        }
        Ok(())
    }

    /// One pod's sidecar drains its listener: new connections are refused,
    /// an open one closes after its next response. EDS is not touched.
    fn stop_listening(&mut self, cluster: &str, pod: usize) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        let p = self.pods[i].get_mut(pod).context("no such pod")?;
        // `?graceful` starts the drain sequence: with the replica's
        // `--drain-strategy immediate` every response then carries
        // `connection: close` (HTTP/1) and its connection closes. The plain
        // call stops the listeners at once. Since Envoy 1.40 the plain call
        // does both (envoyproxy/envoy#47042); before, it only stopped the
        // listeners and the connections they owned kept serving for as long
        // as a client used them (measured on 1.39.3: a pooled connection
        // still open 120 s after the drain; on 1.38.2 still open after 5 s).
        for path in ["/drain_listeners?graceful", "/drain_listeners"] {
            let r = http::post(p.envoy.admin, path)?;
            if r.status != 200 {
                bail!("{}: {path} answered {}", p.name, r.status);
            }
        }
        p.drained = true;
        // Wait until the listener refuses new connections.
        let ip = self.topology.clusters[i].endpoints[pod];
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, INBOUND));
        let start = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            if start.elapsed() > Duration::from_secs(5) {
                bail!("{}: still accepting connections 5s after the drain", p.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until a drained pod's open connections are closed.
    fn until_closed(&self, cluster: &str, pod: usize) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        let p = self.pods[i].get(pod).context("no such pod")?;
        let start = Instant::now();
        loop {
            let active = p
                .envoy
                .stat("http.inbound_0.0.0.0_8080.downstream_cx_active")
                .unwrap_or(0);
            if active == 0 {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) {
                bail!(
                    "{}: still {active} open connection(s) 5s after the drain",
                    p.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drains every pod of a cluster.
    pub fn drain(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        for k in 0..self.pods[i].len() {
            self.drain_pod(cluster, k)?;
        }
        Ok(())
    }

    /// Replaces a drained pod with a fresh one (same address, current config).
    pub fn restore_pod(&mut self, cluster: &str, pod: usize) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        let logs = log_dir(&self.run_dir);
        let p = self.pods[i].get_mut(pod).context("no such pod")?;
        let was_drained = p.drained;
        if p.drained {
            p.envoy.stop();
            p.envoy = process::spawn(&self.envoy_bin, &p.name, &p.bootstrap, p.envoy.admin, &logs)?;
            p.envoy.wait_ready(Duration::from_secs(60))?;
            p.drained = false;
        }
        p.echo.set_status(0);
        p.echo.up()?;
        if was_drained {
            self.push_endpoints()?;
        }
        Ok(())
    }

    /// Every pod of the cluster back and answering normally.
    pub fn restore(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        for k in 0..self.pods[i].len() {
            self.restore_pod(cluster, k)?;
        }
        Ok(())
    }

    /// The cluster's applications answer `status`.
    pub fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        for p in &self.pods[i] {
            p.echo.set_status(status);
        }
        Ok(())
    }

    /// The cluster's applications die (their sidecars stay).
    pub fn kill_apps(&mut self, cluster: &str) -> anyhow::Result<()> {
        let i = self.index(cluster)?;
        for p in &mut self.pods[i] {
            p.echo.down();
        }
        Ok(())
    }

    /// Real time passes (the replica has no other clock).
    pub fn advance(&mut self, by: Duration) {
        std::thread::sleep(by);
    }

    fn ecds_counts(e: &Envoy) -> anyhow::Result<(u64, u64)> {
        let prefix = format!("extension_config_discovery.http_filter.{FILTER_NAME}.");
        let stats = e.stats("extension_config_discovery")?;
        let get = |s: &str| {
            stats
                .iter()
                .find(|(k, _)| *k == format!("{prefix}{s}"))
                .map(|(_, v)| *v)
                .unwrap_or(0)
        };
        Ok((get("config_reload"), get("update_rejected")))
    }

    /// The sidecars `which` names, with their ECDS file names: `<cluster>`
    /// (its client and its live pods), `<cluster>.client`, `<cluster>.server`,
    /// or `all`.
    fn sidecars(&self, which: &str) -> anyhow::Result<Vec<(usize, Envoy, String)>> {
        let (cluster, side) = match which.split_once('.') {
            Some((c, side)) => (c, Some(side)),
            None => (which, None),
        };
        anyhow::ensure!(
            matches!(side, None | Some("client") | Some("server")),
            "{which:?}: expected all, <cluster>, <cluster>.client or <cluster>.server"
        );
        let only = if cluster == "all" {
            None
        } else {
            Some(self.index(cluster)?)
        };
        let stem = |p: &Path| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("x")
                .to_string()
        };
        let mut out = Vec::new();
        for k in 0..self.configs.len() {
            if only.is_some_and(|o| o != k) {
                continue;
            }
            if side != Some("server") {
                out.push((k, self.clients[k].0.clone(), stem(&self.clients[k].1)));
            }
            if side != Some("client") {
                for p in self.pods[k].iter().filter(|p| !p.drained) {
                    out.push((k, p.envoy.clone(), stem(&p.ecds)));
                }
            }
        }
        Ok(out)
    }

    /// Rolls a module out by ECDS: the sidecars `which` names (`all`,
    /// `<cluster>`, `<cluster>.client` or `<cluster>.server`) get `wasm` with
    /// their current plugin config, as a WasmPlugin with a new url and sha256
    /// reaches them; waits for each to accept or reject it. Returns whether all
    /// accepted. Envoy builds new VMs for the new code; streams in flight
    /// finish on the old ones.
    pub fn push_module(&mut self, which: &str, wasm: &Path) -> anyhow::Result<bool> {
        let wasm =
            std::fs::canonicalize(wasm).with_context(|| format!("module {}", wasm.display()))?;
        self.version += 1;
        let mut waits = Vec::new();
        for (k, e, name) in self.sidecars(which)? {
            if *self.modules.get(&name).unwrap_or(&self.wasm) == wasm {
                // Already runs it: an identical resource changes nothing in Envoy.
                continue;
            }
            let before = Self::ecds_counts(&e)?;
            if wasm == self.wasm {
                self.modules.remove(&name);
            } else {
                self.modules.insert(name.clone(), wasm.clone());
            }
            let config = self.configs[k].clone();
            self.write_ecds(&name, &config)?;
            waits.push(PendingEcds {
                envoy: e,
                before,
                name,
                config,
            });
        }
        self.wait_ecds(waits)
    }

    /// Pushes a plugin config by ECDS to the sidecars of `cluster` (or `all`)
    /// and waits for each to accept or reject it. Returns whether all accepted.
    pub fn push_config(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool> {
        let only = if cluster == "all" {
            None
        } else {
            Some(self.index(cluster)?)
        };
        self.version += 1;
        let mut waits = Vec::new();
        for (k, e, name) in self.sidecars(cluster)? {
            let before = Self::ecds_counts(&e)?;
            self.write_ecds(&name, config)?;
            if self.configs[k] != config {
                waits.push(PendingEcds {
                    envoy: e,
                    before,
                    name,
                    config: config.to_vec(),
                });
            }
        }
        let all = self.wait_ecds(waits)?;
        if all {
            for k in 0..self.configs.len() {
                if only.is_none_or(|o| o == k) {
                    self.configs[k] = config.to_vec();
                }
            }
            if let Some(o) = envoy_config::Outlier::of(config, topology::SERVICES[0]) {
                self.apply_outlier(o)?;
            }
        }
        Ok(all)
    }

    /// Waits until each sidecar's ECDS counters say its new file was applied or
    /// rejected (writing it again when the file watch missed the move).
    /// Whether all applied.
    fn wait_ecds(&mut self, waits: Vec<PendingEcds>) -> anyhow::Result<bool> {
        let mut all = true;
        for PendingEcds {
            envoy: e,
            before: (reload, rejected),
            name,
            config,
        } in waits
        {
            let start = Instant::now();
            let mut delivered = 1;
            loop {
                let (r2, j2) = Self::ecds_counts(&e)?;
                if j2 > rejected {
                    all = false;
                    break;
                }
                if r2 > reload {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let stats = e
                        .stats("extension_config_discovery")
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    bail!(
                        "{} (pid {}): no ECDS update seen 10s after writing its file {delivered} times (stats: {stats}; log {})",
                        e.name,
                        e.pid,
                        e.log.display()
                    );
                }
                // The file watch can miss a move; deliver it again.
                if start.elapsed() > Duration::from_secs(2 * delivered) {
                    self.write_ecds(&name, &config)?;
                    delivered += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(all)
    }

    fn proxies(&self, proxy: &str) -> anyhow::Result<Vec<&Envoy>> {
        let (cluster, side) = proxy.rsplit_once('.').with_context(|| {
            format!("proxy {proxy:?}: expected <cluster>.client or <cluster>.server")
        })?;
        let i = self.index(cluster)?;
        match side {
            "client" => Ok(vec![&self.clients[i].0]),
            "server" => Ok(self.pods[i].iter().map(|p| &p.envoy).collect()),
            "gateway" => Ok(vec![&self.gateways[i]]),
            _ => bail!("proxy {proxy:?}: expected <cluster>.client or <cluster>.server"),
        }
    }

    /// A filter counter (`wasmcustom.<name>`), summed over the proxy's processes.
    pub fn metric(&self, proxy: &str, name: &str) -> anyhow::Result<Option<u64>> {
        let mut total = None;
        for e in self.proxies(proxy)? {
            let full = format!("wasmcustom.{name}");
            if let Some((_, v)) = e.stats("wasmcustom")?.into_iter().find(|(k, _)| *k == full) {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        Ok(total)
    }

    /// `/stats/prometheus` of the proxy's processes, concatenated.
    pub fn prometheus(&self, proxy: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        for e in self.proxies(proxy)? {
            out.push_str(&e.prometheus()?);
        }
        Ok(out)
    }

    /// The filter's log lines, (level, message), levels as in the harness
    /// (`warn`, not `warning`).
    pub fn logs(&self, proxy: &str) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for e in self.proxies(proxy)? {
            out.extend(wasm_log_lines(&e.log_text()));
        }
        Ok(out)
    }

    /// The hop record the client sidecar of `from` logged for a request id.
    pub fn hop_line(&self, from: &str, request_id: &str) -> Option<String> {
        let e = self.client(from).ok()?;
        let needle = format!("hop id={request_id} ");
        // The log line may land a moment after the response.
        for _ in 0..20 {
            if let Some(l) = e.log_text().lines().find(|l| l.contains(&needle)) {
                return l.find("hop id=").map(|k| l[k..].to_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The request id of the last request sent.
    pub fn last_request_id(&self) -> String {
        format!("replica-{}-{}", std::process::id(), self.requests)
    }

    /// Stops every process (also done on drop).
    pub fn stop(&mut self) {
        let pids: Vec<u32> = self.all_envoys().iter().map(|e| e.pid).collect();
        process::stop_many(&pids);
        for p in self.pods.iter_mut().flatten() {
            p.echo.down();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

fn admin(ip: std::net::Ipv4Addr) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, ADMIN))
}

/// `[ts][level][wasm] wasm log <plugin>[ <vm>]: <message>` -> (level, message).
pub fn wasm_log_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split_once("][").map(|(_, r)| r)?;
            let (level, rest) = rest.split_once("][")?;
            let rest = rest.strip_prefix("wasm] ")?;
            let msg = rest
                .strip_prefix("wasm log ")
                .and_then(|m| m.split_once(": ").map(|(_, m)| m))
                .unwrap_or(rest);
            let level = if level == "warning" { "warn" } else { level };
            Some((level.to_string(), msg.to_string()))
        })
        .collect()
}
