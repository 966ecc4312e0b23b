//! Every unknown field of a document, not only the first.
//!
//! The config format is defined once, by the filter's reader, which denies
//! unknown fields and stops at the first one it meets, as a parser does: a config with five
//! misspelt fields was reported one at a time. To find the others with the
//! same parser, the field is removed from a copy of the document and the copy
//! read again, until the parser stops on something other than an unknown field
//! (or [`MAX`] fields were found).

use super::locate::{self, Seg};

/// The most unknown fields reported for one document.
pub const MAX: usize = 100;

/// One unknown field: the object holding it (`routes[0]`, `` for the top),
/// the parser's message (``unknown field `polcy`, expected one of ...``) and the
/// line of the field in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
}

/// The field an "unknown field `x`, ..." message names.
pub fn field_of(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// The unknown fields of `value` other than `first` (the error the caller has
/// already reported, as (object path, message)). `parse` reads a document and
/// returns its first error as (object path, message), or `None` when it
/// reads. `at` is where `value` sits in `text` (`spec.pluginConfig`, or
/// empty), for the lines. A parsed value may meet the fields in another order
/// than the text (a JSON map is sorted), hence `first` rather than "the first".
pub fn others(
    value: &serde_json::Value,
    at: &str,
    text: &str,
    first: (&str, &str),
    parse: impl Fn(&serde_json::Value) -> Option<(String, String)>,
) -> Vec<Unknown> {
    let mut doc = value.clone();
    let mut found = Vec::new();
    for _ in 0..=MAX {
        let Some((path, message)) = parse(&doc) else {
            break;
        };
        let Some(field) = field_of(&message).map(str::to_owned) else {
            break;
        };
        if (path.as_str(), message.as_str()) != first {
            let full = [at, &path, &field]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(".");
            found.push(Unknown {
                path: path.clone(),
                message,
                line: locate::line_of(text, &full),
            });
        }
        if !remove(&mut doc, &path, &field) {
            break;
        }
    }
    // In the order of the text.
    found.sort_by_key(|u| u.line.unwrap_or(usize::MAX));
    found
}

/// Removes `field` from the object at `path` in `doc`; false if it is not there.
fn remove(doc: &mut serde_json::Value, path: &str, field: &str) -> bool {
    let mut node = doc;
    for seg in locate::segments(path) {
        let next = match seg {
            Seg::Key(k) => node.get_mut(k.as_str()),
            Seg::Index(i) => node.get_mut(i),
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|o| o.remove(field).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_field_is_found_with_its_line() {
        let text =
            "routes:\n  - hosts: [a]\n    polcy: x\n    wieght: 1\nclustrs: {}\nidentty: {}\n";
        let value: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let parse = |v: &serde_json::Value| {
            let tree = crate::deploy::plugin_config::core_value(v);
            hybridmesh_filter_core::config::from_value(tree)
                .err()
                .and_then(|e| e.0.into_iter().next())
                .map(|e| (e.path, e.message))
        };
        let more = others(
            &value,
            "",
            text,
            ("routes[0]", "unknown field `polcy`, expected one of `hosts`, `policy`, `clusters`, `distribute`, `stickyHeader`, `failover`, `failoverPriority`, `outlierDetection`, `pinned`"),
            parse,
        );
        let got: Vec<(&str, Option<&str>, Option<usize>)> = more
            .iter()
            .map(|u| (u.path.as_str(), field_of(&u.message), u.line))
            .collect();
        assert_eq!(
            got,
            [
                ("routes[0]", Some("wieght"), Some(4)),
                ("", Some("clustrs"), Some(5)),
                ("", Some("identty"), Some(6)),
            ]
        );
    }
}
