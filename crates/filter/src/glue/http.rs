//! The HTTP context: fetch headers, run [`hybridmesh_filter_core::flow`], apply what it decided.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{self, WasmHost, MAP_REQUEST_HEADERS, MAP_RESPONSE_HEADERS};
use super::root::{emit_logs, Shared};
use hybridmesh_filter_core::config::HopLog;
use hybridmesh_filter_core::flow::{Direction, Filter, Headers, StreamState};

/// Filter state key of the hop record: `%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%`.
pub const HOP_FILTER_STATE: &str = "hybridmesh.hop";

/// The response headers the flow reads: none on the server side (one host
/// call saved per request), the whole map in one call on the client side.
fn response_headers(direction: Direction) -> Result<Headers, host::Status> {
    match direction {
        Direction::Inbound => Ok(Vec::new()),
        Direction::Outbound => host::get_headers(MAP_RESPONSE_HEADERS),
    }
}

pub struct Http {
    shared: Rc<RefCell<Shared>>,
    filter: Option<Rc<Filter>>,
    state: Option<StreamState>,
}

impl Http {
    pub fn new(shared: Rc<RefCell<Shared>>, filter: Option<Rc<Filter>>) -> Self {
        Http {
            shared,
            filter,
            state: None,
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        let headers = match host::get_headers(MAP_REQUEST_HEADERS) {
            Ok(h) => h,
            Err(s) => {
                log::warn!(
                    "hybridmesh: cannot read request headers (status {}); request passes untouched",
                    s.0
                );
                return Action::Continue;
            }
        };
        let outcome = {
            let mut sh = self.shared.borrow_mut();
            let mut h = WasmHost { rng: &mut sh.rng };
            filter.on_request(&headers, &mut h)
        };
        emit_logs(&outcome.effects);
        self.shared.borrow_mut().metrics.record(&outcome.effects);
        if let Some(new_headers) = &outcome.headers {
            if let Err(s) = host::set_headers(MAP_REQUEST_HEADERS, new_headers) {
                log::warn!("hybridmesh: cannot set request headers (status {})", s.0);
            }
        }
        self.state = Some(outcome.state);
        if let Some(reply) = outcome.local_reply {
            if let Err(s) = host::send_local_response(
                reply.status,
                &reply.details,
                reply.body.as_bytes(),
                &reply.headers,
            ) {
                log::error!("hybridmesh: cannot send the local reply (status {})", s.0);
                return Action::Continue;
            }
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(filter), Some(state)) = (self.filter.clone(), self.state.as_ref()) else {
            return Action::Continue;
        };
        let headers = match response_headers(state.direction) {
            Ok(h) => h,
            Err(s) => {
                log::warn!("hybridmesh: cannot read response headers (status {})", s.0);
                return Action::Continue;
            }
        };
        let outcome = {
            let mut sh = self.shared.borrow_mut();
            let mut h = WasmHost { rng: &mut sh.rng };
            filter.on_response(state, &headers, &mut h)
        };
        for (name, value) in &outcome.set_headers {
            if let Err(s) = host::replace_header(MAP_RESPONSE_HEADERS, name, value) {
                log::debug!(
                    "hybridmesh: cannot set response header {name} (status {})",
                    s.0
                );
            }
        }
        if let Some(hop) = &outcome.hop {
            if filter.cfg.hop_log != HopLog::Off {
                let level = match filter.cfg.hop_log {
                    HopLog::Trace => log::Level::Trace,
                    HopLog::Debug | HopLog::Off => log::Level::Debug,
                    HopLog::Info => log::Level::Info,
                    HopLog::Warn => log::Level::Warn,
                };
                if level <= log::max_level() {
                    log::log!(level, "hybridmesh: {}", hop.log_line());
                }
            }
            if filter.cfg.filter_state {
                if let Err(s) = host::set_property(HOP_FILTER_STATE, hop.to_json().as_bytes()) {
                    log::debug!("hybridmesh: cannot set filter state (status {})", s.0);
                }
            }
        }
        emit_logs(&outcome.effects);
        self.shared.borrow_mut().metrics.record(&outcome.effects);
        Action::Continue
    }
}
