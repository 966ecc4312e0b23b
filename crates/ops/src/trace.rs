//! Reading hop records back: from Envoy JSON access logs (the filter's record
//! is in filter state `wasm.hybridmesh.hop`) or from `hybridmesh simulate
//! --hops`, and answering "why did this request go there, and how much of
//! our traffic crosses networks?".

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

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

/// What reading a log gave.
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
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('{') {
            out.not_json += 1;
            continue;
        }
        match parse_line(line) {
            Ok(Some(h)) => out.hops.push(h),
            Ok(None) => out.without_hop += 1,
            Err(why) => out.malformed.push((i + 1, why)),
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Option<Hop>, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let record = if v.get("source_cluster").is_some() && v.get("decision").is_some() {
        v
    } else {
        match v.get("hop") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            // Envoy prints an empty filter state as "-" or "".
            Some(serde_json::Value::String(s)) if s.is_empty() || s == "-" => return Ok(None),
            Some(serde_json::Value::String(s)) => serde_json::from_str(s)
                .map_err(|e| format!("the hop field is not a hop record: {e}"))?,
            Some(other) => other.clone(),
        }
    };
    serde_json::from_value(record)
        .map(Some)
        .map_err(|e| format!("not a hop record: {e}"))
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
            && self.service.as_ref().is_none_or(|s| {
                h.service == *s || (s.starts_with('.') && h.service.ends_with(s.as_str()))
            })
            && self.cluster.as_ref().is_none_or(|c| {
                h.source_cluster == *c || h.served_by.as_deref() == Some(c.as_str())
            })
            && (!self.cross_network_only || h.cross_network)
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
}

