//! One connection to a Chariot (or Rog) server and a method per command.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chariot_log::{BatchError, BatchHeader, RecordBatch, RecordView};
use chariot_proto::{
    Limits, LogInfo, PartitionInfo, Request, RequestKind, Response, MAX_RECORDS_PER_REQUEST,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::error::{ClientError, Result};

/// How much free space to offer each socket read: big enough that a maximum-size
/// response (8 MiB) arrives in a bounded number of reads, small enough for tiny answers.
const READ_CHUNK: usize = 64 * 1024;

/// A connection to a server speaking Chariot's native protocol.
///
/// Requests go one at a time: each method sends its request and waits for the answer
/// before returning, so the n-th response always belongs to the n-th request (the
/// protocol carries no request ids). Methods take `&mut self`, which makes that
/// ordering a compile-time property; use one `Client` per concurrent task.
///
/// Cancel safety: dropping a method's future midway leaves a request without its
/// answer, so the client then refuses further requests with [`ClientError::Broken`].
pub struct Client {
    stream: TcpStream,
    /// Bytes read but not yet decoded; holds the front of the next response.
    inbox: BytesMut,
    /// The encoded request, reused to avoid one allocation per request.
    outbox: BytesMut,
    limits: Limits,
    timeout: Option<Duration>,
    /// True from the moment a request starts being written until its response has been
    /// fully read; still true on entry means the pairing was lost.
    in_flight: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.stream.peer_addr().ok())
            .field("timeout", &self.timeout)
            .field("broken", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// The answer to a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Offset of the oldest record still stored in the partition.
    pub earliest_offset: u64,
    /// Offset the next appended record will get (latest + 1).
    pub next_offset: u64,
    /// Whole, validated record batches in offset order; the first may start before the
    /// requested offset, and the list is empty at the end of the log.
    pub batches: Vec<RecordBatch>,
}

impl Range {
    /// The records at or after `offset`, in order, skipping the part of the first batch
    /// that precedes it.
    pub fn records_from(&self, offset: u64) -> impl Iterator<Item = RecordView<'_>> {
        self.batches
            .iter()
            .flat_map(RecordBatch::records)
            .filter(move |record| record.offset >= offset)
    }
}

