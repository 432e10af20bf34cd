//! The HTTP API (JSON), described in `docs/openapi.yaml`.
//!
//! Every error is a JSON body `{"error": "...", "code": "..."}` with a meaningful status,
//! including the ones axum itself would answer in plain text (malformed JSON, a body over
//! the limit, a non-numeric partition in the path).

use std::sync::Arc;
use std::time::Duration;

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
use chariot_proto::MAX_RECORDS_PER_REQUEST;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bounded_json::{self, BoundedError};
use crate::error_codes::http_status;
use crate::listener::{accept_loop, ByteBudget, ListenerConfig};
use crate::DEFAULT_LOG;

/// Records returned by one `GET …/records` when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted (here and by the Chariots listings).
pub(crate) const MAX_LIMIT: usize = 10_000;
/// A `GET …/records` stops once its records' keys, values and headers reach this (at
/// least one record is returned): the reply is at most a few times this, whatever
/// `limit` asked for.
const MAX_READ_BYTES: usize = 4 << 20;

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

/// What bounds the reading of request bodies, shared by every HTTP connection (a
/// request extension set by [`serve`]).
#[derive(Debug, Clone)]
pub struct BodyBounds {
    /// The node's budget of bytes being received (shared with the framed ports).
    pub budget: Arc<ByteBudget>,
    /// A body must arrive in full within this.
    pub timeout: Duration,
}

/// The largest body a route takes (a request extension; the innermost layer wins),
/// checked against a declared `Content-Length` before the body is read. Set with
/// [`limit_bodies`], which also sets axum's `DefaultBodyLimit` to cut bodies without a
/// length at the same size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(usize);

/// Limits the bodies of `router`'s routes to `bytes`.
pub(crate) fn limit_bodies<S>(router: Router<S>, bytes: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(DefaultBodyLimit::max(bytes))
        .layer(axum::Extension(BodyLimit(bytes)))
}

/// The bytes of a request body: its size reserved from the [`ByteBudget`] first (a 503
/// `busy` if the budget stays spent for the whole timeout), read within the timeout
/// (408 otherwise), under the route's body limit (413). The reservation is held until
/// the body has been parsed.
pub(crate) struct RawBody {
    pub(crate) bytes: Bytes,
    _reserved: Option<crate::listener::Reservation>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bounds = req.extensions().get::<BodyBounds>().cloned();
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        if let (Some(limit), Some(declared)) = (limit, declared) {
            if declared > limit {
                // Refused on its declared length: none of it is kept. Most clients
                // read the answer only once they have sent the whole body, so (up to
                // a bound) it is read and dropped first, rather than answering into a
                // connection reset.
                let timeout = bounds
                    .as_ref()
                    .map_or(crate::DEFAULT_FRAME_TIMEOUT, |b| b.timeout);
                if declared <= MAX_DISCARDED_BODY {
                    discard_body(req, timeout).await;
                }
                return Err(ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "too_large",
                    message: format!(
                        "a body of {declared} bytes exceeds this endpoint's limit of {limit} bytes"
                    ),
                });
            }
        }
        let Some(bounds) = bounds else {
            // Embedded without `serve` (tests of the router): no budget to honour.
            return read_body(req, state).await.map(|bytes| RawBody {
                bytes,
                _reserved: None,
            });
        };
        let deadline = tokio::time::Instant::now() + bounds.timeout;
        let mut reserved = bounds.budget.reservation();
        // Without a length, the largest body the budget could be asked for.
        let want = declared.unwrap_or(bounds.budget.total_bytes());
        if tokio::time::timeout_at(deadline, reserved.cover(want))
            .await
            .is_err()
        {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "busy",
                message: "busy: too many request bodies are being received; retry".into(),
            });
        }
        match tokio::time::timeout_at(deadline, read_body(req, state)).await {
            Ok(r) => r.map(|bytes| RawBody {
                bytes,
                _reserved: Some(reserved),
            }),
            Err(_) => Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "timeout",
                message: format!(
                    "the request body did not arrive in full within {:?}",
                    bounds.timeout
                ),
            }),
        }
    }
}

/// The largest oversized body read (and dropped) before it is refused; past it the
/// answer goes out at once.
const MAX_DISCARDED_BODY: usize = 64 << 20;

/// Reads a body frame by frame, dropping each, for at most `timeout`.
async fn discard_body(req: axum::extract::Request, timeout: Duration) {
    use http_body_util::BodyExt;
    let mut body = req.into_body();
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

async fn read_body<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> Result<Bytes, ApiError> {
    <Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
        .await
        .map_err(|r| {
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
        })
}

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
        let raw = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&raw.bytes)
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
    config: HttpConfig,
    stop: watch::Receiver<bool>,
) {
    // Base64 inflates binary payloads by a third; leave room for JSON around a full batch.
    let body_limit = broker.config().log.max_batch_bytes * 2 + (64 << 10);
    let app = limit_bodies(
        router(broker).merge(crate::chariots_http::router(chariots)),
        body_limit,
    )
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
    body: RawBody,
) -> ApiResult<Json<Value>> {
    let Path((name, p)) = path?;
    let now = now_ms();
    // One element at a time, at most MAX_RECORDS_PER_REQUEST of them.
    let records = bounded_json::parse_list(&body.bytes, MAX_RECORDS_PER_REQUEST, true, |v| {
        parse_record(&v, now).map_err(|e| e.message)
    })
    .map_err(|e| match e {
        BoundedError::TooMany { .. } => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: e.to_string(),
        },
        BoundedError::Element(_, message) => ApiError::bad_request(message),
        BoundedError::Invalid(_) => ApiError::bad_request(e.to_string()),
    })?;
    drop(body);
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
    let records = broker.read_records_bounded(&name, p, offset, limit, MAX_READ_BYTES)?;
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
