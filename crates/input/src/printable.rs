//! Text from an input, made safe to print on a terminal or in a report.
//!
//! A name, path or log field is the input's, not ours: printed raw, an ANSI
//! escape can recolour or erase the line, a CR can overwrite it, and a LF can
//! start a line that looks like one of ours ("ok ... all good"). Every such
//! field goes through [`printable`] before it is printed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` changes what a terminal shows rather than showing itself: C0
/// controls (tab, LF and CR included), DEL, C1 controls, and the Unicode
/// controls that reorder or hide text (bidi embeddings, overrides and
/// isolates, zero-width joiners, the line and paragraph separators).
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

/// `text` with every [`is_control`] character written as an escape (`\n`,
/// `\r`, `\t`, `\x1b`, `\u{202e}`), and a backslash doubled when the text holds
/// such a character (so an escape cannot be forged either). Text without one
/// is returned as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && is_control(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for text that is ours but may quote input over several lines
/// (an error chain): each line made printable, the line breaks kept.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` as XML character data or an attribute value: markup escaped, and
/// characters XML 1.0 does not allow (most C0 controls, U+FFFE, U+FFFF) written
/// as [`printable`] escapes; tab, LF and CR as character references, so an
/// attribute keeps them.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => {
                out.push_str(&printable(c.encode_utf8(&mut [0; 4])));
            }
            '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        assert!(matches!(printable("echo-svc.default"), Cow::Borrowed(_)));
        assert_eq!(printable(r"C:\path"), r"C:\path");
    }

    #[test]
    fn a_forged_line_cannot_be_painted() {
        let name = "x\r\x1b[32mok\x1b[0m all good\nok y";
        assert_eq!(printable(name), r"x\r\x1b[32mok\x1b[0m all good\nok y");
        assert_eq!(printable("a\\b\n"), r"a\\b\n");
        assert_eq!(printable("evil\u{202e}txt.exe"), r"evil\u{202e}txt.exe");
        assert_eq!(printable("\u{9b}31m"), r"\x9b31m");
    }

    #[test]
    fn lines_keep_their_breaks_and_lose_their_escapes() {
        assert_eq!(printable_lines("a\x1b[2K\n  b\r"), "a\\x1b[2K\n  b\\r");
    }

    #[test]
    fn xml_has_no_character_xml_refuses() {
        assert_eq!(
            xml("a<b & \"c\"\x1b\x00\n\u{ffff}"),
            r"a&lt;b &amp; &quot;c&quot;\x1b\x00&#10;\u{ffff}"
        );
    }
}
