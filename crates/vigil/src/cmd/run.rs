//! `vigil run`: the Kafka worker. Joins the consumer group, processes its
//! partitions until SIGTERM or SIGINT, then flushes, commits and leaves.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::settings::Settings;
use crate::worker::{shutdown_flag, Worker};

/// Arguments of `vigil run`. Everything else comes from the config
/// (`--config`, `VIGIL_` variables).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the output datasets (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Rules file (default: `rules` from the config, else the built-in rules).
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// Runs `vigil run`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let mut settings = Settings::load(config)?;
    if let Some(d) = a.data_dir {
        settings.data_dir = d;
    }
    let rules = settings.load_rules(a.rules.as_deref())?;
    if !settings.worker.metrics_listen.is_empty() {
        let addr: std::net::SocketAddr = settings
            .worker
            .metrics_listen
            .parse()
            .context("worker.metrics_listen")?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving /metrics on {addr}"))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    let shutdown = shutdown_flag()?;
    let summary = Worker::run(settings, rules, shutdown)?;
    eprintln!(
        "vigil run: stopped after {} records, {} flushes, {} partition assignments",
        summary.records, summary.flushes, summary.assignments
    );
    Ok(())
}
