//! The Envoy 1.40 / Istio model the harness plays: node metadata, connection, route
//! table, upstream answer, and the properties a filter reads with `proxy_get_property`.
//!
//! What is served (measured in Envoy 1.40: the fidelity fixtures, `tests/fixtures/fidelity/`,
//! and the Go SDK corpus, `crates/replica/tests/go_sdk.rs`, pin it):
//!
//! | path | when | encoding |
//! |---|---|---|
//! | `xds.node.metadata.CLUSTER_ID`, `xds.node.metadata.NETWORK`, any other key given with [`Proxy::metadata`] | always ([`NodeMetadataStyle::Xds`]) | raw UTF-8 |
//! | `xds.node.locality.region` / `zone` / `sub_zone` | always (`Xds`) | raw UTF-8 (may be empty) |
//! | `xds.node.metadata`, `xds.node.locality` | always (`Xds`) | proxy-wasm pairs encoding |
//! | `node.metadata.*`, `node.locality.*`, `node.metadata`, `node.locality` | only with [`NodeMetadataStyle::Legacy`] | as above |
//! | `xds.node` | always | a 61,440-byte opaque blob, as big as Envoy's serialized `Node` (do not read it) |
//! | `xds.listener_direction` (Xds style; `listener_direction` in Legacy style, as older proxies) | always | 8-byte little-endian integer: 0 unspecified, 1 inbound, 2 outbound |
//! | `plugin_name`, `plugin_root_id`, `plugin_vm_id` | always | raw UTF-8 |
//! | `xds.route_name`, `xds.cluster_name` (`route_name` in Legacy style; Envoy 1.40 has no top-level `route_name`/`cluster_name`) | stream, once a route matched; in a callback: the route chosen before it | raw UTF-8 |
//! | `connection.mtls` | stream | 1-byte bool |
//! | `connection.uri_san_peer_certificate`, `connection.uri_san_local_certificate` | stream, mTLS only | raw UTF-8 |
//! | `source.address`, `destination.address` | stream, when given | raw UTF-8 `ip:port` |
//! | `source.port`, `destination.port` | stream, when the address is given | 8-byte little-endian integer |
//! | `request.protocol` | stream | raw UTF-8, [`Connection::protocol`] (default `HTTP/1.1`) |
//! | `request.query` | stream | raw UTF-8, what follows `?` in `:path` (empty without one) |
//! | `request.headers.<name>` | stream, when the request has it | raw UTF-8, its first value |
//! | `request.path`, `request.url_path`, `request.host`, `request.method`, `request.scheme`, `request.id`, `request.useragent` | stream, from the request headers | raw UTF-8 |
//! | `response.code`, `response.flags` | once the upstream answered (or a local reply was sent) | 8-byte little-endian integer |
//! | `response.code_details` | likewise | raw UTF-8: `via_upstream`, or the local reply's details |
//! | `upstream.address` | once an upstream host answered | raw UTF-8 `ip:port` |
//! | `upstream.port` | once an upstream host answered | 8-byte little-endian integer |
//! | `xds.upstream_host_metadata` | once an upstream host answered | serialized `envoy.config.core.v3.Metadata`; **`SerializationFailure` when the host has no metadata**, as in Envoy |
//! | `xds.cluster_name` on a [`Route::direct_response`] route | never (the route has no cluster) | `NotFound` |
//! | `metadata` | stream | serialized `envoy.config.core.v3.Metadata` of the dynamic metadata other filters set ([`crate::Stream::filter_metadata`]) |
//! | `metadata.filter_metadata`, `...<namespace>` | stream, when set | proxy-wasm pairs of name and value, the values serialized as fields are |
//! | `metadata.filter_metadata.<namespace>.<key>[.<key>...]` | stream, when set | string raw, number an 8-byte little-endian double, bool one byte, struct pairs, list pairs of element and empty string; **`SerializationFailure` for a null** (and for a struct or list holding one) |
//! | anything set with `proxy_set_property` | where it was set (stream or root) | the bytes set |
//!
//! Everything else is `NotFound`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::abi::Status;

/// Traffic direction of the listener the filter runs on (`listener_direction`).
///
/// The filter reads it as an 8-byte little-endian integer, the variant's value:
///
/// ```
/// use proxy_wasm_host::{Direction, Proxy};
///
/// assert_eq!(Direction::default(), Direction::Unspecified);
/// assert_eq!(
///     [Direction::Unspecified, Direction::Inbound, Direction::Outbound].map(|d| d as u64),
///     [0, 1, 2]
/// );
/// // A sidecar's inbound listener.
/// let proxy = Proxy::istio("Kubernetes").direction(Direction::Inbound);
/// assert_ne!(proxy, Proxy::istio("Kubernetes"));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `UNSPECIFIED` = 0
    #[default]
    Unspecified = 0,
    /// `INBOUND` = 1 (sidecar inbound listener)
    Inbound = 1,
    /// `OUTBOUND` = 2 (sidecar outbound listener, gateways)
    Outbound = 2,
}

/// Where the proxy serves node metadata and locality.
///
/// The demo filter copies `xds.node.metadata.CLUSTER_ID` into `x-cluster`: an Envoy 1.40
/// serves it, an older proxy does not (its filters read `node.metadata.CLUSTER_ID`).
///
/// ```
/// use proxy_wasm_host::{Module, NodeMetadataStyle, Plugin, Proxy};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
/// let mut cluster_id_seen = Vec::new();
/// for style in [NodeMetadataStyle::Xds, NodeMetadataStyle::Legacy] {
///     let proxy = Proxy::istio("gke-1").node_metadata_style(style);
///     let mut plugin = Plugin::builder(&module).proxy(proxy).default_cluster("backend").build()?;
///     let mut s = plugin.stream(0);
///     s.request_headers(&get, true)?;
///     cluster_id_seen.push(s.upstream_request_header("x-cluster"));
/// }
/// assert_eq!(cluster_id_seen, [Some("gke-1".to_string()), None]);
/// assert_eq!(NodeMetadataStyle::default(), NodeMetadataStyle::Xds);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NodeMetadataStyle {
    /// Envoy 1.40: `xds.node.metadata.*`, `xds.node.locality.*`; the old `node.*` paths
    /// are `NotFound`.
    #[default]
    Xds,
    /// Older proxies: `node.metadata.*`, `node.locality.*`; the `xds.node.*` paths are
    /// `NotFound`.
    Legacy,
}

/// Legacy Envoy response flag bits served as `response.flags`.
pub mod response_flags {
    /// UH: no healthy upstream hosts.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// UT: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// UR: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// UF: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// UC: upstream connection termination.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// UO: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// NR: no route found.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// NFCF: no filter config found (a filter delivered by ECDS whose first
    /// configuration was rejected). The bit is `NoFilterConfigFound`'s place in Envoy's
    /// `ResponseFlag` enum; the filter never sees it (it does not run on such a stream).
    pub const NO_FILTER_CONFIG_FOUND: u64 = 0x20_0000;
}

