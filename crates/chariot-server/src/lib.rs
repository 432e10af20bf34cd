//! Chariot's network listeners: the Rog-compatible native TCP protocol and the HTTP API.
//!
//! This crate owns sockets, framing loops, connection limits, HTTP routing and graceful
//! shutdown. It holds no business logic: every request is decoded (with `chariot-proto`
//! for TCP, `serde` for HTTP) and handed to the [`chariot_broker::Broker`], whose answer is
//! encoded back. It must never decide what a log, an offset or a consumer group means.
//!
//! Layout:
//! - [`native`]: the TCP listener of the native protocol (Rog's commands and extensions).
//! - [`http`]: the HTTP API (axum) by area: the logs API, the replicated-log seed's
//!   `/insert` and `/get-all`, and the Chariots endpoints ([`http::chariots`]: `POST
//!   /record`, lookups, the dependency queue), over shared replies and extractors.
//! - [`chariots_tcp`]: the Chariots record port (gochariots framing).
//! - [`error_codes`]: how a [`chariot_broker::BrokerError`] maps to wire codes and HTTP
//!   statuses.
//!
//! [`Server::start`] binds every listener (port 0 picks a free port; the bound addresses
//! are reported), and [`Server::shutdown`] stops accepting, lets in-flight requests
//! finish, then flushes and closes every log.

mod bounded_json;
pub mod chariots_tcp;
pub mod error_codes;
pub(crate) mod framed;
pub mod http;
pub mod listener;
pub mod native;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chariot_broker::chariots::{Chariots, ChariotsConfig};
use chariot_broker::{Broker, BrokerConfig};
use chariot_proto::Limits;
use tokio::net::TcpListener;

pub use crate::framed::ConnConfig;
use crate::listener::{accept_loop, ByteBudget, ListenerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default [`ServerConfig::frame_timeout`].
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the log behind the replicated-log seed's `/insert` and `/get-all`.
pub const DEFAULT_LOG: &str = "default";

/// Everything a node needs to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Storage and domain configuration.
    pub broker: BrokerConfig,
    /// Native protocol address (default `0.0.0.0:7878`).
    pub tcp_addr: SocketAddr,
    /// HTTP API address (default `0.0.0.0:8080`).
    pub http_addr: SocketAddr,
    /// Chariots record port (default `0.0.0.0:9000`).
    pub chariots_addr: SocketAddr,
    /// The Chariots causal log.
    pub chariots: ChariotsConfig,
    /// Most concurrent native connections; past it newcomers are closed at once.
    pub max_connections: usize,
    /// Most concurrent HTTP connections.
    pub max_http_connections: usize,
    /// Most concurrent record-port connections.
    pub max_record_connections: usize,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A request must arrive in full (and its answer be taken) within this.
    pub frame_timeout: Duration,
    /// Bytes of partially received requests all connections together may hold beyond
    /// their own 64 KiB each.
    pub max_inflight_bytes: usize,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
    /// Cluster mode, if set; a single node otherwise.
    pub cluster: Option<ClusterSettings>,
}

/// What makes a node a member of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This node's id (unique in the cluster, never reused for another disk).
    pub node_id: u64,
    /// Where the inter-node port listens (default port 7979).
    pub addr: SocketAddr,
    /// Every node of the static bootstrap, this one included, by id, with the address
    /// the others reach its inter-node port at; the same list on every node. Empty
    /// when joining.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// A member's inter-node address to join through on first start, instead of the
    /// static bootstrap.
    pub join: Option<String>,
    /// The inter-node address the other nodes reach this one at.
    pub advertise: String,
}

/// Default inter-node port.
pub const DEFAULT_CLUSTER_PORT: u16 = 7979;

