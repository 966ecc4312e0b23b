//! Hop records: one per cross-cluster request, seen from the client side.
//!
//! A record says who sent the request, which cluster was chosen and which
//! served it, whether it crossed networks and through which gateway, why it
//! went there, its status and latency. It is written to the log, to Envoy
//! filter state (for access logs) and, on request, to a response header.

use std::fmt::Write as _;

use crate::identity::Identity;

/// The port of Istio's east-west gateway (AUTO_PASSTHROUGH mTLS).
pub const EAST_WEST_GATEWAY_PORT: u16 = 15443;

/// The server side's `served-by` value: `cluster=<c>;network=<n>;locality=<l>`.
pub fn served_by_value(me: &Identity) -> String {
    format!(
        "cluster={};network={};locality={}",
        me.cluster, me.network, me.locality
    )
}

/// A parsed `served-by` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedBy {
    pub cluster: String,
    pub network: String,
    pub locality: String,
}

impl ServedBy {
    /// Parses `key=value;...`; unknown keys are ignored; no cluster means `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut out = ServedBy::default();
        for part in text.split(';') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k {
                "cluster" => out.cluster = v.to_string(),
                "network" => out.network = v.to_string(),
                "locality" => out.locality = v.to_string(),
                _ => {}
            }
        }
        (!out.cluster.is_empty() && crate::config::is_cluster_name(&out.cluster)).then_some(out)
    }
}

/// `value` as one token of a one-line log: control characters (CR, LF, NUL,
/// ...), whitespace, quotes and backslashes are written as `\u{hex}`, so a
/// value from a request (an `x-request-id`, a peer's claim) can neither start
/// a new log line nor pose as another `key=value` field. Ordinary values are
/// returned as they are.
pub fn log_token(value: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c.is_whitespace() || c == '"' || c == '\\';
    if !value.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// True when `address` (`ip:port`) is an east-west gateway.
pub fn is_gateway_address(address: &str) -> bool {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| p == EAST_WEST_GATEWAY_PORT)
}

/// A hop chain as the application forwarded it (`gke,anthos`): the clusters a
/// request has passed through, oldest first. The application copies the
/// header from the request it serves to the requests it makes, like trace
/// context; each client side appends its own cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub clusters: Vec<String>,
    /// What was wrong with the forwarded value, if anything.
    pub problem: Option<ChainProblem>,
    /// This proxy's cluster was already in the chain: the request is looping.
    pub looped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainProblem {
    /// Not a list of cluster names (or sent more than once): replaced, not trusted.
    Malformed,
    /// Longer than `maxHops`: the oldest entries were dropped.
    Truncated,
    /// Over [`MAX_CHAIN_BYTES`]: not read at all, replaced.
    Oversized,
}

impl ChainProblem {
    pub fn label(self) -> &'static str {
        match self {
            ChainProblem::Malformed => "malformed",
            ChainProblem::Truncated => "truncated",
            ChainProblem::Oversized => "oversized",
        }
    }
}

/// At most this many bytes of a forwarded chain are read.
pub const MAX_CHAIN_BYTES: usize = 2048;

impl Chain {
    /// The chain to send on: the forwarded one (validated, bounded to
    /// `max` entries including ours, and to [`MAX_CHAIN_BYTES`] so that the
    /// next hop reads it) with `me` appended.
    pub fn extend(forwarded: Option<&[u8]>, repeated: bool, me: &str, max: usize) -> Chain {
        let mut chain = Chain::default();
        if let Some(value) = forwarded.filter(|v| v.len() > MAX_CHAIN_BYTES) {
            let _ = value;
            chain.problem = Some(ChainProblem::Oversized);
        } else if let Some(value) = forwarded {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|_| !repeated)
                .and_then(|t| {
                    t.split(',')
                        .map(str::trim)
                        .map(|c| crate::config::is_cluster_name(c).then(|| c.to_string()))
                        .collect::<Option<Vec<String>>>()
                });
            match parsed {
                Some(list) => chain.clusters = list,
                None => chain.problem = Some(ChainProblem::Malformed),
            }
        }
        chain.looped = chain.clusters.iter().any(|c| c == me);
        let keep = max.saturating_sub(1);
        // At most `max` entries with ours, and no longer than the next hop reads.
        let mut len: usize = chain.clusters.iter().map(|c| c.len() + 1).sum::<usize>() + me.len();
        let mut drop = chain.clusters.len().saturating_sub(keep);
        for c in &chain.clusters[..drop] {
            len -= c.len() + 1;
        }
        while len > MAX_CHAIN_BYTES && drop < chain.clusters.len() {
            len -= chain.clusters[drop].len() + 1;
            drop += 1;
        }
        if drop > 0 {
            chain.clusters.drain(..drop);
            chain.problem.get_or_insert(ChainProblem::Truncated);
        }
        chain.clusters.push(me.to_string());
        chain
    }

    pub fn value(&self) -> String {
        self.clusters.join(",")
    }
}

