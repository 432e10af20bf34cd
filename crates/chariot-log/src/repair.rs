//! Offline repair of a damaged log: the operator's decision that [`crate::damage`] leaves
//! open.
//!
//! Repair keeps every intact batch at its offset and never hands an offset to a second
//! record. Damaged bytes between two intact batches are overwritten, in place and to the
//! byte, by one batch of placeholder records flagged [`crate::batch::FLAG_LOST`] that
//! covers exactly the offsets the damage held; a batch whose only fault is its base
//! offset (the one field the CRC does not cover) gets that offset back and loses nothing.
//! Every overwritten byte is first saved beside its segment as
//! `<segment>.log.damaged-<position>`. A damaged tail of the active segment with nothing
//! valid after it is a torn write that opening the log cuts, as always; repair only
//! reports it.
//!
//! Memory: one segment's data file at a time (at most `segment_bytes`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, RecordBatch};
use crate::damage::{self, lost_fit};
use crate::error::{LogError, Result};
use crate::segment;

/// What repair found at one place, and does (or did) about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The segment's data file.
    pub path: PathBuf,
    /// Byte position of the damage.
    pub position: u64,
    /// Damaged bytes (for a torn tail: up to the end of the file).
    pub len: u64,
    /// First offset the damage concerns.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
    /// What repair does.
    pub action: Action,
}

/// How a damaged place is mended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The batch is intact but for its base offset, which is rewritten: nothing is lost.
    RestoreBaseOffset {
        /// The base offset the damage left.
        found: u64,
    },
    /// The records of offsets `offset..offset + count` are lost: their bytes become one
    /// placeholder batch, so these offsets are never reused.
    MarkLost {
        /// How many offsets.
        count: u64,
    },
    /// A torn tail of the active segment: opening the log cuts it (nothing after it is
    /// valid, so nothing acknowledged can be in it under the durable policies).
    CutOnOpen,
}

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = format!(
            "{} at byte {} ({} bytes, offset {}: {})",
            self.path.display(),
            self.position,
            self.len,
            self.offset,
            self.reason
        );
        match self.action {
            Action::RestoreBaseOffset { found } => {
                write!(
                    f,
                    "{at}: restore base offset {} (was {found}), nothing lost",
                    self.offset
                )
            }
            Action::MarkLost { count } => write!(
                f,
                "{at}: offsets {}..{} lost, marked as lost (never reused); later batches kept",
                self.offset,
                self.offset + count
            ),
            Action::CutOnOpen => write!(f, "{at}: torn tail, cut when the log opens"),
        }
    }
}

/// The outcome of [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The log's directory.
    pub dir: PathBuf,
    /// Every damaged place, oldest first.
    pub fixes: Vec<Fix>,
    /// Whether the fixes were written (false for a dry run).
    pub applied: bool,
}

/// Checks every batch of the log in `dir` (which no process may have open) and, unless
/// `dry_run`, mends each damaged place as [`Action`] says. Fails, changing nothing, where
/// damage cannot be mended in place (the offsets it held are unknown) or the segments
/// do not line up.
pub fn repair(dir: &Path, dry_run: bool) -> Result<RepairReport> {
    let _lock = crate::log::lock_dir(dir, std::time::Duration::ZERO)?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))? {
        let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
        if let Some(base) = segment::parse_data_file_name(&entry.file_name().to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut plans = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(format!("{}.log", segment::file_stem(base)));
        let mut bytes = std::fs::read(&path).map_err(|e| LogError::io("read", &path, e))?;
        let next_base = bases.get(i + 1).copied();
        let fixes = plan_segment(&path, base, &mut bytes, next_base)?;
        if !fixes.is_empty() {
            plans.push((path, bytes, fixes));
        }
    }
    let mut report = RepairReport {
        dir: dir.to_path_buf(),
        fixes: plans
            .iter()
            .flat_map(|(_, _, f)| f.iter().cloned())
            .collect(),
        applied: false,
    };
    if dry_run {
        return Ok(report);
    }
    for (path, mended, fixes) in &plans {
        apply(path, mended, fixes)?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))?;
    report.applied = true;
    Ok(report)
}