/// The proxy a plugin runs in: node metadata, locality, listener direction.
///
/// [`Proxy::new`] is a bare Envoy (no node metadata, empty locality, direction
/// unspecified); [`Proxy::istio`] is a convenience for an Istio sidecar.
///
/// # Examples
///
/// The demo filter copies node metadata `CLUSTER_ID` into `x-cluster`:
///
/// ```
/// use proxy_wasm_host::{Direction, Module, NodeMetadataStyle, Plugin, Proxy};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let sidecar = Proxy::istio("gke-1")
///     .network("net-1")
///     .metadata("MESH_ID", "cluster.local")
///     .locality("us-central1", "us-central1-a", "")
///     .direction(Direction::Outbound)
///     .node_metadata_style(NodeMetadataStyle::Xds);
/// // `istio` and `network` set the node metadata keys `CLUSTER_ID` and `NETWORK`.
/// assert_eq!(
///     sidecar,
///     Proxy::new()
///         .metadata("CLUSTER_ID", "gke-1")
///         .metadata("NETWORK", "net-1")
///         .metadata("MESH_ID", "cluster.local")
///         .locality("us-central1", "us-central1-a", "")
///         .direction(Direction::Outbound)
/// );
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
///
/// let mut plugin = Plugin::builder(&module).proxy(sidecar).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.upstream_request_header("x-cluster").as_deref(), Some("gke-1"));
///
/// // A bare Envoy has no node metadata: the property is NotFound, no `x-cluster`.
/// let mut plugin = Plugin::builder(&module).proxy(Proxy::new()).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// assert_eq!(s.upstream_request_header("x-cluster"), None);
/// assert_eq!(s.upstream_request_header("x-demo").as_deref(), Some("yes"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proxy {
    metadata: BTreeMap<String, String>,
    region: String,
    zone: String,
    sub_zone: String,
    direction: Direction,
    style: NodeMetadataStyle,
}

impl Proxy {
    /// A bare Envoy: no node metadata, an empty locality, direction unspecified, node
    /// metadata served where Envoy 1.40 serves it (`xds.node.*`).
    pub fn new() -> Proxy {
        Proxy::default()
    }

    /// An Istio sidecar whose `CLUSTER_ID` is `cluster_id` (Istio's default is the literal
    /// `Kubernetes`), with no `NETWORK` and an empty locality.
    pub fn istio(cluster_id: &str) -> Proxy {
        Proxy::default().metadata("CLUSTER_ID", cluster_id)
    }

    /// Sets node metadata `NETWORK`.
    pub fn network(self, network: &str) -> Proxy {
        self.metadata("NETWORK", network)
    }

    /// Sets any node metadata key (string values).
    pub fn metadata(mut self, key: &str, value: &str) -> Proxy {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the node locality (empty strings as on Anthos on-prem nodes).
    pub fn locality(mut self, region: &str, zone: &str, sub_zone: &str) -> Proxy {
        self.region = region.to_owned();
        self.zone = zone.to_owned();
        self.sub_zone = sub_zone.to_owned();
        self
    }

    /// Sets the listener direction.
    pub fn direction(mut self, direction: Direction) -> Proxy {
        self.direction = direction;
        self
    }

    /// Chooses where node metadata is served.
    pub fn node_metadata_style(mut self, style: NodeMetadataStyle) -> Proxy {
        self.style = style;
        self
    }

    fn node_property(&self, rest: &[&str]) -> Result<Vec<u8>, Status> {
        match rest {
            ["metadata"] => Ok(serialize_pairs(
                self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )),
            ["metadata", key] => self
                .metadata
                .get(*key)
                .map(|v| v.as_bytes().to_vec())
                .ok_or(Status::NotFound),
            ["locality"] => Ok(serialize_pairs([
                ("region", self.region.as_str()),
                ("zone", self.zone.as_str()),
                ("sub_zone", self.sub_zone.as_str()),
            ])),
            ["locality", "region"] => Ok(self.region.as_bytes().to_vec()),
            ["locality", "zone"] => Ok(self.zone.as_bytes().to_vec()),
            ["locality", "sub_zone"] => Ok(self.sub_zone.as_bytes().to_vec()),
            _ => Err(Status::NotFound),
        }
    }
}

/// The downstream connection of a stream.
///
/// # Examples
///
/// Envoy's connection manager sets `x-forwarded-proto` from the transport (the demo
/// filter lets it through):
///
/// ```
/// use proxy_wasm_host::{Connection, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let plain = Connection::plaintext();
/// assert!(!plain.is_mtls());
/// assert_eq!(plain.peer_uri_san(), None);
/// let mtls = Connection::mtls(
///     "spiffe://cluster.local/ns/shop/sa/frontend",
///     "spiffe://cluster.local/ns/shop/sa/cart",
/// )
/// .source("10.0.0.5:41234")
/// .destination("10.0.0.9:8080");
/// assert!(mtls.is_mtls());
/// assert_eq!(mtls.peer_uri_san(), Some("spiffe://cluster.local/ns/shop/sa/frontend"));
/// assert!(mtls.is_http1()); // HTTP/1.1 unless told otherwise
///
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "cart")];
/// for (connection, proto) in [(plain, "http"), (mtls, "https")] {
///     let mut s = plugin.stream(0).connection(connection);
///     s.request_headers(&get, true)?;
///     assert_eq!(s.upstream_request_header("x-forwarded-proto").as_deref(), Some(proto));
///     assert_eq!(s.upstream_request_header(":scheme").as_deref(), Some(proto));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    mtls: bool,
    peer_uri_san: Option<String>,
    local_uri_san: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    protocol: Option<String>,
}

impl Connection {
    /// A plaintext connection.
    pub fn plaintext() -> Connection {
        Connection::default()
    }

