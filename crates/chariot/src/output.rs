//! How results reach stdout: text for people, JSON for scripts.
//!
//! Record values are arbitrary bytes. People get them as text that cannot garble a
//! terminal (lossy UTF-8, control characters escaped); scripts get the exact bytes in
//! base64 next to the text when there is one, so nothing is lost and `jq .value` still
//! works on text records.

use std::io::{self, Write};

use base64::Engine;
use serde_json::{Map, Value};

/// Where a command's results go, in the format the user chose.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// JSON when `json`, human-readable text otherwise.
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Whether results are JSON.
    pub fn is_json(self) -> bool {
        self.json
    }

    /// Prints the result: `text` for people, `json` (one line) for scripts. Only the
    /// chosen one is built.
    pub fn emit(
        self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> io::Result<()> {
        if self.json {
            line(&json().to_string())
        } else {
            line(&text())
        }
    }
}

/// Writes one line to stdout, reporting failures (a closed pipe) instead of panicking
/// as `println!` would.
pub fn line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A record value as terminal-safe text: invalid UTF-8 becomes U+FFFD and control
/// characters are escaped (`\n`, `\u{1b}`), so one record is always one line.
pub fn text(bytes: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(lossy.len());
    for c in lossy.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds `name` (the bytes as a string, or null if they are not UTF-8) and
/// `name_base64` (the exact bytes) to a JSON object.
pub fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    let (text, base64) = match bytes {
        Some(bytes) => (
            std::str::from_utf8(bytes).map_or(Value::Null, |s| Value::String(s.to_owned())),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        None => (Value::Null, Value::Null),
    };
    object.insert(name.to_owned(), text);
    object.insert(format!("{name}_base64"), base64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_one_safe_line() {
        assert_eq!(text(b"plain\ttab"), "plain\ttab");
        assert_eq!(text(b"a\nb"), "a\\nb");
        assert_eq!(text(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(text(&[0x66, 0xFF, 0x6F]), "f\u{FFFD}o");
    }

    #[test]
    fn json_keeps_exact_bytes() {
        let mut object = Map::new();
        put_bytes(&mut object, "value", Some(b"hi"));
        assert_eq!(object["value"], "hi");
        assert_eq!(object["value_base64"], "aGk=");
        put_bytes(&mut object, "key", Some(&[0xFF]));
        assert_eq!(object["key"], Value::Null);
        assert_eq!(object["key_base64"], "/w==");
        put_bytes(&mut object, "none", None);
        assert_eq!(object["none_base64"], Value::Null);
    }
}
