//! The `hybridmesh` command line as a user sees it: the real binary, run in the
//! repository root, judged by its exit code (0 ok, 1 checks failed, 2 usage or
//! I/O error) and by what it prints.
//!
//! Modules are passed with `--wasm` (the filter this repository builds: the
//! `HYBRIDMESH_WASM` variable, else `target/wasm32-wasip1/wasm/hybridmesh_filter.wasm`),
//! except where a test is about the default. Build it first with
//! `scripts/build-wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::root;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The filter's `.wasm`.
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

fn mesh_yaml() -> String {
    root().join("examples/mesh.yaml").display().to_string()
}

/// `hybridmesh` with `args`, run in the repository root.
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("hybridmesh").expect("the hybridmesh binary is built");
    c.current_dir(root())
        .args(args)
        .env_remove("NO_COLOR")
        .timeout(Duration::from_secs(120));
    c
}

/// What one run printed and how it exited.
struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n$ hybridmesh {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Asserts the exit code.
    fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, Some(want), "unexpected exit code{self}");
        assert!(
            !self.stderr.contains("panicked"),
            "the command panicked{self}"
        );
        self
    }

    fn stdout_has(&self, part: &str) -> &Self {
        assert!(
            self.stdout.contains(part),
            "stdout does not contain {part:?}{self}"
        );
        self
    }

    /// Like `stdout_has`, with runs of white space (help text wraps to the
    /// terminal's width) read as one space.
    fn stdout_says(&self, words: &str) -> &Self {
        let flat = self.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(words), "stdout does not say {words:?}{self}");
        self
    }

    fn stdout_lacks(&self, part: &str) -> &Self {
        assert!(
            !self.stdout.contains(part),
            "stdout contains {part:?}{self}"
        );
        self
    }

    fn stderr_has(&self, part: &str) -> &Self {
        assert!(
            self.stderr.contains(part),
            "stderr does not contain {part:?}{self}"
        );
        self
    }

    fn stdout_empty(&self) -> &Self {
        assert!(self.stdout.is_empty(), "stdout is not empty{self}");
        self
    }

    fn stderr_empty(&self) -> &Self {
        assert!(self.stderr.is_empty(), "stderr is not empty{self}");
        self
    }

    /// Asserts that a stdout line is exactly `line` (leading spaces included).
    fn stdout_line(&self, line: &str) -> &Self {
        assert!(
            self.stdout.lines().any(|l| l == line),
            "no stdout line is exactly {line:?}{self}"
        );
        self
    }

    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}{self}"))
    }
}

