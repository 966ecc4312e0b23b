//! The plugin configuration: defined here once, read in two stages.
//!
//! Stage one ([`read`]) reads a JSON tree ([`crate::json`]) into the `Raw*`
//! structs: field names, defaults, unknown fields rejected; a syntax or type
//! error names its field path and where in the text it is. Stage two
//! ([`Raw::validate`]) turns the raw structs into a [`Config`] that cannot hold an
//! invalid state, collecting every problem with its path and what was expected
//! (`routes[1].distribute[0].to: weights sum to 90, expected 100`).
//!
//! The `.wasm` reads JSON text ([`parse_json`]; Istio delivers `pluginConfig`
//! as JSON); the `hybridmesh` tools build the same tree from YAML and call
//! [`from_value`]: the same reader, the same messages, the same validation.

pub mod hosts;
pub mod identity;
pub mod json;
mod read;
pub mod sort;

use std::collections::BTreeMap;
use std::fmt;

use crate::hosts::{HostPattern, HostTable};
use crate::identity::Locality;

/// One problem in a config: where (field path) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// Line and column in the source text, where the parser knows them.
    pub position: Option<(usize, usize)>,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
            position: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------
// Stage one: what an operator writes.
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Raw {
    pub identity: RawIdentity,
    pub direction: DirectionSetting,
    pub domain_suffix: Option<String>,
    pub header_prefix: Option<String>,
    pub trust_source: TrustSource,
    pub trust_domains: Vec<String>,
    pub unknown_source: UnknownSource,
    pub deny_status: Option<u32>,
    pub allow_debug: bool,
    pub hop_log: HopLog,
    pub filter_state: Option<bool>,
    pub metrics_flush_interval: Option<String>,
    pub max_hops: Option<u32>,
    pub clusters: Vec<RawCluster>,
    pub outlier_detection: Option<RawOutlier>,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default)]
pub struct RawIdentity {
    pub cluster: Option<String>,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug)]
pub struct RawCluster {
    pub name: String,
    pub network: String,
    pub locality: String,
}

#[derive(Debug, Default)]
pub struct RawOutlier {
    pub consecutive_5xx_errors: Option<u32>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
}

#[derive(Debug)]
pub struct RawRoute {
    pub hosts: Vec<String>,
    pub policy: PolicyKind,
    pub clusters: Option<Vec<String>>,
    pub distribute: Option<Vec<RawDistribute>>,
    pub sticky_header: Option<String>,
    pub failover: Option<Vec<RawFailover>>,
    pub failover_priority: Option<Vec<String>>,
    pub outlier_detection: Option<RawOutlier>,
    pub pinned: Option<bool>,
}

#[derive(Debug)]
pub struct RawDistribute {
    pub from: String,
    pub to: BTreeMap<String, Weight>,
}

/// A weight as written: an integer, or anything else (kept to name it in the error).
#[derive(Debug, Clone, PartialEq)]
pub enum Weight {
    Int(u64),
    Invalid(String),
}

/// `19.5` for 19.5, to six decimals, without pulling float formatting into the
/// `.wasm` (it would add about 15 KB for one error message).
pub(crate) fn format_decimal(v: f64) -> String {
    if !v.is_finite() || v.abs() > 1e15 {
        return "a number out of range".to_string();
    }
    let micros = (v.abs() * 1e6).round() as u64;
    let (int, frac) = (micros / 1_000_000, micros % 1_000_000);
    let sign = if v < 0.0 { "-" } else { "" };
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:06}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

#[derive(Debug)]
pub struct RawFailover {
    pub from: String,
    pub to: String,
}

/// Which side of a request this filter runs on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum DirectionSetting {
    /// From the listener direction Istio sets (one property read per request).
    #[default]
    Auto,
    Outbound,
    Inbound,
}

/// When the server side believes the source headers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum TrustSource {
    /// Only over mTLS from a mesh peer (and a listed trust domain, if any are listed).
    #[default]
    Mtls,
    /// Always (tests without mTLS).
    Any,
}

/// What the server side does with a cluster-local host when the source is unknown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSource {
    #[default]
    Allow,
    Deny,
}

/// Level of the per-request hop log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HopLog {
    Off,
    Trace,
    #[default]
    Debug,
    Info,
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    None,
    ClusterLocal,
    Weighted,
    Failover,
}

impl PolicyKind {
    #[inline] // per request: built with the request path, for speed
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::ClusterLocal => "clusterLocal",
            PolicyKind::Weighted => "weighted",
            PolicyKind::Failover => "failover",
        }
    }
}

// ---------------------------------------------------------------------------
// Stage two: the validated model.
// ---------------------------------------------------------------------------

