//! The network between nodes: one port per node, one connection per node pair, shared
//! by every Raft group (openraft-multi adapts it to each group). `wire` is the frame
//! format, `peers` the sending side, `server` the receiving side.

pub mod peers;
pub mod rest;
pub mod server;
pub mod wire;

use openraft::network::RaftNetworkFactory;
use openraft_multi::GroupNetworkAdapter;

pub use peers::Peers;
pub use rest::Rest;
pub use server::{serve_connection, Group, Groups, PartitionRaft, Quarantine};

use crate::TypeConfig;

/// Names a Raft group across the cluster.
pub type GroupId = u64;

/// Most entries one append RPC carries (each at most 8 MiB: the frame limit follows).
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

/// The network of one group: the node's shared [`Peers`], tagged with the group.
#[derive(Clone)]
pub struct GroupNetwork {
    peers: Peers,
    group: GroupId,
}

impl GroupNetwork {
    /// Group `group`'s view of `peers`.
    pub fn new(peers: Peers, group: GroupId) -> Self {
        Self { peers, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, Peers>;

    async fn new_client(
        &mut self,
        target: u64,
        node: &openraft::impls::BasicNode,
    ) -> Self::Network {
        self.peers.set_addr(target, &node.addr);
        GroupNetworkAdapter::new(self.peers.clone(), target, self.group)
    }
}

/// openraft's configuration for a partition group: pre-vote on, heartbeats every
/// 100 ms, elections after 0.5–1 s without one, appends of at most
/// [`MAX_PAYLOAD_ENTRIES`] entries, 10 s for each frame of a snapshot.
pub fn partition_config(cluster: &str) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster.to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        enable_pre_vote: Some(true),
        // A snapshot is a partition's files: its last frame waits for the install.
        install_snapshot_timeout: 10_000,
        ..openraft::Config::default()
    }
    .validate()
}
