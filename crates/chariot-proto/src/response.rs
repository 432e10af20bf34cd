//! Responses, in the two forms the protocol uses: Rog's (bare status byte,
//! uncoded error text) for commands 0–3 and the length-prefixed, coded form for
//! extensions.

use bytes::{BufMut, Bytes, BytesMut};

use crate::code::ErrorCode;
use crate::error::ProtoError;
use crate::limits::Limits;
use crate::request::RequestKind;
use crate::wire::{
    encode_atomically, len32, put_bytes32, put_bytes64, put_frame, put_string8, settle, take_frame,
    Parse, Reader, Span, Width,
};

/// First byte of every successful response.
const STATUS_OK: u8 = 0x00;
/// First byte of every error response.
const STATUS_ERROR: u8 = 0x01;

/// One entry of a [`Response::Logs`] listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// Log name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
}

/// One partition of a [`Response::LogDescription`]; its index is its position
/// in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Offset of the oldest record still stored.
    pub earliest_offset: u64,
    /// Offset the next appended record will get (latest + 1); equal to
    /// `earliest_offset` when the partition is empty.
    pub next_offset: u64,
    /// Consumer groups that have a position in this partition.
    pub groups: Vec<GroupOffset>,
}

/// A consumer group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// Group name.
    pub group: String,
    /// The committed offset: the next offset the group will read.
    pub committed_offset: u64,
}

/// A response to one request.
///
/// Responses carry no request identifier: the server answers requests in the
/// order it received them, and the client matches them up by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Rog success for create-log, publish and ack: the single byte `0x00`.
    Success,
    /// Rog fetch success: the record value.
    Fetched {
        /// The record value.
        data: Bytes,
    },
    /// Rog error (commands 0–3): Rog clients compare `message` verbatim, so
    /// build it with [`crate::messages`].
    RogError {
        /// Human-readable reason.
        message: String,
    },
    /// Publish-batch success.
    BatchPublished {
        /// Offset assigned to the batch's first record.
        base_offset: u64,
        /// Number of records appended.
        record_count: u32,
    },
    /// Publish-records success.
    RecordsPublished {
        /// Offset assigned to the first record; the rest follow consecutively.
        base_offset: u64,
    },
    /// Read-range success.
    Range {
        /// Offset of the oldest record still stored.
        earliest_offset: u64,
        /// Offset the next appended record will get (latest + 1).
        next_offset: u64,
        /// Whole record batches, concatenated; empty at the end of the log.
        batches: Bytes,
    },
    /// List-logs success.
    Logs {
        /// Every log, in the server's order.
        logs: Vec<LogInfo>,
    },
    /// Describe-log success.
    LogDescription {
        /// One entry per partition, in partition order.
        partitions: Vec<PartitionInfo>,
    },
    /// Create-log (extension) success: the log exists with this many partitions.
    LogCreated {
        /// Its partition count.
        partitions: u32,
    },
    /// Ack-to success: the group's committed offset now.
    GroupOffset {
        /// The offset of the next record the group gets.
        offset: u64,
    },
    /// Extension error.
    Error {
        /// Wire error code. Kept raw so that a code added by a newer server
        /// still decodes; interpret it with [`ErrorCode::from_u16`] or
        /// [`Response::error_code`].
        code: u16,
        /// Human-readable reason.
        message: String,
    },
}

/// A parsed response whose payloads are still positions in the input buffer.
enum Draft {
    Ready(Response),
    Fetched {
        data: Span,
    },
    Range {
        earliest_offset: u64,
        next_offset: u64,
        batches: Span,
    },
}

impl Draft {
    fn finish(self, frame: &Bytes) -> Result<Response, ProtoError> {
        Ok(match self {
            Draft::Ready(response) => response,
            Draft::Fetched { data } => Response::Fetched {
                data: data.cut(frame)?,
            },
            Draft::Range {
                earliest_offset,
                next_offset,
                batches,
            } => Response::Range {
                earliest_offset,
                next_offset,
                batches: batches.cut(frame)?,
            },
        })
    }
}

impl Response {
    /// The error response for a failed request, in the form its client expects.
    ///
    /// Rog commands get Rog's uncoded form, so `message` must be the exact text
    /// Rog clients look for (see [`crate::messages`]). Extensions get the coded
    /// form. `kind` is `None` when the command byte was not recognised: only
    /// non-Rog clients send those, so they get the coded form.
    pub fn error(kind: Option<RequestKind>, code: ErrorCode, message: impl Into<String>) -> Self {
        match kind {
            Some(kind) if !kind.is_extension() => Response::RogError {
                message: message.into(),
            },
            _ => Response::Error {
                code: code.as_u16(),
                message: message.into(),
            },
        }
    }

