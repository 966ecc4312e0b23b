//! A small JSON reader: text to a [`Value`] tree that remembers where each
//! value ends, for the plugin config's error messages.
//!
//! The filter reads one document per config push, so this favours code size
//! over speed: it replaced serde_json in the `.wasm` (about 70 KB of it). What
//! it accepts and how it words a syntax error follow serde_json (RFC 8259, a
//! nesting limit of 128, the same messages and positions): the config's
//! messages did not change with it, and `tests/json_syntax.rs` holds the two
//! to each other on many broken documents.

use std::borrow::Cow;

/// A position in the text: 1-based line, and the column as serde_json counts
/// it (bytes from the start of the line to the byte in question, inclusive).
pub type Pos = (usize, usize);

/// One JSON value and where it ends in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Value<'a> {
    pub kind: Kind<'a>,
    /// How many bytes of the text were read when the value ended (after a
    /// string's closing quote, an object's `}`): [`position`] makes it a line
    /// and column, only for a message. 0 when the value was not read from
    /// text (the tools build trees from YAML).
    pub end: usize,
}

/// An object's member: its key, where the key ends, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Member<'a> {
    /// Borrowed from the text unless it had an escape.
    pub key: Cow<'a, str>,
    pub key_end: usize,
    pub value: Value<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer that fits in a u64.
    UInt(u64),
    /// A negative integer that fits in an i64.
    NegInt(i64),
    /// Any other number, as written (its value is only ever shown).
    Float(String),
    /// Borrowed from the text unless it had an escape.
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    /// Members in the order written (duplicates kept).
    Object(Vec<Member<'a>>),
}

impl<'a> Value<'a> {
    /// A value with no position (built, not read).
    pub fn new(kind: Kind<'a>) -> Value<'a> {
        Value { kind, end: 0 }
    }
}

/// A syntax error: serde_json's wording and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: &'static str,
    pub at: Pos,
}

const MAX_DEPTH: usize = 128;

/// The line and column of the byte before `index` (after `index` bytes were
/// read), as serde_json reports a position. Linear in `index`: for a message,
/// never per value.
pub fn position(text: &[u8], index: usize) -> Pos {
    let before = text.get(..index).unwrap_or(text);
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    (line, before.len() - start)
}

/// Reads one JSON document (surrounding whitespace allowed).
pub fn parse(text: &[u8]) -> Result<Value<'_>, SyntaxError> {
    let mut r = Reader {
        text,
        i: 0,
        depth: 0,
    };
    let v = r.value()?;
    r.skip_ws();
    if r.i < text.len() {
        return Err(r.peek_err("trailing characters"));
    }
    Ok(v)
}

