//! Clocks and timers: `proxy_get_current_time_nanoseconds`,
//! `proxy_set_tick_period_milliseconds` (spec: "Clocks", "Timers").

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_get_current_time_nanoseconds(return_time: i32));
    link!(linker, proxy_set_tick_period_milliseconds(period: i32));
    Ok(())
}

/// `proxy_get_current_time_nanoseconds` (spec "Clocks"): wall-clock time of the harness
/// clock, which moves only when the test calls `Plugin::advance`.
fn proxy_get_current_time_nanoseconds(
    caller: &mut Caller<'_, HostState>,
    return_time: i32,
) -> HostResult {
    let now = u64::try_from(caller.data().clock.now().as_nanos()).unwrap_or(u64::MAX);
    memory::write_u64(caller, return_time, now)
}

/// `proxy_set_tick_period_milliseconds` (spec "Timers"): sets the tick period of the root
/// context owning the effective context; 0 disables ticks. The first tick is one period
/// from now.
fn proxy_set_tick_period_milliseconds(
    caller: &mut Caller<'_, HostState>,
    period: i32,
) -> HostResult {
    let state = caller.data_mut();
    let period = Duration::from_millis(u64::from(period as u32));
    let now = state.clock.elapsed();
    let root = state.active_root().ok_or(Status::BadArgument)?;
    let root = state.roots.get_mut(&root).ok_or(Status::BadArgument)?;
    root.tick_period = period;
    root.next_tick = now + period;
    Ok(())
}
