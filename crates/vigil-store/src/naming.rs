//! Deterministic names: which input range a file holds, the file name
//! derived from it, and the `date=YYYY-MM-DD` partition directory.
//!
//! A file's name depends only on (source, partition, first offset, last
//! offset), so replaying the same input range after a crash rewrites the
//! same file instead of adding a duplicate.
//!
//! Output that processing time alone produced while a partition received
//! no record (windows closed by the idle timeout, `agent_offline` events)
//! has no record range of its own. A worker publishes it as a **tick
//! file**, named after the last record it follows and its number among
//! the tick files after that record:
//! `<prefix>-<source>-p<partition:05>-<last:020>-t<n:019>.<ext>`
//! ([`SourceRange::tick`]). Ordered by (offset, tick number), with a record
//! range starting at (first, 0), a partition's files form one sequence;
//! its checkpoint records how far into it the state reaches, and a restart
//! sweeps exactly the files after that point (`replace`).

use crate::error::{Result, StoreError};

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// Prefix of in-progress files. Together with [`TMP_SUFFIX`] it keeps
/// readers from ever picking one up: pyarrow and Spark skip names that
/// start with `.`, and the suffix keeps `*.parquet` globs (DataFusion,
/// DuckDB) from matching.
pub const TMP_PREFIX: &str = ".tmp-";

/// Suffix of in-progress files, see [`TMP_PREFIX`].
pub const TMP_SUFFIX: &str = ".partial";

/// The final name an in-progress file (`.tmp-<name>.<pid>-<n>.partial`,
/// see `atomic::tmp_path`) was to be renamed to, or `None` when `file` is
/// not an in-progress file.
pub fn tmp_target(file: &str) -> Option<&str> {
    let inner = file.strip_prefix(TMP_PREFIX)?.strip_suffix(TMP_SUFFIX)?;
    let (name, writer) = inner.rsplit_once('.')?;
    let (pid, n) = writer.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then_some(name)
}

/// Longest sanitized source kept verbatim in a file name (bytes); longer
/// ones are cut and get a hash suffix.
const MAX_SOURCE_LEN: usize = 100;

/// The input range whose output a flush writes: a Kafka topic partition
/// and its first and last offsets (inclusive), or an input file (`source` =
/// file stem, partition 0, offsets = record indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceRange<'a> {
    /// Kafka topic, or the stem of the input file.
    pub source: &'a str,
    /// Kafka partition (0 for files). Must be ≥ 0.
    pub partition: i32,
    /// First offset of the range (inclusive). Must be ≥ 0.
    pub first_offset: i64,
    /// Last offset of the range (inclusive). Must be ≥ `first_offset`.
    pub last_offset: i64,
    /// 0 for a range of records. n ≥ 1 for the n-th tick file after the
    /// record `last_offset` (= `first_offset`): output that processing
    /// time produced after that record, before the next one (module
    /// docs).
    pub tick: u32,
}

impl SourceRange<'_> {
    /// Checks the range: non-empty source, partition and offsets ≥ 0,
    /// `first_offset <= last_offset`.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.source.is_empty() {
            Some("source is empty")
        } else if self.partition < 0 {
            Some("partition is negative")
        } else if self.first_offset < 0 {
            Some("first_offset is negative")
        } else if self.first_offset > self.last_offset {
            Some("first_offset is greater than last_offset")
        } else if self.tick > 0 && self.first_offset != self.last_offset {
            Some("a tick file follows one record: first_offset must equal last_offset")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(StoreError::InvalidRange {
                source_name: self.source.to_owned(),
                partition: self.partition,
                first_offset: self.first_offset,
                last_offset: self.last_offset,
                problem,
            }),
            None => Ok(()),
        }
    }

    /// A range of records `first..=last` of `partition`.
    pub fn records(source: &str, partition: i32, first: i64, last: i64) -> SourceRange<'_> {
        SourceRange {
            source,
            partition,
            first_offset: first,
            last_offset: last,
            tick: 0,
        }
    }

    /// The `n`-th tick file (n ≥ 1) after record `after` of `partition`.
    pub fn ticks(source: &str, partition: i32, after: i64, n: u32) -> SourceRange<'_> {
        SourceRange {
            source,
            partition,
            first_offset: after,
            last_offset: after,
            tick: n,
        }
    }

    /// The deterministic file name of this range:
    /// `<prefix>-<source>-p<partition:05>-<first:020>-<last:020>.<ext>`
    /// with the source sanitized by [`sanitize_source`], or for a tick
    /// file `<prefix>-<source>-p<partition:05>-<last:020>-t<n:019>.<ext>`.
    pub fn file_name(&self, prefix: &str, ext: &str) -> Result<String> {
        self.validate()?;
        if self.tick > 0 {
            return Ok(format!(
                "{prefix}-{}-p{:05}-{:020}-t{:019}.{ext}",
                sanitize_source(self.source),
                self.partition,
                self.last_offset,
                self.tick
            ));
        }
        Ok(format!(
            "{prefix}-{}-p{:05}-{:020}-{:020}.{ext}",
            sanitize_source(self.source),
            self.partition,
            self.first_offset,
            self.last_offset
        ))
    }
}

