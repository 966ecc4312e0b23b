//! The WASI calls Envoy answers itself rather than as a WASI runtime would:
//! `fd_write` to stdout and stderr is the filter's log.

use wasmtime::{Caller, Linker};

use super::{memory, to_anyhow};
use crate::host::HostState;
use crate::state::Level;

/// WASI errno values Envoy returns from `fd_write`.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;

/// Replaces WASI's `fd_write` (already linked, so shadowing is allowed for it alone).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "fd_write",
            |mut caller: Caller<'_, HostState>,
             fd: i32,
             iovs: i32,
             iovs_len: i32,
             nwritten: i32|
             -> wasmtime::Result<i32> {
                Ok(fd_write(&mut caller, fd, iovs, iovs_len, nwritten))
            },
        )
        .map_err(to_anyhow)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `fd_write` as proxy-wasm-cpp-host's `writevImpl` does it: stdout (fd 1) logs at info,
/// stderr (fd 2) at error, any other fd is `EBADF`; the buffers of one call are joined
/// into ONE log message, without its trailing newline (a write of just "\n" logs an empty
/// message; an empty write logs nothing); a bad pointer is `EFAULT`.
fn fd_write(caller: &mut Caller<'_, HostState>, fd: i32, iovs: i32, len: i32, out: i32) -> i32 {
    let level = match fd {
        1 => Level::Info,
        2 => Level::Error,
        _ => return EBADF,
    };
    let mut text = Vec::new();
    for i in 0..len.max(0) {
        let Some(at) = i.checked_mul(8).and_then(|o| iovs.checked_add(o)) else {
            return EFAULT;
        };
        let Ok(iovec) = memory::read(caller, at, 8) else {
            return EFAULT;
        };
        let word = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (buf, buf_len) = (word(&iovec[..4]), word(&iovec[4..]));
        if buf_len != 0 {
            match memory::read(caller, buf, buf_len) {
                Ok(bytes) => text.extend_from_slice(&bytes),
                Err(_) => return EFAULT,
            }
        }
    }
    let written = text.len();
    if written != 0 {
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        let message = String::from_utf8_lossy(&text).into_owned();
        super::log::record(caller.data_mut(), level, message);
    }
    match memory::write_u32(caller, out, u32::try_from(written).unwrap_or(u32::MAX)) {
        Ok(()) => ESUCCESS,
        Err(_) => EFAULT,
    }
}
