//! What a partition's Raft group replicates: the commands of its entries and what
//! applying one answers, with their binary encoding in the Raft log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CodecError;

/// The application data of a partition group's normal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// One record batch, in chariot-log's encoding, appended to the partition as one
    /// unit; its base offset is assigned when it is applied.
    Append(Vec<u8>),
    /// A consumer group's committed offset, applied as `max(old, new)`.
    Ack {
        /// The consumer group.
        group: String,
        /// The offset after the last record the group has processed.
        offset: u64,
    },
    /// The partition's log is being deleted: every later append and ack is refused
    /// ([`Response::Sealed`]), so that a replica that has not yet learned of the delete
    /// cannot acknowledge a write to a log that is gone.
    Seal,
}

const APPEND: u8 = 1;
const ACK: u8 = 2;
const SEAL: u8 = 3;

impl Command {
    /// The command's bytes in an entry of the Raft log.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::Append(batch) => {
                out.push(APPEND);
                out.extend_from_slice(batch);
            }
            Command::Ack { group, offset } => {
                out.push(ACK);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(group.as_bytes());
            }
            Command::Seal => out.push(SEAL),
        }
    }

    /// Reads a command written by [`Command::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&tag, rest) = bytes
            .split_first()
            .ok_or(CodecError::Truncated("command"))?;
        match tag {
            APPEND => Ok(Command::Append(rest.to_vec())),
            ACK => {
                let (offset, group) = rest
                    .split_first_chunk::<8>()
                    .ok_or(CodecError::Truncated("ack"))?;
                let group = std::str::from_utf8(group)
                    .map_err(|_| CodecError::Invalid("ack group is not UTF-8".into()))?;
                Ok(Command::Ack {
                    group: group.to_owned(),
                    offset: u64::from_be_bytes(*offset),
                })
            }
            SEAL if rest.is_empty() => Ok(Command::Seal),
            other => Err(CodecError::Invalid(format!("unknown command tag {other}"))),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Append(batch) => write!(f, "append({} bytes)", batch.len()),
            Command::Ack { group, offset } => write!(f, "ack({group}, {offset})"),
            Command::Seal => write!(f, "seal"),
        }
    }
}

/// What applying a command answers to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The batch's records got these offsets in the partition.
    Appended {
        /// Offset of its first record.
        base_offset: u64,
        /// Offset of its last record.
        last_offset: u64,
    },
    /// The group's committed offset after the ack (the larger of old and new).
    Acked {
        /// The group's offset now.
        offset: u64,
    },
    /// The partition is sealed (its log deleted): nothing was applied.
    Sealed,
    /// A blank or membership entry was applied.
    Applied,
    /// A command the state machine refused (the batch did not decode, say): nothing was
    /// applied, on any replica, since every replica applies the same entries alike.
    Refused(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_bytes_are_errors() {
        for c in [
            Command::Append(vec![1, 2, 3]),
            Command::Append(Vec::new()),
            Command::Ack {
                group: "g-ü".into(),
                offset: u64::MAX,
            },
            Command::Seal,
        ] {
            let mut b = Vec::new();
            c.encode(&mut b);
            assert_eq!(Command::decode(&b).unwrap(), c);
        }
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[ACK, 0, 0]).is_err());
        assert!(Command::decode(&[9]).is_err());
        assert!(Command::decode(&[SEAL, 0]).is_err());
        assert!(Command::decode(&[ACK, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]).is_err());
    }
}
