//! Codec errors.

use crate::code::ErrorCode;

/// A frame could not be decoded or encoded.
///
/// "Not enough bytes yet" is deliberately *not* an error: decoders report it as
/// `Ok(None)`. Every variant here means the byte stream is unusable from this
/// point, because without a trustworthy length the next frame boundary is
/// unknown; a server answers with an error response and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The bytes do not follow the frame layout; the reason says which rule broke.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A name or message field is not valid UTF-8.
    #[error("malformed frame: {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field, e.g. `"log name"`.
        field: &'static str,
    },
    /// The first byte of a request is not a known command.
    #[error("unknown command byte 0x{0:02x}")]
    UnknownCommand(u8),
    /// A Chariots record frame carries an unknown type byte.
    #[error("unknown Chariots frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A frame declares a length above [`Limits::max_frame_size`](crate::Limits::max_frame_size).
    #[error("frame of {declared} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length the frame declared.
        declared: u64,
        /// The configured limit.
        max: u64,
    },
    /// A record batch (or the values of a publish-records request) exceeds
    /// [`Limits::max_batch_size`](crate::Limits::max_batch_size).
    #[error("batch of {declared} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The length the frame declared.
        declared: u64,
        /// The configured limit.
        max: u64,
    },
    /// A single record exceeds [`Limits::max_record_size`](crate::Limits::max_record_size).
    #[error("record of {declared} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The length the frame declared.
        declared: u64,
        /// The configured limit.
        max: u64,
    },
    /// A request carries more records than
    /// [`MAX_RECORDS_PER_REQUEST`](crate::MAX_RECORDS_PER_REQUEST).
    #[error("{count} records in one request exceed the limit of {max}")]
    TooManyRecords {
        /// The count the frame declared.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// Encoding only: a value is longer than its length field can express
    /// (e.g. a log name over 255 bytes). Nothing was written.
    #[error("{field} is {len} bytes, more than its length field allows ({max})")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its actual length.
        len: usize,
        /// The largest length the wire format can carry.
        max: u64,
    },
}

impl ProtoError {
    /// The wire error code a server sends when this error ends a connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::Malformed(_)
            | ProtoError::InvalidUtf8 { .. }
            | ProtoError::UnknownFrameType(_)
            | ProtoError::FieldTooLong { .. } => ErrorCode::MalformedFrame,
            ProtoError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            ProtoError::FrameTooLarge { .. }
            | ProtoError::BatchTooLarge { .. }
            | ProtoError::TooManyRecords { .. } => ErrorCode::FrameTooLarge,
            ProtoError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
        }
    }
}
