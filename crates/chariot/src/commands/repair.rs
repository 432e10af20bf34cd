//! `chariot repair`: the operator's decision about damaged partitions, offline.
//!
//! A partition whose files hold damage with intact records after it starts read-only
//! (see `/health`); this command, run while the server is stopped, mends every
//! partition of a data directory with `chariot_log::repair`: intact records keep their
//! offsets, lost ones are marked as lost (never reused), overwritten bytes are kept
//! beside their segment. `--dry-run` only says what it would do.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chariot_log::Action;
use serde_json::json;

use crate::commands::Connection;

/// Options of `chariot repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The server's data directory (the server must be stopped).
    #[arg(long, env = "CHARIOT_DATA_DIR", default_value = "./chariot-data")]
    pub data_dir: PathBuf,
    /// Report what would be repaired; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Every directory below `root` (itself included) that holds segment files.
fn log_dirs(root: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut has_segments = false;
    let mut children = Vec::new();
    for entry in
        std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            children.push(entry.path());
        } else if chariot_log::segment::parse_data_file_name(&name).is_some() {
            has_segments = true;
        }
    }
    if has_segments {
        out.push(root.to_path_buf());
    }
    children.sort();
    for child in children {
        log_dirs(&child, out)?;
    }
    Ok(())
}

/// Runs `chariot repair`.
pub fn run(conn: &Connection, args: &RepairArgs) -> anyhow::Result<()> {
    if !args.data_dir.is_dir() {
        anyhow::bail!(
            "{} is not a data directory (see --data-dir)",
            args.data_dir.display()
        );
    }
    let mut dirs = Vec::new();
    log_dirs(&args.data_dir, &mut dirs)?;
    let (mut places, mut partitions) = (0usize, 0usize);
    for dir in &dirs {
        let report = chariot_log::repair(dir, args.dry_run).map_err(|e| match e {
            chariot_log::LogError::Locked { .. } => anyhow::anyhow!(
                "{}: {e} (stop the server before repairing its data directory)",
                dir.display()
            ),
            e => anyhow::anyhow!("{}: {e}", dir.display()),
        })?;
        if report.fixes.is_empty() {
            continue;
        }
        partitions += 1;
        places += report.fixes.len();
        for fix in &report.fixes {
            if conn.json {
                let (action, lost) = match fix.action {
                    Action::RestoreBaseOffset { .. } => ("restore_base_offset", 0),
                    Action::MarkLost { count } => ("mark_lost", count),
                    Action::CutOnOpen => ("cut_on_open", 0),
                };
                let line = json!({
                    "dir": dir, "file": fix.path, "position": fix.position, "bytes": fix.len,
                    "offset": fix.offset, "reason": fix.reason, "action": action,
                    "lost_offsets": lost, "applied": report.applied,
                });
                println!("{line}");
            } else {
                println!("{fix}");
            }
        }
    }
    if !conn.json {
        let done = match (places, args.dry_run) {
            (0, _) => "nothing to repair".to_string(),
            (_, true) => "dry run: nothing was changed".to_string(),
            (_, false) => {
                "repaired; the overwritten bytes are kept as *.log.damaged-<position>".to_string()
            }
        };
        println!(
            "{} log directories checked, {places} damaged places in {partitions}: {done}",
            dirs.len()
        );
    }
    Ok(())
}
