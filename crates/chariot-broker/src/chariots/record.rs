//! A Chariots record: tags, a seed naming its causal chain, and the tag hashes it depends
//! on, in every JSON form gochariots clients send.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use chariot_proto::chariots::{fnv1a64, tag_hash};

/// A record as submitted, before it has a place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// Tags (key → value).
    pub tags: BTreeMap<String, String>,
    /// Causal chain.
    pub seed: u64,
    /// Tag hashes this record depends on (within the same seed); empty = none.
    pub prehash: Vec<u64>,
    /// Client id for deduplication, if the client gave one.
    pub id: Option<String>,
    /// Set for a record propagated from another datacenter: where it was first accepted
    /// and its place in that datacenter's total order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A record's datacenter of origin and its TOId there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Datacenter id.
    pub dc: u32,
    /// Position in that datacenter's total order (0, 1, 2, …).
    pub toid: u64,
}

/// Why a submission's JSON is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RecordFormatError(pub String);

fn bad(msg: impl Into<String>) -> RecordFormatError {
    RecordFormatError(msg.into())
}

fn as_u64(v: &Value, field: &str) -> Result<u64, RecordFormatError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| bad(format!("{field} must be an unsigned 64-bit integer"))),
        Value::String(s) => s
            .parse()
            .map_err(|_| bad(format!("{field} must be a decimal unsigned 64-bit integer"))),
        _ => Err(bad(format!("{field} must be a number"))),
    }
}

fn hashes(v: &Value, field: &str) -> Result<Vec<u64>, RecordFormatError> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| as_u64(i, field))
            .collect::<Result<Vec<_>, _>>()?,
        single => vec![as_u64(single, field)?],
    };
    // 0 means "no dependency" in gochariots.
    Ok(list.into_iter().filter(|&h| h != 0).collect())
}

fn tags(v: Option<&Value>) -> Result<BTreeMap<String, String>, RecordFormatError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(bad(format!("tag {k:?} must have a string value"))),
            })
            .collect(),
        Some(_) => Err(bad("tags must be an object of string values")),
    }
}

impl Submission {
    /// Parses the HTTP form: `{"tags": {...}, "seed": 0, "prehash": 0 | [..]}`, with the
    /// decimal-string variants `"strseed"` and `"strhash"` for JavaScript clients, and an
    /// optional client `"id"`.
    pub fn from_http_json(v: &Value) -> Result<Self, RecordFormatError> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("a record must be a JSON object"))?;
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "tags" | "seed" | "strseed" | "prehash" | "strhash" | "id"
            ) {
                return Err(bad(format!("unknown record field {k:?}")));
            }
        }
        let seed = match (obj.get("seed"), obj.get("strseed")) {
            (_, Some(s)) if !s.is_null() => as_u64(s, "strseed")?,
            (Some(s), _) if !s.is_null() => as_u64(s, "seed")?,
            _ => 0,
        };
        let mut prehash = hashes(obj.get("prehash").unwrap_or(&Value::Null), "prehash")?;
        prehash.extend(hashes(
            obj.get("strhash").unwrap_or(&Value::Null),
            "strhash",
        )?);
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(bad("id must be a non-empty string")),
        };
        Ok(Self {
            tags: tags(obj.get("tags"))?,
            seed,
            prehash,
            id,
            origin: None,
        })
    }

    /// Parses the batcher's TCP form as gochariots sends it:
    /// `{"Host":0,"Tags":{...},"Pre":{"Hash":0},"Seed":0}` (`Pre.Hash` may be a list;
    /// `Id` optional).
    pub fn from_tcp_json(v: &Value) -> Result<Self, RecordFormatError> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("a record must be a JSON object"))?;
        let seed = match obj.get("Seed") {
            None | Some(Value::Null) => 0,
            Some(s) => as_u64(s, "Seed")?,
        };
        let prehash = match obj.get("Pre") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(pre)) => {
                hashes(pre.get("Hash").unwrap_or(&Value::Null), "Pre.Hash")?
            }
            Some(_) => return Err(bad("Pre must be an object")),
        };
        let id = match obj.get("Id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(bad("Id must be a non-empty string")),
        };
        Ok(Self {
            tags: tags(obj.get("Tags"))?,
            seed,
            prehash,
            id,
            origin: None,
        })
    }

    /// Hashes of this record's tags.
    pub fn tag_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.tags.iter().map(|(k, v)| tag_hash(k, v))
    }
}

/// What the log stores about a Chariots record besides its tags (as JSON in the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Causal chain.
    pub seed: u64,
    /// Dependencies.
    pub prehash: Vec<u64>,
    /// Datacenter the record was first accepted in.
    pub origin_dc: u32,
    /// Its position in that datacenter's total order.
    pub toid: u64,
    /// Client id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Dependency-queue entry it waited in, if it waited (so a restart never appends it
    /// twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_as: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_three_http_forms_parse_to_the_same_record() {
        let a = Submission::from_http_json(
            &json!({"tags": {"k": "v"}, "prehash": 9489172654252433228u64, "seed": 7}),
        )
        .unwrap();
        let b = Submission::from_http_json(
            &json!({"tags": {"k": "v"}, "prehash": [9489172654252433228u64], "seed": 7}),
        )
        .unwrap();
        let c = Submission::from_http_json(
            &json!({"tags": {"k": "v"}, "strhash": ["9489172654252433228"], "strseed": "7"}),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.prehash, vec![9_489_172_654_252_433_228]);
        let none = Submission::from_http_json(&json!({"tags": {}, "prehash": 0, "seed": 0}));
        assert_eq!(none.map(|s| s.prehash), Ok(vec![]));
    }

    #[test]
    fn the_tcp_form_parses() {
        let s = Submission::from_tcp_json(
            &json!({"Host": 0, "Tags": {"key": "value"}, "Pre": {"Hash": 5}, "Seed": 3}),
        )
        .unwrap();
        assert_eq!((s.seed, s.prehash.clone()), (3, vec![5]));
        assert_eq!(s.tags.get("key").map(String::as_str), Some("value"));
    }

    #[test]
    fn malformed_records_are_refused_with_a_reason() {
        for bad in [
            json!([1, 2]),
            json!({"tags": "k:v"}),
            json!({"tags": {"k": {"nested": 1}}}),
            json!({"seed": -1}),
            json!({"seed": "x"}),
            json!({"prehash": [1, "two"]}),
            json!({"tagz": {}}),
        ] {
            assert!(Submission::from_http_json(&bad).is_err(), "{bad}");
        }
    }
}
