//! `chariot record post | get | find | hash | waiting`: the Chariots causal log, through
//! the node's HTTP API (`--http`).
//!
//! A record has tags, a seed naming its causal chain, and the tag hashes it depends on:
//! it is appended only once, for each of them, a record of the same seed carrying a tag
//! with that hash is in the log; until then it waits in the dependency queue. A
//! dependency is named by its tag (`--after KEY=VALUE`, hashed here as FNV-1a 64 of
//! `KEY:VALUE`, the hash `chariot record hash` prints) or by the hash itself
//! (`--prehash`).
//!
//! The HTTP client is blocking (one request per command needs no more); each request runs
//! on tokio's blocking pool so the runtime's threads never block.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use chariot_proto::chariots::tag_hash;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::http::{Api, NoAnswer};
use super::Connection;
use crate::output::{self, Output};

/// Subcommands of `chariot record`.
#[derive(Debug, clap::Subcommand)]
pub enum RecordCommand {
    /// Append a record, or queue it until its dependencies are in the log.
    ///
    /// Prints the record's log id (LId) when it is appended, or its dependency-queue id
    /// when it has to wait (then `chariot record waiting ID` tells what became of it). A
    /// rejected record (it waited longer than the server allows) is an error: exit
    /// status 1, after its outcome object with --json.
    Post(PostArgs),
    /// Print the record at a log id (LId).
    Get {
        /// Log id.
        lid: u64,
    },
    /// Print the records carrying every given tag and hash, in log order.
    Find(FindArgs),
    /// Print a tag's hash, as dependencies name it (no server needed).
    ///
    /// The hash is FNV-1a, 64 bits, of the UTF-8 bytes of `KEY:VALUE`.
    Hash {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// List the dependency queue (waiting and recently rejected records), or what became
    /// of entry ID.
    Waiting {
        /// Dependency-queue id, as `record post` printed it.
        id: Option<u64>,
    },
}

/// Options of `chariot record post`.
#[derive(Debug, clap::Args)]
pub struct PostArgs {
    /// A tag of the record (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag, required = true)]
    pub tags: Vec<(String, String)>,
    /// Causal chain: only records of the same seed satisfy a dependency.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Depend on the record of this seed tagged KEY=VALUE (repeatable).
    #[arg(long = "after", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub after: Vec<(String, String)>,
    /// Depend on a tag hash given as a number (repeatable; 0 means no dependency).
    #[arg(long = "prehash", value_name = "H")]
    pub prehash: Vec<u64>,
    /// Client id: posting the same id again returns the first post's outcome instead of
    /// appending a second record.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// If the record has to wait, wait for its final outcome (appended or rejected), at
    /// most --timeout.
    #[arg(long)]
    pub wait: bool,
}

/// Options of `chariot record find`.
#[derive(Debug, clap::Args)]
pub struct FindArgs {
    /// A tag the records must carry (repeatable).
    #[arg(
        long = "tag",
        value_name = "KEY=VALUE",
        value_parser = parse_tag,
        required_unless_present = "hashes"
    )]
    pub tags: Vec<(String, String)>,
    /// A tag hash the records must carry (repeatable).
    #[arg(long = "hash", value_name = "H")]
    pub hashes: Vec<u64>,
}

/// Parses `KEY=VALUE` (split at the first `=`; the value may be empty).
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("{s:?} has an empty key")),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// What became of a posted record (the server's outcome object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Outcome {
    /// In the log at this LId.
    Appended { lid: u64 },
    /// Durably queued until its dependencies arrive.
    Waiting { id: u64 },
    /// It waited too long; `POST /record` calls the reason `error`.
    Rejected {
        id: u64,
        #[serde(alias = "error")]
        reason: String,
    },
}

/// A record of the causal log, as `GET /record/{lid}` returns it.
#[derive(Debug, Deserialize)]
struct Record {
    lid: u64,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    seed: u64,
    #[serde(default)]
    prehash: Vec<u64>,
    origin_dc: u32,
    toid: u64,
    timestamp: i64,
    #[serde(default)]
    id: Option<String>,
}

/// A record as submitted, inside a dependency-queue entry.
#[derive(Debug, Deserialize)]
struct Submission {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    seed: u64,
    #[serde(default)]
    id: Option<String>,
}

