//! The broker's `PartitionLog` over a Raft group: appends on the leader are answered
//! with the offsets every replica stores them at; a replica that does not lead forwards
//! them to the leader, one hop; a stopped partition refuses them.
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
    let (nodes, leader) = start_three(tmp.path()).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let parts: Vec<(u64, RaftPartition)> = nodes.iter().map(|n| (n.id, partition(n))).collect();
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
    // A follower forwards to the leader: its appends get the next offsets, and each is
    // stored once.
    for (id, p) in parts.iter().filter(|(id, _)| *id != leader) {
        let a = p
            .append(records_entry(&format!("via{id}"), 2))
            .await
            .unwrap_or_else(|e| panic!("append on follower {id}: {e}"));
        assert_eq!(a.base_offset, expected_base, "node {id}");
        expected_base += 2;
    }
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
    for id in parts.iter().map(|(id, _)| *id).filter(|id| *id != leader) {
        let tag = format!("via{id}-");
        assert_eq!(
            all.iter()
                .filter(|(_, v)| v.starts_with(tag.as_bytes()))
                .count(),
            2
        );
    }

    on_leader.stop();
    assert!(matches!(
        on_leader.append(records_entry("late", 1)).await,
        Err(BrokerError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_waits_for_every_replica_and_says_when_one_is_missing() {
    use chariot_raft::Acks;
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = start_three(tmp.path()).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let part = partition(refs.iter().find(|n| n.id == leader).unwrap());
    let wait = Duration::from_secs(5);
    let a = part
        .append_acks(records_entry("all-up", 2), Acks::All, wait)
        .await
        .unwrap();
    assert_eq!(a.base_offset, 0);

    // One follower goes: a quorum remains, "all" cannot be confirmed.
    let gone = nodes.iter().position(|n| n.id != leader).unwrap();
    let (gone_id, dir, addr) = stop(nodes.remove(gone)).await;
    match part
        .append_acks(
            records_entry("one-down", 1),
            Acks::All,
            Duration::from_secs(1),
        )
        .await
    {
        Err(BrokerError::NotAllReplicas {
            base_offset,
            behind,
        }) => {
            assert_eq!((base_offset, behind), (2, vec![gone_id]));
        }
        other => panic!("acks=all with a replica down answered {other:?}"),
    }
    // Stored all the same, and quorum writes go on.
    let q = part
        .append_acks(records_entry("quorum", 1), Acks::Quorum, wait)
        .await
        .unwrap();
    assert_eq!(q.base_offset, 3);

    // Back: it catches up and "all" is confirmed again.
    nodes.push(start(gone_id, &dir, Some(&addr)).await);
    let a = part
        .append_acks(
            records_entry("all-back", 1),
            Acks::All,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(a.base_offset, 4);
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = refs.iter().find(|n| n.id == leader).unwrap();
    let all = converge(&refs, l, 0).await;
    let values: Vec<&[u8]> = all.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(
        values,
        [
            &b"all-up-0"[..],
            b"all-up-1",
            b"one-down-0",
            b"quorum-0",
            b"all-back-0"
        ]
    );
}
