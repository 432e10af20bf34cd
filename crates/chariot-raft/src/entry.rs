//! A Raft entry as one record batch of the group's chariot-log: the batch's base offset
//! is the entry's index, its one record's value is `kind, term, leader node, payload`.

use chariot_log::{Record, RecordBatch, RecordBatchBuilder};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::EntryPayload;

use crate::command::Command;
use crate::error::CodecError;
use crate::{Entry, LogId};

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// Encodes `entry` as the batch to append at its index (the log stamps the offset).
pub fn to_batch(entry: &Entry) -> RecordBatch {
    let mut value = Vec::with_capacity(17 + payload_hint(&entry.payload));
    let kind = match &entry.payload {
        EntryPayload::Blank => BLANK,
        EntryPayload::Normal(_) => NORMAL,
        EntryPayload::Membership(_) => MEMBERSHIP,
    };
    value.push(kind);
    value.extend_from_slice(&entry.log_id.leader_id.term.to_be_bytes());
    value.extend_from_slice(&entry.log_id.leader_id.node_id.to_be_bytes());
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(c) => c.encode(&mut value),
        EntryPayload::Membership(m) => {
            // Serializing a membership (sets of ids and addresses) cannot fail.
            if let Ok(json) = serde_json::to_vec(m) {
                value.extend_from_slice(&json);
            }
        }
    }
    let mut builder = RecordBatchBuilder::with_capacity(value.len() + 64);
    builder.push(&Record::value(value));
    let mut batch = builder.build();
    batch.set_leader_term(entry.log_id.leader_id.term);
    batch
}

fn payload_hint(p: &EntryPayload<Command, u64, openraft::impls::BasicNode>) -> usize {
    match p {
        EntryPayload::Normal(Command::Append(b)) => b.len() + 1,
        _ => 64,
    }
}

/// Splits `batches` into consecutive pieces of at most `max` bytes each (a piece of one
/// batch may be larger), in order: chariot-log appends one piece as one unit, and a
/// unit holds at most its `max_batch_bytes`.
pub(crate) fn split_by_bytes(batches: Vec<RecordBatch>, max: usize) -> Vec<Vec<RecordBatch>> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = 0;
    for b in batches {
        if !piece.is_empty() && bytes + b.len() > max {
            pieces.push(std::mem::take(&mut piece));
            bytes = 0;
        }
        bytes += b.len();
        piece.push(b);
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// Decodes the entry a batch read back from the log holds.
pub fn from_batch(batch: &RecordBatch) -> Result<Entry, CodecError> {
    let index = batch.base_offset();
    let mut records = batch.records();
    let record = records
        .next()
        .ok_or(CodecError::Truncated("entry record"))?;
    if records.next().is_some() {
        return Err(CodecError::Invalid(format!(
            "entry {index}: a batch of more than one record"
        )));
    }
    decode_value(index, record.value)
}

fn decode_value(index: u64, value: &[u8]) -> Result<Entry, CodecError> {
    let (&kind, rest) = value
        .split_first()
        .ok_or(CodecError::Truncated("entry kind"))?;
    let (term, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(CodecError::Truncated("entry term"))?;
    let (node, payload) = rest
        .split_first_chunk::<8>()
        .ok_or(CodecError::Truncated("entry leader"))?;
    let log_id = LogId::new(
        LeaderId {
            term: u64::from_be_bytes(*term),
            node_id: u64::from_be_bytes(*node),
        },
        index,
    );
    let payload = match kind {
        BLANK => EntryPayload::Blank,
        NORMAL => EntryPayload::Normal(Command::decode(payload)?),
        MEMBERSHIP => EntryPayload::Membership(
            serde_json::from_slice(payload)
                .map_err(|e| CodecError::Invalid(format!("entry {index}: membership: {e}")))?,
        ),
        other => {
            return Err(CodecError::Invalid(format!(
                "entry {index}: unknown kind {other}"
            )))
        }
    };
    Ok(Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;

    use super::*;

    fn at(mut batch: RecordBatch, index: u64) -> RecordBatch {
        batch.set_base_offset(index);
        batch
    }

    fn batch_of(value_len: usize) -> RecordBatch {
        let mut b = RecordBatchBuilder::new();
        b.push(&Record::value(vec![7u8; value_len]));
        b.build()
    }

    #[test]
    fn splits_keep_order_and_stay_under_the_limit_but_for_single_large_batches() {
        let batches: Vec<RecordBatch> = [10, 10, 10, 500, 10].into_iter().map(batch_of).collect();
        let lens: Vec<usize> = batches.iter().map(RecordBatch::len).collect();
        let max = lens[0] * 2;
        let pieces: Vec<Vec<usize>> = split_by_bytes(batches, max)
            .iter()
            .map(|p| p.iter().map(RecordBatch::len).collect())
            .collect();
        assert_eq!(
            pieces,
            vec![
                vec![lens[0], lens[1]],
                vec![lens[2]],
                vec![lens[3]],
                vec![lens[4]]
            ]
        );
        assert!(split_by_bytes(Vec::new(), max).is_empty());
    }

    #[test]
    fn entries_round_trip_through_batches() {
        let id = |t, n, i| {
            LogId::new(
                LeaderId {
                    term: t,
                    node_id: n,
                },
                i,
            )
        };
        let members: BTreeMap<u64, openraft::impls::BasicNode> =
            [(1, "127.0.0.1:7971"), (2, "127.0.0.1:7972")]
                .into_iter()
                .map(|(i, a)| (i, openraft::impls::BasicNode { addr: a.into() }))
                .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], members).unwrap();
        for e in [
            Entry {
                log_id: id(1, 2, 0),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: id(3, 1, 7),
                payload: EntryPayload::Normal(Command::Append(vec![9; 100])),
            },
            Entry {
                log_id: id(u64::MAX, 5, 9),
                payload: EntryPayload::Membership(membership),
            },
        ] {
            let b = at(to_batch(&e), e.log_id.index);
            let back = from_batch(&RecordBatch::from_vec(b.into_vec()).unwrap()).unwrap();
            assert_eq!(back, e);
        }
        assert!(decode_value(0, &[NORMAL, 0, 0]).is_err());
        assert!(decode_value(0, &[7; 17]).is_err());
    }
}
