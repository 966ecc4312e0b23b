//! How the filter's delivery fails, with traffic: the registry down, the pull
//! secret missing, a wrong digest, an image the agent refuses, each while
//! pods start or the plugins are upgraded; and what requests get meanwhile.
//!
//! What istio-agent does when it cannot fetch a module (Istio 1.31,
//! `pkg/wasm/convert.go`, `MaybeConvertWasmExtensionConfig`): it hands Envoy
//! an RBAC filter under the plugin's name instead, allow-all when the
//! plugin's failure policy is FAIL_OPEN and deny-all otherwise (FAIL_CLOSE
//! and FAIL_RELOAD alike), and ACKs. It does not try again by itself; the
//! next ECDS push for that resource does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hybridmesh_scenario::RequestSpec;
use serde::Serialize;

use crate::admin::{self, Runs};
use crate::{output, Lab, CLUSTERS, PLUGIN};

/// What a batch of requests got, by what a user can tell apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Served, both sides of the filter ran (the application saw the
    /// client side's tags, the response names the cluster that served).
    pub with_filter: u32,
    /// Served, but the client side did not run (no tags, no decision:
    /// Istio's own routing).
    pub without_client_side: u32,
    /// Served, but the server side did not run (no served-by header, no
    /// cluster-local enforcement).
    pub without_server_side: u32,
    /// Answered 403 by the RBAC filter in the server side's place.
    pub forbidden: u32,
    /// Answered 5xx.
    pub failed: u32,
    /// Anything else (status, first line of the body).
    pub other: Vec<String>,
}

impl Tally {
    pub fn total(&self) -> u32 {
        self.with_filter
            + self.without_client_side
            + self.without_server_side
            + self.forbidden
            + self.failed
            + self.other.len() as u32
    }

    /// `40 with the filter` / `20 forbidden (403), 20 with the filter`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.with_filter, "with the filter"),
            (self.without_client_side, "served without the client side"),
            (self.without_server_side, "served without the server side"),
            (self.forbidden, "forbidden (403)"),
            (self.failed, "failed (5xx)"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if !self.other.is_empty() {
            parts.push(format!("{} other: {:?}", self.other.len(), self.other));
        }
        parts.join(", ")
    }
}

impl Lab {
    /// `n` requests from `from`'s sleep pod to echo-svc, one after another.
    pub fn tally(&mut self, from: &str, n: usize) -> anyhow::Result<Tally> {
        let mut t = Tally::default();
        let vip = self.vip(from, "echo-svc.default")?;
        let spec = RequestSpec::get(from, "echo-svc.default");
        for i in 0..n {
            // The route is not what these requests are about: no access log look-up.
            let rid = format!("tally-{}-{i}", std::process::id());
            let o = crate::curl(
                &format!("hmlab-{from}-sleep-0"),
                "echo-svc.default",
                80,
                &vip,
                &spec,
                &rid,
            )?;
            let tagged = o.upstream_headers.as_ref().is_some_and(|h| {
                hybridmesh_scenario::header(h, "x-hybridmesh-source-cluster").is_some()
            });
            match o.status {
                200 if tagged && o.served_by.is_some() => t.with_filter += 1,
                200 if o.served_by.is_some() => t.without_client_side += 1,
                200 => t.without_server_side += 1,
                403 => t.forbidden += 1,
                500..=599 => t.failed += 1,
                s => t
                    .other
                    .push(format!("{s} {}", o.body.lines().next().unwrap_or_default())),
            }
        }
        Ok(t)
    }

