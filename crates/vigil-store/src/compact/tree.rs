//! Where compaction lists, reads, publishes and removes: a local
//! directory or an object store, behind one small interface, so the
//! protocol (`compact.rs`) is written once.
//!
//! | operation | local directory | object store |
//! |---|---|---|
//! | list a directory | `read_dir` + `lstat` | one LIST with delimiter `/` |
//! | a file's identity | size, mtime, inode | size, entity tag (or last-modified) |
//! | read an input | open the file | one GET of the whole object |
//! | publish, never replacing | `.tmp-` + fsync + hard link | one conditional PUT (`If-None-Match: *`) |
//! | remove | `unlink` + directory fsync | one DELETE |
//! | lock the root | `flock` on [`LOCK_FILE`] | a lease object [`LOCK_FILE`] created by a conditional PUT |

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::{system_ms, LEASE_TAKEOVERS, LOCK_FILE};
use crate::atomic::{sync_dir, write_atomic_new};
use crate::error::{Result, StoreError};
use crate::location::{ObjectRoot, Root};
use crate::naming::TMP_PREFIX;

/// A root, as compaction reaches it.
#[derive(Clone, Copy)]
pub(crate) enum Tree<'a> {
    Local(&'a Path),
    Object(&'a ObjectRoot),
}

/// What identifies a file's content for the check after publishing: a
/// replaced or removed input differs in one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileId {
    pub len: u64,
    pub mtime_ms: i64,
    /// Locally the mtime in ns and the inode; on an object store the
    /// entity tag (a rewrite of the same name gets a new one), else the
    /// last-modified time.
    pub tag: String,
}

/// An input opened for reading.
pub(crate) enum Input {
    File(File),
    Bytes(Bytes),
}

impl parquet::file::reader::Length for Input {
    fn len(&self) -> u64 {
        match self {
            Input::File(f) => parquet::file::reader::Length::len(f),
            Input::Bytes(b) => b.len() as u64,
        }
    }
}

impl parquet::file::reader::ChunkReader for Input {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            Input::File(f) => Ok(Box::new(f.get_read(start)?)),
            Input::Bytes(b) => Ok(Box::new(b.get_read(start)?)),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Input::File(f) => f.get_bytes(start, length),
            Input::Bytes(b) => b.get_bytes(start, length),
        }
    }
}

/// The outcome of a publish that never replaces.
pub(crate) enum Published<T> {
    /// Published; the output's identity and what the encoder returned.
    Done(FileId, T),
    /// A file of that name exists: nothing was published.
    Exists,
}

/// The root's compaction lock; released on drop.
pub(crate) enum Lock<'a> {
    None,
    Local(#[allow(dead_code)] File),
    Object {
        root: &'a ObjectRoot,
        /// When the lease was last written, and how long it lasts.
        written: std::time::Instant,
        lease: Duration,
        owner: String,
    },
}

impl<'a> Tree<'a> {
    pub fn of(root: &'a Root) -> Tree<'a> {
        match (root.as_local(), root.as_object()) {
            (Some(p), _) => Tree::Local(p),
            (None, Some(o)) => Tree::Object(o),
            (None, None) => unreachable!("a root is local or an object store"),
        }
    }

    /// How `rel` is shown in logs and reports.
    pub fn display(&self, rel: &str) -> PathBuf {
        match self {
            Tree::Local(p) => p.join(rel),
            Tree::Object(o) => PathBuf::from(o.url(rel)),
        }
    }

    /// Sub-directory names of `rel`, sorted (an absent directory has none).
    pub fn dirs(&self, rel: &str) -> Result<Vec<String>> {
        match self {
            Tree::Local(p) => Ok(crate::retention::sorted_entries(&p.join(rel))?
                .into_iter()
                .filter(|(_, ty)| ty.is_dir())
                .map(|(n, _)| n)
                .collect()),
            Tree::Object(o) => Ok(o.list_dir(rel)?.0),
        }
    }

    /// The files directly in `rel` with their identities, sorted by name.
    /// A local file gone between the listing and its `lstat` is left out.
    pub fn files(&self, rel: &str) -> Result<Vec<(String, FileId)>> {
        match self {
            Tree::Local(p) => {
                let dir = p.join(rel);
                let mut out = Vec::new();
                for (name, ty) in crate::retention::sorted_entries(&dir)? {
                    if !ty.is_file() {
                        continue;
                    }
                    match local_id(&dir.join(&name)) {
                        Ok(id) => out.push((name, id)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io("stat", dir.join(&name))(e)),
                    }
                }
                Ok(out)
            }
            Tree::Object(o) => Ok(o
                .list_dir(rel)?
                .1
                .into_iter()
                .map(|m| {
                    let mtime_ms = m.last_modified.timestamp_millis();
                    let tag = m.e_tag.clone().unwrap_or_else(|| mtime_ms.to_string());
                    (
                        m.location.as_ref().to_owned(),
                        FileId {
                            len: m.size,
                            mtime_ms,
                            tag,
                        },
                    )
                })
                .collect()),
        }
    }

    /// The identity of `rel` now, `None` when it is gone.
    pub fn id(&self, dir: &str, name: &str) -> Result<Option<FileId>> {
        match self {
            Tree::Local(p) => {
                let path = p.join(dir).join(name);
                match local_id(&path) {
                    Ok(id) => Ok(Some(id)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StoreError::io("stat", path)(e)),
                }
            }
            Tree::Object(_) => Ok(self
                .files(dir)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| id)),
        }
    }

