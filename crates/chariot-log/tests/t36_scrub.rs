//! The scrub: sealed segments CRC-checked at a set pace, damage reported before a read
//! reaches it, the log still writable; and damaged sealed segments without an index.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use chariot_log::{Log, LogConfig, LogError, SyncPolicy};
use common::*;

/// Four single-record batches per segment: 12 records make two sealed segments (offsets
/// 0..4 and 4..8) and the active one.
fn cfg() -> LogConfig {
    small(4, SyncPolicy::GroupCommit)
}

fn write_log(dir: &Path, n: u64) {
    let log = Log::open(dir, cfg()).unwrap();
    for i in 0..n {
        log.append(&mut batch(&[value_for(i, 300)])).unwrap();
    }
    log.close().unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, LogError>, file: &Path, at: u64) {
    match r {
        Err(LogError::Corrupt { path, position, .. }) => {
            assert_eq!((path.as_path(), position), (file, at));
        }
        other => panic!(
            "expected Corrupt at {} byte {at}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn the_scrub_reports_a_flipped_byte_in_a_sealed_segment_before_any_read() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let (first, second) = (segment(dir.path(), 0), segment(dir.path(), 4));
    let sealed_bytes = len(&first) + len(&second);

    // A clean log scrubs clean: every sealed byte read, nothing found.
    let log = Log::open(dir.path(), cfg()).unwrap();
    let mut paced = 0u64;
    let report = log
        .scrub(&mut |n| {
            paced += n;
            true
        })
        .unwrap();
    assert!(report.complete && report.found.is_empty(), "{report:?}");
    assert_eq!(
        (report.segments, report.bytes, paced),
        (2, sealed_bytes, sealed_bytes)
    );
    drop(log);

    let starts = batch_starts(&second);
    flip(&second, starts[1] + 100); // inside the record of offset 5
    let log = Log::open(dir.path(), cfg()).unwrap();
    // The index is intact, so opening did not read the batch: nothing is known yet.
    assert!(log.sealed_damage().is_empty() && log.damage().is_none());
    let report = log.scrub(&mut |_| true).unwrap();
    assert!(report.complete);
    assert_eq!(report.found.len(), 1, "{report:?}");
    let d = &report.found[0];
    assert_eq!((&d.path, d.position, d.offset), (&second, starts[1], 5));
    assert!(d.reason.contains("CRC"), "{}", d.reason);
    assert_eq!(log.sealed_damage(), report.found);
    // A second pass knows it and skips its bytes.
    let again = log.scrub(&mut |_| true).unwrap();
    assert!(again.complete && again.found.is_empty(), "{again:?}");
    assert_eq!(again.bytes, sealed_bytes - (starts[2] - starts[1]));

    // Reads: the damaged batch is a clear error, everything around it is served.
    expect_corrupt(log.read(5, 1 << 20), &second, starts[1]);
    let before = log.read(4, 1 << 20).unwrap();
    assert_eq!((before.first_offset, before.next_offset), (4, 5));
    assert_eq!(log.read(6, 1 << 20).unwrap().first_offset, 6);
    // Appends go on: they never touch a sealed segment.
    let appended = log.append(&mut batch(&[value_for(12, 300)])).unwrap();
    assert_eq!(appended.base_offset, 12);
    let tail = log.read(12, 1 << 20).unwrap();
    assert_eq!(
        tail.batches()
            .next()
            .unwrap()
            .records()
            .next()
            .unwrap()
            .value,
        value_for(12, 300)
    );
}

#[test]
fn a_paced_scrub_stops_when_its_pace_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let first = segment(dir.path(), 0);
    flip(&segment(dir.path(), 4), 100);
    let log = Log::open(dir.path(), cfg()).unwrap();
    let mut calls = 0;
    let report = log
        .scrub(&mut |_| {
            calls += 1;
            false
        })
        .unwrap();
    // Stopped after the first read (the whole first segment fits one): the damaged
    // second segment was not reached.
    assert_eq!(calls, 1);
    assert!(!report.complete && report.found.is_empty(), "{report:?}");
    assert_eq!((report.segments, report.bytes), (0, len(&first)));
    assert!(log.sealed_damage().is_empty());
}

#[test]
fn damage_ending_a_sealed_segment_without_its_index_runs_to_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let second = segment(dir.path(), 4);
    let starts = batch_starts(&second);
    flip(&second, starts[3] + 100); // offset 7, the segment's last batch
    std::fs::remove_file(second.with_extension("index")).unwrap();
    let size = len(&second);

    let log = Log::open(dir.path(), cfg()).unwrap();
    let found = log.sealed_damage();
    assert_eq!(found.len(), 1, "{found:?}");
    // No intact batch follows in the file: the next segment says which offsets it held.
    let d = &found[0];
    assert_eq!(
        (d.position, d.offset, d.resumes_at, d.resumes_offset),
        (starts[3], 7, size, 8)
    );
    expect_corrupt(log.read(7, 1 << 20), &second, starts[3]);
    assert_eq!(log.read(6, 1 << 20).unwrap().next_offset, 7);
    assert_eq!(log.read(8, 1 << 20).unwrap().first_offset, 8);
    // The scrub does not report it twice.
    assert!(log.scrub(&mut |_| true).unwrap().found.is_empty());
    drop(log);
    assert_eq!(len(&second), size, "opening changed no byte");
    assert!(
        !second.with_extension("index").exists(),
        "no index of damaged data was written"
    );
}

#[test]
fn a_sealed_segment_whose_damage_cannot_hold_its_offsets_fails_to_open_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 12);
    let second = segment(dir.path(), 4);
    let starts = batch_starts(&second);
    // The last batch cut to 10 bytes: too few to have held offset 7.
    let f = OpenOptions::new().write(true).open(&second).unwrap();
    f.set_len(starts[3] + 10).unwrap();
    drop(f);
    std::fs::remove_file(second.with_extension("index")).unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(LogError::Corrupt {
            path,
            position,
            reason,
            ..
        }) => {
            assert_eq!((path, position), (second.clone(), starts[3]));
            assert!(reason.contains("next segment"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(len(&second), starts[3] + 10, "nothing was cut");
}

/// Data files this process holds open although they were deleted.
fn deleted_segments_held() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.contains(".log") && t.ends_with("(deleted)")
        })
        .count()
}

#[test]
fn a_segment_retention_deletes_during_a_scrub_is_let_go_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(3 * 4 * 400),
        ..cfg()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..12 {
        log.append(&mut batch(&[value_for(i, 300)])).unwrap();
    }
    let first = log.earliest_offset();
    let mut next = 12;
    let mut held = Vec::new();
    let report = log
        .scrub(&mut |_| {
            held.push(deleted_segments_held());
            // While the first segment is being scrubbed, enough appends for retention
            // to delete it (and more).
            if held.len() == 1 {
                while log.earliest_offset() <= first + 4 {
                    log.append(&mut batch(&[value_for(next, 300)])).unwrap();
                    next += 1;
                }
            }
            true
        })
        .unwrap();
    assert!(report.complete && report.found.is_empty(), "{report:?}");
    assert!(held.len() >= 2, "{held:?}");
    assert!(
        held[1..].iter().all(|&n| n == 0),
        "deleted segments held open: {held:?}"
    );
    assert_eq!(deleted_segments_held(), 0);
}
