//! Replays: a finite sequence of records (a batches file, the in-process
//! simulated fleet) through one [`Pipeline`] into the Parquet datasets and
//! the dead-letter directory.
//!
//! Records are numbered from 0 (their "offset"). Every `flush_records`
//! records (or sooner, once `flush_rows` aggregate rows or
//! `dlq_flush_bytes` bytes of dead letters are buffered), and
//! at the end, the writers publish what those records produced,
//! in files named after the range, so replaying the same input with the
//! same settings rewrites the same files instead of adding duplicates. A
//! replay owns its source name: at start it removes the files an earlier
//! replay of the same source left (which may cover other ranges).
//!
//! Alert events are stored in the `alerts` dataset; with
//! `alerts.replay_files` they are also routed as the worker routes them
//! (`[alerts]`), each route's events to its files under `routes/`
//! ([`vigil_sink::RouteFiles`]), published with the same ranges.
//!
//! Refused input is bounded like the worker's ([`vigil_store::bound`]):
//! each dead letter takes at most `storage.dlq_max_record_bytes`, a longer
//! one keeps its reason, coordinates, digest and first bytes, and its full
//! content goes to `dlq/full/` at once, unless the input is kept
//! ([`Replay::input_is_kept`]). Memory for refused input is therefore at
//! most `dlq_flush_bytes` plus one letter, whatever the input.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_ops::otlp::InputFormat;
use vigil_ops::pipeline::{Outputs, Pipeline, PipelineStats};
use vigil_ops::rules::RuleSet;
use vigil_ops::{Position, RejectReason};
use vigil_sink::{AlertRouter, OutputStage, RouteFiles};
use vigil_store::{DlqWriter, SourceRange, Unread};

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
    /// Of those, letters truncated to `storage.dlq_max_record_bytes`.
    pub dlq_truncated: u64,
    /// Files published (Parquet and dead letters).
    pub files: u64,
}

/// One replay in progress. See the module docs.
pub struct Replay {
    source: String,
    pipeline: Pipeline,
    /// The writers (Parquet, `dlq/` files), shared with the worker.
    stage: OutputStage,
    /// Where alert events go besides the alerts dataset: nowhere, or with
    /// `alerts.replay_files`, each route's files.
    router: AlertRouter,
    route_files: RouteFiles,
    out: Outputs,
    next_offset: i64,
    range_start: i64,
    flush_records: u64,
    flush_rows: u64,
    flush_dlq_bytes: u64,
    /// Records the input reader could not hand over
    /// ([`Replay::push_unread`]): counted here, as the pipeline never saw
    /// them.
    unread: PipelineStats,
    published: PipelineStats,
    /// OTLP conversion counters at the last flush.
    published_otlp: vigil_ops::otlp::OtlpStats,
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
            stage: OutputStage::new(
                data_dir,
                w.clone(),
                Some(
                    DlqWriter::new(data_dir, source, w.sync)
                        .with_budget(settings.storage.dlq_budget()?),
                ),
            )?,
            router: if settings.alerts.replay_files {
                settings
                    .alerts
                    .router(&settings.kafka.alert_topic)
                    .map_err(|p| anyhow::anyhow!("invalid alert routes:\n  {}", p.join("\n  ")))?
            } else {
                AlertRouter::none()
            },
            route_files: RouteFiles::new(data_dir, w.sync),
            out: Outputs::default(),
            next_offset: 0,
            range_start: 0,
            flush_records: settings.storage.flush_records,
            flush_rows: settings.storage.flush_rows,
            flush_dlq_bytes: settings.storage.dlq_flush_bytes,
            unread: PipelineStats::default(),
            published: PipelineStats::default(),
            published_otlp: Default::default(),
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

    /// The input is kept where the replay read it (a file): truncated dead
    /// letters then name no full copy (`full_path` null) and the record is
    /// found in the input by its offset (its index).
    pub fn input_is_kept(mut self) -> Replay {
        if let Some(d) = self.stage.dlq_files_mut() {
            d.set_keep_full(false);
        }
        self
    }

    /// Flushes before (not after) a record, so the range flushed by
    /// `finish` always holds at least the last record.
    fn flush_if_full(&mut self) -> Result<()> {
        if (self.next_offset - self.range_start) as u64 >= self.flush_records
            || self.stage.aggregate_rows() as u64 >= self.flush_rows
            || self.stage.dlq_buffered_bytes() as u64 >= self.flush_dlq_bytes
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Records, as the next record, one that the input reader skipped
    /// (over its length limit, or cut by the end of the input): a dead
    /// letter with its first bytes (`head`), length and digest, counted as
    /// refused for `reason`.
    pub fn push_unread(
        &mut self,
        reason: RejectReason,
        detail: &str,
        head: &[u8],
        original_bytes: u64,
        digest: &str,
    ) -> Result<()> {
        self.flush_if_full()?;
        let position = Position {
            partition: 0,
            offset: self.next_offset,
        };
        self.next_offset += 1;
        tracing::warn!(
            reason = reason.as_str(),
            offset = position.offset,
            detail,
            "input record skipped"
        );
        let dlq = self
            .stage
            .dlq_files_mut()
            .context("a replay writes dead letters to files")?;
        dlq.push_unread(&Unread {
            reason,
            detail,
            position,
            head,
            original_bytes,
            digest,
        })
        .context("dead-letter record")?;
        self.unread.records += 1;
        self.unread.bytes += original_bytes;
        self.unread.rejected_records[reason.index()] += 1;
        Ok(())
    }

    /// Processes the next record.
    pub fn push(&mut self, payload: &[u8]) -> Result<()> {
        self.flush_if_full()?;
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

    /// Counters so far (the pipeline's, and the records the reader
    /// skipped).
    pub fn stats(&self) -> PipelineStats {
        let mut s = self.pipeline.stats().clone();
        let u = &self.unread;
        s.records += u.records;
        s.bytes += u.bytes;
        for (a, b) in s.rejected_records.iter_mut().zip(u.rejected_records) {
            *a += b;
        }
        s
    }

    fn drain(&mut self) -> Result<()> {
        self.stage
            .route(&mut self.out, &self.router, &mut self.route_files)?;
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
            tick: 0,
        };
        let p = self.stage.publish(range)?;
        let routed = self.route_files.publish(range)?;
        let (a, b) = (&p.aggregates, &p.alerts);
        let (dlq_records, dlq_truncated) = p
            .dlq
            .as_ref()
            .map_or((0, 0), |d| (d.counts.total(), d.truncated));
        self.summary.aggregate_rows += a.rows as u64;
        self.summary.alert_rows += b.rows as u64;
        self.summary.dlq_records += dlq_records;
        self.summary.files += p.files() + routed.len() as u64;
        obs::published(&p);
        metrics::histogram!(obs::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        let now = self.stats();
        obs::publish(&self.published, &now);
        self.published = now;
        let otlp = self.pipeline.otlp_stats().clone();
        obs::publish_otlp(&self.published_otlp, &otlp);
        self.published_otlp = otlp;
        metrics::counter!(obs::DLQ_TRUNCATED, "sink" => "file").increment(dlq_truncated);
        self.summary.dlq_truncated += dlq_truncated;
        tracing::info!(
            aggregates = a.rows,
            alerts = b.rows,
            dlq = dlq_records,
            dlq_truncated,
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
        self.summary.stats = self.stats();
        Ok(self.summary)
    }
}
