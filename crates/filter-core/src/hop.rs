//! Hop records: one per cross-cluster request, seen from the client side.
//!
//! A record says who sent the request, which cluster was chosen and which
//! served it, whether it crossed networks and through which gateway, why it
//! went there, its status and latency. It is written to the log, to Envoy
//! filter state (for access logs) and, on request, to a response header.

use crate::identity::Identity;
use crate::text::{push_json_str, push_u64};

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

/// A parsed `served-by` header, borrowed from the header's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedByRef<'a> {
    pub cluster: &'a str,
    pub network: &'a str,
    pub locality: &'a str,
}

impl<'a> ServedByRef<'a> {
    /// Parses `key=value;...`; unknown keys are ignored (the last of a repeated
    /// key counts); no valid cluster name means `None`.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut out = ServedByRef::default();
        for part in text.split(';') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k {
                "cluster" => out.cluster = v,
                "network" => out.network = v,
                "locality" => out.locality = v,
                _ => {}
            }
        }
        (!out.cluster.is_empty() && crate::config::is_cluster_name(out.cluster)).then_some(out)
    }
}

impl ServedBy {
    /// Parses `key=value;...`; unknown keys are ignored; no cluster means `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        ServedByRef::parse(value).map(|s| ServedBy {
            cluster: s.cluster.to_string(),
            network: s.network.to_string(),
            locality: s.locality.to_string(),
        })
    }
}

/// `value` as one token of a one-line log: control characters (CR, LF, NUL,
/// ...), whitespace, quotes and backslashes are written as `\u{hex}`, so a
/// value from a request (an `x-request-id`, a peer's claim) can neither start
/// a new log line nor pose as another `key=value` field. Ordinary values are
/// returned as they are.
pub fn log_token(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(unsafe_log_char) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    push_log_token(&mut out, value);
    std::borrow::Cow::Owned(out)
}

fn unsafe_log_char(c: char) -> bool {
    c.is_control() || c.is_whitespace() || c == '"' || c == '\\'
}

/// [`log_token`] appended to `out`.
pub fn push_log_token(out: &mut String, value: &str) {
    for c in value.chars() {
        if unsafe_log_char(c) {
            out.push_str("\\u{");
            crate::text::push_hex(out, c as u32);
            out.push('}');
        } else {
            out.push(c);
        }
    }
}

/// The access log line `hybridmesh trace` reads (Envoy's JSON format,
/// `name -> %COMMAND%`): Envoy's own fields, `hop` (the filter's record from
/// filter state, written when `filterState` is on) and the headers the filter
/// sets (`req_*`, `resp_served_by`). From those alone `trace` rebuilds a
/// hop on the client side when the filter writes no record (`filterState:
/// false`: no `proxy_set_property` per request); only the decision and its
/// reason are then missing. The replica's Envoys and the manifests in
/// `wasmplugin/` both log this.
pub fn access_log_fields(names: &crate::config::HeaderNames) -> Vec<(&'static str, String)> {
    let req = |h: &str| format!("%REQ({})%", h.to_ascii_uppercase());
    vec![
        ("start_time", "%START_TIME%".to_string()),
        ("method", "%REQ(:METHOD)%".to_string()),
        ("authority", "%REQ(:AUTHORITY)%".to_string()),
        ("path", "%REQ(:PATH)%".to_string()),
        ("status", "%RESPONSE_CODE%".to_string()),
        ("flags", "%RESPONSE_FLAGS%".to_string()),
        ("details", "%RESPONSE_CODE_DETAILS%".to_string()),
        ("route", "%ROUTE_NAME%".to_string()),
        ("cluster", "%UPSTREAM_CLUSTER%".to_string()),
        ("upstream", "%UPSTREAM_HOST%".to_string()),
        ("request_id", "%REQ(X-REQUEST-ID)%".to_string()),
        ("duration_ms", "%DURATION%".to_string()),
        (
            "hop",
            format!("%FILTER_STATE(wasm.{HOP_FILTER_STATE_KEY}:PLAIN)%"),
        ),
        ("req_source_cluster", req(&names.source_cluster)),
        ("req_source_network", req(&names.source_network)),
        ("req_target_cluster", req(&names.target_cluster)),
        ("req_pinned_cluster", req(&names.pinned_cluster)),
        ("req_hops", req(&names.hops)),
        (
            "resp_served_by",
            format!("%RESP({})%", names.served_by.to_ascii_uppercase()),
        ),
    ]
}

