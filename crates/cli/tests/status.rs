//! `hybridmesh status` against the Istio lab's two istiods: every sidecar's
//! plugins as delivered, then a plugin config every gke sidecar rejects
//! (named with the filter's own reason), put right, and a description whose
//! digest is not the one running.
//!
//! Needs root and the lab's binaries (`istio-lab/build.sh`; `scripts/test`
//! builds them first) and the filter's `.wasm` (`scripts/build-wasm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{root, Run};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hybridmesh_lab::{Lab, LabOptions};
use serde_json::Value;

fn status(mesh: &Path, istiods: &[String], extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hybridmesh"));
    cmd.arg("status").arg("--mesh").arg(mesh);
    for url in istiods {
        cmd.arg("--istiod").arg(url);
    }
    cmd.args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
        .into()
}

/// The table row of a proxy's plugin, its cells split on runs of spaces.
fn row<'a>(r: &'a Run, proxy: &str, plugin: &str) -> Vec<&'a str> {
    r.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&proxy) && cells.get(2) == Some(&plugin))
        .unwrap_or_else(|| panic!("no row for {proxy} {plugin}{r}"))
}

/// `status` until `done` holds (istiod pushes within a second or two).
fn until(mesh: &Path, istiods: &[String], what: &str, done: impl Fn(&Run) -> bool) -> Run {
    let start = Instant::now();
    loop {
        let r = status(mesh, istiods, &[]);
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} within 60 s{r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn status_shows_what_every_sidecar_runs_and_why_a_config_was_rejected() {
    let root = root();
    let opts = LabOptions {
        traffic_extensions: false,
        ..LabOptions::for_checkout(&root)
    };
    let lab =
        Lab::start(&root, &opts).unwrap_or_else(|e| panic!("the Istio lab did not start: {e:#}"));
    // Each cluster's istiod, at the address its Service's endpoints give
    // (what a port-forward to svc/istiod reaches).
    let istiods: Vec<String> = ["gke", "anthos"]
        .iter()
        .map(|c| {
            let ip = lab
                .kubectl_in(
                    c,
                    &[
                        "get",
                        "endpointslice",
                        "-n",
                        "istio-system",
                        "istiod-lab",
                        "-o",
                        "jsonpath={.endpoints[0].addresses[0]}",
                    ],
                )
                .unwrap();
            format!("http://{}:15014", ip.trim())
        })
        .collect();
    // The seed's description as the lab delivers it: its registry, its digest.
    let delivery = lab.delivery().expect("the lab delivered the image").clone();
    let deploy = std::fs::read_to_string(root.join("examples/deploy.yaml")).unwrap();
    let line = |key: &str| {
        deploy
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        deploy
            .replace(&line("url: "), &delivery.url)
            .replace(&line("sha256: "), &delivery.sha256),
    )
    .unwrap();
    let short = &delivery.sha256[..12];

    // As delivered: both plugins synced on every sidecar, as rendered and pinned.
    let r = until(&mesh, &istiods, "every plugin synced", |r| {
        r.code == Some(0)
    });
    let plugin_rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.get(2).is_some_and(|p| p.starts_with("hybridmesh-")))
        .collect();
    // Three sidecars per cluster, each with both plugins.
    for cluster in ["gke", "anthos"] {
        for proxy in ["sleep-0.sleep", "echo-svc-0.default", "echo-svc-1.default"] {
            for plugin in ["hybridmesh-client", "hybridmesh-server"] {
                let found = plugin_rows
                    .iter()
                    .find(|c| c[0] == proxy && c[1] == cluster && c[2] == plugin)
                    .unwrap_or_else(|| panic!("no {proxy} {plugin} in {cluster}{r}"));
                assert_eq!(found[3..], [short, "as", "rendered", "SYNCED"], "{r}");
            }
        }
    }
    assert_eq!(plugin_rows.len(), 12, "{r}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("istio-eastwestgateway-0.gateway") && l.ends_with("no plugin")),
        "{r}"
    );

    // A config every gke sidecar's filter rejects (weights sum to 90).
    lab.kubectl_in(
        "gke",
        &["patch", "wasmplugin", "hybridmesh-client", "-n", "istio-system", "--type", "merge", "-p",
          r#"{"spec":{"pluginConfig":{"routes":[{"hosts":["*"],"policy":"weighted","distribute":[{"from":"*","to":{"gke":50,"anthos":40}}]}]}}}"#],
    )
    .unwrap();
    let r = until(&mesh, &istiods, "gke's sidecars to reject it", |r| {
        r.stdout.matches("REJECTED ").count() == 3
    });
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(
        row(&r, "sleep-0.sleep", "hybridmesh-client")[5],
        "REJECTED",
        "{r}"
    );
    assert!(
        r.stdout.contains(
            "REJECTED sleep-0.sleep hybridmesh-client: Unable to create Wasm plugin istio-system.hybridmesh-client"
        ),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("    [HM0101] routes[0].distribute[0].to: weights sum to 90, expected 100"),
        "{r}"
    );
    // anthos's istiod pushed nothing new: its sidecars still run the rendered config.
    let anthos_rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("anthos") && !l.ends_with("no plugin"))
        .collect();
    assert_eq!(anthos_rows.len(), 6, "{r}");
    assert!(
        anthos_rows
            .iter()
            .all(|l| l.ends_with("as rendered  SYNCED")),
        "{r}"
    );
    // As data.
    let json = status(&mesh, &istiods, &["-o", "json"]);
    let sidecars: Value = serde_json::from_str(&json.stdout).unwrap();
    let sleep = sidecars
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["proxy"] == "sleep-0.sleep" && s["cluster"] == "gke")
        .unwrap();
    let client = sleep["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hybridmesh-client")
        .unwrap();
    assert_eq!(client["state"], "rejected", "{json}");
    assert_eq!(client["problems"][0]["code"], "HM0101", "{json}");
    assert_eq!(client["sha256"], delivery.sha256.as_str(), "{json}");

    // Put right: synced again.
    lab.reapply_rendered("gke", "WasmPlugin", "hybridmesh-client")
        .unwrap();
    until(&mesh, &istiods, "the rendered config synced again", |r| {
        r.code == Some(0)
    });

    // A description pinning another digest: every plugin is flagged.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&mesh)
            .unwrap()
            .replace(&delivery.sha256, &"0".repeat(64)),
    )
    .unwrap();
    let r = status(&other, &istiods, &[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(
        row(&r, "sleep-0.sleep", "hybridmesh-server")[3..6],
        [short, "(not", "pinned)"],
        "{r}"
    );
    assert!(
        r.stdout.contains(&format!(
            "DIFFERS sleep-0.sleep hybridmesh-server: module sha256 {} is not",
            delivery.sha256
        )),
        "{r}"
    );

    // An istiod that does not answer: an error naming it, in bounded time.
    let started = Instant::now();
    let r = status(&mesh, &["http://127.0.0.1:9".to_string()], &[]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("http://127.0.0.1:9/debug/syncz: cannot connect"),
        "{r}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}
