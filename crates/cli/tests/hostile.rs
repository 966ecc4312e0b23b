//! Hostile inputs, every command: each row of the table runs the real binary
//! on one input built to hurt it and asserts what a user sees (exit code and
//! message) and what it cost: wall time and peak memory (the child's maximum
//! RSS, from `wait4`). RELIABILITY.md lists the same table; a test keeps
//! every row named there.
//!
//! Bounds are for a debug build on a loaded 2-core machine: generous against
//! the machine, tight against the failure each row is about (a quadratic
//! parser took minutes, an unbounded inflate gigabytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn filter_wasm() -> String {
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
    path.display().to_string()
}

/// Where a row's message must appear.
#[derive(Clone, Copy, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    /// Close our end of the child's stdout before it writes.
    close_stdout: bool,
    code: i32,
    messages: Vec<(Stream, String)>,
    seconds: f64,
    mib: u64,
}

fn case(name: &'static str, args: &[&str], code: i32, stream: Stream, message: &str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        close_stdout: false,
        code,
        messages: vec![(stream, message.to_string())],
        seconds: 10.0,
        mib: 200,
    }
}

impl Case {
    fn within(mut self, seconds: f64, mib: u64) -> Case {
        self.seconds = seconds;
        self.mib = mib;
        self
    }
    fn also(mut self, stream: Stream, message: &str) -> Case {
        self.messages.push((stream, message.to_string()));
        self
    }
    fn stdin(mut self, bytes: &[u8]) -> Case {
        self.stdin = Some(bytes.to_vec());
        self
    }
    fn closed_stdout(mut self) -> Case {
        self.close_stdout = true;
        self
    }
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    seconds: f64,
    max_rss_mib: f64,
}

/// GNU time, which measures the command's peak RSS exactly.
///
/// Our own `wait4` cannot: Linux carries the RSS high-water mark of the
/// address space a process leaves at `execve` into its `ru_maxrss`, and a
/// child of this test starts from the test's (measured: 69 MiB on every row,
/// an empty input included). `time` is a small process that forks the command,
/// so the figure is the command's own.
fn gnu_time() -> &'static str {
    let t = "/usr/bin/time";
    let ok = std::process::Command::new(t)
        .args(["-f", "%M", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{t} (GNU time) is missing: `apt-get install time` (scripts/test installs it)"
    );
    t
}

/// Runs the binary under GNU time (for its peak RSS), in its own process
/// group; the group is killed at 3x the row's time bound plus 20 s.
fn run(c: &Case, dir: &Path) -> Ran {
    use std::os::unix::process::CommandExt as _;
    let bin = assert_cmd::cargo::cargo_bin("hybridmesh");
    let rss_file = dir.join(format!("{}.maxrss", c.name));
    let mut cmd = std::process::Command::new(gnu_time());
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(bin)
        .args(&c.args)
        .current_dir(dir)
        .process_group(0)
        .env("NO_COLOR", "1")
        .env("HYBRIDMESH_WASM", filter_wasm())
        .stdin(if c.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let stdin = child.stdin.take();
    let data = c.stdin.clone();
    let writer = std::thread::spawn(move || {
        if let (Some(mut s), Some(d)) = (stdin, data) {
            let _ = s.write_all(&d);
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout_reader = if c.close_stdout {
        drop(out);
        None
    } else {
        Some(std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        }))
    };
    let mut err = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let limit = Duration::from_secs_f64(c.seconds * 3.0 + 20.0);
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if t.elapsed() > limit {
                    // SAFETY: the group is our child's, which is not yet reaped
                    // (done is false), so the id is not reused.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let status = child.wait().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    writer.join().unwrap();
    // GNU time exits with the command's code, or 128 + the signal that ended it
    // (and says so in its report).
    let report = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let code = match status.code() {
        Some(n) if n > 128 && report.contains("terminated by signal") => -(n - 128),
        Some(n) => n,
        None => -9,
    };
    let max_rss_kib: f64 = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let stdout = stdout_reader
        .map(|r| String::from_utf8_lossy(&r.join().unwrap()).into_owned())
        .unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr_reader.join().unwrap()).into_owned();
    Ran {
        code,
        stdout,
        stderr,
        seconds,
        max_rss_mib: max_rss_kib / 1024.0,
    }
}

// ---------------------------------------------------------------------------
// The inputs
// ---------------------------------------------------------------------------

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&p, bytes).unwrap();
    name.to_string()
}

