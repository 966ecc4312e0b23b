//! `hybridmesh trace` on access logs captured from the real-Envoy replica
//! (tests/fixtures/replica-access.log: Envoy's own log lines, client-side
//! access lines with the hop record, server-side lines without one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use assert_cmd::Command;
use hybridmesh_ops::trace::{parse, path, svg, Matrix};

fn fixture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replica-access.log"),
    )
    .unwrap()
}

#[test]
fn the_replicas_access_log_is_read_line_by_line() {
    let p = parse(&fixture());
    assert_eq!(p.hops.len(), 13);
    assert_eq!(p.without_hop, 2, "server-side lines carry no hop record");
    assert_eq!(p.not_json, 5, "Envoy's own log lines");
    assert!(p.malformed.is_empty(), "{:?}", p.malformed);
    let m = Matrix::of(p.hops.iter());
    assert_eq!(m.count("anthos", "anthos"), 4);
    assert_eq!(m.count("anthos", "gke"), 4);
    assert_eq!(m.count("gke", "anthos"), 4);
    assert_eq!(m.count("anthos", "none"), 1);
    assert_eq!(m.cross_network, 8);
    assert_eq!(
        m.networks.get("gke").map(String::as_str),
        Some("kuchima-demo-vpc01")
    );
    // Every cross-network hop names the gateway it went through.
    for h in p.hops.iter().filter(|h| h.cross_network) {
        assert!(
            h.gateway.as_deref().is_some_and(|g| g.ends_with(":15443")),
            "{h:?}"
        );
    }
    let one = &p.hops[0];
    assert_eq!(path(&p.hops, &one.request_id).len(), 1);
    let picture = svg(&m);
    assert!(
        picture.contains("anthos → gke: 44.4% (4) cross-network"),
        "{picture}"
    );
    assert!(picture.contains("1 request(s) served by nobody"));
}

#[test]
fn the_command_draws_the_mesh_and_answers_by_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = fixture();
    text.push_str("{\"hop\": \"not json\"}\n");
    std::fs::write(&log, text).unwrap();
    let out_svg = dir.path().join("mesh.svg");
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .args([
            "trace",
            log.to_str().unwrap(),
            "--svg",
            out_svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stdout.contains("13 requests, 8 crossed networks (61.5%)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(":21: skipped: the hop field is not a hop record"),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 line(s) skipped (see stderr)"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&out_svg)
        .unwrap()
        .starts_with("<svg"));

    let first = parse(&fixture()).hops.remove(0);
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .args([
            "trace",
            log.to_str().unwrap(),
            "--request-id",
            &first.request_id,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("1. {} -> ", first.source_cluster)),
        "{stdout}"
    );
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .args([
            "trace",
            log.to_str().unwrap(),
            "--request-id",
            "no-such-request",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .args([
            "trace",
            log.to_str().unwrap(),
            "--cross-network",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 8);
    assert_eq!(v["cross_network"], 8);
}

#[test]
fn watch_follows_a_growing_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            let lines: Vec<&str> = fixture_lines();
            std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        })
    };
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .args([
            "trace",
            log.to_str().unwrap(),
            "--watch",
            "--watch-for",
            "2s",
        ])
        .output()
        .unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 13, "{stdout}");
}

fn fixture_lines() -> Vec<&'static str> {
    let text: &'static str = Box::leak(fixture().into_boxed_str());
    text.lines().collect()
}

/// Six clusters on three networks, every cluster sending to every other
/// (30 flows, 24 of them cross-network): the picture's geometry.
fn six_clusters() -> Matrix {
    let clusters = [
        ("gke-tokyo", "vpc-asia"),
        ("gke-osaka", "vpc-asia"),
        ("anthos-dc1", "onprem"),
        ("anthos-dc2", "onprem"),
        ("eks-us", "aws-us"),
        ("eks-eu", "aws-us"),
    ];
    let mut m = Matrix::default();
    for (i, (from, from_net)) in clusters.iter().enumerate() {
        for (j, (to, to_net)) in clusters.iter().enumerate() {
            let cross = from_net != to_net;
            let hop = hybridmesh_ops::trace::Hop {
                request_id: format!("r-{i}-{j}"),
                service: "echo-svc.default.svc.cluster.local".into(),
                source_cluster: from.to_string(),
                source_network: from_net.to_string(),
                target_cluster: Some(to.to_string()),
                served_by: Some(to.to_string()),
                served_network: Some(to_net.to_string()),
                gateway: cross.then(|| format!("10.{j}.0.6:15443")),
                decision: "weighted".into(),
                reason: String::new(),
                chain: from.to_string(),
                cross_network: cross,
                looped: false,
                rule: Some(0),
                status: 200,
                response_flags: 0,
                latency_ms: 3,
            };
            for _ in 0..(1 + (i * 7 + j * 3) % 11) {
                m.add(&hop);
            }
        }
    }
    m
}