    /// Opens `rel` for reading (an object is fetched whole, one GET).
    pub fn open(&self, rel: &str) -> Result<Input> {
        match self {
            Tree::Local(p) => {
                let path = p.join(rel);
                File::open(&path)
                    .map(Input::File)
                    .map_err(StoreError::io("open", path))
            }
            Tree::Object(o) => match o.get(rel)? {
                Some(b) => Ok(Input::Bytes(b)),
                None => Err(StoreError::Io {
                    op: "get",
                    path: PathBuf::from(o.url(rel)),
                    source: std::io::ErrorKind::NotFound.into(),
                }),
            },
        }
    }

    /// Publishes `dir/name` with what `encode` writes, never over an
    /// existing file: locally `.tmp-` + fsync + hard link; on an object
    /// store the output is encoded in memory and sent with one
    /// conditional PUT. `written` runs after the encoding, before the
    /// publish (tests crash there).
    pub fn publish_new<T>(
        &self,
        dir: &str,
        name: &str,
        sync: bool,
        encode: impl FnOnce(&mut (dyn std::io::Write + Send), &Path) -> Result<T>,
        written: impl FnOnce() -> Result<()>,
    ) -> Result<Published<T>> {
        match self {
            Tree::Local(p) => {
                let d = p.join(dir);
                let r = write_atomic_new(&d, name, sync, |file, tmp| {
                    let mut w = file;
                    let t = encode(&mut w, tmp)?;
                    written()?;
                    Ok(t)
                });
                match r {
                    Ok((path, t)) => {
                        let id = local_id(&path).map_err(StoreError::io("stat", &path))?;
                        Ok(Published::Done(id, t))
                    }
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Ok(Published::Exists)
                    }
                    Err(e) => Err(e),
                }
            }
            Tree::Object(o) => {
                let rel = format!("{dir}/{name}");
                let mut buf = Vec::new();
                let t = encode(&mut buf, Path::new(&o.url(&rel)))?;
                written()?;
                let len = buf.len() as u64;
                match o.put_new(&rel, buf)? {
                    None => Ok(Published::Exists),
                    Some(tag) => {
                        // The identity as a listing will show it.
                        let id = match self.id(dir, name)? {
                            Some(id) => id,
                            None => FileId {
                                len,
                                mtime_ms: 0,
                                tag: tag.unwrap_or_default(),
                            },
                        };
                        Ok(Published::Done(id, t))
                    }
                }
            }
        }
    }

    /// Removes `rel` (already gone is fine); returns whether it was there
    /// (always `true` on an object store, where a DELETE does not say).
    pub fn remove(&self, rel: &str) -> Result<bool> {
        match self {
            Tree::Local(p) => {
                let path = p.join(rel);
                match fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(StoreError::io("remove", path)(e)),
                }
            }
            Tree::Object(o) => o.delete(rel).map(|()| true),
        }
    }

    /// Makes removals and publishes in `dir` durable (local only: an
    /// object store's requests are durable when they return).
    pub fn sync(&self, dir: &str) -> Result<()> {
        match self {
            Tree::Local(p) => sync_dir(&p.join(dir)),
            Tree::Object(_) => Ok(()),
        }
    }

    /// Whether `name` is an in-progress file (local only; an object store
    /// has none).
    pub fn is_tmp(name: &str) -> bool {
        name.starts_with(TMP_PREFIX)
    }

    /// Takes the root's compaction lock. Locally an advisory `flock`,
    /// released by the kernel when the process ends. On an object store a
    /// lease object created by a conditional PUT, holding its owner and
    /// expiry; the run renews it ([`Lock::renew`]) and deletes it at the
    /// end. A lease past its expiry is a crashed run's: it is deleted and
    /// taken. Two runs that find the same expired lease at once can both
    /// delete it, but only one conditional PUT then succeeds.
    pub fn lock(&self, lease: Duration, now_ms: i64) -> Result<Lock<'a>> {
        match *self {
            Tree::Local(root) => {
                if !root.is_dir() {
                    return Ok(Lock::None);
                }
                let path = root.join(LOCK_FILE);
                let file = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(StoreError::io("open", &path))?;
                match file.try_lock() {
                    Ok(()) => Ok(Lock::Local(file)),
                    Err(fs::TryLockError::WouldBlock) => Err(StoreError::Compact {
                        path,
                        problem: "another vigil compact holds this root's lock".into(),
                    }),
                    Err(fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path)(e)),
                }
            }
            Tree::Object(o) => {
                let owner = format!(
                    "{}-{}-{now_ms}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "vigil".into()),
                    std::process::id()
                );
                for _ in 0..2 {
                    let body = lease_body(&owner, now_ms, lease);
                    if o.put_new(LOCK_FILE, body)?.is_some() {
                        tracing::debug!(owner = %owner, "compaction lease taken");
                        return Ok(Lock::Object {
                            root: o,
                            written: std::time::Instant::now(),
                            lease,
                            owner,
                        });
                    }
                    let held = o.get(LOCK_FILE)?;
                    let expires = held
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                        .and_then(|v| v.get("expires_ms").and_then(|e| e.as_i64()));
                    match expires {
                        Some(e) if e > now_ms => {
                            return Err(StoreError::Compact {
                                path: PathBuf::from(o.url(LOCK_FILE)),
                                problem: format!(
                                    "another vigil compact holds this root's lease until {} \
                                     (delete the object if no run is active)",
                                    chrono::DateTime::from_timestamp_millis(e)
                                        .map_or_else(|| e.to_string(), |t| t.to_rfc3339())
                                ),
                            })
                        }
                        _ => {
                            tracing::warn!(
                                lock = %o.url(LOCK_FILE),
                                "an expired compaction lease (a crashed run's) is taken over"
                            );
                            metrics::counter!(LEASE_TAKEOVERS).increment(1);
                            o.delete(LOCK_FILE)?;
                        }
                    }
                }
                Err(StoreError::Compact {
                    path: PathBuf::from(o.url(LOCK_FILE)),
                    problem: "another vigil compact took this root's lease meanwhile".into(),
                })
            }
        }
    }
}

