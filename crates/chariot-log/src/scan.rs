//! Replaying a whole log: what every service that keeps its state as records of a log
//! (consumer offsets, the Chariots dependency queue, the senders' state) does at start.

use crate::batch::RecordView;
use crate::error::LogError;
use crate::log::Log;

/// Bytes read per step of a scan.
const STEP_BYTES: usize = 1 << 20;

/// Calls `f` with every record of `log` from its earliest retained offset to its end,
/// in order, skipping the batches `repair` marked as lost (their records are gone: they
/// stand only for offsets). Stops at the first error, of the log (damage where a read
/// starts, named by file and position) or of `f`. Blocking.
pub fn replay<E: From<LogError>>(
    log: &Log,
    mut f: impl FnMut(&RecordView<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = log.earliest_offset();
    loop {
        let r = log.read(at, STEP_BYTES)?;
        if r.bytes.is_empty() {
            return Ok(());
        }
        for batch in r.batches().filter(|b| !b.is_lost()) {
            for rec in batch.records() {
                f(&rec)?;
            }
        }
        at = r.next_offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{RecordBatch, RecordBatchBuilder};
    use crate::config::LogConfig;

    #[test]
    fn replay_visits_every_record_in_order_and_skips_lost_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..3000u32 {
            let mut b = RecordBatchBuilder::new();
            b.push_parts(1, None, &vec![0u8; 1000 + (i % 7) as usize], &[]);
            log.append(&mut b.build()).unwrap();
        }
        let mut lost = RecordBatch::lost_placeholder(3000, 2, 200, 1).unwrap();
        log.append(&mut lost).unwrap();
        let mut seen = Vec::new();
        replay(&log, |r| {
            seen.push(r.offset);
            Ok::<_, LogError>(())
        })
        .unwrap();
        assert_eq!(seen, (0..3000).collect::<Vec<u64>>());
        let stopped: Result<(), LogError> = replay(&log, |r| {
            if r.offset == 5 {
                return Err(LogError::Closed);
            }
            Ok(())
        });
        assert!(matches!(stopped, Err(LogError::Closed)));
    }
}