    /// The client's protocol: `request.protocol`, and how Envoy's codec frames the
    /// response the client gets ([`Connection::is_http1`]). Default `HTTP/1.1`; Envoy's
    /// names are `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`. A gRPC client speaks
    /// `HTTP/2` (set it): over HTTP/1.1 Envoy frames a trailers-only reply with
    /// `connection: close` and `content-length: 0`.
    ///
    /// ```
    /// use proxy_wasm_host::{Connection, Module, Plugin, Upstream};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let module = Module::from_bytes(br#"(module
    /// #     (memory (export "memory") 1)
    /// #     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
    /// // An answer without a content-length: HTTP/1.1 chunks it, HTTP/2 adds nothing.
    /// for (protocol, framing) in [("HTTP/1.1", Some("chunked")), ("HTTP/2", None)] {
    ///     let connection = Connection::plaintext().protocol(protocol);
    ///     assert_eq!(connection.is_http1(), framing.is_some());
    ///     let mut s = plugin.stream(0).connection(connection);
    ///     s.request_headers(&get, true)?;
    ///     s.respond(Upstream::new(200).body(b"streamed"))?;
    ///     assert_eq!(s.client_response_header("transfer-encoding").as_deref(), framing);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn protocol(mut self, protocol: &str) -> Connection {
        self.protocol = Some(protocol.to_owned());
        self
    }

    /// Whether the client speaks HTTP/1.x (the default): Envoy's HTTP/1 codec frames the
    /// response (`content-length: 0`, `transfer-encoding: chunked`, `connection: close`);
    /// over `HTTP/2` and `HTTP/3` it adds none of these.
    pub fn is_http1(&self) -> bool {
        self.protocol
            .as_deref()
            .is_none_or(|p| p.starts_with("HTTP/1"))
    }

    /// An mTLS connection with the peer's and our own URI SAN (SPIFFE ids in Istio).
    pub fn mtls(peer_uri_san: &str, local_uri_san: &str) -> Connection {
        Connection {
            mtls: true,
            peer_uri_san: Some(peer_uri_san.to_owned()),
            local_uri_san: Some(local_uri_san.to_owned()),
            ..Connection::default()
        }
    }

    /// Sets `source.address` ("ip:port").
    ///
    /// The filter then also reads `source.port`; without an address neither exists. A
    /// tiny filter that copies `source.address` and `destination.address` into request
    /// headers shows what it is served:
    ///
    /// ```
    /// use proxy_wasm_host::{Connection, Module, Plugin};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///   (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
    ///   (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
    ///   (memory (export "memory") 1)
    ///   (data (i32.const 100) "source\00address")
    ///   (data (i32.const 120) "x-source")
    ///   (data (i32.const 140) "destination\00address")
    ///   (data (i32.const 160) "x-destination")
    ///   (global $heap (mut i32) (i32.const 4096))
    ///   (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    ///     global.get $heap local.set $p
    ///     global.get $heap local.get $n i32.add global.set $heap
    ///     local.get $p)
    ///   (func $copy (param $path i32) (param $path_len i32) (param $name i32) (param $name_len i32)
    ///     (if (i32.eqz (call $property (local.get $path) (local.get $path_len) (i32.const 200) (i32.const 204)))
    ///       (then (drop (call $add (i32.const 0) (local.get $name) (local.get $name_len)
    ///         (i32.load (i32.const 200)) (i32.load (i32.const 204)))))))
    ///   (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ///     (call $copy (i32.const 100) (i32.const 14) (i32.const 120) (i32.const 8))
    ///     (call $copy (i32.const 140) (i32.const 19) (i32.const 160) (i32.const 13))
    ///     i32.const 0))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
    ///
    /// let client = Connection::plaintext().source("10.0.0.5:41234").destination("10.0.0.9:8080");
    /// let mut s = plugin.stream(0).connection(client);
    /// s.request_headers(&get, true)?;
    /// assert_eq!(s.upstream_request_header("x-source").as_deref(), Some("10.0.0.5:41234"));
    /// assert_eq!(s.upstream_request_header("x-destination").as_deref(), Some("10.0.0.9:8080"));
    ///
    /// // Not given: NotFound, so the filter adds nothing.
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&get, true)?;
    /// assert_eq!(s.upstream_request_header("x-source"), None);
    /// assert_eq!(s.upstream_request_header("x-destination"), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn source(mut self, address: &str) -> Connection {
        self.source = Some(address.to_owned());
        self
    }

    /// Sets `destination.address` ("ip:port").
    pub fn destination(mut self, address: &str) -> Connection {
        self.destination = Some(address.to_owned());
        self
    }

    /// Whether the connection is mTLS.
    pub fn is_mtls(&self) -> bool {
        self.mtls
    }

    /// The peer certificate's URI SAN, for mTLS connections.
    pub fn peer_uri_san(&self) -> Option<&str> {
        self.peer_uri_san.as_deref()
    }
}

/// A value of a `google.protobuf.Struct` field.
///
/// # Examples
///
/// Each variant is one `google.protobuf.Value` kind, as [`Metadata::encode`] writes it:
///
/// ```
/// use std::collections::BTreeMap;
///
/// use proxy_wasm_host::{Metadata, StructValue};
///
/// let one = |value: StructValue| Metadata::default().field("ns", "k", value).encode();
/// // number_value (field 2): a little-endian double.
/// assert!(one(StructValue::Number(1.5)).ends_with(&[&[0x11][..], &1.5f64.to_le_bytes()].concat()));
/// // string_value (3), bool_value (4), null_value (1).
/// assert!(one(StructValue::String("alice".into())).ends_with(b"\x1a\x05alice"));
/// assert!(one(StructValue::Bool(true)).ends_with(&[0x20, 1]));
/// assert!(one(StructValue::Null).ends_with(&[0x08, 0]));
/// // Structs and lists nest.
/// let claims = StructValue::Struct(BTreeMap::from([
///     ("sub".to_string(), StructValue::String("alice".into())),
///     ("groups".to_string(), StructValue::List(vec![StructValue::String("dev".into())])),
/// ]));
/// let m = Metadata::default().field("envoy.filters.http.jwt_authn", "claims", claims.clone());
/// assert_eq!(m.filter_metadata["envoy.filters.http.jwt_authn"]["claims"], claims);
/// assert!(m.encode().windows(5).any(|w| w == b"alice"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum StructValue {
    /// `null_value`
    Null,
    /// `number_value`
    Number(f64),
    /// `string_value`
    String(String),
    /// `bool_value`
    Bool(bool),
    /// `struct_value`
    Struct(BTreeMap<String, StructValue>),
    /// `list_value`
    List(Vec<StructValue>),
}

impl StructValue {
    /// A value as `get_property` returns it (Envoy serializes the CEL value; measured in
    /// Envoy 1.40 by the Go SDK corpus's `properties` filter): a string raw, a number as
    /// an 8-byte little-endian double, a bool as one byte, a struct as pairs of field name
    /// and value (serialized the same way), a list as pairs of element and empty string.
    /// A null cannot be serialized: `SerializationFailure`, for it and for any struct or
    /// list that holds one.
    fn property(&self) -> Result<Vec<u8>, Status> {
        Ok(match self {
            StructValue::Null => return Err(Status::SerializationFailure),
            StructValue::Number(n) => n.to_le_bytes().to_vec(),
            StructValue::String(s) => s.as_bytes().to_vec(),
            StructValue::Bool(b) => vec![u8::from(*b)],
            StructValue::Struct(fields) => struct_pairs(fields)?,
            StructValue::List(items) => serialize_byte_pairs(
                &items
                    .iter()
                    .map(|item| Ok((item.property()?, b"")))
                    .collect::<Result<Vec<_>, Status>>()?,
            ),
        })
    }
}

/// A `google.protobuf.Struct` as `get_property` returns it: pairs of name and value.
fn struct_pairs(fields: &BTreeMap<String, StructValue>) -> Result<Vec<u8>, Status> {
    Ok(serialize_byte_pairs(
        &fields
            .iter()
            .map(|(k, v)| Ok((k.as_bytes(), v.property()?)))
            .collect::<Result<Vec<_>, Status>>()?,
    ))
}

