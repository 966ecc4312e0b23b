//! Third-party corpus: filters built with the proxy-wasm Go SDK (issue 14), each run in
//! real Envoy (1.40, or `HYBRIDMESH_ENVOY`: `scripts/test` runs every Envoy of
//! `versions.tsv`) and in the harness (`proxy-wasm-host`) with the same inputs, compared
//! request by request.
//!
//! The filters are this project's own (`tests/go-sdk/<name>/main.go`); the SDK, its
//! runtime and its ABI code come from the Go module proxy at test time, pinned in
//! `tests/go-sdk/go.mod`. (The SDK's own examples are nested modules that the module
//! proxy does not serve; these filters cover the same ground: headers, bodies, local
//! replies, callouts, properties, metrics, shared data, the VM lifecycle, panics.)
//!
//! What is compared, for each request: the status, the response headers and body the
//! client gets, the request headers and body the upstream gets, the callout request the
//! authorization service gets, and the filter's log lines; per filter, its log lines from
//! start-up (every VM's, sorted) and its metrics. Values that change from run to run
//! (`date`, `x-request-id`, `x-envoy-upstream-service-time`) are compared by presence.
//! HTTP/1.1 framing headers the filter never sees (`connection`, `transfer-encoding`) are
//! left out on Envoy's side.
//!
//! Every difference must be in [`EXPLAINED`] with its measured cause (some only on older
//! Envoys), and every entry there that applies must still be a difference; the table this prints is the docs' (`docs/src/verification/go-sdk-corpus.md`),
//! and the test fails when the docs' copy is stale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hybridmesh_replica::{http, process};
use proxy_wasm_host::{
    ConfigDelivery, Connection, FailStrategy, Level, MetricKind, Module, Plugin, Route, Upstream,
};
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 1);
const UPSTREAM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 77, 2), 8080));
const ADMIN: u16 = 9901;
const FIRST_PORT: u16 = 10_000;
const AUTHORITY: &str = "go.test";

/// What the upstream answers (the authorization service answers `/check/allow…` with 200
/// `ok` and every other `/check…` with 403 `no`, `/check/slow…` after [`SLOW_AUTHZ`]).
const UPSTREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/plain"),
    ("x-upstream", "yes"),
    ("x-upstream-secret", "s"),
];
const UPSTREAM_BODY: &[u8] = b"hello from upstream";
/// How long the authorization service takes to answer `/check/slow…`.
const SLOW_AUTHZ: Duration = Duration::from_millis(1500);

struct Req {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
}

const fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        headers: &[],
        body: b"",
    }
}

struct Case {
    /// Its folder in `tests/go-sdk`, unless `module` says otherwise.
    name: &'static str,
    module: &'static str,
    plugin_config: &'static str,
    vm_config: &'static str,
    fail: FailStrategy,
    requests: Vec<Req>,
}

fn cases() -> Vec<Case> {
    let case = |name, requests| Case {
        name,
        module: name,
        plugin_config: "",
        vm_config: "",
        fail: FailStrategy::FailClose,
        requests,
    };
    vec![
        case(
            "headers",
            vec![Req {
                method: "GET",
                path: "/h?x=1",
                headers: &[
                    ("x-go-replaced", "old"),
                    ("x-go-removed", "gone"),
                    ("x-probe", "1"),
                ],
                body: b"",
            }],
        ),
        case(
            "body",
            vec![
                Req {
                    method: "POST",
                    path: "/b",
                    headers: &[("content-type", "text/plain")],
                    body: b"hello body",
                },
                get("/b"),
                // A direct response passes through the filter's response callbacks; the
                // request's body is never asked for.
                Req {
                    method: "POST",
                    path: "/direct",
                    headers: &[("content-type", "text/plain")],
                    body: b"hello body",
                },
            ],
        ),
        case(
            "auth",
            vec![
                get("/a"),
                Req {
                    method: "GET",
                    path: "/a",
                    headers: &[("x-token", "secret")],
                    body: b"",
                },
                Req {
                    method: "POST",
                    path: "/pkg.Service/Call",
                    headers: &[("content-type", "application/grpc"), ("te", "trailers")],
                    body: b"\0\0\0\0\0",
                },
            ],
        ),
        case(
            "callout",
            vec![
                get("/allow"),
                get("/deny"),
                get("/nowhere"),
                get("/slow"),
                get("/zero"),
            ],
        ),
        Case {
            plugin_config: r#"{"greeting": "hello"}"#,
            ..case(
                "properties",
                vec![
                    Req {
                        method: "GET",
                        path: "/p/q?x=1",
                        headers: &[("x-probe", "v")],
                        body: b"",
                    },
                    get("/plain"),
                    // The exact path route ignores the query; `/pq` is not under `/p/`.
                    get("/plain?y=2"),
                    get("/pq"),
                    // Routes the router answers itself.
                    get("/direct"),
                    get("/direct/empty"),
                ],
            )
        },
        case("metrics", vec![get("/m1"), get("/m22")]),
        Case {
            plugin_config: "not json",
            vm_config: "vm settings",
            ..case("shared", vec![get("/s"), get("/s"), get("/s")])
        },
        Case {
            name: "panic-fail-closed",
            ..case("panic", vec![get("/ok"), get("/panic"), get("/after")])
        },
        Case {
            name: "panic-fail-open",
            fail: FailStrategy::FailOpen,
            ..case("panic", vec![get("/ok"), get("/panic"), get("/after")])
        },
    ]
}

