//! Replays: a finite sequence of records (a batches file, the in-process
//! simulated fleet) through one [`Pipeline`] into the Parquet datasets and
//! the dead-letter directory.
//!
//! Records are numbered from 0 (their "offset"). Every `flush_records`
//! records (or sooner, once `flush_rows` aggregate rows are buffered), and
//! at the end, the writers publish what those records produced,
//! in files named after the range, so replaying the same input with the
//! same settings rewrites the same files instead of adding duplicates. A
//! replay owns its source name: at start it removes the files an earlier
//! replay of the same source left (which may cover other ranges).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_ops::otlp::InputFormat;
use vigil_ops::pipeline::{Outputs, Pipeline, PipelineStats};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;
use vigil_store::{AggregatesWriter, AlertsWriter, DlqWriter, SourceRange};

use crate::obs;
use crate::settings::Settings;

/// What a replay wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Pipeline counters at the end.
    pub stats: PipelineStats,
    /// Aggregate rows written.
    pub aggregate_rows: u64,
    /// Alert rows written.
    pub alert_rows: u64,
    /// Dead-letter records written.
    pub dlq_records: u64,
    /// Files published (Parquet and dead letters).
    pub files: u64,
}

/// One replay in progress. See the module docs.
pub struct Replay {
    source: String,
    pipeline: Pipeline,
    aggs: AggregatesWriter,
    alerts: AlertsWriter,
    dlq: DlqWriter,
    out: Outputs,
    next_offset: i64,
    range_start: i64,
    flush_records: u64,
    flush_rows: u64,
    published: PipelineStats,
    summary: ReplaySummary,
    /// Wire format of the records (see [`Replay::with_input_format`]).
    format: InputFormat,
}

impl Replay {
    /// Starts a replay named `source` (used in file names) writing under
    /// `data_dir`. Processing time comes from the batches' send times.
    pub fn new(
        settings: &Settings,
        data_dir: &Path,
        source: &str,
        rules: Arc<RuleSet>,
    ) -> Result<Replay> {
        let mut cfg = settings.pipeline.clone();
        cfg.clock = vigil_ops::config::ClockMode::Replay;
        let pipeline = Pipeline::new(cfg, rules).map_err(crate::settings::invalid_pipeline)?;
        let removed = vigil_store::remove_source_files(data_dir, source).with_context(|| {
            format!(
                "removing earlier output of {source} under {}",
                data_dir.display()
            )
        })?;
        if removed > 0 {
            tracing::info!(source, removed, "replaced earlier output of this source");
        }
        let w = settings.storage.parquet.clone();
        Ok(Replay {
            source: source.to_string(),
            pipeline,
            aggs: AggregatesWriter::new(data_dir, w.clone()).context("aggregates writer")?,
            alerts: AlertsWriter::new(data_dir, w.clone()).context("alerts writer")?,
            dlq: DlqWriter::new(data_dir, w.sync),
            out: Outputs::default(),
            next_offset: 0,
            range_start: 0,
            flush_records: settings.storage.flush_records,
            flush_rows: settings.storage.flush_rows,
            published: PipelineStats::default(),
            summary: ReplaySummary::default(),
            format: InputFormat::Vigil,
        })
    }

    /// Reads the records as `format` (default: Vigil batches).
    pub fn with_input_format(mut self, format: InputFormat) -> Self {
        self.format = format;
        self
    }

    /// Counters of the OTLP conversion (zero for Vigil input).
    pub fn otlp_stats(&self) -> &vigil_ops::otlp::OtlpStats {
        self.pipeline.otlp_stats()
    }

    /// Processes the next record.
    pub fn push(&mut self, payload: &[u8]) -> Result<()> {
        // Flush before (not after) a record, so the range flushed by
        // `finish` always holds at least the last record.
        if (self.next_offset - self.range_start) as u64 >= self.flush_records
            || self.aggs.len() as u64 >= self.flush_rows
        {
            self.flush()?;
        }
        let pos = Position {
            partition: 0,
            offset: self.next_offset,
        };
        self.next_offset += 1;
        match self.format {
            InputFormat::Vigil => self.pipeline.process(pos, payload, 0, &mut self.out),
            InputFormat::Otlp => self.pipeline.process_otlp(pos, payload, 0, &mut self.out),
        }
        self.drain()
    }

    /// Counters so far.
    pub fn stats(&self) -> &PipelineStats {
        self.pipeline.stats()
    }

    fn drain(&mut self) -> Result<()> {
        for w in &self.out.windows {
            self.aggs.push(w);
        }
        for a in &self.out.alerts {
            self.alerts.push(a);
        }
        for r in &self.out.rejected {
            tracing::debug!(reason = r.reason.as_str(), offset = r.position.offset, detail = %r.detail, "refused");
            self.dlq.push(r).context("dead-letter record")?;
        }
        self.out.clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.next_offset == self.range_start {
            return Ok(());
        }
        let span = tracing::info_span!("flush", source = %self.source, first = self.range_start, last = self.next_offset - 1);
        let _g = span.enter();
        let started = Instant::now();
        let range = SourceRange {
            source: &self.source,
            partition: 0,
            first_offset: self.range_start,
            last_offset: self.next_offset - 1,
        };
        let a = self.aggs.flush(range).context("writing aggregates")?;
        let b = self.alerts.flush(range).context("writing alerts")?;
        let d = self.dlq.flush(range).context("writing dead letters")?;
        self.summary.aggregate_rows += a.rows as u64;
        self.summary.alert_rows += b.rows as u64;
        self.summary.dlq_records += d.counts.total();
        self.summary.files += (a.files.len() + b.files.len()) as u64 + u64::from(d.path.is_some());
        metrics::counter!(obs::PARQUET_ROWS, "dataset" => "aggregates").increment(a.rows as u64);
        metrics::counter!(obs::PARQUET_ROWS, "dataset" => "alerts").increment(b.rows as u64);
        metrics::histogram!(obs::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        let now = self.pipeline.stats().clone();
        obs::publish(&self.published, &now);
        self.published = now;
        tracing::info!(
            aggregates = a.rows,
            alerts = b.rows,
            dlq = d.counts.total(),
            "flushed"
        );
        self.range_start = self.next_offset;
        Ok(())
    }

    /// Ends the input: closes all open windows, runs the detectors on them
    /// and publishes everything.
    pub fn finish(mut self) -> Result<ReplaySummary> {
        // In steps: a million series' last windows are never all held as
        // pipeline output at once (only as rows in the writers).
        while !self.pipeline.finish_some(&mut self.out, 1 << 16) {
            self.drain()?;
        }
        self.drain()?;
        self.flush()?;
        self.summary.stats = self.pipeline.stats().clone();
        Ok(self.summary)
    }
}
