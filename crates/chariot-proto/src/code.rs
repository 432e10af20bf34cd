//! The wire-stable error codes carried by extension error responses.

use std::fmt;

/// Why an extension request failed, as sent on the wire (a big-endian `u16`).
///
/// The numeric values are part of the protocol: a value, once assigned, keeps
/// its meaning forever and is never reused, even if the variant is retired.
/// `0` is never assigned, so a zeroed field cannot be mistaken for a real code.
/// New codes may appear in later servers, which is why clients receive the raw
/// `u16` and convert it with [`ErrorCode::from_u16`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No log with the requested name exists.
    UnknownLog = 1,
    /// A create-log request named a log that already exists.
    LogAlreadyExists = 2,
    /// A create-log request asked for zero partitions (or more than the server supports).
    InvalidPartitionCount = 3,
    /// The partition index is not below the log's partition count.
    PartitionOutOfRange = 4,
    /// End of log: there is no record at the position to be read yet.
    NoData = 5,
    /// The requested offset is before the log's earliest retained offset or
    /// after its next offset.
    OffsetOutOfRange = 6,
    /// A single record exceeds the server's maximum record size.
    RecordTooLarge = 7,
    /// A record batch failed validation (bad CRC, bad structure, bad counts).
    InvalidBatch = 8,
    /// The request bytes do not follow the frame layout (includes invalid UTF-8).
    MalformedFrame = 9,
    /// The command byte is not one the server knows.
    UnknownCommand = 10,
    /// The storage engine failed (I/O error, corruption); the request may or may
    /// not have taken effect.
    StorageError = 11,
    /// This server does not own the log or partition; send the request elsewhere.
    NotLeader = 12,
    /// The server is shutting down and accepts no new work.
    ShuttingDown = 13,
    /// The server is overloaded; retry after backing off.
    Busy = 14,
    /// A frame or record batch exceeds the server's size limits.
    FrameTooLarge = 15,
    /// The partition's files are damaged: its intact prefix is readable, writes are
    /// refused until an operator repairs it (`chariot repair`), and a read of a damaged
    /// batch names the file and byte position. Nothing was changed by the request.
    DataDamaged = 16,
    /// The log is internal to the server (it holds the Chariots shared log's state): it
    /// can be read, but not written, deleted or created by name.
    InternalLog = 17,
    /// A replicated write whose outcome is unknown: the partition's leader changed or
    /// lost its quorum while the write was in flight, so it may or may not be stored.
    /// Retrying may store it twice unless the batch carries a producer id and sequence.
    Indeterminate = 18,
    /// A write asked to be on every replica is stored on a quorum, but not every replica
    /// confirmed it within the wait: it is not lost, and not yet everywhere.
    NotAllReplicas = 19,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::UnknownLog,
        ErrorCode::LogAlreadyExists,
        ErrorCode::InvalidPartitionCount,
        ErrorCode::PartitionOutOfRange,
        ErrorCode::NoData,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::RecordTooLarge,
        ErrorCode::InvalidBatch,
        ErrorCode::MalformedFrame,
        ErrorCode::UnknownCommand,
        ErrorCode::StorageError,
        ErrorCode::NotLeader,
        ErrorCode::ShuttingDown,
        ErrorCode::Busy,
        ErrorCode::FrameTooLarge,
        ErrorCode::DataDamaged,
        ErrorCode::InternalLog,
        ErrorCode::Indeterminate,
        ErrorCode::NotAllReplicas,
    ];

    /// The numeric value sent on the wire.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, or `None` for a value this version does not
    /// know (a newer server may send codes added after this crate was built).
    pub const fn from_u16(value: u16) -> Option<ErrorCode> {
        Some(match value {
            1 => ErrorCode::UnknownLog,
            2 => ErrorCode::LogAlreadyExists,
            3 => ErrorCode::InvalidPartitionCount,
            4 => ErrorCode::PartitionOutOfRange,
            5 => ErrorCode::NoData,
            6 => ErrorCode::OffsetOutOfRange,
            7 => ErrorCode::RecordTooLarge,
            8 => ErrorCode::InvalidBatch,
            9 => ErrorCode::MalformedFrame,
            10 => ErrorCode::UnknownCommand,
            11 => ErrorCode::StorageError,
            12 => ErrorCode::NotLeader,
            13 => ErrorCode::ShuttingDown,
            14 => ErrorCode::Busy,
            15 => ErrorCode::FrameTooLarge,
            16 => ErrorCode::DataDamaged,
            17 => ErrorCode::InternalLog,
            18 => ErrorCode::Indeterminate,
            19 => ErrorCode::NotAllReplicas,
            _ => return None,
        })
    }

    /// Whether the same request may succeed if retried later (possibly against
    /// another server), so clients can retry without inspecting the message.
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoData | ErrorCode::NotLeader | ErrorCode::ShuttingDown | ErrorCode::Busy
        )
    }

    /// A stable snake_case name, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::UnknownLog => "unknown_log",
            ErrorCode::LogAlreadyExists => "log_exists",
            ErrorCode::InvalidPartitionCount => "invalid_partition_count",
            ErrorCode::PartitionOutOfRange => "partition_out_of_range",
            ErrorCode::NoData => "no_data",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::RecordTooLarge => "too_large",
            ErrorCode::InvalidBatch => "invalid_batch",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::StorageError => "storage",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Busy => "busy",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::DataDamaged => "data_damaged",
            ErrorCode::InternalLog => "internal_log",
            ErrorCode::Indeterminate => "indeterminate",
            ErrorCode::NotAllReplicas => "not_all_replicas",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    // The numbers are the protocol: this table is written out by hand so that
    // renumbering a variant fails here instead of silently breaking clients.
    const WIRE_VALUES: [(ErrorCode, u16); 19] = [
        (ErrorCode::UnknownLog, 1),
        (ErrorCode::LogAlreadyExists, 2),
        (ErrorCode::InvalidPartitionCount, 3),
        (ErrorCode::PartitionOutOfRange, 4),
        (ErrorCode::NoData, 5),
        (ErrorCode::OffsetOutOfRange, 6),
        (ErrorCode::RecordTooLarge, 7),
        (ErrorCode::InvalidBatch, 8),
        (ErrorCode::MalformedFrame, 9),
        (ErrorCode::UnknownCommand, 10),
        (ErrorCode::StorageError, 11),
        (ErrorCode::NotLeader, 12),
        (ErrorCode::ShuttingDown, 13),
        (ErrorCode::Busy, 14),
        (ErrorCode::FrameTooLarge, 15),
        (ErrorCode::DataDamaged, 16),
        (ErrorCode::InternalLog, 17),
        (ErrorCode::Indeterminate, 18),
        (ErrorCode::NotAllReplicas, 19),
    ];

    #[test]
    fn wire_values_are_fixed() {
        for (code, value) in WIRE_VALUES {
            assert_eq!(code.as_u16(), value, "{code:?}");
            assert_eq!(ErrorCode::from_u16(value), Some(code));
        }
        let all: Vec<ErrorCode> = WIRE_VALUES.iter().map(|(c, _)| *c).collect();
        assert_eq!(all, ErrorCode::ALL.to_vec());
    }

    #[test]
    fn unassigned_values_are_unknown() {
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(20), None);
        assert_eq!(ErrorCode::from_u16(u16::MAX), None);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn transient_codes_are_retriable() {
        assert!(ErrorCode::Busy.is_retriable());
        assert!(ErrorCode::NotLeader.is_retriable());
        assert!(!ErrorCode::UnknownLog.is_retriable());
        assert!(!ErrorCode::MalformedFrame.is_retriable());
    }
}
