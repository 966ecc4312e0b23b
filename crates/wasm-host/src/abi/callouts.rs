//! HTTP and gRPC callouts: `proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`,
//! `proxy_grpc_send`, `proxy_grpc_cancel`, `proxy_grpc_close` (spec: "HTTP calls",
//! "gRPC calls").
//!
//! Callouts are recorded (see [`crate::state::HttpCallout`], [`crate::state::GrpcCallout`]);
//! the test answers them later with `Plugin::respond_http_call` / `Plugin::grpc_*`, which
//! runs `proxy_on_http_call_response` / `proxy_on_grpc_*` on the calling context's ROOT
//! context with the data readable, as Envoy 1.40 does.
//!
//! Only clusters Envoy knows are accepted: the route table's clusters, the default cluster
//! and those declared with `PluginBuilder::cluster`. Measured with Envoy 1.40 (gap 3 of
//! the fidelity notes): `proxy_http_call` to an unknown cluster is `BadArgument` with the
//! token word set to 0; `proxy_grpc_call` with a raw cluster name Envoy does not know is
//! `ParseFailure` (token untouched); with a serialized `GrpcService` naming an unknown
//! cluster it is `InternalFailure` (token untouched) and a `proxy_on_grpc_close(root,
//! token, 14)` still arrives once the running callback returns.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::envoy::deserialize_pairs;
use crate::host::HostState;
use crate::state::{GrpcCallout, HttpCallout};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_http_call(
        upstream_data: i32,
        upstream_size: i32,
        headers_data: i32,
        headers_size: i32,
        body_data: i32,
        body_size: i32,
        trailers_data: i32,
        trailers_size: i32,
        timeout: i32,
        return_token: i32
    ));
    link!(linker, proxy_grpc_call(
        upstream_data: i32,
        upstream_size: i32,
        service_data: i32,
        service_size: i32,
        method_data: i32,
        method_size: i32,
        metadata_data: i32,
        metadata_size: i32,
        message_data: i32,
        message_size: i32,
        timeout: i32,
        return_token: i32
    ));
    link!(linker, proxy_grpc_stream(
        upstream_data: i32,
        upstream_size: i32,
        service_data: i32,
        service_size: i32,
        method_data: i32,
        method_size: i32,
        metadata_data: i32,
        metadata_size: i32,
        return_token: i32
    ));
    link!(linker, proxy_grpc_send(token: i32, message_data: i32, message_size: i32, end_stream: i32));
    link!(linker, proxy_grpc_cancel(token: i32));
    link!(linker, proxy_grpc_close(token: i32));
    Ok(())
}

fn pairs(
    caller: &mut Caller<'_, HostState>,
    data: i32,
    size: i32,
) -> HostResult<Vec<(String, String)>> {
    let raw = memory::read(caller, data, size)?;
    Ok(deserialize_pairs(&raw).unwrap_or_default())
}

/// `proxy_http_call` (spec "HTTP calls"): records the call and returns its token.
/// `BadArgument` when `:method`, `:path` or `:authority` is missing, as in Envoy.
#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    caller: &mut Caller<'_, HostState>,
    upstream_data: i32,
    upstream_size: i32,
    headers_data: i32,
    headers_size: i32,
    body_data: i32,
    body_size: i32,
    trailers_data: i32,
    trailers_size: i32,
    timeout: i32,
    return_token: i32,
) -> HostResult {
    let upstream = memory::read_string(caller, upstream_data, upstream_size)?;
    let headers = pairs(caller, headers_data, headers_size)?;
    let body = memory::read(caller, body_data, body_size)?;
    let trailers = pairs(caller, trailers_data, trailers_size)?;
    memory::check(caller, return_token, 4)?;
    caller.data_mut().note(|| format!("{upstream} {headers:?}"));
    // Envoy's host writes 0 to the token word before the call, so a refused call leaves 0.
    memory::write_u32(caller, return_token, 0)?;
    for required in [":method", ":path", ":authority"] {
        if !headers.iter().any(|(k, _)| k == required) {
            return Err(Status::BadArgument.into());
        }
    }
    let state = caller.data();
    if !state.env.clusters.contains(&upstream) {
        return Err(Status::BadArgument.into());
    }
    let root_id = state.active_root().unwrap_or(state.active_context);
    let token = {
        let mut shared = state.shared();
        let token = shared.http_token();
        shared.http_callouts.push(HttpCallout {
            token,
            worker: state.worker,
            context_id: state.active_context,
            root_id,
            upstream,
            headers,
            body,
            trailers,
            timeout: Duration::from_millis(u64::from(timeout as u32)),
            issued_at: state.clock.elapsed(),
            answered: false,
        });
        token
    };
    memory::write_u32(caller, return_token, token)
}

