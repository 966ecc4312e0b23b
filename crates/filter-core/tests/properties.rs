//! Invariants over generated inputs: weights are honoured, sticky keys are
//! stable, an ejected cluster is never chosen while another is healthy, no
//! header an application sends under the filter's prefix reaches an upstream,
//! and no input makes the parsers panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hybridmesh_filter_core::decide::{decide, mix, RoutePlan};
use hybridmesh_filter_core::flow::Direction;
use hybridmesh_filter_core::{parse_json, Filter};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["gke", "anthos", "aks", "eks"];

fn clusters_json(n: usize) -> String {
    let items: Vec<String> = NAMES[..n]
        .iter()
        .enumerate()
        .map(|(i, c)| format!(r#"{{"name": "{c}", "network": "net{i}", "locality": "region{i}"}}"#))
        .collect();
    format!(r#""clusters": [{}]"#, items.join(", "))
}

/// Integer weights for `n` clusters summing to 100.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(0u32..=100, n - 1).prop_map(move |cuts| {
        let mut cuts: Vec<u32> = cuts;
        cuts.push(0);
        cuts.push(100);
        cuts.sort_unstable();
        cuts.windows(2).map(|w| w[1] - w[0]).collect()
    })
}

fn weighted_filter(w: &[u32], sticky: bool) -> Filter {
    let to: Vec<String> = w
        .iter()
        .enumerate()
        .map(|(i, w)| format!(r#""{}": {w}"#, NAMES[i]))
        .collect();
    let sticky = if sticky {
        r#""stickyHeader": "x-user","#
    } else {
        ""
    };
    let json = format!(
        r#"{{{}, "routes": [{{"hosts": ["*"], "policy": "weighted", {sticky} "distribute": [{{"from": "*", "to": {{{}}}}}]}}]}}"#,
        clusters_json(w.len()),
        to.join(", ")
    );
    filter(&json, &node("gke", "net0", "region0"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn weights_are_honoured_within_bounds(w in (2usize..=4).prop_flat_map(weights)) {
        let f = weighted_filter(&w, false);
        let n = 20_000u64;
        let mut counts = vec![0u64; w.len()];
        for i in 0..n {
            let d = decide(&f.cfg, &f.plan, 0, 0, mix(i), false);
            let t = d.target_name(&f.plan).expect("a weighted rule always decides");
            counts[NAMES.iter().position(|c| *c == t).unwrap()] += 1;
        }
        for (i, weight) in w.iter().enumerate() {
            let share = counts[i] as f64 / n as f64 * 100.0;
            // 20,000 picks: 4 standard deviations are under 1.5 points.
            prop_assert!((share - f64::from(*weight)).abs() < 1.5, "cluster {i}: {share:.2}% for weight {weight} ({w:?})");
        }
    }

    #[test]
    fn an_ejected_cluster_is_never_chosen_while_another_is_healthy(
        w in (2usize..=4).prop_flat_map(weights),
        ejected in 0u64..16,
        pick in any::<u64>(),
    ) {
        let f = weighted_filter(&w, false);
        let n = w.len();
        let ejected = ejected & ((1 << n) - 1);
        let d = decide(&f.cfg, &f.plan, 0, ejected, pick, false);
        let t = d.target_name(&f.plan).unwrap();
        let k = NAMES.iter().position(|c| *c == t).unwrap();
        let RoutePlan::Weighted { table, .. } = &f.plan.routes[0] else { unreachable!() };
        let healthy_with_weight = table.iter().any(|(c, _)| ejected & (1 << c) == 0);
        if healthy_with_weight {
            prop_assert!(ejected & (1 << k) == 0, "chose ejected {t} (mask {ejected:b}, table {table:?})");
        }
        // The same for failover, over every cluster.
        let json = format!(r#"{{{}, "routes": [{{"hosts": ["*"], "policy": "failover"}}]}}"#, clusters_json(n));
        let fo = filter(&json, &node("gke", "net0", "region0"));
        let d = decide(&fo.cfg, &fo.plan, 0, ejected, pick, false);
        let k = NAMES.iter().position(|c| Some(*c) == d.target_name(&fo.plan)).unwrap();
        if ejected != (1 << n) - 1 {
            prop_assert!(ejected & (1 << k) == 0);
        }
    }

    #[test]
    fn sticky_keys_are_stable_across_vms(w in (2usize..=4).prop_flat_map(weights), user in "[a-z0-9-]{1,24}") {
        // Two filters stand for two worker VMs (or two sidecars).
        let a = weighted_filter(&w, true);
        let b = weighted_filter(&w, true);
        let mut host = FakeHost { direction: Some(Direction::Outbound), ..Default::default() };
        let mut req = request("svc.ns");
        req.push((b"x-user".to_vec(), user.clone().into_bytes()));
        let first = get(a.on_request(&req, &mut host).headers.as_ref().unwrap(), "x-hybridmesh-target-cluster")
            .first().map(|s| s.to_string());
        for f in [&a, &b, &a] {
            let out = f.on_request(&req, &mut host);
            let t = get(out.headers.as_ref().unwrap(), "x-hybridmesh-target-cluster").first().map(|s| s.to_string());
            prop_assert_eq!(&t, &first);
        }
    }

    #[test]
    fn no_client_sent_reserved_header_reaches_the_upstream(
        extra in proptest::collection::vec(
            (prop_oneof![
                Just("x-hybridmesh-source-cluster".to_string()),
                Just("x-hybridmesh-source-network".to_string()),
                Just("x-hybridmesh-source-locality".to_string()),
                Just("x-hybridmesh-target-cluster".to_string()),
                Just("x-hybridmesh-served-by".to_string()),
                Just("x-hybridmesh-debug".to_string()),
                Just("x-hybridmesh-hops".to_string()),
                "x-hybridmesh-[a-z]{1,8}",
                "x-[a-z]{1,8}",
            ], proptest::collection::vec(any::<u8>(), 0..40)),
            0..12,
        ),
        policy in prop_oneof![Just("none"), Just("clusterLocal"), Just("failover")],
    ) {
        let json = format!(r#"{{{CLUSTERS}, "routes": [{{"hosts": ["*"], "policy": "{policy}"}}]}}"#);
        let f = filter(&json, &gke());
        let mut host = FakeHost { direction: Some(Direction::Outbound), ..Default::default() };
        let mut req = request("echo-svc.default");
        for (k, v) in &extra {
            req.push((k.clone().into_bytes(), v.clone()));
        }
        let out = f.on_request(&req, &mut host).headers.unwrap();
        for (k, v) in &out {
            if k.starts_with(b"x-hybridmesh-") {
                let name = String::from_utf8_lossy(k);
                let ours = match name.as_ref() {
                    "x-hybridmesh-source-cluster" => v == b"gke",
                    "x-hybridmesh-source-network" => v == b"kuchima-demo-vpc01",
                    "x-hybridmesh-source-locality" => v == b"asia-northeast1/asia-northeast1-a",
                    "x-hybridmesh-target-cluster" | "x-hybridmesh-pinned-cluster" => v == b"gke" || v == b"anthos",
                    // The forwarded chain, validated: cluster names only, bounded, ours last.
                    "x-hybridmesh-hops" => {
                        let text = String::from_utf8_lossy(v);
                        let entries: Vec<&str> = text.split(',').collect();
                        entries.len() <= 8
                            && entries.last() == Some(&"gke")
                            && entries.iter().all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
                    }
                    _ => false,
                };
                prop_assert!(ours, "{name}: {:?} reached the upstream", String::from_utf8_lossy(v));
            }
        }
        for name in ["x-hybridmesh-source-cluster", "x-hybridmesh-source-network", "x-hybridmesh-source-locality"] {
            prop_assert_eq!(get(&out, name).len(), 1);
        }
        // One decision at most: a preference or a pin, once.
        prop_assert!(get(&out, "x-hybridmesh-target-cluster").len() + get(&out, "x-hybridmesh-pinned-cluster").len() <= 1);
        prop_assert_eq!(get(&out, "x-hybridmesh-hops").len(), 1);
    }

    #[test]
    fn the_config_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_json(&bytes);
    }

    #[test]
    fn json_shaped_garbage_never_panics(text in r#"\{[\[\]\{\}":,a-z0-9 *./-]{0,200}"#) {
        let _ = parse_json(text.as_bytes());
    }

    #[test]
    fn request_parsers_never_panic(authority in proptest::collection::vec(any::<u8>(), 0..80), value in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = hybridmesh_filter_core::hosts::service_from_authority(&authority, "sleep", "cluster.local");
        let _ = hybridmesh_filter_core::hosts::HostPattern::parse(&String::from_utf8_lossy(&authority));
        let _ = hybridmesh_filter_core::hop::ServedBy::parse(&value);
        let _ = hybridmesh_filter_core::proto::istio_workload_cluster(&value);
        let _ = hybridmesh_filter_core::health::HealthState::decode(&value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every value the filter writes into a header is free of CR, LF and NUL,
    /// whatever the config's localities and networks hold (found by the
    /// `config` fuzz target: a locality with CR/LF was accepted and sent).
    #[test]
    fn emitted_header_values_never_hold_cr_lf_or_nul(
        locality in "[a-z\\r\\n\\x00 \\t/-]{0,12}",
        network in "[a-z\\r\\n\\x00 \\t-]{0,8}",
        override_locality in proptest::option::of("[a-z\\r\\n\\x00 /]{1,8}"),
        from in "[a-z*\\r\\n\\x00 /]{1,8}",
    ) {
        let identity = override_locality
            .map(|l| format!(r#""identity": {{"locality": {}}},"#, serde_json::to_string(&l).unwrap()))
            .unwrap_or_default();
        let json = format!(
            r#"{{{identity} "allowDebug": true, "clusters": [{{"name": "anthos", "network": {}, "locality": {}}}, {{"name": "gke"}}],
                "routes": [{{"hosts": ["*"], "policy": "weighted", "distribute": [{{"from": {}, "to": {{"anthos": 50, "gke": 50}}}}, {{"from": "*", "to": {{"gke": 100}}}}]}}]}}"#,
            serde_json::to_string(&network).unwrap(),
            serde_json::to_string(&locality).unwrap(),
            serde_json::to_string(&from).unwrap(),
        );
        let Ok(cfg) = parse_json(json.as_bytes()) else { return Ok(()); };
        // On-prem: no node locality or network, so the cluster table's are sent.
        let node = hybridmesh_filter_core::identity::NodeFacts { cluster: Some("anthos".into()), ..Default::default() };
        let f = Filter::new(cfg, &node).unwrap();
        let mut host = FakeHost { direction: Some(Direction::Outbound), ..Default::default() };
        let mut req = request("echo-svc.default");
        req.push((b"x-hybridmesh-debug".to_vec(), b"1".to_vec()));
        let out = f.on_request(&req, &mut host);
        let resp = f.on_response(&out.state, &[(b":status".to_vec(), b"200".to_vec())], &mut host);
        let emitted = out.headers.unwrap().into_iter().filter(|(k, _)| k.starts_with(b"x-hybridmesh-"))
            .chain(resp.set_headers.into_iter().map(|(k, v)| (k.into_bytes(), v)));
        let mut n = 0;
        for (k, v) in emitted {
            n += 1;
            prop_assert!(!v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "{}: {:?}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
        }
        // source-cluster, -network, -locality, hops, target, and the debug decision.
        prop_assert_eq!(n, 6);
    }
}
