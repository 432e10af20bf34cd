//! `chariot serve`: one node with an embedded default configuration.
//!
//! Every option has a built-in default; a TOML file (`--config`) overrides defaults, and
//! flags or environment variables override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use chariot_broker::{BrokerConfig, BrokerError};
use chariot_log::{LogConfig, LogError, SyncPolicy};
use chariot_server::{Server, ServerConfig, ServerError};
use serde::Deserialize;

/// Options of `chariot serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are these options' long names with `_`
    /// (e.g. `data_dir = "/var/lib/chariot"`). Flags and environment variables win over it.
    #[arg(long, env = "CHARIOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: logs, partitions and consumer-group offsets [default: ./chariot-data].
    #[arg(long, env = "CHARIOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the native (Rog-compatible) TCP protocol [default: 0.0.0.0:7878].
    #[arg(long, env = "CHARIOT_TCP_ADDR")]
    pub tcp_addr: Option<SocketAddr>,
    /// Address of the HTTP API [default: 0.0.0.0:8080].
    #[arg(long, env = "CHARIOT_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the Chariots record port (gochariots' 'r'/'s' frames)
    /// [default: 0.0.0.0:9000].
    #[arg(long, env = "CHARIOT_CHARIOTS_ADDR")]
    pub chariots_addr: Option<SocketAddr>,
    /// Name of the Chariots shared log [default: chariots].
    #[arg(long, env = "CHARIOT_CHARIOTS_LOG")]
    pub chariots_log: Option<String>,
    /// This node's datacenter id, stamped on the Chariots records it originates
    /// [default: 0].
    #[arg(long, env = "CHARIOT_DC_ID")]
    pub dc_id: Option<u32>,
    /// A remote datacenter to propagate records to, as `ID=HOST:PORT` (its record port);
    /// repeat for several. More can be added at run time with `POST /datacenters`.
    #[arg(long = "remote-dc", value_name = "ID=HOST:PORT")]
    pub remote_dc: Vec<String>,
    /// A datacenter whose propagated records this node accepts without propagating to it
    /// (repeat for several). Records arrive only from datacenters named here or as a
    /// remote (`--remote-dc`, `POST /datacenters`); any other is refused.
    #[arg(long = "accept-dc", value_name = "ID")]
    pub accept_dc: Vec<u32>,
    /// How many records of one remote datacenter may wait at once: a propagated record
    /// further than this ahead of the TOId expected next from its origin is refused as
    /// busy (its sender resends it later), so one origin cannot fill the queue
    /// [default: 10000].
    #[arg(long, env = "CHARIOT_MAX_WAITING_PER_ORIGIN")]
    pub max_waiting_per_origin: Option<usize>,
    /// How long a Chariots record may wait for its dependencies before it is rejected,
    /// in milliseconds [default: 300000].
    #[arg(long, env = "CHARIOT_DEPENDENCY_TIMEOUT_MS")]
    pub dependency_timeout_ms: Option<u64>,
    /// Most Chariots records waiting for dependencies at once; past it new ones are
    /// refused as busy [default: 100000].
    #[arg(long, env = "CHARIOT_MAX_WAITING")]
    pub max_waiting: Option<usize>,
    /// Durability: `group-commit` (fsync before acknowledging, shared by concurrent
    /// writes), `every-append` (one fsync per write), `interval:<ms>` or `never`
    /// [default: group-commit].
    #[arg(long, env = "CHARIOT_SYNC")]
    pub sync: Option<String>,
    /// Segment size in bytes, at least 1 MiB [default: 67108864].
    #[arg(long, env = "CHARIOT_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Largest record value accepted, in bytes [default: 1048576].
    #[arg(long, env = "CHARIOT_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,
    /// Delete a partition's oldest segments beyond this many bytes [default: keep all].
    #[arg(long, env = "CHARIOT_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this many seconds
    /// [default: keep all].
    #[arg(long, env = "CHARIOT_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// Most concurrent client connections on the native port [default: 10000].
    #[arg(long, env = "CHARIOT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most concurrent HTTP connections [default: 1024].
    #[arg(long, env = "CHARIOT_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// Most concurrent connections on the Chariots record port [default: 1024].
    #[arg(long, env = "CHARIOT_MAX_RECORD_CONNECTIONS")]
    pub max_record_connections: Option<usize>,
    /// Close a connection with no request in progress after this many seconds (HTTP:
    /// the smaller of this and --frame-timeout-secs) [default: 300].
    #[arg(long, env = "CHARIOT_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// A request must arrive in full, and its answer be read, within this many seconds
    /// [default: 30].
    #[arg(long, env = "CHARIOT_FRAME_TIMEOUT_SECS")]
    pub frame_timeout_secs: Option<u64>,
    /// Bytes of partly received requests all connections may hold together, beyond
    /// 64 KiB each; past it they wait [default: 268435456].
    #[arg(long, env = "CHARIOT_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// How long to wait for the data directory when another process holds it (a
    /// previous server still shutting down), in milliseconds; 0 fails at once
    /// [default: 10000].
    #[arg(long, env = "CHARIOT_LOCK_WAIT_MS")]
    pub lock_wait_ms: Option<u64>,
    /// Rate of the background check of sealed segments (every batch's CRC, a pass at
    /// start-up and then every --scrub-interval-secs), in bytes per second; 0 turns it
    /// off [default: 33554432].
    #[arg(long, env = "CHARIOT_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// Seconds between the end of one scrub pass and the start of the next
    /// [default: 86400].
    #[arg(long, env = "CHARIOT_SCRUB_INTERVAL_SECS")]
    pub scrub_interval_secs: Option<u64>,
    /// Cluster mode: this node's id, a number unique in the cluster (never reused for a
    /// node that lost its disk, nor for a removed one). Needs --peers or --join.
    #[arg(long, env = "CHARIOT_NODE_ID")]
    pub node_id: Option<u64>,
    /// Cluster mode: where the inter-node port listens [default: 0.0.0.0:7979].
    #[arg(long, env = "CHARIOT_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// Cluster mode: every node of the cluster, this one included, as
    /// `ID=HOST:PORT` (its inter-node address), comma-separated or repeated; the same
    /// list on every node. The nodes form the cluster among themselves on first start.
    #[arg(
        long,
        env = "CHARIOT_PEERS",
        value_name = "ID=HOST:PORT",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,
    /// Cluster mode: join a running cluster through one of its members (its inter-node
    /// address) on this node's first start, instead of --peers. The node holds no
    /// replica until `chariot cluster rebalance` (or a removal) moves some to it.
    #[arg(
        long,
        env = "CHARIOT_JOIN",
        value_name = "HOST:PORT",
        conflicts_with = "peers"
    )]
    pub join: Option<String>,
    /// Cluster mode: the inter-node address the other nodes reach this one at
    /// [default: this node's entry in --peers, else --cluster-addr if it names a host].
    #[arg(long, env = "CHARIOT_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// The client options, which clap would otherwise list (they are global) and serve
    /// would ignore: declared here, hidden, under the same ids, they stay out of
    /// `serve --help`, and [`reject_client_options`] refuses them by name.
    #[command(flatten)]
    pub client: ClientOptions,
}

