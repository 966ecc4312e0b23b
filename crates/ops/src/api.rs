//! The harness crate's public API, read from rustdoc's JSON: a snapshot that
//! stands in for a semver check, and the rule that every public type, free
//! function and method is shown in a runnable example.
//!
//! The snapshot (`crates/wasm-host/api.txt`) has one line per public item:
//! its kind, its path and its signature as written in the source (whitespace
//! collapsed), fields, variants and trait implementations included. A line
//! that disappears or changes is a breaking change; a new line is an
//! addition. [`compare`] says which, and refuses a breaking change that keeps
//! the version the snapshot was taken at.
//!
//! The JSON is rustdoc's unstable format (`--output-format json`, read on the
//! pinned stable toolchain with `RUSTC_BOOTSTRAP=1`, as cargo-semver-checks
//! does); only the fields read here are relied on: `index`, `root`,
//! `crate_version`, and per item `name`, `span`, `visibility`, `docs`,
//! `attrs` and `inner`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Compiler-internal traits rustdoc lists among a type's implementations.
const UNNAMEABLE_TRAITS: [&str; 3] = ["Freeze", "StructuralPartialEq", "UnsafeUnpin"];

/// Where the harness crate's snapshot lives, from the repository's root.
pub const SNAPSHOT: &str = "crates/wasm-host/api.txt";

/// One public item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `struct`, `enum`, `fn`, `method`, `field`, `variant`, `const`, `type`, `impl`.
    pub kind: &'static str,
    /// Its canonical path, `proxy_wasm_host::envoy::Route::path` (for an
    /// `impl`, the type's path).
    pub path: String,
    /// Its signature as written (an `impl`: the trait).
    pub signature: String,
    /// Its docs' runnable code blocks, joined.
    pub examples: String,
}

impl Item {
    /// The snapshot's line for it.
    pub fn line(&self) -> String {
        format!("{} {}: {}", self.kind, self.path, self.signature)
    }
}

/// The public items of the crate whose rustdoc JSON is `json`, reading
/// signatures from the sources under `root` (the spans are relative to it).
pub fn public_items(json: &Value, root: &Path) -> anyhow::Result<Vec<Item>> {
    let mut reader = Reader {
        index: json.get("index").context("no `index`: not rustdoc JSON")?,
        root,
        seen: BTreeSet::new(),
        items: Vec::new(),
    };
    let crate_root = json.get("root").context("no `root`")?;
    let id = id_key(crate_root);
    let module = reader.item(&id)?;
    let name = str_of(module, "name")?.to_owned();
    reader.module(module, &name)?;
    Ok(reader.items)
}

/// The version rustdoc recorded for the crate.
pub fn crate_version(json: &Value) -> Option<&str> {
    json.get("crate_version").and_then(Value::as_str)
}

/// The snapshot's text for `items` of the crate at `version`.
pub fn snapshot(version: &str, items: &[Item]) -> String {
    let lines: BTreeSet<String> = items.iter().map(Item::line).collect();
    let mut out = format!(
        "# proxy-wasm-host {version}: its public API, one item a line (kind path: signature).\n\
         # Checked by scripts/test: cargo run -p hybridmesh-ops --bin hybridmesh-api\n\
         # A line removed or changed is a breaking change; --bless rewrites this file.\n"
    );
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The version a snapshot was taken at (its first line).
pub fn snapshot_version(snapshot: &str) -> Option<&str> {
    snapshot
        .lines()
        .next()?
        .strip_prefix("# proxy-wasm-host ")?
        .split(':')
        .next()
}

/// How the API moved from one snapshot to another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Lines only in the old snapshot: removed or changed items.
    pub removed: Vec<String>,
    /// Lines only in the new one.
    pub added: Vec<String>,
}

impl Change {
    /// Whether an item was removed or changed.
    pub fn is_breaking(&self) -> bool {
        !self.removed.is_empty()
    }

