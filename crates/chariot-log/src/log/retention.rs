//! Retention: the oldest sealed segments go once a size or age limit is exceeded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::segment::Segment;

use super::*;

impl Shared {
    /// Deletes the oldest sealed segments while a limit is exceeded. Only a prefix is
    /// removed, so the retained offsets stay dense.
    pub(super) fn apply_retention(&self, w: &Writer) -> Result<usize> {
        let (max_bytes, max_age) = (self.config.retention_bytes, self.config.retention_age);
        if max_bytes.is_none() && max_age.is_none() {
            return Ok(0);
        }
        let list = self.segment_list();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        let mut total: u64 = list.iter().map(|s| s.size()).sum();
        let mut drop_count = 0;
        for s in list.iter() {
            if Arc::ptr_eq(s, &w.active) {
                break;
            }
            let too_big = max_bytes.is_some_and(|m| total > m);
            let too_old =
                max_age.is_some_and(|age| s.max_timestamp() < now_ms - age.as_millis() as i64);
            if !(too_big || too_old) {
                break;
            }
            total -= s.size();
            drop_count += 1;
        }
        self.drop_oldest(&list, drop_count)
    }

    /// Deletes the sealed segments whose records all lie below `offset`.
    pub(super) fn purge_below(&self, w: &Writer, offset: u64) -> Result<usize> {
        let list = self.segment_list();
        let drop_count = list
            .iter()
            .take_while(|s| !Arc::ptr_eq(s, &w.active) && s.next_offset() <= offset)
            .count();
        self.drop_oldest(&list, drop_count)
    }

    /// Takes the first `drop_count` segments of `list` out of the log, then deletes their
    /// files (readers holding one keep reading it until they let go).
    fn drop_oldest(&self, list: &[Arc<Segment>], drop_count: usize) -> Result<usize> {
        if drop_count == 0 {
            return Ok(0);
        }
        let (gone, kept) = list.split_at(drop_count);
        self.set_segment_list(kept.to_vec());
        for s in gone {
            s.delete_files()?;
        }
        sync_dir(&self.dir)?;
        Ok(drop_count)
    }
}
