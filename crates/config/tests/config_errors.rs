//! Every invalid config is rejected with the exact message an operator reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hybridmesh_config::parse_json;

const C: &str = r#""clusters": [{"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"}, {"name": "anthos", "network": "default", "locality": "tokyo-onprem"}]"#;

fn errors(json: &str) -> Vec<String> {
    match parse_json(json.as_bytes()) {
        Ok(_) => panic!("config was accepted: {json}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn with_clusters(rest: &str) -> String {
    format!("{{{C}, {rest}}}")
}

#[test]
fn invalid_configs_name_the_field_and_what_was_expected() {
    let cases: Vec<(String, &str)> = vec![
        // Syntax and types (stage one).
        ("{".into(), "EOF while parsing an object (line 1, column 1)"),
        ("[]".into(), "the plugin config must be a JSON object ({\"routes\": [...], ...})"),
        ("\"routes\"".into(), "the plugin config must be a JSON object ({\"routes\": [...], ...})"),
        (r#"{"routse": []}"#.into(), "unknown field `routse`, expected one of `identity`, `direction`, `domainSuffix`, `headerPrefix`, `trustSource`, `trustDomains`, `unknownSource`, `denyStatus`, `allowDebug`, `hopLog`, `filterState`, `metricsFlushInterval`, `maxHops`, `clusters`, `outlierDetection`, `routes` (line 1, column 9)"),
        (r#"{"direction": "sideways"}"#.into(), "direction: unknown variant `sideways`, expected one of `auto`, `outbound`, `inbound` (line 1, column 24)"),
        (r#"{"trustSource": "TLS"}"#.into(), "trustSource: unknown variant `TLS`, expected `mtls` or `any` (line 1, column 21)"),
        (r#"{"denyStatus": "403"}"#.into(), "denyStatus: invalid type: string \"403\", expected u32 (line 1, column 20)"),
        (r#"{"routes": [{"hosts": ["*"]}]}"#.into(), "routes[0]: missing field `policy` (line 1, column 28)"),
        (r#"{"routes": [{"hosts": ["*"], "policy": "weigthed"}]}"#.into(), "routes[0].policy: unknown variant `weigthed`, expected one of `none`, `clusterLocal`, `weighted`, `failover` (line 1, column 49)"),
        (r#"{"identity": {"cluser": "gke"}}"#.into(), "identity: unknown field `cluser`, expected one of `cluster`, `network`, `locality`, `namespace` (line 1, column 22)"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 80}, "extra": 1}]}]"#), "routes[0].distribute[0]: unknown field `extra`, expected `from` or `to` (line 1, column 271)"),
        (r#"{"outlierDetection": {"interval": "1s"}}"#.into(), "outlierDetection: unknown field `interval`, expected one of `consecutive5xxErrors`, `baseEjectionTime`, `maxEjectionTime` (line 1, column 32)"),
        ("{} trailing".into(), "trailing characters (line 1, column 4)"),
        // Values (stage two).
        (with_clusters(r#""routes": [{"hosts": ["echo-svc.default.svc.cluster.local"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 70, "anthos": 20}}]}]"#), "routes[0].distribute[0].to: weights sum to 90, expected 100"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 80, "mars": 20}}]}]"#), "routes[0].distribute[0].to.mars: unknown cluster \"mars\", expected one of gke, anthos"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 80.5, "anthos": 19.5}}]}]"#), "routes[0].distribute[0].to.anthos: 19.5 is not a weight, expected an integer 0-100"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 180, "anthos": -80}}]}]"#), "routes[0].distribute[0].to.anthos: -80 is not a weight, expected an integer 0-100"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted"}]"#), "routes[0].distribute: missing, policy weighted needs at least one {from, to} entry"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "asia-northeast1/*/*/*", "to": {"gke": 100}}]}]"#), "routes[0].distribute[0].from: \"asia-northeast1/*/*/*\" is not a locality pattern, expected region[/zone[/subzone]] with * for any (e.g. \"asia-northeast1/*\")"),
        (r#"{"routes": [{"hosts": ["*"], "policy": "failover"}]}"#.into(), "routes[0].policy: failover needs the mesh's clusters: list them under clusters (name, network, locality)"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "clusterLocal", "distribute": []}]"#), "routes[0].distribute: only allowed with policy weighted, this route's policy is clusterLocal"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "none", "outlierDetection": {}}]"#), "routes[0].outlierDetection: only allowed with policy weighted or failover, this route's policy is none"),
        (with_clusters(r#""routes": [{"hosts": [], "policy": "none"}]"#), "routes[0].hosts: empty, expected at least one host (exact, \"*.ns.svc.cluster.local\" or \"*\")"),
        (with_clusters(r#""routes": [{"hosts": ["*.default.*"], "policy": "none"}]"#), "routes[0].hosts[0]: \"*.default.*\" is not a host pattern, expected an exact name, \"*.<suffix>\" or \"*\" (e.g. \"*.default.svc.cluster.local\")"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "failover", "failover": [{"from": "tokyo-onprem", "to": "asia-east1"}]}]"#), "routes[0].failover[0].to: no cluster of this route is in region \"asia-east1\" (clusters: gke=asia-northeast1, anthos=tokyo-onprem)"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "failover", "failover": [{"from": "tokyo-onprem", "to": "tokyo-onprem"}]}]"#), "routes[0].failover[0]: from and to are both \"tokyo-onprem\", expected two different regions"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "failover", "failoverPriority": ["topology.kubernetes.io/region", "topology.kubernetes.io/rack"]}]"#), "routes[0].failoverPriority[1]: unknown label \"topology.kubernetes.io/rack\", expected one of topology.istio.io/network, topology.istio.io/cluster, topology.kubernetes.io/region, topology.kubernetes.io/zone, topology.istio.io/subzone"),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "failover", "clusters": ["gke", "gke"]}]"#), "routes[0].clusters[1]: duplicate cluster \"gke\""),
        (with_clusters(r#""routes": [{"hosts": ["*"], "policy": "weighted", "stickyHeader": "x-hybridmesh-source-cluster", "distribute": [{"from": "*", "to": {"gke": 100}}]}]"#), "routes[0].stickyHeader: \"x-hybridmesh-source-cluster\" is one of this filter's own headers (prefix \"x-hybridmesh\"), which it strips from requests"),
        (r#"{"clusters": [{"name": "gke"}, {"name": "gke"}]}"#.into(), "clusters[1].name: duplicate cluster \"gke\""),
        (r#"{"clusters": [{"name": "my cluster"}]}"#.into(), "clusters[0].name: \"my cluster\" is not a cluster name, expected letters, digits, '-', '_' or '.'"),
        (r#"{"clusters": [{"name": "anthos", "locality": "/tokyo"}]}"#.into(), "clusters[0].locality: \"/tokyo\" is not a locality, expected region[/zone[/subzone]] (e.g. \"tokyo-onprem\")"),
        (r#"{"identity": {"locality": "a/b/c/d"}}"#.into(), "identity.locality: \"a/b/c/d\" is not a locality, expected region[/zone[/subzone]] (e.g. \"tokyo-onprem\")"),
        (r#"{"identity": {"cluster": ""}}"#.into(), "identity.cluster: \"\" is not a cluster name, expected letters, digits, '-', '_' or '.'"),
        (r#"{"outlierDetection": {"baseEjectionTime": "1 minute"}}"#.into(), "outlierDetection.baseEjectionTime: \"1 minute\" is not a duration, expected e.g. \"30s\", \"1m\", \"500ms\""),
        (r#"{"outlierDetection": {"baseEjectionTime": "2m", "maxEjectionTime": "1m"}}"#.into(), "outlierDetection.maxEjectionTime: 60000ms is shorter than baseEjectionTime 120000ms"),
        (r#"{"outlierDetection": {"consecutive5xxErrors": 5000}}"#.into(), "outlierDetection.consecutive5xxErrors: 5000 is too large, expected 0 (off) to 1000"),
        (r#"{"denyStatus": 200}"#.into(), "denyStatus: 200 is not an error status, expected 400-599"),
        (r#"{"headerPrefix": "X-Mesh-"}"#.into(), "headerPrefix: \"X-Mesh-\" is not a lowercase header name prefix, expected letters, digits and '-' (e.g. \"x-hybridmesh\")"),
        (r#"{"domainSuffix": "cluster..local"}"#.into(), "domainSuffix: \"cluster..local\" is not a DNS name, expected e.g. \"cluster.local\""),
        (r#"{"trustDomains": ["spiffe://cluster.local"]}"#.into(), "trustDomains[0]: \"spiffe://cluster.local\" is not a trust domain, expected a DNS name such as \"cluster.local\""),
        (r#"{"metricsFlushInterval": "5m"}"#.into(), "metricsFlushInterval: \"5m\" is too long, expected at most 60s (0s flushes on every request)"),
        (r#"{"maxHops": 100}"#.into(), "maxHops: 100 is out of range, expected 2-32"),
        (
            format!(
                r#"{{"clusters": [{}]}}"#,
                (0..65).map(|i| format!(r#"{{"name": "c{i}"}}"#)).collect::<Vec<_>>().join(", ")
            ),
            "clusters: 65 clusters, at most 64 are supported",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (json, expected) in &cases {
        let got = errors(json);
        if got.first().map(String::as_str) != Some(*expected) {
            failures.push(format!(
                "config: {json}\n  expected: {expected}\n  got:      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let json = with_clusters(
        r#""denyStatus": 99, "routes": [
            {"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 10}}]},
            {"hosts": ["bad host"], "policy": "none"}
        ]"#,
    );
    assert_eq!(
        errors(&json),
        vec![
            "denyStatus: 99 is not an error status, expected 400-599",
            "routes[0].distribute[0].to: weights sum to 10, expected 100",
            "routes[1].hosts[0]: \"bad host\" is not a host pattern, expected an exact name, \"*.<suffix>\" or \"*\" (e.g. \"*.default.svc.cluster.local\")",
        ]
    );
}

#[test]
fn empty_input_is_the_empty_config() {
    let cfg = parse_json(b"").unwrap();
    assert!(cfg.routes.is_empty());
    let cfg = parse_json(b"  {}  ").unwrap();
    assert_eq!(cfg.headers.target_cluster, "x-hybridmesh-target-cluster");
    assert_eq!(cfg.deny_status, 403);
}

#[test]
fn durations_follow_istio() {
    use hybridmesh_config::parse_duration_ms;
    assert_eq!(parse_duration_ms("1m"), Some(60_000));
    assert_eq!(parse_duration_ms("1.5s"), Some(1_500));
    assert_eq!(parse_duration_ms("500ms"), Some(500));
    assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
    assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
    assert_eq!(parse_duration_ms("0s"), Some(0));
    for bad in ["", "1", "s", "1x", "-1s", "1.2.3s", "ms"] {
        assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
    }
}