impl ServerConfig {
    /// Default ports and limits around a broker configuration.
    pub fn new(broker: BrokerConfig) -> Self {
        Self {
            broker,
            tcp_addr: SocketAddr::from(([0, 0, 0, 0], 7878)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            chariots_addr: SocketAddr::from(([0, 0, 0, 0], 9000)),
            chariots: ChariotsConfig::default(),
            max_connections: 10_000,
            max_http_connections: 1_024,
            max_record_connections: 1_024,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            max_inflight_bytes: 256 << 20,
            drain_timeout: Duration::from_secs(10),
            cluster: None,
        }
    }

    /// Frame limits derived from the broker's record and batch limits.
    pub fn limits(&self) -> Limits {
        let max_batch = self.broker.log.max_batch_bytes;
        Limits {
            max_record_size: self.broker.max_record_bytes,
            max_batch_size: max_batch,
            max_frame_size: max_batch + (64 << 10),
        }
    }
}

/// Why the server could not start. Each message is complete on one line, its cause
/// included (causes are fields, not `source`s, so a chain reporter prints them once).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The broker (storage) could not open its data directory.
    #[error("cannot open the data directory {}: {error}", dir.display())]
    Open {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        error: chariot_broker::BrokerError,
    },
    /// The broker failed after opening (starting the Chariots service).
    #[error("{0}")]
    Broker(chariot_broker::BrokerError),
    /// The node could not join its cluster.
    #[error("cannot start the cluster node: {0}")]
    Cluster(chariot_raft::cluster::ClusterError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({listener} listener): {error}")]
    Bind {
        /// Which listener: `native`, `http` or `records`.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
}

impl From<chariot_broker::BrokerError> for ServerError {
    fn from(e: chariot_broker::BrokerError) -> Self {
        ServerError::Broker(e)
    }
}

/// A running node.
pub struct Server {
    broker: Arc<Broker>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    chariots_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
    cluster: Option<ClusterNode>,
}

/// The cluster side of a node: its groups, and the inter-node listener (stopped after
/// the client listeners, whose last requests may still need it).
struct ClusterNode {
    cluster: Arc<chariot_raft::cluster::Cluster>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("tcp_addr", &self.tcp_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// A listener whose connections speak a framed protocol.
async fn framed_listener<P>(
    listener: TcpListener,
    config: ListenerConfig,
    protocol: Arc<P>,
    conn: Arc<ConnConfig>,
    stop: watch::Receiver<bool>,
) where
    P: framed::Protocol + 'static,
{
    let name = config.name;
    let conn_stop = stop.clone();
    accept_loop(listener, config, stop, move |socket, peer| {
        let protocol = Arc::clone(&protocol);
        let conn = Arc::clone(&conn);
        let stop = conn_stop.clone();
        async move {
            if let Err(e) = framed::serve(socket, &*protocol, &conn, stop).await {
                tracing::debug!(listener = name, %peer, reason = %e, "connection closed");
            }
        }
    })
    .await;
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind {
            listener,
            addr,
            error,
        })
}

impl Server {
    /// Opens the data directory (recovering every log) and starts every listener.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let broker_config = config.broker.clone();
        let dir = broker_config.data_dir.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config))
            .await
            .map_err(|e| chariot_broker::BrokerError::Storage(format!("broker open panicked: {e}")))
            .and_then(|opened| opened)
            .map_err(|error| ServerError::Open { dir, error })?;
        let broker = Arc::new(broker);
        let tcp = bind("native", config.tcp_addr).await?;
        let http = bind("http", config.http_addr).await?;
        let records = bind("records", config.chariots_addr).await?;
        let local = |listener, addr, l: &TcpListener| {
            l.local_addr().map_err(|error| ServerError::Bind {
                listener,
                addr,
                error,
            })
        };
        let chariots_addr = local("records", config.chariots_addr, &records)?;
        let tcp_addr = local("native", config.tcp_addr, &tcp)?;
        let http_addr = local("http", config.http_addr, &http)?;
        // The Chariots service reports where this node listens (`GET /cluster`).
        let mut chariots_config = config.chariots.clone();
        chariots_config.listeners = vec![
            ("native".to_string(), tcp_addr.to_string()),
            ("http".to_string(), http_addr.to_string()),
            ("records".to_string(), chariots_addr.to_string()),
        ];
        let chariots = Arc::new(
            Chariots::start(
                Arc::clone(&broker),
                chariots_config,
                chariots_tcp::tcp_connector(),
            )
            .await?,
        );
        // Only now: start-up may replace system logs (compaction), which the scrub
        // would hold open.
        broker.start_scrub()?;
        // Last of what can fail, so that a start that fails leaves no cluster node
        // running.
        let cluster = match &config.cluster {
            Some(settings) => Some(start_cluster(settings, &config, &broker).await?),
            None => None,
        };
        let (stop, stopped) = watch::channel(false);
        let budget = ByteBudget::new(config.max_inflight_bytes);
        let conn = Arc::new(ConnConfig {
            idle_timeout: config.idle_timeout,
            frame_timeout: config.frame_timeout,
            budget: Arc::clone(&budget),
        });
        let listener = |name, max_connections| ListenerConfig {
            name,
            max_connections,
            drain: config.drain_timeout,
        };
        let tasks = vec![
            tokio::spawn(framed_listener(
                tcp,
                listener("native", config.max_connections),
                Arc::new(native::Native::new(Arc::clone(&broker), config.limits())),
                Arc::clone(&conn),
                stopped.clone(),
            )),
            tokio::spawn(http::serve(
                http,
                Arc::clone(&broker),
                Arc::clone(&chariots),
                cluster.as_ref().map(|c| Arc::clone(&c.cluster)),
                http::HttpConfig {
                    listener: listener("http", config.max_http_connections),
                    idle_timeout: config.idle_timeout.min(config.frame_timeout),
                    bodies: http::BodyBounds {
                        budget,
                        timeout: config.frame_timeout,
                    },
                },
                stopped.clone(),
            )),
            tokio::spawn(framed_listener(
                records,
                listener("records", config.max_record_connections),
                Arc::new(chariots_tcp::RecordPort::new(chariots, config.limits())),
                conn,
                stopped,
            )),
        ];
        Ok(Self {
            broker,
            tcp_addr,
            http_addr,
            chariots_addr,
            stop,
            tasks,
            drain_timeout: config.drain_timeout,
            cluster,
        })
    }

