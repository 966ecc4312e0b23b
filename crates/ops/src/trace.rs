//! Reading hop records back: from Envoy JSON access logs (the filter's record
//! is in filter state `wasm.hybridmesh.hop`) or from `hybridmesh simulate
//! --hops`, and answering "why did this request go there, and how much of
//! our traffic crosses networks?".

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

mod picture;
pub use picture::{layout, svg, Badge, Flow, Picture, Rect};

/// One hop record, as the filter writes it (`HopRecord::to_json`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Hop {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub service: String,
    pub source_cluster: String,
    #[serde(default)]
    pub source_network: String,
    pub target_cluster: Option<String>,
    pub served_by: Option<String>,
    pub served_network: Option<String>,
    pub gateway: Option<String>,
    pub decision: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub chain: String,
    #[serde(default)]
    pub cross_network: bool,
    #[serde(default, rename = "loop")]
    pub looped: bool,
    pub rule: Option<u64>,
    #[serde(default)]
    pub status: u32,
    #[serde(default)]
    pub response_flags: u64,
    #[serde(default)]
    pub latency_ms: u64,
}

/// What reading a log gave (all of it in memory: [`parse`]; a stream keeps
/// only [`LogStats`], see [`read_log`]).
#[derive(Debug, Default)]
pub struct Parsed {
    pub hops: Vec<Hop>,
    /// Lines that are not JSON, or JSON that does not hold a hop record where
    /// one is expected: (line number, why).
    pub malformed: Vec<(usize, String)>,
    /// JSON lines without a hop record (e.g. a server side's access log).
    pub without_hop: usize,
    /// Lines that are not JSON objects at all (Envoy's own log lines, when the
    /// access log shares a file with them).
    pub not_json: usize,
}

/// Parses JSON lines: a hop record itself, or an access-log object whose
/// `hop` field holds it (as an object, or as the string `%FILTER_STATE(...)%`
/// prints). Empty lines are ignored; nothing is dropped silently.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let stats = read_log(text.as_bytes(), |h| out.hops.push(h));
    out.malformed = stats
        .malformed
        .into_iter()
        .map(|(n, why)| (n as usize, why))
        .collect();
    out.without_hop = (stats.without_hop_field + stats.empty_hop) as usize;
    out.not_json = (stats.not_json + stats.text_access_log) as usize;
    out
}

/// A line longer than this is skipped unread (an access log line is a few KiB).
pub const MAX_LINE: usize = 1 << 20;
/// Malformed lines listed one by one; past this only counted.
pub const MAX_LISTED: usize = 20;

/// What one log held, line by line, without keeping the lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// Non-empty lines.
    pub lines: u64,
    pub hops: u64,
    /// Not JSON: Envoy's or istio-proxy's own log lines.
    pub not_json: u64,
    /// Istio's default TEXT access log lines (`[2026-...] "GET / HTTP/1.1" 200 ...`):
    /// that format has no hop record.
    pub text_access_log: u64,
    /// JSON lines without a `hop` field: an access log format without the
    /// filter state.
    pub without_hop_field: u64,
    /// JSON lines whose `hop` is empty (`null`, `-`): requests with no record
    /// (server-side sidecars, `filterState: false`).
    pub empty_hop: u64,
    /// Of [`LogStats::hops`], those rebuilt from the filter's headers in the
    /// line (`req_*`, `resp_served_by`) because it had no record in `hop`
    /// (`filterState: false`): no decision or reason.
    pub from_headers: u64,
    /// Skipped lines, the first [`MAX_LISTED`]: (line number, why).
    pub malformed: Vec<(u64, String)>,
    /// Every skipped line, listed or not.
    pub malformed_count: u64,
}

impl LogStats {
    fn skip(&mut self, line: u64, why: String) {
        self.malformed_count += 1;
        if self.malformed.len() < MAX_LISTED {
            self.malformed.push((line, why));
        }
    }

