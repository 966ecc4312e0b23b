//! The contract between the filter's decision and Istio's routing: which
//! header names which DestinationRule subset, and what the subsets and routes
//! must carry so that Envoy, not the filter, carries out failover. `render`
//! writes it into VirtualServices and DestinationRules, `validate` checks it,
//! the real-Envoy replica generates what istiod generates from it.
//!
//! - `x-hybridmesh-target-cluster: <c>` -> subset `prefer-<c>`: every endpoint
//!   of the service (no labels), priorities by
//!   `failoverPriority: [topology.istio.io/cluster=<c>]` (the endpoints of `c`,
//!   a remote one being its east-west gateway, in priority 0, every other in
//!   priority 1), outlier detection with `maxEjectionPercent: 100`; the route
//!   retries `RETRY_ATTEMPTS` times on `RETRY_ON` with
//!   `retryRemoteLocalities: true` (Envoy's `previous_priorities`, update
//!   frequency 2: attempts 1 and 2 use the original priority load, attempt 3
//!   leaves the priority that failed).
//! - `x-hybridmesh-pinned-cluster: <c>` -> subset `only-<c>`: the endpoints of
//!   `c` alone (`clusterLocal`, `pinned` rules): never served elsewhere.

/// The label Istio puts on every endpoint (and on a remote cluster's
/// east-west gateway endpoint) naming its cluster.
pub const CLUSTER_LABEL: &str = "topology.istio.io/cluster";

/// The subset a preference for `cluster` routes to.
pub fn prefer_subset(cluster: &str) -> String {
    format!("prefer-{cluster}")
}

/// The subset a pinned decision for `cluster` routes to.
pub fn only_subset(cluster: &str) -> String {
    format!("only-{cluster}")
}

/// The cluster a decision names, from the Envoy cluster its route went to
/// (`outbound|80|prefer-gke|<host>` -> `gke`); `None` for the default route.
pub fn decided_cluster(envoy_cluster: &str) -> Option<&str> {
    let subset = envoy_cluster.split('|').nth(2)?;
    subset
        .strip_prefix("prefer-")
        .or_else(|| subset.strip_prefix("only-"))
}

/// `failoverPriority` of a preference subset (the `label=value` form, Istio
/// 1.18 and later).
pub fn failover_priority(cluster: &str) -> String {
    format!("{CLUSTER_LABEL}={cluster}")
}

/// Retries on a preference route. With `previous_priorities` at update
/// frequency 2 the third attempt is the first to leave the preferred
/// priority, so at least 2 are needed; the third retry covers a second
/// endpoint failing in the next priority.
pub const RETRY_ATTEMPTS: u32 = 3;

/// What a preference route retries on: Istio's defaults (connect-failure,
/// refused-stream, unavailable, cancelled), resets after the connection was
/// made (a dead cluster behind its east-west gateway), and 503 (an
/// application that is down behind a live sidecar; Istio 1.24 and later no
/// longer retry 503 by default).
pub const RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,reset,503";

/// Envoy ejects at most this share of a cluster's hosts, across every
/// priority (its default is 10: below 100 a small cluster is never ejected
/// whole, and the failover stops).
pub const MAX_EJECTION_PERCENT: u32 = 100;

/// The preference subsets' `outlierDetection.minHealthPercent`. Since 1.31
/// istiod sends a not-Ready pod to the proxies as an unhealthy endpoint
/// unless the subset sets this above 0 (`PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS`,
/// `supportsUnhealthyEndpoints` in `pilot/pkg/xds/endpoints/endpoint_builder.go`),
/// and Envoy's overprovisioning then moves part of the preferred cluster's
/// requests away while any of its pods is not Ready (measured on the Istio
/// lab: 12 of 40 with one of two pods drained). Istio also makes it Envoy's
/// `healthy_panic_threshold` (`applyOutlierDetection`): at 1, panic only when
/// under 1% of every priority's hosts are healthy.
pub const MIN_HEALTH_PERCENT: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_is_read_back_from_the_subset_it_routed_to() {
        let route = |s: String| format!("outbound|80|{s}|echo-svc.default.svc.cluster.local");
        assert_eq!(decided_cluster(&route(prefer_subset("gke"))), Some("gke"));
        assert_eq!(
            decided_cluster(&route(only_subset("anthos"))),
            Some("anthos")
        );
        assert_eq!(decided_cluster(&route(String::new())), None);
        assert_eq!(decided_cluster("PassthroughCluster"), None);
    }
}
