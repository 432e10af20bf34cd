//! Torn and corrupt files: recovery keeps every intact batch and reports the rest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chariot_log::{Log, LogError, SyncPolicy};
use common::*;

const CFG_ENTRIES: u32 = 4;

/// Writes `batches` single-record batches (values by offset) and closes the log.
fn write_log(dir: &Path, batches: u64, len: usize) -> Vec<(u64, Vec<u8>)> {
    let log = Log::open(dir, small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
    let mut all = Vec::new();
    for i in 0..batches {
        let v = value_for(i, len);
        log.append(&mut batch(std::slice::from_ref(&v))).unwrap();
        all.push((i, v));
    }
    log.close().unwrap();
    all
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncating_the_active_segment_at_every_byte_recovers_the_last_whole_batch() {
    let pristine = tempfile::tempdir().unwrap();
    let all = write_log(pristine.path(), 10, 30); // 3 segments: 4 + 4 + 2 batches
    let files = segment_files(pristine.path());
    assert_eq!(files.len(), 3);
    let active = files.last().unwrap();
    let starts = batch_starts(active);
    let len = std::fs::metadata(active).unwrap().len();
    let pristine_bytes = std::fs::read(active).unwrap();
    // The last two batches of the active segment, byte by byte.
    for cut in starts[0]..len {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let f = OpenOptions::new()
            .write(true)
            .open(work.path().join(active.file_name().unwrap()))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let whole_batches = starts.iter().filter(|&&s| s < cut).count() as u64
            - u64::from(!starts.contains(&cut) && cut > 0);
        let whole = starts.iter().filter(|&&s| s < cut).count() as u64;
        let kept = if starts.contains(&cut) {
            whole
        } else {
            whole - 1
        };
        assert_eq!(kept, whole_batches);
        let log = Log::open(work.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
        let expected: Vec<_> = all[..(8 + kept) as usize].to_vec();
        assert_eq!(read_all(&log), expected, "cut at {cut}");
        // A cut tail is reported (and kept aside) unless it is all zeros, which is
        // indistinguishable from preallocated space and carries nothing to keep.
        let tail_start = starts
            .iter()
            .copied()
            .filter(|&s| s < cut)
            .max()
            .unwrap_or(0);
        let tail_has_data = !starts.contains(&cut)
            && pristine_bytes[tail_start as usize..cut as usize]
                .iter()
                .any(|&b| b != 0);
        assert_eq!(
            log.recovery_report().len(),
            usize::from(tail_has_data),
            "cut at {cut}"
        );
        let info = log.append(&mut batch(&[b"next".to_vec()])).unwrap();
        assert_eq!(info.base_offset, 8 + kept, "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_of_the_active_segment_cuts_it_and_keeps_the_bytes() {
    // Damage with nothing valid after it is a torn write. (Damage with intact batches
    // after it is not: see t35_damage.)
    let pristine = tempfile::tempdir().unwrap();
    let all = write_log(pristine.path(), 10, 30);
    let files = segment_files(pristine.path());
    let active = files.last().unwrap();
    let starts = batch_starts(active);
    let len = std::fs::metadata(active).unwrap().len();
    let last = *starts.last().unwrap();
    for pos in 0..len {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let path = work.path().join(active.file_name().unwrap());
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], pos).unwrap();
        drop(f);
        let damaged_batch = starts.iter().filter(|&&s| s <= pos).count() - 1;
        let log = Log::open(work.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
        assert_eq!(
            read_all(&log),
            all[..8 + damaged_batch].to_vec(),
            "flip at {pos}"
        );
        if pos < last {
            // An intact batch follows: nothing is cut, and the log refuses writes.
            assert!(log.recovery_report().is_empty(), "flip at {pos}");
            assert_eq!(
                log.damage().map(|d| d.position),
                Some(starts[damaged_batch])
            );
            continue;
        }
        assert!(log.damage().is_none(), "flip at {pos}");
        let report = log.recovery_report();
        assert_eq!(report.len(), 1, "flip at {pos}");
        assert_eq!(report[0].position, starts[damaged_batch]);
        // The cut bytes are preserved beside the segment, never silently deleted (up to
        // the last non-zero byte: zeros after it could be preallocated space).
        let kept = std::fs::read(report[0].kept_in.as_ref().unwrap()).unwrap();
        let original = std::fs::read(active).unwrap();
        let mut expected_tail = original[starts[damaged_batch] as usize..].to_vec();
        expected_tail[(pos - starts[damaged_batch]) as usize] ^= 0x01;
        while expected_tail.last() == Some(&0) {
            expected_tail.pop();
        }
        assert_eq!(kept, expected_tail, "flip at {pos}");
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_by_file_and_position() {
    let pristine = tempfile::tempdir().unwrap();
    write_log(pristine.path(), 10, 30);
    let files = segment_files(pristine.path());
    let sealed = &files[1]; // offsets 4..8
    let starts = batch_starts(sealed);
    let work = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), work.path());
    let path = work.path().join(sealed.file_name().unwrap());
    let pos = starts[2] + 40; // inside the third batch (offset 6), within the CRC range
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&[0xFF], pos).unwrap();
    drop(f);

    // The index is intact, so open succeeds; the read of the damaged batch names it.
    let log = Log::open(work.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
    match log.read(6, 1 << 20) {
        Err(LogError::Corrupt {
            path: p,
            position,
            offset,
            ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(position, starts[2]);
            assert_eq!(offset, 6);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Reads that do not touch the damaged batch still work; a read running into it
    // returns the intact batches before it.
    assert_eq!(log.read(4, 1).unwrap().next_offset, 5);
    let before = log.read(4, 1 << 20).unwrap();
    assert_eq!((before.first_offset, before.next_offset), (4, 6));
    assert_eq!(before.batches().count(), 2);
    assert_eq!(log.read(8, 1 << 20).unwrap().first_offset, 8);
    drop(log);

    // Without an index the sealed segment is scanned on open: the damage is found and
    // reported by file and position, and reads around it work as with the index.
    std::fs::remove_file(path.with_extension("index")).unwrap();
    let log = Log::open(work.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
    let found = log.sealed_damage();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (&found[0].path, found[0].position, found[0].offset),
        (&path, starts[2], 6)
    );
    assert_eq!(
        (found[0].resumes_at, found[0].resumes_offset),
        (starts[3], 7)
    );
    assert!(
        log.damage().is_none(),
        "a sealed segment's damage leaves the log writable"
    );
    match log.read(6, 1 << 20) {
        Err(LogError::Corrupt {
            path: p, position, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(position, starts[2]);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.read(4, 1 << 20).unwrap().next_offset, 6);
    assert_eq!(log.read(7, 1 << 20).unwrap().first_offset, 7);
    drop(log);
    // Nothing was deleted or truncated.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        std::fs::metadata(sealed).unwrap().len()
    );
}

#[test]
fn deleted_short_or_wrong_index_files_are_rebuilt_with_identical_reads() {
    let pristine = tempfile::tempdir().unwrap();
    let all = write_log(pristine.path(), 23, 50);
    let indexes: Vec<PathBuf> = segment_files(pristine.path())
        .iter()
        .map(|p| p.with_extension("index"))
        .filter(|p| p.exists())
        .collect();
    assert!(indexes.len() >= 5);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("deleted", |p| std::fs::remove_file(p).unwrap()),
        ("short", |p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len - 8).unwrap();
        }),
        ("torn entry", |p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len - 3).unwrap();
        }),
        ("points past the data", |p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.write_all_at(&[0, 0, 0, 9, 0, 0xFF, 0, 0], len - 8)
                .unwrap();
        }),
    ];
    for (what, damage) in damages {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        for idx in &indexes {
            damage(&work.path().join(idx.file_name().unwrap()));
        }
        let log = Log::open(work.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
        assert_eq!(read_all(&log), all, "index {what}");
        for o in 0..23 {
            let r = log.read(o, 1).unwrap();
            assert_eq!(r.first_offset, o, "index {what}, offset {o}");
        }
        assert!(log.recovery_report().is_empty());
    }
}

#[test]
fn a_missing_segment_in_the_middle_is_an_error_not_a_silent_gap() {
    let pristine = tempfile::tempdir().unwrap();
    write_log(pristine.path(), 12, 10);
    let files = segment_files(pristine.path());
    std::fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        Log::open(pristine.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn preallocated_zeros_after_a_crash_are_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
    for i in 0..6 {
        log.append(&mut batch(&[value_for(i, 40)])).unwrap();
    }
    // A snapshot of the files while the log is open is what kill -9 leaves behind: the
    // active segment still carries its preallocated, zero-filled tail.
    let crashed = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), crashed.path().join(e.file_name())).unwrap();
        }
    }
    let active = segment_files(crashed.path()).pop().unwrap();
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        1 << 20,
        "preallocated"
    );
    drop(log);
    let log = Log::open(crashed.path(), small(CFG_ENTRIES, SyncPolicy::GroupCommit)).unwrap();
    assert!(log.recovery_report().is_empty());
    assert_eq!(read_all(&log).len(), 6);
    assert_eq!(
        log.append(&mut batch(&[b"x".to_vec()]))
            .unwrap()
            .base_offset,
        6
    );
    log.close().unwrap();
    // A clean close gives the preallocated space back.
    let active = segment_files(crashed.path()).pop().unwrap();
    assert!(std::fs::metadata(&active).unwrap().len() < 1024);
}
