//! Envoy bootstraps shaped like what istiod sends: node metadata, listeners
//! with a traffic direction, `outbound|80|<subset>|<host>` clusters whose
//! endpoints carry `istio.workload`, remote clusters reached only through
//! their east-west gateway (`;;;;<cluster>`), routes on
//! `x-hybridmesh-target-cluster`, and the filter delivered by ECDS from a file.
//! Written as JSON (Envoy reads `.json` bootstraps).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::certs::Leaf;
use super::topology::{self, Cluster, Topology, ADMIN, APP, GATEWAY, INBOUND, OUTBOUND, PEER_BASE};
use hybridmesh_filter_core::config::HeaderNames;
use hybridmesh_filter_core::routing;
use hybridmesh_scenario::Fail;

const WASM_T: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The ECDS resource name (Istio names it `<namespace>.<WasmPlugin name>`).
pub const FILTER_NAME: &str = "istio-system.hybridmesh";
/// Response header naming the Envoy cluster the route chose (replica only).
pub const ROUTE_HEADER: &str = "x-replica-route";
/// Request header the test peer routes on (removed before it leaves).
pub const DIRECT_HEADER: &str = "x-replica-direct";
/// Response headers with Envoy's `%RESPONSE_FLAGS%` and
/// `%RESPONSE_CODE_DETAILS%` at the client sidecar (replica only), so a
/// load client sees why a request failed.
pub const FLAGS_HEADER: &str = "x-replica-flags";
pub const DETAILS_HEADER: &str = "x-replica-details";

/// The flags and details headers, for a route or a local reply.
fn flag_headers() -> Value {
    json!([
        {"header": {"key": FLAGS_HEADER, "value": "%RESPONSE_FLAGS%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": DETAILS_HEADER, "value": "%RESPONSE_CODE_DETAILS%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ])
}

/// Files one proxy needs for mTLS.
pub struct Tls<'a> {
    pub leaf: &'a Leaf,
    pub ca: &'a Path,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The node: id, Istio's metadata, locality (none when the nodes have none).
pub fn node(id: &str, cluster: &Cluster, namespace: &str) -> Value {
    let (region, zone) = topology::region_zone(&cluster.node_locality);
    let mut locality = json!({});
    if !region.is_empty() {
        locality["region"] = json!(region);
    }
    if !zone.is_empty() {
        locality["zone"] = json!(zone);
    }
    json!({
        "id": id,
        "cluster": format!("{namespace}.{namespace}"),
        "locality": locality,
        "metadata": {
            "CLUSTER_ID": cluster.name,
            "NETWORK": cluster.network,
            "NAMESPACE": namespace,
            "ISTIO_VERSION": "1.28.0",
        }
    })
}

fn admin(ip: std::net::Ipv4Addr) -> Value {
    json!({"address": socket(&ip.to_string(), ADMIN)})
}

fn socket(ip: &str, port: u16) -> Value {
    json!({"socket_address": {"address": ip, "port_value": port}})
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// The filter as Istio delivers it: ECDS (here from a file).
fn wasm_ecds(ecds: &Path) -> Value {
    json!({"name": FILTER_NAME, "config_discovery": {
        "config_source": {"path_config_source": {"path": path(ecds)}, "resource_api_version": "V3"},
        "type_urls": [WASM_T]}})
}

/// One JSON line per request: Envoy's fields, the filter's hop record
/// (filter state `wasm.hybridmesh.hop`) in `hop` and the filter's headers,
/// what `hybridmesh trace` reads (the fields are the filter's, as
/// `wasmplugin/` ships them).
fn access_log() -> Value {
    use hybridmesh_filter_core::config::{HeaderNames, DEFAULT_HEADER_PREFIX};
    let format: serde_json::Map<String, Value> =
        hybridmesh_filter_core::hop::access_log_fields(&HeaderNames::new(DEFAULT_HEADER_PREFIX))
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
    json!([{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": "/dev/stdout",
        "log_format": {"json_format": format}}}])
}

/// The filter's counters carry their labels in the name (`label=.=value;.;`,
/// as Istio's stats do); these tag extractors turn them into Prometheus labels
/// (`hybridmesh_requests_total{source_cluster="gke",...}`), as Istio's
/// bootstrap does for each `meshConfig.defaultConfig.extraStatTags` entry
/// (see wasmplugin/meshconfig-stats.yaml).
pub const STAT_TAGS: &[&str] = &hybridmesh_filter_core::metrics::LABELS;

fn stats_config() -> Value {
    let tags: Vec<Value> = STAT_TAGS
        .iter()
        .map(|t| json!({"tag_name": t, "regex": format!("({t}=\\.=(.*?);\\.;)")}))
        .collect();
    json!({"stats_tags": tags, "use_all_default_tags": true})
}

fn hcm(stat_prefix: &str, route_config: Value, filters: Vec<Value>) -> Value {
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        // A drained listener closes its idle keep-alive connections at once.
        "drain_timeout": "0.05s",
        "route_config": route_config,
        "http_filters": filters,
        "access_log": access_log()}})
}

fn tls_certificates(tls: &Tls) -> Value {
    json!([{"certificate_chain": {"filename": path(&tls.leaf.cert)},
            "private_key": {"filename": path(&tls.leaf.key)}}])
}

/// Istio mTLS from a client sidecar: its SPIFFE cert, the server's id checked.
fn upstream_tls(tls: &Tls, sni: &str, server_san: Option<&str>) -> Value {
    let mut validation = json!({"trusted_ca": {"filename": path(tls.ca)}});
    if let Some(san) = server_san {
        validation["match_typed_subject_alt_names"] =
            json!([{"san_type": "URI", "matcher": {"exact": san}}]);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": sni,
        "common_tls_context": {"tls_certificates": tls_certificates(tls), "validation_context": validation}}})
}

