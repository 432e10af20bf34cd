//! `chariot read`: records by offset, through range reads; no consumer group moves.

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::Connection;
use crate::output;

/// Bytes asked for per range read; the server may return more (one whole batch).
const READ_BYTES: u32 = 1 << 20;

/// Options of `chariot read`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Log name.
    pub log: String,
    /// Partition index.
    #[arg(long, short, default_value_t = 0, value_name = "P")]
    pub partition: u32,
    /// First offset to print [default: the partition's earliest retained offset].
    #[arg(long, short, value_name = "O")]
    pub offset: Option<u64>,
    /// Print at most this many records [default: all, up to the end of the log].
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
}

/// Runs `chariot read`: one line per record, `OFFSET<TAB>VALUE` (or one JSON object
/// per line with offset, timestamp, key and value).
pub async fn run(conn: &Connection, args: ReadArgs) -> anyhow::Result<()> {
    let out = conn.output();
    let mut client = conn.connect().await?;
    let ReadArgs {
        log,
        partition,
        offset,
        count,
    } = args;
    let context = || format!("cannot read {log}/{partition}");
    let mut at = match offset {
        Some(offset) => offset,
        None => {
            let partitions = client.describe_log(&log).await.with_context(context)?;
            let index = usize::try_from(partition).unwrap_or(usize::MAX);
            match partitions.get(index) {
                Some(p) => p.earliest_offset,
                // Let the server word the out-of-range error.
                None => 0,
            }
        }
    };
    let mut left = count.unwrap_or(u64::MAX);
    while left > 0 {
        let range = client
            .read_range(&log, partition, at, READ_BYTES)
            .await
            .with_context(context)?;
        let before = at;
        for record in range.records_from(at) {
            if left == 0 {
                break;
            }
            out.emit(
                || format!("{}\t{}", record.offset, output::text(record.value)),
                || {
                    let mut object = Map::new();
                    object.insert("offset".into(), json!(record.offset));
                    object.insert("timestamp".into(), json!(record.timestamp));
                    output::put_bytes(&mut object, "key", record.key);
                    output::put_bytes(&mut object, "value", Some(record.value));
                    Value::Object(object)
                },
            )?;
            at = record.offset + 1;
            left -= 1;
        }
        // An empty answer is the end of the log; an answer without progress would
        // repeat forever, so it ends the read too.
        if at == before || at >= range.next_offset {
            break;
        }
    }
    Ok(())
}