/// `envoy.config.core.v3.Metadata`: `filter_metadata` map<string, google.protobuf.Struct>.
///
/// # Examples
///
/// An upstream host's metadata ([`Upstream::host_metadata`]), as a filter reads it from
/// `xds.upstream_host_metadata`:
///
/// ```
/// use proxy_wasm_host::{Metadata, StructValue};
///
/// let workload = "reviews-v1;bookinfo;reviews;v1;Kubernetes";
/// let m = Metadata::istio_workload(workload).field("istio", "version", StructValue::Number(2.0));
/// assert_eq!(m.filter_metadata["istio"]["workload"], StructValue::String(workload.into()));
/// assert_eq!(m.filter_metadata["istio"].len(), 2);
///
/// let bytes = m.encode();
/// // filter_metadata (field 1) entry { key (1) "istio", value (2) Struct { ... } }
/// assert_eq!(bytes[0], 0x0a);
/// assert_eq!(&bytes[2..9], b"\x0a\x05istio");
/// assert!(bytes.windows(workload.len()).any(|w| w == workload.as_bytes()));
/// assert!(Metadata::default().encode().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// Filter namespace (e.g. `istio`) -> struct fields.
    pub filter_metadata: BTreeMap<String, BTreeMap<String, StructValue>>,
}

impl Metadata {
    /// Istio's endpoint metadata: `istio` -> `workload` = `workload` (e.g.
    /// `"name;namespace;canonical-name;revision;cluster"`, or `";;;;<cluster>"` for a remote
    /// east-west gateway).
    pub fn istio_workload(workload: &str) -> Metadata {
        Metadata::default().field("istio", "workload", StructValue::String(workload.into()))
    }

    /// Adds one field to a filter namespace.
    ///
    /// ```
    /// use proxy_wasm_host::{Metadata, StructValue};
    ///
    /// let m = Metadata::default().field("istio", "workload", StructValue::String("w".into()));
    /// assert_eq!(m, Metadata::istio_workload("w"));
    /// // The serialized envoy.config.core.v3.Metadata, as `get_property` returns it.
    /// assert_eq!(m.encode()[..2], [0x0a, 0x1a]);
    /// ```
    pub fn field(mut self, namespace: &str, key: &str, value: StructValue) -> Metadata {
        self.filter_metadata
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
        self
    }

    /// What `get_property` returns for `metadata.<rest>` when this is a stream's dynamic
    /// metadata: the whole message serialized (`metadata`), else the CEL value
    /// serialized: the namespace map and a namespace's `Struct` as pairs, a field as
    /// [`StructValue`]s are (measured in Envoy 1.40). Envoy writes map entries in hash
    /// order, which changes from request to request; the harness writes them sorted.
    pub(crate) fn property(&self, rest: &[&str]) -> Result<Vec<u8>, Status> {
        match rest {
            [] => Ok(self.encode()),
            ["filter_metadata"] => Ok(serialize_byte_pairs(
                &self
                    .filter_metadata
                    .iter()
                    .map(|(namespace, fields)| Ok((namespace.as_bytes(), struct_pairs(fields)?)))
                    .collect::<Result<Vec<_>, Status>>()?,
            )),
            ["filter_metadata", namespace] => self
                .filter_metadata
                .get(*namespace)
                .ok_or(Status::NotFound)
                .and_then(struct_pairs),
            ["filter_metadata", namespace, key, inner @ ..] => {
                let mut value = self
                    .filter_metadata
                    .get(*namespace)
                    .and_then(|fields| fields.get(*key))
                    .ok_or(Status::NotFound)?;
                for name in inner {
                    value = match value {
                        StructValue::Struct(fields) => fields.get(*name).ok_or(Status::NotFound)?,
                        _ => return Err(Status::NotFound),
                    };
                }
                value.property()
            }
            _ => Err(Status::NotFound),
        }
    }

    /// The serialized protobuf, as Envoy returns it for `xds.upstream_host_metadata`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (namespace, fields) in &self.filter_metadata {
            let mut entry = Vec::new();
            protobuf::bytes_field(&mut entry, 1, namespace.as_bytes());
            protobuf::bytes_field(&mut entry, 2, &protobuf::encode_struct(fields));
            protobuf::bytes_field(&mut out, 1, &entry);
        }
        out
    }
}

/// What the upstream answered (or did not: see [`response_flags`]).
///
/// # Examples
///
/// ```
/// use proxy_wasm_host::{response_flags, Metadata, Module, Plugin, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
///
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// s.respond(
///     Upstream::new(200)
///         .address("10.0.0.7:8080")
///         .service_time_ms(12)
///         .istio_workload("reviews-v1;bookinfo;reviews;v1;Kubernetes")
///         .protocol("HTTP/2")
///         .header("Content-Type", "text/plain")
///         .body(b"hello")
///         .trailer("x-checksum", "5d41"),
/// )?;
/// assert_eq!(s.client_response_status(), Some(200));
/// assert_eq!(s.client_response_header("content-type").as_deref(), Some("text/plain"));
/// assert_eq!(s.client_response_header("x-envoy-upstream-service-time").as_deref(), Some("12"));
/// assert_eq!(s.client_response_header("x-demo-response").as_deref(), Some("yes")); // the filter's
/// assert_eq!(s.client_response_body(), b"hello");
/// assert_eq!(s.client_response_trailers(), Some(vec![("x-checksum".into(), "5d41".into())]));
///
/// // No healthy upstream: Envoy's own 503, no host, so no service time either.
/// let mut s = plugin.stream(0);
/// s.request_headers(&get, true)?;
/// s.respond(
///     Upstream::new(503)
///         .flags(response_flags::NO_HEALTHY_UPSTREAM)
///         .body(b"no healthy upstream"),
/// )?;
/// assert_eq!(s.client_response_status(), Some(503));
/// assert_eq!(s.response_flags(), response_flags::NO_HEALTHY_UPSTREAM);
/// assert_eq!(s.client_response_header("x-envoy-upstream-service-time"), None);
///
/// // `istio_workload` is shorthand for Istio's host metadata.
/// assert_eq!(
///     Upstream::new(200).istio_workload(";;;;gke-2"),
///     Upstream::new(200).host_metadata(Metadata::istio_workload(";;;;gke-2"))
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub(crate) status: u32,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Vec<(String, String)>,
    pub(crate) address: Option<String>,
    pub(crate) metadata: Option<Metadata>,
    pub(crate) flags: u64,
    pub(crate) service_time_ms: u64,
    pub(crate) http1: bool,
}

impl Upstream {
    /// An answer with this HTTP status, no upstream host yet (set one with
    /// [`Upstream::address`]; without it `upstream.*` is `NotFound`, as for an Envoy-generated
    /// 503 with no healthy upstream).
    pub fn new(status: u32) -> Upstream {
        Upstream {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            address: None,
            metadata: None,
            flags: 0,
            service_time_ms: 0,
            http1: false,
        }
    }