/// Differences kept, each with its measured cause: (case, observation, cause).
const EXPLAINED: &[(&str, &str, Option<u32>, &str)] = &[
    (
        "panic-fail-closed",
        "#2 GET /panic: logs",
        Some(39),
        "WASI `poll_oneoff` answers with an error there; the Go runtime calls it (`usleep`) \
         while it prints a panic, throws `fatal error: \
         wasi_snapshot_preview1.poll_oneoff` / `panic during panic`, and the panic's own \
         message is not logged; status, response and what follows are the same (measured on \
         1.36.4, 1.37.0 and 1.38.2; 1.39.3 and 1.40.0 log the message, as the harness does)",
    ),
    (
        "panic-fail-open",
        "#2 GET /panic: logs",
        Some(39),
        "as for `panic-fail-closed`",
    ),
];

/// Whether an [`EXPLAINED`] entry applies to Envoy 1.`minor` (an entry with
/// `Some(m)` is a difference of the Envoys before 1.`m` only).
fn applies_to(before: Option<u32>, minor: u32) -> bool {
    before.is_none_or(|m| minor < m)
}

// ---------------------------------------------------------------------------------------
// Building the corpus
// ---------------------------------------------------------------------------------------

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-sdk")
}

/// Builds every filter with `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`
/// into `target/go-sdk/`.
fn build(modules: &BTreeSet<&str>) -> BTreeMap<String, PathBuf> {
    let out = support::workspace().join("target/go-sdk");
    std::fs::create_dir_all(&out).unwrap();
    let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
    let version = Command::new(&go).arg("version").output();
    match version {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the Go SDK corpus needs Go 1.24 or later (`go` on PATH, or GO=/path/to/go): \
             install it from https://go.dev/dl/ or your distribution"
        ),
    }
    let mut built = BTreeMap::new();
    for m in modules {
        let wasm = out.join(format!("{m}.wasm"));
        let o = Command::new(&go)
            .current_dir(corpus_dir())
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .args(["build", "-buildmode=c-shared", "-o"])
            .arg(&wasm)
            .arg(format!("./{m}"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "go build ./{m} failed (it fetches github.com/proxy-wasm/proxy-wasm-go-sdk from \
             the Go module proxy on first use):\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        built.insert(m.to_string(), wasm);
    }
    built
}

// ---------------------------------------------------------------------------------------
// What one side saw
// ---------------------------------------------------------------------------------------

/// Observations in order, as (what, value).
type Seen = Vec<(String, String)>;

fn norm_headers(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "date" => "<date>",
                "x-request-id" => "<id>",
                "x-envoy-upstream-service-time" => "<ms>",
                _ => v.as_str(),
            };
            format!("{k}: {v}")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A request header map as the HTTP/1.1 codec writes it upstream: `:authority` becomes
/// `host`, the other pseudo-headers go to the request line.
fn http1(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| match k.as_str() {
            ":authority" => Some(("host".to_string(), v.clone())),
            k if k.starts_with(':') => None,
            _ => Some((k.clone(), v.clone())),
        })
        .collect()
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The request as it arrives over HTTP/1.1, in the order the client sends it.
fn client_headers(r: &Req) -> Vec<(String, String)> {
    let mut h = vec![("host".to_string(), AUTHORITY.to_string())];
    h.extend(
        r.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    if !r.body.is_empty() || r.method == "POST" {
        h.push(("content-length".into(), r.body.len().to_string()));
    }
    h
}

// --- the upstream and the authorization service (one loopback server) ------------------

/// Headers in the order received, names in lower case.
type Headers = Vec<(String, String)>;

#[derive(Default, Clone)]
struct Recorded {
    /// Requests the upstream got: (request line, headers, body), in order.
    upstream: Vec<(String, Headers, Vec<u8>)>,
    /// Requests the authorization service got.
    authz: Vec<(String, Headers)>,
}

fn serve(recorded: Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind(UPSTREAM).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &recorded);
            });
        }
    });
}

