//! The cluster's metadata: the events of the metadata group's log, and the image every
//! node folds them into, in log order. As in Kafka's KRaft (`__cluster_metadata`),
//! the metadata group is a replicated log like any partition; its records are JSON
//! [`MetaEvent`]s, and folding them is deterministic, so every node that has applied
//! the same prefix holds the same image.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::network::GroupId;

/// Group id of the metadata group; partition groups are numbered from 1.
pub const META_GROUP: GroupId = 0;

/// One replica of a partition: a node and its inter-node address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The node's id.
    pub id: u64,
    /// Its inter-node address.
    pub addr: String,
}

/// A change of the cluster's metadata: one record of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaEvent {
    /// A log is created; `replicas[p]` holds partition `p`. Each partition gets the
    /// next group id when the event is folded.
    CreateLog {
        /// The log's name.
        name: String,
        /// The replicas of each partition, the initial members of its group.
        replicas: Vec<Vec<Replica>>,
    },
    /// A log is deleted with its groups.
    DeleteLog {
        /// The log's name.
        name: String,
    },
    /// Partitions are to move to new replica sets. Each move applies only if its
    /// partition still has the replicas `from` and no move pending (a compare and set:
    /// of two plans made from the same image, the second finds its moves stale).
    Reassign {
        /// The moves.
        moves: Vec<Move>,
    },
    /// A partition's group has the replicas of its pending move as its voters (its
    /// leader saw the membership change committed): the move is done.
    Reassigned {
        /// The partition's group.
        group: GroupId,
        /// Its replicas now: the move's target.
        replicas: Vec<Replica>,
    },
    /// A node came up as a member with this address (each node records itself once:
    /// a node that starts on an empty data directory and finds its id recorded lost its
    /// disk, and refuses to start under that id).
    Register {
        /// The node's id.
        id: u64,
        /// Its inter-node address.
        addr: String,
    },
    /// A node leaves the cluster: no new replica is placed on it, its replicas move to
    /// other nodes, and its id is never taken again (a node that comes back with it is
    /// refused).
    RemoveNode {
        /// The node's id.
        id: u64,
    },
}

/// A partition's move to a new replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The partition's group.
    pub group: GroupId,
    /// The ids of its replicas when the move was planned.
    pub from: Vec<u64>,
    /// Its replicas after the move.
    pub to: Vec<Replica>,
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// Its Raft group.
    pub group: GroupId,
    /// Its replicas: the voters of its group.
    pub replicas: Vec<Replica>,
    /// A move under way: the replicas its group's leader is changing it to.
    pub target: Option<Vec<Replica>>,
    /// How many moves it has had (0: its replicas are those it was created with, the
    /// only ones that may initialize its group).
    pub moves: u64,
}

impl PartitionPlacement {
    /// Whether node `id` holds a replica, now or once the pending move is done.
    pub fn places(&self, id: u64) -> bool {
        self.replicas.iter().any(|r| r.id == id)
            || self
                .target
                .as_ref()
                .is_some_and(|t| t.iter().any(|r| r.id == id))
    }

    /// The ids of its replicas.
    pub fn replica_ids(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| r.id).collect()
    }
}

/// One log of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPlacement {
    /// Offset of the metadata record that created it (tells a log from an earlier one
    /// of the same name).
    pub created_at: u64,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionPlacement>,
}

/// The metadata as of a prefix of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Every log, by name.
    pub logs: BTreeMap<String, LogPlacement>,
    /// The group id the next partition gets.
    pub next_group: GroupId,
    /// The offset of the next record to fold (every one before it is folded).
    pub folded: u64,
    /// Nodes removed from the cluster (their ids are never taken again).
    pub removed: BTreeSet<u64>,
    /// Nodes that came up as members, with their addresses.
    pub nodes: BTreeMap<u64, String>,
}

