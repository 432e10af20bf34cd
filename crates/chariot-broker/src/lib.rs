//! Chariot's domain: named logs made of partitions, publishing, reading, and consumer
//! groups with durable committed offsets.
//!
//! It owns what a log *means* to users (Rog's semantics: create, publish, fetch without
//! advancing, ack to advance; Chariot's extensions: batches, ranges, describe) on top of
//! `chariot-log`, which owns the bytes. It must never touch sockets or parse wire formats:
//! listeners in `chariot-server` decode requests and call this crate.
//!
//! Layout:
//! - [`broker`]: the [`Broker`]: a node's logs and the operations on them.
//! - `registry`: the one catalogue of logs (user, internal and system logs), the only
//!   code that creates, opens, replaces or deletes their directories.
//! - [`partition`]: a partition's write path ([`partition::PartitionLog`]): each publish
//!   one batch submitted to the storage engine's group commit, no thread per partition.
//! - [`groups`]: consumer-group offsets, stored as records of an internal log.
//! - [`scrub`]: the node's one scrub thread, CRC-checking sealed segments at a bounded
//!   rate.
//! - [`names`]: log-name rules and safe directory names.
//! - [`error`]: [`BrokerError`], whose texts are Rog's where Rog's clients see them.
//!
//! On disk (`<data dir>/`): `logs/<escaped name>/meta.json` plus one directory per
//! partition (`0/`, `1/`, …) holding that partition's segments; `system/` the same for
//! the system logs (`__consumer_offsets`, `__chariots_queue`, `__chariots_senders`).

pub mod broker;
pub mod chariots;
pub mod error;
pub mod groups;
pub mod names;
pub mod partition;
mod registry;
pub mod scrub;

pub use broker::{
    Broker, BrokerConfig, DamagedPartition, GroupOffset, LogDescription, LogSummary, PartitionInfo,
    RangeRead, StoredRecord, LOST_HEADER, MAX_PARTITIONS,
};
pub use error::{BrokerError, Result};
pub use partition::{now_ms, Acks, Appended, NewRecord};
pub use scrub::ScrubConfig;
