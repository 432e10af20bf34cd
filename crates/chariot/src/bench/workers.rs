//! The bench's producers and consumers: one tokio task each, one request at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chariot_client::{Client, ClientError, RecordBatch};
use chariot_log::RecordBatchBuilder;

use super::report::SideStats;
use crate::commands::Connection;

/// Rog's consumer group for the bench's fetch + ack consumers.
const GROUP: &str = "chariot-bench";
/// Bytes per native range read.
const READ_BYTES: u32 = 1 << 20;
/// Pause after a consumer round that found nothing, so idle consumers do not steal the
/// CPU the server needs (the bound on what this adds to end-to-end latency).
const IDLE_PAUSE: Duration = Duration::from_millis(1);
/// Pause after a failed request, so a refused connection does not become a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Bytes at the front of a value that carry the run id and the send time.
const STAMP_LEN: usize = 16;

/// Which protocol the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Persistent connections; batches through Chariot's extensions.
    Native,
    /// Rog's plain protocol: one connection per request, single-record publish, fetch + ack.
    Rog,
}

/// Everything the workers share: the configuration and the live counters.
pub struct Plan {
    pub conn: Connection,
    pub protocol: Protocol,
    pub log: String,
    pub partitions: u8,
    pub producers: usize,
    pub consumers: usize,
    pub record_size: usize,
    pub batch_size: usize,
    /// Natively, where each partition's consumer starts (its next offset at setup).
    pub start_offsets: Vec<u64>,
    /// Tags this run's records (see `stamp`).
    pub run_id: u64,
    pub start: Instant,
    pub deadline: Instant,
    /// Records acknowledged to producers so far, for the progress bar.
    pub produced: AtomicU64,
    /// Records consumed so far, for the progress bar.
    pub consumed: AtomicU64,
}