struct Reader<'a> {
    text: &'a [u8],
    /// The next byte to read.
    i: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn pos_of(&self, index: usize) -> Pos {
        position(self.text, index)
    }

    /// At the last byte read.
    fn err(&self, message: &'static str) -> SyntaxError {
        SyntaxError {
            message,
            at: self.pos_of(self.i),
        }
    }

    /// At the byte looked at and not taken.
    fn peek_err(&self, message: &'static str) -> SyntaxError {
        SyntaxError {
            message,
            at: self.pos_of((self.i + 1).min(self.text.len())),
        }
    }

    #[inline(always)] // per byte; at "z" it was a call (5% of reading a big config)
    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    #[inline(always)] // per byte, as peek
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn end(&self) -> usize {
        self.i
    }

    fn value(&mut self) -> Result<Value<'a>, SyntaxError> {
        self.skip_ws();
        let Some(b) = self.peek() else {
            return Err(self.peek_err("EOF while parsing a value"));
        };
        let kind = match b {
            b'n' => self.ident(b"null", Kind::Null)?,
            b't' => self.ident(b"true", Kind::Bool(true))?,
            b'f' => self.ident(b"false", Kind::Bool(false))?,
            b'-' | b'0'..=b'9' => self.number()?,
            b'"' => {
                self.i += 1;
                Kind::Str(self.string()?)
            }
            b'[' | b'{' => {
                self.depth += 1;
                if self.depth >= MAX_DEPTH {
                    return Err(self.peek_err("recursion limit exceeded"));
                }
                self.i += 1;
                let kind = if b == b'[' {
                    self.array()?
                } else {
                    self.object()?
                };
                self.depth -= 1;
                kind
            }
            _ => return Err(self.peek_err("expected value")),
        };
        Ok(Value {
            kind,
            end: self.end(),
        })
    }

    fn ident(&mut self, word: &[u8], kind: Kind<'a>) -> Result<Kind<'a>, SyntaxError> {
        self.i += 1;
        for &w in word.get(1..).unwrap_or_default() {
            match self.peek() {
                None => return Err(self.err("EOF while parsing a value")),
                Some(b) if b == w => self.i += 1,
                Some(_) => {
                    self.i += 1;
                    return Err(self.err("expected ident"));
                }
            }
        }
        Ok(kind)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Kind<'a>, SyntaxError> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_err("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            Some(_) => {
                self.i += 1;
                return Err(self.err("invalid number"));
            }
            None => return Err(self.err("EOF while parsing a value")),
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            if self.digits() == 0 {
                return Err(match self.peek() {
                    Some(_) => self.peek_err("invalid number"),
                    None => self.peek_err("EOF while parsing a value"),
                });
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return match self.peek() {
                    Some(_) => {
                        self.i += 1;
                        Err(self.err("invalid number"))
                    }
                    None => Err(self.err("EOF while parsing a value")),
                };
            }
        }
        let text = String::from_utf8_lossy(self.text.get(start..self.i).unwrap_or_default());
        if !float {
            let digits = self
                .text
                .get(start + negative as usize..int_end)
                .unwrap_or_default();
            let mut n: u64 = 0;
            let mut fits = true;
            for &d in digits {
                match n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                {
                    Some(v) => n = v,
                    None => fits = false,
                }
            }
            if fits && !negative {
                return Ok(Kind::UInt(n));
            }
            // serde_json reads -0 as a float, like any integer out of range.
            if fits && n > 0 && n <= i64::MAX as u64 + 1 {
                return Ok(Kind::NegInt((n as i64).wrapping_neg()));
            }
        }
        if !to_f64(&text).is_finite() {
            return Err(self.err("number out of range"));
        }
        Ok(Kind::Float(text.into_owned()))
    }

    /// After the opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, SyntaxError> {
        let start = self.i;
        let text: &'a [u8] = self.text;
        let rest = text.get(start..).unwrap_or_default();
        let plain = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(rest.len());
        self.i += plain;
        // Most strings have no escape: borrowed from the text, no allocation.
        if self.peek() == Some(b'"') {
            if let Ok(s) = std::str::from_utf8(rest.get(..plain).unwrap_or_default()) {
                self.i += 1;
                return Ok(Cow::Borrowed(s));
            }
        }
        let mut out: Vec<u8> = rest.get(..plain).unwrap_or_default().to_vec();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("EOF while parsing a string"));
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("EOF while parsing a string"));
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.err("invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out)
            .map(Cow::Owned)
            .map_err(|_| SyntaxError {
                message: "invalid unicode code point",
                at: self.pos_of(self.first_invalid_utf8(start) + 1),
            })
    }

    /// The index of the first byte of the string from `start` (after its
    /// opening quote) that is not UTF-8, outside its escapes.
    fn first_invalid_utf8(&self, start: usize) -> usize {
        let mut run = start;
        let mut i = start;
        while i < self.i {
            let b = self.text.get(i).copied().unwrap_or(b'"');
            if b == b'\\' || b == b'"' {
                if let Err(e) = std::str::from_utf8(self.text.get(run..i).unwrap_or_default()) {
                    return run + e.valid_up_to();
                }
                // An escape: `\u` and four digits, or one character.
                i += if self.text.get(i + 1) == Some(&b'u') {
                    6
                } else {
                    2
                };
                run = i;
            } else {
                i += 1;
            }
        }
        self.i
    }

    /// Four hex digits, taken together as serde_json takes them.
    fn hex4(&mut self) -> Result<u16, SyntaxError> {
        let Some(digits) = self.text.get(self.i..self.i + 4) else {
            self.i = self.text.len();
            return Err(self.err("EOF while parsing a string"));
        };
        self.i += 4;
        let mut n: u16 = 0;
        for &b in digits {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.err("invalid escape")),
            };
            n = (n << 4) | u16::from(d);
        }
        Ok(n)
    }

    /// Takes `want`, inside a surrogate pair's escape.
    fn expect_in_escape(&mut self, want: u8) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b) if b == want => {
                self.i += 1;
                Ok(())
            }
            None => Err(self.err("EOF while parsing a string")),
            Some(_) => {
                self.i += 1;
                Err(self.err("unexpected end of hex escape"))
            }
        }
    }

    /// After `\u`.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let n = self.hex4()?;
        let code = match n {
            0xDC00..=0xDFFF => return Err(self.err("lone leading surrogate in hex escape")),
            0xD800..=0xDBFF => {
                // A leading surrogate: `\u` and the trailing one must follow.
                self.expect_in_escape(b'\\')?;
                self.expect_in_escape(b'u')?;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.err("lone leading surrogate in hex escape"));
                }
                0x10000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            n => u32::from(n),
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid unicode code point"))
    }

    /// After `[`.
    fn array(&mut self) -> Result<Kind<'a>, SyntaxError> {
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Kind::Array(items));
        }
        if self.at_eof() {
            return Err(self.peek_err("EOF while parsing a list"));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => return Err(self.peek_err("trailing comma")),
                        None => return Err(self.peek_err("EOF while parsing a value")),
                        Some(_) => {}
                    }
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Kind::Array(items));
                }
                Some(_) => return Err(self.peek_err("expected `,` or `]`")),
                None => return Err(self.peek_err("EOF while parsing a list")),
            }
        }
    }

    fn at_eof(&mut self) -> bool {
        self.skip_ws();
        self.peek().is_none()
    }

    /// After `{`.
    fn object(&mut self) -> Result<Kind<'a>, SyntaxError> {
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Kind::Object(members));
        }
        let mut first = true;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => self.i += 1,
                Some(_) => return Err(self.peek_err("key must be a string")),
                None if first => return Err(self.peek_err("EOF while parsing an object")),
                None => return Err(self.peek_err("EOF while parsing a value")),
            }
            first = false;
            let key = self.string()?;
            let key_end = self.end();
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(self.peek_err("expected `:`")),
                None => return Err(self.peek_err("EOF while parsing an object")),
            }
            let value = self.value()?;
            members.push(Member {
                key,
                key_end,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        return Err(self.peek_err("trailing comma"));
                    }
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Kind::Object(members));
                }
                Some(_) => return Err(self.peek_err("expected `,` or `}`")),
                None => return Err(self.peek_err("EOF while parsing an object")),
            }
        }
    }
}

