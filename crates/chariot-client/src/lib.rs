//! Async Rust client for Chariot's native TCP protocol.
//!
//! It owns one side of a connection: it encodes requests with `chariot-proto`, sends them,
//! reads the answer and turns it into typed values or a typed [`ClientError`], including
//! the record batches of range reads, which it validates with `chariot-log`'s decoder
//! before handing them out. It speaks Rog's commands (create log, publish, fetch, ack)
//! byte for byte and Chariot's extensions (batched publish, range reads, list, describe).
//! It never panics on what a server sends, never retries on its own (whether a retry is
//! safe is the caller's call), and never pipelines: a [`Client`] carries one request at
//! a time, in order, which is all the protocol's positional response matching needs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chariot_client::ClientError> {
//! use chariot_client::Client;
//!
//! let mut client = Client::connect("127.0.0.1:7878").await?;
//! client.create_log("events", 2).await?;
//! client.publish("events", 0, "hello").await?;
//! while let Some(record) = client.fetch("events", 0, "readers").await? {
//!     println!("{}", String::from_utf8_lossy(&record));
//!     client.ack("events", 0, "readers").await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//! - `client`: [`Client`], the connection and one method per command.
//! - `error`: [`ClientError`], what can go wrong, with the server's own message.

mod client;
mod error;

pub use chariot_log::RecordBatch;
pub use chariot_proto::{ErrorCode, GroupOffset, Limits, LogInfo, PartitionInfo};
pub use client::{Acks, Client, Range};
pub use error::{ClientError, Result};