/// Istio's inbound mTLS: a client certificate is required, chains to the
/// mesh root, and its URI SAN starts with `spiffe://<domain>/` for the trust
/// domain or an alias (istio/istio 1.31 `pilot/pkg/security/model/authentication.go`
/// `ApplyToCommonTLSContext`: prefix matches of `TrustDomainsForValidation`).
/// Measured on the Istio lab: a peer of another trust domain, signed by the
/// mesh's own CA, is refused at the handshake (`certificate unknown`).
fn downstream_tls(tls: &Tls, trust_domains: &[String]) -> Value {
    let sans: Vec<Value> = trust_domains
        .iter()
        .map(|d| json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{d}/")}}))
        .collect();
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {"tls_certificates": tls_certificates(tls),
            "validation_context": {"trusted_ca": {"filename": path(tls.ca)},
                                   "match_typed_subject_alt_names": sans}}}})
}

/// Istio's SNI for a service subset: `outbound_.80_.<subset>_.<host>`.
pub fn sni(subset: &str, service: &str) -> String {
    let subset = if subset.is_empty() { "_" } else { subset };
    format!("outbound_.80_.{subset}_.{service}")
}

fn tls_inspector() -> Value {
    json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}])
}

/// Istio's default retry policy for HTTP routes (`route/retry` `DefaultPolicy`,
/// Istio 1.24 and later: 503 is no longer retried by default).
fn retry_policy() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": "5"
    })
}

/// Envoy's `previous_priorities` retry priority as istiod writes it for
/// `retryRemoteLocalities: true` (update frequency 2, fixed).
fn previous_priorities() -> Value {
    json!({"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
        "update_frequency": 2}})
}

/// A preference route's retries, as istiod translates the VirtualService
/// `render` writes (`ConvertPolicy`: numeric `retryOn` entries become
/// `retriable_status_codes` and add `retriable-status-codes`).
fn prefer_retry_policy() -> Value {
    let mut on: Vec<&str> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    for x in routing::RETRY_ON.split(',') {
        match x.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(x),
        }
    }
    if !codes.is_empty() && !on.contains(&"retriable-status-codes") {
        on.push("retriable-status-codes");
    }
    let mut p = retry_policy();
    p["retry_on"] = json!(on.join(","));
    p["num_retries"] = json!(routing::RETRY_ATTEMPTS);
    p["retriable_status_codes"] = json!(codes);
    p["retry_priority"] = previous_priorities();
    p
}

