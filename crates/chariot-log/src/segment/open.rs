//! Opening a segment: loading its index if it agrees with the data file, or scanning
//! the file batch by batch (cutting a torn tail of the active segment, recording damage
//! of a sealed one).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::damage::{self, Damage};
use crate::error::{LogError, Result};

use super::*;

/// Result of scanning a data file batch by batch.
#[derive(Debug)]
pub(crate) struct Scan {
    pub entries: Vec<IndexEntry>,
    /// Position just after the last valid batch.
    pub valid_len: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<(u64, String)>,
}

/// What recovery did to a segment's data file.
#[derive(Debug)]
pub(crate) enum Recovered {
    /// Nothing: every byte was a valid batch or preallocated zeros.
    Clean,
    /// A torn tail was cut off.
    Cut(TruncatedTail),
    /// Damage with intact batches after it: nothing was cut.
    Damaged(Damage),
}

/// A torn or corrupt tail cut off the active segment during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment's data file.
    pub path: PathBuf,
    /// Position of the first byte cut.
    pub position: u64,
    /// Number of bytes cut.
    pub bytes: u64,
    /// What check failed at `position`.
    pub reason: String,
    /// Where the cut bytes were preserved.
    pub kept_in: Option<PathBuf>,
}

impl Segment {
    /// Opens an existing segment, trusting nothing: the index is loaded only if it agrees
    /// with the data file, and rebuilt otherwise.
    ///
    /// `active` selects the recovery rule. For the active segment a damaged tail with
    /// nothing valid after it is a torn write: it is cut at the last valid batch (the cut
    /// bytes are kept beside the segment in a `.log.truncated-<position>` file). Damage
    /// with an intact batch after it is not a torn write ([`crate::damage`]): nothing is
    /// cut, the segment ends at the damage, and the damage is returned. For a sealed
    /// segment, which was fsynced before the next one was created, any damage found by
    /// the scan (possible only when its index is missing or does not agree: a loaded
    /// index is trusted for positions, and the batches' checksums are left to reads and
    /// the scrub) is recorded as damage, and the scan resumes at the next intact batch
    /// (or, with none left, the damage runs to the end of the file and `next_base`, the
    /// next segment's base offset, says which offsets it held). The damaged span stays
    /// in the index as one entry, so reads reach it and fail naming file and position;
    /// open fails only where no offsets can be assigned to the damage. Memory: the rest
    /// of the file after each damaged place (at most one segment).
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        next_base: Option<u64>,
    ) -> Result<(Self, Recovered)> {
        let active = next_base.is_none();
        let (data_path, index_path) = paths(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| LogError::io("open", &data_path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| LogError::io("stat", &data_path, e))?
            .len();
        let seg = Self::with_file(base_offset, data_path, index_path, file);
        let mut recovered = Recovered::Clean;
        let loaded = if active {
            None
        } else {
            seg.load_index(file_len)?
        };
        let (entries, next_offset, max_ts, valid_len) = match loaded {
            Some(l) => l,
            None => {
                let mut scan = seg.scan(file_len)?;
                if let Some(next_base) = next_base {
                    while let Some((position, reason)) = scan.stopped.take() {
                        let d =
                            seg.damage_in_sealed(&scan, position, reason, file_len, next_base)?;
                        tracing::error!(damage = %d, "sealed segment is damaged: reads stop at it, \
                                        the rest is served; see `chariot repair`");
                        scan.entries.push(IndexEntry {
                            relative_offset: (d.offset - base_offset) as u32,
                            position: d.position as u32,
                            len: (d.resumes_at - d.position) as u32,
                            records: (d.resumes_offset - d.offset) as u32,
                        });
                        scan.next_offset = d.resumes_offset;
                        scan.valid_len = d.resumes_at;
                        seg.record_damage(d);
                        seg.scan_from(&mut scan, file_len)?;
                    }
                }
                if let Some((position, reason)) = scan.stopped {
                    // Zeros after the last batch are preallocated space, not damage.
                    if let Some(end) = seg.last_nonzero_end(position, file_len)? {
                        // Up to the end of the file: a valid batch may end in zeros.
                        // (Memory: at most one segment, and only for a damaged one.)
                        let tail = seg.read_at(position, (file_len - position) as usize)?;
                        let nonzero = tail.get(..(end - position) as usize).unwrap_or_default();
                        recovered = match damage::find_resume(&tail, scan.next_offset) {
                            Some((at, h)) => Recovered::Damaged(Damage {
                                path: seg.data_path.clone(),
                                position,
                                offset: scan.next_offset,
                                reason,
                                resumes_at: position + at as u64,
                                resumes_offset: h.base_offset,
                            }),
                            None => Recovered::Cut(seg.cut_tail(position, nonzero, reason)?),
                        };
                    }
                }
                (
                    scan.entries,
                    scan.next_offset,
                    scan.max_timestamp,
                    scan.valid_len,
                )
            }
        };
        *seg.index.write().unwrap_or_else(PoisonError::into_inner) = entries;
        seg.size.store(valid_len, Ordering::Release);
        seg.next_offset.store(next_offset, Ordering::Release);
        seg.max_timestamp.store(max_ts, Ordering::Release);
        Ok((seg, recovered))
    }

    /// Loads the on-disk index of a sealed segment if it is complete and consistent with
    /// the data file; `None` means "rebuild by scanning".
    #[allow(clippy::type_complexity)]
    fn load_index(&self, file_len: u64) -> Result<Option<(Vec<IndexEntry>, u64, i64, u64)>> {
        let raw = match std::fs::read(&self.index_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io("read", &self.index_path, e)),
        };
        if raw.is_empty() || raw.len() % INDEX_ENTRY_LEN != 0 {
            return Ok(None);
        }
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(raw.len() / INDEX_ENTRY_LEN);
        for chunk in raw.chunks_exact(INDEX_ENTRY_LEN) {
            let (rel, pos) = chunk.split_at(4);
            let relative_offset = u32::from_be_bytes(rel.try_into().unwrap_or_default());
            let position = u32::from_be_bytes(pos.try_into().unwrap_or_default());
            if let Some(prev) = entries.last_mut() {
                if position <= prev.position || relative_offset <= prev.relative_offset {
                    return Ok(None);
                }
                prev.len = position - prev.position;
                prev.records = relative_offset - prev.relative_offset;
            } else if position != 0 || relative_offset != 0 {
                return Ok(None);
            }
            entries.push(IndexEntry {
                relative_offset,
                position,
                len: 0,
                records: 0,
            });
        }
        // The last entry must describe a batch that ends exactly at the end of the file.
        let Some(last) = entries.last_mut() else {
            return Ok(None);
        };
        let Some(h) = self.read_header_at(u64::from(last.position), file_len)? else {
            return Ok(None);
        };
        let expected_base = self.base_offset + u64::from(last.relative_offset);
        if h.base_offset != expected_base || u64::from(last.position) + h.total_len() != file_len {
            return Ok(None);
        }
        last.len = h.total_len() as u32;
        last.records = h.record_count;
        Ok(Some((entries, h.next_offset(), h.max_timestamp, file_len)))
    }

    fn read_header_at(&self, position: u64, file_len: u64) -> Result<Option<BatchHeader>> {
        if position + HEADER_LEN as u64 > file_len {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| LogError::io("read", &self.data_path, e))?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    /// Walks the data file batch by batch, checking every length, offset and CRC.
    pub(crate) fn scan(&self, file_len: u64) -> Result<Scan> {
        let mut scan = Scan {
            entries: Vec::new(),
            valid_len: 0,
            next_offset: self.base_offset,
            max_timestamp: i64::MIN,
            stopped: None,
        };
        self.scan_from(&mut scan, file_len)?;
        Ok(scan)
    }

    /// Continues `scan` from its `valid_len` and `next_offset`.
    fn scan_from(&self, scan: &mut Scan, file_len: u64) -> Result<()> {
        let mut pos = scan.valid_len;
        let mut buf: Vec<u8> = Vec::new();
        while pos < file_len {
            let Some(h) = self.read_header_at(pos, file_len)? else {
                scan.stopped = Some((pos, "incomplete batch header at end of file".into()));
                break;
            };
            let end = pos + h.total_len();
            let problem = if h.total_len() < HEADER_LEN as u64 {
                Some(format!("batch length {} is too small", h.total_len()))
            } else if end > file_len {
                Some(format!(
                    "batch of {} bytes runs past the end of the file ({file_len} bytes)",
                    h.total_len()
                ))
            } else if h.base_offset != scan.next_offset {
                Some(format!(
                    "batch base offset {} where {} was expected",
                    h.base_offset, scan.next_offset
                ))
            } else if pos > u64::from(u32::MAX) {
                Some("batch starts past the 4 GiB segment limit".into())
            } else {
                buf.resize(h.total_len() as usize, 0);
                self.file
                    .read_exact_at(&mut buf, pos)
                    .map_err(|e| LogError::io("read", &self.data_path, e))?;
                batch::validate(&buf).err().map(|e| e.to_string())
            };
            if let Some(reason) = problem {
                scan.stopped = Some((pos, reason));
                break;
            }
            scan.entries.push(IndexEntry {
                relative_offset: (h.base_offset - self.base_offset) as u32,
                position: pos as u32,
                len: h.total_len() as u32,
                records: h.record_count,
            });
            scan.next_offset = h.next_offset();
            scan.max_timestamp = scan.max_timestamp.max(h.max_timestamp);
            pos = end;
            scan.valid_len = pos;
        }
        Ok(())
    }

    /// The damage where the scan of a sealed segment stopped: from `position` to the
    /// next intact batch that continues the log, or to the end of the file if the next
    /// segment's base offset (`next_base`) fits the bytes left. An error where neither
    /// holds (the offsets the damaged bytes held are unknown).
    fn damage_in_sealed(
        &self,
        scan: &Scan,
        position: u64,
        reason: String,
        file_len: u64,
        next_base: u64,
    ) -> Result<Damage> {
        let expected = scan.next_offset;
        let rest = self.read_at(position, (file_len - position) as usize)?;
        let (gap, resumes) = match damage::find_resume(&rest, expected) {
            Some((at, h)) => (at as u64, h.base_offset),
            None if damage::lost_fit(next_base.saturating_sub(expected), rest.len() as u64) => {
                (rest.len() as u64, next_base)
            }
            None => {
                return Err(LogError::Corrupt {
                    path: self.data_path.clone(),
                    position,
                    offset: expected,
                    reason: format!(
                        "{reason}; no intact batch follows, and the next segment's base \
                         offset {next_base} does not fit the damaged bytes"
                    ),
                })
            }
        };
        Ok(Damage {
            path: self.data_path.clone(),
            position,
            offset: expected,
            reason,
            resumes_at: position + gap,
            resumes_offset: resumes,
        })
    }

    /// End of the last non-zero byte in `[from, file_len)`, or `None` if all are zero.
    ///
    /// Only the file's data is read: the holes and unwritten (preallocated, never
    /// written) extents that `SEEK_DATA`/`SEEK_HOLE` skip read as zeros by definition.
    /// After a crash the active segment's preallocated rest is mostly such extents, and
    /// reading it whole made the kernel zero-fill every page of it (a node with a
    /// thousand partition groups spent seconds per hundred groups on it).
    fn last_nonzero_end(&self, from: u64, file_len: u64) -> Result<Option<u64>> {
        let mut end = None;
        let mut at = from;
        while at < file_len {
            let (data, hole) = match self.data_extent(at, file_len)? {
                Some(extent) => extent,
                None => break,
            };
            if let Some(e) = self.last_nonzero_in(data, hole)? {
                end = Some(e);
            }
            at = hole;
        }
        Ok(end)
    }

    /// The next span of data at or after `at` (below `file_len`), as `(start, end)`; the
    /// whole rest if the file system cannot tell.
    fn data_extent(&self, at: u64, file_len: u64) -> Result<Option<(u64, u64)>> {
        use rustix::fs::{seek, SeekFrom};
        let data = match seek(&self.file, SeekFrom::Data(at)) {
            Ok(d) if d >= file_len => return Ok(None),
            Ok(d) => d,
            // No data past `at`.
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            // A file system without SEEK_DATA: everything is data.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                return Ok(Some((at, file_len)))
            }
            Err(e) => return Err(LogError::io("seek", &self.data_path, e.into())),
        };
        let hole = match seek(&self.file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(file_len),
            Err(e) => return Err(LogError::io("seek", &self.data_path, e.into())),
        };
        Ok(Some((data, hole.max(data + 1).min(file_len))))
    }

    /// End of the last non-zero byte in `[from, to)`, reading it.
    fn last_nonzero_in(&self, from: u64, to: u64) -> Result<Option<u64>> {
        const CHUNK: u64 = 1 << 20;
        let mut end = None;
        let mut at = from;
        let mut buf = vec![0u8; CHUNK.min(to - from) as usize];
        while at < to {
            let n = CHUNK.min(to - at) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            self.file
                .read_exact_at(chunk, at)
                .map_err(|e| LogError::io("read", &self.data_path, e))?;
            if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
                end = Some(at + i as u64 + 1);
            }
            at += n as u64;
        }
        Ok(end)
    }

    /// Moves the bytes past `position` aside and truncates the data file there.
    /// `tail` holds the bytes from `position` to the last non-zero one.
    fn cut_tail(&self, position: u64, tail: &[u8], reason: String) -> Result<TruncatedTail> {
        let mut kept_in = None;
        let tail_len = tail.len() as u64;
        if tail_len > 0 {
            let side = self
                .data_path
                .with_extension(format!("log.truncated-{position}"));
            let mut f = File::create(&side).map_err(|e| LogError::io("create", &side, e))?;
            f.write_all(tail)
                .and_then(|()| f.sync_all())
                .map_err(|e| LogError::io("write", &side, e))?;
            kept_in = Some(side);
        }
        self.file
            .set_len(position)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io("truncate", &self.data_path, e))?;
        tracing::warn!(
            path = %self.data_path.display(),
            position,
            bytes = tail_len,
            %reason,
            "truncated a torn or corrupt tail of the active segment"
        );
        Ok(TruncatedTail {
            path: self.data_path.clone(),
            position,
            bytes: tail_len,
            reason,
            kept_in,
        })
    }
}
