//! A plugin config written in YAML (a file, a WasmPlugin's
//! `spec.pluginConfig`) read by the filter's own reader
//! ([`hybridmesh_filter_core::config::from_value`]): the YAML is parsed to a
//! tree, the tree handed over, and each error given the line of its field.

use hybridmesh_filter_core::config::{from_value, ConfigError, Raw};
use hybridmesh_filter_core::json::{Kind, Member, Value};

use super::{locate, unknown};

/// A serde tree as the filter reader's tree (without positions: the lines
/// come from the text, [`read`]).
pub fn core_value(v: &serde_json::Value) -> Value<'_> {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::Null,
        J::Bool(b) => Kind::Bool(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Kind::UInt(u),
            (None, Some(i)) => Kind::NegInt(i),
            _ => Kind::Float(n.to_string()),
        },
        J::String(s) => Kind::Str(s.as_str().into()),
        J::Array(items) => Kind::Array(items.iter().map(core_value).collect()),
        J::Object(map) => Kind::Object(
            map.iter()
                .map(|(k, v)| Member {
                    key: k.as_str().into(),
                    key_end: 0,
                    value: core_value(v),
                })
                .collect(),
        ),
    };
    Value::new(kind)
}

/// The first error of reading `value` as a plugin config: (object path for
/// an unknown field, else the field's path; message).
fn first_error(value: &serde_json::Value) -> Option<ConfigError> {
    from_value(core_value(value))
        .err()
        .and_then(|e| e.0.into_iter().next())
}

/// Reads `value` (found at `at` in `text`, e.g. `spec.pluginConfig`, or at
/// the top) as a plugin config. On error: the first one, then every other
/// unknown field ([`unknown::others`]), each with its line in `text` plus
/// `offset`. Paths are relative to `at`.
pub fn read(
    value: &serde_json::Value,
    at: &str,
    text: &str,
    offset: usize,
) -> Result<Raw, Vec<ConfigError>> {
    let mut first = match from_value(core_value(value)) {
        Ok(raw) => return Ok(raw),
        Err(e) => match e.0.into_iter().next() {
            Some(first) => first,
            None => return Err(Vec::new()),
        },
    };
    let field = unknown::field_of(&first.message).unwrap_or_default();
    let full = [at, &first.path, field]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(".");
    first.position = locate::line_of(text, &full).map(|l| (l + offset, 0));
    let more = more_unknown(value, at, text, offset, &first);
    Err(std::iter::once(first).chain(more).collect())
}

/// The unknown fields of `value` other than `first` (already reported), with
/// their lines in `text` plus `offset` ([`unknown::others`]).
pub fn more_unknown(
    value: &serde_json::Value,
    at: &str,
    text: &str,
    offset: usize,
    first: &ConfigError,
) -> Vec<ConfigError> {
    unknown::others(value, at, text, (&first.path, &first.message), |v| {
        first_error(v).map(|e| (e.path, e.message))
    })
    .into_iter()
    .map(|u| ConfigError {
        path: u.path,
        message: u.message,
        position: u.line.map(|l| (l + offset, 0)),
    })
    .collect()
}
