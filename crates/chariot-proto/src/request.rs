//! Requests: Rog's commands 0–3 and Chariot's extension commands.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtoError;
use crate::limits::Limits;
use crate::wire::{
    encode_atomically, len32, put_bytes32, put_bytes64, put_frame, put_string8, settle, take_frame,
    Parse, Reader, Span, Width,
};

/// Which command a request is; its discriminant is the command byte.
///
/// A client needs this to decode the response, because Rog's success byte does
/// not say what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RequestKind {
    /// Rog: create a log.
    CreateLog = 0x00,
    /// Rog: append one record.
    Publish = 0x01,
    /// Rog: read the next record for a consumer group.
    Fetch = 0x02,
    /// Rog: acknowledge the fetched record for a consumer group.
    Ack = 0x03,
    /// Extension: append an encoded record batch.
    PublishBatch = 0x10,
    /// Extension: append a list of record values.
    PublishRecords = 0x11,
    /// Extension: read whole record batches from an offset.
    ReadRange = 0x12,
    /// Extension: list all logs.
    ListLogs = 0x13,
    /// Extension: offsets and consumer groups of one log.
    DescribeLog = 0x14,
    /// Extension: create a log, with a 32-bit partition count.
    CreateLogExt = 0x15,
    /// Extension: append a list of record values, acknowledged once the copies the
    /// request asks for hold them.
    PublishRecordsAcks = 0x16,
    /// Extension: move a consumer group to an offset, idempotently (never back).
    AckTo = 0x17,
    /// Extension: append an encoded record batch, acknowledged once the copies the
    /// request asks for hold it.
    PublishBatchAcks = 0x18,
}

/// Command bytes from here up are extensions; everything below is Rog's space,
/// kept free so a future Rog command cannot collide with ours.
pub(crate) const FIRST_EXTENSION_COMMAND: u8 = 0x10;

impl RequestKind {
    /// Every kind, in command-byte order.
    pub const ALL: [RequestKind; 13] = [
        RequestKind::CreateLog,
        RequestKind::Publish,
        RequestKind::Fetch,
        RequestKind::Ack,
        RequestKind::PublishBatch,
        RequestKind::PublishRecords,
        RequestKind::ReadRange,
        RequestKind::ListLogs,
        RequestKind::DescribeLog,
        RequestKind::CreateLogExt,
        RequestKind::PublishRecordsAcks,
        RequestKind::AckTo,
        RequestKind::PublishBatchAcks,
    ];

    /// The command byte that starts requests of this kind.
    pub const fn command(self) -> u8 {
        self as u8
    }

    /// The kind for a command byte, if it is one this crate knows.
    pub const fn from_command(byte: u8) -> Option<RequestKind> {
        Some(match byte {
            0x00 => RequestKind::CreateLog,
            0x01 => RequestKind::Publish,
            0x02 => RequestKind::Fetch,
            0x03 => RequestKind::Ack,
            0x10 => RequestKind::PublishBatch,
            0x11 => RequestKind::PublishRecords,
            0x12 => RequestKind::ReadRange,
            0x13 => RequestKind::ListLogs,
            0x14 => RequestKind::DescribeLog,
            0x15 => RequestKind::CreateLogExt,
            0x16 => RequestKind::PublishRecordsAcks,
            0x17 => RequestKind::AckTo,
            0x18 => RequestKind::PublishBatchAcks,
            _ => return None,
        })
    }

    /// Whether this is a Chariot extension (length-prefixed frame, coded errors)
    /// rather than one of Rog's original commands.
    pub const fn is_extension(self) -> bool {
        self.command() >= FIRST_EXTENSION_COMMAND
    }
}

