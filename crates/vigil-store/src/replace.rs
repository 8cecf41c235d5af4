//! Replacing a source's earlier output: a replay (`vigil ingest`, `vigil
//! demo`) owns every file named after its source, so before it writes it
//! removes the files an earlier run of the same source left, which may
//! cover other ranges (a different flush cadence, a grown input) and would
//! otherwise duplicate rows.

use std::fs;
use std::path::Path;

use crate::dlq::DLQ_DIR;
use crate::error::{Result, StoreError};
use crate::naming::sanitize_source;
use crate::schema::Dataset;

/// Is `name` a file that [`crate::SourceRange::file_name`] makes for
/// `prefix`, the sanitized `source` and `ext`, for any partition and range?
pub fn is_source_file(name: &str, prefix: &str, source: &str, ext: &str) -> bool {
    let head = format!("{prefix}-{}-p", sanitize_source(source));
    let Some(rest) = name.strip_prefix(&head) else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(&format!(".{ext}")) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 3
        && parts[0].len() >= 5
        && parts[1].len() == 20
        && parts[2].len() == 20
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes every Parquet and dead-letter file of `source` under `root`
/// (all partitions and ranges, every date). Returns how many were removed.
pub fn remove_source_files(root: &Path, source: &str) -> Result<usize> {
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
            if is_source_file(&name.to_string_lossy(), prefix, source, ext) {
                let p = entry.path();
                fs::remove_file(&p).map_err(StoreError::io("remove", &p))?;
                removed += 1;
            }
        }
        Ok(())
    };
    for ds in Dataset::ALL {
        let dir = root.join(ds.name());
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
    Ok(removed)
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
        for f in [&mine, &other, &dlq] {
            fs::write(f, "x").unwrap();
        }
        assert_eq!(remove_source_files(root.path(), "demo").unwrap(), 2);
        assert!(!mine.exists() && !dlq.exists() && other.exists());
        assert_eq!(
            remove_source_files(&root.path().join("missing"), "demo").unwrap(),
            0
        );
    }
}