impl Default for Image {
    fn default() -> Self {
        Self {
            logs: BTreeMap::new(),
            next_group: META_GROUP + 1,
            folded: 0,
            removed: BTreeSet::new(),
            nodes: BTreeMap::new(),
        }
    }
}

/// What folding one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    /// The event changed the image.
    Applied,
    /// The event could not apply (a create of a name in use, a delete of an unknown
    /// log, a record that is not an event): skipped, alike on every node.
    Skipped(String),
}

impl Image {
    /// Folds the record at `offset` (the next one: `offset == self.folded`, else it
    /// was folded already and is skipped).
    pub fn fold(&mut self, offset: u64, value: &[u8]) -> Folded {
        if offset < self.folded {
            return Folded::Skipped(format!("record {offset} was folded already"));
        }
        self.folded = offset + 1;
        let event = match serde_json::from_slice::<MetaEvent>(value) {
            Ok(e) => e,
            Err(e) => return Folded::Skipped(format!("record {offset} is not an event: {e}")),
        };
        match event {
            MetaEvent::CreateLog { name, replicas } => {
                if self.logs.contains_key(&name) {
                    return Folded::Skipped(format!("log {name} exists"));
                }
                if replicas.is_empty() || replicas.iter().any(Vec::is_empty) {
                    return Folded::Skipped(format!("log {name} has a partition without replicas"));
                }
                let partitions = replicas
                    .into_iter()
                    .map(|replicas| {
                        let group = self.next_group;
                        self.next_group += 1;
                        PartitionPlacement {
                            group,
                            replicas,
                            target: None,
                            moves: 0,
                        }
                    })
                    .collect();
                self.logs.insert(
                    name,
                    LogPlacement {
                        created_at: offset,
                        partitions,
                    },
                );
                Folded::Applied
            }
            MetaEvent::DeleteLog { name } => match self.logs.remove(&name) {
                Some(_) => Folded::Applied,
                None => Folded::Skipped(format!("no log {name}")),
            },
            MetaEvent::Reassign { moves } => {
                let mut applied = 0;
                let removed = self.removed.clone();
                for m in moves {
                    let Some(p) = self.placement_mut(m.group) else {
                        continue;
                    };
                    // A pending move may be replaced only when its target holds a
                    // removed node (it would never complete).
                    let open = match &p.target {
                        None => true,
                        Some(t) => t.iter().any(|r| removed.contains(&r.id)),
                    };
                    if open && p.replica_ids() == m.from && !m.to.is_empty() {
                        p.target = Some(m.to);
                        applied += 1;
                    }
                }
                if applied > 0 {
                    Folded::Applied
                } else {
                    Folded::Skipped("every move was stale".into())
                }
            }
            MetaEvent::Reassigned { group, replicas } => match self.placement_mut(group) {
                Some(p) if p.target.as_ref() == Some(&replicas) => {
                    p.replicas = replicas;
                    p.target = None;
                    p.moves += 1;
                    Folded::Applied
                }
                _ => Folded::Skipped(format!("group {group} has no such move pending")),
            },
            MetaEvent::Register { id, addr } => {
                if self.removed.contains(&id) {
                    Folded::Skipped(format!("node {id} was removed"))
                } else if self.nodes.get(&id) == Some(&addr) {
                    Folded::Skipped(format!("node {id} is registered already"))
                } else {
                    self.nodes.insert(id, addr);
                    Folded::Applied
                }
            }
            MetaEvent::RemoveNode { id } => {
                if self.removed.insert(id) {
                    Folded::Applied
                } else {
                    Folded::Skipped(format!("node {id} was removed already"))
                }
            }
        }
    }

