//! A tenant gate, built with the proxy-wasm Rust SDK 0.2.5.
//!
//! * The plugin configuration is a comma-separated list of allowed tenants
//!   (`acme,globex`); an empty one is refused (`on_configure` returns false).
//! * A request whose `x-tenant` header names an allowed tenant goes upstream with
//!   `x-tenant-checked: <tenant>`; any other request, one without the header included,
//!   gets a 403 local reply with a body and counts in the counter `tenant_gate_denied`.

use std::collections::BTreeSet;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Gate { allowed: Rc::default(), denied: 0 })
    });
}}

struct Gate {
    allowed: Rc<BTreeSet<String>>,
    /// The id of the counter `tenant_gate_denied`.
    denied: u32,
}

impl Context for Gate {}

impl RootContext for Gate {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let allowed: BTreeSet<String> = String::from_utf8_lossy(&config)
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if allowed.is_empty() {
            log::error!("tenant-gate: the configuration lists no tenant");
            return false;
        }
        match hostcalls::define_metric(MetricType::Counter, "tenant_gate_denied") {
            Ok(id) => self.denied = id,
            Err(status) => log::warn!("tenant-gate: no denial counter: {status:?}"),
        }
        log::info!("tenant-gate: {} tenants allowed", allowed.len());
        self.allowed = Rc::new(allowed);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            allowed: Rc::clone(&self.allowed),
            denied: self.denied,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    allowed: Rc<BTreeSet<String>>,
    denied: u32,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // No header is a `None`, not a panic: it is denied like an unknown tenant.
        let tenant = self.get_http_request_header("x-tenant");
        if let Some(tenant) = tenant.as_deref().filter(|t| self.allowed.contains(*t)) {
            self.set_http_request_header("x-tenant-checked", Some(tenant));
            return Action::Continue;
        }
        let _ = hostcalls::increment_metric(self.denied, 1);
        let shown = tenant.as_deref().unwrap_or("(none)");
        log::info!("tenant-gate: denied tenant {shown}");
        let body = format!("tenant {shown} is not allowed\n");
        self.send_http_response(
            403,
            vec![("content-type", "text/plain")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}
