//! Properties as Envoy 1.40 / Istio serve them, per phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{call, path, put, returned, ARGS, OOB, RET_PTR, RET_SIZE};
use proxy_wasm_host::{
    response_flags, Connection, Direction, Metadata, NodeMetadataStyle, Plugin, Proxy, Route,
    Status, StructValue, Upstream,
};

fn get(p: &mut Plugin, ctx: u32, segments: &[&str]) -> Result<Vec<u8>, Status> {
    let (ptr, len) = put(p, ARGS, &path(segments));
    match call(
        p,
        ctx,
        "proxy_get_property",
        &[ptr, len, i64::from(RET_PTR), i64::from(RET_SIZE)],
    ) {
        Status::Ok => Ok(returned(p)),
        s => Err(s),
    }
}

fn proxy(style: NodeMetadataStyle) -> Proxy {
    Proxy::istio("gke")
        .network("kuchima-demo-vpc01")
        .locality("asia-northeast1", "asia-northeast1-a", "")
        .direction(Direction::Outbound)
        .node_metadata_style(style)
}

#[test]
fn node_properties_xds_style() {
    let module = common::module("");
    let mut p = Plugin::builder(&module)
        .proxy(proxy(NodeMetadataStyle::Xds))
        .build()
        .unwrap();
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "metadata", "CLUSTER_ID"]).unwrap(),
        b"gke"
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "metadata", "NETWORK"]).unwrap(),
        b"kuchima-demo-vpc01"
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "locality", "region"]).unwrap(),
        b"asia-northeast1"
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "locality", "zone"]).unwrap(),
        b"asia-northeast1-a"
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "locality", "sub_zone"]).unwrap(),
        b"",
        "empty: null pointer, size 0"
    );
    assert_eq!(
        get(&mut p, 1, &["node", "metadata", "CLUSTER_ID"]),
        Err(Status::NotFound)
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "metadata", "NOPE"]),
        Err(Status::NotFound)
    );
    // Envoy 1.40: `xds.listener_direction`; the top-level path is NotFound.
    assert_eq!(
        get(&mut p, 1, &["xds", "listener_direction"]).unwrap(),
        2u64.to_le_bytes()
    );
    assert_eq!(
        get(&mut p, 1, &["listener_direction"]),
        Err(Status::NotFound)
    );
    let meta = proxy_wasm_host::envoy::deserialize_pairs(
        &get(&mut p, 1, &["xds", "node", "metadata"]).unwrap(),
    )
    .unwrap();
    assert_eq!(meta.len(), 2);
    assert_eq!(
        get(&mut p, 1, &["xds", "node"]).unwrap().len(),
        proxy_wasm_host::envoy::XDS_NODE_BLOB_SIZE
    );
    // Stream-only properties do not exist on the root context.
    assert_eq!(
        get(&mut p, 1, &["connection", "mtls"]),
        Err(Status::NotFound)
    );
    // Bad pointers.
    assert_eq!(
        call(
            &mut p,
            1,
            "proxy_get_property",
            &[OOB, 3, i64::from(RET_PTR), i64::from(RET_SIZE)]
        ),
        Status::InvalidMemoryAccess
    );
}

#[test]
fn node_properties_legacy_style() {
    let module = common::module("");
    let mut p = Plugin::builder(&module)
        .proxy(proxy(NodeMetadataStyle::Legacy))
        .build()
        .unwrap();
    assert_eq!(
        get(&mut p, 1, &["node", "metadata", "CLUSTER_ID"]).unwrap(),
        b"gke"
    );
    assert_eq!(
        get(&mut p, 1, &["node", "locality", "zone"]).unwrap(),
        b"asia-northeast1-a"
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "node", "metadata", "CLUSTER_ID"]),
        Err(Status::NotFound)
    );
    assert_eq!(
        get(&mut p, 1, &["listener_direction"]).unwrap(),
        2u64.to_le_bytes()
    );
    assert_eq!(
        get(&mut p, 1, &["xds", "listener_direction"]),
        Err(Status::NotFound)
    );
}

