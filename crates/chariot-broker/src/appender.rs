//! The appender: one thread per log that turns many concurrent publishes into few appends.
//!
//! Publishes arrive on a bounded channel (backpressure: a full channel makes the async
//! sender wait). The thread takes everything queued (up to a byte budget), merges
//! consecutive single-record publishes into one record batch, appends all batches with one
//! write and one fdatasync, and answers each publish with its own offsets. While it is busy
//! syncing, the next group queues up: this is group commit at the broker level, and it is
//! what makes unbatched producers cheap.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use chariot_log::{Log, RecordBatch, RecordBatchBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::error::{BrokerError, Result};

/// A record as a producer hands it to the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Optional key.
    pub key: Option<Bytes>,
    /// Value bytes.
    pub value: Bytes,
    /// Headers (Chariots tags), in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Producer timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl NewRecord {
    /// A record with only a value, stamped now.
    pub fn value(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            timestamp: now_ms(),
            ..Self::default()
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        18 + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| 6 + k.len() + v.len())
                .sum::<usize>()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Offsets assigned to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub count: u32,
}

pub(crate) enum Entry {
    Records(Vec<NewRecord>),
    Batch(RecordBatch),
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Records(r) => r.iter().map(NewRecord::encoded_len).sum(),
            Entry::Batch(b) => b.len(),
        }
    }
}

struct Request {
    entry: Entry,
    reply: oneshot::Sender<Result<Appended>>,
}

/// Handle to a log's appender thread. Dropping it stops the thread after the queued
/// publishes are appended; the thread then flushes and closes the log.
pub(crate) struct Appender {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Queued publishes per log before senders wait.
const QUEUE: usize = 4096;

impl Appender {
    /// Starts the thread for `log`; a group holds at most `group_bytes` (but always at
    /// least one publish).
    pub(crate) fn start(name: String, log: Arc<Log>, group_bytes: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("append-{name}"))
            .spawn(move || run(log, rx, group_bytes))
            .map_err(|e| BrokerError::Storage(format!("cannot start appender thread: {e}")))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends `entry`, returning once it is durable (per the log's sync policy).
    pub(crate) async fn append(&self, entry: Entry) -> Result<Appended> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(BrokerError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request { entry, reply })
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)?
    }

    /// Stops accepting publishes and waits until the queued ones are appended.
    pub(crate) fn stop(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(log: Arc<Log>, mut rx: mpsc::Receiver<Request>, group_bytes: usize) {
    while let Some(first) = rx.blocking_recv() {
        let mut size = first.entry.size();
        let mut group = vec![first];
        while size < group_bytes {
            match rx.try_recv() {
                Ok(r) => {
                    size += r.entry.size();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        append_group(&log, group);
    }
}

/// Where a request's records ended up: batch index, and first record within it.
struct Placement {
    batch: usize,
    skip: u32,
    count: u32,
}

fn append_group(log: &Log, group: Vec<Request>) {
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut builder: Option<RecordBatchBuilder> = None;
    let mut placements = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    // Merged publishes must still fit one batch.
    let max_batch = log.config().max_batch_bytes;
    for req in group {
        let size = req.entry.size();
        match req.entry {
            Entry::Records(records) => {
                if builder
                    .as_ref()
                    .is_some_and(|b| b.size() + size > max_batch)
                {
                    if let Some(b) = builder.take() {
                        batches.push(b.build());
                    }
                }
                let b = builder.get_or_insert_with(RecordBatchBuilder::new);
                placements.push(Placement {
                    batch: batches.len(),
                    skip: b.len(),
                    count: records.len() as u32,
                });
                for r in &records {
                    let headers: Vec<(&[u8], &[u8])> =
                        r.headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                    b.push_parts(r.timestamp, r.key.as_deref(), &r.value, &headers);
                }
            }
            Entry::Batch(batch) => {
                if let Some(b) = builder.take() {
                    batches.push(b.build());
                }
                placements.push(Placement {
                    batch: batches.len(),
                    skip: 0,
                    count: batch.record_count(),
                });
                batches.push(batch);
            }
        }
        replies.push(req.reply);
    }
    if let Some(b) = builder.take() {
        batches.push(b.build());
    }
    match log.append_batches(&mut batches) {
        Ok(infos) => {
            for (reply, p) in replies.into_iter().zip(placements) {
                let outcome = infos
                    .get(p.batch)
                    .map(|info| Appended {
                        base_offset: info.base_offset + u64::from(p.skip),
                        count: p.count,
                    })
                    .ok_or_else(|| BrokerError::Storage("append lost track of a batch".into()));
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed");
            let shared = BrokerError::from(e);
            for reply in replies {
                let _ = reply.send(Err(clone_error(&shared)));
            }
        }
    }
}

/// `BrokerError` is not `Clone` (its source types are not); every append failure maps to
/// one of these variants, which copy cheaply.
fn clone_error(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::NoSpace => BrokerError::NoSpace,
        BrokerError::ShuttingDown => BrokerError::ShuttingDown,
        BrokerError::TooLarge { size, max } => BrokerError::TooLarge {
            size: *size,
            max: *max,
        },
        BrokerError::Empty => BrokerError::Empty,
        BrokerError::InvalidBatch(m) => BrokerError::InvalidBatch(m.clone()),
        BrokerError::Damaged(m) => BrokerError::Damaged(m.clone()),
        other => BrokerError::Storage(other.to_string()),
    }
}
