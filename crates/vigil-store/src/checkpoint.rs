//! The checkpoint store: one file per (topic, partition) holding a
//! partition's serialised operator state and the offset it continues
//! from, replaced atomically (tmp + fsync + rename) at every checkpoint.
//!
//! ```text
//!  <state_dir>/<sanitized topic>/p00003.ckpt
//! ```
//!
//! The store moves bytes; what they mean (format, offset, state) is the
//! worker's business. A local directory today; an object store later
//! behind the same three calls.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use crate::naming::sanitize_source;

/// A directory of partition checkpoints. See the module docs.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    sync: bool,
}

impl CheckpointStore {
    /// A store under `dir`; `sync` fsyncs each checkpoint and its directory.
    pub fn new(dir: impl Into<PathBuf>, sync: bool) -> Self {
        CheckpointStore {
            dir: dir.into(),
            sync,
        }
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the checkpoint of `topic`/`partition`.
    pub fn path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir
            .join(sanitize_source(topic))
            .join(format!("p{partition:05}.ckpt"))
    }

    /// The last checkpoint of `topic`/`partition`, or `None` when there
    /// is none.
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>> {
        let p = self.path(topic, partition);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read checkpoint", p)(e)),
        }
    }

    /// Replaces the checkpoint of `topic`/`partition` with `bytes`,
    /// atomically.
    pub fn save(&self, topic: &str, partition: i32, bytes: &[u8]) -> Result<PathBuf> {
        let dir = self.dir.join(sanitize_source(topic));
        let name = format!("p{partition:05}.ckpt");
        let (path, ()) = write_atomic(&dir, &name, self.sync, |mut f, tmp| {
            f.write_all(bytes).map_err(StoreError::io("write", tmp))
        })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_and_load_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path(), false);
        assert_eq!(s.load("rmm.telemetry.v1", 3).unwrap(), None);
        s.save("rmm.telemetry.v1", 3, b"one").unwrap();
        s.save("rmm.telemetry.v1", 3, b"two").unwrap();
        assert_eq!(
            s.load("rmm.telemetry.v1", 3).unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(s.load("rmm.telemetry.v1", 4).unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(d.path().join("rmm.telemetry.v1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["p00003.ckpt".to_string()]);
    }
}
