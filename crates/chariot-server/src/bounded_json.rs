//! Parsing a JSON array of records one element at a time, with a cap on their number.
//!
//! Parsing a whole body into a `serde_json::Value` first costs about a hundred bytes per
//! element whatever its size (16 MiB of `{}` is a million maps): here each element is
//! parsed, handed to `each` (which turns it into what the request needs) and dropped
//! before the next, and a body with more than `max` elements fails at the first one
//! over, so a request costs what its records cost, never more than `max` of them.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Why a body was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BoundedError {
    /// Not JSON, or not the expected shape.
    Invalid(String),
    /// More than the allowed number of elements.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// `each` refused an element (index, reason).
    Element(usize, String),
}

impl fmt::Display for BoundedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundedError::Invalid(e) => write!(f, "invalid JSON body: {e}"),
            BoundedError::TooMany { max } => {
                write!(f, "more than {max} records in one request; split them")
            }
            BoundedError::Element(i, e) => write!(f, "record {i}: {e}"),
        }
    }
}

/// Parses `bytes` as an array (or, with `single_object`, also one object, as a
/// one-element list) of at most `max` elements, mapping each with `each`.
pub(crate) fn parse_list<T>(
    bytes: &[u8],
    max: usize,
    single_object: bool,
    each: impl FnMut(Value) -> Result<T, String>,
) -> Result<Vec<T>, BoundedError> {
    let mut outcome = None;
    let seed = ListSeed {
        max,
        single_object,
        each,
        outcome: &mut outcome,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, outcome) {
        (Ok(items), _) => Ok(items),
        // The element or count failure, recorded before serde wrapped it.
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(BoundedError::Invalid(e.to_string())),
    }
}

struct ListSeed<'o, F> {
    max: usize,
    single_object: bool,
    each: F,
    outcome: &'o mut Option<BoundedError>,
}

impl<'de, T, F> DeserializeSeed<'de> for ListSeed<'_, F>
where
    F: FnMut(Value) -> Result<T, String>,
{
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F> Visitor<'de> for ListSeed<'_, F>
where
    F: FnMut(Value) -> Result<T, String>,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.single_object {
            f.write_str("a record object or an array of them")
        } else {
            f.write_str("an array")
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(v) = seq.next_element::<Value>()? {
            if out.len() == self.max {
                *self.outcome = Some(BoundedError::TooMany { max: self.max });
                return Err(A::Error::custom("too many elements"));
            }
            match (self.each)(v) {
                Ok(item) => out.push(item),
                Err(e) => {
                    *self.outcome = Some(BoundedError::Element(out.len(), e));
                    return Err(A::Error::custom("invalid element"));
                }
            }
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<Vec<T>, A::Error> {
        if !self.single_object {
            return Err(A::Error::invalid_type(serde::de::Unexpected::Map, &self));
        }
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        match (self.each)(v) {
            Ok(item) => Ok(vec![item]),
            Err(e) => {
                *self.outcome = Some(BoundedError::Element(0, e));
                Err(A::Error::custom("invalid element"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: Value) -> Result<u64, String> {
        v.get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| "no id".to_string())
    }

    #[test]
    fn arrays_objects_and_their_limits() {
        assert_eq!(
            parse_list(br#"[{"id":1},{"id":2}]"#, 2, false, ids),
            Ok(vec![1, 2])
        );
        assert_eq!(
            parse_list(br#"[{"id":1},{"id":2},{"id":3}]"#, 2, false, ids),
            Err(BoundedError::TooMany { max: 2 })
        );
        assert_eq!(parse_list(br#"{"id":7}"#, 2, true, ids), Ok(vec![7]));
        assert!(matches!(
            parse_list(br#"{"id":7}"#, 2, false, ids),
            Err(BoundedError::Invalid(_))
        ));
        assert_eq!(
            parse_list(br#"[{"id":1},{}]"#, 5, false, ids),
            Err(BoundedError::Element(1, "no id".into()))
        );
        assert!(matches!(
            parse_list(br#"[{"id":1}] x"#, 5, false, ids),
            Err(BoundedError::Invalid(_))
        ));
        assert!(matches!(
            parse_list(b"[", 5, false, ids),
            Err(BoundedError::Invalid(_))
        ));
        assert_eq!(parse_list(b"[]", 5, false, ids), Ok(vec![]));
    }
}
