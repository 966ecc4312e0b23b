//! Bounds-checked access to guest memory.
//!
//! Guest pointers are wasm32 `i32`s, read as unsigned. Every access goes through
//! `memory.data(..).get(start..end)` with checked arithmetic; an out-of-bounds range is
//! `InvalidMemoryAccess`, never a host panic.

use anyhow::anyhow;
use wasmtime::{Caller, Extern, Memory};

use super::{HostError, HostResult, Status};
use crate::host::HostState;

fn memory(caller: &mut Caller<'_, HostState>) -> HostResult<Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => {
            caller.data_mut().memory = Some(memory);
            Ok(memory)
        }
        _ => Err(HostError::Trap(anyhow!("module exports no `memory`"))),
    }
}

fn range(ptr: i32, len: usize) -> HostResult<std::ops::Range<usize>> {
    let start = usize::try_from(ptr as u32).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let memory = memory(caller)?;
    let len = usize::try_from(len as u32).map_err(|_| Status::InvalidMemoryAccess)?;
    let range = range(ptr, len)?;
    memory
        .data(&*caller)
        .get(range)
        .map(<[u8]>::to_vec)
        .ok_or(HostError::Status(Status::InvalidMemoryAccess))
}

/// Reads a string argument (invalid UTF-8 replaced).
pub(crate) fn read_string(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> HostResult<String> {
    let bytes = read(caller, ptr, len)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> HostResult {
    let memory = memory(caller)?;
    let range = range(ptr, bytes.len())?;
    memory
        .data_mut(&mut *caller)
        .get_mut(range)
        .ok_or(HostError::Status(Status::InvalidMemoryAccess))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(caller: &mut Caller<'_, HostState>, ptr: i32, value: u64) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Checks that `len` bytes at `ptr` are inside guest memory.
pub(crate) fn check(caller: &mut Caller<'_, HostState>, ptr: i32, len: usize) -> HostResult {
    let memory = memory(caller)?;
    let range = range(ptr, len)?;
    if range.end <= memory.data_size(&*caller) {
        Ok(())
    } else {
        Err(Status::InvalidMemoryAccess.into())
    }
}

/// Allocates `size` bytes in the guest through its exported `proxy_on_memory_allocate`
/// (or `malloc` when that is missing, as the spec says).
pub(crate) fn allocate(caller: &mut Caller<'_, HostState>, size: usize) -> HostResult<i32> {
    let alloc = match caller.data().alloc.clone() {
        Some(f) => f,
        None => {
            let func = ["proxy_on_memory_allocate", "malloc"]
                .iter()
                .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
                .ok_or_else(|| {
                    HostError::Trap(anyhow!(
                        "module exports neither proxy_on_memory_allocate nor malloc"
                    ))
                })?;
            let typed = func
                .typed::<i32, i32>(&*caller)
                .map_err(|e| HostError::Trap(super::to_anyhow(e)))?;
            caller.data_mut().alloc = Some(typed.clone());
            typed
        }
    };
    let size = i32::try_from(size).map_err(|_| Status::InvalidMemoryAccess)?;
    let ptr = alloc
        .call(&mut *caller, size)
        .map_err(|e| HostError::Trap(super::to_anyhow(e)))?;
    if ptr == 0 {
        return Err(Status::InvalidMemoryAccess.into());
    }
    check(caller, ptr, size as u32 as usize)?;
    Ok(ptr)
}

/// Returns `bytes` to the guest: allocates a copy in guest memory and writes its pointer
/// and size at `ptr_ptr` and `size_ptr`. An empty value is returned as a null pointer and
/// size 0 without allocating, as Envoy's host does (the Rust SDK then sees `None`).
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    check(caller, ptr_ptr, 4)?;
    check(caller, size_ptr, 4)?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        let ptr = allocate(caller, bytes.len())?;
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ptr_ptr, ptr as u32)?;
    write_u32(
        caller,
        size_ptr,
        u32::try_from(bytes.len()).map_err(|_| Status::InternalFailure)?,
    )
}
