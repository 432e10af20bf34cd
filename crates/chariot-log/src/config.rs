//! Configuration of a log.

use std::time::Duration;

use crate::error::LogError;

/// Smallest allowed segment size.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;
/// Largest allowed segment size: index positions are u32.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// When appended bytes are made durable.
///
/// What each policy guarantees for an *acknowledged* append (`append` returned `Ok`):
/// - [`SyncPolicy::GroupCommit`] (default) and [`SyncPolicy::EveryAppend`]: the batch was
///   fdatasync'ed; it survives kill -9 and power loss.
/// - [`SyncPolicy::Interval`]: survives kill -9 (it is in the page cache); after power loss
///   up to one interval of acknowledged batches may be lost.
/// - [`SyncPolicy::Never`]: survives kill -9; power loss may lose anything not flushed
///   by [`crate::Log::flush`], a segment roll or a clean close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Concurrent appends share one fdatasync; each returns after the sync covering it.
    GroupCommit,
    /// Each append runs its own fdatasync before returning (no coalescing).
    EveryAppend,
    /// A background thread syncs at this interval; appends return after the write.
    Interval(Duration),
    /// Appends return after the write; syncs happen only on roll, flush and close.
    Never,
}

impl SyncPolicy {
    /// True if an acknowledged append is on stable storage.
    pub fn is_durable(self) -> bool {
        matches!(self, SyncPolicy::GroupCommit | SyncPolicy::EveryAppend)
    }
}

/// Configuration of one log (one partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment starts once the active one would exceed this many bytes.
    pub segment_bytes: u64,
    /// A new segment starts once the active one indexes this many batches.
    pub index_max_entries: u32,
    /// Largest batch accepted by `append`.
    pub max_batch_bytes: usize,
    /// Durability policy.
    pub sync: SyncPolicy,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// Under a durable policy, write zeros a little ahead of the tail of the active
    /// segment in the background, so that group commits overwrite written blocks rather
    /// than preallocated ones (a cheaper fdatasync; see the `tail` module). It starts
    /// with a segment's first write, runs only while syncs are small, and only on ext4
    /// and XFS; it costs one extra background write of the bytes it zeroes. Ignored by
    /// the non-durable policies.
    pub zero_fill_ahead: bool,
    /// Reserve each active segment's full size on disk (`fallocate`), so that appends
    /// change no file-size metadata and each fdatasync writes data only. Off for logs
    /// never fsynced on their own (a replica's partition log), where it buys nothing and
    /// costs a whole segment of disk per log at rest.
    pub preallocate: bool,
    /// How long [`crate::Log::open`] waits for the directory's lock when another process
    /// holds it (a server restarted before the previous one has exited), logging that it
    /// waits, before failing with [`LogError::Locked`]. Zero: try once.
    pub lock_wait: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            index_max_entries: 1 << 20,
            max_batch_bytes: 8 << 20,
            sync: SyncPolicy::GroupCommit,
            retention_bytes: None,
            retention_age: None,
            zero_fill_ahead: true,
            preallocate: true,
            lock_wait: Duration::ZERO,
        }
    }
}

impl LogConfig {
    /// Checks the bounds the on-disk format relies on.
    pub fn validate(&self) -> Result<(), LogError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(LogError::InvalidConfig(format!(
                "segment_bytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            )));
        }
        if self.index_max_entries == 0 {
            return Err(LogError::InvalidConfig(
                "index_max_entries must be at least 1".into(),
            ));
        }
        if self.max_batch_bytes < crate::batch::HEADER_LEN
            || self.max_batch_bytes as u64 > self.segment_bytes
        {
            return Err(LogError::InvalidConfig(format!(
                "max_batch_bytes must be between {} and segment_bytes ({}), got {}",
                crate::batch::HEADER_LEN,
                self.segment_bytes,
                self.max_batch_bytes
            )));
        }
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(LogError::InvalidConfig(
                    "sync interval must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}