/// A validated plugin configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub identity: IdentityOverride,
    pub direction: DirectionSetting,
    /// `cluster.local`: short names expand to `<svc>.<ns>.svc.<domainSuffix>`.
    pub domain_suffix: String,
    pub headers: HeaderNames,
    pub trust_source: TrustSource,
    pub trust_domains: Vec<String>,
    pub unknown_source: UnknownSource,
    pub deny_status: u32,
    pub allow_debug: bool,
    pub hop_log: HopLog,
    pub filter_state: bool,
    pub metrics_flush_ms: u64,
    /// Longest hop chain kept (older entries are dropped first).
    pub max_hops: usize,
    pub clusters: Vec<ClusterInfo>,
    pub routes: Vec<Route>,
    pub hosts: HostTable,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityOverride {
    pub cluster: Option<String>,
    pub network: Option<String>,
    pub locality: Option<Locality>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub network: String,
    pub locality: Locality,
}

/// Outlier detection, with DestinationRule's field names and Envoy's semantics:
/// after `consecutive_5xx` consecutive errors a cluster is ejected for
/// `base_ejection_ms` times the number of times it was ejected, at most `max_ejection_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 0 disables ejection.
    pub consecutive_5xx: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        // Istio's defaults for a DestinationRule's outlierDetection.
        OutlierDetection {
            consecutive_5xx: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub hosts: Vec<HostPattern>,
    pub policy: Policy,
    /// Indices into [`Config::clusters`] that may serve this route's hosts.
    pub candidates: Vec<usize>,
    pub outlier: OutlierDetection,
    /// The chosen cluster is the only one that may serve the request
    /// (`x-hybridmesh-pinned-cluster`: a subset of that cluster alone). Else
    /// it is the preferred one (`x-hybridmesh-target-cluster`: Envoy fails
    /// over to the others by priority). `clusterLocal` is always pinned.
    pub pinned: bool,
}

#[derive(Debug, Clone)]
pub enum Policy {
    None,
    ClusterLocal,
    Weighted {
        distribute: Vec<Distribute>,
        sticky_header: Option<String>,
    },
    Failover {
        /// `from` region -> `to` region, in order.
        failover: Vec<(String, String)>,
        priority: Vec<TopologyLabel>,
    },
}

impl Policy {
    #[inline] // per request: built with the request path, for speed
    pub fn kind(&self) -> PolicyKind {
        match self {
            Policy::None => PolicyKind::None,
            Policy::ClusterLocal => PolicyKind::ClusterLocal,
            Policy::Weighted { .. } => PolicyKind::Weighted,
            Policy::Failover { .. } => PolicyKind::Failover,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Distribute {
    pub from: LocalityPattern,
    /// (cluster index, weight), in the order of [`Config::clusters`]; weights sum to 100.
    pub to: Vec<(usize, u32)>,
}

/// A `from` pattern: up to three segments, each a name or `*`; a trailing `*`
/// matches everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityPattern {
    pub text: String,
    /// The segments as byte ranges of `text`, `None` for `*`; only the first
    /// `count` are used. One allocation per pattern (the text), not four:
    /// a big mesh has thousands of them.
    segments: [Option<(u16, u16)>; 3],
    count: u8,
}

impl LocalityPattern {
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > usize::from(u16::MAX) {
            return None;
        }
        let mut segments = [None; 3];
        let mut count = 0;
        let mut start = 0;
        for p in text.split('/') {
            let slot = segments.get_mut(count)?;
            let end = start + p.len();
            if p.is_empty()
                || (p != "*"
                    && (p.contains('*') || p.chars().any(|c| c.is_whitespace() || c.is_control())))
            {
                return None;
            }
            // Both fit: the text's length was checked above.
            *slot = (p != "*").then_some((start as u16, end as u16));
            count += 1;
            start = end + 1;
        }
        Some(LocalityPattern {
            text: text.to_string(),
            segments,
            count: count as u8,
        })
    }

    #[inline] // per request: built with the request path, for speed
    pub fn matches(&self, locality: &Locality) -> bool {
        let parts = [
            locality.region.as_str(),
            locality.zone.as_str(),
            locality.subzone.as_str(),
        ];
        let count = usize::from(self.count);
        let trailing_wildcard = count > 0 && matches!(self.segments.get(count - 1), Some(None));
        for (i, part) in parts.iter().enumerate() {
            if i >= count {
                // Pattern shorter than the locality: `region/zone` matches only
                // an empty subzone unless it ended in `*`.
                return trailing_wildcard || part.is_empty();
            }
            if let Some(Some((a, b))) = self.segments.get(i) {
                if self.text.get(usize::from(*a)..usize::from(*b)) != Some(*part) {
                    return false;
                }
            }
        }
        true
    }
}

/// A `failoverPriority` label this filter knows how to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyLabel {
    Network,
    Cluster,
    Region,
    Zone,
    Subzone,
}

