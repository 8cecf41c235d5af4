//! Retention: removing output older than a per-dataset limit (`vigil
//! retention`).
//!
//! What it removes, and nothing else:
//!
//! - `aggregates/`, `alerts/`, `status/`, `security_events/` and `audit/`:
//!   whole `date=YYYY-MM-DD` directories whose
//!   last instant is at least the dataset's limit old. A day `D` ends at
//!   `D+1 00:00 UTC`, so `date=D` goes when `D+1 00:00 <= now - limit`:
//!   every row it can hold is then older than the limit. A directory is
//!   first renamed to `.retention-date=YYYY-MM-DD` (readers skip names
//!   starting with `.`, so a query sees the whole day or none of it), then
//!   deleted. Leftovers of an interrupted run (`.retention-date=…`) are
//!   deleted too.
//! - `dlq/`: dead-letter files have no date directory (their names carry
//!   the source range only, see `docs/storage.md`), so their age is their
//!   modification time: `dlq/dlq-*.jsonl`, `dlq/full/full-*` and
//!   `dlq/undelivered/undelivered-*.json` modified at least the limit ago.
//!
//! Anything else under the root (other names, in-progress `.tmp-` files,
//! other directories, checkpoints) is never touched, and a dataset without a
//! limit is kept forever. Limits are at least [`MIN_LIMIT`] (one day), so
//! today's and yesterday's partitions — the only ones a live worker
//! normally writes — are never removed; a worker that still writes into a
//! removed day (a replay of old input) recreates its directory, or fails
//! its flush and retries it from its checkpoint, losing nothing.
//!
//! Decisions are a pure function of the names, the limits and `now_ms`
//! (passed in), so they are tested at their boundaries without a clock.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bound::{FULL_DIR, UNDELIVERED_DIR};
use crate::dlq::DLQ_DIR;
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::{date_string, DAY_MS};
use crate::schema::{Dataset, PARTITION_COLUMN};

/// The shortest limit accepted: one day. With it, today's and yesterday's
/// partitions are always kept.
pub const MIN_LIMIT: Duration = Duration::from_secs(86_400);

/// Prefix a date directory is renamed to before it is deleted.
pub const REMOVING_PREFIX: &str = ".retention-";

/// How long each dataset is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionLimits {
    /// Limit of `aggregates/`.
    pub aggregates: Option<Duration>,
    /// Limit of `alerts/`.
    pub alerts: Option<Duration>,
    /// Limit of `dlq/` (by file modification time).
    pub dlq: Option<Duration>,
    /// Limit of `audit/` (whole `date=` partitions).
    pub audit: Option<Duration>,
    /// Limit of `status/` (whole `date=` partitions).
    pub status: Option<Duration>,
    /// Limit of `security_events/` (whole `date=` partitions).
    pub security_events: Option<Duration>,
}

impl RetentionLimits {
    /// Checks every limit; returns one problem per bad limit, named by its
    /// key (`aggregates`, `alerts`, `dlq`, `audit`, `status`,
    /// `security_events`).
    pub fn validate(&self) -> Vec<String> {
        [
            ("aggregates", self.aggregates),
            ("alerts", self.alerts),
            ("dlq", self.dlq),
            ("audit", self.audit),
            ("status", self.status),
            ("security_events", self.security_events),
        ]
        .into_iter()
        .filter_map(|(key, limit)| match limit {
            Some(l) if l < MIN_LIMIT => Some(format!(
                "{key}: {}s is below the minimum of 1 day (today's and yesterday's \
                 partitions are never removed)",
                l.as_secs()
            )),
            _ => None,
        })
        .collect()
    }

    fn of(&self, dataset: Dataset) -> Option<Duration> {
        match dataset {
            Dataset::Aggregates => self.aggregates,
            Dataset::Alerts => self.alerts,
            Dataset::Status => self.status,
            Dataset::SecurityEvents => self.security_events,
            Dataset::Audit => self.audit,
        }
    }
}

