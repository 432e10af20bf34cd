//! The registry: the one catalogue of every log a node holds, the logs users see and the
//! node's own state alike, and the only code that creates, opens, replaces or deletes
//! their directories. (A cluster's metadata group will own this catalogue next.)
//!
//! Logs come in three kinds ([`Kind`]):
//! - **user** logs, created and deleted through the API, under `logs/`;
//! - **internal** logs, listed and readable but never written, created or deleted through
//!   the API (the Chariots shared log), also under `logs/`, exempt from retention;
//! - **system** logs: the state of the node's own services (consumer offsets, the Chariots
//!   dependency queue, the propagation senders' remotes and cursors), under `system/`,
//!   internal, unlisted, exempt from retention, with smaller segments.
//!
//! Each log is a directory `<root>/<escaped name>/` holding `meta.json` (its catalogue
//! entry) and one directory per partition (`0/`, `1/`, …). A log is built under a
//! `.tmp-` name and published by a rename once `meta.json` is fsynced, and deleted by a
//! rename to `.deleted-` first, so a crash never leaves a half-made or half-gone log; the
//! leftovers of either are removed at the next open. A partition's contents can be
//! replaced as a whole (a compaction at open, a snapshot later): the new contents are
//! built beside it (`<p>.compacting`), then swapped in by two renames that a restart
//! completes or undoes.
//!
//! Data directories of earlier versions kept the consumer offsets and the dependency
//! queue as bare logs at the top (`__consumer_offsets/`, `__chariots_queue/`): they are
//! moved into `system/` at open, without copying.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chariot_log::{Log, LogConfig};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::names;
use crate::partition::{now_ms, LocalPartition, PartitionLog};

/// Directory of the logs users see (user and internal logs).
pub(crate) const LOGS_DIR: &str = "logs";
/// Directory of the system logs.
pub(crate) const SYSTEM_DIR: &str = "system";
const META_FILE: &str = "meta.json";

/// Consumer groups' committed offsets.
pub(crate) const OFFSETS_LOG: &str = "__consumer_offsets";
/// The Chariots dependency queue.
pub(crate) const QUEUE_LOG: &str = "__chariots_queue";
/// The Chariots senders' remotes and cursors.
pub(crate) const SENDERS_LOG: &str = "__chariots_senders";
/// Every system log: reserved from the start, so the API can never create one.
const SYSTEM_LOGS: [&str; 3] = [OFFSETS_LOG, QUEUE_LOG, SENDERS_LOG];
/// Top-level directories of earlier versions, moved into `system/` at open.
const LEGACY_DIRS: [&str; 2] = [OFFSETS_LOG, QUEUE_LOG];

/// What a log is for; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Internal,
    System,
}

/// What `meta.json` in a log's directory says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogMeta {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(crate) created_at_ms: i64,
    /// False for logs whose history is state: retention settings never delete their
    /// segments. (Internal logs of earlier versions are known by this alone.)
    #[serde(default = "yes")]
    retention: bool,
    /// True for a system log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    system: bool,
}

fn yes() -> bool {
    true
}

