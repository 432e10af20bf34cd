//! `chariot cluster status | add | remove | rebalance | transfer-leader`, over the HTTP
//! API of any node of the cluster (`--http`).

use anyhow::bail;
use serde_json::{json, Value};

use super::http::Api;
use super::Connection;

/// Subcommands of `chariot cluster`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the members (metadata voters and learners), the metadata leader, and every
    /// partition's replicas, leader and pending move as the node asked knows them.
    Status,
    /// Admit a node (started with --join, or to be started with it) as
    /// `ID=HOST:PORT`, its inter-node address. It holds no replica until a rebalance
    /// or a removal moves some to it.
    Add {
        /// The node as ID=HOST:PORT.
        #[arg(value_name = "ID=HOST:PORT")]
        node: String,
    },
    /// Remove a node: each of its replicas moves to another node (keeping every
    /// partition's replication factor while there are enough nodes), then it leaves the
    /// metadata group. Its id is never taken again. Stop the node once `status` shows
    /// it gone.
    Remove {
        /// The node's id.
        id: u64,
    },
    /// Move replicas so that every node holds about as many as the others.
    Rebalance,
    /// Make a node the leader of a partition (it must be one of its replicas).
    TransferLeader {
        /// The log.
        log: String,
        /// The partition.
        #[arg(long, short, default_value_t = 0)]
        partition: usize,
        /// The node that should lead it.
        #[arg(long, value_name = "ID")]
        to: u64,
    },
}

/// Runs one `chariot cluster` subcommand.
pub async fn run(conn: &Connection, command: ClusterCommand) -> anyhow::Result<()> {
    let out = conn.output();
    let api = Api::new(conn);
    match command {
        ClusterCommand::Status => {
            let status = api.get("/cluster", Vec::new()).await?.ok()?;
            let Some(raft) = status.get("raft").cloned() else {
                bail!("this node runs alone, not in a cluster (it was started without --node-id)");
            };
            out.emit(|| status_text(&raft), || raft.clone())?;
        }
        ClusterCommand::Add { node } => {
            let (id, addr) = crate::serve::split_id_addr("cluster add", &node)?;
            let id: u64 = crate::serve::parse_id("cluster add", &node, id.trim())?;
            let body = json!({"id": id, "addr": addr.trim()});
            let answer = api.post("/cluster/nodes", Vec::new(), body).await?.ok()?;
            out.emit(
                || format!("node {id} added at {}", addr.trim()),
                || answer.clone(),
            )?;
        }
        ClusterCommand::Remove { id } => {
            let answer = api.delete(&format!("/cluster/nodes/{id}")).await?.ok()?;
            let moves = answer.get("moves").and_then(Value::as_u64).unwrap_or(0);
            out.emit(
                || format!("node {id} removed; {moves} partition(s) move off it"),
                || answer.clone(),
            )?;
        }
        ClusterCommand::Rebalance => {
            let answer = api
                .post("/cluster/rebalance", Vec::new(), json!({}))
                .await?
                .ok()?;
            let moves = answer
                .get("moves")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            out.emit(
                || {
                    if moves == 0 {
                        "balanced already: nothing moves".to_string()
                    } else {
                        format!("{moves} partition(s) move")
                    }
                },
                || answer.clone(),
            )?;
        }
        ClusterCommand::TransferLeader { log, partition, to } => {
            let body = json!({"log": log, "partition": partition, "to": to});
            let answer = api
                .post("/cluster/transfer-leader", Vec::new(), body)
                .await?
                .ok()?;
            out.emit(
                || format!("leadership of {log}/{partition} goes to node {to}"),
                || answer.clone(),
            )?;
        }
    }
    Ok(())
}

fn status_text(raft: &Value) -> String {
    let get = |v: &Value, k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    let mut lines = vec![format!(
        "node {} · metadata leader {} · term {}",
        get(raft, "node"),
        raft.pointer("/metadata/leader")
            .map_or("none".into(), Value::to_string),
        raft.pointer("/metadata/term")
            .map_or("?".into(), Value::to_string),
    )];
    for m in raft
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let removed = m.get("removed").and_then(Value::as_bool) == Some(true);
        lines.push(format!(
            "  member {} at {} ({}{})",
            get(m, "id"),
            m.get("addr").and_then(Value::as_str).unwrap_or("?"),
            m.get("metadata_role")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            if removed { ", removed: draining" } else { "" },
        ));
    }
    for p in raft
        .get("partitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let leader = p
            .pointer("/local/leader")
            .filter(|l| !l.is_null())
            .map_or("?".into(), Value::to_string);
        let moving = p
            .get("moving_to")
            .filter(|m| !m.is_null())
            .map(|m| format!(" moving to {m}"))
            .unwrap_or_default();
        lines.push(format!(
            "  {}/{} group {} replicas {} leader {}{}",
            p.get("log").and_then(Value::as_str).unwrap_or("?"),
            get(p, "partition"),
            get(p, "group"),
            get(p, "replicas"),
            leader,
            moving
        ));
    }
    lines.join("\n")
}
