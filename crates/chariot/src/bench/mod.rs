//! `chariot bench`: load a running server and report throughput and latency.
//!
//! Methodology:
//! - **Setup** (untimed): the log is created if missing. Natively, an existing log keeps
//!   its partition count and consumers start at each partition's next offset, so they
//!   read only this run's records.
//! - **Window**: producers and consumers all start together and stop issuing requests
//!   at the deadline (`--duration`); a request in flight then is still counted. Rates
//!   divide by the time from the start until the side's last worker finished.
//! - **Producers** send to partition `(producer + request) % partitions`, each over its
//!   own connection, one request at a time. Native: `--batch-size` > 1 sends client-built
//!   record batches (extension publish-batch); 1 sends Rog's single-record publish.
//!   `--protocol rog`: Rog's publish over a new TCP connection per request, as Rog's
//!   clients do (the latency includes connecting).
//! - **Consumers** split the partitions (consumer `c` owns `c, c + M, …`). Native: range
//!   reads from the start offsets, 1 MiB per request. Rog: fetch then ack with group
//!   `chariot-bench`, each over a new connection; a group that already has a position
//!   (from an earlier run) first drains the older records, which count as consumed.
//! - **Latency** is measured per request from the moment it is sent to the moment the
//!   server's answer is read: the publish acknowledgment (one sample per batch) for
//!   producers; for consumers, the read that returned records, or fetch send to the ack's
//!   answer in Rog mode. Records of at least 16 bytes also carry their send time, which
//!   gives **end-to-end** latency (publish sent to record consumed). Histograms are
//!   HdrHistograms in microseconds with 3 significant digits.
//! - **Throughput** counts record values only: records/s and MB/s (10^6 bytes), not
//!   protocol or batch overhead.
//! - **Baseline** (`--baseline-dir`): after the run, the same number of bytes the
//!   producers sent is written to DIR in 1 MiB writes to 64 MiB files, each fdatasync'ed
//!   when full, then deleted: the disk's raw sequential write bandwidth at the log's
//!   segment size and sync points. Producer MB/s is reported as a ratio to it.

mod baseline;
mod chariots;
mod report;
mod workers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chariot_client::{ErrorCode, Limits};
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::{parse_secs, Connection};
use report::{Report, SideStats};
use workers::{Plan, Protocol};

/// Records per publish request natively, unless `--batch-size` says otherwise.
const DEFAULT_BATCH_SIZE: usize = 100;

/// Options of `chariot bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent producers, one connection each.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub producers: usize,
    /// Concurrent consumers; each owns a share of the partitions.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub consumers: usize,
    /// Bytes per record value (values of 16 bytes or more carry a send timestamp).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub record_size: usize,
    /// Records per publish request (1 = Rog's single-record publish) [default: 100;
    /// always 1 with --protocol rog].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs)]
    pub duration: Duration,
    /// Log to use; created if missing.
    #[arg(long, default_value = "bench", value_name = "NAME")]
    pub log: String,
    /// Partitions of the log when it has to be created [default: 1]. Natively, an
    /// existing log keeps its own count; Rog's protocol cannot ask, so there this must
    /// match the existing log.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub partitions: Option<u8>,
    /// `native`: persistent connections and Chariot's extensions; `rog`: Rog's plain
    /// protocol, one connection per request, so any Rog-compatible server can be measured.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Also measure raw sequential write bandwidth in this directory (same volume as the
    /// producers sent) and report producer throughput as a ratio to it.
    #[arg(long, value_name = "DIR")]
    pub baseline_dir: Option<PathBuf>,
    /// Load the Chariots causal log instead (see the methodology in `bench --help`'s
    /// source, `src/bench/chariots.rs`): producers post chains of dependent records to
    /// the record port.
    #[arg(long)]
    pub chariots: bool,
    /// With --chariots: the record port to post to.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "HOST:PORT")]
    pub chariots_addr: std::net::SocketAddr,
    /// With --chariots: records per causal chain.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub chain_depth: usize,
    /// With --chariots: share of chains whose last record is posted before its parent.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub child_first: f64,
    /// With --chariots: total records/s to pace the producers at (0 = unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rate: u64,
    /// With --chariots: native address of a second datacenter this one propagates to;
    /// its shared log is tailed to measure propagation latency.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote_addr: Option<std::net::SocketAddr>,
    /// With --chariots: before measuring, fill the dependency queue with N records whose
    /// dependency never arrives (they stay waiting), to measure appends beside a full queue.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub prefill_waiting: u64,
}

