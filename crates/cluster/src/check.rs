//! `hybridmesh check`: what one kubeconfig context must have before the
//! filter is applied to it, read from the cluster and held to the mesh
//! description. Each finding has a code ([`Code`], HM07xx) and the command
//! that fixes it.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use hybridmesh_ops::deploy::codes::Code;
use hybridmesh_ops::deploy::push::{credentials_from_docker_config, Credentials};
use hybridmesh_ops::deploy::render::ACCESS_LOG_PROVIDER;
use hybridmesh_ops::deploy::MeshDescription;

use crate::kubectl::Kubectl;

/// Istio's system namespace, where its configuration lives.
const ISTIO_SYSTEM: &str = "istio-system";
const NETWORK_LABEL: &str = "topology.istio.io/network";
/// The port east-west gateways pass mTLS through on (Istio's multi-network docs).
const EAST_WEST_PORT: u64 = 15443;

/// One thing found: an error unless `note`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub message: String,
    /// The command (or step) that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub note: bool,
}

/// What `check` found in one context.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub context: String,
    /// Istio's cluster ID there (`values.global.multiCluster.clusterName`).
    pub cluster: Option<String>,
    pub network: Option<String>,
    /// Istio's version, where the cluster says it (istiod's image tag).
    pub istio: Option<String>,
    pub ok: bool,
    pub findings: Vec<Finding>,
    /// Errors `--allow` let through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Finding>,
}

impl Report {
    /// Moves the errors whose code is in `codes` to [`Report::allowed`].
    pub fn allow(&mut self, codes: &[Code]) {
        let (allowed, kept) = std::mem::take(&mut self.findings)
            .into_iter()
            .partition(|f| !f.note && codes.contains(&f.code));
        self.findings = kept;
        self.allowed = allowed;
        self.ok = self.findings.iter().all(|f| f.note);
    }
}

/// The findings of one context, in the order they are checked.
struct Found {
    context: String,
    findings: Vec<Finding>,
}

impl Found {
    fn error(&mut self, code: Code, message: String, fix: Option<String>) {
        self.findings.push(Finding {
            code,
            message,
            fix,
            note: false,
        });
    }

    fn note(&mut self, code: Code, message: String, fix: Option<String>) {
        self.findings.push(Finding {
            code,
            message,
            fix,
            note: true,
        });
    }

    /// `kubectl --context C ...`, for a fix.
    fn kubectl(&self, rest: &str) -> String {
        format!("kubectl --context {} {rest}", self.context)
    }
}

/// Istio's install values in a cluster: from its sidecar injector's
/// ConfigMap (`istio-sidecar-injector`, or `istio-sidecar-injector-<rev>`).
struct Values {
    cluster: String,
    network: String,
    tag: String,
    /// The revision the ConfigMap is for ("" for the default).
    revision: String,
}

/// Checks `context` against `mesh`. `mesh_path` names the description in fixes.
pub fn check(k: &Kubectl, context: &str, mesh: &MeshDescription, mesh_path: &str) -> Report {
    let mut f = Found {
        context: context.to_string(),
        findings: Vec::new(),
    };
    let mut report = Report {
        context: context.to_string(),
        cluster: None,
        network: None,
        istio: None,
        ok: false,
        findings: Vec::new(),
        allowed: Vec::new(),
    };
    match check_into(k, &mut f, &mut report, mesh, mesh_path) {
        Ok(()) => {}
        Err(e) => f.error(
            Code::Unreachable,
            format!("cannot read the cluster: {e:#}"),
            Some(format!(
                "{} (the credentials and the network path to the API server)",
                f.kubectl("get namespaces")
            )),
        ),
    }
    report.ok = f.findings.iter().all(|x| x.note);
    report.findings = f.findings;
    report
}

