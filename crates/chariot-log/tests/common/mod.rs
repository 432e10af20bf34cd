//! Helpers shared by the storage engine's integration tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chariot_log::{Log, LogConfig, Record, RecordBatch, RecordBatchBuilder, SyncPolicy};

/// A batch of the given values, timestamps all `ts`.
pub fn batch_at(values: &[Vec<u8>], ts: i64) -> RecordBatch {
    let mut b = RecordBatchBuilder::new();
    for v in values {
        b.push(&Record {
            value: v.clone(),
            timestamp: ts,
            ..Record::default()
        });
    }
    b.build()
}

pub fn batch(values: &[Vec<u8>]) -> RecordBatch {
    batch_at(values, now_ms())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Value that encodes its own offset, so a test can tell a misplaced record.
pub fn value_for(offset: u64, len: usize) -> Vec<u8> {
    let mut v = format!("record-{offset}-").into_bytes();
    let mut i = 0u8;
    while v.len() < len {
        v.push(b'a' + (i % 26));
        i = i.wrapping_add(1);
    }
    v
}

/// Values of the given sizes for the records from offset `base` on (see [`value_for`]).
pub fn values_from(base: u64, sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| value_for(base + k as u64, n))
        .collect()
}

/// A runtime on the calling thread, for tests whose writers are tasks awaiting `submit`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Every readable record, in order, as (offset, value).
pub fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = log.earliest_offset();
    loop {
        let r = log.read(at, 64 * 1024).expect("read");
        if r.bytes.is_empty() {
            break;
        }
        for b in r.batches() {
            for rec in b.records() {
                if rec.offset >= at {
                    out.push((rec.offset, rec.value.to_vec()));
                }
            }
        }
        at = r.next_offset;
    }
    out
}

/// Small segments (index full after `entries` batches) so tests roll often.
pub fn small(entries: u32, sync: SyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_max_entries: entries,
        max_batch_bytes: 1 << 20,
        sync,
        retention_bytes: None,
        retention_age: None,
        // Small segments still get zero-filled (the margin scales with the segment), so
        // every test under a durable policy races the zeroing thread.
        zero_fill_ahead: true,
        ..LogConfig::default()
    }
}

/// Runs the tests of a binary that spawns processes one at a time (each test holds the
/// guard). A child holds a copy of every open descriptor between its fork and its exec,
/// another test's directory `LOCK` (an flock) included, so that test could find its own
/// directory still locked when it reopens its log.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Byte positions where the batches of a data file start.
pub fn batch_starts(file: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(file).unwrap();
    let mut at = 0usize;
    let mut starts = Vec::new();
    while at < bytes.len() {
        starts.push(at as u64);
        let h = chariot_log::BatchHeader::parse(bytes.get(at..).unwrap()).unwrap();
        at += h.total_len() as usize;
    }
    starts
}

/// The data file of the segment based at `base` in `dir`.
pub fn segment(dir: &std::path::Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Flips one bit of the byte at `pos` of `path`.
pub fn flip(path: &std::path::Path, pos: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], pos).unwrap();
}

/// Polls `check` every 50 ms until it returns `Ok`, failing the test with its last
/// `Err` message once `timeout` has passed (a liveness bound, not a speed assertion).
pub fn poll_until(timeout: std::time::Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let Err(why) = check() else {
            return;
        };
        assert!(std::time::Instant::now() < deadline, "{why}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
