//! Cluster administration: adding and removing nodes, moving replicas, transferring
//! leadership. Requests reach any node (HTTP, or a joining node's first frame) and are
//! executed where they must be: membership changes on the metadata group's leader
//! (the controller), a leadership transfer on the group's leader. A node that is not
//! the one forwards the request there, at most [`MAX_HOPS`] times.
//!
//! What runs without a request, on every node ([`Inner::control`], after each fold):
//! - as the controller: drains removed nodes (plans the moves of their replicas), keeps
//!   3 or 5 voters in the metadata group (promoting learners once caught up, demoting
//!   removed nodes), and forgets removed nodes that no partition references any more;
//! - as a partition group's leader: carries out the group's pending move (adds the new
//!   replicas as learners, waits for them to catch up, changes the voters, then records
//!   the move as done in the metadata).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::impls::BasicNode;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::image::{MetaEvent, Replica, META_GROUP};
use super::Inner;
use crate::network::{GroupId, PartitionRaft};

/// How many times a request may be forwarded (to the controller, then on to a group
/// leader that a non-holding controller names).
pub const MAX_HOPS: u8 = 2;

/// How long a request waits for a leader to be known.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// How long a new replica may take to catch up before a move is tried again.
const CATCH_UP: Duration = Duration::from_secs(120);

/// How long a membership change may take to commit before the step is tried again.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(30);

/// How far behind its leader (in entries) a metadata learner may be and still be
/// promoted to voter.
const PROMOTE_LAG: u64 = 64;

/// An administration request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Node `id`, listening at `addr`, joins the cluster (as a metadata learner, a
    /// voter once caught up if the metadata group has fewer than 3 or 5 voters). It
    /// holds no replica until a rebalance or a drain moves some to it.
    AddNode {
        /// The new node's id (never one the cluster knew).
        id: u64,
        /// Its inter-node address.
        addr: String,
    },
    /// Node `id` leaves: its replicas move to the other nodes, then it leaves the
    /// metadata group. Its id is never taken again.
    RemoveNode {
        /// The node's id.
        id: u64,
    },
    /// Even out how many replicas each node holds.
    Rebalance,
    /// Node `to` becomes the leader of group `group`.
    TransferLeader {
        /// The group.
        group: GroupId,
        /// The node that should lead it.
        to: u64,
    },
    /// Whether the cluster knows node `id` (asked by a node starting on an empty data
    /// directory: one that the cluster knows lost its disk).
    Known {
        /// The node's id.
        id: u64,
    },
}

/// A request on the wire, with how often it was forwarded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The request.
    pub request: AdminRequest,
    /// Forwards so far.
    pub hops: u8,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    /// The request cannot apply (an unknown node, an id taken before, no such group).
    #[error("{0}")]
    Invalid(String),
    /// No leader to execute it now (an election, a node down); try again.
    #[error("{0}")]
    Unavailable(String),
    /// It failed on the way (storage, a membership change refused).
    #[error("{0}")]
    Failed(String),
}

/// An answer: a JSON document, or the error.
pub type AdminAnswer = Result<String, AdminError>;

fn failed(e: impl std::fmt::Display) -> AdminError {
    AdminError::Failed(e.to_string())
}