    /// Whether nothing moved.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// The lines that differ between two snapshots (comments aside).
pub fn compare(old: &str, new: &str) -> Change {
    let lines = |s: &str| -> BTreeSet<String> {
        s.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (lines(old), lines(new));
    Change {
        removed: old.difference(&new).cloned().collect(),
        added: new.difference(&old).cloned().collect(),
    }
}

/// Whether a snapshot may be rewritten from `old` (taken at `old_version`) to
/// a crate now at `version`: a breaking change needs a new version.
pub fn may_bless(change: &Change, old_version: Option<&str>, version: &str) -> anyhow::Result<()> {
    if change.is_breaking() && old_version == Some(version) {
        bail!(
            "{} item(s) removed or changed since {version}: a breaking change needs a new \
             version (crates/wasm-host/Cargo.toml, 0.x -> 0.(x+1)) and a line in \
             crates/wasm-host/CHANGELOG.md; then --bless",
            change.removed.len()
        );
    }
    Ok(())
}

/// The items the examples rule misses: a type or free function without a
/// runnable example of its own, a method called in no runnable example of
/// its own docs or its type's.
pub fn without_examples(items: &[Item]) -> Vec<String> {
    let mut missing = Vec::new();
    for item in items {
        match item.kind {
            "struct" | "enum" | "fn" if item.examples.is_empty() => {
                missing.push(format!("{} {}: no runnable example", item.kind, item.path));
            }
            "method" => {
                let (owner, name) = item.path.rsplit_once("::").unwrap_or(("", &item.path));
                let owner_examples = items
                    .iter()
                    .filter(|i| i.path == owner && matches!(i.kind, "struct" | "enum"))
                    .map(|i| i.examples.as_str());
                let shown = std::iter::once(item.examples.as_str())
                    .chain(owner_examples)
                    .any(|code| calls(code, name));
                if !shown {
                    missing.push(format!(
                        "method {}: not called in an example of its own or of {owner}",
                        item.path
                    ));
                }
            }
            _ => {}
        }
    }
    missing
}

/// Whether `code` calls `name`: `name(` or `name::<` not preceded by an
/// identifier's character.
fn calls(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && (after.starts_with('(') || after.starts_with("::<"))
    })
}

/// The runnable code blocks of a doc comment, joined: fenced blocks whose
/// info string is empty or `rust` (with no `ignore`, `no_run`, `text`,
/// `compile_fail` or `should_panic`).
pub fn runnable_examples(docs: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<(String, bool)> = None;
    for line in docs.lines() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        match &fence {
            None if marker.len() >= 3 => {
                let info = trimmed[marker.len()..].trim();
                let runnable = info
                    .split(',')
                    .map(str::trim)
                    .all(|word| matches!(word, "" | "rust" | "edition2021" | "edition2024"));
                fence = Some((marker, runnable));
            }
            Some((open, runnable)) => {
                if marker.len() >= open.len() && trimmed[marker.len()..].trim().is_empty() {
                    fence = None;
                } else if *runnable {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {}
        }
    }
    out
}

struct Reader<'a> {
    index: &'a Value,
    root: &'a Path,
    seen: BTreeSet<String>,
    items: Vec<Item>,
}