/// An entry of `GET /records/waiting`.
#[derive(Debug, Deserialize)]
struct QueueEntry {
    id: u64,
    status: String,
    record: Submission,
    accepted_at_ms: i64,
    #[serde(default)]
    missing: Vec<u64>,
    #[serde(default)]
    reason: Option<String>,
}

/// Runs one `chariot record` subcommand.
pub async fn run(conn: &Connection, command: RecordCommand) -> anyhow::Result<()> {
    let out = conn.output();
    let api = Api::new(conn);
    match command {
        RecordCommand::Post(args) => post(&api, out, args).await,
        RecordCommand::Get { lid } => {
            let answer = api.get(&format!("/record/{lid}"), Vec::new()).await?;
            let body = match answer.code() {
                // Before the first record, the causal log does not exist at all.
                Some("unknown_log" | "offset_out_of_range") => {
                    bail!("no record at lid {lid}")
                }
                _ => answer
                    .ok()
                    .with_context(|| format!("cannot get record {lid}"))?,
            };
            let record = parse::<Record>(&body)?;
            out.emit(|| record_line(&record), || body)?;
            Ok(())
        }
        RecordCommand::Find(args) => {
            let mut query: Vec<(&str, String)> = args
                .tags
                .iter()
                .map(|(k, v)| ("tag", format!("{k}:{v}")))
                .collect();
            query.extend(args.hashes.iter().map(|h| ("hash", h.to_string())));
            let body = api
                .get("/records", query)
                .await?
                .ok()
                .context("cannot find records")?;
            let records = parse::<Vec<Record>>(&body)?;
            out.emit(
                || {
                    if records.is_empty() {
                        return "no records".to_owned();
                    }
                    records
                        .iter()
                        .map(record_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                || json!({ "records": body }),
            )?;
            Ok(())
        }
        RecordCommand::Hash { key, value } => {
            let hash = tag_hash(&key, &value);
            out.emit(
                || hash.to_string(),
                || json!({ "key": key, "value": value, "hash": hash }),
            )?;
            Ok(())
        }
        RecordCommand::Waiting { id: None } => {
            let body = api
                .get("/records/waiting", Vec::new())
                .await?
                .ok()
                .context("cannot list the dependency queue")?;
            let entries = parse::<Vec<QueueEntry>>(&body)?;
            out.emit(
                || {
                    if entries.is_empty() {
                        return "no records waiting or rejected".to_owned();
                    }
                    entries
                        .iter()
                        .map(entry_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                || json!({ "entries": body }),
            )?;
            Ok(())
        }
        RecordCommand::Waiting { id: Some(id) } => {
            let body = api
                .get(&format!("/records/waiting/{id}"), Vec::new())
                .await?
                .ok()
                .with_context(|| format!("cannot look up dependency-queue entry {id}"))?;
            let outcome = parse::<Outcome>(&body)?;
            out.emit(
                || match &outcome {
                    Outcome::Appended { lid } => format!("entry {id}: appended at lid {lid}"),
                    Outcome::Waiting { .. } => format!("entry {id}: waiting"),
                    Outcome::Rejected { reason, .. } => {
                        format!("entry {id}: rejected: {}", output::text(reason.as_bytes()))
                    }
                },
                || {
                    let mut object = json!({ "id": id });
                    if let (Some(object), Value::Object(fields)) =
                        (object.as_object_mut(), json!(outcome))
                    {
                        object.extend(fields);
                    }
                    object
                },
            )?;
            Ok(())
        }
    }
}

async fn post(api: &Api, out: Output, args: PostArgs) -> anyhow::Result<()> {
    let mut tags = BTreeMap::new();
    for (key, value) in args.tags {
        if tags.contains_key(&key) {
            bail!("tag {key:?} is given twice");
        }
        tags.insert(key, value);
    }
    let mut prehash: Vec<u64> = args.after.iter().map(|(k, v)| tag_hash(k, v)).collect();
    prehash.extend(args.prehash);
    let mut body = json!({ "tags": tags, "seed": args.seed, "prehash": prehash });
    if let (Some(object), Some(id)) = (body.as_object_mut(), args.id) {
        object.insert("id".into(), Value::String(id));
    }
    let query = if args.wait {
        vec![("wait", "true".to_owned())]
    } else {
        Vec::new()
    };
    let answer = api.post("/record", query, body).await.map_err(|e| {
        if args.wait && e.downcast_ref::<NoAnswer>().is_some() {
            e.context(
                "the record may still be waiting for its dependencies \
                 (see `chariot record waiting`)",
            )
        } else {
            e
        }
    })?;
    let outcome = match answer.body.get("status").and_then(Value::as_str) {
        Some("appended" | "waiting" | "rejected") => parse::<Outcome>(&answer.body)?,
        _ => return Err(answer.error()).context("cannot post the record"),
    };
    match &outcome {
        Outcome::Appended { lid } => {
            out.emit(|| format!("appended at lid {lid}"), || json!(outcome))?
        }
        Outcome::Waiting { id } => out.emit(
            || {
                format!(
                    "waiting for dependencies as queue entry {id} \
                     (`chariot record waiting {id}` tells what became of it)"
                )
            },
            || json!(outcome),
        )?,
        Outcome::Rejected { id, reason } => {
            // Scripts get the outcome on stdout as for the other two; everyone gets the
            // failure on stderr and in the exit status.
            if out.is_json() {
                output::line(&json!(outcome).to_string())?;
            }
            bail!("record rejected (queue entry {id}): {reason}");
        }
    }
    Ok(())
}

/// `lid=… seed=… tags={…} prehash=[…] origin_dc=… toid=… timestamp=…[ id=…]`, tags as
/// terminal-safe text.
fn record_line(r: &Record) -> String {
    let mut line = format!(
        "lid={} seed={} tags={} prehash={:?} origin_dc={} toid={} timestamp={}",
        r.lid,
        r.seed,
        tags_text(&r.tags),
        r.prehash,
        r.origin_dc,
        r.toid,
        r.timestamp
    );
    if let Some(id) = &r.id {
        line.push_str(&format!(" id={}", output::text(id.as_bytes())));
    }
    line
}

/// `id=… waiting seed=… tags={…} missing=[…] accepted_at_ms=…[ client_id=…][ reason: …]`.
fn entry_line(e: &QueueEntry) -> String {
    let mut line = format!(
        "id={} {} seed={} tags={} missing={:?} accepted_at_ms={}",
        e.id,
        output::text(e.status.as_bytes()),
        e.record.seed,
        tags_text(&e.record.tags),
        e.missing,
        e.accepted_at_ms
    );
    if let Some(id) = &e.record.id {
        line.push_str(&format!(" client_id={}", output::text(id.as_bytes())));
    }
    if let Some(reason) = &e.reason {
        line.push_str(&format!(" reason: {}", output::text(reason.as_bytes())));
    }
    line
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                output::text(k.as_bytes()),
                output::text(v.as_bytes())
            )
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> anyhow::Result<T> {
    T::deserialize(body).map_err(|e| anyhow!("unexpected answer from the server ({e}): {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_at_the_first_equals_sign() {
        assert_eq!(parse_tag("k=v"), Ok(("k".into(), "v".into())));
        assert_eq!(parse_tag("k=a=b"), Ok(("k".into(), "a=b".into())));
        assert_eq!(parse_tag("k="), Ok(("k".into(), String::new())));
        assert!(parse_tag("kv").is_err());
        assert!(parse_tag("=v").is_err());
    }

    #[test]
    fn outcomes_parse_from_every_answer_form() -> anyhow::Result<()> {
        let rejected = json!({"status": "rejected", "id": 3, "error": "late", "code": "rejected"});
        assert_eq!(
            parse::<Outcome>(&rejected)?,
            Outcome::Rejected {
                id: 3,
                reason: "late".into()
            }
        );
        let listed = json!({"status": "rejected", "id": 3, "reason": "late"});
        assert_eq!(json!(parse::<Outcome>(&listed)?), listed);
        assert_eq!(
            parse::<Outcome>(&json!({"status": "appended", "lid": 7}))?,
            Outcome::Appended { lid: 7 }
        );
        Ok(())
    }
}
