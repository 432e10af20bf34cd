//! A segment: a data file of batches (the *store*) and its offset index.
//!
//! The files are named by the segment's base offset, zero-padded to 20 digits:
//! `00000000000000000000.log` holds batches back to back; `00000000000000000000.index`
//! holds one 8-byte entry per batch (offset relative to the base, byte position), both u32
//! big-endian. The index is an accelerator, never the truth: it is written when a segment
//! is sealed, and rebuilt from the data file whenever it is missing, short, or disagrees.
//!
//! Here: the [`Segment`] type, appends, seals, reads, truncation and the damage known in
//! it; `open`: opening an existing segment (index load or scan, torn tails, damage).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use crate::batch::BatchHeader;
use crate::damage::Damage;
use crate::error::{LogError, Result};

mod open;

pub(crate) use open::Recovered;
pub use open::TruncatedTail;

/// Bytes of one on-disk index entry.
pub const INDEX_ENTRY_LEN: usize = 8;

/// Where one batch lives in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the data file.
    pub position: u32,
    /// Size of the batch in bytes.
    pub len: u32,
    /// Records in the batch (kept in memory only; on disk it follows from the next entry).
    pub records: u32,
}

impl IndexEntry {
    /// Offset just after the batch, given the segment's base offset.
    pub fn next_offset(&self, base_offset: u64) -> u64 {
        base_offset + u64::from(self.relative_offset) + u64::from(self.records)
    }
}

/// File name stem for a base offset.
pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Parses a segment data file name (`<20 digits>.log`) into its base offset.
pub fn parse_data_file_name(name: &str) -> Option<u64> {
    parse_offset_name(name, ".log")
}

/// Parses `<20 digits><suffix>` (the naming of segment files and of the log's other
/// offset-named files) into the offset.
pub(crate) fn parse_offset_name(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Removes a file that may already be gone.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// Removes both files of the segment based at `base_offset` in `dir`, index first (a
/// data file without its index is rebuilt; the reverse would be an orphan), for
/// segments that are not open.
pub(crate) fn delete_files_at(dir: &Path, base_offset: u64) -> Result<()> {
    let (data_path, index_path) = paths(dir, base_offset);
    remove_if_present(&index_path)?;
    remove_if_present(&data_path)
}

/// One segment. Shared between the writer and readers through an `Arc`.
///
/// Invariants: batches are contiguous from position 0; their base offsets are dense from
/// `base_offset`; `index` holds exactly one entry per batch, in order; `size` is the end of
/// the last indexed batch. Readers only look at indexed batches, so a batch is never seen
/// half written.
#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    data_path: PathBuf,
    index_path: PathBuf,
    file: File,
    index: RwLock<Vec<IndexEntry>>,
    size: AtomicU64,
    next_offset: AtomicU64,
    max_timestamp: AtomicI64,
    /// Serializes the syncs made through `file` (see [`Segment::durably`]).
    sync_lock: Mutex<()>,
    /// Set once a sync through `file` failed: every later one fails too.
    sync_failed: AtomicBool,
    /// Damaged batches of this (sealed) segment, found when it was opened or by a
    /// scrub ([`crate::scrub`]), by position; `has_damage` spares reads the lock.
    damage: RwLock<Vec<Damage>>,
    has_damage: AtomicBool,
}

impl Segment {
    /// Creates a new empty segment (fails if its files exist).
    pub(crate) fn create(dir: &Path, base_offset: u64) -> Result<Self> {
        let (data_path, index_path) = paths(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(|e| LogError::io("create", &data_path, e))?;
        Ok(Self::with_file(base_offset, data_path, index_path, file))
    }

    /// A segment over an open data file, with nothing indexed yet.
    fn with_file(base_offset: u64, data_path: PathBuf, index_path: PathBuf, file: File) -> Self {
        Self {
            base_offset,
            data_path,
            index_path,
            file,
            index: RwLock::new(Vec::new()),
            size: AtomicU64::new(0),
            next_offset: AtomicU64::new(base_offset),
            max_timestamp: AtomicI64::new(i64::MIN),
            sync_lock: Mutex::new(()),
            sync_failed: AtomicBool::new(false),
            damage: RwLock::new(Vec::new()),
            has_damage: AtomicBool::new(false),
        }
    }

    /// Runs `op` (a sync, possibly after a length change) on the data file, one at a
    /// time, with sticky failure.
    ///
    /// Linux reports a writeback error to the fsync of each open file description once.
    /// Two syncs racing on this descriptor (a group commit's, and a roll's seal or a
    /// truncation's) could otherwise split it: one fails, the other returns success
    /// for data that never reached the disk, and a group would be acknowledged. So the
    /// syncs are serialized, and once one failed, all later ones fail.
    fn durably(
        &self,
        what: &'static str,
        op: impl FnOnce(&File) -> std::io::Result<()>,
    ) -> Result<()> {
        let _one_at_a_time = self
            .sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(LogError::io(
                what,
                &self.data_path,
                std::io::Error::other("an earlier sync of this file failed"),
            ));
        }
        op(&self.file).map_err(|e| {
            self.sync_failed.store(true, Ordering::Release);
            LogError::io(what, &self.data_path, e)
        })
    }

