//! Arbitrary bytes into `parse_json`, the function the `.wasm` calls at
//! configure time. A rejected config must say where and why; an accepted one
//! must be usable: for every node the filter builds (or names the missing
//! cluster id), its plan is consistent, and a request to each route's hosts
//! goes through both sides without a panic and with clean headers.
#![no_main]

use hybridmesh_filter_core::decide::RoutePlan;
use hybridmesh_filter_core::flow::{Direction, Headers, Peer};
use hybridmesh_filter_core::{parse_json, Filter};
use hybridmesh_fuzz::{
    check_local_reply, check_outbound, check_response, host_for, nodes, FakeHost,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = match parse_json(data) {
        Ok(cfg) => cfg,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without a reason");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            }
            return;
        }
    };
    // The same bytes give the same config.
    let again = parse_json(data).expect("accepted once, accepted twice");
    assert_eq!(format!("{cfg:?}"), format!("{again:?}"));
    assert!((2..=32).contains(&cfg.max_hops));
    assert!((400..=599).contains(&cfg.deny_status));

    for node in nodes() {
        let f = match Filter::new(cfg.clone(), &node) {
            Ok(f) => f,
            Err(issue) => {
                assert!(
                    node.cluster.is_none() && cfg.identity.cluster.is_none(),
                    "{issue}"
                );
                continue;
            }
        };
        for plan in &f.plan.routes {
            match plan {
                RoutePlan::Weighted { table, .. } => {
                    if !table.is_empty() {
                        assert_eq!(table.iter().map(|(_, w)| w).sum::<u32>(), 100, "{table:?}");
                    }
                    assert!(table.iter().all(|(k, _)| *k < cfg.clusters.len()));
                }
                RoutePlan::Failover { order } => {
                    assert!(order.iter().all(|k| *k < cfg.clusters.len()));
                    let mut o = order.clone();
                    o.sort_unstable();
                    o.dedup();
                    assert_eq!(o.len(), order.len(), "failover order repeats a cluster");
                }
                _ => {}
            }
        }
        let mut hosts: Vec<String> = cfg
            .routes
            .iter()
            .flat_map(|r| r.hosts.iter().map(host_for))
            .collect();
        hosts.push("echo-svc.default".to_string());
        for (i, authority) in hosts.iter().take(16).enumerate() {
            let req: Headers = vec![
                (b":method".to_vec(), b"GET".to_vec()),
                (b":path".to_vec(), b"/".to_vec()),
                (b":authority".to_vec(), authority.as_bytes().to_vec()),
                (b"x-request-id".to_vec(), format!("r-{i}").into_bytes()),
                (f.cfg.headers.debug.as_bytes().to_vec(), b"1".to_vec()),
                (b"x-user".to_vec(), b"alice".to_vec()),
            ];
            let mut host = FakeHost {
                direction: Some(Direction::Outbound),
                random: i as u64,
                ..Default::default()
            };
            let out = f.on_request(&req, &mut host);
            assert!(out.local_reply.is_none());
            check_outbound(
                &f,
                &req,
                out.headers.as_ref().expect("outbound sets headers"),
            );
            for status in [200u8, 0, 1] {
                let status = [b"200".as_slice(), b"503", b"0"][status as usize % 3];
                let resp: Headers = vec![(b":status".to_vec(), status.to_vec())];
                let r = f.on_response(&out.state, &resp, &mut host);
                check_response(&f, &out.state, &r);
            }
            // The server side, from a trusted and an untrusted peer.
            for mtls in [true, false] {
                let mut host = FakeHost {
                    direction: Some(Direction::Inbound),
                    peer: Peer {
                        mtls,
                        uri_san: Some("spiffe://cluster.local/ns/sleep/sa/sleep".into()),
                    },
                    ..Default::default()
                };
                let mut inbound = req.clone();
                inbound.extend(
                    out.headers
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| f.cfg.headers.is_reserved(k)),
                );
                let o = f.on_request(&inbound, &mut host);
                if let Some(reply) = &o.local_reply {
                    check_local_reply(reply);
                }
                let r = f.on_response(
                    &o.state,
                    &[(b":status".to_vec(), b"200".to_vec())],
                    &mut host,
                );
                check_response(&f, &o.state, &r);
            }
        }
    }
});