/// What one removal was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// `aggregates`, `alerts`, `status`, `security_events`, `audit` or
    /// `dlq`.
    pub dataset: &'static str,
    /// The removed directory or file (its name before any rename).
    pub path: PathBuf,
    /// `YYYY-MM-DD` of a removed date partition; `None` for a dead-letter
    /// file.
    pub date: Option<String>,
    /// Files removed (1 for a dead-letter file).
    pub files: u64,
    /// Bytes of the removed files.
    pub bytes: u64,
}

/// What a retention run removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Every removal, in a stable order (dataset, then name).
    pub removed: Vec<Removal>,
    /// Date partitions and dead-letter files kept (younger than their
    /// limit, or their dataset has none).
    pub kept: u64,
    /// Whether nothing was actually removed (dry run).
    pub dry_run: bool,
}

impl RetentionReport {
    /// Files removed in total.
    pub fn files(&self) -> u64 {
        self.removed.iter().map(|r| r.files).sum()
    }

    /// Bytes removed in total.
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }
}

/// The UTC day number of a `date=YYYY-MM-DD` directory name, only when the
/// name is exactly what [`crate::naming::partition_dir`] makes.
pub fn parse_partition_dir(name: &str) -> Option<i64> {
    let date = name.strip_prefix(PARTITION_COLUMN)?.strip_prefix('=')?;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let day = d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?);
    let day = day.num_days();
    // Only the canonical spelling (zero-padded): `date=2026-1-2` is not ours.
    (date_string(day).ok()? == date).then_some(day)
}

/// Whether the partition of UTC day `day` is past a limit of `limit` at
/// `now_ms`: its end (`day + 1` at 00:00 UTC) is at least `limit` ago.
/// Never true for today's partition, whatever the limit.
pub fn partition_expired(day: i64, limit: Duration, now_ms: i64) -> bool {
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    let end = (day + 1).saturating_mul(DAY_MS);
    day < now_ms.div_euclid(DAY_MS) && end <= now_ms.saturating_sub(limit_ms)
}

/// Whether a file last modified at `mtime_ms` is past a limit of `limit` at
/// `now_ms` (modified at least `limit` ago).
pub fn file_expired(mtime_ms: i64, limit: Duration, now_ms: i64) -> bool {
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    mtime_ms <= now_ms.saturating_sub(limit_ms)
}

/// Applies `limits` to the output under `root` at `now_ms` (ms since the
/// epoch). With `dry_run`, reports what it would remove and removes
/// nothing. A missing root or dataset directory is empty.
pub fn apply(
    root: &Path,
    limits: &RetentionLimits,
    now_ms: i64,
    dry_run: bool,
) -> Result<RetentionReport> {
    let mut report = RetentionReport {
        dry_run,
        ..RetentionReport::default()
    };
    for dataset in Dataset::ALL {
        let Some(limit) = limits.of(dataset) else {
            continue;
        };
        apply_dataset(root, dataset, limit, now_ms, dry_run, &mut report)?;
    }
    if let Some(limit) = limits.dlq {
        apply_dlq(root, limit, now_ms, dry_run, &mut report)?;
    }
    Ok(report)
}

/// Marker object an object store retention run puts into a `date=`
/// "directory" before deleting its objects (there is no rename to hide a
/// whole directory at once): Vigil's reader skips every file of a
/// directory that holds it, so a query sees a whole day or none of it. A
/// directory with a marker left by an interrupted run is removed by the
/// next run.
pub const RETENTION_MARKER: &str = ".vigil-retention";