impl TopologyLabel {
    pub const ALL: [(&'static str, TopologyLabel); 5] = [
        ("topology.istio.io/network", TopologyLabel::Network),
        ("topology.istio.io/cluster", TopologyLabel::Cluster),
        ("topology.kubernetes.io/region", TopologyLabel::Region),
        ("topology.kubernetes.io/zone", TopologyLabel::Zone),
        ("topology.istio.io/subzone", TopologyLabel::Subzone),
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == text).map(|(_, l)| *l)
    }

    #[inline] // per request: built with the request path, for speed
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, l)| *l == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }
}

/// Default `failoverPriority`: same network, then same region, then same zone.
pub const DEFAULT_FAILOVER_PRIORITY: [TopologyLabel; 3] = [
    TopologyLabel::Network,
    TopologyLabel::Region,
    TopologyLabel::Zone,
];

/// The header names, all under one prefix (default `x-hybridmesh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub prefix: String,
    pub source_cluster: String,
    pub source_network: String,
    pub source_locality: String,
    pub target_cluster: String,
    /// The cluster a pinned decision names: it alone may serve the request.
    pub pinned_cluster: String,
    pub served_by: String,
    pub decision: String,
    pub debug: String,
    pub denied: String,
    /// The hop chain the application forwards, like trace context.
    pub hops: String,
}

pub const DEFAULT_HEADER_PREFIX: &str = "x-hybridmesh";

impl HeaderNames {
    pub fn new(prefix: &str) -> Self {
        let h = |suffix: &str| format!("{prefix}-{suffix}");
        HeaderNames {
            prefix: prefix.to_string(),
            source_cluster: h("source-cluster"),
            source_network: h("source-network"),
            source_locality: h("source-locality"),
            target_cluster: h("target-cluster"),
            pinned_cluster: h("pinned-cluster"),
            served_by: h("served-by"),
            decision: h("decision"),
            debug: h("debug"),
            denied: h("denied"),
            hops: h("hops"),
        }
    }

    /// True for every header the application must not set itself: anything under
    /// the prefix (`<prefix>-...`).
    #[inline] // per request: built with the request path, for speed
    pub fn is_reserved(&self, name: &[u8]) -> bool {
        let p = self.prefix.as_bytes();
        name.len() > p.len() + 1 && name.starts_with(p) && name[p.len()] == b'-'
    }
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames::new(DEFAULT_HEADER_PREFIX)
    }
}

impl Config {
    #[inline] // per request: built with the request path, for speed
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }
}

pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";
pub const DEFAULT_DENY_STATUS: u32 = 403;
pub const DEFAULT_METRICS_FLUSH_MS: u64 = 1000;
pub const DEFAULT_MAX_HOPS: usize = 8;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses a JSON plugin config (what Istio delivers). Empty input is the empty config.
#[inline(never)] // kept in this crate, built for size
pub fn parse_json(bytes: &[u8]) -> Result<Config, ConfigErrors> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Raw::default().validate();
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "the plugin config must be a JSON object ({\"routes\": [...], ...})",
        )]));
    }
    let value = match crate::json::parse(bytes) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e.at;
            let mut path = json_path_at(bytes, line, column);
            if e.message.starts_with("trailing") {
                path = parent_path(&path);
            }
            return Err(ConfigErrors(vec![ConfigError {
                path,
                message: e.message.to_string(),
                position: Some(e.at).filter(|(l, _)| *l > 0),
            }]));
        }
    };
    read::raw(value)
        .map_err(|e| ConfigErrors(vec![at_line(e, Some(bytes))]))?
        .validate()
}

/// A stage-one error's byte offset (see `read::error`) as a line and column
/// of `text`, or no position without it.
fn at_line(mut e: ConfigError, text: Option<&[u8]>) -> ConfigError {
    e.position = match (e.position, text) {
        (Some((0, at)), Some(text)) => Some(crate::json::position(text, at)),
        _ => None,
    };
    e
}

/// Stage one on a JSON tree: the `.wasm` reads the text with
/// [`crate::json::parse`], the tools build the tree from YAML. Stops at the
/// first problem, as a parser does.
#[inline(never)] // kept in this crate, built for size
pub fn from_value(value: crate::json::Value) -> Result<Raw, ConfigErrors> {
    read::raw(value).map_err(|e| ConfigErrors(vec![at_line(e, None)]))
}

fn parent_path(path: &str) -> String {
    match path.rfind(['.', '[']) {
        Some(i) if path.as_bytes()[i] == b'.' => path[..i].to_string(),
        Some(i) => path[..i].to_string(),
        None => String::new(),
    }
}