#[test]
fn stream_properties_by_phase() {
    let module = common::module("");
    let mut p = Plugin::builder(&module)
        .routes(vec![Route::new("r1").cluster("outbound|80||echo")])
        .build()
        .unwrap();
    let mut s = p.stream(0).connection(Connection::mtls(
        "spiffe://cluster.local/ns/sleep/sa/sleep",
        "spiffe://cluster.local/ns/default/sa/echo",
    ));
    s.request_headers(
        &[
            (":method", "GET"),
            (":path", "/a?b"),
            (":authority", "echo"),
        ],
        true,
    )
    .unwrap();
    let id = s.context_id().unwrap();
    let p = s.plugin();
    assert_eq!(get(p, id, &["connection", "mtls"]).unwrap(), [1]);
    assert_eq!(
        get(p, id, &["connection", "uri_san_peer_certificate"]).unwrap(),
        b"spiffe://cluster.local/ns/sleep/sa/sleep"
    );
    assert_eq!(
        get(p, id, &["connection", "uri_san_local_certificate"]).unwrap(),
        b"spiffe://cluster.local/ns/default/sa/echo"
    );
    assert_eq!(get(p, id, &["xds", "route_name"]).unwrap(), b"r1");
    assert_eq!(
        get(p, id, &["xds", "cluster_name"]).unwrap(),
        b"outbound|80||echo"
    );
    assert_eq!(get(p, id, &["request", "url_path"]).unwrap(), b"/a");
    // Response phase properties do not exist yet.
    for prop in [
        &["response", "code"][..],
        &["response", "flags"],
        &["upstream", "address"],
        &["upstream", "port"],
        &["xds", "upstream_host_metadata"],
    ] {
        assert_eq!(get(p, id, prop), Err(Status::NotFound), "{prop:?}");
    }
    s.upstream(
        Upstream::new(200)
            .address("10.24.1.9:8080")
            .istio_workload("echoserver;default;echoserver;latest;gke"),
    )
    .unwrap();
    s.response_headers(&[("x-foo", "bar")], true).unwrap();
    let p = s.plugin();
    assert_eq!(
        get(p, id, &["response", "code"]).unwrap(),
        200u64.to_le_bytes()
    );
    assert_eq!(
        get(p, id, &["response", "flags"]).unwrap(),
        0u64.to_le_bytes()
    );
    assert_eq!(
        get(p, id, &["upstream", "address"]).unwrap(),
        b"10.24.1.9:8080"
    );
    assert_eq!(
        get(p, id, &["upstream", "port"]).unwrap(),
        8080u64.to_le_bytes()
    );
    assert_eq!(
        get(p, id, &["xds", "upstream_host_metadata"]).unwrap(),
        Metadata::istio_workload("echoserver;default;echoserver;latest;gke").encode()
    );
}

#[test]
fn host_without_metadata_is_a_serialization_failure() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    let id = s.context_id().unwrap();
    s.respond(Upstream::new(200).address("10.0.0.1:15443"))
        .unwrap();
    assert_eq!(
        get(s.plugin(), id, &["xds", "upstream_host_metadata"]),
        Err(Status::SerializationFailure)
    );
    assert_eq!(
        get(s.plugin(), id, &["upstream", "port"]).unwrap(),
        15443u64.to_le_bytes()
    );
}

#[test]
fn no_healthy_upstream_has_flags_but_no_upstream_host() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    let id = s.context_id().unwrap();
    s.respond(Upstream::new(503).flags(response_flags::NO_HEALTHY_UPSTREAM))
        .unwrap();
    assert_eq!(
        get(s.plugin(), id, &["response", "flags"]).unwrap(),
        2u64.to_le_bytes()
    );
    assert_eq!(
        get(s.plugin(), id, &["upstream", "address"]),
        Err(Status::NotFound)
    );
    assert_eq!(
        get(s.plugin(), id, &["xds", "upstream_host_metadata"]),
        Err(Status::NotFound)
    );
}

