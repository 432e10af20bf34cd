//! The log: an ordered list of segments, one writer, many readers, group commit.

mod append;
mod background;
mod commit;
mod read;
mod recovery;
mod retention;
mod scrub;
mod threads;
mod truncate;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;

use crate::batch::{BatchHeader, RecordBatch};
use crate::config::LogConfig;
use crate::damage::Damage;
use crate::error::{LogError, Result};
use crate::segment::{Segment, TruncatedTail};
use crate::tail::TailWorker;

pub use append::Pending;
pub use read::{FileSlice, ReadBatches};
pub(crate) use recovery::lock_dir;
pub use scrub::ScrubReport;

use append::EnqueueMode;
use commit::{wake_word, Slot, SlotError, WakeWords, GATHER_BYTES};
use truncate::{parse_truncate_marker, truncate_marker};

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
}

/// Facts about one segment, for tools and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of its first batch.
    pub base_offset: u64,
    /// Offset after its last batch.
    pub next_offset: u64,
    /// Bytes of batches.
    pub size: u64,
    /// Data file.
    pub path: PathBuf,
}

/// The single writer's state.
struct Writer {
    active: Arc<Segment>,
    /// Offset the next append gets (pending batches included).
    next_offset: u64,
    /// Bumped by `truncate_to`, so a sync that started before a truncation cannot mark
    /// offsets of the truncated history as durable.
    generation: u64,
    /// Group commit: batches accepted but not yet written, back to back. The next sync
    /// leader writes them all with one `pwrite` before its fdatasync, so concurrent
    /// appends share both the write and the sync.
    pending: Vec<u8>,
    pending_headers: Vec<BatchHeader>,
    /// The appends waiting on `pending`, in order.
    pending_slots: Vec<Arc<Slot>>,
    /// Id of the group the pending appends form: taken by the next `write_pending`.
    group_id: u64,
}

/// What a sync leader checks before publishing.
struct CommitState {
    /// Mirrors `Writer::generation`; checked with `visible_next` updates under this lock.
    generation: u64,
}

struct Shared {
    /// Itself, for starting its threads.
    me: Weak<Shared>,
    dir: PathBuf,
    config: LogConfig,
    writer: Mutex<Writer>,
    /// Readers clone this `Arc` and never hold the lock while doing I/O.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// Offset below which records are acknowledged and visible to readers.
    visible_next: AtomicU64,
    commit: Mutex<CommitState>,
    /// Set by the one thread leading a sync (at most one at a time). Appenders claim it
    /// with a compare-exchange, without taking a lock.
    syncing: AtomicBool,
    /// Where group-commit appenders sleep until their group's outcome is set.
    wake: WakeWords,
    /// The commit thread's futex word (group commit only): bumped when submitted appends
    /// may be waiting for a leader, on poisoning and on close.
    commit_word: AtomicU32,
    /// Set while the commit thread spins for the next append instead of sleeping (see
    /// [`commit::COMMITTER_SPIN`]): a notification then needs no wake-up call.
    committer_spinning: AtomicBool,
    /// Tells the commit thread to exit.
    commit_stop: AtomicBool,
    /// How many appends the last group commit completed, and how long its fdatasync
    /// took: what a leader expects to come back, and how long it may wait for them.
    last_group: AtomicUsize,
    last_sync_nanos: AtomicU64,
    /// While a leader gathers a group: how many pending appends it waits for (0 when
    /// nobody gathers), and the futex word it sleeps on.
    gather_want: AtomicUsize,
    gather_word: AtomicU32,
    poisoned: AtomicBool,
    closed: AtomicBool,
    stop: Mutex<bool>,
    stopping: Condvar,
    recovery: Vec<TruncatedTail>,
    /// Damage found in the active segment at open ([`crate::damage`]): while set, the
    /// log refuses every write and keeps every byte of the file.
    damage: Option<Damage>,
    /// Background work on the tail: zero-filling ahead of it (durable policies with
    /// `zero_fill_ahead`) or syncing behind it (the other policies).
    tail: TailWorker,
    /// Whether there is tail work at all (set at open).
    tail_enabled: bool,
    /// The commit thread (group commit only) and the tail thread, each running only
    /// while it has work ([`threads`]).
    committer: threads::Worker,
    tail_thread: threads::Worker,
    _lock: File,
}