/// A JSON number's value, near enough to show it (six decimals) and to tell
/// one out of range; no float parser enters the `.wasm` for it.
pub fn to_f64(text: &str) -> f64 {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().unwrap_or(i32::MAX)),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let mut v = 0f64;
    let mut scale = 0i32;
    let mut after_point = false;
    for b in mantissa.bytes() {
        match b {
            b'0'..=b'9' => {
                v = v * 10.0 + f64::from(b - b'0');
                if after_point {
                    scale -= 1;
                }
            }
            b'.' => after_point = true,
            _ => {}
        }
    }
    let e = exp.saturating_add(scale);
    if v != 0.0 {
        v *= 10f64.powi(e.clamp(-400, 400));
    }
    if negative {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        fn k(t: &str) -> Result<Kind<'_>, SyntaxError> {
            parse(t.as_bytes()).map(|v| v.kind)
        }
        assert_eq!(k("0"), Ok(Kind::UInt(0)));
        assert_eq!(k("18446744073709551615"), Ok(Kind::UInt(u64::MAX)));
        assert_eq!(
            k("18446744073709551616"),
            Ok(Kind::Float("18446744073709551616".into()))
        );
        assert_eq!(k("-9223372036854775808"), Ok(Kind::NegInt(i64::MIN)));
        assert_eq!(k("-0"), Ok(Kind::Float("-0".into())));
        assert_eq!(k("1.5e2"), Ok(Kind::Float("1.5e2".into())));
        assert_eq!(to_f64("1.5e2"), 150.0);
        assert_eq!(to_f64("-19.5"), -19.5);
        assert!(k("1e400").is_err());
    }
}