impl LogMeta {
    fn new(name: &str, partitions: u32, kind: Kind) -> Self {
        Self {
            name: name.to_string(),
            partitions,
            created_at_ms: now_ms(),
            retention: kind == Kind::User,
            system: kind == Kind::System,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match (self.system, self.retention) {
            (true, _) => Kind::System,
            (false, false) => Kind::Internal,
            (false, true) => Kind::User,
        }
    }
}

/// One open partition.
pub(crate) struct Partition {
    /// Where its appends go, and the log its reads come from.
    pub(crate) writer: Arc<dyn PartitionLog>,
}

impl Partition {
    /// This node's copy, for reads.
    pub(crate) fn log(&self) -> Arc<Log> {
        self.writer.log()
    }
}

/// One open log.
pub(crate) struct LogEntry {
    pub(crate) meta: LogMeta,
    /// Its directory; `None` for a replicated log, whose files its Raft groups own.
    dir: Option<PathBuf>,
    pub(crate) partitions: Vec<Partition>,
}

impl LogEntry {
    pub(crate) fn partition(&self, p: u32) -> Result<&Partition> {
        self.partitions
            .get(p as usize)
            .ok_or_else(|| BrokerError::PartitionOutOfRange {
                partition: p,
                log: self.meta.name.clone(),
                partitions: self.meta.partitions,
            })
    }
}

pub(crate) fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> BrokerError {
    if e.raw_os_error() == Some(28) {
        return BrokerError::NoSpace;
    }
    BrokerError::Storage(format!("{what}: {e}"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("fsync {}", dir.display()), e))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The catalogue of a node's logs; see the module documentation.
pub(crate) struct Registry {
    data_dir: PathBuf,
    log_config: LogConfig,
    logs: RwLock<BTreeMap<String, Arc<LogEntry>>>,
    /// Serializes creates and deletes of logs users see.
    admin: tokio::sync::Mutex<()>,
    /// Serializes opening and replacing system logs (start-up work, on blocking threads).
    system: Mutex<()>,
    /// Names of internal and system logs, also those not created yet.
    internal: RwLock<HashSet<String>>,
}

impl Registry {
    /// Opens every log under the data directory (creating the directories if needed),
    /// after finishing or undoing what a crash interrupted. Blocking.
    pub(crate) fn open(data_dir: &Path, log_config: &LogConfig) -> Result<Self> {
        let mut logs = BTreeMap::new();
        for root in [LOGS_DIR, SYSTEM_DIR] {
            let root = data_dir.join(root);
            std::fs::create_dir_all(&root)
                .map_err(|e| io_err(format!("create {}", root.display()), e))?;
        }
        migrate_legacy(data_dir)?;
        for root in [LOGS_DIR, SYSTEM_DIR] {
            let root = data_dir.join(root);
            let listing = std::fs::read_dir(&root)
                .map_err(|e| io_err(format!("list {}", root.display()), e))?;
            for entry in listing {
                let entry = entry.map_err(|e| io_err(format!("list {}", root.display()), e))?;
                let dir = entry.path();
                let name = file_name(&dir);
                if name.starts_with(".tmp-") || name.starts_with(".deleted-") {
                    // A create or delete interrupted by a crash: never visible, safe to drop.
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                let meta = read_meta(&dir)?;
                let entry = open_log(log_config, meta, dir)?;
                logs.insert(entry.meta.name.clone(), Arc::new(entry));
            }
        }
        let mut internal: HashSet<String> = logs
            .values()
            .filter(|e| e.meta.kind() != Kind::User)
            .map(|e| e.meta.name.clone())
            .collect();
        internal.extend(SYSTEM_LOGS.iter().map(|s| (*s).to_string()));
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            log_config: log_config.clone(),
            logs: RwLock::new(logs),
            admin: tokio::sync::Mutex::new(()),
            system: Mutex::new(()),
            internal: RwLock::new(internal),
        })
    }

    /// The open log `name`.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<LogEntry>> {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownLog(name.to_string()))
    }

    /// Every open log of every kind, by name.
    pub(crate) fn all(&self) -> Vec<Arc<LogEntry>> {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Reserves `name` for an internal log before it exists.
    pub(crate) fn reserve_internal(&self, name: &str) {
        self.internal
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string());
    }

