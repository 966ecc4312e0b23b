//! The config's JSON reader says what serde_json says about a broken
//! document, at the same line and column: every prefix of a config and
//! every one-byte change of it, read by both.
//!
//! serde_json is what the filter used before it read JSON itself; its
//! messages were the config's messages, and the tests that pin them
//! (config_errors.rs, the CLI's) did not change with the reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hybridmesh_config::json;

const CONFIG: &str = r#"{
  "identity": {"cluster": "gke", "locality": "asia-northeast1/a"},
  "denyStatus": 403, "allowDebug": false, "filterState": null,
  "routes": [
    {"hosts": ["echo-svc.default.svc.cluster.local", "*"],
     "policy": "weighted",
     "distribute": [{"from": "*", "to": {"gke": 80, "anthos": 2.0e1}}],
     "stickyHeader": "x-user\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"}
  ],
  "clusters": [{"name": "gke", "network": "n1", "locality": "r"}, {"name": "anthos"}],
  "x": [-1, 0, -0, 12.5e-3, 1E+2, true, [], {}]
}"#;

/// What serde_json says: its message without the position, and the position.
fn serde_says(text: &[u8]) -> Result<(), (String, (usize, usize))> {
    serde_json::from_slice::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| {
            let full = e.to_string();
            let message = match full.rfind(" at line ") {
                Some(i) => full[..i].to_string(),
                None => full,
            };
            (message, (e.line(), e.column()))
        })
}

fn ours(text: &[u8]) -> Result<(), (String, (usize, usize))> {
    json::parse(text)
        .map(|_| ())
        .map_err(|e| (e.message.to_string(), e.at))
}

/// The byte at a (line, column) position.
fn byte_at(text: &[u8], (line, column): (usize, usize)) -> Option<u8> {
    let start: usize = text
        .split(|&b| b == b'\n')
        .take(line - 1)
        .map(|l| l.len() + 1)
        .sum();
    text.get(start + column - 1).copied()
}

fn compare(text: &[u8], differences: &mut Vec<String>) {
    let (want, got) = (serde_says(text), ours(text));
    // In a string that also holds escapes, serde_json counts the column of
    // a byte that is not UTF-8 in its decoded copy, not in the text; ours
    // is the byte itself, which the check proves.
    if let (Err((w, _)), Err((g, at))) = (&want, &got) {
        if w == "invalid unicode code point" && w == g && byte_at(text, *at) >= Some(0x80) {
            return;
        }
    }
    if want != got {
        let shown: String = String::from_utf8_lossy(text).chars().take(300).collect();
        differences.push(format!(
            "{shown:?}\n  serde_json: {want:?}\n  ours:       {got:?}"
        ));
    }
}

#[test]
fn the_document_itself_reads_and_keeps_its_values() {
    let v = json::parse(CONFIG.as_bytes()).unwrap();
    let json::Kind::Object(members) = &v.kind else {
        panic!("not an object: {v:?}")
    };
    let routes = &members.iter().find(|m| m.key == "routes").unwrap().value;
    let json::Kind::Array(routes) = &routes.kind else {
        panic!()
    };
    let json::Kind::Object(route) = &routes[0].kind else {
        panic!()
    };
    let sticky = &route
        .iter()
        .find(|m| m.key == "stickyHeader")
        .unwrap()
        .value;
    assert_eq!(
        sticky.kind,
        json::Kind::Str("x-user\u{e9}\u{1F600}\"\\/\u{8}\u{c}\n\r\t".into())
    );
    // Where it ends: the closing quote, as serde_json counts columns.
    assert_eq!(json::position(CONFIG.as_bytes(), sticky.end), (8, 63));
    assert_eq!(json::position(CONFIG.as_bytes(), v.end), (12, 1));
}

#[test]
fn every_prefix_fails_as_serde_json_fails() {
    let mut differences = Vec::new();
    for n in 0..CONFIG.len() {
        compare(&CONFIG.as_bytes()[..n], &mut differences);
    }
    assert!(
        differences.is_empty(),
        "{} of {} prefixes differ:\n{}",
        differences.len(),
        CONFIG.len(),
        differences[..differences.len().min(10)].join("\n")
    );
}

#[test]
fn every_one_byte_change_reads_or_fails_as_serde_json_does() {
    let replacements: &[u8] = b"{}[]\",:\\ 0159aeEnrtuf.+-/\x01\x7f\xff\n";
    let bytes = CONFIG.as_bytes();
    let mut differences = Vec::new();
    let mut tried = 0;
    for i in 0..bytes.len() {
        let mut deleted = bytes.to_vec();
        deleted.remove(i);
        compare(&deleted, &mut differences);
        tried += 1;
        for &r in replacements {
            if r == bytes[i] {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[i] = r;
            compare(&changed, &mut differences);
            tried += 1;
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {tried} changed documents differ:\n{}",
        differences.len(),
        differences[..differences.len().min(10)].join("\n")
    );
}

#[test]
fn deep_nesting_stops_at_serde_jsons_limit() {
    let mut differences = Vec::new();
    for depth in [127, 128, 129, 10_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        compare(text.as_bytes(), &mut differences);
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
