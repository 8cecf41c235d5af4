//! The Parquet dataset writer: buffers rows as values, and on flush sorts
//! them, splits them by UTC day and publishes one file per day under a
//! deterministic name, building the Arrow columns one row group at a time.
//!
//! ```text
//! push(&row) ──▶ Vec<row> ──flush(range)──▶ sort by (date, sort key)
//!     ──▶ one run per date ──▶ Arrow row groups ──▶ .tmp-<name>.partial
//!     ──fsync, rename──▶ <root>/<dataset>/date=YYYY-MM-DD/part-<source>-p<partition>-<first>-<last>.parquet
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use vigil_ops::{AlertEvent, WindowAggregate};

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::{day_of, partition_dir, SourceRange};
use crate::schema::{Dataset, TIMEZONE};

/// Version of the dataset layout written into each file's key/value
/// metadata as `vigil.schema_version`.
pub const SCHEMA_VERSION: &str = "1";

/// Settings of a [`DatasetWriter`]. Embeddable in the binary's config tree
/// (unknown fields are refused, missing ones take their defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Maximum rows per Parquet row group (default 131 072). Smaller row
    /// groups prune finer but compress worse.
    pub row_group_rows: usize,
    /// ZSTD compression level, 1 to 22 (default 3).
    pub zstd_level: i32,
    /// Fsync each file before its rename and the directory after it
    /// (default true). Turning it off gives up durability on power loss
    /// (not atomicity) and is meant for benchmarks and throwaway demos.
    pub sync: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            sync: true,
        }
    }
}

impl WriterConfig {
    /// Checks every setting, reporting the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if self.row_group_rows == 0 {
            return Err(StoreError::Config {
                field: "row_group_rows",
                problem: "must be at least 1".into(),
            });
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(StoreError::Config {
                field: "zstd_level",
                problem: format!("{} is outside 1..=22", self.zstd_level),
            });
        }
        Ok(())
    }

    /// Parquet writer properties for a dataset: ZSTD, page-level statistics
    /// (so the column index, or page index, is written next to the offset
    /// index), the row group size, and the dataset's sort key recorded as
    /// `sorting_columns` of every row group.
    pub fn writer_properties(&self, dataset: Dataset) -> Result<WriterProperties> {
        self.validate()?;
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|e| StoreError::Config {
            field: "zstd_level",
            problem: e.to_string(),
        })?;
        let schema = dataset.schema();
        let mut sorting = Vec::with_capacity(dataset.sort_columns().len());
        for name in dataset.sort_columns() {
            let idx = schema.index_of(name).map_err(|source| StoreError::Arrow {
                dataset: dataset.name(),
                source,
            })?;
            let column_idx = i32::try_from(idx).map_err(|_| StoreError::Config {
                field: "schema",
                problem: format!("column index {idx} does not fit i32"),
            })?;
            sorting.push(SortingColumn {
                column_idx,
                descending: false,
                nulls_first: false,
            });
        }
        Ok(WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_sorting_columns(Some(sorting))
            .build())
    }
}

/// The buffered rows of one dataset. Implemented by [`AggregateRows`] and
/// [`AlertRows`]; [`DatasetWriter`] is generic over it.
///
/// Rows are kept as values (a window aggregate shares its series' ids
/// through pointers: 80 bytes a row, no string copies) and become Arrow
/// columns only at flush, one row group at a time, after sorting: a flush
/// holds its rows once plus one row group of columns.
pub trait RowBuffer: Default + Send {
    /// The value one row is built from.
    type Row;
    /// The dataset these rows belong to.
    const DATASET: Dataset;
    /// Appends one row.
    fn push(&mut self, row: &Self::Row);
    /// Rows buffered.
    fn len(&self) -> usize;
    /// True when no row is buffered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sorts the rows by UTC day of [`Dataset::partition_time_column`],
    /// then by [`Dataset::sort_columns`]; rows with equal keys keep their
    /// push order.
    fn sort(&mut self);
    /// UTC day (see [`crate::naming::day_of`]) of row `i`'s partition
    /// time.
    fn day(&self, i: usize) -> i64;
    /// Rows `range` as a batch with [`Dataset::schema`].
    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError>;
    /// Drops every row.
    fn clear(&mut self);
}

/// A string column of `rows` (`None`: null).
fn strings<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

/// A UTC millisecond timestamp column of `rows` (`None`: null).
fn times<R>(rows: &[R], f: impl Fn(&R) -> Option<i64>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(f)
            .collect::<TimestampMillisecondArray>()
            .with_timezone(TIMEZONE),
    )
}

/// A float column of `rows` (`None`: null).
fn floats<R>(rows: &[R], f: impl Fn(&R) -> Option<f64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<Float64Array>())
}

