//! The tail thread. Zero-fill ahead (durable policies): appends racing it lose nothing,
//! sealed segments keep no zeros, and the blocks ahead of the tail really get written.
//! Write-behind (other policies): written data reaches the disk without waiting for a
//! roll or a flush.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chariot_log::{Log, LogConfig, SyncPolicy};
use common::{batch, poll_until, read_all, serial, value_for};

/// Tempdir on the disk the target directory is on (not a tmpfs), so extents are real.
fn disk_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn appends_racing_the_zeroing_thread_lose_nothing() {
    let _serial = serial();
    let dir = disk_tempdir();
    // 1 MiB segments: the zeroer works 128 KiB past the tail in 256 KiB chunks, and
    // 8 writers of 1-4 KiB records roll a segment every few hundred appends.
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..150u64 {
                    let v = value_for(t * 1_000_000 + i, 1024 * (1 + (i % 4) as usize));
                    let info = log.append(&mut batch(std::slice::from_ref(&v))).unwrap();
                    acked.push((info.base_offset, v));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort();
    assert_eq!(read_all(&log), acked);
    let segments = log.segments();
    assert!(segments.len() > 3, "the test must roll segments");
    // Sealed segments were trimmed: no zeros after their last batch.
    for s in &segments[..segments.len() - 1] {
        let on_disk = std::fs::metadata(&s.path).unwrap().len();
        assert_eq!(
            on_disk,
            s.size,
            "{} keeps bytes past its data",
            s.path.display()
        );
    }
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(read_all(&log), acked);
    assert!(
        log.recovery_report().is_empty(),
        "{:?}",
        log.recovery_report()
    );
}

/// `(first block, last block, unwritten)` of each extent `filefrag -v` lists, or `None`
/// where the tool or the file system cannot tell.
fn extents(path: &Path) -> Option<Vec<(u64, u64, bool)>> {
    let out = Command::new("filefrag").arg("-v").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut list = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
            continue;
        }
        let (a, b) = fields[1].split_once("..")?;
        let first = a.trim().parse().ok()?;
        let last = b.trim().parse().ok()?;
        list.push((first, last, line.contains("unwritten")));
    }
    Some(list)
}

/// The first segment's data file, if its extents can be told written from unwritten
/// here (else the test prints SKIPPED and ends).
fn observable_first_segment(log: &Log) -> Option<std::path::PathBuf> {
    let path = log.segments()[0].path.clone();
    let Some(list) = extents(&path) else {
        println!("SKIPPED: filefrag cannot list the extents here");
        return None;
    };
    if !list.iter().any(|e| e.2) {
        println!("SKIPPED: this file system shows no unwritten preallocated extents");
        return None;
    }
    Some(path)
}