fn assert_readable(m: &Matrix) {
    let pic = hybridmesh_ops::trace::layout(m);
    let boxes: Vec<(&String, &hybridmesh_ops::trace::Rect)> = pic.clusters.iter().collect();
    // No arrow passes through a cluster box (or its gateway, which is inside it).
    for f in &pic.flows {
        assert!(f.points.len() >= 3, "{f:?}");
        for seg in f.points.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            assert!(a.0 == b.0 || a.1 == b.1, "segments are straight: {f:?}");
            for (name, r) in &boxes {
                assert!(
                    !r.crossed_by(a, b),
                    "flow {} -> {} passes through {name}: {a:?}-{b:?}",
                    f.from,
                    f.to
                );
            }
        }
        // It starts on its source's border and ends on its destination's.
        let (s, e) = (f.points[0], f.points[f.points.len() - 1]);
        let src = pic.clusters[&f.from];
        let dst = pic.clusters[&f.to];
        assert!((s.0 - src.x).abs() < 0.01 || (s.0 - (src.x + src.w)).abs() < 0.01);
        assert!(s.1 > src.y && s.1 < src.y + src.h);
        assert!((e.0 - dst.x).abs() < 0.01 || (e.0 - (dst.x + dst.w)).abs() < 0.01);
        assert!(e.1 > dst.y && e.1 < dst.y + dst.h);
        // Cross-network arrows end at the destination's gateway.
        if f.cross_network {
            let g = pic.gateways[&f.to];
            assert!(e.1 >= g.y && e.1 <= g.y + g.h, "{f:?} misses {g:?}");
        }
    }
    // No two arrows share a segment.
    for (i, f) in pic.flows.iter().enumerate() {
        for g in &pic.flows[i + 1..] {
            for s in f.points.windows(2) {
                for t in g.points.windows(2) {
                    let same_line = (s[0].0 == s[1].0 && t[0].0 == t[1].0 && s[0].0 == t[0].0)
                        || (s[0].1 == s[1].1 && t[0].1 == t[1].1 && s[0].1 == t[0].1);
                    if same_line {
                        let (a0, a1, b0, b1) = if s[0].0 == s[1].0 {
                            (
                                s[0].1.min(s[1].1),
                                s[0].1.max(s[1].1),
                                t[0].1.min(t[1].1),
                                t[0].1.max(t[1].1),
                            )
                        } else {
                            (
                                s[0].0.min(s[1].0),
                                s[0].0.max(s[1].0),
                                t[0].0.min(t[1].0),
                                t[0].0.max(t[1].0),
                            )
                        };
                        assert!(
                            a1 <= b0 || b1 <= a0,
                            "{} -> {} and {} -> {} overlap on {s:?} / {t:?}",
                            f.from,
                            f.to,
                            g.from,
                            g.to
                        );
                    }
                }
            }
        }
    }
    // Badges overlap no box, no network title and no other badge.
    let titles: Vec<_> = pic.networks.iter().map(|(_, _, t)| *t).collect();
    for (i, f) in pic.flows.iter().enumerate() {
        let b = &f.badge.rect;
        for (name, r) in &boxes {
            assert!(!b.intersects(r), "badge {} on {name}", f.badge.text);
        }
        for t in &titles {
            assert!(
                !b.intersects(t),
                "badge {} on a network title",
                f.badge.text
            );
        }
        for g in &pic.flows[i + 1..] {
            assert!(
                !b.intersects(&g.badge.rect),
                "badges {} and {} overlap",
                f.badge.text,
                g.badge.text
            );
        }
        // The badge sits on its own arrow.
        let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
        assert!(
            f.points.windows(2).any(|s| {
                let (x0, x1) = (s[0].0.min(s[1].0), s[0].0.max(s[1].0));
                let (y0, y1) = (s[0].1.min(s[1].1), s[0].1.max(s[1].1));
                cx >= x0 - 0.01 && cx <= x1 + 0.01 && cy >= y0 - 0.01 && cy <= y1 + 0.01
            }),
            "badge {} is not on its arrow",
            f.badge.text
        );
    }
    // Boxes do not overlap each other; everything is inside the picture,
    // the legend below the networks.
    for (i, (a, r)) in boxes.iter().enumerate() {
        for (b, s) in &boxes[i + 1..] {
            assert!(!r.intersects(s), "{a} and {b} overlap");
        }
        assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.w <= pic.width && r.y + r.h <= pic.height);
    }
    for (_, n, _) in &pic.networks {
        assert!(n.y + n.h <= pic.legend.y);
    }
    assert!(pic.legend.y + pic.legend.h <= pic.height);
}