/// A partition's commit log.
///
/// Invariants:
/// - offsets are dense and strictly increasing from the earliest retained offset;
/// - under a durable [`SyncPolicy`](crate::SyncPolicy), `append` returns `Ok` only after an fdatasync that
///   covers the batch, and readers never see a record before it is acknowledged;
/// - a failed append leaves the files exactly as they were, or poisons the log;
/// - readers never wait for a sync or a disk write: they take two short locks to copy a
///   segment list `Arc` and look up an index entry, then read with `pread`.
pub struct Log {
    shared: Arc<Shared>,
    /// The interval policy's sync thread.
    syncer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("next_offset", &self.next_offset())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "closing log failed");
        }
    }
}

impl Log {
    /// Appends a batch, stamping its base offset, and returns the offsets assigned.
    /// Returns once the batch is as durable as the [`SyncPolicy`](crate::SyncPolicy) promises.
    pub fn append(&self, batch: &mut RecordBatch) -> Result<AppendInfo> {
        let infos = self.shared.append_many(std::slice::from_mut(batch))?;
        infos.into_iter().next().ok_or(LogError::EmptyBatch)
    }

    /// Appends several batches as one unit: one write and at most one sync, all or
    /// nothing. Offsets are assigned in order; one `AppendInfo` per batch.
    pub fn append_batches(&self, batches: &mut [RecordBatch]) -> Result<Vec<AppendInfo>> {
        self.shared.append_many(batches)
    }

    /// Queues batches to be appended as one unit, like [`Log::append_batches`], and
    /// returns without waiting for the disk: the [`Pending`] future resolves to their
    /// offsets once they are durable. Offsets are assigned, in order, before this returns.
    ///
    /// Under [`SyncPolicy::GroupCommit`](crate::SyncPolicy::GroupCommit) the batches join the next group, and the log's
    /// commit thread (or any blocking appender) leads its write and fdatasync, so many
    /// tasks on a few threads share one sync without a thread each. The calling thread
    /// only copies the batches under the writer lock; once per segment it also seals the
    /// full one (an fdatasync) before queuing. Under the other policies the batches are
    /// appended before this returns, as by `append_batches`, and the future is ready.
    ///
    /// Invalid batches, a closed or poisoned log and a failed roll are reported here;
    /// a failed write or sync of the group is reported by the future, and leaves the
    /// files as they were (or poisons the log), as for a blocking append.
    pub fn submit(&self, batches: &mut [RecordBatch]) -> Result<Pending> {
        self.pending(self.shared.enqueue(batches, EnqueueMode::Submitted)?)
            .ok_or(LogError::Poisoned)
    }

    /// [`Log::submit`] for callers that must not block (async worker threads): queues the
    /// batches only if that takes no I/O on this thread, which is the case under group
    /// commit unless the active segment must roll first. `Ok(None)`: nothing was done
    /// (the batches are untouched); submit them from a thread that may block.
    pub fn try_submit(&self, batches: &mut [RecordBatch]) -> Result<Option<Pending>> {
        Ok(self.pending(self.shared.enqueue(batches, EnqueueMode::NoIo)?))
    }

    /// The configuration this log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Earliest offset still held (retention moves it forward).
    pub fn earliest_offset(&self) -> u64 {
        self.shared
            .segment_list()
            .first()
            .map_or(0, |s| s.base_offset())
    }

    /// Offset the next acknowledged record will get; records below it are readable.
    pub fn next_offset(&self) -> u64 {
        self.shared.visible_next.load(Ordering::Acquire)
    }

