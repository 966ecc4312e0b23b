//! The seed's two clusters under a real Istio control plane, as a scenario
//! backend: `istio-lab/` (the Go side) runs per cluster a kube-apiserver with
//! etcd and an istiod, and every pod as pilot-agent + Envoy in its own network
//! namespace; this crate drives it the way an operator and the pods' users do:
//! `kubectl apply` for the plugin config, pods marked not Ready for a drain,
//! `curl` from the sleep pod's namespace as its application.
//!
//! What the replica (`hybridmesh-replica`) writes by hand, istiod computes
//! here from Kubernetes objects and the manifests `wasmplugin/` renders, so
//! [`Lab`] and the replica answering the same scenario differently is a
//! finding (`tests/differential.rs`).
//!
//! Needs root (network namespaces) and the lab's binaries (`istio-lab/build.sh`).

mod admin;
pub mod delivery;
pub mod demo;
mod logs;
pub mod metrics;
pub mod per_pod;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hybridmesh_filter_core::routing;
use hybridmesh_scenario::runner::Backend;
use hybridmesh_scenario::{Outcome, RequestSpec};

pub use admin::Runs;
pub use logs::{wasm_fetch_errors, wasm_log_lines};

/// The lab's clusters: name, the second octet of its 127.x addresses, its etcd port.
pub const CLUSTERS: [(&str, u8, u16); 2] = [("gke", 61, 23791), ("anthos", 62, 23793)];

/// The echo-svc pods of every cluster (`127.<n>.1.<last>`).
const ECHO_PODS: [(&str, u8); 2] = [("echo-svc-0", 9), ("echo-svc-1", 10)];

/// The part of the ECDS names of the filter's WasmPlugins.
const PLUGIN: &str = "hybridmesh";

/// How long a config push, a drain or a restore may take to reach the proxies.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Extra `NAME=value` settings for both istiods (`LAB_ISTIOD_ENV`), e.g.
    /// `PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS=false`.
    pub istiod_env: Vec<String>,
    /// The filter's `.wasm`, pushed to the lab's registry.
    pub wasm: PathBuf,
    /// The plugins as TrafficExtensions (`render --istio 1.31`) instead of
    /// the WasmPlugins `wasmplugin/` holds.
    pub traffic_extensions: bool,
    /// The Istio release (an `istio` row of `versions.tsv`: `1.30`), run
    /// with the Envoy it ships; `None`: the newest.
    pub istio: Option<String>,
    /// Each sidecar's worker threads (`LAB_CONCURRENCY`, the mesh config's
    /// `defaultConfig.concurrency`); `None`: the lab's 1 (Istio's default is 2).
    pub concurrency: Option<u32>,
}

/// What a running lab runs, read from it: the Istio release and its
/// module version (`istio.io/istio@...`), and the Envoy version a sidecar's
/// admin reports (`/server_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub istio: String,
    pub istio_module: String,
    pub envoy: String,
}

/// How the filter reached the sidecars: pushed to the lab's registry with
/// `hybridmesh package --push`'s code, pulled by every istio-agent with the
/// pull secret.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The WasmPlugins' url (`oci://127.60.0.1:5443/...`).
    pub url: String,
    /// The image's manifest digest, as the registry serves it.
    pub sha256: String,
    /// False when the `.wasm` is not the release `wasmplugin/` pins, so the
    /// overlays pinned the pushed digest instead (a filter changed without
    /// `scripts/release`).
    pub pinned_as_rendered: bool,
}

impl LabOptions {
    /// Istio's defaults and the `.wasm` this checkout builds
    /// (`HYBRIDMESH_WASM`, else `target/wasm32-wasip1/wasm/hybridmesh_filter.wasm`).
    pub fn for_checkout(root: &Path) -> LabOptions {
        LabOptions {
            istiod_env: Vec::new(),
            wasm: std::env::var_os("HYBRIDMESH_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/wasm32-wasip1/wasm/hybridmesh_filter.wasm")),
            // HYBRIDMESH_LAB_KIND=TrafficExtension: the plugins as Istio
            // 1.30+'s TrafficExtensions instead of WasmPlugins.
            traffic_extensions: std::env::var("HYBRIDMESH_LAB_KIND").as_deref()
                == Ok("TrafficExtension"),
            // HYBRIDMESH_LAB_ISTIO=1.30: that release (versions.tsv).
            istio: std::env::var("HYBRIDMESH_LAB_ISTIO")
                .ok()
                .filter(|v| !v.is_empty()),
            concurrency: None,
        }
    }
}

