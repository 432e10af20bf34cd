//! Retention by size and age, and out-of-range reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::Duration;

use chariot_log::{Log, LogConfig, LogError, SyncPolicy};
use common::*;

fn sized(retention_bytes: Option<u64>, retention_age: Option<Duration>) -> LogConfig {
    LogConfig {
        retention_bytes,
        retention_age,
        ..small(1 << 20, SyncPolicy::Never)
    }
}

#[test]
fn size_retention_deletes_whole_sealed_segments_and_moves_earliest() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 3 << 20;
    let log = Log::open(dir.path(), sized(Some(limit), None)).unwrap();
    let value = vec![0xABu8; 100 * 1024];
    for _ in 0..80 {
        log.append(&mut batch(std::slice::from_ref(&value)))
            .unwrap();
    }
    let segs = log.segments();
    assert!(
        log.size_bytes() <= limit + (1 << 20),
        "{}",
        log.size_bytes()
    );
    let earliest = log.earliest_offset();
    assert!(earliest > 0);
    assert_eq!(earliest, segs[0].base_offset);
    // Files of deleted segments are gone; retained ones are on disk.
    let on_disk = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(on_disk, segs.len());
    match log.read(earliest - 1, 1024) {
        Err(LogError::OffsetOutOfRange {
            requested,
            earliest: e,
            next,
        }) => assert_eq!((requested, e, next), (earliest - 1, earliest, 80)),
        other => panic!("expected out of range, got {other:?}"),
    }
    match log.read(81, 1024) {
        Err(LogError::OffsetOutOfRange {
            earliest: e, next, ..
        }) => {
            assert_eq!((e, next), (earliest, 80))
        }
        other => panic!("expected out of range, got {other:?}"),
    }
    assert_eq!(read_all(&log).len() as u64, 80 - earliest);
    drop(log);
    let log = Log::open(dir.path(), sized(Some(limit), None)).unwrap();
    assert_eq!(log.earliest_offset(), earliest);
    assert_eq!(read_all(&log).first().map(|r| r.0), Some(earliest));
}

#[test]
fn age_retention_deletes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_max_entries: 5,
        ..sized(None, Some(Duration::from_secs(3600)))
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let old = now_ms() - 2 * 3600 * 1000;
    for i in 0..12 {
        log.append(&mut batch_at(&[value_for(i, 10)], old)).unwrap();
    }
    // Segments [0..5) and [5..10) hold only old records; [10..15) mixes old and new, so
    // its newest record is recent and it stays.
    for i in 12..20 {
        log.append(&mut batch(&[value_for(i, 10)])).unwrap();
    }
    assert_eq!(log.apply_retention().unwrap(), 0);
    assert_eq!(log.earliest_offset(), 10);
    let recent = read_all(&log);
    assert_eq!(recent.first().map(|r| r.0), Some(10));
    assert_eq!(recent.len(), 10);
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sized(Some(1), Some(Duration::from_millis(1)))).unwrap();
    log.append(&mut batch_at(&[b"old".to_vec()], 0)).unwrap();
    assert_eq!(log.apply_retention().unwrap(), 0);
    assert_eq!(read_all(&log), vec![(0, b"old".to_vec())]);
}
