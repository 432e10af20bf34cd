//! Cluster administration over HTTP (`chariot cluster`): add and remove nodes,
//! rebalance replicas, transfer a partition's leadership. Any node takes a request
//! and forwards it where it must run (see `chariot_raft::cluster::admin`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::Router;
use chariot_raft::cluster::{AdminError, AdminRequest, Cluster};
use serde_json::Value;

use super::api::{ApiError, ApiResult, Body, Json};

type Shared = State<Option<Arc<Cluster>>>;

/// The administration routes (on a single node they answer `not_a_cluster`).
pub fn router(cluster: Option<Arc<Cluster>>) -> Router {
    Router::new()
        .route("/cluster/nodes", post(add_node))
        .route("/cluster/nodes/{id}", delete(remove_node))
        .route("/cluster/rebalance", post(rebalance))
        .route("/cluster/transfer-leader", post(transfer_leader))
        .with_state(cluster)
}

fn cluster(state: Option<Arc<Cluster>>) -> ApiResult<Arc<Cluster>> {
    state.ok_or(ApiError {
        status: StatusCode::CONFLICT,
        code: "not_a_cluster",
        message: "this node runs alone (start it with --node-id and --peers or --join)".into(),
    })
}

async fn run(cluster: &Cluster, request: AdminRequest) -> ApiResult<Json<Value>> {
    match cluster.admin(request).await {
        Ok(json) => Ok(Json(serde_json::from_str(&json).unwrap_or(Value::Null))),
        Err(AdminError::Invalid(message)) => Err(ApiError::bad_request(message)),
        Err(AdminError::Unavailable(message)) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message,
        }),
        Err(AdminError::Failed(message)) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "cluster_change_failed",
            message,
        }),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNode {
    id: u64,
    addr: String,
}

async fn add_node(State(state): Shared, Body(req): Body<AddNode>) -> ApiResult<Json<Value>> {
    let cluster = cluster(state)?;
    if req.addr.parse::<std::net::SocketAddr>().is_err() && !req.addr.contains(':') {
        return Err(ApiError::bad_request(format!(
            "addr {:?}: expected HOST:PORT (the node's inter-node address)",
            req.addr
        )));
    }
    run(
        &cluster,
        AdminRequest::AddNode {
            id: req.id,
            addr: req.addr,
        },
    )
    .await
}

async fn remove_node(
    State(state): Shared,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    let cluster = cluster(state)?;
    run(&cluster, AdminRequest::RemoveNode { id }).await
}

async fn rebalance(State(state): Shared) -> ApiResult<Json<Value>> {
    let cluster = cluster(state)?;
    run(&cluster, AdminRequest::Rebalance).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferLeader {
    log: String,
    #[serde(default)]
    partition: usize,
    to: u64,
}

async fn transfer_leader(
    State(state): Shared,
    Body(req): Body<TransferLeader>,
) -> ApiResult<Json<Value>> {
    let cluster = cluster(state)?;
    let Some(group) = cluster.group_of(&req.log, req.partition) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_log",
            message: format!("no partition {} of log {}", req.partition, req.log),
        });
    };
    run(&cluster, AdminRequest::TransferLeader { group, to: req.to }).await
}