/// The field path (`routes[1].distribute[0].to`) at 1-based `line`/`column` of a
/// JSON text: where the reader stopped. At a closing `}` it is the object's own
/// path (a missing field); elsewhere the key or index being read.
pub fn json_path_at(text: &[u8], line: usize, column: usize) -> String {
    enum Frame {
        Object {
            key: Option<String>,
            expecting_key: bool,
        },
        Array {
            index: usize,
        },
    }
    // Byte offset of (line, column).
    let mut offset = text.len();
    let (mut l, mut c) = (1usize, 0usize);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            l += 1;
            c = 0;
        } else {
            c += 1;
        }
        if l == line && c == column {
            offset = i;
            break;
        }
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let mut closing = false;
    while i <= offset && i < text.len() {
        match text[i] {
            b'{' => stack.push(Frame::Object {
                key: None,
                expecting_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                if i == offset {
                    closing = true;
                    break;
                }
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { expecting_key, .. }) => *expecting_key = true,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(Frame::Object { key, expecting_key }) = stack.last_mut() {
                    if *expecting_key {
                        *key = Some(
                            String::from_utf8_lossy(text.get(start..i).unwrap_or_default())
                                .into_owned(),
                        );
                        *expecting_key = false;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    let depth = stack.len();
    for (n, frame) in stack.iter().enumerate() {
        // At a closing brace the innermost frame is the object itself.
        if closing && n + 1 == depth {
            break;
        }
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// A parser's error message without its position and path (both are reported
/// separately): `routes[0]: unknown field ... at line 5 column 5` ->
/// `unknown field ...`.
pub fn clean_message(message: &str) -> String {
    strip_path_prefix(&strip_position(message)).to_string()
}

/// For an unknown field, the path of the object holding it (`routes[0].polcy` -> `routes[0]`).
pub fn error_path(path: &str, message: &str) -> String {
    if message.starts_with("unknown field") {
        match path.rfind('.') {
            Some(i) => path[..i].to_string(),
            None => String::new(),
        }
    } else if path == "." || path == "?" {
        String::new()
    } else {
        path.to_string()
    }
}

/// YAML errors start with their own field path (`routes[0]: unknown field ...`);
/// the path is reported separately, so the message drops it.
fn strip_path_prefix(message: &str) -> &str {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.[]-".contains(&b)) =>
        {
            rest
        }
        _ => message,
    }
}

/// serde_json and YAML parsers append " at line X column Y"; the position is kept
/// separately, so the message drops it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Stage two
// ---------------------------------------------------------------------------

struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }
}

impl Raw {
    #[inline(never)] // kept in this crate, built for size
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut c = Checker { errors: Vec::new() };

        let identity = validate_identity(&mut c, &self.identity);

        let domain_suffix = match self.domain_suffix {
            None => DEFAULT_DOMAIN_SUFFIX.to_string(),
            Some(d) => {
                let d = d.trim_matches('.').to_ascii_lowercase();
                if !is_dns_name(&d) {
                    c.err(
                        "domainSuffix",
                        format!("{d:?} is not a DNS name, expected e.g. \"cluster.local\""),
                    );
                }
                d
            }
        };

        let prefix = self
            .header_prefix
            .unwrap_or_else(|| DEFAULT_HEADER_PREFIX.to_string());
        if !is_header_token(&prefix) || prefix.ends_with('-') || prefix.starts_with(':') {
            c.err(
                "headerPrefix",
                format!("{prefix:?} is not a lowercase header name prefix, expected letters, digits and '-' (e.g. \"x-hybridmesh\")"),
            );
        }
        let headers = HeaderNames::new(&prefix);

        for (i, td) in self.trust_domains.iter().enumerate() {
            if !is_dns_name(td) {
                c.err(format!("trustDomains[{i}]"), format!("{td:?} is not a trust domain, expected a DNS name such as \"cluster.local\""));
            }
        }

        let deny_status = self.deny_status.unwrap_or(DEFAULT_DENY_STATUS);
        if !(400..=599).contains(&deny_status) {
            c.err(
                "denyStatus",
                format!("{deny_status} is not an error status, expected 400-599"),
            );
        }

        let metrics_flush_ms = match self.metrics_flush_interval {
            None => DEFAULT_METRICS_FLUSH_MS,
            Some(text) => match parse_duration_ms(&text) {
                Some(ms) if ms <= 60_000 => ms,
                Some(_) => {
                    c.err("metricsFlushInterval", format!("{text:?} is too long, expected at most 60s (0s flushes on every request)"));
                    DEFAULT_METRICS_FLUSH_MS
                }
                None => {
                    c.err("metricsFlushInterval", duration_expected(&text));
                    DEFAULT_METRICS_FLUSH_MS
                }
            },
        };

        let max_hops = match self.max_hops {
            None => DEFAULT_MAX_HOPS,
            Some(n) if (2..=32).contains(&n) => n as usize,
            Some(n) => {
                c.err("maxHops", format!("{n} is out of range, expected 2-32"));
                DEFAULT_MAX_HOPS
            }
        };
        let clusters = validate_clusters(&mut c, self.clusters);
        let default_outlier = validate_outlier(
            &mut c,
            None,
            self.outlier_detection.as_ref(),
            OutlierDetection::default(),
        );

        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, raw) in self.routes.into_iter().enumerate() {
            if let Some(r) = validate_route(&mut c, i, raw, &clusters, default_outlier, &headers) {
                routes.push(r);
            }
        }

        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        let hosts = HostTable::build(routes.iter().map(|r| r.hosts.as_slice()));
        Ok(Config {
            identity,
            direction: self.direction,
            domain_suffix,
            headers,
            trust_source: self.trust_source,
            trust_domains: self.trust_domains,
            unknown_source: self.unknown_source,
            deny_status,
            allow_debug: self.allow_debug,
            hop_log: self.hop_log,
            filter_state: self.filter_state.unwrap_or(true),
            metrics_flush_ms,
            max_hops,
            clusters,
            routes,
            hosts,
        })
    }
}

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn validate_identity(c: &mut Checker, raw: &RawIdentity) -> IdentityOverride {
    let mut out = IdentityOverride::default();
    if let Some(cluster) = &raw.cluster {
        if is_cluster_name(cluster) {
            out.cluster = Some(cluster.clone());
        } else {
            c.err("identity.cluster", cluster_name_expected(cluster));
        }
    }
    if let Some(network) = &raw.network {
        if network.is_empty()
            || network
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            c.err(
                "identity.network",
                format!(
                    "{network:?} is not a network name, expected a non-empty name without spaces"
                ),
            );
        } else {
            out.network = Some(network.clone());
        }
    }
    if let Some(locality) = &raw.locality {
        match Locality::parse(locality) {
            Some(l) if !l.is_empty() => out.locality = Some(l),
            _ => c.err("identity.locality", locality_expected(locality)),
        }
    }
    if let Some(ns) = &raw.namespace {
        if is_dns_label(ns) {
            out.namespace = Some(ns.clone());
        } else {
            c.err(
                "identity.namespace",
                format!("{ns:?} is not a namespace name, expected a DNS label"),
            );
        }
    }
    out
}

