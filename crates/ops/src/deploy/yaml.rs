//! A small YAML writer with a stable layout: keys in the order they were
//! built, short maps and lists of scalars in flow style
//! (`{name: gke, network: default}`), everything else in block style. The
//! checked-in manifests are compared with `render` output byte for byte, so
//! the layout depends on nothing but the input.

use std::fmt::Write as _;

/// A YAML value whose maps keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// A flow collection longer than this is written in block style.
const FLOW_WIDTH: usize = 72;

pub fn s(text: impl Into<String>) -> Node {
    Node::Str(text.into())
}

pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

pub fn seq(items: impl IntoIterator<Item = Node>) -> Node {
    Node::Seq(items.into_iter().collect())
}

impl Node {
    /// The same value as JSON (what Istio hands the filter as `pluginConfig`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Node::Str(t) => serde_json::Value::String(t.clone()),
            Node::Int(i) => serde_json::Value::from(*i),
            Node::Bool(b) => serde_json::Value::Bool(*b),
            Node::Seq(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Inserts or replaces `key` in a map (no-op on other nodes).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Node::Str(_) | Node::Int(_) | Node::Bool(_))
    }

    /// `{a: 1, b: x}` / `[a, b]` when every member is a scalar and it is short.
    fn flow(&self) -> Option<String> {
        let text = match self {
            Node::Seq(items) if items.iter().all(Node::is_scalar) => {
                let parts: Vec<String> = items.iter().map(|n| scalar(n, true)).collect();
                format!("[{}]", parts.join(", "))
            }
            Node::Map(entries)
                if !entries.is_empty() && entries.iter().all(|(_, v)| v.is_scalar()) =>
            {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", key(k, true), scalar(v, true)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Node::Map(entries) if entries.is_empty() => "{}".to_string(),
            _ => return None,
        };
        (text.len() <= FLOW_WIDTH).then_some(text)
    }
}

/// The document as YAML text (no `---`), ending in a newline.
pub fn to_string(node: &Node) -> String {
    let mut out = String::new();
    match node {
        Node::Map(_) | Node::Seq(_) => block(&mut out, node, 0),
        other => {
            out.push_str(&scalar(other, false));
            out.push('\n');
        }
    }
    out
}

/// Several documents, each introduced by `---`.
pub fn documents(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str("---\n");
        out.push_str(&to_string(n));
    }
    out
}

fn block(out: &mut String, node: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                let _ = write!(out, "{pad}{}:", key(k, false));
                value_after_key(out, v, indent);
            }
        }
        Node::Seq(items) => {
            for item in items {
                let _ = write!(out, "{pad}-");
                match item {
                    Node::Map(entries) if !entries.is_empty() && item.flow().is_none() => {
                        // `- k: v` with the rest of the map aligned under `k`.
                        let mut inner = String::new();
                        block(&mut inner, item, indent + 2);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => value_after_key(out, item, indent),
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other, false));
        }
    }
}

/// What follows `key:` or `-`: a scalar or flow collection on the same line,
/// else a block below, indented by two.
fn value_after_key(out: &mut String, v: &Node, indent: usize) {
    if v.is_scalar() {
        let _ = writeln!(out, " {}", scalar(v, false));
    } else if let Some(f) = v.flow() {
        let _ = writeln!(out, " {f}");
    } else {
        out.push('\n');
        block(out, v, indent + 2);
    }
}

fn key(k: &str, in_flow: bool) -> String {
    if plain_ok(k, in_flow) {
        k.to_string()
    } else {
        quoted(k)
    }
}

fn scalar(n: &Node, in_flow: bool) -> String {
    match n {
        Node::Str(t) if plain_ok(t, in_flow) => t.clone(),
        Node::Str(t) => quoted(t),
        Node::Int(i) => i.to_string(),
        Node::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// Double-quoted: JSON's string escapes are valid YAML.
fn quoted(t: &str) -> String {
    serde_json::Value::String(t.to_string()).to_string()
}

/// A string that reads back as the same string when written plain.
fn plain_ok(t: &str, in_flow: bool) -> bool {
    if t.is_empty() || t.trim() != t {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n", ".inf", ".nan",
    ];
    if RESERVED.contains(&lower.as_str()) {
        return false;
    }
    // Anything a YAML parser could take for a number.
    let numeric = t
        .trim_start_matches(['+', '-'])
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '_' || c == 'e' || c == 'E')
        && t.chars().any(|c| c.is_ascii_digit());
    if numeric || lower.starts_with("0x") || lower.starts_with("0o") {
        return false;
    }
    let first = t.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    // `*` only matters first (an alias), but a quoted pattern reads better.
    if t.contains('*') {
        return false;
    }
    if t.contains(": ")
        || t.contains(" #")
        || t.ends_with(':')
        || t.contains('\n')
        || t.contains('\t')
    {
        return false;
    }
    if in_flow && t.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layout_is_stable_and_reads_back() {
        let doc = map([
            ("apiVersion", s("networking.istio.io/v1")),
            ("kind", s("DestinationRule")),
            (
                "metadata",
                map([("name", s("echo-svc")), ("namespace", s("default"))]),
            ),
            (
                "spec",
                map([
                    ("host", s("echo-svc.default.svc.cluster.local")),
                    (
                        "subsets",
                        seq([map([
                            ("name", s("gke")),
                            ("labels", map([("topology.istio.io/cluster", s("gke"))])),
                        ])]),
                    ),
                    ("hosts", seq([s("*"), s("true"), s("1m"), s("10")])),
                    ("replicas", Node::Int(3)),
                ]),
            ),
        ]);
        let text = to_string(&doc);
        assert_eq!(
            text,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo-svc, namespace: default}\nspec:\n  host: echo-svc.default.svc.cluster.local\n  subsets:\n    - name: gke\n      labels: {topology.istio.io/cluster: gke}\n  hosts: [\"*\", \"true\", 1m, \"10\"]\n  replicas: 3\n"
        );
        let back: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, doc.to_json());
    }
}
