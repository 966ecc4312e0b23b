//! Stage one: a JSON tree ([`crate::json::Value`]) to the `Raw*` structs.
//!
//! The field names, which are required, which have defaults and every message
//! are defined here, once. The wording is serde's (`unknown field `x`,
//! expected one of ...`, `missing field `x``, `invalid type: string "x",
//! expected u32`), which the config's messages were before this reader
//! replaced serde in the `.wasm`. The first problem in the order of the text
//! stops the reading, as serde did; stage two ([`Raw::validate`]) collects all
//! of its own.

use std::collections::BTreeMap;

use super::{
    format_decimal, ConfigError, DirectionSetting, HopLog, PolicyKind, Raw, RawCluster,
    RawDistribute, RawFailover, RawIdentity, RawOutlier, RawRoute, TrustSource, UnknownSource,
    Weight,
};
use crate::json::{to_f64, Kind, Member, Value};

type R<T> = Result<T, ConfigError>;

/// An error at `at` bytes into the text, carried as `(0, at)` (0 for a tree
/// built without text); [`super::from_value`] and [`super::parse_json`] make
/// it a line and column, or none. Counting lines here, per value, made
/// reading quadratic.
fn error(path: &Path, message: String, at: usize) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message,
        position: Some((0, at)).filter(|(_, at)| *at > 0),
    }
}

/// Where a value is (`routes[3].distribute[1].to`), as a chain of borrowed
/// steps: written out only for a message. Writing every field's path as it
/// was read made a third of stage one's allocations.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Item(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, field) => f.write_str(field),
            Path::Field(parent, field) => write!(f, "{parent}.{field}"),
            Path::Item(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// What a value is, as serde says it (`string "x"`, `integer `5``, `map`).
fn unexpected(v: &Value) -> String {
    match &v.kind {
        Kind::Null => "null".to_string(),
        Kind::Bool(b) => format!("boolean `{b}`"),
        Kind::UInt(n) => format!("integer `{n}`"),
        Kind::NegInt(n) => format!("integer `{n}`"),
        Kind::Float(text) => {
            let mut shown = format_decimal(to_f64(text));
            if !shown.contains('.') && !shown.contains(' ') {
                shown.push_str(".0");
            }
            format!("floating point `{shown}`")
        }
        Kind::Str(s) => format!("string {s:?}"),
        Kind::Array(_) => "sequence".to_string(),
        Kind::Object(_) => "map".to_string(),
    }
}

fn invalid_type(path: &Path, v: &Value, expected: &str) -> ConfigError {
    error(
        path,
        format!("invalid type: {}, expected {expected}", unexpected(v)),
        v.end,
    )
}

/// serde's list of names: `a`, `` `a` or `b` ``, `one of `a`, `b`, `c``.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_string(),
        [a] => format!("`{a}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", list.join(", "))
        }
    }
}

fn string(path: &Path, v: Value) -> R<String> {
    match v.kind {
        Kind::Str(s) => Ok(s.into_owned()),
        _ => Err(invalid_type(path, &v, "a string")),
    }
}

fn boolean(path: &Path, v: Value) -> R<bool> {
    match v.kind {
        Kind::Bool(b) => Ok(b),
        _ => Err(invalid_type(path, &v, "a boolean")),
    }
}

fn u32_of(path: &Path, v: Value) -> R<u32> {
    match v.kind {
        Kind::UInt(n) => u32::try_from(n).map_err(|_| {
            error(
                path,
                format!("invalid value: integer `{n}`, expected u32"),
                v.end,
            )
        }),
        Kind::NegInt(n) => Err(error(
            path,
            format!("invalid value: integer `{n}`, expected u32"),
            v.end,
        )),
        _ => Err(invalid_type(path, &v, "u32")),
    }
}

/// `null` or absent is `None`, as serde reads an `Option`.
fn option<T>(path: &Path, v: Value, read: impl FnOnce(&Path, Value) -> R<T>) -> R<Option<T>> {
    match v.kind {
        Kind::Null => Ok(None),
        _ => read(path, v).map(Some),
    }
}

fn list<T>(path: &Path, v: Value, mut read: impl FnMut(&Path, Value) -> R<T>) -> R<Vec<T>> {
    let Kind::Array(items) = v.kind else {
        return Err(invalid_type(path, &v, "a sequence"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        out.push(read(&Path::Item(path, i), item)?);
    }
    Ok(out)
}

fn variant<T: Copy>(path: &Path, v: Value, name: &str, variants: &[(&str, T)]) -> R<T> {
    let v = &v;
    let Kind::Str(s) = &v.kind else {
        return Err(match v.kind {
            // serde_json reads an enum from a string or an object only.
            Kind::Object(_) => invalid_type(path, v, &format!("enum {name}")),
            _ => error(path, "expected value".to_string(), v.end),
        });
    };
    match variants.iter().find(|(n, _)| n == s) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
            Err(error(
                path,
                format!("unknown variant `{s}`, expected {}", one_of(&names)),
                v.end,
            ))
        }
    }
}

