//! `chariot fetch` and `chariot ack`: Rog's consumer-group commands, one call each.

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::Connection;
use crate::output;

/// Options of `chariot fetch` and `chariot ack`.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// Log name.
    pub log: String,
    /// Partition index (0 to 255 in Rog's protocol).
    #[arg(long, short, default_value_t = 0, value_name = "P")]
    pub partition: u8,
    /// Consumer group.
    #[arg(long, short, value_name = "G")]
    pub group: String,
}

/// Runs `chariot fetch`: prints the group's current record, or reports that there is
/// none yet (exit status 0 either way; with --json, `record` is null).
pub async fn fetch(conn: &Connection, args: GroupArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let GroupArgs {
        log,
        partition,
        group,
    } = args;
    let record = client
        .fetch(&log, partition, &group)
        .await
        .with_context(|| format!("cannot fetch from {log}/{partition}"))?;
    let out = conn.output();
    if record.is_none() && !out.is_json() {
        eprintln!("no data left in {log}/{partition} for group {group}");
        return Ok(());
    }
    out.emit(
        || record.as_deref().map(output::text).unwrap_or_default(),
        || {
            let record = record.as_deref().map(|data| {
                let mut object = Map::new();
                output::put_bytes(&mut object, "value", Some(data));
                Value::Object(object)
            });
            json!({ "log": log, "partition": partition, "group": group, "record": record })
        },
    )?;
    Ok(())
}

/// Options of `chariot ack`.
#[derive(Debug, clap::Args)]
pub struct AckArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// Instead of moving past the fetched record: the group has consumed every record
    /// below OFFSET (it moves to max(committed, OFFSET), so repeating it is harmless;
    /// extension 0x17).
    #[arg(long, value_name = "OFFSET")]
    pub to: Option<u64>,
}

/// Runs `chariot ack`.
pub async fn ack(conn: &Connection, args: AckArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let GroupArgs {
        log,
        partition,
        group,
    } = args.group;
    if let Some(to) = args.to {
        let offset = client
            .ack_to(&log, u32::from(partition), &group, to)
            .await
            .with_context(|| format!("cannot ack {log}/{partition} to {to}"))?;
        conn.output().emit(
            || format!("acknowledged: group {group} of {log}/{partition} is at offset {offset}"),
            || json!({ "log": log, "partition": partition, "group": group, "offset": offset }),
        )?;
        return Ok(());
    }
    client
        .ack(&log, partition, &group)
        .await
        .with_context(|| format!("cannot ack {log}/{partition}"))?;
    conn.output().emit(
        || format!("acknowledged: group {group} moved past its record in {log}/{partition}"),
        || json!({ "log": log, "partition": partition, "group": group, "acked": true }),
    )?;
    Ok(())
}