    /// How the upstream's codec hands [`crate::Stream::respond`]'s body to the filter:
    /// `HTTP/1.1` (or `HTTP/1.0`) as the data, then an empty end of stream (two
    /// `proxy_on_response_body` calls, as Envoy's HTTP/1 codec delivers a message with a
    /// `content-length` or chunks; measured in Envoy 1.40); anything else, the default,
    /// the body in one call with the end of stream, as an HTTP/2 upstream that ends the
    /// stream on its last data frame.
    ///
    /// A tiny filter that logs each `proxy_on_response_body` call shows the difference:
    ///
    /// ```
    /// use proxy_wasm_host::{Level, Module, Plugin, Upstream};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///   (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
    ///   (memory (export "memory") 1)
    ///   (data (i32.const 100) "body")
    ///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
    ///   (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    ///     (drop (call $log (i32.const 2) (i32.const 100) (i32.const 4)))
    ///     i32.const 0))"#)?;
    /// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
    /// let get = [(":method", "GET"), (":path", "/"), (":authority", "api")];
    /// for (protocol, calls) in [("HTTP/1.1", 2), ("HTTP/2", 1)] {
    ///     let before = plugin.log_count();
    ///     let mut s = plugin.stream(0);
    ///     s.request_headers(&get, true)?;
    ///     s.respond(Upstream::new(200).protocol(protocol).body(b"hello"))?;
    ///     assert_eq!(s.client_response_body(), b"hello");
    ///     let logged = plugin.logs_since(before);
    ///     assert_eq!(logged.len(), calls);
    ///     assert!(logged.iter().all(|l| l.level == Level::Info && l.message == "body"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn protocol(mut self, protocol: &str) -> Upstream {
        self.http1 = protocol.starts_with("HTTP/1");
        self
    }

    /// The `x-envoy-upstream-service-time` the router adds (milliseconds; default 0).
    pub fn service_time_ms(mut self, ms: u64) -> Upstream {
        self.service_time_ms = ms;
        self
    }

    /// The upstream host that answered ("ip:port").
    pub fn address(mut self, address: &str) -> Upstream {
        self.address = Some(address.to_owned());
        self
    }

    /// Host metadata `istio.workload` (see [`Metadata::istio_workload`]).
    pub fn istio_workload(self, workload: &str) -> Upstream {
        self.host_metadata(Metadata::istio_workload(workload))
    }

    /// Host metadata. Without it, `xds.upstream_host_metadata` is `SerializationFailure`.
    pub fn host_metadata(mut self, metadata: Metadata) -> Upstream {
        self.metadata = Some(metadata);
        self
    }

    /// A response header (the key is lower-cased).
    pub fn header(mut self, key: &str, value: &str) -> Upstream {
        self.headers
            .push((key.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// A response trailer.
    pub fn trailer(mut self, key: &str, value: &str) -> Upstream {
        self.trailers
            .push((key.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The response body.
    pub fn body(mut self, body: &[u8]) -> Upstream {
        self.body = body.to_vec();
        self
    }

    /// Response flags ([`response_flags`] bits, or-ed).
    pub fn flags(mut self, flags: u64) -> Upstream {
        self.flags = flags;
        self
    }
}

/// One route of the proxy's route table: conditions on the path and headers -> a cluster,
/// or an answer of the router's own ([`Route::direct_response`]).
///
/// Routes are tried in order; the first whose conditions all hold wins, else the
/// plugin's default cluster (route `default`), else none: the router answers 404 itself
/// (details `route_not_found`, flag NR, no body), through the filter's response
/// callbacks, as Envoy does. A plugin given no routes and no default cluster has no
/// route table: every request is forwarded with no route ([`crate::Stream::route`] is
/// `None`) for the test to answer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{Module, Plugin, Route};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let routes = vec![
///     Route::new("health").path("/healthz").direct_response(200, b"ok\n"),
///     Route::new("api-v2")
///         .path_prefix("/api/")
///         .header("X-Version", "v2")
///         .cluster("outbound|80|v2|api")
///         .timeout(Duration::from_secs(30)),
///     Route::new("events").path_prefix("/events").timeout(Duration::ZERO),
/// ];
/// let mut plugin = Plugin::builder(&module).routes(routes).default_cluster("backend").build()?;
///
/// // (path, x-version) -> (route, cluster, the router's x-envoy-expected-rq-timeout-ms)
/// let cases = [
///     (("/api/users", "v2"), ("api-v2", Some("outbound|80|v2|api"), Some("30000"))),
///     (("/api/users", "v1"), ("default", Some("backend"), Some("15000"))),
///     (("/events?since=1", "v2"), ("events", Some("events"), None)),
///     (("/healthz?probe=1", "v2"), ("health", None, None)),
/// ];
/// for ((path, version), (route, cluster, timeout)) in cases {
///     let mut s = plugin.stream(0);
///     s.request_headers(
///         &[(":method", "GET"), (":path", path), (":authority", "api"), ("x-version", version)],
///         true,
///     )?;
///     assert_eq!(s.route().map(|r| r.name).as_deref(), Some(route));
///     assert_eq!(s.upstream_cluster().as_deref(), cluster);
///     assert_eq!(s.request_forwarded(), cluster.is_some());
///     assert_eq!(s.upstream_request_header("x-envoy-expected-rq-timeout-ms").as_deref(), timeout);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    name: String,
    path: Option<PathMatch>,
    headers: Vec<(String, String)>,
    cluster: String,
    direct_response: Option<DirectResponse>,
    timeout: Duration,
}

/// A route's `direct_response`: the router answers the request itself, as a local reply
/// that passes through the filters' response callbacks (`:status`, then `content-length`
/// and `content-type: text/plain` when there is a body; `content-length: 0` without one),
/// with details `direct_response`. Nothing is forwarded.
///
/// # Examples
///
/// The demo filter's response callback still runs on the router's answer:
///
/// ```
/// use proxy_wasm_host::{DirectResponse, Module, Plugin, Route};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .routes(vec![Route::new("moved").path("/old").direct_response(301, b"")])
///     .build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/old"), (":authority", "api")], true)?;
/// let route = s.route().unwrap();
/// assert_eq!(route.direct_response, Some(DirectResponse { status: 301, body: Vec::new() }));
/// assert!(!s.request_forwarded());
/// assert_eq!(s.client_response_status(), Some(301));
/// assert_eq!(s.client_response_header("content-length").as_deref(), Some("0"));
/// assert_eq!(s.client_response_header("x-demo-response").as_deref(), Some("yes"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// The HTTP status.
    pub status: u32,
    /// The body (empty: none).
    pub body: Vec<u8>,
}

/// How a route matches `:path` (Envoy's `RouteMatch.path_specifier`; case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathMatch {
    /// `prefix`: the start of the whole `:path`, query included.
    Prefix(String),
    /// `path`: all of `:path` once the query and fragment are cut off.
    Exact(String),
}

/// Envoy's route timeout when the route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

impl Route {
    /// A route named `name` (its cluster defaults to the name).
    pub fn new(name: &str) -> Route {
        Route {
            name: name.to_owned(),
            path: None,
            headers: Vec::new(),
            cluster: name.to_owned(),
            direct_response: None,
            timeout: DEFAULT_ROUTE_TIMEOUT,
        }
    }

    /// The route's timeout (default [`DEFAULT_ROUTE_TIMEOUT`]; zero disables it, as Istio's
    /// sidecar routes do unless a VirtualService sets one). The router tells the upstream
    /// with `x-envoy-expected-rq-timeout-ms` when it is not zero.
    pub fn timeout(mut self, timeout: Duration) -> Route {
        self.timeout = timeout;
        self
    }

    /// Matches requests whose `:path` starts with `prefix`, query included (Envoy's
    /// `match.prefix`; a route without a path condition matches any path, as `prefix: "/"`).
    pub fn path_prefix(mut self, prefix: &str) -> Route {
        self.path = Some(PathMatch::Prefix(prefix.to_owned()));
        self
    }

    /// Matches requests whose `:path`, without its query and fragment, is `path` (Envoy's
    /// `match.path`).
    pub fn path(mut self, path: &str) -> Route {
        self.path = Some(PathMatch::Exact(path.to_owned()));
        self
    }

    /// Requires header `key` to equal `value` (any repeated entry may match, as Envoy 1.40).
    pub fn header(mut self, key: &str, value: &str) -> Route {
        self.headers
            .push((key.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The target cluster.
    pub fn cluster(mut self, cluster: &str) -> Route {
        self.cluster = cluster.to_owned();
        self.direct_response = None;
        self
    }

    /// The router answers requests on this route itself (Envoy's `direct_response`):
    /// `status`, and `body` unless it is empty. No cluster, nothing forwarded.
    ///
    /// ```
    /// use proxy_wasm_host::{Module, Plugin, Route};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let module = Module::from_bytes(br#"(module
    ///     (memory (export "memory") 1)
    ///     (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#)?;
    /// let mut plugin = Plugin::builder(&module)
    ///     .routes(vec![Route::new("health").path("/healthz").direct_response(200, b"ok\n")])
    ///     .default_cluster("backend")
    ///     .build()?;
    /// let mut s = plugin.stream(0);
    /// s.request_headers(&[(":method", "GET"), (":path", "/healthz"), (":authority", "api")], true)?;
    /// assert!(!s.request_forwarded());
    /// assert_eq!(s.client_response_status(), Some(200));
    /// assert_eq!(s.client_response_body(), b"ok\n");
    /// assert_eq!(s.local_reply().map(|r| r.details).as_deref(), Some("direct_response"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn direct_response(mut self, status: u32, body: &[u8]) -> Route {
        self.cluster = String::new();
        self.direct_response = Some(DirectResponse {
            status,
            body: body.to_vec(),
        });
        self
    }

    /// The target cluster (none for a direct response).
    pub(crate) fn cluster_name(&self) -> Option<&str> {
        self.direct_response
            .is_none()
            .then_some(self.cluster.as_str())
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        let path = headers.get(":path").unwrap_or("");
        let path_matches = match &self.path {
            None => true,
            Some(PathMatch::Prefix(prefix)) => path.starts_with(prefix.as_str()),
            Some(PathMatch::Exact(exact)) => {
                let end = path.find(['?', '#']).unwrap_or(path.len());
                &path[..end] == exact
            }
        };
        path_matches
            && self
                .headers
                .iter()
                .all(|(k, v)| headers.get_all(k).any(|have| have == v))
    }
}

/// A chosen route.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use proxy_wasm_host::{MatchedRoute, Module, Plugin, Route};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let mut plugin = Plugin::builder(&module)
///     .routes(vec![Route::new("admin").path_prefix("/admin").cluster("admin-svc")])
///     .default_cluster("backend")
///     .build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/admin/users"), (":authority", "api")], true)?;
/// let expected = MatchedRoute {
///     name: "admin".into(),
///     cluster: "admin-svc".into(),
///     direct_response: None,
///     timeout: Duration::from_secs(15), // Envoy's default route timeout
/// };
/// assert_eq!(s.route(), Some(expected));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRoute {
    /// Route name (`default` for the default route).
    pub name: String,
    /// Target cluster (empty for a direct response).
    pub cluster: String,
    /// The router's own answer, for a [`Route::direct_response`] route.
    pub direct_response: Option<DirectResponse>,
    /// Its timeout (zero: none).
    pub timeout: Duration,
}

/// Ordered routes plus an optional default cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RouteTable {
    pub(crate) routes: Vec<Route>,
    pub(crate) default_cluster: Option<String>,
}

impl RouteTable {
    /// No routes and no default cluster: the test routes nothing, and every request is
    /// forwarded with no route (the harness's stand-in for a catch-all route).
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.default_cluster.is_none()
    }

    /// The first route whose conditions all match, else the default, else none.
    pub(crate) fn select(&self, headers: &HeaderMap) -> Option<MatchedRoute> {
        if let Some(route) = self.routes.iter().find(|r| r.matches(headers)) {
            return Some(MatchedRoute {
                name: route.name.clone(),
                cluster: route.cluster.clone(),
                direct_response: route.direct_response.clone(),
                timeout: route.timeout,
            });
        }
        self.default_cluster.as_ref().map(|cluster| MatchedRoute {
            name: "default".to_owned(),
            cluster: cluster.clone(),
            direct_response: None,
            timeout: DEFAULT_ROUTE_TIMEOUT,
        })
    }
}

/// An Envoy-faithful HTTP header map: ordered, repeated keys allowed, keys lower-cased on
/// write, lookups return the first value.
///
/// # Examples
///
/// ```
/// use proxy_wasm_host::envoy::deserialize_pairs;
/// use proxy_wasm_host::HeaderMap;
///
/// let mut h = HeaderMap::from_pairs(&[(":status", "200"), ("Set-Cookie", "a=1"), ("server", "up")]);
/// h.add("set-cookie", "b=2");
/// assert_eq!(h.get("SET-COOKIE"), Some("a=1")); // lookups ignore case; the first value
/// assert_eq!(h.get_all("set-cookie").collect::<Vec<_>>(), ["a=1", "b=2"]);
/// assert_eq!(h.len(), 4);
///
/// // `replace` is Envoy's setCopy: every entry goes, one is appended at the end.
/// h.replace("set-cookie", "c=3");
/// let pairs: Vec<(&str, &str)> = h.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
/// assert_eq!(pairs, [(":status", "200"), ("server", "up"), ("set-cookie", "c=3")]);
///
/// h.remove("Server");
/// assert_eq!(h.get("server"), None);
/// assert_eq!(h.to_vec(), [(":status".to_string(), "200".to_string()), ("set-cookie".into(), "c=3".into())]);
/// // What `proxy_get_header_map_pairs` hands the filter.
/// assert_eq!(deserialize_pairs(&h.serialize()), Some(h.to_vec()));
///
/// h.remove(":status");
/// h.remove("set-cookie");
/// assert!(h.is_empty());
/// assert_eq!(h, HeaderMap::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, String)>,
}

