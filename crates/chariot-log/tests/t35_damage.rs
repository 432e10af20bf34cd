//! Damage with intact batches after it: the log opens read-only and changes no byte;
//! `repair` keeps every intact batch at its offset and marks the lost offsets, which are
//! never reused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use chariot_log::{repair, Action, Log, LogConfig, LogError, SyncPolicy};
use common::*;

/// One segment of `n` single-record batches unless `entries` is small.
fn write_log(dir: &Path, n: u64, entries: u32) -> Vec<(u64, Vec<u8>)> {
    let log = Log::open(dir, small(entries, SyncPolicy::GroupCommit)).unwrap();
    let mut all = Vec::new();
    for i in 0..n {
        let v = value_for(i, 40);
        log.append(&mut batch(std::slice::from_ref(&v))).unwrap();
        all.push((i, v));
    }
    log.close().unwrap();
    all
}

fn overwrite(path: &Path, pos: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, pos).unwrap();
}

fn cfg() -> LogConfig {
    small(1000, SyncPolicy::GroupCommit)
}

/// Every readable record as (offset, value, in a lost batch).
fn read_marked(log: &Log) -> Vec<(u64, Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut at = log.earliest_offset();
    loop {
        let r = log.read(at, 1 << 20).unwrap();
        if r.bytes.is_empty() {
            return out;
        }
        for b in r.batches() {
            for rec in b.records() {
                out.push((rec.offset, rec.value.to_vec(), b.is_lost()));
            }
        }
        at = r.next_offset;
    }
}

fn expect_damaged<T: std::fmt::Debug>(r: Result<T, LogError>, position: u64) {
    match r {
        Err(LogError::Damaged(d)) => assert_eq!(d.position, position),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn damage_in_the_middle_of_the_active_segment_opens_read_only_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 10, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    flip(&path, starts[3] + 60); // a record byte of offset 3
    let damaged = std::fs::read(&path).unwrap();

    for _ in 0..2 {
        let log = Log::open(dir.path(), cfg()).unwrap();
        let d = log.damage().cloned().expect("damage reported");
        assert_eq!(
            (d.path.clone(), d.position, d.offset),
            (path.clone(), starts[3], 3)
        );
        assert_eq!((d.resumes_at, d.resumes_offset), (starts[4], 4));
        assert!(
            d.to_string().contains(&format!("byte {}", starts[3])),
            "{d}"
        );
        assert!(log.recovery_report().is_empty());
        // The intact prefix is served; nothing past the damage is visible.
        assert_eq!(read_all(&log), all[..3].to_vec());
        assert_eq!(log.next_offset(), 3);
        // Every write is refused, with the place of the damage.
        expect_damaged(log.append(&mut batch(&[b"x".to_vec()])), starts[3]);
        expect_damaged(log.submit(&mut [batch(&[b"y".to_vec()])]), starts[3]);
        expect_damaged(log.truncate_to(2), starts[3]);
        log.close().unwrap();
        // Opening and closing changed no byte (no cut, no trim, no zeros).
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }
}

#[test]
fn repair_marks_the_lost_offsets_and_keeps_every_later_batch_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 10, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    flip(&path, starts[3] + 60);
    let damaged = std::fs::read(&path).unwrap();

    let dry = repair(dir.path(), true).unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.fixes.len(), 1);
    let fix = &dry.fixes[0];
    assert_eq!(
        (fix.position, fix.len, fix.offset),
        (starts[3], starts[4] - starts[3], 3)
    );
    assert_eq!(fix.action, Action::MarkLost { count: 1 });
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "a dry run changes nothing"
    );

    let done = repair(dir.path(), false).unwrap();
    assert!(done.applied);
    assert_eq!(done.fixes, dry.fixes);
    // The overwritten bytes are kept beside the segment.
    let kept = std::fs::read(path.with_extension(format!("log.damaged-{}", starts[3]))).unwrap();
    assert_eq!(kept, damaged[starts[3] as usize..starts[4] as usize]);

    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(log.damage().is_none());
    let read = read_marked(&log);
    assert_eq!(read.len(), 10);
    for (i, (offset, value, lost)) in read.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(*lost, i == 3, "offset {i}");
        if i != 3 {
            assert_eq!(value, &all[i].1);
        }
    }
    // The next record gets the next offset: the lost one is never handed out again.
    let info = log.append(&mut batch(&[b"after repair".to_vec()])).unwrap();
    assert_eq!(info.base_offset, 10);
    log.close().unwrap();
    assert!(repair(dir.path(), true).unwrap().fixes.is_empty());
}

#[test]
fn a_damaged_base_offset_is_restored_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 10, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    // The base offset is the one field outside the CRC.
    flip(&path, starts[5] + 7);
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.damage().map(|d| d.offset), Some(5));
    drop(log);
    let report = repair(dir.path(), false).unwrap();
    assert_eq!(report.fixes.len(), 1);
    assert_eq!(
        report.fixes[0].action,
        Action::RestoreBaseOffset { found: 5 ^ 0x10 }
    );
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(log.damage().is_none());
    assert_eq!(read_all(&log), all);
    assert_eq!(
        log.append(&mut batch(&[b"n".to_vec()]))
            .unwrap()
            .base_offset,
        10
    );
}