impl<'a> Reader<'a> {
    fn item(&self, id: &str) -> anyhow::Result<&'a Value> {
        self.index
            .get(id)
            .with_context(|| format!("item {id} is not in the index"))
    }

    /// Walks a public module: its public items and what it re-exports.
    fn module(&mut self, module: &'a Value, path: &str) -> anyhow::Result<()> {
        let children = module
            .pointer("/inner/module/items")
            .and_then(Value::as_array)
            .context("a module without items")?;
        for child in children {
            let child = self.item(&id_key(child))?;
            if child.get("visibility").and_then(Value::as_str) != Some("public") {
                continue;
            }
            self.public(child, path)?;
        }
        Ok(())
    }

    fn public(&mut self, item: &'a Value, parent: &str) -> anyhow::Result<()> {
        let (kind, inner) = kind_of(item)?;
        if kind == "use" {
            // A re-export names an item already reached through its module.
            let Some(target) = inner.get("id").filter(|v| !v.is_null()) else {
                return Ok(());
            };
            let target = self.item(&id_key(target))?;
            if kind_of(target)?.0 == "module" && inner.get("is_glob") == Some(&Value::Bool(true)) {
                return self.module(target, parent);
            }
            return Ok(());
        }
        let id = id_key(item.get("id").context("an item without an id")?);
        if !self.seen.insert(id) {
            return Ok(());
        }
        let path = format!("{parent}::{}", str_of(item, "name")?);
        match kind {
            "module" => {
                self.module(item, &path)?;
            }
            "struct" | "enum" => {
                let kind = if kind == "struct" { "struct" } else { "enum" };
                self.push(
                    kind,
                    &path,
                    item,
                    signature_until(&self.source(item)?, "{;"),
                );
                self.members(kind, inner, &path)?;
            }
            "function" => self.push("fn", &path, item, signature_until(&self.source(item)?, "{")),
            "constant" => self.push(
                "const",
                &path,
                item,
                signature_until(&self.source(item)?, "="),
            ),
            "type_alias" => self.push(
                "type",
                &path,
                item,
                signature_until(&self.source(item)?, ""),
            ),
            other => bail!("{path}: a public {other}, which this check does not know"),
        }
        Ok(())
    }

    /// A struct's fields, an enum's variants, their inherent methods and
    /// trait implementations.
    fn members(&mut self, kind: &str, inner: &'a Value, path: &str) -> anyhow::Result<()> {
        let fields = inner
            .pointer("/kind/plain/fields")
            .or_else(|| inner.get("variants"))
            .and_then(Value::as_array);
        for member in fields.into_iter().flatten() {
            let member = self.item(&id_key(member))?;
            let variant = kind == "enum";
            if !variant && member.get("visibility").and_then(Value::as_str) != Some("public") {
                continue;
            }
            let name = str_of(member, "name")?;
            let source = self.source(member)?;
            let signature = if variant {
                signature_until(&source, "")
            } else {
                collapse(&source)
            };
            let kind = if variant { "variant" } else { "field" };
            self.push(kind, &format!("{path}::{name}"), member, signature);
        }
        let impls = inner.get("impls").and_then(Value::as_array);
        for id in impls.into_iter().flatten() {
            let imp = self.item(&id_key(id))?;
            let imp = imp
                .pointer("/inner/impl")
                .context("an impl without `inner.impl`")?;
            if !imp.get("blanket_impl").is_none_or(Value::is_null) {
                continue;
            }
            match imp.get("trait").filter(|t| !t.is_null()) {
                Some(tr) => {
                    let signature = type_name(tr);
                    // Traits no stable code can name or bound on.
                    if UNNAMEABLE_TRAITS.contains(&signature.as_str()) {
                        continue;
                    }
                    self.items.push(Item {
                        kind: "impl",
                        path: path.to_owned(),
                        signature,
                        examples: String::new(),
                    });
                }
                None => {
                    let methods = imp.get("items").and_then(Value::as_array);
                    for m in methods.into_iter().flatten() {
                        let m = self.item(&id_key(m))?;
                        if m.get("visibility").and_then(Value::as_str) != Some("public") {
                            continue;
                        }
                        let name = str_of(m, "name")?;
                        let signature = signature_until(&self.source(m)?, "{");
                        self.push("method", &format!("{path}::{name}"), m, signature);
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, kind: &'static str, path: &str, item: &Value, signature: String) {
        let non_exhaustive = item
            .get("attrs")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|a| a.as_str() == Some("non_exhaustive")));
        let stripped = item.pointer("/inner/struct/kind/plain/has_stripped_fields")
            == Some(&Value::Bool(true));
        let mut signature = signature;
        if non_exhaustive {
            signature.push_str(" #[non_exhaustive]");
        }
        if stripped {
            signature.push_str(" (private fields)");
        }
        let docs = item.get("docs").and_then(Value::as_str).unwrap_or("");
        self.items.push(Item {
            kind,
            path: path.to_owned(),
            signature,
            examples: runnable_examples(docs),
        });
    }

    /// The source text of an item's span.
    fn source(&self, item: &Value) -> anyhow::Result<String> {
        let span = item.get("span").context("an item without a span")?;
        let file = span
            .get("filename")
            .and_then(Value::as_str)
            .context("a span without a file")?;
        let at = |key: &str, i: usize| -> Option<usize> {
            span.get(key)?
                .get(i)?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
        };
        let (Some(l0), Some(c0), Some(l1), Some(c1)) =
            (at("begin", 0), at("begin", 1), at("end", 0), at("end", 1))
        else {
            bail!("{file}: a span without lines");
        };
        let text =
            std::fs::read_to_string(self.root.join(file)).with_context(|| file.to_owned())?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for (n, line) in lines.iter().enumerate().take(l1).skip(l0.saturating_sub(1)) {
            let from = if n + 1 == l0 { c0.saturating_sub(1) } else { 0 };
            let to = if n + 1 == l1 {
                c1.min(line.len())
            } else {
                line.len()
            };
            out.push_str(line.get(from.min(to)..to).unwrap_or(""));
            out.push('\n');
        }
        Ok(out)
    }
}

/// `source` up to the first of `stops` (all of it without one), attributes
/// dropped and whitespace collapsed.
fn signature_until(source: &str, stops: &str) -> String {
    let text: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("#[") && !l.trim_start().starts_with("///"))
        .collect::<Vec<_>>()
        .join("\n");
    let end = text.find(|c| stops.contains(c)).unwrap_or(text.len());
    collapse(&text[..end])
}

