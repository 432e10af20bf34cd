//! A partition whose copies live in a Raft group: the broker's [`PartitionLog`] over
//! openraft's `client_write`. A publish is answered once its entry is committed (on a
//! quorum of the replicas, durably) and applied to the leader's partition log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chariot_broker::error::BrokerError;
use chariot_broker::partition::{AppendFuture, Appended, Entry, PartitionLog};
use openraft::error::{ClientWriteError, RaftError};

use crate::command::{Command, Response};
use crate::network::PartitionRaft;
use crate::TypeConfig;

/// How long a publish may wait for its commit before it is answered as indeterminate.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

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

    async fn append_entry(&self, entry: Entry) -> Result<Appended, BrokerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        if let Err(f) = self.raft.as_leader() {
            return Err(BrokerError::NotLeader {
                leader: f.leader_id,
                addr: f.leader_node.map(|n| n.addr),
            });
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
                Response::Appended { base_offset, .. } => Ok(Appended { base_offset, count }),
                Response::Refused(reason) => Err(BrokerError::InvalidBatch(reason)),
                other => Err(BrokerError::Storage(format!(
                    "an append was answered {other:?}"
                ))),
            },
            Err(e) => Err(write_error(e)),
        }
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> BrokerError {
    match e {
        // Refused before its entry was appended: nothing was written.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => BrokerError::NotLeader {
            leader: f.leader_id,
            addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
            BrokerError::Indeterminate(format!("leadership moved to {:?}", f.leader_id))
        }
        RaftError::APIError(other) => BrokerError::Storage(other.to_string()),
        RaftError::Fatal(f) => BrokerError::Indeterminate(format!("the group stopped: {f}")),
    }
}

impl PartitionLog for RaftPartition {
    fn append(&self, entry: Entry) -> AppendFuture<'_> {
        Box::pin(self.append_entry(entry))
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}