    /// Records damage found in this segment (once per position); whether it is new.
    pub(crate) fn record_damage(&self, d: Damage) -> bool {
        let mut known = self.damage.write().unwrap_or_else(PoisonError::into_inner);
        if known.iter().any(|k| k.position == d.position) {
            return false;
        }
        let at = known.partition_point(|k| k.position < d.position);
        known.insert(at, d);
        self.has_damage.store(true, Ordering::Release);
        true
    }

    /// The damage known in this segment, by position.
    pub fn known_damage(&self) -> Vec<Damage> {
        if !self.has_damage.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.damage
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The known damage starting at byte `position`, if any.
    pub(crate) fn damage_at(&self, position: u64) -> Option<Damage> {
        if !self.has_damage.load(Ordering::Acquire) {
            return None;
        }
        let known = self.damage.read().unwrap_or_else(PoisonError::into_inner);
        known.iter().find(|d| d.position == position).cloned()
    }

    /// Up to `n` index entries from the `from`-th.
    pub(crate) fn entries(&self, from: usize, n: usize) -> Vec<IndexEntry> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.iter().skip(from).take(n).copied().collect()
    }

    /// Reserves `len` bytes of disk for the data file, so appends inside it change no
    /// file-size metadata and each fdatasync flushes data only (measured here: about
    /// 1.5x more syncs per second). Best effort: a file system without fallocate, or one
    /// too full to reserve a whole segment, simply gets no preallocation.
    pub(crate) fn preallocate(&self, len: u64) {
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        if meta.len() >= len {
            return;
        }
        if let Err(e) =
            rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len)
        {
            tracing::debug!(path = %self.data_path.display(), error = %e, "no preallocation");
        }
    }

    /// Gives back preallocated space beyond the data and syncs the file's new length.
    pub(crate) fn trim(&self) -> Result<()> {
        let size = self.size();
        let on_disk = self
            .file
            .metadata()
            .map_err(|e| LogError::io("stat", &self.data_path, e))?
            .len();
        if on_disk > size {
            self.durably("truncate", |f| f.set_len(size).and_then(|()| f.sync_all()))?;
        }
        Ok(())
    }

    /// Base offset (offset of its first batch).
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset one past the last batch written.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Bytes of batches written.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Newest producer timestamp in the segment (i64::MIN when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Path of the data file.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// The data file, for zero-copy sends (`sendfile`) of ranges returned by reads.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Number of indexed batches.
    pub fn entry_count(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Writes batches (back to back in `bytes`, described by `headers`) at the end, with
    /// one write. Called only by the log's single writer.
    ///
    /// On failure the file is cut back to its previous length so that nothing of the
    /// batches remains; if even that fails, the caller must poison the log.
    pub(crate) fn append(
        &self,
        bytes: &[u8],
        headers: &[BatchHeader],
    ) -> Result<(), AppendFailure> {
        let start = self.size();
        if let Err(e) = self.file.write_all_at(bytes, start) {
            let err = LogError::io("write", &self.data_path, e);
            // The cut must be durable too: whole batches of a partial write that reached
            // the disk would otherwise come back after a crash, though refused here.
            return match self.durably("truncate", |f| {
                f.set_len(start).and_then(|()| f.sync_data())
            }) {
                Ok(()) => Err(AppendFailure::RolledBack(err)),
                Err(_) => Err(AppendFailure::Unrecoverable(err)),
            };
        }
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let mut pos = start;
        for h in headers {
            index.push(IndexEntry {
                relative_offset: (h.base_offset - self.base_offset) as u32,
                position: pos as u32,
                len: h.total_len() as u32,
                records: h.record_count,
            });
            pos += h.total_len();
            self.max_timestamp
                .fetch_max(h.max_timestamp, Ordering::AcqRel);
        }
        drop(index);
        self.size.store(pos, Ordering::Release);
        if let Some(h) = headers.last() {
            self.next_offset.store(h.next_offset(), Ordering::Release);
        }
        Ok(())
    }

    /// fdatasync of the data file.
    pub(crate) fn sync(&self) -> Result<()> {
        self.durably("fdatasync", File::sync_data)
    }

    /// Syncs the data file and writes the complete index file: called when the segment
    /// stops being active. A failed sync is returned (the caller poisons the log); a failed
    /// index write is only logged, because the index is rebuilt from the data when missing,
    /// and a full disk must not turn into a poisoned log.
    pub(crate) fn seal(&self) -> Result<()> {
        self.trim()?;
        self.sync()?;
        let entries = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let mut raw = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        for e in entries.iter() {
            raw.extend_from_slice(&e.relative_offset.to_be_bytes());
            raw.extend_from_slice(&e.position.to_be_bytes());
        }
        drop(entries);
        let tmp = self.index_path.with_extension("index.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&raw)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.index_path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(
                path = %self.index_path.display(),
                error = %e,
                "could not write the index of a sealed segment; it will be rebuilt on open"
            );
        }
        Ok(())
    }

    /// The entries of batches that hold offsets in `[from, visible_next)`, starting with the
    /// batch containing `from`, taking whole batches up to `max_bytes` (at least one).
    pub(crate) fn entries_for_read(
        &self,
        from: u64,
        visible_next: u64,
        max_bytes: usize,
    ) -> Vec<IndexEntry> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let Some(rel_from) = from.checked_sub(self.base_offset) else {
            return Vec::new();
        };
        let start = index.partition_point(|e| u64::from(e.relative_offset) <= rel_from);
        let Some(start) = start.checked_sub(1) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        for e in index.iter().skip(start) {
            if self.base_offset + u64::from(e.relative_offset) >= visible_next {
                break;
            }
            if !out.is_empty() && total + e.len as usize > max_bytes {
                break;
            }
            total += e.len as usize;
            out.push(*e);
        }
        out
    }

    /// Position of the batch whose base offset is exactly `offset`, if any.
    pub(crate) fn position_of(&self, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(self.base_offset)?;
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let i = index
            .binary_search_by_key(&rel, |e| u64::from(e.relative_offset))
            .ok()?;
        index.get(i).map(|e| u64::from(e.position))
    }

    /// Cuts the segment so that `offset` (a batch boundary or the segment's end) is next.
    pub(crate) fn truncate_to(&self, offset: u64) -> Result<()> {
        let position = if offset == self.next_offset() {
            return Ok(());
        } else {
            self.position_of(offset)
                .ok_or(LogError::NotBatchBoundary { offset })?
        };
        self.durably("truncate", |f| {
            f.set_len(position).and_then(|()| f.sync_all())
        })?;
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        index.retain(|e| u64::from(e.position) < position);
        drop(index);
        self.damage
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|d| d.position < position);
        self.size.store(position, Ordering::Release);
        self.next_offset.store(offset, Ordering::Release);
        // The on-disk index of this segment is now stale; it is rewritten on seal and
        // ignored (rebuilt) while the segment is active.
        remove_if_present(&self.index_path)
    }

    /// Reads `len` bytes at `position`.
    pub(crate) fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| LogError::io("read", &self.data_path, e))?;
        Ok(buf)
    }

    /// Removes both files. Open handles (readers) keep working until dropped.
    pub(crate) fn delete_files(&self) -> Result<()> {
        remove_if_present(&self.index_path)?;
        remove_if_present(&self.data_path)
    }
}

/// Why an append to a segment failed.
#[derive(Debug)]
pub(crate) enum AppendFailure {
    /// Nothing of the batch remains in the file.
    RolledBack(LogError),
    /// The file could not be restored to its previous length.
    Unrecoverable(LogError),
}

fn paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf) {
    let stem = file_stem(base_offset);
    (
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
    )
}
