//! Groups at rest across three cluster nodes in this process (real TCP on 127.0.0.1):
//! a follower woken alone does not depose the leader it rests under, and the followers
//! of a group whose Raft stopped on its leader elect another leader although that node
//! still answers pings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chariot_broker::{Broker, BrokerConfig};
use chariot_raft::cluster::{Cluster, ClusterConfig};
use chariot_raft::network::{serve_connection, GroupId, Groups, Peers};
use common::*;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;

struct ClusterNode {
    id: u64,
    broker: Arc<Broker>,
    groups: Groups,
    cluster: Cluster,
    accept: tokio::task::JoinHandle<()>,
}

async fn start_node(
    id: u64,
    dir: &Path,
    listener: TcpListener,
    peers: BTreeMap<u64, String>,
) -> ClusterNode {
    let groups = Groups::new();
    let served = groups.clone();
    let accept = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(serve_connection(socket, served.clone()));
        }
    });
    let mut config = BrokerConfig::new(dir);
    config.log = partition_log_config();
    let broker = Arc::new(Broker::open(config).unwrap());
    let cluster_config = ClusterConfig {
        node_id: id,
        addr: peers[&id].clone(),
        peers,
        join: None,
        dir: dir.join("cluster"),
        raft_log: raft_log_config(),
        replica_log: partition_log_config(),
    };
    let cluster = Cluster::start(
        cluster_config,
        Arc::clone(&broker),
        groups.clone(),
        Peers::new(),
    )
    .await
    .unwrap();
    ClusterNode {
        id,
        broker,
        groups,
        cluster,
        accept,
    }
}

async fn start_three(tmp: &Path) -> Vec<ClusterNode> {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let starts: Vec<_> = listeners
        .into_iter()
        .map(|(id, l)| {
            let (dir, peers) = (tmp.join(format!("n{id}")), peers.clone());
            tokio::spawn(async move { start_node(id, &dir, l, peers).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.unwrap());
    }
    nodes
}

/// Polls `check` every 50 ms until it holds (a liveness bound, not a speed assertion).
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 60 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Group of log `name`'s partition 0 once every node serves it.
async fn group_everywhere(nodes: &[ClusterNode], name: &str) -> GroupId {
    eventually("the group is on every node", || {
        let g = nodes[0].cluster.group_of(name, 0)?;
        nodes.iter().all(|n| n.groups.get(g).is_some()).then_some(g)
    })
    .await
}

/// (leader, term) of group `g` once it rests on every node.
async fn resting_everywhere(nodes: &[ClusterNode], g: GroupId) -> (u64, u64) {
    eventually("the group rests on every node", || {
        let mut seen = None;
        for n in nodes {
            let group = n.groups.get(g)?;
            let m = group.raft.metrics().borrow_watched().clone();
            if !group.rest.is_resting() {
                return None;
            }
            let here = (m.current_leader?, m.current_term);
            if *seen.get_or_insert(here) != here {
                return None;
            }
        }
        seen
    })
    .await
}

/// (leader, term) of group `g` as node `n` sees it.
fn view(n: &ClusterNode, g: GroupId) -> (Option<u64>, u64) {
    let m = n
        .groups
        .get(g)
        .unwrap()
        .raft
        .metrics()
        .borrow_watched()
        .clone();
    (m.current_leader, m.current_term)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resting_groups_keep_their_leader_and_fail_over_when_its_raft_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_three(tmp.path()).await;

    // A follower woken alone (its election timeout long passed) holds its election and
    // wakes its leader through the ping: the leader stays, in the same term.
    nodes[0].broker.create_log("calm", 1).await.unwrap();
    let g = group_everywhere(&nodes, "calm").await;
    let (leader, term) = resting_everywhere(&nodes, g).await;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    follower.groups.get(g).unwrap().rest.wake();
    // Several election timeouts (0.5–1 s) and the longest hold pass.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in &nodes {
        assert_eq!(
            view(n, g),
            (Some(leader), term),
            "node {} sees another leader or term after a follower woke alone",
            n.id
        );
    }

    // The Raft of a resting group stops on its leader, whose node still answers pings:
    // its followers hear so from the pings and elect another leader.
    nodes[0].broker.create_log("orphaned", 1).await.unwrap();
    let g = group_everywhere(&nodes, "orphaned").await;
    let (leader, _) = resting_everywhere(&nodes, g).await;
    let at = nodes.iter().find(|n| n.id == leader).unwrap();
    at.groups.get(g).unwrap().raft.shutdown().await.unwrap();
    let others: Vec<&ClusterNode> = nodes.iter().filter(|n| n.id != leader).collect();
    let new_leader = eventually("the followers elect another leader", || {
        let l = others[0]
            .groups
            .get(g)?
            .raft
            .metrics()
            .borrow_watched()
            .current_leader?;
        (l != leader && others.iter().all(|n| view(n, g).0 == Some(l))).then_some(l)
    })
    .await;
    assert_ne!(new_leader, leader);

    for n in nodes {
        n.cluster.shutdown().await;
        n.accept.abort();
        let broker = n.broker;
        tokio::task::spawn_blocking(move || broker.shutdown())
            .await
            .unwrap();
    }
}
