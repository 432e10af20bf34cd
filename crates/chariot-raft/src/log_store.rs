//! The Raft log of one group, stored in a chariot-log instance: entry index = offset,
//! one batch per entry (so a conflicting suffix can be cut at any entry), group commit
//! for durability. Vote and purged id live in a small fsynced file (`raft-state`), the
//! committed id in one written without fsync (`committed`: openraft treats it as a hint).
//!
//! openraft wants an appended entry readable as soon as `append` returns, before it is
//! durable, so that the leader replicates it while its own fdatasync runs. The store
//! keeps appended entries in memory until their group commit completes; a reader takes
//! what is below the oldest of them from the log, the rest from memory.
//!
//! Files: `<dir>/raft-state`, `<dir>/committed`, and the log in `<dir>/log-<first>`,
//! where `<first>` is the index its entries start at. Purging past the last entry (a
//! snapshot installed on a follower that lags) starts a new log directory after the
//! snapshot, once the new purged id is durable; a crash between the two is finished at
//! the next open, and the older directory is deleted.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chariot_log::{Log, LogConfig, Pending, RecordBatch};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::entry;
use crate::error::{run_blocking, RaftStoreError};
use crate::state_file::{sync_dir, StateFile};
use crate::sync::{lock, read, write};
use crate::{Entry, LogId, TypeConfig, Vote};

/// Most bytes of entries a read returns beyond its first entry.
const READ_BYTES: usize = 4 << 20;

/// What `raft-state` holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Persisted {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

/// A group's Raft log. Clones share it; the clone openraft reads through is its
/// [`RaftLogReader`].
#[derive(Clone)]
pub struct RaftLogStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    log: RwLock<Arc<Log>>,
    persisted_file: StateFile,
    committed_file: StateFile,
    state: Mutex<State>,
    /// Appends whose group commit is awaited, in order, by the completion task.
    completions: mpsc::UnboundedSender<Completion>,
    /// How many appends are not yet completed (truncation and purge wait for none).
    inflight: watch::Sender<usize>,
}

struct State {
    persisted: Persisted,
    committed: Option<LogId>,
    /// Id of the last entry, or the purged id if there is none.
    last: Option<LogId>,
    /// Entries appended but not yet known durable, by index. Everything below the first
    /// of them (and above the purged id) is durable in the log.
    unflushed: BTreeMap<u64, Entry>,
}

struct Completion {
    pendings: Vec<Pending>,
    last_index: u64,
    callback: IOFlushed<TypeConfig>,
}

/// `raft-state`: the vote and the purged id, fsynced.
fn persisted_file(dir: &Path) -> StateFile {
    StateFile::new(dir, "raft-state", true)
}

/// `committed`: the committed id, a hint, not fsynced.
fn committed_file(dir: &Path) -> StateFile {
    StateFile::new(dir, "committed", false)
}

fn log_dir(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("log-{first:020}"))
}