/// Health and decisions keep one bit per cluster.
pub const MAX_CLUSTERS: usize = 64;

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn validate_clusters(c: &mut Checker, raw: Vec<RawCluster>) -> Vec<ClusterInfo> {
    if raw.len() > MAX_CLUSTERS {
        c.err(
            "clusters",
            format!(
                "{} clusters, at most {MAX_CLUSTERS} are supported",
                raw.len()
            ),
        );
    }
    let mut out: Vec<ClusterInfo> = Vec::with_capacity(raw.len());
    for (i, rc) in raw.into_iter().enumerate() {
        if !is_cluster_name(&rc.name) {
            c.err(
                format!("clusters[{i}].name"),
                cluster_name_expected(&rc.name),
            );
            continue;
        }
        if out.iter().any(|o| o.name == rc.name) {
            c.err(
                format!("clusters[{i}].name"),
                format!("duplicate cluster {:?}", rc.name),
            );
            continue;
        }
        let locality = match Locality::parse(&rc.locality) {
            Some(l) => l,
            None => {
                c.err(
                    format!("clusters[{i}].locality"),
                    locality_expected(&rc.locality),
                );
                Locality::default()
            }
        };
        if rc
            .network
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            c.err(
                format!("clusters[{i}].network"),
                format!(
                    "{:?} is not a network name, expected a name without spaces",
                    rc.network
                ),
            );
        }
        out.push(ClusterInfo {
            name: rc.name,
            network: rc.network,
            locality,
        });
    }
    out
}

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn validate_outlier(
    c: &mut Checker,
    route: Option<usize>,
    raw: Option<&RawOutlier>,
    base: OutlierDetection,
) -> OutlierDetection {
    let Some(raw) = raw else { return base };
    // Written only for a message.
    let path = || match route {
        None => "outlierDetection".to_string(),
        Some(i) => format!("routes[{i}].outlierDetection"),
    };
    let mut out = base;
    if let Some(n) = raw.consecutive_5xx_errors {
        if n > 1000 {
            c.err(
                format!("{}.consecutive5xxErrors", path()),
                format!("{n} is too large, expected 0 (off) to 1000"),
            );
        } else {
            out.consecutive_5xx = n;
        }
    }
    let mut duration = |field: &str, text: &Option<String>, target: &mut u64| {
        if let Some(t) = text {
            match parse_duration_ms(t) {
                Some(ms) if ms >= 1 => *target = ms,
                Some(_) => c.err(
                    format!("{}.{field}", path()),
                    format!("{t:?} is zero, expected at least 1ms"),
                ),
                None => c.err(format!("{}.{field}", path()), duration_expected(t)),
            }
        }
    };
    duration(
        "baseEjectionTime",
        &raw.base_ejection_time,
        &mut out.base_ejection_ms,
    );
    duration(
        "maxEjectionTime",
        &raw.max_ejection_time,
        &mut out.max_ejection_ms,
    );
    if out.max_ejection_ms < out.base_ejection_ms {
        if raw.max_ejection_time.is_some() {
            c.err(
                format!("{}.maxEjectionTime", path()),
                format!(
                    "{}ms is shorter than baseEjectionTime {}ms",
                    out.max_ejection_ms, out.base_ejection_ms
                ),
            );
        } else {
            out.max_ejection_ms = out.base_ejection_ms;
        }
    }
    out
}

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn validate_route(
    c: &mut Checker,
    i: usize,
    raw: RawRoute,
    clusters: &[ClusterInfo],
    default_outlier: OutlierDetection,
    headers: &HeaderNames,
) -> Option<Route> {
    let at = |field: &str| format!("routes[{i}].{field}");
    let errors_before = c.errors.len();
    let kind = raw.policy;

    if raw.hosts.is_empty() {
        c.err(
            at("hosts"),
            "empty, expected at least one host (exact, \"*.ns.svc.cluster.local\" or \"*\")",
        );
    }
    let mut hosts = Vec::with_capacity(raw.hosts.len());
    for (j, h) in raw.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hosts.push(p),
            Err(why) => c.err(format!("routes[{i}].hosts[{j}]"), why),
        }
    }

    // Fields that belong to one policy only.
    let only = |c: &mut Checker, present: bool, field: &str, policy: PolicyKind| {
        if present && kind != policy {
            c.err(
                at(field),
                format!(
                    "only allowed with policy {}, this route's policy is {}",
                    policy.as_str(),
                    kind.as_str()
                ),
            );
        }
    };
    only(
        c,
        raw.distribute.is_some(),
        "distribute",
        PolicyKind::Weighted,
    );
    only(
        c,
        raw.sticky_header.is_some(),
        "stickyHeader",
        PolicyKind::Weighted,
    );
    only(c, raw.failover.is_some(), "failover", PolicyKind::Failover);
    only(
        c,
        raw.failover_priority.is_some(),
        "failoverPriority",
        PolicyKind::Failover,
    );
    if raw.pinned.is_some() && !matches!(kind, PolicyKind::Weighted | PolicyKind::Failover) {
        c.err(
            at("pinned"),
            format!(
                "only allowed with policy weighted or failover, this route's policy is {}{}",
                kind.as_str(),
                if kind == PolicyKind::ClusterLocal {
                    " (which is always pinned to the local cluster)"
                } else {
                    ""
                }
            ),
        );
    }
    let needs_clusters = matches!(kind, PolicyKind::Weighted | PolicyKind::Failover);
    if !needs_clusters {
        for (present, field) in [
            (raw.outlier_detection.is_some(), "outlierDetection"),
            (raw.clusters.is_some(), "clusters"),
        ] {
            if present {
                c.err(
                    at(field),
                    format!(
                        "only allowed with policy weighted or failover, this route's policy is {}",
                        kind.as_str()
                    ),
                );
            }
        }
    }
    if needs_clusters && clusters.is_empty() {
        c.err(
            at("policy"),
            format!(
                "{} needs the mesh's clusters: list them under clusters (name, network, locality)",
                kind.as_str()
            ),
        );
    }

    let candidates: Vec<usize> = match &raw.clusters {
        None => (0..clusters.len()).collect(),
        Some(names) => {
            if names.is_empty() {
                c.err(
                    at("clusters"),
                    "empty, expected at least one cluster name (or leave it out for all clusters)",
                );
            }
            let mut idx = Vec::with_capacity(names.len());
            for (j, n) in names.iter().enumerate() {
                match clusters.iter().position(|cl| &cl.name == n) {
                    Some(k) if idx.contains(&k) => c.err(
                        format!("routes[{i}].clusters[{j}]"),
                        format!("duplicate cluster {n:?}"),
                    ),
                    Some(k) => idx.push(k),
                    None => c.err(
                        format!("routes[{i}].clusters[{j}]"),
                        unknown_cluster(n, clusters),
                    ),
                }
            }
            idx
        }
    };

    let outlier = if needs_clusters {
        validate_outlier(c, Some(i), raw.outlier_detection.as_ref(), default_outlier)
    } else {
        default_outlier
    };

    let policy = match kind {
        PolicyKind::None => Policy::None,
        PolicyKind::ClusterLocal => Policy::ClusterLocal,
        PolicyKind::Weighted => {
            let mut distribute = Vec::new();
            match raw.distribute {
                None => c.err(
                    at("distribute"),
                    "missing, policy weighted needs at least one {from, to} entry",
                ),
                Some(entries) if entries.is_empty() => c.err(
                    at("distribute"),
                    "empty, policy weighted needs at least one {from, to} entry",
                ),
                Some(entries) => {
                    for (j, d) in entries.into_iter().enumerate() {
                        if let Some(d) = validate_distribute(c, i, j, d, clusters, &candidates) {
                            distribute.push(d);
                        }
                    }
                }
            }
            let sticky_header = match raw.sticky_header {
                None => None,
                Some(h) => {
                    let lower = h.to_ascii_lowercase();
                    if !is_header_token(lower.trim_start_matches(':')) {
                        c.err(at("stickyHeader"), format!("{h:?} is not a header name"));
                    } else if headers.is_reserved(lower.as_bytes()) {
                        c.err(
                            at("stickyHeader"),
                            format!("{h:?} is one of this filter's own headers (prefix {:?}), which it strips from requests", headers.prefix),
                        );
                    }
                    Some(lower)
                }
            };
            Policy::Weighted {
                distribute,
                sticky_header,
            }
        }
        PolicyKind::Failover => {
            let mut failover = Vec::new();
            for (j, f) in raw.failover.unwrap_or_default().into_iter().enumerate() {
                let p = || format!("routes[{i}].failover[{j}]");
                if !is_region(&f.from) {
                    c.err(format!("{}.from", p()), region_expected(&f.from));
                    continue;
                }
                if !is_region(&f.to) {
                    c.err(format!("{}.to", p()), region_expected(&f.to));
                    continue;
                }
                if f.from == f.to {
                    c.err(
                        p(),
                        format!(
                            "from and to are both {:?}, expected two different regions",
                            f.from
                        ),
                    );
                    continue;
                }
                if !candidates
                    .iter()
                    .any(|&k| clusters[k].locality.region == f.to)
                {
                    let known: Vec<String> = candidates
                        .iter()
                        .map(|&k| {
                            format!(
                                "{}={}",
                                clusters[k].name,
                                display_region(&clusters[k].locality)
                            )
                        })
                        .collect();
                    c.err(
                        format!("{}.to", p()),
                        format!(
                            "no cluster of this route is in region {:?} (clusters: {})",
                            f.to,
                            known.join(", ")
                        ),
                    );
                    continue;
                }
                failover.push((f.from, f.to));
            }
            let priority = match raw.failover_priority {
                None => DEFAULT_FAILOVER_PRIORITY.to_vec(),
                Some(labels) => {
                    let mut out = Vec::with_capacity(labels.len());
                    for (j, l) in labels.iter().enumerate() {
                        match TopologyLabel::parse(l) {
                            Some(t) if out.contains(&t) => c.err(
                                format!("routes[{i}].failoverPriority[{j}]"),
                                format!("duplicate label {l:?}"),
                            ),
                            Some(t) => out.push(t),
                            None => {
                                let names: Vec<&str> =
                                    TopologyLabel::ALL.iter().map(|(n, _)| *n).collect();
                                c.err(
                                    format!("routes[{i}].failoverPriority[{j}]"),
                                    format!(
                                        "unknown label {l:?}, expected one of {}",
                                        names.join(", ")
                                    ),
                                )
                            }
                        }
                    }
                    out
                }
            };
            Policy::Failover { failover, priority }
        }
    };

    if c.errors.len() > errors_before {
        return None;
    }
    let pinned = kind == PolicyKind::ClusterLocal || raw.pinned.unwrap_or(false);
    Some(Route {
        hosts,
        policy,
        candidates,
        outlier,
        pinned,
    })
}