#[test]
fn the_picture_of_six_clusters_on_three_networks_is_readable() {
    let m = six_clusters();
    assert_readable(&m);
    let pic = hybridmesh_ops::trace::layout(&m);
    assert_eq!(pic.clusters.len(), 6);
    assert_eq!(pic.networks.len(), 3);
    assert_eq!(pic.flows.len(), 30);
    assert_eq!(
        pic.gateways.len(),
        6,
        "every cluster serves cross-network traffic"
    );
    let text = svg(&m);
    // Badges are drawn over every arrow, so no arrow crosses a badge's text.
    let last_arrow = text.rfind("<polyline").unwrap();
    let first_badge = text.find(r#"<g class="badge">"#).unwrap();
    assert!(first_badge > last_arrow, "a badge is drawn under an arrow");
    assert_eq!(text.matches(r#"<g class="badge">"#).count(), 30);
    assert!(
        text.contains("⇄ east-west gateway 10.0.0.6:15443"),
        "the gateways are drawn"
    );
    assert!(
        text.contains("cross-network: through the serving cluster's east-west gateway"),
        "the legend"
    );
    assert!(
        text.contains("gke-tokyo → anthos-dc1: "),
        "the flows are listed"
    );
    if let Some(out) = std::env::var_os("HYBRIDMESH_SVG_OUT") {
        std::fs::write(out, text).unwrap();
    }
}

#[test]
fn the_picture_of_the_replica_is_readable_too() {
    let m = Matrix::of(parse(&fixture()).hops.iter());
    assert_readable(&m);
    let pic = hybridmesh_ops::trace::layout(&m);
    assert_eq!(pic.flows.len(), 2, "gke -> anthos and anthos -> gke");
    assert!(svg(&m).contains("⇄ east-west gateway "));
}

/// Client-side lines the replica's Envoys logged with the access log's
/// header fields, their `hop` null as Envoy logs it when the filter writes no
/// record (`filterState: false`; the server-side lines are logged so):
/// `trace` rebuilds each hop from the filter's headers and Envoy's fields,
/// says so, and draws the same matrix the records would.
#[test]
fn hops_are_rebuilt_from_the_filters_headers_when_there_is_no_record() {
    let log =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replica-access-headers.log");
    let p = parse(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(p.hops.len(), 10);
    assert_eq!(p.without_hop, 2, "server-side lines are not client hops");
    let m = Matrix::of(p.hops.iter());
    assert_eq!(m.count("gke", "anthos"), 2);
    assert_eq!(m.count("anthos", "gke"), 3);
    assert_eq!(m.cross_network, 5);
    for h in &p.hops {
        assert_eq!(h.decision, hybridmesh_ops::trace::UNRECORDED);
        assert_eq!(h.service, "echo-svc.default.svc.cluster.local");
        assert_eq!(h.cross_network, h.gateway.is_some(), "{h:?}");
    }
    // A request preferred anthos and was served by gke: both are kept.
    assert!(p
        .hops
        .iter()
        .any(|h| h.target_cluster.as_deref() == Some("anthos")
            && h.served_by.as_deref() == Some("gke")));
    let out = Command::cargo_bin("hybridmesh")
        .unwrap()
        .arg("trace")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stdout.contains("10 requests, 5 crossed networks (50.0%)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("10 of 10 hops rebuilt from the filter's headers"),
        "{stderr}"
    );
}

/// Client-side lines from the Istio lab (istio-lab/: Envoy configured by a
/// real istiod, the project's access log as shipped), `hop` blanked: istiod
/// names every cluster for observability with Istio's stat-prefix delimiter,
/// so `%UPSTREAM_CLUSTER%` reads `outbound|80|prefer-gke|echo-svc...;`. The
/// hand-shaped replica logged it without the `;` until the lab showed it,
/// and `trace` then rebuilt the service as `echo-svc.default.svc.cluster.local;`.
#[test]
fn hops_rebuilt_from_istiod_configured_proxies_name_the_service() {
    let log =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-lab-access-headers.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("echo-svc.default.svc.cluster.local;\""),
        "the fixture is istiod's form"
    );
    let p = parse(&text);
    assert_eq!(p.hops.len(), 6);
    for h in &p.hops {
        assert_eq!(h.service, "echo-svc.default.svc.cluster.local", "{h:?}");
        assert_eq!(h.decision, hybridmesh_ops::trace::UNRECORDED);
    }
    let m = Matrix::of(p.hops.iter());
    assert_eq!(m.count("gke", "gke"), 2);
    assert_eq!(m.count("gke", "anthos"), 1);
    assert_eq!(m.count("anthos", "anthos"), 3);
    assert_eq!(m.cross_network, 1);
}
