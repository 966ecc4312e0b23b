//! `hybridmesh status`: per sidecar, the filter's plugins as istiod gave
//! them (module url and digest, plugin config) and what the proxy did with
//! them (accepted, still pending, or rejected and why), in the manner of
//! `istioctl proxy-status`. Read from istiod's debug endpoints
//! (`/debug/syncz`, `/debug/config_dump?types=ecds`): per proxy, istiod keeps
//! the last ECDS push it sent, the last one the proxy acknowledged, and the
//! error of the last one it refused (istio/istio `pkg/xds/server.go`,
//! `WatchedResource.LastError`; `pilot/pkg/xds/debug.go`, `Syncz`).

use serde::Serialize;
use serde_json::Value;

use hybridmesh_ops::deploy::codes::Issue;
use hybridmesh_ops::deploy::{render, validate, MeshDescription};

use crate::http;

/// Envoy's ECDS resource type, as istiod's syncz keys it.
const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// The suffix Istio 1.30+ gives a WasmPlugin translated into a TrafficExtension.
const TRANSLATED: &str = "~istio-translated-wasmplugin";

/// What a proxy did with the last push of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Acknowledged: the proxy runs it.
    Synced,
    /// Sent, neither acknowledged nor refused yet.
    Pending,
    /// Refused: the proxy keeps running what it had before (nothing, for a
    /// first config: every request on that listener then answers 500, NFCF).
    Rejected,
    /// The push that carried it was refused because of another plugin
    /// (istiod names that one): whether this one was applied is not known.
    Unconfirmed,
}

/// One of the filter's plugins in one proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Plugin {
    /// `hybridmesh-client`.
    pub name: String,
    /// `outbound` or `inbound`, as its config says.
    pub direction: String,
    pub url: String,
    pub sha256: String,
    pub state: State,
    /// istiod's record of the proxy's refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the filter refuses this config: its own parser's messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Issue>,
    /// The digest is the description's `image.sha256`.
    pub pinned: bool,
    /// The config is what `render` makes from the description for this
    /// proxy's cluster.
    pub as_rendered: bool,
    /// Where it first differs from that: `routes[0].policy: "none" here, "failover" rendered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
}

/// One proxy connected to istiod.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    /// `pod.namespace`, as istiod names proxies.
    pub proxy: String,
    pub cluster: String,
    pub plugins: Vec<Plugin>,
}

impl Sidecar {
    /// Every plugin synced, pinned and as rendered.
    pub fn ok(&self) -> bool {
        self.plugins
            .iter()
            .all(|p| p.state == State::Synced && p.pinned && p.as_rendered)
    }
}

/// Every proxy `istiod` (its monitoring address, `http://host:15014`) has,
/// with the filter's plugins of `mesh`; proxies without them are listed
/// with none (gateways run no HTTP plugins).
pub fn status(istiod: &str, mesh: &MeshDescription) -> anyhow::Result<Vec<Sidecar>> {
    let base = istiod.trim_end_matches('/');
    let syncz: Value = serde_json::from_slice(&http::get(&format!("{base}/debug/syncz"))?)
        .map_err(|e| anyhow::anyhow!("{base}/debug/syncz is not JSON: {e}"))?;
    let mut out = Vec::new();
    for proxy in syncz.as_array().into_iter().flatten() {
        let id = proxy["proxy"].as_str().unwrap_or_default().to_string();
        let cluster = proxy["cluster_id"].as_str().unwrap_or_default().to_string();
        let ecds = &proxy["resources"][ECDS];
        let dump: Value = serde_json::from_slice(&http::get(&format!(
            "{base}/debug/config_dump?proxyID={id}&types=ecds"
        ))?)
        .map_err(|e| anyhow::anyhow!("istiod's ECDS config dump of {id} is not JSON: {e}"))?;
        let plugins = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| plugin(c, ecds, mesh, &cluster))
            .collect();
        out.push(Sidecar {
            proxy: id,
            cluster,
            plugins,
        });
    }
    out.sort_by(|a, b| (&a.cluster, &a.proxy).cmp(&(&b.cluster, &b.proxy)));
    Ok(out)
}

