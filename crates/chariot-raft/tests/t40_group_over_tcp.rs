//! One partition group on three nodes that talk over real TCP connections on 127.0.0.1
//! (the nodes share this test's process; the multi-process and cut-link tests come with
//! the server): every committed append is in every replica's partition log, at the same
//! offset; the group survives its leader's loss and the lost node catches up when it
//! comes back; a node added after the log was purged gets a snapshot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::Duration;

use common::*;
use openraft::async_runtime::WatchReceiver;
use openraft::impls::BasicNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_survive_a_leader_loss_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = start_three(tmp.path()).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = refs.iter().find(|n| n.id == leader).unwrap();
    let (offsets, upto) = publish(&l.raft, "a", 60).await;
    // Dense, in order of the answers' offsets.
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    for (k, (base, last)) in sorted.iter().enumerate() {
        assert_eq!((*base, *last), (k as u64 * 3, k as u64 * 3 + 2));
    }
    assert_eq!(converge(&refs, l, upto).await.len(), 180);

    // The leader goes; the other two elect one and go on.
    let idx = nodes.iter().position(|n| n.id == leader).unwrap();
    let (id, dir, addr) = stop(nodes.remove(idx)).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let new_leader = leader_of(&refs).await;
    assert_ne!(new_leader, leader);
    let l2 = refs.iter().find(|n| n.id == new_leader).unwrap();
    let (_, upto) = publish(&l2.raft, "b", 30).await;
    assert_eq!(converge(&refs, l2, upto).await.len(), 270);

    // It comes back on its address with its files and catches up.
    nodes.push(start(id, &dir, Some(&addr)).await);
    let refs: Vec<&Node> = nodes.iter().collect();
    let l2 = refs.iter().find(|n| n.id == new_leader).unwrap();
    let (_, upto) = publish(&l2.raft, "c", 10).await;
    assert_eq!(converge(&refs, l2, upto).await.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_a_purge_gets_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, leader) = start_three(tmp.path()).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = refs.iter().find(|n| n.id == leader).unwrap();
    let (_, upto) = publish(&l.raft, "a", 40).await;
    converge(&refs, l, upto).await;
    // Snapshot and purge everything on the leader: a new node cannot get entries.
    l.raft.trigger().snapshot().await.unwrap();
    let m = l
        .raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.snapshot.is_some(), "a snapshot")
        .await
        .unwrap();
    let snap = m.snapshot.unwrap().index;
    l.raft.trigger().purge_log(snap).await.unwrap();
    l.raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= snap), "purged")
        .await
        .unwrap();
    let (_, upto) = publish(&l.raft, "b", 5).await;

    let fourth = start(4, &tmp.path().join("n4"), None).await;
    l.raft
        .add_learner(
            4,
            BasicNode {
                addr: fourth.addr.clone(),
            },
            true,
        )
        .await
        .unwrap();
    let all: Vec<&Node> = nodes.iter().chain(std::iter::once(&fourth)).collect();
    let l = all.iter().find(|n| n.id == leader).unwrap();
    assert_eq!(converge(&all, l, upto).await.len(), 135);
    assert!(
        fourth.raft.metrics().borrow_watched().snapshot.is_some(),
        "the fourth node caught up without a snapshot"
    );
}
