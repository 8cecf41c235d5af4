//! Replacing a source's earlier output: a replay (`vigil ingest`, `vigil
//! demo`) owns every file named after its source, so before it writes it
//! removes the files an earlier run of the same source left, which may
//! cover other ranges (a different flush cadence, a grown input) and would
//! otherwise duplicate rows.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;

use crate::bound::FULL_DIR;
use crate::dlq::DLQ_DIR;
use crate::error::{Result, StoreError};
use crate::intent::DatasetDays;
use crate::location::Root;
use crate::naming::{partition_dir, sanitize_source};
use crate::schema::Dataset;

/// Where a dataset, dead-letter or route file of a source sits in its
/// partition's output sequence (`naming` module docs): a range of records
/// starting at `first` sits at (`first`, 0), the n-th tick file after
/// record `last` at (`last`, n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceFile {
    /// The source partition.
    pub partition: i32,
    /// The first offset of a record range, or the record a tick file
    /// follows.
    pub offset: i64,
    /// 0 for a record range, n ≥ 1 for a tick file.
    pub tick: u32,
}

impl SourceFile {
    /// Whether the file lies after the point a checkpoint reaches: its
    /// partition continues at record `next_offset`, and the state holds
    /// the first `ticks` tick files after record `next_offset - 1`. A
    /// restart removes exactly these files.
    pub fn after(&self, next_offset: i64, ticks: u32) -> bool {
        (self.offset, self.tick) > (next_offset - 1, ticks)
    }
}

/// Is `name` a file that [`crate::SourceRange::file_name`] makes for
/// `prefix`, the sanitized `source` and `ext`, for any partition and range
/// (tick files included)?
pub fn is_source_file(name: &str, prefix: &str, source: &str, ext: &str) -> bool {
    parse_source_file(name, prefix, source, ext).is_some()
}

/// Where a file that [`crate::SourceRange::file_name`] makes for `prefix`,
/// `source` and `ext` sits; `None` for any other name.
pub fn parse_source_file(name: &str, prefix: &str, source: &str, ext: &str) -> Option<SourceFile> {
    let head = format!("{prefix}-{}-p", sanitize_source(source));
    let rest = name.strip_prefix(&head)?.strip_suffix(&format!(".{ext}"))?;
    let parts: Vec<&str> = rest.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let [partition, first, last] = parts.as_slice() else {
        return None;
    };
    if partition.len() < 5 || !digits(partition) || first.len() != 20 || !digits(first) {
        return None;
    }
    let tick = match last.strip_prefix('t') {
        Some(n) if n.len() == 19 && digits(n) => n.parse().ok().filter(|&n: &u32| n > 0)?,
        None if last.len() == 20 && digits(last) => 0,
        _ => return None,
    };
    Some(SourceFile {
        partition: partition.parse().ok()?,
        offset: first.parse().ok()?,
        tick,
    })
}

/// Removes every Parquet, dead-letter and per-route alert file of
/// `source` under `root` (all partitions and ranges, every date), and the
/// full copies of its
/// truncated dead letters (`dlq/full/`). Returns how many were removed.
pub fn remove_source_files(root: &Path, source: &str) -> Result<usize> {
    let n = remove_matching(root, source, None, |_| true)?;
    Ok(n + remove_full_copies(root, source)?)
}

