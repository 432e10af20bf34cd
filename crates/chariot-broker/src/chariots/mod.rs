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
//!   are missing wait in the *dependency queue*, which is durable (a system log,
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
//!   its origin's previous TOId and its dependencies, deduplicated by (origin, TOId). The
//!   remotes and the senders' cursors are records of a system log, `__chariots_senders`
//!   ([`remotes`]).
//!
//! Every record originated here gets the next TOId of this datacenter; every datacenter
//! holds every record, each copy with its own LIds.

pub mod record;
pub mod remotes;
pub mod sender;
mod sequencer;
mod stages;
mod waiting;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::registry::QUEUE_LOG;
pub use record::{fnv1a64, tag_hash, Origin, RecordFormatError, RecordMeta, Submission};
use remotes::SenderState;
use sequencer::Sequencer;

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
    /// Most records submitted here waiting at once; past it new records that would wait
    /// are refused.
    pub max_waiting: usize,
    /// Most records of one remote origin waiting at once: a propagated record at least
    /// this far ahead of the TOId expected next from its origin is refused as busy.
    pub max_waiting_per_origin: usize,
    /// Remote datacenters: id and record-port address.
    pub remotes: Vec<(u32, String)>,
    /// Datacenters whose propagated records are accepted besides the remotes.
    pub accept_from: Vec<u32>,
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
            max_waiting_per_origin: 10_000,
            remotes: Vec::new(),
            accept_from: Vec::new(),
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

fn index_record(index: &mut Index, lid: u64, tags: &BTreeMap<String, String>) {
    for (k, v) in tags {
        index.by_hash.entry(tag_hash(k, v)).or_default().push(lid);
    }
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
    /// Remotes and cursors, durably.
    state: Arc<SenderState>,
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
        broker.reserve_internal(&config.log);
        // Opening (and recovering, compacting) system logs is blocking work.
        let b = Arc::clone(&broker);
        let (queue_entry, state) = tokio::task::spawn_blocking(move || {
            let queue = b.registry().open_system(QUEUE_LOG)?;
            Ok::<_, BrokerError>((queue, SenderState::open(&b)?))
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("start task failed: {e}")))??;
        let queue_partition = queue_entry.partition(0)?;
        let index = Arc::new(RwLock::new(Index::default()));
        let status = Arc::new(RwLock::new(StatusView::default()));
        let toid_counter = Arc::new(AtomicU64::new(0));
        let appended = Arc::new(Notify::new());
        let seq = Sequencer::new(
            config.clone(),
            Arc::clone(&broker),
            Arc::clone(&queue_partition.writer),
            Arc::clone(&index),
            Arc::clone(&status),
        );
        // Recovery reads the whole shared log and the queue: blocking work too.
        let queue_log = Arc::clone(&queue_partition.log());
        let mut seq = tokio::task::spawn_blocking(move || {
            let mut seq = seq;
            seq.rebuild(&queue_log).map(|()| seq)
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("recovery task failed: {e}")))??;
        seq.catch_up().await;
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
        let maintainer = stages::Maintainer {
            broker: Arc::clone(&broker),
            log: config.log.clone(),
            status: Arc::clone(&status),
            indexer: to_indexer,
            feedback,
            stopped: Arc::clone(&seq.stopped),
            toid_counter: Arc::clone(&toid_counter),
            appended: Arc::clone(&appended),
        };
        tokio::spawn(stages::batcher(submissions, to_filter));
        tokio::spawn(stages::filter(
            known_ids,
            filtering,
            feedback_rx,
            to_sequencer,
        ));
        tokio::spawn(seq.run(batches));
        tokio::spawn(maintainer.run(released));
        tokio::spawn(stages::indexer(Arc::clone(&index), indexing));
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
            state: Arc::new(state),
        };
        // Remotes added at run time are remembered; flags and config win for the same id.
        let mut remotes: BTreeMap<u32, String> = chariots.state.remotes();
        remotes.extend(chariots.config.remotes.iter().cloned());
        for (dc, addr) in remotes {
            chariots.add_remote(dc, addr).await?;
        }
        Ok(chariots)
    }

    /// Starts (or redirects) propagation to a remote datacenter, and remembers it.
    pub async fn add_remote(&self, dc: u32, addr: String) -> Result<()> {
        if dc == self.config.dc_id {
            return Err(BrokerError::InvalidName(format!(
                "datacenter {dc} is this node's own id"
            )));
        }
        // Listed before the sender runs, so what it reports is not overwritten.
        lock_write(&self.senders).insert(
            dc,
            sender::SenderStatus {
                dc,
                addr: addr.clone(),
                acked_next_toid: 0,
                connected: false,
                last_error: None,
                last_ack_ms: None,
            },
        );
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
                state: Arc::clone(&self.state),
            }
            .run(),
        );
        let old = self
            .sender_tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dc, task);
        if let Some(old) = old {
            old.abort();
        }
        self.state
            .set_remote(dc, &addr)
            .await
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

    /// Takes a batch propagated from another datacenter: every record durably appended
    /// or durably queued (or already held), or the first reason why not. Only
    /// datacenters this node knows (a remote, or one it was told to accept) may send.
    pub async fn accept_propagated(&self, records: Vec<Submission>) -> Result<usize> {
        let local = self.config.dc_id;
        for o in records.iter().filter_map(|r| r.origin) {
            if o.dc == local {
                // A node pointed at itself, or two datacenters sharing an id: accepting
                // would append our own records again as new ones, forever.
                return Err(BrokerError::InvalidBatch(format!(
                    "this node is datacenter {local}; it does not take its own records back"
                )));
            }
            if !self.config.accept_from.contains(&o.dc)
                && !lock_read(&self.senders).contains_key(&o.dc)
            {
                return Err(BrokerError::UnknownDatacenter(o.dc));
            }
        }
        let n = records.len();
        match self
            .submit_many(records)
            .await
            .into_iter()
            .find_map(Result::err)
        {
            None => Ok(n),
            Some(e) => Err(e),
        }
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

    /// Waiting records (in arrival order), then recently rejected ones, with an id above
    /// `after`, at most `limit`; `status` (`waiting` or `rejected`) keeps one kind.
    pub fn queued_page(
        &self,
        status: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<QueuedRecord> {
        let s = lock_read(&self.status);
        let from = after.map_or(0, |a| a.saturating_add(1));
        // A kind left out is not walked at all (the queue may hold 100,000).
        let waiting = (status != Some("rejected"))
            .then(|| s.waiting.range(from..).map(|(_, r)| r))
            .into_iter()
            .flatten();
        let rejected = (status != Some("waiting"))
            .then(|| s.rejected.iter().filter(|r| r.id >= from))
            .into_iter()
            .flatten();
        waiting.chain(rejected).take(limit).cloned().collect()
    }

    /// How many records wait in the dependency queue.
    pub fn waiting_count(&self) -> usize {
        lock_read(&self.status).waiting.len()
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