/// Makes room for one more row, growing by an eighth (at least 1024)
/// rather than doubling, so a large flush wastes little.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(1024));
    }
}

/// Rows of the `aggregates` dataset, one per [`WindowAggregate`].
#[derive(Debug, Default)]
pub struct AggregateRows {
    rows: Vec<WindowAggregate>,
}

impl RowBuffer for AggregateRows {
    type Row = WindowAggregate;
    const DATASET: Dataset = Dataset::Aggregates;

    #[inline]
    fn push(&mut self, w: &WindowAggregate) {
        grow(&mut self.rows);
        self.rows.push(w.clone());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn sort(&mut self) {
        // (day, tenant, agent, metric, labels, window_start), as
        // `Dataset::sort_columns` says; strings compare bytewise, as
        // Arrow's sort does. The key is unique (one window per series and
        // start), so an unstable sort is deterministic too, and it needs
        // no scratch copy of the rows.
        //
        // Rows of one agent or one series share its interned key, so most
        // comparisons are one pointer comparison
        // ([`SeriesMeta::cmp_names`](vigil_ops::SeriesMeta::cmp_names)).
        self.rows.sort_unstable_by(|a, b| {
            day_of(a.start_ms)
                .cmp(&day_of(b.start_ms))
                .then_with(|| a.series.cmp_names(&b.series))
                .then_with(|| a.start_ms.cmp(&b.start_ms))
        });
    }

    fn day(&self, i: usize) -> i64 {
        day_of(self.rows[i].start_ms)
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let rows = &self.rows[range];
        let columns: Vec<ArrayRef> = vec![
            strings(rows, |w| Some(w.series.tenant())),
            strings(rows, |w| Some(w.series.agent())),
            strings(rows, |w| Some(w.series.metric())),
            strings(rows, |w| Some(w.series.labels())),
            times(rows, |w| Some(w.start_ms)),
            times(rows, |w| Some(w.end_ms)),
            Arc::new(rows.iter().map(|w| w.agg.count).collect::<UInt64Array>()),
            floats(rows, |w| Some(w.agg.sum)),
            floats(rows, |w| Some(w.agg.min)),
            floats(rows, |w| Some(w.agg.max)),
            floats(rows, |w| Some(w.agg.mean())),
            floats(rows, |w| Some(w.agg.last)),
            times(rows, |w| Some(w.agg.last_ts_ms)),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }

    fn clear(&mut self) {
        self.rows = Vec::new();
    }
}

/// Rows of the `alerts` dataset, one per [`AlertEvent`].
#[derive(Debug, Default)]
pub struct AlertRows {
    rows: Vec<AlertEvent>,
}

impl RowBuffer for AlertRows {
    type Row = AlertEvent;
    const DATASET: Dataset = Dataset::Alerts;

    fn push(&mut self, a: &AlertEvent) {
        self.rows.push(a.clone());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn sort(&mut self) {
        // (day, tenant, agent, rule, event_time, status).
        self.rows.sort_by(|a, b| {
            day_of(a.event_time_ms)
                .cmp(&day_of(b.event_time_ms))
                .then_with(|| a.tenant.cmp(&b.tenant))
                .then_with(|| a.agent.cmp(&b.agent))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.event_time_ms.cmp(&b.event_time_ms))
                .then_with(|| a.status.as_str().cmp(b.status.as_str()))
        });
    }

    fn day(&self, i: usize) -> i64 {
        day_of(self.rows[i].event_time_ms)
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let rows = &self.rows[range];
        let columns: Vec<ArrayRef> = vec![
            strings(rows, |a| Some(&a.id)),
            strings(rows, |a| Some(&a.fingerprint)),
            strings(rows, |a| Some(&a.rule)),
            strings(rows, |a| Some(a.kind.as_str())),
            strings(rows, |a| Some(a.severity.as_str())),
            strings(rows, |a| Some(a.status.as_str())),
            Arc::new(
                rows.iter()
                    .map(|a| Some(a.suppressed))
                    .collect::<BooleanArray>(),
            ),
            strings(rows, |a| Some(&a.tenant)),
            strings(rows, |a| Some(&a.agent)),
            strings(rows, |a| a.hostname.as_deref()),
            strings(rows, |a| a.metric.as_deref()),
            strings(rows, |a| Some(&a.labels)),
            floats(rows, |a| a.value),
            floats(rows, |a| a.threshold),
            times(rows, |a| a.predicted_at_ms),
            times(rows, |a| a.window_start_ms),
            times(rows, |a| a.window_end_ms),
            times(rows, |a| Some(a.started_at_ms)),
            times(rows, |a| a.resolved_at_ms),
            times(rows, |a| Some(a.event_time_ms)),
            strings(rows, |a| Some(&a.summary)),
            strings(rows, |a| a.resolve_reason.map(|r| r.as_str())),
            Arc::new(rows.iter().map(|a| a.flaps).collect::<UInt32Array>()),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }

    fn clear(&mut self) {
        self.rows = Vec::new();
    }
}

/// One file published by a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Final path of the file.
    pub path: PathBuf,
    /// Its partition, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Rows in the file.
    pub rows: usize,
    /// File size in bytes.
    pub bytes: u64,
}

/// What a [`DatasetWriter::flush`] published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// The dataset written.
    pub dataset: Dataset,
    /// Rows written, over all files.
    pub rows: usize,
    /// The files, one per date, in date order. Empty when nothing was
    /// buffered.
    pub files: Vec<WrittenFile>,
}

/// Writes one dataset under a root directory. Rows are pushed one at a
/// time and published by [`flush`](Self::flush), which names the files
/// after the input range they came from.
///
/// Single owner (one per worker partition): not `Sync`-shared, no locks.
#[derive(Debug)]
pub struct DatasetWriter<B: RowBuffer> {
    /// Where files go: a local directory (tmp + fsync + rename) or an
    /// object store (one PUT of the final name).
    root: Root,
    dir: PathBuf,
    config: WriterConfig,
    props: WriterProperties,
    /// Buffered rows; after a failed flush they stay, so no row is lost,
    /// and are written by the next flush with the rows pushed since.
    rows: B,
}

/// Writer of the `aggregates` dataset.
pub type AggregatesWriter = DatasetWriter<AggregateRows>;

/// Writer of the `alerts` dataset.
pub type AlertsWriter = DatasetWriter<AlertRows>;

impl<B: RowBuffer> DatasetWriter<B> {
    /// A writer for dataset `B::DATASET` under `root` (files go to
    /// `<root>/<dataset>/date=YYYY-MM-DD/`). Validates the config; creates
    /// no directory until the first flush that has rows.
    pub fn new(root: impl AsRef<Path>, config: WriterConfig) -> Result<Self> {
        Self::at(&Root::local(root.as_ref()), config)
    }