    /// Lines that held no hop record, and why, for people: `12 not JSON
    /// (Envoy's own log lines), 3 JSON without a hop field, ...`.
    pub fn skipped_summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.text_access_log > 0 {
            out.push(format!(
                "{} in Istio's TEXT access log format, which has no hop record",
                self.text_access_log
            ));
        }
        if self.not_json > 0 {
            out.push(format!(
                "{} not JSON (the proxy's own log lines)",
                self.not_json
            ));
        }
        if self.without_hop_field > 0 {
            out.push(format!(
                "{} JSON without a `hop` field (an access log format without %FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%)",
                self.without_hop_field
            ));
        }
        if self.empty_hop > 0 {
            out.push(format!(
                "{} with an empty `hop` (no record for that request: server-side sidecars write none)",
                self.empty_hop
            ));
        }
        if self.malformed_count > 0 {
            out.push(format!("{} malformed", self.malformed_count));
        }
        out
    }

    /// A note when some hops were rebuilt from headers.
    pub fn rebuilt_note(&self) -> Option<String> {
        (self.from_headers > 0).then(|| {
            format!(
                "{} of {} hops rebuilt from the filter's headers (no hop record in the line: filterState is off), their decision \"{UNRECORDED}\"",
                self.from_headers, self.hops
            )
        })
    }

    /// Why a log with lines gave no hop record, and what to do.
    pub fn no_hop_advice(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.text_access_log > 0 || self.without_hop_field > 0 {
            out.push("the access log format must carry the hop record: apply wasmplugin/meshconfig-access-log.yaml (install time) and wasmplugin/telemetry-access-log.yaml, see docs/src/operator/observability.md, \"Access logs with the hop record\"");
        }
        if self.not_json > 0 && self.text_access_log == 0 && self.without_hop_field == 0 {
            out.push("no access log line at all: access logging may be off (Telemetry accessLogging, or meshConfig.accessLogFile)");
        }
        if self.empty_hop > 0 {
            out.push("read the client side's log (kubectl logs POD -c istio-proxy of the caller): the server side records no hop; on the client side the filter writes one unless pluginConfig.filterState is false");
        }
        out
    }
}

/// Reads a log line by line, calling `on_hop` with each hop record, in
/// bounded memory: one line at a time (at most [`MAX_LINE`]), nothing kept.
/// A line that is not UTF-8, not JSON or not a record is counted and skipped
/// with its number; the rest of the file is still read. Lines may carry
/// `kubectl logs --timestamps` / `--prefix` prefixes.
pub fn read_log<R: std::io::BufRead>(r: R, on_hop: impl FnMut(Hop)) -> LogStats {
    match try_read_log(r, on_hop) {
        Ok(s) | Err((s, _)) => s,
    }
}

/// [`read_log`], stopping at an I/O error (returned with what was read so far).
pub fn try_read_log<R: std::io::BufRead>(
    mut r: R,
    mut on_hop: impl FnMut(Hop),
) -> Result<LogStats, (LogStats, std::io::Error)> {
    let mut stats = LogStats::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut number: u64 = 0;
    loop {
        buf.clear();
        let mut too_long = false;
        // One line, at most MAX_LINE bytes kept.
        let ended = loop {
            let chunk = match r.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((stats, e)),
            };
            if chunk.is_empty() {
                break false;
            }
            let (take, found) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                if buf.len() + take > MAX_LINE + 1 {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            r.consume(take);
            if found {
                break true;
            }
        };
        if !ended && buf.is_empty() && !too_long {
            return Ok(stats);
        }
        number += 1;
        if too_long {
            stats.lines += 1;
            stats.skip(
                number,
                format!("longer than {} MiB, not read", MAX_LINE >> 20),
            );
            continue;
        }
        classify(&buf, number, &mut stats, &mut on_hop);
        if !ended {
            return Ok(stats);
        }
    }
}

/// One line of a log: counted in `stats`, its hop handed to `on_hop`.
pub fn classify(line: &[u8], number: u64, stats: &mut LogStats, on_hop: &mut impl FnMut(Hop)) {
    let line = match std::str::from_utf8(line) {
        Ok(l) => l,
        Err(e) => {
            stats.lines += 1;
            stats.skip(
                number,
                format!(
                    "not UTF-8: byte 0x{:02x} at column {}",
                    line.get(e.valid_up_to()).copied().unwrap_or(0),
                    e.valid_up_to() + 1
                ),
            );
            return;
        }
    };
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    stats.lines += 1;
    let json = strip_log_prefixes(line);
    if !json.starts_with('{') {
        if is_istio_text_access_line(json) {
            stats.text_access_log += 1;
        } else {
            stats.not_json += 1;
        }
        return;
    }
    match parse_line(json) {
        Ok(Line::Hop(h)) => {
            stats.hops += 1;
            on_hop(*h);
        }
        Ok(Line::FromHeaders(h)) => {
            stats.hops += 1;
            stats.from_headers += 1;
            on_hop(*h);
        }
        Ok(Line::NoHopField) => stats.without_hop_field += 1,
        Ok(Line::EmptyHop) => stats.empty_hop += 1,
        Err(why) => stats.skip(number, why),
    }
}

