//! Bad input: each case gets a typed error and leaves the log exactly as it was.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::Path;
use std::process::Command;

use chariot_log::{
    BatchError, Log, LogConfig, LogError, RecordBatch, RecordBatchBuilder, SyncPolicy,
};
use common::*;

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn oversized_empty_and_malformed_batches_are_refused_without_change() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 4096,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    log.append(&mut batch(&[b"keep".to_vec()])).unwrap();
    let before = dir_bytes(dir.path());

    match log.append(&mut batch(&[vec![1u8; 5000]])) {
        Err(LogError::BatchTooLarge { size, max: 4096 }) => assert!(size > 5000),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert!(matches!(
        log.append(&mut RecordBatchBuilder::new().build()),
        Err(LogError::EmptyBatch)
    ));
    let mut raw = batch(&[b"x".to_vec()]).into_vec();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    assert!(matches!(
        RecordBatch::from_vec(raw),
        Err(BatchError::CrcMismatch { .. })
    ));
    assert!(RecordBatch::from_vec(vec![0u8; 10]).is_err());

    assert_eq!(dir_bytes(dir.path()), before);
    assert_eq!(log.next_offset(), 1);
    assert_eq!(read_all(&log), vec![(0, b"keep".to_vec())]);
}

#[test]
fn invalid_configurations_are_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        },
        LogConfig {
            index_max_entries: 0,
            ..LogConfig::default()
        },
        LogConfig {
            max_batch_bytes: 128 << 20,
            ..LogConfig::default()
        },
        LogConfig {
            sync: SyncPolicy::Interval(std::time::Duration::ZERO),
            ..LogConfig::default()
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), cfg),
            Err(LogError::InvalidConfig(_))
        ));
    }
}

/// A small tmpfs of our own, so the tests can fill it and make it read-only.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Needs CAP_SYS_ADMIN (CI runs as root); say loudly that the case did not run.
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Appends 30 KiB records with `append` (which returns the offset given) until the disk
/// is full; checks the failure is `NoSpace` in `dir` and that not a byte of the failed
/// append remains. Returns what was acknowledged.
fn fill_until_full(
    dir: &Path,
    mut append: impl FnMut(&[u8]) -> Result<u64, LogError>,
) -> Vec<(u64, Vec<u8>)> {
    let mut acked = Vec::new();
    for i in 0..1000u64 {
        let v = value_for(i, 30 * 1024);
        let before = dir_bytes(dir);
        match append(&v) {
            Ok(offset) => acked.push((offset, v)),
            Err(LogError::NoSpace { path }) => {
                assert!(path.starts_with(dir));
                // Not a byte of the failed batch remains.
                assert_eq!(dir_bytes(dir), before);
                return acked;
            }
            Err(e) => panic!("expected NoSpace, got {e}"),
        }
    }
    panic!("a 2 MiB tmpfs never filled up");
}

#[test]
fn a_full_disk_is_a_typed_error_and_leaves_the_log_as_it_was() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let dir = fs.path().join("log");
    let cfg = LogConfig {
        segment_bytes: 8 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, cfg.clone()).unwrap();
    let mut acked = fill_until_full(&dir, |v| {
        log.append(&mut batch(&[v.to_vec()]))
            .map(|info| info.base_offset)
    });
    assert_eq!(read_all(&log), acked);
    // Still usable once space is back: nothing was poisoned.
    log.truncate_to(acked.len() as u64 - 10).unwrap();
    acked.truncate(acked.len() - 10);
    let info = log.append(&mut batch(&[b"after".to_vec()])).unwrap();
    assert_eq!(info.base_offset, acked.len() as u64);
    acked.push((info.base_offset, b"after".to_vec()));
    drop(log);
    let log = Log::open(&dir, cfg).unwrap();
    assert_eq!(read_all(&log), acked);
}

/// The same through `Log::submit`: the failed group's future reports the full disk, and
/// the group's write is undone before anyone hears of it.
#[test]
fn a_full_disk_fails_a_submitted_group_and_leaves_the_log_as_it_was() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let dir = fs.path().join("log");
    let cfg = LogConfig {
        segment_bytes: 8 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, cfg.clone()).unwrap();
    let rt = runtime();
    // Room to give back once the disk is full.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![1u8; 256 * 1024]).unwrap();
    let mut acked = fill_until_full(&dir, |v| {
        let pending = log.submit(&mut [batch(&[v.to_vec()])]).unwrap();
        rt.block_on(pending).map(|infos| infos[0].base_offset)
    });
    assert_eq!(read_all(&log), acked);
    // The offsets of the failed group were given back: with room again, the next
    // submitted append takes them.
    std::fs::remove_file(&filler).unwrap();
    let infos = rt
        .block_on(log.submit(&mut [batch(&[b"room".to_vec()])]).unwrap())
        .unwrap();
    assert_eq!(infos[0].base_offset, acked.len() as u64);
    acked.push((infos[0].base_offset, b"room".to_vec()));
    log.truncate_to(acked.len() as u64 - 10).unwrap();
    acked.truncate(acked.len() - 10);
    let infos = rt
        .block_on(log.submit(&mut [batch(&[b"after".to_vec()])]).unwrap())
        .unwrap();
    assert_eq!(infos[0].base_offset, acked.len() as u64);
    acked.push((infos[0].base_offset, b"after".to_vec()));
    drop(log);
    let log = Log::open(&dir, cfg).unwrap();
    assert_eq!(read_all(&log), acked);
}

#[test]
fn a_read_only_directory_is_a_typed_error_and_changes_nothing() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let dir = fs.path().join("log");
    let log = Log::open(&dir, LogConfig::default()).unwrap();
    log.append(&mut batch(&[b"one".to_vec()])).unwrap();
    log.close().unwrap();
    let before = dir_bytes(&dir);
    fs.remount("ro");
    match Log::open(&dir, LogConfig::default()) {
        Err(LogError::ReadOnly { .. }) => {}
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    match Log::open(fs.path().join("fresh"), LogConfig::default()) {
        Err(LogError::ReadOnly { .. }) => {}
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert_eq!(dir_bytes(&dir), before);
    fs.remount("rw");
    let log = Log::open(&dir, LogConfig::default()).unwrap();
    assert_eq!(read_all(&log), vec![(0, b"one".to_vec())]);
}