impl HeaderMap {
    /// A map from pairs (keys lower-cased).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> HeaderMap {
        let mut map = HeaderMap::default();
        for (k, v) in pairs {
            map.add(k.as_ref(), v.as_ref());
        }
        map
    }

    /// First value of `key` (Envoy's `getHeaderMapValue`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Appends an entry (Envoy's `addCopy`).
    pub fn add(&mut self, key: &str, value: &str) {
        self.entries
            .push((key.to_ascii_lowercase(), value.to_owned()));
    }

    /// Envoy's `setCopy`: removes every entry of `key` and appends one. Measured with
    /// Envoy 1.40: an upstream that sent a header twice, replaced once by a Wasm filter,
    /// reaches the client once, and after the headers that followed it.
    pub fn replace(&mut self, key: &str, value: &str) {
        let key = key.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value.to_owned()));
    }

    /// Inserts an entry at position `index` (clamped to the end).
    pub(crate) fn insert(&mut self, index: usize, key: &str, value: &str) {
        let index = index.min(self.entries.len());
        self.entries
            .insert(index, (key.to_ascii_lowercase(), value.to_owned()));
    }

    /// Sets the first entry of `key` to `value` where it stands and removes the others
    /// (appends when absent).
    pub(crate) fn set_in_place(&mut self, key: &str, value: &str) {
        let key = key.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                self.entries[first].1 = value.to_owned();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    i += 1;
                    i - 1 == first || *k != key
                });
            }
            None => self.entries.push((key, value.to_owned())),
        }
    }

    /// Removes every entry of `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The entries as owned pairs.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.entries.clone()
    }

    /// proxy-wasm pairs encoding of the map.
    pub fn serialize(&self) -> Vec<u8> {
        serialize_pairs(self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// proxy-wasm map serialization: count u32, (key_len u32, value_len u32) each, then
/// `key\0value\0` each, little-endian.
///
/// ```
/// use proxy_wasm_host::envoy::serialize_pairs;
///
/// let bytes = serialize_pairs([("a", "1"), ("bb", "")]);
/// assert_eq!(
///     bytes,
///     [
///         2, 0, 0, 0, // two pairs
///         1, 0, 0, 0, 1, 0, 0, 0, // "a" and "1"
///         2, 0, 0, 0, 0, 0, 0, 0, // "bb" and ""
///         b'a', 0, b'1', 0, b'b', b'b', 0, 0,
///     ]
/// );
/// assert_eq!(serialize_pairs([]), [0, 0, 0, 0]);
/// ```
pub fn serialize_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Vec<u8> {
    serialize_byte_pairs(
        &pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect::<Vec<_>>(),
    )
}

/// The proxy-wasm pairs encoding of byte strings: a count, each pair's two lengths, then
/// each key and value followed by a zero byte.
fn serialize_byte_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.as_ref().len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Parses proxy-wasm map serialization. `None` when malformed; an empty input or a single
/// zero byte is an empty map (the spec allows both).
///
/// ```
/// use proxy_wasm_host::envoy::{deserialize_pairs, serialize_pairs};
///
/// let bytes = serialize_pairs([(":method", "GET"), (":path", "/")]);
/// assert_eq!(
///     deserialize_pairs(&bytes),
///     Some(vec![(":method".to_string(), "GET".to_string()), (":path".into(), "/".into())])
/// );
/// assert_eq!(deserialize_pairs(b""), Some(vec![]));
/// assert_eq!(deserialize_pairs(&[0]), Some(vec![]));
/// // Malformed: cut short, or a count that cannot fit.
/// assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 2]), None);
/// assert_eq!(deserialize_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
/// ```
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(out)
}

/// Size of Envoy 1.40's serialized `Node` as measured on an Istio sidecar.
pub const XDS_NODE_BLOB_SIZE: usize = 61_440;

/// What the property resolver needs to know about a stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamFacts<'a> {
    pub connection: &'a Connection,
    /// Dynamic metadata other filters set.
    pub metadata: &'a Metadata,
    /// Route chosen before the running callback.
    pub route: Option<&'a MatchedRoute>,
    pub request_headers: Option<&'a HeaderMap>,
    /// (response code, response flags) once a response exists.
    pub response: Option<(u32, u64)>,
    /// The upstream host, once it answered.
    pub upstream: Option<&'a Upstream>,
    /// `response.code_details`: `via_upstream`, or a local reply's details.
    pub details: Option<&'a str>,
}