/// `2026-11-25T13:14:18.397712345Z {...}` (kubectl logs --timestamps) and
/// `[pod/sleep-5b6/istio-proxy] {...}` (kubectl logs --prefix) -> `{...}`.
fn strip_log_prefixes(line: &str) -> &str {
    let mut rest = line;
    if let Some(r) = rest.strip_prefix("[pod/") {
        if let Some((_, after)) = r.split_once("] ") {
            rest = after.trim_start();
        }
    }
    if let Some((stamp, after)) = rest.split_once(' ') {
        let b = stamp.as_bytes();
        if b.len() >= 20
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b.get(10) == Some(&b'T')
            && (stamp.ends_with('Z') || stamp.contains('+'))
            && after.trim_start().starts_with('{')
        {
            rest = after.trim_start();
        }
    }
    rest
}

/// Istio's default TEXT access log: `[%START_TIME%] "%REQ(:METHOD)% ...`.
fn is_istio_text_access_line(line: &str) -> bool {
    line.starts_with("[20")
        && line
            .split_once("] \"")
            .is_some_and(|(stamp, _)| stamp.len() < 40 && stamp.contains('T'))
}

enum Line {
    Hop(Box<Hop>),
    /// No record in `hop`: rebuilt from the filter's headers.
    FromHeaders(Box<Hop>),
    NoHopField,
    EmptyHop,
}

fn parse_line(line: &str) -> Result<Line, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let record = if v.get("source_cluster").is_some() && v.get("decision").is_some() {
        v
    } else {
        let rebuilt = || from_headers(&v).map(Line::FromHeaders);
        match v.get("hop") {
            None => return Ok(rebuilt().unwrap_or(Line::NoHopField)),
            Some(serde_json::Value::Null) => return Ok(rebuilt().unwrap_or(Line::EmptyHop)),
            // Envoy prints an empty filter state as "-" or "".
            Some(serde_json::Value::String(s)) if s.is_empty() || s == "-" => {
                return Ok(rebuilt().unwrap_or(Line::EmptyHop))
            }
            Some(serde_json::Value::String(s)) => serde_json::from_str(s)
                .map_err(|e| format!("the hop field is not a hop record: {e}"))?,
            Some(other) => other.clone(),
        }
    };
    serde_json::from_value(record)
        .map(|h| Line::Hop(Box::new(h)))
        .map_err(|e| format!("not a hop record: {e}"))
}

/// The decision of a hop rebuilt from headers: the filter recorded none.
pub const UNRECORDED: &str = "unrecorded";

/// A client side's access-log line without a hop record, rebuilt from the
/// headers the filter set (the fields of
/// [`hybridmesh_filter_core::hop::access_log_fields`]) and Envoy's own
/// fields: who sent it (`req_source_*`), the cluster preferred or pinned
/// (`req_target_cluster`, `req_pinned_cluster`), who served it
/// (`resp_served_by`), the gateway (`upstream` on port 15443), status and
/// duration. The decision is [`UNRECORDED`]. `None` for server-side lines
/// (the upstream cluster is `inbound|...`) and lines without a source header.
fn from_headers(v: &serde_json::Value) -> Option<Box<Hop>> {
    use hybridmesh_filter_core::hop::{is_gateway_address, ServedBy};
    // Envoy's JSON format prints a missing value as null, its text format as "-".
    let field = |k: &str| -> Option<&str> {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "-")
    };
    // istiod gives every cluster an observability name, its name and Istio's
    // stat-prefix delimiter `;` (`DelimitedStatsPrefix` in
    // pilot/pkg/networking/util/util.go), and %UPSTREAM_CLUSTER% prints that.
    let cluster = field("cluster")?.trim_end_matches(';');
    if !cluster.starts_with("outbound|") {
        return None;
    }
    let source_cluster = field("req_source_cluster")?.to_string();
    let source_network = field("req_source_network").unwrap_or_default().to_string();
    let served = field("resp_served_by").and_then(|s| ServedBy::parse(s.as_bytes()));
    let gateway = field("upstream")
        .filter(|a| is_gateway_address(a))
        .map(str::to_string);
    let served_network = served.as_ref().map(|s| s.network.clone());
    let cross_network = match &served_network {
        Some(n) if !n.is_empty() && !source_network.is_empty() => *n != source_network,
        _ => gateway.is_some(),
    };
    let number = |k: &str| -> Option<u64> {
        match v.get(k)? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    Some(Box::new(Hop {
        request_id: field("request_id").unwrap_or_default().to_string(),
        service: hybridmesh_filter_core::hosts::service_from_cluster_name(cluster)
            .unwrap_or_default()
            .to_string(),
        source_cluster,
        source_network,
        target_cluster: field("req_target_cluster")
            .or_else(|| field("req_pinned_cluster"))
            .map(str::to_string),
        served_by: served.map(|s| s.cluster),
        served_network,
        gateway,
        decision: UNRECORDED.to_string(),
        reason: "rebuilt from the access log's headers: the filter wrote no hop record (filterState: false)".to_string(),
        chain: field("req_hops").unwrap_or_default().to_string(),
        cross_network,
        looped: false,
        rule: None,
        status: number("status").and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        response_flags: 0,
        latency_ms: number("duration_ms").unwrap_or(0),
    }))
}

