//! Sans-IO codecs for Chariot's wire protocols.
//!
//! This crate owns the byte layout of everything Chariot speaks on the wire:
//! Rog's native TCP protocol (commands 0–3, byte for byte), Chariot's extension
//! commands on the same connection, and the framing of the gochariots-compatible
//! record port. It turns bytes into typed requests and responses and back, for
//! the server and for clients alike. It must never do I/O: no sockets, files,
//! async runtimes or clocks. Callers own the buffers, which keeps the codecs
//! deterministic and testable byte by byte. The full specification is
//! `docs/protocol.md`.
//!
//! Every decoder has the same contract (after tokio-rs/mini-redis's `frame.rs`):
//! `Ok(None)` means "need more bytes" and consumes nothing; `Ok(Some(_))`
//! consumes exactly one frame, leaving pipelined bytes for the next call;
//! `Err(_)` is a typed reason the stream is unusable, also consuming nothing.
//! Frames are delimited by their declared lengths, never by how much happens
//! to be buffered, and every declared length is checked against [`Limits`] as
//! soon as it is read. No input makes a decoder panic.
//!
//! ```
//! use bytes::BytesMut;
//! use chariot_proto::{messages, ErrorCode, Limits, Request, Response};
//!
//! // Bytes as read from a socket: one whole publish, then half of the next.
//! let mut inbox = BytesMut::from(&[1, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i', 1, 0][..]);
//! let mut outbox = BytesMut::new();
//! while let Some(request) = Request::decode(&mut inbox, &Limits::default())? {
//!     let kind = request.kind();
//!     let response = match request {
//!         Request::Publish { log, .. } if log != "a" => {
//!             Response::error(Some(kind), ErrorCode::UnknownLog, messages::unknown_log(&log))
//!         }
//!         _ => Response::Success,
//!     };
//!     response.encode(&mut outbox)?;
//! }
//! assert_eq!(&outbox[..], &[0]);
//! assert_eq!(&inbox[..], &[1, 0]); // kept for the next read
//! # Ok::<(), chariot_proto::ProtoError>(())
//! ```
//!
//! # Layout
//!
//! - `request` — [`Request`], [`RequestKind`]: the commands and their bytes.
//! - `response` — [`Response`] and its parts: both response forms.
//! - `code` — [`ErrorCode`]: wire-stable error codes of extension errors.
//! - `error` — [`ProtoError`]: why a frame could not be decoded or encoded.
//! - `limits` — [`Limits`]: bounds on declared lengths.
//! - [`messages`] — Rog's exact error texts.
//! - [`chariots`] — framing of the gochariots-compatible record port.
//! - `wire` — private cursor and length-prefix helpers shared by the codecs.

pub mod chariots;
mod code;
mod error;
mod limits;
pub mod messages;
mod request;
mod response;
mod wire;

pub use code::ErrorCode;
pub use error::ProtoError;
pub use limits::{
    Limits, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_RECORD_SIZE,
    MAX_RECORDS_PER_REQUEST,
};
pub use request::{Request, RequestKind, ACKS_ALL, ACKS_QUORUM};
pub use response::{GroupOffset, LogInfo, PartitionInfo, Response};
