//! `chariot publish`: append records and report the offsets they got.
//!
//! Uses the publish-records extension rather than Rog's publish, because Rog's answer
//! does not carry the offset.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use chariot_client::Client;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Connection;

/// Records per request when reading stdin: large enough to amortise round trips, small
/// enough that one request stays far below the server's batch limit.
const STDIN_CHUNK_RECORDS: usize = 1000;
/// Value bytes per request when reading stdin (the protocol's limit is 8 MiB).
const STDIN_CHUNK_BYTES: usize = 1 << 20;

/// Options of `chariot publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Log name.
    pub log: String,
    /// Partition index.
    #[arg(long, short, default_value_t = 0, value_name = "P")]
    pub partition: u32,
    /// The record's value. Without DATA or --file, stdin is read and every line (without
    /// its line ending) is one record; empty lines are empty records.
    #[arg(conflicts_with = "file")]
    pub data: Option<String>,
    /// Publish this file's whole content, bytes as they are, as one record.
    #[arg(long, short, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Offsets given to one request's records.
struct Published {
    first: u64,
    count: u64,
}

/// Runs `chariot publish`.
pub async fn run(conn: &Connection, args: PublishArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let log = args.log.as_str();
    let partition = args.partition;
    let published = if let Some(data) = args.data {
        vec![send(&mut client, log, partition, vec![Bytes::from(data)]).await?]
    } else if let Some(path) = args.file {
        let data = tokio::fs::read(&path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        vec![send(&mut client, log, partition, vec![Bytes::from(data)]).await?]
    } else {
        publish_lines(&mut client, log, partition).await?
    };
    let count: u64 = published.iter().map(|p| p.count).sum();
    let ranges = offset_ranges(&published);
    let ranges = || ranges.iter().copied();
    conn.output().emit(
        || {
            let offsets: Vec<String> = ranges()
                .map(|(first, last)| {
                    if first == last {
                        first.to_string()
                    } else {
                        format!("{first}-{last}")
                    }
                })
                .collect();
            match count {
                0 => format!("published no records to {log}/{partition}"),
                1 => format!(
                    "published 1 record to {log}/{partition} at offset {}",
                    offsets.join(", ")
                ),
                n => format!(
                    "published {n} records to {log}/{partition} at offsets {}",
                    offsets.join(", ")
                ),
            }
        },
        || {
            json!({
                "log": log,
                "partition": partition,
                "count": count,
                "ranges": ranges()
                    .map(|(first, last)| json!({ "first_offset": first, "last_offset": last }))
                    .collect::<Vec<_>>(),
            })
        },
    )?;
    Ok(())
}

/// Publishes stdin's lines in chunks; each chunk is appended atomically, and chunks in
/// order, but other producers' records may land between two chunks.
async fn publish_lines(
    client: &mut Client,
    log: &str,
    partition: u32,
) -> anyhow::Result<Vec<Published>> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut published = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read stdin")?;
        if read > 0 {
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            chunk_bytes += line.len();
            chunk.push(Bytes::copy_from_slice(&line));
        }
        let full = chunk.len() >= STDIN_CHUNK_RECORDS || chunk_bytes >= STDIN_CHUNK_BYTES;
        if !chunk.is_empty() && (full || read == 0) {
            published.push(send(client, log, partition, std::mem::take(&mut chunk)).await?);
            chunk_bytes = 0;
        }
        if read == 0 {
            return Ok(published);
        }
    }
}

/// The offsets as inclusive `(first, last)` ranges, contiguous requests merged (they
/// are contiguous unless another producer wrote in between).
fn offset_ranges(published: &[Published]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for p in published.iter().filter(|p| p.count > 0) {
        let last = p.first + (p.count - 1);
        match ranges.last_mut() {
            Some(range) if range.1.checked_add(1) == Some(p.first) => range.1 = last,
            _ => ranges.push((p.first, last)),
        }
    }
    ranges
}

async fn send(
    client: &mut Client,
    log: &str,
    partition: u32,
    records: Vec<Bytes>,
) -> anyhow::Result<Published> {
    let count = records.len() as u64;
    let first = client
        .publish_records(log, partition, records)
        .await
        .with_context(|| format!("cannot publish to {log}/{partition}"))?;
    Ok(Published { first, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_requests_merge_into_one_range() {
        let published = [
            Published { first: 0, count: 2 },
            Published { first: 2, count: 3 },
            Published { first: 9, count: 1 },
            Published {
                first: 10,
                count: 0,
            },
        ];
        assert_eq!(offset_ranges(&published), [(0, 4), (9, 9)]);
    }
}