/// Removes the full copies (`dlq/full/full-<source>-p...`) of `source`.
/// Only replays do this: a worker's dead letters on the DLQ topic name
/// their copies, which must outlive a restart of the partition (the
/// reprocessed record rewrites the same name).
fn remove_full_copies(root: &Path, source: &str) -> Result<usize> {
    let dir = root.join(DLQ_DIR).join(FULL_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("read dir", &dir)(e)),
    };
    let head = format!("full-{}-p", sanitize_source(source));
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("read dir", &dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        // p<partition>-<offset:020>-<n:04>.<ext>: digits and dashes only
        // up to the extension, so "demo" never matches "demo-2"'s copies.
        let stem = rest.split('.').next().unwrap_or("");
        if stem.split('-').count() == 3 && stem.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            let p = entry.path();
            fs::remove_file(&p).map_err(StoreError::io("remove", &p))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the Parquet and dead-letter files of one partition of `source`
/// that lie after the point its checkpoint reaches (record `next_offset`
/// next, `ticks` tick files after the record before it; see
/// [`SourceFile::after`]): output published after the partition's last
/// checkpoint, which processing the records and ticks again will publish
/// again (possibly over other ranges). Returns how many were removed.
pub fn remove_partition_files_from(
    root: &Path,
    source: &str,
    partition: i32,
    next_offset: i64,
    ticks: u32,
    only: Option<&DatasetDays>,
) -> Result<usize> {
    remove_matching(root, source, only, |f| {
        f.partition == partition && f.after(next_offset, ticks)
    })
}

/// [`remove_partition_files_from`] under `root`, a local directory or an
/// object store. With `only` (from the partition's intent record,
/// [`crate::intent`]) just those days' directories of each dataset are
/// listed, with `dlq/` and `routes/`; without it, every day of every
/// dataset. On an object store the dataset, `dlq/` and `routes/`
/// prefixes are listed and each matching object deleted (one request
/// each); a listing shows every object whose PUT completed, so the sweep
/// sees all output published after the checkpoint.
pub fn remove_partition_files_at(
    root: &Root,
    source: &str,
    partition: i32,
    next_offset: i64,
    ticks: u32,
    only: Option<&DatasetDays>,
) -> Result<usize> {
    let Some(obj) = root.as_object() else {
        let dir = root.display_path("");
        return remove_partition_files_from(&dir, source, partition, next_offset, ticks, only);
    };
    let matches = |key: &str| -> bool {
        let parts: Vec<&str> = key.split('/').collect();
        let parsed = match parts.as_slice() {
            [ds, _, name] if Dataset::ALL.iter().any(|d| d.name() == *ds) => {
                parse_source_file(name, "part", source, "parquet")
            }
            [dlq, name] if *dlq == DLQ_DIR => parse_source_file(name, "dlq", source, "jsonl"),
            [routes, _, name] if *routes == ROUTES_DIR => ROUTE_FILE_EXTENSIONS
                .iter()
                .find_map(|ext| parse_source_file(name, ROUTE_FILE_PREFIX, source, ext)),
            _ => None,
        };
        parsed.is_some_and(|f| f.partition == partition && f.after(next_offset, ticks))
    };
    let mut removed = 0;
    let mut prefixes: Vec<String> = Vec::new();
    for d in Dataset::ALL {
        match only {
            None => prefixes.push(format!("{}/", d.name())),
            Some(days) => {
                for day in days.days(d) {
                    prefixes.push(format!("{}/{}/", d.name(), partition_dir(day)?));
                }
            }
        }
    }
    prefixes.extend([DLQ_DIR, ROUTES_DIR].map(|p| format!("{p}/")));
    for prefix in &prefixes {
        for o in obj.list(prefix)? {
            let key = o.location.as_ref();
            if matches(key) {
                obj.delete(key)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn remove_matching(
    root: &Path,
    source: &str,
    only: Option<&DatasetDays>,
    keep_out: impl Fn(&SourceFile) -> bool,
) -> Result<usize> {
    let mut removed = 0;
    let mut sweep = |dir: &Path, prefix: &str, ext: &str| -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("read dir", dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(StoreError::io("read dir", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // An in-progress file of a matching range is an orphan of a
            // writer that died before its rename: nothing else writes the
            // partition's files while it is swept.
            let target = crate::naming::tmp_target(&name).unwrap_or(&name);
            if parse_source_file(target, prefix, source, ext).is_some_and(|f| keep_out(&f)) {
                let p = entry.path();
                fs::remove_file(&p).map_err(StoreError::io("remove", &p))?;
                removed += 1;
            }
        }
        Ok(())
    };
    for ds in Dataset::ALL {
        let dir = root.join(ds.name());
        if let Some(days) = only {
            for day in days.days(ds) {
                sweep(&dir.join(partition_dir(day)?), "part", "parquet")?;
            }
            continue;
        }
        let dates = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("read dir", &dir)(e)),
        };
        for d in dates {
            let d = d.map_err(StoreError::io("read dir", &dir))?;
            if d.path().is_dir() {
                sweep(&d.path(), "part", "parquet")?;
            }
        }
    }
    sweep(&root.join(DLQ_DIR), "dlq", "jsonl")?;
    let routes = root.join(ROUTES_DIR);
    match fs::read_dir(&routes) {
        Ok(dirs) => {
            for d in dirs {
                let d = d.map_err(StoreError::io("read dir", &routes))?;
                if d.path().is_dir() {
                    for ext in ROUTE_FILE_EXTENSIONS {
                        sweep(&d.path(), ROUTE_FILE_PREFIX, ext)?;
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("read dir", &routes)(e)),
    }
    Ok(removed)
}

/// Directory of the per-route alert files of replays, under the root:
/// `routes/<route>/alerts-<source>-p<partition>-<first>-<last>.<ext>`.
pub const ROUTES_DIR: &str = "routes";
/// Name prefix of the per-route alert files.
pub const ROUTE_FILE_PREFIX: &str = "alerts";
/// Extensions the per-route alert files may have (one per encoding
/// family): the files a source replaced are found by them.
pub const ROUTE_FILE_EXTENSIONS: [&str; 2] = ["jsonl", "cef"];

/// Writes `bytes` as `dir/name`, atomically (tmp + fsync when `sync` +
/// rename), as every dataset file is written. Returns the final path.
pub fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<PathBuf> {
    let (path, ()) = write_atomic(dir, name, sync, |mut f, tmp| {
        f.write_all(bytes).map_err(StoreError::io("write", tmp))
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_source() {
        let n = "part-demo-p00000-00000000000000000000-00000000000000000041.parquet";
        assert!(is_source_file(n, "part", "demo", "parquet"));
        assert!(!is_source_file(n, "part", "dem", "parquet"));
        assert!(!is_source_file(
            "part-demo-p1-p00000-00000000000000000000-00000000000000000041.parquet",
            "part",
            "demo",
            "parquet"
        ));
        assert!(!is_source_file(n, "dlq", "demo", "jsonl"));
        assert!(!is_source_file(
            ".tmp-part-demo-p00000-00000000000000000000-00000000000000000041.parquet.1-0.partial",
            "part",
            "demo",
            "parquet"
        ));
    }

    #[test]
    fn removes_a_partitions_files_from_an_offset() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("alerts/date=2026-11-02");
        fs::create_dir_all(&d).unwrap();
        let f =
            |p: i32, a: i64, b: i64| d.join(format!("part-rmm.t-p{p:05}-{a:020}-{b:020}.parquet"));
        let (old, new, other) = (f(1, 0, 9), f(1, 10, 19), f(2, 10, 19));
        for x in [&old, &new, &other] {
            fs::write(x, "x").unwrap();
        }
        assert_eq!(
            remove_partition_files_from(root.path(), "rmm.t", 1, 10, 0, None).unwrap(),
            1
        );
        assert!(old.exists() && !new.exists() && other.exists());
        assert_eq!(
            parse_source_file(
                "part-rmm.t-p00002-00000000000000000010-00000000000000000019.parquet",
                "part",
                "rmm.t",
                "parquet"
            ),
            Some(SourceFile {
                partition: 2,
                offset: 10,
                tick: 0
            })
        );
    }

    #[test]
    fn removes_a_sources_files_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("aggregates/date=2026-11-02");
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(root.path().join("dlq")).unwrap();
        let mine = d.join("part-demo-p00000-00000000000000000000-00000000000000000041.parquet");
        let other = d.join("part-other-p00000-00000000000000000000-00000000000000000041.parquet");
        let dlq = root
            .path()
            .join("dlq/dlq-demo-p00000-00000000000000000000-00000000000000000041.jsonl");
        let full = root.path().join("dlq/full");
        fs::create_dir_all(&full).unwrap();
        let my_copy = full.join("full-demo-p00000-00000000000000000007-0000.pb");
        let other_copy = full.join("full-demo-2-p00000-00000000000000000007-0000.pb");
        for f in [&mine, &other, &dlq, &my_copy, &other_copy] {
            fs::write(f, "x").unwrap();
        }
        // A worker's partition sweep leaves full copies alone.
        assert_eq!(
            remove_partition_files_from(root.path(), "demo", 0, 0, 0, None).unwrap(),
            2
        );
        assert!(my_copy.exists());
        for f in [&mine, &dlq] {
            fs::write(f, "x").unwrap();
        }
        assert_eq!(remove_source_files(root.path(), "demo").unwrap(), 3);
        assert!(!mine.exists() && !dlq.exists() && other.exists());
        assert!(!my_copy.exists() && other_copy.exists());
        assert_eq!(
            remove_source_files(&root.path().join("missing"), "demo").unwrap(),
            0
        );
    }
}
