//! The stages around the sequencer: batcher, filter, maintainer and indexer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use super::sequencer::Released;
use super::{
    index_record, lock_write, Command, Index, Outcome, RecordMeta, StatusView, Submission,
};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::{now_ms, NewRecord};

/// What later stages tell the filter about a client id: its outcome, or `None` when
/// nothing happened and a retry may go through.
pub(super) struct IdOutcome {
    pub(super) id: String,
    pub(super) outcome: Option<Outcome>,
}

/// A record's client id, for records submitted here (propagated ones are deduplicated
/// by origin and TOId instead).
pub(super) fn local_id(r: &Submission) -> Option<String> {
    r.id.clone().filter(|_| r.origin.is_none())
}

/// The filter stage: answers repeated client ids with the first submission's outcome.
pub(super) async fn filter(
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

pub(super) fn stopped_error() -> BrokerError {
    BrokerError::Storage(
        "the Chariots log stopped after a failed append; restart the node to recover".into(),
    )
}

/// The batcher stage: everything queued goes on as one batch.
pub(super) async fn batcher(
    mut submissions: mpsc::Receiver<Command>,
    sequencer: mpsc::Sender<Vec<Command>>,
) {
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

/// Appended records (LId and tags) for the indexer, and how it says it is done.
pub(super) type IndexJob = (Vec<(u64, BTreeMap<String, String>)>, oneshot::Sender<()>);

/// The indexer stage: makes appended records findable by tag, then says so.
pub(super) async fn indexer(index: Arc<RwLock<Index>>, mut appended: mpsc::Receiver<IndexJob>) {
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
pub(super) struct Maintainer {
    pub(super) broker: Arc<Broker>,
    pub(super) log: String,
    pub(super) status: Arc<RwLock<StatusView>>,
    pub(super) indexer: mpsc::Sender<IndexJob>,
    pub(super) feedback: mpsc::UnboundedSender<IdOutcome>,
    pub(super) stopped: Arc<AtomicBool>,
    pub(super) toid_counter: Arc<AtomicU64>,
    pub(super) appended: Arc<Notify>,
}

impl Maintainer {
    pub(super) async fn run(self, mut released: mpsc::Receiver<Vec<Released>>) {
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
            Ok(()) => self.broker.publish_internal(&self.log, 0, records).await,
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
