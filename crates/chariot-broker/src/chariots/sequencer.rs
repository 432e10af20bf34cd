//! The sequencer: the one task that owns the causal state and decides, record by record,
//! what is appended now and what waits in the durable dependency queue.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chariot_log::Log;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::stages::{local_id, stopped_error, IdOutcome};
use super::waiting::{Need, WaitIndex};
use super::{
    decode_stored, index_record, lock_read, lock_write, ChariotsConfig, ChariotsRecord, Command,
    Index, Origin, Outcome, QueuedRecord, RecordMeta, StatusView, Submission, REJECTED_KEPT,
};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::{now_ms, Entry, NewRecord, PartitionLog};
use chariot_proto::chariots::tag_hash;

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

/// The single task that orders records. It owns every piece of mutable state, so the
/// causal rule is checked and applied without locks or races.
pub(super) struct Sequencer {
    config: ChariotsConfig,
    broker: Arc<Broker>,
    queue: Arc<dyn PartitionLog>,
    index: Arc<RwLock<Index>>,
    status: Arc<RwLock<StatusView>>,
    /// Released records on their way to the maintainer.
    pub(super) maintainer: Option<mpsc::Sender<Vec<Released>>>,
    /// Where outcomes for client ids go once the filter stage runs (during recovery,
    /// into `ids` instead).
    pub(super) filter: Option<mpsc::UnboundedSender<IdOutcome>>,
    /// Set by the maintainer when an append failed: nothing more is accepted.
    pub(super) stopped: Arc<AtomicBool>,
    /// (seed, tag hash) pairs in the shared log: the dependency check.
    present: HashSet<(u64, u64)>,
    /// Per remote origin: the TOId it must append next (everything below is in the log).
    expected: HashMap<u32, u64>,
    /// Propagated records waiting in the queue, for deduplication.
    queued_remote: HashSet<Origin>,
    /// Filter: client id → outcome of its first submission.
    pub(super) ids: HashMap<String, Outcome>,
    /// Dependency queue, in arrival order (ids are increasing).
    waiting: BTreeMap<u64, Waiting>,
    /// The queue's records by what they still need.
    needs: WaitIndex,
    /// Ids of waiting records submitted here (they expire), oldest first.
    local_order: BTreeSet<u64>,
    pub(super) next_toid: u64,
}

/// What a flush has admitted but not yet appended.
#[derive(Default)]
struct Tentative {
    present: HashSet<(u64, u64)>,
    expected: HashMap<u32, u64>,
    /// Facts admitted since the queue's index last heard of them.
    arrived: Vec<Need>,
}

impl Tentative {
    fn admit(&mut self, r: &Submission) {
        for h in r.tag_hashes() {
            self.present.insert((r.seed, h));
            self.arrived.push(Need::Tag {
                seed: r.seed,
                hash: h,
            });
        }
        if let Some(o) = r.origin {
            self.expected.insert(o.dc, o.toid + 1);
            self.arrived.push(Need::Toid {
                dc: o.dc,
                toid: o.toid + 1,
            });
        }
    }
}

/// A record about to be appended.
pub(super) struct Ready {
    pub(super) record: Submission,
    pub(super) queued_as: Option<u64>,
    pub(super) reply: Option<oneshot::Sender<Result<Outcome>>>,
    pub(super) watchers: Vec<oneshot::Sender<Outcome>>,
}