/// The plugin an ECDS Wasm config is, when it is one of the filter's.
fn plugin(config: &Value, ecds: &Value, mesh: &MeshDescription, cluster: &str) -> Option<Plugin> {
    let c = &config["config"];
    let full = c["name"].as_str()?;
    let name = full
        .strip_prefix(&format!("{}.", mesh.plugin.namespace))?
        .trim_end_matches(TRANSLATED);
    let ours = [
        format!("{}-client", mesh.plugin.name),
        format!("{}-server", mesh.plugin.name),
        mesh.plugin.name.clone(),
    ];
    if !ours.iter().any(|o| o == name) {
        return None;
    }
    let remote = &c["vmConfig"]["code"]["remote"];
    let url = remote["httpUri"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sha256 = remote["sha256"].as_str().unwrap_or_default().to_string();
    let text = c["configuration"]["value"].as_str().unwrap_or_default();
    let given: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let direction = given["direction"].as_str().unwrap_or("auto").to_string();
    let rendered = render::plugin_config(mesh, cluster, &direction).into_json();
    let error = ecds["lastError"]
        .as_str()
        .filter(|e| e.contains(full))
        .map(str::to_string);
    let state = if error.is_some() {
        State::Rejected
    } else if ecds["sent"].as_str().is_some() && ecds["sent"] == ecds["acked"] {
        State::Synced
    } else if ecds["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
        State::Unconfirmed
    } else {
        State::Pending
    };
    let problems = match hybridmesh_filter_core::parse_json(text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(e) => validate::config_issues("", &e.0),
    };
    Some(Plugin {
        name: name.to_string(),
        direction,
        url,
        pinned: sha256 == mesh.image.sha256,
        sha256,
        state,
        error,
        problems,
        as_rendered: given == rendered,
        differs: first_difference("", &given, &rendered),
    })
}

/// The first field where `given` and `rendered` differ, with both values
/// (`None` when they are equal).
fn first_difference(at: &str, given: &Value, rendered: &Value) -> Option<String> {
    let field = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (given, rendered) {
        (Value::Object(g), Value::Object(r)) => {
            let keys: std::collections::BTreeSet<&String> = g.keys().chain(r.keys()).collect();
            keys.into_iter().find_map(|k| match (g.get(k), r.get(k)) {
                (Some(a), Some(b)) => first_difference(&field(k), a, b),
                (Some(a), None) => Some(format!("{}: {} here, not rendered", field(k), short(a))),
                (None, Some(b)) => {
                    Some(format!("{}: absent here, rendered {}", field(k), short(b)))
                }
                (None, None) => None,
            })
        }
        (Value::Array(g), Value::Array(r)) if g.len() == r.len() => g
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(&format!("{at}[{i}]"), a, b)),
        _ if given == rendered => None,
        _ => Some(format!(
            "{}: {} here, {} rendered",
            if at.is_empty() { "(the config)" } else { at },
            short(given),
            short(rendered)
        )),
    }
}

/// A value in at most 80 characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_names_its_field_and_both_values() {
        let rendered =
            json!({"direction": "outbound", "routes": [{"hosts": ["*"], "policy": "failover"}]});
        assert_eq!(first_difference("", &rendered, &rendered), None);
        let given =
            json!({"direction": "outbound", "routes": [{"hosts": ["*"], "policy": "none"}]});
        assert_eq!(
            first_difference("", &given, &rendered).unwrap(),
            "routes[0].policy: \"none\" here, \"failover\" rendered"
        );
        let given = json!({"direction": "outbound"});
        assert!(first_difference("", &given, &rendered)
            .unwrap()
            .starts_with("routes: absent here, rendered [{"));
    }
}
