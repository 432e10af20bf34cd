//! Consumer groups: a committed offset per (log, partition, group), durable.
//!
//! Commits are records in a system log of the registry, `__consumer_offsets` (Kafka's
//! design): an ack appends `(log, partition, group) → offset` and returns once that record
//! is fsynced, so concurrent acks share one group commit. On start the log is replayed
//! into memory; when it has grown past a threshold it is compacted: the registry replaces
//! its contents with the current values (crash-safe, see `registry`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chariot_log::{Log, RecordBatchBuilder};

use crate::error::{BrokerError, Result};
use crate::partition::{now_ms, Entry, NewRecord, PartitionLog};
use crate::registry::{Registry, OFFSETS_LOG};

const KIND_COMMIT: &[u8] = b"commit";
const KIND_DELETE_LOG: &[u8] = b"delete-log";
/// Compact on open once the commit log is larger than this.
const COMPACT_ABOVE_BYTES: u64 = 32 << 20;

/// Identifies one consumer group's position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// Log name.
    pub log: String,
    /// Partition.
    pub partition: u32,
    /// Group name.
    pub group: String,
}

impl GroupKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + self.log.len() + self.group.len());
        k.extend_from_slice(&(self.log.len() as u16).to_be_bytes());
        k.extend_from_slice(self.log.as_bytes());
        k.extend_from_slice(&self.partition.to_be_bytes());
        k.extend_from_slice(&(self.group.len() as u16).to_be_bytes());
        k.extend_from_slice(self.group.as_bytes());
        k
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let (log, rest) = take_str(b)?;
        let (p, rest) = rest.split_at_checked(4)?;
        let partition = u32::from_be_bytes(p.try_into().ok()?);
        let (group, rest) = take_str(rest)?;
        rest.is_empty().then_some(Self {
            log,
            partition,
            group,
        })
    }
}

fn take_str(b: &[u8]) -> Option<(String, &[u8])> {
    let (len, rest) = b.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
    let (s, rest) = rest.split_at_checked(len)?;
    Some((String::from_utf8(s.to_vec()).ok()?, rest))
}

/// Durable committed offsets of every consumer group.
pub(crate) struct OffsetStore {
    /// In-memory truth of *reserved* positions: an ack bumps it before its commit record is
    /// durable, so concurrent acks of one group never compute the same next offset.
    offsets: Mutex<HashMap<GroupKey, u64>>,
    appender: Arc<dyn PartitionLog>,
}

impl OffsetStore {
    /// Replays (and if large, compacts) the offsets log. Blocking.
    pub(crate) fn open(registry: &Registry) -> Result<Self> {
        let mut entry = registry.open_system(OFFSETS_LOG)?;
        let offsets = replay(&entry.partition(0)?.log())?;
        let log = &entry.partition(0)?.log();
        // A damaged log is never compacted: compaction would replace the files an
        // operator has to repair. (Its damage is listed in `/health` like any other.)
        if log.size_bytes() > COMPACT_ABOVE_BYTES && log.damage().is_none() {
            drop(entry);
            entry = registry.replace_partition(OFFSETS_LOG, 0, |fresh| compact(fresh, &offsets))?;
        }
        let appender = Arc::clone(&entry.partition(0)?.writer);
        Ok(Self {
            offsets: Mutex::new(offsets),
            appender,
        })
    }

