//! Properties: `proxy_get_property`, `proxy_set_property` (spec: "Properties"); what is
//! served is documented in [`crate::envoy`].

use wasmtime::{Caller, Linker};

use super::{memory, split_path, HostResult, Status};
use crate::envoy;
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_get_property(path_data: i32, path_size: i32, return_data: i32, return_size: i32));
    link!(linker, proxy_set_property(path_data: i32, path_size: i32, value_data: i32, value_size: i32));
    Ok(())
}

/// Filter-state key of a property path: its segments joined by `.`.
fn filter_state_key(path: &[String]) -> String {
    path.join(".")
}

/// `proxy_get_property` (spec "Properties"): the path is NUL-separated segments. Built-in
/// Envoy/Istio properties first, then what `proxy_set_property` stored on this stream (or
/// root context). `NotFound` when neither has it or it does not exist in this phase;
/// `SerializationFailure` for `xds.upstream_host_metadata` of a host without metadata.
fn proxy_get_property(
    caller: &mut Caller<'_, HostState>,
    path_data: i32,
    path_size: i32,
    return_data: i32,
    return_size: i32,
) -> HostResult {
    let raw = memory::read(caller, path_data, path_size)?;
    let path = split_path(&raw);
    let state = caller.data();
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let stream = state.stream();
    let result = envoy::property(
        &state.env.proxy,
        &state.env.identity,
        stream.map(|s| s.facts()),
        &segments,
    );
    let value = match result {
        Err(Status::NotFound) => {
            let key = filter_state_key(&path);
            let stored = match stream {
                Some(s) => s.filter_state.get(&key),
                None => state
                    .roots
                    .get(&state.active_context)
                    .and_then(|r| r.filter_state.get(&key)),
            };
            stored.cloned().ok_or(Status::NotFound)
        }
        other => other,
    };
    let outcome = match &value {
        Ok(v) => format!("{} bytes", v.len()),
        Err(s) => format!("{s:?}"),
    };
    caller
        .data_mut()
        .note(|| format!("{} -> {outcome}", path.join(".")));
    memory::return_bytes(caller, &value?, return_data, return_size)
}

/// `proxy_set_property` (spec "Properties"): stores the value as filter state of the
/// effective stream (or root context) under the path; a later get of the same path
/// returns it.
fn proxy_set_property(
    caller: &mut Caller<'_, HostState>,
    path_data: i32,
    path_size: i32,
    value_data: i32,
    value_size: i32,
) -> HostResult {
    let raw = memory::read(caller, path_data, path_size)?;
    let value = memory::read(caller, value_data, value_size)?;
    let key = filter_state_key(&split_path(&raw));
    let state = caller.data_mut();
    state.note(|| format!("{key} = {} bytes", value.len()));
    let active = state.active_context;
    if let Some(stream) = state.streams.get_mut(&active) {
        stream.filter_state.insert(key, value);
    } else if let Some(root) = state.roots.get_mut(&active) {
        root.filter_state.insert(key, value);
    } else {
        return Err(Status::NotFound.into());
    }
    Ok(())
}
