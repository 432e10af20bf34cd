//! Background work on the tail of the active segment, by one thread per log.
//!
//! Under the durable policies it **zero-fills ahead** of the tail; under the others it
//! **writes behind** it. Both exist because a measurement said so, on this project's
//! 2-vCPU ext4 VM.
//!
//! ## Write-behind (non-durable policies)
//!
//! Without it, the data of a 64 MiB segment sits in the page cache until the roll's
//! fdatasync writes it all, while the writer waits: disk and CPU take turns. The worker
//! fdatasyncs the active segment every [`WRITE_BEHIND`] bytes, so the disk writes while
//! the writer copies (RocksDB's `bytes_per_sync` does the same). Measured: 1 KiB records
//! in batches of 100 with no per-append sync went from 0.80-0.87 of the raw disk
//! bandwidth to 0.99-1.11. It only ever makes data durable sooner.
//!
//! ## Zero-fill ahead (durable policies)
//!
//! A preallocated (`fallocate`) region is made of *unwritten* extents: the first write
//! into each block makes the file system convert the extent, so the fdatasync that follows
//! must also write extent metadata. Measured on this project's ext4 VM disk, a 64 KiB
//! write + fdatasync took about 640 µs into a fallocated region and 240 µs into blocks
//! already written once; 1 KiB took 280 µs and 210 µs. Group commit syncs tens of
//! kilobytes at a time, so it pays that difference on every group.
//!
//! So, like PostgreSQL's `wal_init_zero`, a background thread writes zeros ahead of the
//! writer (and fdatasyncs them) in chunks, keeping [`MARGIN`] bytes away from the tail,
//! so the writer mostly overwrites written blocks. It is lazy and bounded, so that it
//! costs only where it pays:
//! - it starts once a segment's tail passed [`START_AFTER`] (an idle partition, or one
//!   that writes little, costs nothing) and keeps at most [`LOOKAHEAD`] bytes zeroed
//!   ahead of the tail, woken by the writer as the tail advances: the extra disk writes
//!   track the data written;
//! - it zeroes only while the log's syncs are small (an average under [`SMALL_SYNC`]
//!   bytes): a bulk writer syncing hundreds of kilobytes at a time gains little from it
//!   and would lose half its disk bandwidth to the zeros.
//!
//! Zeros beyond the data are what recovery already treats as preallocation, so a crash
//! in the middle of a chunk changes nothing; the zeroer never grows the file (it only
//! writes below the preallocated length), so it never takes space the data could need.
//!
//! Exclusion: the writer never writes into the chunk being zeroed. A chunk is claimed
//! under the writer lock at least [`MARGIN`] bytes past the tail, and the writer checks
//! [`TailWorker::before_write`] before every write, waiting out the chunk in the rare case
//! that it caught up. Rolls, truncations, failed writes and close call
//! [`TailWorker::retarget`], which waits for the chunk in progress, so a segment is never
//! sealed, cut or trimmed under the zeroer's feet.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::{LogError, Result};
use crate::segment::Segment;

/// Bytes zeroed (and synced) at a time (at most a quarter of a segment).
pub(crate) const CHUNK: u64 = 1 << 20;
/// Distance kept between the tail and the first byte the zeroer claims (at most an
/// eighth of a segment).
pub(crate) const MARGIN: u64 = 1 << 20;
/// How far past the margin the zeros reach at most (at most a quarter of a segment).
pub(crate) const LOOKAHEAD: u64 = 4 << 20;
/// Zero-fill starts only once the tail of a segment passed this point (at most an
/// eighth of a segment): a log that writes little (a partition group just created, an
/// idle one taking a trickle of records) pays no zeros, which would otherwise cost each
/// of a thousand new groups megabytes of writes.
pub(crate) const START_AFTER: u64 = 1 << 20;
/// Average bytes per sync below which zeroing pays.
pub(crate) const SMALL_SYNC: u64 = 256 << 10;
/// Bytes written between two write-behind syncs (at most a quarter of a segment).
pub(crate) const WRITE_BEHIND: u64 = 8 << 20;

/// What the worker does for this log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Zero ahead of the tail (durable policies).
    ZeroFill,
    /// Sync behind the tail (non-durable policies).
    WriteBehind,
}

/// Shared between the log's writer and its tail thread.
pub(crate) struct TailWorker {
    mode: Mode,
    state: Mutex<State>,
    changed: Condvar,
    /// Start of the chunk being zeroed, `u64::MAX` when none: read on every write.
    busy_from: AtomicU64,
    /// Tail position at which the writer wakes the zeroer (`u64::MAX`: no need).
    wake_at: AtomicU64,
    /// Moving average of the bytes each sync covered (updated by the writer).
    sync_bytes: AtomicU64,
    /// Where the first wake of a segment is (see [`START_AFTER`]).
    first_wake: u64,
}

