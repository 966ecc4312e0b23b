//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric` (spec: "Metrics"). Shared by the plugin's workers, as Envoy stats.

use wasmtime::{Caller, Linker};

use super::{memory, HostResult, Status};
use crate::host::HostState;
use crate::state::{Metric, MetricKind};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    link!(linker, proxy_define_metric(metric_type: i32, name_data: i32, name_size: i32, return_id: i32));
    link!(linker, proxy_increment_metric(metric_id: i32, offset: i64));
    link!(linker, proxy_record_metric(metric_id: i32, value: i64));
    link!(linker, proxy_get_metric(metric_id: i32, return_value: i32));
    Ok(())
}

/// `proxy_define_metric` (spec "Metrics"): defines (or finds) a metric; the same name and
/// kind give the same id. `BadArgument` for an unknown kind.
fn proxy_define_metric(
    caller: &mut Caller<'_, HostState>,
    metric_type: i32,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> HostResult {
    let kind = MetricKind::from_raw(metric_type).ok_or(Status::BadArgument)?;
    let name = memory::read_string(caller, name_data, name_size)?;
    memory::check(caller, return_id, 4)?;
    let id = {
        let state = caller.data();
        let mut shared = state.shared();
        let key = (name.clone(), metric_type as u8);
        match shared.metric_ids.get(&key) {
            Some(id) => *id,
            None => {
                shared.metrics.push(Metric {
                    name: name.clone(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                let id =
                    u32::try_from(shared.metrics.len()).map_err(|_| Status::InternalFailure)?;
                shared.metric_ids.insert(key, id);
                id
            }
        }
    };
    caller
        .data_mut()
        .note(|| format!("{kind:?} {name} -> {id}"));
    memory::write_u32(caller, return_id, id)
}

/// `proxy_increment_metric` (spec "Metrics"): counters and gauges change by `offset`;
/// a negative offset on a counter, or any on a histogram, is `BadArgument`; `NotFound` for
/// an unknown id.
fn proxy_increment_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: i32,
    offset: i64,
) -> HostResult {
    let state = caller.data();
    let mut shared = state.shared();
    let metric = shared
        .metric_mut(metric_id as u32)
        .ok_or(Status::NotFound)?;
    match metric.kind {
        MetricKind::Counter if offset < 0 => return Err(Status::BadArgument.into()),
        MetricKind::Histogram => return Err(Status::BadArgument.into()),
        _ => {}
    }
    metric.value = metric.value.saturating_add_signed(offset);
    Ok(())
}

/// `proxy_record_metric` (spec "Metrics"), as Envoy: a counter adds `value`, a gauge is
/// set to it, a histogram records it. `NotFound` for an unknown id.
fn proxy_record_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: i32,
    value: i64,
) -> HostResult {
    let value = value as u64;
    let state = caller.data();
    let mut shared = state.shared();
    let metric = shared
        .metric_mut(metric_id as u32)
        .ok_or(Status::NotFound)?;
    match metric.kind {
        MetricKind::Counter => metric.value = metric.value.saturating_add(value),
        MetricKind::Gauge => metric.value = value,
        MetricKind::Histogram => {
            metric.value = value;
            metric.samples.push(value);
        }
    }
    Ok(())
}

/// `proxy_get_metric` (spec "Metrics"): value of a counter or gauge; `BadArgument` for a
/// histogram (Envoy cannot read one back), `NotFound` for an unknown id.
fn proxy_get_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: i32,
    return_value: i32,
) -> HostResult {
    let value = {
        let state = caller.data();
        let mut shared = state.shared();
        let metric = shared
            .metric_mut(metric_id as u32)
            .ok_or(Status::NotFound)?;
        if metric.kind == MetricKind::Histogram {
            return Err(Status::BadArgument.into());
        }
        metric.value
    };
    memory::write_u64(caller, return_value, value)
}