    /// The committed offset of a group (0 for a group never seen).
    pub(crate) fn get(&self, key: &GroupKey) -> u64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Every group of one partition with its offset, sorted by group name.
    pub(crate) fn groups_of(&self, log: &str, partition: u32) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .lock()
            .iter()
            .filter(|(k, _)| k.log == log && k.partition == partition)
            .map(|(k, o)| (k.group.clone(), *o))
            .collect();
        v.sort();
        v
    }

    /// Moves a group forward by one, unless that would pass `end`; returns the new offset
    /// once it is durable. `floor` (the partition's earliest offset) replaces a committed
    /// offset that retention has passed.
    pub(crate) async fn advance(&self, key: GroupKey, floor: u64, end: u64) -> Result<u64> {
        let next = {
            let mut map = self.lock();
            let current = map.get(&key).copied().unwrap_or(0).max(floor);
            if current >= end {
                return Err(BrokerError::NoData);
            }
            map.insert(key.clone(), current + 1);
            current + 1
        };
        if let Err(e) = self
            .append(Entry::Records(vec![commit_record(&key, next)]))
            .await
        {
            // Give the reservation back unless a later ack already built on it.
            let mut map = self.lock();
            if map.get(&key) == Some(&next) {
                map.insert(key, next - 1);
            }
            return Err(e);
        }
        Ok(next)
    }

    /// Moves a group to `max(committed, offset)` (with `floor` as in [`Self::advance`])
    /// and returns it once durable. The commit record is written even when nothing
    /// moves, so the answer never rests on a concurrent ack's write in flight.
    pub(crate) async fn ack_to(&self, key: GroupKey, offset: u64, floor: u64) -> Result<u64> {
        let next = {
            let mut map = self.lock();
            let next = map.get(&key).copied().unwrap_or(0).max(floor).max(offset);
            map.insert(key.clone(), next);
            next
        };
        // Replay keeps the largest commit of a group, so a failed write leaves no
        // trace to undo; the reservation stands for a retry to make durable.
        self.append(Entry::Records(vec![commit_record(&key, next)]))
            .await?;
        Ok(next)
    }

    /// Forgets every group of a deleted log, durably.
    pub(crate) async fn delete_log(&self, log: &str) -> Result<()> {
        self.lock().retain(|k, _| k.log != log);
        let record = NewRecord {
            key: Some(Bytes::copy_from_slice(log.as_bytes())),
            value: Bytes::new(),
            headers: vec![(
                Bytes::from_static(b"kind"),
                Bytes::from_static(KIND_DELETE_LOG),
            )],
            timestamp: now_ms(),
        };
        self.append(Entry::Records(vec![record])).await
    }

    async fn append(&self, entry: Entry) -> Result<()> {
        self.appender.append(entry).await.map(|_| ())
    }

    pub(crate) fn stop(&self) {
        self.appender.stop();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupKey, u64>> {
        self.offsets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn commit_record(key: &GroupKey, offset: u64) -> NewRecord {
    NewRecord {
        key: Some(Bytes::from(key.encode())),
        value: Bytes::copy_from_slice(&offset.to_be_bytes()),
        headers: vec![(Bytes::from_static(b"kind"), Bytes::from_static(KIND_COMMIT))],
        timestamp: now_ms(),
    }
}

fn replay(log: &Log) -> Result<HashMap<GroupKey, u64>> {
    let mut map = HashMap::new();
    // Commits `repair` marked as lost are gone (skipped); the groups they moved resume
    // earlier.
    chariot_log::scan::replay(log, |rec| {
        let kind = rec
            .headers
            .iter()
            .find(|(k, _)| *k == b"kind")
            .map(|(_, v)| *v);
        let key = rec.key.unwrap_or_default();
        match kind {
            Some(KIND_COMMIT) => {
                let (Some(k), Ok(v)) = (GroupKey::decode(key), <[u8; 8]>::try_from(rec.value))
                else {
                    return Err(BrokerError::Storage(format!(
                        "malformed consumer offset record at offset {}",
                        rec.offset
                    )));
                };
                // Concurrent acks of one group may land in either order; an
                // offset only ever moves forward, so the largest one wins.
                let offset = u64::from_be_bytes(v);
                let e = map.entry(k).or_insert(offset);
                *e = (*e).max(offset);
            }
            Some(KIND_DELETE_LOG) => {
                let log_name = String::from_utf8_lossy(key);
                map.retain(|k: &GroupKey, _| k.log != log_name);
            }
            _ => {
                return Err(BrokerError::Storage(format!(
                    "unknown consumer offset record at offset {}",
                    rec.offset
                )))
            }
        }
        Ok(())
    })?;
    Ok(map)
}

/// Writes the current offsets into `fresh`, the compacted log's new contents.
fn compact(fresh: &Log, offsets: &HashMap<GroupKey, u64>) -> Result<()> {
    let mut entries: Vec<_> = offsets.iter().collect();
    entries.sort();
    for chunk in entries.chunks(1000) {
        let mut b = RecordBatchBuilder::new();
        for (k, v) in chunk {
            commit_record(k, **v).push_to(&mut b);
        }
        fresh.append(&mut b.build())?;
    }
    tracing::info!(groups = offsets.len(), "compacted consumer offsets");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chariot_log::LogConfig;

    fn open(dir: &std::path::Path) -> OffsetStore {
        OffsetStore::open(&Registry::open(dir, &LogConfig::default()).unwrap()).unwrap()
    }

    #[test]
    fn group_keys_round_trip() {
        let k = GroupKey {
            log: "orders".into(),
            partition: 7,
            group: "billing".into(),
        };
        assert_eq!(GroupKey::decode(&k.encode()), Some(k));
        assert_eq!(GroupKey::decode(b"\x00\x05ab"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_survive_reopen_compaction_and_log_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let key = |g: &str| GroupKey {
            log: "l".into(),
            partition: 0,
            group: g.into(),
        };
        {
            let store = open(dir.path());
            for _ in 0..5 {
                store.advance(key("a"), 0, 10).await.unwrap();
            }
            store.advance(key("b"), 0, 10).await.unwrap();
            assert!(matches!(
                store.advance(key("c"), 10, 10).await,
                Err(BrokerError::NoData)
            ));
        }
        let offsets = {
            let store = open(dir.path());
            assert_eq!(store.get(&key("a")), 5);
            assert_eq!(store.get(&key("b")), 1);
            assert_eq!(
                store.groups_of("l", 0),
                vec![("a".into(), 5), ("b".into(), 1)]
            );
            let snapshot = store.lock().clone();
            snapshot
        };
        let registry = Registry::open(dir.path(), &LogConfig::default()).unwrap();
        drop(registry.open_system(OFFSETS_LOG).unwrap());
        registry
            .replace_partition(OFFSETS_LOG, 0, |fresh| compact(fresh, &offsets))
            .unwrap();
        let store = OffsetStore::open(&registry).unwrap();
        assert_eq!(store.get(&key("a")), 5);
        store.delete_log("l").await.unwrap();
        drop((store, registry));
        let store = open(dir.path());
        assert_eq!(store.get(&key("a")), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_landing_out_of_order_replay_to_the_largest() {
        let dir = tempfile::tempdir().unwrap();
        let key = GroupKey {
            log: "l".into(),
            partition: 0,
            group: "g".into(),
        };
        {
            let store = open(dir.path());
            // Two concurrent acks reserved 6 and 7; 7's commit reached the log first.
            store
                .append(Entry::Records(vec![commit_record(&key, 7)]))
                .await
                .unwrap();
            store
                .append(Entry::Records(vec![commit_record(&key, 6)]))
                .await
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.get(&key), 7);
    }
}
