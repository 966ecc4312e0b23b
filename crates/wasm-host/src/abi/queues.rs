//! Shared queues: `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue` (spec: "Shared Queues").
//!
//! Queues are keyed by (vm_id, name) and shared by the plugin's workers. The last root
//! context that registered a queue owns it: each enqueue schedules
//! `proxy_on_queue_ready(owner, queue_id)`, delivered once the running callback returns.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;
use crate::state::Queue;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_register_shared_queue(name_data: i32, name_size: i32, return_id: i32));
    link!(linker, proxy_resolve_shared_queue(vm_id_data: i32, vm_id_size: i32, name_data: i32, name_size: i32, return_id: i32));
    link!(linker, proxy_enqueue_shared_queue(queue_id: i32, value_data: i32, value_size: i32));
    link!(linker, proxy_dequeue_shared_queue(queue_id: i32, return_data: i32, return_size: i32));
    Ok(())
}

/// `proxy_register_shared_queue` (spec "Shared Queues"): creates or opens the queue
/// `name` of this plugin's vm_id and makes the effective root context its owner.
fn proxy_register_shared_queue(
    caller: &mut Caller<'_, HostState>,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> HostResult {
    let name = memory::read_string(caller, name_data, name_size)?;
    memory::check(caller, return_id, 4)?;
    let state = caller.data();
    let owner = (
        state.worker,
        state.active_root().ok_or(Status::BadArgument)?,
    );
    let vm_id = state.env.identity.vm_id.clone();
    let id = {
        let mut shared = state.shared();
        let existing = shared
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name);
        let index = match existing {
            Some(i) => i,
            None => {
                shared.queues.push(Queue {
                    vm_id,
                    name: name.clone(),
                    ..Queue::default()
                });
                shared.queues.len() - 1
            }
        };
        if let Some(q) = shared.queues.get_mut(index) {
            q.owner = owner;
        }
        u32::try_from(index + 1).map_err(|_| Status::InternalFailure)?
    };
    caller.data_mut().note(|| format!("{name} -> {id}"));
    memory::write_u32(caller, return_id, id)
}

/// `proxy_resolve_shared_queue` (spec "Shared Queues"): id of an existing queue;
/// `NotFound` when nobody registered it.
fn proxy_resolve_shared_queue(
    caller: &mut Caller<'_, HostState>,
    vm_id_data: i32,
    vm_id_size: i32,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> HostResult {
    let vm_id = memory::read_string(caller, vm_id_data, vm_id_size)?;
    let name = memory::read_string(caller, name_data, name_size)?;
    caller.data_mut().note(|| format!("{vm_id}/{name}"));
    let index = caller
        .data()
        .shared()
        .queues
        .iter()
        .position(|q| q.vm_id == vm_id && q.name == name)
        .ok_or(Status::NotFound)?;
    memory::write_u32(
        caller,
        return_id,
        u32::try_from(index + 1).map_err(|_| Status::InternalFailure)?,
    )
}

/// `proxy_enqueue_shared_queue` (spec "Shared Queues"): appends the value and schedules
/// `proxy_on_queue_ready` for the owner; `NotFound` for an unknown queue.
fn proxy_enqueue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: i32,
    value_data: i32,
    value_size: i32,
) -> HostResult {
    let value = memory::read(caller, value_data, value_size)?;
    let id = queue_id as u32;
    let state = caller.data();
    let mut shared = state.shared();
    let queue = shared.queue_mut(id).ok_or(Status::NotFound)?;
    queue.items.push_back(value);
    let (worker, root) = queue.owner;
    shared.queue_ready.push_back((worker, root, id));
    Ok(())
}

/// `proxy_dequeue_shared_queue` (spec "Shared Queues"): the oldest value; `Empty` when
/// there is none, `NotFound` for an unknown queue.
fn proxy_dequeue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: i32,
    return_data: i32,
    return_size: i32,
) -> HostResult {
    memory::check(caller, return_data, 4)?;
    memory::check(caller, return_size, 4)?;
    let item = {
        let state = caller.data();
        let mut shared = state.shared();
        let queue = shared.queue_mut(queue_id as u32).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)?
    };
    memory::return_bytes(caller, &item, return_data, return_size)
}
