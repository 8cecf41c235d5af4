//! The Parquet dataset writer: buffers rows in Arrow builders, and on
//! flush sorts them, splits them by UTC day and publishes one file per day
//! under a deterministic name.
//!
//! ```text
//! push(&row) ──▶ Arrow builders ──flush(range)──▶ sort by (date, sort key)
//!     ──▶ one slice per date ──▶ .tmp-<name>.partial ──fsync, rename──▶
//!     <root>/<dataset>/date=YYYY-MM-DD/part-<source>-p<partition>-<first>-<last>.parquet
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Array, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use vigil_ops::{AlertEvent, WindowAggregate};

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use crate::naming::{day_of, partition_dir, SourceRange};
use crate::schema::{timestamp_type, Dataset, TIMEZONE};

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

/// Column builders for one dataset's rows. Implemented by
/// [`AggregateRows`] and [`AlertRows`]; [`DatasetWriter`] is generic over it.
pub trait RowBuffer: Default + Send {
    /// The value one row is built from.
    type Row;
    /// The dataset these rows belong to.
    const DATASET: Dataset;
    /// Appends one row to the builders. Allocates nothing beyond the
    /// builders' amortized growth.
    fn push(&mut self, row: &Self::Row);
    /// Rows buffered.
    fn len(&self) -> usize;
    /// True when no row is buffered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Takes the buffered rows as a batch with [`Dataset::schema`], leaving
    /// the builders empty.
    fn finish(&mut self) -> Result<RecordBatch, ArrowError>;
}

fn ts_builder() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::new().with_timezone(TIMEZONE)
}

/// Builders for the `aggregates` dataset, one row per [`WindowAggregate`].
#[derive(Debug)]
pub struct AggregateRows {
    tenant: StringBuilder,
    agent: StringBuilder,
    metric: StringBuilder,
    labels: StringBuilder,
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    mean: Float64Builder,
    last: Float64Builder,
    last_ts: TimestampMillisecondBuilder,
}

impl Default for AggregateRows {
    fn default() -> Self {
        AggregateRows {
            tenant: StringBuilder::new(),
            agent: StringBuilder::new(),
            metric: StringBuilder::new(),
            labels: StringBuilder::new(),
            window_start: ts_builder(),
            window_end: ts_builder(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            mean: Float64Builder::new(),
            last: Float64Builder::new(),
            last_ts: ts_builder(),
        }
    }
}

impl RowBuffer for AggregateRows {
    type Row = WindowAggregate;
    const DATASET: Dataset = Dataset::Aggregates;

    fn push(&mut self, w: &WindowAggregate) {
        let s = &w.series;
        self.tenant.append_value(s.tenant());
        self.agent.append_value(s.agent());
        self.metric.append_value(s.metric());
        self.labels.append_value(s.labels());
        self.window_start.append_value(w.start_ms);
        self.window_end.append_value(w.end_ms);
        self.count.append_value(w.agg.count);
        self.sum.append_value(w.agg.sum);
        self.min.append_value(w.agg.min);
        self.max.append_value(w.agg.max);
        self.mean.append_value(w.agg.mean());
        self.last.append_value(w.agg.last);
        self.last_ts.append_value(w.agg.last_ts_ms);
    }

    fn len(&self) -> usize {
        self.count.len()
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.agent.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.labels.finish()),
            Arc::new(self.window_start.finish()),
            Arc::new(self.window_end.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.mean.finish()),
            Arc::new(self.last.finish()),
            Arc::new(self.last_ts.finish()),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }
}

/// Builders for the `alerts` dataset, one row per [`AlertEvent`].
#[derive(Debug)]
pub struct AlertRows {
    id: StringBuilder,
    fingerprint: StringBuilder,
    rule: StringBuilder,
    kind: StringBuilder,
    severity: StringBuilder,
    status: StringBuilder,
    suppressed: BooleanBuilder,
    tenant: StringBuilder,
    agent: StringBuilder,
    hostname: StringBuilder,
    metric: StringBuilder,
    labels: StringBuilder,
    value: Float64Builder,
    threshold: Float64Builder,
    predicted_at: TimestampMillisecondBuilder,
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    started_at: TimestampMillisecondBuilder,
    resolved_at: TimestampMillisecondBuilder,
    event_time: TimestampMillisecondBuilder,
    summary: StringBuilder,
}

