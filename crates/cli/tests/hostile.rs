//! Hostile inputs, every command: each row of the table runs the real binary
//! on one input built to hurt it and asserts what a user sees (exit code and
//! message) and what it cost: wall time and peak memory (the child's maximum
//! RSS, from `wait4`). docs/src/reliability.md lists the same table; a test keeps
//! every row named there.
//!
//! Bounds are for a debug build on a loaded 2-core machine: generous against
//! the machine, tight against the failure each row is about (a quadratic
//! parser took minutes, an unbounded inflate gigabytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::root;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Text that must not appear (a raw escape sequence from the input).
    absent: Vec<(Stream, String)>,
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
        absent: Vec::new(),
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
    fn lacks(mut self, stream: Stream, text: &str) -> Case {
        self.absent.push((stream, text.to_string()));
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
    oci_layout(dir, "bomb", &layer, 1)
}

/// A proxy-wasm module in WAT: an allocator, a context callback, and `body`.
fn wat_module(imports: &str, body: &str) -> String {
    format!(
        r#"(module {imports}
 (func (export "proxy_abi_version_0_2_1"))
 (memory (export "memory") 2)
 (global $heap (mut i32) (i32.const 65536))
 (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
   global.get $heap local.set $p global.get $heap local.get $n i32.add global.set $heap local.get $p)
 (func (export "proxy_on_context_create") (param i32 i32))
 {body})"#
    )
}

/// An OCI image layout whose manifest names one 8 MiB blob as each of its
/// 10,000 layers.
fn ten_thousand_layers(dir: &Path) -> String {
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    oci_layout(dir, "layers", &big, 10_000)
}

