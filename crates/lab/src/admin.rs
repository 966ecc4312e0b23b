//! A pod's Envoy admin interface (127.0.0.1:15000 inside the pod's network
//! namespace), reached with `nsenter` into the namespace of its Envoy process.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// The Envoy process of a pod: the one named `envoy` in the process group
/// `sidecar.sh` started (pilot-agent's child).
pub(crate) fn envoy_pid(pod: &Path) -> anyhow::Result<String> {
    let group = std::fs::read_to_string(pod.join("pid"))
        .with_context(|| format!("{}: no pid file (did up.sh start it?)", pod.display()))?;
    let out = Command::new("pgrep")
        .args(["-g", group.trim(), "-x", "envoy"])
        .output()
        .context("cannot run pgrep")?;
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string);
    pid.with_context(|| {
        format!(
            "{}: no envoy process in group {}",
            pod.display(),
            group.trim()
        )
    })
}

/// `GET /<path>` on the pod's Envoy admin.
pub fn get(pod: &Path, path: &str) -> anyhow::Result<String> {
    pod_get(pod, 15000, "admin", path)
}

/// Whether the pod is Ready as its kubelet's probe of istio-proxy sees it:
/// the injected readiness probe, `GET :15021/healthz/ready` (Envoy's
/// listener, which asks pilot-agent whether Envoy has its first config).
pub fn ready(pod: &Path) -> bool {
    pod_get(pod, 15021, "readiness probe", "healthz/ready").is_ok()
}

/// `GET /<path>` on the pod's istio-agent (127.0.0.1:15020 in the pod).
pub fn agent_get(pod: &Path, path: &str) -> anyhow::Result<String> {
    pod_get(pod, 15020, "agent", path)
}

/// `GET http://127.0.0.1:<port>/<path>` inside the pod's network namespace.
fn pod_get(pod: &Path, port: u16, what: &str, path: &str) -> anyhow::Result<String> {
    let pid = envoy_pid(pod)?;
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "curl", "-s", "-f", "-m", "5"])
        .arg(format!("http://127.0.0.1:{port}/{path}"))
        .output()
        .context("cannot run nsenter")?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {what} /{path} failed ({})",
        pod.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent's own Prometheus series whose name starts with `prefix`
/// (`istio_agent_wasm_remote_fetch_count{result="success"} 1`), from the
/// metrics the agent merges with Envoy's on `/stats/prometheus`.
pub fn agent_metrics(pod: &Path, prefix: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let text = agent_get(pod, "stats/prometheus")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// One counter or gauge by its full name.
pub fn stat(pod: &Path, name: &str) -> anyhow::Result<Option<u64>> {
    let text = get(pod, &format!("stats?filter=^{}$", name.replace('.', "\\.")))?;
    Ok(hybridmesh_replica::process::stat_in(&text, name))
}

/// One ECDS filter config as the pod's Envoy holds it: the plugin
/// configuration it runs (`None`: none given).
#[derive(Debug, Clone, PartialEq)]
pub struct Ecds {
    pub name: String,
    pub config: Option<serde_json::Value>,
    /// What the proxy runs under that name.
    pub runs: Runs,
}

/// What a pod's Envoy runs for a plugin: the module, or the RBAC filter
/// istio-agent puts in its place when it cannot fetch the module
/// (`pkg/wasm/convert.go`: allow-all for FAIL_OPEN, deny-all otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    Wasm,
    AllowAll,
    DenyAll,
    Other(String),
}

/// ECDS updates the pod's Envoy rejected so far: the lines it logs for them
/// (Envoy 1.40 keeps no error state in the ECDS config dump; the
/// `extension_config_discovery` counters are outside Istio's stats inclusion).
pub fn ecds_rejections(pod: &Path) -> usize {
    std::fs::read_to_string(pod.join("agent.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("delta config for type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig rejected")
        })
        .count()
}

/// The pod's ECDS filter configs whose name contains `filter`.
pub fn ecds(pod: &Path, filter: &str) -> anyhow::Result<Vec<Ecds>> {
    let text = get(pod, "config_dump?resource=ecds_filters")?;
    let dump: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: config_dump", pod.display()))?;
    let mut out = Vec::new();
    for c in dump["configs"].as_array().into_iter().flatten() {
        let name = c["ecds_filter"]["name"].as_str().unwrap_or_default();
        if !name.contains(filter) {
            continue;
        }
        let typed = &c["ecds_filter"]["typed_config"];
        let value = &typed["config"]["configuration"]["value"];
        let config = value.as_str().map(|s| {
            serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
        });
        let ty = typed["@type"].as_str().unwrap_or_default();
        let runs = if ty.ends_with("wasm.v3.Wasm") {
            Runs::Wasm
        } else if ty.ends_with("rbac.v3.RBAC") {
            // deny-all has rules with no policies; allow-all has no rules
            if typed.get("rules").is_some() {
                Runs::DenyAll
            } else {
                Runs::AllowAll
            }
        } else {
            Runs::Other(ty.to_string())
        };
        out.push(Ecds {
            name: name.to_string(),
            config,
            runs,
        });
    }
    Ok(out)
}

/// Whether every listener of the pod is active (none warming up after a
/// config push) and carries the project's access log.
pub fn listeners_settled(pod: &Path) -> anyhow::Result<bool> {
    let text = get(pod, "config_dump?resource=dynamic_listeners")?;
    let dump: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: config_dump", pod.display()))?;
    let listeners = dump["configs"].as_array().cloned().unwrap_or_default();
    Ok(!listeners.is_empty()
        && listeners
            .iter()
            .all(|l| l.get("warming_state").is_none() && l.get("active_state").is_some())
        && text.contains("resp_served_by"))
}