#[allow(clippy::too_many_arguments)]
fn grpc_open(
    caller: &mut Caller<'_, HostState>,
    upstream: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
    message: Option<(i32, i32)>,
    timeout: Option<i32>,
    return_token: i32,
) -> HostResult {
    let upstream = memory::read(caller, upstream.0, upstream.1)?;
    let service = memory::read_string(caller, service.0, service.1)?;
    let method = memory::read_string(caller, method.0, method.1)?;
    let initial_metadata = pairs(caller, metadata.0, metadata.1)?;
    let messages = match message {
        Some((data, size)) => vec![memory::read(caller, data, size)?],
        None => Vec::new(),
    };
    memory::check(caller, return_token, 4)?;
    caller.data_mut().note(|| format!("{service}/{method}"));
    let state = caller.data_mut();
    let root_id = state.active_root().unwrap_or(state.active_context);
    match grpc_cluster(&upstream) {
        Upstream::Name(name) if !state.env.clusters.contains(&name) => {
            return Err(Status::ParseFailure.into())
        }
        Upstream::Service(Some(name)) if !state.env.clusters.contains(&name) => {
            let token = state.shared().grpc_token();
            state.pending_grpc_close.push((root_id, token));
            return Err(Status::InternalFailure.into());
        }
        _ => {}
    }
    let state = caller.data();
    let token = {
        let mut shared = state.shared();
        let token = shared.grpc_token();
        shared.grpc_callouts.push(GrpcCallout {
            token,
            worker: state.worker,
            context_id: state.active_context,
            root_id,
            upstream,
            service,
            method,
            initial_metadata,
            messages,
            timeout: timeout.map(|t| Duration::from_millis(u64::from(t as u32))),
            streaming: timeout.is_none(),
            half_closed: false,
            cancelled: false,
            closed: false,
            issued_at: state.clock.elapsed(),
            ended: false,
        });
        token
    };
    memory::write_u32(caller, return_token, token)
}

/// What the `upstream` argument of a gRPC call names.
enum Upstream {
    /// Bytes that are not a serialized `GrpcService`: a cluster name.
    Name(String),
    /// A serialized `envoy.config.core.v3.GrpcService`; its `envoy_grpc.cluster_name`
    /// when it has one (a `google_grpc` service names none).
    Service(Option<String>),
}

/// Envoy first parses the bytes as a `GrpcService` proto and, when that fails, takes them
/// as a cluster name.
fn grpc_cluster(bytes: &[u8]) -> Upstream {
    match proto_fields(bytes) {
        Some(fields) if !bytes.is_empty() => {
            let cluster = fields
                .iter()
                .find(|(field, _)| *field == 1)
                .and_then(|(_, envoy_grpc)| proto_fields(envoy_grpc))
                .and_then(|inner| {
                    inner
                        .into_iter()
                        .find(|(field, _)| *field == 1)
                        .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
                });
            Upstream::Service(cluster)
        }
        _ => Upstream::Name(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// The length-delimited fields of a protobuf message, `None` when it is not one.
fn proto_fields(mut bytes: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let field = key >> 3;
        if field == 0 {
            return None;
        }
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                out.push((field, bytes.get(..len)?));
                bytes = bytes.get(len..)?;
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

/// `proxy_grpc_call` (spec "gRPC calls"): records a unary call and returns its token.
#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    caller: &mut Caller<'_, HostState>,
    upstream_data: i32,
    upstream_size: i32,
    service_data: i32,
    service_size: i32,
    method_data: i32,
    method_size: i32,
    metadata_data: i32,
    metadata_size: i32,
    message_data: i32,
    message_size: i32,
    timeout: i32,
    return_token: i32,
) -> HostResult {
    grpc_open(
        caller,
        (upstream_data, upstream_size),
        (service_data, service_size),
        (method_data, method_size),
        (metadata_data, metadata_size),
        Some((message_data, message_size)),
        Some(timeout),
        return_token,
    )
}

/// `proxy_grpc_stream` (spec "gRPC calls"): records a stream and returns its token.
#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    caller: &mut Caller<'_, HostState>,
    upstream_data: i32,
    upstream_size: i32,
    service_data: i32,
    service_size: i32,
    method_data: i32,
    method_size: i32,
    metadata_data: i32,
    metadata_size: i32,
    return_token: i32,
) -> HostResult {
    grpc_open(
        caller,
        (upstream_data, upstream_size),
        (service_data, service_size),
        (method_data, method_size),
        (metadata_data, metadata_size),
        None,
        None,
        return_token,
    )
}

fn with_grpc(
    caller: &mut Caller<'_, HostState>,
    token: i32,
    f: impl FnOnce(&mut GrpcCallout) -> HostResult,
) -> HostResult {
    let state = caller.data();
    let mut shared = state.shared();
    let callout = shared
        .grpc_callouts
        .iter_mut()
        .find(|c| c.token == token as u32 && !c.closed && !c.cancelled)
        .ok_or(Status::NotFound)?;
    f(callout)
}

/// `proxy_grpc_send` (spec "gRPC calls"): records a message on an open stream;
/// `NotFound` for an unknown stream, `BadArgument` for a unary call's token.
fn proxy_grpc_send(
    caller: &mut Caller<'_, HostState>,
    token: i32,
    message_data: i32,
    message_size: i32,
    end_stream: i32,
) -> HostResult {
    let message = memory::read(caller, message_data, message_size)?;
    with_grpc(caller, token, |c| {
        if !c.streaming {
            return Err(Status::BadArgument.into());
        }
        c.messages.push(message);
        c.half_closed |= end_stream != 0;
        Ok(())
    })
}

/// `proxy_grpc_cancel` (spec "gRPC calls"): cancels a call or stream; `NotFound` when
/// unknown.
fn proxy_grpc_cancel(caller: &mut Caller<'_, HostState>, token: i32) -> HostResult {
    with_grpc(caller, token, |c| {
        c.cancelled = true;
        Ok(())
    })
}

/// `proxy_grpc_close` (spec "gRPC calls"): closes a call or stream; `NotFound` when
/// unknown.
fn proxy_grpc_close(caller: &mut Caller<'_, HostState>, token: i32) -> HostResult {
    with_grpc(caller, token, |c| {
        c.closed = true;
        Ok(())
    })
}
