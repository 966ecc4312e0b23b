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
        self.clone().into_json()
    }

    /// [`Node::to_json`], taking the strings rather than copying them.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Node::Str(t) => serde_json::Value::String(t),
            Node::Int(i) => serde_json::Value::from(i),
            Node::Bool(b) => serde_json::Value::Bool(b),
            Node::Seq(items) => {
                serde_json::Value::Array(items.into_iter().map(Node::into_json).collect())
            }
            Node::Map(entries) => {
                // Inserted one by one: collecting would first copy the
                // entries into a vector to sort them (a map here is small).
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k, v.into_json());
                }
                serde_json::Value::Object(map)
            }
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
}

/// The document as YAML text (no `---`), ending in a newline.
pub fn to_string(node: &Node) -> String {
    let mut out = String::new();
    write_document(&mut out, node);
    out
}

/// Several documents, each introduced by `---`.
pub fn documents(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str("---\n");
        write_document(&mut out, n);
    }
    out
}

/// [`to_string`], appended to `out`. The writer appends to one string and
/// makes no other: a large render (113 MB of rules) is written in one pass.
pub fn write_document(out: &mut String, node: &Node) {
    match node {
        Node::Map(_) | Node::Seq(_) => block(out, node, 0),
        other => {
            scalar(out, other, false);
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn block(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Map(entries) => map_block(out, entries, indent, true),
        Node::Seq(items) => {
            for item in items {
                pad(out, indent);
                out.push('-');
                match item {
                    Node::Map(entries) if !entries.is_empty() => {
                        if !flow_after(out, item) {
                            // `- k: v` with the rest of the map aligned under `k`.
                            out.push(' ');
                            map_block(out, entries, indent + 2, false);
                        }
                    }
                    _ => value_after_key(out, item, indent),
                }
            }
        }
        other => {
            pad(out, indent);
            scalar(out, other, false);
            out.push('\n');
        }
    }
}

/// A map's entries, one per line; `pad_first: false` when the first line
/// follows a `- ` already written.
fn map_block(out: &mut String, entries: &[(String, Node)], indent: usize, pad_first: bool) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 || pad_first {
            pad(out, indent);
        }
        key(out, k, false);
        out.push(':');
        value_after_key(out, v, indent);
    }
}

/// What follows `key:` or `-`: a scalar or flow collection on the same line,
/// else a block below, indented by two.
fn value_after_key(out: &mut String, v: &Node, indent: usize) {
    if v.is_scalar() {
        out.push(' ');
        scalar(out, v, false);
        out.push('\n');
    } else if !flow_after(out, v) {
        out.push('\n');
        block(out, v, indent + 2);
    }
}

/// ` {a: 1, b: x}` / ` [a, b]` and the line's end, when every member is a
/// scalar and it is short; otherwise nothing is written.
fn flow_after(out: &mut String, node: &Node) -> bool {
    let fits = match node {
        Node::Seq(items) => items.iter().all(Node::is_scalar),
        Node::Map(entries) => entries.iter().all(|(_, v)| v.is_scalar()),
        _ => false,
    };
    if !fits {
        return false;
    }
    let mark = out.len();
    out.push(' ');
    match node {
        Node::Seq(items) => {
            out.push('[');
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                scalar(out, n, true);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                key(out, k, true);
                out.push_str(": ");
                scalar(out, v, true);
            }
            out.push('}');
        }
        _ => {}
    }
    // The flow text (brackets included) is at most FLOW_WIDTH long.
    if out.len() - mark - 1 > FLOW_WIDTH {
        out.truncate(mark);
        return false;
    }
    out.push('\n');
    true
}

fn key(out: &mut String, k: &str, in_flow: bool) {
    if plain_ok(k, in_flow) {
        out.push_str(k);
    } else {
        quoted(out, k);
    }
}

fn scalar(out: &mut String, n: &Node, in_flow: bool) {
    match n {
        Node::Str(t) if plain_ok(t, in_flow) => out.push_str(t),
        Node::Str(t) => quoted(out, t),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => {}
    }
}

/// Double-quoted: JSON's string escapes are valid YAML.
fn quoted(out: &mut String, t: &str) {
    out.push_str(&serde_json::Value::String(t.to_string()).to_string());
}