/// A running lab; dropping it stops every process (`istio-lab/down.sh`).
pub struct Lab {
    root: PathBuf,
    run: PathBuf,
    bin: PathBuf,
    /// (cluster, `name.namespace`) -> the Service's ClusterIP.
    vips: BTreeMap<(String, String), String>,
    /// The plugin config last applied per cluster (what istiod serves).
    applied: BTreeMap<String, Option<serde_json::Value>>,
    /// The echo-svc pods (indices into `ECHO_PODS`) marked not Ready, per cluster.
    drained: BTreeMap<String, BTreeSet<usize>>,
    requests: u64,
    /// Requests whose route was read from the headers the application saw,
    /// to be confirmed against the access log: (client pod, request id, route).
    unconfirmed: Vec<(PathBuf, String, String)>,
    delivery: Option<Delivery>,
    /// The plugins are TrafficExtensions ([`LabOptions::traffic_extensions`]).
    traffic_extensions: bool,
    /// The plugins' (url, sha256, failStrategy) when a delivery experiment
    /// replaced the delivered ones (all empty: deleted, by
    /// [`Lab::use_plugins`]); `None`: as delivered.
    image_override: Option<(String, String, Option<String>)>,
    /// How long the last [`Lab::apply_config`] took from its `kubectl
    /// apply` until every sidecar of the cluster served the new config.
    last_push: Option<Duration>,
}

impl Lab {
    /// Builds (once: the binaries are reused while `istio-lab/` is unchanged)
    /// and starts the lab, and waits until every sidecar has the filter.
    pub fn start(root: &Path, opts: &LabOptions) -> anyhow::Result<Lab> {
        let uid = output(Command::new("id").arg("-u"))?;
        anyhow::ensure!(
            uid.trim() == "0",
            "the Istio lab needs root (network namespaces, nsenter, iptables): run the test as root"
        );
        let lab = root.join("istio-lab");
        let release: Vec<(&str, String)> = opts
            .istio
            .iter()
            .map(|v| ("LAB_ISTIO", v.clone()))
            .collect();
        run_script(&lab.join("build.sh"), &release, "istio-lab/build.sh")?;
        let mut env = release.clone();
        env.push(("LAB_ISTIOD_ENV", opts.istiod_env.join(" ")));
        env.push(("LAB_APPLY_PLUGINS", "0".to_string()));
        if let Some(n) = opts.concurrency {
            env.push(("LAB_CONCURRENCY", n.to_string()));
        }
        run_script(&lab.join("up.sh"), &env, "istio-lab/up.sh")?;
        let mut l = Lab {
            root: root.to_path_buf(),
            run: root.join("target/istio-lab/run"),
            bin: root.join("target/istio-lab/bin"),
            vips: BTreeMap::new(),
            applied: BTreeMap::new(),
            drained: BTreeMap::new(),
            requests: 0,
            unconfirmed: Vec::new(),
            delivery: None,
            traffic_extensions: opts.traffic_extensions,
            image_override: None,
            last_push: None,
        };
        l.delivery = Some(l.deliver(&opts.wasm)?);
        for (c, _, _) in CLUSTERS {
            for pod in l.sidecars(c) {
                l.wait_for(
                    &format!("{}: the filter's module in its config", pod.display()),
                    || {
                        let ecds = admin::ecds(&pod, PLUGIN)?;
                        if let Some(e) = ecds.iter().find(|e| e.runs != admin::Runs::Wasm) {
                            // The agent could not fetch it and put RBAC in its place: say why.
                            let why = logs::wasm_fetch_errors(&pod).join("\n  ");
                            bail!(
                                "{}: {} runs {:?} instead of the module\n  {why}",
                                pod.display(),
                                e.name,
                                e.runs
                            );
                        }
                        Ok(ecds.len() == 2)
                    },
                )?;
                // and the project's access log (Telemetry) on its active listeners
                l.wait_for(
                    &format!("{}: the access log in its listeners", pod.display()),
                    || admin::listeners_settled(&pod),
                )?;
            }
        }
        Ok(l)
    }

