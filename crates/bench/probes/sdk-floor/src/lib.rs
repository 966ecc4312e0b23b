//! Two reference filters on the proxy-wasm Rust SDK, chosen by the plugin
//! configuration: `empty` (every callback continues at once: the SDK's own
//! floor, its context maps, boxing and dispatch) and `tag` (the naive way to
//! do the tagging job: identity read once at configure time, then per request
//! four `set_http_request_header` calls and one counter increment).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default, Clone)]
struct Tags {
    enabled: bool,
    cluster: String,
    network: String,
    locality: String,
    counter: u32,
}

#[derive(Default)]
struct Root {
    tags: Tags,
}

fn node(path: &[&str]) -> String {
    proxy_wasm::hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.tags.enabled = config.starts_with(b"tag");
        if self.tags.enabled {
            self.tags.cluster = node(&["xds", "node", "metadata", "CLUSTER_ID"]);
            self.tags.network = node(&["xds", "node", "metadata", "NETWORK"]);
            self.tags.locality = format!(
                "{}/{}",
                node(&["xds", "node", "locality", "region"]),
                node(&["xds", "node", "locality", "zone"])
            );
            self.tags.counter =
                proxy_wasm::hostcalls::define_metric(MetricType::Counter, "sdk_tagged_total")
                    .unwrap_or(0);
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            tags: self.tags.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    tags: Tags,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.tags.enabled {
            self.set_http_request_header("x-hybridmesh-target-cluster", None);
            self.set_http_request_header("x-hybridmesh-source-cluster", Some(&self.tags.cluster));
            self.set_http_request_header("x-hybridmesh-source-network", Some(&self.tags.network));
            self.set_http_request_header(
                "x-hybridmesh-source-locality",
                Some(&self.tags.locality),
            );
            let _ = proxy_wasm::hostcalls::increment_metric(self.tags.counter, 1);
        }
        Action::Continue
    }
}
