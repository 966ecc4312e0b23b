//! The benchmark's Envoy bootstraps: one listener, one worker, the variant's
//! HTTP filter (or none) in front of the router, a route table shaped like
//! Istio's for `echo-svc` (per-cluster subsets matched on the target header,
//! then the default), answering directly or through a real upstream.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use serde_json::{json, Value};

/// Where the benchmark's processes listen.
pub const LISTEN_PORT: u16 = 8080;
pub const ADMIN_PORT: u16 = 9901;
pub const SERVICE: &str = "echo-svc.default.svc.cluster.local";
pub const STAT_PREFIX: &str = "bench";

/// The filter under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No HTTP filter but the router: the floor.
    None,
    /// Envoy's Lua filter doing the tagging job.
    Lua,
    /// A Wasm filter whose every callback returns at once: what any Wasm
    /// filter costs in Envoy before it does anything.
    Empty,
    /// The empty filter making ten cheap host calls (the clock) on each
    /// request: what one call across the V8 boundary costs.
    Calls,
    /// An empty filter built with the proxy-wasm Rust SDK (every callback
    /// continues): the SDK's own floor, its context maps, boxing, dispatch
    /// and every callback it exports.
    SdkEmpty,
    /// The naive SDK way to tag: identity cached at configure time, then per
    /// request four `set_http_request_header` calls and one counter.
    SdkTag,
    /// The hybridmesh filter, policy `none` (tag and record only).
    Tag,
    /// The hybridmesh filter on the client side: tags, an 80/20 weighted
    /// decision, the hop record in filter state.
    Weighted,
    /// The hybridmesh filter on the server side: trusts the source headers,
    /// checks the cluster-local rule, says who served.
    Server,
    /// [`Variant::Tag`], [`Variant::Weighted`] and [`Variant::Server`] with
    /// another build of the filter (`--compare-wasm`): before and after a
    /// change, side by side in one run.
    TagBefore,
    WeightedBefore,
    ServerBefore,
}

impl Variant {
    pub const ALL: [Variant; 12] = [
        Variant::None,
        Variant::Lua,
        Variant::Empty,
        Variant::Calls,
        Variant::SdkEmpty,
        Variant::SdkTag,
        Variant::Tag,
        Variant::Weighted,
        Variant::Server,
        Variant::TagBefore,
        Variant::WeightedBefore,
        Variant::ServerBefore,
    ];

    /// Every variant but the `--compare-wasm` ones.
    pub const CORE: [Variant; 9] = [
        Variant::None,
        Variant::Lua,
        Variant::Empty,
        Variant::Calls,
        Variant::SdkEmpty,
        Variant::SdkTag,
        Variant::Tag,
        Variant::Weighted,
        Variant::Server,
    ];

    /// The variant a `--compare-wasm` variant compares with.
    pub fn after(self) -> Variant {
        match self {
            Variant::TagBefore => Variant::Tag,
            Variant::WeightedBefore => Variant::Weighted,
            Variant::ServerBefore => Variant::Server,
            v => v,
        }
    }