impl Sequencer {
    pub(super) fn new(
        config: ChariotsConfig,
        broker: Arc<Broker>,
        queue: Arc<dyn PartitionLog>,
        index: Arc<RwLock<Index>>,
        status: Arc<RwLock<StatusView>>,
    ) -> Self {
        Self {
            config,
            broker,
            queue,
            index,
            status,
            present: HashSet::new(),
            ids: HashMap::new(),
            waiting: BTreeMap::new(),
            needs: WaitIndex::default(),
            local_order: BTreeSet::new(),
            next_toid: 0,
            expected: HashMap::new(),
            queued_remote: HashSet::new(),
            maintainer: None,
            filter: None,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    fn expected_toid(&self, dc: u32, t: &Tentative) -> u64 {
        t.expected
            .get(&dc)
            .or_else(|| self.expected.get(&dc))
            .copied()
            .unwrap_or(0)
    }

    /// The causal rule: every dependency of the same seed is present and, for a
    /// propagated record, its origin's previous TOId is in the log ([`Self::needs`] is
    /// its one definition; an empty list allocates nothing).
    fn satisfied(&self, r: &Submission, t: &Tentative) -> bool {
        self.needs(r, t).is_empty()
    }

    /// What `r` still needs before the causal rule lets it in (empty: it may go now).
    fn needs(&self, r: &Submission, t: &Tentative) -> Vec<Need> {
        let mut needs: Vec<Need> = r
            .prehash
            .iter()
            .filter(|h| {
                !self.present.contains(&(r.seed, **h)) && !t.present.contains(&(r.seed, **h))
            })
            .map(|h| Need::Tag {
                seed: r.seed,
                hash: *h,
            })
            .collect();
        if let Some(o) = r.origin.filter(|o| o.dc != self.config.dc_id) {
            if o.toid != self.expected_toid(o.dc, t) {
                needs.push(Need::Toid {
                    dc: o.dc,
                    toid: o.toid,
                });
            }
        }
        needs
    }

    /// Puts a durably queued record in the queue and its index.
    fn file(&mut self, id: u64, w: Waiting, t: &Tentative) {
        self.needs.insert(id, self.needs(&w.record, t));
        match w.record.origin {
            Some(o) => {
                self.queued_remote.insert(o);
            }
            None => {
                self.local_order.insert(id);
            }
        }
        self.waiting.insert(id, w);
    }

    /// Takes record `id` out of the queue and its index.
    fn unfile(&mut self, id: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&id)?;
        self.needs.remove(id);
        self.local_order.remove(&id);
        if let Some(o) = w.record.origin {
            self.queued_remote.remove(&o);
        }
        Some(w)
    }

    fn missing(&self, r: &Submission) -> Vec<u64> {
        r.prehash
            .iter()
            .copied()
            .filter(|h| !self.present.contains(&(r.seed, *h)))
            .collect()
    }

    /// Recovery, first half (blocking: it reads both logs whole): rebuilds index,
    /// filter, TOId counter and queue from the shared log and the queue log.
    pub(super) fn rebuild(&mut self, queue_log: &Log) -> Result<()> {
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
        let mut recovered = BTreeMap::new();
        // Entries `repair` marked as lost are gone (skipped): a lost enqueue forgets a
        // waiting record, a lost rejection lets it wait (and expire) again.
        chariot_log::scan::replay(queue_log, |rec| {
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
                        recovered.insert(
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
                    if let Some(w) = recovered.remove(&id) {
                        rejected.push((id, w, reason));
                    }
                }
            }
            Ok::<_, BrokerError>(())
        })?;
        for (id, w, reason) in rejected {
            self.remember_rejected(id, w, reason);
        }
        let nothing = Tentative::default();
        for (id, w) in recovered {
            self.file(id, w, &nothing);
        }
        self.publish();
        Ok(())
    }