/// An object with these fields: calls `field` for each member in the order
/// written (with the field's index in `names` and its path); an unknown or
/// repeated field stops it. Returns which fields were present: bit `i` for
/// `names[i]` (every struct here has fewer than 32 fields).
fn object(
    path: &Path,
    v: Value,
    expecting: &str,
    names: &[&str],
    mut field: impl FnMut(usize, &Path, Value) -> R<()>,
) -> R<u32> {
    let Kind::Object(members) = v.kind else {
        return Err(invalid_type(path, &v, expecting));
    };
    let mut seen = 0u32;
    for Member {
        key,
        key_end,
        value,
    } in members
    {
        let Some(i) = names.iter().position(|n| *n == key) else {
            return Err(error(
                path,
                format!("unknown field `{key}`, expected {}", one_of(names)),
                key_end,
            ));
        };
        let field_path = Path::Field(path, &key);
        let bit = 1u32 << (i % 32);
        if seen & bit != 0 {
            return Err(error(
                &field_path,
                format!("duplicate field `{key}`"),
                key_end,
            ));
        }
        seen |= bit;
        field(i, &field_path, value)?;
    }
    Ok(seen)
}

/// `end`: where the object ends.
fn require(path: &Path, end: usize, seen: u32, names: &[&str], required: &[usize]) -> R<()> {
    match required.iter().find(|&&i| seen & (1 << (i % 32)) == 0) {
        Some(&i) => Err(error(
            path,
            format!("missing field `{}`", names.get(i).unwrap_or(&"?")),
            end,
        )),
        None => Ok(()),
    }
}

const RAW: &[&str] = &[
    "identity",
    "direction",
    "domainSuffix",
    "headerPrefix",
    "trustSource",
    "trustDomains",
    "unknownSource",
    "denyStatus",
    "allowDebug",
    "hopLog",
    "filterState",
    "metricsFlushInterval",
    "maxHops",
    "clusters",
    "outlierDetection",
    "routes",
];

/// The plugin config's top object.
#[inline(never)] // kept in this crate, built for size
pub fn raw(v: Value) -> R<Raw> {
    let mut r = Raw::default();
    object(&Path::Root, v, "struct Raw", RAW, |i, p, v| {
        match i {
            0 => r.identity = identity(p, v)?,
            1 => {
                r.direction = variant(
                    p,
                    v,
                    "DirectionSetting",
                    &[
                        ("auto", DirectionSetting::Auto),
                        ("outbound", DirectionSetting::Outbound),
                        ("inbound", DirectionSetting::Inbound),
                    ],
                )?
            }
            2 => r.domain_suffix = option(p, v, string)?,
            3 => r.header_prefix = option(p, v, string)?,
            4 => {
                r.trust_source = variant(
                    p,
                    v,
                    "TrustSource",
                    &[("mtls", TrustSource::Mtls), ("any", TrustSource::Any)],
                )?
            }
            5 => r.trust_domains = list(p, v, string)?,
            6 => {
                r.unknown_source = variant(
                    p,
                    v,
                    "UnknownSource",
                    &[
                        ("allow", UnknownSource::Allow),
                        ("deny", UnknownSource::Deny),
                    ],
                )?
            }
            7 => r.deny_status = option(p, v, u32_of)?,
            8 => r.allow_debug = boolean(p, v)?,
            9 => {
                r.hop_log = variant(
                    p,
                    v,
                    "HopLog",
                    &[
                        ("off", HopLog::Off),
                        ("trace", HopLog::Trace),
                        ("debug", HopLog::Debug),
                        ("info", HopLog::Info),
                        ("warn", HopLog::Warn),
                    ],
                )?
            }
            10 => r.filter_state = option(p, v, boolean)?,
            11 => r.metrics_flush_interval = option(p, v, string)?,
            12 => r.max_hops = option(p, v, u32_of)?,
            13 => r.clusters = list(p, v, cluster)?,
            14 => r.outlier_detection = option(p, v, outlier)?,
            _ => r.routes = list(p, v, route)?,
        }
        Ok(())
    })?;
    Ok(r)
}

const IDENTITY: &[&str] = &["cluster", "network", "locality", "namespace"];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn identity(path: &Path, v: Value) -> R<RawIdentity> {
    let mut r = RawIdentity::default();
    object(path, v, "struct RawIdentity", IDENTITY, |i, p, v| {
        let s = option(p, v, string)?;
        match i {
            0 => r.cluster = s,
            1 => r.network = s,
            2 => r.locality = s,
            _ => r.namespace = s,
        }
        Ok(())
    })?;
    Ok(r)
}

