//! The Chariots record port (gochariots' batcher framing, default 9000).
//!
//! Frames are `u32` big-endian length (counting the type byte), a type byte, a payload:
//! `'r'` one JSON record, `'s'` a JSON array of records, as gochariots' clients send them
//! (`{"Host":0,"Tags":{...},"Pre":{"Hash":0},"Seed":0}`). Each frame is answered with an
//! `'a'` frame whose payload is the JSON outcome (an array for `'s'`). Clients that never
//! read (gochariots' `rawpost.py` sends one frame and closes) are fine: every complete
//! frame is processed before the connection's end is noticed, and a failed answer write
//! is not an error.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chariot_broker::chariots::sender::{parse_batch, BoxFuture, Connector, Link};
use chariot_broker::chariots::{Chariots, Submission};
use chariot_proto::chariots::{Frame, FrameType};
use chariot_proto::{Limits, MAX_RECORDS_PER_REQUEST};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bounded_json::{self, BoundedError};
use crate::error_codes::http_status;
use crate::framed::Protocol;

/// The record port's protocol over one Chariots service.
pub struct RecordPort {
    chariots: Arc<Chariots>,
    limits: Limits,
}

impl RecordPort {
    /// Serves `chariots` with the frame limits `limits`.
    pub fn new(chariots: Arc<Chariots>, limits: Limits) -> Self {
        Self { chariots, limits }
    }
}

impl Protocol for RecordPort {
    type Frame = Frame;

    fn decode(&self, inbox: &mut BytesMut) -> Result<Option<Frame>, BytesMut> {
        Frame::decode(inbox, &self.limits).map_err(|e| {
            let reply = json!({"error": e.to_string(), "code": "bad_request"});
            let mut out = BytesMut::new();
            let _ = Frame::ack(Bytes::from(reply.to_string())).encode(&mut out);
            out
        })
    }

    async fn answer(&self, frame: Frame, outbox: &mut BytesMut) {
        let reply = answer(&self.chariots, &frame).await;
        let _ = Frame::ack(Bytes::from(reply.to_string())).encode(outbox);
    }

    const KEEPS_READING_UNANSWERED: bool = true;
}

async fn answer(chariots: &Chariots, frame: &Frame) -> Value {
    let submit = |v: Value| async move {
        match Submission::from_tcp_json(&v) {
            Ok(rec) => match chariots.submit(rec, false).await {
                Ok(outcome) => json!(outcome),
                Err(e) => json!({"error": e.to_string(), "code": http_status(&e).1}),
            },
            Err(e) => json!({"error": e.0, "code": "bad_request"}),
        }
    };
    if frame.frame_type == FrameType::Propagate {
        return propagate(chariots, frame).await;
    }
    if frame.frame_type == FrameType::Records {
        // One element at a time, at most MAX_RECORDS_PER_REQUEST of them; then the
        // valid ones are submitted together: one sequencer round.
        let parsed =
            bounded_json::parse_list(&frame.payload, MAX_RECORDS_PER_REQUEST, false, |v| {
                Ok(Submission::from_tcp_json(&v).map_err(|e| e.0))
            });
        return match parsed {
            Ok(parsed) => submit_parsed(chariots, parsed).await,
            Err(BoundedError::TooMany { max }) => json!({
                "error": format!("more than {max} records in one 's' frame; split them"),
                "code": "too_large",
            }),
            Err(BoundedError::Invalid(e) | BoundedError::Element(_, e)) => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&frame.payload).is_ok() {
                    not_an_array()
                } else {
                    json!({"error": format!("invalid JSON: {e}"), "code": "bad_request"})
                }
            }
        };
    }
    let parsed: Result<Value, _> = serde_json::from_slice(&frame.payload);
    match (frame.frame_type, parsed) {
        (_, Err(e)) => json!({"error": format!("invalid JSON: {e}"), "code": "bad_request"}),
        (FrameType::Record, Ok(v)) => submit(v).await,
        // Answered above; kept total without a panic.
        (FrameType::Records, Ok(_)) => not_an_array(),
        (FrameType::Propagate, Ok(_)) => propagate(chariots, frame).await,
        (FrameType::Ack, Ok(_)) => {
            json!({"error": "'a' frames are sent by the server, not to it", "code": "bad_request"})
        }
    }
}

/// The answer to an `'s'` frame whose payload is JSON but not an array.
fn not_an_array() -> Value {
    json!({"error": "an 's' frame carries a JSON array", "code": "bad_request"})
}

/// Submits the valid records of an `'s'` frame together and answers each in order.
async fn submit_parsed(chariots: &Chariots, parsed: Vec<Result<Submission, String>>) -> Value {
    let valid: Vec<Submission> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut outcomes = chariots.submit_many(valid).await.into_iter();
    let out = parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => json!({"error": e, "code": "bad_request"}),
            Ok(_) => match outcomes.next() {
                Some(Ok(o)) => json!(o),
                Some(Err(e)) => json!({"error": e.to_string(), "code": http_status(&e).1}),
                None => json!({"error": "lost", "code": "storage"}),
            },
        })
        .collect();
    Value::Array(out)
}

/// A batch propagated from another datacenter: acknowledged once every record in it is
/// durably appended or durably queued here.
async fn propagate(chariots: &Chariots, frame: &Frame) -> Value {
    match parse_batch(&frame.payload) {
        Err(e) => json!({"error": e, "code": "bad_request"}),
        Ok(records) => match chariots.accept_propagated(records).await {
            Ok(n) => json!({"status": "ok", "count": n}),
            Err(e) => json!({"error": e.to_string(), "code": http_status(&e).1}),
        },
    }
}

/// The sending side of propagation: a TCP connection to a remote record port.
struct TcpLink {
    socket: TcpStream,
    inbox: BytesMut,
}

impl Link for TcpLink {
    fn send_batch(&mut self, payload: Bytes) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut out = BytesMut::new();
            Frame {
                frame_type: FrameType::Propagate,
                payload,
            }
            .encode(&mut out)
            .map_err(|e| e.to_string())?;
            self.socket
                .write_all(&out)
                .await
                .map_err(|e| e.to_string())?;
            let limits = Limits::default();
            let ack = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                loop {
                    if let Some(f) =
                        Frame::decode(&mut self.inbox, &limits).map_err(|e| e.to_string())?
                    {
                        return Ok::<Frame, String>(f);
                    }
                    let n = self
                        .socket
                        .read_buf(&mut self.inbox)
                        .await
                        .map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("the remote closed the connection".to_string());
                    }
                }
            })
            .await
            .map_err(|_| "no acknowledgment within 30 s".to_string())??;
            let v: Value = serde_json::from_slice(&ack.payload).map_err(|e| e.to_string())?;
            if v.get("status").and_then(Value::as_str) == Some("ok") {
                Ok(())
            } else {
                Err(format!("the remote refused the batch: {v}"))
            }
        })
    }
}

/// Opens propagation links over TCP.
pub fn tcp_connector() -> Connector {
    Arc::new(
        |addr: String| -> BoxFuture<'static, Result<Box<dyn Link>, String>> {
            Box::pin(async move {
                let socket = tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    TcpStream::connect(&addr),
                )
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
                let _ = socket.set_nodelay(true);
                Ok(Box::new(TcpLink {
                    socket,
                    inbox: BytesMut::new(),
                }) as Box<dyn Link>)
            })
        },
    )
}