    /// Offset of the newest readable record, if any.
    pub fn latest_offset(&self) -> Option<u64> {
        let next = self.next_offset();
        (next > self.earliest_offset()).then(|| next - 1)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segment_list().iter().map(|s| s.size()).sum()
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .segment_list()
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                path: s.data_path().to_path_buf(),
            })
            .collect()
    }

    /// Tails that recovery cut off when this log was opened.
    pub fn recovery_report(&self) -> &[TruncatedTail] {
        &self.shared.recovery
    }

    /// Damage with intact batches after it, found in the active segment when this log
    /// was opened: while there is some, the intact prefix is readable and every write
    /// is refused with [`LogError::Damaged`] until [`mod@crate::repair`] has run.
    pub fn damage(&self) -> Option<&Damage> {
        self.shared.damage.as_ref()
    }

    /// Removes every record at or after `offset`, which must be a batch boundary (or the
    /// end of the log). Used by replication to drop a divergent suffix.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        self.shared.truncate_to(offset)
    }

    /// Makes every appended record durable now, whatever the policy.
    pub fn flush(&self) -> Result<()> {
        self.shared.check_usable()?;
        self.shared.sync_now()
    }

    /// Deletes sealed segments beyond the retention limits; returns how many went.
    /// Rolls call this too, so a caller only needs it for age-based retention on an idle log.
    pub fn apply_retention(&self) -> Result<usize> {
        let w = lock(&self.shared.writer);
        self.shared.apply_retention(&w)
    }

    /// Deletes the sealed segments that hold only offsets below `offset` (the active
    /// segment always stays); returns how many went. What is left still starts at a
    /// segment boundary, so [`Log::earliest_offset`] may stay below `offset`: a Raft log
    /// purging the entries a snapshot covers hides the rest itself.
    pub fn purge_below(&self, offset: u64) -> Result<usize> {
        let w = lock(&self.shared.writer);
        self.shared.purge_below(&w, offset)
    }

    /// Flushes and closes the log. Dropping a log does the same, ignoring errors.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        *lock(&self.shared.stop) = true;
        self.shared.stopping.notify_all();
        self.shared.commit_stop.store(true, Ordering::Release);
        self.shared.notify_committer();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.shared.committer.close();
        self.shared.tail.stop();
        self.shared.tail_thread.close();
        if self.shared.poisoned.load(Ordering::Acquire) {
            // No sync will run: appends still queued (submitted ones, whose futures may
            // outlive the log) are failed rather than left waiting.
            self.shared.fail_pending();
            return Err(LogError::Poisoned);
        }
        if let Err(e) = self.shared.sync_now() {
            self.shared.fail_pending();
            return Err(e);
        }
        // A cleanly closed log leaves no preallocated zeros behind (a damaged one keeps
        // every byte: what follows the damage is not preallocation).
        if self.shared.damage.is_some() {
            return Ok(());
        }
        lock(&self.shared.writer).active.trim()
    }
}

impl Shared {
    fn segment_list(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_segment_list(&self, list: Vec<Arc<Segment>>) {
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(list);
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        Ok(())
    }

    /// Like `check_usable`, for operations that change the files.
    fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        match &self.damage {
            Some(d) => Err(LogError::Damaged(Box::new(d.clone()))),
            None => Ok(()),
        }
    }

    fn poison(&self, err: LogError) -> LogError {
        tracing::error!(dir = %self.dir.display(), error = %err, "log poisoned");
        self.poisoned.store(true, Ordering::Release);
        // Waiters check for poison whenever they wake: wake them all, and the commit
        // thread, which fails the submitted appends no leader will take any more. (The
        // writer lock may be held here: if no commit thread can start, those appends
        // fail at the close instead.)
        self.wake.wake_all_groups();
        self.wake_committer();
        err
    }
}