    pub fn is_before(self) -> bool {
        self.after() != self
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "no filter",
            Variant::Lua => "Lua, tagging",
            Variant::Empty => "empty Wasm filter (returns at once)",
            Variant::Calls => "empty Wasm filter + 10 host calls per request",
            Variant::SdkEmpty => "empty filter on the proxy-wasm Rust SDK",
            Variant::SdkTag => "naive SDK filter: 4 header calls + 1 counter",
            Variant::Tag => "hybridmesh, tag only (policy none)",
            Variant::Weighted => "hybridmesh, client side: tag + weighted 80/20 + hop record",
            Variant::Server => "hybridmesh, server side: trust + cluster-local + served-by",
            Variant::TagBefore => "the same, tag only, --compare-wasm build",
            Variant::WeightedBefore => "the same, client side, --compare-wasm build",
            Variant::ServerBefore => "the same, server side, --compare-wasm build",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Lua => "lua",
            Variant::Empty => "empty",
            Variant::Calls => "calls",
            Variant::SdkEmpty => "sdk-empty",
            Variant::SdkTag => "sdk-tag",
            Variant::Tag => "tag",
            Variant::Weighted => "weighted",
            Variant::Server => "server",
            Variant::TagBefore => "tag-before",
            Variant::WeightedBefore => "weighted-before",
            Variant::ServerBefore => "server-before",
        }
    }

    /// A variant running the hybridmesh filter (this build or the other).
    pub fn is_ours(self) -> bool {
        matches!(
            self,
            Variant::Tag
                | Variant::Weighted
                | Variant::Server
                | Variant::TagBefore
                | Variant::WeightedBefore
                | Variant::ServerBefore
        )
    }

    pub fn is_wasm(self) -> bool {
        matches!(
            self,
            Variant::Empty
                | Variant::Calls
                | Variant::SdkEmpty
                | Variant::SdkTag
                | Variant::Tag
                | Variant::Weighted
                | Variant::Server
                | Variant::TagBefore
                | Variant::WeightedBefore
                | Variant::ServerBefore
        )
    }

    /// The hybridmesh filter itself (not a reference point).
    pub fn is_filter(self) -> bool {
        matches!(
            self.after(),
            Variant::Tag | Variant::Weighted | Variant::Server
        )
    }

    /// Headers the load generator sends (the server side gets what a client
    /// sidecar would have set).
    pub fn request_headers(self) -> Vec<(&'static str, &'static str)> {
        self.headers(HeaderSet::Common)
    }

    /// The request headers of a header set, besides `host` (the server side
    /// also gets what a client sidecar would have set).
    pub fn headers(self, set: HeaderSet) -> Vec<(&'static str, &'static str)> {
        let mut h = match set {
            HeaderSet::Bare => Vec::new(),
            HeaderSet::Common => COMMON_HEADERS.to_vec(),
            HeaderSet::Heavy => HEAVY_HEADERS.to_vec(),
        };
        h.extend(match self.after() {
            Variant::Server => vec![
                ("x-hybridmesh-source-cluster", "gke"),
                ("x-hybridmesh-source-network", "kuchima-demo-vpc01"),
                (
                    "x-hybridmesh-source-locality",
                    "asia-northeast1/asia-northeast1-a",
                ),
            ],
            _ => Vec::new(),
        });
        h
    }
}

/// What an application's request through a sidecar typically carries
/// besides `:authority` (every variant gets the same).
pub const COMMON_HEADERS: [(&str, &str); 6] = [
    ("user-agent", "curl/8.5.0"),
    ("accept", "*/*"),
    ("x-request-id", "3f1c2a9e-8d7b-4c6a-9f0e-2b1d5c7a8e90"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("x-forwarded-proto", "http"),
    ("baggage", "user=alice"),
];

/// What an application's request carries when it comes from a browser-facing
/// service: cookies, a bearer token, tracing, forwarding: 12 headers besides
/// `host`, about 1 KB. A filter that only reads what it needs pays little
/// more for these than for a bare request.
pub const HEAVY_HEADERS: [(&str, &str); 12] = [
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "ja,en-US;q=0.9,en;q=0.8"),
    ("accept-encoding", "gzip, deflate, br"),
    ("cookie", "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; cart=3f1c2a9e-8d7b-4c6a-9f0e-2b1d5c7a8e90; consent=analytics:1,ads:0"),
    ("authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImhtLTEifQ.eyJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoiZWNoby1zdmMiLCJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiZXhwIjoxOTAwMDAwMDAwfQ.c2lnbmF0dXJlLW5vdC1jaGVja2VkLWJ5LXRoZS1iZW5jaG1hcms"),
    ("x-request-id", "3f1c2a9e-8d7b-4c6a-9f0e-2b1d5c7a8e90"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("baggage", "user=alice,tenant=acme,region=asia-northeast1"),
    ("x-forwarded-for", "203.0.113.7, 10.24.1.3"),
    ("x-forwarded-proto", "https"),
];

/// Which request headers the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeaderSet {
    /// Only `host`: the floor of a request.
    Bare,
    /// [`COMMON_HEADERS`]: what the throughput runs send.
    Common,
    /// [`HEAVY_HEADERS`].
    Heavy,
}

impl HeaderSet {
    pub fn name(self) -> &'static str {
        match self {
            HeaderSet::Bare => "bare GET",
            HeaderSet::Common => "6 typical headers",
            HeaderSet::Heavy => "12 headers, 1 KB",
        }
    }
}

/// Direct response (the filter is the only variable) or a real upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Direct,
    Upstream,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct response",
            Mode::Upstream => "real upstream",
        }
    }
}