/// The filter state key of the hop record (Envoy prefixes `wasm.`).
pub const HOP_FILTER_STATE_KEY: &str = "hybridmesh.hop";

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

/// What [`Chain::extend_into`] found in a forwarded chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainInfo {
    pub problem: Option<ChainProblem>,
    pub looped: bool,
}

impl Chain {
    /// The chain to send on: the forwarded one (validated, bounded to
    /// `max` entries including ours, and to [`MAX_CHAIN_BYTES`] so that the
    /// next hop reads it) with `me` appended.
    pub fn extend(forwarded: Option<&[u8]>, repeated: bool, me: &str, max: usize) -> Chain {
        let mut value = String::new();
        let info = Chain::extend_into(forwarded, repeated, me, max, &mut value);
        Chain {
            clusters: value.split(',').map(str::to_string).collect(),
            problem: info.problem,
            looped: info.looped,
        }
    }

    /// [`Chain::extend`] written as the header value into `out` (cleared
    /// first): nothing is allocated once `out` has room.
    pub fn extend_into(
        forwarded: Option<&[u8]>,
        repeated: bool,
        me: &str,
        max: usize,
        out: &mut String,
    ) -> ChainInfo {
        out.clear();
        let mut info = ChainInfo::default();
        // The entries of a valid forwarded chain, trimmed, as one string.
        let mut list: &str = "";
        if let Some(value) = forwarded {
            if value.len() > MAX_CHAIN_BYTES {
                info.problem = Some(ChainProblem::Oversized);
            } else {
                let valid = std::str::from_utf8(value).ok().filter(|t| {
                    !repeated
                        && t.split(',')
                            .all(|c| crate::config::is_cluster_name(c.trim()))
                });
                match valid {
                    Some(t) => list = t,
                    None => info.problem = Some(ChainProblem::Malformed),
                }
            }
        }
        let entries = || list.split(',').map(str::trim).filter(|_| !list.is_empty());
        info.looped = entries().any(|c| c == me);
        let n = entries().count();
        let keep = max.saturating_sub(1);
        // At most `max` entries with ours, and no longer than the next hop reads.
        let mut len: usize = entries().map(|c| c.len() + 1).sum::<usize>() + me.len();
        let mut drop = n.saturating_sub(keep);
        for c in entries().take(drop) {
            len -= c.len() + 1;
        }
        for c in entries().skip(drop) {
            if len <= MAX_CHAIN_BYTES {
                break;
            }
            len -= c.len() + 1;
            drop += 1;
        }
        if drop > 0 {
            info.problem.get_or_insert(ChainProblem::Truncated);
        }
        for c in entries().skip(drop) {
            out.push_str(c);
            out.push(',');
        }
        out.push_str(me);
        info
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
    /// Only the target could serve it (else it was preferred).
    pub pinned: bool,
    /// Served by another cluster than the preferred one: Envoy failed over.
    pub failed_over: bool,
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

/// A hop record borrowed from where its parts live (the stream's state, the
/// response headers, the filter's identity): what the request path writes
/// without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hop<'a> {
    pub request_id: &'a str,
    pub service: &'a str,
    pub source_cluster: &'a str,
    pub source_network: &'a str,
    pub target: Option<&'a str>,
    pub pinned: bool,
    pub failed_over: bool,
    pub served_by: Option<&'a str>,
    pub served_network: Option<&'a str>,
    pub cross_network: bool,
    pub gateway: Option<&'a str>,
    pub decision: &'static str,
    pub rule: Option<usize>,
    pub reason: &'a str,
    pub chain: &'a str,
    pub looped: bool,
    pub status: u32,
    pub flags: u64,
    pub latency_ms: u64,
}

impl Hop<'_> {
    pub fn to_record(&self) -> HopRecord {
        let own = |o: Option<&str>| o.map(str::to_string);
        HopRecord {
            request_id: self.request_id.to_string(),
            service: self.service.to_string(),
            source_cluster: self.source_cluster.to_string(),
            source_network: self.source_network.to_string(),
            target: own(self.target),
            pinned: self.pinned,
            failed_over: self.failed_over,
            served_by: own(self.served_by),
            served_network: own(self.served_network),
            cross_network: self.cross_network,
            gateway: own(self.gateway),
            decision: self.decision,
            rule: self.rule,
            reason: self.reason.to_string(),
            chain: self.chain.to_string(),
            looped: self.looped,
            status: self.status,
            flags: self.flags,
            latency_ms: self.latency_ms,
        }
    }