struct State {
    /// The segment being zeroed: the active one, until a roll, truncation or close.
    target: Option<Arc<Segment>>,
    /// Zeroed (zero-fill) or synced (write-behind) up to here in `target`.
    next: u64,
    busy: bool,
    /// Set by the writer when the tail passed `wake_at`.
    nudged: bool,
    stop: bool,
}

/// What the zeroing thread should do next.
pub(crate) enum Claim {
    /// Zero `[from, to)` of the segment, then call [`TailWorker::finish`].
    Chunk(Arc<Segment>, u64, u64),
    /// Sync the segment, whose data reaches the given position, then call
    /// [`TailWorker::finish`] with it.
    Sync(Arc<Segment>, u64),
    /// Nothing to zero now: wait with [`TailWorker::wait_for_work`].
    Idle,
    /// The log is closing.
    Stop,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TailWorker {
    /// The worker of a log with segments of `segment_bytes`.
    pub(crate) fn new(mode: Mode, target: Option<Arc<Segment>>, segment_bytes: u64) -> Self {
        let first_wake = match mode {
            Mode::ZeroFill => START_AFTER.min(segment_bytes / 8),
            Mode::WriteBehind => 0,
        };
        Self {
            mode,
            state: Mutex::new(State {
                target,
                next: 0,
                busy: false,
                nudged: false,
                stop: false,
            }),
            changed: Condvar::new(),
            busy_from: AtomicU64::new(u64::MAX),
            // The first write (past the start of zero-fill) wakes the worker.
            wake_at: AtomicU64::new(first_wake),
            sync_bytes: AtomicU64::new(0),
            first_wake,
        }
    }

    /// Claims the next chunk of `active` (called with the writer lock held; `tail` is
    /// where the writer's next bytes go, pending ones included; `file_len` the data
    /// file's length, preallocation included).
    pub(crate) fn claim(
        &self,
        active: &Arc<Segment>,
        tail: u64,
        file_len: u64,
        segment_bytes: u64,
    ) -> Claim {
        let mut s = lock(&self.state);
        if s.stop {
            return Claim::Stop;
        }
        let Some(target) = s.target.as_ref().filter(|t| Arc::ptr_eq(t, active)) else {
            s.target = None;
            return Claim::Idle;
        };
        let target = Arc::clone(target);
        if self.mode == Mode::WriteBehind {
            let every = WRITE_BEHIND.min(segment_bytes / 4);
            if tail >= s.next + every {
                s.busy = true;
                return Claim::Sync(target, tail);
            }
            s.nudged = false;
            self.wake_at.store(s.next + every, Ordering::Release);
            return Claim::Idle;
        }
        // Small segments (tests use 1 MiB) are zero-filled too, with scaled-down steps.
        let margin = MARGIN.min(segment_bytes / 8);
        let chunk = CHUNK.min(segment_bytes / 4);
        let lookahead = LOOKAHEAD.min(segment_bytes / 4);
        let end = file_len.min(segment_bytes);
        if tail < self.first_wake {
            s.nudged = false;
            self.wake_at.store(self.first_wake, Ordering::Release);
            return Claim::Idle;
        }
        let from = s.next.max((tail + margin).next_multiple_of(4096));
        if from >= end {
            s.target = None;
            return Claim::Idle;
        }
        let small = self.sync_bytes.load(Ordering::Relaxed) < SMALL_SYNC;
        if !small || from >= tail + margin + lookahead {
            // Far enough ahead (or not worth it now): look again once the tail moved.
            s.nudged = false;
            self.wake_at
                .store(tail + (lookahead / 2).max(1), Ordering::Release);
            return Claim::Idle;
        }
        let to = (from + chunk).min(end);
        s.busy = true;
        self.busy_from.store(from, Ordering::Release);
        Claim::Chunk(target, from, to)
    }

    /// Ends the claimed chunk or sync; after a failure the segment is left as it is.
    pub(crate) fn finish(&self, to: u64, ok: bool) {
        let mut s = lock(&self.state);
        s.busy = false;
        self.busy_from.store(u64::MAX, Ordering::Release);
        if ok {
            s.next = to;
        } else {
            s.target = None;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Sleeps until the writer asks for more zeros (or the log closes), at most
    /// `timeout`: false if it passed with nothing to do.
    pub(crate) fn wait_for_work(&self, timeout: std::time::Duration) -> bool {
        let s = lock(&self.state);
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| !Self::work_in(s))
            .unwrap_or_else(PoisonError::into_inner);
        Self::work_in(&s)
    }

    fn work_in(s: &State) -> bool {
        s.stop || s.target.is_some() && s.nudged
    }

    /// Whether the writer asked for work (or the log closes).
    pub(crate) fn has_work(&self) -> bool {
        Self::work_in(&lock(&self.state))
    }

    /// Called by the writer after each write, with the new tail and the bytes written
    /// (one write per sync under the durable policies): folds the size into the moving
    /// average that gates zeroing, and wakes the thread when the tail passed the point it
    /// asked for. True if there is work for the thread (the caller starts it if it is
    /// not running).
    pub(crate) fn wrote(&self, tail: u64, bytes: u64) -> bool {
        let avg = self.sync_bytes.load(Ordering::Relaxed);
        self.sync_bytes
            .store(avg - avg / 8 + bytes / 8, Ordering::Relaxed);
        if tail < self.wake_at.load(Ordering::Acquire) {
            return false;
        }
        let mut s = lock(&self.state);
        self.wake_at.store(u64::MAX, Ordering::Release);
        let newly = !s.nudged;
        s.nudged = true;
        let work = Self::work_in(&s);
        drop(s);
        if newly {
            self.changed.notify_all();
        }
        work
    }

    /// Called by the writer before writing up to position `end` of the active segment:
    /// returns once no chunk being zeroed starts below `end`.
    pub(crate) fn before_write(&self, end: u64) {
        if end <= self.busy_from.load(Ordering::Acquire) {
            return;
        }
        let mut s = lock(&self.state);
        while s.busy && end > self.busy_from.load(Ordering::Acquire) {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits for the chunk in progress, then zeroes `target` from its first write on
    /// (`None`: nothing). Called with the writer lock held, before a roll seals, a
    /// truncation cuts or a close trims the active segment.
    pub(crate) fn retarget(&self, target: Option<Arc<Segment>>) {
        let mut s = lock(&self.state);
        while s.busy {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.target = target;
        s.next = 0;
        s.nudged = false;
        self.wake_at.store(self.first_wake, Ordering::Release);
    }

    /// Stops the zeroing thread (after its chunk in progress).
    pub(crate) fn stop(&self) {
        self.retarget(None);
        lock(&self.state).stop = true;
        self.changed.notify_all();
    }
}

/// Ends a claim when dropped (also when the tail thread panics), so that the writer,
/// which waits for claimed chunks, never waits forever.
pub(crate) struct Finish<'a> {
    tail: &'a TailWorker,
    to: u64,
    /// Whether the work succeeded; `false` until set.
    pub(crate) ok: bool,
}

impl<'a> Finish<'a> {
    pub(crate) fn new(tail: &'a TailWorker, to: u64) -> Self {
        Self {
            tail,
            to,
            ok: false,
        }
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.tail.finish(self.to, self.ok);
    }
}

/// ext4's and XFS's `statfs` magic numbers.
const EXT4_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;

/// Whether zero-filling pays on the file system holding `file`: on ext4 and XFS a
/// written block is overwritten in place. On copy-on-write file systems (btrfs, ZFS) the
/// first write into a preallocated extent is the in-place one, and zeroing it first would
/// make every data write allocate new space; elsewhere (tmpfs) there is nothing to gain.
pub(crate) fn zero_fill_pays(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| {
        // `f_type` is a C long: i64 here, i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let magic = i64::from(s.f_type);
        magic == EXT4_MAGIC || magic == XFS_MAGIC
    })
}

/// The tail thread's own handle on a segment's data file.
///
/// Its own open file description, not the segment's: Linux reports a writeback error to
/// the fsync of every open file description once. Sharing the writer's would let this
/// thread's fdatasync consume an error that belongs to a group commit, whose own
/// fdatasync would then succeed.
pub(crate) struct TailFile {
    segment: Arc<Segment>,
    file: File,
}

impl TailFile {
    pub(crate) fn open(segment: &Arc<Segment>) -> Result<Self> {
        let path = segment.data_path();
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| LogError::io("open", path, e))?;
        Ok(Self {
            segment: Arc::clone(segment),
            file,
        })
    }

    pub(crate) fn is_for(&self, segment: &Arc<Segment>) -> bool {
        Arc::ptr_eq(&self.segment, segment)
    }

    /// Writes zeros over `[from, to)`.
    pub(crate) fn write_zeros(&self, from: u64, to: u64) -> Result<()> {
        const BLOCK: usize = 1 << 20;
        let zeros = vec![0u8; BLOCK];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(BLOCK);
            let block = zeros.get(..n).unwrap_or(&zeros);
            self.file
                .write_all_at(block, at)
                .map_err(|e| LogError::io("write zeros", self.segment.data_path(), e))?;
            at += n as u64;
        }
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync", self.segment.data_path(), e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn zero_fill_is_only_for_file_systems_that_overwrite_in_place() {
        // tmpfs: nothing to gain.
        if let Ok(dir) = tempfile::tempdir_in("/dev/shm") {
            let file = File::create(dir.path().join("f")).unwrap();
            assert!(!zero_fill_pays(&file));
        }
        // The repository's own disk: ext4 or XFS here, whatever statfs says elsewhere.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let kind = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir.path())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Ok(kind) = kind {
            let expected = matches!(kind.as_str(), "ext2/ext3" | "ext4" | "xfs");
            assert_eq!(zero_fill_pays(&file), expected, "file system {kind}");
        }
    }
}
