//! The broker: named logs of partitions, publish, read, and consumer groups.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chariot_log::{LogConfig, RecordBatch};
use serde::Serialize;

use crate::error::{BrokerError, Result};
use crate::groups::{GroupKey, OffsetStore};
use crate::names;
use crate::partition::{Acks, Appended, Catalog, Entry, NewRecord, PartitionLog};
use crate::registry::{Kind, LogEntry, Registry};
use crate::scrub::{ScrubConfig, Scrubber};

/// Largest partition count a log may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Configuration of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Root of everything the broker stores.
    pub data_dir: PathBuf,
    /// Configuration of every partition's log.
    pub log: LogConfig,
    /// Largest single record value accepted by a publish.
    pub max_record_bytes: usize,
    /// The background check of sealed segments.
    pub scrub: ScrubConfig,
}

impl BrokerConfig {
    /// Defaults (64 MiB segments, group commit, 1 MiB records) under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            log: LogConfig::default(),
            max_record_bytes: 1 << 20,
            scrub: ScrubConfig::default(),
        }
    }
}

/// A log as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogSummary {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
}

/// One partition as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: u32,
    /// Earliest retained offset.
    pub earliest_offset: u64,
    /// Offset the next record will get (records below it are readable).
    pub next_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Number of segments.
    pub segments: usize,
    /// Consumer groups and their committed offsets.
    pub groups: Vec<GroupOffset>,
    /// Damage found in its active segment when it was opened (file, byte position,
    /// reason): the records before it are readable, publishes are refused until
    /// `chariot repair`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
    /// Damaged batches of its sealed segments (found at open or by the scrub): reads
    /// of them fail naming file and position, the records around them are served,
    /// publishes go on; `chariot repair` mends them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed_damage: Vec<String>,
}

/// A damaged partition, as `/health` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedPartition {
    /// Log name (`__consumer_offsets` for the consumer groups' own log).
    pub log: String,
    /// Partition index.
    pub partition: u32,
    /// File, byte position and reason.
    pub damage: String,
    /// Whether publishes to the partition are refused (damage in its active segment;
    /// damage in a sealed segment leaves it writable).
    pub read_only: bool,
}

/// A consumer group's committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    /// Group name.
    pub group: String,
    /// Offset of the next record the group will fetch.
    pub offset: u64,
}

/// A log as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogDescription {
    /// Name.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Its partitions.
    pub partitions: Vec<PartitionInfo>,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Offset in its partition.
    pub offset: u64,
    /// Producer timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers (tags).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StoredRecord {
    /// Bytes of its key, value and headers.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Whole batches read from a partition.
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// Earliest retained offset.
    pub earliest_offset: u64,
    /// Next offset of the partition.
    pub next_offset: u64,
    /// Concatenated batches in the format of `docs/format.md`.
    pub batches: Vec<u8>,
}

/// Chariot's domain object: every log of one node.
///
/// Invariants: a log listed here has all its partitions open; its catalogue entry is
/// durable before it becomes visible, so a crash never leaves a half-created log that
/// restarts as something else (the `Registry` sees to it); a publish is answered only
/// once its records are durable (under the default sync policy).
pub struct Broker {
    config: BrokerConfig,
    registry: Arc<Registry>,
    /// Started once the node is up ([`Broker::start_scrub`]); stopped first at shutdown
    /// (it holds a partition while it checks it).
    scrubber: Mutex<Option<Scrubber>>,
    /// Taken out at shutdown, after which group operations fail with `ShuttingDown`.
    offsets: std::sync::Mutex<Option<Arc<OffsetStore>>>,
    /// Where user logs are created and deleted when this node is in a cluster.
    catalog: std::sync::OnceLock<Arc<dyn Catalog>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens (creating if needed) the data directory, recovering every log. Blocking.
    pub fn open(config: BrokerConfig) -> Result<Self> {
        config.log.validate().map_err(BrokerError::Log)?;
        let registry = Arc::new(Registry::open(&config.data_dir, &config.log)?);
        let offsets = OffsetStore::open(&registry)?;
        tracing::info!(
            logs = registry.all().len(),
            dir = %config.data_dir.display(),
            "broker open"
        );
        Ok(Self {
            config,
            registry,
            scrubber: Mutex::new(None),
            offsets: std::sync::Mutex::new(Some(Arc::new(offsets))),
            catalog: std::sync::OnceLock::new(),
        })
    }

