//! Logging: `proxy_log`, `proxy_get_log_level` (spec: "Logging").

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;
use crate::state::{Level, LogEntry};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_log(level: i32, message_data: i32, message_size: i32));
    link!(linker, proxy_get_log_level(return_level: i32));
    Ok(())
}

/// `proxy_log` (spec "Logging"): logs the message at `level`; messages below the plugin's
/// log level are dropped, as Envoy does. `BadArgument` for an unknown level.
fn proxy_log(caller: &mut Caller<'_, HostState>, level: i32, data: i32, size: i32) -> HostResult {
    let level = Level::from_raw(level).ok_or(Status::BadArgument)?;
    let message = memory::read_string(caller, data, size)?;
    record(caller.data_mut(), level, message);
    Ok(())
}

/// Logs `message` from the active context, unless below the plugin's log level (as
/// Envoy does for `proxy_log` and for WASI stdout/stderr alike).
pub(crate) fn record(state: &mut HostState, level: Level, message: String) {
    state.note(|| format!("{level}: {message}"));
    if level >= state.env.log_level {
        let limit = state.env.limits.logs;
        let count = match state.streams.get_mut(&state.active_context) {
            Some(stream) => &mut stream.logs,
            None => &mut state.call_logs,
        };
        if count.kept >= limit {
            count.dropped += 1;
            return;
        }
        count.kept += 1;
        let entry = LogEntry {
            worker: state.worker,
            context_id: state.active_context,
            level,
            message,
        };
        state.shared().logs.push(entry);
    }
}

/// After a guest call: one warning entry for the log entries the call made past
/// [`crate::Limits::logs`], which were counted and not kept.
pub(crate) fn report_dropped(state: &mut HostState) {
    let context = state.active_context;
    let (dropped, per) = match state.streams.get_mut(&context) {
        Some(stream) => (std::mem::take(&mut stream.logs.dropped), "request"),
        None => (std::mem::take(&mut state.call_logs.dropped), "call"),
    };
    if dropped == 0 {
        return;
    }
    let message = format!(
        "{dropped} more log entries not kept: the harness keeps at most {} per {per} (raise it with --logs-per-request)",
        state.env.limits.logs
    );
    let entry = LogEntry {
        worker: state.worker,
        context_id: context,
        level: Level::Warn,
        message,
    };
    state.shared().logs.push(entry);
}

/// `proxy_get_log_level` (spec "Logging"): the plugin's log level.
fn proxy_get_log_level(caller: &mut Caller<'_, HostState>, return_level: i32) -> HostResult {
    let level = caller.data().env.log_level as u32;
    memory::write_u32(caller, return_level, level)
}