    /// Every partition, with its log's name and its index.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, usize, &PartitionPlacement)> {
        self.logs.iter().flat_map(|(name, l)| {
            l.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (name.as_str(), i, p))
        })
    }

    /// The partition of group `group`.
    pub fn placement(&self, group: GroupId) -> Option<&PartitionPlacement> {
        self.partitions()
            .map(|(_, _, p)| p)
            .find(|p| p.group == group)
    }

    fn placement_mut(&mut self, group: GroupId) -> Option<&mut PartitionPlacement> {
        self.logs
            .values_mut()
            .flat_map(|l| l.partitions.iter_mut())
            .find(|p| p.group == group)
    }

    /// Whether any partition has node `id` as a replica, now or after a pending move.
    pub fn references(&self, id: u64) -> bool {
        self.partitions().any(|(_, _, p)| p.places(id))
    }

    /// The members that are not removed.
    fn eligible(&self, members: &BTreeMap<u64, String>) -> BTreeSet<u64> {
        members
            .keys()
            .copied()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }

    /// How many replicas each of `nodes` holds, counting pending moves as done.
    fn load(&self, nodes: &BTreeSet<u64>) -> BTreeMap<u64, usize> {
        let mut load: BTreeMap<u64, usize> = nodes.iter().map(|&n| (n, 0)).collect();
        for (_, _, p) in self.partitions() {
            for r in p.target.as_ref().unwrap_or(&p.replicas) {
                if let Some(c) = load.get_mut(&r.id) {
                    *c += 1;
                }
            }
        }
        load
    }

    /// The moves that take every replica off the removed nodes: each goes to the
    /// least loaded of `members` (id → address) that is not removed and does not hold
    /// the partition already (lowest id first among equals); a partition with no such
    /// node waits for one (no move, so it keeps its replication factor). Partitions
    /// with a move pending are left to it (planned again once it is done).
    pub fn plan_drain(&self, members: &BTreeMap<u64, String>) -> Vec<Move> {
        let eligible = self.eligible(members);
        let mut load = self.load(&eligible);
        let mut moves = Vec::new();
        for (_, _, p) in self.partitions() {
            // What the partition will have: its pending move's target, else its
            // replicas. A target with a removed node is planned again (that move would
            // never complete); other pending moves are left to finish.
            let now = p.target.as_ref().unwrap_or(&p.replicas);
            if !now.iter().any(|r| self.removed.contains(&r.id)) {
                continue;
            }
            let mut to: Vec<Replica> = now
                .iter()
                .filter(|r| !self.removed.contains(&r.id))
                .cloned()
                .collect();
            let wanted = now.len();
            fill(&mut to, wanted, &mut load, members);
            // No node to take its place: the move waits for one (a partition keeps its
            // replication factor), planned again after each fold.
            if to.len() == wanted {
                moves.push(Move {
                    group: p.group,
                    from: p.replica_ids(),
                    to,
                });
            }
        }
        moves
    }

    /// The moves that bring every partition to `min(3, members)` replicas (one created
    /// on fewer nodes gains replicas), then even out how many replicas each of
    /// `members` (not removed) holds, until the most and least loaded differ by at most
    /// one: each takes a replica from the most loaded node to the least loaded one that
    /// lacks it.
    pub fn plan_rebalance(&self, members: &BTreeMap<u64, String>) -> Vec<Move> {
        let eligible = self.eligible(members);
        let mut load = self.load(&eligible);
        // The replicas each partition would have, but for those with a move pending or
        // a removed node among their replicas (the drain's to move).
        let mut planned: BTreeMap<GroupId, Vec<Replica>> = self
            .partitions()
            .filter(|(_, _, p)| {
                p.target.is_none() && !p.replicas.iter().any(|r| self.removed.contains(&r.id))
            })
            .map(|(_, _, p)| (p.group, p.replicas.clone()))
            .collect();
        // First, partitions with fewer replicas than the cluster now allows (created
        // on fewer nodes) get more, up to min(3, nodes), on the least loaded nodes.
        let factor = eligible.len().min(3);
        for replicas in planned.values_mut() {
            fill(replicas, factor, &mut load, members);
        }
        while let (Some((&most, &high)), Some((_, &low))) = (
            load.iter()
                .max_by_key(|(id, c)| (**c, std::cmp::Reverse(**id))),
            load.iter().min_by_key(|(id, c)| (**c, **id)),
        ) {
            if high <= low + 1 {
                break;
            }
            // The first partition the most loaded node holds that a node of the lowest
            // load lacks.
            let found = planned.iter().find_map(|(&group, replicas)| {
                if !replicas.iter().any(|r| r.id == most) {
                    return None;
                }
                load.iter()
                    .filter(|(id, c)| **c == low && !replicas.iter().any(|r| r.id == **id))
                    .map(|(id, _)| *id)
                    .next()
                    .map(|to| (group, to))
            });
            let Some((group, to)) = found else { break };
            let Some(addr) = members.get(&to) else { break };
            if let Some(replicas) = planned.get_mut(&group) {
                for r in replicas.iter_mut().filter(|r| r.id == most) {
                    *r = Replica {
                        id: to,
                        addr: addr.clone(),
                    };
                }
            }
            if let Some(c) = load.get_mut(&most) {
                *c -= 1;
            }
            if let Some(c) = load.get_mut(&to) {
                *c += 1;
            }
        }
        planned
            .into_iter()
            .filter_map(|(group, to)| {
                let p = self.placement(group)?;
                (p.replicas != to).then(|| Move {
                    group,
                    from: p.replica_ids(),
                    to,
                })
            })
            .collect()
    }
}