fn handle(conn: TcpStream, recorded: &Mutex<Recorded>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_string();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l)?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let (status, extra, answer): (u32, Vec<(&str, &str)>, &[u8]) = if path.starts_with("/check")
        {
            recorded.lock().unwrap().authz.push((request_line, headers));
            if path.starts_with("/check/slow") {
                // Past the callout's timeout (300 ms): Envoy has given up by now.
                std::thread::sleep(SLOW_AUTHZ);
            }
            if path.starts_with("/check/allow") {
                (200, vec![], b"ok")
            } else {
                (403, vec![], b"no")
            }
        } else {
            recorded
                .lock()
                .unwrap()
                .upstream
                .push((request_line, headers, body));
            (200, UPSTREAM_HEADERS.to_vec(), UPSTREAM_BODY)
        };
        let mut out = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in extra {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("content-length: {}\r\n\r\n", answer.len()));
        conn.write_all(out.as_bytes())?;
        conn.write_all(answer)?;
    }
}

// --- Envoy ------------------------------------------------------------------------------

fn socket(ip: Ipv4Addr, port: u16) -> Value {
    json!({"socket_address": {"address": ip.to_string(), "port_value": port}})
}

fn policy(f: FailStrategy) -> &'static str {
    match f {
        FailStrategy::FailClose => "FAIL_CLOSED",
        FailStrategy::FailOpen => "FAIL_OPEN",
        FailStrategy::FailReload => "FAIL_RELOAD",
        FailStrategy::FailOpenLegacy => unreachable!("not used here"),
    }
}

/// The body of the bootstrap's `/direct` route's `direct_response`.
const DIRECT_BODY: &str = "direct-ok\n";

/// What the listeners' `set_metadata` filter writes to namespace `probe`, ahead of the
/// Wasm filter: one field of each `google.protobuf.Value` kind.
fn probe_metadata() -> Value {
    json!({"s": "text", "n": 7, "b": true, "z": null, "nested": {"k": "v"}, "list": ["a", 1]})
}

fn string_value(s: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": s})
}

