//! The callbacks Envoy calls (proxy-wasm ABI 0.2.1). Only these are
//! exported: Envoy skips a callback a module does not export, and each one
//! it calls is a transition into V8 on every stream. Body, trailer, log and
//! done callbacks are not needed; `proxy_on_context_create` ties a stream to
//! its root context (a VM can hold several plugin configurations) and
//! `proxy_on_delete` returns its state to the pool.

use hybridmesh_filter_core::flow::Level;

use super::abi::ACTION_CONTINUE;
use super::memory;
use super::vm;
use super::{host, http};

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    memory::host_alloc(size)
}

/// Heap allocations since the VM started (read by the harness's tests; the
/// proxy ignores exports it does not know).
#[no_mangle]
pub extern "C" fn hybridmesh_allocations() -> u64 {
    memory::allocations()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    let _entered = memory::enter();
    vm::with(|vm| vm.create(context_id, parent_context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    let _entered = memory::enter();
    install_panic_hook();
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, configuration_size: usize) -> u32 {
    let _entered = memory::enter();
    vm::with(|vm| {
        // No memory report here: Envoy configures a throw-away canary VM
        // first, which never ticks and is never deleted; its share would stay
        // in the gauge. The gauge is reported on ticks.
        let vm::Vm { roots, log, .. } = vm;
        match roots.iter_mut().find(|(r, _)| *r == root_context_id) {
            Some((_, root)) => root.configure(configuration_size, log),
            None => false,
        }
    })
    .map_or(0, u32::from)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_context_id: u32) {
    let _entered = memory::enter();
    vm::with(|vm| {
        let vm::Vm {
            roots, log, memory, ..
        } = vm;
        if let Some((_, root)) = roots.iter_mut().find(|(r, _)| *r == root_context_id) {
            root.tick(log);
            memory.report(log);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    let _entered = memory::enter();
    http::on_request_headers(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    let _entered = memory::enter();
    http::on_response_headers(context_id);
    ACTION_CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let _entered = memory::enter();
    vm::with(|vm| vm.delete(context_id));
}

/// Logs a panic at critical level before the VM dies (so the reason is in
/// Envoy's log).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        host::log(
            Level::Critical,
            &format!("hybridmesh: panic, the VM will stop: {info}"),
        );
    }));
}
