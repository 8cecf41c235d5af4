//! State files: the partition states a checkpoint names instead of
//! holding them, so that a checkpoint writes what changed (a delta) and
//! not the whole state each time.
//!
//! ```text
//!  <state_dir>/<sanitized topic>/p00003.ckpt                  names a base and its deltas
//!  <state_dir>/<sanitized topic>/p00003-e7-5f3a9c01-000001.state   a base (whole state)
//!  <state_dir>/<sanitized topic>/p00003-e7-5f3a9c01-000002.state   a delta
//! ```
//!
//! A state file is written once, under a name no other writer uses (its
//! writer's owner epoch, a random token of the writer and a counter),
//! and never changed: whole or not at all (a temporary file, fsynced
//! whatever the Parquet `sync` setting, then renamed; one PUT or a
//! multipart upload on an object store), with the checkpoint trailer, so
//! reading verifies it like a checkpoint ([`CheckpointStore::open`]). A
//! checkpoint naming it is written only after it is durable. Files no
//! checkpoint generation names any more are removed by the writer
//! ([`CheckpointStore::remove_state_file`]).
//!
//! What the bytes mean is the worker's business, as for checkpoints.

use std::path::PathBuf;

use crate::atomic::write_atomic;
use crate::checkpoint::{write_with_trailer, CheckpointStore, Generation, Opened};
use crate::error::{Result, StoreError};
use crate::naming::sanitize_source;

/// File name suffix of state files.
const SUFFIX: &str = ".state";