/// Loopback addresses: 127.78.<set>.<variant+1> (set 1: direct response,
/// 2: real upstream, 3: start-up runs, 4: the memory run); the upstream is
/// 127.78.9.1.
pub fn address(set: u8, variant: Variant) -> Ipv4Addr {
    let m = set;
    let v = Variant::ALL.iter().position(|x| *x == variant).unwrap_or(0) as u8;
    Ipv4Addr::new(127, 78, m, v + 1)
}

pub fn upstream_address() -> Ipv4Addr {
    Ipv4Addr::new(127, 78, 9, 1)
}

pub fn listener(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, LISTEN_PORT))
}

pub fn admin(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, ADMIN_PORT))
}

fn socket(ip: Ipv4Addr, port: u16) -> Value {
    json!({"socket_address": {"address": ip.to_string(), "port_value": port}})
}

fn served_by(cluster: &str, network: &str) -> Value {
    json!([{"header": {"key": "x-hybridmesh-served-by",
                        "value": format!("cluster={cluster};network={network}")},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}])
}

/// The route table: a route per cluster subset matched on the target header
/// (as Istio's VirtualService for per-cluster subsets), then the default.
fn routes(mode: Mode, variant: Variant) -> Value {
    let gke = ("gke", "kuchima-demo-vpc01", "GKE!!!");
    let anthos = ("anthos", "default", "Anthos!!!");
    let action = |subset: &str, body: &str| -> Value {
        match mode {
            Mode::Direct => {
                json!({"direct_response": {"status": 200, "body": {"inline_string": body}}})
            }
            Mode::Upstream => {
                json!({"route": {"cluster": format!("outbound|80|{subset}|{SERVICE}")}})
            }
        }
    };
    let mut routes: Vec<Value> = Vec::new();
    if variant.after() != Variant::Server {
        for (cluster, network, body) in [gke, anthos] {
            let mut r = json!({
                "name": cluster,
                "match": {"prefix": "/", "headers": [{"name": "x-hybridmesh-target-cluster",
                          "string_match": {"exact": cluster}}]},
            });
            let a = action(cluster, body);
            for (k, v) in a.as_object().into_iter().flatten() {
                r[k] = v.clone();
            }
            // What the server sidecar's filter would add (direct response:
            // there is no server side).
            if mode == Mode::Direct {
                r["response_headers_to_add"] = served_by(cluster, network);
            }
            routes.push(r);
        }
    }
    let mut default = json!({"name": "default", "match": {"prefix": "/"}});
    let a = action("", gke.2);
    for (k, v) in a.as_object().into_iter().flatten() {
        default[k] = v.clone();
    }
    if mode == Mode::Direct && variant.after() != Variant::Server {
        default["response_headers_to_add"] = served_by(gke.0, gke.1);
    }
    routes.push(default);
    json!({"name": "bench", "virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": routes}]})
}

const LUA: &str = r#"
function envoy_on_request(h)
  local headers = h:headers()
  headers:remove("x-hybridmesh-target-cluster")
  headers:replace("x-hybridmesh-source-cluster", "gke")
  headers:replace("x-hybridmesh-source-network", "kuchima-demo-vpc01")
  headers:replace("x-hybridmesh-source-locality", "asia-northeast1/asia-northeast1-a")
end
"#;

