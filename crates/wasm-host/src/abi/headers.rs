//! HTTP fields: `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_replace_header_map_value`,
//! `proxy_remove_header_map_value`, `proxy_add_header_map_value`,
//! `proxy_get_header_map_size` (spec: "HTTP fields").
//!
//! Envoy-faithful: keys are lower-cased on write, a lookup returns the first value of a
//! repeated key, replace removes every entry and appends one (Envoy's `setCopy`), set-pairs
//! removes every entry then adds the pairs. A map that does not exist yet (e.g. response headers
//! during `proxy_on_request_headers`) is `BadArgument`, as Envoy returns. Any change of the
//! request headers clears the route cache (ABI 0.2.1), which the harness records.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::envoy::{deserialize_pairs, HeaderMap};
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_get_header_map_pairs(map_type: i32, return_data: i32, return_size: i32));
    link!(linker, proxy_set_header_map_pairs(map_type: i32, data: i32, size: i32));
    link!(linker, proxy_get_header_map_value(map_type: i32, key_data: i32, key_size: i32, return_data: i32, return_size: i32));
    link!(linker, proxy_replace_header_map_value(map_type: i32, key_data: i32, key_size: i32, value_data: i32, value_size: i32));
    link!(linker, proxy_remove_header_map_value(map_type: i32, key_data: i32, key_size: i32));
    link!(linker, proxy_add_header_map_value(map_type: i32, key_data: i32, key_size: i32, value_data: i32, value_size: i32));
    link!(linker, proxy_get_header_map_size(map_type: i32, return_size: i32));
    Ok(())
}

/// `proxy_map_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    fn from_raw(raw: i32) -> Result<MapType, Status> {
        Ok(match raw {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

fn map(state: &HostState, kind: MapType) -> Result<&HeaderMap, Status> {
    let found = match kind {
        MapType::RequestHeaders => state.stream().and_then(|s| s.request_headers.as_ref()),
        MapType::RequestTrailers => state.stream().and_then(|s| s.request_trailers.as_ref()),
        MapType::ResponseHeaders => state.stream().and_then(|s| s.response_headers.as_ref()),
        MapType::ResponseTrailers => state.stream().and_then(|s| s.response_trailers.as_ref()),
        MapType::GrpcInitialMetadata | MapType::HttpCallResponseHeaders => {
            state.call.as_ref().map(|c| &c.headers)
        }
        MapType::GrpcTrailingMetadata | MapType::HttpCallResponseTrailers => {
            state.call.as_ref().map(|c| &c.trailers)
        }
    };
    found.ok_or(Status::BadArgument)
}

/// Applies `change` to a writable map, recording route-cache clearing for request headers.
fn modify(
    state: &mut HostState,
    kind: MapType,
    changed: &[String],
    change: impl FnOnce(&mut HeaderMap),
) -> HostResult {
    let stream = state.stream_mut().ok_or(Status::BadArgument)?;
    let target = match kind {
        MapType::RequestHeaders => stream.request_headers.as_mut(),
        MapType::RequestTrailers => stream.request_trailers.as_mut(),
        MapType::ResponseHeaders => stream.response_headers.as_mut(),
        MapType::ResponseTrailers => stream.response_trailers.as_mut(),
        _ => None,
    };
    change(target.ok_or(Status::BadArgument)?);
    if kind == MapType::RequestHeaders && !stream.request_forwarded {
        stream.route_cache_cleared = true;
        for name in changed {
            if !stream.changed_headers.contains(name) {
                stream.changed_headers.push(name.clone());
            }
        }
    }
    Ok(())
}

/// `proxy_get_header_map_pairs` (spec "HTTP fields"): the whole map, serialized.
fn proxy_get_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    return_data: i32,
    return_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    caller.data_mut().note(|| format!("{kind:?}"));
    let bytes = map(caller.data(), kind)?.serialize();
    memory::return_bytes(caller, &bytes, return_data, return_size)
}

/// `proxy_set_header_map_pairs` (spec "HTTP fields"): replaces the whole map like Envoy's
/// `setHeaderMapPairs` (remove every header, then add each pair). Malformed data is read as
/// an empty map, as Envoy's `toPairs` does.
fn proxy_set_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    data: i32,
    size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let raw = memory::read(caller, data, size)?;
    let pairs = deserialize_pairs(&raw).unwrap_or_default();
    let state = caller.data_mut();
    let old = map(state, kind)?.clone();
    let new = HeaderMap::from_pairs(&pairs);
    let mut changed: Vec<String> = Vec::new();
    for (k, _) in old.pairs().iter().chain(new.pairs()) {
        let differs = !old.get_all(k).eq(new.get_all(k));
        if differs && !changed.contains(k) {
            changed.push(k.clone());
        }
    }
    state.note(|| format!("{kind:?} {} pairs, changed {changed:?}", pairs.len()));
    modify(state, kind, &changed, |m| *m = new)
}

/// `proxy_get_header_map_value` (spec "HTTP fields"): the FIRST value of `key`;
/// `NotFound` when absent.
fn proxy_get_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    return_data: i32,
    return_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let key = memory::read_string(caller, key_data, key_size)?;
    caller.data_mut().note(|| format!("{kind:?} {key}"));
    let value = map(caller.data(), kind)?
        .get(&key)
        .map(str::to_owned)
        .ok_or(Status::NotFound)?;
    memory::return_bytes(caller, value.as_bytes(), return_data, return_size)
}

/// `proxy_replace_header_map_value` (spec "HTTP fields"): Envoy's `setCopy` (every entry
/// removed, one appended).
fn proxy_replace_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let key = memory::read_string(caller, key_data, key_size)?.to_ascii_lowercase();
    let value = memory::read_string(caller, value_data, value_size)?;
    let state = caller.data_mut();
    state.note(|| format!("{kind:?} {key}: {value}"));
    modify(state, kind, std::slice::from_ref(&key), |m| {
        m.replace(&key, &value)
    })
}

/// `proxy_remove_header_map_value` (spec "HTTP fields"): removes every entry of `key`
/// (`Ok` also when there was none).
fn proxy_remove_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let key = memory::read_string(caller, key_data, key_size)?.to_ascii_lowercase();
    let state = caller.data_mut();
    state.note(|| format!("{kind:?} {key}"));
    modify(state, kind, std::slice::from_ref(&key), |m| m.remove(&key))
}

/// `proxy_add_header_map_value` (spec "HTTP fields"): appends an entry (a client-sent
/// entry of the same key survives).
fn proxy_add_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let key = memory::read_string(caller, key_data, key_size)?.to_ascii_lowercase();
    let value = memory::read_string(caller, value_data, value_size)?;
    let state = caller.data_mut();
    state.note(|| format!("{kind:?} {key}: {value}"));
    modify(state, kind, std::slice::from_ref(&key), |m| {
        m.add(&key, &value)
    })
}

/// `proxy_get_header_map_size` (spec "HTTP fields"): size of the serialized map.
fn proxy_get_header_map_size(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    return_size: i32,
) -> HostResult {
    let kind = MapType::from_raw(map_type)?;
    let size = map(caller.data(), kind)?.serialize().len();
    memory::write_u32(
        caller,
        return_size,
        u32::try_from(size).map_err(|_| Status::InternalFailure)?,
    )
}
