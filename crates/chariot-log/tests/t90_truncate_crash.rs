//! `truncate_to` survives a crash at any point: it creates a durable marker file,
//! `<offset>.truncate` (docs/format.md), before it deletes anything, and `open` finishes a truncation it finds
//! half done. Each crash point is rebuilt on disk exactly as `truncate_to` would leave it:
//! the marker written, then the segments above the cut deleted newest first, one by one,
//! then the target segment cut.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::Path;

use chariot_log::{Log, LogError, SyncPolicy};
use common::*;

const CUT: u64 = 13;

fn config() -> chariot_log::LogConfig {
    // Four one-record batches per segment: 40 records make ten segments.
    small(4, SyncPolicy::GroupCommit)
}

fn marker(dir: &Path, offset: u64) -> std::path::PathBuf {
    dir.join(format!("{offset:020}.truncate"))
}

fn write_marker(dir: &Path, offset: u64) {
    std::fs::write(marker(dir, offset), b"").unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn remove_segment(dir: &Path, base: u64) {
    for ext in ["index", "log"] {
        let _ = std::fs::remove_file(dir.join(format!("{base:020}.{ext}")));
    }
}

/// A closed log of records 0..40 in ten segments, and the byte position of offset `CUT`
/// in its segment (based at 12).
fn original(dir: &Path) -> (Vec<(u64, Vec<u8>)>, u64) {
    let log = Log::open(dir, config()).unwrap();
    for i in 0..40u64 {
        log.append(&mut batch(&[value_for(i, 200)])).unwrap();
    }
    assert_eq!(log.segments().len(), 10);
    let cut_at = log.read(12, 1).unwrap().bytes.len() as u64;
    let all = read_all(&log);
    log.close().unwrap();
    (all, cut_at)
}

/// Opens `dir`, whose marker is for `cut`, and checks the truncation was finished: the
/// log holds exactly `kept`, ends there, the marker is gone, and an append lands at the
/// end and stays across a reopen.
fn assert_finished(dir: &Path, cut: u64, kept: &[(u64, Vec<u8>)], what: &str) {
    let end = kept.len() as u64;
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(read_all(&log), kept, "{what}");
    assert_eq!(log.next_offset(), end, "{what}");
    assert!(!marker(dir, cut).exists(), "{what}: marker left");
    let info = log.append(&mut batch(&[b"after".to_vec()])).unwrap();
    assert_eq!(info.base_offset, end, "{what}");
    drop(log);
    // The finished truncation and the append after it both stay.
    let log = Log::open(dir, config()).unwrap();
    let mut expected = kept.to_vec();
    expected.push((end, b"after".to_vec()));
    assert_eq!(read_all(&log), expected, "{what}, reopened");
}

#[test]
fn open_finishes_a_truncation_interrupted_at_any_point() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (all, cut_at) = original(&orig);
    let kept: Vec<_> = all[..CUT as usize].to_vec();
    let later: Vec<u64> = (16..40).step_by(4).collect();
    // Crash points: marker only, then 1..=6 later segments gone, then the target cut too.
    for point in 0..=later.len() + 1 {
        let dir = tmp.path().join(format!("crash-{point}"));
        copy_dir(&orig, &dir);
        write_marker(&dir, CUT);
        for &base in later.iter().rev().take(point) {
            remove_segment(&dir, base);
        }
        if point > later.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(format!("{:020}.log", 12)))
                .unwrap();
            f.set_len(cut_at).unwrap();
            let _ = std::fs::remove_file(dir.join(format!("{:020}.index", 12)));
        }
        assert_finished(&dir, CUT, &kept, &format!("crash point {point}"));
    }
}

/// A marker at a segment's base empties that segment; a marker at or above the end of
/// the log (the cut was already complete) changes nothing.
#[test]
fn open_finishes_a_truncation_at_a_segment_base_and_ignores_one_past_the_end() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (all, _) = original(&orig);
    for (cut, expect) in [(16u64, 16u64), (12, 12), (0, 0), (40, 40), (100, 40)] {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&orig, &dir);
        write_marker(&dir, cut);
        assert_finished(&dir, cut, &all[..expect as usize], &format!("marker {cut}"));
    }
}

/// A marker below the first segment cannot come from a truncation (truncate_to refuses
/// offsets below the earliest): open reports it and deletes nothing.
#[test]
fn a_marker_below_the_first_segment_is_reported_before_anything_is_deleted() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (all, _) = original(&dir);
    remove_segment(&dir, 0);
    remove_segment(&dir, 4);
    write_marker(&dir, 5);
    match Log::open(&dir, config()) {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(path, marker(&dir, 5)),
        other => panic!("expected Corrupt naming the marker, got {other:?}"),
    }
    std::fs::remove_file(marker(&dir, 5)).unwrap();
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(read_all(&log), all[8..].to_vec());
}

/// The control for the test above: without the marker, the same half-done state brings
/// the cut records back. This is what the marker is for.
#[test]
fn without_the_marker_a_half_done_truncation_would_bring_records_back() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    original(&dir);
    for base in (16..40u64).step_by(4).collect::<Vec<_>>().into_iter().rev() {
        remove_segment(&dir, base);
    }
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(log.next_offset(), 16, "records 13..16 came back");
}

#[test]
fn a_finished_truncation_leaves_no_marker() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (all, _) = original(&dir);
    let log = Log::open(&dir, config()).unwrap();
    log.truncate_to(CUT).unwrap();
    assert!(!marker(&dir, CUT).exists());
    assert_eq!(read_all(&log), all[..CUT as usize].to_vec());
    let info = log.append(&mut batch(&[b"after".to_vec()])).unwrap();
    assert_eq!(info.base_offset, CUT);
    drop(log);
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(log.next_offset(), CUT + 1);
}

/// A truncation needs no free space on tmpfs: the marker is an empty file.
#[test]
fn a_truncation_works_on_a_full_disk() {
    let _serial = serial();
    /// Unmounts even if the test panics.
    struct Mounted(tempfile::TempDir);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let dir = Mounted(dir);
    let cfg = chariot_log::LogConfig {
        segment_bytes: 8 << 20,
        ..config()
    };
    let path = dir.0.path().join("log");
    let mut n = 0u64;
    {
        let log = Log::open(&path, cfg.clone()).unwrap();
        loop {
            match log.append(&mut batch(&[value_for(n, 20 * 1024)])) {
                Ok(_) => n += 1,
                Err(LogError::NoSpace { .. }) => break,
                Err(e) => panic!("expected NoSpace, got {e}"),
            }
        }
        assert!(n > 4);
        log.truncate_to(n - 4).unwrap();
        assert_eq!(log.next_offset(), n - 4);
        log.append(&mut batch(&[b"after".to_vec()])).unwrap();
    }
    let log = Log::open(&path, cfg).unwrap();
    assert_eq!(log.next_offset(), n - 3);
}
