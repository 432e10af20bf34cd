//! The scrub: CRC-checking every batch of the sealed segments, at a pace the caller
//! sets, so that damage (a flipped bit, a bad sector) in data no read has touched for a
//! while is reported before a reader or a consumer group runs into it.
//!
//! A scrub only reads. What it finds is kept with the segment (reads of a damaged batch
//! then fail at once, naming file and position; reads around it work) and listed by
//! [`Log::sealed_damage`]; appends go on, since they never touch a sealed segment.
//! Mending is `repair`'s, offline. The active segment is not scrubbed: recovery checked
//! every batch of it at open, and it is checked once it is sealed.

use std::sync::Arc;

use crate::damage::Damage;
use crate::error::Result;
use crate::segment::{IndexEntry, Segment};

use super::read::check_batch;
use super::*;

/// Bytes a scrub reads at once (or one batch, if larger).
const SCRUB_CHUNK: usize = 1 << 20;
/// Index entries copied out of a segment's index at once.
const ENTRIES_AT_ONCE: usize = 4096;

/// What one scrub pass over a log did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Sealed segments checked to their end.
    pub segments: usize,
    /// Bytes read and checked.
    pub bytes: u64,
    /// Damage found that was not known before, oldest first.
    pub found: Vec<Damage>,
    /// False if `pace` stopped the pass before its end.
    pub complete: bool,
}

impl Log {
    /// CRC-checks every batch of every sealed segment, oldest first. After each read
    /// (at most 1 MiB, or one batch) it calls `pace` with the bytes read; `pace` may
    /// sleep to bound the rate, and returns false to stop the pass. Memory: one read.
    ///
    /// A batch that fails its checks, or whose bytes cannot be read, becomes damage of
    /// its segment (see the module documentation); an error is returned only if the log
    /// is closed.
    pub fn scrub(&self, pace: &mut dyn FnMut(u64) -> bool) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        // One segment at a time, looked up afresh: a segment retention (or a truncation)
        // deletes meanwhile is let go at once, not held open (its disk space kept) to
        // the end of the pass.
        let mut after = None;
        while let Some(seg) = self.next_sealed(after) {
            after = Some(seg.base_offset());
            let mut from = 0;
            'segment: loop {
                self.shared.check_usable()?;
                let entries = seg.entries(from, ENTRIES_AT_ONCE);
                if entries.is_empty() {
                    report.segments += 1;
                    break;
                }
                from += entries.len();
                let mut rest: &[IndexEntry] = &entries;
                while let Some((group, after)) = next_group(&seg, rest) {
                    rest = after;
                    let bytes = self.check_group(&seg, group, &mut report);
                    report.bytes += bytes;
                    if !pace(bytes) {
                        return Ok(report);
                    }
                    if !self.is_sealed(&seg) {
                        break 'segment;
                    }
                }
            }
        }
        report.complete = true;
        Ok(report)
    }

    /// Every damaged place known in the sealed segments (found when the log was opened
    /// or by [`Log::scrub`]), oldest first. Damage of the active segment, which makes
    /// the log read-only, is [`Log::damage`].
    pub fn sealed_damage(&self) -> Vec<Damage> {
        self.shared
            .segment_list()
            .iter()
            .flat_map(|s| s.known_damage())
            .collect()
    }

    /// Reads the batches of `group` (adjacent in the file) and checks each; returns the
    /// bytes read.
    fn check_group(
        &self,
        seg: &Arc<Segment>,
        group: &[IndexEntry],
        report: &mut ScrubReport,
    ) -> u64 {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return 0;
        };
        let start = u64::from(first.position);
        let len = (u64::from(last.position) + u64::from(last.len) - start) as usize;
        let base = seg.base_offset();
        let read = seg.read_at(start, len);
        for e in group {
            let expected = base + u64::from(e.relative_offset);
            let failure = match &read {
                Ok(bytes) => {
                    let at = (u64::from(e.position) - start) as usize;
                    let one = bytes.get(at..at + e.len as usize).unwrap_or_default();
                    match check_batch(one, expected) {
                        Err(reason) => Some(reason),
                        Ok(h) if h.total_len() != u64::from(e.len) => Some(format!(
                            "batch of {} bytes where the index says {}",
                            h.total_len(),
                            e.len
                        )),
                        Ok(_) => None,
                    }
                }
                // A bad sector: the whole read fails. Each batch of it is read alone, so
                // only the unreadable ones are reported.
                Err(_) if group.len() > 1 => {
                    self.check_group(seg, std::slice::from_ref(e), report);
                    continue;
                }
                Err(err) => Some(err.to_string()),
            };
            let Some(reason) = failure else { continue };
            let d = Damage {
                path: seg.data_path().to_path_buf(),
                position: u64::from(e.position),
                offset: expected,
                reason,
                resumes_at: u64::from(e.position) + u64::from(e.len),
                resumes_offset: e.next_offset(base),
            };
            // A truncation (replication's) may have cut the segment since the entries
            // were copied: what it removed is not damage.
            if !self.still_sealed(seg, e) || !seg.record_damage(d.clone()) {
                continue;
            }
            tracing::error!(damage = %d, "scrub found damage in a sealed segment: reads stop \
                            at it, the rest is served; see `chariot repair`");
            report.found.push(d);
        }
        len as u64
    }

    /// The first sealed segment based after `after` (from the first with `None`).
    fn next_sealed(&self, after: Option<u64>) -> Option<Arc<Segment>> {
        let segs = self.shared.segment_list();
        let sealed = segs.len().saturating_sub(1);
        segs.iter()
            .take(sealed)
            .find(|s| after.is_none_or(|a| s.base_offset() > a))
            .cloned()
    }

    /// Whether `seg` is still listed, and not the active segment.
    fn is_sealed(&self, seg: &Arc<Segment>) -> bool {
        let segs = self.shared.segment_list();
        segs.iter().rev().skip(1).any(|s| Arc::ptr_eq(s, seg))
    }

    /// Whether `e` is still a batch of `seg` (same offset, position and length), and
    /// `seg` still a sealed segment.
    fn still_sealed(&self, seg: &Arc<Segment>, e: &IndexEntry) -> bool {
        let offset = seg.base_offset() + u64::from(e.relative_offset);
        self.is_sealed(seg)
            && seg
                .entries_for_read(offset, u64::MAX, 1)
                .first()
                .is_some_and(|now| now == e)
    }
}

/// The next run of entries of `rest` to read at once: adjacent, at most
/// [`SCRUB_CHUNK`] bytes (or one entry), skipping damage already known (its span may
/// be as large as the rest of the segment); and the entries after it.
fn next_group<'a>(
    seg: &Segment,
    mut rest: &'a [IndexEntry],
) -> Option<(&'a [IndexEntry], &'a [IndexEntry])> {
    while let Some((first, after)) = rest.split_first() {
        if seg.damage_at(u64::from(first.position)).is_none() {
            break;
        }
        rest = after;
    }
    let first = rest.first()?;
    let mut end = 1;
    let mut bytes = first.len as usize;
    while let (Some(prev), Some(e)) = (rest.get(end - 1), rest.get(end)) {
        let adjacent = e.position == prev.position + prev.len;
        if !adjacent
            || bytes + e.len as usize > SCRUB_CHUNK
            || seg.damage_at(u64::from(e.position)).is_some()
        {
            break;
        }
        bytes += e.len as usize;
        end += 1;
    }
    Some(rest.split_at(end))
}