impl Matrix {
    pub fn of<'a>(hops: impl Iterator<Item = &'a Hop>) -> Matrix {
        let mut m = Matrix::default();
        for h in hops {
            let to = h.served_by.clone().unwrap_or_else(|| "none".into());
            *m.flows
                .entry((h.source_cluster.clone(), to.clone()))
                .or_insert(0) += 1;
            if h.cross_network {
                *m.cross
                    .entry((h.source_cluster.clone(), to.clone()))
                    .or_insert(0) += 1;
                m.cross_network += 1;
            }
            m.total += 1;
            m.networks
                .entry(h.source_cluster.clone())
                .or_insert_with(|| h.source_network.clone());
            if let (Some(c), Some(n)) = (&h.served_by, &h.served_network) {
                m.networks.entry(c.clone()).or_insert_with(|| n.clone());
            }
        }
        m
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
            let _ = write!(s, "{c:>18}");
        }
        s.push('\n');
        for r in &rows {
            let _ = write!(s, "{r:<16}");
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
    format!(
        "{} -> {}  served by {to}{via}{cross}{lp}  status {}  {} ms  {}  [{}]",
        h.source_cluster,
        h.target_cluster.as_deref().unwrap_or("(Envoy's choice)"),
        h.status,
        h.latency_ms,
        h.reason,
        h.service
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The mesh as a picture: networks as boxes holding their clusters, flows as
/// arrows sized and labelled by share, cross-network flows dashed in orange,
/// traffic that stays in its cluster as a label inside the cluster.
pub fn svg(m: &Matrix) -> String {
    // Networks as columns, clusters stacked in them.
    let mut by_network: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in m.clusters() {
        let n = m
            .networks
            .get(&c)
            .cloned()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "(no network)".into());
        by_network.entry(n).or_default().push(c);
    }
    let (cw, ch, gap_x, gap_y, pad) = (220.0, 110.0, 360.0, 50.0, 30.0);
    let mut pos: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut s = String::new();
    let rows = by_network.values().map(Vec::len).max().unwrap_or(1) as f64;
    let width = pad * 2.0
        + by_network.len() as f64 * (cw + 2.0 * pad)
        + (by_network.len().saturating_sub(1)) as f64 * gap_x;
    let height = 60.0 + rows * (ch + gap_y) + 50.0 + 50.0;
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="14" markerHeight="14" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>
<marker id="arrow-x" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="14" markerHeight="14" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#e8710a"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="32" font-size="20" font-weight="bold">Cross-cluster traffic: {} requests, {} crossed networks ({:.1}%)</text>
"##,
        m.total,
        m.cross_network,
        if m.total > 0 {
            m.cross_network as f64 * 100.0 / m.total as f64
        } else {
            0.0
        }
    );
    for (i, (network, clusters)) in by_network.iter().enumerate() {
        let x = pad + i as f64 * (cw + 2.0 * pad + gap_x);
        let y = 60.0;
        let h = clusters.len() as f64 * (ch + gap_y) + 50.0;
        let _ = writeln!(
            s,
            r##"<g class="network"><rect x="{x:.0}" y="{y:.0}" width="{:.0}" height="{h:.0}" rx="14" fill="#f1f5fb" stroke="#8aa4c8" stroke-dasharray="6 4"/><text x="{:.0}" y="{:.0}" font-size="14" fill="#45658f">network {}</text></g>"##,
            cw + 2.0 * pad,
            x + 12.0,
            y + 22.0,
            esc(network)
        );
        for (j, c) in clusters.iter().enumerate() {
            let cx = x + pad;
            let cy = y + 40.0 + j as f64 * (ch + gap_y);
            pos.insert(c.clone(), (cx, cy));
            let local = m.count(c, c);
            let out_total: u64 = m
                .flows
                .iter()
                .filter(|((a, _), _)| a == c)
                .map(|(_, n)| *n)
                .sum();
            let local_line = if out_total > 0 {
                format!(
                    "stays here: {:.1}% ({local})",
                    local as f64 * 100.0 / out_total as f64
                )
            } else {
                "serves only".to_string()
            };
            let _ = writeln!(
                s,
                r##"<g class="cluster"><rect x="{cx:.0}" y="{cy:.0}" width="{cw:.0}" height="{ch:.0}" rx="10" fill="#ffffff" stroke="#1a73e8" stroke-width="2"/><text x="{:.0}" y="{:.0}" font-size="20" font-weight="bold" text-anchor="middle">{}</text><text x="{:.0}" y="{:.0}" font-size="13" text-anchor="middle" fill="#555">{}</text></g>"##,
                cx + cw / 2.0,
                cy + 45.0,
                esc(c),
                cx + cw / 2.0,
                cy + 75.0,
                esc(&local_line)
            );
        }
    }
    // Arrows between different clusters.
    let max = m
        .flows
        .iter()
        .filter(|((a, b), _)| a != b)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for ((from, to), n) in &m.flows {
        if from == to || to == "none" {
            continue;
        }
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (pos.get(from), pos.get(to)) else {
            continue;
        };
        let cross = m
            .cross
            .get(&(from.clone(), to.clone()))
            .copied()
            .unwrap_or(0)
            > 0;
        let row_total: u64 = m
            .flows
            .iter()
            .filter(|((a, _), _)| a == from)
            .map(|(_, k)| *k)
            .sum();
        let share = *n as f64 * 100.0 / row_total.max(1) as f64;
        let width = 2.0 + 8.0 * (*n as f64 / max);
        // Two directions between the same pair are drawn apart.
        let offset = if from < to { -22.0 } else { 22.0 };
        let (x1, x2) = if fx < tx {
            (fx + cw, tx)
        } else if fx > tx {
            (fx, tx + cw)
        } else {
            (fx + cw / 2.0, tx + cw / 2.0)
        };
        let (y1, y2) = if fx == tx {
            if fy < ty {
                (fy + ch, ty)
            } else {
                (fy, ty + ch)
            }
        } else {
            (fy + ch / 2.0 + offset, ty + ch / 2.0 + offset)
        };
        let (color, marker, dash) = if cross {
            ("#e8710a", "arrow-x", r#" stroke-dasharray="10 6""#)
        } else {
            ("#333", "arrow", "")
        };
        let label = format!(
            "{share:.1}% ({n}){}",
            if cross { " cross-network" } else { "" }
        );
        let _ = writeln!(
            s,
            r##"<g class="flow"><line x1="{x1:.0}" y1="{y1:.0}" x2="{x2:.0}" y2="{y2:.0}" stroke="{color}" stroke-width="{width:.1}"{dash} marker-end="url(#{marker})"/><text x="{:.0}" y="{:.0}" font-size="14" text-anchor="middle" fill="{color}">{} → {}: {}</text></g>"##,
            (x1 + x2) / 2.0,
            // The upper arrow is labelled above it, the lower one below.
            if offset < 0.0 {
                (y1 + y2) / 2.0 - width / 2.0 - 8.0
            } else {
                (y1 + y2) / 2.0 + width / 2.0 + 18.0
            },
            esc(from),
            esc(to),
            esc(&label)
        );
    }
    let unserved: u64 = m
        .flows
        .iter()
        .filter(|((_, b), _)| b == "none")
        .map(|(_, n)| *n)
        .sum();
    if unserved > 0 {
        let _ = writeln!(
            s,
            r##"<text x="{pad}" y="{:.0}" font-size="14" fill="#c5221f">{unserved} request(s) served by nobody (no healthy upstream, connection failures)</text>"##,
            height - 20.0
        );
    }
    s.push_str("</svg>\n");
    s
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
