//! The replicated-log seed's endpoints: `POST /insert` and `GET /get-all` over the
//! `default` log.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use chariot_broker::{Broker, BrokerError, NewRecord};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiResult, Body, Json};
use crate::DEFAULT_LOG;

type Shared = State<Arc<Broker>>;

/// The seed's routes.
pub(crate) fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/insert", post(insert))
        .route("/get-all", get(get_all))
        .with_state(broker)
}

#[derive(Deserialize)]
struct Insert {
    message: String,
}

async fn insert(State(broker): Shared, Body(req): Body<Insert>) -> ApiResult<Json<Value>> {
    broker.ensure_log(DEFAULT_LOG, 1).await?;
    let a = broker
        .publish(DEFAULT_LOG, 0, vec![NewRecord::value(req.message)])
        .await?;
    Ok(Json(json!({"offset": a.base_offset})))
}

async fn get_all(State(broker): Shared) -> ApiResult<Json<Value>> {
    let earliest = match broker.describe_log(DEFAULT_LOG) {
        Ok(d) => d.partitions.first().map_or(0, |p| p.earliest_offset),
        Err(BrokerError::UnknownLog(_)) => return Ok(Json(json!([]))),
        Err(e) => return Err(e.into()),
    };
    let records = match broker.read_records(DEFAULT_LOG, 0, earliest, usize::MAX) {
        Ok(r) => r,
        Err(BrokerError::UnknownLog(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let messages: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    Ok(Json(json!(messages)))
}