/// [`apply`] on a root that is a local directory or an object store. On
/// an object store a date partition is removed by putting
/// [`RETENTION_MARKER`] into it, deleting its objects in name order, then
/// the marker; dead-letter objects go by their last-modified time.
pub fn apply_at(
    root: &Root,
    limits: &RetentionLimits,
    now_ms: i64,
    dry_run: bool,
) -> Result<RetentionReport> {
    let Some(o) = root.as_object() else {
        let dir = root.as_local().unwrap_or(Path::new("."));
        return apply(dir, limits, now_ms, dry_run);
    };
    let mut report = RetentionReport {
        dry_run,
        ..RetentionReport::default()
    };
    for dataset in Dataset::ALL {
        let Some(limit) = limits.of(dataset) else {
            continue;
        };
        for name in o.list_dir(dataset.name())?.0 {
            let Some(day) = parse_partition_dir(&name) else {
                continue;
            };
            let rel = format!("{}/{name}", dataset.name());
            let objects = o.list(&rel)?;
            let marked = objects
                .iter()
                .any(|m| m.location.as_ref() == format!("{rel}/{RETENTION_MARKER}"));
            if !marked && !partition_expired(day, limit, now_ms) {
                report.kept += 1;
                continue;
            }
            let files = objects
                .iter()
                .filter(|m| !m.location.as_ref().ends_with(RETENTION_MARKER))
                .count() as u64;
            let bytes = objects.iter().map(|m| m.size).sum();
            let date = date_string(day)?;
            tracing::info!(
                dataset = dataset.name(),
                date = %date,
                files,
                bytes,
                dry_run,
                leftover = marked,
                "retention: date partition past its limit"
            );
            if !dry_run {
                let marker = format!("{rel}/{RETENTION_MARKER}");
                o.put(&marker, Vec::new(), object_store::PutMode::Overwrite)?;
                let mut keys: Vec<String> = objects
                    .iter()
                    .map(|m| m.location.as_ref().to_owned())
                    .filter(|k| *k != marker)
                    .collect();
                keys.sort();
                for k in &keys {
                    o.delete(k)?;
                }
                o.delete(&marker)?;
            }
            report.removed.push(Removal {
                dataset: dataset.name(),
                path: PathBuf::from(o.url(&rel)),
                date: Some(date),
                files,
                bytes,
            });
        }
    }
    if let Some(limit) = limits.dlq {
        for m in o.list(DLQ_DIR)? {
            let key = m.location.as_ref();
            let Some(rest) = key.strip_prefix(DLQ_DIR).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let (sub, name) = rest.rsplit_once('/').unwrap_or(("", rest));
            if !is_dlq_file(sub, name) {
                continue;
            }
            if !file_expired(m.last_modified.timestamp_millis(), limit, now_ms) {
                report.kept += 1;
                continue;
            }
            tracing::info!(
                dataset = DLQ_DIR,
                file = %o.url(key),
                bytes = m.size,
                dry_run,
                "retention: dead-letter file past its limit"
            );
            if !dry_run {
                o.delete(key)?;
            }
            report.removed.push(Removal {
                dataset: DLQ_DIR,
                path: PathBuf::from(o.url(key)),
                date: None,
                files: 1,
                bytes: m.size,
            });
        }
    }
    Ok(report)
}

/// Names of the entries of `dir`, sorted; an absent directory has none.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<(String, fs::FileType)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("read dir", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("read dir", dir))?;
        let ty = entry
            .file_type()
            .map_err(StoreError::io("stat", entry.path()))?;
        // Non-UTF-8 names are not Vigil's: skipped.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, ty));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn apply_dataset(
    root: &Path,
    dataset: Dataset,
    limit: Duration,
    now_ms: i64,
    dry_run: bool,
    report: &mut RetentionReport,
) -> Result<()> {
    let dir = root.join(dataset.name());
    for (name, ty) in sorted_entries(&dir)? {
        if !ty.is_dir() {
            continue;
        }
        // A directory renamed by an interrupted run: finish removing it.
        let (leftover, partition) = match name.strip_prefix(REMOVING_PREFIX) {
            Some(p) => (true, p),
            None => (false, name.as_str()),
        };
        let Some(day) = parse_partition_dir(partition) else {
            continue;
        };
        if !leftover && !partition_expired(day, limit, now_ms) {
            report.kept += 1;
            continue;
        }
        let path = dir.join(&name);
        let (files, bytes) = tree_size(&path)?;
        let date = date_string(day)?;
        tracing::info!(
            dataset = dataset.name(),
            date = %date,
            files,
            bytes,
            dry_run,
            "retention: date partition past its limit"
        );
        if !dry_run {
            let doomed = if leftover {
                path.clone()
            } else {
                let to = dir.join(format!("{REMOVING_PREFIX}{name}"));
                fs::rename(&path, &to).map_err(StoreError::io("rename", &path))?;
                to
            };
            fs::remove_dir_all(&doomed).map_err(StoreError::io("remove dir", &doomed))?;
        }
        report.removed.push(Removal {
            dataset: dataset.name(),
            path,
            date: Some(date),
            files,
            bytes,
        });
    }
    Ok(())
}

