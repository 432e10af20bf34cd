//! The Chariots HTTP endpoints: gochariots' `POST /record`, then lookups and the queue.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chariot_broker::chariots::{tag_hash, Chariots, Outcome, Submission};
use serde_json::{json, Value};

use super::api::{limit_bodies, ApiError, ApiResult, Body, Json, MAX_LIMIT};

type Shared = State<Arc<Chariots>>;

/// Largest body of the Chariots endpoints (`docs/openapi.yaml`): a record is tags, a
/// seed and dependencies, far below it.
pub const BODY_LIMIT: usize = 2 << 20;

/// The Chariots routes.
pub fn router(chariots: Arc<Chariots>) -> Router {
    let routes = Router::new()
        .route("/record", post(post_record))
        .route("/record/{lid}", get(get_record))
        .route("/records", get(find_records))
        .route("/records/waiting", get(list_waiting))
        .route("/records/waiting/{id}", get(waiting_status))
        .route("/datacenters", post(add_datacenter));
    limit_bodies(routes, BODY_LIMIT).with_state(chariots)
}

/// Runs a lookup that reads the shared log on the blocking pool, so a cold read never
/// stalls an async worker.
async fn reading<T: Send + 'static>(
    chariots: &Arc<Chariots>,
    f: impl FnOnce(&Chariots) -> chariot_broker::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let chariots = Arc::clone(chariots);
    let read = tokio::task::spawn_blocking(move || f(&chariots))
        .await
        .map_err(|e| chariot_broker::BrokerError::Storage(format!("read task failed: {e}")))?;
    Ok(read?)
}

/// Query pairs, keeping repeated keys (`?tag=a:1&tag=b:2`).
fn pairs(q: Option<String>) -> Vec<(String, String)> {
    let q = q.unwrap_or_default();
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn outcome_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Rejected { id, reason } => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"status": "rejected", "id": id, "error": reason, "code": "rejected"})),
        )
            .into_response(),
        other => (StatusCode::OK, Json(json!(other))).into_response(),
    }
}

async fn post_record(
    State(chariots): Shared,
    RawQuery(q): RawQuery,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let mut wait = false;
    for (k, v) in pairs(q) {
        match (k.as_str(), v.as_str()) {
            ("wait", "true" | "1" | "") => wait = true,
            ("wait", "false" | "0") => wait = false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k}={v}"
                )))
            }
        }
    }
    let record = Submission::from_http_json(&body).map_err(|e| ApiError::bad_request(e.0))?;
    let outcome = chariots.submit(record, wait).await?;
    Ok(outcome_response(outcome))
}

async fn get_record(
    State(chariots): Shared,
    lid: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(lid) = lid?;
    let record = reading(&chariots, move |c| c.get(lid)).await?;
    Ok(Json(json!(record)))
}

async fn find_records(State(chariots): Shared, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut hashes = Vec::new();
    let mut page = Page::new();
    for (k, v) in pairs(q) {
        if page.take(&k, &v)? {
            continue;
        }
        match k.as_str() {
            "tag" => {
                let (tk, tv) = v
                    .split_once(':')
                    .ok_or_else(|| ApiError::bad_request("tag must be key:value"))?;
                hashes.push(tag_hash(tk, tv));
            }
            "hash" => hashes.push(
                v.parse()
                    .map_err(|_| ApiError::bad_request("hash must be a decimal u64"))?,
            ),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other}"
                )))
            }
        }
    }
    if hashes.is_empty() {
        return Err(ApiError::bad_request(
            "give at least one tag=key:value or hash=H",
        ));
    }
    let lids: Vec<u64> = chariots
        .find(&hashes)
        .into_iter()
        .filter(|lid| page.after.is_none_or(|a| *lid > a))
        .take(page.limit)
        .collect();
    let records = reading(&chariots, move |c| {
        lids.into_iter()
            .map(|lid| c.get(lid))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(json!(records)))
}

/// Records listed by one `GET /records` or `GET /records/waiting` without `limit`.
const DEFAULT_LIST_LIMIT: usize = 1000;