/// Makes a source name safe for a file name: ASCII letters, digits, `.`,
/// `_` and `-` are kept (every legal Kafka topic name is kept as is); any
/// other character becomes `_`, a leading `.` becomes `_`, and names longer
/// than 100 bytes are cut. When anything changed, `~` and an FNV-1a hash of
/// the original are appended, so two different sources never share a name.
pub fn sanitize_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len().min(MAX_SOURCE_LEN) + 9);
    let mut changed = false;
    for (i, c) in source.chars().enumerate() {
        if out.len() >= MAX_SOURCE_LEN {
            changed = true;
            break;
        }
        let keep = c.is_ascii_alphanumeric() || matches!(c, '_' | '-') || (c == '.' && i > 0);
        if keep {
            out.push(c);
        } else {
            out.push('_');
            changed = true;
        }
    }
    if out.is_empty() {
        out.push('_');
        changed = true;
    }
    if changed {
        use std::fmt::Write as _;
        let _ = write!(out, "~{:08x}", fnv1a32(source.as_bytes()));
    }
    out
}

/// 32-bit FNV-1a: a stable, dependency-free hash for name disambiguation.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// UTC day number (days since 1970-01-01) of a timestamp in ms.
#[inline]
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// `YYYY-MM-DD` of a UTC day number. Fails for days outside years
/// 0000–9999, which no valid event time reaches.
pub fn date_string(day: i64) -> Result<String> {
    let date = day
        .checked_mul(86_400)
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map(|dt| dt.date_naive())
        .filter(|d| (0..=9999).contains(&chrono::Datelike::year(d)));
    match date {
        Some(d) => Ok(d.format("%Y-%m-%d").to_string()),
        None => Err(StoreError::InvalidTimestamp { day }),
    }
}

/// The partition directory name of a UTC day: `date=YYYY-MM-DD`.
pub fn partition_dir(day: i64) -> Result<String> {
    Ok(format!(
        "{}={}",
        crate::schema::PARTITION_COLUMN,
        date_string(day)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_files_name_their_target() {
        let dir = std::path::Path::new("/x");
        let tmp = crate::atomic::tmp_path(
            dir,
            "part-rmm.t-p00001-00000000000000000010-00000000000000000019.parquet",
        );
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            tmp_target(name),
            Some("part-rmm.t-p00001-00000000000000000010-00000000000000000019.parquet")
        );
        for not in [
            "p00001.ckpt",
            ".tmp-x.partial",
            ".tmp-x.12-a.partial",
            ".tmp-x.12.partial",
            "x.1-2.partial",
        ] {
            assert_eq!(tmp_target(not), None, "{not}");
        }
    }

    fn range(source: &str) -> SourceRange<'_> {
        SourceRange {
            source,
            partition: 3,
            first_offset: 10,
            last_offset: 99,
            tick: 0,
        }
    }

    #[test]
    fn file_names_are_deterministic_and_fixed_width() {
        let a = range("rmm.telemetry.v1")
            .file_name("part", "parquet")
            .unwrap();
        assert_eq!(
            a,
            "part-rmm.telemetry.v1-p00003-00000000000000000010-00000000000000000099.parquet"
        );
        assert_eq!(
            a,
            range("rmm.telemetry.v1")
                .file_name("part", "parquet")
                .unwrap()
        );
    }

    #[test]
    fn sanitize_keeps_topics_and_disambiguates_others() {
        assert_eq!(sanitize_source("rmm.telemetry-v1_x"), "rmm.telemetry-v1_x");
        let a = sanitize_source("a/b");
        let b = sanitize_source("a_b");
        assert!(a.starts_with("a_b~"), "{a}");
        assert_ne!(a, b);
        assert!(sanitize_source(".hidden").starts_with("_hidden~"));
        assert!(sanitize_source("../../etc").chars().all(|c| c != '/'));
        let long = "x".repeat(500);
        assert!(sanitize_source(&long).len() < 120);
        assert_ne!(sanitize_source(&long), sanitize_source(&"x".repeat(501)));
    }

    #[test]
    fn invalid_ranges_are_refused() {
        assert!(SourceRange {
            source: "",
            ..range("t")
        }
        .validate()
        .is_err());
        assert!(SourceRange {
            partition: -1,
            ..range("t")
        }
        .validate()
        .is_err());
        assert!(SourceRange {
            first_offset: 5,
            last_offset: 4,
            ..range("t")
        }
        .validate()
        .is_err());
        assert!(SourceRange {
            first_offset: 5,
            last_offset: 5,
            ..range("t")
        }
        .validate()
        .is_ok());
        assert!(SourceRange::ticks("t", 0, 5, 1).validate().is_ok());
        assert!(SourceRange {
            tick: 1,
            ..range("t")
        }
        .validate()
        .is_err());
    }

    #[test]
    fn tick_files_are_named_after_the_record_they_follow() {
        assert_eq!(
            SourceRange::ticks("rmm.t", 2, 41, 3)
                .file_name("part", "parquet")
                .unwrap(),
            "part-rmm.t-p00002-00000000000000000041-t0000000000000000003.parquet"
        );
        assert_eq!(
            SourceRange::records("rmm.t", 2, 41, 41),
            SourceRange {
                source: "rmm.t",
                partition: 2,
                first_offset: 41,
                last_offset: 41,
                tick: 0
            }
        );
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_string(day_of(0)).unwrap(), "1970-01-01");
        assert_eq!(date_string(day_of(-1)).unwrap(), "1969-12-31");
        // 2026-11-02T23:59:59.999Z and the next millisecond
        let midnight = 1_793_664_000_000;
        assert_eq!(date_string(day_of(midnight - 1)).unwrap(), "2026-11-02");
        assert_eq!(date_string(day_of(midnight)).unwrap(), "2026-11-03");
        assert!(date_string(day_of(i64::MAX)).is_err());
        assert_eq!(partition_dir(day_of(midnight)).unwrap(), "date=2026-11-03");
    }
}