fn parse_log_dir(name: &str) -> Option<u64> {
    name.strip_prefix("log-")
        .filter(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
}

impl RaftLogStore {
    /// Opens (creating if needed) the Raft log in `dir`; `config` is the chariot-log
    /// configuration of its entries (group commit for a real group). Must be called
    /// inside a tokio runtime: the files are read on the blocking pool.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, RaftStoreError> {
        let dir = dir.as_ref().to_path_buf();
        let (dir2, config2) = (dir.clone(), config.clone());
        let opened = tokio::task::spawn_blocking(move || open_files(&dir2, config2))
            .await
            .map_err(|e| RaftStoreError::io("open", &dir, io::Error::other(e)))??;
        let (log, persisted, committed, last) = opened;
        let (tx, rx) = mpsc::unbounded_channel();
        let (inflight, _) = watch::channel(0usize);
        let inner = Arc::new(Inner {
            persisted_file: persisted_file(&dir),
            committed_file: committed_file(&dir),
            dir,
            config,
            log: RwLock::new(Arc::new(log)),
            state: Mutex::new(State {
                persisted,
                committed,
                last,
                unflushed: BTreeMap::new(),
            }),
            completions: tx,
            inflight,
        });
        tokio::spawn(complete_appends(Arc::downgrade(&inner), rx));
        Ok(Self { inner })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Why this store cannot vouch for its log, as found when it was opened: damage in
    /// its files, or fewer entries than it had seen committed (a truncated file). A
    /// replica in that state must not vote on what it holds; see
    /// [`crate::cluster`] for how it is rebuilt from its peers.
    pub fn suspect(&self) -> Option<String> {
        if let Some(d) = crate::error::damage_of(&self.log()) {
            return Some(d);
        }
        let st = lock(&self.inner.state);
        let last = st.last.as_ref().map(|l| l.index);
        match (st.committed.as_ref().map(|c| c.index), last) {
            (Some(c), Some(l)) if c > l => Some(format!(
                "entries up to {c} were committed but the log ends at {l}"
            )),
            (Some(c), None) => Some(format!(
                "entries up to {c} were committed but the log is empty"
            )),
            _ => None,
        }
    }

    /// Forgets a committed id beyond the log's end (only the seeded fault of
    /// [`crate::cluster::SEEDED_FAULT`] does this: a replica that trusts a damaged log).
    pub fn forget_lost_commits(&self) {
        let mut st = lock(&self.inner.state);
        let last = st.last.as_ref().map(|l| l.index);
        if st.committed.as_ref().map(|c| c.index) > last {
            st.committed = None;
        }
    }

    /// The vote as saved.
    pub fn saved_vote(&self) -> Option<Vote> {
        lock(&self.inner.state).persisted.vote
    }

    /// The highest index this store knew of: the committed hint or its last entry.
    pub fn known_index(&self) -> u64 {
        let st = lock(&self.inner.state);
        let c = st.committed.as_ref().map_or(0, |c| c.index);
        let l = st.last.as_ref().map_or(0, |l| l.index);
        c.max(l)
    }

    /// The vote saved in `dir`, read without opening the log (`None` when there is
    /// none or it cannot be read). Blocking.
    pub fn read_vote(dir: &Path) -> Option<Vote> {
        persisted_file(dir)
            .load::<Persisted>()
            .ok()
            .flatten()
            .and_then(|p| p.vote)
    }

    /// Prepares an empty store in `dir` that starts with `vote` (a replica rebuilt
    /// after damage keeps the vote it gave, so it never votes twice in a term).
    /// Blocking.
    pub fn seed_vote(dir: &Path, vote: Option<Vote>) -> Result<(), RaftStoreError> {
        std::fs::create_dir_all(dir).map_err(|e| RaftStoreError::io("create directory", dir, e))?;
        persisted_file(dir).save(&Persisted { vote, purged: None })
    }

    fn log(&self) -> Arc<Log> {
        Arc::clone(&read(&self.inner.log))
    }

    async fn wait_for_appends(&self) {
        let mut rx = self.inner.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
    ) -> Result<T, io::Error> {
        run_blocking(&self.inner.dir, op, f).await
    }

    /// Replaces the log with an empty one whose first entry will be `first`, in a new
    /// directory, then deletes the old one. Only for a log whose entries are all purged
    /// (or that has none).
    async fn restart_at(&self, first: u64) -> Result<(), io::Error> {
        let (dir, config) = (self.inner.dir.clone(), self.inner.config.clone());
        let fresh = self
            .blocking("reset", move || {
                let path = log_dir(&dir, first);
                if path.exists() {
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| RaftStoreError::io("remove", &path, e))?;
                }
                let log = Log::open_from(&path, config, first).map_err(RaftStoreError::Log)?;
                // The new directory's entry, before anything in it is acknowledged.
                sync_dir(&dir)?;
                Ok(log)
            })
            .await?;
        let previous = std::mem::replace(&mut *write(&self.inner.log), Arc::new(fresh));
        let (dir, keep) = (self.inner.dir.clone(), log_dir(&self.inner.dir, first));
        self.blocking("remove", move || {
            drop(previous);
            remove_other_logs(&dir, &keep)
        })
        .await
    }

    async fn save_persisted(&self, p: Persisted) -> Result<(), io::Error> {
        let file = self.inner.persisted_file.clone();
        self.blocking("save", move || file.save(&p)).await
    }
}

type Opened = (Log, Persisted, Option<LogId>, Option<LogId>);

