//! One connection of a length-framed protocol (the native port, the record port), over
//! any `AsyncRead + AsyncWrite` stream: the read, decode, answer, write loop with its
//! bounds, so a protocol is only a [`Protocol`] (a codec and a dispatch).
//!
//! - Frames are decoded by their declared lengths, never by read sizes; every complete
//!   frame is answered in order, and the answers of one read are written together.
//! - A frame the codec rejects gets its error reply, then the connection closes: after a
//!   bad length nothing that follows can be trusted to be a frame.
//! - **Bounds:** a connection with no partial frame is closed after `idle_timeout`; a
//!   frame must arrive in full within `frame_timeout` of its first byte; a write of
//!   answers must finish within `frame_timeout`. Bytes buffered beyond
//!   [`ByteBudget::FREE_BYTES`] are reserved from the shared [`ByteBudget`] before more
//!   is read, so stalled half-sent frames cannot together exceed it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::listener::ByteBudget;

/// Bytes read from the socket at a time (also the free allowance of a connection).
const READ_CHUNK: usize = ByteBudget::FREE_BYTES;

/// A protocol spoken over [`serve`].
pub(crate) trait Protocol: Send + Sync {
    /// A decoded request.
    type Frame: Send;
    /// The request at the front of `inbox`, removing exactly its bytes; `Ok(None)` if
    /// `inbox` holds only part of one. `Err` carries the encoded error reply for bytes
    /// that are not a valid request.
    fn decode(&self, inbox: &mut BytesMut) -> Result<Option<Self::Frame>, BytesMut>;
    /// Answers one request, appending the encoded reply to `outbox`.
    fn answer(&self, frame: Self::Frame, outbox: &mut BytesMut) -> impl Future<Output = ()> + Send;
    /// Whether the connection goes on after its answers cannot be written: the record
    /// port serves clients that send and never read (gochariots' `rawpost.py`), so it
    /// keeps applying their frames; the native protocol closes.
    const KEEPS_READING_UNANSWERED: bool;
}

/// Limits of every framed connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// A connection with no partial frame is closed after this long without a byte.
    pub idle_timeout: Duration,
    /// A frame must be received in full, and a write of answers must finish, within this.
    pub frame_timeout: Duration,
    /// Shared bound on partially received frames.
    pub budget: Arc<ByteBudget>,
}

/// Why a connection ended, for the debug log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("a frame did not arrive in full within {0:?} ({1} bytes received)")]
    SlowFrame(Duration, usize),
    #[error("answers could not be written within {0:?}")]
    SlowReader(Duration),
}

/// Serves one connection until the peer closes, a bound is hit, or `stop` flips.
pub(crate) async fn serve<S, P>(
    mut stream: S,
    protocol: &P,
    config: &ConnConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: Protocol,
{
    let mut inbox = BytesMut::new();
    let mut outbox = BytesMut::new();
    let mut reserved = config.budget.reservation();
    let mut can_write = true;
    // When the partial frame at the front of `inbox` began arriving.
    let mut frame_started: Option<Instant> = None;
    loop {
        let mut close = false;
        loop {
            match protocol.decode(&mut inbox) {
                Ok(Some(frame)) => {
                    protocol.answer(frame, &mut outbox).await;
                    frame_started = (!inbox.is_empty()).then(Instant::now);
                }
                Ok(None) => break,
                Err(reply) => {
                    outbox.unsplit(reply);
                    close = true;
                    break;
                }
            }
        }
        if can_write && !outbox.is_empty() {
            match tokio::time::timeout(config.frame_timeout, stream.write_all(&outbox)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if !P::KEEPS_READING_UNANSWERED => return Err(Ended::Io(e)),
                Err(_) if !P::KEEPS_READING_UNANSWERED => {
                    return Err(Ended::SlowReader(config.frame_timeout))
                }
                // A client that closed (or stopped reading) without reading: its
                // frames are applied all the same; their answers go nowhere.
                Ok(Err(_)) | Err(_) => can_write = false,
            }
        }
        outbox.clear();
        if close {
            let _ = stream.shutdown().await;
            linger(&mut stream).await;
            return Ok(());
        }
        if *stop.borrow() {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        if inbox.is_empty() && inbox.capacity() > READ_CHUNK {
            // Between frames, give back what a large one needed.
            inbox = BytesMut::new();
        }
        let deadline = match frame_started {
            None => Instant::now() + config.idle_timeout,
            Some(t) => t + config.frame_timeout,
        };
        // Room for the next read, reserved from the shared budget first.
        tokio::select! {
            () = reserved.cover(inbox.len() + READ_CHUNK) => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err(timed_out(frame_started, config, inbox.len()));
            }
            _ = stop.changed() => return Ok(()),
        }
        inbox.reserve(READ_CHUNK);
        let buffered = inbox.len();
        let n = {
            let mut room = (&mut inbox).limit(READ_CHUNK);
            tokio::select! {
                r = stream.read_buf(&mut room) => r.map_err(Ended::Io)?,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(timed_out(frame_started, config, buffered));
                }
                _ = stop.changed() => return Ok(()),
            }
        };
        if n == 0 {
            // Peer closed. Bytes left over are a truncated frame: nothing of it was
            // applied, since only whole frames are answered.
            if !inbox.is_empty() {
                tracing::debug!(bytes = inbox.len(), "peer closed mid-frame");
            }
            return Ok(());
        }
        if frame_started.is_none() {
            frame_started = Some(Instant::now());
        }
    }
}

/// After an error reply to a bad frame: reads and drops what the client is still
/// sending (for at most a second and 16 MiB), so that closing does not reset the
/// connection (a close with unread bytes sends RST, which can destroy the reply before
/// the client reads it).
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut scratch = vec![0u8; 64 << 10];
    let mut left: usize = 16 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

fn timed_out(frame_started: Option<Instant>, config: &ConnConfig, buffered: usize) -> Ended {
    match frame_started {
        None => Ended::Idle(config.idle_timeout),
        Some(_) => Ended::SlowFrame(config.frame_timeout, buffered),
    }
}