/// The bytes of a word: ASCII letters and digits, `-`, `.`, `_`, `/` and `=`.
const WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/' | b'=');
        c += 1;
    }
    t
};

/// A string that reads back as the same string when written plain. One pass
/// over the bytes (every character it looks for is ASCII, and no byte of a
/// multi-byte UTF-8 character is ASCII).
fn plain_ok(t: &str, in_flow: bool) -> bool {
    let b = t.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n", ".inf", ".nan",
    ];
    let reserved = || b.len() <= 5 && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(t));
    // Most names and hosts are words: a letter (not `e`, which could start
    // a number), then letters, digits and `-._/=`. Plain unless reserved.
    if first.is_ascii_alphabetic()
        && !matches!(first, b'e' | b'E')
        && b.iter().all(|&c| WORD[usize::from(c)])
    {
        return !reserved();
    }
    if t.starts_with(char::is_whitespace) || t.ends_with(char::is_whitespace) || reserved() {
        return false;
    }
    // Anything a YAML parser could take for a number.
    let (mut numeric, mut digit) = (true, false);
    for &c in t.trim_start_matches(['+', '-']).as_bytes() {
        if c.is_ascii_digit() {
            digit = true;
        } else if !matches!(c, b'.' | b'_' | b'e' | b'E') {
            numeric = false;
            break;
        }
    }
    let prefix = |p: &[u8]| b.get(..2).is_some_and(|x| x.eq_ignore_ascii_case(p));
    if (numeric && digit) || prefix(b"0x") || prefix(b"0o") {
        return false;
    }
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first) || b.ends_with(b":") {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let bad = match c {
            // `*` only matters first (an alias), but a quoted pattern reads better.
            b'*' | b'\n' | b'\t' => true,
            // In a flow collection libyaml refuses any `:` inside a plain
            // scalar (`[a:?]`).
            b':' => in_flow || b.get(i + 1) == Some(&b' '),
            b'#' => i > 0 && b[i - 1] == b' ',
            b',' | b'[' | b']' | b'{' | b'}' => in_flow,
            _ => false,
        };
        if bad {
            return false;
        }
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

    #[test]
    fn every_string_reads_back_as_itself_plain_or_quoted() {
        // Every string of one to three characters over the characters YAML
        // treats specially (and some it does not), then words YAML 1.1 reads
        // as something else: as a key and as a value, in block and in flow
        // style, the text reads back as the same string.
        let chars = [
            'a', 'e', 'E', 'y', 'n', 'o', 'x', '0', '1', '.', '_', '-', '+', ':', ' ', '#', '*',
            '[', ']', '{', '}', ',', '!', '&', '?', '|', '>', '<', '\'', '"', '%', '@', '`', '=',
            '/', '~', '\t', '\n', '\\', 'é',
        ];
        let mut strings: Vec<String> = Vec::new();
        for a in chars {
            strings.push(a.to_string());
            for b in chars {
                strings.push(format!("{a}{b}"));
                for c in chars {
                    strings.push(format!("{a}{b}{c}"));
                }
            }
        }
        for w in [
            "True",
            "NULL",
            "Yes",
            "oFF",
            ".Inf",
            "-.inf",
            ".NaN",
            "0x1F",
            "0o17",
            "1e3",
            "-1",
            "+.5",
            "1_000",
            "12:30",
            "2026-12-05",
            "topology.istio.io/cluster=c0",
            "prefer-c12",
            "svc1.ns1.svc.cluster.local",
            "e1e1e1",
            "Echo",
            "yes-and-no",
            "a: b",
            "a #b",
        ] {
            strings.push(w.to_string());
        }
        for t in &strings {
            for doc in [
                map([(t.as_str(), s(t.as_str()))]),
                map([("k", seq([s(t.as_str()), s("x")]))]),
                map([("k", map([(t.as_str(), s(t.as_str()))]))]),
            ] {
                let text = to_string(&doc);
                let back: serde_json::Value = serde_yaml_ng::from_str(&text)
                    .unwrap_or_else(|e| panic!("{t:?} written as {text:?}: {e}"));
                assert_eq!(back, doc.to_json(), "{t:?} written as {text:?}");
            }
        }
    }
}