    /// Whether this is an error response of either form.
    pub fn is_error(&self) -> bool {
        matches!(self, Response::RogError { .. } | Response::Error { .. })
    }

    /// The code of an extension error, if this is one and the code is known.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Response::Error { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }

    /// Whether this response is a valid answer to a request of `kind`, i.e.
    /// whether a client expecting `kind` could decode it.
    pub fn answers(&self, kind: RequestKind) -> bool {
        match self {
            Response::Success => matches!(
                kind,
                RequestKind::CreateLog | RequestKind::Publish | RequestKind::Ack
            ),
            Response::Fetched { .. } => kind == RequestKind::Fetch,
            Response::RogError { .. } => !kind.is_extension(),
            Response::BatchPublished { .. } => {
                kind == RequestKind::PublishBatch || kind == RequestKind::PublishBatchAcks
            }
            Response::RecordsPublished { .. } => {
                kind == RequestKind::PublishRecords || kind == RequestKind::PublishRecordsAcks
            }
            Response::Range { .. } => kind == RequestKind::ReadRange,
            Response::Logs { .. } => kind == RequestKind::ListLogs,
            Response::LogDescription { .. } => kind == RequestKind::DescribeLog,
            Response::LogCreated { .. } => kind == RequestKind::CreateLogExt,
            Response::GroupOffset { .. } => kind == RequestKind::AckTo,
            Response::Error { .. } => kind.is_extension(),
        }
    }

    /// Decodes the response to a request of `kind` at the front of `buf`.
    ///
    /// The kind is needed because Rog's success byte does not say what it
    /// answers. Same contract as [`Request::decode`](crate::Request::decode):
    /// `Ok(None)` and `Err` consume nothing; `Ok(Some)` consumes exactly one
    /// response and leaves later bytes in place.
    pub fn decode(
        kind: RequestKind,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Response>, ProtoError> {
        let mut reader = Reader::new(buf);
        let Some(draft) = settle(parse(kind, &mut reader, limits))? else {
            return Ok(None);
        };
        let Some(frame) = take_frame(buf, reader.position()) else {
            return Ok(None);
        };
        draft.finish(&frame).map(Some)
    }

    /// Appends the response's wire form to `dst`.
    ///
    /// Fails only if a field is too long for its length prefix, in which case
    /// `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_atomically(dst, |dst| self.write(dst))
    }

    fn write(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        match self {
            Response::Success => {
                dst.put_u8(STATUS_OK);
                Ok(())
            }
            Response::Fetched { data } => {
                dst.put_u8(STATUS_OK);
                put_bytes64(dst, data);
                Ok(())
            }
            Response::RogError { message } => {
                dst.put_u8(STATUS_ERROR);
                put_bytes64(dst, message.as_bytes());
                Ok(())
            }
            Response::BatchPublished {
                base_offset,
                record_count,
            } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u64(*base_offset);
                    dst.put_u32(*record_count);
                    Ok(())
                })
            }
            Response::RecordsPublished { base_offset } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u64(*base_offset);
                    Ok(())
                })
            }
            Response::LogCreated { partitions } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u32(*partitions);
                    Ok(())
                })
            }
            Response::GroupOffset { offset } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u64(*offset);
                    Ok(())
                })
            }
            Response::Range {
                earliest_offset,
                next_offset,
                batches,
            } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u64(*earliest_offset);
                    dst.put_u64(*next_offset);
                    put_bytes32(dst, "record batches", batches)
                })
            }
            Response::Logs { logs } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u32(len32("log count", logs.len())?);
                    logs.iter().try_for_each(|log| {
                        put_string8(dst, "log name", &log.name)?;
                        dst.put_u32(log.partitions);
                        Ok(())
                    })
                })
            }
            Response::LogDescription { partitions } => {
                dst.put_u8(STATUS_OK);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u32(len32("partition count", partitions.len())?);
                    partitions.iter().try_for_each(|partition| {
                        dst.put_u64(partition.earliest_offset);
                        dst.put_u64(partition.next_offset);
                        dst.put_u32(len32("group count", partition.groups.len())?);
                        partition.groups.iter().try_for_each(|group| {
                            put_string8(dst, "group name", &group.group)?;
                            dst.put_u64(group.committed_offset);
                            Ok(())
                        })
                    })
                })
            }
            Response::Error { code, message } => {
                dst.put_u8(STATUS_ERROR);
                put_frame(dst, Width::U64, |dst| {
                    dst.put_u16(*code);
                    dst.put_slice(message.as_bytes());
                    Ok(())
                })
            }
        }
    }
}

