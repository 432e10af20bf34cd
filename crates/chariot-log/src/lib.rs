//! Chariot's storage engine: a segmented, checksummed, crash-safe commit log.
//!
//! It owns everything between a record batch in memory and bytes on disk: the batch
//! format, segments (a data file, the *store*, plus an offset *index*), the ordered list of
//! segments that makes a partition's log, durable appends with group commit, recovery
//! after a crash, truncation (for replication) and retention. It must never touch the
//! network or require an async runtime: it is plain blocking I/O behind `&self` methods,
//! safe to call from many threads, and the broker decides where those threads live. An
//! async caller can instead `submit` appends: the returned [`Pending`] future is woken by
//! the thread that completes their group commit, whatever runtime polls it.
//!
//! Layout:
//! - [`batch`]: the on-disk and on-wire [`RecordBatch`] layout, its builder and validation.
//! - [`segment`]: one [`Segment`] (data file + offset index) and its recovery scan.
//! - [`log`]: the [`Log`]: its types and public API (`log/mod.rs`); `recovery` (open:
//!   torn tails, damage, the directory lock), `append` (the write path, rolling segments,
//!   [`Pending`]), `commit` (group commit), `read`, `truncate` (crash-safe `truncate_to`),
//!   `retention`, `scrub` (CRC-checking sealed segments at a set pace), `background`
//!   (the tail worker and interval sync).
//! - [`damage`]: damage with intact batches after it, which opens a log read-only
//!   ([`Damage`]), and [`repair()`], the operator's offline mending of it.
//! - [`config`]: [`LogConfig`] and the durability [`SyncPolicy`].
//! - [`error`]: [`LogError`] and [`BatchError`].
//!
//! Offsets are logical (0, 1, 2, … dense per log); positions are byte positions in a
//! segment's data file. `docs/format.md` documents the byte layout.

pub mod batch;
pub mod config;
pub mod damage;
pub mod error;
pub mod log;
pub mod repair;
pub mod scan;
pub mod segment;
mod tail;

pub use batch::{BatchHeader, Header, Record, RecordBatch, RecordBatchBuilder, RecordView};
pub use config::{LogConfig, SyncPolicy};
pub use damage::Damage;
pub use error::{BatchError, LogError, Result};
pub use log::{AppendInfo, FileSlice, Log, Pending, ReadBatches, ScrubReport, SegmentInfo};
pub use repair::{repair, Action, Fix, RepairReport};
pub use segment::{Segment, TruncatedTail};