/// Files and bytes under `dir` (recursively; symlinks are not followed).
fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for (name, ty) in sorted_entries(dir)? {
        let p = dir.join(&name);
        if ty.is_dir() {
            let (f, b) = tree_size(&p)?;
            files += f;
            bytes += b;
        } else {
            let md = fs::symlink_metadata(&p).map_err(StoreError::io("stat", &p))?;
            files += 1;
            bytes += md.len();
        }
    }
    Ok((files, bytes))
}

/// Is `name` a dead-letter file of the layout in `sub` (`""` for `dlq/`
/// itself, `full`, `undelivered`)? In-progress `.tmp-` files never are.
fn is_dlq_file(sub: &str, name: &str) -> bool {
    match sub {
        "" => name.starts_with("dlq-") && name.ends_with(".jsonl"),
        FULL_DIR => name.starts_with("full-") && (name.ends_with(".pb") || name.ends_with(".json")),
        UNDELIVERED_DIR => name.starts_with("undelivered-") && name.ends_with(".json"),
        _ => false,
    }
}

fn apply_dlq(
    root: &Path,
    limit: Duration,
    now_ms: i64,
    dry_run: bool,
    report: &mut RetentionReport,
) -> Result<()> {
    let base = root.join(DLQ_DIR);
    for sub in ["", FULL_DIR, UNDELIVERED_DIR] {
        let dir = if sub.is_empty() {
            base.clone()
        } else {
            base.join(sub)
        };
        for (name, ty) in sorted_entries(&dir)? {
            if !ty.is_file() || !is_dlq_file(sub, &name) {
                continue;
            }
            let path = dir.join(&name);
            let md = fs::symlink_metadata(&path).map_err(StoreError::io("stat", &path))?;
            let mtime = md.modified().map_err(StoreError::io("stat", &path))?;
            if !file_expired(system_ms(mtime), limit, now_ms) {
                report.kept += 1;
                continue;
            }
            tracing::info!(
                dataset = DLQ_DIR,
                file = %path.display(),
                bytes = md.len(),
                dry_run,
                "retention: dead-letter file past its limit"
            );
            if !dry_run {
                fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            }
            report.removed.push(Removal {
                dataset: DLQ_DIR,
                path,
                date: None,
                files: 1,
                bytes: md.len(),
            });
        }
    }
    Ok(())
}

