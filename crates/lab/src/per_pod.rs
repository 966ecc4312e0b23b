//! What the filter costs each pod (issue #26), measured where it is paid: a
//! sidecar of the Istio lab, with istiod's real config, both of the filter's
//! plugins (client and server side) and the worker threads the lab was
//! started with (Istio's default is 2: [`crate::LabOptions::concurrency`]).
//!
//! Each measurement starts a new echo-svc pod (a new pilot-agent with an
//! empty Wasm cache, a new Envoy) while the cluster's WasmPlugins run one of
//! three things ([`Plugins`]): nothing, the proxy-wasm Rust SDK's empty filter
//! (the floor any Rust filter pays) and the filter. Then: how long until the
//! pod is Ready (its readiness probe), how long until its application's
//! first request is answered, and after 100 requests where its Envoy's
//! memory is ([`Footprint`]). [`Lab::config_pushes`] pushes new plugin
//! configs and reads the same pod's memory and Wasm VMs before and after.

use std::time::Duration;

use anyhow::Context as _;
use hybridmesh_replica::memory::{mib, Footprint};

use crate::admin::{self, Runs};
use crate::delivery::plugins_in_pod_listeners;
use crate::{Lab, CLUSTERS};

/// What the cluster's two WasmPlugins (`hybridmesh-client`,
/// `hybridmesh-server`) run while a pod is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugins {
    /// No WasmPlugin: the sidecar without any Wasm.
    None,
    /// Both plugins run the proxy-wasm Rust SDK's empty filter
    /// (`crates/bench/probes/sdk-floor`), pushed to the lab's registry.
    SdkEmpty,
    /// Both plugins as delivered: the filter.
    Filter,
}

impl Plugins {
    /// In the order they are measured: the filter as the lab delivered it,
    /// then the SDK floor, then none.
    pub const ALL: [Plugins; 3] = [Plugins::Filter, Plugins::SdkEmpty, Plugins::None];

    pub fn name(self) -> &'static str {
        match self {
            Plugins::None => "no plugin",
            Plugins::SdkEmpty => "empty SDK module x2",
            Plugins::Filter => "hybridmesh client + server",
        }
    }
}

/// One new pod, measured.
#[derive(Debug, Clone)]
pub struct PodCost {
    pub plugins: Plugins,
    /// From the pod's start (`sidecar.sh`, what the kubelet does) until its
    /// readiness probe answers.
    pub ready: Duration,
    /// From the pod's start until its application's first request (to
    /// echo-svc, through its sidecar) is answered 200.
    pub first_request: Duration,
    /// Its Envoy after the application's requests.
    pub footprint: Footprint,
}

/// Config pushes to a running pod.
#[derive(Debug, Clone)]
pub struct Pushes {
    /// From `kubectl apply` of the WasmPlugins with a new pluginConfig
    /// until every sidecar of the cluster serves it (its listeners active
    /// again), sorted.
    pub apply_to_serving: Vec<Duration>,
    /// The measured pod's Envoy before the first push and after the last.
    pub before: Footprint,
    pub after: Footprint,
}

impl Pushes {
    /// The `q`-quantile (0.5: the median) of the apply-to-serving times.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.apply_to_serving.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let i = ((n as f64 - 1.0) * q).round() as usize;
        self.apply_to_serving[i.min(n - 1)]
    }
}

/// The echo-svc pod the measurements replace: gke's first.
const CLUSTER: &str = "gke";
const POD: usize = 0;

