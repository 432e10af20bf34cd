//! Replication for Chariot through [openraft]: the Raft log of a group stored in a
//! chariot-log instance ([`RaftLogStore`]), and a partition's log as the state machine
//! its committed entries are applied to ([`PartitionStateMachine`]).
//!
//! Unfinished (the cluster issue): the network between nodes, the metadata group, the
//! `PartitionLog` of a replicated partition, and membership commands. What is here is
//! the storage both need, checked against openraft's own storage test suite.

pub mod cluster;
pub mod command;
pub mod entry;
pub mod error;
pub mod log_store;
pub mod network;
pub mod partition;
pub mod state_file;
pub mod state_machine;
mod sync;

pub use command::{Command, Response};
pub use error::{CodecError, RaftStoreError};
pub use log_store::RaftLogStore;
pub use partition::{Acks, RaftPartition};
pub use state_machine::{PartitionSnapshot, PartitionStateMachine};

openraft::declare_raft_types!(
    /// The types of every Chariot Raft group: u64 node ids, nodes known by address.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

/// A Raft log id of Chariot's groups.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A Raft log entry of Chariot's groups.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote of Chariot's groups.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// The membership as last applied, with the id of the entry that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
