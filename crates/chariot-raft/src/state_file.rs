//! Small files of a Raft store, replaced atomically: the body, then a CRC32C of it, in
//! `<name>.tmp`, fsynced, renamed over `<name>`, the directory fsynced. A reader that
//! finds a CRC that does not match reports the file as damaged instead of guessing.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::RaftStoreError;

/// Makes the entries of directory `dir` (files created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RaftStoreError::io("fsync", dir, e))
}

/// A file holding one serde value.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// Whether a save is made durable (fsync of file and directory) before it returns.
    durable: bool,
}

impl StateFile {
    /// The file `name` in `dir`; `durable` saves are fsynced before they return.
    pub fn new(dir: &Path, name: &str, durable: bool) -> Self {
        Self {
            path: dir.join(name),
            durable,
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value saved last, `None` if the file does not exist.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, RaftStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RaftStoreError::io("read", &self.path, e)),
        };
        let corrupt = |reason: String| RaftStoreError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or_else(|| corrupt(format!("{} bytes, too short for its checksum", bytes.len())))?;
        let (want, got) = (u32::from_be_bytes(*crc), crc32c::crc32c(body));
        if want != got {
            return Err(corrupt(format!(
                "checksum mismatch (stored {want:#010x}, computed {got:#010x})"
            )));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| corrupt(format!("does not decode: {e}")))
    }

    /// Replaces the file's value.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), RaftStoreError> {
        let mut body = serde_json::to_vec(value).map_err(|e| RaftStoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| RaftStoreError::io("create", &tmp, e))?;
        f.write_all(&body)
            .map_err(|e| RaftStoreError::io("write", &tmp, e))?;
        if self.durable {
            f.sync_all()
                .map_err(|e| RaftStoreError::io("fsync", &tmp, e))?;
        }
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| RaftStoreError::io("rename", &tmp, e))?;
        if self.durable {
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn saves_load_back_and_a_flipped_byte_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "vote", true);
        assert_eq!(f.load::<Vec<u64>>().unwrap(), None);
        f.save(&vec![1u64, 2, 3]).unwrap();
        f.save(&vec![4u64]).unwrap();
        assert_eq!(f.load::<Vec<u64>>().unwrap(), Some(vec![4]));
        let mut bytes = std::fs::read(f.path()).unwrap();
        bytes[1] ^= 0x01;
        std::fs::write(f.path(), &bytes).unwrap();
        let err = f.load::<Vec<u64>>().unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("vote"),
            "{err}"
        );
        std::fs::write(f.path(), b"ab").unwrap();
        assert!(f.load::<Vec<u64>>().is_err());
    }
}