/// A decoded request.
///
/// Log and group names are at most 255 bytes of UTF-8 (their length is one
/// byte on the wire); the codec does not judge their content, the server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Rog `0x00`: create `log` with `partitions` partitions (zero is
    /// representable; the server rejects it).
    CreateLog {
        /// Log name.
        log: String,
        /// Number of partitions.
        partitions: u8,
    },
    /// Rog `0x01`: append `data` as one record.
    Publish {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u8,
        /// The record value.
        data: Bytes,
    },
    /// Rog `0x02`: read the record at `group`'s position.
    Fetch {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u8,
        /// Consumer group.
        group: String,
    },
    /// Rog `0x03`: advance `group`'s position past the fetched record.
    Ack {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u8,
        /// Consumer group.
        group: String,
    },
    /// Extension `0x10`: append a record batch encoded by the client.
    ///
    /// The batch is opaque here: the storage engine validates it, so one
    /// layout travels from the wire to the disk without re-encoding.
    PublishBatch {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// The encoded record batch.
        batch: Bytes,
    },
    /// Extension `0x11`: append record values, for clients that do not build
    /// batches themselves.
    PublishRecords {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// The record values, in order.
        records: Vec<Bytes>,
    },
    /// Extension `0x16`: [`Request::PublishRecords`] with the copies that must hold
    /// the records before the answer: [`ACKS_QUORUM`] or [`ACKS_ALL`].
    PublishRecordsAcks {
        /// How many copies must hold the records.
        acks: u8,
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// The record values, in order.
        records: Vec<Bytes>,
    },
    /// Extension `0x12`: read whole record batches starting at `offset`.
    ReadRange {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// First offset wanted.
        offset: u64,
        /// Soft cap on the returned bytes (at least one batch is returned).
        max_bytes: u32,
    },
    /// Extension `0x13`: list every log.
    ListLogs,
    /// Extension `0x14`: describe one log's partitions and consumer groups.
    DescribeLog {
        /// Log name.
        log: String,
    },
    /// Extension `0x15`: create `log` with `partitions` partitions; Rog's create carries
    /// the count in one byte, this one in four (the server allows 1 to 1024).
    CreateLogExt {
        /// Log name.
        log: String,
        /// Number of partitions.
        partitions: u32,
    },
    /// Extension `0x18`: [`Request::PublishBatch`] with the copies that must hold the
    /// batch before the answer: [`ACKS_QUORUM`] or [`ACKS_ALL`].
    PublishBatchAcks {
        /// How many copies must hold the batch.
        acks: u8,
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// The encoded batch, opaque to the protocol layer.
        batch: Bytes,
    },
    /// Extension `0x17`: `group` has consumed every record below `offset` (its
    /// committed offset becomes `max(committed, offset)`: a retry changes nothing).
    AckTo {
        /// Log name.
        log: String,
        /// Partition index.
        partition: u32,
        /// Consumer group.
        group: String,
        /// The offset of the next record the group wants.
        offset: u64,
    },
}

/// `acks` of [`Request::PublishRecordsAcks`]: a quorum of the partition's replicas (on
/// a single node, the node), durably.
pub const ACKS_QUORUM: u8 = 0;
/// `acks` of [`Request::PublishRecordsAcks`]: every replica, durably.
pub const ACKS_ALL: u8 = 1;

/// A parsed request whose payloads are still positions in the input buffer.
enum Draft {
    Ready(Request),
    Publish {
        log: String,
        partition: u8,
        data: Span,
    },
    PublishBatch {
        acks: Option<u8>,
        log: String,
        partition: u32,
        batch: Span,
    },
    PublishRecords {
        acks: Option<u8>,
        log: String,
        partition: u32,
        records: Vec<Span>,
    },
}