    /// Recovery, second half (after [`Sequencer::rebuild`], on the runtime): appends the
    /// records whose dependencies landed just before a crash, and expires those that
    /// waited too long while the node was down.
    pub(super) async fn catch_up(&mut self) {
        self.flush(Vec::new()).await;
        self.expire().await;
        tracing::info!(
            waiting = self.waiting.len(),
            next_toid = self.next_toid,
            "chariots recovered"
        );
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

    /// Shows readers what changed in the queue since the last call.
    fn publish(&mut self) {
        let touched = self.needs.take_touched();
        if touched.is_empty() {
            return;
        }
        let mut s = lock_write(&self.status);
        for id in touched {
            let Some(w) = self.waiting.get(&id) else {
                s.waiting.remove(&id);
                continue;
            };
            let missing = self.needs.missing_tags(id);
            match s.waiting.get_mut(&id) {
                Some(q) => q.missing = missing,
                None => {
                    s.waiting.insert(
                        id,
                        QueuedRecord {
                            id,
                            status: "waiting",
                            record: w.record.clone(),
                            accepted_at_ms: w.accepted_at_ms,
                            missing,
                            reason: None,
                        },
                    );
                }
            }
        }
    }

    pub(super) async fn run(mut self, mut batches: mpsc::Receiver<Vec<Command>>) {
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
                // Each origin has its own allowance: records far ahead of the one expected
                // next wait at their sender, not here (it sends in TOId order, so the one
                // expected next always fits and nothing deadlocks).
                let expected = self.expected_toid(o.dc, &tentative);
                let window = self.config.max_waiting_per_origin as u64;
                if o.toid.saturating_sub(expected) >= window {
                    let _ = reply.send(Err(BrokerError::Busy(format!(
                        "record {} of datacenter {} is too far ahead: {expected} is expected \
                         next and at most {window} records of one origin may wait; resend later",
                        o.toid, o.dc
                    ))));
                    continue;
                }
                // Propagation is at-least-once: a record seen before is acknowledged again.
                let held = o.toid < expected
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
            // Records submitted here share `max_waiting`; propagated ones were bounded per
            // origin above.
            let mut room = self
                .config
                .max_waiting
                .saturating_sub(self.local_order.len());
            let mut accepted = Vec::new();
            for Command::Submit {
                record,
                reply,
                watch,
            } in to_queue
            {
                if record.origin.is_some() {
                    accepted.push((record, reply, watch));
                } else if room > 0 {
                    room -= 1;
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
                            if let Some(cid) = local_id(&record) {
                                self.id_outcome(&cid, Some(Outcome::Waiting { id }));
                            }
                            // Filed against everything admitted so far, this flush's
                            // records included: what it still needs frees it later.
                            let w = Waiting {
                                record,
                                accepted_at_ms: now,
                                watchers: watch.into_iter().collect(),
                            };
                            self.file(id, w, &tentative);
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
        self.cascade(&mut tentative, &mut ready);
        self.release(ready).await;
        for (id, reply) in new_waiting {
            let outcome = match lock_read(&self.status).resolved.get(&id) {
                Some(lid) => Outcome::Appended { lid: *lid },
                None => Outcome::Waiting { id },
            };
            let _ = reply.send(Ok(outcome));
        }
        self.publish();
    }

    /// Releases waiting records (oldest first, round after round) whose last missing fact
    /// this flush admitted; only the records filed under those facts are looked at.
    fn cascade(&mut self, tentative: &mut Tentative, ready: &mut Vec<Ready>) {
        loop {
            for need in std::mem::take(&mut tentative.arrived) {
                self.needs.arrived(need);
            }
            let round = self.needs.take_ready();
            if round.is_empty() {
                return;
            }
            for id in round {
                let Some(w) = self.waiting.get(&id) else {
                    self.needs.remove(id);
                    continue;
                };
                let still = self.needs(&w.record, tentative);
                if !still.is_empty() {
                    self.needs.insert(id, still);
                    continue;
                }
                if let Some(w) = self.unfile(id) {
                    tentative.admit(&w.record);
                    ready.push(Ready {
                        record: w.record,
                        queued_as: Some(id),
                        reply: None,
                        watchers: w.watchers,
                    });
                }
            }
        }
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
        // Only records submitted here expire (propagated records were accepted at their
        // origin: they wait for their predecessors as long as it takes); the oldest go
        // first, so the scan stops at the first that may still wait.
        let expired: Vec<u64> = self
            .local_order
            .iter()
            .take_while(|id| {
                self.waiting
                    .get(id)
                    .is_some_and(|w| now - w.accepted_at_ms >= limit)
            })
            .copied()
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
            if let Some(w) = self.unfile(id) {
                self.remember_rejected(id, w, reason);
            }
        }
        self.publish();
    }
}

/// A ready record with its place in its origin's order, on its way to the maintainer.
pub(super) struct Released {
    pub(super) ready: Ready,
    pub(super) origin_dc: u32,
    pub(super) toid: u64,
}

fn queue_record(entry: &QueueEntry) -> NewRecord {
    NewRecord {
        key: None,
        value: Bytes::from(serde_json::to_vec(entry).unwrap_or_default()),
        headers: Vec::new(),
        timestamp: now_ms(),
    }
}
