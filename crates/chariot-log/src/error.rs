//! Errors of the storage engine.

use std::io;
use std::path::PathBuf;

/// Why bytes are not a well-formed batch.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the fixed header or the declared length needs.
    #[error("batch truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The length field disagrees with the buffer.
    #[error("batch length field says {declared} bytes but the buffer has {actual}")]
    LengthMismatch {
        /// Length from the header.
        declared: u64,
        /// Length of the buffer.
        actual: u64,
    },
    /// Unknown format version.
    #[error("unknown batch format version {0}")]
    BadMagic(u8),
    /// Checksum mismatch: the bytes were damaged.
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC from the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A record does not fit its declared lengths.
    #[error("record {index} of the batch is malformed")]
    BadRecord {
        /// Index of the record within the batch.
        index: u32,
    },
    /// Bytes left after the declared number of records.
    #[error("{count} bytes follow the last record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Errors of [`crate::Log`].
///
/// Each message is complete on one line, its underlying cause included, so causes are
/// fields rather than [`std::error::Error::source`]: a reporter walking the chain (such
/// as `anyhow`'s `{:#}`) would otherwise print every cause twice.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on a file of the log.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file system is full; the log is unchanged.
    #[error("no space left on device while writing {path}; the log is unchanged")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// The directory or file system does not allow writing.
    #[error("{path} is read-only: {error}")]
    ReadOnly {
        /// The path that refused the write.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A batch on disk failed its checks where damage cannot be a torn write.
    #[error("corrupt batch in {path} at byte position {position} (offset {offset}): {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the batch in the file.
        position: u64,
        /// Logical offset expected at that position.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The requested offset is outside `[earliest, next]`.
    #[error("offset {requested} out of range: valid offsets are {earliest}..{next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// Earliest offset still held.
        earliest: u64,
        /// Offset the next append will get.
        next: u64,
    },
    /// The batch exceeds the configured maximum.
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Size of the batch.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The batch holds no record.
    #[error("batch holds no records")]
    EmptyBatch,
    /// The batch is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(BatchError),
    /// `truncate_to` was asked to cut inside a batch.
    #[error("offset {offset} is not a batch boundary")]
    NotBatchBoundary {
        /// The offset asked for.
        offset: u64,
    },
    /// An fsync failed earlier: what reached the disk is unknown, so writes are refused
    /// until the log is reopened (and recovered) rather than retried blindly.
    #[error("log is poisoned by an earlier fsync failure; reopen it to recover")]
    Poisoned,
    /// A `truncate_to` removed this append's records before they became durable.
    #[error("records up to offset {offset} were removed by a concurrent truncate")]
    TruncatedConcurrently {
        /// Last offset of the discarded append.
        offset: u64,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// The configuration is unusable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// The active segment holds damage with intact batches after it: the log serves its
    /// intact prefix and refuses writes until it is repaired.
    #[error("{0}; writes are refused until the log is repaired")]
    Damaged(Box<crate::damage::Damage>),
    /// Another process holds the directory (waited for as long as
    /// [`LogConfig::lock_wait`](crate::LogConfig::lock_wait) allows).
    #[error(
        "{path} is locked by another process (still locked after {waited:?}): another \
         chariot server or `chariot repair` is using this data directory, or a previous \
         server is still shutting down"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long the open waited for it.
        waited: std::time::Duration,
    },
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> Self {
        LogError::InvalidBatch(e)
    }
}

impl LogError {
    /// Maps an I/O error to the typed variants users act on (full disk, read-only).
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        let path = path.into();
        match error.raw_os_error() {
            Some(libc_enospc) if libc_enospc == ENOSPC || libc_enospc == EDQUOT => {
                LogError::NoSpace { path }
            }
            Some(code) if code == EROFS || code == EACCES || code == EPERM => {
                LogError::ReadOnly { path, error }
            }
            _ => LogError::Io { op, path, error },
        }
    }
}

// Linux errno values; std does not expose them as constants and libc is not worth a
// dependency of the storage crate for five numbers.
const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const EDQUOT: i32 = 122;

/// Result alias for the storage engine.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