    /// The Istio release and Envoy this lab runs, read from the run (what
    /// up.sh chose) and from a sidecar's admin (what Envoy says it is).
    pub fn versions(&self) -> anyhow::Result<Versions> {
        let env = std::fs::read_to_string(self.run.join("topology.env"))
            .context("the lab's topology.env (up.sh writes it)")?;
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .with_context(|| format!("topology.env has no {k}"))
        };
        let istio = var("LAB_ISTIO")?;
        let bin = PathBuf::from(var("ISTIO_BIN")?);
        let module_dir = std::fs::read_to_string(bin.join("istio-module-dir"))
            .context("istio-module-dir (build.sh writes it)")?;
        let istio_module = Path::new(module_dir.trim())
            .file_name()
            .map(|f| f.to_string_lossy().trim_start_matches("istio@").to_string())
            .unwrap_or_default();
        let pod = self
            .sidecars("gke")
            .into_iter()
            .next()
            .context("the lab has no sidecar")?;
        let info: serde_json::Value = serde_json::from_str(&admin::get(&pod, "/server_info")?)
            .context("/server_info is not JSON")?;
        // "version": "<sha>/1.39.3/Clean/RELEASE/BoringSSL"
        let envoy = info["version"]
            .as_str()
            .and_then(|v| v.split('/').nth(1))
            .context("/server_info has no version")?
            .to_string();
        Ok(Versions {
            istio,
            istio_module,
            envoy,
        })
    }

    /// Pushes the filter's image to the lab's registry as `hybridmesh
    /// package --push` does (the same code, the credentials `docker login`
    /// would have stored), and applies each cluster's overlay: the rendered
    /// WasmPlugins with the lab's registry host in their url. Each istio-agent
    /// then pulls the image with the cluster's pull secret.
    fn deliver(&self, wasm: &Path) -> anyhow::Result<Delivery> {
        let module = std::fs::read(wasm).with_context(|| {
            format!(
                "{}: the filter's .wasm (scripts/build-wasm)",
                wasm.display()
            )
        })?;
        let pushed = self.push_module(&module, None)?;
        let mut pinned_as_rendered = true;
        for (c, _, _) in CLUSTERS {
            let overlay = self.run.join(c).join("overlay");
            let rendered = std::fs::read_to_string(
                self.root
                    .join(format!("wasmplugin/overlays/{c}/wasmplugins.yaml")),
            )?;
            if !rendered.contains(&format!("sha256: {}", pushed.sha256)) {
                pinned_as_rendered = false;
                let k = overlay.join("kustomization.yaml");
                let mut text = std::fs::read_to_string(&k)?;
                text.push_str(&format!(
                    "      - {{op: replace, path: /spec/sha256, value: \"{}\"}}\n",
                    pushed.sha256
                ));
                std::fs::write(&k, text)?;
            }
            if self.traffic_extensions {
                // The overlay's rules, and TrafficExtensions for its WasmPlugins.
                let mut items = self.overlay_items(c, |kind| kind != "WasmPlugin")?;
                for mut te in self.traffic_extensions(c, None)? {
                    te["spec"]["wasm"]["sha256"] = pushed.sha256.clone().into();
                    items.push(te);
                }
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                self.kubectl(c, &["apply", "-f", "-"], Some(&list.to_string()))?;
            } else {
                self.kubectl(c, &["apply", "-k", &overlay.display().to_string()], None)?;
            }
        }
        Ok(Delivery {
            url: pushed.url,
            sha256: pushed.sha256,
            pinned_as_rendered,
        })
    }

    /// Pushes `module` to the lab's registry as `hybridmesh package --push`
    /// does (the same code, the credentials `docker login` would have
    /// stored), in the repository of the lab's image url, under `tag` (or
    /// the url's own).
    pub fn push_module(
        &self,
        module: &[u8],
        tag: Option<&str>,
    ) -> anyhow::Result<hybridmesh_ops::deploy::push::Pushed> {
        use hybridmesh_ops::deploy::{image, push};
        let url = std::fs::read_to_string(self.run.join("image-url"))
            .context("the lab's image url (up.sh writes it)")?;
        let mut target = push::Target::parse(url.trim())?;
        if let Some(t) = tag {
            target.tag = t.to_string();
        }
        let registry = self.run.join("registry");
        let config = std::fs::read_to_string(registry.join("docker/config.json"))
            .context("the lab registry's Docker config (registry.sh writes it)")?;
        let credentials = push::credentials_from_docker_config(&config, &target.registry)?;
        let ca = std::fs::read(registry.join("ca.pem")).context("the lab registry's CA")?;
        let img = image::build(module, image::Variant::Compat, &target.tag)?;
        push::push(&img, &target, &credentials, Some(&ca))
    }

    /// The documents `kubectl kustomize` builds from `cluster`'s overlay
    /// whose kind `keep` accepts.
    fn overlay_items(
        &self,
        cluster: &str,
        keep: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let overlay = self.run.join(cluster).join("overlay");
        let built = self.kubectl(
            cluster,
            &["kustomize", &overlay.display().to_string()],
            None,
        )?;
        let mut items = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&built) {
            let v: serde_json::Value =
                serde::Deserialize::deserialize(doc).context("kubectl kustomize output")?;
            if keep(v["kind"].as_str().unwrap_or_default()) {
                items.push(v);
            }
        }
        Ok(items)
    }

    /// How the filter reached the sidecars.
    pub fn delivery(&self) -> Option<&Delivery> {
        self.delivery.as_ref()
    }

    /// The istio-agents' Wasm fetch counters, summed over the lab's sidecars
    /// by result (`istio_agent_wasm_remote_fetch_count{result="success"}`).
    pub fn wasm_fetches(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut by_result = BTreeMap::new();
        for (c, _, _) in CLUSTERS {
            for pod in self.sidecars(c) {
                for (result, v) in self.pod_fetches(&pod)? {
                    *by_result.entry(result).or_insert(0.0) += v;
                }
            }
        }
        Ok(by_result)
    }

    /// What Prometheus scrapes from the cluster's sidecars: pilot-agent's
    /// merged `:15020/stats/prometheus` (Envoy's stats and the agent's own),
    /// the endpoint an injected pod's `prometheus.io/*` annotations name.
    pub fn prometheus(&self, cluster: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        for pod in self.sidecars(cluster) {
            out.push_str(&admin::agent_get(&pod, "stats/prometheus")?);
        }
        Ok(out)
    }

    /// One of istiod's own metrics in `cluster` (its `:15014/metrics`), summed
    /// over its series; 0 when istiod has not counted any yet.
    pub fn istiod_metric(&self, cluster: &str, name: &str) -> anyhow::Result<f64> {
        let (n, _) = Lab::net(cluster)?;
        let text = output(Command::new("curl").args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.{n}.0.1:15014/metrics"),
        ]))?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum())
    }

    fn net(cluster: &str) -> anyhow::Result<(u8, u16)> {
        CLUSTERS
            .iter()
            .find(|(c, _, _)| *c == cluster)
            .map(|(_, n, port)| (*n, *port))
            .with_context(|| format!("the lab has no cluster {cluster:?}: gke, anthos"))
    }

    fn pod_dir(&self, cluster: &str, ns: &str, pod: &str) -> PathBuf {
        self.run.join("pods").join(format!("{cluster}-{ns}-{pod}"))
    }

    /// The cluster's sidecar pods: the sleep pod (the client) and the echo-svc pods.
    fn sidecars(&self, cluster: &str) -> Vec<PathBuf> {
        let mut v = vec![self.client(cluster)];
        v.extend(self.servers(cluster));
        v
    }

    fn client(&self, cluster: &str) -> PathBuf {
        self.pod_dir(cluster, "sleep", "sleep-0")
    }

    fn servers(&self, cluster: &str) -> Vec<PathBuf> {
        ECHO_PODS
            .iter()
            .map(|(p, _)| self.pod_dir(cluster, "default", p))
            .collect()
    }

    fn kubectl(&self, cluster: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let kubeconfig = self.run.join(cluster).join("kubeconfig");
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(args);
        match stdin {
            None => output(&mut cmd),
            Some(text) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("cannot run the lab's kubectl")?;
                if let Some(mut i) = child.stdin.take() {
                    i.write_all(text.as_bytes())?;
                }
                let out = child.wait_with_output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "kubectl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        }
    }

    /// The ClusterIP of `name.namespace` in `cluster`.
    fn vip(&mut self, cluster: &str, service: &str) -> anyhow::Result<String> {
        let key = (cluster.to_string(), service.to_string());
        if let Some(v) = self.vips.get(&key) {
            return Ok(v.clone());
        }
        let (name, ns) = service.split_once('.').unwrap_or((service, "default"));
        let ip = self
            .kubectl(
                cluster,
                &["-n", ns, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"],
                None,
            )
            .with_context(|| {
                format!("the lab has no Service {name}.{ns} in {cluster} (it runs echo-svc.default and sleep.sleep)")
            })?;
        self.vips.insert(key, ip.clone());
        Ok(ip)
    }

    /// Gives every sidecar of `cluster` (or `all`) this plugin config, by
    /// `kubectl apply` of the WasmPlugins as rendered, and waits for the ECDS
    /// push; false when a proxy rejected it.
    pub fn apply_config(&mut self, which: &str, config: &[u8]) -> anyhow::Result<bool> {
        let value: Option<serde_json::Value> = if config.is_empty() {
            None
        } else {
            match serde_json::from_slice(config) {
                Ok(v @ serde_json::Value::Object(_)) => Some(v),
                _ => bail!(
                    "a config that is not a JSON object cannot be a WasmPlugin's pluginConfig (Istio's schema: an object)"
                ),
            }
        };
        let clusters: Vec<&str> = match which {
            "all" => CLUSTERS.iter().map(|(c, _, _)| *c).collect(),
            c => vec![Self::net(c).map(|_| c)?],
        };
        let mut accepted = true;
        for c in clusters {
            if self.applied.get(c) == Some(&value) {
                continue;
            }
            let items = if self.traffic_extensions {
                self.traffic_extensions(c, Some(value.as_ref()))?
            } else {
                let mut items = self.overlay_items(c, |kind| kind == "WasmPlugin")?;
                for v in &mut items {
                    if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
                        match &value {
                            Some(cfg) => spec.insert("pluginConfig".into(), cfg.clone()),
                            None => spec.remove("pluginConfig"),
                        };
                    }
                }
                items
            };
            let pods = self.sidecars(c);
            let filters: Vec<usize> = pods
                .iter()
                .map(|p| admin::ecds(p, PLUGIN).map(|e| e.len()))
                .collect::<anyhow::Result<_>>()?;
            let rejections_before: Vec<usize> =
                pods.iter().map(|p| admin::ecds_rejections(p)).collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            let applied = Instant::now();
            self.kubectl(c, &["apply", "-f", "-"], Some(&list.to_string()))?;
            // Every filter runs the new config, or its Envoy rejected it (the
            // ECDS update NACKed: Envoy keeps the previous one and logs it).
            for ((pod, filters), rejected_before) in pods.iter().zip(filters).zip(rejections_before)
            {
                let mut rejected = 0;
                self.wait_for(&format!("{}: the new plugin config", pod.display()), || {
                    let now = admin::ecds(pod, PLUGIN)?;
                    rejected = admin::ecds_rejections(pod).saturating_sub(rejected_before);
                    let updated = now.iter().filter(|e| e.config == value).count();
                    // One NACK can cover both filters' resources (one delta response).
                    Ok(now.len() == filters && (updated == filters || rejected > 0))
                })?;
                if rejected > 0 {
                    // Let a push of the other filter's resource land too.
                    std::thread::sleep(Duration::from_secs(1));
                }
                accepted &= rejected == 0;
                // A WasmPlugin change also pushes listeners: serve on the new ones.
                self.wait_for(&format!("{}: listeners active", pod.display()), || {
                    admin::listeners_settled(pod)
                })?;
            }
            self.last_push = Some(applied.elapsed());
            self.applied.insert(c.to_string(), value.clone());
        }
        Ok(accepted)
    }

    /// Marks the cluster's echo-svc pods not Ready, or Ready again.
    fn set_ready(&mut self, cluster: &str, ready: bool) -> anyhow::Result<()> {
        let down = if ready {
            BTreeSet::new()
        } else {
            (0..ECHO_PODS.len()).collect()
        };
        self.set_not_ready(cluster, down)
    }

    /// Marks one echo-svc pod of the cluster (0 or 1) not Ready, as the
    /// seed's walk-through drains its pods one by one.
    pub fn drain_pod(&mut self, cluster: &str, pod: usize) -> anyhow::Result<()> {
        anyhow::ensure!(pod < ECHO_PODS.len(), "the lab has echo-svc pods 0 and 1");
        let mut down = self.drained.get(cluster).cloned().unwrap_or_default();
        down.insert(pod);
        self.set_not_ready(cluster, down)
    }

    /// Marks exactly the `down` echo-svc pods of the cluster not Ready (the
    /// others Ready) as the kubelet would, and writes the EndpointSlice as
    /// the EndpointSlice controller would; waits until the cluster's own
    /// client sidecar has the new endpoints, and a moment for the other istiod.
    fn set_not_ready(&mut self, cluster: &str, down: BTreeSet<usize>) -> anyhow::Result<()> {
        let (n, etcd) = Self::net(cluster)?;
        let slices = std::fs::read_to_string(self.run.join(cluster).join("endpointslices.yaml"))
            .context("the lab's EndpointSlices (up.sh writes them)")?;
        let mut now = slices.clone();
        for k in &down {
            let last = ECHO_PODS[*k].1;
            now = now.replace(
                &format!("[127.{n}.1.{last}], conditions: {{ready: true, serving: true"),
                &format!("[127.{n}.1.{last}], conditions: {{ready: false, serving: false"),
            );
        }
        let file = self.run.join(cluster).join("endpointslices-now.yaml");
        std::fs::write(&file, now)?;
        output(
            Command::new(self.bin.join("labctl"))
                .arg("put-endpointslices")
                .arg("--etcd")
                .arg(format!("http://127.0.0.1:{etcd}"))
                .arg(&file),
        )?;
        for (k, (pod, _)) in ECHO_PODS.iter().enumerate() {
            let status = if down.contains(&k) { "False" } else { "True" };
            let patch = format!(
                r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}"}},{{"type":"ContainersReady","status":"{status}"}}]}}}}"#
            );
            self.kubectl(
                cluster,
                &[
                    "-n",
                    "default",
                    "patch",
                    "pod",
                    pod,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ],
                None,
            )?;
        }
        let client = self.client(cluster);
        self.wait_for(&format!("{cluster}'s echo-svc endpoints not Ready: {down:?}, at its sleep pod"), || {
            let clusters = admin::get(&client, "clusters")?;
            Ok(ECHO_PODS.iter().enumerate().all(|(k, (_, last))| {
                let key = format!(
                    "outbound|80||echo-svc.default.svc.cluster.local::127.{n}.1.{last}:8080::health_flags::"
                );
                let flags = clusters.lines().find_map(|l| l.strip_prefix(key.as_str()));
                match (!down.contains(&k), flags) {
                    (true, Some(f)) => f == "healthy",
                    (true, None) => false,
                    (false, Some(f)) => f.contains("failed_eds_health"),
                    (false, None) => true,
                }
            }))
        })?;
        // The other cluster's istiod watches this apiserver too.
        std::thread::sleep(Duration::from_millis(1500));
        self.drained.insert(cluster.to_string(), down);
        Ok(())
    }

    /// The cluster's echo-svc applications answer `status` (0: normally).
    pub fn set_status(&self, cluster: &str, status: u32) -> anyhow::Result<()> {
        Self::net(cluster)?;
        for pod in self.servers(cluster) {
            let file = pod.join("fail-status");
            if status == 0 {
                let _ = std::fs::remove_file(&file);
            } else {
                std::fs::write(&file, status.to_string())?;
            }
        }
        Ok(())
    }

    /// Back to the state a scenario starts from: every pod Ready, every
    /// application answering normally.
    pub fn reset(&mut self) -> anyhow::Result<()> {
        for (c, _, _) in CLUSTERS {
            self.set_status(c, 0)?;
            if self.drained.get(c).is_some_and(|d| !d.is_empty()) {
                self.set_ready(c, true)?;
            }
        }
        Ok(())
    }

    fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last_error = None;
        while start.elapsed() < PUSH_TIMEOUT {
            match done() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match last_error {
            Some(e) => Err(e.context(format!(
                "timed out after {PUSH_TIMEOUT:?} waiting for {what}"
            ))),
            None => bail!("timed out after {PUSH_TIMEOUT:?} waiting for {what}"),
        }
    }

    /// The routes read from the headers the application saw that Envoy's
    /// access log contradicts (or has no line for after 5 s), as
    /// `request id: ...`; the ones confirmed are forgotten.
    pub fn unconfirmed_routes(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut pending = std::mem::take(&mut self.unconfirmed);
        let start = Instant::now();
        while !pending.is_empty() {
            // Each client's access log once per round: request id -> cluster.
            let mut logged: BTreeMap<PathBuf, BTreeMap<String, String>> = BTreeMap::new();
            for (pod, _, _) in &pending {
                logged.entry(pod.clone()).or_insert_with(|| {
                    std::fs::read_to_string(pod.join("agent.log"))
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.starts_with('{'))
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter_map(|v| {
                            Some((
                                v["request_id"].as_str()?.to_string(),
                                v["cluster"].as_str()?.trim_end_matches(';').to_string(),
                            ))
                        })
                        .collect()
                });
            }
            pending.retain(|(pod, rid, route)| match logged.get(pod).and_then(|m| m.get(rid)) {
                Some(cluster) if cluster == route => false,
                Some(cluster) => {
                    problems.push(format!(
                        "request {rid}: the application saw the decision for {route}, Envoy's access log says {cluster}"
                    ));
                    false
                }
                None => true,
            });
            if start.elapsed() > Duration::from_secs(5) {
                for (_, rid, _) in &pending {
                    problems.push(format!("request {rid}: no access log line after 5s"));
                }
                break;
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        problems
    }

    /// `kubectl apply -f -` of `manifest` in `cluster`, as an operator would:
    /// what kubectl printed, or its error (the API server's answer).
    pub fn kubectl_apply(&self, cluster: &str, manifest: &str) -> anyhow::Result<String> {
        Self::net(cluster)?;
        self.kubectl(cluster, &["apply", "-f", "-"], Some(manifest))
    }

    /// `kubectl` against one cluster's API server, as `kubectl --context <cluster>`.
    pub fn kubectl_in(&self, cluster: &str, args: &[&str]) -> anyhow::Result<String> {
        Self::net(cluster)?;
        self.kubectl(cluster, args, None)
    }

    /// Applies again the rendered object (`wasmplugin/overlays/<cluster>`)
    /// of this kind and name, undoing an operator's change to it.
    pub fn reapply_rendered(&self, cluster: &str, kind: &str, name: &str) -> anyhow::Result<()> {
        let doc = self
            .overlay_items(cluster, |k| k == kind)?
            .into_iter()
            .find(|v| v["metadata"]["name"] == name);
        if let Some(v) = doc {
            self.kubectl(cluster, &["apply", "-f", "-"], Some(&v.to_string()))?;
            return Ok(());
        }
        bail!("wasmplugin/overlays/{cluster} renders no {kind} {name}")
    }

    /// echo-svc's endpoints as the cluster's sleep sidecar has them (as
    /// `istioctl proxy-config endpoints` lists them): address, health, and
    /// the locality priority Envoy gives them.
    pub fn echo_endpoints(&self, cluster: &str) -> anyhow::Result<Vec<String>> {
        Self::net(cluster)?;
        let prefix = "outbound|80||echo-svc.default.svc.cluster.local::";
        let text = admin::get(&self.client(cluster), "clusters")?;
        let mut rows: BTreeMap<String, (String, String)> = BTreeMap::new();
        for l in text.lines().filter_map(|l| l.strip_prefix(prefix)) {
            let mut parts = l.splitn(3, "::");
            let (Some(addr), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !addr.contains(':') {
                continue;
            }
            let row = rows.entry(addr.to_string()).or_default();
            match key {
                "health_flags" => row.0 = value.to_string(),
                "priority" => row.1 = value.to_string(),
                _ => {}
            }
        }
        Ok(rows
            .into_iter()
            .map(|(addr, (health, priority))| {
                format!("{addr:<18} {health:<24} priority {priority}")
            })
            .collect())
    }

    /// Where the lab keeps its logs and config dumps.
    pub fn run_dir(&self) -> &Path {
        &self.run
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(self.root.join("istio-lab/down.sh"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The access log line a pod's Envoy wrote for a request id (JSON, the
/// fields of `wasmplugin/meshconfig-access-log.yaml`). Envoy flushes its
/// access log about once a second.
fn access_log_line(pod: &Path, request_id: &str) -> anyhow::Result<serde_json::Value> {
    let needle = format!("\"request_id\":\"{request_id}\"");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(pod.join("agent.log")).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{') && l.contains(&needle))
        {
            return serde_json::from_str(l)
                .with_context(|| format!("{}: access log line {l:?}", pod.display()));
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!(
                "{}: no access log line for request {request_id} after 5s (is telemetry-access-log.yaml applied?)",
                pod.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command's standard output; an error with its standard error if it failed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one of the lab's scripts; on failure, the end of what it printed.
fn run_script(path: &Path, env: &[(&str, String)], name: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().with_context(|| format!("cannot run {name}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "{name} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

impl Backend for Lab {
    fn cluster_names(&self) -> Vec<String> {
        CLUSTERS.iter().map(|(c, _, _)| c.to_string()).collect()
    }

    /// `curl` from the client cluster's sleep pod, as its application (the
    /// proxy's own user is excluded from the capture), to the Service's
    /// ClusterIP; the echo application echoes the `x-` headers it saw.
    fn request(&mut self, spec: &RequestSpec, default_from: &str) -> anyhow::Result<Outcome> {
        let from = spec
            .from
            .clone()
            .unwrap_or_else(|| default_from.to_string());
        let host = spec.authority.split(':').next().unwrap_or_default();
        let service = host.split(".svc.").next().unwrap_or(host).to_string();
        let port = if spec.direct.is_some() { 8080 } else { 80 };
        self.requests += 1;
        let rid = format!("lab-{}-{}", std::process::id(), self.requests);
        let (netns, target_ip) = match (&spec.direct, spec.peer.as_deref()) {
            (None, _) => (format!("hmlab-{from}-sleep-0"), self.vip(&from, &service)?),
            // A plaintext peer outside the mesh: from the lab's infra namespace
            // straight to a pod, into its inbound capture.
            (Some(to), None | Some("plaintext")) => {
                let (n, _) = Self::net(to)?;
                ("hmlab-infra".to_string(), format!("127.{n}.1.9"))
            }
            // A peer with a mesh certificate for any SPIFFE id: the same path,
            // over mTLS with Istio's ALPN (istio-lab/peer.py).
            (Some(to), Some(id)) => {
                let (n, _) = Self::net(to)?;
                let certs = self.peer_certs(to, id)?;
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", "hmlab-infra", "python3"])
                    .arg(self.root.join("istio-lab/peer.py"))
                    .arg(&certs)
                    .arg(format!("127.{n}.1.9"))
                    .arg(port.to_string())
                    .arg(format!("{host}:{port}"))
                    .arg(&spec.method)
                    .arg(&spec.path)
                    .arg(format!("x-request-id: {rid}"));
                for (k, v) in &spec.headers {
                    cmd.arg(format!("{k}: {v}"));
                }
                if let Some(b) = &spec.body {
                    cmd.arg("--data").arg(b);
                }
                let out = cmd.output().context("cannot run istio-lab/peer.py")?;
                let raw = String::from_utf8_lossy(&out.stdout).into_owned();
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                match out.status.code() {
                    Some(0) => {}
                    // The server's sidecar refused the handshake (its TLS alert).
                    Some(3) => return Ok(Outcome::refused(&from, to, &err)),
                    _ => bail!("an mTLS peer as {id}: {err}"),
                }
                let mut o = parse_response(&raw)
                    .with_context(|| format!("an mTLS peer as {id}: no HTTP response: {raw:?}"))?;
                o.served_by = Some(to.clone());
                o.from = from;
                return Ok(o);
            }
        };
        let mut o = curl(&netns, host, port, &target_ip, spec, &rid)?;
        if let Some(to) = &spec.direct {
            o.served_by = Some(to.clone());
        } else {
            // The route Envoy chose (the decision is the subset it went to,
            // as the replica reports it). Envoy's access log (the project's,
            // wasmplugin/) has it, but flushes about once a second: when the
            // application answered, the route is the one the rendered
            // VirtualService gives the decision headers it saw, confirmed
            // against the access log later ([`Lab::unconfirmed_routes`]);
            // otherwise it is read from the access log now.
            let fqdn = format!("{service}.svc.cluster.local");
            let route = match &o.upstream_headers {
                Some(h) => {
                    let subset = match (
                        hybridmesh_scenario::header(h, "x-hybridmesh-pinned-cluster"),
                        hybridmesh_scenario::header(h, "x-hybridmesh-target-cluster"),
                    ) {
                        (Some(c), _) => routing::only_subset(c),
                        (None, Some(c)) => routing::prefer_subset(c),
                        (None, None) => String::new(),
                    };
                    let route = format!("outbound|{port}|{subset}|{fqdn}");
                    self.unconfirmed
                        .push((self.client(&from), rid.clone(), route.clone()));
                    Some(route)
                }
                None => {
                    let line = access_log_line(&self.client(&from), &rid)?;
                    line["cluster"]
                        .as_str()
                        .map(|c| c.trim_end_matches(';').to_string())
                }
            };
            o.target = route
                .as_deref()
                .and_then(routing::decided_cluster)
                .map(str::to_string);
            o.route = route;
        }
        o.from = from;
        Ok(o)
    }

    /// Which requests are random is the filter's business: compare with the harness.
    fn is_random(&self, _from: &str, _spec: &RequestSpec) -> bool {
        false
    }

    fn drain(&mut self, cluster: &str) -> anyhow::Result<()> {
        self.set_ready(cluster, false)
    }

    fn restore(&mut self, cluster: &str) -> anyhow::Result<()> {
        self.set_status(cluster, 0)?;
        self.set_ready(cluster, true)
    }

    fn fail(&mut self, cluster: &str, status: u32) -> anyhow::Result<()> {
        self.set_status(cluster, status)
    }

    /// Real proxies, real time.
    fn advance(&mut self, by: Duration) -> anyhow::Result<()> {
        std::thread::sleep(by);
        Ok(())
    }

    fn reconfigure(&mut self, cluster: &str, config: &[u8]) -> anyhow::Result<bool> {
        self.apply_config(cluster, config)
    }

    fn metric(&self, proxy: &str, name: &str) -> anyhow::Result<Option<u64>> {
        let mut total = None;
        for pod in self.proxies(proxy)? {
            if let Some(v) = admin::stat(&pod, &format!("wasmcustom.{name}"))? {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        Ok(total)
    }

    fn logs(&self, proxy: &str) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for pod in self.proxies(proxy)? {
            let text = std::fs::read_to_string(pod.join("agent.log")).unwrap_or_default();
            out.extend(wasm_log_lines(&text));
        }
        Ok(out)
    }
}

impl Lab {
    /// A workload certificate for `id` from the mesh's CA, issued under the
    /// intermediate of the cluster other than `to` (a peer from the other
    /// cluster, as the replica's test peer is one), made once per run.
    fn peer_certs(&self, to: &str, id: &str) -> anyhow::Result<PathBuf> {
        let issuer = CLUSTERS
            .iter()
            .map(|(c, _, _)| *c)
            .find(|c| *c != to)
            .context("the lab has one cluster")?;
        let name: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = self.run.join("peers").join(format!("{issuer}-{name}"));
        if !dir.join("cert-chain.pem").exists() {
            let mut cmd = Command::new(self.root.join("istio-lab/certs.sh"));
            cmd.arg("workload")
                .arg(self.run.join("ca"))
                .arg(issuer)
                .arg(id)
                .arg(&dir);
            output(&mut cmd).with_context(|| format!("a certificate for {id}"))?;
        }
        Ok(dir)
    }

    /// `<cluster>.client` (the sleep pod) or `<cluster>.server` (the echo-svc pods).
    fn proxies(&self, proxy: &str) -> anyhow::Result<Vec<PathBuf>> {
        match proxy.split_once('.') {
            Some((c, "client")) => Self::net(c).map(|_| vec![self.client(c)]),
            Some((c, "server")) => Self::net(c).map(|_| self.servers(c)),
            _ => bail!("proxy {proxy:?}: expected <cluster>.client or <cluster>.server"),
        }
    }
}

/// `curl -i` output -> the outcome the client saw, with the request headers
/// the application echoed back (`x-echo-saw-<name>`) as the upstream's.
/// `curl` as the application of the pod whose network namespace is `netns`
/// (as `nobody`, so Istio's capture applies), to `host:port` resolved to
/// `target_ip`, with an `x-request-id` of `rid`.
fn curl(
    netns: &str,
    host: &str,
    port: u16,
    target_ip: &str,
    spec: &RequestSpec,
    rid: &str,
) -> anyhow::Result<Outcome> {
    let mut cmd = as_application(netns);
    cmd.args(["curl", "-s", "-i", "-m", "10", "-X", &spec.method])
        .arg("--resolve")
        .arg(format!("{host}:{port}:{target_ip}"))
        .arg("-H")
        .arg(format!("x-request-id: {rid}"));
    for (k, v) in &spec.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = &spec.body {
        cmd.arg("--data-binary").arg(b);
    }
    cmd.arg(format!("http://{host}:{port}{}", spec.path));
    let raw = output(&mut cmd).with_context(|| format!("curl from {netns}"))?;
    parse_response(&raw).with_context(|| format!("curl from {netns}: no HTTP response: {raw:?}"))
}

/// A command to run as the application of the pod whose network namespace
/// is `netns`: as `nobody`, so Istio's capture applies (the proxy's own user
/// is excluded from it).
pub(crate) fn as_application(netns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).args([
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ]);
    cmd
}

fn parse_response(raw: &str) -> Option<Outcome> {
    // Interim 100 Continue responses come first; the last header block is the answer.
    let mut rest = raw;
    let (head, body) = loop {
        let (head, body) = rest.split_once("\r\n\r\n")?;
        if head.starts_with("HTTP/1.1 100") {
            rest = body;
            continue;
        }
        break (head, body);
    };
    let mut lines = head.lines();
    let status: u32 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut response_headers = vec![(":status".to_string(), status.to_string())];
    let mut upstream = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        match k.strip_prefix("x-echo-saw-") {
            Some(name) => upstream.push((name.to_string(), v)),
            None => response_headers.push((k, v)),
        }
    }
    let served_by = hybridmesh_scenario::header(&response_headers, "x-hybridmesh-served-by")
        .and_then(|v| v.split(';').find_map(|kv| kv.strip_prefix("cluster=")))
        .map(str::to_string);
    let upstream_headers = (!upstream.is_empty()).then_some(upstream);
    Some(Outcome {
        from: String::new(),
        status,
        body: body.to_string(),
        served_by,
        target: None,
        route: None,
        upstream_headers,
        response_headers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn curl_output_becomes_what_the_client_and_the_application_saw() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-hybridmesh-served-by: cluster=gke;network=n\r\nx-echo-saw-x-hybridmesh-target-cluster: gke\r\nx-echo-saw-x-request-id: abc\r\n\r\n\"GKE!!!\"\n";
        let o = parse_response(raw).unwrap();
        assert_eq!(o.status, 200);
        assert_eq!(o.served_by.as_deref(), Some("gke"));
        assert_eq!(o.body, "\"GKE!!!\"\n");
        assert_eq!(o.upstream_header("x-request-id"), Some("abc"));
        assert_eq!(o.response_header(":status"), Some("200"));
        assert!(o.response_header("x-echo-saw-x-request-id").is_none());
        let local = parse_response(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\n\r\nno healthy upstream",
        )
        .unwrap();
        assert_eq!((local.status, local.upstream_headers), (503, None));
        assert!(parse_response("curl: (7) Failed to connect").is_none());
    }
}
