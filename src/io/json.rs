//! The small, strict JSON subset that safetensors headers and this crate's
//! metadata need: objects, arrays, strings and non-negative integers.
//!
//! The reader rejects everything else (`true`, `false`, `null`, negative or
//! fractional numbers, exponents, leading zeros, trailing commas, trailing
//! content, unescaped control characters, lone surrogates) with the byte
//! offset of the problem. Nesting is limited to [`MAX_DEPTH`] levels so a
//! hostile header cannot overflow the stack. Objects keep their keys in file
//! order, duplicates included: the caller decides what a duplicate means.

use std::fmt::Write as _;

/// Deepest nesting of arrays and objects the reader accepts.
pub(crate) const MAX_DEPTH: usize = 64;

/// A parsed JSON value of the supported subset.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// `{"k": v, ...}`, keys in file order (duplicates kept).
    Object(Vec<(String, Value)>),
    /// `[v, ...]`.
    Array(Vec<Value>),
    /// A string, escapes resolved.
    String(String),
    /// A non-negative integer that fits in `u64`.
    UInt(u64),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Object(_) => "an object",
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::UInt(_) => "an integer",
        }
    }
}

/// A syntax error: what went wrong and where (byte offset into the text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset of the offending character (or the end of the text).
    pub offset: usize,
    /// What was expected or found.
    pub message: &'static str,
}

/// Parses `text` as one JSON value of the supported subset, surrounded by
/// optional whitespace (space, tab, LF, CR) and nothing else.
pub(crate) fn parse(text: &str) -> Result<Value, SyntaxError> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &'static str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8, message: &'static str) -> Result<(), SyntaxError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(message))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'0'..=b'9') => self.uint().map(Value::UInt),
            Some(b'-') => Err(self.err("negative numbers are not supported")),
            Some(b't' | b'f' | b'n') => {
                Err(self.err("true, false and null are not supported here"))
            }
            Some(_) => Err(self.err("expected an object, array, string or integer")),
            None => Err(self.err("unexpected end of JSON text")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err("JSON nested too deeply"));
        }
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            self.expect(b':', "expected ':' after an object key")?;
            self.ws();
            let v = self.value(depth)?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err("JSON nested too deeply"));
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn uint(&mut self) -> Result<u64, SyntaxError> {
        let start = self.pos;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            if self.pos > start && self.s[start] == b'0' {
                return Err(SyntaxError {
                    offset: start,
                    message: "leading zeros are not allowed",
                });
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or(SyntaxError {
                    offset: start,
                    message: "integer does not fit in 64 bits",
                })?;
            self.pos += 1;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(self.err("only non-negative integers are supported"));
        }
        Ok(v)
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("expected four hex digits after \\u")),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters at once. The text came from a
            // `&str` and the run stops only at ASCII bytes, so it is valid UTF-8.
            let run = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            match std::str::from_utf8(&self.s[run..self.pos]) {
                Ok(t) => out.push_str(t),
                Err(_) => return Err(self.err("invalid UTF-8 in a string")),
            }
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.err("invalid escape sequence")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.err("unescaped control character in a string")),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` already consumed),
    /// joining a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let at = self.pos;
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(SyntaxError {
                        offset: at,
                        message: "high surrogate not followed by a \\u low surrogate",
                    });
                }
                self.pos += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(SyntaxError {
                        offset: at,
                        message: "high surrogate not followed by a low surrogate",
                    });
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(SyntaxError {
                    offset: at,
                    message: "lone low surrogate",
                })
            }
            c => c,
        };
        char::from_u32(code).ok_or(SyntaxError {
            offset: at,
            message: "invalid code point",
        })
    }
}

/// Appends `s` as a JSON string literal: quotes, `\"`, `\\`, the short escapes
/// for the usual control characters and `\u00XX` for the others. Everything
/// else, non-ASCII included, is written as itself (valid JSON in UTF-8).
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `v` as compact JSON text (no whitespace).
pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v);
            }
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        Value::UInt(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }

    #[test]
    fn parses_the_subset() {
        let v = parse(" {\"a\": [1, 0, 18446744073709551615], \"b\": {}, \"c\": []}\n").unwrap();
        assert_eq!(
            v,
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![Value::UInt(1), Value::UInt(0), Value::UInt(u64::MAX)])
                ),
                ("b".into(), Value::Object(vec![])),
                ("c".into(), Value::Array(vec![])),
            ])
        );
    }

    #[test]
    fn escapes_and_surrogates() {
        let v = parse(r#""q\"b\\s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 é""#).unwrap();
        assert_eq!(v, s("q\"b\\s/ \u{8}\u{c}\n\r\t é 😀 é"));
        for bad in [
            r#""\ud83d""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\x""#,
            r#""\u12""#,
            "\"a\u{1}\"",
            "\"open",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_outside_the_subset() {
        for bad in [
            "",
            "-1",
            "1.5",
            "1e3",
            "01",
            "true",
            "null",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "[1 2]",
            "{} {}",
            "18446744073709551616",
            "{\"a\" 1}",
            "[",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        // A million unclosed brackets fail fast without recursing deeply.
        assert!(parse(&"[".repeat(1 << 20)).is_err());
    }

    #[test]
    fn writer_round_trips() {
        let text: String = (0u32..0x300).filter_map(char::from_u32).collect::<String>() + "😀\"\\";
        let v = Value::Object(vec![
            (text.clone(), Value::Array(vec![s(&text), Value::UInt(7)])),
            ("x".into(), Value::UInt(u64::MAX)),
        ]);
        let mut out = String::new();
        write_value(&mut out, &v);
        assert_eq!(parse(&out).unwrap(), v);
    }
}
