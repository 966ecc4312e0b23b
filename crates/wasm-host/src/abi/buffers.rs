//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`
//! (spec: "Buffers").
//!
//! Availability follows Envoy: bodies exist once a body callback ran, the plugin
//! configuration only inside `proxy_on_configure`, the VM configuration always, callout
//! bodies only inside their callbacks; TCP data and foreign-function arguments never.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_get_buffer_bytes(buffer_type: i32, start: i32, max_size: i32, return_data: i32, return_size: i32));
    link!(linker, proxy_set_buffer_bytes(buffer_type: i32, start: i32, size: i32, data: i32, data_size: i32));
    link!(linker, proxy_get_buffer_status(buffer_type: i32, return_size: i32, return_flags: i32));
    Ok(())
}

/// `proxy_buffer_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    fn from_raw(raw: i32) -> Result<BufferType, Status> {
        Ok(match raw {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return Err(Status::BadArgument),
        })
    }
}

fn buffer(state: &HostState, kind: BufferType) -> Result<&[u8], Status> {
    let found = match kind {
        BufferType::HttpRequestBody => state.stream().and_then(|s| s.request_body.as_deref()),
        BufferType::HttpResponseBody => state.stream().and_then(|s| s.response_body.as_deref()),
        BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => {
            state.call.as_ref().and_then(|c| c.body.as_deref())
        }
        BufferType::VmConfiguration => Some(state.env.vm_config.as_slice()),
        BufferType::PluginConfiguration => state.configuring.as_deref(),
        BufferType::DownstreamData | BufferType::UpstreamData | BufferType::CallData => None,
    };
    found.ok_or(Status::NotFound)
}

/// `proxy_get_buffer_bytes` (spec "Buffers"): up to `max_size` bytes from `start`.
/// `BadArgument` for an unknown buffer or when `start + max_size` overflows or `start` is
/// past the end; `NotFound` when the buffer is not available now.
fn proxy_get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    max_size: i32,
    return_data: i32,
    return_size: i32,
) -> HostResult {
    let kind = BufferType::from_raw(buffer_type)?;
    caller.data_mut().note(|| format!("{kind:?}"));
    let (start, max_size) = (start as u32, max_size as u32);
    start.checked_add(max_size).ok_or(Status::BadArgument)?;
    let bytes = buffer(caller.data(), kind)?;
    let start = start as usize;
    if start > bytes.len() {
        return Err(Status::BadArgument.into());
    }
    let end = bytes.len().min(start + max_size as usize);
    let slice = bytes[start..end].to_vec();
    memory::return_bytes(caller, &slice, return_data, return_size)
}

/// `proxy_set_buffer_bytes` (spec "Buffers"), with Envoy's `Buffer::copyFrom` semantics:
/// `start == 0` drains `size` bytes then prepends the value (so `0, len` replaces the
/// whole buffer); `start >= len` appends; anything else is `BadArgument`. Read-only buffers
/// are `BadArgument`; unavailable ones `NotFound`.
fn proxy_set_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    size: i32,
    data: i32,
    data_size: i32,
) -> HostResult {
    let kind = BufferType::from_raw(buffer_type)?;
    let value = memory::read(caller, data, data_size)?;
    let state = caller.data_mut();
    state.note(|| {
        format!(
            "{kind:?} start={} size={} len={}",
            start as u32,
            size as u32,
            value.len()
        )
    });
    let target = match kind {
        BufferType::HttpRequestBody => state.stream_mut().and_then(|s| s.request_body.as_mut()),
        BufferType::HttpResponseBody => state.stream_mut().and_then(|s| s.response_body.as_mut()),
        _ => {
            buffer(state, kind)?;
            return Err(Status::BadArgument.into());
        }
    };
    let body = target.ok_or(Status::NotFound)?;
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if start == 0 {
        body.drain(..size.min(body.len()));
        body.splice(0..0, value);
    } else if start >= body.len() {
        body.extend_from_slice(&value);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// `proxy_get_buffer_status` (spec "Buffers"): the buffer's size; flags are always 0.
fn proxy_get_buffer_status(
    caller: &mut Caller<'_, HostState>,
    buffer_type: i32,
    return_size: i32,
    return_flags: i32,
) -> HostResult {
    let kind = BufferType::from_raw(buffer_type)?;
    let len = buffer(caller.data(), kind)?.len();
    memory::check(caller, return_flags, 4)?;
    memory::write_u32(
        caller,
        return_size,
        u32::try_from(len).map_err(|_| Status::InternalFailure)?,
    )?;
    memory::write_u32(caller, return_flags, 0)
}