/// Whether `name` is the name of a state file of `partition` (see the
/// module docs): `p<partition, 5 digits>-` then ASCII letters, digits and
/// `-`, then `.state`. Names read from a checkpoint are checked with it
/// before they are opened, so a damaged checkpoint cannot name a file
/// elsewhere.
pub fn is_state_file_of(name: &str, partition: i32) -> bool {
    let Some(rest) = name.strip_prefix(&format!("p{partition:05}-")) else {
        return false;
    };
    let Some(id) = rest.strip_suffix(SUFFIX) else {
        return false;
    };
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The name of state file number `n` of `partition` written by the
/// writer `owner` (ASCII letters, digits and `-`; unique per writer).
pub fn state_file_name(partition: i32, owner: &str, n: u64) -> String {
    format!("p{partition:05}-{owner}-{n:06}{SUFFIX}")
}

impl CheckpointStore {
    fn state_rel(topic: &str, name: &str) -> String {
        format!("{}/{name}", sanitize_source(topic))
    }

    /// Path of state file `name` of `topic` (for an object store, its
    /// URL).
    pub fn state_file_path(&self, topic: &str, name: &str) -> PathBuf {
        self.root().display_path(&Self::state_rel(topic, name))
    }

    /// Writes what `write` streams as state file `name` of `topic`, with
    /// its trailer, whole or not at all and durable when it returns.
    /// Returns its path and the number of body bytes.
    pub fn save_state_file(
        &self,
        topic: &str,
        name: &str,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(PathBuf, u64)> {
        let rel = Self::state_rel(topic, name);
        if let Some(obj) = self.root().as_object() {
            let mut n = 0;
            obj.put_streamed(&rel, |w| {
                n = write_with_trailer(w, write)?;
                Ok(())
            })?;
            return Ok((self.root().display_path(&rel), n));
        }
        let dir = self.dir().join(sanitize_source(topic));
        write_atomic(&dir, name, true, |f, tmp| {
            let mut f = f;
            write_with_trailer(&mut f, write).map_err(StoreError::io("write", tmp))
        })
    }

    /// State file `name` of `topic`, its trailer verified: `None` when it
    /// is missing, [`StoreError::Corrupt`] when it is torn or damaged.
    /// Unlike a checkpoint, a state file always has its trailer: one
    /// without is torn.
    pub fn open_state_file(&self, topic: &str, name: &str) -> Result<Option<Opened>> {
        let o = self.open_rel(&Self::state_rel(topic, name), Generation::Newest)?;
        match o {
            Some(o) if !o.verified => Err(StoreError::Corrupt {
                path: o.path,
                problem: "state file without its trailer (torn)".into(),
            }),
            o => Ok(o),
        }
    }

    /// Names of the state files of `topic`/`partition` there are, sorted.
    pub fn state_files(&self, topic: &str, partition: i32) -> Result<Vec<String>> {
        let source = sanitize_source(topic);
        let mut names: Vec<String> = match self.root().as_object() {
            Some(obj) => {
                let (_, files) = obj.list_dir(&source)?;
                files
                    .into_iter()
                    .map(|o| o.location.as_ref().to_string())
                    .collect()
            }
            None => {
                let dir = self.dir().join(&source);
                match std::fs::read_dir(&dir) {
                    Ok(entries) => entries
                        .map(|e| {
                            e.map(|e| e.file_name().to_string_lossy().into_owned())
                                .map_err(StoreError::io("read dir", &dir))
                        })
                        .collect::<Result<_>>()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(StoreError::io("read dir", &dir)(e)),
                }
            }
        };
        names.retain(|n| is_state_file_of(n, partition));
        names.sort();
        Ok(names)
    }

    /// Removes state file `name` of `topic` (nothing when it is gone).
    pub fn remove_state_file(&self, topic: &str, name: &str) -> Result<()> {
        let rel = Self::state_rel(topic, name);
        if let Some(obj) = self.root().as_object() {
            return obj.delete(&rel);
        }
        let path = self.dir().join(&rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Root;
    use std::io::Read as _;

    #[test]
    fn names_are_checked_before_they_are_opened() {
        let n = state_file_name(3, "e7-5f3a9c01", 2);
        assert_eq!(n, "p00003-e7-5f3a9c01-000002.state");
        assert!(is_state_file_of(&n, 3));
        assert!(!is_state_file_of(&n, 4));
        for bad in [
            "p00003-.state",
            "p00003-../x.state",
            "p00003-a/b.state",
            "p00003-a.ckpt",
            "p00003.ckpt",
            "p00003-a.state.prev",
        ] {
            assert!(!is_state_file_of(bad, 3), "{bad}");
        }
    }

    #[test]
    fn state_files_round_trip_list_and_go_on_disk_and_object_store() {
        let dir = tempfile::tempdir().unwrap();
        for root in Root::test_pair(dir.path()) {
            let s = CheckpointStore::at(&root);
            assert!(s.state_files("rmm.t", 3).unwrap().is_empty());
            let a = state_file_name(3, "e1-aa", 1);
            let b = state_file_name(3, "e1-aa", 2);
            let other = state_file_name(4, "e1-aa", 1);
            for (n, body) in [(&a, "base"), (&b, "delta"), (&other, "x")] {
                let (_, len) = s
                    .save_state_file("rmm.t", n, |w| w.write_all(body.as_bytes()))
                    .unwrap();
                assert_eq!(len, body.len() as u64);
            }
            // A checkpoint of the partition is not a state file.
            s.save("rmm.t", 3, b"{}").unwrap();
            assert_eq!(
                s.state_files("rmm.t", 3).unwrap(),
                vec![a.clone(), b.clone()]
            );
            let o = s.open_state_file("rmm.t", &b).unwrap().unwrap();
            assert!(o.verified);
            let mut got = String::new();
            o.reader().unwrap().read_to_string(&mut got).unwrap();
            assert_eq!(got, "delta");
            s.remove_state_file("rmm.t", &a).unwrap();
            s.remove_state_file("rmm.t", &a).unwrap();
            assert_eq!(s.state_files("rmm.t", 3).unwrap(), vec![b.clone()]);
            assert!(s.open_state_file("rmm.t", &a).unwrap().is_none());
        }
    }

    #[test]
    fn a_damaged_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(dir.path());
        let n = state_file_name(0, "e1-aa", 1);
        let (path, _) = s
            .save_state_file("t", &n, |w| w.write_all(&[7u8; 4096]))
            .unwrap();
        let mut b = std::fs::read(&path).unwrap();
        b[100] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(
            s.open_state_file("t", &n),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::write(&path, &b[..2000]).unwrap();
        assert!(matches!(
            s.open_state_file("t", &n),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