/// The client options `chariot serve` refuses (see [`ServeArgs::client`]); same ids and
/// value types as [`crate::commands::Connection`].
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    #[arg(long = "addr", id = "addr", hide = true)]
    addr: Option<String>,
    #[arg(long = "http", id = "http", hide = true)]
    http: Option<String>,
    #[arg(long = "json", id = "json", hide = true)]
    json: bool,
    #[arg(long = "timeout", id = "timeout", hide = true, value_parser = crate::commands::parse_secs)]
    timeout: Option<Duration>,
}

/// Fails when `serve` was given an option of the client commands: `given` lists the ids
/// found on the command line, before or after `serve`.
pub fn reject_client_options(given: &[&str]) -> anyhow::Result<()> {
    let Some(id) = given.first() else {
        return Ok(());
    };
    let fix = match *id {
        "addr" => "the native port is --tcp-addr",
        "http" => "the HTTP API's address is --http-addr",
        "json" => "its log lines go to stderr, filtered by RUST_LOG",
        _ => "see `chariot serve --help`",
    };
    bail!("--{id} is an option of the client commands, not of `chariot serve` ({fix})")
}

/// `--lock-wait-ms` when not given: long enough for a server with many partitions to
/// flush and close, short enough that a supervisor learns of a real conflict.
const DEFAULT_LOCK_WAIT_MS: u64 = 10_000;