    /// Starts the background scrub of sealed segments (see [`crate::scrub`]) unless it
    /// runs or is configured off. Called once start-up is done: start-up may replace a
    /// system log (compaction), which must not be held open by a scrub.
    pub fn start_scrub(&self) -> Result<()> {
        let mut slot = self.scrubber.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Scrubber::start(Arc::clone(&self.registry), self.config.scrub)?;
        }
        Ok(())
    }

    /// The catalogue, for the services that keep their state in system logs.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configuration in use.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    fn get(&self, name: &str) -> Result<Arc<LogEntry>> {
        self.registry.get(name)
    }

    fn offsets(&self) -> Result<Arc<OffsetStore>> {
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(BrokerError::ShuttingDown)
    }

    /// Reserves `name` for an internal log (before it exists): from now on the public
    /// API can read it but not write, delete or create it.
    pub fn reserve_internal(&self, name: &str) {
        self.registry.reserve_internal(name);
    }

    /// Whether `name` is an internal log (system logs included).
    pub fn is_internal(&self, name: &str) -> bool {
        self.registry.is_internal(name)
    }

    fn refuse_internal(&self, name: &str) -> Result<()> {
        if self.is_internal(name) {
            return Err(BrokerError::InternalLog(name.to_string()));
        }
        Ok(())
    }

    /// Creates a log with `partitions` partitions (through the cluster's catalog when
    /// there is one).
    pub async fn create_log(&self, name: &str, partitions: u32) -> Result<()> {
        self.refuse_internal(name)?;
        match self.catalog.get() {
            Some(catalog) => {
                check_new_log(name, partitions)?;
                catalog.create_log(name, partitions).await
            }
            None => self.create(name, partitions, Kind::User).await,
        }
    }

    /// Hands user logs' creates and deletes to `catalog` from now on (a cluster node);
    /// false if a catalog was set already.
    pub fn set_catalog(&self, catalog: Arc<dyn Catalog>) -> bool {
        self.catalog.set(catalog).is_ok()
    }

    /// Lists replicated log `name`, whose partitions on this node are `partitions` (the
    /// catalog calls it once the log exists); its reads and appends go to them.
    pub fn attach_log(&self, name: &str, partitions: Vec<Arc<dyn PartitionLog>>) -> Result<()> {
        if partitions.is_empty() || partitions.len() > MAX_PARTITIONS as usize {
            return Err(BrokerError::InvalidPartitionCount {
                requested: partitions.len() as u32,
            });
        }
        self.registry.attach(name, partitions)?;
        tracing::info!(log = name, "replicated log listed");
        Ok(())
    }

    /// Takes replicated log `name` out of the listing, with its consumer groups (the
    /// catalog calls it once the log is deleted).
    pub async fn detach_log(&self, name: &str) -> Result<()> {
        self.registry.detach(name)?;
        self.offsets()?.delete_log(name).await?;
        tracing::info!(log = name, "replicated log unlisted");
        Ok(())
    }

    /// Takes replicated log `name` out of this node's listing while the log lives on
    /// in the cluster (this node no longer holds all of its partitions); its consumer
    /// groups stay with its partitions.
    pub fn unlist_log(&self, name: &str) -> Result<()> {
        self.registry.detach(name)?;
        tracing::info!(log = name, "replicated log no longer served on this node");
        Ok(())
    }

    /// Creates the internal log unless it exists, exempt from retention (its history is
    /// state).
    pub async fn ensure_internal_log(&self, name: &str, partitions: u32) -> Result<()> {
        self.reserve_internal(name);
        match self.create(name, partitions, Kind::Internal).await {
            Ok(()) | Err(BrokerError::LogExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, name: &str, partitions: u32, kind: Kind) -> Result<()> {
        check_new_log(name, partitions)?;
        self.registry.create(name, partitions, kind).await?;
        tracing::info!(log = name, partitions, "log created");
        Ok(())
    }

    /// Creates the log unless it exists (with any partition count).
    pub async fn ensure_log(&self, name: &str, partitions: u32) -> Result<()> {
        match self.create_log(name, partitions).await {
            Ok(()) | Err(BrokerError::LogExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a log, its data and its consumer groups. If the directory cannot be
    /// taken away, the log stays listed and readable.
    pub async fn delete_log(&self, name: &str) -> Result<()> {
        self.refuse_internal(name)?;
        if let Some(catalog) = self.catalog.get() {
            return catalog.delete_log(name).await;
        }
        self.registry.delete(name).await?;
        self.offsets()?.delete_log(name).await?;
        tracing::info!(log = name, "log deleted");
        Ok(())
    }

    /// All logs users see (system logs are not listed), by name.
    pub fn list_logs(&self) -> Vec<LogSummary> {
        self.registry
            .all()
            .iter()
            .filter(|e| e.meta.kind() != Kind::System)
            .map(|e| LogSummary {
                name: e.meta.name.clone(),
                partitions: e.meta.partitions,
            })
            .collect()
    }

    /// Partitions, offsets and groups of a log.
    pub fn describe_log(&self, name: &str) -> Result<LogDescription> {
        let entry = self.get(name)?;
        let mut partitions = Vec::with_capacity(entry.partitions.len());
        for (i, p) in entry.partitions.iter().enumerate() {
            let groups = match p.writer.groups() {
                Some(g) => g.list(),
                None => self.offsets()?.groups_of(name, i as u32),
            };
            let groups = groups
                .into_iter()
                .map(|(group, offset)| GroupOffset { group, offset })
                .collect();
            // One copy for every figure (a replica's copy may be replaced meanwhile).
            let plog = p.log();
            partitions.push(PartitionInfo {
                partition: i as u32,
                earliest_offset: plog.earliest_offset(),
                next_offset: plog.next_offset(),
                size_bytes: plog.size_bytes(),
                segments: plog.segments().len(),
                groups,
                damage: plog.damage().map(ToString::to_string),
                sealed_damage: plog
                    .sealed_damage()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        Ok(LogDescription {
            name: entry.meta.name.clone(),
            created_at_ms: entry.meta.created_at_ms,
            partitions,
        })
    }

    /// Every damaged place known in the partitions' files (found when they were
    /// opened or by the scrub), one entry per place, system logs (`__consumer_offsets`,
    /// …) included.
    pub fn damaged_partitions(&self) -> Vec<DamagedPartition> {
        let mut out = Vec::new();
        for e in self.registry.all() {
            for (i, p) in e.partitions.iter().enumerate() {
                let place = |damage: String, read_only: bool| DamagedPartition {
                    log: e.meta.name.clone(),
                    partition: i as u32,
                    damage,
                    read_only,
                };
                // Read-only is the partition's state: damage in its active segment.
                let plog = p.log();
                let read_only = plog.damage().is_some();
                out.extend(plog.damage().map(|d| place(d.to_string(), read_only)));
                out.extend(
                    plog.sealed_damage()
                        .iter()
                        .map(|d| place(d.to_string(), read_only)),
                );
            }
        }
        out
    }

    /// Number of partitions of a log.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(self.get(name)?.meta.partitions)
    }

    /// Publishes records to one partition; returns once they are durable.
    pub async fn publish(
        &self,
        log: &str,
        partition: u32,
        records: Vec<NewRecord>,
    ) -> Result<Appended> {
        self.publish_acks(log, partition, records, Acks::Quorum)
            .await
    }

    /// [`Broker::publish`], acknowledged once `acks` copies hold the records.
    pub async fn publish_acks(
        &self,
        log: &str,
        partition: u32,
        records: Vec<NewRecord>,
        acks: Acks,
    ) -> Result<Appended> {
        self.refuse_internal(log)?;
        self.publish_unchecked(log, partition, records, acks).await
    }

    /// [`Broker::publish`] to an internal log, for the service that owns it.
    pub async fn publish_internal(
        &self,
        log: &str,
        partition: u32,
        records: Vec<NewRecord>,
    ) -> Result<Appended> {
        self.publish_unchecked(log, partition, records, Acks::Quorum)
            .await
    }

    async fn publish_unchecked(
        &self,
        log: &str,
        partition: u32,
        records: Vec<NewRecord>,
        acks: Acks,
    ) -> Result<Appended> {
        if records.is_empty() {
            return Err(BrokerError::Empty);
        }
        self.check_record_sizes(records.iter().map(|r| r.value.len()))?;
        let total: usize = records.iter().map(NewRecord::encoded_len).sum();
        if total + chariot_log::batch::HEADER_LEN > self.config.log.max_batch_bytes {
            return Err(BrokerError::TooLarge {
                size: total,
                max: self.config.log.max_batch_bytes,
            });
        }
        let entry = self.get(log)?;
        entry
            .partition(partition)?
            .writer
            .append_acks(Entry::Records(records), acks)
            .await
    }

    /// Refuses a publish holding a record value above `max_record_bytes`.
    fn check_record_sizes(&self, mut sizes: impl Iterator<Item = usize>) -> Result<()> {
        let max = self.config.max_record_bytes;
        match sizes.find(|&size| size > max) {
            Some(size) => Err(BrokerError::TooLarge { size, max }),
            None => Ok(()),
        }
    }

    /// Publishes a client-built record batch (`docs/format.md`) as is.
    pub async fn publish_batch(
        &self,
        log: &str,
        partition: u32,
        batch: Vec<u8>,
    ) -> Result<Appended> {
        self.publish_batch_acks(log, partition, batch, Acks::Quorum)
            .await
    }

    /// [`Broker::publish_batch`], answered once the copies `acks` names hold the batch
    /// (on a cluster; a single node is its only copy).
    pub async fn publish_batch_acks(
        &self,
        log: &str,
        partition: u32,
        batch: Vec<u8>,
        acks: Acks,
    ) -> Result<Appended> {
        let max_batch = self.config.log.max_batch_bytes;
        if batch.len() > max_batch {
            return Err(BrokerError::TooLarge {
                size: batch.len(),
                max: max_batch,
            });
        }
        self.refuse_internal(log)?;
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        let batch =
            RecordBatch::from_vec(batch).map_err(|e| BrokerError::InvalidBatch(e.to_string()))?;
        if batch.is_empty() {
            return Err(BrokerError::Empty);
        }
        if batch.header().flags != 0 {
            // Only `repair` writes flagged (lost-record) batches.
            return Err(BrokerError::InvalidBatch(format!(
                "flags must be 0, not {:#04x}",
                batch.header().flags
            )));
        }
        self.check_record_sizes(batch.records().map(|r| r.value.len()))?;
        p.writer.append_acks(Entry::Batch(batch), acks).await
    }

    /// Whole batches from `offset`, at most `max_bytes` (but at least one batch).
    pub fn read_range(
        &self,
        log: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<RangeRead> {
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        // A reply must fit the protocol's frame: whole batches up to the batch limit
        // (one batch is never larger), whatever the client asked for.
        let r = p
            .log()
            .read(offset, max_bytes.min(self.config.log.max_batch_bytes))?;
        Ok(RangeRead {
            earliest_offset: r.log_earliest,
            next_offset: r.log_next,
            batches: r.bytes,
        })
    }

    /// Up to `limit` records from `offset` on.
    pub fn read_records(
        &self,
        log: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_records_bounded(log, partition, offset, limit, usize::MAX)
    }

    /// Up to `limit` records from `offset` on, stopping once their keys, values and
    /// headers reach `max_bytes` (at least one record is returned if there is one).
    pub fn read_records_bounded(
        &self,
        log: &str,
        partition: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        let plog = p.log();
        let mut out = Vec::new();
        let mut at = offset;
        let mut bytes = 0usize;
        while out.len() < limit && bytes < max_bytes {
            // A damaged batch ends a read that already has records (the next read,
            // starting at it, reports the damage).
            let r = match plog.read(at, 1 << 20) {
                Ok(r) => r,
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e.into()),
            };
            if r.bytes.is_empty() {
                break;
            }
            'batches: for batch in r.batches() {
                for rec in batch.records() {
                    if rec.offset < at {
                        continue;
                    }
                    if out.len() >= limit || (bytes >= max_bytes && !out.is_empty()) {
                        break 'batches;
                    }
                    let record = stored(&rec, batch.is_lost());
                    bytes = bytes.saturating_add(record.size());
                    out.push(record);
                }
            }
            // A loop ended early by a bound ends the read too (the `while` says so).
            at = r.next_offset;
        }
        Ok(out)
    }

    /// The record at a group's committed offset; the offset does not move (Rog's fetch).
    pub fn fetch(&self, log: &str, partition: u32, group: &str) -> Result<StoredRecord> {
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        let committed = match p.writer.groups() {
            Some(g) => g.offset(group),
            None => self.offsets()?.get(&group_key(log, partition, group)),
        };
        // A group left behind by retention resumes at the earliest retained record.
        let plog = p.log();
        let at = committed.max(plog.earliest_offset());
        if at >= plog.next_offset() {
            return Err(BrokerError::NoData);
        }
        let r = plog.read(at, 1)?;
        let found = r
            .batches()
            .flat_map(|b| {
                let lost = b.is_lost();
                b.records().map(|r| stored(&r, lost)).collect::<Vec<_>>()
            })
            .find(|rec| rec.offset == at);
        found.ok_or(BrokerError::NoData)
    }

    /// Moves a group past one record (never past the end); returns its new offset once
    /// durable.
    pub async fn ack(&self, log: &str, partition: u32, group: &str) -> Result<u64> {
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        if let Some(g) = p.writer.groups() {
            return g.advance(group).await;
        }
        let plog = p.log();
        let (floor, end) = (plog.earliest_offset(), plog.next_offset());
        self.offsets()?
            .advance(group_key(log, partition, group), floor, end)
            .await
    }

    /// Moves `group` to `offset` on the partition, never back: its committed offset
    /// becomes `max(committed, offset)`, durably (a retry is harmless). `offset` may be
    /// at most the partition's next offset. Returns the committed offset now.
    pub async fn ack_to(&self, log: &str, partition: u32, group: &str, offset: u64) -> Result<u64> {
        let entry = self.get(log)?;
        let p = entry.partition(partition)?;
        if let Some(g) = p.writer.groups() {
            return g.ack_to(group, offset).await;
        }
        let plog = p.log();
        let (floor, end) = (plog.earliest_offset(), plog.next_offset());
        if offset > end {
            return Err(BrokerError::OffsetOutOfRange {
                requested: offset,
                earliest: floor,
                next: end,
            });
        }
        self.offsets()?
            .ack_to(group_key(log, partition, group), offset, floor)
            .await
    }

    /// Stops every partition's writes (what they accepted is appended), then flushes and closes
    /// every log. Later calls fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        let scrubber = self
            .scrubber
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = scrubber {
            s.stop();
        }
        let logs = self.registry.take_all();
        for entry in logs.values() {
            for p in &entry.partitions {
                p.writer.stop();
            }
        }
        for (name, entry) in logs {
            // Flushing and closing happens when the last reference to a log drops; an
            // in-flight read may hold one a moment longer.
            if Arc::strong_count(&entry) > 1 {
                tracing::debug!(log = %name, "log still referenced at shutdown");
            }
        }
        if let Some(o) = self
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            o.stop();
        }
        tracing::info!("broker closed");
    }
}

/// A name and partition count a new log may have.
fn check_new_log(name: &str, partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(BrokerError::InvalidPartitionCount {
            requested: partitions,
        });
    }
    names::validate(name)
}

fn group_key(log: &str, partition: u32, group: &str) -> GroupKey {
    GroupKey {
        log: log.to_string(),
        partition,
        group: group.to_string(),
    }
}

impl StoredRecord {
    /// Headers as text (invalid UTF-8 replaced), by name; Chariots tags are headers.
    pub fn headers_lossy(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

/// Header of a record that stands for one lost to damage (in a batch `repair` wrote):
/// its value and key are empty, whatever padding the placeholder holds.
pub const LOST_HEADER: &str = "chariot.lost";

fn stored(r: &chariot_log::RecordView<'_>, lost: bool) -> StoredRecord {
    if lost {
        return StoredRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: None,
            value: Vec::new(),
            headers: vec![(LOST_HEADER.as_bytes().to_vec(), b"damaged".to_vec())],
        };
    }
    StoredRecord {
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.to_vec(),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    }
}

impl From<&StoredRecord> for NewRecord {
    fn from(r: &StoredRecord) -> Self {
        NewRecord {
            key: r.key.clone().map(Bytes::from),
            value: Bytes::from(r.value.clone()),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
                .collect(),
            timestamp: r.timestamp,
        }
    }
}