impl Inner {
    /// Executes `request` here if this node is where it must run, else forwards it.
    pub(super) async fn route(self: &Arc<Self>, request: AdminRequest, hops: u8) -> AdminAnswer {
        if let AdminRequest::Known { id } = request {
            return self.known(id);
        }
        let group = match &request {
            AdminRequest::TransferLeader { group, .. } => *group,
            _ => META_GROUP,
        };
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let me = self.config.node_id;
            let leader = match self.groups.get(group) {
                Some(g) => g.raft.metrics().borrow_watched().current_leader,
                // A group not held here: its first replica knows its leader.
                None => self
                    .image
                    .borrow()
                    .placement(group)
                    .and_then(|p| p.replicas.first().map(|r| r.id)),
            };
            match leader {
                Some(l) if l == me => return self.execute(request).await,
                Some(l) if hops < MAX_HOPS => return self.forward(l, request, hops + 1).await,
                Some(l) => {
                    return Err(AdminError::Unavailable(format!(
                        "node {l} leads group {group}, not this node (forwarded {hops} times \
                         already)"
                    )))
                }
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => {
                    return Err(AdminError::Unavailable(format!(
                        "group {group} has no leader now; try again"
                    )))
                }
            }
        }
    }

    async fn forward(&self, to: u64, request: AdminRequest, hops: u8) -> AdminAnswer {
        let payload = crate::network::wire::encode(&Envelope { request, hops }).map_err(failed)?;
        let answer = self
            .peers
            .admin(to, payload, Duration::from_secs(60))
            .await
            .map_err(|e| AdminError::Unavailable(format!("forwarding to node {to}: {e}")))?;
        match crate::network::wire::decode::<Result<AdminAnswer, String>>(&answer) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Err(AdminError::Unavailable(format!("node {to}: {e}"))),
            Err(e) => Err(failed(format!(
                "node {to} answered something unreadable: {e}"
            ))),
        }
    }

    async fn execute(self: &Arc<Self>, request: AdminRequest) -> AdminAnswer {
        let json = match request {
            AdminRequest::AddNode { id, addr } => self.add_node(id, addr).await?,
            AdminRequest::RemoveNode { id } => self.remove_node(id).await?,
            AdminRequest::Rebalance => self.rebalance().await?,
            AdminRequest::TransferLeader { group, to } => self.transfer_leader(group, to).await?,
            AdminRequest::Known { id } => return self.known(id),
        };
        Ok(json.to_string())
    }

    /// Whether the cluster knows node `id`, answered only once this node's metadata has
    /// caught up (else its image could lack the record).
    fn known(&self, id: u64) -> AdminAnswer {
        if !self.caught_up() {
            return Err(AdminError::Unavailable(
                "this node's metadata is still catching up".into(),
            ));
        }
        let image = self.image.borrow().clone();
        Ok(known_answer(
            image.nodes.contains_key(&id),
            image.removed.contains(&id),
        ))
    }

    async fn add_node(&self, id: u64, addr: String) -> Result<serde_json::Value, AdminError> {
        let image = self.image.borrow().clone();
        if image.removed.contains(&id) {
            return Err(AdminError::Invalid(format!(
                "node id {id} was removed from the cluster and is never taken again: start \
                 the node with a new --node-id"
            )));
        }
        let members = self.members();
        match members.get(&id) {
            Some(known) if *known == addr && !image.nodes.contains_key(&id) => {
                // A join asked again before the node first came up: the same answer.
            }
            Some(known) if *known == addr => {
                return Err(AdminError::Invalid(format!(
                    "node {id} is a member already (at {known}); a node whose disk was lost \
                     comes back under a new id, after `chariot cluster remove {id}`"
                )))
            }
            Some(known) => {
                return Err(AdminError::Invalid(format!(
                    "node {id} is a member at {known}, not {addr}"
                )))
            }
            None => {}
        }
        if let Some((other, _)) = members.iter().find(|(o, a)| **a == addr && **o != id) {
            return Err(AdminError::Invalid(format!(
                "{addr} is the address of node {other}"
            )));
        }
        self.peers.set_addr(id, &addr);
        self.meta
            .raft
            .add_learner(id, BasicNode { addr: addr.clone() }, false)
            .await
            .map_err(failed)?;
        tracing::info!(node = id, addr, "node added to the cluster");
        Ok(serde_json::json!({"added": id, "addr": addr}))
    }

    async fn remove_node(&self, id: u64) -> Result<serde_json::Value, AdminError> {
        let members = self.members();
        let image = self.image.borrow().clone();
        if !members.contains_key(&id) && !image.references(id) {
            return Err(AdminError::Invalid(format!("node {id} is not a member")));
        }
        let staying = members
            .keys()
            .filter(|m| **m != id && !image.removed.contains(m))
            .count();
        if staying == 0 {
            return Err(AdminError::Invalid(format!(
                "node {id} is the last node of the cluster"
            )));
        }
        if !image.removed.contains(&id) {
            self.submit(&MetaEvent::RemoveNode { id })
                .await
                .map_err(failed)?;
        }
        let image = self.image.borrow().clone();
        let moves = image.plan_drain(&members);
        let planned = moves.len();
        if !moves.is_empty() {
            self.submit(&MetaEvent::Reassign { moves })
                .await
                .map_err(failed)?;
        }
        tracing::info!(
            node = id,
            moves = planned,
            "node removed; its replicas move"
        );
        Ok(serde_json::json!({"removed": id, "moves": planned}))
    }

    async fn rebalance(&self) -> Result<serde_json::Value, AdminError> {
        let image = self.image.borrow().clone();
        let moves = image.plan_rebalance(&self.members());
        let listed: Vec<serde_json::Value> = moves
            .iter()
            .map(|m| {
                serde_json::json!({
                    "group": m.group,
                    "from": m.from,
                    "to": m.to.iter().map(|r| r.id).collect::<Vec<_>>(),
                })
            })
            .collect();
        if !moves.is_empty() {
            self.submit(&MetaEvent::Reassign { moves })
                .await
                .map_err(failed)?;
        }
        Ok(serde_json::json!({"moves": listed}))
    }

    async fn transfer_leader(
        &self,
        group: GroupId,
        to: u64,
    ) -> Result<serde_json::Value, AdminError> {
        let Some(g) = self.groups.get(group) else {
            return Err(AdminError::Unavailable(format!(
                "group {group} is not on this node"
            )));
        };
        let voters = voters(&g.raft);
        if !voters.contains(&to) {
            return Err(AdminError::Invalid(format!(
                "node {to} is not a voter of group {group} (voters {voters:?})"
            )));
        }
        let _busy = g.rest.busy();
        g.raft.trigger().transfer_leader(to).await.map_err(failed)?;
        Ok(serde_json::json!({"group": group, "to": to}))
    }

    /// What this node does without a request after each fold; see the module
    /// documentation.
    pub(super) async fn control(self: &Arc<Self>) {
        let me = self.config.node_id;
        if self.meta.raft.metrics().borrow_watched().current_leader == Some(me) {
            if let Err(e) = self.control_metadata().await {
                tracing::warn!(error = %e, "controller step failed; trying again");
            }
        }
        let image = self.image.borrow().clone();
        for (_, _, p) in image.partitions() {
            let Some(target) = p.target.clone() else {
                continue;
            };
            let Some(g) = self.groups.get(p.group) else {
                continue;
            };
            if g.raft.metrics().borrow_watched().current_leader != Some(me) {
                continue;
            }
            if !self
                .moving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.group)
            {
                continue;
            }
            let (inner, group) = (Arc::clone(self), p.group);
            tokio::spawn(async move {
                // Awake until the move is done (its entries wake the replicas anyway).
                let _busy = g.rest.busy();
                if let Err(e) = inner.carry_out(group, g.raft, target).await {
                    tracing::warn!(group, error = %e, "moving the group's replicas; trying again");
                }
                inner
                    .moving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&group);
            });
        }
    }

    /// The controller's part: drains, metadata voters, forgetting drained nodes.
    async fn control_metadata(&self) -> Result<(), AdminError> {
        let image = self.image.borrow().clone();
        let members = self.members();
        let moves = image.plan_drain(&members);
        if !moves.is_empty() {
            self.submit(&MetaEvent::Reassign { moves })
                .await
                .map_err(failed)?;
        }
        let m = self.meta.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let committed = m.committed_membership_config.log_id() == m.membership_config.log_id();
        if !committed {
            // A change under way.
            return Ok(());
        }
        if let Some(last) = membership
            .get_joint_config()
            .last()
            .filter(|_| membership.get_joint_config().len() > 1)
        {
            // Left joint by a leader lost half-way: openraft does not finish it alone.
            tracing::info!(to = ?last, "finishing the metadata group's membership change");
            self.meta_change(ChangeMembers::ReplaceAllVoters(last.clone()), true)
                .await?;
            return Ok(());
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = |id: &u64| {
            m.replication.as_ref().is_some_and(|r| {
                r.get(id)
                    .and_then(|l| l.as_ref())
                    .is_some_and(|l| l.index + PROMOTE_LAG >= last)
            })
        };
        let active: Vec<u64> = members
            .keys()
            .copied()
            .filter(|id| !image.removed.contains(id))
            .collect();
        let wanted = match active.len() {
            n if n >= 5 => 5,
            n if n >= 3 => 3,
            n => n,
        };
        let mut next: BTreeSet<u64> = voters
            .iter()
            .copied()
            .filter(|v| !image.removed.contains(v))
            .collect();
        for id in &active {
            if next.len() >= wanted {
                break;
            }
            if !next.contains(id) && caught_up(id) {
                next.insert(*id);
            }
        }
        if next != voters && !next.is_empty() {
            tracing::info!(from = ?voters, to = ?next, "changing the metadata group's voters");
            self.meta_change(ChangeMembers::ReplaceAllVoters(next), true)
                .await?;
            return Ok(());
        }
        // Removed nodes that are learners now and that no partition references: out.
        let gone: BTreeSet<u64> = image
            .removed
            .iter()
            .copied()
            .filter(|id| members.contains_key(id) && !voters.contains(id) && !image.references(*id))
            .collect();
        if !gone.is_empty() {
            tracing::info!(nodes = ?gone, "removed nodes leave the metadata group");
            self.meta_change(ChangeMembers::RemoveNodes(gone), false)
                .await?;
        }
        Ok(())
    }

    /// A membership change of the metadata group, given [`MEMBERSHIP_WAIT`] to commit.
    async fn meta_change(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        retain: bool,
    ) -> Result<(), AdminError> {
        tokio::time::timeout(
            MEMBERSHIP_WAIT,
            self.meta.raft.change_membership(change, retain),
        )
        .await
        .map_err(|_| {
            AdminError::Unavailable(format!(
                "the metadata group's membership change did not commit within \
                     {MEMBERSHIP_WAIT:?}"
            ))
        })?
        .map_err(failed)?;
        Ok(())
    }

    /// Carries out group `group`'s pending move to `target` as its leader.
    async fn carry_out(
        &self,
        group: GroupId,
        raft: PartitionRaft,
        target: Vec<Replica>,
    ) -> Result<(), AdminError> {
        let (membership, committed) = {
            let m = raft.metrics().borrow_watched().clone();
            let committed = m.committed_membership_config.log_id() == m.membership_config.log_id();
            (m.membership_config.membership().clone(), committed)
        };
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let wanted: BTreeSet<u64> = target.iter().map(|r| r.id).collect();
        let uniform = membership.get_joint_config().len() == 1;
        if voters == wanted && uniform && !committed {
            // The change is in the log, not yet committed (a leader that took over
            // half-way): the move is not done until it is.
            return Err(AdminError::Unavailable(format!(
                "group {group}'s membership change is not committed yet"
            )));
        }
        if voters != wanted || !uniform {
            for r in target.iter().filter(|r| !voters.contains(&r.id)) {
                self.peers.set_addr(r.id, &r.addr);
                tracing::info!(group, node = r.id, "adding a replica; it catches up first");
                let added = raft.add_learner(
                    r.id,
                    BasicNode {
                        addr: r.addr.clone(),
                    },
                    true,
                );
                tokio::time::timeout(CATCH_UP, added)
                    .await
                    .map_err(|_| {
                        AdminError::Unavailable(format!(
                            "node {} did not catch up on group {group} within {CATCH_UP:?}",
                            r.id
                        ))
                    })?
                    .map_err(failed)?;
            }
            let change =
                raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted.clone()), false);
            tokio::time::timeout(MEMBERSHIP_WAIT, change)
                .await
                .map_err(|_| {
                    AdminError::Unavailable(format!(
                        "group {group}'s membership change did not commit within {MEMBERSHIP_WAIT:?}"
                    ))
                })?
                .map_err(failed)?;
            tracing::info!(group, from = ?voters, to = ?wanted, "group's replicas moved");
        }
        self.submit(&MetaEvent::Reassigned {
            group,
            replicas: target,
        })
        .await
        .map_err(failed)?;
        Ok(())
    }
}

/// The voters of a group's effective membership.
pub(super) fn voters(raft: &PartitionRaft) -> BTreeSet<u64> {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The answer to [`AdminRequest::Known`].
pub(super) fn known_answer(registered: bool, removed: bool) -> String {
    serde_json::json!({"registered": registered, "removed": removed}).to_string()
}

/// The members of `placement`'s replicas as openraft nodes.
pub(super) fn raft_nodes(replicas: &[Replica]) -> BTreeMap<u64, BasicNode> {
    replicas
        .iter()
        .map(|r| {
            (
                r.id,
                BasicNode {
                    addr: r.addr.clone(),
                },
            )
        })
        .collect()
}
