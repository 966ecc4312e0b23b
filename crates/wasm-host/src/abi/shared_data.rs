//! Shared key-value store: `proxy_get_shared_data`, `proxy_set_shared_data` (spec:
//! "Shared Key-Value Store"). Shared by every worker VM of the plugin.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_get_shared_data(key_data: i32, key_size: i32, return_data: i32, return_size: i32, return_cas: i32));
    link!(linker, proxy_set_shared_data(key_data: i32, key_size: i32, value_data: i32, value_size: i32, cas: i32));
    Ok(())
}

/// `proxy_get_shared_data` (spec "Shared Key-Value Store"): value and its CAS;
/// `NotFound` for an unknown key.
fn proxy_get_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_data: i32,
    key_size: i32,
    return_data: i32,
    return_size: i32,
    return_cas: i32,
) -> HostResult {
    let key = memory::read_string(caller, key_data, key_size)?;
    caller.data_mut().note(|| key.clone());
    let found = caller.data().shared().shared_data.get(&key).cloned();
    let (value, cas) = found.ok_or(Status::NotFound)?;
    memory::check(caller, return_cas, 4)?;
    memory::return_bytes(caller, &value, return_data, return_size)?;
    memory::write_u32(caller, return_cas, cas)
}

/// `proxy_set_shared_data` (spec "Shared Key-Value Store"): `cas` 0 sets unconditionally;
/// otherwise it must equal the current CAS of the key, else `CasMismatch` (also for a key
/// that does not exist yet). Every successful set gives the key a new CAS.
fn proxy_set_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
    cas: i32,
) -> HostResult {
    let key = memory::read_string(caller, key_data, key_size)?;
    let value = memory::read(caller, value_data, value_size)?;
    let cas = cas as u32;
    caller.data_mut().note(|| format!("{key} cas={cas}"));
    let state = caller.data();
    let mut shared = state.shared();
    if cas != 0 && shared.shared_data.get(&key).map(|(_, c)| *c) != Some(cas) {
        return Err(Status::CasMismatch.into());
    }
    shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
    let next = shared.next_cas;
    shared.shared_data.insert(key, (value, next));
    Ok(())
}
