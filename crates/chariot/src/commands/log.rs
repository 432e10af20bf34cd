//! `chariot log create | list | describe`.

use anyhow::Context;
use serde_json::json;

use chariot_broker::MAX_PARTITIONS;

use super::Connection;

/// Subcommands of `chariot log`.
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Create a log (Rog's create-log command; its 0x15 extension above 255 partitions).
    Create {
        /// Log name.
        name: String,
        /// Number of partitions (1 to 1024).
        #[arg(long, short, default_value_t = 1, value_name = "N")]
        partitions: u32,
    },
    /// List every log and its partition count.
    List,
    /// Show a log's partitions: offsets, and each consumer group's committed offset
    /// and lag.
    Describe {
        /// Log name.
        name: String,
    },
}

/// Runs one `chariot log` subcommand.
pub async fn run(conn: &Connection, command: LogCommand) -> anyhow::Result<()> {
    let out = conn.output();
    let mut client = conn.connect().await?;
    match command {
        LogCommand::Create { name, partitions } => {
            // Checked here, with the server's own words, before anything is sent.
            if partitions == 0 || partitions > MAX_PARTITIONS {
                let e = chariot_broker::BrokerError::InvalidPartitionCount {
                    requested: partitions,
                };
                anyhow::bail!(
                    "cannot create log {name}: {e} (--partitions takes 1 to {MAX_PARTITIONS})"
                );
            }
            // Rog's command while the count fits its byte, so Rog servers work too.
            match u8::try_from(partitions) {
                Ok(p) => client.create_log(&name, p).await,
                Err(_) => client.create_log_ext(&name, partitions).await,
            }
            .with_context(|| format!("cannot create log {name}"))?;
            out.emit(
                || format!("created log {name} with {partitions} partition(s)"),
                || json!({ "log": name, "partitions": partitions }),
            )?;
        }
        LogCommand::List => {
            let logs = client.list_logs().await.context("cannot list logs")?;
            out.emit(
                || {
                    if logs.is_empty() {
                        return "no logs".to_owned();
                    }
                    let width = logs.iter().map(|l| l.name.len()).max().unwrap_or(0).max(4);
                    let mut text = format!("{:<width$}  PARTITIONS", "NAME");
                    for log in &logs {
                        text.push_str(&format!("\n{:<width$}  {}", log.name, log.partitions));
                    }
                    text
                },
                || {
                    json!({ "logs": logs
                        .iter()
                        .map(|l| json!({ "name": l.name, "partitions": l.partitions }))
                        .collect::<Vec<_>>() })
                },
            )?;
        }
        LogCommand::Describe { name } => {
            let partitions = client
                .describe_log(&name)
                .await
                .with_context(|| format!("cannot describe log {name}"))?;
            out.emit(
                || {
                    let mut text = format!("log {name}: {} partition(s)", partitions.len());
                    text.push_str(
                        "\nPARTITION  EARLIEST  NEXT      GROUPS (committed offset, lag)",
                    );
                    for (index, p) in partitions.iter().enumerate() {
                        let groups = if p.groups.is_empty() {
                            "-".to_owned()
                        } else {
                            p.groups
                                .iter()
                                .map(|g| {
                                    format!(
                                        "{} @{} (lag {})",
                                        g.group,
                                        g.committed_offset,
                                        p.next_offset.saturating_sub(g.committed_offset)
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        text.push_str(&format!(
                            "\n{index:<9}  {:<8}  {:<8}  {groups}",
                            p.earliest_offset, p.next_offset
                        ));
                    }
                    text
                },
                || {
                    json!({
                        "log": name,
                        "partitions": partitions.iter().enumerate().map(|(index, p)| json!({
                            "partition": index,
                            "earliest_offset": p.earliest_offset,
                            "next_offset": p.next_offset,
                            "groups": p.groups.iter().map(|g| json!({
                                "group": g.group,
                                "committed_offset": g.committed_offset,
                                "lag": p.next_offset.saturating_sub(g.committed_offset),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                },
            )?;
        }
    }
    Ok(())
}