fn deploy_yaml() -> String {
    std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap()
}

fn hop_line(i: usize) -> String {
    format!(
        r#"{{"start_time":"2026-11-25T13:14:18.397Z","authority":"echo-svc.default","hop":"{{\"request_id\":\"r-{i}\",\"service\":\"echo-svc.default.svc.cluster.local\",\"source_cluster\":\"gke\",\"source_network\":\"vpc\",\"target_cluster\":\"anthos\",\"served_by\":\"anthos\",\"served_network\":\"default\",\"gateway\":\"10.0.0.6:15443\",\"decision\":\"weighted\",\"reason\":\"weighted\",\"chain\":\"gke\",\"cross_network\":true,\"loop\":false,\"rule\":0,\"status\":200,\"response_flags\":0,\"latency_ms\":3}}"}}"#
    )
}

/// An OCI image layout whose one layer is a tar.gz holding a 512 MiB entry
/// of zeros (about 500 KiB compressed).
fn gzip_bomb(dir: &Path) -> String {
    use hybridmesh_ops::deploy::image::{sha256_hex, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
    let layout = dir.join("bomb");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let size: u64 = 512 << 20;
    let mut header = tar::Header::new_ustar();
    header.set_path("padding.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    let layer = gz.finish().unwrap();
    let blob = |bytes: &[u8], media: &str| {
        let hex = sha256_hex(bytes);
        std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
        serde_json::json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let config = br#"{"architecture":"wasm","config":{},"os":"wasip1","rootfs":{"diff_ids":[],"type":"layers"}}"#;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob(config, OCI_CONFIG),
        "layers": [blob(&layer, OCI_LAYER_GZIP)],
    }))
    .unwrap();
    let m = blob(&manifest, OCI_MANIFEST);
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
    "bomb".into()
}

fn scenario(steps: &str) -> String {
    format!(
        "name: hostile\nmesh: {}\nconfig: {{routes: [{{hosts: [\"*\"], policy: clusterLocal}}]}}\nfrom: gke\nsteps:\n{steps}",
        root().join("examples/mesh.yaml").display()
    )
}

