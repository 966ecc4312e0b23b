//! Load: `wrk` for throughput (on its own CPU), and a paced keep-alive client
//! for latency at a fixed, moderate rate.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

pub use hybridmesh_replica::load::{percentile, Conn};

/// What one `wrk` run reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkRun {
    pub requests: u64,
    pub rps: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// Is `wrk` there? (`scripts/bench` installs it from Debian.)
pub fn wrk_present() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// One `wrk` run: one thread, `connections` keep-alive connections, pinned
/// to `cpu`, for `duration` rounded to whole seconds (at least one).
pub fn wrk(
    target: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    connections: u32,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<WrkRun> {
    let mut cmd = match cpu {
        Some(c) => {
            let mut x = Command::new("taskset");
            x.args(["-c", &c.to_string(), "wrk"]);
            x
        }
        None => Command::new("wrk"),
    };
    cmd.args(["-t1", "-c", &connections.to_string()])
        // wrk takes whole seconds.
        .arg(format!("-d{}s", duration.as_secs_f64().round().max(1.0)))
        .args(["-H", &format!("Host: {host}")]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(format!("http://{target}/"));
    let out = cmd
        .output()
        .context("cannot run wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Reads `N requests in ...`, `Requests/sec: X`, `Non-2xx or 3xx responses: N`
/// and `Socket errors: connect A, read B, write C, timeout D`.
pub fn parse_wrk(text: &str) -> anyhow::Result<WrkRun> {
    let mut run = WrkRun::default();
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().context("Requests/sec")?;
            seen = true;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            run.requests = n.trim().parse().context("requests")?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<u64>().context("Non-2xx")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    run.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    if !seen {
        bail!("no Requests/sec line");
    }
    Ok(run)
}

/// One GET of `/` on a keep-alive connection: its status.
pub fn status(c: &mut Conn, host: &str, headers: &[(&str, &str)]) -> anyhow::Result<u32> {
    c.get("/", host, headers)
        .map(|(status, _, _)| status)
        .map_err(|(_, e)| e)
}

/// Latencies of requests sent at a fixed rate, measured from when each was
/// due (so a stall counts against every request it delays).
#[derive(Debug, Clone, Default)]
pub struct Paced {
    pub latencies_us: Vec<f64>,
    pub errors: u64,
}

impl Paced {
    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// `rate` requests per second over `connections` connections for `duration`.
pub fn paced(
    target: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    rate: u32,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Paced> {
    let per_conn = f64::from(rate.max(1)) / f64::from(connections.max(1));
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let start = Instant::now() + Duration::from_millis(20);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|k| {
                s.spawn(move || -> anyhow::Result<Paced> {
                    let mut c = Conn::open(target)?;
                    let mut out = Paced::default();
                    // Connections are staggered over one interval.
                    let mut due = start + interval.mul_f64(f64::from(k) / f64::from(connections));
                    while due < start + duration {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        match c.get("/", host, headers) {
                            Ok((200, _, _)) => {
                                out.latencies_us.push(due.elapsed().as_secs_f64() * 1e6)
                            }
                            Ok(_) => out.errors += 1,
                            Err(_) => {
                                out.errors += 1;
                                c = Conn::open(target)?;
                            }
                        }
                        due += interval;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<Paced>>>()
    })?;
    let mut all = Paced::default();
    for r in results {
        all.latencies_us.extend(r.latencies_us);
        all.errors += r.errors;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 1s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   210.00us  100.00us   2.00ms   90.00%\n  \
            61234 requests in 1.00s, 7.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  \
            Non-2xx or 3xx responses: 4\nRequests/sec:  61180.55\nTransfer/sec:      7.00MB\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 61234);
        assert!((r.rps - 61180.55).abs() < 1e-6);
        assert_eq!(r.errors, 7);
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn percentiles_are_ranks_of_the_sorted_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