/// The same options, as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    chariots_addr: Option<SocketAddr>,
    dc_id: Option<u32>,
    chariots_log: Option<String>,
    #[serde(default)]
    remote_dc: Vec<String>,
    #[serde(default)]
    accept_dc: Vec<u32>,
    dependency_timeout_ms: Option<u64>,
    max_waiting: Option<usize>,
    max_waiting_per_origin: Option<usize>,
    tcp_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    sync: Option<String>,
    segment_bytes: Option<u64>,
    max_record_bytes: Option<usize>,
    retention_bytes: Option<u64>,
    retention_secs: Option<u64>,
    max_connections: Option<usize>,
    lock_wait_ms: Option<u64>,
    max_http_connections: Option<usize>,
    max_record_connections: Option<usize>,
    idle_timeout_secs: Option<u64>,
    frame_timeout_secs: Option<u64>,
    max_inflight_bytes: Option<usize>,
    scrub_bytes_per_sec: Option<u64>,
    scrub_interval_secs: Option<u64>,
    node_id: Option<u64>,
    cluster_addr: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<String>,
    join: Option<String>,
    advertise_addr: Option<String>,
}

fn parse_sync(s: &str) -> anyhow::Result<SyncPolicy> {
    Ok(match s {
        "group-commit" => SyncPolicy::GroupCommit,
        "every-append" => SyncPolicy::EveryAppend,
        "never" => SyncPolicy::Never,
        other => match other.strip_prefix("interval:") {
            Some(ms) => SyncPolicy::Interval(Duration::from_millis(
                ms.parse().with_context(|| format!("bad sync interval {ms:?}"))?,
            )),
            None => bail!(
                "unknown sync policy {other:?}: use group-commit, every-append, interval:<ms> or never"
            ),
        },
    })
}