/// Adds replicas to `replicas` until it has `wanted`, each on the least loaded node of
/// `load` that it lacks (lowest id first among equals, its address from `members`),
/// counting each in `load`; stops early when no such node is left.
fn fill(
    replicas: &mut Vec<Replica>,
    wanted: usize,
    load: &mut BTreeMap<u64, usize>,
    members: &BTreeMap<u64, String>,
) {
    while replicas.len() < wanted {
        let pick = load
            .iter()
            .filter(|(id, _)| !replicas.iter().any(|r| r.id == **id))
            .min_by_key(|(id, c)| (**c, **id))
            .map(|(id, _)| *id);
        let Some((id, addr)) = pick.and_then(|id| members.get(&id).map(|a| (id, a))) else {
            break;
        };
        if let Some(c) = load.get_mut(&id) {
            *c += 1;
        }
        replicas.push(Replica {
            id,
            addr: addr.clone(),
        });
    }
}

/// The replicas of `partitions` new partitions over `members` (node id → inter-node
/// address): `min(3, nodes)` each, in turn from a node that moves on by one per
/// partition, starting at `first_group` so that successive logs spread their leaders'
/// first candidates too.
pub fn place(
    members: &BTreeMap<u64, String>,
    partitions: u32,
    first_group: GroupId,
) -> Vec<Vec<Replica>> {
    let nodes: Vec<Replica> = members
        .iter()
        .map(|(&id, addr)| Replica {
            id,
            addr: addr.clone(),
        })
        .collect();
    let n = nodes.len();
    if n == 0 {
        return Vec::new();
    }
    let rf = n.min(3);
    (0..u64::from(partitions))
        .map(|p| {
            let start = ((first_group + p) % n as u64) as usize;
            (0..rf)
                .filter_map(|k| nodes.get((start + k) % n).cloned())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn members(n: u64) -> BTreeMap<u64, String> {
        (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", 7000 + i)))
            .collect()
    }

    fn event(e: &MetaEvent) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()
    }

    #[test]
    fn placement_spreads_three_replicas_over_the_members() {
        let p = place(&members(5), 5, 1);
        assert!(p.iter().all(|r| r.len() == 3));
        let firsts: Vec<u64> = p.iter().map(|r| r[0].id).collect();
        assert_eq!(firsts, vec![2, 3, 4, 5, 1]);
        for r in &p {
            let mut ids: Vec<u64> = r.iter().map(|x| x.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), 3, "distinct replicas");
        }
        assert_eq!(place(&members(2), 1, 1)[0].len(), 2);
        assert!(place(&BTreeMap::new(), 3, 1).is_empty());
    }

    #[test]
    fn folding_is_deterministic_and_skips_what_cannot_apply() {
        let create = |name: &str, parts| MetaEvent::CreateLog {
            name: name.into(),
            replicas: place(&members(3), parts, 1),
        };
        let records = [
            event(&create("a", 2)),
            event(&create("a", 1)),
            b"not json".to_vec(),
            event(&MetaEvent::DeleteLog { name: "zz".into() }),
            event(&create("b", 1)),
            event(&MetaEvent::DeleteLog { name: "a".into() }),
            event(&create("a", 1)),
        ];
        let mut one = Image::default();
        let outcomes: Vec<bool> = records
            .iter()
            .enumerate()
            .map(|(i, r)| one.fold(i as u64, r) == Folded::Applied)
            .collect();
        assert_eq!(outcomes, vec![true, false, false, false, true, true, true]);
        assert_eq!(one.folded, 7);
        assert_eq!(one.logs["a"].created_at, 6, "the second log a");
        assert_eq!(
            one.logs["a"].partitions[0].group, 4,
            "groups are never reused"
        );
        assert_eq!(one.logs["b"].partitions[0].group, 3);
        let mut two = Image::default();
        for (i, r) in records.iter().enumerate() {
            two.fold(i as u64, r);
            // A record folded twice changes nothing.
            two.fold(i as u64, r);
        }
        assert_eq!(one, two);
    }

    fn folded(events: &[MetaEvent]) -> Image {
        let mut image = Image::default();
        for (i, e) in events.iter().enumerate() {
            image.fold(i as u64, &event(e));
        }
        image
    }

    fn ids(r: &[Replica]) -> Vec<u64> {
        r.iter().map(|x| x.id).collect()
    }

    #[test]
    fn a_move_applies_once_and_completes_only_with_its_own_target() {
        let mut image = folded(&[MetaEvent::CreateLog {
            name: "a".into(),
            replicas: place(&members(3), 1, 1),
        }]);
        let p = image.placement(1).unwrap().clone();
        let to = vec![
            p.replicas[0].clone(),
            p.replicas[1].clone(),
            Replica {
                id: 4,
                addr: "x:4".into(),
            },
        ];
        let mv = Move {
            group: 1,
            from: p.replica_ids(),
            to: to.clone(),
        };
        let reassign = event(&MetaEvent::Reassign {
            moves: vec![mv.clone()],
        });
        assert_eq!(image.fold(1, &reassign), Folded::Applied);
        assert!(image.placement(1).unwrap().places(4));
        // A second plan made from the same image is stale.
        assert!(matches!(image.fold(2, &reassign), Folded::Skipped(_)));
        let wrong = event(&MetaEvent::Reassigned {
            group: 1,
            replicas: p.replicas.clone(),
        });
        assert!(matches!(image.fold(3, &wrong), Folded::Skipped(_)));
        let done = event(&MetaEvent::Reassigned {
            group: 1,
            replicas: to.clone(),
        });
        assert_eq!(image.fold(4, &done), Folded::Applied);
        let now = image.placement(1).unwrap();
        assert_eq!(
            (now.replicas.clone(), now.target.clone(), now.moves),
            (to, None, 1)
        );
        assert!(!now.places(p.replicas[2].id));
    }

    #[test]
    fn draining_a_node_moves_each_of_its_replicas_to_the_least_loaded_node() {
        let mut nodes = members(4);
        let mut image = folded(&[
            MetaEvent::CreateLog {
                name: "a".into(),
                replicas: place(&members(3), 3, 1),
            },
            MetaEvent::RemoveNode { id: 1 },
        ]);
        let moves = image.plan_drain(&nodes);
        assert_eq!(moves.len(), 3, "node 1 holds every partition: {moves:?}");
        for m in &moves {
            let to = ids(&m.to);
            assert_eq!(to.len(), 3);
            assert!(!to.contains(&1));
            assert!(to.contains(&4), "the only node that lacks it: {to:?}");
        }
        let at = image.folded;
        image.fold(at, &event(&MetaEvent::Reassign { moves }));
        assert!(image.plan_drain(&nodes).is_empty(), "moves pending");
        // Node 4, the target of every pending move, is removed in turn before they are
        // done: with node 5 there, the moves are planned again, and may replace the
        // pending ones.
        nodes.insert(5, "x:5".into());
        let at = image.folded;
        image.fold(at, &event(&MetaEvent::RemoveNode { id: 4 }));
        let again = image.plan_drain(&nodes);
        assert_eq!(again.len(), 3, "{again:?}");
        let at = image.folded;
        assert_eq!(
            image.fold(at, &event(&MetaEvent::Reassign { moves: again })),
            Folded::Applied
        );
        for (_, _, p) in image.partitions() {
            let t = ids(p.target.as_ref().unwrap());
            assert!(
                t.contains(&5) && !t.contains(&4) && !t.contains(&1),
                "{t:?}"
            );
        }
        nodes.remove(&5);
        // With no node to take its place, a partition waits for one.
        nodes.remove(&4);
        let mut image = folded(&[
            MetaEvent::CreateLog {
                name: "a".into(),
                replicas: place(&members(3), 1, 1),
            },
            MetaEvent::RemoveNode { id: 2 },
        ]);
        assert!(image.plan_drain(&nodes).is_empty());
        nodes.insert(5, "x:5".into());
        let moves = image.plan_drain(&nodes);
        assert_eq!(moves.len(), 1);
        let mut to = ids(&moves[0].to);
        to.sort_unstable();
        assert_eq!(to, vec![1, 3, 5]);
        image.removed.clear();
        assert!(image.plan_drain(&nodes).is_empty());
    }

    #[test]
    fn rebalancing_evens_out_replicas_over_the_members() {
        let image = folded(&[
            MetaEvent::CreateLog {
                name: "a".into(),
                replicas: place(&members(3), 1, 1),
            },
            MetaEvent::CreateLog {
                name: "b".into(),
                replicas: place(&members(3), 1, 2),
            },
        ]);
        // 2, 2, 2 on nodes 1-3, 0 on node 4: one replica moves to node 4.
        let moves = image.plan_rebalance(&members(4));
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert!(ids(&moves[0].to).contains(&4));
        assert!(image.plan_rebalance(&members(3)).is_empty(), "balanced");
        let many = folded(&[MetaEvent::CreateLog {
            name: "a".into(),
            replicas: place(&members(3), 8, 1),
        }]);
        let moves = many.plan_rebalance(&members(5));
        let mut load: BTreeMap<u64, usize> = (1..=5).map(|i| (i, 0)).collect();
        for (_, _, p) in many.partitions() {
            let to = moves
                .iter()
                .find(|m| m.group == p.group)
                .map_or(p.replica_ids(), |m| ids(&m.to));
            let mut distinct = to.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "distinct replicas {to:?}");
            for id in to {
                *load.get_mut(&id).unwrap() += 1;
            }
        }
        let (lo, hi) = (load.values().min().unwrap(), load.values().max().unwrap());
        assert!(hi - lo <= 1, "{load:?}");
        // A log created on two nodes gains its third replica once a third node is there.
        let small = folded(&[MetaEvent::CreateLog {
            name: "a".into(),
            replicas: place(&members(2), 2, 1),
        }]);
        let moves = small.plan_rebalance(&members(3));
        assert_eq!(moves.len(), 2, "{moves:?}");
        for m in &moves {
            let mut to = ids(&m.to);
            to.sort_unstable();
            assert_eq!(to, vec![1, 2, 3]);
        }
    }
}
