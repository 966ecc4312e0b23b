//! HTTP and gRPC callouts: `proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`,
//! `proxy_grpc_send`, `proxy_grpc_cancel`, `proxy_grpc_close` (spec: "HTTP calls",
//! "gRPC calls").
//!
//! Callouts are recorded (see [`crate::state::HttpCallout`], [`crate::state::GrpcCallout`]);
//! the test answers them later with `Plugin::respond_http_call` / `Plugin::grpc_*`, which
//! runs `proxy_on_http_call_response` / `proxy_on_grpc_*` with the data readable. Any
//! upstream cluster name is accepted.

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
    for required in [":method", ":path", ":authority"] {
        if !headers.iter().any(|(k, _)| k == required) {
            return Err(Status::BadArgument.into());
        }
    }
    let state = caller.data();
    let token = {
        let mut shared = state.shared();
        let token = shared.token();
        shared.http_callouts.push(HttpCallout {
            token,
            worker: state.worker,
            context_id: state.active_context,
            upstream,
            headers,
            body,
            trailers,
            timeout: Duration::from_millis(u64::from(timeout as u32)),
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
    let state = caller.data();
    let token = {
        let mut shared = state.shared();
        let token = shared.token();
        shared.grpc_callouts.push(GrpcCallout {
            token,
            worker: state.worker,
            context_id: state.active_context,
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
        });
        token
    };
    memory::write_u32(caller, return_token, token)
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
