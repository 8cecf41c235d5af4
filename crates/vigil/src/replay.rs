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
//! With [`Replay::threaded`], publishing runs on a second thread: at a
//! flush the writers holding the range's rows go to that thread, which
//! sorts, encodes and writes them, while this thread goes on decoding and
//! running the operator chain into a second set of writers. The files are
//! the same, byte for byte, as those of a replay on one thread (the same
//! rows reach the same writers, and flushes happen after the same
//! records); only when they are written differs. At most one range is
//! being published while the next fills: a publish slower than the
//! chain holds the chain back at the next flush.
//!
//! Refused input is bounded like the worker's ([`vigil_store::bound`]):
//! each dead letter takes at most `storage.dlq_max_record_bytes`, a longer
//! one keeps its reason, coordinates, digest and first bytes, and its full
//! content goes to `dlq/full/` at once, unless the input is kept
//! ([`Replay::input_is_kept`]). Memory for refused input is therefore at
//! most `dlq_flush_bytes` plus one letter, whatever the input.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_ops::otlp::InputFormat;
use vigil_ops::pipeline::{Outputs, Pipeline, PipelineStats};
use vigil_ops::rules::RuleSet;
use vigil_ops::{Position, RejectReason};
use vigil_sink::{AlertRouter, OutputStage, Published, RouteFiles};
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

/// The writers of one range of records: the datasets and dead letters
/// (the stage shared with the worker) and the route files.
struct Sinks {
    stage: OutputStage,
    route_files: RouteFiles,
}

impl Sinks {
    fn new(settings: &Settings, data_dir: &Path, source: &str) -> Result<Sinks> {
        let w = settings.storage.parquet.clone();
        Ok(Sinks {
            stage: OutputStage::new(
                data_dir,
                w.clone(),
                Some(
                    DlqWriter::new(data_dir, source, w.sync)
                        .with_budget(settings.storage.dlq_budget()?),
                ),
            )?,
            route_files: RouteFiles::new(data_dir, w.sync),
        })
    }

