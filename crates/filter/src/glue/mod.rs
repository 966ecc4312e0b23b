//! proxy-wasm glue: contexts that translate between the host and [`hybridmesh_filter_core::flow`].
//!
//! Only this module knows proxy-wasm. Host calls go through [`host`], which
//! turns every status into a value (never a panic: a panic kills the VM and
//! every request then fails).

mod host;
mod http;
mod root;

use proxy_wasm::traits::RootContext;

proxy_wasm::main! {{
    host::install_logger();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
