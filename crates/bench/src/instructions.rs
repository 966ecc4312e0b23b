//! Instructions per request: a cost figure that noise cannot move.
//!
//! Each variant's Envoy runs under valgrind's callgrind (`--smc-check=all`:
//! V8 writes its JIT code at run time), one worker, direct response. Inside
//! that one process: warm up, zero the counters (`callgrind_control -z`),
//! send N requests on one keep-alive connection, dump; then idle as long as
//! the requests took and dump again. The second dump is the background
//! (timers, stats flushes, the filter's tick) and is subtracted before
//! dividing by N. Start-up never enters the figure. Counting instructions is
//! exact and does not move with the machine's load, so it can guard
//! regressions where a timed figure cannot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::load;
use hybridmesh_replica::process::{self, Envoy, Options as SpawnOptions};

use crate::envoy;

/// One variant's count with one header set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count {
    /// Instructions per request, the background subtracted.
    pub per_request: f64,
    /// Requests counted.
    pub requests: u64,
    /// Instructions in the request window, and in the idle window after it.
    pub window: u64,
    pub background: u64,
}

/// valgrind and callgrind_control, or a message saying how to get them.
pub fn tools_present() -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            bail!("{tool} is missing: install valgrind (`apt-get install valgrind`; scripts/bench does)");
        }
    }
    Ok(())
}

/// Counts one variant: its bootstrap under callgrind; for each header set in
/// turn, a warm-up then `requests` counted requests and an idle window as
/// long. One process for every set: start-up (minutes under valgrind) is
/// paid once and never counted.
pub fn count(
    binary: &Path,
    dir: &Path,
    name: &str,
    bootstrap: &Path,
    ip: std::net::Ipv4Addr,
    header_sets: &[Vec<(&str, &str)>],
    requests: u64,
) -> anyhow::Result<Vec<Count>> {
    let out = dir.join(format!("{name}.callgrind"));
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        // V8 writes and rewrites its JIT code.
        "--smc-check=all".to_string(),
        "--dump-instr=no".to_string(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let e = process::spawn_with(
        binary,
        name,
        bootstrap,
        envoy::admin(ip),
        dir,
        &SpawnOptions {
            quiet: true,
            wrapper,
            ..SpawnOptions::default()
        },
    )?;
    let _guard = Guard(e.clone());
    // V8 compiles every function with its optimizing compiler at start-up;
    // under valgrind that takes minutes for a large module.
    e.wait_ready(Duration::from_secs(1200))?;
    let target = envoy::listener(ip);
    let mut dumps = 0u32;
    let mut counts = Vec::new();
    for headers in header_sets {
        let mut c = load::Conn::open(target)?;
        let send = |c: &mut load::Conn, n: u64| -> anyhow::Result<()> {
            for _ in 0..n {
                let s = load::status(c, envoy::SERVICE, headers)?;
                if s != 200 {
                    bail!("{name} answered {s}; see {}", e.log.display());
                }
            }
            Ok(())
        };
        // Warm: V8's code, Envoy's caches, the filter's buffers.
        send(&mut c, WARMUP.max(requests / 5))?;
        control(&e, "-z")?;
        let t = Instant::now();
        send(&mut c, requests)?;
        let took = t.elapsed();
        dumps += 1;
        let window = dump(&e, &out, dumps)?;
        let idle_from = Instant::now();
        std::thread::sleep(took);
        dumps += 1;
        let background = dump(&e, &out, dumps)?;
        let idle = idle_from.elapsed();
        // The background of the request window, at the idle window's rate.
        let scaled = background as f64 * took.as_secs_f64() / idle.as_secs_f64().max(1e-9);
        counts.push(Count {
            per_request: (window as f64 - scaled) / requests.max(1) as f64,
            requests,
            window,
            background,
        });
    }
    Ok(counts)
}

/// Requests before the counters are zeroed (at least).
const WARMUP: u64 = 200;

struct Guard(Envoy);

impl Drop for Guard {
    fn drop(&mut self) {
        process::stop_many(&[self.0.pid]);
    }
}

fn control(e: &Envoy, flag: &str) -> anyhow::Result<()> {
    let o = Command::new("callgrind_control")
        .arg(flag)
        .arg(e.pid.to_string())
        .output()
        .context("cannot run callgrind_control")?;
    if !o.status.success() {
        bail!(
            "callgrind_control {flag} {} failed: {}",
            e.pid,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// Dumps the counters and reads the dump's total (the `summary:` line).
fn dump(e: &Envoy, out: &Path, n: u32) -> anyhow::Result<u64> {
    control(e, "-d")?;
    let file = PathBuf::from(format!("{}.{n}", out.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                return Ok(v);
            }
        }
        if Instant::now() > deadline {
            bail!("callgrind wrote no dump {} within 60 s", file.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
