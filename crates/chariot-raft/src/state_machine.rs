//! A partition's log as the state machine of its Raft group: committed `Append`
//! entries are appended to it (so readers, fetch and sendfile see only committed
//! records), `Ack` entries move a consumer group's offset to `max(old, new)`.
//!
//! The partition log is written without waiting for its own fsync: the Raft log is the
//! durable copy. What is durable of the state machine is its **checkpoint**
//! (`<dir>/checkpoint`, fsynced): last applied id, membership, group offsets and the
//! partition's next offset, written when a snapshot is built, after an fdatasync of the
//! partition log. After a restart the state machine reports the checkpoint as applied
//! and openraft applies the later entries again from the Raft log; an `Append` whose
//! records are already in the partition log (they survived) is recognised by its
//! offsets and not written twice, so the records readers saw keep their offsets.
//!
//! A snapshot is the checkpoint plus the partition's segment files: sealed segments are
//! hard-linked (they never change again), the active one is copied; installing one
//! opens a new generation of the partition log (`<dir>/partition-<gen>`) from those
//! files, cut back to the checkpoint's next offset.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chariot_log::{Log, LogConfig, RecordBatch};
use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::entry::split_by_bytes;
use crate::error::{run_blocking, RaftStoreError};
use crate::state_file::{sync_dir, StateFile};
use crate::sync::{lock, read, write};
use crate::{LogId, StoredMembership, TypeConfig};

type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// What the checkpoint (and every snapshot) records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Checkpoint {
    /// The partition log directory in use: `partition-<generation>`.
    generation: u64,
    applied: Option<LogId>,
    membership: StoredMembership,
    groups: BTreeMap<String, u64>,
    /// The partition's next offset once `applied` is applied.
    partition_next: u64,
    /// Whether a snapshot was taken (or installed) at this point.
    snapshot: bool,
    /// Sealed by a [`Command::Seal`]: appends and acks are refused from then on.
    #[serde(default)]
    sealed: bool,
    /// Idempotent producers by id: the last batch each had stored (see
    /// [`Producers`]).
    #[serde(default)]
    producers: Producers,
}

/// Most idempotent producers a partition remembers; past it, the one whose last batch
/// is oldest is forgotten (alike on every replica: the rule depends only on the
/// applied entries).
pub const MAX_PRODUCERS: usize = 4096;

/// How many of a producer's last batches a partition remembers (as Kafka does): a
/// producer may have that many publishes in flight and still have each retried one
/// recognized.
pub const BATCHES_PER_PRODUCER: usize = 5;

/// The last batches stored for each idempotent producer (a batch whose header carries
/// a producer id and base sequence, both non-negative). A batch that repeats one of its
/// producer's last [`BATCHES_PER_PRODUCER`] (same first and last sequence) is not
/// stored again: it is answered with the offsets that one got, so a publish retried
/// after a lost answer or a leader change is stored once. A batch whose sequences the
/// producer had passed otherwise is refused. Sequences may skip ahead (a publish that
/// failed for good); a producer that restarts from sequence 0 under the same id is
/// refused until it is forgotten, so it takes a new id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producers(BTreeMap<i64, Vec<LastBatch>>);

/// One of a producer's last stored batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBatch {
    /// Its first sequence.
    pub first_seq: i32,
    /// Its last sequence.
    pub last_seq: i32,
    /// Its first offset.
    pub base_offset: u64,
    /// Its last offset.
    pub last_offset: u64,
}

/// What a producer's batch is to the partition.
enum Sequenced {
    /// Store it (a new producer, or the next sequences).
    Store,
    /// One of the producer's last batches again: answer its offsets.
    Repeat(LastBatch),
    /// Sequences the producer had passed.
    Stale(String),
}