/// Identity of the plugin (`plugin_name`, `plugin_root_id`, `plugin_vm_id`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PluginIdentity {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
}

/// Resolves a built-in property. `Err(NotFound)` when it does not exist (here, or in this
/// phase); callers then look at filter state.
pub(crate) fn property(
    proxy: &Proxy,
    plugin: &PluginIdentity,
    stream: Option<StreamFacts<'_>>,
    path: &[&str],
) -> Result<Vec<u8>, Status> {
    let int = |v: u64| v.to_le_bytes().to_vec();
    let text = |s: &str| s.as_bytes().to_vec();
    match path {
        ["xds", "node"] => return Ok(vec![0x0a; XDS_NODE_BLOB_SIZE]),
        ["xds", "node", rest @ ..] if proxy.style == NodeMetadataStyle::Xds => {
            return proxy.node_property(rest)
        }
        ["node", rest @ ..] if proxy.style == NodeMetadataStyle::Legacy => {
            return proxy.node_property(rest)
        }
        // Envoy 1.40 serves `xds.listener_direction` only; older proxies the top-level path.
        ["xds", "listener_direction"] if proxy.style == NodeMetadataStyle::Xds => {
            return Ok(int(proxy.direction as u64))
        }
        ["listener_direction"] if proxy.style == NodeMetadataStyle::Legacy => {
            return Ok(int(proxy.direction as u64))
        }
        ["plugin_name"] => return Ok(text(&plugin.name)),
        ["plugin_root_id"] => return Ok(text(&plugin.root_id)),
        ["plugin_vm_id"] => return Ok(text(&plugin.vm_id)),
        _ => {}
    }
    let Some(s) = stream else {
        return Err(Status::NotFound);
    };
    let header = |name: &str| {
        s.request_headers
            .and_then(|h| h.get(name))
            .map(text)
            .ok_or(Status::NotFound)
    };
    let upstream_address = || s.upstream.and_then(|u| u.address.as_deref());
    let port = |address: Option<&str>| {
        address
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u64>().ok())
            .map(int)
            .ok_or(Status::NotFound)
    };
    match path {
        ["xds", "route_name"] => s.route.map(|r| text(&r.name)).ok_or(Status::NotFound),
        // Envoy 1.40 serves it under `xds.` only (measured: NotFound); older proxies here.
        ["route_name"] if proxy.style == NodeMetadataStyle::Legacy => {
            s.route.map(|r| text(&r.name)).ok_or(Status::NotFound)
        }
        // A direct-response route has no cluster.
        ["xds", "cluster_name"] => s
            .route
            .filter(|r| r.direct_response.is_none())
            .map(|r| text(&r.cluster))
            .ok_or(Status::NotFound),
        ["metadata", rest @ ..] => s.metadata.property(rest),
        ["connection", "mtls"] => Ok(vec![u8::from(s.connection.mtls)]),
        ["connection", "uri_san_peer_certificate"] => s
            .connection
            .peer_uri_san
            .as_deref()
            .filter(|_| s.connection.mtls)
            .map(text)
            .ok_or(Status::NotFound),
        ["connection", "uri_san_local_certificate"] => s
            .connection
            .local_uri_san
            .as_deref()
            .filter(|_| s.connection.mtls)
            .map(text)
            .ok_or(Status::NotFound),
        ["source", "address"] => s
            .connection
            .source
            .as_deref()
            .map(text)
            .ok_or(Status::NotFound),
        ["destination", "address"] => s
            .connection
            .destination
            .as_deref()
            .map(text)
            .ok_or(Status::NotFound),
        ["source", "port"] => port(s.connection.source.as_deref()),
        ["destination", "port"] => port(s.connection.destination.as_deref()),
        ["request", "protocol"] => Ok(text(s.connection.protocol.as_deref().unwrap_or("HTTP/1.1"))),
        ["request", "query"] => s
            .request_headers
            .and_then(|h| h.get(":path"))
            .map(|p| text(p.split_once('?').map_or("", |(_, q)| q)))
            .ok_or(Status::NotFound),
        ["request", "headers", name] => header(&name.to_ascii_lowercase()),
        ["request", "path"] => header(":path"),
        ["request", "url_path"] => s
            .request_headers
            .and_then(|h| h.get(":path"))
            .map(|p| text(p.split('?').next().unwrap_or(p)))
            .ok_or(Status::NotFound),
        ["request", "host"] => header(":authority"),
        ["request", "method"] => header(":method"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "id"] => header("x-request-id"),
        ["request", "useragent"] => header("user-agent"),
        ["response", "code"] => s
            .response
            .map(|(c, _)| int(u64::from(c)))
            .ok_or(Status::NotFound),
        ["response", "flags"] => s.response.map(|(_, f)| int(f)).ok_or(Status::NotFound),
        ["response", "code_details"] => s.details.map(text).ok_or(Status::NotFound),
        ["upstream", "address"] => upstream_address().map(text).ok_or(Status::NotFound),
        ["upstream", "port"] => port(upstream_address()),
        ["xds", "upstream_host_metadata"] => match s.upstream {
            Some(u) if u.address.is_some() => u
                .metadata
                .as_ref()
                .map(Metadata::encode)
                .ok_or(Status::SerializationFailure),
            _ => Err(Status::NotFound),
        },
        _ => Err(Status::NotFound),
    }
}

