//! A stream's callbacks: read the header map in place, run the flow, let it
//! write only what changes; send a local reply when the flow refuses.

use hybridmesh_filter_core::decide::Rng;
use hybridmesh_filter_core::flow::{Direction, Filter, Host, Level, Map, Scratch, Update};
use hybridmesh_filter_core::metrics::CounterRef;
use hybridmesh_filter_core::wire::Pairs;

use super::abi::{ACTION_CONTINUE, ACTION_PAUSE, MAP_REQUEST_HEADERS, MAP_RESPONSE_HEADERS};
use super::host;
use super::root::Metrics;
use super::vm::{self, Log};

/// The [`Host`] the flow uses inside the `.wasm`. Failed host calls read as
/// "absent" (a failed write is logged at debug level).
struct WasmHost<'a> {
    rng: &'a mut Rng,
    metrics: &'a mut Metrics,
    log: &'a mut Log,
}

fn map_type(map: Map) -> u32 {
    match map {
        Map::Request => MAP_REQUEST_HEADERS,
        Map::Response => MAP_RESPONSE_HEADERS,
    }
}

fn le_u64(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

impl WasmHost<'_> {
    fn written(&mut self, what: &str, result: Result<(), host::Status>) {
        if let Err(s) = result {
            if self.log.enabled(Level::Debug) {
                self.log
                    .line(Level::Debug, &format!("cannot {what} (status {})", s.0));
            }
        }
    }
}

impl Host for WasmHost<'_> {
    fn now_ms(&mut self) -> u64 {
        host::now_ns().map(|ns| ns / 1_000_000).unwrap_or(0)
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn listener_direction(&mut self) -> Option<Direction> {
        // Envoy 1.40 serves `xds.listener_direction`; older proxies `listener_direction`.
        let raw = host::get_property("xds\0listener_direction")
            .ok()
            .flatten()
            .or_else(|| host::get_property("listener_direction").ok().flatten());
        match raw.and_then(le_u64) {
            Some(1) => Some(Direction::Inbound),
            Some(2) => Some(Direction::Outbound),
            _ => None,
        }
    }

    fn cluster_name(&mut self) -> Option<String> {
        host::get_property("xds\0cluster_name")
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    }

    fn peer_mtls(&mut self) -> bool {
        matches!(
            host::get_property("connection\0mtls").ok().flatten(),
            Some([1, ..])
        )
    }

    fn peer_uri_san(&mut self) -> Option<&[u8]> {
        host::get_property("connection\0uri_san_peer_certificate")
            .ok()
            .flatten()
            .filter(|v| !v.is_empty())
    }

    fn shared_get(&mut self, key: &str) -> Option<&[u8]> {
        host::get_shared(key).ok().and_then(|(v, _)| v)
    }

    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        host::update_shared(key, update)
    }

    fn response_flags(&mut self) -> u64 {
        host::get_property("response\0flags")
            .ok()
            .flatten()
            .and_then(le_u64)
            .unwrap_or(0)
    }

    fn upstream_address(&mut self) -> Option<&[u8]> {
        host::get_property("upstream\0address").ok().flatten()
    }

    fn upstream_host_metadata(&mut self) -> Option<&[u8]> {
        // Envoy answers SerializationFailure when the endpoint has no metadata.
        host::get_property("xds\0upstream_host_metadata")
            .ok()
            .flatten()
    }

    fn add_header(&mut self, map: Map, name: &[u8], value: &[u8]) {
        let r = host::add_header(map_type(map), name, value);
        self.written("add a header", r);
    }

    fn replace_header(&mut self, map: Map, name: &[u8], value: &[u8]) {
        let r = host::replace_header(map_type(map), name, value);
        self.written("replace a header", r);
    }

    fn remove_header(&mut self, map: Map, name: &[u8]) {
        let r = host::remove_header(map_type(map), name);
        self.written("remove a header", r);
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        let r = host::set_property(key, value);
        self.written("set filter state", r);
    }

    fn count(&mut self, counter: CounterRef<'_>) {
        self.metrics.record(counter, self.log);
    }

    fn log_enabled(&self, level: Level) -> bool {
        self.log.enabled(level)
    }

    fn log(&mut self, level: Level, message: &str) {
        self.log.line(level, message);
    }
}

/// Reads a header map for the flow; `None` (logged) when it cannot be read.
fn read_pairs<'a>(map: u32, log: &mut Log) -> Option<Pairs<'a>> {
    match host::header_pairs(map).map(Pairs::parse) {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            log.line(
                Level::Warn,
                "the proxy sent a malformed header map; the stream passes untouched",
            );
            None
        }
        Err(s) => {
            log.line(
                Level::Warn,
                &format!(
                    "cannot read headers (status {}); the stream passes untouched",
                    s.0
                ),
            );
            None
        }
    }
}

/// What a stream callback works with: its filter, its state, a [`Host`]
/// over its root's generator, counters and the VM's log, the VM's scratch.
struct Call<'v> {
    filter: std::rc::Rc<Filter>,
    stream: &'v mut vm::Stream,
    host: WasmHost<'v>,
    scratch: &'v mut Scratch,
}

/// Runs `f` on stream `context_id` of a configured root (`None`: no such
/// stream, or its plugin has no valid configuration: the stream passes).
fn with_stream<R>(context_id: u32, f: impl FnOnce(Call<'_>) -> Option<R>) -> Option<R> {
    vm::with(|vm| {
        let stream = vm.streams.get_mut(&context_id)?;
        let root_id = stream.root;
        let root = vm
            .roots
            .iter_mut()
            .find(|(r, _)| *r == root_id)
            .map(|(_, r)| r)?;
        f(Call {
            filter: root.filter.clone()?,
            stream,
            host: WasmHost {
                rng: &mut root.rng,
                metrics: &mut root.metrics,
                log: &mut vm.log,
            },
            scratch: &mut vm.scratch,
        })
    })
    .flatten()
}

pub fn on_request_headers(context_id: u32) -> u32 {
    let reply = with_stream(context_id, |mut c| {
        let pairs = read_pairs(MAP_REQUEST_HEADERS, c.host.log)?;
        c.stream.started = true;
        c.filter
            .request(&pairs, &mut c.host, &mut c.stream.state, c.scratch)
    });
    // The reply is sent with the VM's state let go: Envoy runs the stream's
    // response callbacks from inside this call.
    match reply {
        Some(r) => {
            match host::send_local_response(r.status, &r.details, r.body.as_bytes(), &r.headers) {
                Ok(()) => ACTION_PAUSE,
                Err(s) => {
                    vm::with(|vm| {
                        vm.log.line(
                            Level::Error,
                            &format!("cannot send the local reply (status {})", s.0),
                        )
                    });
                    ACTION_CONTINUE
                }
            }
        }
        None => ACTION_CONTINUE,
    }
}

pub fn on_response_headers(context_id: u32) {
    with_stream(context_id, |mut c| {
        if !c.stream.started {
            return None;
        }
        // The server side reads no response header (one host call saved).
        let pairs = match c.stream.state.direction {
            Direction::Inbound => Pairs::EMPTY,
            Direction::Outbound => read_pairs(MAP_RESPONSE_HEADERS, c.host.log)?,
        };
        c.filter
            .response(&c.stream.state, &pairs, &mut c.host, c.scratch);
        Some(())
    });
}
