//! The few pieces of Go's `encoding/json` output that `stats` needs, written by hand so the
//! bytes match the real server: HTML-safe string escaping and shortest float formatting.

use std::fmt::Write as _;

/// Appends `bytes` as a JSON string the way Go's `encoding/json` writes a Go string.
///
/// * `"` and `\` are escaped; `\b \f \n \r \t` use their short escapes (Go 1.22 and later);
/// * other control characters become `\u00XX` (lowercase hex);
/// * `<`, `>` and `&` become `\u003c`, `\u003e`, `\u0026`;
/// * U+2028 and U+2029 become `\u2028` and `\u2029`;
/// * every byte that does not start a valid UTF-8 sequence becomes `\ufffd` (one per byte,
///   as Go's decoder advances one byte on an error).
pub(crate) fn push_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_valid(out, valid);
                break;
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                push_valid(out, std::str::from_utf8(valid).unwrap_or_default());
                out.push_str("\\ufffd");
                rest = &after[1..];
            }
        }
    }
    out.push('"');
}

fn push_valid(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Appends a float64 the way Go's `encoding/json` writes it: the shortest decimal that
/// round-trips, without a trailing `.0`; exponent form (`1e-7`, `1e+21`) below 1e-6 and from
/// 1e21 on.
pub(crate) fn push_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&s),
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bytes: &[u8]) -> String {
        let mut out = String::new();
        push_string(&mut out, bytes);
        out
    }

    fn f(v: f64) -> String {
        let mut out = String::new();
        push_float(&mut out, v);
        out
    }

    #[test]
    fn strings_like_go() {
        let cases: &[(&[u8], &str)] = &[
            (b"job", r#""job""#),
            ("ключ".as_bytes(), "\"ключ\""),
            (b"a\"b\\c", r#""a\"b\\c""#),
            (b"<a>&", r#""\u003ca\u003e\u0026""#),
            (b"\n\r\t\x08\x0c", r#""\n\r\t\b\f""#),
            (b"\x00\x01\x1f\x7f", "\"\\u0000\\u0001\\u001f\x7f\""),
            (
                "\u{2028}\u{2029}\u{a0}".as_bytes(),
                "\"\\u2028\\u2029\u{a0}\"",
            ),
            (b"a\xffb", r#""a\ufffdb""#),
            // A truncated 3-byte sequence: Go replaces each byte.
            (b"\xe2\x82x", r#""\ufffd\ufffdx""#),
            (b"\xe2\x82", r#""\ufffd\ufffd""#),
            ("€".as_bytes(), "\"€\""),
        ];
        for (input, want) in cases {
            assert_eq!(s(input), *want, "{input:?}");
        }
    }

    #[test]
    fn floats_like_go() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (5.0, "5"),
            (32.871254334, "32.871254334"),
            (4.002139, "4.002139"),
            (0.5, "0.5"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (1e-10, "1e-10"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.25e22, "1.25e+22"),
            (0.1 + 0.2, "0.30000000000000004"),
            (33.0, "33"),
        ];
        for (input, want) in cases {
            assert_eq!(f(*input), *want, "{input:?}");
        }
    }
}