/// Runs `chariot bench`.
pub async fn run(conn: &Connection, args: BenchArgs) -> anyhow::Result<()> {
    if args.chariots {
        return chariots::run(
            conn,
            chariots::ChariotsPlan {
                addr: args.chariots_addr,
                producers: args.producers,
                duration: args.duration,
                chain_depth: args.chain_depth,
                child_first: args.child_first,
                rate: args.rate,
                remote: args.remote_addr,
                prefill_waiting: args.prefill_waiting,
            },
        )
        .await;
    }
    if args.producers == 0 && args.consumers == 0 {
        bail!("nothing to measure: --producers and --consumers are both 0");
    }
    let batch_size = match (args.protocol, args.batch_size) {
        (_, Some(0)) => bail!("--batch-size must be at least 1"),
        (Protocol::Native, size) => size.unwrap_or(DEFAULT_BATCH_SIZE),
        (Protocol::Rog, Some(size)) if size > 1 => {
            bail!("--protocol rog publishes one record per request; drop --batch-size {size}")
        }
        (Protocol::Rog, _) => 1,
    };
    let limits = Limits::default();
    if args.record_size > limits.max_record_size {
        bail!(
            "--record-size {} exceeds the protocol's record limit of {} bytes",
            args.record_size,
            limits.max_record_size
        );
    }
    if batch_size > 1 && batch_bytes(args.record_size, batch_size) > limits.max_batch_size {
        bail!(
            "a batch of {batch_size} records of {} bytes exceeds the protocol's batch limit of {} bytes",
            args.record_size,
            limits.max_batch_size
        );
    }
    let (partitions, start_offsets) = prepare_log(conn, &args).await?;
    if args.consumers > usize::from(partitions) {
        tracing::warn!(
            consumers = args.consumers,
            partitions,
            "more consumers than partitions: the extra consumers stay idle"
        );
    }
    let plan = Arc::new(Plan {
        conn: conn.clone(),
        protocol: args.protocol,
        log: args.log.clone(),
        partitions,
        producers: args.producers,
        consumers: args.consumers,
        record_size: args.record_size,
        batch_size,
        start_offsets,
        run_id: run_id(),
        start: Instant::now(),
        deadline: Instant::now() + args.duration,
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
    });
    let producers: Vec<_> = (0..args.producers)
        .map(|id| tokio::spawn(workers::produce(Arc::clone(&plan), id)))
        .collect();
    let consumers: Vec<_> = (0..args.consumers)
        .map(|id| tokio::spawn(workers::consume(Arc::clone(&plan), id)))
        .collect();
    let progress = Progress::show(Arc::clone(&plan), args.duration);
    let produced = join(producers, &plan).await;
    let consumed = join(consumers, &plan).await;
    progress.finish().await;
    let (produced, consumed) = (produced?, consumed?);

    if args.producers > 0 && produced.records == 0 {
        let why = produced
            .first_error
            .as_deref()
            .unwrap_or("no request completed");
        bail!("the producers published nothing: {why}");
    }
    let baseline = match &args.baseline_dir {
        Some(dir) => Some(baseline::measure(dir, produced.bytes).await?),
        None => None,
    };
    let report = Report::new(&args, conn, &plan, produced, consumed, baseline);
    if conn.json {
        crate::output::line(&serde_json::to_string(&report)?)?;
    } else {
        crate::output::line(&report.to_text())?;
    }
    Ok(())
}