impl Default for AlertRows {
    fn default() -> Self {
        AlertRows {
            id: StringBuilder::new(),
            fingerprint: StringBuilder::new(),
            rule: StringBuilder::new(),
            kind: StringBuilder::new(),
            severity: StringBuilder::new(),
            status: StringBuilder::new(),
            suppressed: BooleanBuilder::new(),
            tenant: StringBuilder::new(),
            agent: StringBuilder::new(),
            hostname: StringBuilder::new(),
            metric: StringBuilder::new(),
            labels: StringBuilder::new(),
            value: Float64Builder::new(),
            threshold: Float64Builder::new(),
            predicted_at: ts_builder(),
            window_start: ts_builder(),
            window_end: ts_builder(),
            started_at: ts_builder(),
            resolved_at: ts_builder(),
            event_time: ts_builder(),
            summary: StringBuilder::new(),
        }
    }
}

impl RowBuffer for AlertRows {
    type Row = AlertEvent;
    const DATASET: Dataset = Dataset::Alerts;

    fn push(&mut self, a: &AlertEvent) {
        self.id.append_value(&a.id);
        self.fingerprint.append_value(&a.fingerprint);
        self.rule.append_value(&a.rule);
        self.kind.append_value(a.kind.as_str());
        self.severity.append_value(a.severity.as_str());
        self.status.append_value(a.status.as_str());
        self.suppressed.append_value(a.suppressed);
        self.tenant.append_value(&a.tenant);
        self.agent.append_value(&a.agent);
        self.hostname.append_option(a.hostname.as_deref());
        self.metric.append_option(a.metric.as_deref());
        self.labels.append_value(&a.labels);
        self.value.append_option(a.value);
        self.threshold.append_option(a.threshold);
        self.predicted_at.append_option(a.predicted_at_ms);
        self.window_start.append_option(a.window_start_ms);
        self.window_end.append_option(a.window_end_ms);
        self.started_at.append_value(a.started_at_ms);
        self.resolved_at.append_option(a.resolved_at_ms);
        self.event_time.append_value(a.event_time_ms);
        self.summary.append_value(&a.summary);
    }

