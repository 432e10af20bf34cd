//! The raw-disk baseline: how fast this disk takes sequential writes with the log's sync
//! pattern, so server throughput can be read as a fraction of what the hardware allows.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

/// Bytes per write call.
const WRITE_BYTES: usize = 1 << 20;
/// Bytes per file, each fdatasync'ed when full: the log's default segment size.
const FILE_BYTES: u64 = 64 << 20;
/// Smallest volume measured, so a tiny run still gets a meaningful number.
const MIN_BYTES: u64 = WRITE_BYTES as u64;

/// The baseline's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Where it was measured.
    pub dir: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds it took, fdatasyncs included.
    pub secs: f64,
    /// Raw sequential write bandwidth, 10^6 bytes per second.
    pub mb_per_sec: f64,
}

/// Writes `bytes` (at least 1 MiB) into `dir` and deletes the files again.
pub async fn measure(dir: &Path, bytes: u64) -> anyhow::Result<Baseline> {
    let dir = dir.to_path_buf();
    let bytes = bytes.max(MIN_BYTES);
    tokio::task::spawn_blocking(move || write_files(&dir, bytes))
        .await
        .context("the baseline writer panicked")?
}

fn write_files(dir: &Path, bytes: u64) -> anyhow::Result<Baseline> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let chunk = vec![0x5Au8; WRITE_BYTES];
    let mut paths = Vec::new();
    let start = Instant::now();
    let written = (|| -> anyhow::Result<()> {
        let mut left = bytes;
        while left > 0 {
            let path = dir.join(format!(
                "chariot-baseline-{}-{}.bin",
                std::process::id(),
                paths.len()
            ));
            let mut file =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            paths.push(path.clone());
            let mut in_file = 0u64;
            while left > 0 && in_file < FILE_BYTES {
                let n = usize::try_from(left)
                    .unwrap_or(WRITE_BYTES)
                    .min(WRITE_BYTES);
                file.write_all(chunk.get(..n).unwrap_or(&chunk))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                left -= n as u64;
                in_file += n as u64;
            }
            file.sync_data()
                .with_context(|| format!("cannot fdatasync {}", path.display()))?;
        }
        Ok(())
    })();
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    written?;
    Ok(Baseline {
        dir: dir.to_path_buf(),
        bytes,
        secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
    })
}