fn validate_distribute(
    c: &mut Checker,
    i: usize,
    j: usize,
    raw: RawDistribute,
    clusters: &[ClusterInfo],
    candidates: &[usize],
) -> Option<Distribute> {
    // Written only for a message.
    let p = || format!("routes[{i}].distribute[{j}]");
    let before = c.errors.len();
    let from = LocalityPattern::parse(&raw.from);
    if from.is_none() {
        c.err(
            format!("{}.from", p()),
            format!("{:?} is not a locality pattern, expected region[/zone[/subzone]] with * for any (e.g. \"asia-northeast1/*\")", raw.from),
        );
    }
    if raw.to.is_empty() {
        c.err(
            format!("{}.to", p()),
            "empty, expected cluster names with integer weights summing to 100",
        );
    }
    let mut to: Vec<(usize, u32)> = Vec::with_capacity(raw.to.len());
    let mut sum: u64 = 0;
    for (name, value) in &raw.to {
        let field = || format!("{}.to.{name}", p());
        let Some(k) = clusters.iter().position(|cl| &cl.name == name) else {
            c.err(field(), unknown_cluster(name, clusters));
            continue;
        };
        if !candidates.contains(&k) {
            c.err(
                field(),
                format!("cluster {name:?} is not in this route's clusters"),
            );
            continue;
        }
        match value {
            Weight::Int(w) if *w <= 100 => {
                sum += w;
                to.push((k, *w as u32));
            }
            Weight::Int(w) => c.err(
                field(),
                format!("{w} is not a weight, expected an integer 0-100"),
            ),
            Weight::Invalid(v) => c.err(
                field(),
                format!("{v} is not a weight, expected an integer 0-100"),
            ),
        }
    }
    if c.errors.len() == before && sum != 100 {
        c.err(
            format!("{}.to", p()),
            format!("weights sum to {sum}, expected 100"),
        );
    }
    if c.errors.len() > before {
        return None;
    }
    sort::stable_sort_by(&mut to, |a, b| a.0 < b.0);
    to.retain(|(_, w)| *w > 0);
    Some(Distribute { from: from?, to })
}

