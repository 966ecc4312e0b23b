//! Cross-checks over a set of manifests (every document `validate` was given):
//! every cluster a WasmPlugin's filter can choose for a host has a
//! DestinationRule subset and a VirtualService route; VirtualService subsets
//! exist; the WasmPlugin's `sha256` is the packaged module's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use serde_json::Value;

use hybridmesh_filter_core::config::{Config, DirectionSetting, Policy};
use hybridmesh_filter_core::hosts::HostPattern;
use hybridmesh_filter_core::routing;

use super::codes::Code;
use super::image;

/// One Kubernetes document, as the cross-checks see it.
pub struct Doc {
    /// The caller's handle (index into its findings).
    pub id: usize,
    pub kind: String,
    pub value: Value,
    /// A WasmPlugin's pluginConfig, when it parsed.
    pub config: Option<std::sync::Arc<Config>>,
}

impl Doc {
    /// The filter's module settings (url, sha256, pluginConfig) and where
    /// they are: a WasmPlugin's `spec`, a TrafficExtension's `spec.wasm`.
    pub fn plugin(&self) -> Option<(&Value, &'static str)> {
        match self.kind.as_str() {
            "WasmPlugin" => Some((&self.value["spec"], "spec")),
            "TrafficExtension" if self.value["spec"]["wasm"].is_object() => {
                Some((&self.value["spec"]["wasm"], "spec.wasm"))
            }
            _ => None,
        }
    }

    fn name(&self) -> String {
        let m = &self.value["metadata"];
        format!(
            "{}/{}",
            m["namespace"].as_str().unwrap_or("default"),
            m["name"].as_str().unwrap_or_default()
        )
    }

    fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    }
}

/// A problem (or a note) about one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossProblem {
    pub doc: usize,
    pub code: Code,
    pub message: String,
    /// A note: worth reading, not a failure.
    pub note: bool,
}

/// The packaged module a WasmPlugin's `sha256` is checked against.
#[derive(Debug, Clone)]
pub struct Module {
    /// The module's own sha256 (http(s) and file urls).
    pub wasm_sha256: String,
    /// Image manifest digests this module is known under (oci urls), with where each comes from.
    pub manifest_digests: Vec<(String, String)>,
}

impl Module {
    /// From an image layout `package` wrote (or any image Istio accepts).
    pub fn from_image(v: &image::Verified) -> Module {
        Module {
            wasm_sha256: v.wasm_sha256.clone(),
            manifest_digests: vec![(
                v.manifest_digest.clone(),
                format!("the {} image", v.variant),
            )],
        }
    }

    /// From the `.wasm`: the digests `hybridmesh package` gives it in either variant.
    pub fn from_wasm(wasm: &[u8]) -> anyhow::Result<Module> {
        let mut digests = Vec::new();
        for v in [image::Variant::Compat, image::Variant::Oci] {
            let img = image::build(wasm, v, "latest")?;
            digests.push((
                img.manifest_digest,
                format!("`hybridmesh package --format {}`", v.name()),
            ));
        }
        Ok(Module {
            wasm_sha256: image::sha256_hex(wasm),
            manifest_digests: digests,
        })
    }
}

/// `echo-svc` / `echo-svc.default` / FQDN -> FQDN, as Istio reads a host in a
/// resource of namespace `ns`.
fn fqdn(host: &str, ns: &str) -> String {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    match h.matches('.').count() {
        0 if !h.contains('*') => format!("{h}.{ns}.svc.cluster.local"),
        1 if !h.contains('*') => format!("{h}.svc.cluster.local"),
        _ => h,
    }
}

const CLUSTER_LABEL: &str = routing::CLUSTER_LABEL;

struct Rule<'a> {
    doc: &'a Doc,
    /// subset name -> the cluster its labels select (if they select by cluster).
    subsets: BTreeMap<&'a str, Option<&'a str>>,
    /// Where each subset name is first (`spec.subsets[k]`).
    first: HashMap<&'a str, usize>,
    /// The clusters the subsets select by label.
    labelled: HashSet<&'a str>,
}

