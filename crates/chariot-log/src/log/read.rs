//! Reads: whole, checksummed batches ([`Log::read`]) or a file range for `sendfile`
//! ([`Log::locate`]).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, RecordBatch};
use crate::error::{LogError, Result};
use crate::segment::Segment;

use super::*;

/// A byte range of one segment file holding whole batches, for zero-copy sends.
#[derive(Debug, Clone)]
pub struct FileSlice {
    segment: Arc<Segment>,
    /// Byte position of the first batch in the file.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// Base offset of the first batch (may be below the offset asked for).
    pub first_offset: u64,
    /// Offset just after the last batch in the range.
    pub next_offset: u64,
}

impl FileSlice {
    /// The segment's data file; it stays readable even if retention deletes the segment
    /// while the slice is alive.
    pub fn file(&self) -> &File {
        self.segment.file()
    }

    /// Path of the segment's data file.
    pub fn path(&self) -> &Path {
        self.segment.data_path()
    }
}

/// Whole batches returned by [`Log::read`], checksums verified.
#[derive(Debug, Clone)]
pub struct ReadBatches {
    /// Concatenated batches in their disk (and wire) layout; empty at the end of the log.
    pub bytes: Vec<u8>,
    /// Base offset of the first batch (may be below the offset asked for, since whole
    /// batches are returned).
    pub first_offset: u64,
    /// Offset to read from next.
    pub next_offset: u64,
    /// Earliest offset of the log at the time of the read.
    pub log_earliest: u64,
    /// Next offset of the log (its high watermark) at the time of the read.
    pub log_next: u64,
}

impl ReadBatches {
    /// Iterates the batches in `bytes`.
    pub fn batches(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        let mut rest: &[u8] = &self.bytes;
        std::iter::from_fn(move || {
            let h = BatchHeader::parse(rest).ok()?;
            let (b, tail) = rest.split_at_checked(h.total_len() as usize)?;
            rest = tail;
            RecordBatch::from_vec(b.to_vec()).ok()
        })
    }
}

/// Checks the batch at the start of `rest` (an indexed range): its header, that it is
/// the batch at `expected`, that it lies within `rest`, and its CRC.
pub(super) fn check_batch(rest: &[u8], expected: u64) -> std::result::Result<BatchHeader, String> {
    let h = BatchHeader::parse(rest).map_err(|e| e.to_string())?;
    if h.base_offset != expected {
        return Err(format!(
            "batch base offset {} where {expected} was expected",
            h.base_offset
        ));
    }
    let one = rest
        .get(..h.total_len() as usize)
        .ok_or("batch length runs past the indexed range")?;
    batch::validate_crc(&h, one).map_err(|e| e.to_string())?;
    Ok(h)
}

impl Log {
    /// Reads whole batches starting with the one containing `from`, up to `max_bytes`
    /// (always at least one batch), from a single segment; verifies their checksums.
    /// At the end of the log the result is empty.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<ReadBatches> {
        let (earliest, next) = (self.earliest_offset(), self.next_offset());
        let Some(slice) = self.locate(from, max_bytes)? else {
            return Ok(ReadBatches {
                bytes: Vec::new(),
                first_offset: from,
                next_offset: from,
                log_earliest: earliest,
                log_next: next,
            });
        };
        let mut bytes = slice.segment.read_at(slice.position, slice.len as usize)?;
        let mut at = 0usize;
        let mut expected = slice.first_offset;
        let mut damaged = None;
        while at < bytes.len() {
            let position = slice.position + at as u64;
            let corrupt = |reason: String| LogError::Corrupt {
                path: slice.path().to_path_buf(),
                position,
                offset: expected,
                reason,
            };
            let rest = bytes.get(at..).unwrap_or_default();
            match check_batch(rest, expected) {
                Ok(h) => {
                    at += h.total_len() as usize;
                    expected = h.next_offset();
                }
                Err(reason) => {
                    damaged = Some(corrupt(reason));
                    break;
                }
            }
        }
        // The batches before a damaged one are returned; the damaged one is an error only
        // for a read that starts with it, so readers reach it, and reads past it work.
        let next_offset = match damaged {
            Some(e) if at == 0 => return Err(e),
            Some(_) => {
                bytes.truncate(at);
                expected
            }
            None => slice.next_offset,
        };
        Ok(ReadBatches {
            bytes,
            first_offset: slice.first_offset,
            next_offset,
            log_earliest: earliest,
            log_next: next.max(next_offset),
        })
    }

    /// Like [`Log::read`] but returns the file range instead of the bytes (no copy, no
    /// checksum verification), for `sendfile`. `None` at the end of the log.
    pub fn locate(&self, from: u64, max_bytes: usize) -> Result<Option<FileSlice>> {
        let next = self.shared.visible_next.load(Ordering::Acquire);
        let segs = self.shared.segment_list();
        let earliest = segs.first().map_or(0, |s| s.base_offset());
        if from < earliest || from > next {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                earliest,
                next,
            });
        }
        if from == next {
            return Ok(None);
        }
        let i = segs.partition_point(|s| s.base_offset() <= from);
        let Some(seg) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
            return Ok(None);
        };
        let entries = seg.entries_for_read(from, next, max_bytes);
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        // Known damage is not handed out as batches (its span may be as large as the
        // rest of the segment).
        if let Some(d) = seg.damage_at(u64::from(first.position)) {
            return Err(LogError::Corrupt {
                path: d.path,
                position: d.position,
                offset: d.offset,
                reason: d.reason,
            });
        }
        let position = u64::from(first.position);
        let end = u64::from(last.position) + u64::from(last.len);
        let next_offset = last.next_offset(seg.base_offset());
        Ok(Some(FileSlice {
            segment: Arc::clone(seg),
            position,
            len: end - position,
            first_offset: seg.base_offset() + u64::from(first.relative_offset),
            next_offset,
        }))
    }
}
