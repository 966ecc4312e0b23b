//! Stream control: `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_send_local_response`, `proxy_get_status`, `proxy_set_effective_context`,
//! `proxy_done` (spec: "Common stream operations", "HTTP", "Context lifecycle").
//!
//! These only record what the guest asked; the harness acts on it once the running
//! callback returns (resume the request, send the local reply, finish the context),
//! as Envoy does.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::envoy::deserialize_pairs;
use crate::host::HostState;
use crate::state::LocalReply;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_continue_stream(stream_type: i32));
    link!(linker, proxy_close_stream(stream_type: i32));
    link!(linker, proxy_send_local_response(
        status_code: i32,
        details_data: i32,
        details_size: i32,
        body_data: i32,
        body_size: i32,
        headers_data: i32,
        headers_size: i32,
        grpc_status: i32
    ));
    link!(linker, proxy_get_status(return_code: i32, return_message_data: i32, return_message_size: i32));
    link!(linker, proxy_set_effective_context(context_id: i32));
    link!(linker, proxy_done());
    Ok(())
}

/// `proxy_continue_stream` (spec "Common stream operations"): resumes the paused request
/// (0) or response (1) of the effective stream, once the running callback returns.
/// `Unimplemented` for TCP streams (2, 3), `BadArgument` for other types or an unknown
/// context. In a root context (e.g. in `proxy_on_http_call_response`, which Envoy 1.40
/// runs on the root) it returns `Ok` and does nothing, as measured: the guest must first
/// `proxy_set_effective_context(stream)`.
fn proxy_continue_stream(caller: &mut Caller<'_, HostState>, stream_type: i32) -> HostResult {
    if matches!(stream_type, 2 | 3) {
        return Err(Status::Unimplemented.into());
    }
    let state = caller.data_mut();
    if state.roots.contains_key(&state.active_context) && matches!(stream_type, 0 | 1) {
        return Ok(());
    }
    let stream = state.stream_mut().ok_or(Status::BadArgument)?;
    match stream_type {
        0 => stream.continue_request = true,
        1 => stream.continue_response = true,
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

/// `proxy_close_stream` (spec "Common stream operations"): resets the effective HTTP
/// stream. Once the callback returns, whatever it returned, the stream ends without a
/// response: nothing more is forwarded, the client sees a reset, the filter gets
/// `proxy_on_log` and `proxy_on_done` (details `wasm_close_stream`; measured in Envoy).
fn proxy_close_stream(caller: &mut Caller<'_, HostState>, stream_type: i32) -> HostResult {
    if !(0..=3).contains(&stream_type) {
        return Err(Status::BadArgument.into());
    }
    let stream = caller.data_mut().stream_mut().ok_or(Status::BadArgument)?;
    stream.close_requested = true;
    Ok(())
}

/// `proxy_send_local_response` (spec "HTTP"): answers the client instead of the upstream.
/// The request is not forwarded; once the callback returns, the local reply's headers and
/// body go through this filter's response callbacks, as in Envoy. A second local reply on
/// the same stream is ignored.
#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    caller: &mut Caller<'_, HostState>,
    status_code: i32,
    details_data: i32,
    details_size: i32,
    body_data: i32,
    body_size: i32,
    headers_data: i32,
    headers_size: i32,
    grpc_status: i32,
) -> HostResult {
    let details = memory::read_string(caller, details_data, details_size)?;
    let body = memory::read(caller, body_data, body_size)?;
    let headers = memory::read(caller, headers_data, headers_size)?;
    let headers = deserialize_pairs(&headers).unwrap_or_default();
    let state = caller.data_mut();
    state.note(|| format!("{} {details}", status_code as u32));
    let stream = state.stream_mut().ok_or(Status::BadArgument)?;
    if stream.local_reply.is_none() {
        stream.local_reply = Some(LocalReply {
            status: status_code as u32,
            details: crate::hcm::sanitize_details(&details),
            body,
            headers,
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
        });
        stream.local_reply_pending = true;
    }
    Ok(())
}

/// `proxy_get_status` (spec "HTTP"): status code and message of the HTTP/gRPC callout
/// whose callback is running (0 and empty otherwise).
fn proxy_get_status(
    caller: &mut Caller<'_, HostState>,
    return_code: i32,
    return_message_data: i32,
    return_message_size: i32,
) -> HostResult {
    let (code, message) = caller
        .data()
        .call
        .as_ref()
        .map(|c| c.status.clone())
        .unwrap_or_default();
    memory::check(caller, return_code, 4)?;
    memory::return_bytes(
        caller,
        message.as_bytes(),
        return_message_data,
        return_message_size,
    )?;
    memory::write_u32(caller, return_code, code)
}

/// `proxy_set_effective_context` (spec "Context lifecycle"): later host calls act on
/// `context_id`; `BadArgument` for an unknown context.
fn proxy_set_effective_context(caller: &mut Caller<'_, HostState>, context_id: i32) -> HostResult {
    let id = context_id as u32;
    let state = caller.data_mut();
    if state.roots.contains_key(&id) || state.streams.contains_key(&id) {
        state.active_context = id;
        Ok(())
    } else {
        Err(Status::BadArgument.into())
    }
}

/// `proxy_done` (spec "Context lifecycle"): the effective context, which returned `false`
/// from `proxy_on_done`, is finished; the harness then calls `proxy_on_log` and
/// `proxy_on_delete`. `NotFound` when it was not pending finalization.
fn proxy_done(caller: &mut Caller<'_, HostState>) -> HostResult {
    let stream = caller.data_mut().stream_mut().ok_or(Status::NotFound)?;
    if !stream.awaiting_done {
        return Err(Status::NotFound.into());
    }
    stream.done_called = true;
    Ok(())
}