#[test]
fn damage_across_several_batches_loses_only_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 10, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    // From inside offset 2 to inside offset 5: 2, 3, 4 and 5 are gone.
    let from = starts[2] + 20;
    overwrite(&path, from, &vec![0xAB; (starts[5] + 30 - from) as usize]);
    let log = Log::open(dir.path(), cfg()).unwrap();
    let d = log.damage().cloned().unwrap();
    assert_eq!(
        (d.offset, d.resumes_offset, d.resumes_at),
        (2, 6, starts[6])
    );
    assert_eq!(read_all(&log), all[..2].to_vec());
    drop(log);
    let report = repair(dir.path(), false).unwrap();
    assert_eq!(report.fixes.len(), 1);
    assert_eq!(report.fixes[0].action, Action::MarkLost { count: 4 });
    let log = Log::open(dir.path(), cfg()).unwrap();
    let read = read_marked(&log);
    let offsets: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    for (offset, value, lost) in read {
        let in_damage = (2..6).contains(&offset);
        assert_eq!(lost, in_damage, "offset {offset}");
        if !in_damage {
            assert_eq!(value, all[offset as usize].1);
        }
    }
}

#[test]
fn a_damaged_sealed_segment_is_readable_around_the_damage_and_repaired_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 12, 4); // segments 0..4, 4..8, 8..12
    let path = segment(dir.path(), 4);
    let starts = batch_starts(&path);
    flip(&path, starts[1] + 60); // offset 5
    flip(&path, starts[3] + 60); // offset 7: the segment's last batch
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(
        log.damage().is_none(),
        "a sealed segment is checked by reads"
    );
    let r = log.read(4, 1 << 20).unwrap();
    assert_eq!((r.first_offset, r.next_offset), (4, 5));
    assert!(
        matches!(log.read(5, 1 << 20), Err(LogError::Corrupt { position, .. }) if position == starts[1])
    );
    assert_eq!(log.read(6, 1).unwrap().next_offset, 7);
    assert!(matches!(log.read(7, 1), Err(LogError::Corrupt { .. })));
    assert_eq!(log.read(8, 1 << 20).unwrap().first_offset, 8);
    drop(log);

    let report = repair(dir.path(), false).unwrap();
    let found: Vec<_> = report.fixes.iter().map(|f| (f.offset, f.action)).collect();
    assert_eq!(
        found,
        vec![
            (5, Action::MarkLost { count: 1 }),
            (7, Action::MarkLost { count: 1 })
        ]
    );
    assert!(
        !path.with_extension("index").exists(),
        "the stale index is rebuilt"
    );
    let log = Log::open(dir.path(), cfg()).unwrap();
    let read = read_marked(&log);
    assert_eq!(read.len(), 12);
    for (offset, value, lost) in read {
        assert_eq!(lost, offset == 5 || offset == 7, "offset {offset}");
        if !lost {
            assert_eq!(value, all[offset as usize].1);
        }
    }
    assert_eq!(
        log.append(&mut batch(&[b"n".to_vec()]))
            .unwrap()
            .base_offset,
        12
    );
}

#[test]
fn repair_reports_a_torn_tail_and_refuses_an_open_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    flip(&path, starts[4] + 60);
    let report = repair(dir.path(), true).unwrap();
    assert_eq!(report.fixes.len(), 1);
    assert_eq!(report.fixes[0].action, Action::CutOnOpen);
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert!(matches!(
        repair(dir.path(), true),
        Err(LogError::Locked { .. })
    ));
    assert_eq!(log.next_offset(), 4);
    assert_eq!(log.recovery_report().len(), 1);
}

/// A batch that lies in the preallocated (fallocated, otherwise never written) rest of
/// the active segment is found: recovery reads only the file's data extents there, and
/// this one is data.
#[test]
fn a_batch_inside_the_preallocated_rest_of_the_active_segment_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_log(dir.path(), 10, 1000);
    let path = segment(dir.path(), 0);
    let starts = batch_starts(&path);
    let end = std::fs::metadata(&path).unwrap().len();
    let bytes = std::fs::read(&path).unwrap();
    let last = bytes[starts[9] as usize..end as usize].to_vec();
    // Batches 8 and 9 zeroed where they were, 9 again 8 MiB in, inside 16 MiB of
    // unwritten extents (as a crash leaves a preallocated segment).
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 16 << 20).unwrap();
    f.write_all_at(&vec![0u8; (end - starts[8]) as usize], starts[8])
        .unwrap();
    let at = 8u64 << 20;
    f.write_all_at(&last, at).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let log = Log::open(dir.path(), cfg()).unwrap();
    let d = log
        .damage()
        .cloned()
        .expect("the batch after the zeros is found");
    assert_eq!((d.position, d.offset), (starts[8], 8));
    assert_eq!((d.resumes_at, d.resumes_offset), (at, 9));
    assert_eq!(read_all(&log), all[..8].to_vec());
    log.close().unwrap();
}
