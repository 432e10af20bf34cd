//! What a request can end in, other than its answer.

use std::io;
use std::time::Duration;

use chariot_log::BatchError;
use chariot_proto::{messages, ErrorCode, ProtoError, RequestKind};

/// Result alias for the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a request did not produce its answer.
///
/// Each message is complete on one line, underlying cause included, so the variants
/// carry their causes as fields rather than as [`std::error::Error::source`] (a
/// reporter walking the chain would otherwise print every cause twice).
///
/// Errors the server sent ([`ClientError::Server`], [`ClientError::NoData`]) leave the
/// connection usable. Every other variant means the connection's request/response
/// pairing can no longer be trusted: the [`Client`](crate::Client) refuses further
/// requests with [`ClientError::Broken`] and the caller reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The OS error.
        error: io::Error,
    },
    /// Reading from or writing to the connection failed.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// The server closed the connection before answering in full.
    #[error("the server closed the connection")]
    Closed,
    /// No answer within the configured request timeout.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    /// An earlier request on this connection failed midway (or was cancelled), so the
    /// next bytes on it cannot be matched to a request.
    #[error("the connection is unusable after an earlier failure; reconnect")]
    Broken,
    /// The server's bytes are not a valid response to the request sent.
    #[error("invalid response from the server: {0}")]
    Protocol(ProtoError),
    /// The server answered with a well-formed response of the wrong kind.
    #[error("the server answered a {0:?} request with an unrelated response")]
    UnexpectedResponse(RequestKind),
    /// A record batch in a range read failed validation.
    #[error("invalid record batch from the server: {0}")]
    InvalidBatch(BatchError),
    /// The request cannot be encoded (e.g. a name longer than 255 bytes); nothing was sent.
    #[error("cannot send the request: {0}")]
    Request(ProtoError),
    /// The request exceeds the client's [`Limits`](crate::Limits); nothing was sent.
    ///
    /// Checked before sending because the server rejects an oversized request as soon as
    /// it reads the length and closes the connection, which would otherwise surface as
    /// a write error instead of this reason.
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// `"record"` or `"record batch"`.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More records than one request may carry
    /// ([`MAX_RECORDS_PER_REQUEST`](chariot_proto::MAX_RECORDS_PER_REQUEST)); nothing
    /// was sent. Split them over several requests.
    #[error("{count} records in one request exceed the limit of {max}")]
    TooManyRecords {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// End of the log: nothing to read at the requested position yet (Rog's
    /// `No data left in the log to be read`, or extension code 5). Retriable.
    #[error("no data left in the log to be read")]
    NoData,
    /// The server refused the request.
    #[error("{}", server_text(*.code, .message))]
    Server {
        /// The wire code of an extension error; `None` for Rog commands, whose errors
        /// carry only text. Kept raw so codes newer than this client still show.
        code: Option<u16>,
        /// The server's message (Rog's exact texts for the conditions Rog has).
        message: String,
    },
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> ClientError {
        ClientError::Io(error)
    }
}

fn server_text(code: Option<u16>, message: &str) -> String {
    match (code, message.is_empty()) {
        (Some(code), true) => match ErrorCode::from_u16(code) {
            Some(known) => format!("server error {known}"),
            None => format!("server error code {code}"),
        },
        _ => message.to_owned(),
    }
}

impl ClientError {
    /// The error's wire code, if the server refused the request.
    ///
    /// Rog errors carry no code; for them the code is recovered from Rog's fixed texts
    /// (see `chariot_proto::messages`), so callers can branch on one enum whichever
    /// command failed. `None` for an unknown code or text and for local failures.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::NoData => Some(ErrorCode::NoData),
            ClientError::Server {
                code: Some(code), ..
            } => ErrorCode::from_u16(*code),
            ClientError::Server {
                code: None,
                message,
            } => rog_code(message),
            _ => None,
        }
    }

    /// Whether the same request may succeed later (end of log, busy, not leader, …).
    pub fn is_retriable(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_retriable)
    }

    /// Whether the connection can carry further requests after this error.
    pub fn keeps_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Server { .. }
                | ClientError::NoData
                | ClientError::InvalidBatch(_)
                | ClientError::Request(_)
                | ClientError::TooLarge { .. }
                | ClientError::TooManyRecords { .. }
        )
    }

    /// The error for a Rog error response: Rog's end-of-log text becomes
    /// [`ClientError::NoData`], everything else keeps its text.
    pub(crate) fn from_rog(message: String) -> ClientError {
        if message == messages::no_data() {
            ClientError::NoData
        } else {
            ClientError::Server {
                code: None,
                message,
            }
        }
    }

    /// The error for an extension error response.
    pub(crate) fn from_coded(code: u16, message: String) -> ClientError {
        if code == ErrorCode::NoData.as_u16() {
            ClientError::NoData
        } else {
            ClientError::Server {
                code: Some(code),
                message,
            }
        }
    }
}

/// The code behind one of Rog's fixed error texts.
fn rog_code(message: &str) -> Option<ErrorCode> {
    if message == messages::invalid_partition_count() {
        Some(ErrorCode::InvalidPartitionCount)
    } else if message.starts_with("No log registered with name ") {
        Some(ErrorCode::UnknownLog)
    } else if message.starts_with("Trying to access partition ") {
        Some(ErrorCode::PartitionOutOfRange)
    } else if message.starts_with("Log ") && message.ends_with(" already exists") {
        Some(ErrorCode::LogAlreadyExists)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rog_texts_map_to_codes() {
        let rog = |m: String| ClientError::from_rog(m).code();
        assert_eq!(rog(messages::no_data()), Some(ErrorCode::NoData));
        assert_eq!(rog(messages::unknown_log("x")), Some(ErrorCode::UnknownLog));
        assert_eq!(
            rog(messages::partition_out_of_range(3, "x", 1)),
            Some(ErrorCode::PartitionOutOfRange)
        );
        assert_eq!(
            rog(messages::log_already_exists("x")),
            Some(ErrorCode::LogAlreadyExists)
        );
        assert_eq!(
            rog(messages::invalid_partition_count()),
            Some(ErrorCode::InvalidPartitionCount)
        );
        assert_eq!(rog("something else".to_owned()), None);
    }

    #[test]
    fn coded_errors_keep_unknown_codes() {
        let e = ClientError::from_coded(999, String::new());
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "server error code 999");
        let e = ClientError::from_coded(1, "No log registered with name x".to_owned());
        assert_eq!(e.code(), Some(ErrorCode::UnknownLog));
        assert_eq!(e.to_string(), "No log registered with name x");
        assert!(matches!(
            ClientError::from_coded(5, String::new()),
            ClientError::NoData
        ));
    }

    #[test]
    fn retriable_follows_the_code() {
        assert!(ClientError::NoData.is_retriable());
        assert!(ClientError::from_coded(14, "busy".to_owned()).is_retriable());
        assert!(!ClientError::from_coded(1, "x".to_owned()).is_retriable());
        assert!(!ClientError::Closed.is_retriable());
    }
}
