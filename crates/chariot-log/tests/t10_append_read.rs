//! Basic behaviour: offsets, reads, rolls, reopen, concurrency, truncation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;

use chariot_log::{Log, LogConfig, LogError, RecordBatchBuilder, SyncPolicy};
use common::*;

#[test]
fn offsets_are_dense_across_batches_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(3, SyncPolicy::GroupCommit)).unwrap();
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let n = (i % 4 + 1) as usize;
        let values: Vec<Vec<u8>> = (0..n)
            .map(|k| value_for(expected.len() as u64 + k as u64, 10 + k))
            .collect();
        let info = log.append(&mut batch(&values)).unwrap();
        assert_eq!(info.base_offset, expected.len() as u64);
        assert_eq!(info.last_offset, (expected.len() + n - 1) as u64);
        for v in values {
            expected.push((expected.len() as u64, v));
        }
    }
    assert!(log.segments().len() >= 6, "index_max_entries=3 must roll");
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.next_offset(), expected.len() as u64);
    assert_eq!(log.latest_offset(), Some(expected.len() as u64 - 1));
    log.close().unwrap();

    let log = Log::open(dir.path(), small(3, SyncPolicy::GroupCommit)).unwrap();
    assert_eq!(read_all(&log), expected);
    let info = log.append(&mut batch(&[b"after".to_vec()])).unwrap();
    assert_eq!(info.base_offset, expected.len() as u64);
}

#[test]
fn read_mid_batch_returns_the_whole_containing_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let values: Vec<Vec<u8>> = (0..5).map(|i| value_for(i, 8)).collect();
    log.append(&mut batch(&values)).unwrap();
    let r = log.read(3, 1).unwrap();
    assert_eq!(r.first_offset, 0);
    assert_eq!(r.next_offset, 5);
    assert_eq!(r.batches().count(), 1);
    let end = log.read(5, 1024).unwrap();
    assert!(end.bytes.is_empty());
}

#[test]
fn read_at_least_one_batch_even_if_larger_than_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&mut batch(&[vec![7u8; 5000]])).unwrap();
    log.append(&mut batch(&[vec![8u8; 5000]])).unwrap();
    let r = log.read(0, 10).unwrap();
    assert_eq!(r.batches().count(), 1);
    assert_eq!(r.next_offset, 1);
    let r = log.read(0, 1 << 20).unwrap();
    assert_eq!(r.batches().count(), 2);
}

#[test]
fn every_policy_appends_and_reads_back_after_reopen() {
    for sync in [
        SyncPolicy::GroupCommit,
        SyncPolicy::EveryAppend,
        SyncPolicy::Interval(std::time::Duration::from_millis(5)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small(2, sync)).unwrap();
        for i in 0..10 {
            log.append(&mut batch(&[value_for(i, 20)])).unwrap();
        }
        log.flush().unwrap();
        drop(log);
        let log = Log::open(dir.path(), small(2, sync)).unwrap();
        let got = read_all(&log);
        assert_eq!(got.len(), 10, "{sync:?}");
        for (i, (o, v)) in got.iter().enumerate() {
            assert_eq!((*o, v.clone()), (i as u64, value_for(i as u64, 20)));
        }
    }
}

#[test]
fn concurrent_writers_get_unique_dense_offsets_and_readers_see_only_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small(50, SyncPolicy::GroupCommit)).unwrap());
    let writers = 8;
    let per = 200;
    let reader_log = Arc::clone(&log);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_stop = Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        // Whatever the reader sees must be a dense prefix of valid batches.
        let mut seen = 0u64;
        while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let r = reader_log.read(seen, 1 << 16).unwrap();
            for b in r.batches() {
                for rec in b.records() {
                    assert_eq!(rec.offset, seen);
                    seen += 1;
                }
            }
        }
        seen
    });
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per {
                    let v = format!("w{w}-{i}").into_bytes();
                    let info = log.append(&mut batch(std::slice::from_ref(&v))).unwrap();
                    // Acknowledged means readable.
                    assert!(log.next_offset() > info.base_offset);
                    mine.push((info.base_offset, v));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(u64, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() <= (writers * per) as u64);
    all.sort();
    let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..(writers * per) as u64).collect::<Vec<_>>());
    assert_eq!(read_all(&log), all);
}

#[test]
fn truncate_to_drops_the_suffix_and_appending_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(3, SyncPolicy::GroupCommit)).unwrap();
    for i in 0..12 {
        log.append(&mut batch(&[value_for(i, 10), value_for(i, 11)]))
            .unwrap();
    }
    assert!(matches!(
        log.truncate_to(5),
        Err(LogError::NotBatchBoundary { offset: 5 })
    ));
    assert!(matches!(
        log.truncate_to(25),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.truncate_to(8).unwrap();
    assert_eq!(log.next_offset(), 8);
    assert_eq!(read_all(&log).len(), 8);
    assert!(matches!(
        log.read(9, 100),
        Err(LogError::OffsetOutOfRange { next: 8, .. })
    ));
    let info = log.append(&mut batch(&[b"new".to_vec()])).unwrap();
    assert_eq!(info.base_offset, 8);
    drop(log);
    let log = Log::open(dir.path(), small(3, SyncPolicy::GroupCommit)).unwrap();
    let all = read_all(&log);
    assert_eq!(all.len(), 9);
    assert_eq!(all[8], (8, b"new".to_vec()));
    log.truncate_to(0).unwrap();
    assert!(read_all(&log).is_empty());
    assert_eq!(
        log.append(&mut batch(&[b"x".to_vec()]))
            .unwrap()
            .base_offset,
        0
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogConfig::default()),
        Err(LogError::Locked { .. })
    ));
}

#[test]
fn file_slice_points_at_the_same_bytes_as_read() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..4 {
        log.append(&mut batch(&[value_for(i, 100)])).unwrap();
    }
    let slice = log.locate(1, 1 << 20).unwrap().unwrap();
    let mut buf = vec![0u8; slice.len as usize];
    slice
        .file()
        .read_exact_at(&mut buf, slice.position)
        .unwrap();
    assert_eq!(buf, log.read(1, 1 << 20).unwrap().bytes);
    assert_eq!((slice.first_offset, slice.next_offset), (1, 4));
}

#[test]
fn append_batches_assigns_consecutive_offsets_in_one_unit() {
    for sync in [SyncPolicy::GroupCommit, SyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small(4, sync)).unwrap();
        log.append(&mut batch(&[b"first".to_vec()])).unwrap();
        let mut batches: Vec<_> = (0..3)
            .map(|i| batch(&[value_for(i, 5), value_for(i, 6)]))
            .collect();
        let infos = log.append_batches(&mut batches).unwrap();
        let bases: Vec<u64> = infos.iter().map(|i| i.base_offset).collect();
        assert_eq!(bases, vec![1, 3, 5], "{sync:?}");
        assert_eq!(infos[2].last_offset, 6);
        // One call never straddles segments, even past index_max_entries.
        let mut more: Vec<_> = (0..6).map(|i| batch(&[value_for(i, 3)])).collect();
        log.append_batches(&mut more).unwrap();
        let segs = log.segments();
        assert_eq!(segs.last().unwrap().base_offset, 7, "{sync:?}");
        assert_eq!(read_all(&log).len(), 13);
        // A bad batch anywhere rejects the whole call and changes nothing.
        let mut bad = vec![batch(&[b"ok".to_vec()]), RecordBatchBuilder::new().build()];
        assert!(matches!(
            log.append_batches(&mut bad),
            Err(LogError::EmptyBatch)
        ));
        assert_eq!(log.next_offset(), 13);
    }
}
