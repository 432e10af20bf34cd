//! The `chariot` binary: the server (`chariot serve`), a command-line client for every
//! command of the native protocol, and a load generator (`chariot bench`).
//!
//! Layout:
//! - `serve`: options and startup of one server node.
//! - `commands`: the client subcommands (`log`, `publish`, `fetch`, `ack`, `consume`,
//!   `read` over the native protocol; `record`, the Chariots causal log, over HTTP;
//!   `repair`, offline, on a data directory), one
//!   file each, sharing the connection options.
//! - `output`: how results and record payloads are printed, for people and for scripts.
//! - `bench`: `chariot bench`, its workers, its report and the raw-disk baseline.
//!
//! This is the one place where errors become text: libraries return typed errors,
//! `anyhow` adds context here, and `main` prints a single `error: …` line and exits 1.

mod bench;
mod commands;
mod output;
mod serve;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::commands::Connection;

/// How payloads appear; shown at the end of `--help`.
const OUTPUT_HELP: &str = "\
Output: human-readable by default. Record values are shown as UTF-8 text, with invalid \
bytes replaced by U+FFFD and control characters escaped (\\n, \\u{1b}), so binary payloads \
cannot garble a terminal. With --json every command prints one JSON object (consume and \
read print one object per record, one per line); a value appears twice: \"value\" is its \
text when it is valid UTF-8 (else null) and \"value_base64\" its exact bytes in standard \
base64. Errors are one line on stderr, `error: ...`, with exit status 1 (2 for usage \
errors).";

/// Chariot: a durable, ordered shared log, compatible with Rog's protocol.
#[derive(Debug, Parser)]
#[command(name = "chariot", version, after_help = OUTPUT_HELP)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server node.
    Serve(Box<serve::ServeArgs>),
    /// Create, list and describe logs.
    #[command(subcommand)]
    Log(commands::log::LogCommand),
    /// Append records and print their offsets: DATA, or --file (one record), or stdin
    /// (one record per line).
    Publish(commands::publish::PublishArgs),
    /// Print the record at a consumer group's position, without moving it (Rog's fetch).
    Fetch(commands::fetch::GroupArgs),
    /// Move a consumer group past the record it fetched (Rog's ack).
    Ack(commands::fetch::AckArgs),
    /// Fetch and ack every partition's records for a group, like `tail`
    /// (`--follow` for `tail -f`).
    Consume(commands::consume::ConsumeArgs),
    /// Print records by offset, without touching any consumer group.
    Read(commands::read::ReadArgs),
    /// The Chariots causal log over the HTTP API (--http): post, get, find, hash, waiting.
    ///
    /// Post records that depend on others (by tag, within a seed), look them up by log id
    /// or by tag, hash a tag, and see the dependency queue.
    #[command(subcommand)]
    Record(commands::record::RecordCommand),
    /// Cluster membership over the HTTP API (--http) of any node: status, add, remove,
    /// rebalance, transfer-leader.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Drive a running server with producers and consumers and report throughput and
    /// latency.
    ///
    /// Producers and consumers run together for --duration; then it prints records/s,
    /// MB/s (record values, 10^6 bytes) and latency percentiles (p50, p99, p999, max)
    /// for each side. Latency is per request, from sending it to reading the answer
    /// (for producers: the acknowledgment of a publish); consumers also report
    /// end-to-end latency, from a record's publish being sent to its consumption, read
    /// from a stamp in its first 16 bytes. Natively, batches go through the
    /// publish-batch extension and consumers use range reads from the offsets at the
    /// start; --protocol rog uses only Rog's four commands with one connection per
    /// request (consumers fetch + ack as group `chariot-bench`), so other Rog-compatible
    /// servers can be measured the same way. --json prints the report as one object.
    Bench(bench::BenchArgs),
    /// Check every partition of a stopped server's data directory and mend damaged
    /// files (--dry-run: only report).
    ///
    /// Intact records keep their offsets; the offsets of records lost to damage are
    /// marked as lost (reads show them as empty records with a `chariot.lost` header)
    /// and never reused; a batch damaged only in its base offset is restored. Every
    /// overwritten byte is kept beside its segment as `<segment>.log.damaged-<position>`.
    Repair(commands::repair::RepairArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    if let Some(serve) = matches.subcommand_matches("serve") {
        // The client options are global: before `serve` they land in the top-level
        // matches, after it in serve's own (hidden) copies.
        let given: Vec<&str> = ["addr", "http", "json", "timeout"]
            .into_iter()
            .filter(|id| {
                [&matches, serve]
                    .iter()
                    .any(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
            })
            .collect();
        if let Err(e) = serve::reject_client_options(&given) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft narrates every election and membership step at info: its warnings
            // are what an operator needs by default.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // Failed heartbeats to a node that is down are a warning every
                // 100 ms per group: the election that follows says enough.
                EnvFilter::new(
                    "info,openraft=warn,openraft_multi=warn,openraft::core::heartbeat=error",
                )
            }),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // `chariot consume | head`: the reader left, which is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let conn = cli.connection;
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Log(command) => commands::log::run(&conn, command).await,
        Command::Publish(args) => commands::publish::run(&conn, args).await,
        Command::Fetch(args) => commands::fetch::fetch(&conn, args).await,
        Command::Ack(args) => commands::fetch::ack(&conn, args).await,
        Command::Consume(args) => commands::consume::run(&conn, args).await,
        Command::Read(args) => commands::read::run(&conn, args).await,
        Command::Record(command) => commands::record::run(&conn, command).await,
        Command::Cluster(command) => commands::cluster::run(&conn, command).await,
        Command::Bench(args) => bench::run(&conn, args).await,
        Command::Repair(args) => commands::repair::run(&conn, &args),
    }
}

/// Prints clap's outcome: help and version as clap renders them, usage errors folded
/// into the same single `error: …` line as every other failure.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.to_string();
    // Clap's message ends with a usage block and a hint; the line(s) before it say
    // what was wrong.
    let reason: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    let reason = reason.join(" ");
    let reason = reason.strip_prefix("error: ").unwrap_or(&reason);
    eprintln!("error: {reason} (see `chariot --help`)");
    ExitCode::from(2)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
