//! `hybridmesh check` against the Istio lab's real kube-apiservers and
//! istiod-installed configuration (two clusters, `gke` and `anthos`), as an
//! operator runs it: every context of a kubeconfig, then set-ups broken one
//! at a time, each found with its code, and put right by the very command
//! the finding prints.
//!
//! Needs root and the lab's binaries (`istio-lab/build.sh`; `scripts/test`
//! builds them first) and the filter's `.wasm` (`scripts/build-wasm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{root, Run};

use std::path::{Path, PathBuf};
use std::process::Command;

use hybridmesh_lab::{Lab, LabOptions};
use serde_json::Value;

impl Run {
    fn has(&self, part: &str) -> &Self {
        assert!(self.stdout.contains(part), "stdout lacks {part:?}{self}");
        self
    }

    fn lacks(&self, part: &str) -> &Self {
        assert!(!self.stdout.contains(part), "stdout has {part:?}{self}");
        self
    }

    fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, Some(want), "{self}");
        self
    }

    /// The `fix:` line printed under the first finding with `code`.
    fn fix_of(&self, code: &str) -> String {
        let mut lines = self.stdout.lines();
        while let Some(l) = lines.next() {
            if l.contains(&format!("[{code}]")) {
                if let Some(fix) = lines.next().and_then(|f| f.trim().strip_prefix("fix: ")) {
                    return fix.to_string();
                }
            }
        }
        panic!("no fix under {code}{self}")
    }
}

/// The lab, a kubeconfig with its two clusters as contexts `gke` and
/// `anthos`, and the mesh description it runs.
struct Setup {
    _lab: Lab,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    mesh: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn check(&self, args: &[&str]) -> Run {
        self.check_with(&self.mesh, &self.kubeconfig, args)
    }

    /// `hybridmesh check` with another description or kubeconfig.
    fn check_with(&self, mesh: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
        Command::new(env!("CARGO_BIN_EXE_hybridmesh"))
            .arg("check")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--mesh")
            .arg(mesh)
            .args(args)
            .env("HYBRIDMESH_KUBECTL", &self.kubectl)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
            .into()
    }

    /// `kubectl --context C ARGS` with the test's kubeconfig.
    fn kubectl(&self, context: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(context)
            .args(args);
        let out = match stdin {
            None => cmd.output().unwrap(),
            Some(text) => {
                use std::io::Write as _;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        };
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fix as printed (`kubectl --context C ...`), run with the test's
    /// kubectl and kubeconfig: the operator's copy and paste.
    fn run_fix(&self, fix: &str) {
        let words: Vec<&str> = fix.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"kubectl"), "not a kubectl fix: {fix}");
        assert_eq!(words.get(1), Some(&"--context"), "{fix}");
        self.kubectl(words[2], &words[3..], None);
    }

    /// Deletes `kind name` in `namespace`, and gives it back as JSON to
    /// [`Setup::restore`].
    fn delete(&self, context: &str, namespace: &str, kind: &str, name: &str) -> String {
        let saved = self.save(context, &[kind, "-n", namespace, name]);
        self.kubectl(context, &["-n", namespace, "delete", kind, name], None);
        saved
    }

    /// The object as JSON, to put back later as it was.
    fn save(&self, context: &str, args: &[&str]) -> String {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let mut v: Value = serde_json::from_str(&self.kubectl(context, &all, None)).unwrap();
        let meta = v["metadata"].as_object_mut().unwrap();
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(k);
        }
        v.to_string()
    }

    fn restore(&self, context: &str, saved: &str) {
        self.kubectl(context, &["apply", "-f", "-"], Some(saved));
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// One kubeconfig with each lab cluster as a context of its own name (the
/// lab writes one file per cluster, each calling its context `lab`); with
/// `down`, also a context `down` whose API server nothing answers.
fn merged_kubeconfig(run: &Path, down: bool) -> String {
    let mut clusters = Vec::new();
    let mut users = Vec::new();
    let mut contexts = Vec::new();
    for c in ["gke", "anthos"] {
        let text = std::fs::read_to_string(run.join(c).join("kubeconfig")).unwrap();
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        let mut cluster = v["clusters"][0].clone();
        cluster["name"] = c.into();
        clusters.push(cluster);
        let mut user = v["users"][0].clone();
        user["name"] = c.into();
        users.push(user);
        contexts.push(serde_json::json!({"name": c, "context": {"cluster": c, "user": c}}));
    }
    if down {
        clusters.push(
            serde_json::json!({"name": "down", "cluster": {"server": "https://127.0.0.1:9"}}),
        );
        contexts.push(
            serde_json::json!({"name": "down", "context": {"cluster": "down", "user": "gke"}}),
        );
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": "gke",
    });
    serde_yaml_ng::to_string(&config).unwrap()
}