impl Producers {
    fn classify(&self, pid: i64, first: i32, last: i32) -> Sequenced {
        let Some(batches) = self.0.get(&pid) else {
            return Sequenced::Store;
        };
        if let Some(b) = batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Sequenced::Repeat(*b);
        }
        match batches.last() {
            Some(b) if first <= b.last_seq => Sequenced::Stale(format!(
                "producer {pid} sent sequences {first}..={last}, but it is past {} already",
                b.last_seq
            )),
            _ => Sequenced::Store,
        }
    }

    fn stored(&mut self, pid: i64, batch: LastBatch) {
        let batches = self.0.entry(pid).or_default();
        batches.push(batch);
        if batches.len() > BATCHES_PER_PRODUCER {
            batches.remove(0);
        }
        while self.0.len() > MAX_PRODUCERS {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(id, b)| (b.last().map_or(0, |b| b.last_offset), **id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.0.remove(&id),
                None => break,
            };
        }
    }
}

/// The producer id and first and last sequence of an idempotent batch.
fn sequences(batch: &RecordBatch) -> Option<(i64, i32, i32)> {
    let h = batch.header();
    let count = i32::try_from(h.record_count).ok()?;
    (h.producer_id >= 0 && h.base_sequence >= 0).then(|| {
        (
            h.producer_id,
            h.base_sequence,
            h.base_sequence.saturating_add(count - 1),
        )
    })
}

/// The files of one snapshot: a directory holding its `checkpoint` and the partition's
/// segment data files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The directory.
    pub dir: PathBuf,
}

/// A partition's state machine. Clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct PartitionStateMachine {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    log: RwLock<Arc<Log>>,
    checkpoint_file: StateFile,
    state: Mutex<State>,
    /// Serialises snapshot builds and installs.
    snapshots: tokio::sync::Mutex<()>,
}

struct State {
    /// The state as applied in memory (its `snapshot` flag unused).
    now: Checkpoint,
    /// The last checkpoint written.
    saved: Checkpoint,
}

/// The checkpoint of a state machine's directory, or of a snapshot's.
fn checkpoint_file(dir: &Path) -> StateFile {
    StateFile::new(dir, "checkpoint", true)
}

fn partition_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("partition-{generation:020}"))
}

fn snapshot_dir(dir: &Path, applied: &Option<LogId>) -> PathBuf {
    match applied {
        Some(id) => dir.join(format!(
            "snapshot-{:020}-{:020}-{:020}",
            id.index, id.leader_id.term, id.leader_id.node_id
        )),
        None => dir.join("snapshot-none"),
    }
}

