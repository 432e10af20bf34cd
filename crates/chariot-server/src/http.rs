//! The HTTP API (JSON), described in `docs/openapi.yaml`.
//!
//! Every error is a JSON body `{"error": "...", "code": "..."}` with a meaningful status,
//! including the ones axum itself would answer in plain text (malformed JSON, a body over
//! the limit, a non-numeric partition in the path).

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use chariot_broker::{now_ms, Broker, BrokerError, NewRecord, StoredRecord};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error_codes::http_status;
use crate::DEFAULT_LOG;

/// Records returned by one `GET …/records` when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: usize = 10_000;

/// A JSON reply: the value's compact JSON and a newline, so that `curl` output ends its
/// line and replies can be read as JSON lines.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = match serde_json::to_vec(&self.0) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a reply");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        body.push(b'\n');
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let (status, code) = http_status(&e);
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
type Shared = State<Arc<Broker>>;

/// A JSON body accepted whatever its `Content-Type`: the replicated-log seed's own
/// examples (`curl -d '{"message": "1"}'`) send `application/x-www-form-urlencoded`.
pub(crate) struct Body<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            ApiError {
                status,
                code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                },
                message: r.body_text(),
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The router, for tests and embedding.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/logs", get(list_logs).post(create_log))
        .route("/logs/{name}", get(describe_log).delete(delete_log))
        .route(
            "/logs/{name}/partitions/{p}/records",
            get(read_records).post(publish),
        )
        .route("/logs/{name}/partitions/{p}/groups/{g}/fetch", post(fetch))
        .route("/logs/{name}/partitions/{p}/groups/{g}/ack", post(ack))
        .route("/insert", post(insert))
        .route("/get-all", get(get_all))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "no such endpoint".into(),
            }
        })
        .with_state(broker)
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

/// Serves the API until `stop` flips, letting in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    chariots: Arc<chariot_broker::chariots::Chariots>,
    mut stop: watch::Receiver<bool>,
) {
    // Base64 inflates binary payloads by a third; leave room for JSON around a full batch.
    let body_limit = broker.config().log.max_batch_bytes * 2 + (64 << 10);
    let app = router(broker)
        .merge(crate::chariots_http::router(chariots))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(json_method_not_allowed));
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// `ok`, or `degraded` with every partition whose files are damaged (still serving
/// their intact records, refusing writes until repaired).
async fn health(State(broker): Shared) -> Json<Value> {
    let damaged = broker.damaged_partitions();
    if damaged.is_empty() {
        return Json(json!({"status": "ok"}));
    }
    Json(json!({"status": "degraded", "damaged": damaged}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLog {
    name: String,
    partitions: u32,
}

async fn create_log(
    State(broker): Shared,
    Body(req): Body<CreateLog>,
) -> ApiResult<impl IntoResponse> {
    broker.create_log(&req.name, req.partitions).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": req.name, "partitions": req.partitions})),
    ))
}

async fn list_logs(State(broker): Shared) -> Json<Value> {
    Json(json!(broker.list_logs()))
}

async fn describe_log(
    State(broker): Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    Ok(Json(json!(broker.describe_log(&name)?)))
}

async fn delete_log(
    State(broker): Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = name?;
    broker.delete_log(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn decode_field(text: &str, encoding: &str, field: &str) -> ApiResult<Bytes> {
    match encoding {
        "utf8" => Ok(Bytes::copy_from_slice(text.as_bytes())),
        "base64" => BASE64
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("{field} is not valid base64: {e}"))),
        other => Err(ApiError::bad_request(format!(
            "unknown encoding {other:?}: use \"utf8\" or \"base64\""
        ))),
    }
}

fn parse_record(v: &Value, now: i64) -> ApiResult<NewRecord> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("a record must be a JSON object"))?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "value" | "key" | "headers" | "encoding") {
            return Err(ApiError::bad_request(format!("unknown record field {k:?}")));
        }
    }
    let encoding = match obj.get("encoding") {
        None | Some(Value::Null) => "utf8",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad_request("encoding must be a string")),
    };
    let value = match obj.get("value") {
        Some(Value::String(s)) => decode_field(s, encoding, "value")?,
        Some(_) => return Err(ApiError::bad_request("value must be a string")),
        None => return Err(ApiError::bad_request("a record needs a \"value\"")),
    };
    let key = match obj.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(decode_field(s, encoding, "key")?),
        Some(_) => return Err(ApiError::bad_request("key must be a string")),
    };
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::copy_from_slice(s.as_bytes()),
                )),
                _ => Err(ApiError::bad_request(format!(
                    "header {k:?} must have a string value"
                ))),
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(ApiError::bad_request("headers must be an object")),
    };
    Ok(NewRecord {
        key,
        value,
        headers,
        timestamp: now,
    })
}

fn render(r: &StoredRecord, force_base64: bool) -> Value {
    let text = if force_base64 {
        None
    } else {
        std::str::from_utf8(&r.value).ok()
    };
    let (value, encoding) = match text {
        Some(t) => (t.to_string(), "utf8"),
        None => (BASE64.encode(&r.value), "base64"),
    };
    let key = r.key.as_ref().map(|k| {
        if encoding == "utf8" {
            String::from_utf8_lossy(k).into_owned()
        } else {
            BASE64.encode(k)
        }
    });
    let headers = r.headers_lossy();
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": key,
        "value": value,
        "encoding": encoding,
        "headers": headers,
    })
}

async fn publish(
    State(broker): Shared,
    path: Result<Path<(String, u32)>, PathRejection>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let Path((name, p)) = path?;
    let now = now_ms();
    let records = match &body {
        Value::Array(items) => items
            .iter()
            .map(|v| parse_record(v, now))
            .collect::<ApiResult<Vec<_>>>()?,
        other => vec![parse_record(other, now)?],
    };
    let a = broker.publish(&name, p, records).await?;
    let offsets: Vec<u64> = (0..u64::from(a.count)).map(|i| a.base_offset + i).collect();
    Ok(Json(
        json!({"base_offset": a.base_offset, "count": a.count, "offsets": offsets}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    offset: Option<u64>,
    limit: Option<usize>,
    encoding: Option<String>,
}

async fn read_records(
    State(broker): Shared,
    path: Result<Path<(String, u32)>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, p)) = path?;
    let Query(q) = query?;
    let force_base64 = match q.encoding.as_deref() {
        None | Some("utf8") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown encoding {other:?}: use \"utf8\" or \"base64\""
            )))
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be at most {MAX_LIMIT}, got {limit}"
        )));
    }
    let offset = match q.offset {
        Some(o) => o,
        None => broker
            .describe_log(&name)?
            .partitions
            .get(p as usize)
            .map_or(0, |i| i.earliest_offset),
    };
    let records = broker.read_records(&name, p, offset, limit)?;
    let next = records.last().map_or(offset, |r| r.offset + 1);
    Ok(Json(json!({
        "records": records.iter().map(|r| render(r, force_base64)).collect::<Vec<_>>(),
        "next_offset": next,
    })))
}

async fn fetch(
    State(broker): Shared,
    path: Result<Path<(String, u32, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, p, g)) = path?;
    Ok(Json(render(&broker.fetch(&name, p, &g)?, false)))
}

async fn ack(
    State(broker): Shared,
    path: Result<Path<(String, u32, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, p, g)) = path?;
    let offset = broker.ack(&name, p, &g).await?;
    Ok(Json(json!({"offset": offset})))
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
