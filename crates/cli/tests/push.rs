//! `hybridmesh package --push` against a real private registry: the CNCF
//! registry (distribution v3, built by `istio-lab/build.sh`) on loopback,
//! with TLS from a private CA and htpasswd basic auth, as an on-prem
//! registry is run. What a user sees: the url and sha256 to pin, and, when
//! it goes wrong, which of credentials, CA or address is the cause.
//!
//! Needs the lab's binaries (`istio-lab/build.sh`; `scripts/test` builds
//! them first) and the filter's `.wasm` (`scripts/build-wasm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::root;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use hybridmesh_ops::deploy::image;

fn filter_wasm() -> PathBuf {
    let path = std::env::var_os("HYBRIDMESH_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/wasm/hybridmesh_filter.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/build-wasm`",
        path.display()
    );
    path
}

fn lab_bin(name: &str) -> PathBuf {
    let p = root().join("target/istio-lab/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: istio-lab/build.sh builds the CNCF registry and labctl (scripts/test does)",
        p.display()
    );
    p
}

/// A registry on 127.0.0.1 with TLS (its own CA) and one htpasswd user.
struct Registry {
    dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let st = Process::new(root().join("istio-lab/certs.sh"))
            .args(["registry", d.to_str().unwrap(), "127.0.0.1"])
            .status()
            .unwrap();
        assert!(st.success(), "certs.sh registry failed");
        let line = Process::new(lab_bin("labctl"))
            .args(["htpasswd", "ci", "s3cret-pass"])
            .output()
            .unwrap();
        assert!(line.status.success());
        std::fs::write(d.join("htpasswd"), &line.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {dir}/data}}\nhttp:\n  addr: {addr}\n  tls: {{certificate: {dir}/cert.pem, key: {dir}/key.pem}}\nauth:\n  htpasswd: {{realm: \"https://registry.example/\", path: {dir}/htpasswd}}\n",
                dir = d.display()
            ),
        )
        .unwrap();
        let child = Process::new(lab_bin("registry"))
            .arg("serve")
            .arg(d.join("config.yml"))
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not listen on {addr}: {}",
                std::fs::read_to_string(d.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { dir, addr, child }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// A Docker config as `docker login` writes it.
    fn docker_config(&self, password: &str) -> PathBuf {
        use base64::Engine as _;
        let d = self.dir.path().join(format!("docker-{password}"));
        std::fs::create_dir_all(&d).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("ci:{password}"));
        std::fs::write(
            d.join("config.json"),
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
                self.addr
            ),
        )
        .unwrap();
        d
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run printed, for assertion messages.
struct Run(std::process::Output);

impl Run {
    fn code(&self) -> Option<i32> {
        self.0.status.code()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (out, err) = (self.stdout(), self.stderr());
        write!(
            f,
            "\nexit code: {:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            self.code()
        )
    }
}

fn package(args: &[&str], stdin: Option<&str>, docker_config: Option<&Path>) -> Run {
    let mut c = Command::cargo_bin("hybridmesh").unwrap();
    c.arg("package")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SSL_CERT_FILE")
        .timeout(Duration::from_secs(120));
    match docker_config {
        Some(d) => c.env("DOCKER_CONFIG", d),
        None => c.env("DOCKER_CONFIG", "/nonexistent"),
    };
    if let Some(input) = stdin {
        c.write_stdin(input.to_string());
    }
    Run(c.output().unwrap())
}

/// A push that fails (exit 2) and says why.
fn refused(args: &[&str], docker_config: Option<&Path>, why: &str) {
    let r = package(args, None, docker_config);
    assert_eq!(r.code(), Some(2), "{r}");
    assert!(r.stderr().contains(why), "not {why:?}: {r}");
}

#[test]
fn push_puts_the_image_in_a_private_registry_at_the_digest_render_pins() {
    let reg = Registry::start();
    let wasm = filter_wasm();
    let module = std::fs::read(&wasm).unwrap();
    let expected = image::build(&module, image::Variant::Compat, "0.1.0")
        .unwrap()
        .manifest_digest;
    let url = format!("oci://{}/hybridmesh/hybridmesh-filter:0.1.0", reg.addr);
    let w = wasm.to_str().unwrap();
    let ca = reg.ca();

    // A password on standard input, the registry's CA named.
    let r = package(
        &[
            "--wasm",
            w,
            "--push",
            &url,
            "--registry-ca",
            &ca,
            "--username",
            "ci",
            "--password-stdin",
        ],
        Some("s3cret-pass\n"),
        None,
    );
    assert_eq!(r.code(), Some(0), "{r}");
    assert!(
        r.stdout().contains(&format!("ok pushed {url} (2 blob(s)")),
        "{r}"
    );
    assert!(r.stdout().contains(&format!("    url: {url}")), "{r}");
    assert!(
        r.stdout().contains(&format!("    sha256: {expected}")),
        "{r}"
    );

    // Again, with what `docker login` stored, as JSON: the blobs are there already.
    let r = package(
        &[
            "--wasm",
            w,
            "--push",
            &url,
            "--registry-ca",
            &ca,
            "--output",
            "json",
        ],
        None,
        Some(&reg.docker_config("s3cret-pass")),
    );
    assert_eq!(r.code(), Some(0), "{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v["pushed"]["url"], url.as_str(), "{r}");
    assert_eq!(v["pushed"]["sha256"], expected.as_str(), "{r}");
    assert_eq!(v["pushed"]["blobs_sent"], 0, "{r}");
    assert_eq!(v["pushed"]["blobs_present"], 2, "{r}");
    assert_eq!(v["sha256_for_oci_url"], expected.as_str(), "{r}");

    // The registry serves it: the manifest by tag, at that digest.
    let served = Process::new("curl")
        .args(["-s", "-f", "--cacert", &ca, "-u", "ci:s3cret-pass", "-I"])
        .arg("-H")
        .arg(format!("Accept: {}", image::OCI_MANIFEST))
        .arg(format!(
            "https://{}/v2/hybridmesh/hybridmesh-filter/manifests/0.1.0",
            reg.addr
        ))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&served.stdout).to_lowercase();
    assert!(
        headers.contains(&format!("docker-content-digest: sha256:{expected}")),
        "{headers}"
    );
}

#[test]
fn push_says_which_of_credentials_ca_and_address_is_wrong() {
    let reg = Registry::start();
    let wasm = filter_wasm();
    let w = wasm.to_str().unwrap();
    let url = format!("{}/hybridmesh/hybridmesh-filter:0.1.0", reg.addr);
    let ca = reg.ca();

    let refused_credentials = "the registry refused the credentials";
    let wrong = reg.docker_config("not-the-password");
    refused(
        &["--wasm", w, "--push", &url, "--registry-ca", &ca],
        Some(&wrong),
        refused_credentials,
    );
    refused(
        &["--wasm", w, "--push", &url, "--registry-ca", &ca],
        None,
        refused_credentials,
    );
    let right = reg.docker_config("s3cret-pass");
    refused(
        &["--wasm", w, "--push", &url],
        Some(&right),
        "not signed by a CA this machine trusts",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("127.0.0.1:{port}/hybridmesh/hybridmesh-filter:0.1.0");
    refused(
        &["--wasm", w, "--push", &nobody, "--registry-ca", &ca],
        None,
        &format!("nothing answered at 127.0.0.1:{port}"),
    );
    refused(
        &["--wasm", w, "--push", "hybridmesh-filter:0.1.0"],
        None,
        "name the registry",
    );
}