    /// Whether `name` is an internal or system log.
    pub(crate) fn is_internal(&self, name: &str) -> bool {
        self.internal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Creates a user or internal log; [`BrokerError::LogExists`] if the name is taken.
    pub(crate) async fn create(&self, name: &str, partitions: u32, kind: Kind) -> Result<()> {
        let _admin = self.admin.lock().await;
        if self.get(name).is_ok() {
            return Err(BrokerError::LogExists(name.to_string()));
        }
        let root = self.data_dir.join(LOGS_DIR);
        let meta = LogMeta::new(name, partitions, kind);
        // File-system work, recovery and thread starts off the async threads.
        let config = self.log_config.clone();
        let entry = tokio::task::spawn_blocking(move || create_on_disk(&config, meta, &root))
            .await
            .map_err(|e| BrokerError::Storage(format!("create task failed: {e}")))??;
        self.insert(entry);
        Ok(())
    }

    fn insert(&self, entry: LogEntry) -> Arc<LogEntry> {
        self.insert_arc(Arc::new(entry))
    }

    fn insert_arc(&self, entry: Arc<LogEntry>) -> Arc<LogEntry> {
        self.logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.meta.name.clone(), Arc::clone(&entry));
        entry
    }

    /// Lists a replicated user log whose partitions (this node's replicas) are `writers`;
    /// its files belong to its Raft groups, not to the registry.
    /// [`BrokerError::LogExists`] if the name is taken.
    pub(crate) fn attach(&self, name: &str, writers: Vec<Arc<dyn PartitionLog>>) -> Result<()> {
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        if logs.contains_key(name) {
            return Err(BrokerError::LogExists(name.to_string()));
        }
        let meta = LogMeta::new(name, writers.len() as u32, Kind::User);
        let entry = LogEntry {
            meta,
            dir: None,
            partitions: writers
                .into_iter()
                .map(|writer| Partition { writer })
                .collect(),
        };
        logs.insert(name.to_string(), Arc::new(entry));
        Ok(())
    }

    /// Takes a replicated log out of the catalogue (its files are its groups' to
    /// remove); its partitions refuse later appends.
    pub(crate) fn detach(&self, name: &str) -> Result<()> {
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        match logs.get(name) {
            Some(e) if e.dir.is_none() => {}
            Some(_) => return Err(BrokerError::Storage(format!("{name} is not replicated"))),
            None => return Err(BrokerError::UnknownLog(name.to_string())),
        }
        if let Some(e) = logs.remove(name) {
            for p in &e.partitions {
                p.writer.stop();
            }
        }
        Ok(())
    }

    /// The system log `name` (one partition), created if it does not exist yet.
    /// Blocking: call it at start-up or on the blocking pool.
    pub(crate) fn open_system(&self, name: &str) -> Result<Arc<LogEntry>> {
        let _system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(entry) = self.get(name) {
            return Ok(entry);
        }
        self.reserve_internal(name);
        let meta = LogMeta::new(name, 1, Kind::System);
        let entry = create_on_disk(&self.log_config, meta, &self.data_dir.join(SYSTEM_DIR))?;
        tracing::info!(log = name, "system log created");
        Ok(self.insert(entry))
    }

