//! The sender: propagates this datacenter's records to one remote datacenter.
//!
//! Asynchronous, durable and at-least-once. A persistent cursor per remote (the next TOId
//! to send and where to resume reading the shared log, kept by [`super::remotes`])
//! advances only after the remote acknowledged a batch, which it does once the records
//! are durably appended or durably queued there. The shared log is scanned on the
//! blocking pool, never on an async worker. Records go in TOId order, in
//! batches over a [`Link`] (the server crate provides it: `'p'` frames on the remote's
//! record port; this crate never opens sockets); failures reconnect with exponential
//! backoff, and a restart on either side resumes from the cursor. The receiver
//! deduplicates by (origin, TOId), so resending is harmless.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use super::remotes::{Cursor, SenderState};
use super::{decode_stored, lock_write, Origin, Submission};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::now_ms;

/// A boxed future, so links can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection to a remote datacenter that carries propagation batches.
pub trait Link: Send {
    /// Sends one batch (a JSON payload, see [`parse_batch`]) and resolves once the remote
    /// acknowledged it as durably accepted, or with why not.
    fn send_batch(&mut self, payload: Bytes) -> BoxFuture<'_, Result<(), String>>;
}

/// Opens links to remote datacenters by address.
pub type Connector =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Box<dyn Link>, String>> + Send + Sync>;
const BATCH: usize = 500;

/// A sender's state, for `/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SenderStatus {
    /// Remote datacenter id.
    pub dc: u32,
    /// Its record port.
    pub addr: String,
    /// Next local TOId the remote has not acknowledged.
    pub acked_next_toid: u64,
    /// Whether a connection is open.
    pub connected: bool,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the remote last acknowledged a batch (ms since the Unix epoch).
    pub last_ack_ms: Option<i64>,
}

/// One propagated record on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Propagated {
    pub dc: u32,
    pub toid: u64,
    pub tags: std::collections::BTreeMap<String, String>,
    pub seed: u64,
    pub prehash: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Propagated {
    pub(crate) fn into_submission(self) -> Submission {
        Submission {
            tags: self.tags,
            seed: self.seed,
            prehash: self.prehash,
            id: self.id,
            origin: Some(Origin {
                dc: self.dc,
                toid: self.toid,
            }),
        }
    }
}

/// Parses a propagation batch: `{"from": dc, "records": [{"dc","toid","tags","seed",
/// "prehash","id"}...]}`.
pub fn parse_batch(payload: &[u8]) -> Result<Vec<Submission>, String> {
    #[derive(Deserialize)]
    struct Batch {
        from: u32,
        records: Vec<Propagated>,
    }
    let b: Batch =
        serde_json::from_slice(payload).map_err(|e| format!("invalid propagation batch: {e}"))?;
    if let Some(r) = b.records.iter().find(|r| r.dc != b.from) {
        return Err(format!(
            "record of datacenter {} in a batch from {}",
            r.dc, b.from
        ));
    }
    Ok(b.records
        .into_iter()
        .map(Propagated::into_submission)
        .collect())
}

pub(crate) struct Sender {
    pub broker: Arc<Broker>,
    pub log: String,
    pub local_dc: u32,
    pub remote_dc: u32,
    pub addr: String,
    pub appended: Arc<Notify>,
    pub status: Arc<RwLock<HashMap<u32, SenderStatus>>>,
    pub connector: Connector,
    pub state: Arc<SenderState>,
}

impl Sender {
    fn update(&self, f: impl FnOnce(&mut SenderStatus)) {
        let mut all = lock_write(&self.status);
        let s = all.entry(self.remote_dc).or_insert_with(|| SenderStatus {
            dc: self.remote_dc,
            addr: self.addr.clone(),
            acked_next_toid: 0,
            connected: false,
            last_error: None,
            last_ack_ms: None,
        });
        f(s);
    }

    fn payload(&self, batch: &[(u64, Propagated)]) -> Bytes {
        let records: Vec<&Propagated> = batch.iter().map(|(_, p)| p).collect();
        Bytes::from(json!({"from": self.local_dc, "records": records}).to_string())
    }