fn bootstrap(cases: &[Case], wasm: &BTreeMap<String, PathBuf>) -> Value {
    let upstream = |name: &str| {
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": UPSTREAM.ip().to_string(), "port_value": UPSTREAM.port()}}}}]}]}})
    };
    let listeners: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = format!("go-{}", c.name);
            let mut vm = json!({"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm[c.module].display().to_string()}}});
            if !c.vm_config.is_empty() {
                vm["configuration"] = string_value(c.vm_config);
            }
            let mut config = json!({"name": name, "root_id": "", "vm_config": vm,
                "failure_policy": policy(c.fail)});
            if !c.plugin_config.is_empty() {
                config["configuration"] = string_value(c.plugin_config);
            }
            json!({
                "name": name,
                "address": socket(IP, FIRST_PORT + i as u16),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": name,
                        "route_config": {"name": "local", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [
                                {"name": "direct-empty", "match": {"prefix": "/direct/empty"},
                                 "direct_response": {"status": 503}},
                                {"name": "direct", "match": {"prefix": "/direct"},
                                 "direct_response": {"status": 200,
                                     "body": {"inline_string": DIRECT_BODY}}},
                                {"name": "exact-plain", "match": {"path": "/plain"},
                                 "route": {"cluster": "second"}},
                                {"name": "prefix-p", "match": {"prefix": "/p/"},
                                 "route": {"cluster": "second"}},
                                {"name": "to-upstream", "match": {"prefix": "/"},
                                 "route": {"cluster": "upstream"}}]}]},
                        "http_filters": [
                            // Another filter's dynamic metadata for the Wasm filter to read.
                            {"name": "envoy.filters.http.set_metadata", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
                                "metadata": [{"metadata_namespace": "probe", "value": probe_metadata()}]}},
                            {"name": name, "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": config}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]}}]}]
            })
        })
        .collect();
    json!({
        "node": {"id": "go-sdk-node", "cluster": "go-sdk"},
        "stats_flush_interval": "1s",
        "admin": {"address": socket(IP, ADMIN)},
        "static_resources": {"listeners": listeners,
                             "clusters": [upstream("upstream"), upstream("second"), upstream("authz")]}
    })
}

/// `wasm log <plugin>[ <root id>]: <message>` lines of one filter, from `text`.
fn envoy_logs(text: &str, plugin: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] wasm log ")?;
            let (prefix, msg) = rest.split_once(": ")?;
            if prefix.split(' ').next() != Some(plugin) {
                return None;
            }
            let level = l.split("][").nth(1).unwrap_or("");
            let level = if level == "warning" { "warn" } else { level };
            Some(format!("{level}: {msg}"))
        })
        .collect()
}

fn run_envoy(cases: &[Case], wasm: &BTreeMap<String, PathBuf>) -> Vec<Seen> {
    let workspace = support::workspace();
    let binary = process::envoy_binary(&workspace).unwrap();
    let dir = workspace.join("target/go-sdk/envoy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bootstrap.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&bootstrap(cases, wasm)).unwrap(),
    )
    .unwrap();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    serve(recorded.clone());
    let admin = SocketAddr::V4(SocketAddrV4::new(IP, ADMIN));
    let envoy = process::spawn(&binary, "go-sdk", &path, admin, &dir).unwrap();
    // V8 compiles each 2.7 MB module before the listeners are ready.
    envoy.wait_ready(Duration::from_secs(180)).unwrap();
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let plugin = format!("go-{}", c.name);
        let mut seen = Seen::new();
        let mut logged = envoy_logs(&envoy.log_text(), &plugin);
        let mut startup = logged.clone();
        startup.sort();
        seen.push(("start-up logs".into(), startup.join(" / ")));
        let addr = SocketAddr::V4(SocketAddrV4::new(IP, FIRST_PORT + i as u16));
        for (n, r) in c.requests.iter().enumerate() {
            let key = format!("#{} {} {}", n + 1, r.method, r.path);
            let before = recorded.lock().unwrap().clone();
            let extra: Vec<(String, String)> = client_headers(r)
                .into_iter()
                .filter(|(k, _)| k != "host" && k != "content-length")
                .collect();
            let body = (!r.body.is_empty()).then_some(r.body);
            let resp = http::request(addr, r.method, r.path, AUTHORITY, &extra, body).unwrap();
            let logs = wait_logs(&envoy, &plugin, logged.len());
            let after = recorded.lock().unwrap().clone();
            seen.push((format!("{key}: status"), resp.status.to_string()));
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                // This client asks Envoy to close every connection: Envoy's
                // `connection: close` says so, not how it framed the response.
                .filter(|(k, _)| k != "connection")
                .cloned()
                .collect();
            seen.push((format!("{key}: response headers"), norm_headers(&headers)));
            seen.push((format!("{key}: response body"), text(&resp.body)));
            let upstream = after.upstream[before.upstream.len()..].to_vec();
            seen.push((
                format!("{key}: upstream request"),
                match upstream.as_slice() {
                    [] => "none".into(),
                    [(line, h, b)] => format!("{line} | {} | body {:?}", norm_headers(h), text(b)),
                    more => format!("{} requests", more.len()),
                },
            ));
            let authz = after.authz[before.authz.len()..].to_vec();
            seen.push((
                format!("{key}: callout request"),
                match authz.as_slice() {
                    [] => "none".into(),
                    [(line, h)] => format!("{line} | {}", norm_headers(h)),
                    more => format!("{} requests", more.len()),
                },
            ));
            seen.push((format!("{key}: logs"), logs[logged.len()..].join(" / ")));
            logged = logs;
        }
        if c.name == "metrics" {
            // Histograms reach the admin API at the next stats flush (1 s here).
            std::thread::sleep(Duration::from_millis(1500));
            let stats = http::get(admin, "/stats/prometheus").unwrap();
            let mut metrics: Vec<String> = stats
                .text()
                .lines()
                // Envoy names the filter's metrics `wasmcustom.<name>`; Prometheus output
                // leaves the namespace out.
                .filter(|l| l.starts_with("go_") && !l.contains("_bucket"))
                .map(|l| match l.split_once("_sum{} ") {
                    // Envoy's histograms keep log-linear buckets: the sum is approximate
                    // (7.0986 for 3 + 4). Whole numbers are compared.
                    Some((name, sum)) => {
                        let sum: f64 = sum.parse().unwrap_or(f64::NAN);
                        format!("{name}_sum{{}} {sum:.0}")
                    }
                    None => l.to_string(),
                })
                .collect();
            metrics.sort();
            seen.push(("metrics".into(), metrics.join(" / ")));
        }
        out.push(seen);
    }
    envoy.stop();
    out
}

