//! Small text writers for the request path: numbers and JSON strings appended
//! to a reused buffer, without `core::fmt` (slow, and large in the `.wasm`).

/// Appends `n` in decimal.
pub fn push_u64(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
    }
}

/// Appends `value` as a JSON string (quotes included).
pub fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    // Almost every value needs no escaping: one copy.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(hex_digit((c as u32 >> 4) & 0xf));
                out.push(hex_digit(c as u32 & 0xf));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex_digit(n: u32) -> char {
    char::from_digit(n, 16).unwrap_or('0')
}

/// Appends `n` in lower-case hexadecimal.
pub fn push_hex(s: &mut String, n: u32) {
    let mut digits = [0u8; 8];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = hex_digit(n & 0xf) as u8;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_json_strings() {
        for n in [0u64, 7, 10, 99, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#.replace("\\n", "\\u000a"));
        let mut h = String::new();
        push_hex(&mut h, 0x2028);
        assert_eq!(h, "2028");
    }
}
