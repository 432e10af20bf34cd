//! The senders' durable state: the remote datacenters and, per remote, its cursor (the
//! next TOId to send and where to resume reading the shared log), kept as records of the
//! system log `__chariots_senders` (see `registry`).
//!
//! A record's `kind` header says what it sets, its key the datacenter (4 bytes, big
//! endian), its value the remote's address (UTF-8) or the cursor (two big-endian `u64`s);
//! the last record for a key wins. On open the log is replayed into memory, and
//! compacted when it has grown past a few MiB (cursors move with every acknowledged
//! batch). A record that cannot be read or parsed is an error naming the log, file and
//! position, never a silent reset (which would forget a remote or resend everything).
//!
//! Earlier versions kept this state as JSON files (`<data dir>/__chariots_senders/
//! remotes.json` and `<dc>.json`): `remotes.json` is moved into the log at open, a
//! cursor file when its sender starts; a damaged one is an error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chariot_log::{Log, RecordBatchBuilder};
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::{now_ms, Entry, NewRecord, PartitionLog};
use crate::registry::SENDERS_LOG;

const KIND_REMOTE: &[u8] = b"remote";
const KIND_CURSOR: &[u8] = b"cursor";
/// Compact on open once the log is larger than this.
const COMPACT_ABOVE_BYTES: u64 = 4 << 20;
/// Where earlier versions kept this state.
const LEGACY_DIR: &str = "__chariots_senders";

/// Where a sender resumes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) next_toid: u64,
    pub(crate) from_lid: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    remotes: BTreeMap<u32, String>,
    cursors: BTreeMap<u32, Cursor>,
}

/// Remotes and cursors, in memory and in their log.
pub(crate) struct SenderState {
    legacy_dir: PathBuf,
    writer: Arc<dyn PartitionLog>,
    state: Mutex<State>,
    /// One write at a time, so the log's order is the memory's.
    writing: tokio::sync::Mutex<()>,
}