/// `after` and `limit` of a listing: entries whose id (LId, queue id) is above `after`,
/// at most `limit` of them.
struct Page {
    after: Option<u64>,
    limit: usize,
}

impl Page {
    fn new() -> Self {
        Self {
            after: None,
            limit: DEFAULT_LIST_LIMIT,
        }
    }

    /// Takes `after` or `limit` if `(k, v)` is one of them.
    fn take(&mut self, k: &str, v: &str) -> Result<bool, ApiError> {
        match k {
            "after" => {
                self.after = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request("after must be a decimal u64"))?,
                );
            }
            "limit" => {
                let limit: usize = v
                    .parse()
                    .map_err(|_| ApiError::bad_request("limit must be a decimal number"))?;
                if limit > MAX_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "limit must be at most {}, got {limit}",
                        MAX_LIMIT
                    )));
                }
                self.limit = limit;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

async fn list_waiting(State(chariots): Shared, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut page = Page::new();
    let mut status = None;
    for (k, v) in pairs(q) {
        if page.take(&k, &v)? {
            continue;
        }
        match (k.as_str(), v.as_str()) {
            ("status", "waiting" | "rejected") => status = Some(v),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k}={v}"
                )))
            }
        }
    }
    Ok(Json(json!(chariots.queued_page(
        status.as_deref(),
        page.after,
        page.limit
    ))))
}

async fn waiting_status(
    State(chariots): Shared,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    chariots
        .queued_status(id)
        .map(|o| Json(json!(o)))
        .ok_or(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_id",
            message: format!("no dependency-queue entry {id}"),
        })
}

/// `GET /cluster`: the Chariots side (datacenter, listeners, propagation) and, on a
/// cluster node, the replication side ([`chariot_raft::cluster::Cluster::status`]
/// under `"raft"`).
pub fn cluster_router(
    chariots: Arc<Chariots>,
    raft: Option<Arc<chariot_raft::cluster::Cluster>>,
) -> Router {
    Router::new()
        .route("/cluster", get(cluster))
        .with_state((chariots, raft))
}

async fn cluster(
    State((chariots, raft)): State<(Arc<Chariots>, Option<Arc<chariot_raft::cluster::Cluster>>)>,
) -> Json<Value> {
    let mut status = chariots_status(&chariots);
    if let (Some(raft), Some(obj)) = (raft, status.as_object_mut()) {
        obj.insert("raft".into(), raft.status());
    }
    Json(status)
}

fn chariots_status(chariots: &Chariots) -> Value {
    let c = chariots.config();
    let local = chariots.local_next_toid();
    let remotes: Vec<Value> = chariots
        .remotes()
        .into_iter()
        .map(|r| {
            json!({
                "datacenter": r.dc,
                "addr": r.addr,
                "connected": r.connected,
                "acknowledged_toid": r.acked_next_toid,
                "lag_records": local.saturating_sub(r.acked_next_toid),
                "last_ack_ms": r.last_ack_ms,
                "last_error": r.last_error,
            })
        })
        .collect();
    let listeners: serde_json::Map<String, Value> = c
        .listeners
        .iter()
        .map(|(name, addr)| (name.clone(), json!(addr)))
        .collect();
    json!({
        "datacenter": c.dc_id,
        "listeners": listeners,
        "shared_log": c.log,
        "local_records": local,
        "remote_datacenters": remotes,
        "waiting": chariots.waiting_count(),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDatacenter {
    id: u32,
    addr: String,
}

async fn add_datacenter(
    State(chariots): Shared,
    Body(req): Body<AddDatacenter>,
) -> ApiResult<Json<Value>> {
    chariots.add_remote(req.id, req.addr).await?;
    Ok(Json(json!({"datacenter": req.id, "status": "propagating"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_keep_repeats_and_decode() {
        assert_eq!(
            pairs(Some("tag=a%3A1&tag=b:2+3&wait".into())),
            vec![
                ("tag".into(), "a:1".into()),
                ("tag".into(), "b:2 3".into()),
                ("wait".into(), String::new())
            ]
        );
    }
}