/// What the client side knows once the response headers arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopRecord {
    pub request_id: String,
    pub service: String,
    pub source_cluster: String,
    pub source_network: String,
    /// The cluster the filter chose (`None`: left to Envoy).
    pub target: Option<String>,
    /// The cluster that answered (served-by header, else endpoint metadata).
    pub served_by: Option<String>,
    pub served_network: Option<String>,
    pub cross_network: bool,
    /// `ip:port` of the remote east-west gateway crossed, if any.
    pub gateway: Option<String>,
    /// Metric label of the decision (`cluster_local`, `weighted`, `failover`, `none`).
    pub decision: &'static str,
    pub rule: Option<usize>,
    /// One line explaining the decision.
    pub reason: String,
    /// The hop chain this request carried on (`gke,anthos`), ours last.
    pub chain: String,
    /// Our cluster was already in the chain.
    pub looped: bool,
    pub status: u32,
    /// Envoy response flags (bitmask), 0 when none were read.
    pub flags: u64,
    pub latency_ms: u64,
}

impl HopRecord {
    /// `hop id=.. service=.. src=gke dst=anthos served_by=anthos cross_network=true ...`
    pub fn log_line(&self) -> String {
        let mut s = String::with_capacity(200);
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_string());
        let _ = write!(
            s,
            "hop id={} service={} src={} target={} served_by={} cross_network={} gateway={} decision={} status={} latency_ms={} chain={} reason=\"{}\"",
            if self.request_id.is_empty() { "-".into() } else { log_token(&self.request_id) },
            if self.service.is_empty() { "-" } else { &self.service },
            self.source_cluster,
            opt(&self.target),
            opt(&self.served_by),
            self.cross_network,
            opt(&self.gateway),
            self.decision,
            self.status,
            self.latency_ms,
            self.chain,
            self.reason.replace('"', "'"),
        );
        s
    }

    /// Compact JSON, for filter state (`%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%`).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(400);
        s.push('{');
        let mut first = true;
        let mut key = |s: &mut String, k: &str| {
            if !first {
                s.push(',');
            }
            first = false;
            json_str(s, k);
            s.push(':');
        };
        let mut text = |s: &mut String, k: &str, v: Option<&str>| {
            key(s, k);
            match v {
                Some(v) => json_str(s, v),
                None => s.push_str("null"),
            }
        };
        text(&mut s, "request_id", Some(&self.request_id));
        text(&mut s, "service", Some(&self.service));
        text(&mut s, "source_cluster", Some(&self.source_cluster));
        text(&mut s, "source_network", Some(&self.source_network));
        text(&mut s, "target_cluster", self.target.as_deref());
        text(&mut s, "served_by", self.served_by.as_deref());
        text(&mut s, "served_network", self.served_network.as_deref());
        text(&mut s, "gateway", self.gateway.as_deref());
        text(&mut s, "decision", Some(self.decision));
        text(&mut s, "reason", Some(&self.reason));
        text(&mut s, "chain", Some(&self.chain));
        s.push_str(",\"cross_network\":");
        s.push_str(if self.cross_network { "true" } else { "false" });
        s.push_str(",\"loop\":");
        s.push_str(if self.looped { "true" } else { "false" });
        s.push_str(",\"rule\":");
        match self.rule {
            Some(r) => {
                let _ = write!(s, "{r}");
            }
            None => s.push_str("null"),
        }
        let _ = write!(
            s,
            ",\"status\":{},\"response_flags\":{},\"latency_ms\":{}}}",
            self.status, self.flags, self.latency_ms
        );
        s
    }
}

/// Appends `value` as a JSON string.
fn json_str(out: &mut String, value: &str) {
    out.push('"');
    // Almost every value needs no escaping: one copy.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Locality;

    #[test]
    fn served_by_round_trips() {
        let me = Identity {
            cluster: "anthos".into(),
            network: "default".into(),
            locality: Locality::new("tokyo-onprem", "", ""),
            namespace: "default".into(),
        };
        let v = served_by_value(&me);
        assert_eq!(v, "cluster=anthos;network=default;locality=tokyo-onprem");
        let p = ServedBy::parse(v.as_bytes()).unwrap();
        assert_eq!(p.cluster, "anthos");
        assert_eq!(p.network, "default");
        assert_eq!(p.locality, "tokyo-onprem");
    }

    #[test]
    fn served_by_rejects_garbage() {
        assert_eq!(ServedBy::parse(b"network=x"), None);
        assert_eq!(ServedBy::parse(b"cluster=a b"), None);
        assert_eq!(ServedBy::parse(&[0xff]), None);
        assert_eq!(
            ServedBy::parse(b"cluster=gke;weird;x=y").map(|s| s.cluster),
            Some("gke".into())
        );
    }

    #[test]
    fn log_tokens_cannot_break_the_line_or_add_fields() {
        assert_eq!(log_token("r-1"), "r-1");
        assert_eq!(
            log_token("r-1\r\nx: 1\0"),
            "r-1\\u{d}\\u{a}x:\\u{20}1\\u{0}"
        );
        assert_eq!(log_token("a\"b\\c\u{2028}"), "a\\u{22}b\\u{5c}c\\u{2028}");
        let hop = HopRecord {
            request_id: "r-1 src=evil\nhybridmesh: hop id=forged".into(),
            ..HopRecord::default()
        };
        let line = hop.log_line();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(
                "hop id=r-1\\u{20}src=evil\\u{a}hybridmesh:\\u{20}hop\\u{20}id=forged service=- "
            ),
            "{line}"
        );
    }

    #[test]
    fn gateway_is_port_15443() {
        assert!(is_gateway_address("172.16.10.152:15443"));
        assert!(is_gateway_address("[fd00::1]:15443"));
        assert!(!is_gateway_address("10.24.1.9:8080"));
        assert!(!is_gateway_address("garbage"));
    }
}
