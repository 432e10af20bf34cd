//! What every HTTP endpoint shares: JSON replies, JSON errors, and body extraction within
//! the node's bounds. A leaf module: the routers of each area use it, it uses none of
//! them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use chariot_broker::BrokerError;
use serde_json::json;

use crate::error_codes::http_status;
use crate::listener::ByteBudget;

/// Largest `limit` any listing accepts.
pub(crate) const MAX_LIMIT: usize = 10_000;

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

/// What bounds the reading of request bodies, shared by every HTTP connection (a
/// request extension set by [`super::serve`]).
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