fn route(name: &str, cluster: &str, header: Option<(&str, &str)>) -> Value {
    let mut m = json!({"prefix": "/"});
    if let Some((h, v)) = header {
        m["headers"] = json!([{"name": h, "string_match": {"exact": v}}]);
    }
    json!({"name": name, "match": m,
        "route": {"cluster": cluster, "timeout": "15s", "retry_policy": retry_policy()},
        "response_headers_to_add": route_headers(cluster)})
}

fn route_headers(cluster: &str) -> Value {
    let mut h = vec![json!({"header": {"key": ROUTE_HEADER, "value": cluster},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})];
    if let Value::Array(f) = flag_headers() {
        h.extend(f);
    }
    Value::Array(h)
}

/// The short names a client uses for a service (`echo-svc.default`, ...).
fn domains(service: &str) -> Vec<String> {
    let labels: Vec<&str> = service.split('.').collect();
    let mut out = Vec::new();
    for n in [labels.len(), 2, 3] {
        let d = labels[..n.min(labels.len())].join(".");
        if !out.contains(&d) {
            out.push(d.clone());
            out.push(format!("{d}:80"));
        }
    }
    out
}

/// One LbEndpoint: an address, `istio.workload` metadata, a weight.
fn lb_endpoint(ip: &str, port: u16, workload: &str, weight: u32) -> Value {
    json!({"endpoint": {"address": socket(ip, port)},
           "metadata": {"filter_metadata": {"istio": {"workload": workload}}},
           "load_balancing_weight": weight})
}

fn locality_of(c: &Cluster) -> Value {
    let (region, zone) = topology::region_zone(&c.node_locality);
    json!({"region": region, "zone": zone})
}

/// What a client in `me` sees of `target`'s endpoints: the pods on its own
/// network, else the target's east-west gateway standing for all of them.
/// Drained pods are gone, as istiod removes a pod that is not ready from EDS;
/// a remote network's gateway stands for the pods it still has (and is gone
/// with the last of them).
fn endpoints_seen_from(me: &Cluster, target: &Cluster, priority: u32, live: &[bool]) -> Value {
    let is_live = |i: usize| live.get(i).copied().unwrap_or(true);
    let eps: Vec<Value> = if me.network == target.network {
        target
            .endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| is_live(*i))
            .map(|(i, ip)| {
                let workload = format!("echo-svc-{i};default;echo-svc;v1;{}", target.name);
                lb_endpoint(&ip.to_string(), INBOUND, &workload, 1)
            })
            .collect()
    } else {
        let weight = (0..target.endpoints.len()).filter(|i| is_live(*i)).count() as u32;
        let workload = format!(";;;;{}", target.name);
        if weight == 0 {
            Vec::new()
        } else {
            vec![lb_endpoint(
                &target.gateway.to_string(),
                GATEWAY,
                &workload,
                weight,
            )]
        }
    };
    json!({"locality": locality_of(target), "lb_endpoints": eps, "priority": priority})
}

/// The endpoints file of one outbound cluster in a client's EDS folder (a
/// file subscription carries exactly one ClusterLoadAssignment).
pub fn eds_file(dir: &Path, cluster: &str) -> PathBuf {
    dir.join(format!("{}.json", cluster.replace('|', "_")))
}

