//! Log names and the directory names that hold them.

use crate::error::{BrokerError, Result};

/// Longest log name: Rog's protocol carries its length in one byte.
pub const MAX_NAME_LEN: usize = 255;

/// Checks that `name` can name a log: 1 to 255 bytes of UTF-8, no control characters.
pub fn validate(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(BrokerError::InvalidName(
            "a log name cannot be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BrokerError::InvalidName(format!(
            "a log name is at most {MAX_NAME_LEN} bytes, got {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(BrokerError::InvalidName(
            "a log name cannot contain control characters".into(),
        ));
    }
    Ok(())
}

/// The directory name for a log: safe characters kept, every other byte `%XX`-escaped
/// (so `/`, `..` and the like cannot escape the data directory); names whose escaped form
/// is too long for a file system are shortened and made unique by a hash suffix. The
/// real name is stored in the directory's `meta.json`, which is the truth.
pub fn dir_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        out.truncate(150);
        out.push_str(&format!(
            "~{:016x}",
            crate::chariots::fnv1a64(name.as_bytes())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_cannot_escape_and_stay_short() {
        assert_eq!(dir_name("orders"), "orders");
        assert_eq!(dir_name("../etc"), "%2E%2E%2Fetc");
        assert_eq!(dir_name("a b"), "a%20b");
        let long = "é".repeat(120);
        let d = dir_name(&long);
        assert!(d.len() <= 200, "{}", d.len());
        assert_ne!(d, dir_name(&"é".repeat(119)));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate("").is_err());
        assert!(validate(&"x".repeat(256)).is_err());
        assert!(validate("a\nb").is_err());
        assert!(validate("ok name/with:stuff").is_ok());
    }
}