/// Resolves defaults, file and flags into the server's configuration.
pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let cluster = cluster_settings(args, &file)?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./chariot-data"));
    let sync = match args.sync.as_deref().or(file.sync.as_deref()) {
        Some(s) => parse_sync(s)?,
        None => SyncPolicy::GroupCommit,
    };
    let mut log = LogConfig {
        sync,
        ..LogConfig::default()
    };
    if let Some(b) = args.segment_bytes.or(file.segment_bytes) {
        log.segment_bytes = b;
        log.max_batch_bytes = log.max_batch_bytes.min(b as usize);
    }
    log.retention_bytes = args.retention_bytes.or(file.retention_bytes);
    log.retention_age = args
        .retention_secs
        .or(file.retention_secs)
        .map(Duration::from_secs);
    log.lock_wait = Duration::from_millis(
        args.lock_wait_ms
            .or(file.lock_wait_ms)
            .unwrap_or(DEFAULT_LOCK_WAIT_MS),
    );
    log.validate()?;
    let mut broker = BrokerConfig::new(data_dir);
    broker.log = log;
    if let Some(m) = args.max_record_bytes.or(file.max_record_bytes) {
        broker.max_record_bytes = m;
    }
    if let Some(r) = args.scrub_bytes_per_sec.or(file.scrub_bytes_per_sec) {
        broker.scrub.bytes_per_sec = r;
    }
    if let Some(s) = args.scrub_interval_secs.or(file.scrub_interval_secs) {
        broker.scrub.interval = Duration::from_secs(s.max(1));
    }
    let mut config = ServerConfig::new(broker);
    if let Some(a) = args.tcp_addr.or(file.tcp_addr) {
        config.tcp_addr = a;
    }
    if let Some(a) = args.http_addr.or(file.http_addr) {
        config.http_addr = a;
    }
    if let Some(m) = args.max_connections.or(file.max_connections) {
        config.max_connections = m;
    }
    if let Some(m) = args.max_http_connections.or(file.max_http_connections) {
        config.max_http_connections = m;
    }
    if let Some(m) = args.max_record_connections.or(file.max_record_connections) {
        config.max_record_connections = m;
    }
    if let Some(s) = args.idle_timeout_secs.or(file.idle_timeout_secs) {
        config.idle_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(s) = args.frame_timeout_secs.or(file.frame_timeout_secs) {
        config.frame_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(b) = args.max_inflight_bytes.or(file.max_inflight_bytes) {
        config.max_inflight_bytes = b;
    }
    if let Some(a) = args.chariots_addr.or(file.chariots_addr) {
        config.chariots_addr = a;
    }
    if let Some(name) = args.chariots_log.clone().or(file.chariots_log) {
        chariot_broker::names::validate(&name)?;
        config.chariots.log = name;
    }
    if let Some(d) = args.dc_id.or(file.dc_id) {
        config.chariots.dc_id = d;
    }
    if let Some(ms) = args.dependency_timeout_ms.or(file.dependency_timeout_ms) {
        config.chariots.max_wait = Duration::from_millis(ms.max(1));
    }
    if let Some(m) = args.max_waiting.or(file.max_waiting) {
        config.chariots.max_waiting = m;
    }
    if let Some(m) = args.max_waiting_per_origin.or(file.max_waiting_per_origin) {
        config.chariots.max_waiting_per_origin = m.max(1);
    }
    config.chariots.accept_from = if args.accept_dc.is_empty() {
        file.accept_dc.clone()
    } else {
        args.accept_dc.clone()
    };
    let remotes = if args.remote_dc.is_empty() {
        &file.remote_dc
    } else {
        &args.remote_dc
    };
    for r in remotes {
        let (id, addr) = split_id_addr("--remote-dc", r)?;
        let id: u32 = parse_id("--remote-dc", r, id)?;
        config.chariots.remotes.push((id, addr.to_string()));
    }
    config.cluster = cluster;
    Ok(config)
}

/// The two sides of an `ID=HOST:PORT` value of option `flag` (`--remote-dc`,
/// `--peers`).
pub(crate) fn split_id_addr<'a>(flag: &str, value: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    value
        .split_once('=')
        .with_context(|| format!("{flag} {value:?}: expected ID=HOST:PORT"))
}

/// The `id` side of `value`, an `ID=HOST:PORT` value of option `flag`, as a number.
pub(crate) fn parse_id<T>(flag: &str, value: &str, id: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    id.parse()
        .with_context(|| format!("{flag} {value:?}: the id must be a number"))
}

