//! Chariot's network listeners: the Rog-compatible native TCP protocol and the HTTP API.
//!
//! This crate owns sockets, framing loops, connection limits, HTTP routing and graceful
//! shutdown. It holds no business logic: every request is decoded (with `chariot-proto`
//! for TCP, `serde` for HTTP) and handed to the [`chariot_broker::Broker`], whose answer is
//! encoded back. It must never decide what a log, an offset or a consumer group means.
//!
//! Layout:
//! - [`native`]: the TCP listener of the native protocol (Rog's commands and extensions).
//! - [`http`]: the HTTP API (axum), including the replicated-log seed's `/insert` and
//!   `/get-all`.
//! - [`chariots_http`], [`chariots_tcp`]: the Chariots causal log's endpoints (`POST
//!   /record`, lookups, the dependency queue) and its record port (gochariots framing).
//! - [`error_codes`]: how a [`chariot_broker::BrokerError`] maps to wire codes and HTTP
//!   statuses.
//!
//! [`Server::start`] binds every listener (port 0 picks a free port; the bound addresses
//! are reported), and [`Server::shutdown`] stops accepting, lets in-flight requests
//! finish, then flushes and closes every log.

pub mod chariots_http;
pub mod chariots_tcp;
pub mod error_codes;
pub mod http;
pub mod native;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chariot_broker::chariots::{Chariots, ChariotsConfig};
use chariot_broker::{Broker, BrokerConfig};
use chariot_proto::Limits;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    /// Most concurrent native connections; further clients wait to be accepted.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
}

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
            drain_timeout: Duration::from_secs(10),
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
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("tcp_addr", &self.tcp_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
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
        let (stop, stopped) = watch::channel(false);
        let native = native::Listener::new(
            tcp,
            Arc::clone(&broker),
            config.limits(),
            config.max_connections,
            stopped.clone(),
        );
        let tasks = vec![
            tokio::spawn(native.run(config.drain_timeout)),
            tokio::spawn(http::serve(
                http,
                Arc::clone(&broker),
                Arc::clone(&chariots),
                stopped.clone(),
            )),
            tokio::spawn(chariots_tcp::serve(
                records,
                chariots,
                config.limits(),
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
        })
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
        let broker = self.broker;
        let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
    }
}
