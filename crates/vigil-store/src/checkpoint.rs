//! The checkpoint store: one file per (topic, partition) holding a
//! partition's serialised operator state and the offset it continues
//! from, replaced atomically (tmp + fsync + rename) at every checkpoint.
//!
//! ```text
//!  <state_dir>/<sanitized topic>/p00003.ckpt
//! ```
//!
//! The store moves bytes; what they mean (format, offset, state) is the
//! worker's business. The root is a local directory or an object store
//! ([`Root`]): there a checkpoint is encoded in memory and replaced by one
//! PUT (whole or not at all, as the rename is locally), and read back with
//! one GET.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::sanitize_source;

/// A directory of partition checkpoints. See the module docs.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: Root,
    dir: PathBuf,
    sync: bool,
}

/// A reader over one checkpoint: buffered from a file, or over the bytes
/// of an object.
pub type CheckpointReader = Box<dyn std::io::BufRead + Send>;

impl CheckpointStore {
    /// A store under `dir`; `sync` fsyncs each checkpoint and its directory.
    pub fn new(dir: impl Into<PathBuf>, sync: bool) -> Self {
        Self::at(&Root::local(dir.into()), sync)
    }

    /// A store under `root`, a local directory (as
    /// [`CheckpointStore::new`]) or an object store.
    pub fn at(root: &Root, sync: bool) -> Self {
        CheckpointStore {
            dir: root.display_path(""),
            root: root.clone(),
            sync,
        }
    }

    /// The key of the checkpoint of `topic`/`partition` under the root.
    fn rel(topic: &str, partition: i32) -> String {
        format!("{}/p{partition:05}.ckpt", sanitize_source(topic))
    }

    /// The store's root directory (for an object store, its URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the checkpoint of `topic`/`partition` (for an object
    /// store, its URL).
    pub fn path(&self, topic: &str, partition: i32) -> PathBuf {
        if self.root.as_object().is_some() {
            return self.root.display_path(&Self::rel(topic, partition));
        }
        self.dir
            .join(sanitize_source(topic))
            .join(format!("p{partition:05}.ckpt"))
    }

    /// The last checkpoint of `topic`/`partition`, or `None` when there
    /// is none.
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>> {
        if let Some(obj) = self.root.as_object() {
            return Ok(obj.get(&Self::rel(topic, partition))?.map(|b| b.to_vec()));
        }
        let p = self.path(topic, partition);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read checkpoint", p)(e)),
        }
    }

    /// A buffered reader over the last checkpoint of `topic`/`partition`,
    /// or `None` when there is none (for decoding a large state without
    /// holding its bytes; an object store's checkpoint is fetched whole,
    /// one GET, and read from memory).
    pub fn reader(&self, topic: &str, partition: i32) -> Result<Option<CheckpointReader>> {
        if let Some(obj) = self.root.as_object() {
            let bytes = obj.get(&Self::rel(topic, partition))?;
            return Ok(bytes.map(|b| Box::new(std::io::Cursor::new(b)) as CheckpointReader));
        }
        let p = self.path(topic, partition);
        match std::fs::File::open(&p) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open checkpoint", p)(e)),
        }
    }

    /// Like [`reader`](Self::reader), for a source already sanitized (as
    /// file names and the store's directories spell it: what compaction
    /// knows of a source).
    pub fn reader_of_source(
        &self,
        source: &str,
        partition: i32,
    ) -> Result<Option<CheckpointReader>> {
        let rel = format!("{source}/p{partition:05}.ckpt");
        if let Some(obj) = self.root.as_object() {
            let bytes = obj.get(&rel)?;
            return Ok(bytes.map(|b| Box::new(std::io::Cursor::new(b)) as CheckpointReader));
        }
        let p = self.dir.join(&rel);
        match std::fs::File::open(&p) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("open checkpoint", p)(e)),
        }
    }

    /// Replaces the checkpoint of `topic`/`partition` with `bytes`,
    /// atomically.
    pub fn save(&self, topic: &str, partition: i32, bytes: &[u8]) -> Result<PathBuf> {
        self.save_with(topic, partition, |w| w.write_all(bytes))
            .map(|(p, _)| p)
    }

    /// Replaces the checkpoint of `topic`/`partition` with what `write`
    /// streams into the (buffered) writer it is given, atomically, so a
    /// large state is never held in memory as bytes. Returns the path and
    /// the number of bytes written.
    pub fn save_with(
        &self,
        topic: &str,
        partition: i32,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(PathBuf, u64)> {
        if let Some(obj) = self.root.as_object() {
            // Streamed: one PUT, or a multipart upload for a large state
            // (never more than a part in memory); either replaces the
            // object whole or not at all (no rename on an object store).
            let rel = Self::rel(topic, partition);
            let n = obj.put_streamed(&rel, |w| {
                let mut b = std::io::BufWriter::with_capacity(1 << 20, w);
                write(&mut b)?;
                b.flush()
            })?;
            return Ok((self.root.display_path(&rel), n));
        }
        let dir = self.dir.join(sanitize_source(topic));
        let name = format!("p{partition:05}.ckpt");
        write_atomic(&dir, &name, self.sync, |f, tmp| {
            let mut w = Counted {
                inner: std::io::BufWriter::with_capacity(1 << 20, f),
                bytes: 0,
            };
            write(&mut w).map_err(StoreError::io("write", tmp))?;
            w.inner.flush().map_err(StoreError::io("write", tmp))?;
            Ok(w.bytes)
        })
    }
}

/// A writer that counts the bytes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_save_counts_its_bytes() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path(), true);
        let (path, n) = s
            .save_with("t", 0, |w| {
                for _ in 0..1000 {
                    w.write_all(b"0123456789")?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(std::fs::read(path).unwrap().len(), 10_000);
        let failed = s.save_with("t", 0, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("encoder failed"))
        });
        assert!(failed.is_err());
        assert_eq!(
            s.load("t", 0).unwrap().unwrap().len(),
            10_000,
            "old one kept"
        );
        let mut r = s.reader("t", 0).unwrap().unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut back).unwrap();
        assert_eq!(back.len(), 10_000);
        assert!(s.reader("t", 9).unwrap().is_none());
    }

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
