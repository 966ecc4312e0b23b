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
