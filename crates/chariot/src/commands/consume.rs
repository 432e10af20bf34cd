//! `chariot consume`: fetch and ack a group's records across every partition.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::Connection;
use crate::output;

/// First pause after a round that found nothing, with `--follow`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between polls: how stale `--follow` output may be.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Options of `chariot consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Log name.
    pub log: String,
    /// Consumer group; its committed offsets decide where reading starts.
    #[arg(long, short, value_name = "G")]
    pub group: String,
    /// Keep polling for new records (backing off up to 1 s while there are none)
    /// instead of stopping once every partition is drained.
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs `chariot consume`.
///
/// Partitions are visited round-robin, one record each per round, so one busy partition
/// does not starve the others. Each record is printed before it is acked: if the process
/// dies in between, the record is printed again next time (at-least-once), never lost.
pub async fn run(conn: &Connection, args: ConsumeArgs) -> anyhow::Result<()> {
    let out = conn.output();
    let mut client = conn.connect().await?;
    let log = args.log.as_str();
    let group = args.group.as_str();
    let partitions = client
        .describe_log(log)
        .await
        .with_context(|| format!("cannot describe log {log}"))?
        .len();
    // Rog's fetch and ack address partitions with one byte.
    let partitions = u8::try_from(partitions).unwrap_or(u8::MAX);
    let mut consumed: u64 = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut found = false;
        for partition in 0..partitions {
            let Some(data) = client
                .fetch(log, partition, group)
                .await
                .with_context(|| format!("cannot fetch from {log}/{partition}"))?
            else {
                continue;
            };
            found = true;
            out.emit(
                || {
                    if partitions == 1 {
                        output::text(&data)
                    } else {
                        format!("[{partition}] {}", output::text(&data))
                    }
                },
                || {
                    let mut object = Map::new();
                    object.insert("partition".into(), json!(partition));
                    output::put_bytes(&mut object, "value", Some(&data));
                    Value::Object(object)
                },
            )?;
            client
                .ack(log, partition, group)
                .await
                .with_context(|| format!("cannot ack {log}/{partition}"))?;
            consumed += 1;
        }
        if found {
            backoff = FIRST_BACKOFF;
        } else if args.follow {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            break;
        }
    }
    if !out.is_json() {
        eprintln!("consumed {consumed} record(s) from {log} for group {group}");
    }
    Ok(())
}
