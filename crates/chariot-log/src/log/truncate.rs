//! Truncation (replication drops a divergent suffix), made crash-safe by a marker file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::segment::{self, Segment};

use super::*;

/// The truncation marker: an empty file named `<offset>.truncate` (20 digits), present
/// while a `truncate_to(offset)` may be half done. Its name is its content, so creating it
/// needs no data block (it works on a full disk, where truncating is how space comes back)
/// and it cannot be torn.
pub(super) fn truncate_marker(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{}.truncate", segment::file_stem(offset)))
}

/// The offset of a truncation marker's file name.
pub(super) fn parse_truncate_marker(name: &str) -> Option<u64> {
    segment::parse_offset_name(name, ".truncate")
}

impl Shared {
    pub(super) fn truncate_to(&self, offset: u64) -> Result<()> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        self.check_usable()?;
        // Appends racing a truncation (a misuse: replication truncates a follower that
        // takes no appends) are written first, so the cut sees one consistent file; they
        // are answered once the outcome of the truncation is known.
        let (group, written) = self.write_pending(&mut w);
        written?;
        let checked = self.check_truncation(&w, offset);
        let (i, target) = match checked {
            Ok(Some(found)) => found,
            Ok(None) | Err(_) => {
                // Nothing to cut (or a refused cut): the appends are kept.
                if !group.slots.is_empty() {
                    let upto = w.next_offset;
                    self.settle(&w, &group, upto, || w.active.sync(), |_| true)?;
                }
                return checked.map(|_| ());
            }
        };
        // Nothing above the cut may become visible or count as durable from here on:
        // a sync in flight now fails its group (`generation`), and any failure below
        // poisons the log, since appenders above the cut may already have been told.
        {
            let mut c = lock(&self.commit);
            w.generation += 1;
            c.generation = w.generation;
            self.visible_next.fetch_min(offset, Ordering::AcqRel);
        }
        if !group.slots.is_empty() {
            self.settle(&w, &group, offset, || w.active.sync(), |s| s.next <= offset)?;
        }
        // From here on a crash leaves a half-done truncation (later segments deleted, the
        // target not yet cut: the cut records would come back). The marker makes the
        // next open finish it; it goes once the cut is durable, before any append.
        let marker = truncate_marker(&self.dir, offset);
        let created = File::create(&marker)
            .map_err(|e| LogError::io("create", &marker, e))
            .and_then(|_| sync_dir(&self.dir));
        if let Err(e) = created {
            return Err(self.poison(e));
        }
        let list = self.segment_list();
        let (kept, gone) = list.split_at(i.min(list.len()));
        self.set_segment_list(kept.to_vec());
        w.active = Arc::clone(&target);
        w.next_offset = offset;
        for s in gone.iter().rev() {
            if let Err(e) = s.delete_files() {
                return Err(self.poison(e));
            }
        }
        // Tail work stops until the next roll: the cut segment is not zeroed again.
        self.tail.retarget(None);
        if let Err(e) = target.truncate_to(offset) {
            return Err(self.poison(e));
        }
        // A marker left behind would cut acknowledged appends at the next open: if it
        // cannot be removed durably, no append may be acknowledged any more.
        let removed = std::fs::remove_file(&marker)
            .map_err(|e| LogError::io("remove", &marker, e))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = removed {
            return Err(self.poison(e));
        }
        // Everything below the cut is durable now (sealed segments, and the cut synced
        // the target): readers and `next_offset` see up to it, even records a racing
        // group wrote below the cut and never published.
        {
            let _c = lock(&self.commit);
            self.visible_next.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Checks that `offset` is a place `truncate_to` can cut: `None` if it is the end
    /// (nothing to cut), else the index of the first segment to delete and the segment
    /// to cut.
    pub(super) fn check_truncation(
        &self,
        w: &Writer,
        offset: u64,
    ) -> Result<Option<(usize, Arc<Segment>)>> {
        let list = self.segment_list();
        let earliest = list.first().map_or(0, |s| s.base_offset());
        if offset < earliest || offset > w.next_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                earliest,
                next: w.next_offset,
            });
        }
        if offset == w.next_offset {
            return Ok(None);
        }
        let i = list.partition_point(|s| s.base_offset() <= offset);
        let Some(target) = i.checked_sub(1).and_then(|i| list.get(i)) else {
            return Err(LogError::NotBatchBoundary { offset });
        };
        if offset != target.next_offset() && target.position_of(offset).is_none() {
            return Err(LogError::NotBatchBoundary { offset });
        }
        Ok(Some((i, Arc::clone(target))))
    }
}
