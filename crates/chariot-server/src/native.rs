//! The native TCP protocol: Rog's commands byte for byte, plus Chariot's extensions.
//!
//! A `Protocol` for `framed`: the codec is `chariot-proto`'s, the dispatch
//! calls the broker. A connection may carry one request (Rog's clients) or many,
//! pipelined. A frame the decoder rejects gets an error response in its command's error
//! form, and the connection is closed.

use std::sync::Arc;

use bytes::BytesMut;
use chariot_broker::{Acks, Broker, BrokerError, NewRecord};
use chariot_proto::{GroupOffset, Limits, LogInfo, PartitionInfo, Request, RequestKind, Response};

use crate::error_codes::wire_code;
use crate::framed::Protocol;

/// The native protocol over one broker.
pub struct Native {
    broker: Arc<Broker>,
    limits: Limits,
}

impl Native {
    /// Serves `broker` with the frame limits `limits`.
    pub fn new(broker: Arc<Broker>, limits: Limits) -> Self {
        Self { broker, limits }
    }
}

impl Protocol for Native {
    type Frame = Request;

    fn decode(&self, inbox: &mut BytesMut) -> Result<Option<Request>, BytesMut> {
        Request::decode(inbox, &self.limits).map_err(|e| {
            let kind = inbox.first().copied().and_then(RequestKind::from_command);
            tracing::debug!(error = %e, "malformed frame");
            let mut out = BytesMut::new();
            encode(&Response::error(kind, e.code(), e.to_string()), &mut out);
            out
        })
    }

    async fn answer(&self, request: Request, outbox: &mut BytesMut) {
        let response = dispatch(&self.broker, request).await;
        encode(&response, outbox);
    }

    const KEEPS_READING_UNANSWERED: bool = false;
}

fn encode(response: &Response, out: &mut BytesMut) {
    if let Err(e) = response.encode(out) {
        // Only oversized fields can fail to encode; answer with a coded error instead.
        tracing::error!(error = %e, "cannot encode a response");
        let fallback = Response::error(None, e.code(), e.to_string());
        let _ = fallback.encode(out);
    }
}

/// The acks of a `0x16` or `0x18` request (the codec admits only the two values).
fn acks_of(byte: u8) -> Acks {
    if byte == chariot_proto::ACKS_ALL {
        Acks::All
    } else {
        Acks::Quorum
    }
}

fn err(kind: RequestKind, e: &BrokerError) -> Response {
    Response::error(Some(kind), wire_code(e), e.to_string())
}

async fn dispatch(broker: &Arc<Broker>, request: Request) -> Response {
    let kind = request.kind();
    let result = match request {
        Request::CreateLog { log, partitions } => broker
            .create_log(&log, u32::from(partitions))
            .await
            .map(|()| Response::Success),
        Request::CreateLogExt { log, partitions } => broker
            .create_log(&log, partitions)
            .await
            .map(|()| Response::LogCreated { partitions }),
        Request::Publish {
            log,
            partition,
            data,
        } => broker
            .publish(&log, u32::from(partition), vec![NewRecord::value(data)])
            .await
            .map(|_| Response::Success),
        Request::Fetch {
            log,
            partition,
            group,
        } => crate::off_thread(broker, move |b| b.fetch(&log, u32::from(partition), &group))
            .await
            .map(|r| Response::Fetched {
                data: r.value.into(),
            }),
        Request::Ack {
            log,
            partition,
            group,
        } => broker
            .ack(&log, u32::from(partition), &group)
            .await
            .map(|_| Response::Success),
        Request::AckTo {
            log,
            partition,
            group,
            offset,
        } => broker
            .ack_to(&log, partition, &group, offset)
            .await
            .map(|offset| Response::GroupOffset { offset }),
        Request::PublishBatch {
            log,
            partition,
            batch,
        } => broker
            .publish_batch(&log, partition, batch.to_vec())
            .await
            .map(|a| Response::BatchPublished {
                base_offset: a.base_offset,
                record_count: a.count,
            }),
        Request::PublishRecords {
            log,
            partition,
            records,
        } => publish_records(broker, &log, partition, records, Acks::Quorum).await,
        Request::PublishRecordsAcks {
            acks,
            log,
            partition,
            records,
        } => publish_records(broker, &log, partition, records, acks_of(acks)).await,
        Request::PublishBatchAcks {
            acks,
            log,
            partition,
            batch,
        } => broker
            .publish_batch_acks(&log, partition, batch.to_vec(), acks_of(acks))
            .await
            .map(|a| Response::BatchPublished {
                base_offset: a.base_offset,
                record_count: a.count,
            }),
        Request::ReadRange {
            log,
            partition,
            offset,
            max_bytes,
        } => crate::off_thread(broker, move |b| {
            b.read_range(&log, partition, offset, max_bytes as usize)
        })
        .await
        .map(|r| Response::Range {
            earliest_offset: r.earliest_offset,
            next_offset: r.next_offset,
            batches: r.batches.into(),
        }),
        Request::ListLogs => Ok(Response::Logs {
            logs: broker
                .list_logs()
                .into_iter()
                .map(|l| LogInfo {
                    name: l.name,
                    partitions: l.partitions,
                })
                .collect(),
        }),
        Request::DescribeLog { log } => {
            broker.describe_log(&log).map(|d| Response::LogDescription {
                partitions: d
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        earliest_offset: p.earliest_offset,
                        next_offset: p.next_offset,
                        groups: p
                            .groups
                            .into_iter()
                            .map(|g| GroupOffset {
                                group: g.group,
                                committed_offset: g.offset,
                            })
                            .collect(),
                    })
                    .collect(),
            })
        }
    };
    result.unwrap_or_else(|e| err(kind, &e))
}

/// Publish records (`0x11`, and `0x16` with its acks): one batch stamped now.
async fn publish_records(
    broker: &Broker,
    log: &str,
    partition: u32,
    records: Vec<bytes::Bytes>,
    acks: Acks,
) -> Result<Response, BrokerError> {
    let now = chariot_broker::now_ms();
    let records = records
        .into_iter()
        .map(|value| NewRecord {
            value,
            timestamp: now,
            ..NewRecord::default()
        })
        .collect();
    broker
        .publish_acks(log, partition, records, acks)
        .await
        .map(|a| Response::RecordsPublished {
            base_offset: a.base_offset,
        })
}