    /// A writer for dataset `B::DATASET` under `root`, a local directory
    /// (as [`DatasetWriter::new`]) or an object store, where each file is
    /// encoded in memory and published by one PUT of its final name
    /// (replacing an object of that name, as the rename does locally).
    pub fn at(root: &Root, config: WriterConfig) -> Result<Self> {
        let props = config.writer_properties(B::DATASET)?;
        Ok(DatasetWriter {
            root: root.clone(),
            dir: root.display_path(B::DATASET.name()),
            config,
            props,
            rows: B::default(),
        })
    }

    /// The dataset this writer writes.
    pub fn dataset(&self) -> Dataset {
        B::DATASET
    }

    /// The dataset directory, `<root>/<dataset>` (for an object store,
    /// its URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffers one row.
    #[inline]
    pub fn push(&mut self, row: &B::Row) {
        self.rows.push(row);
    }

    /// Rows buffered (including those of a failed flush).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The UTC days ([`crate::naming::day_of`]) of the buffered rows'
    /// partition column: the `date=` directories the next flush writes.
    pub fn days(&self) -> std::collections::BTreeSet<i64> {
        (0..self.rows.len()).map(|i| self.rows.day(i)).collect()
    }

    /// Drops every buffered row (for example when a partition is revoked
    /// and will be replayed by its next owner).
    pub fn discard(&mut self) {
        self.rows.clear();
    }

    /// Publishes the buffered rows as the output of `range`: sorted by the
    /// dataset's sort key, one file per UTC date of the partition column,
    /// each named `part-<source>-p<partition:05>-<first:020>-<last:020>.parquet`
    /// and made visible by an atomic rename (replacing a file of the same
    /// range, so a replay rewrites instead of duplicating).
    ///
    /// With no buffered rows it writes nothing and returns an empty report.
    /// On error no row is lost: the rows stay buffered for the next flush,
    /// and files already renamed for other dates of this flush will be
    /// rewritten identically by it (if its range is the same).
    pub fn flush(&mut self, range: SourceRange<'_>) -> Result<FlushReport> {
        let name = range.file_name("part", "parquet")?;
        let dataset = B::DATASET;
        let mut report = FlushReport {
            dataset,
            rows: 0,
            files: Vec::new(),
        };
        if self.is_empty() {
            return Ok(report);
        }
        self.rows.sort();
        self.write_sorted(&name, range, &mut report)?;
        self.rows.clear();
        Ok(report)
    }

