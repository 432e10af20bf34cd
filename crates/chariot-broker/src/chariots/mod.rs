//! Chariots: a shared log whose order respects causality.
//!
//! A record names its causal chain (`seed`) and the tag hashes it depends on (`prehash`);
//! it is appended to the shared log only once, for each dependency, a record of the same
//! seed carrying a tag with that hash is already there. The stages keep the paper's names:
//!
//! The stages are tokio tasks joined by bounded channels, so a slow stage holds back the
//! ones before it (backpressure), down to the HTTP and TCP handlers:
//!
//! - **batcher**: takes every submission queued by HTTP and TCP at once and passes them
//!   on as one batch, so one fsync covers many records;
//! - **filter**: a client id seen before gets the first submission's outcome (the later
//!   stages report outcomes back to it); a repeat while the first is in flight is told to
//!   retry;
//! - **queue** (the *sequencer*, which owns the causal state): records whose dependencies
//!   are missing wait in the *dependency queue*, which is durable (an internal log,
//!   `__chariots_queue`) and bounded (a maximum wait, after which a record is rejected
//!   with a reason, and a maximum size, past which new records get a "busy" error);
//!   propagated records are deduplicated by (origin, TOId); ready records are released in
//!   order, with their TOIds;
//! - **maintainer**: appends released records to the shared log (a Chariot log with one
//!   partition, exempt from retention; a record's LId is its offset) and answers the
//!   clients. If an append fails, the records released after it were admitted assuming
//!   it landed, so the service stops (every later submission is refused) until a restart
//!   rebuilds the exact state from disk, as the storage engine does after an fsync error;
//! - **indexer**: tag hash → LIds for lookups; rebuilt from the shared log on start.
//!
//! - **sender**: one task per remote datacenter propagates this datacenter's records in
//!   TOId order, durably and at least once; a propagated record is appended only after
//!   its origin's previous TOId and its dependencies, deduplicated by (origin, TOId).
//!
//! Every record originated here gets the next TOId of this datacenter; every datacenter
//! holds every record, each copy with its own LIds.

pub mod record;
pub mod sender;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chariot_log::{Log, LogConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::appender::{now_ms, Appender, Entry, NewRecord};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
pub use record::{fnv1a64, tag_hash, Origin, RecordFormatError, RecordMeta, Submission};

const QUEUE_DIR: &str = "__chariots_queue";
/// Rejected records remembered for `GET /records/waiting`.
const REJECTED_KEPT: usize = 10_000;

/// Settings of the Chariots service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChariotsConfig {
    /// Name of the shared log.
    pub log: String,
    /// This node's datacenter.
    pub dc_id: u32,
    /// How long a record may wait for its dependencies before it is rejected.
    pub max_wait: Duration,
    /// Most records waiting at once; past it new records that would wait are refused.
    pub max_waiting: usize,
    /// Remote datacenters: id and record-port address.
    pub remotes: Vec<(u32, String)>,
    /// This node's listeners (name, address), for `GET /cluster`.
    pub listeners: Vec<(String, String)>,
}

impl Default for ChariotsConfig {
    fn default() -> Self {
        Self {
            log: "chariots".into(),
            dc_id: 0,
            max_wait: Duration::from_secs(300),
            max_waiting: 100_000,
            remotes: Vec::new(),
            listeners: Vec::new(),
        }
    }
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// In the shared log at this LId.
    Appended {
        /// Log id (offset in the shared log).
        lid: u64,
    },
    /// Durably queued until its dependencies arrive; poll with this id.
    Waiting {
        /// Dependency-queue id.
        id: u64,
    },
    /// A propagated record this datacenter already holds (appended or queued).
    Duplicate,
    /// Gave up waiting.
    Rejected {
        /// Dependency-queue id.
        id: u64,
        /// Why.
        reason: String,
    },
}

/// A record of the shared log, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChariotsRecord {
    /// Log id.
    pub lid: u64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Causal chain.
    pub seed: u64,
    /// Dependencies.
    pub prehash: Vec<u64>,
    /// Datacenter of origin.
    pub origin_dc: u32,
    /// Position in the origin's total order.
    pub toid: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Client id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A waiting or rejected record, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedRecord {
    /// Dependency-queue id.
    pub id: u64,
    /// `waiting` or `rejected`.
    pub status: &'static str,
    /// The record.
    pub record: Submission,
    /// When it was accepted, ms since the Unix epoch.
    pub accepted_at_ms: i64,
    /// Dependencies still missing (for waiting records) or the rejection reason.
    pub missing: Vec<u64>,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The tag index, shared with readers.
#[derive(Debug, Default)]
struct Index {
    by_hash: HashMap<u64, Vec<u64>>,
}

/// Durable form of a dependency-queue entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum QueueEntry {
    Enqueue {
        record: Submission,
        accepted_at_ms: i64,
    },
    Reject {
        id: u64,
        reason: String,
    },
}

struct Waiting {
    record: Submission,
    accepted_at_ms: i64,
    watchers: Vec<oneshot::Sender<Outcome>>,
}

enum Command {
    Submit {
        record: Submission,
        reply: oneshot::Sender<Result<Outcome>>,
        watch: Option<oneshot::Sender<Outcome>>,
    },
}