// ---------------------------------------------------------------------------
// Small syntax checks and messages
// ---------------------------------------------------------------------------

/// Parses Istio/Go style durations: `1h`, `1m`, `30s`, `1.5s`, `500ms`, `1m30s`
/// (to the millisecond; finer fractions are dropped).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|ch: char| !ch.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(f.len());
                if n == 0 {
                    return None;
                }
                f.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(after.len());
        let factor: u64 = match &after[..unit_len] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return None,
        };
        rest = &after[unit_len..];
        let whole: u64 = int.parse().ok()?;
        // Fraction: up to 9 digits are enough for a millisecond of an hour.
        let digits = &frac[..frac.len().min(9)];
        let frac_value: u64 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let scale = 10u64.pow(digits.len() as u32);
        let part = whole
            .checked_mul(factor)?
            .checked_add(frac_value.checked_mul(factor)? / scale)?;
        total = total.checked_add(part)?;
    }
    (total <= 1_000_000_000_000_000).then_some(total)
}

fn duration_expected(text: &str) -> String {
    format!("{text:?} is not a duration, expected e.g. \"30s\", \"1m\", \"500ms\"")
}

fn locality_expected(text: &str) -> String {
    format!("{text:?} is not a locality, expected region[/zone[/subzone]] (e.g. \"tokyo-onprem\")")
}