fn lease_body(owner: &str, now_ms: i64, lease: Duration) -> Vec<u8> {
    let expires = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    serde_json::to_vec(&serde_json::json!({ "owner": owner, "expires_ms": expires }))
        .unwrap_or_default()
}

impl Lock<'_> {
    /// Extends an object store lease once a third of it has passed (a
    /// long run keeps it; a crashed one lets it expire). No-op locally.
    pub fn renew(&mut self, now_ms: i64) -> Result<()> {
        if let Lock::Object {
            root,
            written,
            lease,
            owner,
        } = self
        {
            if written.elapsed() >= *lease / 3 {
                root.put(
                    LOCK_FILE,
                    lease_body(owner, now_ms, *lease),
                    object_store::PutMode::Overwrite,
                )?;
                *written = std::time::Instant::now();
            }
        }
        Ok(())
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if let Lock::Object { root, .. } = self {
            if let Err(e) = root.delete(LOCK_FILE) {
                tracing::warn!(error = %e, "could not remove the compaction lease; it expires");
            }
        }
    }
}

fn local_id(path: &Path) -> std::io::Result<FileId> {
    let md = fs::symlink_metadata(path)?;
    let mtime_ns = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&md);
    #[cfg(not(unix))]
    let ino = 0u64;
    Ok(FileId {
        len: md.len(),
        mtime_ms: md.modified().map(system_ms).unwrap_or(0),
        tag: format!("{mtime_ns}:{ino}"),
    })
}