/// Handle to the Chariots service.
pub struct Chariots {
    config: ChariotsConfig,
    broker: Arc<Broker>,
    tx: mpsc::Sender<Command>,
    index: Arc<RwLock<Index>>,
    status: Arc<RwLock<StatusView>>,
    toid_counter: Arc<AtomicU64>,
    appended: Arc<Notify>,
    connector: sender::Connector,
    senders: Arc<RwLock<HashMap<u32, sender::SenderStatus>>>,
    sender_tasks: std::sync::Mutex<HashMap<u32, tokio::task::JoinHandle<()>>>,
}

/// What readers may see of the queue without asking the sequencer.
#[derive(Debug, Default)]
struct StatusView {
    waiting: BTreeMap<u64, QueuedRecord>,
    rejected: VecDeque<QueuedRecord>,
    resolved: HashMap<u64, u64>,
    /// Queue ids whose dependencies arrived, on their way to the log.
    in_flight: HashSet<u64>,
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Chariots {
    /// Starts the service over `broker`: rebuilds the index, the filter and the
    /// dependency queue from disk, then spawns the sequencer on the current tokio runtime.
    /// The shared log itself is created with the first record, so a node that never sees
    /// a Chariots record lists no extra log.
    pub async fn start(
        broker: Arc<Broker>,
        config: ChariotsConfig,
        connector: sender::Connector,
    ) -> Result<Self> {
        let queue_dir = broker.config().data_dir.join(QUEUE_DIR);
        let queue_config = LogConfig {
            segment_bytes: 8 << 20,
            max_batch_bytes: 4 << 20,
            retention_bytes: None,
            retention_age: None,
            ..broker.config().log.clone()
        };
        let queue_log = Arc::new(Log::open(&queue_dir, queue_config)?);
        let index = Arc::new(RwLock::new(Index::default()));
        let status = Arc::new(RwLock::new(StatusView::default()));
        let toid_counter = Arc::new(AtomicU64::new(0));
        let appended = Arc::new(Notify::new());
        let mut seq = Sequencer {
            config: config.clone(),
            broker: Arc::clone(&broker),
            queue: Appender::start(QUEUE_DIR.into(), Arc::clone(&queue_log), 1 << 20)?,
            index: Arc::clone(&index),
            status: Arc::clone(&status),
            present: HashSet::new(),
            ids: HashMap::new(),
            waiting: BTreeMap::new(),
            next_toid: 0,
            expected: HashMap::new(),
            queued_remote: HashSet::new(),
            maintainer: None,
            filter: None,
            stopped: Arc::new(AtomicBool::new(false)),
        };
        seq.recover(&queue_log).await?;
        toid_counter.store(seq.next_toid, Ordering::Release);
        // The pipeline: batcher -> filter -> sequencer (queue) -> maintainer -> indexer.
        let (tx, submissions) = mpsc::channel(8192);
        let (to_filter, filtering) = mpsc::channel(16);
        let (to_sequencer, batches) = mpsc::channel(16);
        let (to_maintainer, released) = mpsc::channel(16);
        let (to_indexer, indexing) = mpsc::channel(16);
        let (feedback, feedback_rx) = mpsc::unbounded_channel();
        seq.maintainer = Some(to_maintainer);
        seq.filter = Some(feedback.clone());
        let known_ids = std::mem::take(&mut seq.ids);
        let maintainer = Maintainer {
            broker: Arc::clone(&broker),
            log: config.log.clone(),
            status: Arc::clone(&status),
            indexer: to_indexer,
            feedback,
            stopped: Arc::clone(&seq.stopped),
            toid_counter: Arc::clone(&toid_counter),
            appended: Arc::clone(&appended),
        };
        tokio::spawn(batcher(submissions, to_filter));
        tokio::spawn(filter(known_ids, filtering, feedback_rx, to_sequencer));
        tokio::spawn(seq.run(batches));
        tokio::spawn(maintainer.run(released));
        tokio::spawn(indexer(Arc::clone(&index), indexing));
        let chariots = Self {
            config,
            broker,
            tx,
            index,
            status,
            toid_counter,
            appended,
            connector,
            senders: Arc::new(RwLock::new(HashMap::new())),
            sender_tasks: std::sync::Mutex::new(HashMap::new()),
        };
        // Remotes added at run time are remembered; flags and config win for the same id.
        let mut remotes: BTreeMap<u32, String> =
            sender::load_remotes(&chariots.broker.config().data_dir);
        remotes.extend(chariots.config.remotes.iter().cloned());
        for (dc, addr) in remotes {
            chariots.add_remote(dc, addr)?;
        }
        Ok(chariots)
    }

    /// Starts (or redirects) propagation to a remote datacenter.
    pub fn add_remote(&self, dc: u32, addr: String) -> Result<()> {
        if dc == self.config.dc_id {
            return Err(BrokerError::InvalidName(format!(
                "datacenter {dc} is this node's own id"
            )));
        }
        let task = tokio::spawn(
            sender::Sender {
                broker: Arc::clone(&self.broker),
                log: self.config.log.clone(),
                local_dc: self.config.dc_id,
                remote_dc: dc,
                addr: addr.clone(),
                appended: Arc::clone(&self.appended),
                status: Arc::clone(&self.senders),
                connector: Arc::clone(&self.connector),
            }
            .run(),
        );
        lock_write(&self.senders).insert(
            dc,
            sender::SenderStatus {
                dc,
                addr,
                acked_next_toid: 0,
                connected: false,
                last_error: None,
                last_ack_ms: None,
            },
        );
        let mut tasks = self
            .sender_tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = tasks.insert(dc, task) {
            old.abort();
        }
        drop(tasks);
        let all: BTreeMap<u32, String> =
            self.remotes().into_iter().map(|r| (r.dc, r.addr)).collect();
        sender::store_remotes(&self.broker.config().data_dir, &all)
            .map_err(|e| BrokerError::Storage(format!("cannot remember remote datacenters: {e}")))
    }

    /// Remote datacenters and how far behind each is.
    pub fn remotes(&self) -> Vec<sender::SenderStatus> {
        let mut v: Vec<_> = lock_read(&self.senders).values().cloned().collect();
        v.sort_by_key(|s| s.dc);
        v
    }

    /// The TOId the next local record will get (= how many originated here).
    pub fn local_next_toid(&self) -> u64 {
        self.toid_counter.load(Ordering::Acquire)
    }

    /// Submits several records in order (one sequencer round, so one fsync for all);
    /// each result says what became of the record at the same index.
    pub async fn submit_many(&self, records: Vec<Submission>) -> Vec<Result<Outcome>> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            if let Err(e) = self.check_size(&record) {
                pending.push(Err(e));
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let sent = self
                .tx
                .send(Command::Submit {
                    record,
                    reply,
                    watch: None,
                })
                .await;
            pending.push(sent.map(|()| rx).map_err(|_| BrokerError::ShuttingDown));
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Ok(rx) => rx.await.unwrap_or(Err(BrokerError::ShuttingDown)),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// The configuration in use.
    pub fn config(&self) -> &ChariotsConfig {
        &self.config
    }

    /// Tags are a record's payload: they are bounded like any record value.
    fn check_size(&self, record: &Submission) -> Result<()> {
        let size: usize = record
            .tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>()
            + record.id.as_ref().map_or(0, String::len)
            + 8 * record.prehash.len();
        let max = self.broker.config().max_record_bytes;
        if size > max {
            return Err(BrokerError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Submits a record; returns once it is durably appended or durably queued. With
    /// `wait`, a queued record's final outcome is returned instead (appended or rejected).
    pub async fn submit(&self, record: Submission, wait: bool) -> Result<Outcome> {
        self.check_size(&record)?;
        let (reply, rx) = oneshot::channel();
        let (watch, final_rx) = if wait {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        self.tx
            .send(Command::Submit {
                record,
                reply,
                watch,
            })
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        let first = rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        match (first, final_rx) {
            (Outcome::Waiting { .. }, Some(final_rx)) => {
                final_rx.await.map_err(|_| BrokerError::ShuttingDown)
            }
            (outcome, _) => Ok(outcome),
        }
    }

    /// The record at `lid`.
    pub fn get(&self, lid: u64) -> Result<ChariotsRecord> {
        let records = self.broker.read_records(&self.config.log, 0, lid, 1)?;
        let r =
            records
                .into_iter()
                .find(|r| r.offset == lid)
                .ok_or(BrokerError::OffsetOutOfRange {
                    requested: lid,
                    earliest: 0,
                    next: lid,
                })?;
        decode_stored(&r)
    }

    /// LIds of records carrying every given tag hash (intersection), in log order.
    pub fn find(&self, hashes: &[u64]) -> Vec<u64> {
        let index = lock_read(&self.index);
        let mut lists: Vec<&Vec<u64>> = Vec::with_capacity(hashes.len());
        for h in hashes {
            match index.by_hash.get(h) {
                Some(l) => lists.push(l),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        let rest: Vec<HashSet<u64>> = rest.iter().map(|l| l.iter().copied().collect()).collect();
        first
            .iter()
            .copied()
            .filter(|lid| rest.iter().all(|s| s.contains(lid)))
            .collect()
    }

    /// Waiting and (recently) rejected records.
    pub fn queued(&self) -> Vec<QueuedRecord> {
        let s = lock_read(&self.status);
        s.waiting
            .values()
            .cloned()
            .chain(s.rejected.iter().cloned())
            .collect()
    }

    /// What became of dependency-queue entry `id`.
    pub fn queued_status(&self, id: u64) -> Option<Outcome> {
        let s = lock_read(&self.status);
        if let Some(lid) = s.resolved.get(&id) {
            return Some(Outcome::Appended { lid: *lid });
        }
        if s.waiting.contains_key(&id) || s.in_flight.contains(&id) {
            return Some(Outcome::Waiting { id });
        }
        s.rejected
            .iter()
            .find(|r| r.id == id)
            .map(|r| Outcome::Rejected {
                id,
                reason: r.reason.clone().unwrap_or_default(),
            })
    }
}

fn decode_stored(r: &crate::StoredRecord) -> Result<ChariotsRecord> {
    let meta: RecordMeta = serde_json::from_slice(&r.value).map_err(|e| {
        BrokerError::Storage(format!(
            "shared-log record {} is not a Chariots record: {e}",
            r.offset
        ))
    })?;
    let tags = r.headers_lossy();
    Ok(ChariotsRecord {
        lid: r.offset,
        tags,
        seed: meta.seed,
        prehash: meta.prehash,
        origin_dc: meta.origin_dc,
        toid: meta.toid,
        timestamp: r.timestamp,
        id: meta.id,
    })
}

/// The single task that orders records. It owns every piece of mutable state, so the
/// causal rule is checked and applied without locks or races.
struct Sequencer {
    config: ChariotsConfig,
    broker: Arc<Broker>,
    queue: Appender,
    index: Arc<RwLock<Index>>,
    status: Arc<RwLock<StatusView>>,
    /// Released records on their way to the maintainer.
    maintainer: Option<mpsc::Sender<Vec<Released>>>,
    /// Where outcomes for client ids go once the filter stage runs (during recovery,
    /// into `ids` instead).
    filter: Option<mpsc::UnboundedSender<IdOutcome>>,
    /// Set by the maintainer when an append failed: nothing more is accepted.
    stopped: Arc<AtomicBool>,
    /// (seed, tag hash) pairs in the shared log: the dependency check.
    present: HashSet<(u64, u64)>,
    /// Per remote origin: the TOId it must append next (everything below is in the log).
    expected: HashMap<u32, u64>,
    /// Propagated records waiting in the queue, for deduplication.
    queued_remote: HashSet<Origin>,
    /// Filter: client id → outcome of its first submission.
    ids: HashMap<String, Outcome>,
    /// Dependency queue, in arrival order (ids are increasing).
    waiting: BTreeMap<u64, Waiting>,
    next_toid: u64,
}

/// What a flush has admitted but not yet appended.
#[derive(Default)]
struct Tentative {
    present: HashSet<(u64, u64)>,
    expected: HashMap<u32, u64>,
}

impl Tentative {
    fn admit(&mut self, r: &Submission) {
        for h in r.tag_hashes() {
            self.present.insert((r.seed, h));
        }
        if let Some(o) = r.origin {
            self.expected.insert(o.dc, o.toid + 1);
        }
    }
}

/// A record about to be appended.
struct Ready {
    record: Submission,
    queued_as: Option<u64>,
    reply: Option<oneshot::Sender<Result<Outcome>>>,
    watchers: Vec<oneshot::Sender<Outcome>>,
}

impl Sequencer {
    fn expected_toid(&self, dc: u32, t: &Tentative) -> u64 {
        t.expected
            .get(&dc)
            .or_else(|| self.expected.get(&dc))
            .copied()
            .unwrap_or(0)
    }

    /// The causal rule: every dependency of the same seed is present and, for a
    /// propagated record, its origin's previous TOId is in the log.
    fn satisfied(&self, r: &Submission, t: &Tentative) -> bool {
        let deps = r
            .prehash
            .iter()
            .all(|h| self.present.contains(&(r.seed, *h)) || t.present.contains(&(r.seed, *h)));
        deps && match r.origin {
            Some(o) if o.dc != self.config.dc_id => o.toid == self.expected_toid(o.dc, t),
            _ => true,
        }
    }

    fn missing(&self, r: &Submission) -> Vec<u64> {
        r.prehash
            .iter()
            .copied()
            .filter(|h| !self.present.contains(&(r.seed, *h)))
            .collect()
    }

    /// Rebuilds index, filter, TOId counter and queue from the shared log and the queue log.
    async fn recover(&mut self, queue_log: &Log) -> Result<()> {
        let mut appended_from_queue = HashMap::new();
        let mut at = match self.broker.describe_log(&self.config.log) {
            Ok(d) => d.partitions.first().map_or(0, |p| p.earliest_offset),
            Err(_) => 0,
        };
        loop {
            let batch = match self.broker.read_records(&self.config.log, 0, at, 10_000) {
                Err(BrokerError::UnknownLog(_)) => Vec::new(),
                other => other?,
            };
            let Some(last) = batch.last() else { break };
            at = last.offset + 1;
            for r in &batch {
                let Ok(rec) = decode_stored(r) else {
                    // Someone published a plain record to the shared log by its name;
                    // it takes no part in causality.
                    tracing::warn!(
                        lid = r.offset,
                        "skipping a non-Chariots record in the shared log"
                    );
                    continue;
                };
                let meta_queued = serde_json::from_slice::<RecordMeta>(&r.value)
                    .ok()
                    .and_then(|m| m.queued_as);
                self.note_appended(&rec);
                if let Some(q) = meta_queued {
                    appended_from_queue.insert(q, rec.lid);
                }
            }
        }
        lock_write(&self.status).resolved = appended_from_queue.clone();
        let mut rejected = Vec::new();
        let mut at = queue_log.earliest_offset();
        loop {
            let r = queue_log.read(at, 1 << 20)?;
            if r.bytes.is_empty() {
                break;
            }
            for b in r.batches() {
                for rec in b.records() {
                    let entry: QueueEntry = serde_json::from_slice(rec.value).map_err(|e| {
                        BrokerError::Storage(format!("dependency queue entry {}: {e}", rec.offset))
                    })?;
                    match entry {
                        QueueEntry::Enqueue {
                            record,
                            accepted_at_ms,
                        } => {
                            if let Some(id) = &record.id {
                                let outcome = match appended_from_queue.get(&rec.offset) {
                                    Some(lid) => Outcome::Appended { lid: *lid },
                                    None => Outcome::Waiting { id: rec.offset },
                                };
                                self.ids.insert(id.clone(), outcome);
                            }
                            if !appended_from_queue.contains_key(&rec.offset) {
                                if let Some(o) = record.origin {
                                    self.queued_remote.insert(o);
                                }
                                self.waiting.insert(
                                    rec.offset,
                                    Waiting {
                                        record,
                                        accepted_at_ms,
                                        watchers: Vec::new(),
                                    },
                                );
                            }
                        }
                        QueueEntry::Reject { id, reason } => {
                            if let Some(w) = self.waiting.remove(&id) {
                                rejected.push((id, w, reason));
                            }
                        }
                    }
                }
            }
            at = r.next_offset;
        }
        for (id, w, reason) in rejected {
            self.remember_rejected(id, w, reason);
        }
        self.publish_waiting();
        // Dependencies may have landed just before a crash; and time passed while down.
        self.flush(Vec::new()).await;
        self.expire().await;
        tracing::info!(
            waiting = self.waiting.len(),
            next_toid = self.next_toid,
            "chariots recovered"
        );
        Ok(())
    }

    /// Recovery: a record found in the shared log.
    fn note_appended(&mut self, rec: &ChariotsRecord) {
        self.admit(&rec.tags, rec.seed, rec.origin_dc, rec.toid);
        index_record(&mut lock_write(&self.index), rec.lid, &rec.tags);
        if let Some(id) = &rec.id {
            self.ids
                .insert(id.clone(), Outcome::Appended { lid: rec.lid });
        }
    }

    /// The causal state a record adds once it is (or is about to be) in the log.
    fn admit(&mut self, tags: &BTreeMap<String, String>, seed: u64, origin_dc: u32, toid: u64) {
        for (k, v) in tags {
            self.present.insert((seed, tag_hash(k, v)));
        }
        if origin_dc == self.config.dc_id {
            self.next_toid = self.next_toid.max(toid + 1);
        } else {
            let e = self.expected.entry(origin_dc).or_insert(0);
            *e = (*e).max(toid + 1);
        }
    }

    fn remember_rejected(&mut self, id: u64, w: Waiting, reason: String) {
        let missing = self.missing(&w.record);
        if let Some(cid) = local_id(&w.record) {
            self.id_outcome(
                &cid,
                Some(Outcome::Rejected {
                    id,
                    reason: reason.clone(),
                }),
            );
        }
        for watcher in w.watchers {
            let _ = watcher.send(Outcome::Rejected {
                id,
                reason: reason.clone(),
            });
        }
        let mut s = lock_write(&self.status);
        s.rejected.push_back(QueuedRecord {
            id,
            status: "rejected",
            record: w.record,
            accepted_at_ms: w.accepted_at_ms,
            missing,
            reason: Some(reason),
        });
        while s.rejected.len() > REJECTED_KEPT {
            s.rejected.pop_front();
        }
    }

    fn publish_waiting(&self) {
        let view: BTreeMap<u64, QueuedRecord> = self
            .waiting
            .iter()
            .map(|(id, w)| {
                (
                    *id,
                    QueuedRecord {
                        id: *id,
                        status: "waiting",
                        record: w.record.clone(),
                        accepted_at_ms: w.accepted_at_ms,
                        missing: self.missing(&w.record),
                        reason: None,
                    },
                )
            })
            .collect();
        lock_write(&self.status).waiting = view;
    }

    async fn run(mut self, mut batches: mpsc::Receiver<Vec<Command>>) {
        let period =
            (self.config.max_wait / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmds = batches.recv() => {
                    let Some(cmds) = cmds else { break };
                    self.flush(cmds).await;
                }
                _ = tick.tick() => self.expire().await,
            }
        }
        self.queue.stop();
    }

    /// Tells the filter what became of a client id (`None`: nothing, it may be retried).
    fn id_outcome(&mut self, id: &str, outcome: Option<Outcome>) {
        match &self.filter {
            Some(f) => {
                let _ = f.send(IdOutcome {
                    id: id.to_string(),
                    outcome,
                });
            }
            None => {
                if let Some(o) = outcome {
                    self.ids.insert(id.to_string(), o);
                }
            }
        }
    }

    /// Filter, then decide for each submission (in arrival order) whether it is ready;
    /// cascade through the queue; persist; reply.
    async fn flush(&mut self, cmds: Vec<Command>) {
        if self.stopped.load(Ordering::Acquire) {
            for Command::Submit { record, reply, .. } in cmds {
                if let Some(id) = local_id(&record) {
                    self.id_outcome(&id, None);
                }
                let _ = reply.send(Err(stopped_error()));
            }
            return;
        }
        let mut ready: Vec<Ready> = Vec::new();
        let mut to_queue: Vec<Command> = Vec::new();
        let mut tentative = Tentative::default();
        let mut batch_origins: HashSet<Origin> = HashSet::new();
        for Command::Submit {
            record,
            reply,
            watch,
        } in cmds
        {
            if let Some(o) = record.origin.filter(|o| o.dc != self.config.dc_id) {
                // Propagation is at-least-once: a record seen before is acknowledged again.
                let held = o.toid < self.expected_toid(o.dc, &tentative)
                    || self.queued_remote.contains(&o)
                    || !batch_origins.insert(o);
                if held {
                    let _ = reply.send(Ok(Outcome::Duplicate));
                    continue;
                }
            }
            if self.satisfied(&record, &tentative) {
                tentative.admit(&record);
                ready.push(Ready {
                    record,
                    queued_as: None,
                    reply: Some(reply),
                    watchers: watch.into_iter().collect(),
                });
            } else {
                to_queue.push(Command::Submit {
                    record,
                    reply,
                    watch,
                });
            }
        }
        // New waiters first become durable queue entries (so they have ids), unless the
        // queue is full.
        let mut new_waiting = Vec::new();
        if !to_queue.is_empty() {
            let room = self.config.max_waiting.saturating_sub(self.waiting.len());
            let mut accepted = Vec::new();
            for (
                i,
                Command::Submit {
                    record,
                    reply,
                    watch,
                },
            ) in to_queue.into_iter().enumerate()
            {
                if i < room {
                    accepted.push((record, reply, watch));
                } else {
                    if let Some(id) = local_id(&record) {
                        self.id_outcome(&id, None);
                    }
                    let _ = reply.send(Err(BrokerError::Busy(format!(
                        "the dependency queue is full ({} records waiting)",
                        self.config.max_waiting
                    ))));
                }
            }
            let now = now_ms();
            let records: Vec<NewRecord> = accepted
                .iter()
                .map(|(record, _, _)| {
                    queue_record(&QueueEntry::Enqueue {
                        record: record.clone(),
                        accepted_at_ms: now,
                    })
                })
                .collect();
            if !records.is_empty() {
                match self.queue.append(Entry::Records(records)).await {
                    Ok(a) => {
                        for (i, (record, reply, watch)) in accepted.into_iter().enumerate() {
                            let id = a.base_offset + i as u64;
                            new_waiting.push((id, reply));
                            if let Some(o) = record.origin {
                                self.queued_remote.insert(o);
                            } else if let Some(cid) = record.id.clone() {
                                self.id_outcome(&cid, Some(Outcome::Waiting { id }));
                            }
                            self.waiting.insert(
                                id,
                                Waiting {
                                    record,
                                    accepted_at_ms: now,
                                    watchers: watch.into_iter().collect(),
                                },
                            );
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for (record, reply, _) in accepted {
                            if let Some(id) = local_id(&record) {
                                self.id_outcome(&id, None);
                            }
                            let _ = reply.send(Err(BrokerError::Storage(msg.clone())));
                        }
                    }
                }
            }
        }
        // Cascade: waiting records (oldest first) whose dependencies are now satisfied.
        loop {
            let freed: Vec<u64> = self
                .waiting
                .iter()
                .filter(|(_, w)| self.satisfied(&w.record, &tentative))
                .map(|(id, _)| *id)
                .collect();
            if freed.is_empty() {
                break;
            }
            for id in freed {
                if let Some(w) = self.waiting.remove(&id) {
                    tentative.admit(&w.record);
                    if let Some(o) = w.record.origin {
                        self.queued_remote.remove(&o);
                    }
                    ready.push(Ready {
                        record: w.record,
                        queued_as: Some(id),
                        reply: None,
                        watchers: w.watchers,
                    });
                }
            }
        }
        self.release(ready).await;
        for (id, reply) in new_waiting {
            let outcome = match lock_read(&self.status).resolved.get(&id) {
                Some(lid) => Outcome::Appended { lid: *lid },
                None => Outcome::Waiting { id },
            };
            let _ = reply.send(Ok(outcome));
        }
        self.publish_waiting();
    }
}

impl Sequencer {
    /// Hands ready records, in order and with their TOIds, to the maintainer, and counts
    /// them as present from now on (the maintainer appends them in this order, or stops
    /// the whole service).
    async fn release(&mut self, ready: Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        let mut released = Vec::with_capacity(ready.len());
        lock_write(&self.status)
            .in_flight
            .extend(ready.iter().filter_map(|r| r.queued_as));
        for r in ready {
            let (origin_dc, toid) = match r.record.origin {
                Some(o) if o.dc != self.config.dc_id => (o.dc, o.toid),
                _ => (self.config.dc_id, self.next_toid),
            };
            self.admit(&r.record.tags, r.record.seed, origin_dc, toid);
            released.push(Released {
                ready: r,
                origin_dc,
                toid,
            });
        }
        let Some(maintainer) = &self.maintainer else {
            return;
        };
        if let Err(mpsc::error::SendError(lost)) = maintainer.send(released).await {
            self.stopped.store(true, Ordering::Release);
            for r in lost {
                if let Some(reply) = r.ready.reply {
                    let _ = reply.send(Err(BrokerError::ShuttingDown));
                }
            }
        }
    }

    /// Rejects records that waited longer than `max_wait`, durably, with a reason.
    async fn expire(&mut self) {
        let limit = self.config.max_wait.as_millis() as i64;
        let now = now_ms();
        let expired: Vec<u64> = self
            .waiting
            .iter()
            // Propagated records were accepted at their origin: they wait for their
            // predecessors as long as it takes, never rejected here.
            .filter(|(_, w)| w.record.origin.is_none() && now - w.accepted_at_ms >= limit)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut verdicts = Vec::with_capacity(expired.len());
        for id in &expired {
            if let Some(w) = self.waiting.get(id) {
                let reason = format!(
                    "dependencies {:?} of seed {} did not arrive within {} s",
                    self.missing(&w.record),
                    w.record.seed,
                    self.config.max_wait.as_secs_f64()
                );
                verdicts.push((*id, reason));
            }
        }
        let records = verdicts
            .iter()
            .map(|(id, reason)| {
                queue_record(&QueueEntry::Reject {
                    id: *id,
                    reason: reason.clone(),
                })
            })
            .collect();
        if let Err(e) = self.queue.append(Entry::Records(records)).await {
            tracing::error!(error = %e, "cannot record rejections; will retry");
            return;
        }
        for (id, reason) in verdicts {
            if let Some(w) = self.waiting.remove(&id) {
                self.remember_rejected(id, w, reason);
            }
        }
        self.publish_waiting();
    }
}

/// A ready record with its place in its origin's order, on its way to the maintainer.
struct Released {
    ready: Ready,
    origin_dc: u32,
    toid: u64,
}

/// What later stages tell the filter about a client id: its outcome, or `None` when
/// nothing happened and a retry may go through.
struct IdOutcome {
    id: String,
    outcome: Option<Outcome>,
}

/// A record's client id, for records submitted here (propagated ones are deduplicated
/// by origin and TOId instead).
fn local_id(r: &Submission) -> Option<String> {
    r.id.clone().filter(|_| r.origin.is_none())
}

/// The filter stage: answers repeated client ids with the first submission's outcome.
async fn filter(
    mut ids: HashMap<String, Outcome>,
    mut input: mpsc::Receiver<Vec<Command>>,
    mut outcomes: mpsc::UnboundedReceiver<IdOutcome>,
    sequencer: mpsc::Sender<Vec<Command>>,
) {
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            // Outcomes first: a client repeating an id after its answer finds it.
            biased;
            Some(o) = outcomes.recv() => {
                in_flight.remove(&o.id);
                if let Some(outcome) = o.outcome {
                    ids.insert(o.id, outcome);
                }
            }
            batch = input.recv() => {
                let Some(batch) = batch else { break };
                let mut pass = Vec::with_capacity(batch.len());
                for Command::Submit { record, reply, watch } in batch {
                    if let Some(id) = local_id(&record) {
                        if let Some(outcome) = ids.get(&id) {
                            let _ = reply.send(Ok(outcome.clone()));
                            continue;
                        }
                        if !in_flight.insert(id) {
                            // The client retried before hearing back; its first copy
                            // will be answered.
                            let _ = reply.send(Err(BrokerError::Busy(
                                "a submission with this id is in flight; retry".into(),
                            )));
                            continue;
                        }
                    }
                    pass.push(Command::Submit { record, reply, watch });
                }
                if !pass.is_empty() && sequencer.send(pass).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn stopped_error() -> BrokerError {
    BrokerError::Storage(
        "the Chariots log stopped after a failed append; restart the node to recover".into(),
    )
}

/// The batcher stage: everything queued goes on as one batch.
async fn batcher(mut submissions: mpsc::Receiver<Command>, sequencer: mpsc::Sender<Vec<Command>>) {
    while let Some(first) = submissions.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match submissions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if sequencer.send(batch).await.is_err() {
            return;
        }
    }
}

fn index_record(index: &mut Index, lid: u64, tags: &BTreeMap<String, String>) {
    for (k, v) in tags {
        index.by_hash.entry(tag_hash(k, v)).or_default().push(lid);
    }
}

/// Appended records (LId and tags) for the indexer, and how it says it is done.
type IndexJob = (Vec<(u64, BTreeMap<String, String>)>, oneshot::Sender<()>);

/// The indexer stage: makes appended records findable by tag, then says so.
async fn indexer(index: Arc<RwLock<Index>>, mut appended: mpsc::Receiver<IndexJob>) {
    while let Some((records, done)) = appended.recv().await {
        let mut index = lock_write(&index);
        for (lid, tags) in &records {
            index_record(&mut index, *lid, tags);
        }
        drop(index);
        let _ = done.send(());
    }
}

/// The maintainer stage.
struct Maintainer {
    broker: Arc<Broker>,
    log: String,
    status: Arc<RwLock<StatusView>>,
    indexer: mpsc::Sender<IndexJob>,
    feedback: mpsc::UnboundedSender<IdOutcome>,
    stopped: Arc<AtomicBool>,
    toid_counter: Arc<AtomicU64>,
    appended: Arc<Notify>,
}

impl Maintainer {
    async fn run(self, mut released: mpsc::Receiver<Vec<Released>>) {
        // Chunks stay well inside one publish's batch limit, whatever the tag sizes.
        let budget = self.broker.config().log.max_batch_bytes / 2;
        while let Some(mut batch) = released.recv().await {
            // Whatever was released while the last append was syncing goes together:
            // one fsync for all of it (group commit across sequencer rounds).
            while let Ok(more) = released.try_recv() {
                batch.extend(more);
            }
            let mut batch = batch.into_iter().peekable();
            while batch.peek().is_some() {
                let mut chunk: Vec<Released> = Vec::new();
                let mut bytes = 0usize;
                while let Some(next) = batch.peek() {
                    let size = approx_size(&next.ready.record);
                    if !chunk.is_empty() && (chunk.len() >= 1000 || bytes + size > budget) {
                        break;
                    }
                    bytes += size;
                    if let Some(r) = batch.next() {
                        chunk.push(r);
                    }
                }
                if self.stopped.load(Ordering::Acquire) {
                    fail(chunk.into_iter().chain(batch.by_ref()));
                    break;
                }
                if let Err(e) = self.append(chunk).await {
                    // Everything released after the failed chunk assumed it landed.
                    tracing::error!(error = %e, "appending to the shared log failed; Chariots stops");
                    self.stopped.store(true, Ordering::Release);
                    fail(batch.by_ref());
                }
            }
        }
    }

    async fn append(&self, chunk: Vec<Released>) -> Result<()> {
        let now = now_ms();
        let records: Vec<NewRecord> = chunk
            .iter()
            .map(|r| {
                let meta = RecordMeta {
                    seed: r.ready.record.seed,
                    prehash: r.ready.record.prehash.clone(),
                    origin_dc: r.origin_dc,
                    toid: r.toid,
                    id: r.ready.record.id.clone(),
                    queued_as: r.ready.queued_as,
                };
                NewRecord {
                    key: r.ready.record.id.clone().map(Bytes::from),
                    value: Bytes::from(serde_json::to_vec(&meta).unwrap_or_default()),
                    headers: r
                        .ready
                        .record
                        .tags
                        .iter()
                        .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
                        .collect(),
                    timestamp: now,
                }
            })
            .collect();
        let appended = match self.broker.ensure_internal_log(&self.log, 1).await {
            Ok(()) => self.broker.publish(&self.log, 0, records).await,
            Err(e) => Err(e),
        };
        let a = match appended {
            Ok(a) => a,
            Err(e) => {
                fail_with(chunk, &e);
                return Err(e);
            }
        };
        // Findable by tag before anyone hears that it is appended.
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (a.base_offset + i as u64, r.ready.record.tags.clone()))
            .collect();
        let (done, indexed) = oneshot::channel();
        if self.indexer.send((entries, done)).await.is_ok() {
            let _ = indexed.await;
        }
        // Every fact about the chunk is published before anyone is answered, so a client
        // that hears "appended" and asks again (by queue id, by client id) finds it.
        let mut ids = Vec::new();
        let mut max_local_toid = None;
        {
            let mut status = lock_write(&self.status);
            for (i, r) in chunk.iter().enumerate() {
                let lid = a.base_offset + i as u64;
                if let Some(q) = r.ready.queued_as {
                    status.resolved.insert(q, lid);
                    status.in_flight.remove(&q);
                }
                if r.ready.record.origin.is_none() {
                    if let Some(id) = r.ready.record.id.clone() {
                        ids.push((id, lid));
                    }
                    max_local_toid = Some(r.toid);
                }
            }
        }
        // The filter applies outcomes before any new submission.
        for (id, lid) in ids {
            let _ = self.feedback.send(IdOutcome {
                id,
                outcome: Some(Outcome::Appended { lid }),
            });
        }
        if let Some(t) = max_local_toid {
            self.toid_counter.fetch_max(t + 1, Ordering::AcqRel);
        }
        self.appended.notify_waiters();
        for (i, r) in chunk.into_iter().enumerate() {
            let outcome = Outcome::Appended {
                lid: a.base_offset + i as u64,
            };
            if let Some(reply) = r.ready.reply {
                let _ = reply.send(Ok(outcome.clone()));
            }
            for w in r.ready.watchers {
                let _ = w.send(outcome.clone());
            }
        }
        Ok(())
    }
}

fn fail(records: impl Iterator<Item = Released>) {
    for r in records {
        if let Some(reply) = r.ready.reply {
            let _ = reply.send(Err(stopped_error()));
        }
    }
}

fn fail_with(records: Vec<Released>, e: &BrokerError) {
    for r in records {
        if let Some(reply) = r.ready.reply {
            // A full disk keeps its own error (HTTP 507); anything else is a storage error.
            let err = match e {
                BrokerError::NoSpace => BrokerError::NoSpace,
                other => BrokerError::Storage(other.to_string()),
            };
            let _ = reply.send(Err(err));
        }
    }
}

/// About how many bytes a record takes in the shared log (tags, metadata, overhead).
fn approx_size(r: &Submission) -> usize {
    r.tags
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum::<usize>()
        + r.id.as_ref().map_or(0, String::len) * 2
        + 24 * r.prehash.len()
        + 160
}

fn queue_record(entry: &QueueEntry) -> NewRecord {
    NewRecord {
        key: None,
        value: Bytes::from(serde_json::to_vec(entry).unwrap_or_default()),
        headers: Vec::new(),
        timestamp: now_ms(),
    }
}
