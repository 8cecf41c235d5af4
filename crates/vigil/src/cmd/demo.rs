//! `vigil demo`: the embedded end to end. A simulated fleet runs through
//! the pipeline in-process (event time fast-forwarded), Parquet is written,
//! and the health report (`vigil report`, computed with SQL) is printed.
//! No Kafka needed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_ops::otlp::InputFormat;
use vigil_query::Format;
use vigil_sim::otlp::OtlpEncoder;
use vigil_sim::Fleet;

use super::simulate::FleetArgs;
use crate::replay::Replay;
use crate::settings::Settings;

/// Marker file: a data directory the demo created and may clear.
const MARKER: &str = ".vigil-demo";

/// Arguments of `vigil demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the datasets. Cleared first if an earlier demo made it.
    #[arg(long, default_value = "vigil-demo", env = "VIGIL_DEMO_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Rules file (default: the built-in rules).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Record format the fleet goes through the pipeline in: `vigil`
    /// (`TelemetryBatch`) or `otlp` (each batch as the OpenTelemetry
    /// Collector's hostmetrics would export it; docs/otlp.md).
    #[arg(long, default_value = "vigil")]
    pub format: InputFormat,
    /// Threads: 2 publishes each range's Parquet files (sorting,
    /// encoding, writing) on a second thread while the first decodes and
    /// runs the operator chain; 1 does everything on one thread. The
    /// files are the same, byte for byte, either way.
    #[arg(long, env = "VIGIL_REPLAY_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub threads: u8,
    /// Fleet shape.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Prepares an empty data directory, refusing to clear one the demo did
/// not create.
fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            if !dir.join(MARKER).exists() {
                bail!(
                    "{} is not empty and was not made by `vigil demo`; pass another --data-dir",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "created by vigil demo; safe to delete\n")
        .with_context(|| format!("writing {}", dir.join(MARKER).display()))?;
    Ok(())
}

/// Runs `vigil demo`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let settings = Settings::load(config)?;
    let loaded = settings.load_rules_with_meta(a.rules.as_deref())?;
    let fleet_cfg = a.fleet.fleet_config()?;
    prepare(&a.data_dir)?;
    // A fresh directory: the trail holds this run's rules, nothing to diff.
    crate::audit::record_rules_start(
        &vigil_store::Root::local(&a.data_dir),
        &settings,
        &loaded,
        "demo",
    )?;
    let rules = loaded.rules;
    println!(
        "vigil demo: {} agents of {} tenants, {:.1} h of telemetry, seed {}, {} records, writing to {}",
        fleet_cfg.agents,
        fleet_cfg.tenants,
        fleet_cfg.duration_ms as f64 / 3.6e6,
        fleet_cfg.seed,
        match a.format {
            InputFormat::Vigil => "vigil",
            InputFormat::Otlp => "otlp",
        },
        a.data_dir.display()
    );
    let mut fleet = Fleet::new(fleet_cfg);
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(fleet.estimated_records());
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} batches ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let started = Instant::now();
    let mut replay =
        Replay::new(&settings, &a.data_dir, "demo", rules)?.with_input_format(a.format);
    if a.threads > 1 {
        replay = replay.threaded(&settings, &a.data_dir)?;
    }
    let mut otlp = (a.format == InputFormat::Otlp).then(OtlpEncoder::new);
    for (i, rec) in fleet.by_ref().enumerate() {
        match otlp.as_mut() {
            Some(e) => replay.push(&e.encode(&rec.payload))?,
            None => replay.push(&rec.payload)?,
        }
        if i % 4096 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let otlp_stats = replay.otlp_stats().clone();
    let summary = replay.finish()?;
    println!("\n== pipeline ==");
    super::print_summary(&summary, started.elapsed());
    if a.format == InputFormat::Otlp {
        super::print_otlp_summary(&otlp_stats);
    }
    println!(
        "\n== simulated fleet (ground truth) ==\n{}",
        super::truth_summary(fleet.truth())
    );
    println!();
    super::sql::print_report(&a.data_dir, Format::Table)?;
    let d = a.data_dir.display();
    println!(
        "\nNext: vigil report alerts --data-dir {d} --format html --out alerts.html (also health, capacity)\n      \
         vigil sql --data-dir {d} \"SELECT rule, severity, count(*) FROM alerts WHERE status = 'firing' GROUP BY 1, 2\""
    );
    Ok(())
}
