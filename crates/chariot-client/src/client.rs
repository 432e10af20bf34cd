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

    /// Extension `0x10`: appends a batch built with
    /// [`RecordBatchBuilder`](chariot_log::RecordBatchBuilder); returns the offset given
    /// to its first record and how many records were appended.
    pub async fn publish_batch(
        &mut self,
        log: &str,
        partition: u32,
        batch: RecordBatch,
    ) -> Result<(u64, u32)> {
        if batch.len() > self.limits.max_batch_size {
            return Err(ClientError::TooLarge {
                what: "record batch",
                size: batch.len(),
                max: self.limits.max_batch_size,
            });
        }
        let request = Request::PublishBatch {
            log: log.to_owned(),
            partition,
            batch: Bytes::from(batch.into_vec()),
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
        let request = Request::PublishRecords {
            log: log.to_owned(),
            partition,
            records,
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
#[allow(clippy::indexing_slicing)]
mod tests {
    use std::net::SocketAddr;

    use chariot_log::{Record, RecordBatchBuilder};
    use chariot_proto::{messages, ErrorCode, GroupOffset};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// What the fake server does after reading each request.
    enum Reply {
        /// Answers with the response's encoding.
        With(Response),
        /// Answers with these bytes, written one at a time to exercise reassembly.
        Trickle(Vec<u8>),
        /// Answers with raw bytes.
        Raw(Vec<u8>),
        /// Closes the connection without answering.
        Hangup,
        /// Never answers.
        Silence,
    }

    /// A one-connection server: decodes each request with `chariot-proto`, answers per
    /// the script, and returns the requests it saw.
    async fn fake_server(
        script: Vec<Reply>,
    ) -> std::io::Result<(SocketAddr, JoinHandle<Vec<Request>>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            let Ok((mut socket, _)) = listener.accept().await else {
                return seen;
            };
            let mut buf = BytesMut::new();
            for reply in script {
                let request = loop {
                    match Request::decode(&mut buf, &Limits::default()) {
                        Ok(Some(request)) => break request,
                        Ok(None) => {}
                        Err(_) => return seen,
                    }
                    match socket.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return seen,
                        Ok(_) => {}
                    }
                };
                seen.push(request);
                let written = match reply {
                    Reply::With(response) => {
                        let mut out = BytesMut::new();
                        if response.encode(&mut out).is_err() {
                            return seen;
                        }
                        socket.write_all(&out).await
                    }
                    Reply::Raw(bytes) => socket.write_all(&bytes).await,
                    Reply::Trickle(bytes) => {
                        let mut result = Ok(());
                        for byte in bytes {
                            result = socket.write_all(&[byte]).await;
                            tokio::task::yield_now().await;
                        }
                        result
                    }
                    Reply::Hangup => return seen,
                    Reply::Silence => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return seen;
                    }
                };
                if written.is_err() {
                    return seen;
                }
            }
            seen
        });
        Ok((addr, handle))
    }

    fn encoded(response: &Response) -> Vec<u8> {
        let mut out = BytesMut::new();
        assert!(response.encode(&mut out).is_ok());
        out.to_vec()
    }

    fn batch(values: &[&str]) -> RecordBatch {
        let mut builder = RecordBatchBuilder::new();
        for value in values {
            builder.push(&Record::value(value.as_bytes()));
        }
        builder.build()
    }

    #[tokio::test]
    async fn rog_commands_round_trip() -> TestResult {
        let (addr, server) = fake_server(vec![
            Reply::With(Response::Success),
            Reply::With(Response::Success),
            Reply::With(Response::Fetched {
                data: Bytes::from_static(b"hi"),
            }),
            Reply::With(Response::Success),
            Reply::With(Response::RogError {
                message: messages::no_data(),
            }),
        ])
        .await?;
        let mut client = Client::connect(addr).await?;
        client.create_log("a", 2).await?;
        client.publish("a", 1, "hi").await?;
        assert_eq!(
            client.fetch("a", 1, "g").await?,
            Some(Bytes::from_static(b"hi"))
        );
        client.ack("a", 1, "g").await?;
        assert_eq!(client.fetch("a", 1, "g").await?, None);
        drop(client);
        let seen = server.await?;
        assert_eq!(
            seen,
            vec![
                Request::CreateLog {
                    log: "a".into(),
                    partitions: 2
                },
                Request::Publish {
                    log: "a".into(),
                    partition: 1,
                    data: Bytes::from_static(b"hi")
                },
                Request::Fetch {
                    log: "a".into(),
                    partition: 1,
                    group: "g".into()
                },
                Request::Ack {
                    log: "a".into(),
                    partition: 1,
                    group: "g".into()
                },
                Request::Fetch {
                    log: "a".into(),
                    partition: 1,
                    group: "g".into()
                },
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn extension_commands_round_trip() -> TestResult {
        let stored = {
            let mut b = batch(&["x", "y"]);
            b.set_base_offset(7);
            b
        };
        let second = {
            let mut b = batch(&["z"]);
            b.set_base_offset(9);
            b
        };
        let mut blob = stored.as_bytes().to_vec();
        blob.extend_from_slice(second.as_bytes());
        let partitions = vec![PartitionInfo {
            earliest_offset: 0,
            next_offset: 10,
            groups: vec![GroupOffset {
                group: "g".into(),
                committed_offset: 4,
            }],
        }];
        let (addr, server) = fake_server(vec![
            Reply::With(Response::BatchPublished {
                base_offset: 7,
                record_count: 2,
            }),
            Reply::With(Response::RecordsPublished { base_offset: 9 }),
            Reply::With(Response::Range {
                earliest_offset: 0,
                next_offset: 10,
                batches: Bytes::from(blob),
            }),
            Reply::With(Response::Logs {
                logs: vec![LogInfo {
                    name: "a".into(),
                    partitions: 3,
                }],
            }),
            Reply::With(Response::LogDescription {
                partitions: partitions.clone(),
            }),
        ])
        .await?;
        let mut client = Client::connect(addr).await?;
        assert_eq!(
            client.publish_batch("a", 2, batch(&["x", "y"])).await?,
            (7, 2)
        );
        assert_eq!(client.publish_records("a", 2, ["z"]).await?, 9);
        let range = client.read_range("a", 2, 8, 1024).await?;
        assert_eq!((range.earliest_offset, range.next_offset), (0, 10));
        assert_eq!(range.batches, vec![stored, second]);
        let values: Vec<(u64, &[u8])> =
            range.records_from(8).map(|r| (r.offset, r.value)).collect();
        assert_eq!(values, vec![(8, &b"y"[..]), (9, &b"z"[..])]);
        assert_eq!(client.list_logs().await?.len(), 1);
        assert_eq!(client.describe_log("a").await?, partitions);
        drop(client);
        let seen = server.await?;
        assert_eq!(
            seen.iter().map(Request::kind).collect::<Vec<_>>(),
            vec![
                RequestKind::PublishBatch,
                RequestKind::PublishRecords,
                RequestKind::ReadRange,
                RequestKind::ListLogs,
                RequestKind::DescribeLog
            ]
        );
        assert_eq!(
            seen[2],
            Request::ReadRange {
                log: "a".into(),
                partition: 2,
                offset: 8,
                max_bytes: 1024
            }
        );
        Ok(())
    }

    #[tokio::test]
    async fn server_errors_keep_the_connection() -> TestResult {
        let (addr, _server) = fake_server(vec![
            Reply::With(Response::RogError {
                message: messages::unknown_log("nope"),
            }),
            Reply::With(Response::Error {
                code: ErrorCode::PartitionOutOfRange.as_u16(),
                message: messages::partition_out_of_range(9, "a", 1),
            }),
            Reply::With(Response::Error {
                code: 4242,
                message: "from the future".into(),
            }),
            Reply::With(Response::Logs { logs: vec![] }),
        ])
        .await?;
        let mut client = Client::connect(addr).await?;
        let e = client
            .publish("nope", 0, "x")
            .await
            .err()
            .ok_or("no error")?;
        assert_eq!(e.code(), Some(ErrorCode::UnknownLog));
        assert_eq!(e.to_string(), "No log registered with name nope");
        let e = client
            .read_range("a", 9, 0, 1)
            .await
            .err()
            .ok_or("no error")?;
        assert_eq!(e.code(), Some(ErrorCode::PartitionOutOfRange));
        assert!(matches!(e, ClientError::Server { code: Some(4), .. }));
        let e = client.list_logs().await.err().ok_or("no error")?;
        assert!(matches!(
            e,
            ClientError::Server {
                code: Some(4242),
                ..
            }
        ));
        assert_eq!(e.code(), None);
        assert!(client.list_logs().await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn split_responses_are_reassembled() -> TestResult {
        let fetched = Response::Fetched {
            data: Bytes::from_static(b"hello world"),
        };
        let (addr, _server) = fake_server(vec![
            Reply::Trickle(encoded(&fetched)),
            Reply::Trickle(encoded(&Response::Success)),
        ])
        .await?;
        let mut client = Client::connect(addr).await?;
        assert_eq!(
            client.fetch("a", 0, "g").await?.as_deref(),
            Some(&b"hello world"[..])
        );
        client.ack("a", 0, "g").await?;
        Ok(())
    }

    #[tokio::test]
    async fn garbage_is_an_error_and_breaks_the_connection() -> TestResult {
        let (addr, _server) = fake_server(vec![Reply::Raw(vec![7, 7, 7])]).await?;
        let mut client = Client::connect(addr).await?;
        let e = client.publish("a", 0, "x").await.err().ok_or("no error")?;
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
        assert!(!e.keeps_connection());
        assert!(matches!(
            client.publish("a", 0, "x").await,
            Err(ClientError::Broken)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn hostile_lengths_are_refused_without_waiting() -> TestResult {
        // A fetch answer declaring a u64::MAX payload must fail at once, not allocate.
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        let (addr, _server) = fake_server(vec![Reply::Raw(bytes)]).await?;
        let mut client = Client::connect(addr).await?;
        let e = client.fetch("a", 0, "g").await.err().ok_or("no error")?;
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
        Ok(())
    }

    #[tokio::test]
    async fn trailing_bytes_break_the_connection() -> TestResult {
        let (addr, _server) = fake_server(vec![Reply::Raw(vec![0, 0])]).await?;
        let mut client = Client::connect(addr).await?;
        // One write of two bytes arrives in one read on loopback.
        let e = client.ack("a", 0, "g").await.err().ok_or("no error")?;
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
        assert!(matches!(
            client.ack("a", 0, "g").await,
            Err(ClientError::Broken)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn hangup_midway_is_closed() -> TestResult {
        let (addr, _server) = fake_server(vec![Reply::Hangup]).await?;
        let mut client = Client::connect(addr).await?;
        let e = client.list_logs().await.err().ok_or("no error")?;
        assert!(
            matches!(e, ClientError::Closed | ClientError::Io(_)),
            "{e:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn corrupt_batches_are_rejected() -> TestResult {
        let mut blob = batch(&["x"]).into_vec();
        if let Some(last) = blob.last_mut() {
            *last ^= 0xFF;
        }
        let mut short = batch(&["y"]).into_vec();
        short.truncate(short.len() - 1);
        let (addr, _server) = fake_server(vec![
            Reply::With(Response::Range {
                earliest_offset: 0,
                next_offset: 1,
                batches: Bytes::from(blob),
            }),
            Reply::With(Response::Range {
                earliest_offset: 0,
                next_offset: 1,
                batches: Bytes::from(short),
            }),
        ])
        .await?;
        let mut client = Client::connect(addr).await?;
        for _ in 0..2 {
            let e = client
                .read_range("a", 0, 0, 1)
                .await
                .err()
                .ok_or("no error")?;
            assert!(matches!(e, ClientError::InvalidBatch(_)), "{e:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_locally() -> TestResult {
        let (addr, server) = fake_server(vec![Reply::With(Response::Success)]).await?;
        let limits = Limits {
            max_record_size: 4,
            max_batch_size: 6,
            ..Limits::default()
        };
        let mut client = Client::connect(addr).await?.with_limits(limits);
        assert!(matches!(
            client.publish("a", 0, "12345").await,
            Err(ClientError::TooLarge { what: "record", .. })
        ));
        assert!(matches!(
            client.publish_records("a", 0, ["1234", "1234"]).await,
            Err(ClientError::TooLarge { .. })
        ));
        assert!(matches!(
            client.create_log(&"n".repeat(300), 1).await,
            Err(ClientError::Request(_))
        ));
        client.publish("a", 0, "1234").await?;
        drop(client);
        assert_eq!(server.await?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn silence_times_out_and_breaks() -> TestResult {
        let (addr, _server) = fake_server(vec![Reply::Silence]).await?;
        let mut client = Client::connect(addr)
            .await?
            .with_timeout(Some(Duration::from_millis(50)));
        assert!(matches!(
            client.list_logs().await,
            Err(ClientError::Timeout(_))
        ));
        assert!(matches!(client.list_logs().await, Err(ClientError::Broken)));
        Ok(())
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        let e = Client::connect(addr).await.err().ok_or("no error")?;
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        Ok(())
    }
}
