//! Load through the replica: N concurrent keep-alive clients sending to a
//! client sidecar's outbound listener for a duration or a number of requests,
//! recording every request (when, status, who served it, the decision, Envoy's
//! response flags and details), while the caller injects faults.
//!
//! [`Load::start`] runs in the background; [`Load::at`] stamps an event
//! (a fault injected, apps back) on the same clock; [`Load::finish`] stops it
//! and returns a [`Report`] that counts failures and measures how long traffic
//! took to move away from a cluster and to come back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::envoy_config::{DETAILS_HEADER, FLAGS_HEADER, ROUTE_HEADER};

/// When the load stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long (requests in flight complete).
    Elapsed(Duration),
    /// After this many requests in all.
    Count(u64),
    /// When [`Load::finish`] is called.
    Stopped,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A client sidecar's outbound listener.
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
    /// Concurrent keep-alive connections, one client thread each.
    pub clients: usize,
    pub until: Until,
    /// Pause between two requests of one client (0: as fast as it can).
    pub pause: Duration,
    /// A header naming each client as its own user (`<header>: user-<k>`), for
    /// sticky decisions.
    pub user_header: Option<String>,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Sent, ms since the load started.
    pub start_ms: f64,
    /// Answered (or failed), ms since the load started.
    pub end_ms: f64,
    /// 0: no HTTP answer (connection refused, reset, timed out).
    pub status: u32,
    /// `x-hybridmesh-served-by`'s cluster; `None`: a proxy answered.
    pub served_by: Option<String>,
    /// The subset the route chose (the filter's decision), `None` for the
    /// default route or a reply before routing.
    pub target: Option<String>,
    /// Envoy's `%RESPONSE_FLAGS%` at the client sidecar (`-`: none).
    pub flags: Option<String>,
    /// The client (its user, with [`Spec::user_header`]).
    pub client: usize,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` at the client sidecar.
    pub details: Option<String>,
    /// What went wrong below HTTP, for status 0.
    pub error: Option<String>,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.status == 200
    }

    pub fn served(&self) -> &str {
        self.served_by.as_deref().unwrap_or("none")
    }

    /// `503 UF upstream_reset_before_response_started{...} target=anthos`
    pub fn describe(&self) -> String {
        let mut s = format!("{}", self.status);
        if let Some(f) = &self.flags {
            s.push_str(&format!(" flags={f}"));
        }
        if let Some(d) = &self.details {
            s.push_str(&format!(" details={d}"));
        }
        if let Some(t) = &self.target {
            s.push_str(&format!(" target={t}"));
        }
        s.push_str(&format!(" served_by={}", self.served()));
        if let Some(e) = &self.error {
            s.push_str(&format!(" error={e}"));
        }
        s
    }
}

/// Load running in the background.
pub struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<Record>>>,
    events: Vec<(String, f64)>,
    reconnects: Arc<AtomicU64>,
}

impl Load {
    /// Opens the connections and starts sending.
    pub fn start(spec: &Spec) -> anyhow::Result<Load> {
        if spec.clients == 0 {
            bail!("load with 0 clients");
        }
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for k in 0..spec.clients {
            let spec = spec.clone();
            let (stop, sent, reconnects) = (stop.clone(), sent.clone(), reconnects.clone());
            threads.push(std::thread::spawn(move || {
                client(k, &spec, start, &stop, &sent, &reconnects)
            }));
        }
        Ok(Load {
            start,
            stop,
            sent,
            threads,
            events: Vec::new(),
            reconnects,
        })
    }

    /// Milliseconds since the load started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Stamps an event now; returns its time (ms since the start).
    pub fn at(&mut self, what: &str) -> f64 {
        let t = self.now_ms();
        self.events.push((what.to_string(), t));
        t
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests were sent (or `timeout` passes).
    pub fn wait_sent(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while self.sent() < n {
            if t.elapsed() > timeout || self.threads.iter().all(|h| h.is_finished()) {
                bail!(
                    "only {} of {n} requests sent after {:?}",
                    self.sent(),
                    t.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Waits until every client is done ([`Until::Elapsed`], [`Until::Count`])
    /// or stops them now ([`Until::Stopped`]), and gathers what they saw.
    pub fn finish(self) -> Report {
        self.stop_when_done(false)
    }

    /// Stops the clients now.
    pub fn stop(self) -> Report {
        self.stop_when_done(true)
    }

    fn stop_when_done(self, now: bool) -> Report {
        if now {
            self.stop.store(true, Ordering::SeqCst);
        }
        let mut records = Vec::new();
        for h in self.threads {
            // A client thread never panics; if it did, its records are lost
            // and the count below shows it.
            if let Ok(r) = h.join() {
                records.extend(r);
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        records.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        Report {
            seconds: self.start.elapsed().as_secs_f64(),
            sent: self.sent.load(Ordering::SeqCst),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            records,
            events: self.events,
        }
    }
}

/// What the load saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub records: Vec<Record>,
    pub events: Vec<(String, f64)>,
    pub seconds: f64,
    pub sent: u64,
    /// New connections opened after the first (the proxy closed one).
    pub reconnects: u64,
}

impl Report {
    pub fn failures(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !r.ok()).collect()
    }

    /// Failed requests answered at or after `from_ms` (and before `to_ms`).
    pub fn failures_between(&self, from_ms: f64, to_ms: f64) -> usize {
        self.records
            .iter()
            .filter(|r| !r.ok() && r.end_ms >= from_ms && r.end_ms < to_ms)
            .count()
    }

    /// Requests by serving cluster (`none`: a proxy answered).
    pub fn served(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r.served().to_string()).or_insert(0) += 1;
        }
        m
    }

    /// Failures by what the client saw (status, flags, details).
    pub fn failure_kinds(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.failures() {
            let mut r = r.clone();
            r.served_by = None;
            *m.entry(r.describe()).or_insert(0) += 1;
        }
        m
    }

    pub fn rate(&self) -> f64 {
        self.records.len() as f64 / self.seconds.max(1e-9)
    }

    /// Latency percentile (0-100) in ms over every request.
    pub fn latency_ms(&self, pct: f64) -> f64 {
        if self.records.is_empty() {
            return 0.0;
        }
        let v: Vec<f64> = self.records.iter().map(|r| r.end_ms - r.start_ms).collect();
        percentile(&v, pct)
    }

    /// Ms from `from_ms` until the answer of the first of `k` consecutive
    /// requests (in the order they were sent, sent at or after `from_ms`)
    /// that succeeded and were served by a cluster for which `wanted` holds.
    pub fn time_until(&self, from_ms: f64, k: usize, wanted: impl Fn(&str) -> bool) -> Option<f64> {
        let after: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.start_ms >= from_ms)
            .collect();
        let mut streak = 0;
        for (i, r) in after.iter().enumerate() {
            if r.ok() && wanted(r.served()) {
                streak += 1;
                if streak == k {
                    return Some(after[i + 1 - k].end_ms - from_ms);
                }
            } else {
                streak = 0;
            }
        }
        None
    }

    /// Time to move: from `fault_ms` until `k` consecutive requests succeed
    /// elsewhere than `cluster`.
    pub fn time_to_move(&self, fault_ms: f64, cluster: &str, k: usize) -> Option<f64> {
        self.time_until(fault_ms, k, |s| s != cluster && s != "none")
    }

    /// Time to come back: from `back_ms` until `k` consecutive requests
    /// succeed in `cluster`.
    pub fn time_to_return(&self, back_ms: f64, cluster: &str, k: usize) -> Option<f64> {
        self.time_until(back_ms, k, |s| s == cluster)
    }

    /// The time of a stamped event.
    pub fn event(&self, what: &str) -> Option<f64> {
        self.events.iter().find(|(w, _)| w == what).map(|(_, t)| *t)
    }

    /// One line: requests, rate, failures, spread, latency.
    pub fn summary(&self) -> String {
        let served = self
            .served()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ");
        format!(
            "{} requests in {:.1}s ({:.0}/s), {} failed, served by {served}, p50 {:.1}ms p99 {:.1}ms, {} reconnects",
            self.records.len(),
            self.seconds,
            self.rate(),
            self.failures().len(),
            self.latency_ms(50.0),
            self.latency_ms(99.0),
            self.reconnects
        )
    }
}

/// Status, headers, and whether the server closes the connection.
pub type Answer = (u32, Vec<(String, String)>, bool);

/// One keep-alive HTTP/1.1 connection (to a sidecar, or a benchmark's Envoy).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .with_context(|| format!("cannot connect to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// Sends one GET and reads its answer. `Err` before any byte of the
    /// answer arrived is `(true, e)`: the request may be sent again on a
    /// new connection, as HTTP clients do with idempotent requests on a
    /// reused connection the server closed.
    pub fn get(
        &mut self,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, (bool, anyhow::Error)> {
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if let Err(e) = self.writer.write_all(head.as_bytes()) {
            return Err((true, e.into()));
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err((true, anyhow::anyhow!("connection closed before the answer"))),
            Ok(_) => {}
            Err(e) => return Err((false, e.into())),
        }
        let status: u32 = match line.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            Some(s) => s,
            None => return Err((false, anyhow::anyhow!("bad status line {line:?}"))),
        };
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            match self.reader.read_line(&mut l) {
                Ok(0) => return Err((false, anyhow::anyhow!("connection closed in the headers"))),
                Ok(_) => {}
                Err(e) => return Err((false, e.into())),
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let close = h("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if h("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                if self
                    .reader
                    .read_line(&mut size)
                    .map_err(|e| (false, e.into()))?
                    == 0
                {
                    return Err((false, anyhow::anyhow!("truncated chunked body")));
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|e| (false, e.into()))?;
                let mut chunk = vec![0u8; n + 2];
                self.reader
                    .read_exact(&mut chunk)
                    .map_err(|e| (false, e.into()))?;
                if n == 0 {
                    break;
                }
            }
        } else {
            let n: usize = h("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; n];
            self.reader
                .read_exact(&mut body)
                .map_err(|e| (false, e.into()))?;
        }
        Ok((status, headers, close))
    }
}

fn client(
    k: usize,
    spec: &Spec,
    start: Instant,
    stop: &AtomicBool,
    sent: &AtomicU64,
    reconnects: &AtomicU64,
) -> Vec<Record> {
    let ms = || start.elapsed().as_secs_f64() * 1000.0;
    let mut out = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut opened = 0u64;
    let mut n = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match spec.until {
            Until::Elapsed(d) if start.elapsed() >= d => break,
            Until::Count(total) => {
                // Claim a request number; past the total, this client is done.
                if sent.fetch_add(1, Ordering::SeqCst) >= total {
                    sent.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            }
            _ => {
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
        n += 1;
        let id = format!("load-{}-{k}-{n}", std::process::id());
        let t0 = ms();
        let mut record = Record {
            start_ms: t0,
            end_ms: t0,
            status: 0,
            served_by: None,
            target: None,
            flags: None,
            client: k,
            details: None,
            error: None,
        };
        // At most one retry, and only on a reused connection that was
        // closed before the answer started (never on a fresh one).
        let mut tries = 0;
        loop {
            tries += 1;
            let fresh = conn.is_none();
            if conn.is_none() {
                match Conn::open(spec.addr) {
                    Ok(c) => {
                        opened += 1;
                        if opened > 1 {
                            reconnects.fetch_add(1, Ordering::SeqCst);
                        }
                        conn = Some(c);
                    }
                    Err(e) => {
                        record.error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            let user = format!("user-{k}");
            let mut headers: Vec<(&str, &str)> = vec![("x-request-id", &id)];
            if let Some(h) = &spec.user_header {
                headers.push((h, &user));
            }
            match c.get(&spec.path, &spec.authority, &headers) {
                Ok((status, headers, close)) => {
                    let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                    record.status = status;
                    record.served_by = h("x-hybridmesh-served-by").and_then(|v| {
                        v.split(';')
                            .find_map(|kv| kv.strip_prefix("cluster="))
                            .map(str::to_string)
                    });
                    // The decision, from the subset the route chose.
                    record.target = h(ROUTE_HEADER).and_then(|c| {
                        let subset = c.split('|').nth(2).unwrap_or("");
                        subset
                            .strip_prefix("prefer-")
                            .or_else(|| subset.strip_prefix("only-"))
                            .map(str::to_string)
                    });
                    record.flags = h(FLAGS_HEADER);
                    record.details = h(DETAILS_HEADER);
                    if close {
                        conn = None;
                    }
                    break;
                }
                Err((retriable, e)) => {
                    conn = None;
                    if retriable && !fresh && tries < 2 {
                        continue;
                    }
                    record.error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        record.end_ms = ms();
        out.push(record);
        if !spec.pause.is_zero() {
            std::thread::sleep(spec.pause);
        }
    }
    out
}

/// The `p`th percentile (0-100) of `samples` by rank (NaN when empty).
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Bytes the Envoy's allocator has handed out (`allocated` of the admin
/// `/memory` endpoint: tcmalloc's view, which includes V8's heap but not the
/// Wasm linear memory V8 maps itself; that shows in RSS).
pub fn envoy_allocated(admin: SocketAddr) -> anyhow::Result<u64> {
    let r = super::http::get(admin, "/memory")?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).context("/memory is not JSON")?;
    v.get("allocated")
        .and_then(|a| a.as_str())
        .and_then(|a| a.parse().ok())
        .context("no allocated in /memory")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(start_ms: f64, status: u32, served: &str) -> Record {
        Record {
            start_ms,
            end_ms: start_ms + 2.0,
            status,
            served_by: (served != "none").then(|| served.to_string()),
            target: None,
            flags: None,
            client: 0,
            details: None,
            error: None,
        }
    }

    fn report(records: Vec<Record>) -> Report {
        Report {
            records,
            events: vec![],
            seconds: 1.0,
            sent: 0,
            reconnects: 0,
        }
    }

    #[test]
    fn time_to_move_is_the_answer_of_the_first_of_k_served_elsewhere() {
        // Fault at 10ms: a failure, one gke, a failure again, then 3 gke in a row.
        let r = report(vec![
            rec(5.0, 200, "anthos"),
            rec(11.0, 503, "none"),
            rec(12.0, 200, "gke"),
            rec(13.0, 503, "none"),
            rec(14.0, 200, "gke"),
            rec(15.0, 200, "gke"),
            rec(16.0, 200, "gke"),
            rec(30.0, 200, "anthos"),
            rec(31.0, 200, "anthos"),
        ]);
        assert_eq!(r.time_to_move(10.0, "anthos", 3), Some(14.0 + 2.0 - 10.0));
        assert_eq!(r.time_to_move(10.0, "anthos", 4), None);
        assert_eq!(r.time_to_return(20.0, "anthos", 2), Some(30.0 + 2.0 - 20.0));
        assert_eq!(r.failures().len(), 2);
        assert_eq!(r.failures_between(0.0, 14.0), 1);
        assert_eq!(r.served().get("gke"), Some(&4));
        assert_eq!(r.served().get("none"), Some(&2));
    }

    #[test]
    fn a_failure_kind_names_status_flags_and_details() {
        let mut x = rec(1.0, 503, "none");
        x.flags = Some("URX".into());
        x.details = Some("via_upstream".into());
        x.target = Some("anthos".into());
        let r = report(vec![x.clone(), x]);
        assert_eq!(
            r.failure_kinds().into_iter().collect::<Vec<_>>(),
            vec![(
                "503 flags=URX details=via_upstream target=anthos served_by=none".to_string(),
                2
            )]
        );
    }
}