impl Draft {
    fn finish(self, frame: &Bytes) -> Result<Request, ProtoError> {
        Ok(match self {
            Draft::Ready(request) => request,
            Draft::Publish {
                log,
                partition,
                data,
            } => Request::Publish {
                log,
                partition,
                data: data.cut(frame)?,
            },
            Draft::PublishBatch {
                acks,
                log,
                partition,
                batch,
            } => {
                let batch = batch.cut(frame)?;
                match acks {
                    None => Request::PublishBatch {
                        log,
                        partition,
                        batch,
                    },
                    Some(acks) => Request::PublishBatchAcks {
                        acks,
                        log,
                        partition,
                        batch,
                    },
                }
            }
            Draft::PublishRecords {
                acks,
                log,
                partition,
                records,
            } => {
                let records = records
                    .into_iter()
                    .map(|span| span.cut(frame))
                    .collect::<Result<_, _>>()?;
                match acks {
                    None => Request::PublishRecords {
                        log,
                        partition,
                        records,
                    },
                    Some(acks) => Request::PublishRecordsAcks {
                        acks,
                        log,
                        partition,
                        records,
                    },
                }
            }
        })
    }
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::CreateLog { .. } => RequestKind::CreateLog,
            Request::Publish { .. } => RequestKind::Publish,
            Request::Fetch { .. } => RequestKind::Fetch,
            Request::Ack { .. } => RequestKind::Ack,
            Request::PublishBatch { .. } => RequestKind::PublishBatch,
            Request::PublishBatchAcks { .. } => RequestKind::PublishBatchAcks,
            Request::PublishRecords { .. } => RequestKind::PublishRecords,
            Request::PublishRecordsAcks { .. } => RequestKind::PublishRecordsAcks,
            Request::ReadRange { .. } => RequestKind::ReadRange,
            Request::ListLogs => RequestKind::ListLogs,
            Request::DescribeLog { .. } => RequestKind::DescribeLog,
            Request::CreateLogExt { .. } => RequestKind::CreateLogExt,
            Request::AckTo { .. } => RequestKind::AckTo,
        }
    }

    /// Decodes the request at the front of `buf`.
    ///
    /// - `Ok(Some(request))`: exactly that request's bytes were removed from
    ///   `buf`; anything after it (pipelined requests) is left in place.
    /// - `Ok(None)`: `buf` holds only part of a request; nothing was consumed.
    ///   Read more bytes and call again.
    /// - `Err(_)`: the bytes are not a valid request; nothing was consumed.
    ///   The stream cannot be resynchronised, so answer and close.
    ///
    /// Payloads in the result are zero-copy slices of `buf`'s memory.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtoError> {
        let mut reader = Reader::new(buf);
        let Some(draft) = settle(parse(&mut reader, limits))? else {
            return Ok(None);
        };
        let Some(frame) = take_frame(buf, reader.position()) else {
            return Ok(None);
        };
        draft.finish(&frame).map(Some)
    }

    /// Appends the request's wire form to `dst`.
    ///
    /// Fails only if a field is too long for its length prefix (e.g. a name
    /// over 255 bytes), in which case `dst` is left as it was. Size limits are
    /// the receiver's to enforce and are not checked here.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_atomically(dst, |dst| self.write(dst))
    }

    fn write(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        dst.put_u8(self.kind().command());
        match self {
            Request::CreateLog { log, partitions } => {
                dst.put_u8(*partitions);
                put_string8(dst, "log name", log)
            }
            Request::Publish {
                log,
                partition,
                data,
            } => {
                dst.put_u8(*partition);
                put_string8(dst, "log name", log)?;
                put_bytes64(dst, data);
                Ok(())
            }
            Request::Fetch {
                log,
                partition,
                group,
            }
            | Request::Ack {
                log,
                partition,
                group,
            } => {
                dst.put_u8(*partition);
                put_string8(dst, "log name", log)?;
                put_string8(dst, "group name", group)
            }
            Request::PublishBatch {
                log,
                partition,
                batch,
            } => put_frame(dst, Width::U32, |dst| {
                put_string8(dst, "log name", log)?;
                dst.put_u32(*partition);
                put_bytes32(dst, "record batch", batch)
            }),
            Request::PublishBatchAcks {
                acks,
                log,
                partition,
                batch,
            } => put_frame(dst, Width::U32, |dst| {
                dst.put_u8(*acks);
                put_string8(dst, "log name", log)?;
                dst.put_u32(*partition);
                put_bytes32(dst, "record batch", batch)
            }),
            Request::PublishRecords {
                log,
                partition,
                records,
            } => put_frame(dst, Width::U32, |dst| {
                put_records(dst, log, *partition, records)
            }),
            Request::PublishRecordsAcks {
                acks,
                log,
                partition,
                records,
            } => put_frame(dst, Width::U32, |dst| {
                dst.put_u8(*acks);
                put_records(dst, log, *partition, records)
            }),
            Request::ReadRange {
                log,
                partition,
                offset,
                max_bytes,
            } => put_frame(dst, Width::U32, |dst| {
                put_string8(dst, "log name", log)?;
                dst.put_u32(*partition);
                dst.put_u64(*offset);
                dst.put_u32(*max_bytes);
                Ok(())
            }),
            Request::ListLogs => put_frame(dst, Width::U32, |_| Ok(())),
            Request::DescribeLog { log } => {
                put_frame(dst, Width::U32, |dst| put_string8(dst, "log name", log))
            }
            Request::CreateLogExt { log, partitions } => put_frame(dst, Width::U32, |dst| {
                put_string8(dst, "log name", log)?;
                dst.put_u32(*partitions);
                Ok(())
            }),
            Request::AckTo {
                log,
                partition,
                group,
                offset,
            } => put_frame(dst, Width::U32, |dst| {
                put_string8(dst, "log name", log)?;
                dst.put_u32(*partition);
                put_string8(dst, "group name", group)?;
                dst.put_u64(*offset);
                Ok(())
            }),
        }
    }
}

/// The body of publish records (`0x11`), also the tail of `0x16`'s.
fn put_records(
    dst: &mut BytesMut,
    log: &str,
    partition: u32,
    records: &[Bytes],
) -> Result<(), ProtoError> {
    put_string8(dst, "log name", log)?;
    dst.put_u32(partition);
    dst.put_u32(len32("record count", records.len())?);
    records
        .iter()
        .try_for_each(|record| put_bytes32(dst, "record", record))
}

