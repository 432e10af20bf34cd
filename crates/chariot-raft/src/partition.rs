//! A partition whose copies live in a Raft group: the broker's [`PartitionLog`] over
//! openraft's `client_write`. A publish is answered once its entry is committed (on a
//! quorum of the replicas, durably) and applied to the leader's partition log; a
//! replica that does not lead forwards it one hop to the leader ([`propose`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chariot_broker::error::BrokerError;
pub use chariot_broker::partition::Acks;
use chariot_broker::partition::{
    AppendFuture, Appended, Entry, GroupFuture, GroupOffsets, PartitionLog,
};
use chariot_log::Log;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::network::peers::ForwardError;
use crate::network::{GroupId, PartitionRaft, Peers, Rest};
use crate::state_machine::PartitionStateMachine;
use crate::TypeConfig;

/// How long an [`Acks::All`] publish through the broker waits for the replicas beyond
/// the quorum before it is answered [`BrokerError::NotAllReplicas`].
pub const ALL_WAIT: Duration = Duration::from_secs(5);

/// How long a publish may wait for its commit before it is answered as indeterminate.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client write forwarded to a group's leader (inter-node kind `Propose`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    /// What to propose.
    pub command: Command,
    /// How many replicas must have it before the answer.
    pub acks: Acks,
    /// For [`Acks::All`]: how long to wait for the replicas besides the quorum.
    pub all_wait_ms: u64,
}

/// A committed and applied proposal: what applying it answered, and its Raft index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposed {
    /// The state machine's answer.
    pub response: Response,
    /// The entry's index in the group's Raft log.
    pub index: u64,
}

/// Why a forwarded proposal failed: the [`BrokerError`]s a proposal can end in, in a
/// form that crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refusal {
    /// Not proposed: the node does not lead the group.
    NotLeader {
        /// The leader it knows.
        leader: Option<u64>,
        /// That leader's inter-node address.
        addr: Option<String>,
    },
    /// Proposed, outcome unknown.
    Indeterminate(String),
    /// Committed on a quorum, not confirmed by these replicas in time.
    NotAllReplicas {
        /// Offset of the batch's first record.
        base_offset: u64,
        /// The replicas behind.
        behind: Vec<u64>,
    },
    /// The state machine refused the command.
    Invalid(String),
    /// The node is stopping.
    ShuttingDown,
    /// Anything else.
    Failed(String),
}

impl From<&BrokerError> for Refusal {
    fn from(e: &BrokerError) -> Self {
        match e {
            BrokerError::NotLeader { leader, addr } => Refusal::NotLeader {
                leader: *leader,
                addr: addr.clone(),
            },
            BrokerError::Indeterminate(why) => Refusal::Indeterminate(why.clone()),
            BrokerError::NotAllReplicas {
                base_offset,
                behind,
            } => Refusal::NotAllReplicas {
                base_offset: *base_offset,
                behind: behind.clone(),
            },
            BrokerError::InvalidBatch(why) => Refusal::Invalid(why.clone()),
            BrokerError::ShuttingDown => Refusal::ShuttingDown,
            other => Refusal::Failed(other.to_string()),
        }
    }
}

impl From<Refusal> for BrokerError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotLeader { leader, addr } => BrokerError::NotLeader { leader, addr },
            Refusal::Indeterminate(why) => BrokerError::Indeterminate(why),
            Refusal::NotAllReplicas {
                base_offset,
                behind,
            } => BrokerError::NotAllReplicas {
                base_offset,
                behind,
            },
            Refusal::Invalid(why) => BrokerError::InvalidBatch(why),
            Refusal::ShuttingDown => BrokerError::ShuttingDown,
            Refusal::Failed(why) => BrokerError::Storage(why),
        }
    }
}

