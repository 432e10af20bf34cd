//! The HTTP API (JSON), described in `docs/openapi.yaml`, by area: `logs` (the logs
//! API), `seed` (the replicated-log seed's `/insert` and `/get-all`), `chariots` (the
//! Chariots endpoints); `api` holds what they share.
//!
//! Every error is a JSON body `{"error": "...", "code": "..."}` with a meaningful status,
//! including the ones axum itself would answer in plain text (malformed JSON, a body over
//! the limit, a non-numeric partition in the path).

pub(crate) mod api;
pub mod chariots;
pub mod cluster;
mod logs;
mod seed;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chariot_broker::Broker;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::{accept_loop, ListenerConfig};
use api::limit_bodies;
pub use api::{ApiError, BodyBounds, Json};

/// The router of the logs API, the seed's endpoints and `/health`, for tests and
/// embedding (the Chariots routes are [`chariots::router`]).
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(Arc::clone(&broker))
        .merge(logs::router(Arc::clone(&broker)))
        .merge(seed::router(broker))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "no such endpoint".into(),
            }
        })
}

/// Gives axum's own 405 answers (empty bodies) the JSON error body every other error
/// has, keeping their `Allow` header.
pub(crate) async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let mut reply = ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: match allow.as_ref().and_then(|a| a.to_str().ok()) {
            Some(methods) => format!("method not allowed here; allowed: {methods}"),
            None => "method not allowed here".to_string(),
        },
    }
    .into_response();
    if let Some(allow) = allow {
        reply.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    reply
}

/// How the HTTP listener bounds its connections.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Connection limit and drain.
    pub listener: ListenerConfig,
    /// A connection waiting for its next request's headers (idle keep-alive, or a
    /// client that never finishes them) is closed after this long.
    pub idle_timeout: Duration,
    /// Budget and timeout of request bodies.
    pub bodies: BodyBounds,
}

/// Serves the API (HTTP/1.1) until `stop` flips, letting in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    chariots: Arc<chariot_broker::chariots::Chariots>,
    cluster: Option<Arc<chariot_raft::cluster::Cluster>>,
    config: HttpConfig,
    stop: watch::Receiver<bool>,
) {
    // Base64 inflates binary payloads by a third; leave room for JSON around a full batch.
    let body_limit = broker.config().log.max_batch_bytes * 2 + (64 << 10);
    let app = router(broker)
        .merge(chariots::router(Arc::clone(&chariots)))
        .merge(cluster::router(cluster.clone()))
        .merge(chariots::cluster_router(chariots, cluster));
    let app = limit_bodies(app, body_limit)
        .layer(axum::middleware::map_response(json_method_not_allowed))
        .layer(axum::Extension(config.bodies.clone()));
    let idle = config.idle_timeout;
    let conn_stop = stop.clone();
    accept_loop(listener, config.listener, stop, move |socket, peer| {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = conn_stop.clone();
        async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle);
            let conn = builder
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    // Finish the request in flight, then close (the listener's drain
                    // timeout bounds this).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
    })
    .await;
}

/// `ok`, or `degraded` with every partition whose files are damaged (still serving
/// their intact records, refusing writes until repaired).
async fn health(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let damaged = broker.damaged_partitions();
    if damaged.is_empty() {
        return Json(json!({"status": "ok"}));
    }
    Json(json!({"status": "degraded", "damaged": damaged}))
}
