//! The log: an ordered list of segments, one writer, many readers, group commit.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::thread::futex;

use crate::batch::{self, BatchHeader, RecordBatch};
use crate::config::{LogConfig, SyncPolicy};
use crate::damage::Damage;
use crate::error::{LogError, Result};
use crate::segment::{self, AppendFailure, Recovered, Segment, TruncatedTail};
use crate::tail::{self, Claim, Finish, Mode, TailFile, TailWorker};

/// Name of the file whose advisory lock keeps a second process out of the directory.
const LOCK_FILE: &str = "LOCK";

/// How many more groups an appender leading a sync commits before it hands over.
const EXTRA_ROUNDS: usize = 4;

/// The longest a sync leader waits for the last group's appenders to come back.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// Pending bytes past which a leader stops waiting for more: a sync this large costs
/// about its transfer time, so a bigger group saves nothing.
const GATHER_BYTES: usize = 1 << 20;

/// The truncation marker: an empty file named `<offset>.truncate` (20 digits), present
/// while a `truncate_to(offset)` may be half done. Its name is its content, so creating it
/// needs no data block (it works on a full disk, where truncating is how space comes back)
/// and it cannot be torn.
fn truncate_marker(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{}.truncate", segment::file_stem(offset)))
}

/// The offset of a truncation marker's file name.
fn parse_truncate_marker(name: &str) -> Option<u64> {
    segment::parse_offset_name(name, ".truncate")
}

/// Bumps a futex word, then wakes up to `n` of the threads sleeping on it. Whatever they
/// wait for is published before the call; a thread that read the word before the bump
/// does not go to sleep.
fn wake_word(word: &AtomicU32, n: u32) {
    word.fetch_add(1, Ordering::Release);
    let _ = futex::wake(word, futex::Flags::PRIVATE, n);
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
}

/// A byte range of one segment file holding whole batches, for zero-copy sends.
#[derive(Debug, Clone)]
pub struct FileSlice {
    segment: Arc<Segment>,
    /// Byte position of the first batch in the file.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// Base offset of the first batch (may be below the offset asked for).
    pub first_offset: u64,
    /// Offset just after the last batch in the range.
    pub next_offset: u64,
}

impl FileSlice {
    /// The segment's data file; it stays readable even if retention deletes the segment
    /// while the slice is alive.
    pub fn file(&self) -> &File {
        self.segment.file()
    }

    /// Path of the segment's data file.
    pub fn path(&self) -> &Path {
        self.segment.data_path()
    }
}

/// Whole batches returned by [`Log::read`], checksums verified.
#[derive(Debug, Clone)]
pub struct ReadBatches {
    /// Concatenated batches in their disk (and wire) layout; empty at the end of the log.
    pub bytes: Vec<u8>,
    /// Base offset of the first batch (may be below the offset asked for, since whole
    /// batches are returned).
    pub first_offset: u64,
    /// Offset to read from next.
    pub next_offset: u64,
    /// Earliest offset of the log at the time of the read.
    pub log_earliest: u64,
    /// Next offset of the log (its high watermark) at the time of the read.
    pub log_next: u64,
}

impl ReadBatches {
    /// Iterates the batches in `bytes`.
    pub fn batches(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        let mut rest: &[u8] = &self.bytes;
        std::iter::from_fn(move || {
            let h = BatchHeader::parse(rest).ok()?;
            let (b, tail) = rest.split_at_checked(h.total_len() as usize)?;
            rest = tail;
            RecordBatch::from_vec(b.to_vec()).ok()
        })
    }
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

/// The appends one `write_pending` wrote, and the id their waiters sleep on.
struct Group {
    id: u64,
    slots: Vec<Arc<Slot>>,
}

/// Where one group-commit append learns its outcome. A blocking append's thread sleeps
/// on the futex word of its group (see [`WakeWords`]); whoever completes the group sets
/// every slot's outcome and then wakes the whole group with one system call. A submitted
/// append ([`Log::submit`]) has no thread: its [`Pending`] future leaves a waker here.
struct Slot {
    /// Offset after the append's last record.
    next: u64,
    /// The group this append belongs to (`Writer::group_id` when it was queued).
    group: u64,
    outcome: OnceLock<Result<(), SlotError>>,
    /// `Some` for a submitted append: the waker of the task polling its [`Pending`].
    waker: Option<Mutex<Option<Waker>>>,
}

impl Slot {
    fn new(next: u64, group: u64, submitted: bool) -> Self {
        Self {
            next,
            group,
            outcome: OnceLock::new(),
            waker: submitted.then(|| Mutex::new(None)),
        }
    }

    /// Whether a thread sleeps on this slot's group word (rather than a task's waker).
    fn has_thread(&self) -> bool {
        self.waker.is_none()
    }

    /// A `sync_now` slot: it asks for no offset (an append's `next` is at least 1), only
    /// for a sync, so a truncation racing it does not concern it.
    fn is_flush(&self) -> bool {
        self.next == 0
    }
}

/// Futex words the waiting appenders sleep on, one per group id modulo their number.
///
/// Waking a finished group of N appenders one thread at a time costs N `futex_wake`
/// calls on the leader's critical path (measured on a 2-vCPU VM: the wake-ups took longer
/// than the fdatasync itself). With one word per group, the leader wakes the whole group
/// with one call. Groups that share a word (ids four apart, possible only around a roll
/// or a truncation) merely see a spurious wake-up and sleep again.
struct WakeWords([AtomicU32; 4]);

/// `futex_wake`'s count of "every waiter" (the kernel reads the count as a signed int).
const ALL: u32 = i32::MAX as u32;

impl WakeWords {
    fn word(&self, group: u64) -> &AtomicU32 {
        let [w0, w1, w2, w3] = &self.0;
        match group % 4 {
            0 => w0,
            1 => w1,
            2 => w2,
            _ => w3,
        }
    }

    /// What a waiter reads before checking its outcome, and sleeps on if unchanged.
    fn seen(&self, group: u64) -> u32 {
        self.word(group).load(Ordering::Acquire)
    }

