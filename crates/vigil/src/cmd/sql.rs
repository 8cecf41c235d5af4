//! `vigil sql` and `vigil report`: DataFusion over the Parquet datasets.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vigil_query::{render, Format, QuerySession};

use crate::settings::Settings;

/// Arguments of `vigil sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Root of the datasets (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format: table, csv or json (JSON Lines).
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// The query, over the tables `aggregates` and `alerts`.
    pub query: String,
}

/// Arguments of `vigil report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Root of the datasets (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format: table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: Format,
}

fn data_dir(config: Option<&Path>, flag: Option<PathBuf>) -> Result<PathBuf> {
    match flag {
        Some(d) => Ok(d),
        None => Ok(Settings::load(config)?.data_dir),
    }
}

/// A multi-threaded runtime for DataFusion's CPU-bound work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")
}

/// Runs `vigil sql`.
pub fn run_sql(config: Option<&Path>, a: SqlArgs) -> Result<()> {
    let dir = data_dir(config, a.data_dir)?;
    let rt = runtime()?;
    let session = QuerySession::open(&dir)
        .with_context(|| format!("opening datasets under {}", dir.display()))?;
    let batches = rt.block_on(session.sql(&a.query)).context("query failed")?;
    print!("{}", render(&batches, a.format)?);
    Ok(())
}

/// Runs `vigil report`.
pub fn run_report(config: Option<&Path>, a: ReportArgs) -> Result<()> {
    let dir = data_dir(config, a.data_dir)?;
    print_report(&dir, a.format)
}

/// Prints the fleet report for the datasets under `dir`.
pub fn print_report(dir: &Path, format: Format) -> Result<()> {
    let rt = runtime()?;
    let session = QuerySession::open(dir)
        .with_context(|| format!("opening datasets under {}", dir.display()))?;
    let sections = rt
        .block_on(vigil_query::report::run(&session))
        .context("report queries failed")?;
    print!("{}", vigil_query::report::render_report(&sections, format)?);
    Ok(())
}