/// Which hops to look at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub request_id: Option<String>,
    /// An exact service, or a suffix such as `.default.svc.cluster.local`.
    pub service: Option<String>,
    /// Source or serving cluster.
    pub cluster: Option<String>,
    pub cross_network_only: bool,
}

impl Filter {
    pub fn matches(&self, h: &Hop) -> bool {
        self.request_id
            .as_ref()
            .is_none_or(|id| &h.request_id == id)
            && self
                .service
                .as_ref()
                .is_none_or(|s| service_matches(s, &h.service))
            && self.cluster.as_ref().is_none_or(|c| {
                h.source_cluster == *c || h.served_by.as_deref() == Some(c.as_str())
            })
            && (!self.cross_network_only || h.cross_network)
    }
}

/// `--service` as the rest of the tool reads a service name: the full name
/// (`echo-svc.default.svc.cluster.local`), a suffix (`.default.svc.cluster.local`),
/// `name.namespace` (`echo-svc.default`) or a short name (`echo-svc`, in any namespace).
pub fn service_matches(wanted: &str, service: &str) -> bool {
    let wanted = wanted.trim_end_matches('.').to_ascii_lowercase();
    let service = service.to_ascii_lowercase();
    if wanted.starts_with('.') {
        return service.ends_with(&wanted);
    }
    if service == wanted {
        return true;
    }
    match wanted.matches('.').count() {
        0 => service.split('.').next() == Some(wanted.as_str()) && service.contains(".svc."),
        1 => service.starts_with(&format!("{wanted}.svc.")),
        _ => false,
    }
}

/// Source cluster x serving cluster counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Matrix {
    /// (source, served by or `none`) -> count.
    pub flows: BTreeMap<(String, String), u64>,
    /// Of those, how many crossed networks.
    pub cross: BTreeMap<(String, String), u64>,
    pub total: u64,
    pub cross_network: u64,
    /// Cluster -> network, as the records tell.
    pub networks: BTreeMap<String, String>,
    /// Serving cluster -> the east-west gateways its cross-network requests
    /// went through (at most [`MAX_GATEWAYS`] each).
    pub gateways: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Clusters named one by one (at most [`MAX_CLUSTERS`]).
    #[serde(skip)]
    named: std::collections::BTreeSet<String>,
    /// Hops whose source or serving cluster was counted under [`OTHER`].
    pub folded: u64,
}

/// Gateway addresses kept per cluster.
pub const MAX_GATEWAYS: usize = 4;

/// Clusters the matrix names one by one, in the order the log names them: a
/// mesh has at most 64 (the filter's own limit). Later ones are counted
/// together as [`OTHER`], so memory and the table stay bounded whatever the
/// log holds (was: 2,000 distinct clusters in 1 MB of log printed 144 MB).
pub const MAX_CLUSTERS: usize = 64;
/// The row and column of the clusters past [`MAX_CLUSTERS`].
pub const OTHER: &str = "(other)";