impl Rule<'_> {
    fn subset(&self, name: &str) -> Option<(usize, &Value)> {
        let k = *self.first.get(name)?;
        Some((k, self.doc.value["spec"]["subsets"].get(k)?))
    }

    /// What is wrong with `subset` as the preference subset of cluster `c`
    /// (`hybridmesh_filter_core::routing`): each problem with its field.
    fn preference_problems(&self, subset: &str, c: &str) -> Vec<String> {
        let Some((k, s)) = self.subset(subset) else {
            return Vec::new();
        };
        let at = Field("spec.subsets", k, None);
        let mut out = Vec::new();
        if let Some(sc) = s["labels"][CLUSTER_LABEL].as_str() {
            out.push(format!(
                "{at}.labels: {subset:?} selects cluster {sc:?} by label, so it holds only that cluster's endpoints and Envoy has nothing to fail over to (istiod filters endpoints by subset labels before it assigns priorities); a preference subset has no {CLUSTER_LABEL} label and failoverPriority [{}] (or set pinned: true on the filter's rule for a strict split)",
                routing::failover_priority(c)
            ));
            return out;
        }
        let lb = &s["trafficPolicy"]["loadBalancer"]["localityLbSetting"];
        let priority: Vec<&str> = lb["failoverPriority"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let want = routing::failover_priority(c);
        if priority.first().copied() != Some(want.as_str()) {
            out.push(format!(
                "{at}.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority: {priority:?}, expected [{want:?}] first: the endpoints of cluster {c} in priority 0, every other in priority 1"
            ));
        }
        if lb["enabled"].as_bool() == Some(false) {
            out.push(format!(
                "{at}.trafficPolicy.loadBalancer.localityLbSetting.enabled: false turns the failover off"
            ));
        }
        if !lb["distribute"].is_null() {
            out.push(format!(
                "{at}.trafficPolicy.loadBalancer.localityLbSetting.distribute: istiod ignores failoverPriority when distribute is set"
            ));
        }
        // A subset's outlierDetection block replaces the rule's whole.
        let od = if s["trafficPolicy"]["outlierDetection"].is_object() {
            &s["trafficPolicy"]["outlierDetection"]
        } else {
            &self.doc.value["spec"]["trafficPolicy"]["outlierDetection"]
        };
        if !od.is_object() {
            out.push(format!(
                "{at}: no outlierDetection (here or on the rule): istiod applies failoverPriority only with outlier detection, so the request never leaves cluster {c}'s priority"
            ));
        } else if od["maxEjectionPercent"].as_u64()
            != Some(u64::from(routing::MAX_EJECTION_PERCENT))
        {
            out.push(format!(
                "{at}: outlierDetection.maxEjectionPercent is {}, expected {}: Envoy ejects at most that share of the service's hosts across every priority (its default is 10), so a dead cluster is never ejected whole",
                od["maxEjectionPercent"]
                    .as_u64()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "not set".into()),
                routing::MAX_EJECTION_PERCENT
            ));
        }
        out
    }
}

/// A field of a list item (`spec.subsets[3]`, `spec.http[2].route[0].destination`),
/// written out only for a problem.
#[derive(Clone, Copy)]
struct Field<'a>(&'a str, usize, Option<(&'a str, usize, &'a str)>);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)?;
        if let Some((list, j, rest)) = self.2 {
            write!(f, ".{list}[{j}]{rest}")?;
        }
        Ok(())
    }
}

