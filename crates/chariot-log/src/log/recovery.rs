//! Opening a log: the directory lock, the segment listing, finishing an interrupted
//! truncation, the recovery scan of every segment, and starting the log's threads.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{LogConfig, SyncPolicy};
use crate::error::{LogError, Result};
use crate::segment::{self, Recovered, Segment};
use crate::tail::{self, Mode, TailWorker};

use super::*;

/// Name of the file whose advisory lock keeps a second process out of the directory.
pub(super) const LOCK_FILE: &str = "LOCK";

/// Takes the advisory lock that keeps a second process (or a repair) out of `dir`; it
/// holds as long as the returned file is open. While another process holds it, retries
/// for up to `wait` (saying once that it waits), then fails with [`LogError::Locked`].
pub(crate) fn lock_dir(dir: &Path, wait: Duration) -> Result<File> {
    /// Pause between attempts: short next to a server's shutdown, long next to a syscall.
    pub(super) const RETRY: Duration = Duration::from_millis(20);
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

impl Log {
    /// Opens (creating if needed) the log in `dir` and runs recovery.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        Self::open_from(dir, config, 0)
    }

    /// As [`Log::open`], but a log created here (a directory without segments) starts at
    /// `first_offset` instead of 0: a Raft log whose entries up to a snapshot were
    /// dropped starts again after the snapshot. An existing log keeps its offsets.
    pub fn open_from(dir: impl AsRef<Path>, config: LogConfig, first_offset: u64) -> Result<Self> {
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
        for (i, &base) in bases.iter().enumerate() {
            let (seg, recovered) = Segment::open(&dir, base, bases.get(i + 1).copied())?;
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
                let s = Arc::new(Segment::create(&dir, first_offset)?);
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
        if damage.is_none() && config.preallocate {
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
        let tail = TailWorker::new(
            mode,
            tail_enabled.then(|| Arc::clone(&active)),
            config.segment_bytes,
        );

        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
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
            committer_spinning: AtomicBool::new(false),
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
            committer: super::threads::Worker::new("chariot-log-commit"),
            tail_thread: super::threads::Worker::new("chariot-log-tail"),
            _lock: lock_file,
            config,
        });
        // The interval policy's sync thread. The commit and tail threads start with
        // their first work (see `threads`): a log at rest holds none.
        let syncer = match shared.config.sync {
            SyncPolicy::Interval(every) => {
                let s = Arc::clone(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("chariot-log-sync".into())
                        .spawn(move || s.run_interval_sync(every))
                        .map_err(|e| LogError::io("spawn sync thread", &shared.dir, e))?,
                )
            }
            _ => None,
        };
        Ok(Self { shared, syncer })
    }
}
