//! Nodes of one partition group in this test process, talking over real TCP on
//! 127.0.0.1, and the helpers the cluster tests share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    dead_code
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chariot_log::{Log, LogConfig, Record, RecordBatchBuilder, SyncPolicy};
use chariot_raft::network::{
    partition_config, serve_connection, Group, GroupNetwork, Groups, PartitionRaft, Peers,
};
use chariot_raft::{Command, PartitionStateMachine, RaftLogStore, Response};
use openraft::async_runtime::WatchReceiver;
use openraft::impls::BasicNode;
use openraft::{Raft, ServerState};
use tokio::net::TcpListener;

pub const GROUP: u64 = 7;

pub fn raft_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 512 << 10,
        index_max_entries: 256,
        lock_wait: Duration::from_secs(10),
        ..LogConfig::default()
    }
}

pub fn partition_log_config() -> LogConfig {
    LogConfig {
        sync: SyncPolicy::Never,
        lock_wait: Duration::from_secs(10),
        ..raft_log_config()
    }
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub raft: PartitionRaft,
    pub sm: PartitionStateMachine,
    pub groups: Groups,
    pub peers: Peers,
    pub accept: tokio::task::JoinHandle<()>,
}

pub async fn start(id: u64, dir: &Path, addr: Option<&str>) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = TcpListener::bind(addr.unwrap_or("127.0.0.1:0"))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let groups = Groups::new();
    let g = groups.clone();
    // The connections live in the accept task's set: aborting it (a stopped node)
    // closes them all, as the end of a process would.
    let accept = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            connections.spawn(serve_connection(stream, g.clone()));
            while connections.try_join_next().is_some() {}
        }
    });
    let store = RaftLogStore::open(dir.join("raft"), raft_log_config())
        .await
        .unwrap();
    let sm = PartitionStateMachine::open(dir.join("sm"), partition_log_config())
        .await
        .unwrap();
    let config = Arc::new(partition_config("t40").unwrap());
    let peers = Peers::new();
    let raft = Raft::new(
        id,
        config,
        GroupNetwork::new(peers.clone(), GROUP),
        store,
        sm.clone(),
    )
    .await
    .unwrap();
    groups.insert(
        GROUP,
        Group {
            raft: raft.clone(),
            incoming: dir.join("incoming"),
            quarantine: None,
            rest: chariot_raft::network::Rest::new(raft.clone(), GROUP, Arc::clone(groups.quiet())),
        },
    );
    Node {
        id,
        addr,
        dir: dir.to_path_buf(),
        raft,
        sm,
        groups,
        peers,
        accept,
    }
}

/// Stops a node as a crash would for its peers: its port closes, its group stops.
pub async fn stop(node: Node) -> (u64, PathBuf, String) {
    node.accept.abort();
    node.groups.remove(GROUP);
    node.raft.shutdown().await.unwrap();
    (node.id, node.dir, node.addr)
}

pub fn batch(tag: &str, n: usize) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new();
    for k in 0..n {
        b.push(&Record::value(format!("{tag}-{k}").into_bytes()));
    }
    b.build().into_vec()
}

pub fn records(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.earliest_offset();
    while next < log.next_offset() {
        let read = log.read(next, 1 << 20).unwrap();
        for b in read.batches() {
            for r in b.records() {
                out.push((r.offset, r.value.to_vec()));
            }
        }
        next = read.next_offset;
    }
    out
}

/// Waits until some node leads with a committed vote (a node that was just initialized
/// calls itself leader for a moment before its election), and returns its id.
pub async fn leader_of(nodes: &[&Node]) -> u64 {
    for _ in 0..200 {
        for n in nodes {
            let m = n.raft.metrics().borrow_watched().clone();
            if m.state == ServerState::Leader && m.vote.committed {
                return n.id;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 10 s");
}

/// Publishes `n` batches of 3 records through the leader, 10 at a time; returns the
/// offsets each was given and the highest log index among their entries.
pub async fn publish(leader: &PartitionRaft, tag: &str, n: usize) -> (Vec<(u64, u64)>, u64) {
    let mut out = Vec::new();
    let mut last_index = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let writes = chunk.iter().map(|i| {
            let raft = leader.clone();
            let b = batch(&format!("{tag}{i}"), 3);
            async move { raft.client_write(Command::Append(b)).await }
        });
        for r in futures_util::future::join_all(writes).await {
            let r = r.unwrap_or_else(|e| panic!("publish through the leader: {e}"));
            last_index = last_index.max(r.log_id.index);
            match r.data {
                Response::Appended {
                    base_offset,
                    last_offset,
                } => out.push((base_offset, last_offset)),
                other => panic!("append answered {other:?}"),
            }
        }
    }
    (out, last_index)
}

/// Waits until every node has applied what the leader has (at least the entries of
/// every answered publish: the leader's metrics may lag its answers), then compares.
pub async fn converge(nodes: &[&Node], leader: &Node, upto: u64) -> Vec<(u64, Vec<u8>)> {
    let applied = leader
        .raft
        .wait(Some(Duration::from_secs(20)))
        .applied_index_at_least(Some(upto), "the leader applied")
        .await
        .unwrap()
        .last_applied
        .map(|l| l.index);
    for n in nodes {
        n.raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(applied, "caught up")
            .await
            .unwrap();
    }
    // The leader's metrics may lag what it applied: a replica that holds a prefix of
    // the leader's records is still catching up, one that differs has diverged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let expected = records(&leader.sm.log());
        let mut behind = false;
        for n in nodes {
            let got = records(&n.sm.log());
            if got == expected {
                continue;
            }
            let first = got.iter().zip(&expected).position(|(a, b)| a != b);
            if first.is_some() || got.len() > expected.len() || std::time::Instant::now() > deadline
            {
                panic!(
                    "node {} differs from leader {}: {} records against {}, first difference at {first:?}",
                    n.id,
                    leader.id,
                    got.len(),
                    expected.len()
                );
            }
            behind = true;
        }
        if !behind {
            return expected;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts nodes 1..=3 under `tmp`, initializes their group, and waits for a leader;
/// returns the nodes and the leader's id.
pub async fn start_three(tmp: &Path) -> (Vec<Node>, u64) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &tmp.join(format!("n{id}")), None).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    nodes[0].raft.initialize(members(&refs)).await.unwrap();
    let leader = leader_of(&refs).await;
    (nodes, leader)
}

pub fn members(nodes: &[&Node]) -> BTreeMap<u64, BasicNode> {
    nodes
        .iter()
        .map(|n| {
            (
                n.id,
                BasicNode {
                    addr: n.addr.clone(),
                },
            )
        })
        .collect()
}

/// Node `n`'s handle on the test group as a broker partition.
pub fn partition(n: &Node) -> chariot_raft::RaftPartition {
    let rest = n.groups.get(GROUP).expect("the test group").rest;
    chariot_raft::RaftPartition::new("t", rest, n.sm.clone(), n.peers.clone(), GROUP)
}
