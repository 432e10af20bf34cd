//! The cluster's metadata: the events of the metadata group's log, and the image every
//! node folds them into, in log order. As in Kafka's KRaft (`__cluster_metadata`),
//! the metadata group is a replicated log like any partition; its records are JSON
//! [`MetaEvent`]s, and folding them is deterministic, so every node that has applied
//! the same prefix holds the same image.

use std::collections::BTreeMap;

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
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// Its Raft group.
    pub group: GroupId,
    /// Its replicas as created.
    pub replicas: Vec<Replica>,
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
}

impl Default for Image {
    fn default() -> Self {
        Self {
            logs: BTreeMap::new(),
            next_group: META_GROUP + 1,
            folded: 0,
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
                        PartitionPlacement { group, replicas }
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
        }
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
}