/// The filter's log lines once Envoy has written everything for the last request (the
/// stream's end is logged after the client has its response).
fn wait_logs(envoy: &process::Envoy, plugin: &str, before: usize) -> Vec<String> {
    let start = Instant::now();
    let mut last = envoy_logs(&envoy.log_text(), plugin);
    let mut stable_since = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        let now = envoy_logs(&envoy.log_text(), plugin);
        if now.len() != last.len() {
            last = now;
            stable_since = Instant::now();
        } else if last.len() > before && stable_since.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    last
}

// --- the harness ------------------------------------------------------------------------

/// The bootstrap's route table: `/plain` exactly (query aside) and the `/p/` prefix go to
/// cluster `second` (the same server), the rest to `upstream`.
fn routes() -> Vec<Route> {
    vec![
        Route::new("direct-empty")
            .path_prefix("/direct/empty")
            .direct_response(503, b""),
        Route::new("direct")
            .path_prefix("/direct")
            .direct_response(200, DIRECT_BODY.as_bytes()),
        Route::new("exact-plain").path("/plain").cluster("second"),
        Route::new("prefix-p").path_prefix("/p/").cluster("second"),
        Route::new("to-upstream").cluster("upstream"),
    ]
}

fn run_harness(cases: &[Case], wasm: &BTreeMap<String, PathBuf>) -> Vec<Seen> {
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let module = Module::from_file(&wasm[c.module]).unwrap();
        let name = format!("go-{}", c.name);
        let mut b = Plugin::builder(&module)
            .identity(&name, "", &name)
            .workers(1)
            .fail_strategy(c.fail)
            .delivery(ConfigDelivery::Static)
            .routes(routes())
            .cluster("upstream")
            .cluster("authz")
            .log_level(Level::Debug);
        if !c.plugin_config.is_empty() {
            b = b.plugin_config(c.plugin_config.as_bytes());
        }
        if !c.vm_config.is_empty() {
            b = b.vm_config(c.vm_config.as_bytes());
        }
        let mut p = b.build().unwrap();
        let logs = |p: &Plugin, from: usize| -> Vec<String> {
            p.logs_since(from)
                .iter()
                .filter(|l| l.level >= Level::Info)
                .map(|l| format!("{}: {}", l.level, l.message))
                .collect()
        };
        let mut seen = Seen::new();
        let mut startup = logs(&p, 0);
        startup.sort();
        seen.push(("start-up logs".into(), startup.join(" / ")));
        for (n, r) in c.requests.iter().enumerate() {
            let key = format!("#{} {} {}", n + 1, r.method, r.path);
            let from = p.log_count();
            // The request as Envoy's HTTP/1.1 codec hands it to the filters.
            let mut headers: Vec<(String, String)> = vec![
                (":authority".into(), AUTHORITY.into()),
                (":path".into(), r.path.into()),
                (":method".into(), r.method.into()),
            ];
            headers.extend(client_headers(r).into_iter().filter(|(k, _)| k != "host"));
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut s = p.stream(0).connection(
                Connection::plaintext()
                    .source("127.0.0.1:50000")
                    .destination(&format!("{IP}:{}", FIRST_PORT + i as u16)),
            );
            // What the listener's `set_metadata` filter leaves for the Wasm filter.
            if let Value::Object(fields) = probe_metadata() {
                for (key, value) in &fields {
                    s.filter_metadata("probe", key, hybridmesh_sim::mesh::struct_value(value));
                }
            }
            // An HTTP/1.1 client, as the harness's default connection.
            s.request(&pairs, r.body).unwrap();
            // Answer the callouts as the authorization service does.
            let mut callout = "none".to_string();
            let pending = s.http_callouts();
            for call in pending {
                let path = call
                    .headers
                    .iter()
                    .find(|(k, _)| k == ":path")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                callout = format!(
                    "GET {path} HTTP/1.1 | {}",
                    norm_headers(&http1(&call.wire_headers()))
                );
                if path.starts_with("/check/slow") {
                    // The service answers too late: the harness clock passes the
                    // callout's timeout, as Envoy's does.
                    s.plugin().advance(call.timeout).unwrap();
                    continue;
                }
                let (status, body): (u32, &[u8]) = if path.starts_with("/check/allow") {
                    (200, b"ok")
                } else {
                    (403, b"no")
                };
                let len = body.len().to_string();
                s.respond_http_call(call.token, status, &[("content-length", &len)], body)
                    .unwrap();
            }
            if s.request_forwarded() && !s.is_finished() {
                let len = UPSTREAM_BODY.len().to_string();
                let mut up = Upstream::new(200)
                    .protocol("HTTP/1.1")
                    .address(&UPSTREAM.to_string())
                    .service_time_ms(0)
                    .body(UPSTREAM_BODY);
                for (k, v) in UPSTREAM_HEADERS
                    .iter()
                    .chain([&("content-length", len.as_str())])
                {
                    up = up.header(k, v);
                }
                s.respond(up).unwrap();
            }
            s.complete().unwrap();
            seen.push((
                format!("{key}: status"),
                s.client_response_status()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
            ));
            let client: Vec<(String, String)> = s
                .client_response_headers()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| !k.starts_with(':') && k != "connection")
                .collect();
            seen.push((format!("{key}: response headers"), norm_headers(&client)));
            seen.push((
                format!("{key}: response body"),
                text(&s.client_response_body()),
            ));
            seen.push((
                format!("{key}: upstream request"),
                match s.upstream_request_headers() {
                    Some(h) if s.request_forwarded() => format!(
                        "{} {} HTTP/1.1 | {} | body {:?}",
                        r.method,
                        r.path,
                        norm_headers(&http1(&h)),
                        text(&s.upstream_request_body())
                    ),
                    _ => "none".into(),
                },
            ));
            seen.push((format!("{key}: callout request"), callout));
            drop(s);
            seen.push((format!("{key}: logs"), logs(&p, from).join(" / ")));
        }
        if c.name == "metrics" {
            let mut metrics: Vec<String> = Vec::new();
            for m in p.metrics() {
                match m.kind {
                    MetricKind::Histogram => {
                        let sum: u64 = m.samples.iter().sum();
                        metrics.push(format!("{}_count{{}} {}", m.name, m.samples.len()));
                        metrics.push(format!("{}_sum{{}} {sum}", m.name));
                    }
                    _ => metrics.push(format!("{}{{}} {}", m.name, m.value)),
                }
            }
            metrics.sort();
            seen.push(("metrics".into(), metrics.join(" / ")));
        }
        out.push(seen);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------