/// A tiny protobuf encoder, enough for `Metadata` and `google.protobuf.Struct`.
mod protobuf {
    use std::collections::BTreeMap;

    use super::StructValue;

    const VARINT: u64 = 0;
    const FIXED64: u64 = 1;
    const LEN: u64 = 2;

    pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn tag(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        varint(out, (field << 3) | wire_type);
    }

    pub(super) fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        tag(out, field, LEN);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// `google.protobuf.Struct { map<string, Value> fields = 1; }`
    pub(super) fn encode_struct(fields: &BTreeMap<String, StructValue>) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in fields {
            let mut entry = Vec::new();
            bytes_field(&mut entry, 1, key.as_bytes());
            bytes_field(&mut entry, 2, &encode_value(value));
            bytes_field(&mut out, 1, &entry);
        }
        out
    }

    /// `google.protobuf.Value` (oneof kind).
    fn encode_value(value: &StructValue) -> Vec<u8> {
        let mut out = Vec::new();
        match value {
            StructValue::Null => {
                tag(&mut out, 1, VARINT);
                varint(&mut out, 0);
            }
            StructValue::Number(n) => {
                tag(&mut out, 2, FIXED64);
                out.extend_from_slice(&n.to_le_bytes());
            }
            StructValue::String(s) => bytes_field(&mut out, 3, s.as_bytes()),
            StructValue::Bool(b) => {
                tag(&mut out, 4, VARINT);
                varint(&mut out, u64::from(*b));
            }
            StructValue::Struct(fields) => bytes_field(&mut out, 5, &encode_struct(fields)),
            StructValue::List(values) => {
                let mut list = Vec::new();
                for v in values {
                    bytes_field(&mut list, 1, &encode_value(v));
                }
                bytes_field(&mut out, 6, &list);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn istio_workload_metadata_encodes_as_envoy_does() {
        let bytes = Metadata::istio_workload(";;;;gke").encode();
        // Metadata.filter_metadata entry { key "istio", value Struct { fields entry {
        //   key "workload", value Value { string_value ";;;;gke" } } } }
        let value = [&[0x1a, 7][..], b";;;;gke"].concat(); // Value.string_value (3)
        let field_entry = [
            &[0x0a, 8][..],
            b"workload",
            &[0x12, value.len() as u8],
            &value,
        ]
        .concat();
        let strct = [&[0x0a, field_entry.len() as u8][..], &field_entry].concat();
        let entry = [&[0x0a, 5][..], b"istio", &[0x12, strct.len() as u8], &strct].concat();
        let expected = [&[0x0a, entry.len() as u8][..], &entry].concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn pairs_roundtrip_and_reject_garbage() {
        let bytes = serialize_pairs([("a", "1"), ("b", "22")]);
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
        assert_eq!(
            deserialize_pairs(&bytes).unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "22".into())]
        );
        assert_eq!(deserialize_pairs(&[0]).unwrap(), vec![]);
        assert_eq!(deserialize_pairs(&[5, 0, 0, 0, 1]), None);
        assert_eq!(deserialize_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn header_map_is_envoy_faithful() {
        let mut h = HeaderMap::from_pairs(&[("X-A", "1"), ("x-b", "b"), ("x-a", "2")]);
        assert_eq!(h.get("x-a"), Some("1"));
        h.replace("X-A", "3");
        assert_eq!(
            h.pairs(),
            &[
                ("x-b".to_string(), "b".to_string()),
                ("x-a".to_string(), "3".to_string())
            ]
        );
        h.remove("x-a");
        h.remove("x-b");
        assert!(h.is_empty());
    }

    #[test]
    fn routes_match_in_order_then_default() {
        let table = RouteTable {
            routes: vec![Route::new("gke").header("x-t", "gke").cluster("c-gke")],
            default_cluster: Some("c-default".into()),
        };
        let h = HeaderMap::from_pairs(&[("x-t", "other"), ("x-t", "gke")]);
        assert_eq!(table.select(&h).unwrap().cluster, "c-gke");
        let h = HeaderMap::from_pairs(&[("x-t", "other")]);
        assert_eq!(table.select(&h).unwrap().name, "default");
    }
}