impl Matrix {
    pub fn of<'a>(hops: impl Iterator<Item = &'a Hop>) -> Matrix {
        let mut m = Matrix::default();
        for h in hops {
            m.add(h);
        }
        m
    }

    /// `cluster` if it is (or can still be) named one by one, else [`OTHER`].
    fn name(&mut self, cluster: &str) -> Option<String> {
        if self.named.contains(cluster) {
            return Some(cluster.to_owned());
        }
        if self.named.len() < MAX_CLUSTERS {
            self.named.insert(cluster.to_owned());
            return Some(cluster.to_owned());
        }
        None
    }

    /// Counts one more hop.
    pub fn add(&mut self, h: &Hop) {
        let from = self.name(&h.source_cluster);
        let served = match &h.served_by {
            Some(c) => self.name(c).map(Some),
            None => Some(None),
        };
        if from.is_none() || served.is_none() {
            self.folded += 1;
        }
        let from = from.unwrap_or_else(|| OTHER.to_owned());
        let served = served.unwrap_or_else(|| Some(OTHER.to_owned()));
        let m = self;
        if let (Some(c), Some(g)) = (&served, &h.gateway) {
            let set = m.gateways.entry(c.clone()).or_default();
            if set.len() < MAX_GATEWAYS {
                set.insert(g.clone());
            }
        }
        let to = served.clone().unwrap_or_else(|| "none".into());
        *m.flows.entry((from.clone(), to.clone())).or_insert(0) += 1;
        if h.cross_network {
            *m.cross.entry((from.clone(), to)).or_insert(0) += 1;
            m.cross_network += 1;
        }
        m.total += 1;
        if from != OTHER {
            m.networks
                .entry(from)
                .or_insert_with(|| h.source_network.clone());
        }
        if let (Some(c), Some(n)) = (&served, &h.served_network) {
            if c != OTHER {
                m.networks.entry(c.clone()).or_insert_with(|| n.clone());
            }
        }
    }

    /// Every cluster that appears, sorted.
    pub fn clusters(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .flows
            .keys()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .filter(|c| c != "none")
            .collect();
        c.sort();
        c.dedup();
        c
    }

    /// A text table: rows are sources, columns where they were served.
    pub fn table(&self) -> String {
        let mut cols = self.clusters();
        if self.flows.keys().any(|(_, b)| b == "none") {
            cols.push("none".into());
        }
        let rows: Vec<String> = {
            let mut r: Vec<String> = self.flows.keys().map(|(a, _)| a.clone()).collect();
            r.dedup();
            r
        };
        let mut s = String::new();
        let _ = write!(s, "{:<16}", "source \\ served");
        for c in &cols {
            let _ = write!(s, "{:>18}", hybridmesh_input::printable(c));
        }
        s.push('\n');
        for r in &rows {
            let _ = write!(s, "{:<16}", hybridmesh_input::printable(r));
            let row_total: u64 = cols.iter().map(|c| self.count(r, c)).sum();
            for c in &cols {
                let n = self.count(r, c);
                let share = if row_total > 0 {
                    n as f64 * 100.0 / row_total as f64
                } else {
                    0.0
                };
                let _ = write!(s, "{:>18}", format!("{n} ({share:.1}%)"));
            }
            s.push('\n');
        }
        let cross = if self.total > 0 {
            self.cross_network as f64 * 100.0 / self.total as f64
        } else {
            0.0
        };
        let _ = write!(
            s,
            "{} requests, {} crossed networks ({cross:.1}%)",
            self.total, self.cross_network
        );
        if self.folded > 0 {
            let _ = write!(
                s,
                "\n{} of them to or from clusters past the first {MAX_CLUSTERS} the log names, counted as {OTHER}",
                self.folded
            );
        }
        s
    }

    pub fn count(&self, from: &str, to: &str) -> u64 {
        self.flows
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// One request's path, hop by hop: its records sorted by chain length.
pub fn path<'a>(hops: &'a [Hop], request_id: &str) -> Vec<&'a Hop> {
    let mut p: Vec<&Hop> = hops.iter().filter(|h| h.request_id == request_id).collect();
    p.sort_by_key(|h| h.chain.split(',').count());
    p
}