    /// Sleeps until `group`'s word moves past `seen` (or a safety-net timeout).
    fn sleep(&self, group: u64, seen: u32) {
        let timeout = futex::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        // EAGAIN (the word already moved), EINTR and ETIMEDOUT all mean: look again.
        let _ = futex::wait(
            self.word(group),
            futex::Flags::PRIVATE,
            seen,
            Some(&timeout),
        );
    }

    /// Wakes up to `n` waiters of `group`, after the outcomes they wait for are set.
    fn wake(&self, group: u64, n: u32) {
        wake_word(self.word(group), n);
    }

    fn wake_all_groups(&self) {
        for g in 0..4 {
            self.wake(g, ALL);
        }
    }
}

/// A failure shared by every append of a group (`LogError` holds an `io::Error`, which
/// is not `Clone`).
#[derive(Debug, Clone)]
enum SlotError {
    NoSpace(PathBuf),
    Write(PathBuf, String),
    Poisoned,
    Truncated(u64),
}

impl SlotError {
    fn from_error(e: &LogError) -> Self {
        match e {
            LogError::NoSpace { path } => SlotError::NoSpace(path.clone()),
            LogError::Io { path, error, .. } => SlotError::Write(path.clone(), error.to_string()),
            LogError::ReadOnly { path, error } => SlotError::Write(path.clone(), error.to_string()),
            _ => SlotError::Poisoned,
        }
    }

    fn into_error(self) -> LogError {
        match self {
            SlotError::NoSpace(path) => LogError::NoSpace { path },
            SlotError::Write(path, msg) => LogError::Io {
                op: "write",
                path,
                error: std::io::Error::other(msg),
            },
            SlotError::Poisoned => LogError::Poisoned,
            SlotError::Truncated(offset) => LogError::TruncatedConcurrently { offset },
        }
    }
}

/// Gives up leadership if a sync leader unwinds (a panicking waker, say): `syncing`
/// left set would stop every group commit for good.
struct Leading<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.syncing.store(false, Ordering::Release);
            self.shared.wake.wake_all_groups();
            self.shared.notify_committer();
        }
    }
}

/// How `Shared::enqueue` was called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EnqueueMode {
    /// A blocking append: the caller waits for its slot.
    Blocking,
    /// [`Log::submit`]: queued, the caller gets the slot in a future.
    Submitted,
    /// [`Log::try_submit`]: as `Submitted`, but only if it needs no I/O on this thread.
    NoIo,
}

/// What `Shared::enqueue` did with an append.
enum Queued {
    /// Not done: it would have rolled the segment or written in place ([`EnqueueMode::NoIo`]).
    WouldBlock,
    /// Appended, and as durable as the policy promises (policies other than group commit).
    Done(Vec<AppendInfo>),
    /// Queued for the next group commit; complete when the slot's outcome is set.
    Waiting(Arc<Slot>, Vec<AppendInfo>),
}

/// An append queued by [`Log::submit`]: a future that resolves to the offsets assigned
/// once the batches are as durable as the [`SyncPolicy`] promises.
///
/// The append is queued whether or not the future is polled: dropping it gives up the
/// answer, not the append. It needs no particular runtime: the thread that completes the
/// group commit calls the waker of the task that polled it last. A `Pending` shares the
/// log's state: until it is dropped, the directory stays locked even after the log is
/// closed.
#[must_use = "the append is queued either way; the future tells whether it is durable"]
pub struct Pending {
    state: PendingState,
}

enum PendingState {
    /// The outcome is known (policies other than group commit, or already taken).
    Ready(Option<Result<Vec<AppendInfo>>>),
    Queued {
        shared: Arc<Shared>,
        slot: Arc<Slot>,
        infos: Vec<AppendInfo>,
    },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = matches!(self.state, PendingState::Queued { .. });
        f.debug_struct("Pending")
            .field("queued", &queued)
            .finish_non_exhaustive()
    }
}

impl Future for Pending {
    type Output = Result<Vec<AppendInfo>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (shared, slot, infos) = match &mut self.state {
            PendingState::Ready(outcome) => {
                return match outcome.take() {
                    Some(outcome) => Poll::Ready(outcome),
                    None => panic!("chariot_log::Pending polled after it completed"),
                }
            }
            PendingState::Queued {
                shared,
                slot,
                infos,
            } => (shared, slot, infos),
        };
        let outcome = |slot: &Slot, infos: &mut Vec<AppendInfo>| {
            slot.outcome.get().map(|o| {
                o.clone()
                    .map_err(SlotError::into_error)
                    .map(|()| std::mem::take(infos))
            })
        };
        let mut done = outcome(slot, infos);
        if done.is_none() && shared.poisoned.load(Ordering::Acquire) {
            done = Some(Err(LogError::Poisoned));
        }
        if done.is_none() {
            if let Some(waker) = &slot.waker {
                let mut w = lock(waker);
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            // The group may have completed before the waker was stored: look again.
            done = outcome(slot, infos);
        }
        match done {
            Some(done) => {
                self.state = PendingState::Ready(None);
                Poll::Ready(done)
            }
            None => Poll::Pending,
        }
    }
}

/// What a sync leader checks before publishing.
struct CommitState {
    /// Mirrors `Writer::generation`; checked with `visible_next` updates under this lock.
    generation: u64,
}

struct Shared {
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
    /// Whether the tail thread runs (set at open).
    tail_enabled: bool,
    _lock: File,
}