fn check_into(
    k: &Kubectl,
    f: &mut Found,
    report: &mut Report,
    mesh: &MeshDescription,
    mesh_path: &str,
) -> anyhow::Result<()> {
    let ctx = f.context.clone();
    let Some(values) = istio_values(k, &ctx)? else {
        f.error(
            Code::NoIstio,
            format!("no Istio here: {ISTIO_SYSTEM} has no ConfigMap istio-sidecar-injector (an Istio control plane writes it)"),
            Some("install Istio as multi-primary, multi-network (istioctl install, or asmcli for Anthos Service Mesh), then check again".into()),
        );
        return Ok(());
    };
    report.cluster = Some(values.cluster.clone());
    report.istio = istio_version(k, &ctx, &values)?;
    let names: Vec<&str> = mesh.clusters.iter().map(|c| c.name.as_str()).collect();
    let described = mesh.clusters.iter().find(|c| c.name == values.cluster);
    if described.is_none() {
        f.error(
            Code::UnknownCluster,
            format!(
                "Istio's cluster ID here is {:?} (values.global.multiCluster.clusterName), which is not a cluster of {mesh_path} ({})",
                values.cluster,
                names.join(", ")
            ),
            Some(format!(
                "name the cluster {:?} in {mesh_path}'s clusters (it is the topology.istio.io/cluster value the subsets select), or check the context meant for one of them",
                values.cluster
            )),
        );
    }

    // The network: the namespace label istiod reads, and the install's value.
    let ns = k
        .get(&ctx, &["namespace", ISTIO_SYSTEM])?
        .unwrap_or(Value::Null);
    let label = ns["metadata"]["labels"][NETWORK_LABEL]
        .as_str()
        .map(str::to_string);
    report.network = label
        .clone()
        .or_else(|| (!values.network.is_empty()).then(|| values.network.clone()));
    if let Some(c) = described {
        match &label {
            None => f.error(
                Code::Network,
                format!("namespace {ISTIO_SYSTEM} has no {NETWORK_LABEL} label: istiod puts this cluster's endpoints on no network, so other networks reach none of them"),
                Some(f.kubectl(&format!("label namespace {ISTIO_SYSTEM} {NETWORK_LABEL}={}", c.network))),
            ),
            Some(l) if *l != c.network => f.error(
                Code::Network,
                format!("namespace {ISTIO_SYSTEM} is labelled {NETWORK_LABEL}={l}, but {mesh_path} puts cluster {} on network {}", c.name, c.network),
                Some(f.kubectl(&format!("label namespace {ISTIO_SYSTEM} {NETWORK_LABEL}={} --overwrite", c.network))),
            ),
            Some(_) => {}
        }
        if !values.network.is_empty() && values.network != c.network {
            f.error(
                Code::Network,
                format!("Istio was installed with values.global.network={}, but {mesh_path} puts cluster {} on network {}", values.network, c.name, c.network),
                Some(format!("install again with --set values.global.network={} (or correct {mesh_path})", c.network)),
            );
        }
    }

    check_kind(k, f, mesh, mesh_path, report.istio.as_deref())?;

    // East-west gateway, needed when another cluster is on another network.
    let here = described.map(|c| c.network.as_str());
    let others: Vec<&hybridmesh_ops::deploy::mesh::Cluster> = mesh
        .clusters
        .iter()
        .filter(|c| Some(c.name.as_str()) != described.map(|d| d.name.as_str()))
        .collect();
    if others.iter().any(|c| Some(c.network.as_str()) != here) {
        check_gateway(k, f)?;
    }
    check_remote_secrets(k, f, &others)?;
    check_pull_secret(k, f, mesh, mesh_path)?;
    check_mesh_config(k, f, &values)?;
    Ok(())
}

