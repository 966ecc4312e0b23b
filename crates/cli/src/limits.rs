//! The options that bound a run of `test` and `simulate`: what the module under
//! test may use (time per call, memory, logs, ticks) and what a scenario may ask
//! for in all (requests, simulated time). Defaults are the harness's own
//! ([`proxy_wasm_host::Limits::default`], [`hybridmesh_scenario::Totals::default`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use proxy_wasm_host::Limits;

/// What the module under test may use.
#[derive(clap::Args, Debug, Clone)]
pub struct ModuleLimits {
    /// Wall time one guest call may run; past it the call traps (an endless loop)
    #[arg(long, value_name = "DURATION", default_value_t = Dur(Limits::default().call_time))]
    time_per_call: Dur,
    /// Linear memory one VM may grow to (at most 4GiB, all wasm32 can address)
    #[arg(long, value_name = "SIZE", default_value_t = Size(Limits::default().memory))]
    memory_per_vm: Size,
    /// Log entries kept per request; the rest are counted, and one warning says how many
    #[arg(long, value_name = "N", default_value_t = Limits::default().logs)]
    logs_per_request: usize,
    /// `proxy_on_tick` calls one plugin may fire in its life
    #[arg(long, value_name = "N", default_value_t = Limits::default().ticks)]
    ticks_per_plugin: u64,
}

impl ModuleLimits {
    pub fn limits(&self) -> Limits {
        Limits {
            call_time: self.time_per_call.0,
            memory: self.memory_per_vm.0,
            logs: self.logs_per_request,
            ticks: self.ticks_per_plugin,
        }
    }
}

/// What one scenario may ask for in all.
#[derive(clap::Args, Debug, Clone)]
pub struct ScenarioTotals {
    /// Requests all steps of one scenario may send
    #[arg(long, value_name = "N", default_value_t = hybridmesh_scenario::Totals::default().requests)]
    requests_per_scenario: u64,
    /// Simulated time all `advance` steps of one scenario may move the clocks by
    #[arg(long, value_name = "DURATION", default_value_t = Dur(hybridmesh_scenario::Totals::default().simulated))]
    simulated_time_per_scenario: Dur,
}

impl ScenarioTotals {
    pub fn totals(&self) -> hybridmesh_scenario::Totals {
        hybridmesh_scenario::Totals {
            requests: self.requests_per_scenario,
            simulated: self.simulated_time_per_scenario.0,
        }
    }
}

/// A duration as the options take it: `500ms`, `10s`, `5m`, `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => f.write_str("0s"),
            _ if ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1000) => write!(f, "{}s", ms / 1000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        let d = hybridmesh_scenario::duration(s).map_err(|e| format!("{e:#}"))?;
        if d.is_zero() {
            return Err(format!("{s:?}: a limit of zero allows nothing"));
        }
        Ok(Dur(d))
    }
}

/// A size as the options take it: bytes, or `KiB`, `MiB`, `GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = digits.parse().map_err(|_| {
            format!("{s:?} is not a size, expected e.g. 512MiB, 1GiB or a number of bytes")
        })?;
        let shift = match unit {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?}, expected KiB, MiB or GiB"
                ))
            }
        };
        let bytes = n
            .checked_shl(shift)
            .filter(|b| b >> shift == n)
            .ok_or_else(|| format!("{s:?} is too large"))?;
        if bytes == 0 {
            return Err(format!("{s:?}: a limit of zero allows nothing"));
        }
        if bytes > 4 << 30 {
            return Err(format!(
                "{s:?} is more than 4GiB, all a wasm32 module can address"
            ));
        }
        Ok(Size(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_read_back_as_they_print() {
        let d = Dur(Limits::default().call_time);
        assert_eq!(d.to_string(), "10s");
        assert_eq!(d.to_string().parse::<Dur>().unwrap(), d);
        let t = Dur(hybridmesh_scenario::Totals::default().simulated);
        assert_eq!(t.to_string(), "24h");
        assert_eq!(t.to_string().parse::<Dur>().unwrap(), t);
        let m = Size(Limits::default().memory);
        assert_eq!(m.to_string(), "512MiB");
        assert_eq!(m.to_string().parse::<Size>().unwrap(), m);
    }

    #[test]
    fn sizes_past_what_wasm32_addresses_or_zero_are_refused() {
        assert_eq!("4GiB".parse::<Size>().unwrap(), Size(4 << 30));
        assert!("5GiB"
            .parse::<Size>()
            .unwrap_err()
            .contains("more than 4GiB"));
        assert!("0".parse::<Size>().unwrap_err().contains("zero"));
        assert!("99999999999GiB"
            .parse::<Size>()
            .unwrap_err()
            .contains("too large"));
        assert!("12TB".parse::<Size>().unwrap_err().contains("unknown unit"));
        assert!("0s".parse::<Dur>().unwrap_err().contains("zero"));
    }
}