/// Creates the log if needed; returns its partition count and, natively, the offset
/// each partition's consumer starts at.
async fn prepare_log(conn: &Connection, args: &BenchArgs) -> anyhow::Result<(u8, Vec<u64>)> {
    let mut client = conn.connect().await?;
    let log = args.log.as_str();
    let wanted = args.partitions.unwrap_or(1);
    if args.protocol == Protocol::Rog {
        // Rog has no way to list logs: try to create, and accept "already exists".
        return match client.create_log(log, wanted).await {
            Ok(()) => Ok((wanted, Vec::new())),
            Err(e) if e.code() == Some(ErrorCode::LogAlreadyExists) => Ok((wanted, Vec::new())),
            Err(e) => Err(e).with_context(|| format!("cannot create log {log}")),
        };
    }
    let logs = client.list_logs().await.context("cannot list logs")?;
    match logs.iter().find(|l| l.name == log) {
        Some(existing) => {
            if args
                .partitions
                .is_some_and(|p| u32::from(p) != existing.partitions)
            {
                tracing::warn!(
                    log,
                    partitions = existing.partitions,
                    "the log already exists; using its partition count, not --partitions"
                );
            }
        }
        None => match client.create_log(log, wanted).await {
            Ok(()) => {}
            // Created by someone else in the meantime: just as good.
            Err(e) if e.code() == Some(ErrorCode::LogAlreadyExists) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create log {log}")),
        },
    }
    let description = client
        .describe_log(log)
        .await
        .with_context(|| format!("cannot describe log {log}"))?;
    let Ok(partitions) = u8::try_from(description.len()) else {
        bail!(
            "log {log} has {} partitions; the bench addresses at most 255",
            description.len()
        );
    };
    if partitions == 0 {
        bail!("log {log} has no partitions");
    }
    Ok((
        partitions,
        description.iter().map(|p| p.next_offset).collect(),
    ))
}

/// Waits for one side's workers and merges their statistics.
async fn join(
    handles: Vec<tokio::task::JoinHandle<SideStats>>,
    plan: &Plan,
) -> anyhow::Result<SideStats> {
    let mut total = SideStats::new();
    for handle in handles {
        total.merge(handle.await.context("a bench worker panicked")?);
    }
    total.secs = plan.start.elapsed().as_secs_f64();
    Ok(total)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn show(plan: Arc<Plan>, duration: Duration) -> Progress {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let bar = ProgressBar::new(millis);
        if let Ok(style) =
            ProgressStyle::with_template("[{bar:30}] {elapsed:>3} / {duration} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let elapsed = plan.start.elapsed();
                let secs = elapsed.as_secs_f64().max(1e-9);
                let produced = plan.produced.load(Ordering::Relaxed);
                let consumed = plan.consumed.load(Ordering::Relaxed);
                ticking.set_position(
                    u64::try_from(elapsed.as_millis())
                        .unwrap_or(u64::MAX)
                        .min(millis),
                );
                ticking.set_message(format!(
                    "produced {produced} ({:.0}/s), consumed {consumed} ({:.0}/s)",
                    produced as f64 / secs,
                    consumed as f64 / secs
                ));
            }
        });
        Progress { bar, ticker }
    }

    async fn finish(self) {
        self.ticker.abort();
        let _ = self.ticker.await;
        self.bar.finish_and_clear();
    }
}

/// Encoded size of a batch of `count` key-less, header-less values (see
/// `docs/format.md`: a 58-byte batch header, 18 fixed bytes per record).
fn batch_bytes(record_size: usize, count: usize) -> usize {
    record_size
        .saturating_add(18)
        .saturating_mul(count)
        .saturating_add(58)
}

/// Tags this run's records, so consumers can tell them from older ones.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