    /// `hop id=.. service=.. src=gke target=anthos served_by=anthos cross_network=true ...`, appended to `s`.
    pub fn write_log_line(&self, s: &mut String) {
        let opt = |s: &mut String, o: Option<&str>| s.push_str(o.unwrap_or("-"));
        let flag = |b: bool| if b { "true" } else { "false" };
        s.push_str("hop id=");
        if self.request_id.is_empty() {
            s.push('-');
        } else {
            push_log_token(s, self.request_id);
        }
        s.push_str(" service=");
        s.push_str(if self.service.is_empty() {
            "-"
        } else {
            self.service
        });
        s.push_str(" src=");
        s.push_str(self.source_cluster);
        s.push_str(" target=");
        opt(s, self.target);
        s.push_str(" served_by=");
        opt(s, self.served_by);
        if self.failed_over {
            s.push_str(" failed_over=true");
        }
        s.push_str(" cross_network=");
        s.push_str(flag(self.cross_network));
        s.push_str(" gateway=");
        opt(s, self.gateway);
        s.push_str(" decision=");
        s.push_str(self.decision);
        s.push_str(" status=");
        push_u64(s, u64::from(self.status));
        s.push_str(" latency_ms=");
        push_u64(s, self.latency_ms);
        s.push_str(" chain=");
        s.push_str(self.chain);
        s.push_str(" reason=\"");
        for c in self.reason.chars() {
            s.push(if c == '"' { '\'' } else { c });
        }
        s.push('"');
    }

    /// Compact JSON, for filter state (`%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%`), appended to `s`.
    pub fn write_json(&self, s: &mut String) {
        let text = |s: &mut String, k: &str, v: Option<&str>| {
            s.push_str(k);
            match v {
                Some(v) => push_json_str(s, v),
                None => s.push_str("null"),
            }
        };
        let flag = |b: bool| if b { "true" } else { "false" };
        text(s, "{\"request_id\":", Some(self.request_id));
        text(s, ",\"service\":", Some(self.service));
        text(s, ",\"source_cluster\":", Some(self.source_cluster));
        text(s, ",\"source_network\":", Some(self.source_network));
        text(s, ",\"target_cluster\":", self.target);
        text(s, ",\"served_by\":", self.served_by);
        text(s, ",\"served_network\":", self.served_network);
        text(s, ",\"gateway\":", self.gateway);
        text(s, ",\"decision\":", Some(self.decision));
        text(s, ",\"reason\":", Some(self.reason));
        text(s, ",\"chain\":", Some(self.chain));
        s.push_str(",\"pinned\":");
        s.push_str(flag(self.pinned));
        s.push_str(",\"failed_over\":");
        s.push_str(flag(self.failed_over));
        s.push_str(",\"cross_network\":");
        s.push_str(flag(self.cross_network));
        s.push_str(",\"loop\":");
        s.push_str(flag(self.looped));
        s.push_str(",\"rule\":");
        match self.rule {
            Some(r) => push_u64(s, r as u64),
            None => s.push_str("null"),
        }
        s.push_str(",\"status\":");
        push_u64(s, u64::from(self.status));
        s.push_str(",\"response_flags\":");
        push_u64(s, self.flags);
        s.push_str(",\"latency_ms\":");
        push_u64(s, self.latency_ms);
        s.push('}');
    }
}

impl HopRecord {
    pub fn view(&self) -> Hop<'_> {
        Hop {
            request_id: &self.request_id,
            service: &self.service,
            source_cluster: &self.source_cluster,
            source_network: &self.source_network,
            target: self.target.as_deref(),
            pinned: self.pinned,
            failed_over: self.failed_over,
            served_by: self.served_by.as_deref(),
            served_network: self.served_network.as_deref(),
            cross_network: self.cross_network,
            gateway: self.gateway.as_deref(),
            decision: self.decision,
            rule: self.rule,
            reason: &self.reason,
            chain: &self.chain,
            looped: self.looped,
            status: self.status,
            flags: self.flags,
            latency_ms: self.latency_ms,
        }
    }

    /// `hop id=.. service=.. src=gke dst=anthos served_by=anthos cross_network=true ...`
    pub fn log_line(&self) -> String {
        let mut s = String::with_capacity(200);
        self.view().write_log_line(&mut s);
        s
    }

    /// Compact JSON, for filter state (`%FILTER_STATE(wasm.hybridmesh.hop:PLAIN)%`).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(400);
        self.view().write_json(&mut s);
        s
    }
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