/// The blocking part of [`RaftLogStore::open`].
fn open_files(dir: &Path, config: LogConfig) -> Result<Opened, RaftStoreError> {
    std::fs::create_dir_all(dir).map_err(|e| RaftStoreError::io("create directory", dir, e))?;
    let persisted: Persisted = persisted_file(dir).load()?.unwrap_or_default();
    // The committed id is a hint: a damaged one is dropped, never trusted.
    let committed = committed_file(dir)
        .load::<Option<LogId>>()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the saved committed id");
            None
        })
        .flatten();
    let after_purged = persisted.purged.as_ref().map_or(0, |p| p.index + 1);
    let mut firsts = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| RaftStoreError::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| RaftStoreError::io("list", dir, e))?;
        if let Some(first) = parse_log_dir(&item.file_name().to_string_lossy()) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    let mut first = firsts.last().copied().unwrap_or(after_purged);
    let mut log = Log::open_from(log_dir(dir, first), config.clone(), first)?;
    if log.next_offset() < after_purged {
        // Everything it holds is purged: a purge past the end that stopped after its
        // purged id was saved. Start the log after it.
        drop(log);
        first = after_purged;
        log = Log::open_from(log_dir(dir, first), config, first)?;
    } else if log.earliest_offset() > after_purged.max(first) {
        return Err(RaftStoreError::Inconsistent {
            path: log_dir(dir, first),
            reason: format!(
                "the log starts at {} but entries from {after_purged} were never purged",
                log.earliest_offset()
            ),
        });
    }
    for old in firsts.iter().filter(|&&f| f != first) {
        let path = log_dir(dir, *old);
        std::fs::remove_dir_all(&path).map_err(|e| RaftStoreError::io("remove", &path, e))?;
    }
    let last = if log.next_offset() > after_purged && log.next_offset() > log.earliest_offset() {
        Some(read_entry(&log, log.next_offset() - 1)?.log_id)
    } else {
        persisted.purged
    };
    Ok((log, persisted, committed, last))
}

/// Reads the durable entry at `index`.
fn read_entry(log: &Log, index: u64) -> Result<Entry, RaftStoreError> {
    let mut found = read_range(log, index, index + 1)?;
    found.pop().ok_or_else(|| RaftStoreError::Inconsistent {
        path: PathBuf::from(format!("offset {index}")),
        reason: "entry not found".into(),
    })
}