impl Client {
    /// Connects to `addr` (e.g. `"127.0.0.1:7878"`), with the protocol's default
    /// [`Limits`] and no request timeout.
    pub async fn connect<A>(addr: A) -> Result<Client>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|error| ClientError::Connect {
                addr: addr.to_string(),
                error,
            })?;
        // Requests are small and answered one by one: Nagle would hold each one back
        // waiting for an ACK of the previous segment.
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            inbox: BytesMut::with_capacity(READ_CHUNK),
            outbox: BytesMut::new(),
            limits: Limits::default(),
            timeout: None,
            in_flight: false,
        })
    }

    /// Sets the limits used to refuse oversized requests before sending them and
    /// oversized responses as soon as their length is read. Match the server's.
    pub fn with_limits(mut self, limits: Limits) -> Client {
        self.limits = limits;
        self
    }

    /// Bounds each request (sending it and reading its whole answer). A request that
    /// times out leaves the connection [`ClientError::Broken`].
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    /// Rog `0x00`: creates `log` with `partitions` partitions.
    pub async fn create_log(&mut self, log: &str, partitions: u8) -> Result<()> {
        let request = Request::CreateLog {
            log: log.to_owned(),
            partitions,
        };
        match self.call(&request).await? {
            Response::Success => Ok(()),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x15`: creates `log` with `partitions` partitions (the server allows 1
    /// to 1024; Rog's [`Client::create_log`] carries at most 255).
    pub async fn create_log_ext(&mut self, log: &str, partitions: u32) -> Result<()> {
        let request = Request::CreateLogExt {
            log: log.to_owned(),
            partitions,
        };
        match self.call(&request).await? {
            Response::LogCreated { .. } => Ok(()),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Rog `0x01`: appends `data` as one record. Rog's protocol does not return the
    /// offset; use [`Client::publish_records`] to learn it.
    pub async fn publish(
        &mut self,
        log: &str,
        partition: u8,
        data: impl Into<Bytes>,
    ) -> Result<()> {
        let data = data.into();
        self.check_record(data.len())?;
        let request = Request::Publish {
            log: log.to_owned(),
            partition,
            data,
        };
        match self.call(&request).await? {
            Response::Success => Ok(()),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Rog `0x02`: the record at `group`'s position, without moving it; `None` at the
    /// end of the log. Fetching again before [`Client::ack`] returns the same record.
    pub async fn fetch(&mut self, log: &str, partition: u8, group: &str) -> Result<Option<Bytes>> {
        let request = Request::Fetch {
            log: log.to_owned(),
            partition,
            group: group.to_owned(),
        };
        match self.call(&request).await {
            Ok(Response::Fetched { data }) => Ok(Some(data)),
            Ok(_) => Err(ClientError::UnexpectedResponse(request.kind())),
            Err(ClientError::NoData) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rog `0x03`: moves `group`'s position past the record it last fetched.
    pub async fn ack(&mut self, log: &str, partition: u8, group: &str) -> Result<()> {
        let request = Request::Ack {
            log: log.to_owned(),
            partition,
            group: group.to_owned(),
        };
        match self.call(&request).await? {
            Response::Success => Ok(()),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x17`: `group` has consumed every record of the partition below
    /// `offset`; its committed offset becomes `max(committed, offset)`, so a retry after
    /// a lost answer changes nothing. Returns the committed offset now. An offset past
    /// the partition's end is refused (`offset_out_of_range`).
    pub async fn ack_to(
        &mut self,
        log: &str,
        partition: u32,
        group: &str,
        offset: u64,
    ) -> Result<u64> {
        let request = Request::AckTo {
            log: log.to_owned(),
            partition,
            group: group.to_owned(),
            offset,
        };
        match self.call(&request).await? {
            Response::GroupOffset { offset } => Ok(offset),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x10`: appends a batch built with
    /// [`RecordBatchBuilder`](chariot_log::RecordBatchBuilder); returns the offset given
    /// to its first record and how many records were appended.
    pub async fn publish_batch(
        &mut self,
        log: &str,
        partition: u32,
        batch: RecordBatch,
    ) -> Result<(u64, u32)> {
        self.batch_call(log, partition, batch, None).await
    }

    /// Extension `0x18`: [`Client::publish_batch`], answered once the copies `acks`
    /// names hold the batch (on a cluster, [`Acks::All`]: every replica, else the error
    /// `not_all_replicas` with the batch stored on a quorum).
    pub async fn publish_batch_acks(
        &mut self,
        log: &str,
        partition: u32,
        batch: RecordBatch,
        acks: Acks,
    ) -> Result<(u64, u32)> {
        self.batch_call(log, partition, batch, Some(acks)).await
    }

    async fn batch_call(
        &mut self,
        log: &str,
        partition: u32,
        batch: RecordBatch,
        acks: Option<Acks>,
    ) -> Result<(u64, u32)> {
        if batch.len() > self.limits.max_batch_size {
            return Err(ClientError::TooLarge {
                what: "record batch",
                size: batch.len(),
                max: self.limits.max_batch_size,
            });
        }
        let (log, batch) = (log.to_owned(), Bytes::from(batch.into_vec()));
        let request = match acks {
            None => Request::PublishBatch {
                log,
                partition,
                batch,
            },
            Some(acks) => Request::PublishBatchAcks {
                acks: acks.byte(),
                log,
                partition,
                batch,
            },
        };
        match self.call(&request).await? {
            Response::BatchPublished {
                base_offset,
                record_count,
            } => Ok((base_offset, record_count)),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x11`: appends `values` atomically at consecutive offsets; returns the
    /// first one's offset.
    pub async fn publish_records<I, B>(
        &mut self,
        log: &str,
        partition: u32,
        values: I,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        self.records_call(log, partition, values, None).await
    }

    /// Extension `0x16`: [`Client::publish_records`], answered once the copies `acks`
    /// names hold the records.
    pub async fn publish_records_acks<I, B>(
        &mut self,
        log: &str,
        partition: u32,
        values: I,
        acks: Acks,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        self.records_call(log, partition, values, Some(acks)).await
    }

    async fn records_call<I, B>(
        &mut self,
        log: &str,
        partition: u32,
        values: I,
        acks: Option<Acks>,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let records: Vec<Bytes> = values.into_iter().map(Into::into).collect();
        if records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(ClientError::TooManyRecords {
                count: records.len(),
                max: MAX_RECORDS_PER_REQUEST,
            });
        }
        let mut total = 0usize;
        for record in &records {
            self.check_record(record.len())?;
            total = total.saturating_add(record.len());
        }
        if total > self.limits.max_batch_size {
            return Err(ClientError::TooLarge {
                what: "record batch",
                size: total,
                max: self.limits.max_batch_size,
            });
        }
        let request = match acks {
            None => Request::PublishRecords {
                log: log.to_owned(),
                partition,
                records,
            },
            Some(acks) => Request::PublishRecordsAcks {
                acks: acks.byte(),
                log: log.to_owned(),
                partition,
                records,
            },
        };
        match self.call(&request).await? {
            Response::RecordsPublished { base_offset } => Ok(base_offset),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x12`: whole batches from the one holding `offset`, up to about
    /// `max_bytes` (at least one batch if any exists).
    pub async fn read_range(
        &mut self,
        log: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<Range> {
        let request = Request::ReadRange {
            log: log.to_owned(),
            partition,
            offset,
            max_bytes,
        };
        match self.call(&request).await? {
            Response::Range {
                earliest_offset,
                next_offset,
                batches,
            } => Ok(Range {
                earliest_offset,
                next_offset,
                batches: split_batches(&batches).map_err(ClientError::InvalidBatch)?,
            }),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    /// Extension `0x13`: every log and its partition count.
    pub async fn list_logs(&mut self) -> Result<Vec<LogInfo>> {
        match self.call(&Request::ListLogs).await? {
            Response::Logs { logs } => Ok(logs),
            _ => Err(ClientError::UnexpectedResponse(RequestKind::ListLogs)),
        }
    }

    /// Extension `0x14`: per partition (index = position), its offsets and its consumer
    /// groups' committed positions.
    pub async fn describe_log(&mut self, log: &str) -> Result<Vec<PartitionInfo>> {
        let request = Request::DescribeLog {
            log: log.to_owned(),
        };
        match self.call(&request).await? {
            Response::LogDescription { partitions } => Ok(partitions),
            _ => Err(ClientError::UnexpectedResponse(request.kind())),
        }
    }

    fn check_record(&self, size: usize) -> Result<()> {
        if size > self.limits.max_record_size {
            return Err(ClientError::TooLarge {
                what: "record",
                size,
                max: self.limits.max_record_size,
            });
        }
        Ok(())
    }

    /// Sends one request and reads its response; error responses become errors.
    async fn call(&mut self, request: &Request) -> Result<Response> {
        if self.in_flight {
            return Err(ClientError::Broken);
        }
        self.outbox.clear();
        request
            .encode(&mut self.outbox)
            .map_err(ClientError::Request)?;
        self.in_flight = true;
        let kind = request.kind();
        let response = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, self.exchange(kind))
                .await
                .map_err(|_| ClientError::Timeout(limit))??,
            None => self.exchange(kind).await?,
        };
        // With one request at a time, bytes beyond the answer were never asked for: the
        // server and this client disagree about the stream, so stay broken.
        if !self.inbox.is_empty() {
            return Err(ClientError::Protocol(chariot_proto::ProtoError::Malformed(
                "the server sent bytes after its response",
            )));
        }
        self.in_flight = false;
        match response {
            Response::RogError { message } => Err(ClientError::from_rog(message)),
            Response::Error { code, message } => Err(ClientError::from_coded(code, message)),
            response => Ok(response),
        }
    }

    async fn exchange(&mut self, kind: RequestKind) -> Result<Response> {
        self.stream.write_all(&self.outbox).await?;
        loop {
            if let Some(response) = Response::decode(kind, &mut self.inbox, &self.limits)
                .map_err(ClientError::Protocol)?
            {
                return Ok(response);
            }
            self.inbox.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.inbox).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

/// Splits a range read's concatenated batches, validating each one.
fn split_batches(mut blob: &[u8]) -> std::result::Result<Vec<RecordBatch>, BatchError> {
    let mut batches = Vec::new();
    while !blob.is_empty() {
        let header = BatchHeader::parse(blob)?;
        let len = usize::try_from(header.total_len()).unwrap_or(usize::MAX);
        let Some((one, rest)) = blob.split_at_checked(len) else {
            return Err(BatchError::Truncated {
                needed: len,
                available: blob.len(),
            });
        };
        batches.push(RecordBatch::from_vec(one.to_vec())?);
        blob = rest;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests;

/// How many copies must hold a publish before its answer (extensions `0x16`, `0x18`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// A quorum of the partition's replicas, durably (on a single node, the node).
    #[default]
    Quorum,
    /// Every replica, durably.
    All,
}

impl Acks {
    fn byte(self) -> u8 {
        match self {
            Acks::Quorum => chariot_proto::ACKS_QUORUM,
            Acks::All => chariot_proto::ACKS_ALL,
        }
    }
}