fn filters(variant: Variant, wasm: &Path, plugin_json: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    match variant {
        Variant::None => {}
        Variant::Lua => out.push(json!({"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA}}})),
        Variant::Empty
        | Variant::Calls
        | Variant::SdkEmpty
        | Variant::SdkTag
        | Variant::Tag
        | Variant::Weighted
        | Variant::Server
        | Variant::TagBefore
        | Variant::WeightedBefore
        | Variant::ServerBefore => out.push(json!({
        "name": "istio-system.hybridmesh",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "istio-system.hybridmesh",
                "root_id": "",
                "vm_config": {"vm_id": "hybridmesh", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": wasm.display().to_string()}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": String::from_utf8_lossy(plugin_json)},
                "failure_policy": "FAIL_CLOSED"
            }}})),
    }
    out.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    out
}

/// The bootstrap of the Envoy under test.
pub fn bootstrap(
    ip: Ipv4Addr,
    mode: Mode,
    variant: Variant,
    wasm: &Path,
    plugin_json: &[u8],
) -> Value {
    let direction = if variant.after() == Variant::Server {
        "INBOUND"
    } else {
        "OUTBOUND"
    };
    let hcm = json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "route_config": routes(mode, variant),
        "http_filters": filters(variant, wasm, plugin_json)}});
    let mut clusters = Vec::new();
    if mode == Mode::Upstream {
        let subsets: &[&str] = if variant.after() == Variant::Server {
            &[""]
        } else {
            &["gke", "anthos", ""]
        };
        for subset in subsets {
            clusters.push(json!({
                "name": format!("outbound|80|{subset}|{SERVICE}"),
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": format!("outbound|80|{subset}|{SERVICE}"),
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(upstream_address(), LISTEN_PORT)}}]}]}
            }));
        }
    }
    json!({
        "node": {
            "id": format!("sidecar~{ip}~bench.default~default.svc.cluster.local"),
            "cluster": "bench.default",
            "locality": {"region": "asia-northeast1", "zone": "asia-northeast1-a"},
            "metadata": {"CLUSTER_ID": "gke", "NETWORK": "kuchima-demo-vpc01",
                         "NAMESPACE": "default", "ISTIO_VERSION": "1.28.0"}
        },
        "admin": {"address": socket(ip, ADMIN_PORT)},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": socket(ip, LISTEN_PORT),
                "traffic_direction": direction,
                "filter_chains": [{"filters": [hcm]}]
            }],
            "clusters": clusters
        }
    })
}

/// A minimal proxy-wasm module: the exports Envoy needs, every callback
/// returns at once (continue); `imports` and the body of
/// `proxy_on_request_headers` (before it returns continue) are spliced in.
fn minimal_module(imports: &str, on_request: &str) -> String {
    minimal_module_with_data(imports, "", on_request)
}

fn minimal_module_with_data(imports: &str, data: &str, on_request: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  {data}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32)
    {on_request}
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) i32.const 0)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))"#
    )
}

/// The empty filter.
pub fn empty_module() -> String {
    minimal_module("", "")
}

/// The empty filter whose request-headers callback asks for the time ten
/// times (the cheapest host call: no data copied into the guest).
pub fn calls_module() -> String {
    minimal_module(
        r#"(import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))"#,
        r#"(loop $again
      (drop (call $now (i32.const 64)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10))))"#,
    )
}

/// One host call, made ten times per request by an otherwise empty module:
/// a tenth of what that adds to the empty module is the call's price in
/// Envoy (the host call itself, the data it copies, the allocation callback
/// into the guest for calls that return data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// `proxy_get_current_time_nanoseconds`: no data copied.
    Clock,
    /// `proxy_get_header_map_pairs` of the request headers.
    GetPairs,
    /// `proxy_get_header_map_value` of `:authority`.
    GetValue,
    /// `proxy_add_header_map_value` of a new request header.
    AddHeader,
    /// `proxy_replace_header_map_value` of one request header.
    ReplaceHeader,
    /// `proxy_remove_header_map_value` of a header that is not there.
    RemoveHeader,
    /// `proxy_get_property` of `connection.mtls`.
    GetProperty,
    /// `proxy_set_property`: filter state, a 300-byte value.
    SetProperty,
    /// `proxy_get_shared_data` of a missing key.
    GetShared,
    /// `proxy_increment_metric`.
    Increment,
}

impl Probe {
    pub const ALL: [Probe; 10] = [
        Probe::Clock,
        Probe::GetPairs,
        Probe::GetValue,
        Probe::AddHeader,
        Probe::ReplaceHeader,
        Probe::RemoveHeader,
        Probe::GetProperty,
        Probe::SetProperty,
        Probe::GetShared,
        Probe::Increment,
    ];