/// `outbound|80|<subset>|<service>`; its endpoints come by EDS (from the
/// client's endpoints folder, [`client_eds`]), as istiod sends them.
fn outbound_cluster(
    t: &Topology,
    service: &str,
    subset: &str,
    tls: &Tls,
    outlier: Option<&Outlier>,
    eds: &Path,
) -> Value {
    let name = format!("outbound|80|{subset}|{service}");
    let server = t.spiffe("default", "default");
    let mut cluster = json!({
        "name": name,
        // istiod's observability name: the name and Istio's stat-prefix
        // delimiter (`DelimitedStatsPrefix`, pilot/pkg/networking/util/util.go,
        // set in cluster_builder.go); stats and %UPSTREAM_CLUSTER% use it.
        "alt_stat_name": format!("{name};"),
        "type": "EDS",
        "eds_cluster_config": {"service_name": name, "eds_config": {
            "path_config_source": {"path": path(&eds_file(eds, &name))}, "resource_api_version": "V3"}},
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        // As istiod sets them when no DestinationRule limits them: without
        // these, Envoy's defaults (3 concurrent retries per cluster) drop the
        // retries that carry a failover under load (flag UO).
        "circuit_breakers": {"thresholds": [{
            "max_connections": u32::MAX, "max_pending_requests": u32::MAX,
            "max_requests": u32::MAX, "max_retries": u32::MAX, "track_remaining": true}]},
        "transport_socket": upstream_tls(tls, &sni(subset, service), Some(&server)),
    });
    if let Some(o) = outlier {
        // `applyOutlierDetection`: the DestinationRule's fields, success
        // rate off, and the panic threshold its minHealthPercent (render's
        // routing::MIN_HEALTH_PERCENT for the preference subsets; drained
        // pods are out of EDS here, as istiod leaves them out when it is
        // above 0).
        cluster["outlier_detection"] = json!({
            "consecutive_5xx": o.consecutive_5xx,
            "enforcing_consecutive_5xx": 100,
            "enforcing_success_rate": 0,
            "interval": format!("{}s", o.interval_ms as f64 / 1000.0),
            "base_ejection_time": format!("{}s", o.base_ejection_ms as f64 / 1000.0),
            "max_ejection_percent": routing::MAX_EJECTION_PERCENT});
        cluster["common_lb_config"] = json!({
            "healthy_panic_threshold": {"value": o.min_health_percent},
            "locality_weighted_lb_config": {}});
    }
    cluster
}

/// A DestinationRule's outlier detection (what `render` writes for a
/// service from the same mesh description as the plugin config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub interval_ms: u64,
    pub base_ejection_ms: u64,
    /// `minHealthPercent`, which Istio makes the panic threshold.
    pub min_health_percent: u32,
}

impl Default for Outlier {
    /// Istio's defaults for a DestinationRule's outlierDetection.
    fn default() -> Self {
        Outlier {
            consecutive_5xx: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            min_health_percent: 0,
        }
    }
}

impl Outlier {
    /// The outlier detection of `service`'s weighted or failover rule in a
    /// plugin config (parsed by the filter's own parser), the way `render`
    /// writes the same numbers into the DestinationRule (interval 1s); `None`
    /// for a config that is invalid or has no such rule.
    pub fn of(config: &[u8], service: &str) -> Option<Outlier> {
        let cfg = hybridmesh_filter_core::config::parse_json(config).ok()?;
        let rule = cfg.routes.get(cfg.hosts.lookup(service)?)?;
        matches!(
            rule.policy.kind(),
            hybridmesh_filter_core::config::PolicyKind::Weighted
                | hybridmesh_filter_core::config::PolicyKind::Failover
        )
        .then_some(Outlier {
            consecutive_5xx: rule.outlier.consecutive_5xx,
            interval_ms: 1000,
            base_ejection_ms: rule.outlier.base_ejection_ms,
            min_health_percent: routing::MIN_HEALTH_PERCENT,
        })
    }
}