fn cases(dir: &Path) -> Vec<Case> {
    use Stream::{Stderr, Stdout};
    let wasm = filter_wasm();
    let config = root()
        .join("examples/03-weighted-80-20/config.yaml")
        .display()
        .to_string();
    let deep_map = write(
        dir,
        "deep-map.yaml",
        format!("{}1{}\n", "{a: ".repeat(100_000), "}".repeat(100_000)),
    );
    let deep_seq_in_plugin = write(
        dir,
        "deep-plugin.yaml",
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: x}}\nspec:\n  pluginConfig: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    let deep_block = write(
        dir,
        "deep-block.yaml",
        format!("{}x\n", "- ".repeat(100_000)),
    );
    let deep_json = write(
        dir,
        "deep.json",
        format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)),
    );
    let laughs = write(
        dir,
        "laughs.yaml",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
    );
    let binary = write(dir, "binary.yaml", b"routes: []\n\xff\xfe\x00garbage\n");
    let many_docs = write(
        dir,
        "many-docs.yaml",
        "---\nkind: ConfigMap\n".repeat(50_000),
    );
    let huge = write(dir, "huge.yaml", vec![b'#'; 65 << 20]);
    let mesh_of = hybridmesh_ops::deploy::mesh::synthetic_description;
    let mesh_50x200 = write(dir, "mesh-50x200.yaml", mesh_of(50, 200));
    let mesh_1000 = write(dir, "mesh-1000.yaml", mesh_of(1000, 10));
    let plain_quote = write(
        dir,
        "plain-quote.yaml",
        format!("k: a:'x\n{}", "[".repeat(100_000)),
    );
    write(
        dir,
        "noapi/kustomization.yaml",
        "resources: [../k-target.yaml]\n",
    );
    write(
        dir,
        "k-target.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";
    write(
        dir,
        "cycle/a/kustomization.yaml",
        format!("{k}resources: [../b]\n"),
    );
    write(
        dir,
        "cycle/b/kustomization.yaml",
        format!("{k}resources: [../a]\n"),
    );
    write(
        dir,
        "self/kustomization.yaml",
        format!("{k}resources: [.]\n"),
    );
    write(
        dir,
        "remote/kustomization.yaml",
        format!("{k}resources:\n  - https://github.com/istio/istio//manifests/charts/base?ref=1.22.0\n  - github.com/org/repo/deploy?ref=v1\n"),
    );
    let good_mesh = deploy_yaml();
    let weights = write(
        dir,
        "weights.yaml",
        good_mesh.replace(
            "    policy: failover\n    failover:\n      - {from: tokyo-onprem, to: asia-northeast1}\n",
            "    policy: weighted\n    distribute:\n      - {from: \"*\", to: {gke: 50, anthos: 51}}\n",
        ),
    );
    let bare_time = write(
        dir,
        "bare-time.yaml",
        good_mesh.replace("baseEjectionTime: 1m", "baseEjectionTime: 60"),
    );
    let region = write(
        dir,
        "region.yaml",
        good_mesh.replace("to: asia-northeast1}", "to: europe-west1}"),
    );
    let s3 = write(
        dir,
        "s3.yaml",
        good_mesh.replace("url: oci://", "url: s3://"),
    );
    let deep_mesh = write(
        dir,
        "deep-mesh.yaml",
        format!(
            "{good_mesh}\notherHosts: {}{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    );
    let deep_rules = write(
        dir,
        "deep-rules.yaml",
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nspec: {}{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    );
    let bomb = gzip_bomb(dir);
    let not_wasm = write(dir, "not.wasm", "hello");
    let truncated = write(
        dir,
        "truncated.wasm",
        b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff",
    );
    // Logs.
    let mut mixed = String::new();
    mixed.push_str(&hop_line(1));
    mixed.push('\n');
    let mut bytes = mixed.into_bytes();
    bytes.extend_from_slice(b"{\"hop\": \"\xff\xfe\"}\n");
    bytes.extend_from_slice(hop_line(2).as_bytes());
    bytes.push(b'\n');
    let bad_byte = write(dir, "bad-byte.log", bytes);
    let text_log = write(
        dir,
        "istio-text.log",
        "[2026-11-25T13:14:18.397Z] \"GET / HTTP/1.1\" 200 - via_upstream - \"-\" 0 10 3 2 \"-\" \"curl/8.5.0\" \"5f1c\" \"echo-svc.default\" \"10.0.0.9:8080\" outbound|80||echo-svc.default.svc.cluster.local 10.0.0.2:41234 10.96.0.10:80 10.0.0.2:41232 - default\n".repeat(3),
    );
    let no_field = write(
        dir,
        "no-hop-field.log",
        "{\"start_time\":\"2026-11-25T13:14:18.397Z\",\"method\":\"GET\",\"response_code\":200}\n"
            .repeat(4),
    );
    let empty_log = write(dir, "empty.log", "");
    let long_line = write(
        dir,
        "long-line.log",
        format!("{}\n{}\n", "x".repeat(5 << 20), hop_line(1)),
    );
    let deep_line = write(
        dir,
        "deep-line.log",
        format!(
            "{}1{}\n{}\n",
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000),
            hop_line(1)
        ),
    );
    let big_log = {
        // 100 MB of hop records: memory must not follow the file's size.
        let line = hop_line(7) + "\n";
        let n = (100 << 20) / line.len();
        let p = dir.join("big.log");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        for _ in 0..n {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        "big.log".to_string()
    };
    let kubectl_log = write(
        dir,
        "kubectl.log",
        format!(
            "2026-11-25T13:14:18.397712345Z {}\n[pod/sleep-5b6/istio-proxy] {}\n2026-11-25T13:14:18.397712Z\tinfo\twasm\tenvoy log line\n",
            hop_line(1),
            hop_line(2)
        ),
    );
    // One scenario file per hostile step list.
    let steps_file =
        |name: &str, steps: &str| write(dir, &format!("{name}.scenario.yaml"), scenario(steps));
    let huge_repeat = steps_file(
        "repeat",
        "  - request: {authority: echo-svc.default}\n    repeat: 4000000000\n",
    );
    let huge_advance = steps_file("advance", "  - advance: 100000h\n");
    let nan_share = steps_file(
        "nan-share",
        "  - request: {authority: echo-svc.default}\n    repeat: 10\n    expect: {share: {gke: [.nan, .nan]}}\n",
    );
    let zero_repeat = steps_file(
        "zero-repeat",
        "  - request: {authority: echo-svc.default}\n    repeat: 0\n",
    );
    let huge_status = steps_file(
        "huge-status",
        "  - fail: {cluster: gke, status: 4294967295}\n",
    );
    let unknown_configs = write(
        dir,
        "unknown-configs.scenario.yaml",
        scenario("  - request: {authority: echo-svc.default}\n")
            .replace("\nfrom: gke", "\nconfigs: {gkee: {routes: []}}\nfrom: gke"),
    );
    let deep_scenario = write(
        dir,
        "deep.scenario.yaml",
        format!(
            "{}\n  - request: {{authority: {}1{}}}\n",
            scenario(""),
            "[".repeat(50_000),
            "]".repeat(50_000)
        ),
    );
    let stale = {
        // The seed's description pinning a digest this .wasm does not package to.
        write(
            dir,
            "stale/deploy.yaml",
            good_mesh.replace(
                good_mesh
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("sha256: "))
                    .unwrap(),
                &"0".repeat(64),
            ),
        );
        "stale/deploy.yaml".to_string()
    };
    let _ = &stale;
    let deploy = root().join("examples/deploy.yaml").display().to_string();
    let gke_overlay = root()
        .join("wasmplugin/overlays/gke/kustomization.yaml")
        .display()
        .to_string();
    let out = dir.join("out").display().to_string();
    let svg_missing = dir.join("no/such/dir/mesh.svg").display().to_string();

    vec![
        // validate
        case(
            "validate_deep_flow_mappings",
            &["validate", &deep_map],
            1,
            Stdout,
            "nests deeper than 200 levels at line 1, column 801",
        )
        .within(5.0, 100),
        case(
            "validate_deep_flow_sequence_in_a_wasmplugin",
            &["validate", &deep_seq_in_plugin],
            1,
            Stdout,
            "nests deeper than 200 levels at line 5",
        )
        .within(5.0, 100),
        case(
            "validate_deep_block_sequence",
            &["validate", &deep_block],
            1,
            Stdout,
            "nests deeper than 200 levels at line 1",
        )
        .within(5.0, 100),
        case(
            "validate_deep_json_config",
            &["validate", &deep_json],
            1,
            Stdout,
            "nests deeper than 200 levels at line 1",
        )
        .within(5.0, 100),
        case(
            "validate_billion_laughs",
            &["validate", &laughs],
            1,
            Stdout,
            "not valid YAML: repetition limit exceeded",
        )
        .within(5.0, 100),
        case(
            "validate_binary_bytes",
            &["validate", &binary],
            1,
            Stdout,
            "not UTF-8 text: byte 0xff at line 2",
        )
        .within(5.0, 100),
        case(
            "validate_50000_documents",
            &["validate", &many_docs],
            0,
            Stdout,
            "50000 other document(s) not checked",
        )
        .within(20.0, 300),
        // An ordinary large mesh (was: 25.7 s, the DestinationRules and
        // VirtualServices rendered and cross-checked once per cluster).
        case(
            "validate_a_mesh_of_50_clusters_and_200_services",
            &["validate", &mesh_50x200],
            0,
            Stdout,
            "mesh-50x200.yaml: mesh description",
        )
        .within(10.0, 400),
        // Over the filter's limit (was: 30.8 s and 1.9 GB, rendering 2,000
        // plugin configs to have each refused).
        case(
            "validate_a_mesh_of_1000_clusters",
            &["validate", &mesh_1000],
            1,
            Stdout,
            "clusters: 1000 clusters, at most 64 are supported",
        )
        .within(5.0, 100),
        // A quote inside a plain scalar (`a:'x`) was taken for an opening
        // one, so nothing after it was counted (was: 27 s in the parser).
        case(
            "validate_a_quote_in_a_plain_scalar_then_100000_brackets",
            &["validate", &plain_quote],
            1,
            Stdout,
            "nests deeper than 200 levels at line 2",
        )
        .within(5.0, 100),
        case(
            "validate_a_65_mib_file",
            &["validate", &huge],
            2,
            Stderr,
            "huge.yaml: larger than 64 MiB, not read",
        )
        .within(5.0, 200),
        case(
            "validate_a_missing_file",
            &["validate", "no-such.yaml"],
            2,
            Stderr,
            "cannot read no-such.yaml",
        )
        .within(5.0, 100),
        case(
            "validate_a_folder",
            &["validate", "cycle"],
            2,
            Stderr,
            "cannot read cycle",
        )
        .within(5.0, 100),
        case(
            "validate_empty_stdin",
            &["validate", "-"],
            1,
            Stdout,
            "FAIL (stdin): empty file",
        )
        .stdin(b""),
        case(
            "validate_kustomization_without_apiversion_and_kind",
            &["validate", "noapi/kustomization.yaml"],
            0,
            Stdout,
            "ok noapi/kustomization.yaml: Kustomization (its resources are checked)",
        )
        .also(
            Stdout,
            "k-target.yaml: ConfigMap (not a plugin config: not checked)",
        ),
        case(
            "validate_kustomization_cycle",
            &["validate", "cycle/a/kustomization.yaml"],
            1,
            Stdout,
            "resources: ../a: a cycle (",
        )
        .also(Stdout, "kustomize refuses it"),
        case(
            "validate_kustomization_including_itself",
            &["validate", "self/kustomization.yaml"],
            1,
            Stdout,
            "resources: .: a cycle (",
        ),
        case(
            "validate_kustomization_remote_resources",
            &["validate", "remote/kustomization.yaml"],
            0,
            Stdout,
            "resources: github.com/org/repo/deploy?ref=v1: remote, not fetched here (not checked)",
        ),
        case(
            "validate_mesh_description",
            &["validate", &deploy],
            0,
            Stdout,
            "ok ",
        )
        .also(Stdout, ": mesh description"),
        case(
            "validate_mesh_weights_101",
            &["validate", &weights],
            1,
            Stdout,
            "services[0].distribute[0].to: weights sum to 101, expected 100 (line ",
        ),
        case(
            "validate_mesh_bare_number_duration",
            &["validate", &bare_time],
            1,
            Stdout,
            "services[0].outlierDetection.baseEjectionTime: \"60\" is not a duration",
        ),
        case(
            "validate_mesh_failover_to_an_unknown_region",
            &["validate", &region],
            1,
            Stdout,
            "services[0].failover[0].to: no cluster of this route is in region \"europe-west1\"",
        ),
        case(
            "validate_mesh_s3_url",
            &["validate", &s3],
            1,
            Stdout,
            "image.url: url must have schema one of",
        ),
        case(
            "validate_output_junit_is_not_offered",
            &["validate", &deploy, "--output", "junit"],
            2,
            Stderr,
            "invalid value 'junit' for '--output <OUTPUT>'",
        )
        .also(Stderr, "possible values: text, json"),
        case(
            "validate_into_a_closed_pipe",
            &["validate", &deploy],
            2,
            Stderr,
            "error: cannot write to standard output: the reader closed it (broken pipe)",
        )
        .closed_stdout(),
        // render
        case(
            "render_weights_101",
            &["render", &weights, "--out", &out],
            1,
            Stdout,
            "services[0].distribute[0].to: weights sum to 101, expected 100 (line ",
        )
        .also(Stdout, "nothing rendered"),
        case(
            "render_bare_number_duration",
            &["render", &bare_time, "--out", &out],
            1,
            Stdout,
            "services[0].outlierDetection.baseEjectionTime: \"60\" is not a duration",
        ),
        case(
            "render_failover_to_an_unknown_region",
            &["render", &region],
            1,
            Stdout,
            "services[0].failover[0].to: no cluster of this route is in region \"europe-west1\"",
        ),
        case(
            "render_s3_url",
            &["render", &s3, "--out", &out],
            1,
            Stdout,
            "image.url: url must have schema one of [http, https, file, oci]",
        ),
        case(
            "render_deep_description",
            &["render", &deep_mesh],
            1,
            Stdout,
            "nests deeper than 200 levels",
        ),
        case(
            "render_a_missing_description",
            &["render", "no-such.yaml"],
            2,
            Stderr,
            "cannot read no-such.yaml",
        ),
        case(
            "render_existing_rules_nested_5000_deep",
            &["render", &deploy, "--existing", &deep_rules],
            1,
            Stdout,
            "nests deeper than 200 levels",
        ),
        case(
            "render_existing_rules_that_are_not_there",
            &["render", &deploy, "--existing", "no-such-rules.yaml"],
            2,
            Stderr,
            "cannot read no-such-rules.yaml",
        ),
        case(
            "render_for_an_istio_older_than_1_13",
            &["render", &deploy, "--istio", "1.12"],
            2,
            Stderr,
            "Istio 1.12 is older than 1.13, the oldest this tool renders for",
        ),
        case(
            "validate_the_current_render_for_istio_1_13",
            &["validate", "--istio", "1.13", &gke_overlay],
            1,
            Stdout,
            "spec: unknown field `match` (the API server drops it, kubectl apply --validate=strict rejects it)",
        ),
        case(
            "render_into_a_closed_pipe",
            &["render", &deploy],
            2,
            Stderr,
            "cannot write to standard output",
        )
        .closed_stdout(),
        // package
        case(
            "package_verify_a_gzip_bomb_layer",
            &["package", "--verify", &bomb],
            1,
            Stdout,
            "the layer inflates to more than 64 MiB",
        )
        .within(10.0, 200),
        case(
            "package_verify_a_missing_layout",
            &["package", "--verify", "no-such-layout"],
            2,
            Stderr,
            "cannot read no-such-layout",
        ),
        case(
            "package_a_file_that_is_not_wasm",
            &["package", "--wasm", &not_wasm, "--out", &out],
            2,
            Stderr,
            "not.wasm is not a WebAssembly module",
        ),
        case(
            "package_output_junit_is_not_offered",
            &["package", "--out", &out, "--output", "junit"],
            2,
            Stderr,
            "possible values: text, json",
        ),
        // release
        case(
            "release_check_on_a_stale_digest",
            &[
                "release",
                "--check",
                "--wasm",
                &wasm,
                "--mesh",
                "stale/deploy.yaml",
                "--out",
                &root().join("wasmplugin").display().to_string(),
            ],
            1,
            Stdout,
            "stale/deploy.yaml pins another image.sha256",
        )
        .also(Stdout, "release again: scripts/release"),
        case(
            "release_refuses_an_invalid_description",
            &[
                "release", "--wasm", &wasm, "--mesh", &weights, "--out", &out, "--image", &out,
            ],
            1,
            Stdout,
            "weights sum to 101",
        )
        .also(Stdout, "nothing released"),
        // trace
        case(
            "trace_one_bad_byte_skips_one_line",
            &["trace", &bad_byte],
            0,
            Stderr,
            "bad-byte.log:2: skipped: not UTF-8: byte 0xff",
        )
        .also(Stdout, "2 requests, 2 crossed networks (100.0%)"),
        case(
            "trace_istio_text_access_log",
            &["trace", &text_log],
            1,
            Stderr,
            "no hop record in 3 line(s)",
        )
        .also(
            Stderr,
            "3 in Istio's TEXT access log format, which has no hop record",
        )
        .also(Stderr, "wasmplugin/telemetry-access-log.yaml"),
        case(
            "trace_json_lines_without_a_hop_field",
            &["trace", &no_field],
            1,
            Stderr,
            "4 JSON without a `hop` field",
        ),
        case(
            "trace_an_empty_log",
            &["trace", &empty_log],
            1,
            Stderr,
            "no hop record: empty.log: no lines",
        ),
        case(
            "trace_a_5_mib_line",
            &["trace", &long_line],
            0,
            Stderr,
            "long-line.log:1: skipped: longer than 1 MiB, not read",
        )
        .also(Stdout, "1 requests")
        .within(5.0, 60),
        case(
            "trace_a_deeply_nested_line",
            &["trace", &deep_line],
            0,
            Stderr,
            "deep-line.log:1: skipped: not JSON: recursion limit exceeded",
        )
        .also(Stdout, "1 requests"),
        case(
            "trace_100_mb_in_bounded_memory",
            &["trace", &big_log],
            0,
            Stdout,
            " requests, ",
        )
        .within(60.0, 40),
        case(
            "trace_kubectl_prefixes_and_short_service_names",
            &["trace", &kubectl_log, "--service", "echo-svc"],
            0,
            Stdout,
            "2 requests, 2 crossed networks (100.0%)",
        ),
        case(
            "trace_a_service_that_matches_nothing",
            &["trace", &kubectl_log, "--service", "other-svc"],
            1,
            Stderr,
            "none of the 2 hop record(s) matches --service other-svc",
        ),
        case(
            "trace_svg_into_a_missing_folder",
            &["trace", &kubectl_log, "--svg", &svg_missing],
            2,
            Stderr,
            "cannot write ",
        )
        .also(Stderr, "mesh.svg"),
        case(
            "trace_into_a_closed_pipe",
            &["trace", &big_log],
            2,
            Stderr,
            "cannot write to standard output",
        )
        .closed_stdout()
        .within(60.0, 40),
        // test: a scenario that cannot be loaded is a failed scenario (exit 1,
        // reported on stdout and in JUnit with the others), not a usage error.
        case(
            "test_a_repeat_of_4_billion",
            &["test", &huge_repeat],
            1,
            Stdout,
            "steps[0].repeat: 4000000000 requests, at most 100000 per step",
        )
        .within(5.0, 100),
        // Expectations that could not fail (issue #25): each is refused.
        case(
            "test_a_share_of_nan",
            &["test", &nan_share],
            1,
            Stdout,
            "steps[0].expect.share.gke: [NaN, NaN] is not a share range",
        )
        .within(5.0, 100),
        case(
            "test_a_repeat_of_0",
            &["test", &zero_repeat],
            1,
            Stdout,
            "steps[0].repeat: 0 requests, expected at least 1",
        )
        .within(5.0, 100),
        case(
            "test_a_fail_status_of_4294967295",
            &["test", &huge_status],
            1,
            Stdout,
            "steps[0].fail.status: 4294967295 is not an HTTP status, expected 100 to 599",
        )
        .within(5.0, 100),
        case(
            "test_configs_for_an_unknown_cluster",
            &["test", &unknown_configs],
            1,
            Stdout,
            "configs.gkee: no cluster \"gkee\" in the mesh (clusters: anthos, gke)",
        )
        .within(5.0, 100),
        case(
            "test_an_advance_of_100000_hours",
            &["test", &huge_advance],
            1,
            Stdout,
            "steps[0].advance: 100000h is longer than 24h",
        )
        .within(5.0, 100),
        case(
            "test_a_deeply_nested_scenario",
            &["test", &deep_scenario],
            1,
            Stdout,
            "nests deeper than 200 levels",
        )
        .within(5.0, 100),
        case(
            "test_output_junit_is_offered",
            &["test", "--output", "junit", &huge_advance],
            1,
            Stdout,
            "steps[0].advance",
        ),
        // simulate
        case(
            "simulate_20_million_requests",
            &["simulate", "--config", &config, "-n", "20000000"],
            2,
            Stderr,
            "invalid value '20000000' for '--requests <REQUESTS>'",
        ),
        case(
            "simulate_an_authority_no_rule_matches",
            &[
                "simulate",
                "--config",
                &config,
                "-n",
                "50",
                "--authority",
                "other-svc.prod",
                "--wasm",
                &wasm,
            ],
            0,
            Stderr,
            "warning: no rule of ",
        )
        .also(
            Stderr,
            "matches other-svc.prod.svc.cluster.local (--authority other-svc.prod)",
        )
        .also(Stdout, "50 request(s) matched no rule of the config")
        .within(30.0, 400),
        case(
            "simulate_a_deeply_nested_config",
            &[
                "simulate", "--config", &deep_map, "-n", "10", "--wasm", &wasm,
            ],
            2,
            Stderr,
            "nests deeper than 200 levels",
        )
        .within(30.0, 400),
        case(
            "simulate_hops_into_a_missing_folder",
            &[
                "simulate",
                "--config",
                &config,
                "-n",
                "10",
                "--wasm",
                &wasm,
                "--hops",
                &svg_missing,
            ],
            2,
            Stderr,
            "cannot write ",
        )
        .within(30.0, 400),
        // inspect
        case(
            "inspect_a_file_that_is_not_wasm",
            &["inspect", &not_wasm],
            2,
            Stderr,
            "not.wasm is not a WebAssembly module",
        ),
        case(
            "inspect_a_truncated_module",
            &["inspect", &truncated],
            2,
            Stderr,
            "truncated.wasm is not a valid WebAssembly module: failed to parse WebAssembly module: unexpected end-of-file (at offset 0xd)",
        ),
        case(
            "inspect_output_junit_is_not_offered",
            &["inspect", &wasm, "--output", "junit"],
            2,
            Stderr,
            "possible values: text, json",
        ),
        // demo and bench
        case(
            "demo_examples_that_do_not_exist",
            &["demo", "--harness", "--examples", "no-such-dir"],
            2,
            Stderr,
            "no-such-dir: no such file or directory",
        ),
        case(
            "demo_a_folder_with_a_hostile_scenario",
            &["demo", "--harness", "--examples", "."],
            1,
            Stdout,
            "steps[0].repeat: 4000000000 requests",
        )
        .within(60.0, 400),
        case(
            "bench_an_unknown_variant",
            &["bench", "--variants", "nope"],
            2,
            Stderr,
            "unknown variant \"nope\"",
        ),
        case(
            "bench_out_into_a_missing_folder",
            &["bench", "--out", &svg_missing],
            2,
            Stderr,
            "cannot write ",
        )
        .also(Stderr, "no/such/dir"),
    ]
}

#[test]
fn hostile_inputs_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases(dir.path());
    assert!(cases.len() >= 40, "{} rows", cases.len());
    let reliability = std::fs::read_to_string(root().join("RELIABILITY.md")).unwrap();
    let mut failures = Vec::new();
    let mut table = String::new();
    for c in &cases {
        if !reliability.contains(&format!("`{}`", c.name)) {
            failures.push(format!("{}: not in RELIABILITY.md's table", c.name));
        }
        let r = run(c, dir.path());
        table.push_str(&format!(
            "{:<52} exit {:>3}  {:>6.2}s  {:>6.1} MiB\n",
            c.name, r.code, r.seconds, r.max_rss_mib
        ));
        let mut problems = Vec::new();
        if r.code != c.code {
            problems.push(format!("exit code {} (expected {})", r.code, c.code));
        }
        for (stream, m) in &c.messages {
            let text = match stream {
                Stream::Stdout => &r.stdout,
                Stream::Stderr => &r.stderr,
            };
            if !text.contains(m.as_str()) {
                problems.push(format!("{stream:?} lacks {m:?}"));
            }
        }
        if r.stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if r.seconds > c.seconds {
            problems.push(format!("took {:.2}s (bound {}s)", r.seconds, c.seconds));
        }
        if r.max_rss_mib.is_nan() || r.max_rss_mib > c.mib as f64 {
            problems.push(format!(
                "peak RSS {:.1} MiB (bound {} MiB)",
                r.max_rss_mib, c.mib
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                c.name,
                c.args.join(" ").chars().take(200).collect::<String>(),
                problems.join("; "),
                r.stdout.chars().take(2000).collect::<String>(),
                r.stderr.chars().take(2000).collect::<String>()
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