/// A partition's commit log.
///
/// Invariants:
/// - offsets are dense and strictly increasing from the earliest retained offset;
/// - under a durable [`SyncPolicy`], `append` returns `Ok` only after an fdatasync that
///   covers the batch, and readers never see a record before it is acknowledged;
/// - a failed append leaves the files exactly as they were, or poisons the log;
/// - readers never wait for a sync or a disk write: they take two short locks to copy a
///   segment list `Arc` and look up an index entry, then read with `pread`.
pub struct Log {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    tail_worker: Option<JoinHandle<()>>,
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

/// Takes the advisory lock that keeps a second process (or a repair) out of `dir`; it
/// holds as long as the returned file is open. While another process holds it, retries
/// for up to `wait` (saying once that it waits), then fails with [`LogError::Locked`].
pub(crate) fn lock_dir(dir: &Path, wait: Duration) -> Result<File> {
    /// Pause between attempts: short next to a server's shutdown, long next to a syscall.
    const RETRY: Duration = Duration::from_millis(20);
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| LogError::io("open", &lock_path, e))?;
    let started = Instant::now();
    let mut warned = false;
    loop {
        match lock_file.try_lock() {
            Ok(()) => {
                if warned {
                    tracing::info!(lock = %lock_path.display(), waited = ?started.elapsed(), "lock acquired");
                }
                return Ok(lock_file);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let waited = started.elapsed();
                if waited >= wait {
                    return Err(LogError::Locked {
                        path: lock_path,
                        waited,
                    });
                }
                if !warned {
                    warned = true;
                    tracing::warn!(
                        lock = %lock_path.display(),
                        up_to = ?wait,
                        "locked by another process (a previous server still shutting down?); \
                         waiting for it"
                    );
                }
                std::thread::sleep(RETRY.min(wait - waited));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::io("lock", &lock_path, e))
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and runs recovery.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
        let lock_file = lock_dir(&dir, config.lock_wait)?;

        let mut bases = Vec::new();
        let mut markers = Vec::new();
        let listing = std::fs::read_dir(&dir).map_err(|e| LogError::io("list", &dir, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| LogError::io("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = segment::parse_data_file_name(&name) {
                bases.push(base);
            } else if let Some(offset) = parse_truncate_marker(&name) {
                markers.push(offset);
            } else if name.ends_with(".index.tmp") {
                // A seal interrupted before its rename; the segment's index is rebuilt.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        // A truncation interrupted by a crash: finish it before anything is read. The
        // segments above the cut go (newest first, as `truncate_to` deletes them, so the
        // rest stays contiguous); the last one left is cut below once it is open. (There
        // is at most one marker: a truncation whose marker could not be removed poisons
        // the log. Were there more, the lowest cut covers them all.)
        let truncating = markers.iter().min().copied();
        if let Some(offset) = truncating {
            if bases.first().is_some_and(|&first| first > offset) {
                return Err(LogError::Corrupt {
                    path: truncate_marker(&dir, offset),
                    position: 0,
                    offset,
                    reason: "truncation marker below the first segment".into(),
                });
            }
            while let Some(&base) = bases.last() {
                if base <= offset || bases.len() == 1 {
                    break;
                }
                segment::delete_files_at(&dir, base)?;
                bases.pop();
            }
            sync_dir(&dir)?;
        }

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        let mut recovery = Vec::new();
        let mut damage = None;
        let last = bases.len().saturating_sub(1);
        for (i, &base) in bases.iter().enumerate() {
            let (seg, recovered) = Segment::open(&dir, base, i == last)?;
            if let Some(prev) = segments.last() {
                if prev.next_offset() != base {
                    return Err(LogError::Corrupt {
                        path: seg.data_path().to_path_buf(),
                        position: 0,
                        offset: base,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            prev.next_offset()
                        ),
                    });
                }
            }
            match recovered {
                Recovered::Clean => {}
                Recovered::Cut(cut) => recovery.push(cut),
                Recovered::Damaged(d) => {
                    tracing::error!(damage = %d, "log is damaged: serving its intact prefix, refusing writes");
                    damage = Some(d);
                }
            }
            segments.push(Arc::new(seg));
        }
        let active = match segments.last() {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(Segment::create(&dir, 0)?);
                sync_dir(&dir)?;
                segments.push(Arc::clone(&s));
                s
            }
        };
        if let (Some(offset), Some(d)) = (truncating, &damage) {
            // Finishing the truncation would write into a file that is not understood.
            if d.offset > offset {
                return Err(LogError::Damaged(Box::new(d.clone())));
            }
        }
        if let Some(offset) = truncating {
            if active.next_offset() > offset {
                active.truncate_to(offset)?;
            }
            for m in &markers {
                let marker = truncate_marker(&dir, *m);
                std::fs::remove_file(&marker).map_err(|e| LogError::io("remove", &marker, e))?;
            }
            sync_dir(&dir)?;
        }
        // What recovery kept may only be in the page cache (kill -9 under a lazy policy):
        // make it durable before anyone is told it exists.
        active.sync()?;
        if damage.is_none() {
            active.preallocate(config.segment_bytes);
        }
        let next = active.next_offset();
        let mode = if config.sync.is_durable() {
            Mode::ZeroFill
        } else {
            Mode::WriteBehind
        };
        // A damaged log is never written, and its zeros would land on the damaged bytes.
        let tail_enabled = damage.is_none()
            && match mode {
                Mode::WriteBehind => true,
                Mode::ZeroFill => config.zero_fill_ahead && tail::zero_fill_pays(active.file()),
            };
        let tail = TailWorker::new(mode, tail_enabled.then(|| Arc::clone(&active)));

        let shared = Arc::new(Shared {
            dir,
            writer: Mutex::new(Writer {
                active,
                next_offset: next,
                generation: 0,
                pending: Vec::new(),
                pending_headers: Vec::new(),
                pending_slots: Vec::new(),
                group_id: 0,
            }),
            segments: RwLock::new(Arc::new(segments)),
            visible_next: AtomicU64::new(next),
            wake: WakeWords(Default::default()),
            syncing: AtomicBool::new(false),
            commit: Mutex::new(CommitState { generation: 0 }),
            commit_word: AtomicU32::new(0),
            commit_stop: AtomicBool::new(false),
            last_group: AtomicUsize::new(0),
            last_sync_nanos: AtomicU64::new(0),
            gather_want: AtomicUsize::new(0),
            gather_word: AtomicU32::new(0),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stop: Mutex::new(false),
            stopping: Condvar::new(),
            recovery,
            damage,
            tail,
            tail_enabled,
            _lock: lock_file,
            config,
        });
        // The tail thread first: if the interval thread cannot start, the tail thread
        // is stopped again, so a failed open leaves no thread holding the directory.
        let tail_worker = if shared.tail_enabled {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("chariot-log-tail".into())
                    .spawn(move || s.run_tail_worker())
                    .map_err(|e| LogError::io("spawn tail thread", &shared.dir, e))?,
            )
        } else {
            None
        };
        // The interval policy's sync thread, or group commit's commit thread.
        let s = Arc::clone(&shared);
        let spawned = match shared.config.sync {
            SyncPolicy::Interval(every) => std::thread::Builder::new()
                .name("chariot-log-sync".into())
                .spawn(move || s.run_interval_sync(every))
                .map(Some),
            SyncPolicy::GroupCommit => std::thread::Builder::new()
                .name("chariot-log-commit".into())
                .spawn(move || s.run_committer())
                .map(Some),
            _ => Ok(None),
        };
        let syncer = match spawned {
            Ok(t) => t,
            Err(e) => {
                shared.tail.stop();
                if let Some(t) = tail_worker {
                    let _ = t.join();
                }
                return Err(LogError::io("spawn sync thread", &shared.dir, e));
            }
        };
        Ok(Self {
            shared,
            syncer,
            tail_worker,
        })
    }

    /// Appends a batch, stamping its base offset, and returns the offsets assigned.
    /// Returns once the batch is as durable as the [`SyncPolicy`] promises.
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
    /// Under [`SyncPolicy::GroupCommit`] the batches join the next group, and the log's
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

    fn pending(&self, queued: Queued) -> Option<Pending> {
        let state = match queued {
            Queued::WouldBlock => return None,
            Queued::Done(infos) => PendingState::Ready(Some(Ok(infos))),
            Queued::Waiting(slot, infos) => PendingState::Queued {
                shared: Arc::clone(&self.shared),
                slot,
                infos,
            },
        };
        Some(Pending { state })
    }

    /// Reads whole batches starting with the one containing `from`, up to `max_bytes`
    /// (always at least one batch), from a single segment; verifies their checksums.
    /// At the end of the log the result is empty.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<ReadBatches> {
        let (earliest, next) = (self.earliest_offset(), self.next_offset());
        let Some(slice) = self.locate(from, max_bytes)? else {
            return Ok(ReadBatches {
                bytes: Vec::new(),
                first_offset: from,
                next_offset: from,
                log_earliest: earliest,
                log_next: next,
            });
        };
        let mut bytes = slice.segment.read_at(slice.position, slice.len as usize)?;
        let mut at = 0usize;
        let mut expected = slice.first_offset;
        let mut damaged = None;
        while at < bytes.len() {
            let position = slice.position + at as u64;
            let corrupt = |reason: String| LogError::Corrupt {
                path: slice.path().to_path_buf(),
                position,
                offset: expected,
                reason,
            };
            let rest = bytes.get(at..).unwrap_or_default();
            let checked = BatchHeader::parse(rest)
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    if h.base_offset != expected {
                        return Err(format!(
                            "batch base offset {} where {expected} was expected",
                            h.base_offset
                        ));
                    }
                    let one = rest
                        .get(..h.total_len() as usize)
                        .ok_or("batch length runs past the indexed range")?;
                    batch::validate_crc(&h, one).map_err(|e| e.to_string())?;
                    Ok(h)
                });
            match checked {
                Ok(h) => {
                    at += h.total_len() as usize;
                    expected = h.next_offset();
                }
                Err(reason) => {
                    damaged = Some(corrupt(reason));
                    break;
                }
            }
        }
        // The batches before a damaged one are returned; the damaged one is an error only
        // for a read that starts with it, so readers reach it, and reads past it work.
        let next_offset = match damaged {
            Some(e) if at == 0 => return Err(e),
            Some(_) => {
                bytes.truncate(at);
                expected
            }
            None => slice.next_offset,
        };
        Ok(ReadBatches {
            bytes,
            first_offset: slice.first_offset,
            next_offset,
            log_earliest: earliest,
            log_next: next.max(next_offset),
        })
    }

    /// Like [`Log::read`] but returns the file range instead of the bytes (no copy, no
    /// checksum verification), for `sendfile`. `None` at the end of the log.
    pub fn locate(&self, from: u64, max_bytes: usize) -> Result<Option<FileSlice>> {
        let next = self.shared.visible_next.load(Ordering::Acquire);
        let segs = self.shared.segment_list();
        let earliest = segs.first().map_or(0, |s| s.base_offset());
        if from < earliest || from > next {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                earliest,
                next,
            });
        }
        if from == next {
            return Ok(None);
        }
        let i = segs.partition_point(|s| s.base_offset() <= from);
        let Some(seg) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
            return Ok(None);
        };
        let entries = seg.entries_for_read(from, next, max_bytes);
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let position = u64::from(first.position);
        let end = u64::from(last.position) + u64::from(last.len);
        let next_offset = last.next_offset(seg.base_offset());
        Ok(Some(FileSlice {
            segment: Arc::clone(seg),
            position,
            len: end - position,
            first_offset: seg.base_offset() + u64::from(first.relative_offset),
            next_offset,
        }))
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
    /// is refused with [`LogError::Damaged`] until [`crate::repair`] has run.
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
        self.shared.tail.stop();
        if let Some(t) = self.tail_worker.take() {
            let _ = t.join();
        }
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

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "closing log failed");
        }
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
        // thread, which fails the submitted appends no leader will take any more.
        self.wake.wake_all_groups();
        self.notify_committer();
        err
    }

    /// Appends `batches` as one unit: one write, at most one sync, all or nothing. The
    /// segment-roll decision is taken once for the whole call, so a call never straddles
    /// two segments (a segment may exceed `segment_bytes` by at most one call).
    fn append_many(&self, batches: &mut [RecordBatch]) -> Result<Vec<AppendInfo>> {
        match self.enqueue(batches, EnqueueMode::Blocking)? {
            Queued::Done(infos) => Ok(infos),
            Queued::Waiting(slot, infos) => {
                self.wait_for(&slot)?;
                Ok(infos)
            }
            // Only `EnqueueMode::NoIo` gives up.
            Queued::WouldBlock => Err(LogError::Poisoned),
        }
    }

    /// Appends `batches` (see `append_many`) under every policy but group commit, and
    /// queues them for the next group commit under that one: a blocking append then
    /// waits for its slot (`submitted` false), a submitted one returns it to a future.
    fn enqueue(&self, batches: &mut [RecordBatch], mode: EnqueueMode) -> Result<Queued> {
        let submitted = mode != EnqueueMode::Blocking;
        let gc = self.config.sync == SyncPolicy::GroupCommit;
        if mode == EnqueueMode::NoIo && !gc {
            return Ok(Queued::WouldBlock);
        }
        self.check_writable()?;
        let mut total = 0u64;
        for b in batches.iter() {
            if b.len() > self.config.max_batch_bytes {
                return Err(LogError::BatchTooLarge {
                    size: b.len(),
                    max: self.config.max_batch_bytes,
                });
            }
            if b.is_empty() {
                return Err(LogError::EmptyBatch);
            }
            total += b.len() as u64;
        }
        if batches.is_empty() {
            return Ok(Queued::Done(Vec::new()));
        }
        if total > self.config.segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: total as usize,
                max: self.config.segment_bytes as usize,
            });
        }
        let mut w = lock(&self.writer);
        self.check_usable()?;
        let size = w.active.size() + w.pending.len() as u64;
        let entries = w.active.entry_count() + w.pending_headers.len();
        if size > 0
            && (size + total > self.config.segment_bytes
                || entries + batches.len() > self.config.index_max_entries as usize)
        {
            if mode == EnqueueMode::NoIo {
                return Ok(Queued::WouldBlock);
            }
            self.roll(&mut w)?;
        }
        if !gc {
            if let [batch] = batches {
                // One batch and no group to join: write it in place, without a copy.
                let base = w.next_offset;
                batch.set_base_offset(base);
                let h = batch.header();
                match self.write_active(&w, batch.as_bytes(), &[h]) {
                    Ok(()) => {}
                    Err(AppendFailure::RolledBack(e)) => return Err(e),
                    Err(AppendFailure::Unrecoverable(e)) => return Err(self.poison(e)),
                }
                w.next_offset = h.next_offset();
                return self.finish_direct(&w).map(|()| {
                    Queued::Done(vec![AppendInfo {
                        base_offset: base,
                        last_offset: h.next_offset() - 1,
                    }])
                });
            }
        }
        let mut infos = Vec::with_capacity(batches.len());
        for batch in batches.iter_mut() {
            let base = w.next_offset;
            batch.set_base_offset(base);
            let h = batch.header();
            w.pending.extend_from_slice(batch.as_bytes());
            w.pending_headers.push(h);
            w.next_offset = h.next_offset();
            infos.push(AppendInfo {
                base_offset: base,
                last_offset: h.next_offset() - 1,
            });
        }
        if gc {
            let slot = Arc::new(Slot::new(w.next_offset, w.group_id, submitted));
            w.pending_slots.push(Arc::clone(&slot));
            let want = self.gather_want.load(Ordering::Relaxed);
            let gathered =
                want != 0 && (w.pending_slots.len() >= want || w.pending.len() >= GATHER_BYTES);
            drop(w);
            if gathered {
                wake_word(&self.gather_word, 1);
            }
            // No thread waits on a submitted append: if no sync is running, the commit
            // thread leads one. (A leader clears `syncing` before it last looks at the
            // pending appends under the writer lock, so one of the two sees this one.)
            if submitted && !self.syncing.load(Ordering::Acquire) {
                self.notify_committer();
            }
            return Ok(Queued::Waiting(slot, infos));
        }
        let (_, written) = self.write_pending(&mut w);
        written?;
        self.finish_direct(&w)?;
        Ok(Queued::Done(infos))
    }

    /// Writes batches at the end of the active segment (the only way the writer writes
    /// to it), keeping the tail thread in step: waits out a chunk of zeros in the way,
    /// reports the new tail and the write's size, and after a rolled-back write stops
    /// the tail work on the segment and cuts it again. (A chunk of zeros being written
    /// past the cut could have grown the file back; the second cut leaves the files
    /// exactly as before the append.)
    fn write_active(
        &self,
        w: &Writer,
        bytes: &[u8],
        headers: &[BatchHeader],
    ) -> Result<(), AppendFailure> {
        self.tail.before_write(w.active.size() + bytes.len() as u64);
        let written = w.active.append(bytes, headers);
        match &written {
            Ok(()) => self.tail.wrote(w.active.size(), bytes.len() as u64),
            Err(AppendFailure::RolledBack(_)) => {
                self.tail.retarget(None);
                if let Err(e) = w.active.trim() {
                    // Its sync may have been the one to see a writeback error of other data.
                    self.poison(e);
                }
            }
            Err(AppendFailure::Unrecoverable(_)) => {}
        }
        written
    }

    /// Sets the outcome of every append of `group`, then wakes them all with one call.
    fn complete(&self, group: &Group, outcome: impl Fn(&Slot) -> Result<(), SlotError>) {
        let mut threads = false;
        let mut wakers = Vec::new();
        for s in &group.slots {
            let _ = s.outcome.set(outcome(s));
            match &s.waker {
                None => threads = true,
                // Taken under the lock `Pending::poll` stores it with, after the outcome
                // is set: either this finds the waker or the poll sees the outcome.
                Some(waker) => wakers.extend(lock(waker).take()),
            }
        }
        if threads {
            self.wake.wake(group.id, ALL);
        }
        // Every outcome is set before any waker runs, and a waker that panics (it is the
        // caller's code) cannot keep the others from running.
        for waker in wakers {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake())).is_err() {
                tracing::error!(dir = %self.dir.display(), "a waker of a submitted append panicked");
            }
        }
    }

    /// Asks the commit thread to look for submitted appends without a leader.
    fn notify_committer(&self) {
        wake_word(&self.commit_word, 1);
    }

    /// Claims the leadership of the next sync if nobody holds it.
    fn try_lead(&self) -> bool {
        !self.syncing.load(Ordering::Relaxed)
            && self
                .syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Completes an append written directly (policies other than group commit).
    fn finish_direct(&self, w: &Writer) -> Result<()> {
        if self.config.sync == SyncPolicy::EveryAppend {
            if let Err(e) = w.active.sync() {
                return Err(self.poison(e));
            }
        }
        self.visible_next.store(w.next_offset, Ordering::Release);
        Ok(())
    }

    /// Waits for a group-commit append's slot, leading a sync whenever none is running:
    /// the leader writes every pending batch with one write, runs one fdatasync for all of
    /// them, and completes their slots, so N concurrent appends cost about two syncs.
    fn wait_for(&self, slot: &Slot) -> Result<()> {
        loop {
            // Read the word before looking at the outcome: a completion after this read
            // moves the word, so the sleep below cannot miss it.
            let seen = self.wake.seen(slot.group);
            if let Some(outcome) = slot.outcome.get() {
                return outcome.clone().map_err(SlotError::into_error);
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(LogError::Poisoned);
            }
            if self.try_lead() {
                // Its error reached the slots it concerns, ours included if it did.
                let _ = self.lead_sync(EXTRA_ROUNDS);
                continue;
            }
            // Woken when the group completes, when it should lead, or on poisoning; the
            // timeout is only a safety net.
            self.wake.sleep(slot.group, seen);
        }
    }

    /// Group commits, run by the thread that set `syncing`: write the pending batches,
    /// fdatasync the active segment, publish, complete the slots. If more appends queued
    /// meanwhile, lead their sync too (up to `extra_rounds` times) rather than hand over:
    /// waking another thread to lead costs a scheduling delay per sync. An appender
    /// leading for its group stops after [`EXTRA_ROUNDS`] to get back to its caller; the
    /// commit thread has no caller and goes on while there is work.
    fn lead_sync(&self, extra_rounds: usize) -> Result<()> {
        let mut leading = Leading {
            shared: self,
            armed: true,
        };
        let mut rounds = 0;
        loop {
            self.gather();
            let mut w = lock(&self.writer);
            if self.poisoned.load(Ordering::Acquire) {
                // Appends already told `Poisoned` may still be pending: none is written.
                // (`leading` gives up leadership and wakes every waiter on its way out.)
                drop(w);
                self.fail_pending();
                return Err(LogError::Poisoned);
            }
            let (group, written) = self.write_pending(&mut w);
            let (segment, upto, generation) = (Arc::clone(&w.active), w.next_offset, w.generation);
            drop(w);
            // Earlier segments were synced when they were sealed, so syncing the active
            // one makes everything below `upto` durable.
            let started = Instant::now();
            let synced = written.and_then(|()| segment.sync().map_err(|e| self.poison(e)));
            self.last_sync_nanos
                .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.last_group.store(group.slots.len(), Ordering::Relaxed);
            let outcome = match &synced {
                Ok(()) => {
                    let c = lock(&self.commit);
                    if c.generation == generation {
                        self.visible_next.fetch_max(upto, Ordering::AcqRel);
                        Ok(())
                    } else {
                        Err(SlotError::Truncated(upto.saturating_sub(1)))
                    }
                }
                Err(e) => Err(SlotError::from_error(e)),
            };
            self.complete(&group, |s| match &synced {
                Ok(()) if s.is_flush() => Ok(()),
                _ => outcome.clone(),
            });
            let more = synced.is_ok() && !lock(&self.writer).pending_slots.is_empty();
            if more && rounds < extra_rounds {
                rounds += 1;
                continue;
            }
            leading.armed = false;
            self.syncing.store(false, Ordering::Release);
            // Appends that queued during the last sync wait for a leader: wake one of their
            // threads, or the commit thread if they were all submitted.
            let w = lock(&self.writer);
            if w.pending_slots.iter().any(|s| s.has_thread()) {
                self.wake.wake(w.group_id, 1);
            } else if !w.pending_slots.is_empty() {
                drop(w);
                self.notify_committer();
            }
            return synced;
        }
    }

    /// Before a sync leader takes the pending appends: if the last group was large, wait
    /// (at most as long as its fdatasync took, and [`MAX_GATHER`]) until most of its
    /// appenders are back. They were woken together, and each needs a moment of CPU to
    /// append again; a sync started at once would take the first few of them and make
    /// the rest wait for a whole extra sync. A lone appender (a group of one) never
    /// waits.
    fn gather(&self) {
        let last = self.last_group.load(Ordering::Relaxed);
        let want = last - last / 8;
        if want <= 1 {
            return;
        }
        let budget =
            Duration::from_nanos(self.last_sync_nanos.load(Ordering::Relaxed)).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        // Published before the count is read under the writer lock: an append queued
        // after that read sees `want` and wakes this thread (after the word is read).
        self.gather_want.store(want, Ordering::Relaxed);
        loop {
            let seen = self.gather_word.load(Ordering::Acquire);
            {
                let w = lock(&self.writer);
                if w.pending_slots.len() >= want || w.pending.len() >= GATHER_BYTES {
                    break;
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let timeout = futex::Timespec {
                tv_sec: 0,
                tv_nsec: left.as_nanos().min(999_999_999) as i64,
            };
            let _ = futex::wait(
                &self.gather_word,
                futex::Flags::PRIVATE,
                seen,
                Some(&timeout),
            );
        }
        self.gather_want.store(0, Ordering::Relaxed);
    }

    /// Writes the pending batches to the active segment and returns their slots. On a
    /// failed write the batches are dropped, their offsets are given back, and their
    /// slots complete with the error; the file is as it was before them.
    fn write_pending(&self, w: &mut Writer) -> (Group, Result<()>) {
        let group = Group {
            id: w.group_id,
            slots: std::mem::take(&mut w.pending_slots),
        };
        w.group_id += 1;
        if w.pending_headers.is_empty() {
            return (group, Ok(()));
        }
        let bytes = std::mem::take(&mut w.pending);
        let headers = std::mem::take(&mut w.pending_headers);
        let failure = match self.write_active(w, &bytes, &headers) {
            Ok(()) => return (group, Ok(())),
            Err(AppendFailure::RolledBack(e)) => e,
            Err(AppendFailure::Unrecoverable(e)) => self.poison(e),
        };
        if let Some(first) = headers.first() {
            w.next_offset = first.base_offset;
        }
        let shared = SlotError::from_error(&failure);
        self.complete(&group, |_| Err(shared.clone()));
        let completed = Group {
            slots: Vec::new(),
            ..group
        };
        (completed, Err(failure))
    }

    /// Makes everything appended so far durable (flush, close, interval policy). Under
    /// group commit it joins the next group with a slot of its own, as a blocking append
    /// without batches, so a steady stream of appends leading syncs cannot keep it
    /// waiting; under the other policies it syncs the active segment.
    fn sync_now(&self) -> Result<()> {
        if self.config.sync != SyncPolicy::GroupCommit {
            // Appends are written in place under the writer lock, and a roll syncs the
            // segment it seals: syncing the active segment covers everything appended.
            let active = Arc::clone(&lock(&self.writer).active);
            return active.sync().map_err(|e| self.poison(e));
        }
        let slot = {
            let mut w = lock(&self.writer);
            // It asks for no offset: `next` 0 is kept by any truncation racing it.
            let slot = Arc::new(Slot::new(0, w.group_id, false));
            w.pending_slots.push(Arc::clone(&slot));
            slot
        };
        self.wait_for(&slot)
    }

    /// Makes a group just written by the writer durable with `sync`, publishes it, and
    /// completes its slots: `Ok` where `kept` says so, `Truncated` elsewhere. A failed
    /// sync poisons the log and fails the whole group.
    fn settle(
        &self,
        w: &Writer,
        group: &Group,
        publish: u64,
        sync: impl FnOnce() -> Result<()>,
        kept: impl Fn(&Slot) -> bool,
    ) -> Result<()> {
        if let Err(e) = sync() {
            self.complete(group, |_| Err(SlotError::Poisoned));
            return Err(self.poison(e));
        }
        self.visible_next
            .fetch_max(publish.min(w.next_offset), Ordering::AcqRel);
        self.complete(group, |s| {
            if s.is_flush() || kept(s) {
                Ok(())
            } else {
                Err(SlotError::Truncated(s.next.saturating_sub(1)))
            }
        });
        Ok(())
    }

    fn roll(&self, w: &mut Writer) -> Result<()> {
        // No zeros may land in a segment being sealed (its preallocation is trimmed), and
        // the sync behind its tail is the seal's job now.
        self.tail.retarget(None);
        let (group, written) = self.write_pending(w);
        written?;
        // Sealing syncs the segment: everything written so far becomes durable.
        let upto = w.next_offset;
        self.settle(w, &group, upto, || w.active.seal(), |_| true)?;
        // A segment that could not be created leaves nothing behind: appends continue in
        // the sealed one, which recovery treats as active again. But a created file that
        // is not in the list (its directory entry not durable) would break the next
        // roll and the next open: refuse further writes instead.
        let seg = Arc::new(Segment::create(&self.dir, w.next_offset)?);
        seg.preallocate(self.config.segment_bytes);
        if let Err(e) = sync_dir(&self.dir) {
            return Err(self.poison(e));
        }
        let mut list: Vec<Arc<Segment>> = self.segment_list().iter().cloned().collect();
        list.push(Arc::clone(&seg));
        self.set_segment_list(list);
        if self.tail_enabled {
            self.tail.retarget(Some(Arc::clone(&seg)));
        }
        w.active = seg;
        if let Err(e) = self.apply_retention(w) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "retention failed");
        }
        Ok(())
    }

    /// Deletes the oldest sealed segments while a limit is exceeded. Only a prefix is
    /// removed, so the retained offsets stay dense.
    fn apply_retention(&self, w: &Writer) -> Result<usize> {
        let (max_bytes, max_age) = (self.config.retention_bytes, self.config.retention_age);
        if max_bytes.is_none() && max_age.is_none() {
            return Ok(0);
        }
        let list = self.segment_list();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        let mut total: u64 = list.iter().map(|s| s.size()).sum();
        let mut drop_count = 0;
        for s in list.iter() {
            if Arc::ptr_eq(s, &w.active) {
                break;
            }
            let too_big = max_bytes.is_some_and(|m| total > m);
            let too_old =
                max_age.is_some_and(|age| s.max_timestamp() < now_ms - age.as_millis() as i64);
            if !(too_big || too_old) {
                break;
            }
            total -= s.size();
            drop_count += 1;
        }
        if drop_count == 0 {
            return Ok(0);
        }
        let (gone, kept) = list.split_at(drop_count);
        self.set_segment_list(kept.to_vec());
        for s in gone {
            s.delete_files()?;
        }
        sync_dir(&self.dir)?;
        Ok(drop_count)
    }

    fn truncate_to(&self, offset: u64) -> Result<()> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        self.check_usable()?;
        // Appends racing a truncation (a misuse: replication truncates a follower that
        // takes no appends) are written first, so the cut sees one consistent file; they
        // are answered once the outcome of the truncation is known.
        let (group, written) = self.write_pending(&mut w);
        written?;
        let checked = self.check_truncation(&w, offset);
        let (i, target) = match checked {
            Ok(Some(found)) => found,
            Ok(None) | Err(_) => {
                // Nothing to cut (or a refused cut): the appends are kept.
                if !group.slots.is_empty() {
                    let upto = w.next_offset;
                    self.settle(&w, &group, upto, || w.active.sync(), |_| true)?;
                }
                return checked.map(|_| ());
            }
        };
        // Nothing above the cut may become visible or count as durable from here on:
        // a sync in flight now fails its group (`generation`), and any failure below
        // poisons the log, since appenders above the cut may already have been told.
        {
            let mut c = lock(&self.commit);
            w.generation += 1;
            c.generation = w.generation;
            self.visible_next.fetch_min(offset, Ordering::AcqRel);
        }
        if !group.slots.is_empty() {
            self.settle(&w, &group, offset, || w.active.sync(), |s| s.next <= offset)?;
        }
        // From here on a crash leaves a half-done truncation (later segments deleted, the
        // target not yet cut: the cut records would come back). The marker makes the
        // next open finish it; it goes once the cut is durable, before any append.
        let marker = truncate_marker(&self.dir, offset);
        let created = File::create(&marker)
            .map_err(|e| LogError::io("create", &marker, e))
            .and_then(|_| sync_dir(&self.dir));
        if let Err(e) = created {
            return Err(self.poison(e));
        }
        let list = self.segment_list();
        let (kept, gone) = list.split_at(i.min(list.len()));
        self.set_segment_list(kept.to_vec());
        w.active = Arc::clone(&target);
        w.next_offset = offset;
        for s in gone.iter().rev() {
            if let Err(e) = s.delete_files() {
                return Err(self.poison(e));
            }
        }
        // Tail work stops until the next roll: the cut segment is not zeroed again.
        self.tail.retarget(None);
        if let Err(e) = target.truncate_to(offset) {
            return Err(self.poison(e));
        }
        // A marker left behind would cut acknowledged appends at the next open: if it
        // cannot be removed durably, no append may be acknowledged any more.
        let removed = std::fs::remove_file(&marker)
            .map_err(|e| LogError::io("remove", &marker, e))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = removed {
            return Err(self.poison(e));
        }
        // Everything below the cut is durable now (sealed segments, and the cut synced
        // the target): readers and `next_offset` see up to it, even records a racing
        // group wrote below the cut and never published.
        {
            let _c = lock(&self.commit);
            self.visible_next.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Checks that `offset` is a place `truncate_to` can cut: `None` if it is the end
    /// (nothing to cut), else the index of the first segment to delete and the segment
    /// to cut.
    fn check_truncation(&self, w: &Writer, offset: u64) -> Result<Option<(usize, Arc<Segment>)>> {
        let list = self.segment_list();
        let earliest = list.first().map_or(0, |s| s.base_offset());
        if offset < earliest || offset > w.next_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                earliest,
                next: w.next_offset,
            });
        }
        if offset == w.next_offset {
            return Ok(None);
        }
        let i = list.partition_point(|s| s.base_offset() <= offset);
        let Some(target) = i.checked_sub(1).and_then(|i| list.get(i)) else {
            return Err(LogError::NotBatchBoundary { offset });
        };
        if offset != target.next_offset() && target.position_of(offset).is_none() {
            return Err(LogError::NotBatchBoundary { offset });
        }
        Ok(Some((i, Arc::clone(target))))
    }

    /// The tail thread. Zero-fill: zero the next chunk ahead of the tail, sync it,
    /// repeat. Write-behind: sync the active segment each time enough was written. It
    /// sleeps while there is nothing to do. A write error (a full disk) only stops
    /// zero-filling of that segment; a sync error poisons the log like any failed sync.
    fn run_tail_worker(&self) {
        let mut file: Option<TailFile> = None;
        // Nothing happens before the first write: an idle log costs nothing.
        self.tail.wait_for_work();
        loop {
            let claim = {
                let w = lock(&self.writer);
                let tail = w.active.size() + w.pending.len() as u64;
                let file_len = w.active.file().metadata().map_or(0, |m| m.len());
                self.tail
                    .claim(&w.active, tail, file_len, self.config.segment_bytes)
            };
            let (segment, zeros, to) = match claim {
                Claim::Stop => return,
                Claim::Idle => {
                    file = None;
                    self.tail.wait_for_work();
                    continue;
                }
                Claim::Chunk(segment, from, to) => (segment, Some(from), to),
                Claim::Sync(segment, upto) => (segment, None, upto),
            };
            // Ends the claim even if this thread panics, so the writer never waits forever.
            let mut done = Finish::new(&self.tail, to);
            if !file.as_ref().is_some_and(|f| f.is_for(&segment)) {
                file = TailFile::open(&segment)
                    .inspect_err(|e| tracing::debug!(error = %e, "no tail work"))
                    .ok();
            }
            let ok = match &file {
                None => false,
                Some(f) => {
                    let written = match zeros {
                        Some(from) => f.write_zeros(from, to),
                        None => Ok(()),
                    };
                    match written {
                        Err(e) => {
                            tracing::debug!(error = %e, "zero-filling stopped");
                            false
                        }
                        Ok(()) => match f.sync() {
                            Ok(()) => true,
                            Err(e) => {
                                self.poison(e);
                                false
                            }
                        },
                    }
                }
            };
            done.ok = ok;
        }
    }

    /// The commit thread (group commit only): leads the syncs of submitted appends,
    /// which have no thread of their own to lead one. Blocking appenders still lead
    /// their own groups; whoever claims `syncing` commits everything pending. Once the
    /// log is poisoned no sync runs again, and it fails the appends still queued.
    fn run_committer(&self) {
        loop {
            // Read the word before looking for work: a notification after this read
            // moves it, so the wait below cannot miss it.
            let seen = self.commit_word.load(Ordering::Acquire);
            if self.poisoned.load(Ordering::Acquire) {
                self.fail_pending();
            }
            if self.commit_stop.load(Ordering::Acquire) {
                return;
            }
            if !self.poisoned.load(Ordering::Acquire) {
                let work = !lock(&self.writer).pending_slots.is_empty();
                if work && self.try_lead() {
                    // Errors reached the slots they concern.
                    let _ = self.lead_sync(usize::MAX);
                    continue;
                }
            }
            // EAGAIN (the word moved) and EINTR both mean: look again.
            let _ = futex::wait(&self.commit_word, futex::Flags::PRIVATE, seen, None);
        }
    }

    /// On a poisoned log: drops the appends still queued (their bytes are never written)
    /// and fails them, waking their threads and tasks.
    fn fail_pending(&self) {
        let group = {
            let mut w = lock(&self.writer);
            // Their offsets are given back, as after a failed write.
            if let Some(first) = w.pending_headers.first() {
                w.next_offset = first.base_offset;
            }
            w.pending.clear();
            w.pending_headers.clear();
            Group {
                id: w.group_id,
                slots: std::mem::take(&mut w.pending_slots),
            }
        };
        self.complete(&group, |_| Err(SlotError::Poisoned));
    }

    fn run_interval_sync(&self, every: Duration) {
        let mut stop = lock(&self.stop);
        loop {
            let (s, _) = self
                .stopping
                .wait_timeout(stop, every)
                .unwrap_or_else(PoisonError::into_inner);
            stop = s;
            if *stop || self.poisoned.load(Ordering::Acquire) {
                return;
            }
            drop(stop);
            if let Err(e) = self.sync_now() {
                tracing::error!(dir = %self.dir.display(), error = %e, "interval sync failed");
            }
            stop = lock(&self.stop);
        }
    }
}