fn run_cmd(mut c: Command, args: &[&str]) -> Run {
    let out = c.output().expect("hybridmesh runs");
    Run {
        args: args.join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_cmd(cmd(args), args)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.display().to_string()
}

/// The example folders that have a file `name`, sorted.
fn example_files(name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.join(name).is_file())
        .map(|p| p.join(name))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no examples/*/{name}");
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the repository")
        .display()
        .to_string()
}

fn yaml(path: &Path) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("readable")).expect("valid YAML")
}

/// 1-based number of the first line of `path` that contains `part`.
fn line_of(path: &Path, part: &str) -> usize {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .position(|l| l.contains(part))
        .unwrap_or_else(|| panic!("{} has no line with {part:?}", path.display()))
        + 1
}

/// A scenario with one passing and one failing step (the client's cluster
/// keeps its traffic under the per-cluster-subsets config).
fn failing_scenario(dir: &Path) -> String {
    let config = root().join("examples/05-per-cluster-subsets/config.yaml");
    write(
        dir,
        "failing.scenario.yaml",
        &format!(
            "name: a failing expectation
mesh: {}
config: {}
from: gke
steps:
  - name: gke stays in gke
    request: {{authority: echo-svc.default}}
    expect: {{status: 200, servedBy: gke}}
  - name: expects anthos but gets gke
    request: {{authority: echo-svc.default}}
    expect: {{status: 418, servedBy: anthos}}
",
            mesh_yaml(),
            config.display()
        ),
    )
}

/// A scenario of one request that must answer 200, with no config.
fn one_request_scenario(dir: &Path) -> String {
    write(
        dir,
        "one.scenario.yaml",
        &format!(
            "name: one request
mesh: {}
from: gke
steps:
  - name: one request answered 200
    request: {{authority: echo-svc.default}}
    expect: {{status: 200}}
",
            mesh_yaml()
        ),
    )
}

/// The smallest proxy-wasm guest, in WAT; `configure` and `request_headers` are
/// the bodies of those callbacks.
fn wat_guest(configure: &str, request_headers: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {request_headers}))
"#
    )
}

/// A proxy-wasm guest that configures and lets every request through: for
/// checks that happen before or beside the module, without compiling the filter.
fn passthrough_guest(dir: &Path) -> String {
    write(
        dir,
        "passthrough.wat",
        &wat_guest("i32.const 1", "i32.const 0"),
    )
}

/// A binary WebAssembly module: every import and every defined function is
/// `() -> ()`; each name in `exports` is a function doing nothing.
fn wasm_binary(imports: &[(&str, &str)], exports: &[&str]) -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn name(out: &mut Vec<u8>, s: &str) {
        leb(out, s.len());
        out.extend_from_slice(s.as_bytes());
    }
    fn section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
        out.push(id);
        leb(out, body.len());
        out.extend_from_slice(body);
    }
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(&mut out, 1, &[1, 0x60, 0, 0]);
    let mut body = Vec::new();
    leb(&mut body, imports.len());
    for (module, field) in imports {
        name(&mut body, module);
        name(&mut body, field);
        body.extend_from_slice(&[0, 0]);
    }
    section(&mut out, 2, &body);
    let mut body = Vec::new();
    leb(&mut body, exports.len());
    body.extend(std::iter::repeat_n(0u8, exports.len()));
    section(&mut out, 3, &body);
    let mut body = Vec::new();
    leb(&mut body, exports.len());
    for (i, export) in exports.iter().enumerate() {
        name(&mut body, export);
        body.push(0);
        leb(&mut body, imports.len() + i);
    }
    section(&mut out, 7, &body);
    let mut body = Vec::new();
    leb(&mut body, exports.len());
    for _ in exports {
        body.extend_from_slice(&[2, 0, 0x0b]);
    }
    section(&mut out, 10, &body);
    out
}

/// Checks that `text` is well-formed XML as far as JUnit readers need: every
/// element closed in order, attribute values quoted with no raw `<` or stray
/// `&`. Returns the element names in document order.
fn xml_elements(text: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        assert!(
            rest[..open].trim().is_empty() || stack.last().is_some(),
            "text outside the root element: {:?}",
            &rest[..open]
        );
        let close = rest[open..].find('>').expect("every tag is closed") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') {
            assert!(tag.ends_with('?'), "bad declaration <{tag}>");
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "</{name}> closes the wrong element"
            );
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag
            .split_whitespace()
            .next()
            .expect("a tag name")
            .to_string();
        // Attributes: name="value" pairs.
        let mut attrs = tag[name.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs.find("=\"").expect("attribute=\"value\"");
            let value_end = attrs[eq + 2..].find('"').expect("closing quote") + eq + 2;
            let value = &attrs[eq + 2..value_end];
            assert!(!value.contains('<'), "raw < in attribute value {value:?}");
            for (i, _) in value.match_indices('&') {
                let entity = &value[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "stray & in attribute value {value:?}"
                );
            }
            attrs = attrs[value_end + 1..].trim_start();
        }
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(rest.trim().is_empty(), "text after the root element");
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    names
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// The `served by:` section of `simulate`: cluster -> (percent, count).
fn served_by(r: &Run) -> Vec<(String, f64, u32)> {
    let mut out = Vec::new();
    for line in r.stdout.lines().skip_while(|l| *l != "served by:").skip(1) {
        if line.trim().is_empty() {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 4, "served-by line {line:?}{r}");
        let percent = words[2]
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no percentage in {line:?}{r}"));
        let n = words[3]
            .parse()
            .unwrap_or_else(|_| panic!("no count in {line:?}{r}"));
        out.push((words[0].to_string(), percent, n));
    }
    assert!(!out.is_empty(), "no served-by lines{r}");
    out
}

fn share_of(rows: &[(String, f64, u32)], cluster: &str) -> f64 {
    rows.iter()
        .find(|(c, _, _)| c == cluster)
        .map(|(_, p, _)| *p)
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// Help and usage errors
// ---------------------------------------------------------------------------

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let r = run(&["--help"]);
    r.code(0)
        .stderr_empty()
        .stdout_has("Usage: hybridmesh <COMMAND>")
        .stdout_says("Exit codes: 0 ok, 1 checks failed, 2 usage or I/O error.");
    for command in ["validate", "test", "simulate", "inspect", "demo"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "--help does not list {command}{r}"
        );
    }
    run(&["-h"])
        .code(0)
        .stdout_has("Usage: hybridmesh <COMMAND>");
}

#[test]
fn every_subcommand_has_help_that_says_what_it_does() {
    for (command, says) in [
        ("validate", "Check plugin configs (JSON or YAML)"),
        ("test", "Run scenario files and check their expectations"),
        ("simulate", "show where the traffic went"),
        ("inspect", "ABI version"),
        ("demo", "Walk through the seed article"),
    ] {
        let r = run(&[command, "--help"]);
        r.code(0)
            .stderr_empty()
            .stdout_has(&format!("Usage: hybridmesh {command}"))
            .stdout_says(says);
        run(&["help", command])
            .code(0)
            .stdout_has(&format!("Usage: hybridmesh {command}"));
    }
}

#[test]
fn check_without_kubectl_says_how_to_get_it() {
    let args = ["check", "--context", "gke"];
    let mut c = cmd(&args);
    c.env("PATH", "/nonexistent")
        .env_remove("HYBRIDMESH_KUBECTL");
    run_cmd(c, &args)
        .code(2)
        .stdout_empty()
        .stderr_has("kubectl is not on the PATH: install it")
        .stderr_has("or name it with HYBRIDMESH_KUBECTL");
}

#[test]
fn status_needs_an_istiod_and_names_one_that_does_not_answer() {
    run(&["status"]).code(2).stderr_has("--istiod <URL>");
    run(&["status", "--istiod", "http://127.0.0.1:9"])
        .code(2)
        .stdout_empty()
        .stderr_has("http://127.0.0.1:9/debug/syncz: cannot connect");
    run(&["status", "--istiod", "https://istiod.istio-system:15014"])
        .code(2)
        .stderr_has("only http:// urls");
}

#[test]
fn version_names_the_pinned_filter_image_and_the_tested_versions() {
    let r = run(&["--version"]);
    r.code(0);
    let deploy = std::fs::read_to_string(root().join("examples/deploy.yaml")).unwrap();
    let pinned = deploy
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256: "))
        .unwrap();
    assert!(
        r.stdout
            .starts_with(&format!("hybridmesh {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        r.stdout
    );
    r.stdout_has(&format!("sha256: {pinned}"));
    let versions = std::fs::read_to_string(root().join("versions.tsv")).unwrap();
    for row in versions.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = row.split('\t').collect();
        match f[0] {
            "istio" => {
                r.stdout_has(&format!("Istio {} with Envoy {}", f[1], f[2]));
            }
            "envoy" => {
                r.stdout_has(f[1]);
            }
            _ => {}
        }
    }
    // -V is the short form: one line.
    let short = run(&["-V"]);
    short.code(0);
    assert_eq!(
        short.stdout,
        format!("hybridmesh {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Every command `--help` lists (the lines under `Commands:`).
fn commands() -> Vec<String> {
    common::commands(&run(&["--help"]).stdout)
}

#[test]
fn bash_completes_every_command_from_its_first_letters() {
    let r = run(&["completions", "bash"]);
    r.code(0).stderr_empty().stdout_has("_hybridmesh()");
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "hybridmesh.bash", &r.stdout);
    let commands = commands();
    assert!(commands.len() >= 12, "{commands:?}");
    for command in &commands {
        // What bash offers after `hybridmesh <three letters><TAB>`.
        let typed: String = command.chars().take(3).collect();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {script} && COMP_WORDS=(hybridmesh {typed}) && COMP_CWORD=1 && _hybridmesh hybridmesh {typed} hybridmesh && printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ))
            .output()
            .unwrap();
        let offered = String::from_utf8_lossy(&out.stdout);
        assert!(
            offered.lines().any(|l| l == command),
            "`hybridmesh {typed}<TAB>` offers {offered:?}, not {command}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        run(&["completions", shell])
            .code(0)
            .stdout_has("hybridmesh")
            .stdout_has("validate");
    }
    run(&["completions", "tcsh"])
        .code(2)
        .stderr_has("possible values: bash, elvish, fish, powershell, zsh");
}

#[test]
fn man_pages_describe_every_command() {
    let r = run(&["man"]);
    r.code(0)
        .stderr_empty()
        .stdout_has(".TH hybridmesh 1")
        .stdout_has(".SH NAME");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let r = run(&["man", "--out", &out.display().to_string()]);
    r.code(0);
    for command in commands() {
        let page = out.join(format!("hybridmesh-{command}.1"));
        r.stdout_has(&format!("wrote {}", page.display()));
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(
            text.contains(&format!(".TH hybridmesh-{command} 1")) && text.contains(".SH SYNOPSIS"),
            "{}:\n{text}",
            page.display()
        );
    }
    assert!(out.join("hybridmesh.1").exists());
}

#[test]
fn version_prints_the_package_version() {
    run(&["--version"])
        .code(0)
        .stdout_has(&format!("hybridmesh {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    cmd(&["frobnicate"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(
            predicate::str::contains("unrecognized subcommand 'frobnicate'")
                .and(predicate::str::contains("Usage: hybridmesh <COMMAND>")),
        );
}

#[test]
fn no_subcommand_is_a_usage_error() {
    cmd(&[])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("Usage: hybridmesh <COMMAND>"));
}

#[test]
fn a_missing_required_argument_is_a_usage_error() {
    for (args, names) in [
        (&["validate"][..], "<FILE>"),
        (&["test"][..], "<PATH>"),
        (&["inspect"][..], "<MODULE.wasm>"),
        (&["simulate"][..], "--config <FILE>"),
    ] {
        run(args)
            .code(2)
            .stdout_empty()
            .stderr_has("the following required arguments were not provided")
            .stderr_has(names);
    }
}

#[test]
fn an_unknown_output_format_is_a_usage_error() {
    run(&[
        "validate",
        "examples/01-default-spread/config.yaml",
        "--output",
        "xml",
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("invalid value 'xml' for '--output <OUTPUT>'")
    .stderr_has("possible values: text, json, yaml");
    // junit is listed only where it is accepted: `test`.
    run(&[
        "validate",
        "examples/01-default-spread/config.yaml",
        "--output",
        "junit",
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("invalid value 'junit' for '--output <OUTPUT>'");
    run(&["test", "examples/01-default-spread", "--output", "xml"])
        .code(2)
        .stdout_empty()
        .stderr_has("possible values: text, json, yaml, junit");
}

#[test]
fn wasm_and_native_together_are_a_usage_error() {
    run(&[
        "test",
        "examples/05-per-cluster-subsets",
        "--native",
        "--wasm",
        "x.wasm",
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("cannot be used with");
}

// ---------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------

#[test]
fn validate_passes_every_example_config() {
    let configs: Vec<String> = example_files("config.yaml")
        .iter()
        .map(|p| relative(p))
        .collect();
    let args: Vec<&str> = std::iter::once("validate")
        .chain(configs.iter().map(String::as_str))
        .collect();
    let r = run(&args);
    r.code(0).stderr_empty();
    for c in &configs {
        r.stdout_line(&format!("ok {c}: plugin config"));
    }
    assert_eq!(
        r.last_line(),
        format!("{} plugin config(s) checked, 0 with errors", configs.len()),
        "{r}"
    );
}

#[test]
fn validate_names_the_field_of_weights_that_do_not_sum_to_100() {
    run(&["validate", "examples/07-bad-config/bad-weights.yaml"])
        .code(1)
        .stderr_empty()
        .stdout_line("FAIL examples/07-bad-config/bad-weights.yaml: plugin config")
        .stdout_line("    [HM0101] routes[0].distribute[0].to: weights sum to 90, expected 100")
        .stdout_line("1 plugin config(s) checked, 1 with errors");
}

/// A WasmPlugin with two kinds of finding: the filter refuses its config
/// (HM0101) and Istio's schema refuses a field (HM0201).
const TWO_KINDS_OF_FINDING: &str = "\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: hybridmesh, namespace: istio-system}
spec:
  url: oci://registry.example/hybridmesh:0.1.0
  failStratgy: FAIL_OPEN
  pluginConfig:
    clusters:
      - {name: gke, network: n, locality: r}
      - {name: anthos, network: m, locality: s}
    routes:
      - hosts: [\"*\"]
        policy: weighted
        distribute:
          - {from: \"*\", to: {gke: 50, anthos: 40}}
";

#[test]
fn validate_allows_findings_by_code_and_still_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "plugin.yaml", TWO_KINDS_OF_FINDING);
    // Without --allow: both fail, each with its code.
    let r = run(&["validate", &file]);
    r.code(1)
        .stdout_has("    [HM0101] spec.pluginConfig.routes[0].distribute[0].to: weights sum to 90")
        .stdout_has("    [HM0201] spec: unknown field `failStratgy`");
    // One code allowed: the other still fails; the allowed one is shown as such.
    let r = run(&["validate", &file, "--allow", "hm0101"]);
    r.code(1)
        .stdout_line(&format!("FAIL {file}: WasmPlugin istio-system/hybridmesh"))
        .stdout_has("    allowed: [HM0101] spec.pluginConfig.routes[0].distribute[0].to")
        .stdout_has("    [HM0201] spec: unknown field `failStratgy`");
    // Both: the run passes, and says what it let through.
    let r = run(&["validate", &file, "--allow", "HM0101,HM0201"]);
    r.code(0)
        .stdout_line(&format!("ok {file}: WasmPlugin istio-system/hybridmesh"))
        .stdout_has("    allowed: [HM0201] spec: unknown field `failStratgy`");
    assert_eq!(r.last_line(), "1 document(s) checked, 0 with errors", "{r}");
    // The same as data: failing errors and allowed ones apart, each with its code.
    let r = run(&["validate", &file, "--allow", "HM0201", "-o", "yaml"]);
    r.code(1).stderr_empty();
    let findings: serde_json::Value = serde_yaml_ng::from_str(&r.stdout).unwrap();
    assert_eq!(findings[0]["ok"], false, "{r}");
    assert_eq!(findings[0]["errors"][0]["code"], "HM0101", "{r}");
    assert_eq!(findings[0]["allowed"][0]["code"], "HM0201", "{r}");
    // A code that does not exist is a usage error naming the codes.
    run(&["validate", &file, "--allow", "IST0109"])
        .code(2)
        .stdout_empty()
        .stderr_has("no finding code \"IST0109\": expected one of HM0001, HM0101");
}

#[test]
fn validate_notes_a_wasmplugin_that_pins_no_digest_by_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "plugin.yaml",
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: hybridmesh, namespace: istio-system}\nspec:\n  url: oci://registry.example/hybridmesh:0.1.0\n  pluginConfig: {routes: []}\n",
    );
    let wasm = filter_wasm();
    run(&["validate", &file, "--wasm", &wasm])
        .code(0)
        .stdout_line(
        "    note: spec.sha256: not set: Istio runs whatever the url points to when it fetches it",
    );
}

#[test]
fn validate_names_a_typo_with_its_line() {
    let file = root().join("examples/07-bad-config/typo.yaml");
    let line = line_of(&file, "polcy:");
    let r = run(&["validate", "examples/07-bad-config/typo.yaml"]);
    r.code(1)
        .stdout_line("FAIL examples/07-bad-config/typo.yaml: plugin config");
    let error = r
        .stdout
        .lines()
        .find(|l| l.contains("unknown field `polcy`"))
        .unwrap_or_else(|| panic!("no line names `polcy`{r}"));
    assert!(
        error.contains("expected one of") && error.contains("`policy`"),
        "the error lists the known fields{r}"
    );
    assert!(
        error.ends_with(&format!("(line {line})")),
        "the error gives line {line}{r}"
    );
}

/// The filter's parser reports an unknown field at the object that holds it
/// (`routes[0]: unknown field ...`), as it does for JSON and as the filter logs
/// it (examples/07-bad-config/scenario.yaml). YAML must read the same, without
/// the path twice.
#[test]
fn validate_reports_an_unknown_yaml_field_once_at_the_object_that_holds_it() {
    let r = run(&["validate", "examples/07-bad-config/typo.yaml"]);
    r.code(1);
    let error = r
        .stdout
        .lines()
        .find(|l| l.contains("`polcy`"))
        .unwrap_or_else(|| panic!("no line names `polcy`{r}"));
    assert!(
        error.starts_with("    [HM0101] routes[0]: unknown field `polcy`, expected one of"),
        "expected `routes[0]: unknown field `polcy`, expected one of ...`, got {error:?}{r}"
    );
}

#[test]
fn validate_checks_json_configs() {
    let dir = tempfile::tempdir().unwrap();
    let weights = write(
        dir.path(),
        "weights.json",
        r#"{"clusters": [{"name": "gke", "network": "n", "locality": "r"}],
 "routes": [{"hosts": ["*"], "policy": "weighted", "distribute": [{"from": "*", "to": {"gke": 50}}]}]}
"#,
    );
    run(&["validate", &weights])
        .code(1)
        .stdout_line(&format!("FAIL {weights}: plugin config"))
        .stdout_line("    [HM0101] routes[0].distribute[0].to: weights sum to 50, expected 100");

    let typo = write(
        dir.path(),
        "typo.json",
        r#"{"clusters": [{"name": "gke", "network": "n", "locality": "r"}],
 "routes": [{"hosts": ["*"], "polcy": "none"}]}
"#,
    );
    let r = run(&["validate", &typo]);
    r.code(1);
    assert!(
        r.stdout.lines().any(|l| l
            .starts_with("    [HM0101] routes[0]: unknown field `polcy`, expected one of")
            && l.ends_with("(line 2)")),
        "the JSON error names the object, the field and line 2{r}"
    );

    let broken = write(dir.path(), "broken.json", "{\"routes\": [\n");
    run(&["validate", &broken])
        .code(1)
        .stdout_has(&format!("FAIL {broken}: plugin config"))
        .stdout_has("EOF while parsing");
}

const WASM_PLUGIN_AND_RULE: &str = "\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: hybridmesh
  namespace: istio-system
spec:
  url: oci://registry.example/hybridmesh:0.1.0
  pluginConfig:
    clusters:
      - {name: gke, network: kuchima-demo-vpc01, locality: asia-northeast1}
      - {name: anthos, network: default, locality: tokyo-onprem}
    routes:
      - hosts: [echo-svc.default.svc.cluster.local]
        policy: weighted
        distribute:
          - from: \"*\"
            to: {gke: 70, anthos: 20}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo-svc
spec:
  host: echo-svc.default.svc.cluster.local
";

#[test]
fn validate_checks_a_wasmplugin_and_names_other_documents_as_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "manifests.yaml", WASM_PLUGIN_AND_RULE);
    let r = run(&["validate", &file]);
    r.code(1)
        .stderr_empty()
        .stdout_line(&format!("FAIL {file}: WasmPlugin istio-system/hybridmesh"))
        .stdout_line(
            "    [HM0101] spec.pluginConfig.routes[0].distribute[0].to: weights sum to 90, expected 100",
        )
        .stdout_line(&format!(
            "ok {file} (document 2): DestinationRule default/echo-svc"
        ));
    for line in r.stdout.lines().filter(|l| l.starts_with("    ")) {
        assert!(
            line.trim_start().starts_with("[HM0101] spec.pluginConfig."),
            "every error is the filter's, under spec.pluginConfig: {line:?}{r}"
        );
    }
    assert_eq!(r.last_line(), "2 document(s) checked, 1 with errors", "{r}");
}

/// A DestinationRule, then a WasmPlugin whose pluginConfig has a typo.
const RULE_AND_WASM_PLUGIN_TYPO: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-svc}
spec: {host: echo-svc.default.svc.cluster.local}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: hybridmesh}
spec:
  pluginConfig:
    clusters:
      - {name: gke, network: n, locality: r}
    routes:
      - hosts: [\"*\"]
        polcy: none
";

#[test]
fn validate_gives_file_line_numbers_in_a_later_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "manifests.yaml", RULE_AND_WASM_PLUGIN_TYPO);
    let line = line_of(Path::new(&file), "polcy");
    let r = run(&["validate", &file]);
    r.code(1)
        .stdout_line(&format!("ok {file}: DestinationRule default/echo-svc"))
        .stdout_line(&format!(
            "FAIL {file} (document 2): WasmPlugin default/hybridmesh"
        ));
    let error = r
        .stdout
        .lines()
        .find(|l| l.contains("unknown field `polcy`"))
        .unwrap_or_else(|| panic!("no line names `polcy`{r}"));
    assert!(
        error
            .trim_start()
            .starts_with("[HM0101] spec.pluginConfig."),
        "{r}"
    );
    assert!(error.ends_with(&format!("(line {line})")), "{r}");
}

/// Inside a WasmPlugin too, an unknown field is reported once, at the object
/// that holds it, as for a plain plugin config.
#[test]
fn validate_reports_an_unknown_field_in_a_wasmplugin_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "manifests.yaml", RULE_AND_WASM_PLUGIN_TYPO);
    let r = run(&["validate", &file]);
    r.code(1);
    let error = r
        .stdout
        .lines()
        .find(|l| l.contains("`polcy`"))
        .unwrap_or_else(|| panic!("no line names `polcy`{r}"));
    assert!(
        error.starts_with("    [HM0101] spec.pluginConfig.routes[0]: unknown field `polcy`, expected one of"),
        "expected `spec.pluginConfig.routes[0]: unknown field `polcy`, expected one of ...`, got {error:?}{r}"
    );
}

#[test]
fn validate_reports_broken_yaml_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.yaml",
        "clusters:\n  - {name: gke, network: n, locality: r}\nroutes:\n  - hosts: [\"*\"\n    policy: none\n",
    );
    let r = run(&["validate", &file]);
    r.code(1)
        .stderr_empty()
        .stdout_line(&format!("FAIL {file}: YAML"));
    let error = r
        .stdout
        .lines()
        .find(|l| l.contains("not valid YAML"))
        .unwrap_or_else(|| panic!("no 'not valid YAML' line{r}"));
    assert!(error.ends_with("(line 5)"), "{r}");
}

#[test]
fn validate_an_empty_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty.yaml", "# nothing here\n");
    run(&["validate", &file])
        .code(1)
        .stdout_has("no document to check");
}

#[test]
fn validate_a_missing_file_is_an_io_error() {
    run(&["validate", "examples/no-such-config.yaml"])
        .code(2)
        .stdout_empty()
        .stderr_has("error: cannot read examples/no-such-config.yaml");
}

#[test]
fn validate_json_output_lists_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "manifests.yaml", WASM_PLUGIN_AND_RULE);
    let r = run(&[
        "validate",
        "examples/01-default-spread/config.yaml",
        "examples/07-bad-config/bad-weights.yaml",
        &file,
        "--output",
        "json",
    ]);
    r.code(1).stderr_empty();
    let json = r.json();
    let findings = json.as_array().expect("an array of findings");
    assert_eq!(findings.len(), 4, "{r}");
    let f = &findings[0];
    assert_eq!(f["file"], "examples/01-default-spread/config.yaml");
    assert_eq!(f["document"], 1);
    assert_eq!(f["what"], "plugin config");
    assert_eq!(f["ok"], true);
    assert_eq!(f["errors"], serde_json::json!([]));
    let f = &findings[1];
    assert_eq!(f["ok"], false);
    assert_eq!(
        f["errors"],
        serde_json::json!([{
            "code": "HM0101",
            "message": "routes[0].distribute[0].to: weights sum to 90, expected 100"
        }])
    );
    let f = &findings[2];
    assert_eq!(f["file"], file.as_str());
    assert_eq!(f["what"], "WasmPlugin istio-system/hybridmesh");
    assert_eq!(f["ok"], false);
    assert!(
        f["errors"][0]["message"]
            .as_str()
            .is_some_and(|e| e.starts_with("spec.pluginConfig."))
            && f["errors"][0]["code"] == "HM0101",
        "{r}"
    );
    let f = &findings[3];
    assert_eq!(f["document"], 2);
    assert_eq!(f["ok"], true);
    assert!(
        f["what"]
            .as_str()
            .is_some_and(|w| w == "DestinationRule default/echo-svc"),
        "{r}"
    );
}

#[test]
fn piped_output_has_no_colour_codes() {
    let r = run(&["validate", "examples/07-bad-config/bad-weights.yaml"]);
    r.code(1);
    assert!(
        !r.stdout.contains('\x1b'),
        "escape codes in piped output{r}"
    );
}

// ---------------------------------------------------------------------------
// test
// ---------------------------------------------------------------------------

/// (scenario count, step count) of the examples.
fn example_counts() -> (usize, usize) {
    let scenarios = example_files("scenario.yaml");
    let steps = scenarios
        .iter()
        .map(|p| {
            yaml(p)["steps"]
                .as_sequence()
                .map(Vec::len)
                .unwrap_or_else(|| panic!("{} has no steps", p.display()))
        })
        .sum();
    (scenarios.len(), steps)
}

#[test]
fn test_passes_the_examples_with_the_default_module() {
    // As a user runs it: no --wasm, the filter this repository builds.
    let (scenarios, steps) = example_counts();
    let r = run(&["test", "examples/"]);
    r.code(0).stderr_empty();
    for s in example_files("scenario.yaml") {
        let name = yaml(&s)["name"].as_str().unwrap().to_string();
        r.stdout_has(&format!("PASS {name} ({}, ", relative(&s)));
    }
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("  ok ")).count(),
        steps,
        "one ok line per step{r}"
    );
    r.stdout_line(&format!("{scenarios} scenario(s), 0 failed"));
    assert_eq!(r.last_line(), format!("{steps} passed, 0 failed"), "{r}");
}

#[test]
fn test_passes_the_examples_natively() {
    let (_, steps) = example_counts();
    let r = run(&["test", "examples/", "--native"]);
    r.code(0).stdout_lacks("FAIL");
    assert_eq!(r.last_line(), format!("{steps} passed, 0 failed"), "{r}");
}

#[test]
fn test_reports_a_failing_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let file = failing_scenario(dir.path());
    let r = run(&["test", &file, "--wasm", &filter_wasm()]);
    r.code(1)
        .stderr_empty()
        .stdout_has(&format!("FAIL a failing expectation ({file}, "))
        .stdout_line("  ok gke stays in gke")
        .stdout_line("  FAIL expects anthos but gets gke")
        .stdout_has("status 200, expected 418")
        .stdout_line("      served by gke, expected anthos")
        .stdout_line("1 scenario(s), 1 failed");
    assert_eq!(r.last_line(), "1 passed, 1 failed", "{r}");
}

/// In a `repeat`, a request that breaks several expectations gives several
/// problems; each must say which request it is about, not only the last.
#[test]
fn test_labels_every_problem_of_a_repeated_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "repeat.scenario.yaml",
        &format!(
            "name: two problems per request
mesh: {}
config: {}
from: gke
steps:
  - name: three requests, each breaking two expectations
    request: {{authority: echo-svc.default}}
    repeat: 3
    expect: {{status: 418, servedBy: anthos}}
",
            mesh_yaml(),
            root()
                .join("examples/05-per-cluster-subsets/config.yaml")
                .display()
        ),
    );
    let r = run(&["test", &file, "--wasm", &filter_wasm()]);
    r.code(1);
    let problems: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("      ") && !l.contains("not shown"))
        .collect();
    assert!(problems.len() >= 4, "{r}");
    for p in problems {
        assert!(
            p.trim_start().starts_with("request "),
            "problem without its request number: {p:?}{r}"
        );
    }
}

/// A `repeat` sends every request even when the first ones break
/// expectations: only the report is cut short, not the traffic, so `share` is
/// over all of them and later steps see the mesh the scenario describes.
#[test]
fn test_a_failing_repeat_still_sends_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "repeat.scenario.yaml",
        &format!(
            "name: ten failing requests
mesh: {}
config: {}
from: gke
steps:
  - name: ten requests, each answered 200 instead of 418
    request: {{authority: echo-svc.default}}
    repeat: 10
    expect: {{status: 418, share: {{anthos: [0.5, 1.0]}}}}
",
            mesh_yaml(),
            root()
                .join("examples/05-per-cluster-subsets/config.yaml")
                .display()
        ),
    );
    let r = run(&["test", &file, "--wasm", &filter_wasm()]);
    r.code(1)
        .stdout_has("(5 more problem(s) in this step not shown)")
        .stdout_line("      anthos served 0 of 10 (0.0%), expected 50%-100%");
    let r = run(&["test", &file, "--output", "json", "--wasm", &filter_wasm()]);
    r.code(1);
    let lines = r.json()[0]["steps"][0]["lines"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(lines, 10, "one curl line per request sent{r}");
}

#[test]
fn test_junit_output_is_xml_with_suites_cases_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let file = failing_scenario(dir.path());
    let r = run(&[
        "test",
        "examples/05-per-cluster-subsets",
        &file,
        "--output",
        "junit",
        "--wasm",
        &filter_wasm(),
    ]);
    r.code(1).stderr_empty();
    assert!(
        r.stdout
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        "{r}"
    );
    let names = xml_elements(&r.stdout);
    assert_eq!(names.first().map(String::as_str), Some("testsuites"), "{r}");
    assert_eq!(count(&names, "testsuite"), 2, "{r}");
    let example_steps = yaml(&root().join("examples/05-per-cluster-subsets/scenario.yaml"))
        ["steps"]
        .as_sequence()
        .unwrap()
        .len();
    assert_eq!(count(&names, "testcase"), example_steps + 2, "{r}");
    assert_eq!(count(&names, "failure"), 1, "{r}");
    r.stdout_has("<testsuite name=\"a failing expectation\" tests=\"2\" failures=\"1\"")
        .stdout_has("<testcase name=\"gke stays in gke\"")
        .stdout_has("served by gke, expected anthos")
        // The body's quotes are escaped inside the attribute.
        .stdout_has("&quot;");
}

#[test]
fn test_json_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let file = failing_scenario(dir.path());
    let r = run(&["test", &file, "--output", "json", "--wasm", &filter_wasm()]);
    r.code(1).stderr_empty();
    let json = r.json();
    let reports = json.as_array().expect("an array of scenario reports");
    assert_eq!(reports.len(), 1);
    let s = &reports[0];
    assert_eq!(s["name"], "a failing expectation");
    assert_eq!(s["path"], file.as_str());
    assert_eq!(s["ok"], false);
    assert!(s["error"].is_null());
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["ok"], true);
    assert_eq!(steps[1]["ok"], false);
    assert_eq!(steps[1]["name"], "expects anthos but gets gke");
    let problems: Vec<&str> = steps[1]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(problems.contains(&"served by gke, expected anthos"), "{r}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("status 200, expected 418")),
        "{r}"
    );
}

fn typo_scenario(dir: &Path) -> String {
    write(
        dir,
        "typo.scenario.yaml",
        &format!(
            "name: a typo in a step
mesh: {}
steps:
  - request: {{authority: echo-svc.default}}
    expct: {{status: 200}}
",
            mesh_yaml()
        ),
    )
}

#[test]
fn test_names_an_unknown_scenario_field() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    let file = typo_scenario(dir.path());
    let r = run(&["test", &file, "--wasm", &guest]);
    r.code(1).stderr_empty();
    let error = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line{r}"));
    for part in [
        file.as_str(),
        "steps[0]",
        "unknown field `expct`",
        "`expect`",
        "line 5",
    ] {
        assert!(error.contains(part), "the error does not say {part:?}{r}");
    }
    assert_eq!(r.last_line(), "0 passed, 1 failed", "{r}");
}

/// The same error, said once: the path once, the line once.
#[test]
fn test_says_a_scenario_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    let file = typo_scenario(dir.path());
    let r = run(&["test", &file, "--wasm", &guest]);
    r.code(1);
    let error = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line{r}"));
    assert_eq!(
        error.matches("steps[0]").count(),
        1,
        "the field path is given more than once: {error:?}{r}"
    );
    assert_eq!(
        error.matches("line 5").count(),
        1,
        "the line is given more than once: {error:?}{r}"
    );
}

#[test]
fn test_a_missing_path_or_no_scenarios_is_an_io_error() {
    run(&["test", "examples/no-such-dir"])
        .code(2)
        .stdout_empty()
        .stderr_has("examples/no-such-dir: no such file or directory");
    run(&["test", "crates/ops/src"])
        .code(2)
        .stdout_empty()
        .stderr_has("no scenario files (scenario.yaml or *.scenario.yaml) under crates/ops/src");
}

#[test]
fn test_without_a_built_filter_says_how_to_build_it() {
    let target = tempfile::tempdir().unwrap();
    let args = ["test", "examples/05-per-cluster-subsets"];
    let mut c = cmd(&args);
    c.env("CARGO_TARGET_DIR", target.path());
    run_cmd(c, &args)
        .code(2)
        .stdout_empty()
        .stderr_has("the filter is not built")
        .stderr_has("scripts/build-wasm")
        .stderr_has("--wasm FILE");
}

#[test]
fn test_with_a_file_that_is_not_wasm_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.wasm", "these are notes, not a module\n");
    let binary = dir.path().join("garbage.wasm");
    std::fs::write(&binary, [0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0xff, 0xfe]).unwrap();
    let binary = binary.display().to_string();
    for module in [&text, &binary] {
        run(&["test", "examples/05-per-cluster-subsets", "--wasm", module])
            .code(2)
            .stdout_empty()
            .stderr_has(&format!(
                "error: {module} is not a WebAssembly module (no \\0asm header, and not WAT text)"
            ));
    }
    run(&[
        "test",
        "examples/05-per-cluster-subsets",
        "--wasm",
        "no-such.wasm",
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("cannot read no-such.wasm")
    .stderr_has("No such file or directory");
}

#[test]
fn test_with_a_module_the_host_cannot_link_names_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("imports.wasm");
    std::fs::write(
        &module,
        wasm_binary(
            &[("env", "proxy_does_not_exist")],
            &["proxy_abi_version_0_2_1"],
        ),
    )
    .unwrap();
    let module = module.display().to_string();
    run(&["test", "examples/05-per-cluster-subsets", "--wasm", &module])
        .code(2)
        .stdout_empty()
        .stderr_has("env.proxy_does_not_exist");
}

#[test]
fn test_a_module_that_traps_in_on_configure_fails_its_steps_with_500() {
    // A trap in on_configure fails Envoy's configuration canary: the config is
    // rejected and, delivered by ECDS as Istio does, every request gets 500 (NFCF),
    // whatever the fail strategy (measured with Envoy 1.40; it used to be 503).
    let dir = tempfile::tempdir().unwrap();
    let scenario = one_request_scenario(dir.path());
    let module = write(
        dir.path(),
        "trap-configure.wat",
        &wat_guest("unreachable", "i32.const 0"),
    );
    let r = run(&["test", &scenario, "--wasm", &module]);
    r.code(1)
        .stderr_empty()
        .stdout_line("  FAIL one request answered 200")
        .stdout_has("plugin config rejected")
        .stdout_has("status 500, expected 200");
    assert_eq!(r.last_line(), "0 passed, 1 failed", "{r}");
}

#[test]
fn test_a_module_that_traps_in_on_request_headers_fails_its_steps_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = one_request_scenario(dir.path());
    let module = write(
        dir.path(),
        "trap-headers.wat",
        &wat_guest("i32.const 1", "unreachable"),
    );
    let r = run(&["test", &scenario, "--wasm", &module]);
    r.code(1)
        .stderr_empty()
        .stdout_line("  FAIL one request answered 200")
        .stdout_has("status 503, expected 200")
        // the trap's reason, not wasmtime's bare "error while executing at
        // wasm backtrace:" (issue #25)
        .stdout_has("trapped in proxy_on_request_headers (worker 0): wasm trap: wasm `unreachable` instruction executed (innermost frame 0:");
    assert_eq!(r.last_line(), "0 passed, 1 failed", "{r}");

    // An action code Envoy does not know stops iteration: the request is
    // held, and the report says so instead of an empty refusal.
    let held = write(
        dir.path(),
        "unknown-action.wat",
        &wat_guest("i32.const 1", "i32.const 7"),
    );
    let r = run(&["test", &scenario, "--wasm", &held]);
    r.code(1)
        .stdout_has("no answer: the stream was held and never completed");
    assert!(!r.stdout.contains("refused: \n"), "{r}");

    // The same guest without the trap passes: the 503 is the trap's.
    let fine = passthrough_guest(dir.path());
    let r = run(&["test", &scenario, "--wasm", &fine]);
    r.code(0);
    assert_eq!(r.last_line(), "1 passed, 0 failed", "{r}");
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

#[test]
fn inspect_the_filter() {
    let wasm = filter_wasm();
    let r = run(&["inspect", &wasm]);
    r.code(0)
        .stderr_empty()
        .stdout_line("ABI version: 0.2.1")
        .stdout_has("  proxy_on_request_headers\n")
        .stdout_has("  env.proxy_log\n")
        .stdout_lacks("not in Envoy");
    assert_eq!(
        r.last_line(),
        "ok every import is provided by Envoy (V8)",
        "{r}"
    );

    let r = run(&["inspect", &wasm, "--output", "json"]);
    r.code(0);
    let json = r.json();
    assert_eq!(json["abi_versions"], serde_json::json!(["0.2.1"]));
    assert_eq!(json["missing_in_envoy"], serde_json::json!([]));
    assert!(json["bytes"].as_u64().is_some_and(|b| b > 0));
}

#[test]
fn inspect_names_an_import_envoy_does_not_provide() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("imports.wasm");
    std::fs::write(
        &module,
        wasm_binary(
            &[("env", "proxy_does_not_exist"), ("env", "proxy_log")],
            &["proxy_abi_version_0_2_1"],
        ),
    )
    .unwrap();
    let module = module.display().to_string();
    let r = run(&["inspect", &module]);
    r.code(1)
        .stderr_empty()
        .stdout_line("ABI version: 0.2.1")
        .stdout_line("  env.proxy_does_not_exist  not in Envoy")
        .stdout_line("  env.proxy_log");
    assert_eq!(
        r.last_line(),
        "FAIL Envoy (V8) would refuse to load this module: it does not provide env.proxy_does_not_exist",
        "{r}"
    );

    let r = run(&["inspect", &module, "--output", "json"]);
    r.code(1);
    assert_eq!(
        r.json()["missing_in_envoy"],
        serde_json::json!(["env.proxy_does_not_exist"])
    );
}

/// A module without `proxy_abi_version_*` fails (exit 1); its verdict line
/// must say so instead of ending on an `ok`.
#[test]
fn inspect_a_module_without_an_abi_version_ends_with_a_fail_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("no-abi.wasm");
    std::fs::write(
        &module,
        wasm_binary(&[("env", "proxy_log")], &["proxy_on_vm_start"]),
    )
    .unwrap();
    let module = module.display().to_string();
    let r = run(&["inspect", &module]);
    r.code(1)
        .stdout_has("ABI version: none (no proxy_abi_version_* export: not a proxy-wasm module)");
    assert!(
        r.last_line().starts_with("FAIL"),
        "exit code 1, but the last line is {:?}{r}",
        r.last_line()
    );
}

#[test]
fn inspect_a_file_that_is_not_wasm_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "notes.wasm", "these are notes, not a module\n");
    run(&["inspect", &file])
        .code(2)
        .stdout_empty()
        .stderr_has(&format!("error: {file} is not a WebAssembly module"));
    run(&["inspect", "no-such.wasm"])
        .code(2)
        .stdout_empty()
        .stderr_has("error: cannot read no-such.wasm");
}

// ---------------------------------------------------------------------------
// simulate
// ---------------------------------------------------------------------------

#[test]
fn simulate_the_80_20_split() {
    let r = run(&[
        "simulate",
        "--config",
        "examples/03-weighted-80-20/config.yaml",
        "--from",
        "gke",
        "-n",
        "2000",
        "--wasm",
        &filter_wasm(),
    ]);
    r.code(0)
        .stderr_empty()
        .stdout_line("2000 requests from gke to echo-svc.default")
        .stdout_line("errors (5xx): 0 (0.00%)")
        .stdout_line("ejections: none")
        .stdout_has("█");
    let rows = served_by(&r);
    let gke = share_of(&rows, "gke");
    let anthos = share_of(&rows, "anthos");
    assert!((76.0..=84.0).contains(&gke), "gke served {gke}%{r}");
    assert!(
        (16.0..=24.0).contains(&anthos),
        "anthos served {anthos}%{r}"
    );
    assert_eq!(
        rows.iter().map(|(_, _, n)| n).sum::<u32>(),
        2000,
        "the counts add up to the requests{r}"
    );
    // 2000 requests at 100/s: 20 s in 2 s buckets.
    r.stdout_line("timeline (2s buckets):")
        .stdout_has("\n      0s  anthos ")
        .stdout_has("\n     18s  anthos ");
}

#[test]
fn simulate_json_output_parses() {
    let r = run(&[
        "simulate",
        "--config",
        "examples/03-weighted-80-20/config.yaml",
        "-n",
        "200",
        "--output",
        "json",
        "--wasm",
        &filter_wasm(),
    ]);
    r.code(0).stderr_empty();
    let json = r.json();
    assert_eq!(json["requests"], 200);
    assert_eq!(json["from"], "gke");
    let served: u64 = json["served_by"]
        .as_object()
        .expect("served_by is a map")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(served, 200, "{r}");
}

#[test]
fn simulate_a_drain_shows_the_failover_and_the_return() {
    let r = run(&[
        "simulate",
        "--config",
        "examples/02-locality-failover/config.yaml",
        "--from",
        "anthos",
        "--drain",
        "anthos@5s-10s",
        "-n",
        "1500",
        "--wasm",
        &filter_wasm(),
    ]);
    r.code(0).stderr_empty();
    // The filter keeps preferring anthos; Envoy's priorities serve from GKE
    // while anthos's endpoints are gone, and from anthos again the moment
    // they are back: no error, no ejection.
    r.stdout_line("  -> anthos        1500")
        .stdout_line("errors (5xx): 0 (0.00%)")
        .stdout_line("timeline (1s buckets):")
        .stdout_line("      4s  anthos 100.0%")
        .stdout_line("      5s  gke 100.0%")
        .stdout_line("      9s  gke 100.0%")
        .stdout_line("     10s  anthos 100.0%")
        .stdout_line("ejections: none");
    let rows = served_by(&r);
    assert!((share_of(&rows, "gke") - 33.3).abs() < 0.5, "{r}");
}

#[test]
fn simulate_a_bad_window_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    for (spec, says) in [
        ("anthos", "expected CLUSTER@START-END, e.g. anthos@20s-50s"),
        (
            "anthos@5s",
            "expected CLUSTER@START-END, e.g. anthos@20s-50s",
        ),
        ("anthos@soon-10s", "\"soon\" is not a duration"),
        ("anthos@10s-5s", "the window ends before it starts"),
    ] {
        run(&[
            "simulate",
            "--config",
            "examples/02-locality-failover/config.yaml",
            "--drain",
            spec,
            "-n",
            "10",
            "--wasm",
            &guest,
        ])
        .code(2)
        .stdout_empty()
        .stderr_has(&format!("{spec:?}"))
        .stderr_has(says);
    }
}

/// An unknown cluster in `--from` is refused; in `--drain` it must be too,
/// whether or not its window opens before the last request.
#[test]
fn simulate_an_unknown_cluster_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    run(&[
        "simulate",
        "--config",
        "examples/02-locality-failover/config.yaml",
        "--from",
        "onprem",
        "-n",
        "10",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stderr_has("unknown cluster \"onprem\", expected one of anthos, gke");
    run(&[
        "simulate",
        "--config",
        "examples/02-locality-failover/config.yaml",
        "--drain",
        "onprem@1s-2s",
        "-n",
        "10",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stderr_has("unknown cluster \"onprem\"");
}

#[test]
fn simulate_an_invalid_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    run(&[
        "simulate",
        "--config",
        "examples/07-bad-config/bad-weights.yaml",
        "-n",
        "10",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("examples/07-bad-config/bad-weights.yaml: invalid plugin config")
    .stderr_has("routes[0].distribute[0].to: weights sum to 90, expected 100");
    run(&[
        "simulate",
        "--config",
        "examples/07-bad-config/typo.yaml",
        "-n",
        "10",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("examples/07-bad-config/typo.yaml: invalid plugin config")
    .stderr_has("unknown field `polcy`");
}

/// A position in an error about a YAML file is a line of that file, as
/// `validate` gives it, not a column of the JSON it was converted to.
#[test]
fn simulate_gives_the_yaml_line_of_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    let line = line_of(&root().join("examples/07-bad-config/typo.yaml"), "polcy:");
    let r = run(&[
        "simulate",
        "--config",
        "examples/07-bad-config/typo.yaml",
        "-n",
        "10",
        "--wasm",
        &guest,
    ]);
    r.code(2).stderr_has("unknown field `polcy`");
    let error = r
        .stderr
        .lines()
        .find(|l| l.contains("`polcy`"))
        .unwrap_or_else(|| panic!("no line names `polcy`{r}"));
    assert!(
        error.contains(&format!("(line {line}")) && !error.contains("(line 1, column"),
        "expected the YAML file's line {line}, got {error:?}{r}"
    );
}

#[test]
fn simulate_usage_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let guest = passthrough_guest(dir.path());
    run(&[
        "simulate",
        "--config",
        "examples/no-such.yaml",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stdout_empty()
    .stderr_has("cannot read examples/no-such.yaml");
    run(&[
        "simulate",
        "--config",
        "examples/03-weighted-80-20/config.yaml",
        "--rate",
        "0",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stderr_has("--rate must be at least 1");
    run(&[
        "simulate",
        "--config",
        "examples/03-weighted-80-20/config.yaml",
        "-n",
        "10",
        "--header",
        "x-user",
        "--wasm",
        &guest,
    ])
    .code(2)
    .stderr_has("--header \"x-user\": expected NAME=VALUE");
    run(&[
        "simulate",
        "--config",
        "examples/03-weighted-80-20/config.yaml",
        "-n",
        "lots",
    ])
    .code(2)
    .stderr_has("invalid value 'lots'");
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

#[test]
fn demo_walks_through_every_example() {
    // The harness walk-through; the real-Envoy one is tests/mesh_e2e.rs.
    let r = run(&["demo", "--harness", "--wasm", &filter_wasm()]);
    r.code(0).stderr_empty().stdout_lacks("✗");
    for s in example_files("scenario.yaml") {
        let name = yaml(&s)["name"].as_str().unwrap().to_string();
        r.stdout_line(&format!("=== {name}"));
    }
    assert_eq!(
        r.last_line(),
        "every step behaved as the seed article describes",
        "{r}"
    );
}

#[test]
fn demo_of_a_failing_scenario_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    failing_scenario(dir.path());
    let examples = dir.path().display().to_string();
    let r = run(&[
        "demo",
        "--harness",
        "--examples",
        &examples,
        "--wasm",
        &filter_wasm(),
    ]);
    r.code(1)
        .stdout_line("=== a failing expectation")
        .stdout_line("✓ gke stays in gke")
        .stdout_line("✗ expects anthos but gets gke")
        .stdout_has("! served by gke, expected anthos");
    assert_eq!(
        r.last_line(),
        "some steps did not behave as expected (see above)",
        "{r}"
    );
    run(&["demo", "--harness", "--examples", "examples/no-such-dir"])
        .code(2)
        .stdout_empty()
        .stderr_has("no such file or directory");
}