    /// Bound address of the inter-node port (cluster mode only).
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.addr)
    }

    /// Bound address of the native protocol.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Bound address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Bound address of the Chariots record port.
    pub fn chariots_addr(&self) -> SocketAddr {
        self.chariots_addr
    }

    /// The broker behind the listeners.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, waits (up to the drain timeout) for in-flight requests, then
    /// flushes, fsyncs and closes every log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(self.drain_timeout + Duration::from_secs(1), t)
                .await
                .is_err()
            {
                tracing::warn!("a listener did not stop in time");
            }
        }
        if let Some(c) = self.cluster {
            let _ = c.stop.send(true);
            let _ = c.listener.await;
            c.cluster.shutdown().await;
        }
        let broker = self.broker;
        let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
    }
}

/// Segment size of a partition replica's Raft log (at least).
const RAFT_SEGMENT_BYTES: u64 = 16 << 20;

/// Binds the inter-node port, serves this node's groups on it, and starts the cluster
/// node (which takes over the broker's creates and deletes of logs).
async fn start_cluster(
    settings: &ClusterSettings,
    config: &ServerConfig,
    broker: &Arc<Broker>,
) -> Result<ClusterNode, ServerError> {
    use chariot_raft::cluster::{Cluster, ClusterConfig};
    use chariot_raft::network::{serve_connection, Groups, Peers};
    let listener = bind("cluster", settings.addr).await?;
    let addr = listener.local_addr().map_err(|error| ServerError::Bind {
        listener: "cluster",
        addr: settings.addr,
        error,
    })?;
    let (stop, stopped) = watch::channel(false);
    let groups = Groups::new();
    let served = groups.clone();
    let listener = tokio::spawn(accept_loop(
        listener,
        ListenerConfig {
            name: "cluster",
            max_connections: 1024,
            // Peers hold their connections open: cut them once the node stops.
            drain: Duration::ZERO,
        },
        stopped,
        move |socket, peer| {
            let groups = served.clone();
            async move {
                if let Err(e) = serve_connection(socket, groups).await {
                    tracing::debug!(listener = "cluster", %peer, reason = %e, "connection closed");
                }
            }
        },
    ));
    let log = config.broker.log.clone();
    let cluster_config = ClusterConfig {
        node_id: settings.node_id,
        peers: settings.peers.clone(),
        // Port 0 (tests): the port bound.
        addr: match settings.advertise.strip_suffix(":0") {
            Some(host) => format!("{host}:{}", addr.port()),
            None => settings.advertise.clone(),
        },
        join: settings.join.clone(),
        dir: config.broker.data_dir.join("cluster"),
        // Never fsynced on its own: no disk reserved ahead, no zeros written ahead.
        replica_log: chariot_log::LogConfig {
            sync: chariot_log::SyncPolicy::Never,
            retention_bytes: None,
            retention_age: None,
            preallocate: false,
            zero_fill_ahead: false,
            ..log.clone()
        },
        // Purged below each snapshot, so its segments can be small (each active one is
        // reserved on disk in full): room for the largest batch and its entry's header.
        raft_log: chariot_log::LogConfig {
            segment_bytes: RAFT_SEGMENT_BYTES.max(log.max_batch_bytes as u64 + (1 << 20)),
            max_batch_bytes: log.max_batch_bytes + (64 << 10),
            retention_bytes: None,
            retention_age: None,
            ..log
        },
    };
    match Cluster::start(cluster_config, Arc::clone(broker), groups, Peers::new()).await {
        Ok(cluster) => Ok(ClusterNode {
            cluster: Arc::new(cluster),
            addr,
            stop,
            listener,
        }),
        Err(e) => {
            let _ = stop.send(true);
            let _ = listener.await;
            Err(ServerError::Cluster(e))
        }
    }
}

/// Runs a broker call that may read from disk (a cold read blocks on I/O) on tokio's
/// blocking pool, so async worker threads never wait for the disk.
pub(crate) async fn off_thread<T: Send + 'static>(
    broker: &std::sync::Arc<chariot_broker::Broker>,
    f: impl FnOnce(&chariot_broker::Broker) -> Result<T, chariot_broker::BrokerError> + Send + 'static,
) -> Result<T, chariot_broker::BrokerError> {
    let broker = std::sync::Arc::clone(broker);
    tokio::task::spawn_blocking(move || f(&broker))
        .await
        .map_err(|e| chariot_broker::BrokerError::Storage(format!("read task failed: {e}")))?
}