#[test]
fn go_sdk_filters_behave_in_the_harness_as_in_envoy() {
    support::require_envoy();
    let version = hybridmesh_replica::process::envoy_binary(&support::workspace())
        .and_then(|b| hybridmesh_replica::process::envoy_version(&b))
        .unwrap();
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("Envoy version {version:?}"));
    let cases = cases();
    let modules: BTreeSet<&str> = cases.iter().map(|c| c.module).collect();
    let wasm = build(&modules);
    let envoy = run_envoy(&cases, &wasm);
    let harness = run_harness(&cases, &wasm);
    let mut table = String::from(
        "| filter (`crates/replica/tests/go-sdk/`) | what it does | observations | equal | explained |\n\
         |---|---|---|---|---|\n",
    );
    let mut unexplained = Vec::new();
    let mut used = BTreeSet::new();
    for ((c, e), h) in cases.iter().zip(&envoy).zip(&harness) {
        let he: BTreeMap<&str, &str> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (mut equal, mut explained_here) = (0, 0);
        for (k, ev) in e {
            let hv = he.get(k.as_str()).copied().unwrap_or("(not observed)");
            if ev == hv {
                equal += 1;
                continue;
            }
            let explained = EXPLAINED.iter().position(|(case, what, before, _)| {
                *case == c.name && k.as_str() == *what && applies_to(*before, minor)
            });
            match explained {
                Some(i) => {
                    used.insert(i);
                    explained_here += 1;
                }
                None => unexplained.push(format!(
                    "{} · {k}\n    envoy:   {ev}\n    harness: {hv}",
                    c.name
                )),
            }
        }
        let what = purpose(c.module);
        let strategy = match c.fail {
            FailStrategy::FailClose => "",
            _ => " (`FAIL_OPEN`)",
        };
        table.push_str(&format!(
            "| `{}`{strategy} | {what} | {} | {equal} | {explained_here} |\n",
            c.module,
            e.len()
        ));
    }
    table.push('\n');
    for (case, what, before, why) in EXPLAINED {
        let only = before
            .map(|m| format!(" (Envoy before 1.{m})"))
            .unwrap_or_default();
        table.push_str(&format!("- `{case}`, {what}{only}: {why}\n"));
    }
    println!("{table}");
    // The docs show the table of the replica's default Envoy (the first
    // envoy row of versions.tsv); on the others it is written beside it.
    let default = hybridmesh_ops::support::versions()
        .into_iter()
        .find(|r| matches!(r.subject, hybridmesh_ops::support::Subject::Envoy(_)))
        .map(|r| r.envoy)
        .unwrap();
    let out = if version == default {
        support::workspace().join("target/go-sdk/table.md")
    } else {
        support::workspace().join(format!("target/go-sdk/table-{version}.md"))
    };
    std::fs::write(&out, &table).unwrap();
    assert!(
        unexplained.is_empty(),
        "the harness differs from Envoy {version} ({} differences):\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let stale: Vec<_> = EXPLAINED
        .iter()
        .enumerate()
        .filter(|(i, (_, _, before, _))| applies_to(*before, minor) && !used.contains(i))
        .collect();
    assert!(
        stale.is_empty(),
        "explained differences that no longer occur: {stale:?}"
    );
    let detail = format!(
        "{} cases, {} explained differences",
        cases.len(),
        used.len()
    );
    if version != default {
        support::record("go-sdk-corpus", &detail);
        return;
    }
    let page = "docs/src/verification/go-sdk-corpus.md";
    let readme = std::fs::read_to_string(support::workspace().join(page)).unwrap();
    let start = "<!-- go-sdk-corpus: made by crates/replica/tests/go_sdk.rs -->\n";
    let shown = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- /go-sdk-corpus -->"))
        .map(|(table, _)| table);
    assert_eq!(
        shown,
        Some(table.as_str()),
        "{page}'s Go SDK corpus table is stale: replace what stands between its markers \
         with {}",
        out.display()
    );
    support::record("go-sdk-corpus", &detail);
}

/// The first line of a filter's `main.go` comment: `// <name>: <what it does>`.
fn purpose(module: &str) -> String {
    let source = std::fs::read_to_string(corpus_dir().join(module).join("main.go")).unwrap();
    let mut text = String::new();
    for line in source.lines() {
        let Some(l) = line.strip_prefix("// ") else {
            break;
        };
        text.push_str(l);
        text.push(' ');
    }
    let text = text.trim();
    let text = text.strip_prefix(&format!("{module}: ")).unwrap_or(text);
    text.to_string()
}