    pub(crate) async fn run(self) {
        // A cursor that cannot be loaded (a damaged file of an earlier version) stops this
        // sender, and says so in `/cluster`, until it is fixed or removed; it is looked at
        // again every few seconds.
        let mut cursor = loop {
            match self.state.cursor(self.remote_dc).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(remote = self.remote_dc, error = %e, "propagation stopped");
                    self.update(|s| s.last_error = Some(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        // Never read below what the shared log still holds.
        if let Ok(d) = self.broker.describe_log(&self.log) {
            let earliest = d.partitions.first().map_or(0, |p| p.earliest_offset);
            cursor.from_lid = cursor.from_lid.max(earliest);
        }
        self.update(|s| s.acked_next_toid = cursor.next_toid);
        let mut conn: Option<Box<dyn Link>> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Registered before looking, so an append in between still wakes us.
            let woken = self.appended.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (broker, log, local) = (Arc::clone(&self.broker), self.log.clone(), self.local_dc);
            let scanned =
                tokio::task::spawn_blocking(move || collect(&broker, &log, local, cursor))
                    .await
                    .unwrap_or_else(|e| Err(BrokerError::Storage(format!("scan failed: {e}"))));
            let (batch, scanned_to) = match scanned {
                Ok(b) => b,
                Err(e) => {
                    self.update(|s| s.last_error = Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            if batch.is_empty() {
                cursor.from_lid = scanned_to;
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            if conn.is_none() {
                match (self.connector)(self.addr.clone()).await {
                    Ok(c) => {
                        conn = Some(c);
                        self.update(|s| s.connected = true);
                    }
                    Err(e) => {
                        self.fail(
                            &mut conn,
                            format!("connect {}: {e}", self.addr),
                            &mut backoff,
                        )
                        .await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            match c.send_batch(self.payload(&batch)).await {
                Ok(()) => {
                    if let Some((lid, last)) = batch.last() {
                        cursor = Cursor {
                            next_toid: last.toid + 1,
                            from_lid: lid + 1,
                        };
                    }
                    if let Err(e) = self.state.set_cursor(self.remote_dc, cursor).await {
                        // Harmless: a restart resends from the older cursor and the remote
                        // deduplicates.
                        tracing::warn!(error = %e, "cannot persist the propagation cursor");
                    }
                    backoff = Duration::from_millis(100);
                    self.update(|s| {
                        s.acked_next_toid = cursor.next_toid;
                        s.last_error = None;
                        s.last_ack_ms = Some(now_ms());
                    });
                }
                Err(e) => self.fail(&mut conn, e, &mut backoff).await,
            }
        }
    }

    async fn fail(&self, conn: &mut Option<Box<dyn Link>>, error: String, backoff: &mut Duration) {
        tracing::debug!(remote = self.remote_dc, %error, "propagation failed; retrying");
        *conn = None;
        self.update(|s| {
            s.connected = false;
            s.last_error = Some(error);
        });
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }
}

/// Local records from the cursor on, in TOId order; and how far the scan got.
fn collect(
    broker: &Broker,
    log: &str,
    local_dc: u32,
    cursor: Cursor,
) -> Result<(Vec<(u64, Propagated)>, u64), BrokerError> {
    let mut out = Vec::new();
    let mut at = cursor.from_lid;
    loop {
        let stored = match broker.read_records(log, 0, at, 2000) {
            Err(BrokerError::UnknownLog(_)) => return Ok((out, at)),
            other => other?,
        };
        let Some(last) = stored.last() else {
            return Ok((out, at));
        };
        let end = last.offset + 1;
        for s in &stored {
            let Ok(rec) = decode_stored(s) else { continue };
            if rec.origin_dc == local_dc && rec.toid >= cursor.next_toid {
                out.push((
                    rec.lid,
                    Propagated {
                        dc: rec.origin_dc,
                        toid: rec.toid,
                        tags: rec.tags,
                        seed: rec.seed,
                        prehash: rec.prehash,
                        id: rec.id,
                    },
                ));
                if out.len() >= BATCH {
                    return Ok((out, rec.lid + 1));
                }
            }
        }
        at = end;
    }
}
