//! Errors of the broker. Their `Display` texts for the Rog-visible cases are Rog's own,
//! byte for byte, because Rog's clients compare them verbatim. As in the storage engine,
//! each message is complete on one line and causes are fields, not `source`s.

use chariot_log::LogError;

/// What went wrong with a broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Create with zero partitions (Rog's text) or more than
    /// [`MAX_PARTITIONS`](crate::MAX_PARTITIONS).
    #[error("{}", partition_count_text(*requested))]
    InvalidPartitionCount {
        /// The count asked for.
        requested: u32,
    },
    /// Create of a log that exists.
    #[error("Log {0} already exists")]
    LogExists(String),
    /// Any operation on a log that does not exist.
    #[error("No log registered with name {0}")]
    UnknownLog(String),
    /// A partition index not below the log's partition count.
    #[error("Trying to access partition {partition} but log {log} has {partitions} partitions")]
    PartitionOutOfRange {
        /// Requested partition.
        partition: u32,
        /// Log name.
        log: String,
        /// Partition count of the log.
        partitions: u32,
    },
    /// Fetch or ack at the end of the partition.
    #[error("No data left in the log to be read")]
    NoData,
    /// A read outside the retained range.
    #[error("offset {requested} out of range: valid offsets are {earliest}..{next}")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: u64,
        /// Earliest retained offset.
        earliest: u64,
        /// Next offset to be written.
        next: u64,
    },
    /// A record or batch above the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size received.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A publish with no records.
    #[error("a publish must carry at least one record")]
    Empty,
    /// A client-built batch that fails validation.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// A log name that cannot be used.
    #[error("invalid log name: {0}")]
    InvalidName(String),
    /// The disk is full; nothing was written.
    #[error("no space left on device; the record was not written")]
    NoSpace,
    /// Too much is waiting; retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// Propagated records from a datacenter this node was not configured with.
    #[error("datacenter {0} is not one this node takes records from; configure it with --remote-dc, POST /datacenters or --accept-dc")]
    UnknownDatacenter(u32),
    /// A public write, delete or create of a log the node keeps for itself.
    #[error("log {0} is internal to this node (the Chariots shared log): it can be read, but not written, deleted or created through the API; post Chariots records with POST /record or the record port")]
    InternalLog(String),
    /// The broker is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A replicated partition's write reached a replica that does not lead its group;
    /// `leader` is the node that does, if known (where to send it instead).
    #[error("{}", not_leader_text(*leader, addr.as_deref()))]
    NotLeader {
        /// The id of the partition's leader, if this replica knows one.
        leader: Option<u64>,
        /// The leader's inter-node address, if known.
        addr: Option<String>,
    },
    /// A write asked to be on every replica (`acks=all`) is committed on a quorum but
    /// was not confirmed by every replica in time: it is stored, at `base_offset`, and
    /// will reach the others as they catch up; `behind` names those that had not.
    #[error("stored at offset {base_offset} on a quorum, but replicas {behind:?} had not confirmed it within the wait (acks=all)")]
    NotAllReplicas {
        /// Offset of the write's first record.
        base_offset: u64,
        /// The replicas that had not confirmed it.
        behind: Vec<u64>,
    },
    /// A replicated write whose outcome is not known: it may or may not be committed
    /// (the leader lost its quorum or stopped while it was in flight).
    #[error("replication: {0}; the write may or may not have been stored")]
    Indeterminate(String),
    /// The partition's files are damaged (see `chariot_log::damage`): the intact part is
    /// readable, writes are refused until it is repaired, and nothing was changed.
    #[error("{0}")]
    Damaged(String),
    /// A storage engine failure with no more specific variant, kept whole (its message
    /// already carries its cause, so it is not also a `source`).
    #[error("storage error: {0}")]
    Log(LogError),
    /// Any other storage failure of the broker itself (its catalogue, its threads).
    #[error("storage error: {0}")]
    Storage(String),
}

fn not_leader_text(leader: Option<u64>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(id), Some(a)) => {
            format!("this node does not lead the partition; node {id} ({a}) does")
        }
        (Some(id), None) => format!("this node does not lead the partition; node {id} does"),
        _ => "this node does not lead the partition and knows no leader yet; retry".into(),
    }
}

fn partition_count_text(requested: u32) -> String {
    if requested == 0 {
        "Number of partitions must be at least 1".to_string()
    } else {
        format!(
            "Number of partitions must be at most {}, got {requested}",
            crate::MAX_PARTITIONS
        )
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::NoSpace { .. } => BrokerError::NoSpace,
            LogError::OffsetOutOfRange {
                requested,
                earliest,
                next,
            } => BrokerError::OffsetOutOfRange {
                requested,
                earliest,
                next,
            },
            LogError::BatchTooLarge { size, max } => BrokerError::TooLarge { size, max },
            LogError::EmptyBatch => BrokerError::Empty,
            LogError::InvalidBatch(b) => BrokerError::InvalidBatch(b.to_string()),
            LogError::Closed => BrokerError::ShuttingDown,
            e @ (LogError::Damaged(_) | LogError::Corrupt { .. }) => {
                BrokerError::Damaged(e.to_string())
            }
            other => BrokerError::Log(other),
        }
    }
}

/// Result alias for the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
