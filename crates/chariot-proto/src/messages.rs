//! Rog's error texts, byte for byte.
//!
//! Rog clients recognise errors by comparing the message text, so these
//! strings are part of the wire protocol: changing a character breaks them.
//! Use them as the `message` of [`Response::error`](crate::Response::error)
//! for every request kind, so Rog and extension clients see the same words.

/// Create-log with zero partitions ([`ErrorCode::InvalidPartitionCount`](crate::ErrorCode::InvalidPartitionCount)).
pub fn invalid_partition_count() -> String {
    "Number of partitions must be at least 1".to_owned()
}

/// Create-log for a name in use ([`ErrorCode::LogAlreadyExists`](crate::ErrorCode::LogAlreadyExists)).
pub fn log_already_exists(log: &str) -> String {
    format!("Log {log} already exists")
}

/// Any request naming a missing log ([`ErrorCode::UnknownLog`](crate::ErrorCode::UnknownLog)).
pub fn unknown_log(log: &str) -> String {
    format!("No log registered with name {log}")
}

/// A partition index at or past the log's partition count
/// ([`ErrorCode::PartitionOutOfRange`](crate::ErrorCode::PartitionOutOfRange)).
pub fn partition_out_of_range(partition: u32, log: &str, partitions: u32) -> String {
    format!("Trying to access partition {partition} but log {log} has {partitions} partitions")
}

/// A fetch with nothing left to read ([`ErrorCode::NoData`](crate::ErrorCode::NoData)).
pub fn no_data() -> String {
    "No data left in the log to be read".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_rog_verbatim() {
        assert_eq!(
            invalid_partition_count(),
            "Number of partitions must be at least 1"
        );
        assert_eq!(
            log_already_exists("events.log"),
            "Log events.log already exists"
        );
        assert_eq!(
            unknown_log("events.log"),
            "No log registered with name events.log"
        );
        assert_eq!(
            partition_out_of_range(10, "events.log", 3),
            "Trying to access partition 10 but log events.log has 3 partitions"
        );
        assert_eq!(no_data(), "No data left in the log to be read");
    }
}
