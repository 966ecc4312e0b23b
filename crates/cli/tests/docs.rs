//! The book (`docs/`) and the README say what the code does:
//! - the command reference is every command's own `--help`;
//! - every `HYBRIDMESH_*` and `LAB_*` environment variable the code reads is
//!   documented, and nothing documented is stale;
//! - the README fits on a page.
//!
//! `scripts/docs` (run by `scripts/test`) builds the book with warnings as
//! errors and checks every link and anchor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{commands, root};

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hybridmesh"))
        .args(args)
        .arg("--help")
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    assert!(out.status.success(), "hybridmesh {args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The page `docs/src/reference/cli.md` must be.
fn cli_page() -> String {
    let top = help(&[]);
    let mut page = String::from(
        "# Every command's help\n\n\
         What `hybridmesh <command> --help` prints, for every command. \
         `crates/cli/tests/docs.rs` makes this page from the binary and fails when it is stale; \
         [Commands](commands.md) says the same in one line each.\n",
    );
    let mut section = |title: &str, text: &str| {
        page.push_str(&format!(
            "\n## {title}\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
    };
    section("hybridmesh", &top);
    for c in commands(&top) {
        section(&format!("hybridmesh {c}"), &help(&[&c]));
    }
    page
}

#[test]
fn the_books_command_reference_is_every_commands_help() {
    let made = cli_page();
    let path = root().join("docs/src/reference/cli.md");
    let shown = std::fs::read_to_string(&path).unwrap_or_default();
    if shown != made {
        let out = root().join("target/docs/cli.md");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&out, &made).unwrap();
        panic!(
            "docs/src/reference/cli.md is not what the commands' --help says: \
             cp {} docs/src/reference/cli.md",
            out.display()
        );
    }
}

/// Every `HYBRIDMESH_*` and `LAB_*` name in the files under `dir` with one
/// of `exts` (or, with no extension allowed, every file).
fn variables_in(dir: &Path, exts: &[&str], found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "fixtures" | ".venv") {
                variables_in(&path, exts, found);
            }
            continue;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_string());
        if !exts.is_empty() && !ext.is_some_and(|e| exts.contains(&e.as_str())) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        found.extend(variable_names(&text));
    }
}

fn variable_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_';
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !(word(bytes[i - 1]) || bytes[i - 1].is_ascii_lowercase()))
        {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let name = &text[start..i];
            let lower_follows = i < bytes.len() && bytes[i].is_ascii_lowercase();
            if !lower_follows
                && (name.starts_with("HYBRIDMESH_") || name.starts_with("LAB_"))
                && name.len() > name.find('_').unwrap() + 1
            {
                names.push(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_environment_variable_the_code_reads_is_documented() {
    let root = root();
    let mut read = BTreeSet::new();
    variables_in(&root.join("crates"), &["rs"], &mut read);
    variables_in(&root.join("scripts"), &[], &mut read);
    variables_in(&root.join("istio-lab"), &["sh", "py", "go"], &mut read);
    let page = std::fs::read_to_string(root.join("docs/src/reference/environment.md")).unwrap();
    let documented: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|n| n.starts_with("HYBRIDMESH_") || n.starts_with("LAB_"))
        .collect();
    assert!(read.contains("HYBRIDMESH_WASM"), "the scan found {read:?}");
    let missing: Vec<_> = read.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&read).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/src/reference/environment.md: read but not documented {missing:?}; \
         documented but read nowhere {stale:?}"
    );
}

#[test]
fn variable_names_are_whole_words() {
    assert_eq!(
        variable_names(
            "x=$HYBRIDMESH_WASM; LAB_ISTIO=1.30 ${LAB_PODS:-} NOT_LAB_X HYBRIDMESH_ LAB_x"
        ),
        ["HYBRIDMESH_WASM", "LAB_ISTIO", "LAB_PODS"]
    );
}

/// The table of finding codes, as `docs/src/reference/codes.md` shows it.
fn codes_table() -> String {
    use hybridmesh_ops::deploy::codes::Code;
    let mut out = String::from("| code | what it finds |\n|---|---|\n");
    for c in Code::ALL {
        out.push_str(&format!("| `{}` | {} |\n", c.id(), c.summary()));
    }
    out
}

#[test]
fn the_books_finding_codes_are_the_codes_validate_gives() {
    let page = std::fs::read_to_string(root().join("docs/src/reference/codes.md")).unwrap();
    let (begin, end) = (
        "<!-- codes: made by crates/cli/tests/docs.rs -->\n",
        "<!-- /codes -->",
    );
    let shown = page
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table);
    let made = codes_table();
    assert_eq!(
        shown,
        Some(made.as_str()),
        "docs/src/reference/codes.md: the table between its markers must be:\n{made}"
    );
}

#[test]
fn the_readmes_minimal_config_is_the_tested_example() {
    // The README cannot include a file: its config is held to the example
    // the scenarios play, value for value, and to the filter's parser.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```yaml block in the README");
    let example =
        std::fs::read_to_string(root().join("examples/02-locality-failover/config.yaml")).unwrap();
    let shown: serde_json::Value = serde_yaml_ng::from_str(block).unwrap();
    let tested: serde_json::Value = serde_yaml_ng::from_str(&example).unwrap();
    assert_eq!(
        shown, tested,
        "README.md's minimal config must be examples/02-locality-failover/config.yaml"
    );
    hybridmesh_filter_core::parse_json(shown.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("README.md's config: {e:?}"));
}

#[test]
fn the_readme_fits_on_a_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: at most 250; the rest belongs in the book (docs/src)"
    );
    // The first screen says how to deploy.
    let first_screen: String = readme.lines().take(60).collect::<Vec<_>>().join("\n");
    assert!(
        first_screen.contains("docs/src/operator/deploy.md"),
        "README.md's first 60 lines must point to the deployment guide"
    );
}
