//! The checkpoint store: per (topic, partition) the last two checkpoints,
//! each holding a partition's serialised operator state and the offset it
//! continues from, with a checksum.
//!
//! ```text
//!  <state_dir>/<sanitized topic>/p00003.ckpt        newest
//!  <state_dir>/<sanitized topic>/p00003.ckpt.prev   the one before it
//! ```
//!
//! A checkpoint is its body (what the worker streams) followed by a
//! trailer of fixed length, `\nvigil-checkpoint xxh3=<16 hex> bytes=<20
//! digits>\n`: the xxh3-64 of the body and its length. Readers verify it
//! before they decode ([`CheckpointStore::open`]) and get the body only;
//! a file without a trailer was written before checksums (format 6 and
//! before) and is read as it is, unverified.
//!
//! Saving writes a temporary file, fsyncs it (always: a checkpoint is
//! what a restart continues from, whatever the Parquet `sync` setting),
//! renames the newest to `.prev`, renames the new one into place and
//! fsyncs the directory. A newest checkpoint that is missing (a crash
//! between the renames), torn or corrupt is not the end: the worker falls
//! back to the previous one ([`Generation::Previous`]) and re-reads the
//! records after it.
//!
//! The root is a local directory or an object store ([`Root`]): there the
//! newest is first copied to `.prev` (server side), then replaced by one
//! PUT or a multipart upload (whole or not at all, as the rename is
//! locally), and read back with one GET.
//!
//! The store moves bytes; what they mean (format, offset, state) is the
//! worker's business.

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use xxhash_rust::xxh3::Xxh3;

use crate::atomic::write_atomic_keeping;
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::sanitize_source;

/// A directory of partition checkpoints. See the module docs.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: Root,
    dir: PathBuf,
}

/// A reader over one checkpoint's body: buffered from a file, or over the
/// bytes of an object.
pub type CheckpointReader = Box<dyn std::io::BufRead + Send>;

/// Which of a partition's two checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// The last one written (`p00003.ckpt`).
    Newest,
    /// The one before it (`p00003.ckpt.prev`).
    Previous,
}

impl Generation {
    /// Both, newest first: the order to try them in.
    pub const BOTH: [Generation; 2] = [Generation::Newest, Generation::Previous];

    /// The stable name (log field, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Newest => "newest",
            Generation::Previous => "previous",
        }
    }
}

/// Start of a checkpoint's trailer.
const TRAILER_TAG: &[u8] = b"\nvigil-checkpoint xxh3=";
/// Length of a checkpoint's trailer: the tag, 16 hex digits, ` bytes=`,
/// 20 decimal digits and a newline.
pub const TRAILER_LEN: usize = TRAILER_TAG.len() + 16 + 7 + 20 + 1;

fn trailer(hash: u64, len: u64) -> String {
    let t = format!(
        "{}{hash:016x} bytes={len:020}\n",
        std::str::from_utf8(TRAILER_TAG).expect("ascii")
    );
    debug_assert_eq!(t.len(), TRAILER_LEN);
    t
}

/// What the last [`TRAILER_LEN`] bytes of a file say: `None` when they
/// are not a trailer (a file written before checksums); `Some(None)` when
/// they start like one but do not parse; else the hash and length.
fn parse_trailer(t: &[u8]) -> Option<Option<(u64, u64)>> {
    let rest = t.strip_prefix(TRAILER_TAG)?;
    let parse = || {
        let s = std::str::from_utf8(rest).ok()?;
        let (hash, len) = s.strip_suffix('\n')?.split_once(" bytes=")?;
        (hash.len() == 16 && len.len() == 20)
            .then(|| Some((u64::from_str_radix(hash, 16).ok()?, len.parse().ok()?)))?
    };
    Some(parse())
}

/// Where an opened checkpoint's body is.
#[derive(Debug)]
enum Body {
    /// A local file and the length of its body (the file may be longer).
    File(std::fs::File, u64),
    /// An object's body.
    Bytes(Bytes),
}

/// One checkpoint, found and verified ([`CheckpointStore::open`]).
#[derive(Debug)]
pub struct Opened {
    body: Body,
    /// Its path (for an object store, its URL).
    pub path: PathBuf,
    /// Which generation it is.
    pub generation: Generation,
    /// Whether it had a trailer that matched (false: written before
    /// checksums, read unverified).
    pub verified: bool,
}