    fn registry_script(&self, what: &str) -> anyhow::Result<()> {
        let out = Command::new(self.root.join("istio-lab/registry.sh"))
            .arg(what)
            .arg(&self.run)
            .output()
            .context("cannot run istio-lab/registry.sh")?;
        anyhow::ensure!(
            out.status.success(),
            "istio-lab/registry.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Stops the lab's registry: every pull then fails to connect.
    pub fn registry_down(&self) -> anyhow::Result<()> {
        self.registry_script("down")
    }

    /// Starts the lab's registry again, with what it held.
    pub fn registry_up(&self) -> anyhow::Result<()> {
        self.registry_script("up")
    }

    /// The pod directory of `cluster`'s echo-svc pod `i` (0 or 1).
    pub fn echo_pod(&self, cluster: &str, i: usize) -> PathBuf {
        self.servers(cluster).swap_remove(i.min(1))
    }

    /// What each of the pod's plugins runs now: the module, or the RBAC
    /// filter the agent put in its place.
    pub fn plugins_run(&self, pod: &std::path::Path) -> anyhow::Result<Vec<Runs>> {
        Ok(admin::ecds(pod, PLUGIN)?
            .into_iter()
            .map(|e| e.runs)
            .collect())
    }

    /// The pod's agent's Wasm fetches by result.
    pub fn pod_fetches(&self, pod: &std::path::Path) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut by = BTreeMap::new();
        for (series, v) in admin::agent_metrics(pod, "istio_agent_wasm_remote_fetch_count")? {
            let result = series
                .split("result=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_string();
            *by.entry(result).or_insert(0.0) += v;
        }
        Ok(by)
    }

    /// Replaces `cluster`'s echo-svc pod `i` with a new one, as a rollout or
    /// a rescheduled pod does: a new agent with an empty Wasm cache, started
    /// while the plugins are already applied. Waits until its proxy has
    /// both plugins in some form (module or RBAC stand-in) and its
    /// listeners are active, and returns how long that took.
    pub fn replace_echo_pod(&mut self, cluster: &str, i: usize) -> anyhow::Result<Duration> {
        let started = self.restart_echo_pod(cluster, i)?;
        let pod = self.echo_pod(cluster, i);
        self.wait_for(&format!("{}: both plugins", pod.display()), || {
            Ok(admin::ecds(&pod, PLUGIN)?.len() == 2)
        })?;
        self.wait_for(&format!("{}: listeners active", pod.display()), || {
            admin::listeners_settled(&pod)
        })?;
        Ok(started.elapsed())
    }

    /// Stops `cluster`'s echo-svc pod `i` (its whole process group) and
    /// starts it again from the Pod the API stores, as its kubelet would;
    /// returns when `sidecar.sh` started it, with the moment it was asked to.
    pub(crate) fn restart_echo_pod(&mut self, cluster: &str, i: usize) -> anyhow::Result<Instant> {
        let name = ["echo-svc-0", "echo-svc-1"][i.min(1)];
        let pod = self.echo_pod(cluster, i);
        for f in ["pid", "app.pid"] {
            if let Ok(pid) = std::fs::read_to_string(pod.join(f)) {
                let _ = Command::new("kill")
                    .args(["-TERM", "--", &format!("-{}", pid.trim())])
                    .status();
            }
        }
        // the old process group gone before the new one binds the same ports
        let group = std::fs::read_to_string(pod.join("pid")).unwrap_or_default();
        let gone = Instant::now();
        while !group.trim().is_empty()
            && Command::new("pgrep")
                .args(["-g", group.trim()])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        {
            anyhow::ensure!(
                gone.elapsed() < Duration::from_secs(20),
                "{name} did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let started = Instant::now();
        output(
            Command::new(self.root.join("istio-lab/sidecar.sh")).args([cluster, "default", name]),
        )
        .with_context(|| format!("istio-lab/sidecar.sh {cluster} default {name}"))?;
        Ok(started)
    }

    /// Applies every cluster's overlay with the plugins' url and sha256
    /// replaced (an upgrade to another image, or a wrong digest), and
    /// returns once istiod has pushed it: each sidecar's proxy holds the
    /// new plugin configs in some form. `None`: the overlays as delivered.
    pub fn apply_image(&mut self, image: Option<(&str, &str)>) -> anyhow::Result<()> {
        self.apply_plugins(image, None)
    }

    /// [`Lab::apply_image`], and both plugins' `failStrategy` replaced too.
    pub fn apply_plugins(
        &mut self,
        image: Option<(&str, &str)>,
        fail_strategy: Option<&str>,
    ) -> anyhow::Result<()> {
        let wanted = image.map(|(u, s)| {
            (
                u.to_string(),
                s.to_string(),
                fail_strategy.map(str::to_string),
            )
        });
        if wanted == self.image_override {
            return Ok(());
        }
        for (c, _, _) in CLUSTERS {
            let mut items = self.overlay_items(c, |kind| kind == "WasmPlugin")?;
            for v in &mut items {
                if let (Some((url, sha)), Some(spec)) =
                    (image, v.get_mut("spec").and_then(|s| s.as_object_mut()))
                {
                    spec.insert("url".into(), url.into());
                    spec.insert("sha256".into(), sha.into());
                    if let Some(f) = fail_strategy {
                        spec.insert("failStrategy".into(), f.into());
                    }
                }
            }
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            // (A proxy that never had a plugin has no ECDS resource: its
            // admin answers 404.)
            let before: Vec<String> = self
                .sidecars(c)
                .iter()
                .map(|p| admin::get(p, "config_dump?resource=ecds_filters").unwrap_or_default())
                .collect();
            self.kubectl(c, &["apply", "-f", "-"], Some(&list.to_string()))?;
            for (pod, before) in self.sidecars(c).iter().zip(before) {
                self.wait_for(&format!("{}: the new plugin image", pod.display()), || {
                    Ok(
                        admin::get(pod, "config_dump?resource=ecds_filters")? != before
                            && admin::ecds(pod, PLUGIN)?.len() == 2,
                    )
                })?;
            }
        }
        self.image_override = wanted;
        Ok(())
    }

    /// Re-applies the WasmPlugins unchanged but for an annotation, which
    /// makes istiod push them again (a new resourceVersion), the way an
    /// operator nudges agents to fetch again after an outage.
    pub fn repush_plugins(&mut self, cluster: &str) -> anyhow::Result<()> {
        let stamp = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        for name in ["hybridmesh-client", "hybridmesh-server"] {
            self.kubectl(
                cluster,
                &[
                    "-n",
                    "istio-system",
                    "annotate",
                    "--overwrite",
                    "wasmplugin",
                    name,
                    &format!("hybridmesh.io/repush={stamp}"),
                ],
                None,
            )?;
        }
        Ok(())
    }

    /// The pull secret of `cluster` deleted, or put back (as up.sh makes it).
    pub fn set_pull_secret(&mut self, cluster: &str, present: bool) -> anyhow::Result<()> {
        if !present {
            self.kubectl(
                cluster,
                &["-n", "istio-system", "delete", "secret", "hybridmesh-pull"],
                None,
            )?;
            return Ok(());
        }
        let registry = self.run.join("registry");
        let user = std::fs::read_to_string(registry.join("user"))?;
        let password = std::fs::read_to_string(registry.join("password"))?;
        self.kubectl(
            cluster,
            &[
                "-n",
                "istio-system",
                "create",
                "secret",
                "docker-registry",
                "hybridmesh-pull",
                "--docker-server=127.60.0.1:5443",
                &format!("--docker-username={}", user.trim()),
                &format!("--docker-password={}", password.trim()),
            ],
            None,
        )?;
        Ok(())
    }

    /// Waits (up to `limit`) until what the pod's plugins run satisfies
    /// `done`; how long it took, or `None` if it did not within `limit`.
    pub fn until_runs(
        &self,
        pod: &std::path::Path,
        limit: Duration,
        done: impl Fn(&[Runs]) -> bool,
    ) -> anyhow::Result<Option<Duration>> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(&self.plugins_run(pod)?) {
                return Ok(Some(start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(None)
    }

    /// Waits (up to `limit`) until every plugin of `pod` runs the module;
    /// how long it took, or `None` if it did not within `limit`.
    pub fn until_module(
        &self,
        pod: &std::path::Path,
        limit: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        self.until_runs(pod, limit, |r| {
            r.len() == 2 && r.iter().all(|x| *x == Runs::Wasm)
        })
    }

    /// Waits (up to `limit`) until every sidecar of `cluster` runs the
    /// module in both plugins; how long it took, or `None`.
    pub fn until_module_everywhere(
        &self,
        cluster: &str,
        limit: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        let start = Instant::now();
        for pod in self.sidecars(cluster) {
            let left = limit.saturating_sub(start.elapsed());
            if self.until_module(&pod, left)?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(start.elapsed()))
    }

    /// The filter's plugins of `cluster` as TrafficExtensions (Istio 1.30+:
    /// `render --istio 1.31` of `examples/deploy.yaml`), with the lab's
    /// registry host in their url and, when given, another plugin config
    /// (`Some(None)`: none).
    pub(crate) fn traffic_extensions(
        &self,
        cluster: &str,
        config: Option<Option<&serde_json::Value>>,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        use hybridmesh_ops::deploy::{render, MeshDescription};
        let path = self.root.join("examples/deploy.yaml");
        let text = std::fs::read_to_string(&path)?;
        let mut mesh = MeshDescription::from_yaml(&text)
            .map_err(|p| anyhow::anyhow!("examples/deploy.yaml: {p:?}"))?;
        mesh.istio = Some("1.31".into());
        let url = std::fs::read_to_string(self.run.join("image-url"))?;
        let sha = self.delivery.as_ref().map(|d| d.sha256.clone());
        let mut items = Vec::new();
        for node in render::wasm_plugins(&mesh, cluster) {
            let mut v = node.to_json();
            anyhow::ensure!(
                v["kind"] == "TrafficExtension",
                "render --istio 1.31 wrote {}",
                v["kind"]
            );
            let wasm = &mut v["spec"]["wasm"];
            wasm["url"] = url.trim().into();
            if let Some(sha) = &sha {
                wasm["sha256"] = sha.clone().into();
            }
            match config {
                Some(Some(c)) => wasm["pluginConfig"] = c.clone(),
                Some(None) => {
                    if let Some(o) = wasm.as_object_mut() {
                        o.remove("pluginConfig");
                    }
                }
                None => {}
            }
            items.push(v);
        }
        Ok(items)
    }

    /// The filter's plugins each sidecar of `cluster` runs: the names its
    /// active listeners' filter chains refer to (Envoy keeps an ECDS
    /// resource in its config dump after the last listener lets go of it).
    pub fn plugins_in_listeners(&self, cluster: &str) -> anyhow::Result<Vec<BTreeSet<String>>> {
        self.sidecars(cluster)
            .iter()
            .map(|p| plugins_in_pod_listeners(p))
            .collect()
    }

    /// Moves `cluster` from WasmPlugins to TrafficExtensions the way the
    /// README says (apply the TrafficExtensions, then delete the
    /// WasmPlugins), calling `during` while both are applied.
    pub fn migrate_to_traffic_extensions(
        &mut self,
        cluster: &str,
        mut during: impl FnMut(&mut Lab) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let items = self.traffic_extensions(cluster, None)?;
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        self.kubectl(cluster, &["apply", "-f", "-"], Some(&list.to_string()))?;
        for pod in self.sidecars(cluster) {
            self.wait_for(&format!("{}: four plugins", pod.display()), || {
                let e = admin::ecds(&pod, PLUGIN)?;
                Ok(e.len() == 4 && e.iter().all(|x| x.runs == Runs::Wasm))
            })?;
        }
        during(self)?;
        self.kubectl(
            cluster,
            &[
                "-n",
                "istio-system",
                "delete",
                "wasmplugin",
                "hybridmesh-client",
                "hybridmesh-server",
            ],
            None,
        )?;
        self.wait_for(&format!("{cluster}: the TrafficExtensions alone"), || {
            Ok(self
                .plugins_in_listeners(cluster)?
                .iter()
                .all(|names| names.len() == 2 && names.iter().all(|n| !n.contains("translated"))))
        })?;
        for pod in self.sidecars(cluster) {
            self.wait_for(&format!("{}: listeners active", pod.display()), || {
                admin::listeners_settled(&pod)
            })?;
        }
        Ok(())
    }
}

/// The filter's plugins the pod's active listeners refer to (ECDS names).
pub(crate) fn plugins_in_pod_listeners(pod: &std::path::Path) -> anyhow::Result<BTreeSet<String>> {
    let text = admin::get(pod, "config_dump?resource=dynamic_listeners")?;
    Ok(text
        .split("extensions.istio.io/trafficextension/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.contains(PLUGIN))
        .map(str::to_string)
        .collect())
}
