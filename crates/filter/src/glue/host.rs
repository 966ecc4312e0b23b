//! Raw proxy-wasm ABI 0.2.1 host calls, each returning `Result<_, Status>`.
//!
//! The SDK's own wrappers `panic!` on statuses they do not expect and unwrap
//! UTF-8 in header maps; a panic kills the VM, so the few calls this filter
//! makes are bound here directly and every outcome is a value.

use std::ptr::null_mut;

use hybridmesh_filter_core::flow::{Direction, Headers, Host, Level, Peer, Update};

/// proxy-wasm status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data`/`size` must come from a successful host call that allocated them with
/// the SDK's allocator (a boxed slice of exactly `size` bytes).
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

pub fn log(level: Level, message: &str) {
    let level = level as u32;
    // SAFETY: the message slice is valid for the duration of the call.
    unsafe {
        let _ = proxy_log(level, message.as_ptr(), message.len());
    }
}

pub fn log_level() -> Result<Level, Status> {
    let mut level = 0u32;
    // SAFETY: `level` is a valid out-pointer.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        _ => Level::Critical,
    })
}

pub fn now_ns() -> Result<u64, Status> {
    let mut t = 0u64;
    // SAFETY: `t` is a valid out-pointer.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), Status> {
    // SAFETY: plain integer argument.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host allocated `len` bytes.
    unsafe {
        match proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len) {
            OK => Ok(take(data, len)),
            NOT_FOUND => Ok(Vec::new()),
            s => Err(Status(s)),
        }
    }
}

pub fn get_headers(map: u32) -> Result<Headers, Status> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host allocated `len` bytes.
    let bytes = unsafe {
        check(proxy_get_header_map_pairs(map, &mut data, &mut len))?;
        take(data, len)
    };
    decode_pairs(&bytes).ok_or(Status(4 /* ParseFailure */))
}

pub fn set_headers(map: u32, headers: &Headers) -> Result<(), Status> {
    let bytes = encode_pairs(headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    // SAFETY: the buffer is valid for the duration of the call.
    check(unsafe { proxy_set_header_map_pairs(map, bytes.as_ptr(), bytes.len()) })
}

pub fn replace_header(map: u32, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// `Ok(None)` when the property does not exist (NotFound).
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let p = path.join("\0");
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host allocated `len` bytes.
    unsafe {
        match proxy_get_property(p.as_ptr(), p.len(), &mut data, &mut len) {
            OK => Ok(Some(take(data, len))),
            NOT_FOUND => Ok(None),
            s => Err(Status(s)),
        }
    }
}

pub fn set_property(path: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub fn get_shared(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    let (mut data, mut len, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: out-pointers are valid; on success the host allocated `len` bytes.
    unsafe {
        match proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) {
            OK => Ok((Some(take(data, len)), cas)),
            NOT_FOUND => Ok((None, 0)),
            s => Err(Status(s)),
        }
    }
}

pub fn set_shared(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<(), Status> {
    let h = encode_pairs(headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    // SAFETY: all slices are valid for the duration of the call.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            h.as_ptr(),
            h.len(),
            -1,
        )
    })
}

fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: the name slice and out-pointer are valid.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn define_counter(name: &str) -> Result<u32, Status> {
    define_metric(METRIC_COUNTER, name)
}

pub fn define_gauge(name: &str) -> Result<u32, Status> {
    define_metric(METRIC_GAUGE, name)
}

/// Adds a signed offset to a counter or gauge.
pub fn add(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain integer arguments.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// The guest's linear memory in bytes.
pub fn linear_memory_bytes() -> u64 {
    (core::arch::wasm32::memory_size(0) as u64).saturating_mul(65_536)
}

pub fn increment(id: u32, by: u64) -> Result<(), Status> {
    add(id, i64::try_from(by).unwrap_or(i64::MAX))
}

/// proxy-wasm map wire format: count, then (key size, value size) per pair, then
/// `key\0value\0` per pair, all sizes u32 little-endian. `None` if malformed.
pub fn decode_pairs(bytes: &[u8]) -> Option<Headers> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let ks = u32_at(4 + i * 8)?;
        let vs = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(ks)?)?.to_vec();
        data = data.checked_add(ks + 1)?;
        let value = bytes.get(data..data.checked_add(vs)?)?.to_vec();
        data = data.checked_add(vs + 1)?;
        out.push((key, value));
    }
    Some(out)
}

