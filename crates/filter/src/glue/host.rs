//! Host calls, each returning `Result<_, Status>`: every outcome is a value,
//! never a panic. Data the host returns lives in the arena ([`super::memory`])
//! and is borrowed until the proxy enters the module for its next callback.

use std::ptr::null_mut;

use hybridmesh_filter_core::flow::Level;

use super::abi::{self, CAS_MISMATCH, NOT_FOUND, OK};

/// A proxy-wasm status other than Ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// A buffer the host filled through `proxy_on_memory_allocate` (the arena).
///
/// # Safety
/// `data`/`size` come from a successful host call; the arena keeps the bytes
/// until the next top-level callback, which no caller outlives.
unsafe fn returned<'a>(data: *mut u8, size: usize) -> &'a [u8] {
    if data.is_null() || size == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data, size)
    }
}

pub fn log(level: Level, message: &str) {
    // SAFETY: the message slice is valid for the duration of the call.
    unsafe {
        let _ = abi::proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

pub fn log_level() -> Result<Level, Status> {
    let mut level = 0u32;
    // SAFETY: `level` is a valid out-pointer.
    check(unsafe { abi::proxy_get_log_level(&mut level) })?;
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
    check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), Status> {
    // SAFETY: plain integer argument.
    check(unsafe { abi::proxy_set_tick_period_milliseconds(ms) })
}

/// The plugin configuration (empty when there is none).
pub fn plugin_configuration<'a>(size: usize) -> Result<&'a [u8], Status> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host filled `len` bytes.
    unsafe {
        match abi::proxy_get_buffer_bytes(
            abi::BUFFER_PLUGIN_CONFIGURATION,
            0,
            size,
            &mut data,
            &mut len,
        ) {
            OK => Ok(returned(data, len)),
            NOT_FOUND => Ok(&[]),
            s => Err(Status(s)),
        }
    }
}

/// A header map in the wire format.
pub fn header_pairs<'a>(map: u32) -> Result<&'a [u8], Status> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host filled `len` bytes.
    unsafe {
        check(abi::proxy_get_header_map_pairs(map, &mut data, &mut len))?;
        Ok(returned(data, len))
    }
}

pub fn add_header(map: u32, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        abi::proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn replace_header(map: u32, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        abi::proxy_replace_header_map_value(
            map,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: u32, name: &[u8]) -> Result<(), Status> {
    // SAFETY: the slice is valid for the duration of the call.
    check(unsafe { abi::proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// A property by its path, the parts joined with NUL as the ABI wants them
/// (`"xds\0cluster_name"`). `Ok(None)` when it does not exist.
pub fn get_property<'a>(path: &str) -> Result<Option<&'a [u8]>, Status> {
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on success the host filled `len` bytes.
    unsafe {
        match abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut len) {
            OK => Ok(Some(returned(data, len))),
            NOT_FOUND => Ok(None),
            s => Err(Status(s)),
        }
    }
}

pub fn set_property(path: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

pub fn get_shared<'a>(key: &str) -> Result<(Option<&'a [u8]>, u32), Status> {
    let (mut data, mut len, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: out-pointers are valid; on success the host filled `len` bytes.
    unsafe {
        match abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) {
            OK => Ok((Some(returned(data, len)), cas)),
            NOT_FOUND => Ok((None, 0)),
            s => Err(Status(s)),
        }
    }
}

pub fn set_shared(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: both slices are valid for the duration of the call.
    check(unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Read-modify-write of a shared-data value with compare-and-swap, retried
/// a few times on a mismatch (another worker wrote in between).
pub fn update_shared(key: &str, update: &mut hybridmesh_filter_core::flow::Update<'_>) {
    for _ in 0..8 {
        let Ok((current, cas)) = get_shared(key) else {
            return;
        };
        let Some(next) = update(current) else {
            return;
        };
        match set_shared(key, &next, cas) {
            Err(Status(CAS_MISMATCH)) => continue,
            _ => return,
        }
    }
}

pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<(), Status> {
    let h = hybridmesh_filter_core::wire::encode(
        headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    // SAFETY: all slices are valid for the duration of the call.
    check(unsafe {
        abi::proxy_send_local_response(
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
    check(unsafe { abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn define_counter(name: &str) -> Result<u32, Status> {
    define_metric(abi::METRIC_COUNTER, name)
}

pub fn define_gauge(name: &str) -> Result<u32, Status> {
    define_metric(abi::METRIC_GAUGE, name)
}

/// Adds a signed offset to a counter or gauge.
pub fn add(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain integer arguments.
    check(unsafe { abi::proxy_increment_metric(id, offset) })
}

pub fn increment(id: u32, by: u64) -> Result<(), Status> {
    add(id, i64::try_from(by).unwrap_or(i64::MAX))
}