/// What is wrong with a preference route's retries (the request must get
/// a third attempt, which Envoy's `previous_priorities` sends to the next
/// priority, on the failures a dead cluster causes).
fn retry_problems(route: &Value, at: Field<'_>, c: &str) -> Vec<String> {
    let r = &route["retries"];
    let mut out = Vec::new();
    if !r.is_object() {
        out.push(format!(
            "{at}: no retries: Istio's default (2 attempts) never leaves cluster {c}'s priority; expected attempts: {}, retryOn: {}, retryRemoteLocalities: true",
            routing::RETRY_ATTEMPTS,
            routing::RETRY_ON
        ));
        return out;
    }
    let attempts = r["attempts"].as_u64().unwrap_or(0);
    if attempts < 2 {
        out.push(format!(
            "{at}.retries.attempts: {attempts}, expected at least 2 ({} recommended): Envoy's previous_priorities (update frequency 2) first leaves the failed priority on the third attempt",
            routing::RETRY_ATTEMPTS
        ));
    }
    if r["retryRemoteLocalities"].as_bool() != Some(true) {
        out.push(format!(
            "{at}.retries.retryRemoteLocalities: expected true: without it every retry stays in cluster {c}'s priority"
        ));
    }
    let on: Vec<&str> = r["retryOn"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let has = |x: &str| on.contains(&x);
    if !has("connect-failure") && !has("5xx") && !has("gateway-error") {
        out.push(format!(
            "{at}.retries.retryOn: no connect-failure (or 5xx / gateway-error): a refused connection is not retried"
        ));
    }
    if !has("503") && !has("5xx") && !has("gateway-error") {
        out.push(format!(
            "{at}.retries.retryOn: no 503 (or 5xx / gateway-error): an application that is down behind its sidecar answers 503, not retried (Istio 1.24 and later no longer retry 503 by default)"
        ));
    }
    if !has("reset") && !has("5xx") && !has("gateway-error") {
        out.push(format!(
            "{at}.retries.retryOn: no reset (or 5xx / gateway-error): a connection cut after it was made (a dead cluster behind its east-west gateway) is not retried"
        ));
    }
    out
}

/// Every cross-check over `docs`.
pub fn cross_check(docs: &[&Doc], module: Option<&Module>) -> Vec<CrossProblem> {
    cross_check_routes(docs, module, 0..usize::MAX)
}

/// [`cross_check`], with only the client-side routes (`pluginConfig.routes[i]`)
/// whose index is in `routes` checked against the DestinationRules and
/// VirtualServices: a caller that holds a large mesh's rules a part at a time
/// checks each part's routes with it.
pub fn cross_check_routes(
    docs: &[&Doc],
    module: Option<&Module>,
    routes: Range<usize>,
) -> Vec<CrossProblem> {
    let mut out = Vec::new();
    let err = |out: &mut Vec<CrossProblem>, doc: usize, code: Code, message: String| {
        out.push(CrossProblem {
            doc,
            code,
            message,
            note: false,
        })
    };
    let note = |out: &mut Vec<CrossProblem>, doc: usize, code: Code, message: String| {
        out.push(CrossProblem {
            doc,
            code,
            message,
            note: true,
        })
    };

    // DestinationRules by host.
    let mut rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for d in docs.iter().filter(|d| d.kind == "DestinationRule") {
        let Some(host) = d.value["spec"]["host"].as_str() else {
            continue;
        };
        let mut subsets = BTreeMap::new();
        let mut first = HashMap::new();
        for (k, s) in d.value["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(name) = s["name"].as_str() {
                first.entry(name).or_insert(k);
                subsets.insert(name, s["labels"][CLUSTER_LABEL].as_str());
            }
        }
        rules
            .entry(fqdn(host, d.namespace()))
            .or_default()
            .push(Rule {
                doc: d,
                labelled: subsets.values().flatten().copied().collect(),
                subsets,
                first,
            });
    }
    // VirtualServices by host.
    let mut services: BTreeMap<String, Vec<&Doc>> = BTreeMap::new();
    for d in docs.iter().filter(|d| d.kind == "VirtualService") {
        for h in d.value["spec"]["hosts"].as_array().into_iter().flatten() {
            if let Some(h) = h.as_str() {
                services.entry(fqdn(h, d.namespace())).or_default().push(*d);
            }
        }
    }
    let any_routing = !rules.is_empty() || !services.is_empty();
    // What a host's DestinationRule and VirtualService lack for a set of
    // clusters does not depend on which plugin asks: every client-side
    // plugin of a rendered mesh asks the same (one per cluster), so each
    // answer is computed once.
    let mut cache = RoutingCache::new();
    // Plugins given the very same parsed config (one Arc: a rendered mesh
    // gives most clusters one config per direction) have the same problems:
    // found once, repeated for each.
    // Each is kept with the plugin it was found for: a problem of that
    // plugin is the next one's, one of a DestinationRule or VirtualService
    // stays theirs.
    let mut by_config: HashMap<(*const Config, &str), (usize, Vec<CrossProblem>)> = HashMap::new();

    // Every subset a VirtualService names exists.
    for d in docs.iter().filter(|d| d.kind == "VirtualService") {
        // Most routes name the same host: its FQDN is made once.
        let mut last: Option<(&str, String)> = None;
        for (i, r) in http_routes(&d.value).iter().enumerate() {
            for (j, dest) in r["route"].as_array().into_iter().flatten().enumerate() {
                let (Some(host), Some(subset)) = (
                    dest["destination"]["host"].as_str(),
                    dest["destination"]["subset"].as_str(),
                ) else {
                    continue;
                };
                if last.as_ref().map(|(raw, _)| *raw) != Some(host) {
                    last = Some((host, fqdn(host, d.namespace())));
                }
                let Some((_, host)) = &last else {
                    continue;
                };
                if let Some(rs) = rules.get(host) {
                    if !rs.iter().any(|r| r.subsets.contains_key(subset)) {
                        err(
                            &mut out,
                            d.id,
                            Code::NoSubset,
                            format!(
                                "spec.http[{i}].route[{j}].destination.subset: subset {subset:?} is not defined in DestinationRule {} for {host} (Envoy answers 503 with no cluster)",
                                rs[0].doc.name()
                            ),
                        );
                    }
                }
            }
        }
    }

    for (d, spec, at) in docs
        .iter()
        .filter_map(|d| d.plugin().map(|(spec, at)| (d, spec, at)))
    {
        if let (Some((_, pinned)), Some(sha)) = (
            spec["url"].as_str().and_then(|u| u.rsplit_once("@sha256:")),
            spec["sha256"].as_str().filter(|s| !s.is_empty()),
        ) {
            if pinned != sha {
                err(
                    &mut out,
                    d.id,
                    Code::Digest,
                    format!("{at}.sha256: {sha} differs from the digest the url is pinned to (sha256:{pinned}): Istio fetches the pinned image and then refuses it"),
                );
            }
        }
        if let Some(m) = module {
            check_sha256(d, m, &mut out);
        }
        let Some(cfg) = &d.config else { continue };
        // A server side decides nothing: only what a client side can choose needs routing.
        if cfg.direction == DirectionSetting::Inbound {
            continue;
        }
        let key = (std::sync::Arc::as_ptr(cfg), at);
        if let Some((first, found)) = by_config.get(&key) {
            out.extend(found.iter().map(|p| CrossProblem {
                doc: if p.doc == *first { d.id } else { p.doc },
                ..p.clone()
            }));
            continue;
        }
        let start = out.len();
        let mut said_unchecked = false;
        let last = routes.end.min(cfg.routes.len());
        let first = routes.start.min(last);
        for (i, route) in cfg.routes[first..last]
            .iter()
            .enumerate()
            .map(|(k, r)| (k + first, r))
        {
            if matches!(route.policy, Policy::None) {
                continue;
            }
            let clusters: Vec<&str> = route
                .candidates
                .iter()
                .filter_map(|&k| cfg.clusters.get(k).map(|c| c.name.as_str()))
                .collect();
            if clusters.is_empty() {
                note(
                    &mut out,
                    d.id,
                    Code::NoRoute,
                    format!(
                        "{at}.pluginConfig.routes[{i}]: no clusters listed, so the subsets and routes it needs cannot be checked"
                    ),
                );
                continue;
            }
            if !any_routing {
                if !said_unchecked {
                    note(
                        &mut out,
                        d.id,
                        Code::NoRoute,
                        "routing not cross-checked: give the DestinationRules and VirtualServices too (e.g. the whole overlay)".to_string(),
                    );
                    said_unchecked = true;
                }
                continue;
            }
            // The hosts this route decides for: its exact hosts, and every host
            // with routing here that it is the most specific rule for.
            let mut hosts: Vec<&str> = Vec::new();
            for p in &route.hosts {
                match p {
                    HostPattern::Exact(h) => hosts.push(h),
                    pattern => {
                        let covered: Vec<&String> = rules
                            .keys()
                            .chain(services.keys())
                            .filter(|h| pattern.matches(h) && cfg.hosts.lookup(h) == Some(i))
                            .collect();
                        note(
                            &mut out,
                            d.id,
                            Code::NoRoute,
                            format!(
                                "{at}.pluginConfig.routes[{i}] covers {pattern}: {} host(s) with routing here are checked; any other host it matches needs its own DestinationRule and VirtualService, or the decision has no effect on the client side",
                                covered.len()
                            ),
                        );
                        for h in covered {
                            if !hosts.contains(&h.as_str()) {
                                hosts.push(h);
                            }
                        }
                    }
                }
            }
            // A pinned decision routes on its own header to the cluster's
            // subset alone; a preference to a failover subset.
            let header = if route.pinned {
                &cfg.headers.pinned_cluster
            } else {
                &cfg.headers.target_cluster
            };
            for host in hosts {
                let routing = Routing {
                    header,
                    pinned: route.pinned,
                    rules: &rules,
                    services: &services,
                };
                check_host(d, i, host, &clusters, &routing, &mut cache, &mut out);
            }
        }
        by_config.insert(key, (d.id, out[start..].to_vec()));
    }
    out
}

