//! Damage in the middle of a log: bytes that fail their checks with intact batches after
//! them.
//!
//! A crash can only tear the end of what was being written, so recovery cuts a damaged
//! tail of the active segment when nothing valid follows it. Damage *followed* by a batch
//! that passes every check is something else: a flipped bit or a bad sector in data that
//! may well have been acknowledged. Cutting there would drop acknowledged records and hand
//! their offsets to new ones. So such a log opens **damaged**: it serves the intact prefix,
//! refuses writes, changes no byte, and reports a [`Damage`]; an operator then decides
//! with [`crate::repair()`] (which keeps every intact batch and every offset).

use std::path::PathBuf;

use crate::batch::{self, BatchHeader, FLAG_LOST, HEADER_LEN, MAGIC, MIN_RECORD_LEN};

/// Damage found in a segment, with intact batches after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment's data file.
    pub path: PathBuf,
    /// Byte position where the intact prefix ends (the first damaged byte's batch).
    pub position: u64,
    /// First offset that cannot be read (the end of the intact prefix).
    pub offset: u64,
    /// What check failed at `position`.
    pub reason: String,
    /// Byte position of the first intact batch after the damage.
    pub resumes_at: u64,
    /// Base offset of that batch: offsets `offset..resumes_offset` are in the damage.
    pub resumes_offset: u64,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is damaged at byte {} (offset {}: {}); intact batches resume at byte {} \
             (offset {})",
            self.path.display(),
            self.position,
            self.offset,
            self.reason,
            self.resumes_at,
            self.resumes_offset
        )
    }
}

/// Whether `gap` damaged bytes can hold placeholders for `lost` offsets (each lost record
/// took at least [`MIN_RECORD_LEN`] bytes, and its batch a header): a batch claiming more
/// offsets than could have fitted is not the continuation of the log.
pub(crate) fn lost_fit(lost: u64, gap: u64) -> bool {
    lost >= 1
        && lost <= u64::from(u32::MAX)
        && lost
            .checked_mul(MIN_RECORD_LEN as u64)
            .and_then(|b| b.checked_add(HEADER_LEN as u64))
            .is_some_and(|need| need <= gap)
}

/// Looks in `bytes` (which start at a damaged batch whose first offset should have been
/// `expected`) for the first later batch that passes every check, carries offsets after
/// `expected` and could follow the damage: its position in `bytes` and its header.
///
/// Cost: one pass over the bytes; a full check (CRC) only where the magic byte and flags
/// of a header match, which random or zero bytes rarely do.
pub(crate) fn find_resume(bytes: &[u8], expected: u64) -> Option<(usize, BatchHeader)> {
    const MAGIC_AT: usize = 16;
    let last = bytes.len().checked_sub(HEADER_LEN)?;
    (1..=last).find_map(|at| {
        let head = bytes.get(at + MAGIC_AT..at + MAGIC_AT + 2)?;
        if head.first() != Some(&MAGIC) || head.get(1).is_some_and(|f| f & !FLAG_LOST != 0) {
            return None;
        }
        let h = BatchHeader::parse(bytes.get(at..)?).ok()?;
        if h.base_offset <= expected || !lost_fit(h.base_offset - expected, at as u64) {
            return None;
        }
        let one = bytes.get(at..at.checked_add(usize::try_from(h.total_len()).ok()?)?)?;
        batch::validate(one).ok().map(|h| (at, h))
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::batch::{Record, RecordBatchBuilder};

    fn batch_at(base: u64, n: usize) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        for i in 0..n {
            b.push(&Record::value(format!("record {i} of a batch at {base}")));
        }
        let mut batch = b.build();
        batch.set_base_offset(base);
        batch.into_vec()
    }

    #[test]
    fn finds_the_batch_after_a_damaged_one() {
        let mut bytes = batch_at(10, 3);
        let second = bytes.len();
        bytes.extend(batch_at(13, 2));
        bytes[30] ^= 0x40;
        let found = find_resume(&bytes, 10).map(|(at, h)| (at, h.base_offset));
        assert_eq!(found, Some((second, 13)));
    }

    #[test]
    fn a_torn_tail_has_no_resume_point() {
        let mut bytes = batch_at(10, 3);
        bytes.truncate(bytes.len() - 5);
        bytes.extend(vec![0u8; 4096]);
        assert_eq!(find_resume(&bytes, 10), None);
    }

    #[test]
    fn batches_that_do_not_continue_the_log_are_not_resume_points() {
        // An older offset, or more offsets than the damaged bytes could have held.
        let mut bytes = vec![0xAB; 100];
        bytes.extend(batch_at(5, 1));
        assert_eq!(find_resume(&bytes, 10), None);
        let mut bytes = vec![0xAB; 100];
        bytes.extend(batch_at(1000, 1));
        assert_eq!(find_resume(&bytes, 10), None);
        assert!(lost_fit(2, 58 + 36) && !lost_fit(2, 58 + 35) && !lost_fit(0, 1000));
    }
}