/// How long a write waits for its group to have a leader it can reach (an election in
/// progress) before it is refused with [`BrokerError::NotLeader`].
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Proposes `command` to group `group` from any of its replicas: on the leader
/// directly, elsewhere forwarded one hop to the leader over `peers`. A refusal that
/// proves nothing was proposed (no leader yet, or leadership moved before the proposal)
/// is retried until [`LEADER_WAIT`] runs out; a write whose forwarding failed after it
/// was sent is indeterminate, never retried.
pub async fn propose(
    rest: &Arc<Rest>,
    peers: &Peers,
    group: GroupId,
    command: Command,
    acks: Acks,
    all_wait: Duration,
) -> Result<Proposed, BrokerError> {
    let raft = rest.raft();
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let refused = match raft.as_leader() {
            Ok(_) => propose_local(rest, command.clone(), acks, all_wait).await,
            Err(f) => match (f.leader_id, f.leader_node) {
                (Some(leader), Some(node)) => {
                    peers.set_addr(leader, &node.addr);
                    let proposal = Proposal {
                        command: command.clone(),
                        acks,
                        all_wait_ms: all_wait.as_millis() as u64,
                    };
                    // The leader's own budget plus slack, so that its definite answer
                    // is not taken for a lost one.
                    let wait = COMMIT_TIMEOUT + all_wait + Duration::from_secs(5);
                    match peers.propose(leader, group, &proposal, wait).await {
                        Ok(answer) => answer.map_err(BrokerError::from),
                        // Never reached the leader: nothing proposed, so it may be retried.
                        Err(ForwardError::NotSent(_)) => Err(BrokerError::NotLeader {
                            leader: Some(leader),
                            addr: Some(node.addr),
                        }),
                        Err(ForwardError::Lost(e)) => Err(BrokerError::Indeterminate(format!(
                            "forwarded to the leader, node {leader}: {e}"
                        ))),
                    }
                }
                (leader, node) => Err(BrokerError::NotLeader {
                    leader,
                    addr: node.map(|n| n.addr),
                }),
            },
        };
        match refused {
            Err(BrokerError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Proposes `command` to group `group` from a node that holds no replica of it: sent
/// to the nodes `replicas` (its replicas and a pending move's target; their addresses
/// known to `peers`) in turn,
/// following the leader a replica names, until one leads it, for up to
/// [`LEADER_WAIT`]. As with [`propose`], a proposal whose answer was lost is
/// indeterminate, never sent again.
pub async fn propose_remote(
    peers: &Peers,
    group: GroupId,
    replicas: &[u64],
    command: Command,
    acks: Acks,
) -> Result<Proposed, BrokerError> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let proposal = Proposal {
        command,
        acks,
        all_wait_ms: ALL_WAIT.as_millis() as u64,
    };
    let wait = COMMIT_TIMEOUT + ALL_WAIT + Duration::from_secs(5);
    let mut hint: Option<u64> = None;
    let mut turn = 0usize;
    loop {
        let target = match hint.take() {
            Some(l) => l,
            None => {
                let Some(&r) = replicas.get(turn % replicas.len().max(1)) else {
                    return Err(BrokerError::NotLeader {
                        leader: None,
                        addr: None,
                    });
                };
                turn += 1;
                r
            }
        };
        let refused = match peers.propose(target, group, &proposal, wait).await {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(Refusal::NotLeader { leader, addr })) => {
                if let (Some(l), Some(a)) = (leader, &addr) {
                    peers.set_addr(l, a);
                    hint = Some(l).filter(|l| *l != target);
                }
                BrokerError::NotLeader { leader, addr }
            }
            Ok(Err(other)) => return Err(other.into()),
            Err(ForwardError::NotSent(e)) => {
                tracing::debug!(group, node = target, error = %e, "replica unreachable");
                BrokerError::NotLeader {
                    leader: None,
                    addr: None,
                }
            }
            // A seal applied twice is one seal: it may be sent again.
            Err(ForwardError::Lost(e)) if matches!(proposal.command, Command::Seal) => {
                tracing::debug!(group, node = target, error = %e, "seal unanswered; again");
                BrokerError::NotLeader {
                    leader: None,
                    addr: None,
                }
            }
            Err(ForwardError::Lost(e)) => {
                return Err(BrokerError::Indeterminate(format!(
                    "sent to node {target} for group {group}: {e}"
                )))
            }
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(refused);
        }
        tokio::time::sleep(Duration::from_millis(if hint.is_some() { 5 } else { 50 })).await;
    }
}

/// Proposes `command` on this node, which must lead the group (else
/// [`BrokerError::NotLeader`], before anything is proposed); answered once committed
/// and applied, and for [`Acks::All`] once every replica has it (see [`Acks`]).
pub async fn propose_local(
    rest: &Arc<Rest>,
    command: Command,
    acks: Acks,
    all_wait: Duration,
) -> Result<Proposed, BrokerError> {
    let raft = rest.raft();
    if let Err(f) = raft.as_leader() {
        return Err(not_leader(f));
    }
    // Awake while it writes (and after: it rests again only once idle).
    let _busy = rest.busy();
    let write = raft.client_write(command);
    let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => {
            return Err(BrokerError::Indeterminate(format!(
                "not committed within {COMMIT_TIMEOUT:?}"
            )))
        }
    };
    let written = outcome.map_err(write_error)?;
    let proposed = Proposed {
        response: written.data,
        index: written.log_id.index,
    };
    if let Response::Refused(reason) = &proposed.response {
        return Err(BrokerError::InvalidBatch(reason.clone()));
    }
    if acks == Acks::All {
        if let Err(behind) = wait_all(raft, proposed.index, all_wait).await {
            let base_offset = match proposed.response {
                Response::Appended { base_offset, .. } => base_offset,
                _ => 0,
            };
            return Err(BrokerError::NotAllReplicas {
                base_offset,
                behind,
            });
        }
    }
    Ok(proposed)
}

