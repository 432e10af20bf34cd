//! One place that says how each broker error looks on each wire.

use axum::http::StatusCode;
use chariot_broker::BrokerError;
use chariot_proto::ErrorCode;

/// The native protocol's wire code for an error.
pub fn wire_code(e: &BrokerError) -> ErrorCode {
    match e {
        BrokerError::InvalidPartitionCount { .. } => ErrorCode::InvalidPartitionCount,
        BrokerError::LogExists(_) => ErrorCode::LogAlreadyExists,
        BrokerError::UnknownLog(_) => ErrorCode::UnknownLog,
        BrokerError::PartitionOutOfRange { .. } => ErrorCode::PartitionOutOfRange,
        BrokerError::NoData => ErrorCode::NoData,
        BrokerError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        BrokerError::TooLarge { .. } => ErrorCode::RecordTooLarge,
        BrokerError::Empty | BrokerError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        BrokerError::InvalidName(_) | BrokerError::UnknownDatacenter(_) => {
            ErrorCode::MalformedFrame
        }
        BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
        BrokerError::NotLeader { .. } => ErrorCode::NotLeader,
        BrokerError::Indeterminate(_) => ErrorCode::Indeterminate,
        BrokerError::NotAllReplicas { .. } => ErrorCode::NotAllReplicas,
        BrokerError::NoSpace | BrokerError::Storage(_) | BrokerError::Log(_) => {
            ErrorCode::StorageError
        }
        BrokerError::Busy(_) => ErrorCode::Busy,
        BrokerError::Damaged(_) => ErrorCode::DataDamaged,
        BrokerError::InternalLog(_) => ErrorCode::InternalLog,
    }
}

/// The HTTP status and stable `code` string for an error.
pub fn http_status(e: &BrokerError) -> (StatusCode, &'static str) {
    match e {
        BrokerError::InvalidPartitionCount { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_partition_count")
        }
        BrokerError::LogExists(_) => (StatusCode::CONFLICT, "log_exists"),
        BrokerError::UnknownLog(_) => (StatusCode::NOT_FOUND, "unknown_log"),
        BrokerError::PartitionOutOfRange { .. } => {
            (StatusCode::NOT_FOUND, "partition_out_of_range")
        }
        BrokerError::NoData => (StatusCode::NOT_FOUND, "no_data"),
        BrokerError::OffsetOutOfRange { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range")
        }
        BrokerError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        BrokerError::Empty => (StatusCode::BAD_REQUEST, "empty"),
        BrokerError::InvalidBatch(_) => (StatusCode::BAD_REQUEST, "invalid_batch"),
        BrokerError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        BrokerError::UnknownDatacenter(_) => (StatusCode::FORBIDDEN, "unknown_datacenter"),
        BrokerError::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        BrokerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        BrokerError::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_leader"),
        BrokerError::Indeterminate(_) => (StatusCode::SERVICE_UNAVAILABLE, "indeterminate"),
        BrokerError::NotAllReplicas { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_all_replicas"),
        BrokerError::Storage(_) | BrokerError::Log(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "storage")
        }
        BrokerError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        BrokerError::Damaged(_) => (StatusCode::SERVICE_UNAVAILABLE, "data_damaged"),
        BrokerError::InternalLog(_) => (StatusCode::FORBIDDEN, "internal_log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One vocabulary: where the native protocol has a code of its own for an error, its
    /// name is the HTTP API's `code` for the same error.
    #[test]
    fn http_codes_and_wire_code_names_agree() {
        let errors = [
            BrokerError::InvalidPartitionCount { requested: 0 },
            BrokerError::LogExists("l".into()),
            BrokerError::UnknownLog("l".into()),
            BrokerError::PartitionOutOfRange {
                partition: 1,
                log: "l".into(),
                partitions: 1,
            },
            BrokerError::NoData,
            BrokerError::OffsetOutOfRange {
                requested: 9,
                earliest: 0,
                next: 1,
            },
            BrokerError::TooLarge { size: 2, max: 1 },
            BrokerError::InvalidBatch("bad".into()),
            BrokerError::ShuttingDown,
            BrokerError::Busy("full".into()),
            BrokerError::Damaged("bad byte".into()),
            BrokerError::InternalLog("chariots".into()),
            BrokerError::Storage("io".into()),
            BrokerError::NotLeader {
                leader: Some(2),
                addr: None,
            },
            BrokerError::Indeterminate("leader changed".into()),
            BrokerError::NotAllReplicas {
                base_offset: 3,
                behind: vec![2],
            },
        ];
        for e in &errors {
            assert_eq!(http_status(e).1, wire_code(e).name(), "{e:?}");
        }
    }
}