impl PartitionStateMachine {
    /// Opens (creating if needed) the state machine in `dir`; `config` is the partition
    /// log's configuration. Must be called inside a tokio runtime.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, RaftStoreError> {
        let dir = dir.as_ref().to_path_buf();
        let (d, c) = (dir.clone(), config.clone());
        let (log, saved) = tokio::task::spawn_blocking(move || open_files(&d, c))
            .await
            .map_err(|e| RaftStoreError::io("open", &dir, io::Error::other(e)))??;
        Ok(Self {
            inner: Arc::new(Inner {
                checkpoint_file: checkpoint_file(&dir),
                dir,
                config,
                log: RwLock::new(Arc::new(log)),
                state: Mutex::new(State {
                    now: saved.clone(),
                    saved,
                }),
                snapshots: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Why this state machine cannot vouch for its partition log: damage found in its
    /// files.
    pub fn suspect(&self) -> Option<String> {
        crate::error::damage_of(&self.log())
    }

    /// The partition log, for readers. A snapshot install replaces it: hold the `Arc`
    /// for one read, not for good.
    pub fn log(&self) -> Arc<Log> {
        Arc::clone(&read(&self.inner.log))
    }

    /// A consumer group's committed offset.
    pub fn group_offset(&self, group: &str) -> Option<u64> {
        lock(&self.inner.state).now.groups.get(group).copied()
    }

    /// Whether the partition is sealed (its log deleted).
    pub fn sealed(&self) -> bool {
        lock(&self.inner.state).now.sealed
    }

    /// Every consumer group's committed offset, by name.
    pub fn group_offsets(&self) -> Vec<(String, u64)> {
        lock(&self.inner.state)
            .now
            .groups
            .iter()
            .map(|(g, o)| (g.clone(), *o))
            .collect()
    }

    /// Applies one run of `Append` batches (already decoded) with one write, skipping
    /// those whose records are already in the log (applied again after a restart).
    fn append_run(
        log: &Log,
        expected_next: &mut u64,
        producers: &mut Producers,
        run: Vec<Result<RecordBatch, String>>,
    ) -> Result<Vec<Response>, RaftStoreError> {
        let mut responses = Vec::with_capacity(run.len());
        let mut to_write: Vec<RecordBatch> = Vec::new();
        let mut write_at = Vec::new();
        let present = log.next_offset();
        for item in run {
            let batch = match item {
                Ok(b) => b,
                Err(reason) => {
                    responses.push(Some(Response::Refused(reason)));
                    continue;
                }
            };
            // Refusals depend only on the batch and the partition's configuration, which
            // its replicas share: every replica refuses alike.
            let max = log.config().max_batch_bytes;
            if batch.record_count() == 0 {
                responses.push(Some(Response::Refused("a batch without records".into())));
                continue;
            }
            if batch.len() > max {
                responses.push(Some(Response::Refused(format!(
                    "a batch of {} bytes is over the partition's limit of {max}",
                    batch.len()
                ))));
                continue;
            }
            let n = u64::from(batch.record_count());
            let base = *expected_next;
            if let Some((pid, first, last)) = sequences(&batch) {
                match producers.classify(pid, first, last) {
                    Sequenced::Repeat(b) => {
                        responses.push(Some(Response::Appended {
                            base_offset: b.base_offset,
                            last_offset: b.last_offset,
                        }));
                        continue;
                    }
                    Sequenced::Stale(why) => {
                        responses.push(Some(Response::Refused(why)));
                        continue;
                    }
                    Sequenced::Store => producers.stored(
                        pid,
                        LastBatch {
                            first_seq: first,
                            last_seq: last,
                            base_offset: base,
                            last_offset: base + n - 1,
                        },
                    ),
                }
            }
            if base + n <= present {
                responses.push(Some(Response::Appended {
                    base_offset: base,
                    last_offset: base + n - 1,
                }));
            } else if base >= present {
                write_at.push(responses.len());
                responses.push(None);
                to_write.push(batch);
            } else {
                return Err(RaftStoreError::Inconsistent {
                    path: log_dir_of(log),
                    reason: format!(
                        "an applied batch of {n} records at {base} straddles the log's end {present}"
                    ),
                });
            }
            *expected_next = base + n;
        }
        if !to_write.is_empty() {
            // One write holds at most a batch's worth of bytes (the log's unit limit).
            let mut infos = Vec::with_capacity(to_write.len());
            for mut part in split_by_bytes(to_write, log.config().max_batch_bytes) {
                infos.extend(log.append_batches(&mut part)?);
            }
            for (slot, info) in write_at.into_iter().zip(infos) {
                if let Some(r) = responses.get_mut(slot) {
                    *r = Some(Response::Appended {
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                    });
                }
            }
        }
        Ok(responses
            .into_iter()
            .map(|r| r.unwrap_or(Response::Refused("not applied".into())))
            .collect())
    }

    /// Makes the partition log durable and writes the checkpoint of the state now.
    async fn checkpoint(&self) -> Result<Checkpoint, io::Error> {
        let log = self.log();
        let mut cp = lock(&self.inner.state).now.clone();
        cp.snapshot = true;
        let file = self.inner.checkpoint_file.clone();
        let cp2 = cp.clone();
        run_blocking(&self.inner.dir, "run", move || {
            log.flush()?;
            file.save(&cp2)
        })
        .await?;
        lock(&self.inner.state).saved = cp.clone();
        Ok(cp)
    }

    fn meta_of(cp: &Checkpoint) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: cp.applied,
            last_membership: cp.membership.clone(),
        }
    }
}

fn log_dir_of(log: &Log) -> PathBuf {
    log.segments()
        .first()
        .and_then(|s| s.path.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

/// The blocking part of [`PartitionStateMachine::open`].
fn open_files(dir: &Path, config: LogConfig) -> Result<(Log, Checkpoint), RaftStoreError> {
    std::fs::create_dir_all(dir).map_err(|e| RaftStoreError::io("create directory", dir, e))?;
    let file = checkpoint_file(dir);
    let cp: Checkpoint = file.load()?.unwrap_or_default();
    let path = partition_dir(dir, cp.generation);
    let log = Log::open(&path, config)?;
    if log.next_offset() < cp.partition_next {
        return Err(RaftStoreError::Inconsistent {
            path,
            reason: format!(
                "the checkpoint says the partition reaches offset {} but it ends at {}",
                cp.partition_next,
                log.next_offset()
            ),
        });
    }
    // Left by an install or a snapshot interrupted by a crash.
    remove_stale(dir, &path, &snapshot_dir(dir, &cp.applied))?;
    Ok((log, cp))
}

/// Deletes the partition generations and snapshots of `dir` other than `keep` and
/// `keep_snapshot`.
fn remove_stale(dir: &Path, keep: &Path, keep_snapshot: &Path) -> Result<(), RaftStoreError> {
    let listing = std::fs::read_dir(dir).map_err(|e| RaftStoreError::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| RaftStoreError::io("list", dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        let stale = (name.starts_with("partition-") && path != keep)
            || (name.starts_with("snapshot-") && path != keep_snapshot);
        if stale {
            std::fs::remove_dir_all(&path).map_err(|e| RaftStoreError::io("remove", &path, e))?;
        }
    }
    sync_dir(dir)
}

/// Links (or, across file systems, copies) `from` to `to`.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), RaftStoreError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    copy_file(from, to)
}

/// Copies `from` to `to` and makes the copy durable.
fn copy_file(from: &Path, to: &Path) -> Result<(), RaftStoreError> {
    std::fs::copy(from, to).map_err(|e| RaftStoreError::io("copy", from, e))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| RaftStoreError::io("fsync", to, e))
}

/// Writes the snapshot of checkpoint `cp` into `target`: the checkpoint, then the data
/// files of `log` (sealed segments linked, the active one copied up to its size).
fn materialize(log: &Log, cp: &Checkpoint, target: &Path) -> Result<(), RaftStoreError> {
    let tmp = target.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| RaftStoreError::io("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| RaftStoreError::io("create directory", &tmp, e))?;
    let segments = log.segments();
    // The segments holding offsets below the checkpoint's end (at least the first).
    let included = segments
        .iter()
        .take_while(|s| s.base_offset < cp.partition_next)
        .count()
        .max(1)
        .min(segments.len());
    for (i, s) in segments.iter().take(included).enumerate() {
        let Some(name) = s.path.file_name() else {
            continue;
        };
        let to = tmp.join(name);
        // Earlier segments are sealed and never change: linked. The last one may be the
        // active segment, or sealed since; either way it is copied, so that a log the
        // snapshot is installed into never shares its writable file.
        if i + 1 < included {
            link_or_copy(&s.path, &to)?;
        } else {
            let mut src =
                std::fs::File::open(&s.path).map_err(|e| RaftStoreError::io("open", &s.path, e))?;
            let mut dst =
                std::fs::File::create(&to).map_err(|e| RaftStoreError::io("create", &to, e))?;
            io::copy(&mut io::Read::take(&mut src, s.size), &mut dst)
                .map_err(|e| RaftStoreError::io("copy", &s.path, e))?;
            dst.sync_all()
                .map_err(|e| RaftStoreError::io("fsync", &to, e))?;
        }
    }
    checkpoint_file(&tmp).save(cp)?;
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, target).map_err(|e| RaftStoreError::io("rename", &tmp, e))?;
    if let Some(parent) = target.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Installs the snapshot in `from` as partition generation `generation` of `dir`:
/// links its files into a new partition directory, opens it, cuts it back to the
/// checkpoint, and makes the checkpoint (with the new generation) durable.
fn install(
    dir: &Path,
    config: LogConfig,
    from: &Path,
    generation: u64,
    meta: &SnapshotMeta,
) -> Result<(Log, Checkpoint), RaftStoreError> {
    let mut cp: Checkpoint =
        checkpoint_file(from)
            .load()?
            .ok_or_else(|| RaftStoreError::Corrupt {
                path: from.to_path_buf(),
                reason: "a snapshot without its checkpoint".into(),
            })?;
    if cp.applied != meta.last_log_id || cp.membership != meta.last_membership {
        return Err(RaftStoreError::Corrupt {
            path: from.to_path_buf(),
            reason: format!(
                "the snapshot's checkpoint is at {:?}, its meta at {:?}",
                cp.applied, meta.last_log_id
            ),
        });
    }
    let target = partition_dir(dir, generation);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| RaftStoreError::io("remove", &target, e))?;
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| RaftStoreError::io("create directory", &target, e))?;
    let mut names = Vec::new();
    let listing = std::fs::read_dir(from).map_err(|e| RaftStoreError::io("list", from, e))?;
    for item in listing {
        let item = item.map_err(|e| RaftStoreError::io("list", from, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            names.push(name);
        }
    }
    // Names are zero-padded offsets: the last sorts last. It becomes the new log's
    // active segment, written from now on: a copy of its own, never a link.
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let (src, dst) = (from.join(name), target.join(name));
        if i + 1 < names.len() {
            link_or_copy(&src, &dst)?;
        } else {
            copy_file(&src, &dst)?;
        }
    }
    sync_dir(&target)?;
    sync_dir(dir)?;
    let log = Log::open(&target, config)?;
    if log.next_offset() > cp.partition_next {
        log.truncate_to(cp.partition_next)?;
    } else if log.next_offset() < cp.partition_next {
        return Err(RaftStoreError::Corrupt {
            path: from.to_path_buf(),
            reason: format!(
                "the snapshot's files end at offset {}, its checkpoint at {}",
                log.next_offset(),
                cp.partition_next
            ),
        });
    }
    cp.generation = generation;
    cp.snapshot = true;
    checkpoint_file(dir).save(&cp)?;
    Ok((log, cp))
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = PartitionSnapshot;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = lock(&self.inner.state);
        Ok((st.now.applied, st.now.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut items = Vec::new();
        while let Some(item) = entries.next().await {
            items.push(item?);
        }
        let mut i = 0;
        while i < items.len() {
            // A run of appends goes to the log in one write, on the blocking pool.
            let run_end = items
                .iter()
                .skip(i)
                .position(|(e, _)| !matches!(e.payload, EntryPayload::Normal(Command::Append(_))))
                .map_or(items.len(), |p| i + p);
            if run_end > i && lock(&self.inner.state).now.sealed {
                let mut st = lock(&self.inner.state);
                for (entry, responder) in items.drain(i..run_end) {
                    st.now.applied = Some(entry.log_id);
                    if let Some(r) = responder {
                        r.send(Response::Sealed);
                    }
                }
                continue;
            }
            if run_end > i {
                let run: Vec<Result<RecordBatch, String>> = items
                    .get(i..run_end)
                    .unwrap_or_default()
                    .iter()
                    .map(|(e, _)| match &e.payload {
                        EntryPayload::Normal(Command::Append(bytes)) => {
                            RecordBatch::from_vec(bytes.clone()).map_err(|e| e.to_string())
                        }
                        _ => Err("not an append".to_string()),
                    })
                    .collect();
                let log = self.log();
                let (mut expected, mut producers) = {
                    let st = lock(&self.inner.state);
                    (st.now.partition_next, st.now.producers.clone())
                };
                let (responses, expected, producers) =
                    run_blocking(&self.inner.dir, "run", move || {
                        Self::append_run(&log, &mut expected, &mut producers, run)
                            .map(|r| (r, expected, producers))
                    })
                    .await?;
                let mut st = lock(&self.inner.state);
                st.now.partition_next = expected;
                st.now.producers = producers;
                for ((entry, responder), response) in items.drain(i..run_end).zip(responses) {
                    st.now.applied = Some(entry.log_id);
                    if let Some(r) = responder {
                        r.send(response);
                    }
                }
                continue;
            }
            let Some((entry, responder)) = items.get_mut(i).map(|(e, r)| (e.clone(), r.take()))
            else {
                break;
            };
            i += 1;
            let mut st = lock(&self.inner.state);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Membership(m) => {
                    st.now.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Applied
                }
                EntryPayload::Normal(Command::Seal) => {
                    st.now.sealed = true;
                    Response::Applied
                }
                EntryPayload::Normal(Command::Ack { .. }) if st.now.sealed => Response::Sealed,
                EntryPayload::Normal(Command::Ack { group, offset }) => {
                    let now = st.now.groups.entry(group).or_insert(0);
                    *now = (*now).max(offset);
                    Response::Acked { offset: *now }
                }
                EntryPayload::Normal(Command::Append(_)) => {
                    Response::Refused("an append outside its run".into())
                }
            };
            st.now.applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: PartitionSnapshot,
    ) -> Result<(), io::Error> {
        let _one = self.inner.snapshots.lock().await;
        let generation = lock(&self.inner.state).saved.generation + 1;
        let (dir, config) = (self.inner.dir.clone(), self.inner.config.clone());
        let meta2 = meta.clone();
        let (log, cp) = run_blocking(&self.inner.dir, "run", move || {
            install(&dir, config, &snapshot.dir, generation, &meta2)
        })
        .await?;
        let previous = std::mem::replace(&mut *write(&self.inner.log), Arc::new(log));
        {
            let mut st = lock(&self.inner.state);
            st.now = cp.clone();
            st.saved = cp;
        }
        let (dir, keep) = (
            self.inner.dir.clone(),
            partition_dir(&self.inner.dir, generation),
        );
        let keep_snapshot = snapshot_dir(&self.inner.dir, &lock(&self.inner.state).saved.applied);
        run_blocking(&self.inner.dir, "run", move || {
            drop(previous);
            remove_stale(&dir, &keep, &keep_snapshot)
        })
        .await?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, PartitionSnapshot>>, io::Error> {
        let _one = self.inner.snapshots.lock().await;
        let cp = lock(&self.inner.state).saved.clone();
        if !cp.snapshot {
            return Ok(None);
        }
        let target = snapshot_dir(&self.inner.dir, &cp.applied);
        let log = self.log();
        let (cp2, t2) = (cp.clone(), target.clone());
        run_blocking(&self.inner.dir, "run", move || {
            if t2.exists() {
                Ok(())
            } else {
                materialize(&log, &cp2, &t2)
            }
        })
        .await?;
        Ok(Some(Snapshot {
            meta: Self::meta_of(&cp),
            snapshot: PartitionSnapshot { dir: target },
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine {
    type SnapshotData = PartitionSnapshot;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, PartitionSnapshot>, io::Error> {
        let _one = self.inner.snapshots.lock().await;
        let old = snapshot_dir(&self.inner.dir, &lock(&self.inner.state).saved.applied);
        let cp = self.checkpoint().await?;
        let target = snapshot_dir(&self.inner.dir, &cp.applied);
        let log = self.log();
        let (cp2, t2) = (cp.clone(), target.clone());
        run_blocking(&self.inner.dir, "run", move || {
            if t2.exists() {
                std::fs::remove_dir_all(&t2).map_err(|e| RaftStoreError::io("remove", &t2, e))?;
            }
            materialize(&log, &cp2, &t2)?;
            // The previous snapshot goes only once the new one exists.
            if old != t2 && old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| RaftStoreError::io("remove", &old, e))?;
            }
            Ok::<(), RaftStoreError>(())
        })
        .await?;
        Ok(Snapshot {
            meta: Self::meta_of(&cp),
            snapshot: PartitionSnapshot { dir: target },
        })
    }
}