    /// Publishes the buffered output as the files of `range`.
    fn publish(&mut self, source: &str, first: i64, last: i64) -> Result<Flushed> {
        let span = tracing::info_span!("flush", source, first, last);
        let _g = span.enter();
        let started = Instant::now();
        let range = SourceRange::records(source, 0, first, last);
        let published = self.stage.publish(range)?;
        let routed = self.route_files.publish(range)?.len() as u64;
        Ok(Flushed {
            published,
            routed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// What publishing one range wrote.
struct Flushed {
    published: Published,
    /// Route files written.
    routed: u64,
    seconds: f64,
}

/// A range handed to the publishing thread: its writers, source name and
/// first and last record.
type Job = (Sinks, String, i64, i64);

/// Where a replay's full writers are published.
enum Publisher {
    /// On the replay's thread, at the flush.
    Inline,
    /// On a thread of its own (see the module docs).
    Thread {
        jobs: Option<SyncSender<Job>>,
        done: Receiver<(Sinks, Result<Flushed>)>,
        /// The second set of writers, until the first flush (boxed: the
        /// writers are large next to the other variant).
        spare: Option<Box<Sinks>>,
        /// A range is being published (its writers are away).
        busy: bool,
        handle: Option<JoinHandle<()>>,
    },
}

/// One replay in progress. See the module docs.
pub struct Replay {
    source: String,
    pipeline: Pipeline,
    /// The writers being filled.
    sinks: Sinks,
    /// Where full writers are published: here, or on a second thread.
    publisher: Publisher,
    /// Where alert events go besides the alerts dataset: nowhere, or with
    /// `alerts.replay_files`, each route's files.
    router: AlertRouter,
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
    /// See [`Replay::input_is_kept`].
    input_kept: bool,
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
        Ok(Replay {
            source: source.to_string(),
            pipeline,
            sinks: Sinks::new(settings, data_dir, source)?,
            publisher: Publisher::Inline,
            router: if settings.alerts.replay_files {
                settings
                    .alerts
                    .router(&settings.kafka.alert_topic)
                    .map_err(|p| anyhow::anyhow!("invalid alert routes:\n  {}", p.join("\n  ")))?
            } else {
                AlertRouter::none()
            },
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
            input_kept: false,
        })
    }

    /// Publishes on a second thread (see the module docs): the same files
    /// as on one thread, with the chain and the Parquet encoding on two
    /// cores.
    pub fn threaded(mut self, settings: &Settings, data_dir: &Path) -> Result<Replay> {
        if matches!(self.publisher, Publisher::Thread { .. }) {
            return Ok(self);
        }
        let mut spare = Sinks::new(settings, data_dir, &self.source)?;
        if self.input_kept {
            if let Some(d) = spare.stage.dlq_files_mut() {
                d.set_keep_full(false);
            }
        }
        let (jobs, inbox) = mpsc::sync_channel::<Job>(1);
        let (outbox, done) = mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("vigil-publish".into())
            .spawn(move || {
                for (mut sinks, source, first, last) in inbox {
                    let r = sinks.publish(&source, first, last);
                    if outbox.send((sinks, r)).is_err() {
                        break;
                    }
                }
            })
            .context("starting the publishing thread")?;
        self.publisher = Publisher::Thread {
            jobs: Some(jobs),
            done,
            spare: Some(Box::new(spare)),
            busy: false,
            handle: Some(handle),
        };
        Ok(self)
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
        self.input_kept = true;
        if let Some(d) = self.sinks.stage.dlq_files_mut() {
            d.set_keep_full(false);
        }
        if let Publisher::Thread {
            spare: Some(spare), ..
        } = &mut self.publisher
        {
            if let Some(d) = spare.stage.dlq_files_mut() {
                d.set_keep_full(false);
            }
        }
        self
    }

    /// Flushes before (not after) a record, so the range flushed by
    /// `finish` always holds at least the last record.
    fn flush_if_full(&mut self) -> Result<()> {
        if (self.next_offset - self.range_start) as u64 >= self.flush_records
            || self.sinks.stage.aggregate_rows() as u64 >= self.flush_rows
            || self.sinks.stage.dlq_buffered_bytes() as u64 >= self.flush_dlq_bytes
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
            .sinks
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
        let Sinks { stage, route_files } = &mut self.sinks;
        stage.route(&mut self.out, &self.router, route_files)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.next_offset == self.range_start {
            return Ok(());
        }
        let (first, last) = (self.range_start, self.next_offset - 1);
        if let Publisher::Inline = self.publisher {
            let f = self.sinks.publish(&self.source, first, last)?;
            self.published(f);
        } else {
            // The other writers: new, or back from the last range.
            let (next, result) = match &mut self.publisher {
                Publisher::Thread {
                    spare, done, busy, ..
                } => match spare.take() {
                    Some(s) => (*s, None),
                    None => {
                        let (s, r) = done.recv().context("the publishing thread stopped")?;
                        *busy = false;
                        (s, Some(r))
                    }
                },
                Publisher::Inline => unreachable!("checked above"),
            };
            if let Some(r) = result {
                self.published_result(r)?;
            }
            let full = std::mem::replace(&mut self.sinks, next);
            if let Publisher::Thread { jobs, busy, .. } = &mut self.publisher {
                jobs.as_ref()
                    .context("the publishing thread stopped")?
                    .send((full, self.source.clone(), first, last))
                    .context("the publishing thread stopped")?;
                *busy = true;
            }
        }
        let now = self.stats();
        obs::publish(&self.published, &now);
        self.published = now;
        let otlp = self.pipeline.otlp_stats().clone();
        obs::publish_otlp(&self.published_otlp, &otlp);
        self.published_otlp = otlp;
        self.range_start = self.next_offset;
        Ok(())
    }

    fn published_result(&mut self, r: Result<Flushed>) -> Result<()> {
        let f = r?;
        self.published(f);
        Ok(())
    }

    /// Counts what a publish wrote.
    fn published(&mut self, f: Flushed) {
        let p = &f.published;
        let (a, b) = (&p.aggregates, &p.alerts);
        let (dlq_records, dlq_truncated) = p
            .dlq
            .as_ref()
            .map_or((0, 0), |d| (d.counts.total(), d.truncated));
        self.summary.aggregate_rows += a.rows as u64;
        self.summary.alert_rows += b.rows as u64;
        self.summary.dlq_records += dlq_records;
        self.summary.files += p.files() + f.routed;
        obs::published(p);
        metrics::histogram!(obs::FLUSH_SECONDS).record(f.seconds);
        metrics::counter!(obs::DLQ_TRUNCATED, "sink" => "file").increment(dlq_truncated);
        self.summary.dlq_truncated += dlq_truncated;
        tracing::info!(
            aggregates = a.rows,
            alerts = b.rows,
            dlq = dlq_records,
            dlq_truncated,
            "flushed"
        );
    }

    /// Waits for the range being published on the other thread, if any,
    /// and stops the thread.
    fn join_publisher(&mut self) -> Result<()> {
        if let Publisher::Thread {
            jobs,
            done,
            busy,
            handle,
            ..
        } = &mut self.publisher
        {
            let last = if *busy {
                *busy = false;
                Some(done.recv().context("the publishing thread stopped"))
            } else {
                None
            };
            jobs.take();
            if let Some(h) = handle.take() {
                if h.join().is_err() {
                    anyhow::bail!("the publishing thread panicked");
                }
            }
            if let Some(r) = last {
                let (_, r) = r?;
                self.published_result(r)?;
            }
        }
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
        self.join_publisher()?;
        self.summary.stats = self.stats();
        Ok(self.summary)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use vigil_sim::{Fleet, FleetConfig, HOUR_MS};

    use super::*;

    /// Every file under `dir` (relative path → bytes).
    fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    /// A simulated fleet (every fault kind: dead letters, resends, late
    /// batches, alerts) replayed into `dir` with small flush ranges, on
    /// one thread or two.
    fn replay(dir: &Path, threaded: bool, input_kept: bool) -> ReplaySummary {
        let fleet = Fleet::new(FleetConfig {
            agents: 40,
            duration_ms: 3 * HOUR_MS,
            seed: 11,
            ..FleetConfig::default()
        });
        replay_records(dir, threaded, input_kept, fleet.map(|r| r.payload))
    }

    /// `records` replayed into `dir` with small flush ranges, on one
    /// thread or two.
    fn replay_records(
        dir: &Path,
        threaded: bool,
        input_kept: bool,
        records: impl Iterator<Item = Vec<u8>>,
    ) -> ReplaySummary {
        let mut settings = Settings::load(None).unwrap();
        settings.storage.flush_records = 1_000;
        settings.storage.parquet.sync = false;
        settings.alerts.replay_files = true;
        let rules = settings.load_rules(None).unwrap();
        let mut r = Replay::new(&settings, dir, "fleet", rules).unwrap();
        if input_kept {
            r = r.input_is_kept();
        }
        if threaded {
            r = r.threaded(&settings, dir).unwrap();
        }
        for rec in records {
            r.push(&rec).unwrap();
        }
        r.finish().unwrap()
    }

    /// Every file of two output directories is the same, byte for byte.
    fn assert_same_files(one: &Path, two: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let (fa, fb) = (files(one), files(two));
        assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
        for (p, bytes) in &fa {
            assert!(fb[p] == *bytes, "{} differs", p.display());
        }
        fa
    }

    #[test]
    fn threaded_output_is_byte_identical_to_one_thread() {
        for input_kept in [false, true] {
            let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = replay(one.path(), false, input_kept);
            let b = replay(two.path(), true, input_kept);
            assert_eq!(a, b);
            assert!(
                a.aggregate_rows > 0 && a.alert_rows > 0 && a.dlq_records > 0,
                "{a:?}"
            );
            let fa = assert_same_files(one.path(), two.path());
            assert!(fa.len() > 20, "{} files", fa.len());
            assert!(fa.keys().any(|p| p.starts_with("routes")));
        }
    }

    /// The same with status reports and security events (a posture lab):
    /// the status/ and security_events/ datasets and their alerts.
    #[test]
    fn threaded_reports_and_events_are_byte_identical_to_one_thread() {
        use vigil_sim::posture::{generate, PostureConfig};
        let lab = generate(&PostureConfig {
            agents: 26,
            days: 5,
            ..PostureConfig::default()
        });
        let records = || lab.records.iter().map(|r| r.payload.clone());
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = replay_records(one.path(), false, false, records());
        let b = replay_records(two.path(), true, false, records());
        assert_eq!(a, b);
        assert!(
            a.stats.status_reports > 0 && a.stats.security_events > 0 && a.alert_rows > 0,
            "{a:?}"
        );
        let fa = assert_same_files(one.path(), two.path());
        for dataset in ["status", "security_events"] {
            let n = fa.keys().filter(|p| p.starts_with(dataset)).count();
            assert!(n > 1, "{n} {dataset} files");
        }
    }
}