/// Smallest encoded [`LogInfo`]: empty name (1) + partition count (4).
const MIN_LOG_INFO_LEN: usize = 1 + 4;
/// Smallest encoded [`PartitionInfo`]: two offsets (16) + group count (4).
const MIN_PARTITION_INFO_LEN: usize = 8 + 8 + 4;
/// Smallest encoded [`GroupOffset`]: empty name (1) + offset (8).
const MIN_GROUP_OFFSET_LEN: usize = 1 + 8;

fn parse(kind: RequestKind, r: &mut Reader<'_>, limits: &Limits) -> Parse<Draft> {
    let status = r.u8()?;
    let draft = match (status, kind) {
        (STATUS_OK, RequestKind::CreateLog | RequestKind::Publish | RequestKind::Ack) => {
            Draft::Ready(Response::Success)
        }
        (STATUS_OK, RequestKind::Fetch) => {
            let len = limits.check_record(r.u64()?)?;
            Draft::Fetched { data: r.span(len)? }
        }
        (STATUS_OK, RequestKind::PublishBatch | RequestKind::PublishBatchAcks) => {
            open_frame(r, limits)?;
            Draft::Ready(Response::BatchPublished {
                base_offset: r.u64()?,
                record_count: r.u32()?,
            })
        }
        (STATUS_OK, RequestKind::CreateLogExt) => {
            open_frame(r, limits)?;
            Draft::Ready(Response::LogCreated {
                partitions: r.u32()?,
            })
        }
        (STATUS_OK, RequestKind::AckTo) => {
            open_frame(r, limits)?;
            Draft::Ready(Response::GroupOffset { offset: r.u64()? })
        }
        (STATUS_OK, RequestKind::PublishRecords | RequestKind::PublishRecordsAcks) => {
            open_frame(r, limits)?;
            Draft::Ready(Response::RecordsPublished {
                base_offset: r.u64()?,
            })
        }
        (STATUS_OK, RequestKind::ReadRange) => {
            open_frame(r, limits)?;
            let earliest_offset = r.u64()?;
            let next_offset = r.u64()?;
            // The blob is bounded by the frame; it may legitimately exceed
            // max_bytes, because a read returns at least one whole batch.
            let len = usize::try_from(r.u32()?)
                .map_err(|_| ProtoError::Malformed("record batches do not fit in memory"))?;
            Draft::Range {
                earliest_offset,
                next_offset,
                batches: r.span(len)?,
            }
        }
        (STATUS_OK, RequestKind::ListLogs) => {
            open_frame(r, limits)?;
            let count = r.count(MIN_LOG_INFO_LEN)?;
            let mut logs = Vec::with_capacity(count);
            for _ in 0..count {
                let name = r.string8("log name")?;
                let partitions = r.u32()?;
                logs.push(LogInfo { name, partitions });
            }
            Draft::Ready(Response::Logs { logs })
        }
        (STATUS_OK, RequestKind::DescribeLog) => {
            open_frame(r, limits)?;
            let count = r.count(MIN_PARTITION_INFO_LEN)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                let earliest_offset = r.u64()?;
                let next_offset = r.u64()?;
                let group_count = r.count(MIN_GROUP_OFFSET_LEN)?;
                let mut groups = Vec::with_capacity(group_count);
                for _ in 0..group_count {
                    let group = r.string8("group name")?;
                    let committed_offset = r.u64()?;
                    groups.push(GroupOffset {
                        group,
                        committed_offset,
                    });
                }
                partitions.push(PartitionInfo {
                    earliest_offset,
                    next_offset,
                    groups,
                });
            }
            Draft::Ready(Response::LogDescription { partitions })
        }
        (STATUS_ERROR, kind) if !kind.is_extension() => {
            let len = limits.check_frame(r.u64()?)?;
            Draft::Ready(Response::RogError {
                message: r.string(len, "error message")?,
            })
        }
        (STATUS_ERROR, _) => {
            open_frame(r, limits)?;
            let code = r.u16()?;
            let len = r.remaining_in_frame().unwrap_or(0);
            Draft::Ready(Response::Error {
                code,
                message: r.string(len, "error message")?,
            })
        }
        _ => return Err(ProtoError::Malformed("unknown response status byte").into()),
    };
    r.finish()?;
    Ok(draft)
}

/// Reads an extension response's body length and bounds everything after it.
fn open_frame(r: &mut Reader<'_>, limits: &Limits) -> Parse<()> {
    let body_len = limits.check_frame(r.u64()?)?;
    r.enter(body_len)
}