impl Lab {
    /// Makes every cluster's WasmPlugins run `plugins` and waits until every
    /// sidecar does. `sdk`: the SDK's empty module, for [`Plugins::SdkEmpty`].
    pub fn use_plugins(&mut self, plugins: Plugins, sdk: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.traffic_extensions,
            "the per-pod measurement switches WasmPlugins; start the lab without HYBRIDMESH_LAB_KIND=TrafficExtension"
        );
        match plugins {
            Plugins::Filter => self.apply_image(None),
            Plugins::SdkEmpty => {
                let pushed = self.push_module(sdk, Some("sdk-empty"))?;
                self.apply_image(Some((&pushed.url, &pushed.sha256)))
            }
            Plugins::None => {
                for (c, _, _) in CLUSTERS {
                    self.kubectl(
                        c,
                        &[
                            "-n",
                            "istio-system",
                            "delete",
                            "--ignore-not-found",
                            "wasmplugin",
                            "hybridmesh-client",
                            "hybridmesh-server",
                        ],
                        None,
                    )?;
                    for pod in self.sidecars(c) {
                        self.wait_for(&format!("{}: no plugin", pod.display()), || {
                            Ok(plugins_in_pod_listeners(&pod)?.is_empty()
                                && admin::listeners_settled(&pod)?)
                        })?;
                    }
                }
                // Not the delivered plugins: `apply_image(None)` applies them again.
                self.image_override = Some((String::new(), String::new(), None));
                Ok(())
            }
        }
    }

    /// Starts gke's echo-svc pod 0 anew and measures it ([`PodCost`]):
    /// `requests` requests from its application after its first answer.
    pub fn measure_new_pod(
        &mut self,
        plugins: Plugins,
        requests: usize,
    ) -> anyhow::Result<PodCost> {
        let vip = self.vip(CLUSTER, "echo-svc.default")?;
        let pod = self.echo_pod(CLUSTER, POD);
        let netns = format!("hmlab-{CLUSTER}-echo-svc-{POD}");
        let started = self.restart_echo_pod(CLUSTER, POD)?;
        let (mut ready, mut first_request) = (None, None);
        while ready.is_none() || first_request.is_none() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "{}: not Ready ({ready:?}) or no request answered ({first_request:?}) after 60 s",
                pod.display()
            );
            if ready.is_none() && admin::ready(&pod) {
                ready = Some(started.elapsed());
            }
            if first_request.is_none() && app_request(&netns, &vip)? == Some(200) {
                first_request = Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let expected = match plugins {
            Plugins::None => vec![],
            _ => vec![Runs::Wasm, Runs::Wasm],
        };
        self.wait_for(&format!("{}: plugins {expected:?}", pod.display()), || {
            let referenced = plugins_in_pod_listeners(&pod)?.len();
            Ok(match plugins {
                Plugins::None => referenced == 0,
                _ => referenced == 2 && self.plugins_run(&pod)? == expected,
            })
        })?;
        for _ in 0..requests {
            let status = app_request(&netns, &vip)?;
            anyhow::ensure!(
                status == Some(200),
                "{}: a request answered {status:?}",
                pod.display()
            );
        }
        Ok(PodCost {
            plugins,
            ready: ready.unwrap_or_default(),
            first_request: first_request.unwrap_or_default(),
            footprint: self.footprint(&pod, plugins == Plugins::Filter)?,
        })
    }

    /// `n` config pushes to gke (the delivered plugin config and the same
    /// with another outlier-detection threshold, in turn; both plugins of
    /// every sidecar), with the footprint of its echo-svc pod 0 before and
    /// after. Needs the filter as delivered ([`Plugins::Filter`]).
    pub fn config_pushes(&mut self, n: usize) -> anyhow::Result<Pushes> {
        let client = self
            .overlay_items(CLUSTER, |k| k == "WasmPlugin")?
            .into_iter()
            .find(|v| v["metadata"]["name"] == "hybridmesh-client")
            .context("the overlay has no hybridmesh-client")?;
        // Both plugins get the same config (no `direction`: each reads its
        // side from the listener), as the differential applies examples.
        let mut a = client["spec"]["pluginConfig"].clone();
        if let Some(o) = a.as_object_mut() {
            o.remove("direction");
        }
        let mut b = a.clone();
        b["routes"][0]["outlierDetection"]["consecutive5xxErrors"] = 2.into();
        anyhow::ensure!(
            a != b,
            "the delivered config has no route with outlier detection"
        );
        let pod = self.echo_pod(CLUSTER, POD);
        let before = self.footprint(&pod, true)?;
        let mut apply_to_serving = Vec::with_capacity(n);
        for i in 0..n {
            let config = if i % 2 == 0 { &b } else { &a };
            let accepted = self.apply_config(CLUSTER, config.to_string().as_bytes())?;
            anyhow::ensure!(accepted, "push {i}: a sidecar rejected the config");
            apply_to_serving.push(self.last_push.unwrap_or_default());
        }
        apply_to_serving.sort();
        let after = self.footprint(&pod, true)?;
        Ok(Pushes {
            apply_to_serving,
            before,
            after,
        })
    }

    /// The pod's Envoy now (after the stats flush: the filter's gauge).
    fn footprint(&self, pod: &std::path::Path, ours: bool) -> anyhow::Result<Footprint> {
        let pid: u32 = admin::envoy_pid(pod)?
            .trim()
            .parse()
            .context("the Envoy's pid")?;
        Ok(Footprint::read(
            pid,
            |path| admin::get(pod, path).ok(),
            ours,
        ))
    }

    /// The worker threads of the pod's Envoy (`/server_info`'s command line).
    pub fn concurrency(&self) -> anyhow::Result<u64> {
        let info: serde_json::Value =
            serde_json::from_str(&admin::get(&self.echo_pod(CLUSTER, POD), "server_info")?)?;
        info["command_line_options"]["concurrency"]
            .as_u64()
            .context("/server_info has no concurrency")
    }
}