    /// Replaces the contents of partition `p` of system log `name` with what `build`
    /// writes into a fresh log, then reopens it. Crash-safe (see the module
    /// documentation). Nothing else may hold the log meanwhile: it is meant for start-up.
    /// Blocking.
    pub(crate) fn replace_partition(
        &self,
        name: &str,
        p: u32,
        build: impl FnOnce(&Log) -> Result<()>,
    ) -> Result<Arc<LogEntry>> {
        let _system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = self
            .logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownLog(name.to_string()))?;
        let (meta, dir) = (entry.meta.clone(), entry.dir.clone());
        let refused = if meta.kind() != Kind::System || p >= meta.partitions || dir.is_none() {
            Some(format!("partition {p} of {name} cannot be replaced"))
        } else if Arc::strong_count(&entry) > 1
            || entry
                .partitions
                .iter()
                .any(|p| Arc::strong_count(&p.writer) > 1 || Arc::strong_count(&p.log()) > 2)
        {
            Some(format!("{name} is in use"))
        } else {
            None
        };
        if let Some(why) = refused {
            self.logs
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_string(), entry);
            return Err(BrokerError::Storage(why));
        }
        let dir = dir.unwrap_or_default();
        let (live, fresh, old) = partition_paths(&dir, p);
        let built = (|| {
            let _ = std::fs::remove_dir_all(&fresh);
            let log = Log::open(&fresh, log_config(&self.log_config, meta.kind()))?;
            build(&log)?;
            log.close().map_err(BrokerError::from)
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&fresh);
            self.logs
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_string(), entry);
            return Err(e);
        }
        // The old contents close (their last reference) before they move.
        drop(entry);
        let swapped = (|| {
            std::fs::rename(&live, &old).map_err(|e| io_err("swap partition", e))?;
            std::fs::rename(&fresh, &live).map_err(|e| io_err("swap partition", e))?;
            sync_dir(&dir)?;
            std::fs::remove_dir_all(&old).map_err(|e| io_err("remove replaced partition", e))
        })();
        // Reopening finishes or undoes a swap that failed half-way.
        let reopened = self.insert(open_log(&self.log_config, meta, dir)?);
        swapped.map(|()| reopened)
    }

    /// Takes a user log out of the catalogue and off the disk. If the directory cannot
    /// be taken away, the log stays listed and readable.
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let entry = self
            .logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownLog(name.to_string()))?;
        let Some(dir) = entry.dir.clone() else {
            // A replicated log goes through its cluster's metadata group.
            self.insert_arc(entry);
            return Err(BrokerError::Storage(format!(
                "{name} is replicated: it is deleted through the cluster"
            )));
        };
        let root = self.data_dir.join(LOGS_DIR);
        let tomb = dir.with_file_name(format!(".deleted-{}", file_name(&dir)));
        let (from, to) = (dir.clone(), tomb.clone());
        let renamed = tokio::task::spawn_blocking(move || {
            std::fs::rename(&from, &to).map_err(|e| {
                io_err(
                    format!("delete log: rename {} to {}", from.display(), to.display()),
                    e,
                )
            })?;
            sync_dir(&root)
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("delete task failed: {e}")))
        .and_then(|r| r);
        if let Err(e) = renamed {
            if !dir.exists() {
                // Renamed but not durably: a restart may or may not find it, so finish.
                tracing::warn!(log = name, error = %e, "delete not durable; finishing it");
            } else {
                self.logs
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_string(), entry);
                return Err(e);
            }
        }
        // Appends already accepted finish; readers holding the entry keep working on
        // unlinked files until they drop it.
        drop(entry);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&tomb)).await;
        Ok(())
    }

    /// Takes every log out of the catalogue (shutdown).
    pub(crate) fn take_all(&self) -> BTreeMap<String, Arc<LogEntry>> {
        std::mem::take(&mut *self.logs.write().unwrap_or_else(PoisonError::into_inner))
    }
}

fn read_meta(dir: &Path) -> Result<LogMeta> {
    let meta_path = dir.join(META_FILE);
    let raw = std::fs::read(&meta_path)
        .map_err(|e| io_err(format!("read {}", meta_path.display()), e))?;
    serde_json::from_slice(&raw)
        .map_err(|e| BrokerError::Storage(format!("{} is not valid: {e}", meta_path.display())))
}

/// The configuration of a log of `kind`: system logs and internal logs keep their
/// history; system logs hold small records, so they get small segments.
fn log_config(base: &LogConfig, kind: Kind) -> LogConfig {
    match kind {
        Kind::User => base.clone(),
        Kind::Internal => LogConfig {
            retention_bytes: None,
            retention_age: None,
            ..base.clone()
        },
        Kind::System => LogConfig {
            segment_bytes: 8 << 20,
            max_batch_bytes: 4 << 20,
            retention_bytes: None,
            retention_age: None,
            ..base.clone()
        },
    }
}

