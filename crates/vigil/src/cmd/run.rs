//! `vigil run`: the Kafka worker. Records its rules in the `audit/`
//! dataset, joins the consumer group, processes its partitions until
//! SIGTERM or SIGINT, then flushes, commits and leaves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::health::ProbeLimits;
use crate::settings::Settings;
use crate::worker::{shutdown_flag, Worker, WorkerProgress};

/// Arguments of `vigil run`. Everything else comes from the config
/// (`--config`, `VIGIL_` variables).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the output datasets (default: `data_dir` from the config).
    /// A directory or `s3://bucket/prefix`.
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub data_dir: Option<String>,
    /// Rules file (default: `rules` from the config, else the built-in rules).
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// Runs `vigil run`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let mut settings = Settings::load(config)?;
    if let Some(d) = crate::settings::location_arg(a.data_dir)? {
        settings.data_dir = d;
    }
    let loaded = settings.load_rules_with_meta(a.rules.as_deref())?;
    let root = settings
        .data_dir
        .open_with(&settings.storage.object_store.options())
        .with_context(|| format!("opening {}", settings.data_dir))?;
    let progress = Arc::new(WorkerProgress::default());
    if !settings.worker.metrics_listen.is_empty() {
        let addr: std::net::SocketAddr = settings
            .worker
            .metrics_listen
            .parse()
            .context("worker.metrics_listen")?;
        let limits = ProbeLimits {
            stall_timeout_ms: settings.worker.stall_timeout.as_millis() as i64,
            stats_interval_ms: settings.kafka.consumer_stats_interval_ms(),
            ready_max_lag: settings.worker.ready_max_lag,
        };
        let addr = crate::http::serve(addr, progress.health().clone(), limits)
            .with_context(|| format!("serving /metrics, /healthz and /readyz on {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    // After the metrics recorder is installed (by the listener above), so
    // the start's counters reach /metrics.
    crate::audit::record_rules_start(&root, &settings, &loaded, "run")?;
    let rules = loaded.rules;
    let shutdown = shutdown_flag()?;
    let summary = Worker::run_with_progress(settings, rules, shutdown, progress)?;
    eprintln!(
        "vigil run: stopped after {} records, {} flushes, {} partition assignments",
        summary.records, summary.flushes, summary.assignments
    );
    Ok(())
}