/// Everything [`measure`] measured, and what it ran on.
#[derive(Debug, Clone)]
pub struct Measured {
    pub versions: crate::Versions,
    /// The sidecars' worker threads.
    pub concurrency: u64,
    pub rounds: usize,
    pub requests: usize,
    /// Every new pod, `rounds` per plugin set.
    pub pods: Vec<PodCost>,
    pub pushes: Pushes,
}

impl Measured {
    /// The per-pod section of BENCHMARKS.md: what ran, then [`table`].
    pub fn markdown(&self) -> String {
        format!(
            "Istio {} (istio.io/istio {}), Envoy {}; {} new pods per plugin set (medians), {} requests from each pod's application before its memory is read.\n\n{}",
            self.versions.istio,
            self.versions.istio_module,
            self.versions.envoy,
            self.rounds,
            self.requests,
            table(&self.pods, Some(&self.pushes), self.concurrency)
        )
    }
}

/// The whole measurement on a running lab: `rounds` rounds of a new pod
/// with each plugin set in turn ([`Plugins::ALL`]), then the filter as delivered again and
/// `pushes` config pushes. `sdk`: the SDK's empty module. `progress` gets a
/// line per pod.
pub fn measure(
    lab: &mut Lab,
    sdk: &[u8],
    rounds: usize,
    requests: usize,
    pushes: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Measured> {
    let versions = lab.versions()?;
    let concurrency = lab.concurrency()?;
    let mut pods = Vec::new();
    // Round by round, each plugin set in turn: a shared machine's drift
    // falls on all three alike.
    for round in 0..rounds {
        for plugins in Plugins::ALL {
            lab.use_plugins(plugins, sdk)?;
            let r = lab
                .measure_new_pod(plugins, requests)
                .with_context(|| format!("{}, pod {round}", plugins.name()))?;
            progress(&format!(
                "{:<28} Ready {:>5.0} ms, first request {:>5.0} ms, {}",
                plugins.name(),
                r.ready.as_secs_f64() * 1000.0,
                r.first_request.as_secs_f64() * 1000.0,
                r.footprint.line()
            ));
            pods.push(r);
        }
    }
    lab.use_plugins(Plugins::Filter, sdk)?;
    let fresh = lab.measure_new_pod(Plugins::Filter, requests)?;
    progress(&format!(
        "before {pushes} pushes: {}",
        fresh.footprint.line()
    ));
    let pushes = lab.config_pushes(pushes)?;
    progress(&format!("after them: {}", pushes.after.line()));
    Ok(Measured {
        versions,
        concurrency,
        rounds,
        requests,
        pods,
        pushes,
    })
}

/// One GET from the pod's application (as `nobody`, so Istio's capture
/// applies) to echo-svc's ClusterIP: the status, `None` when nothing answered.
fn app_request(netns: &str, vip: &str) -> anyhow::Result<Option<u32>> {
    let out = crate::as_application(netns)
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("echo-svc.default.svc.cluster.local:80:{vip}"))
        .arg("http://echo-svc.default.svc.cluster.local/")
        .output()
        .context("cannot run curl in the pod's network namespace")?;
    let code: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((code != 0).then_some(code))
}