/// The endpoints of `outbound|80|<subset>|<service>` as a client in `me` sees
/// them; `live[k][i]`: pod i of cluster k is up.
fn load_assignment(
    me: &Cluster,
    service: &str,
    subset: &str,
    members: &[&Cluster],
    priority: &dyn Fn(&Cluster) -> u32,
    live: &[Vec<bool>],
    t: &Topology,
) -> Value {
    let name = format!("outbound|80|{subset}|{service}");
    let mut endpoints: Vec<Value> = members
        .iter()
        .map(|c| {
            let k = t
                .clusters
                .iter()
                .position(|x| x.name == c.name)
                .unwrap_or(0);
            endpoints_seen_from(
                me,
                c,
                priority(c),
                live.get(k).map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .collect();
    // istiod numbers the priorities that have endpoints 0, 1, ... with no
    // gap (`applyFailoverPriorities`): with the preferred cluster's endpoints
    // all gone, the rest become priority 0.
    let mut used: Vec<u64> = endpoints
        .iter()
        .filter(|e| e["lb_endpoints"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|e| e["priority"].as_u64())
        .collect();
    used.sort_unstable();
    used.dedup();
    for e in &mut endpoints {
        if let Some(p) = e["priority"].as_u64() {
            let rank = used.iter().position(|u| *u == p).unwrap_or(used.len());
            e["priority"] = json!(rank);
        }
    }
    json!({"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
           "cluster_name": name, "endpoints": endpoints})
}

/// The client sidecar's endpoints: for every outbound cluster it has, the
/// cluster name and its file's DiscoveryResponse (one ClusterLoadAssignment).
pub fn client_eds(
    t: &Topology,
    me: &Cluster,
    failover: Option<&LocalityFailover>,
    live: &[Vec<bool>],
    version: u64,
) -> Vec<(String, Value)> {
    let all: Vec<&Cluster> = t.clusters.iter().collect();
    let mut out = Vec::new();
    for service in topology::SERVICES {
        let mut assignments = Vec::new();
        for c in &t.clusters {
            assignments.push(load_assignment(
                me,
                service,
                &routing::only_subset(&c.name),
                &[c],
                &|_| 0,
                live,
                t,
            ));
            // failoverPriority [topology.istio.io/cluster=<c>]: c's endpoints
            // (or its east-west gateway) first, every other next.
            assignments.push(load_assignment(
                me,
                service,
                &routing::prefer_subset(&c.name),
                &all,
                &|x: &Cluster| u32::from(x.name != c.name),
                live,
                t,
            ));
        }
        // The seed's DestinationRule: own cluster first, the rest as failover.
        let seed = |x: &Cluster| u32::from(failover.is_some() && x.name != me.name);
        assignments.push(load_assignment(me, service, "", &all, &seed, live, t));
        for a in assignments {
            let name = a["cluster_name"].as_str().unwrap_or_default().to_string();
            out.push((
                name,
                json!({"version_info": version.to_string(), "resources": [a]}),
            ));
        }
    }
    out
}

/// The seed's DestinationRule on the default cluster: localityLbSetting
/// (own cluster first, the rest as failover) with outlier detection.
#[derive(Debug, Clone)]
pub struct LocalityFailover {
    pub base_ejection_secs: u64,
}

/// The sleep pod's sidecar in cluster `me`: the outbound listener, a route
/// per cluster subset, the default cluster, the filter by ECDS.
#[allow(clippy::too_many_arguments)]
pub fn client_sidecar(
    t: &Topology,
    me: &Cluster,
    tls: &Tls,
    ecds: &Path,
    eds: &Path,
    failover: Option<&LocalityFailover>,
    outlier: &Outlier,
) -> Value {
    let id = format!(
        "sidecar~{}~sleep-{}.sleep~sleep.svc.cluster.local",
        me.client, me.name
    );
    let names = HeaderNames::default();
    let mut clusters = Vec::new();
    let mut vhosts = Vec::new();
    for service in topology::SERVICES {
        let mut routes = Vec::new();
        // The VirtualService `render` writes: per cluster, the pinned header
        // -> only-<c>, the target header -> prefer-<c> with its retries.
        for c in &t.clusters {
            let only = routing::only_subset(&c.name);
            routes.push(route(
                &only,
                &format!("outbound|80|{only}|{service}"),
                Some((&names.pinned_cluster, &c.name)),
            ));
            clusters.push(outbound_cluster(t, service, &only, tls, None, eds));
            let prefer = routing::prefer_subset(&c.name);
            let mut r = route(
                &prefer,
                &format!("outbound|80|{prefer}|{service}"),
                Some((&names.target_cluster, &c.name)),
            );
            r["route"]["retry_policy"] = prefer_retry_policy();
            routes.push(r);
            clusters.push(outbound_cluster(
                t,
                service,
                &prefer,
                tls,
                Some(outlier),
                eds,
            ));
        }
        let mut default = route("default", &format!("outbound|80||{service}"), None);
        if failover.is_some() {
            // With locality failover Istio retries on the next priority.
            default["route"]["retry_policy"]["retry_priority"] = previous_priorities();
        }
        routes.push(default);
        let seed = failover.map(|f| Outlier {
            consecutive_5xx: 1,
            interval_ms: 1000,
            base_ejection_ms: f.base_ejection_secs * 1000,
            // The article's rule sets none.
            min_health_percent: 0,
        });
        clusters.push(outbound_cluster(t, service, "", tls, seed.as_ref(), eds));
        vhosts.push(
            json!({"name": format!("{service}:80"), "domains": domains(service), "routes": routes}),
        );
    }
    let mut outbound = hcm(
        "outbound_0.0.0.0_80",
        json!({"name": "80", "virtual_hosts": vhosts}),
        vec![wasm_ecds(ecds), router()],
    );
    // Every local reply (also one before routing, such as a filter whose
    // config is missing) carries the flags and details too.
    outbound["typed_config"]["local_reply_config"] = json!({"mappers": [{
        "filter": {"status_code_filter": {"comparison": {"op": "GE",
            "value": {"default_value": 100, "runtime_key": "replica.local_reply_flags"}}}},
        "headers_to_add": flag_headers()}]});
    let listener = json!({
        "name": "virtualOutbound",
        "address": socket(&me.client.to_string(), OUTBOUND),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [outbound]}]
    });
    json!({
        "node": node(&id, me, &t.client_namespace),
        "admin": admin(me.client),
        "stats_config": stats_config(),
        "static_resources": {"listeners": [listener], "clusters": clusters}
    })
}

/// One echo-svc pod's sidecar: the inbound listener (mTLS, and plaintext
/// as in PERMISSIVE mode) with the filter, in front of the application.
pub fn endpoint_sidecar(
    me: &Cluster,
    pod: usize,
    tls: &Tls,
    trust_domains: &[String],
    ecds: &Path,
) -> Value {
    let ip = me.endpoints[pod];
    let id = format!("sidecar~{ip}~echo-svc-{pod}.default~default.svc.cluster.local");
    let app = "inbound|8080||";
    let route_config = json!({"name": "inbound|8080||", "virtual_hosts": [{
        "name": "inbound|http|8080", "domains": ["*"],
        "routes": [{"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": app, "timeout": "15s"}}]}]});
    let chain = |tls_on: bool| {
        let mut c = json!({
            "filter_chain_match": {"transport_protocol": if tls_on { "tls" } else { "raw_buffer" }},
            "filters": [hcm("inbound_0.0.0.0_8080", route_config.clone(), vec![wasm_ecds(ecds), router()])]
        });
        if tls_on {
            c["transport_socket"] = downstream_tls(tls, trust_domains);
        }
        c
    };
    let listener = json!({
        "name": "virtualInbound",
        "address": socket(&ip.to_string(), INBOUND),
        "traffic_direction": "INBOUND",
        "listener_filters": tls_inspector(),
        "filter_chains": [chain(true), chain(false)]
    });
    let cluster = json!({
        "name": app, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": app, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket(&ip.to_string(), APP)}}]}]}
    });
    json!({
        "node": node(&id, me, "default"),
        "admin": admin(ip),
        "stats_config": stats_config(),
        "static_resources": {"listeners": [listener], "clusters": [cluster]}
    })
}

/// The east-west gateway: 15443, SNI-routed, TLS passed through at L4.
pub fn gateway(t: &Topology, me: &Cluster) -> Value {
    let id = format!(
        "router~{}~istio-eastwestgateway.istio-system~istio-system.svc.cluster.local",
        me.gateway
    );
    let mut chains = Vec::new();
    let mut clusters = Vec::new();
    for service in topology::SERVICES {
        let name = format!("outbound_.80_._.{service}");
        let mut names = vec![sni("", service)];
        for c in &t.clusters {
            names.push(sni(&routing::prefer_subset(&c.name), service));
            names.push(sni(&routing::only_subset(&c.name), service));
        }
        chains.push(json!({
            "filter_chain_match": {"server_names": names},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name, "cluster": name}}]}));
        let eps: Vec<Value> = me
            .endpoints
            .iter()
            .map(|ip| json!({"endpoint": {"address": socket(&ip.to_string(), INBOUND)}}))
            .collect();
        clusters.push(
            json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}}),
        );
    }
    let listener = json!({
        "name": "0.0.0.0_15443",
        "address": socket(&me.gateway.to_string(), GATEWAY),
        "listener_filters": tls_inspector(),
        "filter_chains": chains
    });
    json!({
        "node": node(&id, me, "istio-system"),
        "admin": admin(me.gateway),
        "stats_config": stats_config(),
        "static_resources": {"listeners": [listener], "clusters": clusters}
    })
}