fn setup() -> Setup {
    let root = root();
    let opts = LabOptions::for_checkout(&root);
    let lab =
        Lab::start(&root, &opts).unwrap_or_else(|e| panic!("the Istio lab did not start: {e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, merged_kubeconfig(lab.run_dir(), false)).unwrap();
    // The seed's description, with the registry the lab pushed the image to.
    let url = lab
        .delivery()
        .expect("the lab delivered the image")
        .url
        .clone();
    let deploy = std::fs::read_to_string(root.join("examples/deploy.yaml")).unwrap();
    let published = deploy
        .lines()
        .find_map(|l| l.trim().strip_prefix("url: "))
        .unwrap()
        .to_string();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, deploy.replace(&published, &url)).unwrap();
    Setup {
        kubectl: root.join("target/istio-lab/bin/kubectl"),
        _lab: lab,
        kubeconfig,
        mesh,
        dir,
    }
}

#[test]
fn check_finds_each_broken_set_up_in_the_lab_and_its_fix_repairs_it() {
    let s = setup();

    // As installed: every context of the kubeconfig passes.
    let r = s.check(&[]);
    r.code(0)
        .has("ok context gke: cluster gke, network kuchima-demo-vpc01, Istio ")
        .has("ok context anthos: cluster anthos, network default, Istio ")
        // The lab's Istio 1.31 serves TrafficExtension: said, not failed.
        .has("    note: [HM0704] this Istio serves TrafficExtension")
        .has("2 context(s) checked, 0 with errors");

    // The pull secret deleted in gke.
    let secret = s.delete("gke", "istio-system", "secret", "hybridmesh-pull");
    let r = s.check(&["--context", "gke"]);
    r.code(1)
        .has("FAIL context gke")
        .has("    [HM0708] no Secret istio-system/hybridmesh-pull (")
        .has("      fix: kubectl --context gke -n istio-system create secret docker-registry hybridmesh-pull --docker-server=127.60.0.1:5443 ");
    // Allowed by its code, it passes and still shows.
    s.check(&["--context", "gke", "--allow", "HM0708"])
        .code(0)
        .has("    allowed: [HM0708] no Secret istio-system/hybridmesh-pull");
    // As data: the context, its cluster, the finding's code and fix.
    let r = s.check(&["--context", "gke", "-o", "json"]);
    r.code(1);
    let reports: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(reports[0]["context"], "gke", "{r}");
    assert_eq!(reports[0]["cluster"], "gke", "{r}");
    assert_eq!(reports[0]["ok"], false, "{r}");
    let finding = reports[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "HM0708")
        .unwrap_or_else(|| panic!("no HM0708{r}"));
    assert!(finding["fix"]
        .as_str()
        .unwrap()
        .contains("create secret docker-registry"));
    s.restore("gke", &secret);
    s.check(&["--context", "gke"]).code(0);

    // The pull secret without credentials for the image's registry.
    s.delete("gke", "istio-system", "secret", "hybridmesh-pull");
    s.kubectl(
        "gke",
        &[
            "-n",
            "istio-system",
            "create",
            "secret",
            "docker-registry",
            "hybridmesh-pull",
            "--docker-server=registry.example",
            "--docker-username=u",
            "--docker-password=p",
        ],
        None,
    );
    s.check(&["--context", "gke"]).code(1).has(
        "    [HM0708] Secret istio-system/hybridmesh-pull has no credentials for 127.60.0.1:5443",
    );
    s.delete("gke", "istio-system", "secret", "hybridmesh-pull");
    s.restore("gke", &secret);

    // The wrong network label on anthos: found, and its fix puts it right.
    s.kubectl(
        "anthos",
        &[
            "label",
            "namespace",
            "istio-system",
            "topology.istio.io/network=vpc-wrong",
            "--overwrite",
        ],
        None,
    );
    let r = s.check(&["--context", "anthos"]);
    r.code(1).has(
        "    [HM0705] namespace istio-system is labelled topology.istio.io/network=vpc-wrong, but ",
    );
    let fix = r.fix_of("HM0705");
    assert_eq!(
        fix,
        "kubectl --context anthos label namespace istio-system topology.istio.io/network=default --overwrite"
    );
    s.run_fix(&fix);
    s.check(&["--context", "anthos"]).code(0);

    // The remote secret for gke gone from anthos.
    let remote = s.delete(
        "anthos",
        "istio-system",
        "secret",
        "istio-remote-secret-gke",
    );
    let r = s.check(&["--context", "anthos"]);
    r.code(1)
        .has("    [HM0707] no remote secret for cluster gke ")
        .has("      fix: istioctl create-remote-secret --context <gke's context> --name gke | kubectl --context anthos apply -f -");
    s.restore("anthos", &remote);
    s.check(&["--context", "anthos"]).code(0);

    // Mesh config without the filter's stats.
    let mesh_config = s.save("gke", &["configmap", "-n", "istio-system", "istio"]);
    let mut broken: Value = serde_json::from_str(&mesh_config).unwrap();
    let text = broken["data"]["mesh"].as_str().unwrap().to_string();
    let mut parsed: Value = serde_yaml_ng::from_str(&text).unwrap();
    parsed["defaultConfig"]
        .as_object_mut()
        .unwrap()
        .remove("extraStatTags");
    broken["data"]["mesh"] = serde_yaml_ng::to_string(&parsed).unwrap().into();
    s.restore("gke", &broken.to_string());
    s.check(&["--context", "gke"])
        .code(1)
        .has("    [HM0709] mesh config's defaultConfig.extraStatTags lacks source_cluster, destination_cluster")
        .has("      fix: an install-time overlay: istioctl install -f wasmplugin/meshconfig-stats.yaml");
    s.restore("gke", &mesh_config);
    s.check(&["--context", "gke"]).code(0);

    // A description that names the on-prem cluster otherwise.
    let deploy = std::fs::read_to_string(&s.mesh).unwrap();
    let renamed = s.write(
        "renamed.yaml",
        &deploy.replace("- name: anthos", "- name: onprem"),
    );
    s.check_with(&renamed, &s.kubeconfig, &["--context", "anthos"])
        .code(1)
        .has("    [HM0703] Istio's cluster ID here is \"anthos\" (values.global.multiCluster.clusterName), which is not a cluster of");

    // A context whose API server does not answer: a finding, in bounded time.
    let down = s.write(
        "down-kubeconfig",
        &merged_kubeconfig(s._lab.run_dir(), true),
    );
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hybridmesh"))
        .args(["check", "--context", "down", "--mesh"])
        .arg(&s.mesh)
        .arg("--kubeconfig")
        .arg(&down)
        .env("HYBRIDMESH_KUBECTL", &s.kubectl)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL context down: cluster unknown"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    [HM0701] cannot read the cluster: "),
        "{stdout}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // No east-west gateway in gke (last: the lab's controller gave it its
    // address, which a re-created Service lacks).
    let gateway = s.delete("gke", "gateway", "service", "istio-eastwestgateway");
    s.check(&["--context", "gke"])
        .code(1)
        .has("    [HM0706] no Service has port 15443: no east-west gateway");
    let mut without_ip: Value = serde_json::from_str(&gateway).unwrap();
    without_ip.as_object_mut().unwrap().remove("status");
    let spec = without_ip["spec"].as_object_mut().unwrap();
    for k in ["clusterIP", "clusterIPs", "externalIPs"] {
        spec.remove(k);
    }
    s.restore("gke", &without_ip.to_string());
    s.check(&["--context", "gke"])
        .code(1)
        .lacks("no Service has port 15443")
        .has("    [HM0706] the east-west gateway Service gateway/istio-eastwestgateway has no external address yet");
}