#[test]
fn blocks_ahead_of_the_tail_are_written_not_just_preallocated() {
    let _serial = serial();
    let dir = disk_tempdir();
    let cfg = LogConfig {
        segment_bytes: 16 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    // A little written: no zeros yet (zero-fill starts once the tail passed 1 MiB).
    for i in 0..10 {
        log.append(&mut batch(&[value_for(i, 1000)])).unwrap();
    }
    let Some(path) = observable_first_segment(&log) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let written: Vec<_> = extents(&path)
        .unwrap()
        .into_iter()
        .filter(|e| !e.2 && e.0 >= (1 << 20) / 4096)
        .collect();
    assert!(
        written.is_empty(),
        "zeros before the tail passed 1 MiB: {written:?}"
    );
    for i in 10..1200 {
        log.append(&mut batch(&[value_for(i, 1000)])).unwrap();
    }
    // Margin 1 MiB, look-ahead 4 MiB: zeroing starts 1 MiB past the tail as it was when
    // the thread first looked (between 1 MiB and the last record), and blocks up to
    // 6 MiB get zeroed soon; the rest of the segment is left for later.
    let data = log.segments()[0].size;
    let lo = (data + (1 << 20)).div_ceil(4096);
    let hi = (6u64 << 20) / 4096 - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = extents(&path).unwrap();
        let unwritten: Vec<_> = list
            .iter()
            .filter(|e| e.2 && e.1 >= lo && e.0 <= hi)
            .collect();
        if unwritten.is_empty() {
            // Unwritten blocks from 8 MiB on: the zeroer stopped at its look-ahead.
            let far_from = (8u64 << 20) / 4096;
            let far: u64 = list
                .iter()
                .filter(|e| e.2 && e.1 >= far_from)
                .map(|e| e.1 - e.0.max(far_from) + 1)
                .sum();
            assert!(far > 1024, "zeroing went far past its look-ahead: {list:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unwritten after 30 s: {unwritten:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The data is untouched and the zeros read as preallocation on reopen.
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(read_all(&log).len(), 1200);
    assert!(log.recovery_report().is_empty());
    for i in 1200..1210 {
        log.append(&mut batch(&[value_for(i, 1000)])).unwrap();
    }
    assert_eq!(read_all(&log).len(), 1210);
}

#[test]
fn an_idle_log_zeroes_nothing() {
    let _serial = serial();
    let dir = disk_tempdir();
    let cfg = LogConfig {
        segment_bytes: 16 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let path = log.segments()[0].path.clone();
    let Some(list) = extents(&path) else {
        println!("SKIPPED: filefrag cannot list the extents here");
        return;
    };
    let written: Vec<_> = list.iter().filter(|e| !e.2).collect();
    assert!(
        written.is_empty(),
        "blocks written with no append: {written:?}"
    );
}

#[test]
fn write_behind_syncs_the_tail_without_a_flush() {
    let _serial = serial();
    let dir = disk_tempdir();
    let cfg = LogConfig {
        sync: SyncPolicy::Never,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    // 20 MiB in 100 KiB batches into a preallocated 64 MiB segment. Blocks stay
    // "unwritten" extents until their data is written back, which the kernel on its own
    // does only after 30 s (dirty_expire_centisecs) at this volume.
    let values: Vec<Vec<u8>> = (0..100).map(|i| value_for(i, 1024)).collect();
    for _ in 0..200 {
        log.append(&mut batch(&values)).unwrap();
    }
    let Some(path) = observable_first_segment(&log) else {
        return;
    };
    // The thread syncs once at least 8 MiB were written since its last sync (how much
    // more depends on when it gets the CPU): of 20 MiB, at least the first 8 MiB must be
    // written back soon.
    let synced_to = (8u64 << 20) / 4096;
    poll_until(Duration::from_secs(10), || {
        let list = extents(&path).unwrap();
        let pending: Vec<_> = list.iter().filter(|e| e.2 && e.0 < synced_to).collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("not written back after 10 s: {pending:?}"))
        }
    });
}

#[test]
fn non_durable_policies_and_the_switch_leave_preallocation_alone() {
    let _serial = serial();
    for (sync, zero_fill_ahead) in [(SyncPolicy::Never, true), (SyncPolicy::GroupCommit, false)] {
        let dir = disk_tempdir();
        let cfg = LogConfig {
            segment_bytes: 16 << 20,
            sync,
            zero_fill_ahead,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), cfg).unwrap();
        log.append(&mut batch(&[value_for(0, 1000)])).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let path = log.segments()[0].path.clone();
        let Some(list) = extents(&path) else {
            println!("SKIPPED: filefrag cannot list the extents here");
            return;
        };
        let unwritten: u64 = list.iter().filter(|e| e.2).map(|e| e.1 - e.0 + 1).sum();
        assert!(
            unwritten * 4096 > 8 << 20,
            "{sync:?}/{zero_fill_ahead}: only {unwritten} unwritten blocks: {list:?}"
        );
    }
}

#[test]
fn without_preallocation_a_segment_takes_only_what_it_holds() {
    let _serial = serial();
    let dir = disk_tempdir();
    let cfg = LogConfig {
        segment_bytes: 16 << 20,
        max_batch_bytes: 1 << 20,
        sync: SyncPolicy::Never,
        zero_fill_ahead: false,
        preallocate: false,
        ..LogConfig::default()
    };
    let mut expected = Vec::new();
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..3 {
            let v = value_for(i, 1000);
            let info = log.append(&mut batch(std::slice::from_ref(&v))).unwrap();
            expected.push((info.base_offset, v));
        }
        let path = log.segments()[0].path.clone();
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(on_disk < 64 << 10, "{on_disk} bytes for three 1 KB records");
        log.close().unwrap();
    }
    // Reopened (recovery would reserve the segment if asked to), still no reservation.
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(read_all(&log), expected);
    let path = log.segments()[0].path.clone();
    assert!(std::fs::metadata(&path).unwrap().len() < 64 << 10);
    // The default reserves the active segment in full.
    drop(log);
    let reserved = Log::open(
        dir.path(),
        LogConfig {
            preallocate: true,
            ..LogConfig {
                segment_bytes: 16 << 20,
                max_batch_bytes: 1 << 20,
                ..LogConfig::default()
            }
        },
    )
    .unwrap();
    let path = reserved.segments()[0].path.clone();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 << 20);
}