#[test]
fn set_property_is_filter_state() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.request_headers(&[(":method", "GET")], true).unwrap();
    let id = s.context_id().unwrap();
    let p = s.plugin();
    let (k, kl) = put(p, ARGS + 500, &path(&["hybridmesh", "hop"]));
    let (v, vl) = put(p, ARGS + 600, b"gke>aws");
    assert_eq!(
        call(p, id, "proxy_set_property", &[k, kl, v, vl]),
        Status::Ok
    );
    assert_eq!(get(p, id, &["hybridmesh", "hop"]).unwrap(), b"gke>aws");
    assert_eq!(
        get(p, 1, &["hybridmesh", "hop"]),
        Err(Status::NotFound),
        "per stream"
    );
    s.complete().unwrap();
    assert_eq!(s.filter_state().get("hybridmesh.hop").unwrap(), b"gke>aws");
}

/// Dynamic metadata another filter set, as Envoy 1.40 serves it (measured by the Go SDK
/// corpus's `properties` filter behind Envoy's `set_metadata` filter; the bytes below are
/// Envoy's).
#[test]
fn another_filters_dynamic_metadata() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.filter_metadata("probe", "s", StructValue::String("text".into()));
    s.filter_metadata("probe", "n", StructValue::Number(7.0));
    s.filter_metadata("probe", "b", StructValue::Bool(true));
    s.request_headers(&[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    let id = s.context_id().unwrap();
    // Set after the headers: the next read sees it.
    s.filter_metadata(
        "probe",
        "nested",
        StructValue::Struct([("k".to_owned(), StructValue::String("v".into()))].into()),
    );
    s.filter_metadata(
        "probe",
        "list",
        StructValue::List(vec![
            StructValue::String("a".into()),
            StructValue::Number(1.0),
        ]),
    );
    let p = s.plugin();
    let field =
        |p: &mut Plugin, key: &str| get(p, id, &["metadata", "filter_metadata", "probe", key]);
    assert_eq!(field(p, "s").unwrap(), b"text");
    assert_eq!(field(p, "n").unwrap(), b"\x00\x00\x00\x00\x00\x00\x1c@");
    assert_eq!(field(p, "b").unwrap(), b"\x01");
    assert_eq!(
        field(p, "nested").unwrap(),
        b"\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00k\x00v\x00"
    );
    assert_eq!(
        get(
            p,
            id,
            &["metadata", "filter_metadata", "probe", "nested", "k"]
        )
        .unwrap(),
        b"v"
    );
    assert_eq!(
        field(p, "list").unwrap(),
        b"\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\
          a\x00\x00\x00\x00\x00\x00\x00\x00\xf0?\x00\x00"
    );
    assert_eq!(field(p, "absent"), Err(Status::NotFound));
    assert_eq!(
        get(p, id, &["metadata", "filter_metadata", "absent"]),
        Err(Status::NotFound)
    );
    // A namespace is pairs of its fields and the whole message the serialized protobuf;
    // Envoy writes map entries in hash order (the harness sorted), so the sizes are what
    // compares: Envoy's were 129 and 101 bytes for these five fields.
    let namespace = get(p, id, &["metadata", "filter_metadata", "probe"]).unwrap();
    assert_eq!(&namespace[..4], &5u32.to_le_bytes());
    assert_eq!(namespace.len(), 129);
    assert_eq!(get(p, id, &["metadata"]).unwrap().len(), 101);
}

/// A null anywhere in what is asked for cannot be serialized (Envoy 1.40: status 3).
#[test]
fn a_null_in_dynamic_metadata_is_a_serialization_failure() {
    let module = common::module("");
    let mut p = Plugin::builder(&module).build().unwrap();
    let mut s = p.stream(0);
    s.filter_metadata("probe", "z", StructValue::Null);
    s.filter_metadata("probe", "s", StructValue::String("text".into()));
    s.request_headers(&[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    let id = s.context_id().unwrap();
    let p = s.plugin();
    for path in [
        &["metadata", "filter_metadata", "probe", "z"][..],
        &["metadata", "filter_metadata", "probe"],
        &["metadata", "filter_metadata"],
    ] {
        assert_eq!(
            get(p, id, path),
            Err(Status::SerializationFailure),
            "{path:?}"
        );
    }
    assert_eq!(
        get(p, id, &["metadata", "filter_metadata", "probe", "s"]).unwrap(),
        b"text"
    );
}
