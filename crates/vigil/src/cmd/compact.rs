//! `vigil compact`: merges the small files each source partition left in a
//! `date=` directory into files of about `compaction.target_file_bytes`,
//! without changing any query result (see `vigil_store::compact` and
//! docs/storage.md, "Compaction"). Runs once and exits, so it fits a
//! Kubernetes CronJob; safe while workers write: only files before each
//! partition's checkpoint (read from `worker.state_dir`) are merged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_store::compact::{Commit, CompactReport, DateScope};
use vigil_store::{CheckpointStore, Dataset, Location};

use crate::obs;
use crate::settings::Settings;

/// Arguments of `vigil compact`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the datasets: a directory, a `file://` URL or
    /// `s3://bucket/prefix` (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|URL")]
    pub data_dir: Option<String>,
    /// The workers' checkpoints, which say what each partition committed:
    /// a directory or `s3://bucket/prefix` (default: `worker.state_dir`
    /// from the config).
    #[arg(long, env = "VIGIL_WORKER__STATE_DIR", value_name = "DIR|URL")]
    pub state_dir: Option<String>,
    /// Compact this UTC date (YYYY-MM-DD) only, even if it ended less than
    /// `compaction.settle` ago (or is today). Default: every date that
    /// ended at least `compaction.settle` ago.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// Also write the run's metrics in the Prometheus text format to this
    /// file (replaced atomically, for a node exporter's textfile collector
    /// or a push to a Pushgateway).
    #[arg(long, env = "VIGIL_COMPACT_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// The UTC day number of `--date`.
fn parse_date(d: &str) -> Result<i64> {
    vigil_store::retention::parse_partition_dir(&format!("date={d}"))
        .with_context(|| format!("--date {d:?} is not a date like 2026-11-02"))
}

/// Runs `vigil compact`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let started = Instant::now();
    let settings = Settings::load(config)?;
    let location = crate::settings::location_arg(a.data_dir)?.unwrap_or(settings.data_dir.clone());
    let state_location = match a.state_dir {
        Some(s) => s.parse::<Location>().context("--state-dir")?,
        None => settings.worker.state_dir.clone(),
    };
    let store_opts = settings.storage.object_store.options();
    let root = location
        .open_with(&store_opts)
        .with_context(|| format!("opening {location}"))?;
    let state_root = state_location
        .open_with(&store_opts)
        .with_context(|| format!("opening {state_location}"))?;
    let checkpoints = CheckpointStore::at(&state_root);
    let scope = match &a.date {
        Some(d) => DateScope::Day(parse_date(d)?),
        None => DateScope::Settled,
    };
    let metrics = match &a.metrics_file {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("installing the Prometheus recorder")?,
        ),
        None => None,
    };
    let opts = settings.compaction.options(&settings.storage.parquet);
    if let Location::Local(d) = &state_location {
        if !d.is_dir() {
            tracing::warn!(
                state_dir = %d.display(),
                "no checkpoint directory: every source is treated as a replay (its files are \
                 compacted once compaction.settle old); point worker.state_dir at the workers' \
                 checkpoints"
            );
        }
    }
    let span = tracing::info_span!(
        "compact",
        root = %location,
        state = %state_location,
        date = a.date.as_deref().unwrap_or("settled"),
    );
    let _g = span.enter();
    let mut commits = |source: &str, partition: i32| {
        crate::worker::checkpoint_next_offset(&checkpoints, source, partition)
            .map(|o| o.map_or(Commit::Unknown, Commit::Before))
            .map_err(|e| format!("{e:#}"))
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let report = vigil_store::compact::compact(&root, &opts, scope, now_ms, &mut commits)
        .with_context(|| format!("compacting under {location}"))?;
    let elapsed = started.elapsed();
    record(&report, elapsed);
    for m in &report.merged {
        println!(
            "compacted {:<10} date={} {} p{}: {} files, {} bytes -> 1 file, {} bytes ({} rows)",
            m.dataset.name(),
            m.date,
            m.source,
            m.partition,
            m.files,
            m.bytes_in,
            m.bytes_out,
            m.rows
        );
    }
    println!(
        "compact: merged {} files ({} bytes) into {} ({} bytes) in {} dates ({} not settled), \
         {} files not committed or settled yet, {} leftovers of an interrupted run removed, \
         {} conflicts, {:.2}s",
        report.files_merged(),
        report.bytes_in(),
        report.merged.len(),
        report.bytes_out(),
        report.dates,
        report.dates_unsettled,
        report.not_yet,
        report.leftovers_removed,
        report.conflicts,
        elapsed.as_secs_f64()
    );
    tracing::info!(
        files_merged = report.files_merged(),
        files_written = report.merged.len(),
        bytes_in = report.bytes_in(),
        bytes_out = report.bytes_out(),
        leftovers_removed = report.leftovers_removed,
        stale_tmp_removed = report.stale_tmp_removed,
        not_yet = report.not_yet,
        conflicts = report.conflicts,
        object_store = location.is_object_store(),
        elapsed_ms = elapsed.as_millis() as u64,
        "compaction done"
    );
    if let (Some(path), Some(handle)) = (&a.metrics_file, metrics) {
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, handle.render())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing metrics to {}", path.display()))?;
    }
    Ok(())
}

/// Counts one run in the metrics (a no-op without a recorder).
fn record(report: &CompactReport, elapsed: std::time::Duration) {
    for ds in Dataset::ALL {
        let of = || report.merged.iter().filter(move |m| m.dataset == ds);
        let name = ds.name();
        metrics::counter!(obs::COMPACT_FILES_MERGED, "dataset" => name)
            .increment(of().map(|m| m.files as u64).sum());
        metrics::counter!(obs::COMPACT_FILES_WRITTEN, "dataset" => name)
            .increment(of().count() as u64);
        metrics::counter!(obs::COMPACT_BYTES_IN, "dataset" => name)
            .increment(of().map(|m| m.bytes_in).sum());
        metrics::counter!(obs::COMPACT_BYTES_OUT, "dataset" => name)
            .increment(of().map(|m| m.bytes_out).sum());
    }
    metrics::counter!(obs::COMPACT_CONFLICTS).increment(report.conflicts);
    metrics::counter!(obs::COMPACT_LEFTOVERS_REMOVED).increment(report.leftovers_removed);
    metrics::counter!(obs::COMPACT_FILES_NOT_YET).increment(report.not_yet);
    metrics::gauge!(obs::COMPACT_SECONDS).set(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_in_canonical_form_only() {
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
        assert!(parse_date("2026-1-2").is_err() && parse_date("yesterday").is_err());
    }
}