pub fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn le_u64(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The [`Host`] the decision flow uses inside the `.wasm`. Failed host calls
/// are logged once per call site at debug level and read as "absent".
pub struct WasmHost<'a> {
    pub rng: &'a mut hybridmesh_filter_core::decide::Rng,
}

impl Host for WasmHost<'_> {
    fn now_ms(&mut self) -> u64 {
        now_ns().map(|ns| ns / 1_000_000).unwrap_or(0)
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn listener_direction(&mut self) -> Option<Direction> {
        // Envoy 1.40 serves `xds.listener_direction`; older proxies `listener_direction`.
        let raw = get_property(&["xds", "listener_direction"])
            .ok()
            .flatten()
            .or_else(|| get_property(&["listener_direction"]).ok().flatten());
        match raw.as_deref().and_then(le_u64) {
            Some(1) => Some(Direction::Inbound),
            Some(2) => Some(Direction::Outbound),
            _ => None,
        }
    }

    fn cluster_name(&mut self) -> Option<String> {
        get_property(&["xds", "cluster_name"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    }

    fn peer(&mut self) -> Peer {
        let mtls = matches!(
            get_property(&["connection", "mtls"])
                .ok()
                .flatten()
                .as_deref(),
            Some([1, ..])
        );
        let uri_san = if mtls {
            get_property(&["connection", "uri_san_peer_certificate"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        };
        Peer { mtls, uri_san }
    }

    fn shared_get(&mut self, key: &str) -> Option<Vec<u8>> {
        get_shared(key).ok().and_then(|(v, _)| v)
    }

    fn shared_update(&mut self, key: &str, update: &mut Update<'_>) {
        for _ in 0..8 {
            let Ok((current, cas)) = get_shared(key) else {
                return;
            };
            let Some(next) = update(current.as_deref()) else {
                return;
            };
            match set_shared(key, &next, cas) {
                Err(Status(CAS_MISMATCH)) => continue,
                _ => return,
            }
        }
    }

    fn response_flags(&mut self) -> u64 {
        get_property(&["response", "flags"])
            .ok()
            .flatten()
            .as_deref()
            .and_then(le_u64)
            .unwrap_or(0)
    }

    fn upstream_address(&mut self) -> Option<String> {
        get_property(&["upstream", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    }

    fn upstream_host_metadata(&mut self) -> Option<Vec<u8>> {
        // Envoy answers SerializationFailure when the endpoint has no metadata.
        get_property(&["xds", "upstream_host_metadata"])
            .ok()
            .flatten()
    }
}

/// The `log` crate's logger, writing through `proxy_log`.
struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger and a panic hook that logs the panic at critical level
/// before the VM dies (so the reason is in Envoy's log).
pub fn install_logger() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        log(
            Level::Critical,
            &format!("hybridmesh: panic, the VM will stop: {info}"),
        );
    }));
}

/// Follows the host's log level, so disabled levels cost no host call.
pub fn sync_log_level() {
    let filter = match log_level() {
        Ok(Level::Trace) => log::LevelFilter::Trace,
        Ok(Level::Debug) => log::LevelFilter::Debug,
        Ok(Level::Info) | Err(_) => log::LevelFilter::Info,
        Ok(Level::Warn) => log::LevelFilter::Warn,
        Ok(Level::Error) => log::LevelFilter::Error,
        Ok(Level::Critical) => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}
