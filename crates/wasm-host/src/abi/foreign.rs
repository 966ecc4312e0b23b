//! Foreign functions: `proxy_call_foreign_function` (spec: "Foreign function interface").
//!
//! Envoy 1.40 registers several; the harness provides `clear_route_cache` (clears the
//! route cache of the effective stream: the route is matched again after the callback).
//! Any other name is `NotFound`.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_call_foreign_function(
        name_data: i32,
        name_size: i32,
        arguments_data: i32,
        arguments_size: i32,
        return_results_data: i32,
        return_results_size: i32
    ));
    Ok(())
}

/// `proxy_call_foreign_function` (spec "Foreign function interface"): `clear_route_cache`
/// returns `Ok` with no results (on a root context it does nothing); unknown names are
/// `NotFound`.
fn proxy_call_foreign_function(
    caller: &mut Caller<'_, HostState>,
    name_data: i32,
    name_size: i32,
    arguments_data: i32,
    arguments_size: i32,
    return_results_data: i32,
    return_results_size: i32,
) -> HostResult {
    let name = memory::read_string(caller, name_data, name_size)?;
    memory::read(caller, arguments_data, arguments_size)?;
    caller.data_mut().note(|| name.clone());
    match name.as_str() {
        "clear_route_cache" => {
            if let Some(stream) = caller.data_mut().stream_mut() {
                if !stream.request_forwarded {
                    stream.route_cache_cleared = true;
                }
            }
            memory::check(caller, return_results_data, 4)?;
            memory::check(caller, return_results_size, 4)?;
            memory::write_u32(caller, return_results_data, 0)?;
            memory::write_u32(caller, return_results_size, 0)
        }
        _ => Err(Status::NotFound.into()),
    }
}