/// The cluster options, if any was given: all three make sense only together.
fn cluster_settings(
    args: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<Option<chariot_server::ClusterSettings>> {
    let node_id = args.node_id.or(file.node_id);
    let peers = if args.peers.is_empty() {
        &file.peers
    } else {
        &args.peers
    };
    let addr = args.cluster_addr.or(file.cluster_addr);
    let join = args.join.clone().or_else(|| file.join.clone());
    let advertise = args
        .advertise_addr
        .clone()
        .or_else(|| file.advertise_addr.clone());
    let Some(node_id) = node_id else {
        if !peers.is_empty() || addr.is_some() || join.is_some() || advertise.is_some() {
            bail!(
                "--peers, --join, --cluster-addr and --advertise-addr need --node-id (this \
                 node's id in the cluster)"
            );
        }
        return Ok(None);
    };
    if join.is_some() && !peers.is_empty() {
        bail!("--join and --peers exclude each other: a node joins a running cluster, or bootstraps one with its peers");
    }
    if join.is_none() && peers.is_empty() {
        bail!("--node-id needs --peers (bootstrap a cluster) or --join (join a running one)");
    }
    let mut map = std::collections::BTreeMap::new();
    for p in peers {
        let (id, peer) = split_id_addr("--peers", p)?;
        let id: u64 = parse_id("--peers", p, id.trim())?;
        if map.insert(id, peer.trim().to_string()).is_some() {
            bail!("--peers names node {id} twice");
        }
    }
    if join.is_none() && !map.contains_key(&node_id) {
        bail!("--peers must list every node of the cluster, this one (--node-id {node_id}) too");
    }
    let addr = addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], chariot_server::DEFAULT_CLUSTER_PORT)));
    let advertise = match advertise.or_else(|| map.get(&node_id).cloned()) {
        Some(a) => a,
        None if !addr.ip().is_unspecified() => addr.to_string(),
        None => bail!(
            "--join with --cluster-addr {addr} needs --advertise-addr: the address the other \
             nodes reach this one at"
        ),
    };
    Ok(Some(chariot_server::ClusterSettings {
        node_id,
        addr,
        peers: map,
        join,
        advertise,
    }))
}

/// Runs the server until SIGTERM or SIGINT, then shuts down cleanly (in-flight requests
/// finish, every log is flushed, fsynced and closed).
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(&args)?;
    // Handlers go in before anyone can learn that we are up: a signal sent right after
    // the ready line must mean "shut down cleanly", never the default "die".
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    raise_file_limit(&config);
    let server = Server::start(config).await.map_err(explain)?;
    // One machine-readable line on stdout, so scripts and tests that asked for port 0
    // learn the ports (logs go to stderr).
    let cluster = server
        .cluster_addr()
        .map(|a| format!(" cluster={a}"))
        .unwrap_or_default();
    println!(
        "chariot listening tcp={} http={} chariots={}{cluster}",
        server.tcp_addr(),
        server.http_addr(),
        server.chariots_addr()
    );
    tracing::info!(
        tcp = %server.tcp_addr(),
        http = %server.http_addr(),
        "chariot is serving"
    );
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    server.shutdown().await;
    Ok(())
}

/// A start-up failure, with the option that fixes it named.
fn explain(e: ServerError) -> anyhow::Error {
    let hint = match &e {
        ServerError::Bind { listener, .. } => {
            let flag = match *listener {
                "native" => "--tcp-addr",
                "http" => "--http-addr",
                "cluster" => "--cluster-addr",
                _ => "--chariots-addr",
            };
            format!("choose another address with {flag}, or stop the process using this one")
        }
        ServerError::Open {
            error: BrokerError::Log(LogError::Locked { .. }),
            ..
        } => "stop the other process, point --data-dir elsewhere, or wait longer with \
              --lock-wait-ms"
            .to_string(),
        ServerError::Open { .. } => {
            "check --data-dir; for damaged files see `chariot repair --help`".to_string()
        }
        ServerError::Broker(_) => return anyhow::Error::new(e),
        ServerError::Cluster(_) => "check --node-id, --peers and --data-dir".to_string(),
    };
    anyhow::anyhow!("{e} ({hint})")
}

/// Raises the soft limit on open files to the hard one (as Go's runtime does), so the
/// connection limits, not the descriptor limit, decide who is served; warns when even
/// the hard limit is below what the limits allow.
fn raise_file_limit(config: &ServerConfig) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    let connections =
        config.max_connections + config.max_http_connections + config.max_record_connections;
    // Descriptors for logs (segment, index, lock and directory per partition) come on top.
    if let Some(n) = now {
        if n < connections as u64 + 1024 {
            tracing::warn!(
                open_files = n,
                connections,
                "the open-file limit is below the connection limits plus room for logs; \
                 lower --max-connections, --max-http-connections or --max-record-connections"
            );
        }
    }
}
