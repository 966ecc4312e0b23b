//! Arbitrary header sets through `Filter::on_request` / `on_response`, as the
//! proxy hands them over (lower-case names, values any bytes: repeats, bytes
//! that are not UTF-8, CR/LF, NUL, very long values), on both sides, under
//! every policy. Whatever the client sends: no reserved header it set reaches
//! the upstream except the validated hop chain, other headers pass unchanged,
//! every value the filter writes is free of CR, LF and NUL, and an untrusted
//! peer's reserved headers never reach the application.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hybridmesh_filter_core::flow::{Direction, Headers, Peer};
use hybridmesh_filter_core::{parse_json, Filter};
use hybridmesh_fuzz::{
    check_local_reply, check_logs, check_outbound, check_response, nodes, FakeHost,
};
use libfuzzer_sys::fuzz_target;

const CLUSTERS: &str = r#""clusters": [
    {"name": "gke", "network": "kuchima-demo-vpc01", "locality": "asia-northeast1"},
    {"name": "anthos", "network": "default", "locality": "tokyo-onprem"},
    {"name": "aks", "network": "azure", "locality": "japaneast"}]"#;

fn configs() -> Vec<String> {
    let od = r#""outlierDetection": {"consecutive5xxErrors": 1, "baseEjectionTime": "10s"}"#;
    [
        format!("{{{CLUSTERS}}}"),
        format!(r#"{{{CLUSTERS}, "allowDebug": true, "maxHops": 3, "routes": [{{"hosts": ["*.default.svc.cluster.local"], "policy": "clusterLocal"}}, {{"hosts": ["*"], "policy": "failover", {od}}}]}}"#),
        format!(r#"{{{CLUSTERS}, "allowDebug": true, "routes": [{{"hosts": ["*"], "policy": "weighted", "stickyHeader": "x-user", {od}, "distribute": [{{"from": "*", "to": {{"gke": 50, "anthos": 30, "aks": 20}}}}]}}]}}"#),
        format!(r#"{{{CLUSTERS}, "trustSource": "mtls", "trustDomains": ["cluster.local"], "unknownSource": "deny", "routes": [{{"hosts": ["*"], "policy": "clusterLocal"}}]}}"#),
        format!(r#"{{{CLUSTERS}, "headerPrefix": "x-mesh", "allowDebug": true, "routes": [{{"hosts": ["echo-svc.default.svc.cluster.local"], "policy": "none"}}, {{"hosts": ["*.svc.cluster.local"], "policy": "failover", "failoverPriority": ["topology.istio.io/network"]}}]}}"#),
    ]
    .into_iter()
    .collect()
}

const NAMES: &[&str] = &[
    ":authority",
    ":path",
    ":method",
    ":status",
    "x-request-id",
    "x-user",
    "host",
    "x-hybridmesh-source-cluster",
    "x-hybridmesh-source-network",
    "x-hybridmesh-source-locality",
    "x-hybridmesh-target-cluster",
    "x-hybridmesh-served-by",
    "x-hybridmesh-debug",
    "x-hybridmesh-hops",
    "x-hybridmesh-decision",
    "x-hybridmesh-denied",
    "x-hybridmesh-",
    "x-hybridmesh",
    "x-mesh-source-cluster",
    "x-mesh-hops",
    "x-mesh-served-by",
    "x-mesh-debug",
];

const VALUES: &[&[u8]] = &[
    b"gke",
    b"anthos",
    b"aks",
    b"1",
    b"echo-svc.default",
    b"echo-svc.default:80",
    b"10.0.0.1",
    b"gke,anthos",
    b"anthos,gke,aks",
    b" gke , anthos ",
    b"gke,,anthos",
    b"gke\r\nx-evil: 1",
    b"cluster=anthos;network=default;locality=tokyo-onprem",
    b"cluster=aks;network=azure",
    b"cluster=gke\n;network=x",
    b"\xff\xfe",
    b"\0",
    b"200",
    b"503",
    b"",
];

fn bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=9)? {
        0..=4 => u.choose(VALUES)?.to_vec(),
        5 => {
            // Very long: a value repeated up to 64 KiB.
            let v = u.choose(VALUES)?;
            let n = u.int_in_range(1..=65536usize)? / v.len().max(1);
            v.repeat(n.max(1))
        }
        6 => {
            // A list of cluster-ish names, long.
            let n = u.int_in_range(0..=40)?;
            let mut v = Vec::new();
            for i in 0..n {
                if i > 0 {
                    v.push(b',');
                }
                v.extend_from_slice(u.choose(&[b"gke".as_slice(), b"anthos", b"aks", b"x"])?);
            }
            v
        }
        _ => Vec::<u8>::arbitrary(u)?,
    })
}

fn header_set(u: &mut Unstructured) -> arbitrary::Result<Headers> {
    let mut h: Headers = Vec::new();
    if u.ratio(7, 8)? {
        h.push((b":authority".to_vec(), u.choose(VALUES)?.to_vec()));
    }
    for _ in 0..u.int_in_range(0..=24)? {
        let name = if u.ratio(1, 4)? {
            // Names as Envoy hands them over: lower case.
            Vec::<u8>::arbitrary(u)?.to_ascii_lowercase()
        } else {
            u.choose(NAMES)?.as_bytes().to_vec()
        };
        h.push((name, bytes(u)?));
    }
    Ok(h)
}

fn run(u: &mut Unstructured, filters: &[Filter]) -> arbitrary::Result<()> {
    let f = u.choose(filters)?;
    let req = header_set(u)?;
    let outbound = u.arbitrary::<bool>()?;
    let mut host = FakeHost {
        now_ms: u.int_in_range(0..=100_000)?,
        random: u.arbitrary()?,
        direction: Some(if outbound {
            Direction::Outbound
        } else {
            Direction::Inbound
        }),
        cluster_name: u.arbitrary()?,
        peer: Peer {
            mtls: u.arbitrary()?,
            uri_san: if u.arbitrary()? {
                Some("spiffe://cluster.local/ns/sleep/sa/sleep".into())
            } else {
                u.arbitrary()?
            },
        },
        flags: u.arbitrary()?,
        upstream_address: if u.arbitrary()? {
            Some("172.16.10.152:15443".into())
        } else {
            u.arbitrary()?
        },
        host_metadata: u.arbitrary()?,
        ..Default::default()
    };
    // Health state as another worker left it, or garbage.
    if u.arbitrary()? {
        let v: Vec<u8> = u.arbitrary()?;
        for svc in [
            "echo-svc.default.svc.cluster.local",
            "echo-svc.sleep.svc.cluster.local",
        ] {
            host.shared
                .insert(hybridmesh_filter_core::health::health_key(svc), v.clone());
        }
    }
    let out = f.on_request(&req, &mut host);
    check_logs(&out.effects);
    let names = &f.cfg.headers;
    if outbound {
        assert!(out.local_reply.is_none());
        check_outbound(
            f,
            &req,
            out.headers.as_ref().expect("outbound sets headers"),
        );
    } else {
        // Under trustSource mtls (every config here), a plaintext peer is never trusted.
        assert_eq!(
            f.cfg.trust_source,
            hybridmesh_filter_core::config::TrustSource::Mtls
        );
        let trusted_peer = host.peer.mtls;
        let seen = out.headers.as_ref().unwrap_or(&req);
        let reserved_in = req.iter().any(|(k, _)| names.is_reserved(k));
        if !trusted_peer && reserved_in {
            assert!(
                !seen.iter().any(|(k, _)| names.is_reserved(k)),
                "an untrusted peer's reserved header reached the application"
            );
        }
        if let Some(h) = &out.headers {
            let kept: Headers = req
                .iter()
                .filter(|(k, _)| !names.is_reserved(k))
                .cloned()
                .collect();
            assert_eq!(h, &kept, "only reserved headers are removed");
        }
        if let Some(reply) = &out.local_reply {
            check_local_reply(reply);
        }
    }
    // A few responses (the same stream state, as retries see it).
    for _ in 0..u.int_in_range(1..=3)? {
        let mut resp = header_set(u)?;
        if u.arbitrary()? {
            resp.insert(
                0,
                (
                    b":status".to_vec(),
                    u.choose(&[b"200".as_slice(), b"503", b"0", b"999999999999"])?
                        .to_vec(),
                ),
            );
        }
        host.now_ms += u.int_in_range(0..=20_000)?;
        let r = f.on_response(&out.state, &resp, &mut host);
        check_response(f, &out.state, &r);
        check_logs(&r.effects);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FILTERS: Vec<Filter> = configs()
            .iter()
            .flat_map(|c| {
                let cfg = parse_json(c.as_bytes()).expect("the target's configs are valid");
                nodes()
                    .into_iter()
                    .take(2)
                    .map(move |n| Filter::new(cfg.clone(), &n).expect("node with a cluster id"))
            })
            .collect();
    }
    FILTERS.with(|filters| {
        let _ = run(&mut Unstructured::new(data), filters);
    });
});