/// Partition directory, its replacement being built, and its replaced contents.
fn partition_paths(dir: &Path, p: u32) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(p.to_string()),
        dir.join(format!("{p}.compacting")),
        dir.join(format!("{p}.old")),
    )
}

/// Brings a partition directory back to "one complete log" after a crash in the middle
/// of a replacement: before the first rename the old contents stand, after it the new.
fn recover_replacement(dir: &Path, p: u32) -> Result<()> {
    let (live, fresh, old) = partition_paths(dir, p);
    recover_swap(&live, &fresh, &old)
}

/// The recovery of a swap done as `live` → `old`, then `fresh` → `live`: if the process
/// died between the two renames `live` is missing and `old` is whole, so it comes back;
/// whatever is left of `fresh` or `old` afterwards is removed. `fresh` is never promoted:
/// nothing says it was complete.
fn recover_swap(live: &Path, fresh: &Path, old: &Path) -> Result<()> {
    if !live.exists() && old.exists() {
        std::fs::rename(old, live).map_err(|e| {
            io_err(
                format!("restore {} as {}", old.display(), live.display()),
                e,
            )
        })?;
    }
    for leftover in [fresh, old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| {
                io_err(
                    format!("remove interrupted replacement {}", leftover.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

fn open_log(base: &LogConfig, meta: LogMeta, dir: PathBuf) -> Result<LogEntry> {
    let config = log_config(base, meta.kind());
    let mut partitions = Vec::with_capacity(meta.partitions as usize);
    for p in 0..meta.partitions {
        recover_replacement(&dir, p)?;
        let log = Arc::new(Log::open(dir.join(p.to_string()), config.clone())?);
        let writer: Arc<dyn PartitionLog> = Arc::new(LocalPartition::new(log));
        partitions.push(Partition { writer });
    }
    Ok(LogEntry {
        meta,
        dir: Some(dir),
        partitions,
    })
}

/// Writes a log directory holding only `meta.json` under a temporary name, then
/// publishes it at `final_dir` with a rename.
fn publish_log_dir(meta: &LogMeta, root: &Path, final_dir: &Path) -> Result<()> {
    let tmp = root.join(format!(".tmp-{}", file_name(final_dir)));
    let build = || -> Result<()> {
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| io_err("create log directory", e))?;
        let raw =
            serde_json::to_vec_pretty(meta).map_err(|e| BrokerError::Storage(e.to_string()))?;
        let meta_path = tmp.join(META_FILE);
        std::fs::write(&meta_path, raw).map_err(|e| io_err("write meta.json", e))?;
        std::fs::File::open(&meta_path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("fsync meta.json", e))?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, final_dir).map_err(|e| io_err("publish log directory", e))?;
        sync_dir(root)
    };
    build().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })
}

/// Builds the log's directory, publishes it, then opens its partitions. All or nothing:
/// if any step fails (a full disk, out of file descriptors or threads) the directory is
/// gone again and the name stays free.
fn create_on_disk(config: &LogConfig, meta: LogMeta, root: &Path) -> Result<LogEntry> {
    let final_dir = root.join(names::dir_name(&meta.name));
    if final_dir.exists() {
        return Err(BrokerError::Storage(format!(
            "{} exists but holds another log",
            final_dir.display()
        )));
    }
    publish_log_dir(&meta, root, &final_dir)?;
    match open_log(config, meta, final_dir.clone()) {
        Ok(entry) => Ok(entry),
        Err(e) => {
            // Its partitions are closed again (dropped); take the directory back out the
            // way a delete does, so a restart does not find it either.
            let tomb = root.join(format!(".deleted-{}", file_name(&final_dir)));
            if std::fs::rename(&final_dir, &tomb).is_ok() {
                let _ = sync_dir(root);
                let _ = std::fs::remove_dir_all(&tomb);
            } else {
                let _ = std::fs::remove_dir_all(&final_dir);
            }
            tracing::warn!(dir = %tomb.display(), error = %e, "create failed; undone");
            Err(e)
        }
    }
}

/// Moves the bare logs of earlier versions (`<data dir>/__consumer_offsets/`, …) into
/// `system/` as partition 0 of a system log. Each step is a rename, and a restart after a
/// crash in between finishes the move.
fn migrate_legacy(data_dir: &Path) -> Result<()> {
    let root = data_dir.join(SYSTEM_DIR);
    for name in LEGACY_DIRS {
        let old = data_dir.join(name);
        // A compaction of earlier versions swapped `<name>` with `<name>.old`.
        recover_swap(
            &old,
            &data_dir.join(format!("{name}.compacting")),
            &data_dir.join(format!("{name}.old")),
        )?;
        if !old.exists() {
            continue;
        }
        let final_dir = root.join(names::dir_name(name));
        if !final_dir.exists() {
            publish_log_dir(&LogMeta::new(name, 1, Kind::System), &root, &final_dir)?;
        }
        let p0 = final_dir.join("0");
        if p0.exists() {
            return Err(BrokerError::Storage(format!(
                "both {} (the layout of an earlier version) and {} exist; keep one",
                old.display(),
                p0.display()
            )));
        }
        std::fs::rename(&old, &p0)
            .map_err(|e| io_err(format!("move {} into {}", old.display(), p0.display()), e))?;
        sync_dir(&final_dir)?;
        sync_dir(data_dir)?;
        tracing::info!(from = %old.display(), to = %p0.display(), "moved into the registry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_replacement_keeps_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (live, fresh, old) = partition_paths(dir.path(), 0);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&fresh).unwrap();
        std::fs::write(old.join("marker"), b"x").unwrap();
        recover_replacement(dir.path(), 0).unwrap();
        assert!(live.join("marker").exists() && !old.exists() && !fresh.exists());
    }

    #[test]
    fn a_legacy_layout_moves_into_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path().join(OFFSETS_LOG), LogConfig::default()).unwrap();
            let mut b = chariot_log::RecordBatchBuilder::new();
            b.push_parts(1, None, b"kept", &[]);
            log.append(&mut b.build()).unwrap();
            log.close().unwrap();
        }
        let registry = Registry::open(dir.path(), &LogConfig::default()).unwrap();
        assert!(!dir.path().join(OFFSETS_LOG).exists());
        let entry = registry.get(OFFSETS_LOG).unwrap();
        assert_eq!(entry.meta.kind(), Kind::System);
        assert_eq!(entry.partition(0).unwrap().log().next_offset(), 1);
        assert!(registry.is_internal(QUEUE_LOG), "reserved before it exists");
    }

    #[test]
    fn a_replaced_partition_holds_only_the_new_contents() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), &LogConfig::default()).unwrap();
        let append = |log: &Log, v: &[u8]| {
            let mut b = chariot_log::RecordBatchBuilder::new();
            b.push_parts(1, None, v, &[]);
            log.append(&mut b.build())
                .map(|_| ())
                .map_err(BrokerError::from)
        };
        {
            let entry = registry.open_system(SENDERS_LOG).unwrap();
            let log = &entry.partition(0).unwrap().log();
            for _ in 0..3 {
                append(log, b"old").unwrap();
            }
        }
        let entry = registry
            .replace_partition(SENDERS_LOG, 0, |log| append(log, b"new"))
            .unwrap();
        let log = &entry.partition(0).unwrap().log();
        assert_eq!(log.next_offset(), 1);
        drop(entry);
        // A replacement while someone holds the log is refused, and the log stays.
        let held = registry.get(SENDERS_LOG).unwrap();
        assert!(registry
            .replace_partition(SENDERS_LOG, 0, |_| Ok(()))
            .is_err());
        assert_eq!(held.partition(0).unwrap().log().next_offset(), 1);
        assert!(registry.get(SENDERS_LOG).is_ok());
    }
}