const CLUSTER: &[&str] = &["name", "network", "locality"];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn cluster(path: &Path, v: Value) -> R<RawCluster> {
    let mut r = RawCluster {
        name: String::new(),
        network: String::new(),
        locality: String::new(),
    };
    let end = v.end;
    let seen = object(path, v, "struct RawCluster", CLUSTER, |i, p, v| {
        let s = string(p, v)?;
        match i {
            0 => r.name = s,
            1 => r.network = s,
            _ => r.locality = s,
        }
        Ok(())
    })?;
    require(path, end, seen, CLUSTER, &[0])?;
    Ok(r)
}

const OUTLIER: &[&str] = &[
    "consecutive5xxErrors",
    "baseEjectionTime",
    "maxEjectionTime",
];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn outlier(path: &Path, v: Value) -> R<RawOutlier> {
    let mut r = RawOutlier::default();
    object(path, v, "struct RawOutlier", OUTLIER, |i, p, v| {
        match i {
            0 => r.consecutive_5xx_errors = option(p, v, u32_of)?,
            1 => r.base_ejection_time = option(p, v, string)?,
            _ => r.max_ejection_time = option(p, v, string)?,
        }
        Ok(())
    })?;
    Ok(r)
}

const ROUTE: &[&str] = &[
    "hosts",
    "policy",
    "clusters",
    "distribute",
    "stickyHeader",
    "failover",
    "failoverPriority",
    "outlierDetection",
    "pinned",
];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn route(path: &Path, v: Value) -> R<RawRoute> {
    let mut r = RawRoute {
        hosts: Vec::new(),
        policy: PolicyKind::None,
        clusters: None,
        distribute: None,
        sticky_header: None,
        failover: None,
        failover_priority: None,
        outlier_detection: None,
        pinned: None,
    };
    let end = v.end;
    let seen = object(path, v, "struct RawRoute", ROUTE, |i, p, v| {
        match i {
            0 => r.hosts = list(p, v, string)?,
            1 => {
                r.policy = variant(
                    p,
                    v,
                    "PolicyKind",
                    &[
                        ("none", PolicyKind::None),
                        ("clusterLocal", PolicyKind::ClusterLocal),
                        ("weighted", PolicyKind::Weighted),
                        ("failover", PolicyKind::Failover),
                    ],
                )?
            }
            2 => r.clusters = option(p, v, |p, v| list(p, v, string))?,
            3 => r.distribute = option(p, v, |p, v| list(p, v, distribute))?,
            4 => r.sticky_header = option(p, v, string)?,
            5 => r.failover = option(p, v, |p, v| list(p, v, failover))?,
            6 => r.failover_priority = option(p, v, |p, v| list(p, v, string))?,
            7 => r.outlier_detection = option(p, v, outlier)?,
            _ => r.pinned = option(p, v, boolean)?,
        }
        Ok(())
    })?;
    require(path, end, seen, ROUTE, &[0, 1])?;
    Ok(r)
}

const DISTRIBUTE: &[&str] = &["from", "to"];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn distribute(path: &Path, v: Value) -> R<RawDistribute> {
    let mut r = RawDistribute {
        from: String::new(),
        to: BTreeMap::new(),
    };
    let end = v.end;
    let seen = object(path, v, "struct RawDistribute", DISTRIBUTE, |i, p, v| {
        match i {
            0 => r.from = string(p, v)?,
            _ => {
                let Kind::Object(members) = v.kind else {
                    return Err(invalid_type(p, &v, "a map"));
                };
                for m in members {
                    let w = weight(&Path::Field(p, &m.key), &m.value)?;
                    r.to.insert(m.key.into_owned(), w);
                }
            }
        }
        Ok(())
    })?;
    require(path, end, seen, DISTRIBUTE, &[0, 1])?;
    Ok(r)
}

/// Any value: what is not an integer is kept to name it in stage two's message.
fn weight(path: &Path, v: &Value) -> R<Weight> {
    Ok(match &v.kind {
        Kind::UInt(n) => Weight::Int(*n),
        Kind::NegInt(n) => Weight::Invalid(n.to_string()),
        Kind::Float(text) => Weight::Invalid(format_decimal(to_f64(text))),
        Kind::Str(s) => Weight::Invalid(format!("{s:?}")),
        Kind::Bool(b) => Weight::Invalid(b.to_string()),
        Kind::Null => Weight::Invalid("null".to_string()),
        Kind::Array(_) | Kind::Object(_) => return Err(invalid_type(path, v, "an integer weight")),
    })
}

const FAILOVER: &[&str] = &["from", "to"];

#[inline(never)] // not inlined into its one caller: the .wasm is 0.85 KB smaller
fn failover(path: &Path, v: Value) -> R<RawFailover> {
    let mut r = RawFailover {
        from: String::new(),
        to: String::new(),
    };
    let end = v.end;
    let seen = object(path, v, "struct RawFailover", FAILOVER, |i, p, v| {
        let s = string(p, v)?;
        match i {
            0 => r.from = s,
            _ => r.to = s,
        }
        Ok(())
    })?;
    require(path, end, seen, FAILOVER, &[0, 1])?;
    Ok(r)
}
