//! `vigil retention`: removes output older than the `[retention]` limits
//! (whole `date=` partitions of `aggregates/`, `alerts/`, `status/`,
//! `security_events/` and `audit/`, dead-letter files by age). Runs once
//! and exits, so it fits a Kubernetes CronJob; safe while workers write
//! (see `vigil_store::retention`).

use std::path::Path;

use anyhow::{Context, Result};

use crate::settings::Settings;

/// Arguments of `vigil retention`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the datasets: a directory or `s3://bucket/prefix`
    /// (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|URL")]
    pub data_dir: Option<String>,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `vigil retention`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let settings = Settings::load(config)?;
    let location = crate::settings::location_arg(a.data_dir)?.unwrap_or(settings.data_dir.clone());
    let limits = settings.retention.limits();
    if limits == Default::default() {
        println!("retention: no limit set in [retention]; every dataset is kept forever");
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let _span = tracing::info_span!("retention", root = %location, dry_run = a.dry_run).entered();
    let root = location
        .open_with(&settings.storage.object_store.options())
        .with_context(|| format!("opening {location}"))?;
    let report = vigil_store::retention::apply_at(&root, &limits, now_ms, a.dry_run)
        .with_context(|| format!("applying retention under {location}"))?;
    if !a.dry_run {
        for r in &report.removed {
            metrics::counter!(crate::obs::RETENTION_REMOVED, "dataset" => r.dataset).increment(1);
            metrics::counter!(crate::obs::RETENTION_FILES, "dataset" => r.dataset)
                .increment(r.files);
            metrics::counter!(crate::obs::RETENTION_BYTES, "dataset" => r.dataset)
                .increment(r.bytes);
        }
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for r in &report.removed {
        let what = r
            .date
            .as_deref()
            .map_or_else(|| r.path.display().to_string(), |d| format!("date={d}"));
        println!(
            "{verb} {:<10} {what}  ({} files, {} bytes)",
            r.dataset, r.files, r.bytes
        );
    }
    // Whole days as days ("400d"; humantime would say "1year 1month ...").
    let limit = |l: Option<std::time::Duration>| match l {
        None => "forever".to_string(),
        Some(d) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => {
            format!("{}d", d.as_secs() / 86_400)
        }
        Some(d) => humantime::format_duration(d).to_string(),
    };
    println!(
        "retention: {verb} {} entries ({} files, {} bytes), kept {}; limits: aggregates {}, \
         alerts {}, status {}, security_events {}, dlq {}, audit {}",
        report.removed.len(),
        report.files(),
        report.bytes(),
        report.kept,
        limit(limits.aggregates),
        limit(limits.alerts),
        limit(limits.status),
        limit(limits.security_events),
        limit(limits.dlq),
        limit(limits.audit),
    );
    tracing::info!(
        removed = report.removed.len(),
        files = report.files(),
        bytes = report.bytes(),
        kept = report.kept,
        dry_run = a.dry_run,
        "retention done"
    );
    Ok(())
}