/// The median of each variant's pods, side by side with the floors, as a
/// Markdown table: `rows` holds every [`PodCost`] measured.
pub fn table(rows: &[PodCost], pushes: Option<&Pushes>, concurrency: u64) -> String {
    let median = |p: Plugins, f: &dyn Fn(&PodCost) -> f64| -> Option<f64> {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.plugins == p).map(f).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rss = |p| median(p, &|r: &PodCost| mib(r.footprint.rss));
    let mut out = format!(
        "| a new pod, {concurrency} worker threads | Ready | first request | RSS MiB | over no plugin | over the SDK floor | Wasm VMs | tcmalloc in use / kept free MiB | filter's linear memory, VMs summed, MiB |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for p in Plugins::ALL.iter().rev() {
        let Some(r) = rss(*p) else { continue };
        let over = |floor: Plugins| rss(floor).map_or("".to_string(), |f| format!("{:+.1}", r - f));
        let f = |g: &dyn Fn(&PodCost) -> f64| median(*p, g).unwrap_or(0.0);
        out += &format!(
            "| {} | {:.0} ms | {:.0} ms | {:.1} | {} | {} | {:.0} | {:.1} / {:.1} | {} |\n",
            p.name(),
            f(&|r| ms(r.ready)),
            f(&|r| ms(r.first_request)),
            r,
            if *p == Plugins::None {
                "".into()
            } else {
                over(Plugins::None)
            },
            if *p == Plugins::Filter {
                over(Plugins::SdkEmpty)
            } else {
                "".into()
            },
            f(&|r| r.footprint.vms as f64),
            f(&|r| mib(r.footprint.in_use)),
            f(&|r| mib(r.footprint.kept_free)),
            match f(&|r| mib(r.footprint.linear)) {
                0.0 => "".into(),
                l => format!("{l:.2}"),
            },
        );
    }
    if let Some(p) = pushes {
        out += &format!(
            "\n{} config pushes (`kubectl apply` of both WasmPlugins with a new pluginConfig, until every sidecar of the cluster serves it): median {:.0} ms, 90th percentile {:.0} ms, slowest {:.0} ms. The pod's Envoy before and after: RSS {:.1} -> {:.1} MiB, Wasm VMs {} -> {}, tcmalloc in use {:.1} -> {:.1} MiB.\n",
            p.apply_to_serving.len(),
            ms(p.quantile(0.5)),
            ms(p.quantile(0.9)),
            ms(p.quantile(1.0)),
            mib(p.before.rss),
            mib(p.after.rss),
            p.before.vms,
            p.after.vms,
            mib(p.before.in_use),
            mib(p.after.in_use),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(plugins: Plugins, ready_ms: u64, rss_mib: u64, vms: u64) -> PodCost {
        PodCost {
            plugins,
            ready: Duration::from_millis(ready_ms),
            first_request: Duration::from_millis(ready_ms + 10),
            footprint: Footprint {
                rss: rss_mib << 20,
                vms,
                ..Footprint::default()
            },
        }
    }

    #[test]
    fn the_table_shows_medians_and_the_differences_to_each_floor() {
        let rows = [
            pod(Plugins::None, 900, 70, 0),
            pod(Plugins::None, 1000, 71, 0),
            pod(Plugins::None, 5000, 90, 0),
            pod(Plugins::SdkEmpty, 1300, 95, 4),
            pod(Plugins::Filter, 1400, 110, 4),
        ];
        let pushes = Pushes {
            apply_to_serving: (1..=10).map(|i| Duration::from_millis(i * 100)).collect(),
            before: Footprint::default(),
            after: Footprint::default(),
        };
        let t = table(&rows, Some(&pushes), 2);
        assert!(t.starts_with("| a new pod, 2 worker threads |"), "{t}");
        // The median of 900/1000/5000 ms and of 70/71/90 MiB: one outlier moves nothing.
        assert!(
            t.contains("| no plugin | 1000 ms | 1010 ms | 71.0 |  |  | 0 |"),
            "{t}"
        );
        assert!(
            t.contains("| empty SDK module x2 | 1300 ms | 1310 ms | 95.0 | +24.0 |  | 4 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| hybridmesh client + server | 1400 ms | 1410 ms | 110.0 | +39.0 | +15.0 | 4 |"
            ),
            "{t}"
        );
        assert!(t.contains("10 config pushes"), "{t}");
        assert!(
            t.contains("median 600 ms, 90th percentile 900 ms, slowest 1000 ms"),
            "{t}"
        );
    }
}
