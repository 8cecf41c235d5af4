//! Atomic file publication: write `.tmp-<name>.partial` in the target
//! directory, fsync it, rename it over `<name>`, fsync the directory.
//!
//! A reader therefore sees either no file or the whole file, and a file
//! that exists after a crash is complete. Renaming over an existing file
//! replaces it, which is what makes replays idempotent.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::naming::{TMP_PREFIX, TMP_SUFFIX};

/// Creates `dir` (and its parents) if missing. When it had to create
/// directories and `sync` is set, fsyncs every parent whose entry list
/// changed, so the new directories survive a crash.
pub(crate) fn ensure_dir(dir: &Path, sync: bool) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // Find the deepest existing ancestor: every directory below it is new.
    let mut first_new = dir;
    while let Some(parent) = first_new.parent() {
        if parent.as_os_str().is_empty() || parent.is_dir() {
            break;
        }
        first_new = parent;
    }
    fs::create_dir_all(dir).map_err(StoreError::io("create dir", dir))?;
    if sync {
        let mut d = dir;
        loop {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            if d == first_new {
                break;
            }
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
    Ok(())
}

/// Fsyncs a directory so renames and creations in it are durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(StoreError::io("open dir", dir))?;
    f.sync_all().map_err(StoreError::io("fsync dir", dir))
}

/// Directory fsync is a Unix notion; elsewhere the rename is all we have.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Path of an in-progress file for `name` in `dir`. Unique per process and
/// call (pid and a counter), so two writers of the same range (a zombie
/// worker after a rebalance, two concurrent replays) never write into each
/// other's temporary file; the last rename wins with a whole file.
pub(crate) fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(
        "{TMP_PREFIX}{name}.{}-{n}{TMP_SUFFIX}",
        std::process::id()
    ))
}

/// Writes `dir/name` atomically: `write` fills the temporary file, which is
/// then fsynced (when `sync`), renamed to `name`, and the directory fsynced.
/// On any error the temporary file is removed (best effort) and `name` is
/// left as it was. Returns the final path and what `write` returned.
pub(crate) fn write_atomic<T>(
    dir: &Path,
    name: &str,
    sync: bool,
    write: impl FnOnce(&File, &Path) -> Result<T>,
) -> Result<(PathBuf, T)> {
    publish_atomic(dir, name, sync, write, |tmp, dest| {
        fs::rename(tmp, dest).map_err(StoreError::io("rename", tmp))
    })
}

/// Like [`write_atomic`], but an existing `name` is first renamed to
/// `previous` (replacing it), so the last two generations stay: a crash
/// between the two renames leaves `previous` (the newest complete file)
/// and no `name`, which readers take as "fall back to `previous`".
pub(crate) fn write_atomic_keeping<T>(
    dir: &Path,
    name: &str,
    previous: &str,
    sync: bool,
    write: impl FnOnce(&File, &Path) -> Result<T>,
) -> Result<(PathBuf, T)> {
    let prev = dir.join(previous);
    publish_atomic(dir, name, sync, write, |tmp, dest| {
        match fs::rename(dest, &prev) {
            // Passed only when a newest existed: the N-th hit is the N-th
            // time a generation was kept.
            Ok(()) => crate::failpoint::hit("checkpoint.between_renames"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("rename", dest)(e)),
        }
        fs::rename(tmp, dest).map_err(StoreError::io("rename", tmp))
    })
}

/// Like [`write_atomic`], but never replaces: the file is published by a
/// hard link to `name`, which fails with an `AlreadyExists` I/O error when
/// `name` exists (the temporary file is then removed and `name` left as it
/// was). Compaction publishes its outputs so: a file of that name that
/// appeared meanwhile is someone else's and must not be overwritten.
pub(crate) fn write_atomic_new<T>(
    dir: &Path,
    name: &str,
    sync: bool,
    write: impl FnOnce(&File, &Path) -> Result<T>,
) -> Result<(PathBuf, T)> {
    publish_atomic(dir, name, sync, write, |tmp, dest| {
        fs::hard_link(tmp, dest).map_err(StoreError::io("link", dest))?;
        fs::remove_file(tmp).map_err(StoreError::io("remove", tmp))
    })
}

fn publish_atomic<T>(
    dir: &Path,
    name: &str,
    sync: bool,
    write: impl FnOnce(&File, &Path) -> Result<T>,
    publish: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<(PathBuf, T)> {
    ensure_dir(dir, sync)?;
    let tmp = tmp_path(dir, name);
    let dest = dir.join(name);
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create", &tmp))?;
        let out = write(&file, &tmp)?;
        if sync {
            file.sync_all().map_err(StoreError::io("fsync", &tmp))?;
        }
        drop(file);
        publish(&tmp, &dest)?;
        if sync {
            sync_dir(dir)?;
        }
        Ok(out)
    })();
    match result {
        Ok(out) => Ok((dest, out)),
        Err(e) => {
            if let Err(rm) = fs::remove_file(&tmp) {
                if rm.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %tmp.display(), error = %rm, "could not remove temporary file");
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        for content in ["one", "two"] {
            let (path, ()) = write_atomic(&sub, "f.txt", true, |mut f, _| {
                f.write_all(content.as_bytes()).unwrap();
                Ok(())
            })
            .unwrap();
            assert_eq!(fs::read_to_string(path).unwrap(), content);
        }
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.txt")]);
    }

    #[test]
    fn publishing_a_new_file_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let put = |content: &'static str| {
            write_atomic_new(dir.path(), "f", true, move |mut f, _| {
                f.write_all(content.as_bytes()).unwrap();
                Ok(())
            })
        };
        put("first").unwrap();
        let e = put("second").unwrap_err();
        assert!(
            matches!(&e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_file_and_removes_tmp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f", true, |mut f, _| {
            f.write_all(b"old").unwrap();
            Ok(())
        })
        .unwrap();
        let err = write_atomic(dir.path(), "f", true, |mut f, _| -> Result<()> {
            f.write_all(b"partial").unwrap();
            Err(StoreError::InvalidTimestamp { day: 0 })
        });
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
