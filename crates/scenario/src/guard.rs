//! Limits on input text, checked before a parser sees it.
//!
//! The YAML parser (libyaml) takes time quadratic in the nesting depth of
//! flow collections (`{a: {a: ...}}`: it re-examines every open level at each
//! token): 50,000 levels in a 200 KB file took 31 s, 100,000 more than a
//! minute. Nothing we read nests deeper than a few dozen levels, and the
//! deserializer refuses more than 128 anyway, so a linear scan refuses
//! anything past [`MAX_DEPTH`] first, with the line where it happens.

use std::fmt;
use std::path::Path;

use anyhow::Context as _;

/// Reads a YAML (or JSON) input through the one bounded reader
/// ([`hybridmesh_input::TEXT`]) and refuses it if it nests too deep; every
/// error names the path (and `what` the file is, for the nesting).
pub fn read_yaml(what: &str, path: &Path) -> anyhow::Result<String> {
    // The reader's errors name the path already.
    let text = hybridmesh_input::read_text(path, hybridmesh_input::TEXT)?;
    yaml(&text).with_context(|| format!("{what} {}", hybridmesh_input::display(path)))?;
    Ok(text)
}

/// Deeper than this is refused before parsing (the deserializer's own limit is 128).
pub const MAX_DEPTH: usize = 200;

/// Where the text nests too deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nests deeper than {MAX_DEPTH} levels at line {}, column {} (not read: a configuration or manifest nests a few levels)",
            self.line, self.column
        )
    }
}

impl std::error::Error for TooDeep {}

/// Refuses YAML (or JSON) text that nests deeper than [`MAX_DEPTH`]: flow
/// collections (`[`, `{`) outside quotes and comments, and block indicators
/// (`- - - x`, `? ? x`) on one line. Linear in the text; may over-count a
/// bracket inside a plain scalar, which only matters past 200 of them.
pub fn yaml(text: &str) -> Result<(), TooDeep> {
    let mut flow: usize = 0;
    // Inside a quoted scalar: the quote that ends it.
    let mut quote: Option<u8> = None;
    // Lines more indented than this belong to a block scalar (`|`, `>`).
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.split('\n').enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        if let Some(at) = block_scalar {
            if indent > at || line.trim().is_empty() {
                continue;
            }
            block_scalar = None;
        }
        let too_deep = |column: usize| TooDeep {
            line: n + 1,
            column: column + 1,
        };
        let mut i = 0;
        if quote.is_none() && flow == 0 {
            // Block indicators at the start of the line: `- - ? x`.
            let mut levels = 0;
            i = indent;
            while matches!(bytes.get(i), Some(b'-' | b'?' | b':'))
                && matches!(bytes.get(i + 1), Some(b' ' | b'\t') | None)
            {
                levels += 1;
                if levels > MAX_DEPTH {
                    return Err(too_deep(i));
                }
                i += 2;
                while matches!(bytes.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
            }
        }
        let mut token_start = true;
        // The last token was a quoted scalar: a `:` right after it is a
        // JSON-like key's indicator (`{"a":"b"}`).
        let mut after_quote = false;
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = quote {
                if b == q {
                    if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    after_quote = true;
                    i += 1;
                    token_start = false;
                    continue;
                } else if b == b'\\' && q == b'"' {
                    i += 1;
                }
                i += 1;
                token_start = false;
                continue;
            }
            match b {
                b'#' if token_start => break,
                b'\'' | b'"' if token_start => quote = Some(b),
                b'[' | b'{' if token_start || flow > 0 => {
                    flow += 1;
                    if flow > MAX_DEPTH {
                        return Err(too_deep(i));
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b'|' | b'>' if token_start && flow == 0 => {
                    let rest = line[i + 1..].trim();
                    if rest.is_empty()
                        || rest.starts_with('#')
                        || rest
                            .bytes()
                            .all(|c| c.is_ascii_digit() || c == b'+' || c == b'-')
                    {
                        block_scalar = Some(indent);
                        break;
                    }
                }
                _ => {}
            }
            // A `:` starts a token only as an indicator: followed by a space
            // or the line's end, or after a quoted key. `a:'x` is one plain
            // scalar, whose quote opens nothing.
            token_start = match b {
                b' ' | b'\t' | b'[' | b'{' | b',' => true,
                b':' => after_quote || matches!(bytes.get(i + 1), Some(b' ' | b'\t') | None),
                _ => false,
            };
            if !matches!(b, b' ' | b'\t') {
                after_quote = false;
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        for text in [
            "a: {b: [1, 2, {c: d}]}\n",
            "- - x\n- y\n",
            "k: \"[[[[[\"\nl: '{{{'\n# [[[[\n",
            "script: |\n  [[[[[[\n  {{{{\nnext: 1\n",
            "it's: fine [a\n",
            "{\"a\":\"]]]\",\"b\":[1]}\n",
            "k: a:'x\nl: y\n",
        ] {
            assert_eq!(yaml(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_with_its_position() {
        let flow = format!("x: {}1{}", "{a: ".repeat(300), "}".repeat(300));
        assert_eq!(
            yaml(&flow),
            Err(TooDeep {
                line: 1,
                column: 4 + 4 * 200
            })
        );
        let seq = format!("k: v\n{}x\n", "- ".repeat(300));
        assert_eq!(
            yaml(&seq),
            Err(TooDeep {
                line: 2,
                column: 401
            })
        );
        let lines = format!("a:\n{}", "[\n".repeat(250));
        assert_eq!(yaml(&lines).map_err(|e| e.line), Err(202));
        // A quote inside a plain scalar opens nothing: the brackets after it
        // are counted (issue #25: 100,000 of them took 27 s to parse).
        let plain_quote = format!("k: a:'x\n{}", "[".repeat(100_000));
        assert_eq!(
            yaml(&plain_quote),
            Err(TooDeep {
                line: 2,
                column: 201
            })
        );
        // JSON's compact keys still open a string: `"a":"[[["` is no nesting.
        let json = format!("{{\"a\":\"{}\"}}", "[".repeat(300));
        assert_eq!(yaml(&json), Ok(()));
    }
}
