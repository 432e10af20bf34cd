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

#[test]
fn purge_below_deletes_only_sealed_segments_wholly_below_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sized(None, None)).unwrap();
    let value = vec![0x5Au8; 100 * 1024];
    for _ in 0..40 {
        log.append(&mut batch(std::slice::from_ref(&value)))
            .unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 3, "{segs:?}");
    // An offset inside the second segment: only the first goes.
    let inside = segs[1].base_offset + 1;
    assert_eq!(log.purge_below(inside).unwrap(), 1);
    assert_eq!(log.earliest_offset(), segs[1].base_offset);
    assert!(!segment(dir.path(), segs[0].base_offset).exists());
    // Past the end: every sealed segment goes, the active one stays, offsets go on.
    let gone = log.purge_below(u64::MAX).unwrap();
    assert_eq!(gone, segs.len() - 2);
    let active = log.segments();
    assert_eq!(active.len(), 1);
    assert_eq!(log.next_offset(), 40);
    let info = log
        .append(&mut batch(std::slice::from_ref(&value)))
        .unwrap();
    assert_eq!(info.base_offset, 40);
    drop(log);
    let log = Log::open(dir.path(), sized(None, None)).unwrap();
    assert_eq!(log.earliest_offset(), active[0].base_offset);
    assert_eq!(log.next_offset(), 41);
}

#[test]
fn open_from_starts_a_new_log_at_the_offset_and_an_existing_one_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_from(dir.path(), sized(None, None), 1_000).unwrap();
    assert_eq!((log.earliest_offset(), log.next_offset()), (1_000, 1_000));
    let info = log.append(&mut batch(&[b"a".to_vec()])).unwrap();
    assert_eq!(info.base_offset, 1_000);
    drop(log);
    let log = Log::open_from(dir.path(), sized(None, None), 7).unwrap();
    assert_eq!((log.earliest_offset(), log.next_offset()), (1_000, 1_001));
    assert_eq!(read_all(&log), vec![(1_000, b"a".to_vec())]);
}
