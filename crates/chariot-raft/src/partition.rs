//! A partition whose copies live in a Raft group: the broker's [`PartitionLog`] over
//! openraft's `client_write`. A publish is answered once its entry is committed (on a
//! quorum of the replicas, durably) and applied to the leader's partition log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chariot_broker::error::BrokerError;
use chariot_broker::partition::{AppendFuture, Appended, Entry, PartitionLog};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};

use crate::command::{Command, Response};
use crate::network::PartitionRaft;
use crate::TypeConfig;

/// How long a publish may wait for its commit before it is answered as indeterminate.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many replicas must have a publish before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// A quorum of the replicas, durably (the default).
    #[default]
    Quorum,
    /// Every current replica (voters and learners), durably, within the wait; else
    /// [`BrokerError::NotAllReplicas`] (the write is stored on a quorum all the same).
    All,
}

/// One replica's handle on a replicated partition. Appends work on the group's leader;
/// elsewhere they are refused with [`BrokerError::NotLeader`] naming the leader, before
/// anything is proposed (the caller forwards them there).
pub struct RaftPartition {
    raft: PartitionRaft,
    stopped: AtomicBool,
}

impl RaftPartition {
    /// The partition of group `raft`.
    pub fn new(raft: PartitionRaft) -> Self {
        Self {
            raft,
            stopped: AtomicBool::new(false),
        }
    }

    /// The group's Raft handle.
    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    /// Appends `entry`, answered once `acks` replicas have it (see [`Acks`]); for
    /// [`Acks::All`] the wait for the others is at most `all_wait`.
    pub async fn append_acks(
        &self,
        entry: Entry,
        acks: Acks,
        all_wait: Duration,
    ) -> Result<Appended, BrokerError> {
        let (appended, index) = self.append_entry(entry).await?;
        if acks == Acks::All {
            self.wait_all(index, all_wait)
                .await
                .map_err(|behind| BrokerError::NotAllReplicas {
                    base_offset: appended.base_offset,
                    behind,
                })?;
        }
        Ok(appended)
    }

    /// Waits until every replica but this leader has confirmed log index `index` (a
    /// follower confirms an entry once it is durable in its Raft log); the ids still
    /// behind when `wait` runs out.
    async fn wait_all(&self, index: u64, wait: Duration) -> Result<(), Vec<u64>> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let behind = {
                let m = rx.borrow_watched();
                let me = m.id;
                let membership = m.membership_config.membership();
                let replicas: Vec<u64> = membership
                    .voter_ids()
                    .chain(membership.learner_ids())
                    .filter(|&id| id != me)
                    .collect();
                match &m.replication {
                    // No longer the leader: nothing here can vouch for the others.
                    None => replicas,
                    Some(progress) => replicas
                        .into_iter()
                        .filter(|id| {
                            progress
                                .get(id)
                                .and_then(|m| m.as_ref())
                                .is_none_or(|l| l.index < index)
                        })
                        .collect(),
                }
            };
            if behind.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(behind),
            }
        }
    }

    async fn append_entry(&self, entry: Entry) -> Result<(Appended, u64), BrokerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        if let Err(f) = self.raft.as_leader() {
            return Err(not_leader(f));
        }
        let batch = entry.into_batch();
        let count = batch.record_count();
        let write = self.raft.client_write(Command::Append(batch.into_vec()));
        let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => {
                return Err(BrokerError::Indeterminate(format!(
                    "not committed within {COMMIT_TIMEOUT:?}"
                )))
            }
        };
        match outcome {
            Ok(r) => match r.data {
                Response::Appended { base_offset, .. } => {
                    Ok((Appended { base_offset, count }, r.log_id.index))
                }
                Response::Refused(reason) => Err(BrokerError::InvalidBatch(reason)),
                other => Err(BrokerError::Storage(format!(
                    "an append was answered {other:?}"
                ))),
            },
            Err(e) => Err(write_error(e)),
        }
    }
}

/// Where to send a write this replica cannot take.
fn not_leader(f: ForwardToLeader<TypeConfig>) -> BrokerError {
    BrokerError::NotLeader {
        leader: f.leader_id,
        addr: f.leader_node.map(|n| n.addr),
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> BrokerError {
    match e {
        // Refused before its entry was appended: nothing was written.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
            BrokerError::Indeterminate(format!("leadership moved to {:?}", f.leader_id))
        }
        RaftError::APIError(other) => BrokerError::Storage(other.to_string()),
        RaftError::Fatal(f) => BrokerError::Indeterminate(format!("the group stopped: {f}")),
    }
}

impl PartitionLog for RaftPartition {
    fn append(&self, entry: Entry) -> AppendFuture<'_> {
        Box::pin(async move { self.append_entry(entry).await.map(|(a, _)| a) })
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}