fn http_routes(vs: &Value) -> &[Value] {
    vs["spec"]["http"].as_array().map_or(&[], Vec::as_slice)
}

/// The routing a decision needs: its header, pinned or preferred, and the
/// DestinationRules and VirtualServices by host.
struct Routing<'a> {
    header: &'a str,
    pinned: bool,
    rules: &'a BTreeMap<String, Vec<Rule<'a>>>,
    services: &'a BTreeMap<String, Vec<&'a Doc>>,
}

/// A host's routing problems, by host, then by (header, pinned, clusters).
type RoutingCache = HashMap<String, Vec<Answer>>;

/// What a host's routing lacks for one (header, pinned, clusters): the
/// problems of its DestinationRule's subsets, and those of its
/// VirtualService's routes (`None`: it has none).
struct Answer {
    header: String,
    pinned: bool,
    clusters: Vec<String>,
    subsets: Vec<CrossProblem>,
    routes: Option<Vec<CrossProblem>>,
}

fn check_host(
    wp: &Doc,
    i: usize,
    host: &str,
    clusters: &[&str],
    routing: &Routing<'_>,
    cache: &mut RoutingCache,
    out: &mut Vec<CrossProblem>,
) {
    let at = wp.plugin().map_or("spec", |(_, at)| at);
    let header = routing.header;
    // Looked up without making a key: every client-side plugin asks again.
    if !cache.contains_key(host) {
        cache.insert(host.to_string(), Vec::new());
    }
    let Some(answers) = cache.get_mut(host) else {
        return;
    };
    let found = answers.iter().position(|a| {
        a.header == header
            && a.pinned == routing.pinned
            && a.clusters.len() == clusters.len()
            && a.clusters.iter().zip(clusters).all(|(a, b)| a == b)
    });
    let k = match found {
        Some(k) => k,
        None => {
            answers.push(Answer {
                header: header.to_string(),
                pinned: routing.pinned,
                clusters: clusters.iter().map(|c| c.to_string()).collect(),
                subsets: subset_problems(host, clusters, routing),
                routes: route_problems(host, clusters, routing),
            });
            answers.len() - 1
        }
    };
    let Answer {
        subsets, routes, ..
    } = &answers[k];
    let list = || clusters.join(", ");
    if routing.rules.get(host).and_then(|r| r.first()).is_none() {
        out.push(CrossProblem {
            doc: wp.id,
            code: Code::NoSubset,
            message: format!(
                "{at}.pluginConfig.routes[{i}]: the filter can send {host} to {}, but no DestinationRule for {host} is among these manifests (one subset per cluster, labels {CLUSTER_LABEL}: <cluster>)",
                list()
            ),
            note: false,
        });
    }
    out.extend(subsets.iter().cloned());
    match routes {
        Some(routes) => out.extend(routes.iter().cloned()),
        None => out.push(CrossProblem {
            doc: wp.id,
            code: Code::NoRoute,
            message: format!(
                "{at}.pluginConfig.routes[{i}]: the filter can send {host} to {}, but no VirtualService for {host} is among these manifests (a route per cluster on {header}, then a default route)",
                list()
            ),
            note: false,
        }),
    }
}