impl Opened {
    /// A fresh reader over the body (from its start, each call).
    pub fn reader(&self) -> Result<CheckpointReader> {
        match &self.body {
            Body::File(f, len) => {
                let mut f = f
                    .try_clone()
                    .map_err(StoreError::io("open checkpoint", &self.path))?;
                f.rewind()
                    .map_err(StoreError::io("read checkpoint", &self.path))?;
                Ok(Box::new(std::io::BufReader::with_capacity(
                    1 << 20,
                    f.take(*len),
                )))
            }
            Body::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
        }
    }

    /// Length of the body in bytes.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::File(_, n) => *n,
            Body::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A checkpoint whose trailer does not match its body.
fn corrupt(path: &Path, problem: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        problem,
    }
}

impl CheckpointStore {
    /// A store under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::at(&Root::local(dir.into()))
    }

    /// A store under `root`, a local directory (as
    /// [`CheckpointStore::new`]) or an object store.
    pub fn at(root: &Root) -> Self {
        CheckpointStore {
            dir: root.display_path(""),
            root: root.clone(),
        }
    }

    /// The key of a checkpoint of `topic`/`partition` under the root.
    fn rel(topic: &str, partition: i32, g: Generation) -> String {
        format!("{}/{}", sanitize_source(topic), Self::name(partition, g))
    }

    fn name(partition: i32, g: Generation) -> String {
        match g {
            Generation::Newest => format!("p{partition:05}.ckpt"),
            Generation::Previous => format!("p{partition:05}.ckpt.prev"),
        }
    }

    /// The store's root.
    pub(crate) fn root(&self) -> &Root {
        &self.root
    }

    /// The store's root directory (for an object store, its URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the newest checkpoint of `topic`/`partition` (for an
    /// object store, its URL).
    pub fn path(&self, topic: &str, partition: i32) -> PathBuf {
        self.path_of(topic, partition, Generation::Newest)
    }

    /// Path of generation `g` of the checkpoint of `topic`/`partition`.
    pub fn path_of(&self, topic: &str, partition: i32, g: Generation) -> PathBuf {
        if self.root.as_object().is_some() {
            return self.root.display_path(&Self::rel(topic, partition, g));
        }
        self.dir
            .join(sanitize_source(topic))
            .join(Self::name(partition, g))
    }

    /// Generation `g` of the checkpoint of `topic`/`partition`, its
    /// trailer verified: `None` when there is none,
    /// [`StoreError::Corrupt`] when it is torn or its checksum does not
    /// match. The body is not held in memory for a local file (it is
    /// read once here to check it, then by [`Opened::reader`]).
    pub fn open(&self, topic: &str, partition: i32, g: Generation) -> Result<Option<Opened>> {
        self.open_source(&sanitize_source(topic), partition, g)
    }

    /// [`CheckpointStore::open`] by the source's name in file names (the
    /// sanitized topic, as `vigil compact` finds it in dataset files).
    pub fn open_source(
        &self,
        source: &str,
        partition: i32,
        g: Generation,
    ) -> Result<Option<Opened>> {
        let rel = format!("{source}/{}", Self::name(partition, g));
        self.open_rel(&rel, g)
    }

    /// The file `rel` under the root, its trailer verified (see
    /// [`CheckpointStore::open`]), reported as generation `g`.
    pub(crate) fn open_rel(&self, rel: &str, g: Generation) -> Result<Option<Opened>> {
        let rel = rel.to_string();
        let path = match self.root.as_object() {
            Some(_) => self.root.display_path(&rel),
            None => self.dir.join(&rel),
        };
        let (body, verified) = if let Some(obj) = self.root.as_object() {
            let Some(bytes) = obj.get(&rel)? else {
                return Ok(None);
            };
            let at = bytes.len().saturating_sub(TRAILER_LEN);
            match expected(&path, bytes.len() as u64, &bytes[at..])? {
                None => (Body::Bytes(bytes), false),
                Some(want) => {
                    check_hash(&path, xxhash_rust::xxh3::xxh3_64(&bytes[..at]), want)?;
                    (Body::Bytes(bytes.slice(..at)), true)
                }
            }
        } else {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io("open checkpoint", &path)(e)),
            };
            let io = |op| StoreError::io(op, &path);
            let size = f.metadata().map_err(io("stat checkpoint"))?.len();
            let at = size.saturating_sub(TRAILER_LEN as u64);
            let mut tail = Vec::with_capacity(TRAILER_LEN);
            f.seek(std::io::SeekFrom::Start(at))
                .and_then(|_| f.read_to_end(&mut tail))
                .map_err(io("read checkpoint"))?;
            match expected(&path, size, &tail)? {
                None => (Body::File(f, size), false),
                Some(want) => {
                    f.rewind().map_err(io("read checkpoint"))?;
                    let mut h = Xxh3::new();
                    let mut r = std::io::BufReader::with_capacity(1 << 20, (&mut f).take(at));
                    loop {
                        let buf =
                            std::io::BufRead::fill_buf(&mut r).map_err(io("read checkpoint"))?;
                        if buf.is_empty() {
                            break;
                        }
                        h.update(buf);
                        let k = buf.len();
                        std::io::BufRead::consume(&mut r, k);
                    }
                    drop(r);
                    check_hash(&path, h.digest(), want)?;
                    (Body::File(f, at), true)
                }
            }
        };
        Ok(Some(Opened {
            body,
            path,
            generation: g,
            verified,
        }))
    }

    /// Removes the in-progress files of checkpoints and state files of
    /// `topic`/`partition` left by a writer that died before its rename (call it when the
    /// partition is assigned, before anything writes its checkpoint).
    /// Returns how many were removed. An object store has none: its
    /// uploads are whole or not at all.
    pub fn remove_orphans(&self, topic: &str, partition: i32) -> Result<usize> {
        if self.root.as_object().is_some() {
            return Ok(0);
        }
        let dir = self.dir.join(sanitize_source(topic));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io("read dir", &dir)(e)),
        };
        let name = Self::name(partition, Generation::Newest);
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("read dir", &dir))?;
            let file = entry.file_name();
            let target = crate::naming::tmp_target(&file.to_string_lossy()).map(str::to_string);
            if target
                .as_deref()
                .is_some_and(|t| t == name || crate::state_files::is_state_file_of(t, partition))
            {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(StoreError::io("remove", &p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The body of the newest checkpoint of `topic`/`partition` that is
    /// there and verifies (the newest, else the previous one), or `None`
    /// when there is none. For small states and tests; the worker opens
    /// and decodes generations itself ([`CheckpointStore::open`]).
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>> {
        let mut first_err = None;
        for g in Generation::BOTH {
            match self.open(topic, partition, g) {
                Ok(Some(o)) => {
                    let mut v = Vec::with_capacity(o.len() as usize);
                    o.reader()?
                        .read_to_end(&mut v)
                        .map_err(StoreError::io("read checkpoint", &o.path))?;
                    return Ok(Some(v));
                }
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(None), Err)
    }

    /// Writes `bytes` as the newest checkpoint of `topic`/`partition`
    /// (the newest one so far becomes the previous one).
    pub fn save(&self, topic: &str, partition: i32, bytes: &[u8]) -> Result<PathBuf> {
        self.save_with(topic, partition, |w| w.write_all(bytes))
            .map(|(p, _)| p)
    }

    /// Writes what `write` streams into the (buffered) writer it is given
    /// as the newest checkpoint of `topic`/`partition`, with its trailer,
    /// so a large state is never held in memory as bytes; the newest one
    /// so far becomes the previous one. Returns the path and the number of
    /// body bytes written (the trailer adds [`TRAILER_LEN`]).
    pub fn save_with(
        &self,
        topic: &str,
        partition: i32,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(PathBuf, u64)> {
        let body = |w: &mut dyn std::io::Write| write_with_trailer(w, write);
        if let Some(obj) = self.root.as_object() {
            // The newest becomes the previous (a server-side copy), then
            // one PUT or a multipart upload (never more than a part in
            // memory) replaces the newest whole or not at all.
            let rel = Self::rel(topic, partition, Generation::Newest);
            obj.copy(&rel, &Self::rel(topic, partition, Generation::Previous))?;
            let mut n = 0;
            obj.put_streamed(&rel, |w| {
                n = body(w)?;
                Ok(())
            })?;
            return Ok((self.root.display_path(&rel), n));
        }
        let dir = self.dir.join(sanitize_source(topic));
        let name = Self::name(partition, Generation::Newest);
        let prev = Self::name(partition, Generation::Previous);
        write_atomic_keeping(&dir, &name, &prev, true, |f, tmp| {
            let mut f = f;
            body(&mut f).map_err(StoreError::io("write", tmp))
        })
    }
}

/// Writes what `write` streams into `w`, then the trailer of what it
/// wrote; returns the number of body bytes.
pub(crate) fn write_with_trailer(
    w: &mut dyn std::io::Write,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    // Buffered before it is counted and hashed: a serializer's many
    // small writes reach the hash as 1 MiB chunks.
    let mut b = std::io::BufWriter::with_capacity(
        1 << 20,
        Counted {
            inner: w,
            bytes: 0,
            hash: Xxh3::new(),
        },
    );
    write(&mut b)?;
    let c = b
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    let t = trailer(c.hash.digest(), c.bytes);
    c.inner.write_all(t.as_bytes())?;
    c.inner.flush()?;
    Ok(c.bytes)
}

/// What the trailer (`tail`, the last [`TRAILER_LEN`] bytes) of a
/// checkpoint of `size` bytes expects of its body: `None` for a file
/// without a trailer (written before checksums), else the body's xxh3.
/// A trailer that does not parse, or whose length is not the body's (a
/// torn file), is [`StoreError::Corrupt`].
fn expected(path: &Path, size: u64, tail: &[u8]) -> Result<Option<u64>> {
    if size < TRAILER_LEN as u64 {
        return Ok(None);
    }
    let body = size - TRAILER_LEN as u64;
    match parse_trailer(tail) {
        None => Ok(None),
        Some(None) => Err(corrupt(path, "its trailer does not parse".into())),
        Some(Some((_, len))) if len != body => Err(corrupt(
            path,
            format!("its trailer says {len} bytes, the body has {body} (torn)"),
        )),
        Some(Some((hash, _))) => Ok(Some(hash)),
    }
}

/// [`StoreError::Corrupt`] unless the body's xxh3 is what the trailer says.
fn check_hash(path: &Path, got: u64, want: u64) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(corrupt(
        path,
        format!("xxh3 of its body is {got:016x}, its trailer says {want:016x}"),
    ))
}

/// A writer that counts and hashes the bytes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
    hash: Xxh3,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "rmm.telemetry.v1";

    fn read_all(o: &Opened) -> Vec<u8> {
        let mut v = Vec::new();
        o.reader().unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn streamed_save_counts_its_bytes() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path());
        let (path, n) = s
            .save_with("t", 0, |w| {
                for _ in 0..1000 {
                    w.write_all(b"0123456789")?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(
            std::fs::read(path).unwrap().len(),
            10_000 + TRAILER_LEN,
            "body and trailer"
        );
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
        let o = s.open("t", 0, Generation::Newest).unwrap().unwrap();
        assert!(o.verified);
        assert_eq!(read_all(&o).len(), 10_000);
        assert_eq!(read_all(&o), read_all(&o), "each reader starts over");
        assert!(s.open("t", 9, Generation::Newest).unwrap().is_none());
    }

    #[test]
    fn save_keeps_the_previous_generation() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path());
        assert_eq!(s.load(T, 3).unwrap(), None);
        s.save(T, 3, b"one").unwrap();
        assert!(s.open(T, 3, Generation::Previous).unwrap().is_none());
        s.save(T, 3, b"two").unwrap();
        s.save(T, 3, b"three").unwrap();
        assert_eq!(s.load(T, 3).unwrap().as_deref(), Some(&b"three"[..]));
        let prev = s.open(T, 3, Generation::Previous).unwrap().unwrap();
        assert_eq!(read_all(&prev), b"two");
        assert_eq!(s.load(T, 4).unwrap(), None);
        let mut names: Vec<_> = std::fs::read_dir(d.path().join(T))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["p00003.ckpt", "p00003.ckpt.prev"]);
    }

    /// Every single-byte corruption of the body or trailer, and every
    /// truncation, is caught by the newest's trailer; `load` then falls
    /// back to the previous generation.
    #[test]
    fn a_corrupt_or_torn_newest_is_refused_and_load_falls_back() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path());
        s.save(T, 1, br#"{"next_offset":10}"#).unwrap();
        s.save(T, 1, br#"{"next_offset":20}"#).unwrap();
        let newest = s.path(T, 1);
        let good = std::fs::read(&newest).unwrap();
        let mut cases: Vec<Vec<u8>> = (0..good.len())
            .map(|i| {
                let mut b = good.clone();
                b[i] ^= 0x01;
                b
            })
            .collect();
        // Torn: cut anywhere that still leaves a trailer-sized tail, or
        // a second trailer-shaped write after a short body.
        cases.extend((TRAILER_LEN..good.len()).map(|n| good[..n].to_vec()));
        let mut refused = 0;
        for bad in &cases {
            std::fs::write(&newest, bad).unwrap();
            match s.open(T, 1, Generation::Newest) {
                Err(StoreError::Corrupt { .. }) => refused += 1,
                // Without a trailer it is read unverified; the JSON then
                // does not decode (the worker falls back on that too).
                Ok(Some(o)) => {
                    assert!(
                        !o.verified,
                        "a changed file verified: {:?}",
                        String::from_utf8_lossy(bad)
                    );
                    assert!(serde_json::from_slice::<serde_json::Value>(&read_all(&o)).is_err());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                s.load(T, 1).unwrap().as_deref(),
                if s.open(T, 1, Generation::Newest).is_err() {
                    Some(&br#"{"next_offset":10}"#[..])
                } else {
                    Some(&bad[..])
                }
            );
        }
        // Every bit flip is refused by the checksum or the trailer's form,
        // but those in the trailer's tag (the file then reads as one
        // without a trailer, whose JSON does not decode: checked above).
        let flips_refused = cases[..good.len()]
            .iter()
            .filter(|b| {
                std::fs::write(&newest, b).unwrap();
                matches!(
                    s.open(T, 1, Generation::Newest),
                    Err(StoreError::Corrupt { .. })
                )
            })
            .count();
        assert_eq!(flips_refused, good.len() - TRAILER_TAG.len());
        assert!(refused >= flips_refused);
        // Missing newest (a crash between the renames): the previous.
        std::fs::remove_file(&newest).unwrap();
        assert_eq!(
            s.load(T, 1).unwrap().as_deref(),
            Some(&br#"{"next_offset":10}"#[..])
        );
        // Both corrupt: the newest's error.
        std::fs::write(&newest, &cases[0]).unwrap();
        std::fs::write(s.path_of(T, 1, Generation::Previous), &cases[1]).unwrap();
        let e = s.load(T, 1).unwrap_err().to_string();
        assert!(e.contains("p00001.ckpt is corrupt"), "{e}");
    }

    #[test]
    fn orphaned_temporary_files_of_the_partition_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path());
        s.save(T, 5, b"kept").unwrap();
        let dir = d.path().join(T);
        let orphan = crate::atomic::tmp_path(&dir, "p00005.ckpt");
        std::fs::write(&orphan, b"half").unwrap();
        let other = crate::atomic::tmp_path(&dir, "p00006.ckpt");
        std::fs::write(&other, b"another partition's").unwrap();
        assert_eq!(s.remove_orphans(T, 5).unwrap(), 1);
        assert!(!orphan.exists() && other.exists());
        assert_eq!(s.load(T, 5).unwrap().unwrap(), b"kept");
        assert_eq!(s.remove_orphans(T, 7).unwrap(), 0);
        assert_eq!(s.remove_orphans("never.written", 0).unwrap(), 0);
    }

    #[test]
    fn a_checkpoint_written_before_checksums_reads_unverified() {
        let d = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(d.path());
        let legacy = br#"{"format":6,"next_offset":5,"pipeline":{}}"#;
        std::fs::create_dir_all(d.path().join(T)).unwrap();
        std::fs::write(s.path(T, 2), legacy).unwrap();
        let o = s.open(T, 2, Generation::Newest).unwrap().unwrap();
        assert!(!o.verified);
        assert_eq!(read_all(&o), legacy);
        // The next save keeps it as the previous generation.
        s.save(T, 2, b"new").unwrap();
        let p = s.open(T, 2, Generation::Previous).unwrap().unwrap();
        assert_eq!(read_all(&p), legacy);
    }

    #[test]
    fn trailer_has_its_fixed_length_and_parses_back() {
        for (h, n) in [(0, 0), (u64::MAX, u64::MAX), (0x0123_4567_89ab_cdef, 42)] {
            let t = trailer(h, n);
            assert_eq!(t.len(), TRAILER_LEN);
            assert_eq!(parse_trailer(t.as_bytes()), Some(Some((h, n))));
        }
        assert_eq!(parse_trailer(b"}\n"), None);
        let mut t = trailer(1, 2).into_bytes();
        t[TRAILER_LEN - 3] = b'x';
        assert_eq!(parse_trailer(&t), Some(None));
    }
}
