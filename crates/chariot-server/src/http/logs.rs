//! The logs API: create, list, describe and delete logs; publish and read records;
//! consumer groups' fetch and ack.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use chariot_broker::{now_ms, Acks, Broker, NewRecord, StoredRecord};
use chariot_proto::MAX_RECORDS_PER_REQUEST;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, ApiResult, Body, Json, RawBody, MAX_LIMIT};
use crate::bounded_json::{self, BoundedError};

/// Records returned by one `GET …/records` when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// A `GET …/records` stops once its records' keys, values and headers reach this (at
/// least one record is returned), whatever `limit` asked for.
const MAX_READ_BYTES: usize = 4 << 20;
/// Record data read and rendered per chunk of a streamed `GET …/records`: the reply is
/// sent as it is read, so a request holds one chunk (a few times this), never the whole.
const READ_CHUNK_BYTES: usize = 256 << 10;

type Shared = State<Arc<Broker>>;

/// The logs API's routes.
pub(crate) fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/logs", get(list_logs).post(create_log))
        .route("/logs/{name}", get(describe_log).delete(delete_log))
        .route(
            "/logs/{name}/partitions/{p}/records",
            get(read_records).post(publish),
        )
        .route("/logs/{name}/partitions/{p}/groups/{g}/fetch", post(fetch))
        .route("/logs/{name}/partitions/{p}/groups/{g}/ack", post(ack))
        .with_state(broker)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    /// `quorum` (the default) or `all`.
    acks: Option<String>,
}

async fn publish(
    State(broker): Shared,
    path: Result<Path<(String, u32)>, PathRejection>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    body: RawBody,
) -> ApiResult<Json<Value>> {
    let Path((name, p)) = path?;
    let Query(query) = query?;
    let acks = match query.acks.as_deref() {
        None | Some("quorum") => Acks::Quorum,
        Some("all") => Acks::All,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "acks={other:?}: use acks=quorum (the default) or acks=all"
            )))
        }
    };
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
    let a = broker.publish_acks(&name, p, records, acks).await?;
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
) -> ApiResult<axum::response::Response> {
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
    // The first chunk is read before the status line, so a request that fails at once
    // (an unknown log, an offset out of range, damage where it starts) gets its error.
    let chunk = read_chunk(&broker, &name, p, offset, limit, MAX_READ_BYTES).await?;
    let start = ReadCursor {
        broker,
        name,
        partition: p,
        force_base64,
        next: offset,
        records_left: limit,
        bytes_left: MAX_READ_BYTES,
        first: Some(chunk),
        opened: false,
        any: false,
        done: false,
    };
    let chunks = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let mut out = Vec::new();
        if !c.opened {
            out.extend_from_slice(b"{\"records\":[");
            c.opened = true;
        }
        let chunk = match c.first.take() {
            Some(chunk) => Some(chunk),
            None if c.records_left > 0 && c.bytes_left > 0 => {
                let (b, name) = (&c.broker, &c.name);
                // Damage met after records were sent ends the listing where it starts, as
                // a read of one piece did: the next request, from `next_offset`, reports it.
                read_chunk(b, name, c.partition, c.next, c.records_left, c.bytes_left)
                    .await
                    .ok()
            }
            None => None,
        };
        let mut more = false;
        if let Some((records, bytes)) = chunk {
            for r in &records {
                if c.any {
                    out.push(b',');
                }
                c.any = true;
                if let Err(e) = serde_json::to_writer(&mut out, &render(r, c.force_base64)) {
                    c.done = true;
                    return Some((Err(std::io::Error::other(e)), c));
                }
            }
            let chunk_max = READ_CHUNK_BYTES.min(c.bytes_left);
            c.next = records.last().map_or(c.next, |r| r.offset + 1);
            c.records_left = c.records_left.saturating_sub(records.len());
            c.bytes_left = c.bytes_left.saturating_sub(bytes);
            // Only a chunk stopped by its byte bound may have more behind it; one that
            // stopped short of it reached the end of the data (or damage).
            more =
                !records.is_empty() && bytes >= chunk_max && c.records_left > 0 && c.bytes_left > 0;
        }
        if !more {
            out.extend_from_slice(format!("],\"next_offset\":{}}}\n", c.next).as_bytes());
            c.done = true;
        }
        Some((Ok(Bytes::from(out)), c))
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// Where a streamed `GET …/records` is.
struct ReadCursor {
    broker: Arc<Broker>,
    name: String,
    partition: u32,
    force_base64: bool,
    next: u64,
    records_left: usize,
    bytes_left: usize,
    /// The chunk read before the reply started.
    first: Option<(Vec<StoredRecord>, usize)>,
    /// Whether `{"records":[` is sent.
    opened: bool,
    /// Whether a record is sent.
    any: bool,
    done: bool,
}

/// Up to `limit` records from `offset`, at most one chunk's worth of data (and
/// `bytes_left`), with the bytes of record data they hold; on the blocking pool.
async fn read_chunk(
    broker: &Arc<Broker>,
    name: &str,
    p: u32,
    offset: u64,
    limit: usize,
    bytes_left: usize,
) -> Result<(Vec<StoredRecord>, usize), chariot_broker::BrokerError> {
    let name = name.to_string();
    let max = READ_CHUNK_BYTES.min(bytes_left);
    let records = crate::off_thread(broker, move |b| {
        b.read_records_bounded(&name, p, offset, limit, max)
    })
    .await?;
    let bytes = records.iter().map(StoredRecord::size).sum();
    Ok((records, bytes))
}

async fn fetch(
    State(broker): Shared,
    path: Result<Path<(String, u32, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, p, g)) = path?;
    let record = crate::off_thread(&broker, move |b| b.fetch(&name, p, &g)).await?;
    Ok(Json(render(&record, false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckQuery {
    /// Ack-to: the group has consumed every record below this offset.
    offset: Option<u64>,
}

/// Rog's ack (one record), or with `?offset=N` an ack-to: the group moves to
/// `max(committed, N)`, so a retry is harmless.
async fn ack(
    State(broker): Shared,
    path: Result<Path<(String, u32, String)>, PathRejection>,
    query: Result<Query<AckQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, p, g)) = path?;
    let Query(query) = query?;
    let offset = match query.offset {
        Some(to) => broker.ack_to(&name, p, &g, to).await?,
        None => broker.ack(&name, p, &g).await?,
    };
    Ok(Json(json!({"offset": offset})))
}