/// Milliseconds since the epoch of a file time (negative before it).
fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    /// 2026-11-10T12:00:00Z.
    const NOW: i64 = 1_794_312_000_000;

    fn day_of_date(s: &str) -> i64 {
        parse_partition_dir(&format!("date={s}")).unwrap()
    }

    fn touch(p: &Path, bytes: usize) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, vec![b'x'; bytes]).unwrap();
    }

    fn set_mtime(p: &Path, ms: i64) {
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_millis(ms as u64))
            .unwrap();
    }

    /// A root with three days of both datasets, foreign entries, and a
    /// `.tmp-` file in an old partition.
    fn layout(root: &Path) {
        for ds in ["aggregates", "alerts"] {
            for d in ["2026-11-07", "2026-11-08", "2026-11-09", "2026-11-10"] {
                touch(
                    &root
                        .join(ds)
                        .join(format!("date={d}"))
                        .join("part-t-p00000-a.parquet"),
                    100,
                );
            }
        }
        touch(
            &root.join("aggregates/date=2026-11-07/.tmp-part-x.partial"),
            7,
        );
        // Not the layout: never touched whatever their age.
        touch(&root.join("aggregates/date=2026-1-2/part.parquet"), 1);
        touch(&root.join("aggregates/notes=2020-01-01/x"), 1);
        touch(&root.join("aggregates/date=2020-01-01"), 1); // a file, not a dir
        touch(&root.join("other/date=2020-01-01/x.parquet"), 1);
    }

    #[test]
    fn partition_names_parse_only_in_canonical_form() {
        assert_eq!(parse_partition_dir("date=1970-01-01"), Some(0));
        assert_eq!(parse_partition_dir("date=1969-12-31"), Some(-1));
        assert_eq!(day_of_date("2026-11-10"), NOW.div_euclid(DAY_MS));
        for bad in [
            "date=2026-1-02",
            "date=2026-02-30",
            "date=2026-11-10x",
            "day=2026-11-10",
            "date=",
            ".tmp-date=2026-11-10",
        ] {
            assert_eq!(parse_partition_dir(bad), None, "{bad}");
        }
    }

    /// `date=D` expires exactly when `D+1 00:00` is `limit` ago: kept one
    /// millisecond before, removed at and after.
    #[test]
    fn partitions_expire_exactly_at_the_boundary() {
        let d = day_of_date("2026-11-07");
        let end = (d + 1) * DAY_MS; // 2026-11-08T00:00Z
        let limit = 2 * DAY;
        let at = end + 2 * DAY_MS;
        assert!(!partition_expired(d, limit, at - 1), "just under");
        assert!(partition_expired(d, limit, at), "exactly at");
        assert!(partition_expired(d, limit, at + 1), "just over");
        // A limit of a day and a half: same rule, not whole days.
        let limit = DAY + DAY / 2;
        let at = end + DAY_MS + DAY_MS / 2;
        assert!(!partition_expired(d, limit, at - 1));
        assert!(partition_expired(d, limit, at));
    }

    #[test]
    fn todays_partition_never_expires() {
        let today = NOW.div_euclid(DAY_MS);
        for limit in [Duration::ZERO, Duration::from_millis(1), DAY] {
            assert!(!partition_expired(today, limit, NOW), "{limit:?}");
            assert!(!partition_expired(today, limit, (today + 1) * DAY_MS - 1));
        }
        // Yesterday goes with a limit under a day (refused by validate).
        assert!(partition_expired(today - 1, Duration::ZERO, NOW));
    }

    #[test]
    fn files_expire_exactly_at_the_boundary() {
        let limit = 30 * DAY;
        let m = NOW - 30 * DAY_MS;
        assert!(file_expired(m, limit, NOW), "exactly at");
        assert!(file_expired(m - 1, limit, NOW), "over");
        assert!(!file_expired(m + 1, limit, NOW), "just under");
    }

    #[test]
    fn limits_under_a_day_are_refused_and_named() {
        let ok = RetentionLimits {
            aggregates: Some(DAY),
            alerts: None,
            dlq: Some(400 * DAY),
            audit: Some(400 * DAY),
            status: Some(DAY),
            security_events: Some(DAY),
        };
        assert!(ok.validate().is_empty());
        let bad = RetentionLimits {
            aggregates: Some(DAY - Duration::from_secs(1)),
            alerts: Some(Duration::ZERO),
            dlq: None,
            audit: Some(DAY / 2),
            status: Some(DAY - Duration::from_millis(1)),
            security_events: Some(Duration::from_secs(3600)),
        };
        let p = bad.validate();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].starts_with("aggregates:") && p[1].starts_with("alerts:"));
        assert!(p[2].starts_with("audit:"));
        assert!(p[3].starts_with("status:") && p[4].starts_with("security_events:"));
    }

    /// At 2026-11-10T12:00Z with a 2-day limit on aggregates, `date=2026-11-07`
    /// (ended 11-08 00:00, 2.5 days ago) goes and `date=2026-11-08` (ended
    /// 1.5 days ago) stays; alerts without a limit keep everything; nothing
    /// outside the layout is touched.
    #[test]
    fn apply_removes_whole_old_partitions_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        let limits = RetentionLimits {
            aggregates: Some(2 * DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, false).unwrap();
        assert_eq!(r.removed.len(), 1, "{r:?}");
        let gone = &r.removed[0];
        assert_eq!(gone.dataset, "aggregates");
        assert_eq!(gone.date.as_deref(), Some("2026-11-07"));
        assert_eq!((gone.files, gone.bytes), (2, 107));
        assert_eq!(r.kept, 3);
        assert!(!root.join("aggregates/date=2026-11-07").exists());
        assert!(!root.join("aggregates/.retention-date=2026-11-07").exists());
        for d in ["2026-11-08", "2026-11-09", "2026-11-10"] {
            assert!(root.join(format!("aggregates/date={d}")).is_dir(), "{d}");
        }
        assert!(root.join("alerts/date=2026-11-07").is_dir());
        assert!(root.join("aggregates/date=2026-1-2/part.parquet").exists());
        assert!(root.join("aggregates/notes=2020-01-01/x").exists());
        assert!(root.join("aggregates/date=2020-01-01").is_file());
        assert!(root.join("other/date=2020-01-01/x.parquet").exists());
        // Again: nothing more to do.
        let r = apply(root, &limits, NOW, false).unwrap();
        assert!(r.removed.is_empty());
    }

    /// One millisecond either side of the boundary, through the files.
    #[test]
    fn apply_at_the_boundary_keeps_then_removes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        let limits = RetentionLimits {
            alerts: Some(2 * DAY),
            ..RetentionLimits::default()
        };
        // date=2026-11-08 ends 11-09 00:00; two days later is 11-11 00:00.
        let at = (day_of_date("2026-11-08") + 1 + 2) * DAY_MS;
        let r = apply(root, &limits, at - 1, false).unwrap();
        let dates: Vec<_> = r.removed.iter().filter_map(|x| x.date.clone()).collect();
        assert_eq!(dates, ["2026-11-07"]);
        let r = apply(root, &limits, at, false).unwrap();
        let dates: Vec<_> = r.removed.iter().filter_map(|x| x.date.clone()).collect();
        assert_eq!(dates, ["2026-11-08"]);
        assert!(root.join("alerts/date=2026-11-09").is_dir());
    }

    #[test]
    fn dry_run_reports_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        touch(&root.join("dlq/dlq-t-p00000-1-2.jsonl"), 10);
        set_mtime(&root.join("dlq/dlq-t-p00000-1-2.jsonl"), 0);
        let limits = RetentionLimits {
            aggregates: Some(DAY),
            alerts: Some(DAY),
            dlq: Some(DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, true).unwrap();
        assert!(r.dry_run);
        // 11-07 and 11-08 of both datasets, and the dead-letter file.
        assert_eq!(r.removed.len(), 5, "{r:?}");
        assert_eq!(r.files(), 2 + 1 + 1 + 1 + 1);
        for ds in ["aggregates", "alerts"] {
            assert!(root.join(ds).join("date=2026-11-07").is_dir());
            assert!(root.join(ds).join("date=2026-11-08").is_dir());
        }
        assert!(root.join("dlq/dlq-t-p00000-1-2.jsonl").exists());
        // The real run removes exactly what the dry run listed.
        let real = apply(root, &limits, NOW, false).unwrap();
        assert_eq!(real.removed, r.removed);
        assert!(!root.join("dlq/dlq-t-p00000-1-2.jsonl").exists());
    }

    #[test]
    fn dead_letters_go_by_modification_time_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = NOW - 31 * DAY_MS;
        let files = [
            (
                "dlq/dlq-t-p00001-00000000000000000001-00000000000000000009.jsonl",
                true,
            ),
            ("dlq/full/full-t-p00001-00000000000000000004-0000.pb", true),
            (
                "dlq/full/full-t-p00001-00000000000000000004-0001.json",
                true,
            ),
            (
                "dlq/undelivered/undelivered-t-p00001-00000000000000000004-00ff.json",
                true,
            ),
            // Not dead letters of the layout.
            ("dlq/.tmp-dlq-t-p00001-1-9.jsonl.partial", false),
            ("dlq/notes.txt", false),
            ("dlq/full/readme.md", false),
            ("dlq/other/dlq-t-p00001-1-9.jsonl", false),
        ];
        for (f, _) in files {
            touch(&root.join(f), 3);
            set_mtime(&root.join(f), old);
        }
        // Recent: kept.
        let fresh = root.join("dlq/dlq-t-p00002-00000000000000000001-00000000000000000009.jsonl");
        touch(&fresh, 3);
        set_mtime(&fresh, NOW - 29 * DAY_MS);
        let limits = RetentionLimits {
            dlq: Some(30 * DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, false).unwrap();
        assert_eq!(r.removed.len(), 4, "{r:?}");
        assert_eq!(r.kept, 1);
        for (f, removed) in files {
            assert_eq!(!root.join(f).exists(), removed, "{f}");
        }
        assert!(fresh.exists());
    }

    /// A directory an interrupted run renamed but did not delete is
    /// finished off, whatever its date.
    #[test]
    fn leftovers_of_an_interrupted_run_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(
            &root.join("alerts/.retention-date=2026-11-01/part-t-p00000-a.parquet"),
            5,
        );
        touch(&root.join("alerts/.retention-junk/x"), 5);
        let limits = RetentionLimits {
            alerts: Some(400 * DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, false).unwrap();
        assert_eq!(r.removed.len(), 1);
        assert!(!root.join("alerts/.retention-date=2026-11-01").exists());
        assert!(root.join("alerts/.retention-junk/x").exists());
    }

    #[test]
    fn a_missing_root_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RetentionLimits {
            aggregates: Some(DAY),
            alerts: Some(DAY),
            dlq: Some(DAY),
            audit: Some(DAY),
            status: Some(DAY),
            security_events: Some(DAY),
        };
        let r = apply(&dir.path().join("absent"), &limits, NOW, false).unwrap();
        assert_eq!(r, RetentionReport::default());
    }

    /// (dataset, date) of each removal, in order.
    fn removed_dates(r: &RetentionReport) -> Vec<(&'static str, Option<String>)> {
        r.removed
            .iter()
            .map(|x| (x.dataset, x.date.clone()))
            .collect()
    }

    /// The audit trail goes by its own limit, whole days at a time; the
    /// rules snapshot beside its date directories is never touched.
    #[test]
    fn audit_partitions_go_by_the_audit_limit_and_the_snapshot_stays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        for d in ["2026-11-07", "2026-11-09"] {
            touch(
                &root.join(format!("audit/date={d}/part-audit.w-p00001-1-1.parquet")),
                5,
            );
        }
        touch(&root.join(crate::audit::SNAPSHOT_PATH), 9);
        let limits = RetentionLimits {
            audit: Some(2 * DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, false).unwrap();
        let gone = removed_dates(&r);
        assert_eq!(gone, [("audit", Some("2026-11-07".to_owned()))]);
        assert!(root.join("audit/date=2026-11-09").is_dir());
        assert!(root.join(crate::audit::SNAPSHOT_PATH).is_file());
        assert!(
            root.join("aggregates/date=2026-11-07").is_dir(),
            "other limits unset"
        );
    }

    /// The status reports and security events (compliance evidence, kept
    /// for as long as an audit asks) go by limits of their own, whole
    /// days at a time, and a limit of one dataset touches no other.
    #[test]
    fn status_and_security_events_go_by_their_own_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        for ds in ["status", "security_events"] {
            for d in ["2026-11-07", "2026-11-08", "2026-11-09"] {
                touch(
                    &root.join(format!("{ds}/date={d}/part-t-p00000-a.parquet")),
                    4,
                );
            }
        }
        // 2026-11-10T12:00Z: 2 days takes 11-07 (ended 2.5 days ago) and
        // keeps 11-08 (1.5 days); 3 days keeps both.
        let limits = RetentionLimits {
            status: Some(2 * DAY),
            security_events: Some(3 * DAY),
            ..RetentionLimits::default()
        };
        let r = apply(root, &limits, NOW, false).unwrap();
        let gone = removed_dates(&r);
        assert_eq!(gone, [("status", Some("2026-11-07".to_owned()))]);
        assert!(root.join("status/date=2026-11-08").is_dir());
        assert!(root.join("security_events/date=2026-11-07").is_dir());
        assert!(root.join("aggregates/date=2026-11-07").is_dir());
        let r = apply(root, &limits, NOW + 12 * DAY_MS, false).unwrap();
        let gone = removed_dates(&r);
        assert_eq!(
            gone,
            [
                ("status", Some("2026-11-08".to_owned())),
                ("status", Some("2026-11-09".to_owned())),
                ("security_events", Some("2026-11-07".to_owned())),
                ("security_events", Some("2026-11-08".to_owned())),
                ("security_events", Some("2026-11-09".to_owned())),
            ]
        );
    }
}