/// The install values of the (first) injector ConfigMap in istio-system.
fn istio_values(k: &Kubectl, ctx: &str) -> anyhow::Result<Option<Values>> {
    let maps = k.list(ctx, &["configmaps", "-n", ISTIO_SYSTEM])?;
    let Some(map) = maps.iter().find(|m| {
        m["metadata"]["name"].as_str().is_some_and(|n| {
            n == "istio-sidecar-injector" || n.starts_with("istio-sidecar-injector-")
        })
    }) else {
        return Ok(None);
    };
    let name = map["metadata"]["name"].as_str().unwrap_or_default();
    let values: Value = map["data"]["values"]
        .as_str()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(Value::Null);
    let global = &values["global"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let cluster = match global["multiCluster"]["clusterName"].as_str() {
        Some(c) if !c.is_empty() => c.to_string(),
        // Istio's default cluster ID.
        _ => "Kubernetes".to_string(),
    };
    Ok(Some(Values {
        cluster,
        network: text(&global["network"]),
        tag: text(&global["tag"]),
        revision: name
            .strip_prefix("istio-sidecar-injector-")
            .unwrap_or_default()
            .to_string(),
    }))
}

/// `1.31.0` from istiod's image tag (`docker.io/istio/pilot:1.31.0`), else
/// from the install's `global.tag`; `None` when neither is a version.
fn istio_version(k: &Kubectl, ctx: &str, values: &Values) -> anyhow::Result<Option<String>> {
    let deployments = k.list(
        ctx,
        &["deployments", "-n", ISTIO_SYSTEM, "-l", "app=istiod"],
    )?;
    let images = deployments.iter().flat_map(|d| {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    });
    let tags = images
        .filter_map(|c| {
            c["image"]
                .as_str()
                .and_then(|i| i.rsplit_once(':'))
                .map(|(_, t)| t.to_string())
        })
        .chain(std::iter::once(values.tag.clone()));
    Ok(tags
        .map(|t| t.split(['-', '@']).next().unwrap_or_default().to_string())
        .find(|t| is_version(t)))
}

/// `1.31` or `1.31.0`.
fn is_version(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The kind `render` writes for this description must be served here.
fn check_kind(
    k: &Kubectl,
    f: &mut Found,
    mesh: &MeshDescription,
    mesh_path: &str,
    version: Option<&str>,
) -> anyhow::Result<()> {
    let ctx = f.context.clone();
    let served = |crd: &str| -> anyhow::Result<bool> {
        Ok(k.get(&ctx, &["customresourcedefinition", crd])?.is_some())
    };
    let wasm_plugins = served("wasmplugins.extensions.istio.io")?;
    let traffic_extensions = served("trafficextensions.extensions.istio.io")?;
    let kind = mesh.istio_version().plugin_kind();
    let minor = version
        .and_then(|v| v.split('.').nth(1))
        .map(|m| format!("1.{m}"));
    let render =
        |istio: &str| format!("hybridmesh render {mesh_path} --istio {istio} --out wasmplugin");
    if kind == "TrafficExtension" && !traffic_extensions {
        f.error(
            Code::Kind,
            format!("{mesh_path} renders TrafficExtensions (istio {}), but this cluster does not serve them (no CRD trafficextensions.extensions.istio.io: Istio 1.30 and later)", mesh.istio.as_deref().unwrap_or_default()),
            Some(match &minor {
                Some(m) => render(m),
                None => "set istio: in the description to this cluster's Istio version, then render again".into(),
            }),
        );
    } else if kind == "WasmPlugin" && !wasm_plugins {
        f.error(
            Code::Kind,
            format!("{mesh_path} renders WasmPlugins, but this cluster does not serve them (no CRD wasmplugins.extensions.istio.io)"),
            Some(if traffic_extensions {
                render(minor.as_deref().unwrap_or("1.31"))
            } else {
                "install Istio's CRDs (istioctl install installs them)".into()
            }),
        );
    } else if kind == "WasmPlugin" && traffic_extensions {
        f.note(
            Code::Kind,
            "this Istio serves TrafficExtension (1.30 and later), the kind its docs tell users to write; WasmPlugins still work (istiod translates each)".into(),
            Some(format!(
                "{} (docs/src/operator/traffic-extension.md: moving over without a gap)",
                render(minor.as_deref().unwrap_or("1.31"))
            )),
        );
    }
    Ok(())
}

/// A Service with port 15443 and a Gateway passing `*.local` through it.
fn check_gateway(k: &Kubectl, f: &mut Found) -> anyhow::Result<()> {
    let ctx = f.context.clone();
    let services = k.list(&ctx, &["services", "--all-namespaces"])?;
    let gateway = services.iter().find(|s| {
        s["spec"]["ports"].as_array().is_some_and(|ports| {
            ports
                .iter()
                .any(|p| p["port"].as_u64() == Some(EAST_WEST_PORT))
        })
    });
    match gateway {
        None => f.error(
            Code::Gateway,
            format!("no Service has port {EAST_WEST_PORT}: no east-west gateway, so clusters on other networks cannot reach this one's endpoints"),
            Some("install one for this cluster's network (Istio's samples/multicluster/gen-eastwest-gateway.sh --network NETWORK | istioctl install -f -)".into()),
        ),
        Some(s) => {
            let name = format!(
                "{}/{}",
                s["metadata"]["namespace"].as_str().unwrap_or_default(),
                s["metadata"]["name"].as_str().unwrap_or_default()
            );
            let ingress = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|i| !i.is_empty());
            let external = s["spec"]["externalIPs"]
                .as_array()
                .is_some_and(|i| !i.is_empty());
            if s["spec"]["type"] == "LoadBalancer" && !ingress && !external {
                f.error(
                    Code::Gateway,
                    format!("the east-west gateway Service {name} has no external address yet: other networks have nothing to connect to"),
                    Some(f.kubectl(&format!("get service -n {} {} -w   (wait for EXTERNAL-IP; on bare metal, a load balancer such as MetalLB must give one)", s["metadata"]["namespace"].as_str().unwrap_or_default(), s["metadata"]["name"].as_str().unwrap_or_default()))),
                );
            }
        }
    }
    let gateways = k.list(&ctx, &["gateways.networking.istio.io", "--all-namespaces"])?;
    let passes = gateways.iter().any(|g| {
        g["spec"]["servers"].as_array().is_some_and(|servers| {
            servers.iter().any(|s| {
                s["port"]["number"].as_u64() == Some(EAST_WEST_PORT)
                    && s["tls"]["mode"] == "AUTO_PASSTHROUGH"
            })
        })
    });
    if !passes {
        f.error(
            Code::Gateway,
            format!("no Gateway passes port {EAST_WEST_PORT} through (tls.mode AUTO_PASSTHROUGH for *.local): the east-west gateway exposes no service"),
            Some(f.kubectl(&format!("apply -n {ISTIO_SYSTEM} -f samples/multicluster/expose-services.yaml   (from Istio's release)"))),
        );
    }
    Ok(())
}

/// A remote secret for every other cluster of the description.
fn check_remote_secrets(
    k: &Kubectl,
    f: &mut Found,
    others: &[&hybridmesh_ops::deploy::mesh::Cluster],
) -> anyhow::Result<()> {
    let ctx = f.context.clone();
    let secrets = k.list(
        &ctx,
        &[
            "secrets",
            "-n",
            ISTIO_SYSTEM,
            "-l",
            "istio/multiCluster=true",
        ],
    )?;
    let mut seen = BTreeSet::new();
    for s in &secrets {
        if let Some(c) = s["metadata"]["annotations"]["networking.istio.io/cluster"].as_str() {
            seen.insert(c.to_string());
        }
        if let Some(data) = s["data"].as_object() {
            seen.extend(data.keys().cloned());
        }
    }
    for c in others {
        if !seen.contains(&c.name) {
            f.error(
                Code::RemoteSecret,
                format!("no remote secret for cluster {} ({ISTIO_SYSTEM}, label istio/multiCluster=true): istiod here sees none of its endpoints, so nothing can fail over to it", c.name),
                Some(format!(
                    "istioctl create-remote-secret --context <{}'s context> --name {} | {}",
                    c.name,
                    c.name,
                    f.kubectl("apply -f -")
                )),
            );
        }
    }
    Ok(())
}

/// The Secret `image.pullSecret` names, with credentials for the image's registry.
fn check_pull_secret(
    k: &Kubectl,
    f: &mut Found,
    mesh: &MeshDescription,
    mesh_path: &str,
) -> anyhow::Result<()> {
    let Some(name) = &mesh.image.pull_secret else {
        return Ok(());
    };
    let ns = &mesh.plugin.namespace;
    let registry = registry_host(&mesh.image.url);
    let create = f.kubectl(&format!(
        "-n {ns} create secret docker-registry {name} --docker-server={} --docker-username=USER --docker-password=PASSWORD",
        registry.as_deref().unwrap_or("REGISTRY")
    ));
    let Some(secret) = k.get(&f.context.clone(), &["secret", "-n", ns, name])? else {
        f.error(
            Code::PullSecret,
            format!("no Secret {ns}/{name} ({mesh_path}: image.pullSecret): istio-agent refuses to fetch the filter without it, so every pod of this cluster runs without the filter (its server side refusing every request) after the next push"),
            Some(create),
        );
        return Ok(());
    };
    if secret["type"] != "kubernetes.io/dockerconfigjson" {
        f.error(
            Code::PullSecret,
            format!("Secret {ns}/{name} is of type {}, expected kubernetes.io/dockerconfigjson (what kubectl create secret docker-registry makes)", secret["type"]),
            Some(format!("{} && {create}", f.kubectl(&format!("-n {ns} delete secret {name}")))),
        );
        return Ok(());
    }
    let Some(registry) = registry else {
        return Ok(());
    };
    // Read as `package --push` reads a Docker config: auths by registry host.
    let config = secret["data"][".dockerconfigjson"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default();
    let found = credentials_from_docker_config(&config, &registry);
    if !matches!(found, Ok(Credentials::Basic { .. })) {
        f.error(
            Code::PullSecret,
            format!("Secret {ns}/{name} has no credentials for {registry}, the registry of {mesh_path}'s image.url"),
            Some(format!("{} && {create}", f.kubectl(&format!("-n {ns} delete secret {name}")))),
        );
    }
    Ok(())
}

/// `registry.example:5443` from `oci://registry.example:5443/repo:tag` (no
/// scheme means oci); `None` for http(s) and file urls, which Istio fetches
/// without a pull secret.
fn registry_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("oci://").unwrap_or(url);
    if rest.contains("://") {
        return None;
    }
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// The mesh config (ConfigMap `istio`, or `istio-<rev>`): the filter's
/// stats and its access log provider.
fn check_mesh_config(k: &Kubectl, f: &mut Found, values: &Values) -> anyhow::Result<()> {
    let name = if values.revision.is_empty() {
        "istio".to_string()
    } else {
        format!("istio-{}", values.revision)
    };
    let Some(map) = k.get(
        &f.context.clone(),
        &["configmap", "-n", ISTIO_SYSTEM, &name],
    )?
    else {
        f.error(
            Code::NoIstio,
            format!("no ConfigMap {ISTIO_SYSTEM}/{name}: Istio's mesh config is missing"),
            Some("install Istio again (istioctl install)".into()),
        );
        return Ok(());
    };
    let mesh: Value = map["data"]["mesh"]
        .as_str()
        .and_then(|m| serde_yaml_ng::from_str(m).ok())
        .unwrap_or(Value::Null);
    let tags: BTreeSet<&str> = mesh["defaultConfig"]["extraStatTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let missing: Vec<&str> = hybridmesh_filter_core::metrics::extra_stat_tags()
        .filter(|t| !tags.contains(t))
        .collect();
    let matcher = &mesh["defaultConfig"]["proxyStatsMatcher"];
    let included = ["inclusionRegexps", "inclusionPrefixes", "inclusionSuffixes"]
        .iter()
        .flat_map(|k| matcher[k].as_array().cloned().unwrap_or_default())
        .any(|v| v.as_str().is_some_and(|s| s.contains("hybridmesh")));
    let overlay = "an install-time overlay: istioctl install -f wasmplugin/meshconfig-stats.yaml (asmcli install --custom_overlay for Anthos Service Mesh); proxies pick it up when they restart";
    if !missing.is_empty() {
        f.error(
            Code::Stats,
            format!("mesh config's defaultConfig.extraStatTags lacks {}: the filter's counters reach Prometheus without those labels", missing.join(", ")),
            Some(overlay.into()),
        );
    }
    if !included {
        f.error(
            Code::Stats,
            "mesh config's defaultConfig.proxyStatsMatcher does not include hybridmesh_ metrics: Istio's default stats inclusion drops the filter's counters".into(),
            Some(overlay.into()),
        );
    }
    let providers = mesh["extensionProviders"].as_array();
    if !providers.is_some_and(|p| p.iter().any(|p| p["name"] == ACCESS_LOG_PROVIDER)) {
        f.note(
            Code::AccessLog,
            format!("mesh config has no extensionProvider {ACCESS_LOG_PROVIDER}: access logs carry no hop record for hybridmesh trace"),
            Some("istioctl install -f wasmplugin/meshconfig-access-log.yaml (install time), then kubectl apply -f wasmplugin/telemetry-access-log.yaml".into()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn registry_hosts_from_urls_and_auth_keys() {
        assert_eq!(
            registry_host("oci://asia-northeast1-docker.pkg.dev/p/r/f:0.1.0").as_deref(),
            Some("asia-northeast1-docker.pkg.dev")
        );
        assert_eq!(
            registry_host("registry.example:5443/repo:0.1.0").as_deref(),
            Some("registry.example:5443")
        );
        assert_eq!(registry_host("https://example.com/filter.wasm"), None);
    }

    #[test]
    fn versions_are_numbers() {
        assert!(is_version("1.31.0") && is_version("1.31"));
        assert!(!is_version("latest") && !is_version("1") && !is_version("1.x.0"));
    }
}