/// An OCI image layout `name` in `dir` whose manifest names `layer` (as a
/// tar+gzip layer) `times` times.
fn oci_layout(dir: &Path, name: &str, layer: &[u8], times: usize) -> String {
    use hybridmesh_ops::deploy::image::{sha256_hex, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
    let layout = dir.join(name);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
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
        "layers": vec![blob(layer, OCI_LAYER_GZIP); times],
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
    name.into()
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
    // 20,000 routes, one a line (1.3 MB), the last one wrong: read to the
    // end, the error's line counted once (counting per value was quadratic).
    let big_json = write(
        dir,
        "big.json",
        format!(
            "{{\"routes\": [\n{}{{\"hosts\": [\"last.default.svc.cluster.local\"], \"policy\": \"weigthed\"}}]}}\n",
            (0..20_000)
                .map(|i| format!(
                    "{{\"hosts\": [\"svc-{i}.default.svc.cluster.local\"], \"policy\": \"none\"}},\n"
                ))
                .collect::<String>()
        ),
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
    let mesh_64x2000 = write(dir, "mesh-64x2000.yaml", mesh_of(64, 2000));
    let rendered_64x2000 = dir.join("rendered-64x2000").display().to_string();
    let plain_quote = write(
        dir,
        "plain-quote.yaml",
        format!("k: a:'x\n{}", "[".repeat(100_000)),
    );
    write(
        dir,
        "noapi/kustomization.yaml",
        "resources: [k-target.yaml]\n",
    );
    write(
        dir,
        "noapi/k-target.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
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
    // Files that are not what their name says (issue #25, item 4).
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
    std::fs::File::create(dir.join("sparse.wasm"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    // Modules that never return, log without end, grow without end, tick
    // every millisecond (item 6). Scenario files the limit rows run are named
    // `*.yaml`, not `*.scenario.yaml`, so the demo row's folder walk skips them.
    let configure_ok =
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)"#;
    let loop_headers = write(
        dir,
        "loop-headers.wat",
        wat_module(
            "",
            &format!(
                r#"{configure_ok} (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop $l (br $l)) i32.const 0)"#
            ),
        ),
    );
    let loop_configure = write(
        dir,
        "loop-configure.wat",
        wat_module(
            "",
            r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (loop $l (br $l)) i32.const 1)"#,
        ),
    );
    let loop_initialize = write(
        dir,
        "loop-initialize.wat",
        wat_module("", r#"(func (export "_initialize") (loop $l (br $l)))"#),
    );
    let loop_start = write(
        dir,
        "loop-start.wat",
        wat_module("", r#"(func $s (loop $l (br $l))) (start $s)"#),
    );
    let many_logs = write(
        dir,
        "logs.wat",
        wat_module(
            r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
            &format!(
                r#"{configure_ok} (data (i32.const 1000) "line")
 (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
   (loop $again (drop (call $log (i32.const 2) (i32.const 1000) (i32.const 4)))
     (local.set $i (i32.add (local.get $i) (i32.const 1)))
     (br_if $again (i32.lt_u (local.get $i) (i32.const 20000000)))) i32.const 0)"#
            ),
        ),
    );
    let grow = write(
        dir,
        "grow.wat",
        wat_module(
            "",
            &format!(
                r#"{configure_ok} (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (drop (memory.grow (i32.const 65534))) i32.const 0)"#
            ),
        ),
    );
    let tick = write(
        dir,
        "tick.wat",
        wat_module(
            r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))"#,
            r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (drop (call $tick (i32.const 1))) i32.const 1)
 (func (export "proxy_on_tick") (param i32))"#,
        ),
    );
    let one_request = write(
        dir,
        "one-request.yaml",
        scenario("  - request: {authority: echo-svc.default}\n    expect: {status: 200}\n"),
    );
    let one_day = write(dir, "one-day.yaml", scenario("  - advance: 24h\n"));
    let exports_nothing = write(dir, "exports-nothing.wat", "(module)");
    // Totals (item 5): each step within its cap, the scenario not.
    let many_requests = write(
        dir,
        "many-requests.yaml",
        scenario(
            &"  - request: {authority: echo-svc.default}\n    repeat: 100000\n".repeat(10_000),
        ),
    );
    let many_days = write(
        dir,
        "many-days.yaml",
        scenario(&"  - advance: 24h\n".repeat(5_000)),
    );
    let many_workers = write(
        dir,
        "many-workers.yaml",
        scenario("  - request: {authority: echo-svc.default}\n")
            .replace("\nfrom: gke", "\nproxy: {workers: 100000000}\nfrom: gke"),
    );
    write(
        dir,
        "self-link/scenario.yaml",
        scenario("  - request: {authority: echo-svc.default}\n"),
    );
    std::os::unix::fs::symlink(".", dir.join("self-link/again")).unwrap();
    write(
        dir,
        "two-self-links/scenario.yaml",
        scenario("  - request: {authority: echo-svc.default}\n"),
    );
    std::os::unix::fs::symlink(".", dir.join("two-self-links/a")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("two-self-links/b")).unwrap();
    // Kustomizations kustomize refuses (item 11).
    let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";
    write(
        dir,
        "outside/kustomization.yaml",
        format!("{k}resources: [../k-target.yaml]\n"),
    );
    write(
        dir,
        "absolute/kustomization.yaml",
        format!("{k}resources: [{}]\n", dir.join("k-target.yaml").display()),
    );
    write(
        dir,
        "twice/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    write(
        dir,
        "twice/kustomization.yaml",
        format!("{k}resources: [cm.yaml, cm.yaml]\n"),
    );
    write(
        dir,
        "map/kustomization.yaml",
        format!("{k}resources: {{a: cm.yaml}}\n"),
    );
    // Rules Istio refuses, given to merge (item 8), and five misspelt fields (item 10).
    let bad_rules = write(
        dir,
        "bad-rules.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo-svc, namespace: default}\nspec:\n  host: echo-svc.default.svc.cluster.local\n  exportTo: [42]\n  trafficPolicy:\n    loadBalancer: {simple: NOT_A_POLICY}\n  subsets:\n    - name: a subset\n      labels: {app: echo}\n",
    );
    let five_unknown = write(
        dir,
        "five-unknown.yaml",
        "routes:\n  - hosts: [\"*\"]\n    policy: clusterLocal\n    polcy: x\n    wieght: 1\nclustrs: {}\nidentty: {}\ndomainSufix: x\n",
    );
    let five_unknown_mesh = write(
        dir,
        "five-unknown-mesh.yaml",
        deploy_yaml()
            .replacen("services:\n", "servics: []\nclustrs: {}\nservices:\n", 1)
            .replacen(
                "    policy: failover\n",
                "    policy: failover\n    polcy: x\n    wieght: 1\n",
                1,
            )
            + "imag: x\n",
    );
    // Modules and layouts large where it costs (item 3).
    let big_module = {
        // 20,000 functions of 50 (i32.const 1, drop) pairs: 3 MB of code.
        let body = "i32.const 1 drop ".repeat(50);
        let mut text = String::from("(module\n");
        for _ in 0..20_000 {
            text.push_str(&format!("(func {body})\n"));
        }
        text.push(')');
        write(dir, "big.wasm", wat::parse_str(&text).unwrap())
    };
    let many_imports = {
        let mut text = String::from("(module\n");
        for i in 0..200_000 {
            text.push_str(&format!("(import \"env\" \"f{i}\" (func))\n"));
        }
        text.push(')');
        write(dir, "imports.wasm", wat::parse_str(&text).unwrap())
    };
    let layers = ten_thousand_layers(dir);
    // Names and fields that try to paint the terminal (item 9).
    let paint = "\x1b[2K\r\x1b[32mok\x1b[0m all good";
    let painted_manifest = write(
        dir,
        "painted.yaml",
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: \"x{}\\nok fake.yaml: all good\"\nspec:\n  host: 42\n",
            paint.replace('\x1b', "\\e").replace('\r', "\\r")
        ),
    );
    let painted_scenario = write(
        dir,
        "painted-scenario.yaml",
        scenario(&format!(
            "  - name: \"x{}\\nPASS fake\"\n    request: {{authority: echo-svc.default}}\n    expect: {{status: 418}}\n",
            paint.replace('\x1b', "\\e").replace('\r', "\\r")
        )),
    );
    let painted_log = write(
        dir,
        "painted.log",
        format!(
            "{}\n",
            hop_line(1).replace(
                "source_cluster\\\":\\\"gke",
                "source_cluster\\\":\\\"gke\\\\u001b[2K\\\\r\\\\u001b[32mok"
            )
        ),
    );
    // 2,000 distinct clusters, and one request id repeated 100,000 times (item 2).
    let many_clusters = write(
        dir,
        "many-clusters.log",
        (0..4000)
            .map(|i| {
                hop_line(i).replace(
                    "source_cluster\\\":\\\"gke",
                    &format!("source_cluster\\\":\\\"c{}", i % 2000),
                ) + "\n"
            })
            .collect::<String>(),
    );
    let one_id = {
        let line = hop_line(7) + "\n";
        let p = dir.join("one-id.log");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        for _ in 0..100_000 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        "one-id.log".to_string()
    };
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
            "validate_big_json_config_wrong_at_the_end",
            &["validate", &big_json],
            1,
            Stdout,
            "routes[20000].policy: unknown variant `weigthed`, expected one of `none`, `clusterLocal`, `weighted`, `failover` (line 20002)",
        )
        .within(5.0, 200),
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
        // The largest mesh the filter takes, 2,000 services: 113 MB of
        // DestinationRules and VirtualServices, checked a batch of services
        // at a time on all cores (was: 16.9 s and 1.8 GB).
        case(
            "validate_a_mesh_of_64_clusters_and_2000_services",
            &["validate", &mesh_64x2000],
            0,
            Stdout,
            "mesh-64x2000.yaml: mesh description",
        )
        .within(10.0, 200),
        // Rendered once, checked as it is rendered (was: 29.3 s).
        case(
            "render_a_mesh_of_64_clusters_and_2000_services",
            &["render", &mesh_64x2000, "--out", &rendered_64x2000],
            0,
            Stdout,
            "virtualservices.yaml",
        )
        .within(15.0, 600),
        // Its 68 MiB of VirtualServices are over the 64 MiB limit of a file
        // someone writes: render --check read them as such and refused its
        // own output.
        case(
            "render_check_of_a_mesh_of_64_clusters_and_2000_services",
            &["render", &mesh_64x2000, "--out", &rendered_64x2000, "--check"],
            0,
            Stdout,
            "are the render output of",
        )
        .within(15.0, 800),
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
            "huge.yaml: 65.0 MiB, larger than 64 MiB, the limit for a manifest, config, scenario or mesh description (not read: these are kilobytes)",
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
            "cycle: is a folder, not a regular file",
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
        .also(Stderr, "possible values: text, json, yaml"),
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
            "the layer inflates to more than 256 MiB, the largest module Istio's agent takes",
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
            "possible values: text, json, yaml",
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
        // Files that are not regular files, or too large (item 4): refused
        // before a byte is read, by the one reader every command uses.
        case(
            "inspect_dev_zero",
            &["inspect", "/dev/zero"],
            2,
            Stderr,
            "/dev/zero: is a character device, not a regular file (not read; give a file, or - for standard input)",
        )
        .within(5.0, 100),
        case(
            "test_with_a_wasm_that_links_to_dev_zero",
            &["test", &one_request, "--wasm", "zero.wasm"],
            2,
            Stderr,
            "zero.wasm: is a character device, not a regular file",
        )
        .within(5.0, 100),
        case(
            "validate_a_link_to_dev_zero",
            &["validate", "zero.yaml"],
            2,
            Stderr,
            "zero.yaml: is a character device, not a regular file",
        )
        .within(5.0, 100),
        case(
            "test_a_scenario_that_is_dev_zero",
            &["test", "zero.yaml"],
            1,
            Stdout,
            "zero.yaml: is a character device, not a regular file",
        )
        .within(5.0, 100),
        case(
            "package_verify_dev_zero",
            &["package", "--verify", "/dev/zero"],
            2,
            Stderr,
            "/dev/zero: is a character device, not a regular file",
        )
        .within(5.0, 100),
        case(
            "inspect_a_3_gib_sparse_module",
            &["inspect", "sparse.wasm"],
            2,
            Stderr,
            "sparse.wasm: 3072.0 MiB, larger than 256 MiB, the limit for a Wasm module (not read: Istio's agent refuses a module over 256 MiB (ISTIO_WASM_MAX_BINARY_SIZE_BYTES))",
        )
        .within(5.0, 100),
        // A module under test that never returns, logs or grows without end,
        // or ticks every millisecond (item 6): each stopped by its limit.
        case(
            "test_a_module_looping_in_on_request_headers",
            &["test", &one_request, "--wasm", &loop_headers, "--time-per-call", "1s"],
            1,
            Stdout,
            "gke.client: the module trapped in proxy_on_request_headers (worker 0): ran longer than 1s, the harness's limit per call (an endless loop?; raise it with --time-per-call)",
        )
        .within(10.0, 200),
        case(
            "test_a_module_looping_with_the_default_limit",
            &["test", &one_request, "--wasm", &loop_headers],
            1,
            Stdout,
            "ran longer than 10s, the harness's limit per call",
        )
        .within(25.0, 200),
        case(
            "test_a_module_looping_in_on_configure",
            &["test", &one_request, "--wasm", &loop_configure, "--time-per-call", "1s"],
            1,
            Stdout,
            "gke.client: plugin config rejected (the module trapped in proxy_on_configure (the configuration canary): ran longer than 1s, the harness's limit per call",
        )
        .also(Stdout, "status 500, expected 200")
        .within(15.0, 200),
        case(
            "test_a_module_looping_in_initialize",
            &["test", &one_request, "--wasm", &loop_initialize, "--time-per-call", "1s"],
            1,
            Stdout,
            "the module trapped in _initialize (the configuration canary): ran longer than 1s",
        )
        .within(15.0, 200),
        case(
            "test_a_module_looping_in_its_start_function",
            &["test", &one_request, "--wasm", &loop_start, "--time-per-call", "1s"],
            1,
            Stdout,
            "failed to instantiate the configuration canary: its start function ran longer than 1s, the harness's limit per call",
        )
        .within(10.0, 200),
        case(
            "test_a_module_logging_20_million_lines_on_one_request",
            &["test", &one_request, "--wasm", &many_logs, "--time-per-call", "60s"],
            0,
            Stdout,
            "1 passed, 0 failed",
        )
        .within(60.0, 100),
        case(
            "test_a_module_growing_its_memory_to_4_gib",
            &["test", &one_request, "--wasm", &grow],
            1,
            Stdout,
            "the module grew its linear memory to 4294967296 bytes, past the harness's memory limit of 512 MiB per VM (raise it with --memory-per-vm)",
        )
        .within(10.0, 200),
        case(
            "test_a_module_that_exports_nothing",
            &["test", &one_request, "--wasm", &exports_nothing],
            2,
            Stderr,
            "exports-nothing.wat: exports no proxy_abi_version_0_1_0, _0_2_0 or _0_2_1 marker: Envoy refuses to load it (\"Missing or unknown Proxy-Wasm ABI version\", proxy-wasm-cpp-host src/wasm.cc)",
        )
        .within(10.0, 200),
        case(
            "test_a_module_ticking_every_millisecond_through_a_day",
            &["test", &one_day, "--wasm", &tick],
            1,
            Stdout,
            "the module's ticks: 1000000 fired, the harness's limit per plugin",
        )
        .also(Stdout, "(raise it with --ticks-per-plugin)")
        .within(30.0, 200),
        // Scenario totals (item 5).
        case(
            "test_10000_steps_of_100000_requests",
            &["test", &many_requests],
            1,
            Stdout,
            "the steps send 1000000000 requests in all, past the limit of 100000 per scenario (raise it with --requests-per-scenario)",
        )
        .within(10.0, 300),
        case(
            "test_5000_advances_of_24_hours",
            &["test", &many_days],
            1,
            Stdout,
            "the steps advance the clocks by 120000.0h in all, past the limit of 24.0h per scenario (raise it with --simulated-time-per-scenario)",
        )
        .within(10.0, 200),
        case(
            "test_100_million_workers",
            &["test", &many_workers],
            1,
            Stdout,
            "proxy.workers: 100000000 worker VMs, at most 256 per sidecar",
        )
        .within(10.0, 200),
        case(
            "test_a_folder_that_links_to_itself",
            &["test", "self-link"],
            0,
            Stdout,
            "1 scenario(s), 0 failed",
        )
        .within(30.0, 400),
        case(
            "test_a_folder_with_two_links_to_itself",
            &["test", "two-self-links"],
            0,
            Stdout,
            "1 scenario(s), 0 failed",
        )
        .within(30.0, 400),
        // kustomize's rules (item 11).
        case(
            "validate_kustomization_with_a_file_outside_its_folder",
            &["validate", "outside/kustomization.yaml"],
            1,
            Stdout,
            "resources: ../k-target.yaml: a file outside the kustomization's folder: kustomize refuses it",
        ),
        case(
            "validate_kustomization_with_an_absolute_path",
            &["validate", "absolute/kustomization.yaml"],
            1,
            Stdout,
            "k-target.yaml: a file outside the kustomization's folder",
        ),
        case(
            "validate_kustomization_with_a_resource_listed_twice",
            &["validate", "twice/kustomization.yaml"],
            1,
            Stdout,
            "resources: cm.yaml: listed twice: kustomize refuses it",
        ),
        case(
            "validate_kustomization_with_resources_as_a_map",
            &["validate", "map/kustomization.yaml"],
            1,
            Stdout,
            "resources: a map: expected a list of paths",
        ),
        // Rules merged only if Istio would take them (item 8).
        case(
            "render_existing_rules_istio_refuses",
            &["render", &deploy, "--existing", &bad_rules, "--out", &out],
            1,
            Stdout,
            "existing rule problem(s), nothing merged",
        )
        .also(Stdout, "NOT_A_POLICY")
        .also(Stdout, "spec.exportTo[0]")
        .also(Stdout, "nothing rendered"),
        // Every unknown field (item 10).
        case(
            "validate_a_plugin_config_with_five_unknown_fields",
            &["validate", &five_unknown],
            1,
            Stdout,
            "routes[0]: unknown field `polcy`",
        )
        .also(Stdout, "routes[0]: unknown field `wieght`")
        .also(Stdout, "unknown field `clustrs`")
        .also(Stdout, "unknown field `identty`")
        .also(Stdout, "unknown field `domainSufix`"),
        case(
            "validate_a_mesh_description_with_five_unknown_fields",
            &["validate", &five_unknown_mesh],
            1,
            Stdout,
            "unknown field `servics`",
        )
        .also(Stdout, "unknown field `clustrs`")
        .also(Stdout, "unknown field `polcy`")
        .also(Stdout, "unknown field `wieght`")
        .also(Stdout, "unknown field `imag`"),
        // Large where it costs (item 3).
        case(
            "inspect_a_3_mb_module",
            &["inspect", &big_module],
            1,
            Stdout,
            "no proxy_abi_version_* export",
        )
        .within(5.0, 100),
        case(
            "inspect_a_module_of_200000_imports",
            &["inspect", &many_imports],
            1,
            Stdout,
            "imports (200000):",
        )
        .also(Stdout, "  env.f199999  not in Envoy")
        .within(10.0, 200),
        case(
            "package_verify_10000_layers_naming_one_8_mib_blob",
            &["package", "--verify", &layers],
            1,
            Stdout,
            "FAIL layers",
        )
        .also(Stdout, "number of layers must be 2 but got 10000")
        .within(10.0, 300),
        case(
            "package_a_tag_with_a_newline_and_a_quote",
            &["package", "--out", &out, "--tag", "a\nb\"c"],
            2,
            Stderr,
            r#"tag "a\nb\"c": not a tag (the OCI distribution spec allows [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127})"#,
        ),
        // Input that tries to paint the terminal (item 9): printed escaped.
        case(
            "validate_a_name_that_paints_a_fake_line",
            &["validate", &painted_manifest],
            1,
            Stdout,
            r"\x1b[2K\r\x1b[32mok\x1b[0m all good\nok fake.yaml: all good",
        )
        .lacks(Stdout, "\x1b")
        .lacks(Stdout, "\nok fake.yaml")
        .within(10.0, 200),
        case(
            "test_a_step_name_that_paints_a_fake_line",
            &["test", &painted_scenario],
            1,
            Stdout,
            r"FAIL x\x1b[2K\r\x1b[32mok\x1b[0m all good\nPASS fake",
        )
        .lacks(Stdout, "\x1b")
        .lacks(Stdout, "\nPASS fake")
        .within(30.0, 400),
        case(
            "test_junit_with_control_characters",
            &["test", "--output", "junit", &painted_scenario],
            1,
            Stdout,
            r#"<testcase name="x\x1b[2K&#13;\x1b[32mok\x1b[0m all good&#10;PASS fake""#,
        )
        .lacks(Stdout, "\x1b")
        .within(30.0, 400),
        case(
            "trace_a_log_field_that_paints_a_fake_line",
            &["trace", &painted_log, "--request-id", "r-1"],
            0,
            Stdout,
            r"gke\x1b[2K\r\x1b[32mok -> anthos",
        )
        .lacks(Stdout, "\x1b")
        .within(10.0, 200),
        // A log is read in bounded memory whatever it holds (item 2).
        case(
            "trace_2000_distinct_clusters",
            &["trace", &many_clusters],
            0,
            Stdout,
            "3874 of them to or from clusters past the first 64 the log names, counted as (other)",
        )
        .within(10.0, 60),
        case(
            "trace_one_request_id_100000_times",
            &["trace", &one_id, "--request-id", "r-7"],
            0,
            Stdout,
            "99000 more record(s) of this request not kept: at most 1000 are",
        )
        .within(30.0, 40),
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
            "truncated.wasm is not a valid WebAssembly module: unexpected end-of-file (at offset 0xd)",
        ),
        case(
            "inspect_output_junit_is_not_offered",
            &["inspect", &wasm, "--output", "junit"],
            2,
            Stderr,
            "possible values: text, json, yaml",
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
    let reliability = std::fs::read_to_string(root().join("docs/src/reliability.md")).unwrap();
    let mut failures = Vec::new();
    let mut table = String::new();
    for c in &cases {
        if !reliability.contains(&format!("`{}`", c.name)) {
            failures.push(format!(
                "{}: not in docs/src/reliability.md's table",
                c.name
            ));
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
        for (stream, m) in &c.absent {
            let text = match stream {
                Stream::Stdout => &r.stdout,
                Stream::Stderr => &r.stderr,
            };
            if text.contains(m.as_str()) {
                problems.push(format!("{stream:?} holds {m:?}"));
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