/// `gke -> anthos  served by anthos via 172.16.10.152:15443 (cross-network)  200  3 ms  failover rule=0 ...`
pub fn describe(h: &Hop) -> String {
    let to = h.served_by.as_deref().unwrap_or("nobody");
    let via = h
        .gateway
        .as_ref()
        .map(|g| format!(" via gateway {g}"))
        .unwrap_or_default();
    let cross = if h.cross_network {
        " (cross-network)"
    } else {
        ""
    };
    let lp = if h.looped { " LOOP" } else { "" };
    // Every field is the log's: printed escaped.
    let line = format!(
        "{} -> {}  served by {to}{via}{cross}{lp}  status {}  {} ms  {}  [{}]",
        h.source_cluster,
        h.target_cluster.as_deref().unwrap_or("(Envoy's choice)"),
        h.status,
        h.latency_ms,
        h.reason,
        h.service
    );
    hybridmesh_input::printable(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GKE_TO_ANTHOS: &str = r#"{"request_id":"r1","service":"echo-svc.default.svc.cluster.local","source_cluster":"gke","source_network":"kuchima-demo-vpc01","target_cluster":"anthos","served_by":"anthos","served_network":"default","gateway":"172.16.10.152:15443","decision":"weighted","reason":"weighted rule=0 -> anthos","chain":"gke","cross_network":true,"loop":false,"rule":0,"status":200,"response_flags":0,"latency_ms":3}"#;

    #[test]
    fn reads_records_plain_and_inside_access_log_lines() {
        let access = serde_json::json!({"proxy": "gke.client", "hop": GKE_TO_ANTHOS}).to_string();
        let object = format!(r#"{{"proxy": "x", "hop": {GKE_TO_ANTHOS}}}"#);
        let text = format!("{GKE_TO_ANTHOS}\n{access}\n{object}\n{{\"hop\": \"-\"}}\n{{broken\n{{\"hop\": \"{{}}\"}}\n[2026-11-25 13:14:18.397][info][main] envoy log line\n\n");
        let p = parse(&text);
        assert_eq!(p.hops.len(), 3);
        assert_eq!(p.without_hop, 1);
        assert_eq!(p.not_json, 1);
        assert_eq!(p.malformed.len(), 2);
        assert_eq!(p.malformed[0].0, 5);
        assert!(p.malformed[0].1.starts_with("not JSON"));
        assert!(
            p.malformed[1]
                .1
                .starts_with("not a hop record: missing field"),
            "{:?}",
            p.malformed
        );
        assert!(p
            .hops
            .iter()
            .all(|h| h.served_by.as_deref() == Some("anthos")));
    }

    #[test]
    fn matrix_counts_and_shares() {
        let mut hops = parse(GKE_TO_ANTHOS).hops;
        let mut local = hops[0].clone();
        local.served_by = Some("gke".into());
        local.served_network = Some("kuchima-demo-vpc01".into());
        local.cross_network = false;
        hops.extend(std::iter::repeat_n(local, 3));
        let m = Matrix::of(hops.iter());
        assert_eq!(m.count("gke", "anthos"), 1);
        assert_eq!(m.count("gke", "gke"), 3);
        assert_eq!(m.cross_network, 1);
        let t = m.table();
        assert!(t.contains("1 (25.0%)"), "{t}");
        assert!(t.contains("3 (75.0%)"), "{t}");
        assert!(t.ends_with("4 requests, 1 crossed networks (25.0%)"), "{t}");
        let svg = svg(&m);
        assert!(svg.contains(">gke<") && svg.contains(">anthos<"));
        assert!(svg.contains("network kuchima-demo-vpc01") && svg.contains("network default"));
        assert!(
            svg.contains("gke → anthos: 25.0% (1) cross-network"),
            "{svg}"
        );
        assert!(svg.contains("stays here: 75.0% (3)"));
        assert!(svg.contains("stroke-dasharray=\"10 6\""));
    }

    #[test]
    fn filters_and_paths() {
        let a = parse(GKE_TO_ANTHOS).hops.remove(0);
        let mut b = a.clone();
        b.source_cluster = "anthos".into();
        b.chain = "gke,anthos".into();
        b.served_by = Some("anthos".into());
        b.cross_network = false;
        let hops = vec![b.clone(), a.clone()];
        let p = path(&hops, "r1");
        assert_eq!(p[0].chain, "gke");
        assert_eq!(p[1].chain, "gke,anthos");
        let f = Filter {
            cross_network_only: true,
            ..Filter::default()
        };
        assert_eq!(hops.iter().filter(|h| f.matches(h)).count(), 1);
        let f = Filter {
            service: Some(".default.svc.cluster.local".into()),
            ..Filter::default()
        };
        assert_eq!(hops.iter().filter(|h| f.matches(h)).count(), 2);
        assert!(describe(&a).starts_with("gke -> anthos  served by anthos via gateway 172.16.10.152:15443 (cross-network)  status 200  3 ms"));
    }
}
