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
use chariot_broker::chariots::{Chariots, Submission};
use chariot_proto::chariots::{Frame, FrameType};
use chariot_proto::Limits;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error_codes::http_status;

/// Serves the record port until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    chariots: Arc<Chariots>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let socket = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the record port");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let chariots = Arc::clone(&chariots);
        let stop = stop.clone();
        conns.spawn(async move {
            if let Err(e) = connection(socket, chariots, limits, stop).await {
                tracing::debug!(error = %e, "record connection closed");
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
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
    let parsed: Result<Value, _> = serde_json::from_slice(&frame.payload);
    match (frame.frame_type, parsed) {
        (_, Err(e)) => json!({"error": format!("invalid JSON: {e}"), "code": "bad_request"}),
        (FrameType::Record, Ok(v)) => submit(v).await,
        (FrameType::Records, Ok(Value::Array(items))) => {
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                out.push(submit(v).await);
            }
            Value::Array(out)
        }
        (FrameType::Records, Ok(_)) => {
            json!({"error": "an 's' frame carries a JSON array", "code": "bad_request"})
        }
        (FrameType::Ack, Ok(_)) => {
            json!({"error": "'a' frames are sent by the server, not to it", "code": "bad_request"})
        }
    }
}

async fn connection(
    mut socket: TcpStream,
    chariots: Arc<Chariots>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut inbox = BytesMut::with_capacity(16 << 10);
    let mut outbox = BytesMut::new();
    let mut can_write = true;
    loop {
        let mut close = false;
        loop {
            match Frame::decode(&mut inbox, &limits) {
                Ok(Some(frame)) => {
                    let reply = answer(&chariots, &frame).await;
                    let ack = Frame::ack(Bytes::from(reply.to_string()));
                    let _ = ack.encode(&mut outbox);
                }
                Ok(None) => break,
                Err(e) => {
                    let reply = json!({"error": e.to_string(), "code": "bad_request"});
                    let _ = Frame::ack(Bytes::from(reply.to_string())).encode(&mut outbox);
                    close = true;
                    break;
                }
            }
        }
        if can_write && !outbox.is_empty() {
            // A client that closed without reading makes this fail; its records are in.
            can_write = socket.write_all(&outbox).await.is_ok();
        }
        outbox.clear();
        if close || *stop.borrow() {
            return Ok(());
        }
        let n = tokio::select! {
            r = socket.read_buf(&mut inbox) => r?,
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
    }
}