/// Waits until every replica but this leader has confirmed log index `index` (a
/// follower confirms an entry once it is durable in its Raft log); the ids still
/// behind when `wait` runs out.
async fn wait_all(raft: &PartitionRaft, index: u64, wait: Duration) -> Result<(), Vec<u64>> {
    let mut rx = raft.metrics();
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

/// One replica's handle on a replicated partition. Appends work on any replica: on
/// the group's leader they are proposed, elsewhere forwarded to it (see [`propose`]);
/// reads come from this replica's committed records.
pub struct RaftPartition {
    /// The log's name, for the error a sealed partition answers.
    log: String,
    /// The group's Raft on this node, and whether its timers run.
    rest: Arc<Rest>,
    sm: PartitionStateMachine,
    peers: Peers,
    group: GroupId,
    stopped: AtomicBool,
}

impl RaftPartition {
    /// Partition of log `log` in group `group`, whose Raft on this node is `rest`'s
    /// over state machine `sm`; writes are forwarded over `peers`.
    pub fn new(
        log: &str,
        rest: Arc<Rest>,
        sm: PartitionStateMachine,
        peers: Peers,
        group: GroupId,
    ) -> Self {
        Self {
            log: log.to_owned(),
            rest,
            sm,
            peers,
            group,
            stopped: AtomicBool::new(false),
        }
    }

    /// The group's Raft handle.
    pub fn raft(&self) -> &PartitionRaft {
        self.rest.raft()
    }

    /// Appends `entry`, answered once `acks` replicas have it (see [`Acks`]); for
    /// [`Acks::All`] the wait for the others is at most `all_wait`.
    pub async fn append_acks(
        &self,
        entry: Entry,
        acks: Acks,
        all_wait: Duration,
    ) -> Result<Appended, BrokerError> {
        let batch = entry.into_batch();
        let count = batch.record_count();
        let command = Command::Append(batch.into_vec());
        let proposed = self.propose(command, acks, all_wait).await?;
        match proposed.response {
            Response::Appended { base_offset, .. } => Ok(Appended { base_offset, count }),
            other => Err(BrokerError::Storage(format!(
                "an append was answered {other:?}"
            ))),
        }
    }

    /// [`propose`]s `command` to this partition's group, unless the partition is
    /// stopped; a sealed partition (its log deleted after this replica listed it) is
    /// answered as an unknown log.
    async fn propose(
        &self,
        command: Command,
        acks: Acks,
        all_wait: Duration,
    ) -> Result<Proposed, BrokerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        let proposed =
            propose(&self.rest, &self.peers, self.group, command, acks, all_wait).await?;
        if proposed.response == Response::Sealed {
            return Err(BrokerError::UnknownLog(self.log.clone()));
        }
        Ok(proposed)
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
        Box::pin(self.append_acks(entry, Acks::Quorum, Duration::ZERO))
    }

    fn append_acks(&self, entry: Entry, acks: Acks) -> AppendFuture<'_> {
        Box::pin(RaftPartition::append_acks(self, entry, acks, ALL_WAIT))
    }

    fn log(&self) -> Arc<Log> {
        self.sm.log()
    }

    fn groups(&self) -> Option<&dyn GroupOffsets> {
        Some(self)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// How long an ack through a replica that does not lead waits for that replica to
/// apply it, so that a fetch on the same node sees it (read your acks).
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

impl GroupOffsets for RaftPartition {
    fn offset(&self, group: &str) -> u64 {
        self.sm.group_offset(group).unwrap_or(0)
    }

    fn list(&self) -> Vec<(String, u64)> {
        self.sm.group_offsets()
    }

    fn advance<'a>(&'a self, group: &'a str) -> GroupFuture<'a> {
        Box::pin(async move {
            // Rog's ack acknowledges the record a fetch here returned: the one at this
            // replica's view of the group. The entry says so (`max(old, from + 1)`), so a
            // retried ack, or an ack through a replica that had not yet applied an
            // earlier one, never moves the group past a record nobody fetched.
            let from = self.offset(group);
            if from >= self.sm.log().next_offset() {
                return Err(BrokerError::NoData);
            }
            self.ack_command(group, from + 1).await
        })
    }

    fn ack_to<'a>(&'a self, group: &'a str, offset: u64) -> GroupFuture<'a> {
        Box::pin(async move {
            // This replica may not have applied the records the client read elsewhere
            // yet: it waits (bounded) before calling the offset out of range.
            // The log is taken again each time: a snapshot install replaces it.
            if offset > self.sm.log().next_offset() {
                let _ = tokio::time::timeout(APPLY_WAIT, async {
                    while offset > self.sm.log().next_offset() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
            }
            let log = self.sm.log();
            let next = log.next_offset();
            if offset > next {
                return Err(BrokerError::OffsetOutOfRange {
                    requested: offset,
                    earliest: log.earliest_offset(),
                    next,
                });
            }
            self.ack_command(group, offset).await
        })
    }
}

impl RaftPartition {
    /// Proposes `Ack { group, offset }` (applied as `max(old, offset)`) and waits until
    /// it is applied here; the group's offset then.
    async fn ack_command(&self, group: &str, offset: u64) -> Result<u64, BrokerError> {
        {
            let command = Command::Ack {
                group: group.to_owned(),
                offset,
            };
            let proposed = self.propose(command, Acks::Quorum, Duration::ZERO).await?;
            let Response::Acked { offset } = proposed.response else {
                return Err(BrokerError::Storage(format!(
                    "an ack was answered {:?}",
                    proposed.response
                )));
            };
            // Committed; a fetch here should see it, so wait (bounded) until it is
            // applied here too. Past the wait the ack still stands.
            let _ = self
                .raft()
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(proposed.index), "the ack applied here")
                .await;
            Ok(offset)
        }
    }
}