/// A workload without the filter that talks straight to a cluster's pods,
/// presenting one of several SPIFFE ids (one listener each); the request
/// header `x-replica-direct: <cluster>` picks the cluster.
pub fn peer(t: &Topology, leaves: &[Leaf], ca: &Path) -> Value {
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for (k, leaf) in leaves.iter().enumerate() {
        let tls = Tls { leaf, ca };
        let mut routes = Vec::new();
        for c in &t.clusters {
            let name = format!("direct|{k}|{}", c.name);
            routes.push(json!({"match": {"prefix": "/", "headers": [
                    {"name": DIRECT_HEADER, "string_match": {"exact": c.name}}]},
                "route": {"cluster": name, "timeout": "15s"},
                "response_headers_to_add": flag_headers()}));
            let eps: Vec<Value> = c
                .endpoints
                .iter()
                .map(|ip| json!({"endpoint": {"address": socket(&ip.to_string(), INBOUND)}}))
                .collect();
            clusters.push(
                json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]},
                "transport_socket": upstream_tls(&tls, &sni("", topology::SERVICES[0]), None)}),
            );
        }
        let rc = json!({"name": "direct", "request_headers_to_remove": [DIRECT_HEADER],
            "virtual_hosts": [{"name": "direct", "domains": ["*"], "routes": routes}]});
        listeners.push(json!({
            "name": format!("peer-{k}"),
            "address": socket(&t.peer.to_string(), PEER_BASE + k as u16),
            "filter_chains": [{"filters": [hcm(&format!("peer_{k}"), rc, vec![router()])]}]
        }));
    }
    let me = Cluster {
        name: "peer".into(),
        network: String::new(),
        node_locality: String::new(),
        body: String::new(),
        client: t.peer,
        gateway: t.peer,
        endpoints: Vec::new(),
    };
    json!({
        "node": node(&format!("sidecar~{}~peer.test~test.svc.cluster.local", t.peer), &me, "test"),
        "admin": admin(t.peer),
        "stats_config": stats_config(),
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// The ECDS file: a DiscoveryResponse with the Wasm filter config, the
/// plugin config as a JSON string, V8, and the fail strategy.
pub fn ecds(version: u64, plugin_json: &[u8], wasm: &Path, fail: Fail) -> Value {
    let policy = match fail {
        Fail::FailClose => "FAIL_CLOSED",
        Fail::FailOpen => "FAIL_OPEN",
        Fail::FailReload => "FAIL_RELOAD",
    };
    json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": FILTER_NAME,
            "typed_config": {"@type": WASM_T, "config": {
                "name": FILTER_NAME,
                "root_id": "",
                "vm_config": {"vm_id": "hybridmesh", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": path(wasm)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": String::from_utf8_lossy(plugin_json)},
                "failure_policy": policy
            }}
        }]
    })
}