/// What `host`'s DestinationRule lacks for `clusters`.
fn subset_problems(host: &str, clusters: &[&str], routing: &Routing<'_>) -> Vec<CrossProblem> {
    let mut out = Vec::new();
    let who = "the filter";
    let Some(r) = routing.rules.get(host).and_then(|r| r.first()) else {
        return out;
    };
    for c in clusters {
        let (name, has) = if routing.pinned {
            (routing::only_subset(c), r.labelled.contains(*c))
        } else {
            let name = routing::prefer_subset(c);
            let has = r.subsets.contains_key(name.as_str());
            (name, has)
        };
        if !has {
            let what = if routing.pinned {
                format!("labels {{{CLUSTER_LABEL}: {c}}}")
            } else {
                format!(
                    "no cluster label, failoverPriority [{}], outlier detection with maxEjectionPercent {}",
                    routing::failover_priority(c),
                    routing::MAX_EJECTION_PERCENT
                )
            };
            out.push(CrossProblem {
                doc: r.doc.id,
                code: Code::NoSubset,
                message: format!(
                    "spec.subsets: no subset {name:?} for cluster {c:?} ({what}), but {who} can send {host} there"
                ),
                note: false,
            });
        }
    }
    out
}

/// What `host`'s VirtualService lacks for `clusters`; `None` when it has none.
fn route_problems(
    host: &str,
    clusters: &[&str],
    routing: &Routing<'_>,
) -> Option<Vec<CrossProblem>> {
    let (header, services) = (routing.header, routing.services);
    let rule = routing.rules.get(host).and_then(|r| r.first());
    let push = |out: &mut Vec<CrossProblem>, doc: usize, code: Code, message: String| {
        out.push(CrossProblem {
            doc,
            code,
            message,
            note: false,
        })
    };
    let who = "the filter";
    let vs = services.get(host).and_then(|v| v.first())?;
    let mut problems = Vec::new();
    let out = &mut problems;
    let http = http_routes(&vs.value);
    // The first route matching `header: {exact: <cluster>}`, by cluster.
    let mut first_route: HashMap<&str, usize> = HashMap::new();
    for (k, r) in http.iter().enumerate() {
        for m in r["match"].as_array().into_iter().flatten() {
            if let Some(c) = m["headers"][header]["exact"].as_str() {
                first_route.entry(c).or_insert(k);
            }
        }
    }
    let first_default = http.iter().position(|r| {
        r["match"].as_array().is_none_or(|m| {
            m.is_empty() || m.iter().any(|m| m.as_object().is_none_or(|o| o.is_empty()))
        })
    });
    for c in clusters {
        // A route matching `header: {exact: c}` before any catch-all route...
        let found = first_route
            .get(*c)
            .and_then(|&k| http.get(k).map(|r| (k, r)));
        match found {
            None => push(
                out,
                vs.id,
                Code::NoRoute,
                format!(
                    "spec.http: no route for {header}: {c} -> the {c} subset of {host}, but {who} can choose cluster {c}: its requests would take the default route"
                ),
            ),
            Some((k, _)) if first_default.is_some_and(|f| f < k) => push(
                out,
                vs.id,
                Code::NoRoute,
                format!(
                    "spec.http[{k}]: the route for {header}: {c} comes after the catch-all route spec.http[{}], so it never matches",
                    first_default.unwrap_or_default()
                ),
            ),
            Some((k, r)) => {
                // ...whose destinations are subsets of this host that select cluster c.
                for (j, dest) in r["route"].as_array().into_iter().flatten().enumerate() {
                    let d = &dest["destination"];
                    // The host as written is usually the FQDN already.
                    let same_host = d["host"]
                        .as_str()
                        .is_some_and(|h| h == host || fqdn(h, vs.namespace()) == host);
                    let subset = d["subset"].as_str();
                    let at = Field("spec.http", k, Some(("route", j, ".destination")));
                    if !same_host {
                        push(out, vs.id, Code::NoRoute, format!("{at}.host: {:?}, expected {host}", d["host"].as_str().unwrap_or_default()));
                        continue;
                    }
                    let Some(subset) = subset else {
                        push(out, vs.id, Code::NoRoute, format!("{at}: no subset: the request for cluster {c} goes to any cluster"));
                        continue;
                    };
                    if let Some(r) = rule {
                        match (routing.pinned, r.subsets.get(subset)) {
                            (true, Some(Some(sc))) if sc == c => {}
                            (true, Some(Some(sc))) => push(
                                out,
                                vs.id,
                                Code::NoRoute,
                                format!("{at}.subset: {subset:?} selects cluster {sc:?}, but this route is for {header}: {c}"),
                            ),
                            (true, Some(None)) => push(
                                out,
                                vs.id,
                                Code::NoRoute,
                                format!("{at}.subset: {subset:?} has no {CLUSTER_LABEL} label, so it does not keep the request in cluster {c}"),
                            ),
                            (false, Some(_)) => {
                                for p in r.preference_problems(subset, c) {
                                    push(out, r.doc.id, Code::NoFailover, format!("{p} (the subset {header}: {c} routes to)"));
                                }
                            }
                            (_, None) => {} // reported above (subset not defined)
                        }
                    }
                }
                if !routing.pinned {
                    for p in retry_problems(r, Field("spec.http", k, None), c) {
                        push(out, vs.id, Code::Retries, p);
                    }
                }
            }
        }
    }
    match first_default {
        None => push(
            out,
            vs.id,
            Code::NoRoute,
            "spec.http: no default route (one without match) for requests without a decision: Envoy answers them 404".to_string(),
        ),
        Some(k) if k + 1 != http.len() => push(
            out,
            vs.id,
            Code::NoRoute,
            format!("spec.http[{k}]: a catch-all route before the last route hides the routes after it"),
        ),
        Some(_) => {}
    }
    Some(problems)
}