fn region_expected(text: &str) -> String {
    format!("{text:?} is not a region, expected a region name without '/' or '*' (e.g. \"asia-northeast1\")")
}

fn cluster_name_expected(text: &str) -> String {
    format!("{text:?} is not a cluster name, expected letters, digits, '-', '_' or '.'")
}

fn unknown_cluster(name: &str, clusters: &[ClusterInfo]) -> String {
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    if names.is_empty() {
        format!("unknown cluster {name:?}: no clusters are listed under clusters")
    } else {
        format!(
            "unknown cluster {name:?}, expected one of {}",
            names.join(", ")
        )
    }
}

fn display_region(l: &Locality) -> String {
    if l.region.is_empty() {
        "(no region)".to_string()
    } else {
        l.region.clone()
    }
}

fn is_region(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains('*') && !s.chars().any(|ch| ch.is_whitespace())
}

/// Cluster names as Istio accepts them (`values.global.multiCluster.clusterName`).
#[inline] // per request: built with the request path, for speed
pub fn is_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_patterns_match_as_documented() {
        let l = |r: &str, z: &str, s: &str| Locality::new(r, z, s);
        let p = |t: &str| LocalityPattern::parse(t).map(|p| p.text.clone());
        for bad in ["", "/", "a//b", "a/b/c/d", "a*", "a b", "*x/y"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        let cases = [
            ("asia-northeast1/*", l("asia-northeast1", "a", "b"), true),
            ("asia-northeast1/*", l("asia-northeast1", "", ""), true),
            ("asia-northeast1/*", l("tokyo-onprem", "a", ""), false),
            ("asia-northeast1", l("asia-northeast1", "", ""), true),
            ("asia-northeast1", l("asia-northeast1", "a", ""), false),
            ("r/z", l("r", "z", ""), true),
            ("r/z", l("r", "z", "s"), false),
            ("r/z", l("r", "y", ""), false),
            ("r/*/s", l("r", "any", "s"), true),
            ("r/*/s", l("r", "any", "t"), false),
            ("*", l("x", "y", "z"), true),
            ("*/z", l("x", "z", ""), true),
            ("r/z/s", l("r", "z", "s"), true),
        ];
        for (pattern, locality, want) in cases {
            let Some(parsed) = LocalityPattern::parse(pattern) else {
                panic!("{pattern:?} did not parse");
            };
            assert_eq!(parsed.matches(&locality), want, "{pattern:?} {locality:?}");
        }
    }
}
