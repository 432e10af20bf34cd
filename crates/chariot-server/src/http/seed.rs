//! The replicated-log seed's endpoints: `POST /insert` and `GET /get-all` over the
//! `default` log.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use chariot_broker::{Acks, Broker, BrokerError, NewRecord};
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
    // The replicated-log seed acknowledges an insert once every replica has it.
    let a = broker
        .publish_acks(
            DEFAULT_LOG,
            0,
            vec![NewRecord::value(req.message)],
            Acks::All,
        )
        .await?;
    Ok(Json(json!({"offset": a.base_offset})))
}

/// Records per chunk of a streamed `/get-all`, and the bytes of record data one chunk
/// holds at most: the reply is sent as it is read, never built whole.
const CHUNK_RECORDS: usize = 1000;
const CHUNK_BYTES: usize = 1 << 20;

/// Every message of the `default` log present when the request arrived, as one JSON
/// array of strings, streamed chunk by chunk (memory per request: one chunk).
async fn get_all(State(broker): Shared) -> ApiResult<Response> {
    let (earliest, end) = match broker.describe_log(DEFAULT_LOG) {
        Ok(d) => d
            .partitions
            .first()
            .map_or((0, 0), |p| (p.earliest_offset, p.next_offset)),
        Err(BrokerError::UnknownLog(_)) => return Ok(Json(json!([])).into_response()),
        Err(e) => return Err(e.into()),
    };
    struct Cursor {
        at: u64,
        first: bool,
        done: bool,
    }
    let start = Cursor {
        at: earliest,
        first: true,
        done: false,
    };
    let chunks = futures_util::stream::unfold(start, move |mut c| {
        let broker = Arc::clone(&broker);
        async move {
            if c.done {
                return None;
            }
            let mut out = Vec::new();
            if c.at < end {
                let at = c.at;
                let read = crate::off_thread(&broker, move |b| {
                    b.read_records_bounded(DEFAULT_LOG, 0, at, CHUNK_RECORDS, CHUNK_BYTES)
                });
                let records = match read.await {
                    Ok(r) => r,
                    Err(e) => {
                        // The status line is gone: cutting the body is the only way left
                        // to tell the client the array is incomplete.
                        c.done = true;
                        return Some((Err(e), c));
                    }
                };
                for r in records.iter().filter(|r| r.offset < end) {
                    out.push(if c.first { b'[' } else { b',' });
                    c.first = false;
                    let text = String::from_utf8_lossy(&r.value);
                    if let Err(e) = serde_json::to_writer(&mut out, &text) {
                        c.done = true;
                        return Some((Err(BrokerError::Storage(e.to_string())), c));
                    }
                }
                // Nothing read (retention passed us): nothing more to send.
                c.at = records.last().map_or(end, |r| r.offset + 1);
            }
            if c.at >= end {
                out.extend_from_slice(if c.first { b"[]\n" } else { b"]\n" });
                c.done = true;
            }
            Some((Ok::<_, BrokerError>(Bytes::from(out)), c))
        }
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