fn parse(r: &mut Reader<'_>, limits: &Limits) -> Parse<Draft> {
    let command = r.u8()?;
    let kind = RequestKind::from_command(command).ok_or(ProtoError::UnknownCommand(command))?;
    let draft = match kind {
        RequestKind::CreateLog => {
            let partitions = r.u8()?;
            let log = r.string8("log name")?;
            Draft::Ready(Request::CreateLog { log, partitions })
        }
        RequestKind::Publish => {
            let partition = r.u8()?;
            let log = r.string8("log name")?;
            let len = limits.check_record(r.u64()?)?;
            let data = r.span(len)?;
            Draft::Publish {
                log,
                partition,
                data,
            }
        }
        RequestKind::Fetch | RequestKind::Ack => {
            let partition = r.u8()?;
            let log = r.string8("log name")?;
            // Rog's README documents a u64 group length, but its clients send
            // one byte; being compatible means matching the clients.
            let group = r.string8("group name")?;
            Draft::Ready(if kind == RequestKind::Fetch {
                Request::Fetch {
                    log,
                    partition,
                    group,
                }
            } else {
                Request::Ack {
                    log,
                    partition,
                    group,
                }
            })
        }
        RequestKind::PublishBatch | RequestKind::PublishBatchAcks => {
            open_frame(r, limits)?;
            let acks = if kind == RequestKind::PublishBatchAcks {
                Some(acks_byte(r)?)
            } else {
                None
            };
            let log = r.string8("log name")?;
            let partition = r.u32()?;
            let len = limits.check_batch(u64::from(r.u32()?))?;
            let batch = r.span(len)?;
            Draft::PublishBatch {
                acks,
                log,
                partition,
                batch,
            }
        }
        RequestKind::PublishRecords | RequestKind::PublishRecordsAcks => {
            open_frame(r, limits)?;
            let acks = if kind == RequestKind::PublishRecordsAcks {
                Some(acks_byte(r)?)
            } else {
                None
            };
            let log = r.string8("log name")?;
            let partition = r.u32()?;
            // Each record costs at least its 4-byte length.
            let count = r.count(4)?;
            if count > crate::limits::MAX_RECORDS_PER_REQUEST {
                return Err(ProtoError::TooManyRecords {
                    count: crate::limits::widen(count),
                    max: crate::limits::MAX_RECORDS_PER_REQUEST,
                }
                .into());
            }
            let mut records = Vec::with_capacity(count);
            let mut total: u64 = 0;
            for _ in 0..count {
                let declared = u64::from(r.u32()?);
                let len = limits.check_record(declared)?;
                total = total.saturating_add(declared);
                limits.check_batch(total)?;
                records.push(r.span(len)?);
            }
            Draft::PublishRecords {
                acks,
                log,
                partition,
                records,
            }
        }
        RequestKind::ReadRange => {
            open_frame(r, limits)?;
            let log = r.string8("log name")?;
            let partition = r.u32()?;
            let offset = r.u64()?;
            let max_bytes = r.u32()?;
            Draft::Ready(Request::ReadRange {
                log,
                partition,
                offset,
                max_bytes,
            })
        }
        RequestKind::ListLogs => {
            open_frame(r, limits)?;
            Draft::Ready(Request::ListLogs)
        }
        RequestKind::DescribeLog => {
            open_frame(r, limits)?;
            let log = r.string8("log name")?;
            Draft::Ready(Request::DescribeLog { log })
        }
        RequestKind::CreateLogExt => {
            open_frame(r, limits)?;
            let log = r.string8("log name")?;
            let partitions = r.u32()?;
            Draft::Ready(Request::CreateLogExt { log, partitions })
        }
        RequestKind::AckTo => {
            open_frame(r, limits)?;
            let log = r.string8("log name")?;
            let partition = r.u32()?;
            let group = r.string8("group name")?;
            let offset = r.u64()?;
            Draft::Ready(Request::AckTo {
                log,
                partition,
                group,
                offset,
            })
        }
    };
    // For extensions this rejects a declared body longer than its fields; for
    // Rog commands (no declared length) it is a no-op.
    r.finish()?;
    Ok(draft)
}

/// The `acks` byte of `0x16` and `0x18`.
fn acks_byte(r: &mut Reader<'_>) -> Parse<u8> {
    match r.u8()? {
        a @ (ACKS_QUORUM | ACKS_ALL) => Ok(a),
        _ => Err(ProtoError::Malformed("acks must be 0 (quorum) or 1 (all)").into()),
    }
}

/// Reads an extension request's body length and bounds everything after it.
fn open_frame(r: &mut Reader<'_>, limits: &Limits) -> Parse<()> {
    let body_len = limits.check_frame(u64::from(r.u32()?))?;
    r.enter(body_len)
}