impl Plan {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Nanoseconds since the start: the send time stamped into values.
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A record value: run id and send time, then filler.
    fn value(&self, sent_nanos: u64) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.record_size.max(STAMP_LEN));
        value.extend_from_slice(&self.run_id.to_be_bytes());
        value.extend_from_slice(&sent_nanos.to_be_bytes());
        value.extend((STAMP_LEN..self.record_size).map(|i| (i % 251) as u8));
        // Values shorter than the stamp carry a cut one, which consumers ignore.
        value.truncate(self.record_size);
        value
    }

    /// End-to-end latency of a consumed value in microseconds, if it was stamped by
    /// this run.
    fn end_to_end_micros(&self, value: &[u8]) -> Option<u64> {
        let run = value.get(..8)?;
        let sent = value.get(8..STAMP_LEN)?;
        if u64::from_be_bytes(run.try_into().ok()?) != self.run_id {
            return None;
        }
        let sent = u64::from_be_bytes(sent.try_into().ok()?);
        Some(self.now_nanos().saturating_sub(sent) / 1000)
    }

    async fn connect(&self) -> Result<Client, String> {
        self.conn.connect().await.map_err(|e| format!("{e:#}"))
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One producer: publishes until the deadline and returns what it measured.
pub async fn produce(plan: std::sync::Arc<Plan>, id: usize) -> SideStats {
    let mut stats = SideStats::new();
    let mut client: Option<Client> = None;
    let partitions = usize::from(plan.partitions.max(1));
    let mut request = id;
    while plan.running() {
        let partition = (request % partitions) as u8;
        request = request.wrapping_add(1);
        let value = plan.value(plan.now_nanos());
        let records = plan.batch_size as u64;
        let outcome = match plan.protocol {
            Protocol::Rog => {
                let sent = Instant::now();
                match plan.connect().await {
                    Ok(mut once) => once
                        .publish(&plan.log, partition, value)
                        .await
                        .map(|()| micros(sent))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                }
            }
            Protocol::Native => {
                if client.is_none() {
                    client = plan.connect().await.map_err(|e| stats.failed(e)).ok();
                }
                let Some(connected) = client.as_mut() else {
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                };
                let batch = (plan.batch_size > 1).then(|| build_batch(&value, plan.batch_size));
                let sent = Instant::now();
                let result = match batch {
                    Some(batch) => connected
                        .publish_batch(&plan.log, u32::from(partition), batch)
                        .await
                        .map(|_| ()),
                    None => connected.publish(&plan.log, partition, value).await,
                };
                result.map(|()| micros(sent)).map_err(|e| {
                    if !e.keeps_connection() {
                        client = None;
                    }
                    e.to_string()
                })
            }
        };
        match outcome {
            Ok(latency) => {
                stats.requests += 1;
                stats.records += records;
                stats.bytes += records * plan.record_size as u64;
                stats.latency.saturating_record(latency);
                plan.produced.fetch_add(records, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed(e);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    stats
}

/// `count` copies of `value` in one batch (the storage layout the server stores as is).
fn build_batch(value: &[u8], count: usize) -> RecordBatch {
    let mut builder = RecordBatchBuilder::with_capacity(count * (value.len() + 20));
    let now = chariot_broker::now_ms();
    for _ in 0..count {
        builder.push_parts(now, None, value, &[]);
    }
    builder.build()
}

/// One consumer: reads its partitions until the deadline and returns what it measured.
pub async fn consume(plan: std::sync::Arc<Plan>, id: usize) -> SideStats {
    let mine: Vec<u8> = (0..plan.partitions)
        .filter(|p| usize::from(*p) % plan.consumers.max(1) == id)
        .collect();
    if mine.is_empty() {
        return SideStats::new();
    }
    match plan.protocol {
        Protocol::Native => consume_ranges(&plan, &mine).await,
        Protocol::Rog => consume_fetch_ack(&plan, &mine).await,
    }
}

async fn consume_ranges(plan: &Plan, mine: &[u8]) -> SideStats {
    let mut stats = SideStats::new();
    let mut offsets: Vec<u64> = mine
        .iter()
        .map(|p| {
            plan.start_offsets
                .get(usize::from(*p))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let mut client: Option<Client> = None;
    while plan.running() {
        if client.is_none() {
            client = plan.connect().await.map_err(|e| stats.failed(e)).ok();
        }
        let Some(connected) = client.as_mut() else {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        let mut found = false;
        for (partition, offset) in mine.iter().zip(offsets.iter_mut()) {
            let sent = Instant::now();
            let range = match connected
                .read_range(&plan.log, u32::from(*partition), *offset, READ_BYTES)
                .await
            {
                Ok(range) => range,
                Err(e) => {
                    let reconnect = !e.keeps_connection();
                    stats.failed(e.to_string());
                    if reconnect {
                        client = None;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                    break;
                }
            };
            let latency = micros(sent);
            let mut records = 0u64;
            for record in range.records_from(*offset) {
                records += 1;
                stats.bytes += record.value.len() as u64;
                if let Some(e2e) = plan.end_to_end_micros(record.value) {
                    stats.end_to_end.saturating_record(e2e);
                }
                *offset = record.offset + 1;
            }
            if records > 0 {
                found = true;
                stats.requests += 1;
                stats.records += records;
                stats.latency.saturating_record(latency);
                plan.consumed.fetch_add(records, Ordering::Relaxed);
            }
        }
        if !found {
            tokio::time::sleep(IDLE_PAUSE).await;
        }
    }
    stats
}

async fn consume_fetch_ack(plan: &Plan, mine: &[u8]) -> SideStats {
    let mut stats = SideStats::new();
    while plan.running() {
        let mut found = false;
        for partition in mine {
            let sent = Instant::now();
            match fetch_ack(plan, *partition).await {
                Ok(Some(value)) => {
                    found = true;
                    stats.requests += 1;
                    stats.records += 1;
                    stats.bytes += value.len() as u64;
                    stats.latency.saturating_record(micros(sent));
                    if let Some(e2e) = plan.end_to_end_micros(&value) {
                        stats.end_to_end.saturating_record(e2e);
                    }
                    plan.consumed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    stats.failed(e);
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
        if !found {
            tokio::time::sleep(IDLE_PAUSE).await;
        }
    }
    stats
}

/// Rog's consuming step: fetch, then ack, each over a fresh connection.
async fn fetch_ack(plan: &Plan, partition: u8) -> Result<Option<Bytes>, String> {
    let text = |e: ClientError| e.to_string();
    let mut fetcher = plan.connect().await?;
    let Some(value) = fetcher
        .fetch(&plan.log, partition, GROUP)
        .await
        .map_err(text)?
    else {
        return Ok(None);
    };
    drop(fetcher);
    let mut acker = plan.connect().await?;
    acker.ack(&plan.log, partition, GROUP).await.map_err(text)?;
    Ok(Some(value))
}