/// Reads the durable entries of `[start, end)` (fewer if the log ends first).
fn read_range(log: &Log, start: u64, end: u64) -> Result<Vec<Entry>, RaftStoreError> {
    let mut out = Vec::new();
    // Nothing exists below the log's first entry.
    let mut next = start.max(log.earliest_offset());
    while next < end && next < log.next_offset() {
        let read = match log.read(next, READ_BYTES) {
            Ok(r) => r,
            // A purge dropped the segment meanwhile: what it held is purged.
            Err(chariot_log::LogError::OffsetOutOfRange { earliest, .. }) if earliest > next => {
                next = earliest;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if read.bytes.is_empty() {
            break;
        }
        for batch in read.batches() {
            let index = batch.base_offset();
            if index < next {
                continue;
            }
            if index >= end {
                return Ok(out);
            }
            let e = entry::from_batch(&batch).map_err(|e| RaftStoreError::Corrupt {
                path: PathBuf::from(format!("raft log entry {index}")),
                reason: e.to_string(),
            })?;
            if e.log_id.index != index {
                return Err(RaftStoreError::Inconsistent {
                    path: PathBuf::from(format!("raft log entry {index}")),
                    reason: format!("holds entry {}", e.log_id.index),
                });
            }
            out.push(e);
            next = index + 1;
        }
        next = next.max(read.next_offset);
    }
    Ok(out)
}

/// The completion task: awaits each append's group commit in order, then tells
/// openraft and drops the entries from memory (the log serves them from now on).
async fn complete_appends(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    while let Some(c) = rx.recv().await {
        let mut outcome = Ok(());
        for p in c.pendings {
            if let Err(e) = p.await {
                outcome = Err(e);
                break;
            }
        }
        let Some(inner) = inner.upgrade() else {
            c.callback
                .io_completed(Err(io::Error::other("raft log store closed")));
            return;
        };
        let result = match outcome {
            Ok(_) => {
                let mut st = lock(&inner.state);
                // Durable now: readers find them in the log.
                let keep = st.unflushed.split_off(&(c.last_index + 1));
                st.unflushed = keep;
                Ok(())
            }
            Err(e) => {
                tracing::error!(dir = %inner.dir.display(), error = %e, "raft log append failed");
                Err(io::Error::from(RaftStoreError::Log(e)))
            }
        };
        inner.inflight.send_modify(|n| *n = n.saturating_sub(1));
        // Let go of the store before openraft hears of the flush: whoever closes the
        // store after its last flush must find its log closed. The last handle closes
        // the log (joins its threads) on the blocking pool.
        if Arc::strong_count(&inner) == 1 {
            let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
        } else {
            drop(inner);
        }
        c.callback.io_completed(result);
    }
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mut start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let (from_memory, log_end) = {
            let st = lock(&self.inner.state);
            if let Some(p) = &st.persisted.purged {
                start = start.max(p.index + 1);
            }
            let end = end.min(st.last.as_ref().map_or(0, |l| l.index + 1));
            if start >= end {
                return Ok(Vec::new());
            }
            let first_unflushed = st.unflushed.keys().next().copied().unwrap_or(end);
            let from = start.max(first_unflushed);
            let mem: Vec<Entry> = if from < end {
                st.unflushed
                    .range(from..end)
                    .map(|(_, e)| e.clone())
                    .collect()
            } else {
                Vec::new()
            };
            (mem, first_unflushed.min(end))
        };
        let mut out = if start < log_end {
            let log = self.log();
            self.blocking("read", move || read_range(&log, start, log_end))
                .await?
        } else {
            Vec::new()
        };
        out.extend(from_memory);
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner.state).persisted.vote)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let st = lock(&self.inner.state);
        Ok(LogState {
            last_purged_log_id: st.persisted.purged,
            last_log_id: st.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // openraft counts every write before the vote as flushed once the vote is: the
        // appends queued before it must be durable first.
        self.wait_for_appends().await;
        let mut p = lock(&self.inner.state).persisted.clone();
        p.vote = Some(*vote);
        self.save_persisted(p).await?;
        lock(&self.inner.state).persisted.vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        lock(&self.inner.state).committed = committed;
        let file = self.inner.committed_file.clone();
        self.blocking("save", move || file.save(&committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.inner.state).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let batches: Vec<RecordBatch> = entries.iter().map(entry::to_batch).collect();
        let first = entries.first().map_or(0, |e| e.log_id.index);
        let empty = {
            let st = lock(&self.inner.state);
            st.unflushed.is_empty() && st.last == st.persisted.purged
        };
        if empty && self.log().next_offset() != first {
            // A log without entries may start anywhere after what was purged (openraft
            // allows it; its test suite does it).
            self.wait_for_appends().await;
            if lock(&self.inner.state)
                .persisted
                .purged
                .is_some_and(|p| p.index >= first)
            {
                return Err(RaftStoreError::Inconsistent {
                    path: self.inner.dir.clone(),
                    reason: format!("append of entry {first}, which is purged"),
                }
                .into());
            }
            self.restart_at(first).await?;
        }
        let (expected, prev_last) = {
            let mut st = lock(&self.inner.state);
            let expected = if empty {
                first
            } else {
                st.last.as_ref().map_or(0, |l| l.index + 1)
            };
            for (i, e) in entries.iter().enumerate() {
                if e.log_id.index != expected + i as u64 {
                    return Err(RaftStoreError::Inconsistent {
                        path: self.inner.dir.clone(),
                        reason: format!(
                            "append of entry {} where entry {} comes next",
                            e.log_id.index,
                            expected + i as u64
                        ),
                    }
                    .into());
                }
            }
            for e in entries {
                st.unflushed.insert(e.log_id.index, e);
            }
            let prev_last = st.last.replace(last);
            (expected, prev_last)
        };
        // One submit holds at most a batch's worth of bytes (the log's limit for one
        // unit); a larger append is several, awaited in order.
        let max = self.inner.config.max_batch_bytes;
        if let Some(big) = batches.iter().find(|b| b.len() > max) {
            let mut st = lock(&self.inner.state);
            st.unflushed.retain(|&i, _| i < expected);
            st.last = prev_last;
            return Err(RaftStoreError::Inconsistent {
                path: self.inner.dir.clone(),
                reason: format!(
                    "an entry of {} bytes is over the raft log's batch limit of {max}",
                    big.len()
                ),
            }
            .into());
        }
        let mut pendings = Vec::new();
        let mut next = expected;
        for mut part in entry::split_by_bytes(batches, max) {
            let count = part.len() as u64;
            let log = self.log();
            let pending = match log.try_submit(&mut part) {
                Ok(Some(p)) => Ok(p),
                Ok(None) => {
                    // The active segment must roll first: that takes I/O.
                    self.blocking("append", move || {
                        log.submit(&mut part).map_err(RaftStoreError::Log)
                    })
                    .await
                }
                Err(e) => Err(io::Error::from(RaftStoreError::Log(e))),
            };
            let pending = match pending {
                Ok(p) => p,
                Err(e) if pendings.is_empty() => {
                    // Nothing was queued: the entries are not in the log.
                    let mut st = lock(&self.inner.state);
                    st.unflushed.retain(|&i, _| i < expected);
                    st.last = prev_last;
                    return Err(e);
                }
                // Part was queued: the log is in an unknown state, openraft stops.
                Err(e) => return Err(e),
            };
            if pending.assigned().first().map(|i| i.base_offset) != Some(next) {
                return Err(RaftStoreError::Inconsistent {
                    path: self.inner.dir.clone(),
                    reason: format!(
                        "entry {next} was given offset {:?}",
                        pending.assigned().first().map(|i| i.base_offset)
                    ),
                }
                .into());
            }
            next += count;
            pendings.push(pending);
        }
        self.inner.inflight.send_modify(|n| *n += 1);
        let completion = Completion {
            pendings,
            last_index: last.index,
            callback,
        };
        if let Err(mpsc::error::SendError(c)) = self.inner.completions.send(completion) {
            c.callback
                .io_completed(Err(io::Error::other("raft log completion task is gone")));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.wait_for_appends().await;
        let keep_below = last_log_id.as_ref().map_or(0, |l| l.index + 1);
        let log = self.log();
        let cut = if keep_below <= log.earliest_offset() && keep_below < log.next_offset() {
            // Every entry goes (a log that started past 0 without a purge, as openraft's
            // test suite makes): start it again empty where the next entry will go.
            drop(log);
            let after_purged = lock(&self.inner.state)
                .persisted
                .purged
                .map_or(0, |p| p.index + 1);
            self.restart_at(keep_below.max(after_purged)).await
        } else if keep_below < log.next_offset() {
            self.blocking("truncate", move || {
                log.truncate_to(keep_below).map_err(RaftStoreError::Log)
            })
            .await
        } else {
            Ok(())
        };
        let mut st = lock(&self.inner.state);
        st.unflushed.retain(|&i, _| i < keep_below);
        match &cut {
            // After a failed cut nothing is certain but what the log says.
            Err(_) => st.last = None,
            Ok(()) => {
                if st.last.as_ref().is_some_and(|l| l.index >= keep_below) {
                    st.last = last_log_id.or(st.persisted.purged);
                }
            }
        }
        cut
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.wait_for_appends().await;
        let mut p = lock(&self.inner.state).persisted.clone();
        if p.purged
            .as_ref()
            .is_some_and(|old| old.index >= log_id.index)
        {
            return Ok(());
        }
        p.purged = Some(log_id);
        // Durable first: a crash after this leaves at most entries that the next open
        // hides or drops.
        self.save_persisted(p.clone()).await?;
        let past_end = {
            let mut st = lock(&self.inner.state);
            st.persisted = p;
            st.unflushed.retain(|&i, _| i > log_id.index);
            let past = st.last.as_ref().is_none_or(|l| l.index <= log_id.index);
            if past {
                st.last = Some(log_id);
            }
            past
        };
        if past_end {
            self.restart_at(log_id.index + 1).await
        } else {
            let log = self.log();
            self.blocking("purge", move || {
                log.purge_below(log_id.index + 1)
                    .map(|_| ())
                    .map_err(RaftStoreError::Log)
            })
            .await
        }
    }
}

/// Deletes every log directory of `dir` but `keep`.
fn remove_other_logs(dir: &Path, keep: &Path) -> Result<(), RaftStoreError> {
    let listing = std::fs::read_dir(dir).map_err(|e| RaftStoreError::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| RaftStoreError::io("list", dir, e))?;
        let path = item.path();
        if path != keep && parse_log_dir(&item.file_name().to_string_lossy()).is_some() {
            std::fs::remove_dir_all(&path).map_err(|e| RaftStoreError::io("remove", &path, e))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