/// Whitespace collapsed to single spaces, none inside brackets' edges, no
/// trailing comma before a closing bracket.
fn collapse(text: &str) -> String {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    words
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(",)", ")")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(",>", ">")
        .trim_end_matches([',', ' '])
        .to_owned()
}

/// A trait's name with its type arguments, as rustdoc resolved them.
fn type_name(ty: &Value) -> String {
    let mut out = ty
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let args = ty
        .pointer("/args/angle_bracketed/args")
        .and_then(Value::as_array);
    let args: Vec<String> = args
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("type"))
        .map(|t| {
            if let Some(p) = t.get("resolved_path") {
                type_name(p)
            } else if let Some(p) = t.get("primitive").and_then(Value::as_str) {
                p.to_owned()
            } else {
                t.to_string()
            }
        })
        .collect();
    if !args.is_empty() {
        out = format!("{out}<{}>", args.join(", "));
    }
    out
}

fn kind_of(item: &Value) -> anyhow::Result<(&str, &Value)> {
    item.get("inner")
        .and_then(Value::as_object)
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.as_str(), v))
        .context("an item without `inner`")
}

fn str_of<'v>(item: &'v Value, key: &str) -> anyhow::Result<&'v str> {
    item.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("an item without `{key}`"))
}

/// An id as the index's key (ids are numbers; keys are their text).
fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runnable_blocks_are_the_plain_and_rust_ones() {
        let docs = "Text.\n```\nlet a = f(1);\n```\n```text\nnot(code)\n```\n\
                    ```rust,no_run\nskip(1);\n```\n```rust\ng(2);\n```\n";
        assert_eq!(runnable_examples(docs), "let a = f(1);\ng(2);\n");
    }

    #[test]
    fn a_call_is_a_name_followed_by_its_arguments() {
        assert!(calls("s.respond(x)", "respond"));
        assert!(calls("Plugin::builder(&m)", "builder"));
        assert!(calls("v.get::<u8>()", "get"));
        assert!(!calls("s.respond_http_call(1)", "respond"));
        assert!(!calls("s.http_respond(1)", "respond"));
        assert!(!calls("// respond to it", "respond"));
    }

    #[test]
    fn signatures_lose_layout_and_attributes() {
        let source = "#[must_use]\npub fn respond_http_call(\n        &mut self,\n        token: u32,\n    ) -> Result<()> {\n        body\n    }";
        assert_eq!(
            signature_until(source, "{"),
            "pub fn respond_http_call(&mut self, token: u32) -> Result<()>"
        );
    }

    #[test]
    fn a_removed_or_changed_line_is_breaking_and_needs_a_new_version() {
        let old = "# proxy-wasm-host 0.1.0: x\nfn a: pub fn a()\nfn b: pub fn b()\n";
        let added =
            "# proxy-wasm-host 0.1.0: x\nfn a: pub fn a()\nfn b: pub fn b()\nfn c: pub fn c()\n";
        let changed = "# proxy-wasm-host 0.1.0: x\nfn a: pub fn a(x: u8)\nfn b: pub fn b()\n";
        assert_eq!(snapshot_version(old), Some("0.1.0"));
        assert!(compare(old, old).is_empty());
        let c = compare(old, added);
        assert!(!c.is_breaking());
        assert_eq!(c.added, ["fn c: pub fn c()"]);
        assert!(may_bless(&c, Some("0.1.0"), "0.1.0").is_ok());
        let c = compare(old, changed);
        assert!(c.is_breaking());
        assert_eq!(c.removed, ["fn a: pub fn a()"]);
        assert!(may_bless(&c, Some("0.1.0"), "0.1.0").is_err());
        assert!(may_bless(&c, Some("0.1.0"), "0.2.0").is_ok());
    }

    #[test]
    fn the_examples_rule_looks_at_the_method_and_its_type() {
        let item = |kind, path: &str, examples: &str| Item {
            kind,
            path: path.into(),
            signature: String::new(),
            examples: examples.into(),
        };
        let items = [
            item("struct", "c::S", "let s = S::new();\ns.shown(1);\n"),
            item("method", "c::S::new", ""),
            item("method", "c::S::shown", ""),
            item("method", "c::S::own", "s.own();"),
            item("method", "c::S::hidden", ""),
            item("enum", "c::E", ""),
            item("field", "c::S::f", ""),
        ];
        assert_eq!(
            without_examples(&items),
            [
                "method c::S::hidden: not called in an example of its own or of c::S",
                "enum c::E: no runnable example",
            ]
        );
    }
}