impl SenderState {
    /// Replays (and if large, compacts) the log, taking in a `remotes.json` of an earlier
    /// version. Blocking.
    pub(crate) fn open(broker: &Broker) -> Result<Self> {
        let registry = broker.registry();
        let mut entry = registry.open_system(SENDERS_LOG)?;
        if let Some(damage) = entry.partition(0)?.log().damage() {
            // Its intact prefix is not the whole state: starting from it would forget
            // remotes or move cursors back without a word.
            return Err(BrokerError::Damaged(format!(
                "{SENDERS_LOG} (the remote datacenters and their cursors) is damaged: {damage}; \
                 stop the server and run `chariot repair`"
            )));
        }
        let mut state = replay(&entry.partition(0)?.log())?;
        let legacy_dir = broker.config().data_dir.join(LEGACY_DIR);
        let legacy_remotes = legacy_dir.join("remotes.json");
        let legacy: Option<BTreeMap<u32, String>> = load_json(&legacy_remotes)?;
        if let Some(remotes) = &legacy {
            let mut b = RecordBatchBuilder::new();
            for (dc, addr) in remotes {
                remote_record(*dc, addr).push_to(&mut b);
            }
            if !remotes.is_empty() {
                entry.partition(0)?.log().append(&mut b.build())?;
            }
            state.remotes.extend(remotes.clone());
        }
        let log = &entry.partition(0)?.log();
        if log.size_bytes() > COMPACT_ABOVE_BYTES && log.damage().is_none() {
            drop(entry);
            entry = registry.replace_partition(SENDERS_LOG, 0, |fresh| {
                let mut b = RecordBatchBuilder::new();
                for r in records_of(&state) {
                    r.push_to(&mut b);
                }
                if !b.is_empty() {
                    fresh.append(&mut b.build())?;
                }
                Ok(())
            })?;
        }
        if legacy.is_some() {
            // In the log now (durably): the file goes.
            std::fs::remove_file(&legacy_remotes).map_err(|e| {
                BrokerError::Storage(format!("remove {}: {e}", legacy_remotes.display()))
            })?;
            remove_if_empty(&legacy_dir);
        }
        Ok(Self {
            legacy_dir,
            writer: Arc::clone(&entry.partition(0)?.writer),
            state: Mutex::new(state),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remote datacenters remembered: id and record-port address.
    pub(crate) fn remotes(&self) -> BTreeMap<u32, String> {
        self.lock().remotes.clone()
    }

    /// Remembers (durably) that datacenter `dc` is reached at `addr`.
    pub(crate) async fn set_remote(&self, dc: u32, addr: &str) -> Result<()> {
        let _writing = self.writing.lock().await;
        if self.lock().remotes.get(&dc).map(String::as_str) == Some(addr) {
            return Ok(());
        }
        self.append(remote_record(dc, addr)).await?;
        self.lock().remotes.insert(dc, addr.to_string());
        Ok(())
    }

    /// The cursor of datacenter `dc`'s sender (the start for one never seen). A cursor
    /// file of an earlier version is taken in first; a damaged one is an error naming it.
    pub(crate) async fn cursor(&self, dc: u32) -> Result<Cursor> {
        let path = self.legacy_dir.join(format!("{dc}.json"));
        let p = path.clone();
        let legacy = tokio::task::spawn_blocking(move || load_json::<Cursor>(&p))
            .await
            .map_err(|e| BrokerError::Storage(format!("cursor task failed: {e}")))??;
        if let Some(c) = legacy {
            self.set_cursor(dc, c).await?;
            let dir = self.legacy_dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::remove_file(&path)?;
                remove_if_empty(&dir);
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| BrokerError::Storage(format!("cursor task failed: {e}")))?
            .map_err(|e| BrokerError::Storage(format!("remove a moved cursor file: {e}")))?;
            return Ok(c);
        }
        Ok(self.lock().cursors.get(&dc).copied().unwrap_or_default())
    }

    /// Remembers (durably) where datacenter `dc`'s sender resumes.
    pub(crate) async fn set_cursor(&self, dc: u32, c: Cursor) -> Result<()> {
        let _writing = self.writing.lock().await;
        self.append(cursor_record(dc, c)).await?;
        self.lock().cursors.insert(dc, c);
        Ok(())
    }

    async fn append(&self, record: NewRecord) -> Result<()> {
        self.writer
            .append(Entry::Records(vec![record]))
            .await
            .map(|_| ())
    }
}

fn record(kind: &'static [u8], dc: u32, value: Vec<u8>) -> NewRecord {
    NewRecord {
        key: Some(Bytes::copy_from_slice(&dc.to_be_bytes())),
        value: Bytes::from(value),
        headers: vec![(Bytes::from_static(b"kind"), Bytes::from_static(kind))],
        timestamp: now_ms(),
    }
}

fn remote_record(dc: u32, addr: &str) -> NewRecord {
    record(KIND_REMOTE, dc, addr.as_bytes().to_vec())
}

fn cursor_record(dc: u32, c: Cursor) -> NewRecord {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&c.next_toid.to_be_bytes());
    v.extend_from_slice(&c.from_lid.to_be_bytes());
    record(KIND_CURSOR, dc, v)
}

fn records_of(state: &State) -> Vec<NewRecord> {
    let remotes = state.remotes.iter().map(|(dc, a)| remote_record(*dc, a));
    let cursors = state.cursors.iter().map(|(dc, c)| cursor_record(*dc, *c));
    remotes.chain(cursors).collect()
}

fn replay(log: &Log) -> Result<State> {
    let mut state = State::default();
    chariot_log::scan::replay(log, |rec| {
        let malformed = || {
            BrokerError::Storage(format!(
                "malformed record at offset {} of {SENDERS_LOG}",
                rec.offset
            ))
        };
        let kind = rec
            .headers
            .iter()
            .find(|(k, _)| *k == b"kind")
            .map(|(_, v)| *v);
        let dc = rec
            .key
            .and_then(|k| <[u8; 4]>::try_from(k).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(malformed)?;
        match kind {
            Some(KIND_REMOTE) => {
                let addr = std::str::from_utf8(rec.value).map_err(|_| malformed())?;
                state.remotes.insert(dc, addr.to_string());
            }
            Some(KIND_CURSOR) => {
                let (t, l) = rec.value.split_at_checked(8).ok_or_else(malformed)?;
                let (Ok(t), Ok(l)) = (<[u8; 8]>::try_from(t), <[u8; 8]>::try_from(l)) else {
                    return Err(malformed());
                };
                state.cursors.insert(
                    dc,
                    Cursor {
                        next_toid: u64::from_be_bytes(t),
                        from_lid: u64::from_be_bytes(l),
                    },
                );
            }
            _ => return Err(malformed()),
        }
        Ok(())
    })
    .map_err(|e| match e {
        e @ BrokerError::Storage(_) => e,
        e => BrokerError::Storage(format!("{SENDERS_LOG} cannot be read: {e}")),
    })?;
    Ok(state)
}

/// Reads a JSON state file of an earlier version: `None` if it does not exist; an error
/// naming the file if it cannot be read or parsed (never silently treated as absent).
fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BrokerError::Storage(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    serde_json::from_slice(&raw).map(Some).map_err(|e| {
        BrokerError::Storage(format!(
            "{} is damaged ({e}); fix it or remove it (removing a sender's cursor makes it \
             resend everything, which the remote deduplicates)",
            path.display()
        ))
    })
}

fn remove_if_empty(dir: &Path) {
    // Fails while other files remain, which is what it should do.
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remotes_and_cursors_survive_reopen_and_legacy_files_move_in() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_DIR);
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("remotes.json"), br#"{"1":"127.0.0.1:1"}"#).unwrap();
        std::fs::write(legacy.join("1.json"), br#"{"next_toid":5,"from_lid":9}"#).unwrap();
        let open = || {
            let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
            let state = SenderState::open(&broker).unwrap();
            (broker, state)
        };
        {
            let (_broker, state) = open();
            assert_eq!(
                state.remotes().get(&1).map(String::as_str),
                Some("127.0.0.1:1")
            );
            assert!(!legacy.join("remotes.json").exists());
            let c = state.cursor(1).await.unwrap();
            assert_eq!((c.next_toid, c.from_lid), (5, 9));
            assert!(!legacy.exists(), "the legacy directory is gone once empty");
            state.set_remote(2, "127.0.0.1:2").await.unwrap();
            let moved = Cursor {
                next_toid: 7,
                from_lid: 12,
            };
            state.set_cursor(1, moved).await.unwrap();
        }
        let (_broker, state) = open();
        assert_eq!(state.remotes().len(), 2);
        assert_eq!(state.cursor(1).await.unwrap().next_toid, 7);
        assert_eq!(state.cursor(3).await.unwrap(), Cursor::default());
    }

    #[test]
    fn a_malformed_record_is_an_error_naming_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), chariot_log::LogConfig::default()).unwrap();
        let mut b = RecordBatchBuilder::new();
        record(KIND_CURSOR, 1, vec![1, 2, 3]).push_to(&mut b);
        log.append(&mut b.build()).unwrap();
        let err = replay(&log).unwrap_err().to_string();
        assert!(
            err.contains(SENDERS_LOG) && err.contains("offset 0"),
            "{err}"
        );
    }
}