    pub fn call(self) -> &'static str {
        match self {
            Probe::Clock => "proxy_get_current_time_nanoseconds",
            Probe::GetPairs => "proxy_get_header_map_pairs (request)",
            Probe::GetValue => "proxy_get_header_map_value (:authority)",
            Probe::AddHeader => "proxy_add_header_map_value (request)",
            Probe::ReplaceHeader => "proxy_replace_header_map_value (request)",
            Probe::RemoveHeader => "proxy_remove_header_map_value (absent header)",
            Probe::GetProperty => "proxy_get_property (connection.mtls)",
            Probe::SetProperty => "proxy_set_property (filter state, 300 bytes)",
            Probe::GetShared => "proxy_get_shared_data (missing key)",
            Probe::Increment => "proxy_increment_metric",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Probe::Clock => "clock",
            Probe::GetPairs => "get-pairs",
            Probe::GetValue => "get-value",
            Probe::AddHeader => "add-header",
            Probe::ReplaceHeader => "replace-header",
            Probe::RemoveHeader => "remove-header",
            Probe::GetProperty => "get-property",
            Probe::SetProperty => "set-property",
            Probe::GetShared => "get-shared",
            Probe::Increment => "increment",
        }
    }

    /// The probe's module (WAT): ten calls in `proxy_on_request_headers`.
    pub fn module(self) -> String {
        // Strings at fixed addresses; out-pointers at 64 and 72; the host
        // writes returned data at 1024 (the module's allocator).
        let data = r#"(data (i32.const 256) "x-probe-header")
  (data (i32.const 288) "probe-value")
  (data (i32.const 320) ":authority")
  (data (i32.const 352) "connection\00mtls")
  (data (i32.const 384) "probe.state")
  (data (i32.const 416) "probe.shared")"#;
        let (import, call) = match self {
            Probe::Clock => (
                r#"(import "env" "proxy_get_current_time_nanoseconds" (func $f (param i32) (result i32)))"#,
                "(call $f (i32.const 64))",
            ),
            Probe::GetPairs => (
                r#"(import "env" "proxy_get_header_map_pairs" (func $f (param i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 0) (i32.const 64) (i32.const 72))",
            ),
            Probe::GetValue => (
                r#"(import "env" "proxy_get_header_map_value" (func $f (param i32 i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 0) (i32.const 320) (i32.const 10) (i32.const 64) (i32.const 72))",
            ),
            Probe::AddHeader => (
                r#"(import "env" "proxy_add_header_map_value" (func $f (param i32 i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 0) (i32.const 256) (i32.const 14) (i32.const 288) (i32.const 11))",
            ),
            Probe::ReplaceHeader => (
                r#"(import "env" "proxy_replace_header_map_value" (func $f (param i32 i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 0) (i32.const 256) (i32.const 14) (i32.const 288) (i32.const 11))",
            ),
            Probe::RemoveHeader => (
                r#"(import "env" "proxy_remove_header_map_value" (func $f (param i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 0) (i32.const 256) (i32.const 14))",
            ),
            Probe::GetProperty => (
                r#"(import "env" "proxy_get_property" (func $f (param i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 352) (i32.const 15) (i32.const 64) (i32.const 72))",
            ),
            Probe::SetProperty => (
                r#"(import "env" "proxy_set_property" (func $f (param i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 384) (i32.const 11) (i32.const 2048) (i32.const 300))",
            ),
            Probe::GetShared => (
                r#"(import "env" "proxy_get_shared_data" (func $f (param i32 i32 i32 i32 i32) (result i32)))"#,
                "(call $f (i32.const 416) (i32.const 12) (i32.const 64) (i32.const 72) (i32.const 80))",
            ),
            Probe::Increment => (
                r#"(import "env" "proxy_increment_metric" (func $f (param i32 i64) (result i32)))"#,
                "(call $f (i32.const 1) (i64.const 1))",
            ),
        };
        minimal_module_with_data(
            import,
            data,
            &format!(
                r#"(loop $again
      (drop {call})
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10))))"#
            ),
        )
    }
}

/// The upstream: answers every request directly, as the application would,
/// with the served-by header a server sidecar adds.
pub fn upstream_bootstrap() -> Value {
    let ip = upstream_address();
    let route = |cluster: &str, network: &str, body: &str, header: Option<&str>| {
        let mut m = json!({"prefix": "/"});
        if let Some(h) = header {
            m["headers"] =
                json!([{"name": "x-hybridmesh-target-cluster", "string_match": {"exact": h}}]);
        }
        json!({"match": m,
               "direct_response": {"status": 200, "body": {"inline_string": body}},
               "response_headers_to_add": served_by(cluster, network)})
    };
    let routes = vec![
        route("anthos", "default", "Anthos!!!", Some("anthos")),
        route("gke", "kuchima-demo-vpc01", "GKE!!!", None),
    ];
    let hcm = json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}});
    json!({
        "node": {"id": "bench-upstream", "cluster": "bench-upstream"},
        "admin": {"address": socket(ip, ADMIN_PORT)},
        "static_resources": {"listeners": [{
            "name": "app", "address": socket(ip, LISTEN_PORT),
            "filter_chains": [{"filters": [hcm]}]}]}
    })
}