fn check_sha256(d: &Doc, m: &Module, out: &mut Vec<CrossProblem>) {
    let Some((spec, at)) = d.plugin() else {
        return;
    };
    let url = spec["url"].as_str().unwrap_or_default();
    let sha = spec["sha256"].as_str().unwrap_or_default();
    let http =
        url.starts_with("http://") || url.starts_with("https://") || url.starts_with("file://");
    let url_digest = url
        .rsplit_once("@sha256:")
        .map(|(_, d)| d.to_string())
        .filter(|_| !http);
    let push = |out: &mut Vec<CrossProblem>, message: String, note: bool| {
        out.push(CrossProblem {
            doc: d.id,
            code: Code::Digest,
            message,
            note,
        })
    };
    if http {
        if !sha.is_empty() && sha != m.wasm_sha256 {
            push(
                out,
                format!(
                    "{at}.sha256: {sha} does not match the packaged module: for an http(s) url Istio compares the sha256 of the downloaded .wasm, which is {}",
                    m.wasm_sha256
                ),
                false,
            );
        }
    } else {
        let known = |x: &str| m.manifest_digests.iter().any(|(dg, _)| dg == x);
        let expected: Vec<String> = m
            .manifest_digests
            .iter()
            .map(|(dg, from)| format!("{dg} ({from})"))
            .collect();
        if !sha.is_empty() && !known(sha) {
            let hint = if sha == m.wasm_sha256 {
                " (that is the module's own sha256: Istio compares the image manifest digest for oci urls, pkg/wasm/imagefetcher.go)"
            } else {
                ""
            };
            push(
                out,
                format!(
                    "{at}.sha256: {sha} does not match the packaged module{hint}: for an oci url Istio compares the image manifest digest, expected {}",
                    expected.join(" or ")
                ),
                false,
            );
        }
        if let Some(ud) = &url_digest {
            if !known(ud) {
                push(
                    out,
                    format!(
                        "{at}.url: pinned to sha256:{ud}, which is not the packaged image, expected {}",
                        expected.join(" or ")
                    ),
                    false,
                );
            }
        }
    }
    if sha.is_empty() && url_digest.is_none() {
        push(
            out,
            format!(
                "{at}.sha256: not set: Istio runs whatever the url points to when it fetches it"
            ),
            true,
        );
    }
}