    fn len(&self) -> usize {
        self.suppressed.len()
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.fingerprint.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.suppressed.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.agent.finish()),
            Arc::new(self.hostname.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.labels.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.threshold.finish()),
            Arc::new(self.predicted_at.finish()),
            Arc::new(self.window_start.finish()),
            Arc::new(self.window_end.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.resolved_at.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.summary.finish()),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
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
    dir: PathBuf,
    config: WriterConfig,
    props: WriterProperties,
    rows: B,
    /// Rows of a failed flush, kept so no row is lost; written by the next
    /// flush together with rows pushed since.
    pending: Option<RecordBatch>,
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
        let props = config.writer_properties(B::DATASET)?;
        Ok(DatasetWriter {
            dir: root.as_ref().join(B::DATASET.name()),
            config,
            props,
            rows: B::default(),
            pending: None,
        })
    }

    /// The dataset this writer writes.
    pub fn dataset(&self) -> Dataset {
        B::DATASET
    }

    /// The dataset directory, `<root>/<dataset>`.
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
        self.rows.len() + self.pending.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every buffered row (for example when a partition is revoked
    /// and will be replayed by its next owner).
    pub fn discard(&mut self) {
        // Finishing resets the builders; the batch is dropped.
        let _ = self.rows.finish();
        self.pending = None;
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
        let arrow_err = |source| StoreError::Arrow {
            dataset: dataset.name(),
            source,
        };
        let fresh = self.rows.finish().map_err(arrow_err)?;
        let batch = match self.pending.take() {
            Some(pending) => {
                concat_batches(&dataset.schema(), [&pending, &fresh]).map_err(arrow_err)?
            }
            None => fresh,
        };
        match self.write_batch(&batch, &name, range, &mut report) {
            Ok(()) => Ok(report),
            Err(e) => {
                self.pending = Some(batch);
                Err(e)
            }
        }
    }

    fn write_batch(
        &self,
        batch: &RecordBatch,
        name: &str,
        range: SourceRange<'_>,
        report: &mut FlushReport,
    ) -> Result<()> {
        let dataset = B::DATASET;
        let arrow_err = |source| StoreError::Arrow {
            dataset: dataset.name(),
            source,
        };
        let days = |b: &RecordBatch| -> Result<Int64Array> {
            let col = b
                .column_by_name(dataset.partition_time_column())
                .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
                .ok_or_else(|| {
                    arrow_err(ArrowError::SchemaError(format!(
                        "{} is not a {:?} column",
                        dataset.partition_time_column(),
                        timestamp_type()
                    )))
                })?;
            Ok(col.values().iter().map(|ms| day_of(*ms)).collect())
        };

        // Sort by (day, sort key): each day's rows become one contiguous,
        // sorted run.
        let mut keys = Vec::with_capacity(dataset.sort_columns().len() + 1);
        keys.push(SortColumn {
            values: Arc::new(days(batch)?),
            options: None,
        });
        for name in dataset.sort_columns() {
            let values = batch.column_by_name(name).ok_or_else(|| {
                arrow_err(ArrowError::SchemaError(format!(
                    "missing sort column {name}"
                )))
            })?;
            keys.push(SortColumn {
                values: values.clone(),
                options: None,
            });
        }
        let indices = lexsort_to_indices(&keys, None).map_err(arrow_err)?;
        let sorted = take_record_batch(batch, &indices).map_err(arrow_err)?;
        let sorted_days = days(&sorted)?;
        let sorted_days = sorted_days.values();

        let mut start = 0;
        while start < sorted.num_rows() {
            let day = sorted_days[start];
            let end = sorted_days[start..]
                .iter()
                .position(|d| *d != day)
                .map_or(sorted.num_rows(), |n| start + n);
            let date_dir = partition_dir(day)?;
            let slice = sorted.slice(start, end - start);
            let dir = self.dir.join(&date_dir);
            let (path, bytes) = write_atomic(&dir, name, self.config.sync, |file, tmp| {
                self.write_parquet(file, tmp, &slice, range)
            })?;
            let date = date_dir
                .split_once('=')
                .map_or(date_dir.as_str(), |(_, d)| d)
                .to_owned();
            tracing::debug!(dataset = dataset.name(), path = %path.display(), rows = slice.num_rows(), bytes, "parquet file published");
            report.rows += slice.num_rows();
            report.files.push(WrittenFile {
                path,
                date,
                rows: slice.num_rows(),
                bytes,
            });
            start = end;
        }
        Ok(())
    }

    fn write_parquet(
        &self,
        file: &File,
        tmp: &Path,
        batch: &RecordBatch,
        range: SourceRange<'_>,
    ) -> Result<u64> {
        let parquet_err = |source| StoreError::Parquet {
            path: tmp.to_owned(),
            source,
        };
        let mut writer = ArrowWriter::try_new(file, B::DATASET.schema(), Some(self.props.clone()))
            .map_err(parquet_err)?;
        for (key, value) in [
            ("vigil.dataset", B::DATASET.name().to_owned()),
            ("vigil.schema_version", SCHEMA_VERSION.to_owned()),
            ("vigil.source", range.source.to_owned()),
            ("vigil.partition", range.partition.to_string()),
            ("vigil.first_offset", range.first_offset.to_string()),
            ("vigil.last_offset", range.last_offset.to_string()),
        ] {
            writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
        }
        writer.write(batch).map_err(parquet_err)?;
        writer.close().map_err(parquet_err)?;
        let meta = file.metadata().map_err(StoreError::io("stat", tmp))?;
        Ok(meta.len())
    }
}
