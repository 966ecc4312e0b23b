//! Every way the filter's delivery fails, measured with traffic on the Istio
//! lab (issue #23): what 40 requests from gke's sleep pod to echo-svc get
//! while the registry is down, the pull secret is missing, the digest is
//! wrong or the image is one the agent refuses; what istio-agent's fetch
//! counter and the proxy show; and how long until the filter is back.
//! docs/src/reliability.md's delivery table is these numbers.
//!
//! The shipped plugins: the client side FAIL_OPEN, the server side
//! FAIL_CLOSE. echo-svc's two gke pods run the server side; gke's sleep pod
//! the client side.
//!
//! Needs root, Envoy (`scripts/setup-envoy`), the filter's `.wasm`
//! (`scripts/build-wasm`) and the lab's binaries (`istio-lab/build.sh`);
//! without them this test FAILS with what to run. `scripts/test` does all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridmesh_lab::delivery::Tally;
use hybridmesh_lab::{wasm_fetch_errors, Lab, LabOptions, Runs};
use hybridmesh_ops::deploy::{image, push};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

const N: usize = 40;

/// The lab's registry, to push other images to.
fn registry(lab: &Lab) -> (push::Credentials, Vec<u8>) {
    let r = lab.run_dir().join("registry");
    let cfg = std::fs::read_to_string(r.join("docker/config.json")).unwrap();
    (
        push::credentials_from_docker_config(&cfg, "127.60.0.1:5443").unwrap(),
        std::fs::read(r.join("ca.pem")).unwrap(),
    )
}

/// A single-layer artifact (the raw module as its only layer, what `oras
/// push REF plugin.wasm:application/vnd.module.wasm.content.layer.v1+wasm`
/// makes): Istio's fetcher accepts neither shape from it.
fn single_layer(wasm: &[u8]) -> image::Image {
    let mut img = image::build(wasm, image::Variant::Oci, "single").unwrap();
    let config = b"{}".to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_MANIFEST,
        "config": {"mediaType": image::WASM_CONFIG, "digest": format!("sha256:{}", image::sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": image::WASM_LAYER, "digest": format!("sha256:{}", image::sha256_hex(wasm)), "size": wasm.len()}],
    }))
    .unwrap();
    img.blobs.remove(&img.manifest_digest);
    img.manifest_digest = image::sha256_hex(&manifest);
    img.blobs.insert(img.manifest_digest.clone(), manifest);
    img
}

fn report(lines: &mut Vec<String>, what: &str, t: &Tally, extra: &str) {
    let line = format!("{what}: {}{extra}", t.summary());
    println!("{line}");
    lines.push(line);
}

/// Every one of `N` requests refused 403 (every server side is the deny-all
/// stand-in), and a gke agent's log says `why`.
fn every_request_refused(lab: &mut Lab, lines: &mut Vec<String>, what: &str, why: &str) {
    let t = lab.tally("gke", N).unwrap();
    let pod = lab.echo_pod("gke", 1);
    let fetches = lab.pod_fetches(&pod).unwrap();
    report(lines, what, &t, &format!(" (an agent: {fetches:?})"));
    assert_eq!(t.forbidden, N as u32, "{t:?}");
    let errors = wasm_fetch_errors(&pod);
    assert!(errors.iter().any(|e| e.contains(why)), "{errors:?}");
}

