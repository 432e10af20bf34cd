//! Errors of the Raft storage.

use std::path::PathBuf;

/// Bytes of the Raft log or its state files that do not decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes end before the named part.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The bytes are not a valid encoding.
    #[error("{0}")]
    Invalid(String),
}

/// A failure of the Raft log store or the state machine, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// The underlying chariot-log failed.
    #[error(transparent)]
    Log(#[from] chariot_log::LogError),
    /// A file of the store could not be read or written.
    #[error("{op} {}: {error}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A file of the store or an entry of the log is damaged or not understood: the
    /// node must not vote or lead on what it cannot vouch for.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log's offsets and the Raft indexes disagree (a bug, or files changed under
    /// the store).
    #[error("raft log {}: {reason}", path.display())]
    Inconsistent {
        /// The log's directory.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
}

/// The first damage known in `log` (its active segment's, else a sealed segment's, as
/// found at open or by a scrub), described.
pub(crate) fn damage_of(log: &chariot_log::Log) -> Option<String> {
    let found = log
        .damage()
        .map(ToString::to_string)
        .or_else(|| log.sealed_damage().first().map(ToString::to_string));
    found.map(|d| format!("damaged: {d}"))
}

impl RaftStoreError {
    /// Whether the error says the files are damaged or disagree (rather than that
    /// they could not be reached: permissions, a full disk, a lock, descriptors).
    pub fn is_damage(&self) -> bool {
        use chariot_log::LogError as L;
        match self {
            RaftStoreError::Corrupt { .. } | RaftStoreError::Inconsistent { .. } => true,
            RaftStoreError::Io { .. } => false,
            RaftStoreError::Log(e) => !matches!(
                e,
                L::Io { .. } | L::NoSpace { .. } | L::Locked { .. } | L::InvalidConfig(_)
            ),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        RaftStoreError::Io {
            op,
            path: path.into(),
            error,
        }
    }
}

impl From<RaftStoreError> for std::io::Error {
    fn from(e: RaftStoreError) -> Self {
        let kind = match &e {
            RaftStoreError::Corrupt { .. } | RaftStoreError::Inconsistent { .. } => {
                std::io::ErrorKind::InvalidData
            }
            RaftStoreError::Io { error, .. } => error.kind(),
            RaftStoreError::Log(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Runs `f` on tokio's blocking pool (file I/O, fsyncs, joins of a log's threads), as
/// openraft's storage traits want it: an `io::Error`, naming `dir` if the task itself
/// failed.
pub(crate) async fn run_blocking<T: Send + 'static>(
    dir: &std::path::Path,
    op: &'static str,
    f: impl FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
) -> Result<T, std::io::Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(std::io::Error::from),
        Err(e) => Err(std::io::Error::from(RaftStoreError::io(
            op,
            dir,
            std::io::Error::other(e),
        ))),
    }
}
