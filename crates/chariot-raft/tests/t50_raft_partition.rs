//! The broker's `PartitionLog` over a Raft group: appends on the leader are answered
//! with the offsets every replica stores them at; a replica that does not lead refuses
//! them before proposing anything, naming the leader; a stopped partition refuses too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use bytes::Bytes;
use chariot_broker::error::BrokerError;
use chariot_broker::partition::{Entry, PartitionLog};
use chariot_broker::NewRecord;
use chariot_raft::RaftPartition;
use common::*;
use openraft::async_runtime::WatchReceiver;

fn records_entry(tag: &str, n: usize) -> Entry {
    Entry::Records(
        (0..n)
            .map(|k| NewRecord::value(Bytes::from(format!("{tag}-{k}"))))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_through_the_leader_and_followers_name_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &tmp.path().join(format!("n{id}")), None).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    nodes[0].raft.initialize(members(&refs)).await.unwrap();
    let leader = leader_of(&refs).await;
    let parts: Vec<(u64, RaftPartition)> = nodes
        .iter()
        .map(|n| (n.id, RaftPartition::new(n.raft.clone())))
        .collect();
    let (_, on_leader) = parts.iter().find(|(id, _)| *id == leader).unwrap();
    let mut expected_base = 0;
    for i in 0..20 {
        let a = on_leader
            .append(records_entry(&format!("p{i}"), 1 + i % 4))
            .await
            .unwrap();
        assert_eq!(a.base_offset, expected_base);
        assert_eq!(a.count as usize, 1 + i % 4);
        expected_base += u64::from(a.count);
    }
    let leader_addr = refs.iter().find(|n| n.id == leader).unwrap().addr.clone();
    for (id, p) in parts.iter().filter(|(id, _)| *id != leader) {
        match p.append(records_entry("refused", 1)).await {
            Err(BrokerError::NotLeader { leader: l, addr }) => {
                assert_eq!(l, Some(leader), "node {id}");
                assert_eq!(addr.as_deref(), Some(leader_addr.as_str()));
            }
            other => panic!("node {id} answered {other:?}"),
        }
    }
    // Nothing the followers refused was written anywhere.
    let upto = refs
        .iter()
        .find(|n| n.id == leader)
        .unwrap()
        .raft
        .metrics()
        .borrow_watched()
        .last_applied
        .unwrap()
        .index;
    let l = refs.iter().find(|n| n.id == leader).unwrap();
    let all = converge(&refs, l, upto).await;
    assert_eq!(all.len() as u64, expected_base);
    assert!(all.iter().all(|(_, v)| !v.starts_with(b"refused")));

    on_leader.stop();
    assert!(matches!(
        on_leader.append(records_entry("late", 1)).await,
        Err(BrokerError::ShuttingDown)
    ));
}