#[test]
fn what_traffic_gets_when_the_filter_cannot_be_delivered() {
    let root = workspace();
    let opts = LabOptions::for_checkout(&root);
    let wasm = std::fs::read(&opts.wasm)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/build-wasm)", opts.wasm.display()));
    let mut lab =
        Lab::start(&root, &opts).unwrap_or_else(|e| panic!("the Istio lab did not start: {e:#}"));
    let delivered = lab.delivery().unwrap().clone();
    let versions = lab.versions().unwrap();
    let mut lines = vec![format!(
        "Istio {} (istio.io/istio {}), Envoy {}",
        versions.istio, versions.istio_module, versions.envoy
    )];
    let echo0 = lab.echo_pod("gke", 0);

    // 0. Delivered: every request with the filter.
    let t = lab.tally("gke", N).unwrap();
    report(&mut lines, "delivered", &t, "");
    assert_eq!(t.with_filter, N as u32, "{t:?}");

    // 1. The registry down while a new pod starts (a rollout, a rescheduled
    // pod): its agent cannot fetch, so its server side is the deny-all RBAC
    // filter: the requests the other pod takes are served, the rest 403.
    lab.registry_down().unwrap();
    let took = lab.replace_echo_pod("gke", 0).unwrap();
    let runs = lab.plugins_run(&echo0).unwrap();
    assert!(
        runs.contains(&Runs::AllowAll) && runs.contains(&Runs::DenyAll),
        "the new pod's plugins (client FAIL_OPEN, server FAIL_CLOSE): {runs:?}"
    );
    let fetches = lab.pod_fetches(&echo0).unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "registry down, a new pod",
        &t,
        &format!(" (pod ready in {took:.1?}; its agent: {fetches:?})"),
    );
    assert_eq!(t.total(), N as u32);
    assert!(t.forbidden > 0 && t.with_filter > 0, "{t:?}");
    assert_eq!(t.forbidden + t.with_filter, N as u32, "{t:?}");
    let errors = wasm_fetch_errors(&echo0);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("applying deny RBAC filter")),
        "{errors:?}"
    );

    // 7. The registry back: the agent does not fetch again by itself.
    lab.registry_up().unwrap();
    let waited = Duration::from_secs(20);
    let by_itself = lab.until_module(&echo0, waited).unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "registry back",
        &t,
        &format!(" (module back by itself within {waited:?}: {by_itself:?})"),
    );
    assert_eq!(by_itself, None, "the agent fetched again without a push");
    assert!(t.forbidden > 0, "{t:?}");
    // What fixes it: a push of the plugins (any change to the WasmPlugin).
    lab.repush_plugins("gke").unwrap();
    let recovered = lab
        .until_module_everywhere("gke", Duration::from_secs(30))
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "registry back, plugins pushed again",
        &t,
        &format!(" (module back {recovered:.1?} after the push)"),
    );
    assert!(
        recovered.is_some(),
        "the module did not come back after a push"
    );
    assert_eq!(t.with_filter, N as u32, "{t:?}");

    // 2. The registry down during an upgrade to a new digest: no pod has the
    // new image, so every server side is deny-all and every client side
    // allow-all: every request is refused.
    let (creds, ca) = registry(&lab);
    let next = image::build(&wasm, image::Variant::Oci, "0.1.1").unwrap();
    let next_target = push::Target::parse(&delivered.url.replace(":0.1.0", ":0.1.1")).unwrap();
    let pushed = push::push(&next, &next_target, &creds, Some(&ca)).unwrap();
    lab.registry_down().unwrap();
    lab.apply_image(Some((&pushed.url, &pushed.sha256)))
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(&mut lines, "registry down, upgrade to a new digest", &t, "");
    assert_eq!(t.forbidden, N as u32, "{t:?}");
    lab.registry_up().unwrap();
    lab.repush_plugins("gke").unwrap();
    let recovered = lab
        .until_module_everywhere("gke", Duration::from_secs(30))
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "registry back, plugins pushed again",
        &t,
        &format!(" (module back {recovered:.1?} after the push)"),
    );
    assert!(recovered.is_some());
    lab.apply_image(None).unwrap();

    // 3. The pull secret deleted (or never created in this cluster): istiod
    // pushes the plugins again without it, and every agent of the cluster
    // refuses before it even looks in its cache ("missing image pulling
    // secret", pkg/wasm/convert.go rewriteVMConfig): every pod, not only new
    // ones, loses the filter. gke's requests then go where Istio's own
    // routing sends them: gke's pods refuse them, anthos's serve them.
    lab.set_pull_secret("gke", false).unwrap();
    let off = lab
        .until_runs(&echo0, Duration::from_secs(30), |r| {
            r.contains(&Runs::DenyAll)
        })
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "pull secret deleted (pods that have the image cached too)",
        &t,
        &format!(" (filter off {off:.1?} after the delete)"),
    );
    assert!(
        off.is_some(),
        "the filter stayed on without the pull secret"
    );
    let errors = wasm_fetch_errors(&lab.echo_pod("gke", 1));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing image pulling secret")),
        "{errors:?}"
    );
    assert_eq!(t.with_filter, 0, "{t:?}");
    assert_eq!(t.forbidden + t.without_client_side, N as u32, "{t:?}");
    lab.set_pull_secret("gke", true).unwrap();
    let recovered = lab
        .until_module_everywhere("gke", Duration::from_secs(30))
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "pull secret created again",
        &t,
        &format!(" (module back {recovered:.1?} after: istiod pushes on a Secret change)"),
    );
    assert!(recovered.is_some());
    assert_eq!(t.with_filter, N as u32, "{t:?}");

    // 4. A wrong sha256 (e.g. the .wasm's own instead of the manifest's):
    // every agent fetches, compares, refuses.
    let wrong = image::sha256_hex(&wasm);
    lab.apply_image(Some((&delivered.url, &wrong))).unwrap();
    every_request_refused(
        &mut lab,
        &mut lines,
        "wrong sha256 (the module's, not the manifest's)",
        "does not match",
    );

    // ... and with FAIL_RELOAD on both sides (reload the VM after a crash;
    // Istio 1.27+): to the agent anything but FAIL_OPEN is deny-all, so the
    // client side now refuses the outbound requests as well.
    lab.apply_plugins(Some((&delivered.url, &wrong)), Some("FAIL_RELOAD"))
        .unwrap();
    let t = lab.tally("gke", N).unwrap();
    let sleep = lab.run_dir().join("pods/gke-sleep-sleep-0");
    let runs = lab.plugins_run(&sleep).unwrap();
    report(
        &mut lines,
        "wrong sha256, both plugins FAIL_RELOAD",
        &t,
        &format!(" (the client pod's plugins: {runs:?})"),
    );
    assert_eq!(t.forbidden, N as u32, "{t:?}");
    assert_eq!(runs, vec![Runs::DenyAll, Runs::DenyAll]);
    lab.apply_image(None).unwrap();

    // 5. An image the agent refuses (a single-layer artifact).
    let bad = single_layer(&wasm);
    let bad_target = push::Target::parse(&delivered.url.replace(":0.1.0", ":single")).unwrap();
    let pushed = push::push(&bad, &bad_target, &creds, Some(&ca)).unwrap();
    lab.apply_image(Some((&pushed.url, &pushed.sha256)))
        .unwrap();
    every_request_refused(
        &mut lab,
        &mut lines,
        "an image in a shape the agent refuses",
        "number of layers must be 2 but got 1",
    );
    lab.apply_image(None).unwrap();
    let t = lab.tally("gke", N).unwrap();
    report(&mut lines, "the delivered image again", &t, "");
    assert_eq!(t.with_filter, N as u32, "{t:?}");

    // From WasmPlugin to TrafficExtension (Istio 1.30+) without a gap: the
    // TrafficExtensions first (istiod pushes them beside the translated
    // WasmPlugins: each sidecar runs four plugins, the filter twice per
    // side), then the WasmPlugins deleted.
    let mut overlap = Tally::default();
    let mut counts = Vec::new();
    lab.migrate_to_traffic_extensions("gke", |lab| {
        counts = lab.plugins_in_listeners("gke")?;
        overlap = lab.tally("gke", N)?;
        Ok(())
    })
    .unwrap();
    report(
        &mut lines,
        "TrafficExtensions applied beside the WasmPlugins",
        &overlap,
        &format!(
            " (the plugins in a gke sidecar's listeners: {:?})",
            counts[0]
        ),
    );
    assert_eq!(overlap.with_filter, N as u32, "{overlap:?}");
    assert!(counts.iter().all(|c| c.len() == 4), "{counts:?}");
    let t = lab.tally("gke", N).unwrap();
    report(
        &mut lines,
        "then the WasmPlugins deleted: TrafficExtensions only",
        &t,
        &format!(
            " (the plugins in a gke sidecar's listeners: {:?})",
            lab.plugins_in_listeners("gke").unwrap()[0]
        ),
    );
    assert_eq!(t.with_filter, N as u32, "{t:?}");

    let out = root.join("target/delivery-failures.txt");
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    println!("(also in {})", out.display());
    hybridmesh_ops::support::record(
        &root,
        &hybridmesh_ops::support::Subject::Istio(versions.istio.clone()),
        &versions.envoy,
        "delivery",
        &format!("{} situations, each as measured", lines.len() - 1),
    )
    .unwrap();
}