    /// Writes the sorted rows, one file per day.
    fn write_sorted(
        &self,
        name: &str,
        range: SourceRange<'_>,
        report: &mut FlushReport,
    ) -> Result<()> {
        let dataset = B::DATASET;
        let n = self.rows.len();
        let mut start = 0;
        while start < n {
            let day = self.rows.day(start);
            let end = (start..n).find(|&k| self.rows.day(k) != day).unwrap_or(n);
            let date_dir = partition_dir(day)?;
            let (path, bytes) = match self.root.as_object() {
                None => {
                    let dir = self.dir.join(&date_dir);
                    write_atomic(&dir, name, self.config.sync, |file, tmp| {
                        self.write_parquet(file, tmp, start..end, range)?;
                        let meta = file.metadata().map_err(StoreError::io("stat", tmp))?;
                        Ok(meta.len())
                    })?
                }
                Some(obj) => {
                    // Encoded in memory, then one PUT of the final name:
                    // the object is whole or absent (docs/storage.md,
                    // "Object stores").
                    let rel = format!("{}/{date_dir}/{name}", dataset.name());
                    let path = PathBuf::from(obj.url(&rel));
                    let mut buf = Vec::new();
                    self.write_parquet(&mut buf, &path, start..end, range)?;
                    let n = obj.put(&rel, buf, object_store::PutMode::Overwrite)?;
                    (path, n)
                }
            };
            let date = date_dir
                .split_once('=')
                .map_or(date_dir.as_str(), |(_, d)| d)
                .to_owned();
            tracing::debug!(dataset = dataset.name(), path = %path.display(), rows = end - start, bytes, "parquet file published");
            report.rows += end - start;
            report.files.push(WrittenFile {
                path,
                date,
                rows: end - start,
                bytes,
            });
            start = end;
        }
        Ok(())
    }

    fn write_parquet<W: std::io::Write + Send>(
        &self,
        out: W,
        tmp: &Path,
        rows: std::ops::Range<usize>,
        range: SourceRange<'_>,
    ) -> Result<()> {
        // Built and written one row group at a time.
        let chunk = self.config.row_group_rows.max(1);
        let mut off = rows.start;
        let batches = std::iter::from_fn(|| {
            if off >= rows.end {
                return None;
            }
            let to = (off + chunk).min(rows.end);
            let part = self.rows.batch(off..to);
            off = to;
            Some(part.map_err(|source| StoreError::Arrow {
                dataset: B::DATASET.name(),
                source,
            }))
        });
        encode_parquet(
            out,
            tmp,
            B::DATASET,
            &self.props,
            &file_metadata(B::DATASET, range, &[]),
            batches,
        )
    }
}

/// The key/value metadata of a dataset file holding the output of `range`
/// (`vigil.dataset`, `vigil.schema_version`, `vigil.source`,
/// `vigil.partition`, `vigil.first_offset`, `vigil.last_offset`), followed
/// by `extra` pairs.
pub(crate) fn file_metadata(
    dataset: Dataset,
    range: SourceRange<'_>,
    extra: &[(&str, String)],
) -> Vec<KeyValue> {
    let mut kv: Vec<KeyValue> = [
        ("vigil.dataset", dataset.name().to_owned()),
        ("vigil.schema_version", SCHEMA_VERSION.to_owned()),
        ("vigil.source", range.source.to_owned()),
        ("vigil.partition", range.partition.to_string()),
        ("vigil.first_offset", range.first_offset.to_string()),
        ("vigil.last_offset", range.last_offset.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| KeyValue::new(k.to_owned(), v))
    .collect();
    kv.extend(
        extra
            .iter()
            .map(|(k, v)| KeyValue::new((*k).to_owned(), v.clone())),
    );
    kv
}

/// Encodes one dataset file into `out` (a file, or a buffer for an object
/// store): `batches` (each with [`Dataset::schema`], already in sort-key
/// order, each at most one row group) under `props` (from
/// [`WriterConfig::writer_properties`]) with the key/value `metadata`;
/// `tmp` names it in errors. The one place a dataset file is encoded: the
/// flush of a [`DatasetWriter`] and compaction both write through it.
pub(crate) fn encode_parquet<W: std::io::Write + Send>(
    out: W,
    tmp: &Path,
    dataset: Dataset,
    props: &WriterProperties,
    metadata: &[KeyValue],
    batches: impl Iterator<Item = Result<RecordBatch>>,
) -> Result<()> {
    let parquet_err = |source| StoreError::Parquet {
        path: tmp.to_owned(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(out, dataset.schema(), Some(props.clone())).map_err(parquet_err)?;
    for kv in metadata {
        writer.append_key_value_metadata(kv.clone());
    }
    for batch in batches {
        writer.write(&batch?).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    Ok(())
}