/// Walks one segment's bytes from its base offset, mending `bytes` in memory; returns the
/// fixes. `next_base` is the next segment's base offset (`None` for the active segment).
fn plan_segment(
    path: &Path,
    base: u64,
    bytes: &mut [u8],
    next_base: Option<u64>,
) -> Result<Vec<Fix>> {
    let mut fixes = Vec::new();
    let (mut pos, mut expected, mut last_ts) = (0usize, base, 0i64);
    let unrepairable = |position: usize, offset: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        position: position as u64,
        offset,
        reason: format!("cannot be repaired in place: {reason}"),
    };
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        let whole = BatchHeader::parse(rest).ok().and_then(|h| {
            let one = rest.get(..usize::try_from(h.total_len()).ok()?)?;
            batch::validate(one).ok()
        });
        if let Some(h) = whole.filter(|h| h.base_offset == expected) {
            pos += h.total_len() as usize;
            expected = h.next_offset();
            last_ts = h.max_timestamp;
            continue;
        }
        if rest.iter().all(|&b| b == 0) {
            break; // preallocated space
        }
        let reason = failure(rest, expected);
        let mut fix = Fix {
            path: path.to_path_buf(),
            position: pos as u64,
            len: 0,
            offset: expected,
            reason,
            action: Action::CutOnOpen,
        };
        if let Some(h) = whole {
            // Intact but for the base offset: it fits only if the next batch agrees.
            let end = pos + h.total_len() as usize;
            let next_ok = next_agrees(
                bytes.get(end..).unwrap_or_default(),
                expected + u64::from(h.record_count),
                next_base,
            );
            if next_ok {
                fix.len = h.total_len();
                fix.action = Action::RestoreBaseOffset {
                    found: h.base_offset,
                };
                if let Some(b) = bytes.get_mut(pos..pos + 8) {
                    b.copy_from_slice(&expected.to_be_bytes());
                }
                fixes.push(fix);
                continue;
            }
        }
        // Where intact batches resume, which offset they resume at, and a timestamp for
        // the placeholders (retention by age reads it): the last intact batch's.
        let (gap, resumes, ts) = match damage::find_resume(rest, expected) {
            Some((at, h)) => (
                at,
                h.base_offset,
                if pos == 0 { h.first_timestamp } else { last_ts },
            ),
            None => match next_base {
                // A sealed segment's damaged end: the next segment says what it held.
                Some(next) if lost_fit(next.saturating_sub(expected), rest.len() as u64) => {
                    (rest.len(), next, last_ts)
                }
                Some(next) => {
                    return Err(unrepairable(
                        pos,
                        expected,
                        format!("the next segment starts at offset {next}"),
                    ))
                }
                None => {
                    fix.len = rest.len() as u64;
                    fixes.push(fix);
                    break;
                }
            },
        };
        let count = resumes - expected;
        let placeholder = u32::try_from(count)
            .ok()
            .and_then(|c| RecordBatch::lost_placeholder(expected, c, gap, ts))
            .ok_or_else(|| {
                unrepairable(pos, expected, format!("{count} offsets in {gap} bytes"))
            })?;
        if let Some(b) = bytes.get_mut(pos..pos + gap) {
            b.copy_from_slice(placeholder.as_bytes());
        }
        fix.len = gap as u64;
        fix.action = Action::MarkLost { count };
        fixes.push(fix);
        pos += gap;
        expected = resumes;
    }
    if let Some(next) = next_base {
        if expected != next {
            return Err(unrepairable(
                pos,
                expected,
                format!("the segment ends at offset {expected}, the next starts at {next}"),
            ));
        }
    }
    Ok(fixes)
}

/// Whether what follows a batch ending at offset `next` continues the log: a valid batch
/// based at `next`, or (nothing but zeros after it) the next segment's base.
fn next_agrees(after: &[u8], next: u64, next_base: Option<u64>) -> bool {
    if after.iter().all(|&b| b == 0) {
        return next_base.is_none_or(|b| b == next);
    }
    BatchHeader::parse(after).ok().is_some_and(|h| {
        h.base_offset == next
            && after
                .get(..h.total_len() as usize)
                .is_some_and(|one| batch::validate(one).is_ok())
    })
}

/// Why the bytes at the start of `rest` are not the batch at `expected`.
fn failure(rest: &[u8], expected: u64) -> String {
    match BatchHeader::parse(rest) {
        Err(e) => e.to_string(),
        Ok(h) if h.total_len() as usize > rest.len() => format!(
            "batch of {} bytes runs past the end of the file",
            h.total_len()
        ),
        Ok(h) => match rest.get(..h.total_len() as usize).map(batch::validate) {
            Some(Err(e)) => e.to_string(),
            _ => format!(
                "batch base offset {} where {expected} was expected",
                h.base_offset
            ),
        },
    }
}

/// Saves the bytes each fix overwrites, then writes the mended ones and syncs; the
/// segment's index file goes, so that opening rebuilds it from the mended data.
fn apply(path: &Path, mended: &[u8], fixes: &[Fix]) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("open", path, e))?;
    for fix in fixes.iter().filter(|f| f.action != Action::CutOnOpen) {
        let mut old = vec![0u8; fix.len as usize];
        file.read_exact_at(&mut old, fix.position)
            .map_err(|e| LogError::io("read", path, e))?;
        let side = path.with_extension(format!("log.damaged-{}", fix.position));
        let mut f = File::create(&side).map_err(|e| LogError::io("create", &side, e))?;
        f.write_all(&old)
            .and_then(|()| f.sync_all())
            .map_err(|e| LogError::io("write", &side, e))?;
        let new = mended
            .get(fix.position as usize..(fix.position + fix.len) as usize)
            .unwrap_or_default();
        file.write_all_at(new, fix.position)
            .map_err(|e| LogError::io("write", path, e))?;
        tracing::warn!(fix = %fix, kept_in = %side.display(), "repaired");
    }
    file.sync_data()
        .map_err(|e| LogError::io("fdatasync", path, e))?;
    segment::remove_if_present(&path.with_extension("index"))
}
